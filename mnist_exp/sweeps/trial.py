"""A job's side of an Optuna search: its trial, its tags, and the callback that reports each epoch
to the trial (so its pruner can stop it)."""

import os
from typing import TYPE_CHECKING

import keras

from mnist_exp.sweeps.search import ENV, PRUNED_AT, pruner, storage
from mnist_exp.tracking.log import log_pruned

if TYPE_CHECKING:
    import optuna


def job_trial(epochs: int) -> "optuna.Trial | None":
    """This job's trial when an Optuna search launched it, else None."""
    if ENV["trial"] not in os.environ:
        return None
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(
        study_name=os.environ[ENV["study"]],
        storage=storage(os.environ[ENV["storage"]]),
        pruner=pruner(os.environ[ENV["pruner"]], epochs),
    )
    return optuna.trial.Trial(study, int(os.environ[ENV["trial"]]))


def trial_tags(trial: "optuna.Trial") -> dict[str, str]:
    """Tags that let the MLflow UI filter one search across all its workers."""
    return {"optuna_study": trial.study.study_name, "optuna_trial": str(trial.number)}


class ReportToTrial(keras.callbacks.Callback):
    """Reports each epoch's validation accuracy to an Optuna trial, and stops training like early
    stopping once the trial's pruner calls it hopeless (`pruned_at`: that epoch)."""

    def __init__(self, trial):
        super().__init__()
        self.trial = trial
        self.pruned_at = None

    def on_epoch_end(self, epoch, logs=None):
        import optuna

        try:
            self.trial.report(float(logs["val_accuracy"]), epoch + 1)
        except optuna.exceptions.UpdateFinishedTrialError:
            from mnist_exp.errors import MnistExpError

            raise MnistExpError(
                f"Optuna trial {self.trial.number} was given up while this job ran (its worker "
                "sent no heartbeat: lost?) and runs again elsewhere: this job stops."
            ) from None
        if self.trial.should_prune():
            self.pruned_at = epoch + 1
            self.trial.set_user_attr(PRUNED_AT, epoch + 1)
            log_pruned(epoch + 1)
            self.model.stop_training = True
