"""`hparams_search=optuna`: a Hydra sweeper running an Optuna 4 study, each trial one job of the
sweep. The study lives in storage (a journal file by default, an RDB on a cluster), so a search
resumes where it stopped and several workers share it; jobs report each epoch to their trial, so a
pruner can stop hopeless ones.

Hydra's own Optuna sweeper pins optuna<3 and cannot prune; this one is small and uses Optuna 4.
Hydra only loads sweepers from the `hydra_plugins` package, hence its home here.
"""

import os
import socket
import time
import warnings
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.utils import JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from mnist_exp.sweeps import search
from mnist_exp.sweeps.space import distribution, override, study_name, suggest
from mnist_exp.tracking import notes

if TYPE_CHECKING:  # Hydra imports every plugin at start-up: Optuna (0.2 s) only when searching
    import optuna

    from mnist_exp.tracking.store import Store

# Trials that do not count towards n_trials: their process died (they run again), or a worker
# asked for one more than the study needed.
LOST, SURPLUS = "lost", "surplus"


Pruner = Enum("Pruner", {name: name for name in search.PRUNERS})  # checked as Hydra composes


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.mnist_exp_optuna.OptunaSweeper"  # where Hydra finds it
    n_trials: int = 20  # trials of the whole study, whichever worker runs them
    n_jobs: int = 1  # trials launched together (use a parallel launcher for > 1)
    seed: int = 42  # seeds the TPE sampler: the same search suggests the same trials
    study_name: str | None = None  # null: <model>-<digest of the search>, the same for a rerun
    storage: str | None = None  # null: <paths.root>/outputs/optuna/<name>.journal; or an RDB URL
    pruner: Pruner = Pruner.none  # stop trials whose validation accuracy lags after an epoch
    # RDB storages: seconds between the heartbeats of this worker's running trials; a trial silent
    # for 3 of them lost its worker (on any host) and runs again
    heartbeat: int = 10
    params: dict[str, str] = field(default_factory=dict)  # key: choice(...) / interval(...)


ConfigStore.instance().store(
    group="hydra/sweeper", name="mnist_exp_optuna", node=OptunaSweeperConf, provider="mnist_exp"
)


def requeue_lost(
    study: "optuna.Study", storage: "optuna.storages.BaseStorage", store: "Store"
) -> None:
    """Trials whose worker died run again: their parameters are queued, the trial itself is
    failed and no longer counted, and its MLflow run in `store` ends KILLED. On this host the
    worker's process is looked up; on others, an RDB storage's heartbeats tell. Another worker
    may get there first; then it is left to it."""
    import optuna

    from mnist_exp.tracking.liveness import close_trial_runs

    silent = search.stale_trial_numbers(study, storage) if search.beats(storage) else set()
    for trial in study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.RUNNING]):
        if owner_gone(trial):
            lost = "lost its process"
        elif trial.number in silent:
            seconds = 3 * storage.get_heartbeat_interval()
            lost = (
                f"lost its worker on {trial.user_attrs.get('host')} (no heartbeat for {seconds} s)"
            )
        else:
            continue
        try:
            storage.set_trial_user_attr(search.trial_id(study, storage, trial), "not_counted", LOST)
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
        except (ValueError, optuna.exceptions.UpdateFinishedTrialError):
            continue  # another worker requeued it
        study.enqueue_trial(trial.params, skip_if_exists=False)
        print(f"Trial {trial.number} {lost}: it runs again.")
        close_trial_runs(store, study.study_name, trial.number, f"its Optuna trial {lost}")


def counted(trial: "optuna.trial.FrozenTrial") -> bool:
    """Whether a trial is one of the study's n_trials (running, done, pruned or failed)."""
    return trial.user_attrs.get("not_counted") is None


def owner_gone(trial: "optuna.trial.FrozenTrial") -> bool:
    """A running trial whose sweeper process on this host has ended (Ctrl-C, a kill)."""
    from mnist_exp.tracking.liveness import process_alive

    owner = trial.user_attrs
    return owner.get("host") == socket.gethostname() and not process_alive(owner)


