"""The suite's own rules: in CI a skipped test fails, and so does a parametrization that finds
nothing (it would otherwise pass silently)."""

import shutil
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


def test_without_apt_get_each_install_step_says_what_is_missing_and_goes_on(tmp_path):
    """`make test`'s install steps on a machine with none of the parts and no apt-get: one line
    each, and make goes on (the tests that need a part then skip naming it; in CI they fail)."""
    (tmp_path / "id").symlink_to(shutil.which("id"))  # the Makefile asks whether it is root
    steps = ["browser", "slurm-install", "postgres-install", "netns-install"]
    done = subprocess.run(
        [shutil.which("make"), "--no-print-directory", *steps],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PATH": str(tmp_path)},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    said = done.stdout.splitlines()
    assert [line.split(":")[0] for line in said] == [
        "Chromium", "SLURM", "PostgreSQL", "iproute2 (ip netns)"
    ]  # fmt: skip
    assert all("missing, and no apt-get here to install it" in line for line in said)
    assert all(line.endswith("the tests that need it will skip") for line in said)
