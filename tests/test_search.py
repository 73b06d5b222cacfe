"""A persistent Optuna search in real processes on a small MNIST subset: resumed after Ctrl-C,
shared by two workers, and pruned."""

import inspect
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from mnist_exp.sweeps.search import beats, stale_trial_numbers, storage, trial_id

from .helpers import ROOT, run_during_epoch, run_module
from .postgres import new_database

pytestmark = pytest.mark.slow
COMPLETE, PRUNED = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED
SMALL = ["model=mlp", "epochs=2", "dataset.limit=1000", "split.size=1000",
         "mlflow.registered_model=null", "mlflow.system_metrics=false"]  # fmt: skip


def stores(tmp_path) -> dict[str, str]:
    """Where a test's search keeps its runs and its study: files in its directory."""
    return {
        "tracking": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "study": str(tmp_path / "study.journal"),
    }


def search_args(tmp_path, *args: str, sweep: str = "sweep", where: dict | None = None) -> list[str]:
    where = where or stores(tmp_path)
    return [
        "-m",
        "hparams_search=optuna",
        *SMALL,
        *args,
        f"mlflow.tracking_uri={where['tracking']}",
        f"hydra.sweeper.storage={where['study']}",
        "hydra.sweeper.study_name=test",
        f"hydra.sweep.dir={tmp_path / sweep}",
    ]


def study_of(tmp_path, where: dict | None = None) -> optuna.Study:
    return optuna.load_study(
        study_name="test", storage=storage((where or stores(tmp_path))["study"])
    )


def runs_of(tmp_path, where: dict | None = None) -> list:
    client = MlflowClient((where or stores(tmp_path))["tracking"])
    return client.search_runs([client.get_experiment_by_name("mnist_exp").experiment_id])


def children(tmp_path, where: dict | None = None) -> list:
    return [run for run in runs_of(tmp_path, where) if "mlflow.parentRunId" in run.data.tags]


def test_an_interrupted_search_continues_its_study(tmp_path, tracking_uri):
    args = search_args(tmp_path, "hydra.sweeper.n_trials=3")
    code, output = run_during_epoch(
        1, args, lambda process: process.send_signal(signal.SIGINT), occurrence=2
    )
    assert code == 130, output[-3000:]
    assert "rerun the same command to continue it" in output and "skip_finished" not in output
    states = [t.state for t in study_of(tmp_path).trials]
    assert states == [COMPLETE, optuna.trial.TrialState.RUNNING]

    again = run_module("mnist_exp.run", *args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Trial 1 lost its process: it runs again." in again.stdout
    assert "test in" in again.stdout and "1 of 3 trials done" in again.stdout
    trials = study_of(tmp_path).trials
    complete = [t for t in trials if t.state == COMPLETE]
    [lost] = [t for t in trials if t.user_attrs.get("not_counted") == "lost"]
    assert len(complete) == 3 and lost.params in [t.params for t in complete]
    runs = children(tmp_path)
    assert sorted(run.info.status for run in runs) == ["FINISHED"] * 3 + ["KILLED"]
    assert {run.data.tags["optuna_study"] for run in runs} == {"test"}
    assert sorted(int(run.data.tags["optuna_trial"]) for run in runs) == [0, 1, 2, 3]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    [parent] = [r for r in runs_of(tmp_path) if r.info.run_name.startswith("sweep") and
                r.info.status == "FINISHED"]  # fmt: skip
    figures = {a.path for a in client.list_artifacts(parent.info.run_id, "optuna")}
    assert {
        f"optuna/{name}.png" for name in ("history", "importances", "parallel_coordinates")
    } <= figures
    best = study_of(tmp_path).best_trial
    command = Path(client.download_artifacts(parent.info.run_id, "optuna/best_trial_command.txt"))
    lr = f"optimizer.learning_rate={best.params['optimizer.learning_rate']:.4g}"
    assert command.read_text().startswith("python -m mnist_exp.run ") and lr in command.read_text()
    assert parent.data.tags["optuna_study"] == "test"
    assert parent.data.tags["optuna_best_trial"] == str(best.number)


def test_two_workers_share_one_study_and_one_store_on_postgresql_never_running_a_trial_twice(
    tmp_path, postgres, monkeypatch
):
    """Both on a new PostgreSQL database each, as a team shares them: the workers create the
    store together, and the password stays in .pgpass, out of every file the search writes."""
    where = {"tracking": new_database(postgres, "store"), "study": new_database(postgres, "study")}
    monkeypatch.setenv("PGPASSFILE", str(postgres / "pgpass"))
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mnist_exp.run",
                *search_args(tmp_path, "hydra.sweeper.n_trials=4", sweep=f"sweep{n}", where=where),
                f"paths.root={tmp_path}",  # the store's artifacts: mlruns/ there
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for n in range(2)
    ]
    outputs = [worker.communicate(timeout=900)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], outputs[0][-2000:]
    password = (postgres / "pgpass").read_text().strip().rpartition(":")[2]
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written and not [p for p in written if password.encode() in p.read_bytes()]
    assert not any(password in output for output in outputs)
    trials = study_of(tmp_path, where).trials
    complete = [t for t in trials if t.state == COMPLETE]
    assert len(complete) == 4
    assert len({tuple(sorted(t.params.items())) for t in complete}) == 4  # no parameters twice
    assert len({t.user_attrs["pid"] for t in complete}) == 2  # both workers took trials
    runs = children(tmp_path, where)
    assert len(runs) == 4 and {run.info.status for run in runs} == {"FINISHED"}
    assert sorted(int(run.data.tags["optuna_trial"]) for run in runs) == [
        t.number for t in complete
    ]
    assert len({run.data.tags["mlflow.parentRunId"] for run in runs}) == 2
    assert {run.data.tags["optuna_study"] for run in runs} == {"test"}


