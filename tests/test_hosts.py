"""Work lost on another host is found by its heartbeat, not by a process table: runs and trials
on a shared store, and a search whose two workers run on two hosts (Linux namespaces), one of
them killed mid-trial."""

import datetime
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
from mlflow.tracking import MlflowClient

from mnist_exp.sweeps.search import heartbeats, storage
from mnist_exp.sweeps.sweeper import requeue_lost
from mnist_exp.tracking.liveness import close_dead_runs
from mnist_exp.tracking.store import Store

from . import postgres as postgres_server
from .helpers import ROOT, free_port, start_tracking_server, stop, wait_for, wait_until_up
from .hosts import HostsError, make_hosts, remove_hosts
from .postgres import new_database

RUNNING, WAITING = optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING
FAIL, COMPLETE = optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE


def test_a_run_on_another_host_that_stopped_beating_ends_killed(tracking_uri, capsys):
    """Another host's process cannot be looked up: its run ends KILLED once its heartbeat has
    been silent for 3 intervals and 10 s; a run that still beats, or never beat, is left."""
    client = MlflowClient(tracking_uri)
    experiment = client.create_experiment("hosts")
    now = time.time()

    def run(**tags: str) -> str:
        owner = {"host": "elsewhere", "pid": "1", "pid_started": "0"}
        return client.create_run(experiment, tags={**owner, **tags}).info.run_id

    silent = run(heartbeat=f"{now - 600:.0f}", heartbeat_seconds="15")
    beating = run(heartbeat=f"{now - 30:.0f}", heartbeat_seconds="15")  # 55 s allowed
    never = run()  # logged before heartbeats, or to a store of one host
    close_dead_runs(client, experiment)
    assert client.get_run(silent).info.status == "KILLED"
    assert "no heartbeat from elsewhere for 6" in client.get_run(silent).data.tags["error"]
    assert [client.get_run(r).info.status for r in (beating, never)] == ["RUNNING"] * 2
    assert f"Run {silent} (" in capsys.readouterr().out


@pytest.mark.filterwarnings("ignore::UserWarning")  # Optuna: heartbeats "used with optimize"
def test_a_trial_whose_worker_fell_silent_runs_again_and_its_run_ends_killed(
    postgres, monkeypatch, tracking_uri, capsys
):
    """The heartbeat's time is the database's: hosts' clocks play no part."""
    monkeypatch.setenv("PGPASSFILE", str(postgres / "pgpass"))
    study = optuna.create_study(
        study_name="silent",
        storage=storage(new_database(postgres, "silent"), heartbeat=1),
        direction="maximize",
    )
    space = {"x": optuna.distributions.FloatDistribution(0, 1)}
    lost, alive = study.ask(space), study.ask(space)
    for trial in (lost, alive):
        trial.set_user_attr("host", "elsewhere")
    study._storage.record_heartbeat(lost._trial_id)
    client = MlflowClient(tracking_uri)
    tags = {"optuna_study": "silent", "optuna_trial": str(lost.number)}
    run = client.create_run(client.create_experiment("trials"), tags=tags).info.run_id
    with heartbeats(study._storage, [alive._trial_id]):
        time.sleep(4.5)  # the lost one silent for more than 3 heartbeats
        requeue_lost(study, study._storage, Store(tracking_uri, "trials"))
    trials = study.trials
    assert trials[lost.number].state == FAIL
    assert trials[lost.number].user_attrs["not_counted"] == "lost"
    assert trials[alive.number].state == RUNNING
    [again] = [t for t in trials if t.state == WAITING]
    assert again.system_attrs["fixed_params"] == lost.params  # what its next ask suggests
    assert client.get_run(run).info.status == "KILLED"
    printed = capsys.readouterr().out
    assert f"Trial {lost.number} lost its worker on elsewhere (no heartbeat for 3 s)" in printed


@pytest.fixture
def hosts():
    """Two test hosts (tests/hosts.py), taken away afterwards."""
    try:
        made = make_hosts(f"mx{os.getpid() % 100_000}", 2)
    except HostsError as error:
        pytest.skip(str(error))  # a failure in CI (CI=true)
    yield made
    remove_hosts(made)


