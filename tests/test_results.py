"""Results as data: records written by the commands that measured them, and the docs' blocks
rendered from them."""

import json
import shlex
import sys

import pytest

from mnist_exp.bench.clock import clock_ratios, clock_rows
from mnist_exp.errors import MnistExpError
from mnist_exp.results.__main__ import main, time_command
from mnist_exp.results.records import make_record, read_records, write_record
from mnist_exp.results.render import render_text


def seeds_record(folder, *tests: float) -> dict:
    """A record of runs with these test accuracies, written to `folder`."""
    runs = [
        {"run_id": f"r{n}", "seed": n, "metrics": {"test_accuracy": t}} for n, t in enumerate(tests)
    ]
    record = make_record("seeds", "runs", "some seeds", "python -m mnist_exp.run", {"runs": runs})
    write_record(record, folder)
    return record


def test_a_timed_command_is_recorded_with_its_tests_and_last_lines(tmp_path, capsys):
    script = "print('collecting'); print('=== 7 passed, 1 warning in 3.2s ===')"
    path = time_command("suite", [sys.executable, "-c", script], "a suite", 1, tmp_path)
    record = json.loads(path.read_text())
    assert record["figures"]["passed"] == 7
    assert record["figures"]["output"] == ["=== 7 passed, 1 warning in 3.2s ==="]
    assert record["machine"]["cpu"] and record["kind"] == "timed"
    assert "7 passed" in capsys.readouterr().out  # shown as it ran


def test_the_command_line_times_what_follows_its_double_dash(tmp_path, capsys):
    script = "print('one'); print('two')"
    argv = ["--folder", str(tmp_path), "time", "run", "--title", "a run", "--keep", "1"]
    main([*argv, "--", sys.executable, "-c", script])
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["title"] == "a run" and record["figures"]["output"] == ["two"]
    assert record["command"] == shlex.join([sys.executable, "-c", script])
    with pytest.raises(SystemExit):
        main(argv)  # no command: argparse's one line and exit 2
    assert "give the command after --" in capsys.readouterr().err


