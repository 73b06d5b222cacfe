"""Statistics against hand computations: spread and t intervals, grouping a sweep's jobs into
configurations (n = 1, failed jobs), and McNemar's exact test on known tables."""

import math
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from mnist_exp.sweeps.stats import mcnemar, spread
from mnist_exp.sweeps.summary import configuration, group_rows, grouped_markdown, summarise
from mnist_exp.tracking.store import Store

T_975 = {
    1: 12.706205,
    2: 4.302653,
}  # Student t quantiles from a printed table, by degrees of freedom


def job(number, overrides, status="FINISHED", val=None, test=None, epochs=None, seconds=None):
    row = {"job": number, "overrides": overrides, "status": status}
    if status == "FINISHED":
        row |= dict(val_accuracy=val, test_accuracy=test, epochs=epochs, seconds=seconds)
        row["wall_seconds"] = seconds + 6 if seconds is not None else None
        row["run_id"] = f"run{number}"
    return row


def test_spread_of_three_values_by_hand():
    s = spread([0.97, 0.99, 0.98])
    assert (s.n, s.min, s.max) == (3, 0.97, 0.99)
    assert s.mean == pytest.approx(0.98) and s.std == pytest.approx(0.01)
    half = T_975[2] * 0.01 / math.sqrt(3)
    assert (s.low, s.high) == (pytest.approx(0.98 - half), pytest.approx(0.98 + half))


def test_one_value_has_no_spread_and_none_has_no_mean():
    one = spread([0.9])
    assert (one.n, one.mean, one.min, one.max) == (1, 0.9, 0.9, 0.9)
    assert all(math.isnan(v) for v in (one.std, one.low, one.high))
    assert spread([]).n == 0 and math.isnan(spread([]).mean)


def test_seeds_and_folds_are_repeats_and_everything_else_a_configuration():
    assert configuration("optimizer=adam seed=3 split.fold=2 epochs=3") == "optimizer=adam epochs=3"
    assert configuration("+seed=1 model=mlp") == "model=mlp"
    assert configuration("split=kfold split.k=5") == "split=kfold split.k=5"


def test_jobs_group_into_configurations_with_failures_counted_apart():
    rows = [
        job(0, "optimizer=adam seed=1", val=0.98, test=0.97, epochs=3, seconds=10.0),
        job(1, "optimizer=adam seed=2", val=0.99, test=0.985, epochs=5, seconds=20.0),
        job(2, "optimizer=adam seed=3", "FAILED"),
        job(3, "optimizer=sgd seed=1", val=0.95, test=0.94, epochs=2, seconds=4.0),
        job(4, "optimizer=sgd seed=2", "FAILED"),
        job(5, "optimizer=rmsprop seed=1", "KILLED"),
    ]
    adam, sgd, rmsprop = group_rows(rows)
    assert (adam["overrides"], adam["n"], adam["failed"]) == ("optimizer=adam", 2, 1)
    std = math.sqrt(2 * 0.005**2)  # sample std of 0.98, 0.99
    half = T_975[1] * std / math.sqrt(2)
    assert adam["val_mean"] == pytest.approx(0.985) and adam["val_std"] == pytest.approx(std)
    assert adam["val_ci_low"] == pytest.approx(0.985 - half)
    assert adam["val_ci_high"] == pytest.approx(0.985 + half)
    assert (adam["val_min"], adam["val_max"]) == (0.98, 0.99)
    assert adam["test_mean"] == pytest.approx(0.9775)
    assert (adam["epochs_mean"], adam["seconds_mean"], adam["best_run_id"]) == (4, 15, "run1")
    assert adam["wall_seconds_mean"] == 21
    assert (sgd["n"], sgd["failed"], sgd["val_mean"], sgd["best_run_id"]) == (1, 1, 0.95, "run3")
    assert math.isnan(sgd["val_std"]) and math.isnan(sgd["val_ci_low"])
    assert (rmsprop["n"], rmsprop["failed"], rmsprop["best_run_id"]) == (0, 1, None)
    table = grouped_markdown([adam, sgd, rmsprop])
    assert "| optimizer=adam | 2 (+1 failed) | 0.9850 |" in table
    assert "| optimizer=sgd | 1 (+1 failed) | 0.9500 |  |  | 0.9500 to 0.9500 |" in table
    assert "| optimizer=rmsprop | 0 (+1 failed) |  |" in table


@pytest.mark.parametrize(
    ("only_a", "only_b", "p_value"),
    [
        (2, 9, 2 * (1 + 11 + 55) / 2**11),  # 2 * P(X <= 2), X ~ Binomial(11, 1/2)
        (0, 5, 2 / 2**5),
        (7, 7, 1.0),
        (0, 0, 1.0),
        (30, 10, 2 * sum(math.comb(40, i) for i in range(11)) / 2**40),
    ],
)
def test_mcnemar_exact_test_on_known_tables(only_a, only_b, p_value):
    both_right, both_wrong = 900, 50
    a = np.array([1] * only_a + [0] * only_b + [1] * both_right + [0] * both_wrong, bool)
    b = np.array([0] * only_a + [1] * only_b + [1] * both_right + [0] * both_wrong, bool)
    assert mcnemar(a, b) == (only_a, only_b, pytest.approx(p_value, rel=1e-9))
    assert mcnemar(b, a) == (only_b, only_a, pytest.approx(p_value, rel=1e-9))


def test_the_folds_of_one_configuration_are_summarised_as_one(tmp_path, capsys):
    """`-m split=kfold split.fold=0,1,2`: every job is the same configuration; the parent gets its
    row by configuration, named in full."""
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent = client.create_run(client.create_experiment("e")).info.run_id
    rows = [
        job(n, f"split=kfold split.fold={n}", val=val, test=0.99, epochs=10, seconds=60.0)
        for n, val in enumerate((0.990, 0.992, 0.991))
    ]
    summarise(
        Store(client.tracking_uri, "e"),
        parent,
        rows,
        {"_target_": "mnist_exp.groups.dataset.mnist"},
    )
    run = client.get_run(parent)
    assert run.data.metrics["best_config_val_mean"] == pytest.approx(0.991)
    assert run.data.metrics["best_config_n"] == 3
    assert {k: v for k, v in run.data.params.items() if k.startswith("best.")} == {
        "best.split": "kfold"
    }
    table = Path(client.download_artifacts(parent, "summary_by_config.csv")).read_text()
    assert table.splitlines()[1].startswith("split=kfold,3,0,0.991")
    assert "| split=kfold | 3 | 0.9910 |" in capsys.readouterr().out


def test_the_figure_of_flipped_digits_shows_their_ink():
    """The sweep's and `compare`'s figure draws the runs' test images dark on white."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from mnist_exp.compare import test_images
    from mnist_exp.figures import flipped_figure

    images = test_images({"_target_": "mnist_exp.groups.dataset.mnist"})
    assert images.dtype == np.float32 and images.shape == (10_000, 28, 28, 1) and images.max() == 1
    labels = np.zeros(10_000, int)
    figure = flipped_figure(images, labels, (labels, labels + (np.arange(10_000) < 48)), 0.01)
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    grey = np.asarray(canvas.buffer_rgba())[..., :3].mean(axis=-1)
    assert (grey < 64).mean() > 0.02  # 48 digits' strokes; white tiles where ink was lost
