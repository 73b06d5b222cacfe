"""Which model answers: an alias moves only among versions validated on the same data, and the
predict CLI's and the page's default model comes from the default split and says so."""

import shutil

import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from mnist_exp import run_experiment
from mnist_exp.config.schema import MlflowConfig
from mnist_exp.data.robustness import label, make_set, printed_fonts
from mnist_exp.serving.predict import load_predictor
from mnist_exp.serving.predict import main as predict_main
from mnist_exp.serving.serve import describe
from mnist_exp.tracking.read import default_model
from mnist_exp.tracking.store import open_store

SMALL = ["model=mlp", "dataset.limit=3000", "mlflow.system_metrics=false"]


def champion(client: MlflowClient, name: str) -> str:
    return client.get_model_version_by_alias(name, "champion").run_id


def refused(printed: str) -> str:
    """The one line a version validated on other data prints, leaving the alias as it was."""
    lines = [line for line in printed.splitlines() if "stays beside @champion" in line]
    assert len(lines) == 1, printed
    return lines[0]


@pytest.mark.slow
def test_a_fold_never_takes_the_champion_and_the_default_model_says_what_it_is(
    tmp_path, tracking_uri, capsys, monkeypatch, mnist_raw
):
    runs = [*SMALL, f"mlflow.tracking_uri={tracking_uri}"]
    client = MlflowClient(tracking_uri)
    first = run_experiment([*runs, "epochs=1"])
    assert champion(client, "mnist-mlp") == first.run_id
    capsys.readouterr()
    fold = run_experiment([*runs, "epochs=3", "split=kfold", "split.k=5", "split.fold=1"])
    assert fold.val_accuracy > first.val_accuracy  # better, but on other validation images
    line = refused(capsys.readouterr().out)
    assert line.startswith("Model mnist-mlp version 2 stays beside @champion (version 1)")
    assert "(split=kfold (fold=1, k=5, seed=0); the holder on split=holdout (size=5000))" in line
    assert "mlflow.promote=always" in line
    assert champion(client, "mnist-mlp") == first.run_id

    better = run_experiment([*runs, "epochs=3"])
    assert better.val_accuracy > first.val_accuracy
    assert champion(client, "mnist-mlp") == better.run_id  # like with like: it takes the alias

    uri, chosen = default_model(open_store(MlflowConfig(tracking_uri=tracking_uri)))
    assert uri == f"runs:/{better.run_id}/model"  # never the fold's, however good
    assert chosen == (
        f"the best val accuracy ({better.val_accuracy:.4f}) of 2 finished runs on mnist's "
        "default split (split=holdout, size=5000)"
    )
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    capsys.readouterr()
    Image.fromarray(255 - mnist_raw["x_test"][0]).save(tmp_path / "digit.png")
    assert predict_main([str(tmp_path / "digit.png"), "--json"]) == 0
    printed = capsys.readouterr()
    assert printed.err.splitlines() == [f"model: {uri}, chosen as {chosen}"]
    assert printed.out.count("\n") == 1  # stdout: one JSON object per image
    assert describe(load_predictor())["chosen"] == chosen  # GET /model, the page's line

    moved = run_experiment([*runs, "epochs=1", "split=stratified", "mlflow.promote=always"])
    assert champion(client, "mnist-mlp") == moved.run_id  # moved on purpose


@pytest.fixture(scope="module")
def two_folders(tmp_path_factory):
    """Printed digits: all ten in one folder, three of them in another."""
    root = tmp_path_factory.mktemp("folders")
    for path in make_set(root / "flat", per_font=2, seed=3, per_row=0, fonts_used=printed_fonts()):
        for folder in ("ten", *(("three",) if label(path) < 3 else ())):
            (root / folder / str(label(path))).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, root / folder / str(label(path)) / path.name)
    return root


@pytest.mark.slow
def test_a_better_run_on_another_folder_never_takes_the_champion(two_folders, tracking_uri, capsys):
    runs = ["model=mlp", "dataset=folder", "split.size=0.2", f"mlflow.tracking_uri={tracking_uri}"]
    runs += ["dataset.name=digits", "mlflow.system_metrics=false"]  # both register digits-mlp
    client = MlflowClient(tracking_uri)
    ten = run_experiment([*runs, f"dataset.root={two_folders / 'ten'}", "epochs=1"])
    assert champion(client, "digits-mlp") == ten.run_id
    capsys.readouterr()
    three = run_experiment([*runs, f"dataset.root={two_folders / 'three'}", "epochs=20"])
    assert three.val_accuracy > ten.val_accuracy
    line = refused(capsys.readouterr().out)
    assert "(the same split, split=holdout (size=0.2), of other data)" in line
    assert champion(client, "digits-mlp") == ten.run_id


@pytest.mark.slow
def test_a_folder_set_registers_under_its_folders_name(two_folders, tracking_uri):
    run_experiment(
        [
            "model=mlp",
            "dataset=folder",
            f"dataset.root={two_folders / 'three'}",
            "split.size=0.2",
            "epochs=1",
            "mlflow.system_metrics=false",
            f"mlflow.tracking_uri={tracking_uri}",
        ]
    )
    names = [model.name for model in MlflowClient(tracking_uri).search_registered_models()]
    assert names == ["three-mlp"]
