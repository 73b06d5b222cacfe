"""Names that several modules share: metrics, a run's files and artifacts."""

COMPILED_METRICS = ("accuracy",)  # what the model is compiled with, beside its loss
METRICS = tuple(f"{split}{name}" for split in ("", "val_") for name in ("loss", *COMPILED_METRICS))
# Files in a run's output directory: the best checkpoint, and what `resume=<run_id>` continues from.
BEST_FILE, LAST_FILE, STATE_FILE = "best.keras", "last.keras", "state.json"
# Each run's label, prediction and probabilities for every test digit: what runs are paired by.
PREDICTIONS = "test/predictions.npz"
