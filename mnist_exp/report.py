"""`python -m mnist_exp.report RUN_ID`: figures and a Markdown summary of a tracked run."""

import argparse
import io
from pathlib import Path

import numpy as np

from mnist_exp.config.schema import MlflowConfig
from mnist_exp.errors import MnistExpError, exit_with
from mnist_exp.figures import confusion_figure, curves_figure


def most_confused(confusion: np.ndarray, count: int = 5) -> list[tuple[int, int, int]]:
    """The largest off-diagonal cells as (true digit, predicted digit, how often)."""
    off_diagonal = confusion - np.diag(np.diag(confusion))
    cells = np.dstack(np.unravel_index(np.argsort(off_diagonal, axis=None)[::-1], confusion.shape))
    return [(int(t), int(p), int(off_diagonal[t, p])) for t, p in cells[0][:count]]


def write_report(run_id: str, out_dir: Path, cfg: MlflowConfig) -> Path:
    """Write `confusion_matrix.png`, `training_curves.png` and `summary.md` for a run."""
    from mnist_exp.tracking import read

    run, history = read.run_record(run_id, cfg)
    csv = read.run_artifact_text(run_id, "test/confusion_matrix.csv", cfg)
    confusion = np.loadtxt(io.StringIO(csv), delimiter=",", skiprows=1, dtype=int)[:, 1:]
    report_text = read.run_artifact_text(run_id, "test/classification_report.txt", cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    confusion_figure(confusion, "test confusion matrix").savefig(
        out_dir / "confusion_matrix.png", dpi=72
    )
    curves_figure(history).savefig(out_dir / "training_curves.png", dpi=72)

    tags = run.data.tags
    m = {
        key: run.data.metrics.get(key, float("nan"))
        for key in (
            "train_loss",
            "train_accuracy",
            "best_train_accuracy",
            "best_val_loss",
            "best_val_accuracy",
            "test_loss",
            "test_accuracy",
            "epochs_run",
            "best_epoch",
            "train_seconds",
        )
    }
    errors = "\n".join(f"| {t} | {p} | {n} |" for t, p, n in most_confused(confusion))
    summary = f"""# Run {run_id}

Command overrides: `{tags.get("overrides", "") or "(defaults)"}`; status {run.info.status}.

| | loss | accuracy |
| --- | --- | --- |
| train (dropout off) | {m["train_loss"]:.4f} | {m["train_accuracy"]:.4f} |
| train, running in the best epoch (dropout on) | | {m["best_train_accuracy"]:.4f} |
| validation (best checkpoint) | {m["best_val_loss"]:.4f} | {m["best_val_accuracy"]:.4f} |
| test | {m["test_loss"]:.4f} | {m["test_accuracy"]:.4f} |

Epochs run: {m["epochs_run"]:.0f}, best epoch: {m["best_epoch"]:.0f}, training time:
{m["train_seconds"]:.0f} s ({np.median(history["epoch_seconds"]):.1f} s per epoch, median).

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


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m mnist_exp.report", description=__doc__)
    parser.add_argument("run_id", help="an MLflow run id (see `mlflow ui`)")
    parser.add_argument("--out", help="output folder (default: outputs/report/<run_id>)")
    args = parser.parse_args()
    try:
        path = write_report(
            args.run_id, Path(args.out or f"outputs/report/{args.run_id}"), MlflowConfig()
        )
    except MnistExpError as error:
        exit_with(error)
    print(f"wrote {path} and its figures")


if __name__ == "__main__":
    main()
