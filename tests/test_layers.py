"""The package's layers, bottom to top: a module imports only from its own layer or below."""

import ast
from pathlib import Path

import pytest

from .helpers import ROOT

# The one place the layers are written down (docs/architecture.md describes them).
LAYERS = [
    ["mnist_exp.errors", "mnist_exp.names", "mnist_exp.console", "mnist_exp.machine"],
    ["mnist_exp.config"],
    ["mnist_exp.loop", "mnist_exp.data"],
    ["mnist_exp.groups"],
    ["mnist_exp.train", "mnist_exp.evaluate", "mnist_exp.figures"],
    ["mnist_exp.tracking"],
    [
        "mnist_exp.experiment",
        "mnist_exp.sweeps",
        "mnist_exp.serving",
        "mnist_exp.results",
        "mnist_exp.compare",
    ],
    [
        "mnist_exp.run",
        "mnist_exp.report",
        "mnist_exp.bench",
        "mnist_exp.predict",
        "mnist_exp.serve",
        "mnist_exp.robustness",
        "mnist_exp.score",
        "mnist_exp",
        "hydra_plugins",
    ],
]
MAX_LINES = 400  # a module past this is a smell to look at
MAX_FUNCTION_LINES = 60  # from `def` to the last line, docstring included
MAX_STORY_LINES = 40  # `experiment`: one run, each step a call named for what it does
SOURCES = sorted([*(ROOT / "mnist_exp").rglob("*.py"), *(ROOT / "hydra_plugins").rglob("*.py")])


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int | None:
    """The layer of a project module (its longest listed prefix), None for other packages."""
    found = [
        (len(prefix), number)
        for number, prefixes in enumerate(LAYERS)
        for prefix in prefixes
        if module == prefix or module.startswith(f"{prefix}.")
    ]
    return max(found)[1] if found else None


def imported_names(path: Path) -> set[str]:
    """Every module `path` imports, at module level or inside functions alike (for `from a import
    b`, both `a` and `a.b`)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            # `from mnist_exp.tracking import store` imports the module mnist_exp.tracking.store
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def imported(path: Path) -> set[str]:
    """Every project module `path` imports, at module level or inside functions alike."""
    known = {module_name(source) for source in SOURCES}
    return {name for name in imported_names(path) if name in known}


def imports_mlflow(path: Path) -> bool:
    """Whether `path` imports MLflow (`import mlflow...`, `from mlflow... import`), anywhere."""
    return any(name == "mlflow" or name.startswith("mlflow.") for name in imported_names(path))


def test_every_module_has_a_layer():
    assert [module_name(p) for p in SOURCES if layer(module_name(p)) is None] == []


@pytest.mark.parametrize("path", SOURCES, ids=module_name)
def test_a_module_imports_nothing_from_a_layer_above_its_own(path):
    own = layer(module_name(path))
    above = sorted(name for name in imported(path) if layer(name) > own)
    assert above == [], f"{module_name(path)} (layer {own}) imports {above}"


def test_the_check_catches_an_upward_import_inside_a_function(tmp_path):
    source = tmp_path / "fake.py"
    source.write_text("def f():\n    from mnist_exp.run import run_experiment\n")
    assert imported(source) == {"mnist_exp.run"}
    assert layer("mnist_exp.run") > layer("mnist_exp.tracking.fake")


@pytest.mark.parametrize("path", SOURCES, ids=module_name)
def test_only_tracking_imports_mlflow(path):
    """One way to reach MLflow: everything else goes through `mnist_exp.tracking`'s functions."""
    module = module_name(path)
    if module.startswith("mnist_exp.tracking."):
        return
    assert not imports_mlflow(path), f"{module} imports mlflow: use mnist_exp.tracking"


def test_the_mlflow_check_catches_an_import_inside_a_function(tmp_path):
    source = tmp_path / "fake.py"
    source.write_text("def f():\n    from mlflow.tracking import MlflowClient\n")
    assert imports_mlflow(source)
    source.write_text("import mlflow_like\nfrom mnist_exp.tracking import read\n")
    assert not imports_mlflow(source)


@pytest.mark.parametrize("path", SOURCES, ids=module_name)
def test_no_module_is_over_300_lines(path):
    assert len(path.read_text().splitlines()) <= MAX_LINES


def function_lengths(path: Path) -> dict[str, int]:
    """Every function's (and method's) lines, `def` to its last line, by name."""
    return {
        node.name: node.end_lineno - node.lineno + 1
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }


@pytest.mark.parametrize("path", SOURCES, ids=module_name)
def test_no_function_is_over_the_limit(path):
    long = {name: n for name, n in function_lengths(path).items() if n > MAX_FUNCTION_LINES}
    assert long == {}, f"{module_name(path)}: split by concept, not into arbitrary helpers"


def test_one_run_is_told_in_a_few_lines_and_knows_nothing_of_sweeps():
    path = ROOT / "mnist_exp" / "experiment.py"
    assert function_lengths(path)["experiment"] <= MAX_STORY_LINES
    for module in (path, ROOT / "mnist_exp" / "train.py"):
        assert not {name for name in imported(module) if name.startswith("mnist_exp.sweeps")}


def test_the_length_check_sees_a_long_function(tmp_path):
    source = tmp_path / "fake.py"
    source.write_text("def f():\n" + "    x = 1\n" * MAX_FUNCTION_LINES)
    assert function_lengths(source) == {"f": MAX_FUNCTION_LINES + 1}
