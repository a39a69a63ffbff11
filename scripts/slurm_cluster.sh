#!/usr/bin/env bash
# A SLURM cluster on 127.0.0.1, for the tests and for trying the SLURM path on one machine.
# Everything it writes lies in one folder; it changes no system configuration. Needs root.
#
#   scripts/slurm_cluster.sh install            # the Debian packages, where missing
#   scripts/slurm_cluster.sh start DIR [NODES]  # config into DIR, daemons up, waits until the nodes are idle
#   export SLURM_CONF=DIR/slurm.conf            # sbatch, squeue, sacct, submitit and Hydra's launcher use it
#   scripts/slurm_cluster.sh stop DIR           # cancels its jobs, stops its daemons
#
# What runs, each on 127.0.0.1, on ports that were free at start (listed in DIR/ports):
#   munged     authentication, with its own key and socket in DIR/munge
#   mariadbd   the accounting database, its data in DIR/mysql
#   slurmdbd   accounting: sacct reads job states from it, and submitit reads them with sacct
#   slurmctld  the controller, partition 'debug'
#   slurmd     one node (the default): this machine under its own host name, with every core
#              and three quarters of the memory. With NODES > 1: nodes node1..nodeN, each
#              slurmd in its own UTS namespace (unshare --uts) under that host name, the cores
#              and memory shared out. A job then runs on another host than the one that
#              submitted it, and a requeued job may come back on another host than it left.
# Made to run as root in a container without systemd: SlurmUser=root, processes tracked
# through their parent pids (proctrack/linuxproc), no cgroups, no task binding. Nothing is
# confined: a job may use more cores or memory than it asked for.
set -euo pipefail

CLUSTER=nf
PARTITION=debug
# A requeued job may start again cred_expire seconds after it was requeued (SLURM's default:
# 120); a job gets KillWait seconds between SIGTERM and SIGKILL (30); the main scheduler
# looks at pending jobs every sched_interval seconds (60). Short here, so that tests are.
CRED_EXPIRE=${SLURM_CLUSTER_CRED_EXPIRE:-5}
KILL_WAIT=${SLURM_CLUSTER_KILL_WAIT:-5}
SCHED_INTERVAL=${SLURM_CLUSTER_SCHED_INTERVAL:-2}

die() { echo "slurm_cluster.sh: $*" >&2; exit 1; }

usage() {
    echo "usage: $0 install | start DIR [NODES] | stop DIR" >&2
    exit 2
}

