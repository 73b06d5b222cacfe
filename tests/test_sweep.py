"""Sweeps end to end: real Hydra launchers, a real MLflow store or server, real (subset) MNIST."""

import csv
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
from mlflow.tracking import MlflowClient

from mnist_exp.compare import compare
from mnist_exp.compare import main as compare_main
from mnist_exp.data import CACHE_DIR, CACHE_FILE
from mnist_exp.errors import MnistExpError
from mnist_exp.sweeps.search import storage
from mnist_exp.tracking.store import EXPERIMENT_KIND, Store

from . import cluster
from .helpers import (
    CHROMIUM_FLAGS,
    ROOT,
    chromium,
    free_port,
    run_module,
    start_tracking_server,
    stop,
    wait_for,
    wait_until_up,
)
from .postgres import new_database

pytestmark = pytest.mark.slow
SMALL = ["epochs=1", "dataset.limit=500", "split.size=1000", "mlflow.registered_model=null"]
MODEL = "model=mlp"  # the quickest to train, unless a test sweeps the architecture
GRID = ["optimizer=adam,sgd", "batch_size=64"]  # two jobs: a launcher's concurrency, no more
GRID_OVERRIDES = {f"optimizer={o} batch_size=64" for o in ("adam", "sgd")}


def sweep(tmp_path, uri: str, *args: str, env: dict | None = None):
    done = run_module(
        "mnist_exp.run",
        "-m",
        *args,
        *SMALL,
        *([] if any(a.startswith("model=") for a in args) else [MODEL]),
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        *([] if env else [f"mlflow.tracking_uri={uri}"]),
        env=env,
    )
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    return done


def parent_and_children(uri: str):
    """The newest sweep parent run in the store, and its child runs."""
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("mnist_exp").experiment_id
    runs = client.search_runs([experiment], order_by=["attributes.start_time DESC"])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return parent, children


def swept(run) -> str:
    """A child's overrides without the ones every test job shares."""
    shared = {*SMALL, MODEL}
    return " ".join(
        o for o in run.data.tags["overrides"].split() if o not in shared and "tracking_uri" not in o
    )


def summary_rows(uri: str, parent) -> list[dict]:
    text = MlflowClient(uri).download_artifacts(parent.info.run_id, "summary.csv")
    return list(csv.DictReader(io.StringIO(Path(text).read_text())))


def check_grid(uri: str, tmp_path) -> None:
    parent, children = parent_and_children(uri)
    assert parent.info.status == "FINISHED"
    experiment = MlflowClient(uri).get_experiment(parent.info.experiment_id)
    assert experiment.tags[EXPERIMENT_KIND[0]] == EXPERIMENT_KIND[1]
    assert parent.data.tags["sweep_dir"] == str(tmp_path / "sweep")
    assert {swept(c) for c in children} == GRID_OVERRIDES
    assert [c.info.status for c in children] == ["FINISHED"] * 2
    rows = summary_rows(uri, parent)
    assert len(rows) == 2 and {r["status"] for r in rows} == {"FINISHED"}
    artifacts = {a.path for a in MlflowClient(uri).list_artifacts(parent.info.run_id)}
    assert {"summary.csv", "summary.md", "summary.png"} <= artifacts
    best = max(children, key=lambda c: c.data.metrics["best_val_accuracy"])
    assert parent.data.metrics["best_job_val_accuracy"] == best.data.metrics["best_val_accuracy"]
    assert parent.data.tags["best_run_id"] == best.info.run_id
    assert parent.data.params["best.optimizer"] == best.data.tags["choice.optimizer"]
    assert "best.batch_size" not in parent.data.params  # shared: it sets no job apart
    note = parent.data.tags["mlflow.note.content"]
    assert note.startswith("Sweep of 2 jobs: 2 finished, 0 did not.")
    assert "python -m mnist_exp.run -m optimizer=adam,sgd batch_size=64" in note
    assert f"Best on validation: **{best.data.metrics['best_val_accuracy']:.2%}**" in note


