"""`run_experiment` from a notebook, or any program that carries on after it: an interrupted run
leaves the caller's process as it found it."""

import os
import signal

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from mnist_exp import run_experiment
from mnist_exp.tracking.store import global_tracking_uri

from .helpers import interrupting


def test_an_interrupted_run_gives_the_caller_its_ctrl_c_handler_and_mlflow_uri_back(
    tmp_path, tracking_uri, monkeypatch
):
    def mine(signum, frame):  # the notebook's handler
        pass

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the notebook set none
    mlflow.set_tracking_uri(None)
    previous = signal.signal(signal.SIGINT, mine)
    sigterm = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_experiment(
                [
                    "model=mlp",
                    "epochs=3",
                    "dataset.limit=500",
                    "split.size=500",
                    *interrupting(epoch=1),
                    f"mlflow.tracking_uri={tracking_uri}",
                    f"hydra.run.dir={tmp_path / 'run'}",
                ]
            )
        assert signal.getsignal(signal.SIGINT) is mine
        assert signal.getsignal(signal.SIGTERM) is sigterm
        assert "MLFLOW_TRACKING_URI" not in os.environ and not mlflow.is_tracking_uri_set()
    finally:
        signal.signal(signal.SIGINT, previous)
    client = MlflowClient(tracking_uri)
    [run] = client.search_runs([client.get_experiment_by_name("mnist_exp").experiment_id])
    assert run.info.status == "KILLED"


def test_reading_another_store_gives_the_callers_uri_and_environment_back(monkeypatch):
    """The caller's process-wide URI and its $MLFLOW_TRACKING_URI may differ (set one after the
    other); borrowing the global for one store gives both back, each as it was."""
    mlflow.set_tracking_uri("sqlite:///callers.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///environment.db")
    try:
        with global_tracking_uri("sqlite:///other.db"):
            assert mlflow.get_tracking_uri() == "sqlite:///other.db"
        assert os.environ["MLFLOW_TRACKING_URI"] == "sqlite:///environment.db"
        assert mlflow.get_tracking_uri() == "sqlite:///callers.db"
    finally:
        mlflow.set_tracking_uri(None)
