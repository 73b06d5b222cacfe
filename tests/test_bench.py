"""The bench's table logic: ratios come from the rows they name, and a broken table is caught.
(The bench itself runs as its own step of .ci/run: `make bench ARGS=--quick`.)"""

import pytest

from mnist_exp.bench.table import EXPECTED_ROWS, lines, problems, ratios, row


def complete_table() -> list[dict]:
    names = [*EXPECTED_ROWS, "predict CLI, 50 PNG files", "model.predict / predict_digit"]
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
    printed = list(lines(rows, found, {"plain Keras model.fit, fp32": 0.93}, epochs=2))
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