def test_seeds_repeat_a_configuration_summarised_with_intervals_and_a_paired_test(
    tmp_path, tracking_uri, monkeypatch, capsys
):
    """2 configs x 2 seeds: the parent gets the table by configuration, the best configuration on
    mean validation accuracy and McNemar's test against the runner-up; `compare` pairs two runs."""
    done = sweep(tmp_path, tracking_uri, "optimizer=adam,sgd", "seed=1,2")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    parent, children = parent_and_children(tracking_uri)
    client = MlflowClient(tracking_uri)
    text = client.download_artifacts(parent.info.run_id, "summary_by_config.csv")
    rows = list(csv.DictReader(io.StringIO(Path(text).read_text())))
    configs = {row["overrides"].split()[0]: row for row in rows}  # full overrides, seed dropped
    assert all("seed=" not in row["overrides"] and "epochs=1" in row["overrides"] for row in rows)
    assert set(configs) == {"optimizer=adam", "optimizer=sgd"}
    for name, row in configs.items():
        runs = [c for c in children if c.data.tags["choice.optimizer"] == name.split("=")[1]]
        val = [c.data.metrics["best_val_accuracy"] for c in runs]
        assert (row["n"], row["failed"]) == ("2", "0")
        assert float(row["val_mean"]) == pytest.approx(np.mean(val))
        assert float(row["val_std"]) == pytest.approx(np.std(val, ddof=1))
        assert float(row["val_ci_low"]) < float(row["val_mean"]) < float(row["val_ci_high"])
        best_run = max(runs, key=lambda c: c.data.metrics["best_val_accuracy"])
        assert row["best_run_id"] == best_run.info.run_id
    best, second = sorted(configs.values(), key=lambda row: -float(row["val_mean"]))
    assert parent.data.tags["best_run_id"] == best["best_run_id"]
    assert parent.data.metrics["best_config_val_mean"] == pytest.approx(float(best["val_mean"]))
    assert parent.data.params["best.optimizer"] == best["overrides"].split()[0].split("=")[1]
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"summary_by_config.md", "summary.png", "comparison.txt", "comparison.png"} <= artifacts
    assert "By configuration" in done.stdout and "McNemar's exact test: p" in done.stdout
    assert "mean of 2 runs" in parent.data.tags["mlflow.note.content"]

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    out = tmp_path / "flips.png"
    pair = [best["best_run_id"], second["best_run_id"]]
    compare_main([*pair, "--out", str(out)])  # the CLI, in this process
    compared = capsys.readouterr()
    predictions = [
        np.load(client.download_artifacts(run, "test/predictions.npz", str(tmp_path / run)))
        for run in pair
    ]
    right = [p["predicted"] == p["labels"] for p in predictions]
    only_a, only_b = int(np.sum(right[0] & ~right[1])), int(np.sum(right[1] & ~right[0]))
    assert f"only A got {only_a} right, only B {only_b}." in compared.out
    assert f"test accuracy {right[0].mean():.2%}" in compared.out
    p_value = float(parent.data.metrics["mcnemar_p_value"])
    logged = Path(client.download_artifacts(parent.info.run_id, "comparison.txt")).read_text()
    verdict = logged.splitlines()[2:]  # the counts and the p-value: the CLI's, the sweep's
    assert len(verdict) == 2 and all(line in compared.out for line in verdict)
    assert f"p = {p_value:.3g}" in logged or p_value == 0
    assert out.stat().st_size > 10_000
    assert predictions[0]["probabilities"].shape == (10_000, 10)
    with pytest.raises(MnistExpError, match=f"^Run {'0' * 32} has no test/predictions.npz"):
        compare(pair[0], "0" * 32, Store(tracking_uri, "mnist_exp"))


def test_one_sweep_compares_architectures_and_identical_jobs_train_identically(
    tmp_path, tracking_uri
):
    """A sweep over the model group (each architecture also trains alone in test_models). The
    basic launcher runs every job in one process: identical jobs (seed=7 twice) must train
    identically, each from fresh weights."""
    done = sweep(tmp_path, tracking_uri, "model=mlp,lenet5", "seed=7,7", "deterministic=true")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Sweep summary: 4 of 4 jobs finished" in done.stdout
    parent, children = parent_and_children(tracking_uri)
    assert parent.info.status == "FINISHED"
    names = sorted(c.info.run_name for c in children)  # a job is named by its overrides
    assert [name.split()[:2] for name in names] == [
        [f"model={model}", "seed=7"] for model in ("lenet5", "lenet5", "mlp", "mlp")
    ]
    params = {c.data.tags["choice.model"]: int(c.data.params["model_params"]) for c in children}
    assert params == {"mlp": 669_706, "lenet5": 61_706}
    client = MlflowClient(tracking_uri)
    for model in ("mlp", "lenet5"):
        losses = [
            [m.value for m in client.get_metric_history(c.info.run_id, "loss")]
            for c in children
            if c.data.tags["choice.model"] == model
        ]
        assert len(losses) == 2 and losses[0][0] > 1.0  # one epoch on 500 digits: far from trained
        np.testing.assert_allclose(losses[0], losses[1], rtol=1e-6)


