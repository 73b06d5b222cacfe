"""`python -m mnist_exp.report RUN_ID`: figures and a Markdown summary of a tracked run."""

import argparse
import io
from collections import defaultdict
from pathlib import Path

import numpy as np

from mnist_exp.config.schema import MlflowConfig
from mnist_exp.errors import MnistExpError, exit_with
from mnist_exp.figures import confusion_figure, curves_figure
from mnist_exp.names import (
    BEST_EPOCH,
    BEST_TRAIN_ACCURACY,
    BEST_VAL_ACCURACY,
    BEST_VAL_LOSS,
    CONFUSION_CSV,
    EPOCHS_RUN,
    REPORT_TEXT,
    TEST_ACCURACY,
    TEST_LOSS,
    TRAIN_ACCURACY,
    TRAIN_LOSS,
    TRAIN_SECONDS,
)


def most_confused(confusion: np.ndarray, count: int = 5) -> list[tuple[int, int, int]]:
    """The largest off-diagonal cells as (true label, predicted label, how often)."""
    off_diagonal = confusion - np.diag(np.diag(confusion))
    cells = np.dstack(np.unravel_index(np.argsort(off_diagonal, axis=None)[::-1], confusion.shape))
    return [(int(t), int(p), int(off_diagonal[t, p])) for t, p in cells[0][:count]]


def write_report(run_id: str, out_dir: Path, settings: MlflowConfig) -> Path:
    """Write `confusion_matrix.png`, `training_curves.png` and `summary.md` for a run."""
    from mnist_exp.tracking import read
    from mnist_exp.tracking.store import open_store

    store = open_store(settings)
    run, history = read.run_record(run_id, store)
    csv = read.run_artifact_text(run_id, f"test/{CONFUSION_CSV}", store)
    classes = csv.splitlines()[0].split(",")[1:]  # the header: "true\predicted", each class
    columns = range(1, len(classes) + 1)  # the first holds the row's class
    confusion = np.loadtxt(io.StringIO(csv), delimiter=",", skiprows=1, dtype=int, usecols=columns)
    report_text = read.run_artifact_text(run_id, f"test/{REPORT_TEXT}", store)
    out_dir.mkdir(parents=True, exist_ok=True)
    confusion_figure(confusion, "test confusion matrix", classes).savefig(
        out_dir / "confusion_matrix.png", dpi=72
    )
    curves_figure(history).savefig(out_dir / "training_curves.png", dpi=72)

    tags = run.data.tags
    m = defaultdict(lambda: float("nan"), run.data.metrics)
    confused = most_confused(confusion)
    errors = "\n".join(f"| {classes[t]} | {classes[p]} | {n} |" for t, p, n in confused)
    summary = f"""# Run {run_id}

Command overrides: `{tags.get("overrides", "") or "(defaults)"}`; status {run.info.status}.

| | loss | accuracy |
| --- | --- | --- |
| train, first 10,000 images (dropout off) | {m[TRAIN_LOSS]:.4f} | {m[TRAIN_ACCURACY]:.4f} |
| train, running in the best epoch (dropout on) | | {m[BEST_TRAIN_ACCURACY]:.4f} |
| validation (best checkpoint) | {m[BEST_VAL_LOSS]:.4f} | {m[BEST_VAL_ACCURACY]:.4f} |
| test | {m[TEST_LOSS]:.4f} | {m[TEST_ACCURACY]:.4f} |

Epochs run: {m[EPOCHS_RUN]:.0f}, best epoch: {m[BEST_EPOCH]:.0f}, training time:
{m[TRAIN_SECONDS]:.0f} s ({np.median(history["epoch_seconds"]):.1f} s per epoch, median).

![test confusion matrix](confusion_matrix.png)
![training curves](training_curves.png)

Most frequent test confusions:

| true | predicted | count |
| --- | --- | --- |
{errors}

```
{report_text}```
"""
    (out_dir / "summary.md").write_text(summary)
    return out_dir / "summary.md"


def parser() -> argparse.ArgumentParser:
    """The command's arguments."""
    found = argparse.ArgumentParser(prog="python -m mnist_exp.report", description=__doc__)
    found.add_argument("run_id", help="an MLflow run id (see `mlflow ui`)")
    found.add_argument("--out", help="output folder (default: outputs/report/<run_id>)")
    return found


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        path = write_report(
            args.run_id, Path(args.out or f"outputs/report/{args.run_id}"), MlflowConfig()
        )
    except MnistExpError as error:
        exit_with(error)
    print(f"wrote {path} and its figures")


if __name__ == "__main__":
    main()
