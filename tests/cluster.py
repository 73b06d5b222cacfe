"""A one-node SLURM cluster on 127.0.0.1 in a directory of its own: Debian's munged, slurmctld
and slurmd, no cgroups (proctrack/linuxproc, task/none). For the tests, and for a person:
`make slurm` (then `export SLURM_CONF=outputs/slurm/slurm.conf`), `make slurm-stop`."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

DAEMONS = ("slurmd", "slurmctld", "munged")  # stopped in this order
CONF = """\
ClusterName=mnistexp
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={root}/munge.socket
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
AccountingStorageType=accounting_storage/none
MinJobAge=600
KillWait=10
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


class ClusterError(Exception):
    """The cluster could not start: what is missing or what a daemon said."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(root: Path, cpus: int = 2, memory_mb: int = 8000) -> dict[str, str]:
    """Start the cluster's daemons with their state, logs and config under `root`; the
    environment its clients (sbatch, squeue, submitit) need: SLURM_CONF."""
    missing = [
        name for name in ("munged", "slurmctld", "slurmd", "sbatch") if not shutil.which(name)
    ]
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
    conf = root / "slurm.conf"
    conf.write_text(
        CONF.format(
            root=root,
            ctld_port=free_port(),
            slurmd_port=free_port(),
            cpus=cpus,
            memory_mb=memory_mb,
        )
    )
    env = {**os.environ, "SLURM_CONF": str(conf)}
    commands = [
        ["munged", f"--socket={root}/munge.socket", f"--key-file={key}", "--force",
         f"--pid-file={root}/munged.pid", f"--log-file={root}/munged.log",
         f"--seed-file={root}/munged.seed"],
        ["slurmctld", "-f", str(conf), "-i"],
        ["slurmd", "-f", str(conf), "-N", "localhost"],
    ]  # fmt: skip
    for command in commands:  # each daemonizes and writes its pid file
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            stop(root)
            raise ClusterError(f"{command[0]} failed: {(done.stderr or done.stdout).strip()}")
    deadline = time.monotonic() + 60
    while "idle" not in sinfo(env):
        if time.monotonic() > deadline:
            stop(root)
            raise ClusterError(f"the node never came up: see {root}/slurmd.log")
        time.sleep(0.5)
    return {"SLURM_CONF": str(conf)}


def sinfo(env: dict[str, str]) -> str:
    done = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True)
    return done.stdout


def stop(root: Path) -> None:
    """Cancel every job and stop the daemons (by their pid files)."""
    root = root.resolve()
    env = {**os.environ, "SLURM_CONF": str(root / "slurm.conf")}
    if (root / "slurm.conf").is_file():
        subprocess.run(["scancel", "--full", "-u", "root"], env=env, capture_output=True)
    for name in DAEMONS:
        pid_file = root / f"{name}.pid"
        try:
            pid = int(pid_file.read_text())
            os.kill(pid, signal.SIGTERM)
        except (OSError, ValueError):
            continue
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except OSError:
                break
            time.sleep(0.2)
        else:
            os.kill(pid, signal.SIGKILL)


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
