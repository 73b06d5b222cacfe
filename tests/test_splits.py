"""Split strategies on real MNIST: sizes, disjointness, balance, folds that partition the 60,000,
a test set no split touches, and the split's identity logged with the run."""

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from mnist_exp import run_experiment
from mnist_exp.config.build import build
from mnist_exp.config.compose import compose_config
from mnist_exp.config.schema import validate
from mnist_exp.data import digest, index_digest, preprocess
from mnist_exp.errors import ConfigError
from mnist_exp.experiment import load_data
from mnist_exp.groups.dataset import mnist

from .test_config import CONF

OPTIONS = sorted(path.stem for path in (CONF / "split").glob("*.yaml"))


def split_of(labels: np.ndarray, *overrides: str) -> tuple[np.ndarray, np.ndarray]:
    cfg, _ = compose_config(overrides)
    validate(cfg)
    return build("split", cfg.split, labels=labels)


@pytest.mark.parametrize("option", OPTIONS)
def test_every_split_divides_the_60000_into_disjoint_ascending_parts(option, mnist_raw):
    labels = mnist_raw["y_train"]
    train, val = split_of(labels, f"split={option}")
    assert len(train) + len(val) == 60_000 and not np.intersect1d(train, val).size
    assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)
    assert len(val) == (12_000 if option == "kfold" else 5_000)


def test_a_split_size_may_be_a_fraction_of_the_training_images(mnist_raw):
    labels = mnist_raw["y_train"]
    for option in ("holdout", "stratified"):
        train, val = split_of(labels, f"split={option}", "split.size=0.1")
        assert (len(train), len(val)) == (54_000, 6_000), option
    _, val = split_of(labels[:1_000], "split.size=0.25")  # a smaller set: a quarter of it
    np.testing.assert_array_equal(val, np.arange(750, 1_000))


def test_holdout_is_the_seeds_split_and_the_default(mnist_raw):
    train, val = split_of(mnist_raw["y_train"])
    np.testing.assert_array_equal(val, np.arange(55_000, 60_000))
    np.testing.assert_array_equal(train, np.arange(55_000))


def test_stratified_keeps_each_digits_share_and_follows_its_seed(mnist_raw):
    labels = mnist_raw["y_train"]
    _, val = split_of(labels, "split=stratified", "split.seed=7")
    expected = np.bincount(labels) / 60_000 * 5_000
    assert np.all(np.abs(np.bincount(labels[val]) - expected) <= 1)
    _, again = split_of(labels, "split=stratified", "split.seed=7")
    _, other = split_of(labels, "split=stratified", "split.seed=8")
    np.testing.assert_array_equal(val, again)
    assert len(np.intersect1d(val, other)) < 1_000  # a different seed: a different draw
    _, holdout_val = split_of(labels)
    holdout_share = np.bincount(labels[holdout_val]) - expected
    assert np.abs(holdout_share).max() > 10  # the seed's split is not balanced; this one is


def test_k_folds_partition_the_60000_and_each_is_balanced(mnist_raw):
    labels = mnist_raw["y_train"]
    folds = [split_of(labels, "split=kfold", "split.k=5", f"split.fold={f}") for f in range(5)]
    validated = np.concatenate([val for _, val in folds])
    np.testing.assert_array_equal(np.sort(validated), np.arange(60_000))  # each image once
    expected = np.bincount(labels) / 5
    for train, val in folds:
        assert np.all(np.abs(np.bincount(labels[val]) - expected) <= 1)
        np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(60_000))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["split=kfold", "split.fold=5"], "split.fold=5 is not allowed: use 0..4 (split.k=5)."),
        (["split=kfold", "split.k=2", "dataset.limit=40000"], "dataset.limit=40000 is not allo"),
        (["split.size=60000"], "split.size=60000 is not allowed: the dataset has 60000 training"),
        (["split=stratified", "split.size=0.9999999"], "split.size=0.9999999 is not allowed: the"),
    ],
)
def test_what_only_the_data_can_refuse_is_one_line(overrides, message):
    config = validate(compose_config(overrides)[0])
    with pytest.raises(ConfigError) as error:
        load_data(config)
    assert str(error.value).startswith(message)


@pytest.mark.parametrize("option", OPTIONS)
def test_no_split_touches_the_test_set(option, mnist_raw):
    cfg, _ = compose_config([f"split={option}"])
    data = mnist(lambda labels: build("split", cfg.split, labels=labels))
    test = preprocess(mnist_raw["x_test"], mnist_raw["y_test"])
    assert digest(data.x_test, data.y_test) == digest(*test)
    # Training and validation together are the 60,000 training images, each exactly once.
    used = np.round(np.concatenate([data.x_train, data.x_val]) * 255).astype(np.uint8)
    assert sorted(row.tobytes() for row in used.reshape(len(used), -1)) == sorted(
        row.tobytes() for row in mnist_raw["x_train"].reshape(60_000, -1)
    )


def test_a_run_logs_which_split_it_used(tmp_path, mnist_raw, tracking_uri):
    uri = tracking_uri
    overrides = ["split=kfold", "split.k=10", "split.fold=3", "model=mlp", "epochs=1"]
    local = ["dataset.limit=500", "mlflow.registered_model=null", f"mlflow.tracking_uri={uri}"]
    result = run_experiment([*overrides, *local, f"hydra.run.dir={tmp_path / 'run'}"])
    run = MlflowClient(uri).get_run(result.run_id)
    _, val = split_of(mnist_raw["y_train"], *overrides[:3])
    params = run.data.params
    assert (params["split.k"], params["split.fold"], params["split.seed"]) == ("10", "3", "0")
    assert params["split._target_"] == "mnist_exp.groups.split.kfold"
    assert params["split_digest"] == index_digest(val)
    assert run.data.tags["choice.split"] == "kfold"
    note = run.data.tags["mlflow.note.content"]
    assert (
        f"| split | kfold (fold 3, k 10, seed 0), validation images digest `{index_digest(val)}`"
        in note
    )
    validation = next(d for d in run.inputs.dataset_inputs if d.dataset.name == "mnist-validation")
    assert '"features_shape": [6000' in validation.dataset.profile
