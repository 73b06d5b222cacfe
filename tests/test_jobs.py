"""A sweep's bookkeeping: each job's row says how it ended; the sweep goes on past a failure."""

import json
from pathlib import Path

import pytest

from mnist_exp.config.job import Job, Result
from mnist_exp.errors import ConfigError
from mnist_exp.sweeps.summary import label_rows
from mnist_exp.sweeps.sweep import PARENT_ENV, RESULT_FILE, run_job


def job_in(folder: Path) -> Job:
    return Job(folder, ("model=mlp", "epochs=1"), {"model": "mlp"}, str(folder.parent), 3)


def row(folder: Path) -> dict:
    return json.loads((folder / RESULT_FILE).read_text())


def test_a_finished_job_records_its_result_and_returns_its_objective(tmp_path):
    result = Result("abc", 0.98, 0.97, 4, 12.34, 20.06, tmp_path)
    assert run_job(lambda **hooks: result, job_in(tmp_path), epochs=4) == 0.98
    assert row(tmp_path) == {
        "job": 3,
        "overrides": "model=mlp epochs=1",
        "status": "FINISHED",
        "run_id": "abc",
        "val_accuracy": 0.98,
        "test_accuracy": 0.97,
        "epochs": 4,
        "seconds": 12.3,
        "wall_seconds": 20.1,
        "reused": False,
    }


def test_a_job_hands_its_run_the_sweeps_parent_run_and_outside_a_search_no_trial(
    tmp_path, monkeypatch
):
    monkeypatch.setenv(PARENT_ENV, "parent-run-id")
    handed = {}

    def experiment(**hooks) -> Result:
        handed.update(hooks)
        return Result("abc", 0.98, 0.97, 4, 12.34, 20.06, tmp_path)

    run_job(experiment, job_in(tmp_path), epochs=4)
    assert handed == {"callbacks": [], "tags": {}, "parent": "parent-run-id"}


def test_a_failed_job_is_recorded_and_the_sweep_goes_on(tmp_path, capsys):
    def fails(**hooks) -> Result:
        raise ConfigError("model.dropout=1.5 is not allowed")

    assert run_job(fails, job_in(tmp_path), epochs=1) is None
    assert row(tmp_path)["status"] == "FAILED"
    assert row(tmp_path)["error"] == "ConfigError: model.dropout=1.5 is not allowed"
    assert capsys.readouterr().err == "error in job 3: model.dropout=1.5 is not allowed\n"


def test_an_interrupted_job_is_recorded_killed_and_ends_the_sweep_with_130(tmp_path):
    def interrupted(**hooks) -> Result:
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as exit_:
        run_job(interrupted, job_in(tmp_path), epochs=1)
    assert exit_.value.code == 130
    assert row(tmp_path)["status"] == "KILLED"


def test_the_summary_labels_jobs_by_what_differs():
    rows = [{"overrides": "model=mlp epochs=1"}, {"overrides": "model=cnn epochs=1"}]
    labelled, shared = label_rows(rows)
    assert [r["overrides"] for r in labelled] == ["model=mlp", "model=cnn"]
    assert shared == "epochs=1"
