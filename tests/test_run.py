"""End to end on real MNIST: `python -m mnist_exp.run` as a subprocess, a private MLflow store."""

import json
import os
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import mlflow
import mlflow.server
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from mnist_exp import run_experiment
from mnist_exp.errors import MnistExpError
from mnist_exp.machine import cpuinfo
from mnist_exp.names import METRICS
from mnist_exp.tracking.liveness import close_dead_runs
from mnist_exp.tracking.store import global_tracking_uri
from mnist_exp.train import cpu_has_bf16

from .helpers import bf16_refused, free_port, run_module, start_tracking_server, stop, wait_until_up

pytestmark = pytest.mark.slow


def finished_runs(uri: str) -> list:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("mnist_exp")
    return client.search_runs([experiment.experiment_id]) if experiment else []


def test_a_short_run_trains_logs_and_serves_a_98_percent_model(trained_run, mnist_raw):
    tracking_uri = trained_run.tracking_uri
    assert "test accuracy" in trained_run.stdout
    [run] = finished_runs(tracking_uri)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["test_accuracy"] >= 0.98
    assert run.data.params["optimizer.learning_rate"] == "0.001"
    assert run.info.run_name == "narrow_cnn adam lr=0.001"
    champion = MlflowClient(tracking_uri).get_model_version_by_alias("mnist-narrow_cnn", "champion")
    assert champion.run_id == run.info.run_id
    native_bf16 = cpu_has_bf16(cpuinfo(), os.environ.get("ONEDNN_MAX_CPU_ISA", ""))
    assert run.data.params["precision_used"] == ("bf16" if native_bf16 else "fp32")  # auto
    assert run.data.params["steps_per_execution_used"] == "10"  # 430 steps of 128 an epoch
    client = MlflowClient(tracking_uri)
    for metric in ("loss", "accuracy", "val_loss", "val_accuracy", "epoch_seconds"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, metric)] == [1, 2]
    artifacts = set()
    for folder in (None, "val", "test"):
        artifacts |= {a.path for a in client.list_artifacts(run.info.run_id, folder)}
    for path in (
        "config.yaml",
        "mnist.h5",
        "mnist.keras",
        "training_curves.png",
        "test/confusion_matrix.png",
        "test/confusion_matrix.csv",
        "test/classification_report.txt",
        "test/classification_report.json",
        "test/misclassified.png",
        "val/confusion_matrix.png",
    ):
        assert path in artifacts, f"{path} not logged; have {sorted(artifacts)}"
    assert (trained_run.output_dir / "best.keras").is_file()

    mlflow.set_tracking_uri(tracking_uri)
    model = mlflow.keras.load_model(f"runs:/{run.info.run_id}/model")
    images = mnist_raw["x_test"][:1000, :, :, None].astype(np.float32) / 255
    predicted = model.predict(images, verbose=0).argmax(axis=1)
    assert np.mean(predicted == mnist_raw["y_test"][:1000]) >= 0.98


def test_a_run_prints_only_our_lines_and_keras_progress(trained_run):
    """No TensorFlow CUDA probing on a machine without a GPU, no MLflow INFO lines, no Keras
    "legacy" warning for the mnist.h5 the seed asks for (MNIST_EXP_VERBOSE=1 shows them)."""
    printed = trained_run.stdout + trained_run.stderr
    for noise in (
        "cuda",
        "absl",
        "INFO mlflow",
        "legacy",
        "Successfully registered",
        "I0000",
        "E0000",
    ):
        assert noise not in printed, noise
    assert "training on 55,000 images, validating on 5,000: epochs 1-2\n" in printed
    figures = "  ".join(rf"{name} \d\.\d{{4}}" for name in METRICS)
    line = rf"^epoch 2/2  {figures}  \d+\.\d s$"
    assert re.search(line, printed, re.MULTILINE), printed[-2000:]  # our line, not Keras'
    assert "430/430" not in printed and "learning_rate" not in printed
    assert "Browse runs: mlflow ui" in printed
    page = f"/runs/{trained_run.run_id}?workflowType=machine_learning"  # the training view
    assert "then http://127.0.0.1:5000/#/experiments/" in printed and page in printed


