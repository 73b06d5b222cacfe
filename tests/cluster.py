"""A one-node SLURM cluster on 127.0.0.1 in a directory of its own: Debian's munged, slurmctld
and slurmd, no cgroups (proctrack/linuxproc, task/none), and the accounting that submitit reads
job states from (`sacct`: slurmdbd on a MariaDB of its own). For the tests, and for a person:
`make slurm` (then `export SLURM_CONF=outputs/slurm/slurm.conf`), `make slurm-stop`."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

# Stopped in this order: SLURM, then its database and munge.
DAEMONS = (("slurmd", "slurmctld"), ("slurmdbd", "mariadbd", "munged"))
CONF = """\
ClusterName=mnistexp
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={root}/munge.socket,cred_expire=10
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MpiDefault=none
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=1
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort={dbd_port}
AccountingStoragePass={root}/munge.socket
MinJobAge=600
KillWait=10
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""
# slurmdbd reads it beside slurm.conf; MariaDB on loopback in the cluster's folder, no grants.
DBD_CONF = """\
AuthType=auth/munge
AuthInfo=socket={root}/munge.socket
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={dbd_port}
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={db_port}
StorageUser=root
StorageLoc=slurm_acct_db
PidFile={root}/slurmdbd.pid
LogFile={root}/slurmdbd.log
"""


class ClusterError(Exception):
    """The cluster could not start: what is missing or what a daemon said."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(root: Path, cpus: int = 2, memory_mb: int = 8000) -> dict[str, str]:
    """Start the cluster's daemons with their state, logs and config under `root`; the
    environment its clients (sbatch, squeue, sacct, submitit) need: SLURM_CONF."""
    daemons = ("munged", "mariadbd", "mariadb-install-db", "slurmdbd", "slurmctld", "slurmd")
    missing = [name for name in (*daemons, "sbatch") if not shutil.which(name)]
    if missing:
        raise ClusterError(f"{', '.join(missing)} not found: make slurm-install (Debian's slurm)")
    if os.geteuid() != 0:
        raise ClusterError(
            "slurmd starts jobs as their user, so it needs root (or sudo make slurm)"
        )
    root = root.resolve()
    for folder in ("state", "spool"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    key = root / "munge.key"
    if not key.is_file():
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
    ports = {name: free_port() for name in ("ctld_port", "slurmd_port", "dbd_port", "db_port")}
    conf = root / "slurm.conf"
    conf.write_text(CONF.format(root=root, cpus=cpus, memory_mb=memory_mb, **ports))
    dbd_conf = root / "slurmdbd.conf"
    dbd_conf.write_text(DBD_CONF.format(root=root, **ports))
    dbd_conf.chmod(0o600)  # slurmdbd refuses a config others may read
    env = {**os.environ, "SLURM_CONF": str(conf)}
    try:
        daemon(
            ["munged", f"--socket={root}/munge.socket", f"--key-file={key}", "--force",
             f"--pid-file={root}/munged.pid", f"--log-file={root}/munged.log",
             f"--seed-file={root}/munged.seed"], env,
        )  # fmt: skip
        start_mariadb(root, ports["db_port"])
        daemon(["slurmdbd"], env)
        wait_for_port(ports["dbd_port"], f"slurmdbd never answered: see {root}/slurmdbd.log")
        daemon(["slurmctld", "-f", str(conf), "-i"], env)
        daemon(["slurmd", "-f", str(conf), "-N", "localhost"], env)
        deadline = time.monotonic() + 60
        while "idle" not in sinfo(env):
            if time.monotonic() > deadline:
                raise ClusterError(f"the node never came up: see {root}/slurmd.log")
            time.sleep(0.5)
    except ClusterError:
        stop(root)
        raise
    return {"SLURM_CONF": str(conf)}


def daemon(command: list[str], env: dict[str, str]) -> None:
    """Run a daemon that forks away and writes its pid file."""
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise ClusterError(f"{command[0]} failed: {(done.stderr or done.stdout).strip()}")


def start_mariadb(root: Path, port: int) -> None:
    """A MariaDB for slurmdbd on 127.0.0.1:`port`, its data in `root`/mysql (made once)."""
    data = root / "mysql"
    if not data.is_dir():
        made = subprocess.run(
            ["mariadb-install-db", "--no-defaults", f"--datadir={data}", "--user=root",
             "--skip-test-db", "--auth-root-authentication-method=normal"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        if made.returncode != 0:
            raise ClusterError(f"mariadb-install-db failed: {made.stderr.strip()[-500:]}")
    with open(root / "mariadbd.log", "ab") as log:
        subprocess.Popen(
            ["mariadbd", "--no-defaults", f"--datadir={data}", "--user=root",
             f"--port={port}", "--bind-address=127.0.0.1", f"--socket={root}/mariadb.sock",
             f"--pid-file={root}/mariadbd.pid", "--skip-grant-tables"],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    wait_for_port(port, f"MariaDB never answered: see {root}/mariadbd.log")


def wait_for_port(port: int, failure: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise ClusterError(failure) from None
            time.sleep(0.2)


def sinfo(env: dict[str, str]) -> str:
    done = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True)
    return done.stdout


def queue(env: dict[str, str]) -> str:
    """The jobs `squeue` lists; a job stays listed for a moment after it wrote its result."""
    done = subprocess.run(
        ["squeue", "-h"], env={**os.environ, **env}, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise ClusterError(f"squeue failed: {done.stderr.strip()}")
    return done.stdout


def stop(root: Path) -> None:
    """Cancel every job and stop the daemons (by their pid files)."""
    root = root.resolve()
    env = {**os.environ, "SLURM_CONF": str(root / "slurm.conf")}
    if (root / "slurm.conf").is_file():
        subprocess.run(["scancel", "--full", "-u", "root"], env=env, capture_output=True)
    for wave in DAEMONS:  # the daemons of a wave stop together
        pids = []
        for name in wave:
            try:
                pids.append(int((root / f"{name}.pid").read_text()))
                os.kill(pids[-1], signal.SIGTERM)
            except (OSError, ValueError):
                continue
        deadline = time.monotonic() + 30
        while pids := [pid for pid in pids if alive(pid)]:
            if time.monotonic() > deadline:
                for pid in pids:
                    os.kill(pid, signal.SIGKILL)
                break
            time.sleep(0.2)


def alive(pid: int) -> bool:
    try:  # MariaDB is this process's child where it started the cluster: reaped, not a zombie
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def main() -> None:
    """`python -m tests.cluster start|stop [DIR]` (default DIR: outputs/slurm)."""
    action, root = sys.argv[1], Path(sys.argv[2] if len(sys.argv) > 2 else "outputs/slurm")
    if action == "stop":
        stop(root)
        print(f"stopped the cluster in {root}")
        return
    try:
        env = start(root)
    except ClusterError as error:
        raise SystemExit(f"error: {error}") from None
    print(f"a one-node SLURM cluster runs from {root}; use it with\n"
          f"  export SLURM_CONF={env['SLURM_CONF']}\nstop it with make slurm-stop")  # fmt: skip


if __name__ == "__main__":
    main()
