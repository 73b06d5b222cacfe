"""What the MLflow UI shows of a run: its datasets, system metrics, name, description and model
card, read back from a real store (and, in one slow test, from `mlflow ui` in Chromium)."""

import datetime
import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from mnist_exp import run_experiment
from mnist_exp.config.schema import MlflowConfig
from mnist_exp.data import CACHE_DIR, CACHE_FILE
from mnist_exp.errors import MnistExpError
from mnist_exp.results.__main__ import main, record_runs
from mnist_exp.tracking.store import EXPERIMENT_KIND, global_tracking_uri, use_store

from .helpers import CHROMIUM_FLAGS, chromium, free_port, wait_until_up

CACHE = Path(CACHE_DIR).expanduser().resolve() / CACHE_FILE


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Four short real-MNIST runs in one store: a and b on the same data (different seeds), c on
    fewer training images, d without system metrics."""
    root = tmp_path_factory.mktemp("tracking")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    common = ["model=mlp", "epochs=1", "batch_size=64", f"mlflow.tracking_uri={uri}"]
    variants = {
        "a": ["dataset.limit=1000"],
        "b": ["dataset.limit=1000", "seed=7"],
        "c": ["dataset.limit=800"],
        "d": ["dataset.limit=800", "mlflow.system_metrics=false"],
    }
    client = MlflowClient(uri)
    return client, {
        key: client.get_run(run_experiment([*common, *extra, f"hydra.run.dir={root / key}"]).run_id)
        for key, extra in variants.items()
    }


def inputs(run) -> dict[str, tuple[str, str, str]]:
    """{context: (name, digest, source)} of a run's dataset inputs."""
    return {
        next(t.value for t in item.tags if t.key == "mlflow.data.context"): (
            item.dataset.name,
            item.dataset.digest,
            item.dataset.source,
        )
        for item in run.inputs.dataset_inputs
    }


def test_the_runs_experiment_opens_in_the_uis_training_view(runs):
    client, by_key = runs
    experiment = client.get_experiment(by_key["a"].info.experiment_id)
    assert experiment.tags[EXPERIMENT_KIND[0]] == EXPERIMENT_KIND[1]


