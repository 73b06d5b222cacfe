"""A multirun as one MLflow parent run: opened before the jobs start, summarised when they end."""

import atexit
import json
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from mnist_exp.config.job import Job, Result
from mnist_exp.errors import MnistExpError, exit_with
from mnist_exp.names import FAILED, FINISHED, KILLED, PRUNED
from mnist_exp.sweeps.summary import summarise
from mnist_exp.tracking.notes import job_counts

PARENT_ENV = "MNIST_EXP_SWEEP_RUN_ID"  # how jobs, in any launcher's process, find their parent
RESULT_FILE = "result.json"  # one per job directory: what the sweep summary is made of


def parent_run_id(job: Job) -> str | None:
    """The sweep's parent run when `job` is part of a multirun, else None."""
    return os.environ.get(PARENT_ENV) if job.sweep_dir is not None else None


def run_job(experiment: Callable[..., Result], job: Job, epochs: int) -> float | None:
    """Run one job of a sweep, `experiment(callbacks=, tags=, parent=)` told what the sweep
    adds: its parent run and, in a search, the trial's reporter and tags. Write the job's row of
    the summary. A failed job is recorded and returns None, so the sweep goes on; Ctrl-C ends
    the sweep."""
    from mnist_exp.sweeps.trial import ReportToTrial, job_trial, trial_tags  # Keras: only now

    trial = job_trial(epochs)  # None unless an Optuna search launched this job
    reporter = ReportToTrial(trial) if trial else None
    try:
        result = experiment(
            callbacks=[reporter] if reporter else [],
            tags=trial_tags(trial) if trial else {},
            parent=parent_run_id(job),
        )
    except KeyboardInterrupt:
        write_row(job, KILLED)
        raise SystemExit(130) from None
    except Exception as error:
        write_row(job, FAILED, error=f"{type(error).__name__}: {error}")
        if isinstance(error, MnistExpError):
            print(f"error in job {job.number}: {error}", file=sys.stderr)
        else:
            traceback.print_exc()  # a bug, not a user error: show where, then go on
        return None
    pruned = bool(reporter and reporter.pruned_at)
    write_row(
        job,
        PRUNED if pruned else FINISHED,
        run_id=result.run_id,
        val_accuracy=result.val_accuracy,
        test_accuracy=result.test_accuracy,
        epochs=result.epochs,
        seconds=round(result.seconds, 1),
        wall_seconds=None if result.wall_seconds is None else round(result.wall_seconds, 1),
        reused=result.reused,
    )
    return result.val_accuracy


def write_row(job: Job, status: str, **fields: Any) -> None:
    """Write a job's row of the sweep summary (status, run id, accuracies) to its folder."""
    row = {"job": job.number, "overrides": " ".join(job.overrides), "status": status, **fields}
    (job.output_dir / RESULT_FILE).write_text(json.dumps(row, indent=2) + "\n")


def read_rows(sweep_dir: Path) -> list[dict[str, Any]]:
    rows = [json.loads(path.read_text()) for path in sweep_dir.glob(f"*/{RESULT_FILE}")]
    return sorted(rows, key=lambda row: row["job"])


class SweepRun(Callback):
    """Hydra callback: one parent run per multirun, every job a child, a summary at the end; the
    command exits with 1 if a job did not finish."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from mnist_exp.tracking import liveness
        from mnist_exp.tracking.parent import open_parent
        from mnist_exp.tracking.store import use_store

        # Store and experiment exist before any job starts: parallel jobs never race to create them.
        try:
            self.store = use_store(config.mlflow, config.paths.root)
        except MnistExpError as error:
            exit_with(error)
        self.sweep_dir = Path(config.hydra.sweep.dir)
        self.dataset = OmegaConf.to_container(
            config.dataset, resolve=True
        )  # flipped digits' figure
        self.searching = "optuna" in config.hydra.sweeper._target_.lower()
        # Now: a summary at exit (a crash, Ctrl-C) can no longer import.
        import mnist_exp.compare
        import mnist_exp.figures
        import mnist_exp.tracking.read  # noqa: F401

        for stale in self.sweep_dir.glob(f"*/{RESULT_FILE}"):  # a rerun in the same directory
            stale.unlink()
        self.run_id = open_parent(
            self.store,
            f"sweep {self.sweep_dir.parent.name} {self.sweep_dir.name}",
            {
                "sweep_dir": str(self.sweep_dir),
                "overrides": " ".join(config.hydra.overrides.task),
                "sweeper": config.hydra.sweeper._target_.rsplit(".", 1)[-1],
                "launcher": config.hydra.launcher._target_.rsplit(".", 1)[-1],
                **liveness.process_tags(),
            },
        )
        self.heartbeat = liveness.start_heartbeat(
            self.store, self.run_id, config.mlflow.heartbeat_seconds
        )
        os.environ[PARENT_ENV] = self.run_id
        atexit.register(self.close, KILLED)  # interrupted or crashed: summarise what finished
        print(f"Sweep parent run {self.run_id}; jobs in {self.sweep_dir}")

    def __getstate__(self) -> dict[str, Any]:
        """Launchers pickle the callbacks with each job (submitit): the heartbeat stays here."""
        return {key: value for key, value in self.__dict__.items() if key != "heartbeat"}

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.close(FINISHED):
            raise SystemExit(1)  # the sweep ran to its end, but not every job finished

    def close(self, status: str) -> int:
        """Summarise the sweep and end its parent run; return how many jobs did not finish."""
        if os.environ.pop(PARENT_ENV, None) is None:  # already closed
            return 0
        if self.heartbeat:
            self.heartbeat.set()
        rows = read_rows(self.sweep_dir)
        unfinished = job_counts(rows)[2]
        summarise(self.store, self.run_id, rows, self.dataset)
        from mnist_exp.tracking.parent import end_parent

        end_parent(self.store, self.run_id, status)
        if self.searching and status != FINISHED:
            print("The search's study is stored: rerun the same command to continue it.")
        elif unfinished or status != FINISHED:
            print("To finish the sweep, rerun the same command with skip_finished=true.")
        return unfinished
