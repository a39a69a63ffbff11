"""Real servers on 127.0.0.1 for the slow tests: a SLURM cluster and a PostgreSQL server.

A pytest plugin (`pytest_plugins = ["servers"]` in a test module). Each fixture starts its
server once per session in a temporary folder and stops it at the end. Where the server's
programs are missing, a test that needs it skips and says what to install; under CI
(`CI=true`) it fails instead, since CI installs them.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SLURM_SCRIPT = ROOT / "scripts" / "slurm_cluster.sh"
SLURM_PROGRAMS = ("slurmctld", "slurmd", "slurmdbd", "sbatch", "sacct", "munged", "mariadbd", "unshare")
# Two nodes, each under its own host name: a job runs on another host than its submitter.
SLURM_NODES = 2
POSTGRES_USER = "postgres"  # the OS user the server runs as where the tests run as root


def unavailable(reason: str) -> None:
    """Skip, or fail under CI, where a server cannot be started here."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason} (CI installs it: see .ci/run)")
    pytest.skip(reason)


@dataclass(frozen=True)
class SlurmCluster:
    """A running cluster: its folder, its slurm.conf and its node names."""

    folder: Path
    conf: Path
    nodes: tuple[str, ...]
    partition: str = "debug"

    def env(self) -> dict[str, str]:
        """The environment in which sbatch, squeue, sacct and submitit reach this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A SLURM cluster of two nodes on 127.0.0.1, with accounting (sacct), started by
    scripts/slurm_cluster.sh; SLURM_CONF points at it for the whole session."""
    missing = [p for p in SLURM_PROGRAMS if shutil.which(p) is None]
    if missing:
        unavailable(f"SLURM is not installed ({', '.join(missing)} missing): scripts/slurm_cluster.sh install")
    if os.geteuid() != 0:
        unavailable("the test SLURM cluster runs its daemons as root")
    folder = tmp_path_factory.mktemp("slurm")
    started = subprocess.run(["bash", str(SLURM_SCRIPT), "start", str(folder), str(SLURM_NODES)],
                             capture_output=True, text=True, timeout=180)
    if started.returncode != 0:
        subprocess.run(["bash", str(SLURM_SCRIPT), "stop", str(folder)], capture_output=True, timeout=120)
        pytest.fail(f"the SLURM cluster did not start: {started.stderr.strip()}")
    conf = folder / "slurm.conf"
    before = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(conf)
    try:
        yield SlurmCluster(folder, conf, tuple(f"node{i}" for i in range(1, SLURM_NODES + 1)))
    finally:
        if before is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = before
        subprocess.run(["bash", str(SLURM_SCRIPT), "stop", str(folder)], capture_output=True, timeout=120)


def _postgres_bin() -> Path | None:
    """The folder of PostgreSQL's server programs: on PATH, else Debian's newest."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    return Path(debian[-1]).parent if debian else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_url():
    """A `postgresql+psycopg://` URL of an empty database on a PostgreSQL server started on
    127.0.0.1 for this session (initdb into a temporary folder, pg_ctl)."""
    bin_dir = _postgres_bin()
    if bin_dir is None:
        unavailable("PostgreSQL is not installed (no pg_ctl): apt-get install postgresql")
    try:
        import psycopg  # noqa: F401  (the driver SQLAlchemy needs for the URL below)
    except ImportError:
        unavailable("the PostgreSQL driver is not installed: pip install -e '.[postgres]'")
    as_user: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="nf-postgres-"))
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        try:
            user = pwd.getpwnam(POSTGRES_USER)
        except KeyError:
            unavailable(f"the tests run as root and there is no '{POSTGRES_USER}' user to run PostgreSQL as")
        os.chown(folder, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", POSTGRES_USER, "--"]
    data, log, password = folder / "data", folder / "server.log", "nf-test"
    (folder / "password").write_text(password)
    os.chmod(folder / "password", 0o644)
    port = _free_port()

    def server(*args: str, timeout: float = 120) -> None:
        done = subprocess.run([*as_user, *args], capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            pytest.fail(f"{Path(args[0]).name} failed: {(done.stderr or done.stdout).strip()}")

    server(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", f"--pwfile={folder / 'password'}",
           "--auth-host=scram-sha-256", "--auth-local=trust", "--no-sync")
    # the socket lies in the folder, so that no other server's /var/run/postgresql is touched
    server(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "start",
           "-o", f"-c listen_addresses=127.0.0.1 -p {port} -k {folder}")
    try:
        server(str(bin_dir / "createdb"), "-h", str(folder), "-p", str(port), "-U", "postgres", "neuralforge")
        yield f"postgresql+psycopg://postgres:{password}@127.0.0.1:{port}/neuralforge"
    finally:
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                       capture_output=True, timeout=120)
        shutil.rmtree(folder, ignore_errors=True)
