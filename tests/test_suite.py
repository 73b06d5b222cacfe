"""The suite's own rules: in CI a skipped test fails, and so does a parametrization that finds
nothing (it would otherwise pass silently)."""

import subprocess
import sys

import pytest

from .helpers import ROOT

SKIPPING = "import pytest\n\n\ndef test_needs_a_part():\n    pytest.skip('the part is missing')\n"
PLUGIN = ["-p", "tests.conftest"]  # the suite's conftest, for a test file outside tests/
EMPTY = "import pytest\n\n\n@pytest.mark.parametrize('x', [])\ndef test_each(x):\n    pass\n"


def pytest_on(tmp_path, source: str, ci: str) -> subprocess.CompletedProcess:
    (tmp_path / "test_probe.py").write_text(source)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-c",
            str(ROOT / "pyproject.toml"),
            *PLUGIN,
            tmp_path,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "CI": ci},
    )


@pytest.mark.parametrize(("ci", "code"), [("true", 1), ("", 0)])
def test_a_skip_fails_in_ci_only(tmp_path, ci, code):
    done = pytest_on(tmp_path, SKIPPING, ci)
    assert done.returncode == code, done.stdout
    assert ("skipped in CI (CI=true)" in done.stdout) == (ci == "true")


def test_an_empty_parametrization_fails(tmp_path):
    done = pytest_on(tmp_path, EMPTY, "")
    assert done.returncode != 0 and "Empty parameter set" in done.stdout, done.stdout