def test_grid_with_the_joblib_launcher_and_two_workers(tmp_path, tracking_uri):
    done = sweep(tmp_path, tracking_uri, *GRID, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "database is locked" not in done.stdout + done.stderr
    check_grid(tracking_uri, tmp_path)
    assert "Sweep summary: 2 of 2 jobs finished" in done.stdout
    assert "Best configuration on validation: val" in done.stdout


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A one-node SLURM cluster (tests/cluster.py) for this module; its clients' environment."""
    root = tmp_path_factory.mktemp("slurm")
    try:
        env = cluster.start(root)
    except cluster.ClusterError as error:
        pytest.skip(str(error))  # a failure in CI (CI=true)
    yield env
    cluster.stop(root)


def test_a_grid_runs_through_sbatch_and_logs_to_a_tracking_server_started_by_make_server(
    tmp_path, slurm, postgres
):
    """SLURM jobs log to a shared server on PostgreSQL, as on a cluster: the real sbatch, the
    real server (`make server BACKEND=postgresql://...`), the real database; the server's UI,
    in Chromium, lists the jobs under their sweep's parent."""
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    backend = new_database(postgres, "grid")
    server = start_tracking_server(
        tmp_path, port, backend, env={"PGPASSFILE": str(postgres / "pgpass")}
    )
    try:
        wait_until_up(f"{uri}/health", server, 120)
        env = {**slurm, "MLFLOW_TRACKING_URI": uri}
        sizes = ["hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2"]
        done = sweep(tmp_path, uri, *GRID, "hydra/launcher=slurm", *sizes, env=env)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        check_grid(uri, tmp_path)
        _, children = parent_and_children(uri)
        jobs = {c.data.tags.get("slurm_job_id") for c in children}
        assert len(jobs) == 2 and None not in jobs, jobs  # each child ran as its own SLURM job
        wait_for("no job left in the queue", lambda: cluster.queue(slurm) == "", seconds=120)
        client = MlflowClient(uri)
        for child in children:  # its metrics and files came through the server, and agree
            assert "mnist.keras" in {a.path for a in client.list_artifacts(child.info.run_id)}
            path = client.download_artifacts(
                child.info.run_id, "test/predictions.npz", str(tmp_path / child.info.run_id)
            )
            with np.load(path) as logged:
                right = logged["predicted"] == logged["labels"]
            assert child.data.metrics["test_accuracy"] == pytest.approx(right.mean())
        assert (tmp_path / "artifacts").is_dir()  # artifacts went through the server to its root
        parent, _ = parent_and_children(uri)
        nested = shown_under(uri, parent, [c.info.run_id for c in children])
        assert nested == {c.info.run_id for c in children}
    finally:
        stop(server)


def shown_under(uri: str, parent, children: list[str]) -> set[str]:
    """The runs of `children` that MLflow's UI (the server's, in Chromium) lists once the parent's
    row is expanded, after checking that none shows before."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{uri}/#/experiments/{parent.info.experiment_id}/runs")
        row = page.locator(f'[role=row][row-id="{parent.info.run_id}"]').first
        row.wait_for(timeout=60_000)
        assert not [c for c in children if page.locator(f'[row-id="{c}"]').count()]
        row.locator("button").first.click()  # the expander beside a parent's name
        for child in children:
            page.locator(f'[role=row][row-id="{child}"]').first.wait_for(timeout=30_000)
        shown = {r.get_attribute("row-id") for r in page.locator("[role=row][row-id]").all()}
        browser.close()
    return shown & set(children)


def test_a_failed_job_does_not_stop_the_sweep_and_a_rerun_finishes_only_the_rest(
    tmp_path, tracking_uri
):
    """Job 1 reads a corrupt MNIST copy and fails; once it is fixed, the identical sweep with
    skip_finished=true reruns only job 1."""
    cache = Path(CACHE_DIR).expanduser() / CACHE_FILE
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.mkdir()
    bad.mkdir()
    shutil.copy(cache, good / CACHE_FILE)
    (bad / CACHE_FILE).write_bytes(cache.read_bytes()[:100_000])
    args = [f"dataset.source_dir={good},{bad}", "skip_finished=true"]

    first = sweep(tmp_path, tracking_uri, *args)
    assert first.returncode == 1, first.stderr[-3000:]
    assert "Sweep summary: 1 of 2 jobs finished" in first.stdout
    parent, children = parent_and_children(tracking_uri)
    assert sorted(r["status"] for r in summary_rows(tracking_uri, parent)) == [
        "FAILED",
        "FINISHED",
    ]
    [finished] = [c for c in children if c.info.status == "FINISHED"]

    shutil.copy(good / CACHE_FILE, bad / CACHE_FILE)
    second = sweep(tmp_path, tracking_uri, *args)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"already finished as run {finished.info.run_id}" in second.stdout
    parent, children = parent_and_children(tracking_uri)
    rows = summary_rows(tracking_uri, parent)
    assert [r["status"] for r in rows] == ["FINISHED", "FINISHED"]
    assert rows[0]["run_id"] == finished.info.run_id  # reused, not retrained
    assert len(children) == 1 and children[0].info.status == "FINISHED"


def test_a_preempted_slurm_job_resumes_elsewhere_and_a_cancelled_one_ends_killed(
    tmp_path, slurm, tracking_uri
):
    """Mid-training, one job is requeued (`scontrol requeue`: SIGTERM, back in the queue) with
    its directory gone, as on another node, and the other is cancelled (`scancel`). The first
    resumes its run from the state in the store; the second ends KILLED; the sweep says what
    to do (a rerun that reuses finished jobs: test_a_failed_job_does_not_stop_the_sweep...)."""
    env = {**os.environ, **slurm, "PYTHONUNBUFFERED": "1"}
    args = [
        "-m", "optimizer=adam,sgd", MODEL, "epochs=3", "dataset.limit=2000", "batch_size=100",
        "+callbacks.slow._target_=tests.helpers.slow_batches", "+callbacks.slow.seconds=0.15",
        "split.size=1000", "mlflow.registered_model=null", "mlflow.system_metrics=false",
        f"mlflow.tracking_uri={tracking_uri}", f"hydra.sweep.dir={tmp_path / 'sweep'}",
        "hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2",
    ]  # fmt: skip
    sweeping = subprocess.Popen(
        [sys.executable, "-m", "mnist_exp.run", *args],
        cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    client = MlflowClient(tracking_uri)

    def runs() -> dict[str, object]:
        """The jobs' runs by optimizer, once both have ended an epoch."""
        experiment = client.get_experiment_by_name("mnist_exp")
        if experiment is None:  # not yet: the sweep makes it
            return {}
        found = client.search_runs([experiment.experiment_id], "tags.slurm_job_id != ''")
        started = [r for r in found if "val_loss" in r.data.metrics]
        return {r.data.params["optimizer._target_"].rsplit(".")[-1]: r for r in started}

    jobs = wait_for("both jobs in their second epoch", lambda: len(runs()) == 2 and runs())
    preempted, cancelled = jobs["adam"], jobs["sgd"]

    def slurm_command(*argv: str) -> None:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr

    slurm_command("scontrol", "requeuehold", preempted.data.tags["slurm_job_id"])
    slurm_command("scancel", cancelled.data.tags["slurm_job_id"])
    for run in (preempted, cancelled):
        wait_for(
            "the run KILLED", lambda r=run: client.get_run(r.info.run_id).info.status == "KILLED"
        )
    shutil.rmtree(preempted.data.tags["output_dir"])  # the node it comes back on has no copy
    slurm_command("scontrol", "release", preempted.data.tags["slurm_job_id"])
    output = sweeping.communicate(timeout=600)[0]
    assert sweeping.returncode == 1 and "Traceback" not in output, output[-3000:]
    assert "rerun the same command with skip_finished=true" in output

    resumed = client.get_run(preempted.info.run_id)
    assert resumed.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(resumed.info.run_id, "val_loss")]
    assert steps == [1, 2, 3]  # each epoch once: it went on from where it stopped
    assert client.get_run(cancelled.info.run_id).info.status == "KILLED"
    wait_for("no job left in the queue", lambda: cluster.queue(slurm) == "", seconds=120)


