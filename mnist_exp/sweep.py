"""A multirun as one MLflow parent run: opened before the jobs start, summarised when they end."""

import atexit
import csv
import io
import json
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from mnist_exp.errors import MnistExpError, exit_with
from mnist_exp.job import Job, Result
from mnist_exp.notes import sweep_note

PARENT_ENV = "MNIST_EXP_SWEEP_RUN_ID"  # how jobs, in any launcher's process, find their parent
RESULT_FILE = "result.json"  # one per job directory: what the sweep summary is made of
COLUMNS = ("job", "overrides", "status", "val_accuracy", "test_accuracy", "epochs", "seconds")


def parent_run_id(job: Job) -> str | None:
    """The sweep's parent run when `job` is part of a multirun, else None."""
    return os.environ.get(PARENT_ENV) if job.sweep_dir is not None else None


def run_job(experiment: Callable[[], Result], job: Job) -> float | None:
    """Run one job of a sweep and write its row of the summary. A failed job is recorded and
    returns None, so the sweep goes on; Ctrl-C ends the sweep."""
    try:
        result = experiment()
    except KeyboardInterrupt:
        write_row(job, "KILLED")
        raise SystemExit(130) from None
    except Exception as error:
        write_row(job, "FAILED", error=f"{type(error).__name__}: {error}")
        if isinstance(error, MnistExpError):
            print(f"error in job {job.number}: {error}", file=sys.stderr)
        else:
            traceback.print_exc()  # a bug, not a user error: show where, then go on
        return None
    write_row(
        job,
        "FINISHED",
        run_id=result.run_id,
        val_accuracy=result.val_accuracy,
        test_accuracy=result.test_accuracy,
        epochs=result.epochs,
        seconds=round(result.seconds, 1),
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


def label_rows(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """Rows whose `overrides` keep only what differs between jobs, and the overrides they share."""
    lists = [row["overrides"].split() for row in rows]
    shared = [o for o in lists[0] if all(o in other for other in lists)] if lists else []
    labelled = [
        {**row, "overrides": " ".join(o for o in overrides if o not in shared) or "(shared only)"}
        for row, overrides in zip(rows, lists, strict=True)
    ]
    return labelled, " ".join(shared)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    def cell(key: str, value: Any) -> str:
        if value is None:
            return ""
        if key == "seconds":
            return f"{value:.1f}"
        return f"{value:.4f}" if key.endswith("accuracy") else str(value)

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(c, row.get(c)) for c in COLUMNS) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def csv_table(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, [*COLUMNS, "run_id", "reused", "error"], extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


class SweepRun(Callback):
    """Hydra callback: one parent run per multirun, every job a child, a summary at the end; the
    command exits with 1 if a job did not finish."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        import mlflow

        from mnist_exp import tracking

        # Store and experiment exist before any job starts: parallel jobs never race to create them.
        try:
            tracking.use_store(config.mlflow)
        except MnistExpError as error:
            exit_with(error)
        self.sweep_dir = Path(config.hydra.sweep.dir)
        for stale in self.sweep_dir.glob(f"*/{RESULT_FILE}"):  # a rerun in the same directory
            stale.unlink()
        parent = mlflow.MlflowClient().create_run(
            mlflow.get_experiment_by_name(config.mlflow.experiment_name).experiment_id,
            run_name=f"sweep {self.sweep_dir.parent.name} {self.sweep_dir.name}",
            tags={
                "sweep_dir": str(self.sweep_dir),
                "overrides": " ".join(config.hydra.overrides.task),
                "sweeper": config.hydra.sweeper._target_.rsplit(".", 1)[-1],
                "launcher": config.hydra.launcher._target_.rsplit(".", 1)[-1],
                **tracking.process_tags(),
            },
        )
        self.run_id = parent.info.run_id
        os.environ[PARENT_ENV] = self.run_id
        atexit.register(self.close, "KILLED")  # interrupted or crashed: summarise what finished
        print(f"Sweep parent run {self.run_id}; jobs in {self.sweep_dir}")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.close("FINISHED"):
            raise SystemExit(1)  # the sweep ran to its end, but not every job finished

    def close(self, status: str) -> int:
        """Summarise the sweep and end its parent run; return how many jobs did not finish."""
        if os.environ.pop(PARENT_ENV, None) is None:  # already closed
            return 0
        rows = read_rows(self.sweep_dir)
        unfinished = sum(row["status"] != "FINISHED" for row in rows)
        summarise(self.run_id, rows)
        from mlflow import MlflowClient

        MlflowClient().set_terminated(self.run_id, status)
        if unfinished or status != "FINISHED":
            print("To finish the sweep, rerun the same command with skip_finished=true.")
        return unfinished


def summarise(run_id: str, rows: list[dict[str, Any]]) -> None:
    """Log the table (CSV + Markdown), the comparison figure and the best job to the parent run,
    and print the table and the best configuration."""
    from mlflow import MlflowClient

    from mnist_exp.evaluate import sweep_figure
    from mnist_exp.tracking import metric_series

    client = MlflowClient()
    labelled, shared = label_rows(rows)
    table = markdown_table(labelled)
    client.log_text(run_id, f"Shared overrides: {shared or '(none)'}\n\n{table}", "summary.md")
    client.log_text(run_id, csv_table(rows), "summary.csv")
    curves = {
        row["overrides"]: metric_series(client, row["run_id"], "val_accuracy")
        for row in labelled
        if row.get("run_id")
    }
    client.log_figure(run_id, sweep_figure(labelled, curves), "summary.png")
    finished = [row for row in rows if row["status"] == "FINISHED"]
    client.log_metric(run_id, "jobs_finished", len(finished))
    client.log_metric(run_id, "jobs_failed", len(rows) - len(finished))
    print(
        f"\nSweep summary: {len(finished)} of {len(rows)} jobs finished "
        f"(shared overrides: {shared or 'none'})\n{table}"
    )
    best = max(finished, key=lambda row: row["val_accuracy"]) if finished else None
    overrides = client.get_run(run_id).data.tags.get("overrides", "").split()
    client.set_tag(run_id, "mlflow.note.content", sweep_note(overrides, rows, best))
    if best is None:
        return
    client.log_metric(run_id, "best_job_val_accuracy", best["val_accuracy"])
    client.log_metric(run_id, "best_job_test_accuracy", best["test_accuracy"])
    client.set_tag(run_id, "best_run_id", best["run_id"])
    for override in best["overrides"].split():
        key, _, value = override.partition("=")
        client.log_param(run_id, f"best.{key.lstrip('+~')}", value)
    print(
        f"Best: val {best['val_accuracy']:.4f}, test {best['test_accuracy']:.4f} "
        f"(run {best['run_id']}); to run it alone:\n  python -m mnist_exp.run {best['overrides']}"
    )
