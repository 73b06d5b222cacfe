"""Which process owns a run and whether it still lives: its host and pid, a heartbeat on shared
stores, and runs whose process died marked KILLED."""

import contextlib
import os
import socket
import threading
import time
from typing import TYPE_CHECKING

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mnist_exp.tracking import notes

if TYPE_CHECKING:  # the store's module closes dead runs with this one's functions
    from mnist_exp.tracking.store import Store

# On a shared store, a run's process tags it with the time (its host's clock) every few seconds,
# so a process on another host can tell that it died: no beat for 3 intervals and 10 s more,
# the 10 s for clocks that differ between hosts (a few seconds where they keep time by NTP).
HEARTBEAT, HEARTBEAT_SECONDS = "heartbeat", "heartbeat_seconds"
CLOCK_SKEW_SECONDS = 10


def process_tags() -> dict[str, str]:
    """Which process on which host owns a run, so a later one can tell if it died; under SLURM,
    its job too (`slurm_job_id`, for squeue, sacct and scancel)."""
    import psutil

    tags = {
        "host": socket.gethostname(),
        "pid": str(os.getpid()),
        "pid_started": str(psutil.Process().create_time()),
    }
    if job := slurm_job_id():
        tags["slurm_job_id"] = job
    return tags


def slurm_job_id() -> str | None:
    """This SLURM job's id as squeue shows it and scancel takes it: `<array>_<task>` for a task
    of an array (submitit's jobs), whose own SLURM_JOB_ID of the first task is the whole array's."""
    if "SLURM_ARRAY_JOB_ID" in os.environ and "SLURM_ARRAY_TASK_ID" in os.environ:
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


def process_alive(tags: dict[str, str]) -> bool:
    """Whether the process `process_tags` described still runs (on this host)."""
    import psutil

    try:
        return psutil.Process(int(tags["pid"])).create_time() == float(tags["pid_started"])
    except (KeyError, ValueError, psutil.Error):
        return False


def shared_store(uri: str) -> bool:
    """A store that processes on other hosts write to (a server, a database), not a local file."""
    return not uri.startswith(("sqlite:", "file:")) and "://" in uri


def start_heartbeat(store: "Store", run_id: str, seconds: int) -> threading.Event | None:
    """Tag the run with this host's time every `seconds` from a thread, on a shared store, until
    the returned event is set; None where the store is this host's own (its pid tells)."""
    if not shared_store(store.uri):
        return None
    client, stop = store.client, threading.Event()
    client.set_tag(run_id, HEARTBEAT_SECONDS, str(seconds))

    def beat() -> None:
        while True:
            with contextlib.suppress(Exception):  # a server that is away: the run will say so
                client.set_tag(run_id, HEARTBEAT, f"{time.time():.0f}")
            if stop.wait(seconds):
                return

    threading.Thread(target=beat, name=f"heartbeat {run_id}", daemon=True).start()
    return stop


def silence(tags: dict[str, str]) -> float | None:
    """Seconds since a run on another host last beat, where it beats and has been silent for
    longer than its heartbeat allows, else None (alive, or a run that never beat)."""
    try:
        beat, seconds = float(tags[HEARTBEAT]), float(tags[HEARTBEAT_SECONDS])
    except (KeyError, ValueError):
        return None
    quiet = time.time() - beat
    return quiet if quiet > 3 * seconds + CLOCK_SKEW_SECONDS else None


def close_dead_runs(client: MlflowClient, experiment_id: str) -> None:
    """Runs left RUNNING by a process that is gone (SIGKILL, the OOM killer, a power cut) end
    KILLED, tagged with how to resume them, so the UI tells the truth: on this host the process
    is looked up, elsewhere its heartbeat (`start_heartbeat`) tells."""
    running = client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'")
    for run in running:
        tags = run.data.tags
        if tags.get("host") == socket.gethostname():
            if process_alive(tags):
                continue
            ended = f"process {tags.get('pid')} ended while the run was RUNNING (killed?)"
            lost = "lost its process"
        elif (quiet := silence(tags)) is not None:
            ended = f"no heartbeat from {tags.get('host')} for {quiet:.0f} s (its process died?)"
            lost = f"on {tags.get('host')} sent no heartbeat for {quiet:.0f} s"
        else:
            continue
        if mark_killed(client, run, ended):
            print(f"Run {run.info.run_id} ({run.info.run_name}) {lost}: marked KILLED.")


def mark_killed(client: MlflowClient, run: mlflow.entities.Run, ended: str) -> bool:
    """End a run whose process is gone KILLED, with why (`ended`) and how to resume it; False
    where this user may not write to it (another's run on a server with auth), said in a line."""
    tags = run.data.tags
    try:
        client.set_tag(run.info.run_id, "error", ended)
        if "output_dir" in tags:  # a run, not a sweep's parent
            command = notes.command(tags.get("overrides", "").split(), resume=run.info.run_id)
            client.set_tag(run.info.run_id, "resume_command", command)
        client.set_terminated(run.info.run_id, "KILLED")
    except MlflowException as error:
        if error.get_http_status_code() != 403:
            raise
        print(f"Run {run.info.run_id} lost its process, but this user may not mark it KILLED.")
        return False
    return True


def close_trial_runs(store: "Store", study_name: str, number: int, ended: str) -> None:
    """The MLflow run of a search's trial, left RUNNING by its lost worker, ends KILLED (in
    whichever of the store's experiments it is)."""
    found = f"tags.optuna_study = '{study_name}' and tags.optuna_trial = '{number}'"
    client = store.client
    experiments = [e.experiment_id for e in client.search_experiments()]
    for run in client.search_runs(
        experiments, filter_string=f"{found} and attributes.status = 'RUNNING'"
    ):
        if mark_killed(client, run, ended):
            print(f"Run {run.info.run_id} ({run.info.run_name}) of trial {number}: marked KILLED.")