@pytest.mark.slow
def test_a_search_on_two_hosts_runs_again_the_trial_of_the_host_that_died(
    tmp_path, hosts, monkeypatch
):
    """The store and the tracking server on this machine; a search worker on each of two
    hosts with their own addresses, names and process tables, one study on PostgreSQL, one MLflow
    server. The first host's worker is SIGKILLed mid-trial; the second host's, which cannot see
    its processes, finds the trial silent, runs it again, and marks its run KILLED."""
    a, b = hosts
    seen = subprocess.run(
        b.command(sys.executable, "-c", "import psutil, socket; print(socket.gethostname(), "
                  "psutil.pids())"),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert seen.stdout.split(maxsplit=1) == [b.name, "[1]\n"], seen.stderr  # its own, alone
    pg = tmp_path / "postgres"
    postgres_server.start(pg, addresses=(a.gateway, b.gateway))
    monkeypatch.setenv("PGPASSFILE", str(pg / "pgpass"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    port, server = free_port(), None
    try:
        store = new_database(pg, "store")
        new_database(pg, "study")
        server = start_tracking_server(tmp_path, port, store, env=env, host="0.0.0.0")
        uri = f"http://127.0.0.1:{port}"
        wait_until_up(f"{uri}/health", server, 120)

        def worker(host) -> subprocess.Popen:
            args = [
                "-m", "hparams_search=optuna", "model=mlp", "epochs=2", "dataset.limit=1000",
                "split.size=1000", "mlflow.registered_model=null", "mlflow.system_metrics=false",
                "hydra.sweeper.n_trials=2", "hydra.sweeper.study_name=test",
                f"hydra.sweeper.storage={postgres_server.url(pg, 'study', host.gateway)}",
                "hydra.sweeper.heartbeat=1", "mlflow.heartbeat_seconds=1",
                f"mlflow.tracking_uri=http://{host.gateway}:{port}",
                f"hydra.sweep.dir={tmp_path / host.name}", f"paths.root={tmp_path / host.name}",
            ]  # fmt: skip
            return subprocess.Popen(
                host.command(sys.executable, "-m", "mnist_exp.run", *args),
                cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

        # The second worker starts once the first host is dead: on a loaded machine, two started
        # together could finish the study before the first ran a trial.
        first = worker(a)
        client = MlflowClient(uri)
        experiment = wait_for("the experiment", lambda: client.get_experiment_by_name("mnist_exp"))
        on_a = f"tags.host = '{a.name}' and tags.optuna_trial != '' and tags.heartbeat != ''"
        [doomed] = wait_for(  # with its parent: the tag that a run sets last as it starts
            f"a trial's run on {a.name}",
            lambda: [
                r
                for r in client.search_runs([experiment.experiment_id], on_a)
                if "mlflow.parentRunId" in r.data.tags
            ],
        )
        os.killpg(first.pid, signal.SIGKILL)  # the host dies: its worker and its trial's job
        killed = datetime.datetime.now()
        first.wait(timeout=30)
        second = worker(b)
        output = second.communicate(timeout=600)[0]
        assert second.returncode == 0, output[-3000:]
        number = int(doomed.data.tags["optuna_trial"])
        said = f"Trial {number} lost its worker on {a.name} (no heartbeat for 3 s): it runs again."
        assert said in output, output[-3000:]

        study = optuna.load_study(
            study_name="test", storage=storage(postgres_server.url(pg, "study"))
        )
        complete = [t for t in study.trials if t.state == COMPLETE]
        lost = study.trials[number]
        assert lost.state == FAIL and lost.user_attrs["not_counted"] == "lost"
        assert lost.user_attrs["host"] == a.name and len(complete) == 2
        assert lost.params in [t.params for t in complete]
        [again] = [t for t in complete if t.params == lost.params]
        print(  # the timeline the docs report (pytest -s)
            f"killed at 0 s; the trial failed as lost at "
            f"{(lost.datetime_complete - killed).total_seconds():.1f} s, ran again from "
            f"{(again.datetime_start - killed).total_seconds():.1f} s to "
            f"{(again.datetime_complete - killed).total_seconds():.1f} s"
        )
        assert {t.user_attrs["host"] for t in complete} == {b.name}
        runs = client.search_runs([experiment.experiment_id], "tags.optuna_trial != ''")
        assert client.get_run(doomed.info.run_id).info.status == "KILLED"
        assert "heartbeat" in client.get_run(doomed.info.run_id).data.tags["error"]
        finished = [r for r in runs if r.info.status == "FINISHED"]
        assert len(finished) == 2 and {r.data.tags["host"] for r in finished} == {b.name}

        # Its sweep's parent run, silent too, ends KILLED when a process elsewhere looks.
        parent = client.get_run(doomed.data.tags["mlflow.parentRunId"])
        wait_for(
            "the dead host's sweep run KILLED",
            lambda: (
                close_dead_runs(client, experiment.experiment_id)
                or client.get_run(parent.info.run_id).info.status == "KILLED"
            ),
            60,
        )
    finally:
        if server:
            stop(server)
        postgres_server.stop(pg)
