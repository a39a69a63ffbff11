"""Real servers on 127.0.0.1 for the slow tests: a SLURM cluster and a PostgreSQL server.

A pytest plugin (`pytest_plugins = ["servers"]` in a test module). Each fixture starts its
server once per session in a temporary folder and stops it at the end. Where the server's
programs are missing, a test that needs it skips and says what to install; under CI
(`CI=true`) it fails instead, since CI installs them. The context managers under the
fixtures serve the benchmarks too.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SLURM_SCRIPT = ROOT / "scripts" / "slurm_cluster.sh"
SLURM_PROGRAMS = ("slurmctld", "slurmd", "slurmdbd", "sbatch", "sacct", "munged", "mariadbd", "unshare")
# Two nodes, each under its own host name: a job runs on another host than its submitter.
SLURM_NODES = 2
POSTGRES_USER = "postgres"  # the OS user the server runs as where the tests run as root


class Unavailable(Exception):
    """A server's programs, or what it needs to run, are missing on this machine."""


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


@contextlib.contextmanager
def slurm_cluster_in(folder: Path, nodes: int = SLURM_NODES) -> Iterator[SlurmCluster]:
    """A SLURM cluster of `nodes` nodes on 127.0.0.1, with accounting (sacct), started in
    `folder` by scripts/slurm_cluster.sh and stopped on leaving."""
    missing = [p for p in SLURM_PROGRAMS if shutil.which(p) is None]
    if missing:
        raise Unavailable(f"SLURM is not installed ({', '.join(missing)} missing): scripts/slurm_cluster.sh install")
    if os.geteuid() != 0:
        raise Unavailable("the test SLURM cluster runs its daemons as root")
    script = ["bash", str(SLURM_SCRIPT)]
    try:
        started = subprocess.run([*script, "start", str(folder), str(nodes)], capture_output=True, text=True,
                                 timeout=180)
        if started.returncode != 0:
            raise RuntimeError(f"the SLURM cluster did not start: {started.stderr.strip()}")
        yield SlurmCluster(folder, folder / "slurm.conf", tuple(f"node{i}" for i in range(1, nodes + 1)))
    finally:
        subprocess.run([*script, "stop", str(folder)], capture_output=True, timeout=120)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A SLURM cluster of two nodes for the session; SLURM_CONF points at it meanwhile."""
    try:
        with slurm_cluster_in(tmp_path_factory.mktemp("slurm")) as cluster:
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("SLURM_CONF", str(cluster.conf))
                yield cluster
    except Unavailable as err:
        unavailable(str(err))


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


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """A `postgresql+psycopg://` URL of an empty database on a PostgreSQL server started on
    127.0.0.1 (initdb into a temporary folder, pg_ctl) and stopped on leaving."""
    bin_dir = _postgres_bin()
    if bin_dir is None:
        raise Unavailable("PostgreSQL is not installed (no pg_ctl): apt-get install postgresql")
    try:
        import psycopg  # noqa: F401  (the driver SQLAlchemy needs for the URL below)
    except ImportError:
        raise Unavailable("the PostgreSQL driver is not installed: pip install -e '.[postgres]'") from None
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        try:
            user = pwd.getpwnam(POSTGRES_USER)
        except KeyError:
            raise Unavailable(f"running as root, with no '{POSTGRES_USER}' user to run PostgreSQL as") from None
        as_user = ["runuser", "-u", POSTGRES_USER, "--"]
    # not under pytest's temporary folders, which only root may enter
    folder = Path(tempfile.mkdtemp(prefix="nf-postgres-"))
    if as_user:
        os.chown(folder, user.pw_uid, user.pw_gid)
    data, log, password = folder / "data", folder / "server.log", "nf-test"
    (folder / "password").write_text(password)
    os.chmod(folder / "password", 0o644)
    port = _free_port()

    def server(*args: str) -> None:
        done = subprocess.run([*as_user, *args], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} failed: {(done.stderr or done.stdout).strip()}")

    try:
        server(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", f"--pwfile={folder / 'password'}",
               "--auth-host=scram-sha-256", "--auth-local=trust", "--no-sync")
        # its socket lies in the folder, away from any other server's /var/run/postgresql
        server(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "start",
               "-o", f"-c listen_addresses=127.0.0.1 -p {port} -k {folder}")
        server(str(bin_dir / "createdb"), "-h", str(folder), "-p", str(port), "-U", "postgres", "neuralforge")
        yield f"postgresql+psycopg://postgres:{password}@127.0.0.1:{port}/neuralforge"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                           capture_output=True, timeout=120)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url():
    """The URL of an empty database on a PostgreSQL server for the session."""
    try:
        with postgres_server() as url:
            yield url
    except Unavailable as err:
        unavailable(str(err))
