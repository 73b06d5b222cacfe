"""Names that several modules share: metrics, a run's files and artifacts."""

COMPILED_METRICS = ("accuracy",)  # what the model is compiled with, beside its loss
METRICS = tuple(f"{split}{name}" for split in ("", "val_") for name in ("loss", *COMPILED_METRICS))
# Files in a run's output directory: the best checkpoint, and what `resume=<run_id>` continues from.
BEST_FILE, LAST_FILE, STATE_FILE = "best.keras", "last.keras", "state.json"
# An interrupted run's copy of those files in its artifacts: `resume=` where its directory is not
# (a preempted SLURM job requeued on another node).
RESUME_ARTIFACTS = "resume"
# Each run's label, prediction and probabilities for every test digit: what runs are paired by.
PREDICTIONS = "test/predictions.npz"
# Each split's reports, under <split>/ in a run's artifacts.
CONFUSION_CSV, REPORT_TEXT = "confusion_matrix.csv", "classification_report.txt"

# A finished run's metrics (beside Keras' per-epoch series: loss, accuracy, val_loss, ...).
TRAIN_LOSS, TRAIN_ACCURACY = "train_loss", "train_accuracy"  # the best model, dropout off
BEST_VAL_LOSS, BEST_VAL_ACCURACY = "best_val_loss", "best_val_accuracy"  # the best checkpoint
TEST_LOSS, TEST_ACCURACY = "test_loss", "test_accuracy"
SPLIT_METRICS = {
    "train": (TRAIN_LOSS, TRAIN_ACCURACY),
    "val": (BEST_VAL_LOSS, BEST_VAL_ACCURACY),
    "test": (TEST_LOSS, TEST_ACCURACY),
}


def extra_metrics(name: str) -> tuple[str, str]:
    """The loss and accuracy metrics of an `evaluate.extra` set."""
    return f"extra_{name}_loss", f"extra_{name}_accuracy"


# The robustness set's parts: two of fonts, two of scikit-learn's real handwriting; selection may
# read the writers' validation part, never the held-out one (`mnist_exp.data.robustness`).
PRINTED_PART, FONTS_PART = "printed", "handwriting fonts"
WRITERS_VALIDATION, WRITERS_HELD_OUT = "writers validation", "writers held out"
ROBUSTNESS_PARTS = (PRINTED_PART, FONTS_PART, WRITERS_VALIDATION, WRITERS_HELD_OUT)


def part_metric(metric: str, part: str) -> str:
    """An accuracy metric's name for one part of its set:
    `extra_robustness_writers_held_out_accuracy`."""
    return metric.replace("_accuracy", f"_{part.replace(' ', '_')}_accuracy")


EPOCHS_RUN, BEST_EPOCH, TRAIN_SECONDS = "epochs_run", "best_epoch", "train_seconds"
DATASET = "dataset"  # a run's tag: the name of its data (`mnist`, a dataset=idx set's name)
CLASS_BALANCE = "class_balance"  # a run's tag: its training images per class, and how uneven
VALIDATED_ON = "validation_digest"  # a run's tag: the digest of its validation images and labels
CLASSES = "classes"  # a run's tag: its classes in its model's output order, as JSON
MACHINE = "machine"  # a run's tags machine.cpu, machine.flags, ...: what it ran on
WALL_SECONDS = "wall_seconds"  # the job, from its start to the end of its logging
BEST_TRAIN_ACCURACY = "best_train_accuracy"  # the per-epoch (dropout on) accuracy of that epoch

# How a sweep's job ended; FINISHED and PRUNED (stopped early by a search's pruner) are done.
FINISHED, PRUNED, FAILED, KILLED = "FINISHED", "PRUNED", "FAILED", "KILLED"
RUN_COMMAND = "python -m mnist_exp.run"