def test_a_pruner_stops_hopeless_trials_after_their_first_epoch(tmp_path, tracking_uri):
    """A learning rate of 1e-7 cannot learn in 3 epochs; once the median pruner has seen 3 trials
    it stops such trials after their first epoch, so the search trains fewer epochs than its 4
    trials of 3 epochs would without pruning (patience 5: early stopping never ends one)."""
    space = ["optimizer.learning_rate=choice(1e-7,2e-3)", "hydra.sweeper.n_trials=4", "epochs=3"]
    done = run_module(
        "mnist_exp.run", *search_args(tmp_path, *space, "hydra.sweeper.pruner=median")
    )
    assert done.returncode == 0, done.stderr[-3000:]
    trials = study_of(tmp_path).trials
    hopeless = [t for t in trials[3:] if t.params["optimizer.learning_rate"] == 1e-7]
    assert hopeless and all(t.state == PRUNED and t.last_step == 1 for t in hopeless)
    pruned = [t for t in trials if t.state == PRUNED]
    runs = {int(run.data.tags["optuna_trial"]): run for run in children(tmp_path)}
    assert all(runs[t.number].data.tags["pruned"].startswith("after epoch") for t in pruned)
    assert all(runs[t.number].data.metrics["epochs_run"] < 3 for t in pruned)
    unpruned = [t for t in trials if t.state == COMPLETE]
    assert all(runs[t.number].data.metrics["epochs_run"] == 3 for t in unpruned)
    assert sum(run.data.metrics["epochs_run"] for run in runs.values()) < 4 * 3
    [parent] = [r for r in runs_of(tmp_path) if "mlflow.parentRunId" not in r.data.tags]
    assert parent.data.metrics["jobs_pruned"] == len(pruned)


@pytest.mark.filterwarnings("ignore::UserWarning")  # Optuna: heartbeats "used with optimize"
def test_optunas_private_lookup_of_stale_trials_still_finds_a_silent_trial(tmp_path):
    """Optuna has no public lookup of stale trials: `stale_trial_numbers` calls its private one,
    and this fails loudly once Optuna renames it, changes its signature or what it returns."""
    lookup = optuna.storages.RDBStorage._get_stale_trial_ids
    assert list(inspect.signature(lookup).parameters) == ["self", "study_id"]
    rdb = storage(f"sqlite:///{tmp_path / 'study.db'}", heartbeat=2)  # stale after 6 s
    study = optuna.create_study(study_name="silent", storage=rdb)
    silent, beating = study.ask(), study.ask()
    for trial in (silent, beating):
        rdb.record_heartbeat(trial_id(study, rdb, trial))
    time.sleep(4)
    rdb.record_heartbeat(trial_id(study, rdb, beating))
    time.sleep(3.5)  # the silent one past its grace period, the other well within it
    assert stale_trial_numbers(study, rdb) == {silent.number}
    assert stale_trial_numbers(study, rdb) == stale_trial_numbers(study, study._storage)


def test_heartbeats_are_told_by_optunas_public_api(tmp_path):
    rdb = storage(f"sqlite:///{tmp_path / 'study.db'}", heartbeat=5)
    assert beats(rdb) and beats(optuna.create_study(storage=rdb)._storage)  # and the cache over it
    assert not beats(storage(f"sqlite:///{tmp_path / 'plain.db'}"))
    assert not beats(storage(str(tmp_path / "study.journal")))