def test_an_experiment_made_before_the_mark_gets_it_on_its_next_use(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    made = client.create_experiment("older", artifact_location=(tmp_path / "mlruns").as_uri())
    assert EXPERIMENT_KIND[0] not in client.get_experiment(made).tags
    with global_tracking_uri():
        use_store(MlflowConfig(tracking_uri=uri, experiment_name="older"))
    assert client.get_experiment(made).tags[EXPERIMENT_KIND[0]] == EXPERIMENT_KIND[1]


def test_a_record_of_runs_holds_their_figures_the_machine_and_the_day(runs, tmp_path, monkeypatch):
    client, by_key = runs
    monkeypatch.setenv("MLFLOW_TRACKING_URI", client.tracking_uri)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # the record's is the runs', not this one's
    a, b = by_key["a"], by_key["b"]
    with pytest.raises(MnistExpError, match="several commands: give the one with --command"):
        record_runs("pair", [a.info.run_id, b.info.run_id], "a and b", None, tmp_path)
    path = record_runs("pair", [a.info.run_id, b.info.run_id], "a and b", "cmd", tmp_path)
    record = json.loads(path.read_text())
    assert [run["run_id"] for run in record["figures"]["runs"]] == [a.info.run_id, b.info.run_id]
    assert [run["seed"] for run in record["figures"]["runs"]] == [42, 7]
    first = record["figures"]["runs"][0]["metrics"]
    assert first["test_accuracy"] == a.data.metrics["test_accuracy"]
    assert first["wall_seconds"] == a.data.metrics["wall_seconds"]
    assert record["machine"]["cpu"] == a.data.tags["machine.cpu"] and record["machine"]["cpu"]
    assert record["machine"]["isa_limit"] == a.data.tags["machine.isa_limit"]
    assert record["machine"]["precision"] == a.data.params["precision_used"]
    started = datetime.datetime.fromtimestamp(a.info.start_time / 1000, datetime.UTC)
    assert record["measured"] == started.date().isoformat() and record["command"] == "cmd"
    main(["--folder", str(tmp_path), "record", "one", a.info.run_id, "--title", "a"])  # the CLI
    one = json.loads((tmp_path / "one.json").read_text())
    assert one["command"].startswith("python -m mnist_exp.run model=mlp epochs=1")


def test_each_run_logs_its_three_splits_as_datasets(runs):
    _, run = runs
    a, b, c = inputs(run["a"]), inputs(run["b"]), inputs(run["c"])
    assert set(a) == {"training", "validation", "test"}
    assert {context: name for context, (name, _, _) in a.items()} == {
        "training": "mnist-training",
        "validation": "mnist-validation",
        "test": "mnist-test",
    }
    assert {json.loads(source)["uri"] for _, _, source in a.values()} == {CACHE.as_uri()}
    assert a == b  # the same images: the same digests, whatever the seed
    assert c["training"][1] != a["training"][1]  # 800 training images are other data
    assert (c["validation"], c["test"]) == (a["validation"], a["test"])


def test_system_metrics_are_sampled_even_in_a_short_run_and_can_be_turned_off(runs):
    _, run = runs
    for key in "abc":
        assert "system/cpu_utilization_percentage" in run[key].data.metrics
        assert "system/system_memory_usage_megabytes" in run[key].data.metrics
    assert not any(name.startswith("system/") for name in run["d"].data.metrics)


def test_the_run_is_named_and_described(runs):
    _, run = runs
    a = run["a"]
    assert a.info.run_name == "mlp adadelta lr=1"
    note = a.data.tags["mlflow.note.content"]
    assert note.startswith("**mlp adadelta lr=1**")
    assert f"Validation accuracy **{a.data.metrics['best_val_accuracy']:.2%}**" in note
    assert f"test accuracy **{a.data.metrics['test_accuracy']:.2%}**" in note
    assert "python -m mnist_exp.run model=mlp epochs=1 batch_size=64" in note
    assert "`mnist_exp.groups.model.mlp`, 669,706 parameters" in note
    assert f"| precision | {a.data.params['precision_used']} |" in note
    assert f"digest `{inputs(a)['training'][1]}`" in note
    assert "cores; TensorFlow 2." in note


def test_the_model_card_and_the_registered_version_say_where_the_model_came_from(runs, tmp_path):
    client, run = runs
    a = run["a"]
    summary = client.download_artifacts(a.info.run_id, "model_summary.txt", str(tmp_path))
    assert "Total params: 669,706" in Path(summary).read_text()
    artifacts = {item.path: item.file_size for item in client.list_artifacts(a.info.run_id)}
    assert artifacts["architecture.png"] > 5_000
    [version] = client.search_model_versions(f"name='mnist-mlp' and run_id='{a.info.run_id}'")
    assert version.description == (
        f"From run {a.info.run_id} (mlp adadelta lr=1): validation accuracy "
        f"{a.data.metrics['best_val_accuracy']:.2%}, test accuracy "
        f"{a.data.metrics['test_accuracy']:.2%}. Trained on mnist-training "
        f"(digest {inputs(a)['training'][1]}, 1,000 images)."
    )


@pytest.mark.slow
def test_mlflow_ui_shows_datasets_description_and_system_metrics_in_chromium(runs):
    from playwright.sync_api import sync_playwright

    client, run = runs
    a = run["a"]
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", client.tracking_uri,
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_until_up(f"http://127.0.0.1:{port}/health", server, 120)
        page_url = (
            f"http://127.0.0.1:{port}/#/experiments/{a.info.experiment_id}/runs/{a.info.run_id}"
        )
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1200})
            page.goto(page_url)
            page.get_by_text("mnist-training").first.wait_for(timeout=60_000)
            overview = page.inner_text("body")
            for shown in (
                "mlp adadelta lr=1",
                "mnist-validation",
                "mnist-test",
                "Validation accuracy",
            ):
                assert shown in overview, shown
            page.goto(f"{page_url}/system-metrics")
            page.get_by_text("cpu_utilization", exact=False).first.wait_for(timeout=60_000)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_runs_logging_the_same_new_dataset_at_once_on_postgresql_each_log_it(postgres):
    """MLflow's store looks a dataset up, then inserts it: runs that start together on a shared
    PostgreSQL store race to insert it, and the losers still log it (as a SLURM sweep's jobs do)."""
    import mlflow
    import numpy as np

    from mnist_exp.tracking.log import log_input

    from .postgres import new_database

    os.environ["PGPASSFILE"] = str(postgres / "pgpass")
    uri = new_database(postgres, "datasets_race")
    client = MlflowClient(uri)
    experiment = client.create_experiment("race")
    rounds, width = 8, 6
    barrier = threading.Barrier(width)
    errors = []

    def worker(_):
        with mlflow.start_run(experiment_id=experiment) as run:
            for r in range(rounds):  # a dataset none has logged yet, each round
                images = np.full((2, 28, 28, 1), r, dtype=np.uint8)
                barrier.wait()
                try:
                    log_input(images, np.arange(2), "file:///x.npz", f"set-{r}", "training")
                except Exception as error:  # whatever its type: the race's error is the check
                    errors.append(f"{type(error).__name__}: {str(error)[:200]}")
        return run.info.run_id

    mlflow.set_tracking_uri(uri)
    with ThreadPoolExecutor(width) as pool:
        ids = list(pool.map(worker, range(width)))
    assert not errors, errors
    for run_id in ids:
        names = {i.dataset.name for i in client.get_run(run_id).inputs.dataset_inputs}
        assert names == {f"set-{r}" for r in range(rounds)}