def test_report_regenerates_figures_and_summary_from_the_store(trained_run, tmp_path):
    done = run_module(
        "mnist_exp.report",
        trained_run.run_id,
        "--out",
        str(tmp_path / "report"),
        env={"MLFLOW_TRACKING_URI": trained_run.tracking_uri},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = (tmp_path / "report" / "summary.md").read_text()
    [run] = finished_runs(trained_run.tracking_uri)
    assert f"| test | {run.data.metrics['test_loss']:.4f} | " in summary
    assert "Most frequent test confusions" in summary
    for image in ("confusion_matrix.png", "training_curves.png"):
        assert 5_000 < (tmp_path / "report" / image).stat().st_size < 200_000


def test_report_of_an_unknown_run_is_one_clear_line(tracking_uri):
    done = run_module(
        "mnist_exp.report", "feedc0ffee", env={"MLFLOW_TRACKING_URI": tracking_uri}, timeout=300
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: Run feedc0ffee not found")


def test_divergence_stops_training_and_fails_the_run(tmp_path, tracking_uri):
    done = run_module(
        "mnist_exp.run",
        "model=mlp",
        "optimizer=sgd",
        "optimizer.learning_rate=1e6",
        "epochs=3",
        "dataset.limit=512",
        f"mlflow.tracking_uri={tracking_uri}",
        f"hydra.run.dir={tmp_path / 'out'}",
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "Training diverged" in done.stderr and "optimizer.learning_rate" in done.stderr
    [run] = finished_runs(tracking_uri)
    assert run.info.status == "FAILED"
    assert "DivergedError" in run.data.tags["error"]
    assert "Ended FAILED: DivergedError: Training diverged" in run.data.tags["mlflow.note.content"]
    assert MlflowClient(tracking_uri).search_model_versions("name='mnist-mlp'") == []


def test_unreachable_tracking_server_fails_at_once_naming_it(tmp_path):
    uri = "http://127.0.0.1:9"  # the discard port: nothing listens there
    done = run_module(
        "mnist_exp.run",
        "epochs=1",
        f"hydra.run.dir={tmp_path / 'out'}",
        env={"MLFLOW_TRACKING_URI": uri},
        timeout=60,
    )
    assert done.returncode == 2
    assert f"MLflow tracking server {uri} is unreachable" in done.stderr
    assert "epoch 1" not in done.stdout + done.stderr


def test_bf16_run_learns_and_logs_its_precision(tmp_path, tracking_uri):
    """The MLP: bfloat16 convolutions are emulated, and slow, on CPUs without native bf16."""
    done = run_module(
        "mnist_exp.run",
        "model=mlp",
        "precision=bf16",
        "epochs=2",
        "dataset.limit=2000",
        f"mlflow.tracking_uri={tracking_uri}",
        f"hydra.run.dir={tmp_path / 'out'}",
    )
    if bf16_refused():  # the AVX2 stand-in: bf16 would crash TensorFlow, so it is refused
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
        assert "ONEDNN_MAX_CPU_ISA" in done.stderr.strip().splitlines()[-1]
        assert finished_runs(tracking_uri) == []
        return
    assert done.returncode == 0, done.stderr[-2000:]
    [run] = finished_runs(tracking_uri)
    assert run.data.params["precision_used"] == "bf16"
    assert run.data.metrics["test_accuracy"] > 0.8  # chance is 0.1


def test_a_postgresql_store_that_does_not_answer_is_one_line_and_no_run(tmp_path):
    uri = "postgresql://mnist_exp@127.0.0.1:9/store"  # the discard port: nothing listens there
    with pytest.raises(MnistExpError) as error:
        run_experiment(
            ["model=mlp", "epochs=1", f"mlflow.tracking_uri={uri}", f"hydra.run.dir={tmp_path}"]
        )
    message = str(error.value)
    assert message.startswith(f"PostgreSQL at {uri} cannot be used (") and "\n" not in message
    assert "~/.pgpass" in message and not (tmp_path / "last.keras").exists()


PREDICT_WITH_PYFUNC = """import json, sys
import mlflow, numpy as np
model = mlflow.pyfunc.load_model(sys.argv[1])
print(json.dumps(np.asarray(model.predict(np.load(sys.argv[2]))).argmax(1).tolist()))
"""


def login(monkeypatch, user: str, password: str) -> None:
    """From now on, MLflow's clients in this process present these credentials."""
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)


def test_a_server_with_auth_refuses_strangers_and_takes_a_users_run_whole(
    tmp_path, monkeypatch, capsys, mnist_raw
):
    """`make server AUTH=1`: no one anonymous, no default read access, credentials from the
    environment only; a user who may not mark another's dead run KILLED leaves it as it is."""
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = start_tracking_server(tmp_path, port, auth=True)
    try:
        wait_until_up(f"{uri}/health", server, 120)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{uri}/api/2.0/mlflow/experiments/search?max_results=1")
        assert refused.value.code == 401
        admin = (tmp_path / "auth" / "admin_password").read_text().strip()
        login(monkeypatch, "admin", admin)
        users = mlflow.server.get_app_client("basic-auth", tracking_uri=uri)
        users.create_user("alice", "alice-secret-1")
        users.create_user("bob", "bob-secret-2")
        small = ["model=mlp", "epochs=1", "dataset.limit=2000", "split.size=1000",
                 "mlflow.system_metrics=false", f"mlflow.tracking_uri={uri}"]  # fmt: skip
        login(monkeypatch, "alice", "wrong")
        with pytest.raises(MnistExpError, match=rf"^MLflow tracking server {uri} refused these"):
            run_experiment([*small, f"hydra.run.dir={tmp_path / 'refused'}"])
        login(monkeypatch, "alice", "alice-secret-1")
        result = run_experiment([*small, f"hydra.run.dir={tmp_path / 'run'}"])
        client = MlflowClient(uri)
        run = client.get_run(result.run_id)
        assert run.info.status == "FINISHED" and run.data.metrics["test_accuracy"] > 0.5
        assert "mnist.keras" in {a.path for a in client.list_artifacts(result.run_id)}
        with global_tracking_uri(uri):
            model = mlflow.keras.load_model(f"runs:/{result.run_id}/model")
        images = mnist_raw["x_test"][:20, :, :, None] / np.float32(255)
        np.save(tmp_path / "digits.npy", images)
        champion = subprocess.run(  # MLflow's pyfunc, in a process of its own, through the server
            [sys.executable, "-c", PREDICT_WITH_PYFUNC, "models:/mnist-mlp@champion",
             str(tmp_path / "digits.npy")],
            env={**os.environ, "MLFLOW_TRACKING_URI": uri}, capture_output=True, text=True,
            timeout=300,
        )  # fmt: skip
        assert champion.returncode == 0, champion.stderr[-2000:]
        predicted = json.loads(champion.stdout.splitlines()[-1])  # after any progress lines
        assert predicted == model(images).numpy().argmax(1).tolist()
        logged = [*run.data.params.values(), *run.data.tags.values()]
        assert not [value for value in logged if "alice-secret-1" in value]
        dead = client.create_run(
            run.info.experiment_id,
            tags={"host": socket.gethostname(), "pid": "999999999", "pid_started": "0"},
        )
        login(monkeypatch, "admin", admin)
        users.grant_user_permission("bob", "experiment", run.info.experiment_id, "READ")
        login(monkeypatch, "bob", "bob-secret-2")
        capsys.readouterr()
        close_dead_runs(client, run.info.experiment_id)
        assert "lost its process, but this user may not mark it KILLED" in capsys.readouterr().out
        assert client.get_run(dead.info.run_id).info.status == "RUNNING"
    finally:
        stop(server)