def test_an_optuna_search_runs_its_trials_as_slurm_jobs_sharing_one_postgresql_study(
    tmp_path, slurm, postgres, tracking_uri, monkeypatch
):
    """`hparams_search=optuna hydra/launcher=slurm hydra.sweeper.n_jobs=2`: a pair of trials
    runs as two SLURM jobs at once, each a worker reporting to the one study on PostgreSQL."""
    study_url = new_database(postgres, "slurm_study")
    monkeypatch.setenv("PGPASSFILE", str(postgres / "pgpass"))  # sbatch passes it to the jobs
    done = sweep(
        tmp_path, tracking_uri, "hparams_search=optuna", "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=2", f"hydra.sweeper.storage={study_url}",
        "hydra.sweeper.study_name=slurm", "hydra/launcher=slurm",
        "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2",
        f"mlflow.tracking_uri={tracking_uri}", env=slurm,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    study = optuna.load_study(study_name="slurm", storage=storage(study_url))
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 2 and len({tuple(sorted(t.params.items())) for t in complete}) == 2
    _, children = parent_and_children(tracking_uri)
    assert sorted(int(c.data.tags["optuna_trial"]) for c in children) == [
        t.number for t in complete
    ]
    assert {c.info.status for c in children} == {"FINISHED"}
    arrays: dict[str, list] = {}
    for child in children:  # submitit's job ids: <array>_<task>
        arrays.setdefault(child.data.tags["slurm_job_id"].split("_")[0], []).append(child)
    assert [len(pair) for pair in arrays.values()] == [2]  # one array of two jobs
    for pair in arrays.values():  # the two jobs of a batch ran at the same time
        assert max(r.info.start_time for r in pair) < min(r.info.end_time for r in pair)
    wait_for("no job left in the queue", lambda: cluster.queue(slurm) == "", seconds=120)
