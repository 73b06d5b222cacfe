"""What an Optuna search shares between its sweeper and its jobs: where the study is stored, the
pruners, and how a job, in whatever process a launcher starts it, finds its trial."""

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # Optuna (0.2 s) only once a search runs
    import optuna

# Set for each job by the sweeper (as `hydra.job.env_set`, so every launcher passes them on).
ENV = {
    "storage": "MNIST_EXP_OPTUNA_STORAGE",
    "study": "MNIST_EXP_OPTUNA_STUDY",
    "trial": "MNIST_EXP_OPTUNA_TRIAL",  # the trial's id in the storage
    "pruner": "MNIST_EXP_OPTUNA_PRUNER",
}
PRUNERS = ("none", "median", "hyperband")
# Default journal files, one per study (<study name>.journal), under `paths.root`.
STUDIES_DIR = Path("outputs/optuna")
PRUNED_AT = "pruned_at_epoch"  # the trial's user attribute a job sets when its pruner stops it


def storage(url: str) -> "str | optuna.storages.BaseStorage":
    """An RDB URL (postgresql://, mysql://, sqlite:///) as it is; anything else is the path of a
    journal file, which Optuna locks so that several processes can share it."""
    import optuna

    if "://" in url:
        return url
    Path(url).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(url))


def pruner(name: str, epochs: int) -> "optuna.pruners.BasePruner":
    """`median`: stop a trial whose validation accuracy after an epoch is below the median of
    earlier trials' at that epoch (after 3 trials); `hyperband`: successive halving over 1..epochs
    epochs; `none`: never stop."""
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs)
    return optuna.pruners.NopPruner()