def test_a_failed_command_writes_no_record(tmp_path):
    with pytest.raises(MnistExpError, match="exited with 3: nothing recorded"):
        time_command("suite", [sys.executable, "-c", "raise SystemExit(3)"], "a suite", 0, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_damaged_or_misnamed_record_is_refused_naming_its_file(tmp_path):
    (tmp_path / "cut.json").write_text('{"name": "cut", "kind"')
    with pytest.raises(MnistExpError, match=r"cut\.json is not a readable record"):
        read_records(tmp_path)
    (tmp_path / "cut.json").write_text(json.dumps({"name": "other", "kind": "runs"}))
    with pytest.raises(MnistExpError, match=r"cut\.json is not a record: title, command"):
        read_records(tmp_path)
    with pytest.raises(MnistExpError, match="Record name 'Best Run'"):
        make_record("Best Run", "runs", "t", "c", {})


def test_a_block_naming_no_record_fails_naming_its_page():
    with pytest.raises(MnistExpError, match=r"^docs/x\.md: `results:seeds nothing` names no rec"):
        render_text("<!-- results:seeds nothing --><!-- /results -->", {}, "docs/x.md")


def test_a_figure_within_a_sentence_may_not_start_a_line(tmp_path):
    records = {"seeds": seeds_record(tmp_path, 0.99)}
    assert render_text("Mean <!-- results:mean-test seeds --><!-- /results -->.", records) == (
        "Mean <!-- results:mean-test seeds -->99.00%<!-- /results -->."
    )
    with pytest.raises(MnistExpError, match="starts a line, where Markdown reads the line as raw"):
        render_text("Mean\n<!-- results:mean-test seeds --><!-- /results -->.", records, "p")


def test_a_bench_record_renders_the_ratio_it_measured(tmp_path):
    curve = [(20.0, 0.991), (40.0, 0.996)]
    run = {"curve": curve, "wall": 50.0, "first_step": 8.0, "phases": {"training": 40.0}}
    plain = {**run, "wall": 40.0, "first_step": 6.0}
    rows = clock_rows({("fast", "project"): [run], ("fast", "plain"): [plain]})
    ratios = clock_ratios({r["name"]: r["median"] for r in rows}, ["fast"])
    figures = {"recipes": ["fast"], "rows": rows, "ratios": ratios}
    write_record(make_record("tta", "bench", "time", "make bench", figures), tmp_path)
    text = render_text(
        "<!-- results:time-to-accuracy tta --><!-- /results -->", read_records(tmp_path)
    )
    assert (
        "| `fast` | 1 | 50.0 / 40.0 | **1.25x** | 20.0 / 20.0 | 40.0 / 40.0 | 8.0 / 6.0 |" in text
    )
    assert render_text(text, read_records(tmp_path)) == text  # rendering again changes nothing


def test_real_handwriting_reads_the_held_out_rows_or_an_older_records_writers(tmp_path):
    """A run logs the writers' held-out part; one recorded before the split, its one writers
    part; the validation part, which selection reads, never shows as real handwriting."""
    held_out, earlier = (
        "extra_robustness_writers_held_out_accuracy",
        "extra_robustness_writers_accuracy",
    )
    runs = [
        {"run_id": "r1", "seed": 1, "metrics": {"test_accuracy": 0.99, held_out: 0.9}},
        {"run_id": "r2", "seed": 2, "metrics": {"test_accuracy": 0.99, earlier: 0.8}},
        {
            "run_id": "r3",
            "seed": 3,
            "metrics": {"test_accuracy": 0.99, held_out: 0.7, earlier: 0.1},
        },
        {
            "run_id": "r4",
            "seed": 4,
            "metrics": {"test_accuracy": 0.99, "extra_robustness_writers_validation_accuracy": 1.0},
        },
    ]
    record = make_record("hw", "runs", "hw", "python -m mnist_exp.run", {"runs": runs})
    write_record(record, tmp_path)
    records = read_records(tmp_path)
    text = render_text("Read <!-- results:handwriting hw -->x<!-- /results -->", records)
    assert "80.00% (seed 1, 2, 3)" in text  # the mean of 0.9, 0.8 and 0.7
    table = render_text("<!-- results:seeds hw -->\n<!-- /results -->", records)
    column = [row.split(" | ")[2] for row in table.splitlines() if row.startswith("| ")]
    assert column == ["real handwriting", "---", "90.00%", "80.00%", "70.00%", "—", "80.00%"]


def test_a_lever_is_compared_with_its_base_on_the_same_seeds(tmp_path):
    """The base's runs of other seeds do not enter the change; a lever run on a seed the base
    lacks is refused, naming both."""
    validation = "extra_robustness_writers_validation_accuracy"

    def write(name: str, seeds: dict[int, float]) -> None:
        runs = [
            {"run_id": f"{name}{n}", "seed": n, "metrics": {"test_accuracy": 0.99, validation: v}}
            for n, v in seeds.items()
        ]
        write_record(make_record(name, "runs", name, "python -m mnist_exp.run", {"runs": runs}),
                     tmp_path)  # fmt: skip

    write("base", {1: 0.90, 2: 0.92, 3: 0.50})
    write("lever", {1: 0.93, 2: 0.94})
    write("stray", {4: 0.99})
    records = read_records(tmp_path)
    text = render_text("<!-- results:levers base lever -->\n<!-- /results -->", records)
    row = next(line for line in text.splitlines() if line.startswith("| lever"))
    cells = row.split(" | ")
    assert cells[2:5] == ["1, 2", "—", "99.00% (+0.00)"]  # no validation in these runs
    assert cells[5] == "93.50% (+2.50)"  # against 0.90 and 0.92, not seed 3's 0.50
    with pytest.raises(MnistExpError, match="base has no run of seed 4 to compare stray with"):
        render_text("<!-- results:levers base stray -->\n<!-- /results -->", records)


def test_render_check_names_a_stale_page_and_changes_nothing(tmp_path, monkeypatch, capsys):
    seeds_record(tmp_path / "records", 0.99, 0.993)
    (tmp_path / "docs").mkdir()
    page = "# r\n\nMean: <!-- results:mean-test seeds -->99%<!-- /results -->.\n"
    (tmp_path / "README.md").write_text(page)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match="make results"):
        main(["--folder", "records", "render", "--check"])
    assert "stale: README.md" in capsys.readouterr().out
    assert (tmp_path / "README.md").read_text() == page
    main(["--folder", "records", "render"])
    assert (
        "Mean: <!-- results:mean-test seeds -->99.15%<!-- /results -->."
        in (tmp_path / "README.md").read_text()
    )
    main(["--folder", "records", "render", "--check"])  # now current: no exit