install() {
    local missing=() pair
    # command:package
    for pair in slurmctld:slurmctld slurmd:slurmd sbatch:slurm-client slurmdbd:slurmdbd munged:munge \
        mariadbd:mariadb-server; do
        command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
    done
    if [ ${#missing[@]} -eq 0 ]; then
        echo "slurm_cluster.sh: everything is installed"
        return
    fi
    [ "$(id -u)" = 0 ] || die "installing needs root: sudo $0 install"
    apt-get update -q
    # Where the packages start services of their own (systemd), those use the default ports
    # and sockets, and 'start' never touches them.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
}

port_free() {
    # bash's /dev/tcp connects: refused means no one listens there
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

free_port() {
    local port
    for _ in $(seq 200); do
        port=$((20000 + RANDOM % 30000))
        if port_free "$port" && ! grep -qx "$port" "$DIR/run/ports.taken" 2>/dev/null; then
            echo "$port" >>"$DIR/run/ports.taken"
            echo "$port"
            return
        fi
    done
    die "found no free port on 127.0.0.1"
}

wait_for() {
    # wait_for SECONDS WHAT COMMAND...: until COMMAND succeeds, or fail naming WHAT and the logs
    local seconds=$1 what=$2
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || die "$what did not come up in ${seconds}s: see $DIR/log/"
        sleep 0.2
    done
}

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

node_names() {
    if [ "$NODES" -eq 1 ]; then hostname -s; else seq -f "node%g" 1 "$NODES"; fi
}

write_config() {
    local cpus mem_mb node
    cpus=$(($(nproc) / NODES))
    [ "$cpus" -ge 1 ] || cpus=1
    mem_mb=$(awk -v n="$NODES" '/MemTotal/ {print int($2 / 1024 * 3 / 4 / n)}' /proc/meminfo)

    cat >"$DIR/slurm.conf" <<EOF
# Written by scripts/slurm_cluster.sh.
ClusterName=$CLUSTER
SlurmctldHost=$(hostname -s)(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/munge/munge.socket,cred_expire=$CRED_EXPIRE
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
# no systemd and no cgroup delegation: track processes through their parents, bind nothing
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
# for slurmdbd this names the munge socket that connections to it use
AccountingStoragePass=$DIR/munge/munge.socket
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=$SCHED_INTERVAL
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
KillWait=$KILL_WAIT
InactiveLimit=0
EOF
    for node in $(node_names); do
        echo "NodeName=$node NodeAddr=127.0.0.1 Port=$(free_port) CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN"
    done >>"$DIR/slurm.conf"
    echo "PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP" >>"$DIR/slurm.conf"

    cat >"$DIR/cgroup.conf" <<EOF
# No plugin in slurm.conf uses cgroups.
CgroupPlugin=autodetect
EOF

    # slurmdbd refuses a config that others can read: it holds the database's password
    (umask 077 && cat >"$DIR/slurmdbd.conf" <<EOF
# Written by scripts/slurm_cluster.sh.
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
    )
}

start_munge() {
    # The key is readable by root alone. munged wants every folder above its socket searchable
    # by all, so that any user can submit; --force lets it start where one is not (pytest's
    # temporary folders), and then only root can use the cluster.
    mkdir -p "$DIR/munge"
    chmod 755 "$DIR/munge"
    (umask 077 && dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none)
    munged --force --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/munge.socket" --num-threads=10 \
        --pid-file="$DIR/run/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munged.seed"
}

start_mariadb() {
    mariadb-install-db --no-defaults --datadir="$DIR/mysql" --user=root --skip-test-db \
        --auth-root-authentication-method=socket >"$DIR/log/mariadb-install.log" 2>&1
    # slurmdbd asks for this lock timeout; it also logs that it would like a larger buffer pool
    setsid mariadbd --no-defaults --datadir="$DIR/mysql" --user=root --bind-address=127.0.0.1 \
        --port="$DB_PORT" --socket="$DIR/run/mysql.sock" --pid-file="$DIR/run/mariadbd.pid" \
        --log-error="$DIR/log/mariadbd.log" --skip-name-resolve --performance-schema=off \
        --innodb-lock-wait-timeout=900 </dev/null >/dev/null 2>&1 &
    wait_for 60 mariadbd mariadb --no-defaults -S "$DIR/run/mysql.sock" -u root -e "select 1"
    mariadb --no-defaults -S "$DIR/run/mysql.sock" -u root <<EOF
CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
EOF
}

start_slurmd() {
    local node=$1
    if [ "$NODES" -eq 1 ]; then
        slurmd -N "$node"
    else
        # the host name is the namespace's own; pids, files and the network stay shared
        unshare --uts sh -c 'hostname "$1" && exec slurmd -N "$1"' sh "$node"
    fi
}

start() {
    DIR=$1
    NODES=$2
    case "$NODES" in '' | *[!0-9]* | 0) die "NODES must be a whole number of at least 1, not '$NODES'" ;; esac
    [ "$(id -u)" = 0 ] || die "the cluster runs its daemons as root: sudo $0 start $DIR"
    for cmd in slurmctld slurmd slurmdbd sbatch sacct munged mariadbd; do
        command -v "$cmd" >/dev/null || die "$cmd is not installed: $0 install"
    done
    mkdir -p "$DIR"
    DIR=$(cd "$DIR" && pwd)
    if pid_alive "$DIR/run/slurmctld.pid"; then
        die "a cluster already runs from $DIR: $0 stop $DIR"
    fi
    rm -rf "$DIR/state" "$DIR/spool" "$DIR/run" "$DIR/log" "$DIR/munge" "$DIR/mysql"
    mkdir -p "$DIR/state" "$DIR/spool" "$DIR/run" "$DIR/log" "$DIR/mysql"

    CTLD_PORT=$(free_port)
    DBD_PORT=$(free_port)
    DB_PORT=$(free_port)
    DB_PASS=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
    write_config
    printf 'slurmctld=%s\nslurmdbd=%s\nmariadb=%s\n' "$CTLD_PORT" "$DBD_PORT" "$DB_PORT" >"$DIR/ports"
    sed -n 's/^NodeName=\([^ ]*\) .* Port=\([0-9]*\) .*/slurmd-\1=\2/p' "$DIR/slurm.conf" >>"$DIR/ports"
    export SLURM_CONF=$DIR/slurm.conf

    start_munge
    start_mariadb
    slurmdbd
    # the controller registers the cluster with slurmdbd when it starts
    wait_for 60 slurmdbd sacctmgr --noheader list cluster
    slurmctld
    wait_for 60 slurmctld scontrol ping
    for node in $(node_names); do
        mkdir -p "$DIR/spool/$node"
        start_slurmd "$node"
    done
    # a node is idle once its slurmd has registered with the controller
    wait_for 60 "the nodes" bash -c "[ \"\$(sinfo --noheader --responding -o '%t %D')\" = 'idle $NODES' ]"
    echo "SLURM cluster '$CLUSTER' up in $DIR: $NODES node(s), partition '$PARTITION'. Use it with:"
    echo "export SLURM_CONF=$DIR/slurm.conf"
}

stop_daemons() {
    # stop_daemons PIDFILE...: SIGTERM the pids they name, wait until all have exited
    local file pids=() pid running
    for file in "$@"; do
        pid_alive "$file" && pids+=("$(cat "$file")")
    done
    [ ${#pids[@]} -gt 0 ] || return 0
    kill "${pids[@]}" 2>/dev/null || true
    for _ in $(seq 150); do
        running=0
        for pid in "${pids[@]}"; do
            kill -0 "$pid" 2>/dev/null && running=1
        done
        [ $running = 1 ] || return 0
        sleep 0.2
    done
    for pid in "${pids[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            echo "slurm_cluster.sh: pid $pid outlived SIGTERM by 30s; sending SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
}

stop() {
    DIR=$(cd "$1" 2>/dev/null && pwd) || die "no such folder: $1"
    [ -f "$DIR/slurm.conf" ] || die "$DIR holds no cluster started by $0"
    export SLURM_CONF=$DIR/slurm.conf
    if pid_alive "$DIR/run/slurmctld.pid"; then
        # cancel the jobs first, so that none outlives its slurmd
        scancel --quiet --user=root 2>/dev/null || true
        for _ in $(seq $((KILL_WAIT * 5 + 50))); do
            [ -z "$(squeue --noheader -o %i 2>/dev/null)" ] && break
            sleep 0.2
        done
    fi
    # in this order: the controller reports to slurmdbd, slurmdbd writes to the database
    stop_daemons "$DIR"/run/slurmd-*.pid
    stop_daemons "$DIR/run/slurmctld.pid"
    stop_daemons "$DIR/run/slurmdbd.pid"
    stop_daemons "$DIR/run/mariadbd.pid" "$DIR/run/munged.pid"
    echo "SLURM cluster in $DIR stopped"
}

case "${1:-}" in
    install) [ $# -eq 1 ] || usage; install ;;
    start) [ $# -eq 2 ] || [ $# -eq 3 ] || usage; start "$2" "${3:-1}" ;;
    stop) [ $# -eq 2 ] || usage; stop "$2" ;;
    *) usage ;;
esac
