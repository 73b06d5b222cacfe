"""Shared fixtures: real MNIST (verified once per session) and one real training run; in CI
(CI=true) a skipped test fails, so a missing part can never pass unchecked."""

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from mnist_exp.data import fetch_mnist

from . import postgres as postgres_server
from .helpers import copy_store, run_module

# Modules whose module-scoped fixtures are expensive (runs, a wheel and its venv).
SHARING_MODULES = ("tests.test_tracking", "tests.test_wheel")


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the groups
def pytest_collection_modifyitems(items):
    """The slow tests first, so that none starts last while the other workers idle; with workers
    (`make test`: pytest -n N --dist loadgroup), the tests that share an expensive fixture run
    in one worker, so it is built once."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: file order
    for item in items:
        if "trained_run" in item.fixturenames:
            item.add_marker(pytest.mark.xdist_group("trained_run"))
        elif item.module.__name__ in SHARING_MODULES:
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """CI=true: a skip is a failure that names what was missing."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("CI") == "true":
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"skipped in CI (CI=true), which must not happen: {reason}"


@pytest.fixture(scope="session")
def mnist_raw():
    """The four verified uint8 arrays from the default cache (fetched if missing)."""
    return fetch_mnist()


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory) -> Path:
    """A new SQLite tracking store as MLflow creates it (its migrations take ~3 s), for the tests
    whose point is not a store's creation to start from a copy of."""
    path = tmp_path_factory.mktemp("empty_store") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def tracking_uri(tmp_path, empty_store):
    """A new, empty SQLite store in the test's directory (`mlflow.db`)."""
    return copy_store(empty_store, tmp_path)


@pytest.fixture(scope="session")
def postgres(tmp_path_factory) -> Path:
    """A PostgreSQL server (tests/postgres.py) for this worker's tests: the folder that holds its
    port and `pgpass`; `new_database(folder, name)` gives each test a database of its own."""
    root = tmp_path_factory.mktemp("postgres")
    try:
        postgres_server.start(root)
    except postgres_server.PostgresError as error:
        pytest.skip(str(error))  # a failure in CI (CI=true)
    yield root
    postgres_server.stop(root)


@dataclass(frozen=True)
class TrainedRun:
    tracking_uri: str
    run_id: str
    output_dir: Path
    stdout: str
    stderr: str


@pytest.fixture(scope="session")
def trained_run(request, tmp_path_factory, empty_store) -> TrainedRun:
    """`python -m mnist_exp.run model=narrow_cnn optimizer=adam epochs=2` on full MNIST into a
    private store: the default pipeline on the quick CNN (98.5% test, 45-55 s on 2 AVX2 cores)."""
    ungrouped = [
        item.nodeid
        for item in request.session.items
        if "trained_run" in item.fixturenames and not item.nodeid.endswith("@trained_run")
    ]
    if request.config.getoption("loadgroup", False) and ungrouped:
        pytest.fail(  # each worker would train it (pytest 9.2 ignores the node id xdist 3.8 sets)
            f"xdist groups were not applied ({ungrouped[0]}): install the pytest and "
            "pytest-xdist versions pyproject.toml allows (make install)"
        )
    root = tmp_path_factory.mktemp("trained")
    uri = copy_store(empty_store, root)
    done = run_module(
        "mnist_exp.run",
        "model=narrow_cnn",
        "optimizer=adam",
        "epochs=2",
        f"mlflow.tracking_uri={uri}",
        f"hydra.run.dir={root / 'out'}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    [run] = MlflowClient(uri).search_runs(
        [MlflowClient(uri).get_experiment_by_name("mnist_exp").experiment_id]
    )
    return TrainedRun(uri, run.info.run_id, root / "out", done.stdout, done.stderr)
