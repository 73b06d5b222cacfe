"""The bench's table logic: ratios come from the rows they name, and a broken table is caught.
(The bench itself runs as its own step of .ci/run: `make bench ARGS=--quick`.)"""

import pytest
from mlflow.tracking import MlflowClient

from mnist_exp.bench.__main__ import EXPECTED_ROWS, EXPERIMENT, log_bench, problems
from mnist_exp.bench.clock import clock_ratios, clock_rows, order, reached, stops_early
from mnist_exp.bench.table import clock_problems, lines, ratios, row
from mnist_exp.bench.training import CPU_SETTINGS
from mnist_exp.tracking.store import EXPERIMENT_KIND, global_tracking_uri


def complete_table() -> list[dict]:
    names = [*EXPECTED_ROWS, "predict CLI, 50 PNG files", "model.predict / predict_digit"]
    names += [f"CPU setting, fast: {name}" for name in CPU_SETTINGS]
    values = {name: float(number) for number, name in enumerate(names, start=2)}
    values["system metrics sampler CPU / machine CPU"] = 1.5
    return [row(name, [value, value * 1.1], "unit") for name, value in values.items()]


def test_each_ratio_is_made_of_the_rows_it_names():
    rows = complete_table()
    median = {r["name"]: r["median"] for r in rows}
    found = ratios(median)
    assert found["project default / plain Keras mixed_bfloat16"] == pytest.approx(
        median["training, project run, default"]
        / median["training, plain Keras model.fit, mixed_bfloat16"]
    )
    assert found["project default / same, system metrics off"] == pytest.approx(
        median["training, project run, default"]
        / median["training, project run, default, system metrics off"]
    )
    assert "project fp32 deterministic / project fp32" not in found  # its row was not measured
    printed = list(lines(rows, found, {"plain Keras model.fit, fp32": 0.93}))
    assert len(printed) == 1 + len(rows) + len(found) + 1
    assert printed[-1].endswith("0.9300")


def test_a_complete_table_passes_its_check():
    assert problems(complete_table(), {"project run, default": 0.9}) == []


def test_a_broken_table_fails_its_check_naming_what_broke():
    rows = [r for r in complete_table() if r["name"] != "predict_digit, 1 image"]
    rows[0] = {**rows[0], "median": 0.0}
    found = problems(rows, {"project run, default": 0.1})
    assert "row 'predict_digit, 1 image' is missing" in found
    assert f"{rows[0]['name']}: 0.0 is not > 0" in found
    assert "project run, default reached test accuracy 0.1" in found


def watched_run(curve: list[tuple[float, float]], wall: float, phases: dict | None = None) -> dict:
    return {"curve": curve, "wall": wall, "first_step": curve[0][0] / 2, "phases": phases or {}}


def test_time_to_accuracy_is_the_first_epoch_at_the_threshold_over_the_seeds_that_reach_it():
    curve = [(10.0, 0.985), (20.0, 0.9912), (30.0, 0.9951), (40.0, 0.9949)]
    assert reached(curve, 0.99) == 20.0
    assert reached(curve, 0.995) == 30.0
    assert reached(curve, 0.996) is None
    phases = {"start-up": 5.0, "training": 30.0}
    runs = {
        ("fast", "project"): [
            watched_run(curve, 45.0, phases),
            watched_run([(12.0, 0.99), (24.0, 0.993)], 30.0, phases),
        ],
        ("fast", "plain"): [
            watched_run([(8.0, 0.99), (16.0, 0.996)], 20.0),
            watched_run([(9.0, 0.991), (18.0, 0.995)], 22.0),
        ],
    }
    rows = clock_rows(runs)
    by_name = {r["name"]: r for r in rows}
    to_995 = by_name["time to 99.5%, fast, project run"]
    assert (to_995["median"], to_995["n"], to_995["of"]) == (30.0, 1, 2)
    assert by_name["time to 99.0%, fast, project run"]["median"] == 16.0  # of 20 and 12
    assert by_name["after the last epoch, fast, project run"]["median"] == (5 + 6) / 2
    assert "time to 99.6%, fast, project run" not in by_name  # no seed reached it
    found = clock_ratios({r["name"]: r["median"] for r in rows}, ["fast"])
    assert found["wall, fast: project / plain Keras"] == pytest.approx(37.5 / 21)
    assert found["time to 99.5%, fast: project / plain Keras"] == pytest.approx(30.0 / 17.0)
    assert clock_problems(rows, ["fast"]) == []
    assert any("(1 of 2)" in line for line in lines(rows, found, {}))


def test_a_time_to_accuracy_table_without_a_contender_fails_its_check():
    rows = clock_rows({("best", "project"): [watched_run([(60.0, 0.99)], 70.0, {"data": 1.0})]})
    found = clock_problems(rows, ["best", "fast"])
    assert "row 'wall' of best, plain Keras is missing" in found
    assert "the phases of fast, project run are missing" in found


def test_the_contenders_take_turns_going_first_unless_early_stopping_sets_the_epochs():
    assert [order(index, stops_early(["experiment=fast"])) for index in range(3)] == [
        ("project", "plain"),
        ("plain", "project"),
        ("project", "plain"),
    ]
    assert stops_early([])  # the default recipe: the project's epochs decide the plain script's
    assert order(1, stops_early([])) == ("project", "plain")


def test_the_benchs_experiment_opens_in_the_uis_training_view(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = {"cpu": "x", "flags": "avx2", "cores": 2, "quick": True, "rows": complete_table()}
    with global_tracking_uri():
        run_id = log_bench(uri, result, None)
    client = MlflowClient(uri)
    experiment = client.get_experiment(client.get_run(run_id).info.experiment_id)
    assert experiment.name == EXPERIMENT
    assert experiment.tags[EXPERIMENT_KIND[0]] == EXPERIMENT_KIND[1]