class OptunaSweeper(Sweeper):
    """Asks the study for `n_jobs` trials at a time, launches them, tells it their results, until
    the study holds `n_trials` (whichever process ran them)."""

    def __init__(
        self,
        n_trials: int,
        n_jobs: int,
        seed: int,
        study_name: str | None,
        storage: str | None,
        pruner: Pruner,
        heartbeat: int,
        params: dict[str, str],
    ) -> None:
        self.n_trials, self.n_jobs, self.seed, self.params = n_trials, n_jobs, seed, params
        self.heartbeat = heartbeat
        self.study_name, self.storage, self.pruner = study_name, storage, Pruner(pruner).name

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        from mnist_exp.tracking.store import open_store

        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )
        self.store = open_store(config.mlflow, config.paths.root)  # where the trials' runs are
        self.model = config.hydra.runtime.choices.get("model") or "search"
        self.epochs = int(config.epochs)
        self.studies_dir = Path(config.paths.root) / search.STUDIES_DIR

    def sweep(self, arguments: list[str]) -> "optuna.Study":
        import optuna

        # The config's search space first, so a command-line override of the same key wins.
        lines = [*(f"{key}={value}" for key, value in self.params.items()), *arguments]
        overrides = {
            o.get_key_element(): o for o in OverridesParser.create().parse_overrides(lines)
        }
        space = {key: distribution(o) for key, o in overrides.items() if o.is_sweep_override()}
        fixed = [
            f"{key}={o.get_value_element_as_str()}"
            for key, o in overrides.items()
            if not o.is_sweep_override()
        ]
        name = self.study_name or study_name(self.model, space, fixed, self.pruner)
        url = self.storage or str((self.studies_dir / f"{name}.journal").resolve())
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.trials = search.storage(url, self.heartbeat)
        study = optuna.create_study(
            study_name=name,
            storage=self.trials,
            direction="maximize",
            pruner=search.pruner(self.pruner, self.epochs),
            load_if_exists=True,
        )
        self.announce(study, url)
        env = {"storage": url, "study": name, "pruner": self.pruner}
        launched = 0
        while True:
            trials = [t for t in (self.ask(study, space) for _ in range(self.n_jobs)) if t]
            if not trials:
                if self.wait_for_others(study):
                    continue
                break
            ids = [search.trial_id(study, self.trials, t) for t in trials]
            jobs = [
                [*fixed, *(override(k, v) for k, v in t.params.items()), *job_env(env, i)]
                for t, i in zip(trials, ids, strict=True)
            ]
            with search.heartbeats(self.trials, ids):
                results = self.launcher.launch(jobs, launched)
            launched += len(jobs)
            for trial, result in zip(trials, results, strict=True):
                self.tell(study, trial, result)
        self.report(study, fixed)
        return study

    def announce(self, study: "optuna.Study", url: str) -> None:
        """Tag the sweep's parent run with the study and say where it is and how far it got."""
        from mnist_exp.sweeps.sweep import PARENT_ENV
        from mnist_exp.tracking.parent import log_to_parent

        requeue_lost(study, self.trials, self.store)
        done = sum(counted(t) and t.state.is_finished() for t in study.get_trials(deepcopy=False))
        print(f"Optuna study {study.study_name} in {url}: {done} of {self.n_trials} trials done.")
        if not search.beats(self.trials):
            print("Trials lost on other hosts are not seen in a journal: share an RDB for that.")
        if parent := os.environ.get(PARENT_ENV):
            log_to_parent(self.store, parent, tags={"optuna_study": study.study_name})

    def ask(self, study: "optuna.Study", space: dict) -> "optuna.Trial | None":
        """A new trial with its parameters, or None once the study has n_trials."""
        import optuna

        from mnist_exp.tracking.liveness import process_tags

        requeue_lost(study, self.trials, self.store)
        waiting = optuna.trial.TrialState.WAITING  # requeued: asking runs them first
        others = [t for t in study.get_trials(deepcopy=False) if t.state != waiting]
        if sum(counted(t) for t in others) >= self.n_trials:
            return None
        with warnings.catch_warnings():  # "Heartbeat ... used with Study.optimize": see heartbeats
            warnings.simplefilter("ignore", UserWarning)
            trial = study.ask()
        if search.beats(self.trials):  # from its first moment: a worker may die before launch
            self.trials.record_heartbeat(search.trial_id(study, self.trials, trial))
        ahead = [t for t in study.get_trials(deepcopy=False) if t.number < trial.number]
        if sum(counted(t) for t in ahead) >= self.n_trials:  # another worker took the last one
            trial.set_user_attr("not_counted", SURPLUS)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            return None
        for key, value in process_tags().items():
            trial.set_user_attr(key, value)
        # Seeded by the trial's number: one worker's search repeats exactly, and workers that ask
        # at the same moment still get different random starts.
        with warnings.catch_warnings():  # constant_liar is "experimental" (since Optuna 2.8)
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = optuna.samplers.TPESampler(seed=self.seed + trial.number, constant_liar=True)
        study.sampler = sampler
        for key, found in space.items():
            suggest(trial, key, found)
        return trial

    def wait_for_others(self, study: "optuna.Study") -> bool:
        """With heartbeats, a worker whose share is done waits while others' trials run, so that
        one lost with its worker runs again here; True when one did (ask again)."""
        import optuna

        if not search.beats(self.trials):
            return False
        running, waiting = optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING
        print("Waiting for the trials other workers run (a lost one runs again here).")
        while study.get_trials(deepcopy=False, states=[running]):
            time.sleep(self.heartbeat)
            requeue_lost(study, self.trials, self.store)
            if study.get_trials(deepcopy=False, states=[waiting]):
                return True
        return False

    def tell(self, study: "optuna.Study", trial: "optuna.Trial", result) -> None:
        import optuna

        value = result.return_value if result.status == JobStatus.COMPLETED else None
        ended = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)
        pruned = ended.user_attrs.get(search.PRUNED_AT)
        if value is None:
            study.tell(trial, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
        elif pruned is not None:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED, skip_if_finished=True)
        else:
            study.tell(trial, value, skip_if_finished=True)

    def report(self, study: "optuna.Study", fixed: list[str]) -> None:
        """The best trial's command, and Optuna's figures of the whole study, to the parent run."""
        import optuna

        from mnist_exp.sweeps.sweep import PARENT_ENV

        if not study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE]):
            return
        best = study.best_trial
        command = notes.command([*fixed, *(override(k, v) for k, v in best.params.items())])
        print(
            f"Best trial of study {study.study_name}: #{best.number}, validation accuracy "
            f"{best.value:.4f}. To run it alone:\n  {command}"
        )
        if not (parent := os.environ.get(PARENT_ENV)):
            return
        from mnist_exp.figures import study_figures
        from mnist_exp.tracking.parent import log_to_parent

        log_to_parent(
            self.store,
            parent,
            texts={"optuna/best_trial_command.txt": command + "\n"},
            tags={"optuna_best_trial": str(best.number)},
            figures={f"optuna/{name}.png": f for name, f in study_figures(study).items()},
        )


def job_env(env: dict[str, str], trial: int) -> list[str]:
    """Overrides that give the job its trial (by its id in the storage) in the environment,
    whichever launcher runs it."""
    values = {**env, "trial": str(trial)}
    return [f"+hydra.job.env_set.{search.ENV[key]}='{value}'" for key, value in values.items()]
