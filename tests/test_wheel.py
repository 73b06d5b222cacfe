"""`pip install .` (not editable) works: it declares every package the code imports, and the
wheel, installed into a fresh venv, runs, sweeps, trains a user's model, predicts and serves from
an empty directory, keeping its store and outputs/ there (`paths.root`, the working directory by
default). Offline: the venv reuses this one's dependencies, the wheel goes in with --no-deps."""

import ast
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import urllib.request
import zipfile
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from mnist_exp.config.compose import compose_config
from mnist_exp.config.schema import MlflowConfig, validate
from mnist_exp.errors import ConfigError
from mnist_exp.tracking.store import tracking_uri

from .helpers import ROOT, USER_MODELS, free_port, stop, wait_until_up

# What the build needs from the checkout (an in-tree build would leave build/ and egg-info there).
SOURCES = ["pyproject.toml", "README.md", "mnist_exp", "hydra_plugins"]
# Every connection but to this machine goes to a dead proxy: nothing may download.
OFFLINE = {
    **{key: "http://127.0.0.1:9" for key in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY")},
    "http_proxy": "http://127.0.0.1:9",
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
    "PIP_NO_INDEX": "1",
}


def distribution(name: str) -> str:
    """A distribution name as pip compares them: `PyYAML` -> `pyyaml`, `a_b` -> `a-b`."""
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_package_the_code_imports_is_a_declared_dependency():
    """Not only through another package's requirements (PyYAML arrived with OmegaConf, Starlette
    with FastAPI), which may drop them."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {distribution(re.match(r"[\w.-]+", req)[0]) for req in project["dependencies"]}
    modules = set()
    for path in [*(ROOT / "mnist_exp").rglob("*.py"), *(ROOT / "hydra_plugins").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules.add(node.module)
    ours = {"mnist_exp", *(path.name for path in (ROOT / "hydra_plugins").iterdir())}
    provided = importlib.metadata.packages_distributions()
    undeclared = set()
    for module in modules:
        top, _, rest = module.partition(".")
        if top == "hydra_plugins":  # a namespace: the plugin's name is its distribution's
            top, _, rest = rest.partition(".")
            names = [top] if top not in ours else []
        else:
            names = [] if top in ours or top in sys.stdlib_module_names else provided[top]
        if names and not {distribution(name) for name in names} & declared:
            undeclared.add(f"{module} ({', '.join(names)})")
    assert "yaml" in modules and "starlette.formparsers" in modules and "submitit" in modules
    assert not undeclared, f"imported, not in [project.dependencies]: {sorted(undeclared)}"


def test_paths_root_places_the_store_runs_and_sweeps(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg, hydra = compose_config([f"paths.root={tmp_path}"])
    config = validate(cfg)
    assert Path(hydra.run.dir).parents[1] == tmp_path / "outputs"  # outputs/<date>/<time>
    assert Path(hydra.sweep.dir).parents[1] == tmp_path / "outputs" / "multirun"
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert tracking_uri(config.mlflow, config.paths.root) == store
    monkeypatch.chdir(tmp_path)  # commands outside Hydra: the working directory's store
    assert tracking_uri(MlflowConfig()) == store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking:5000")  # still wins
    assert tracking_uri(config.mlflow, config.paths.root) == "http://tracking:5000"


def test_a_file_as_paths_root_is_one_line(tmp_path):
    (tmp_path / "notes.txt").touch()
    with pytest.raises(ConfigError, match=r"^paths.root='.*notes.txt' is not allowed: use a dir"):
        validate(compose_config([f"paths.root={tmp_path / 'notes.txt'}"])[0])


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The project's wheel, built without the network from a copy of its sources."""
    build = tmp_path_factory.mktemp("build")
    (build / "src").mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(
                ROOT / name,
                build / "src" / name,
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
            )
        else:
            shutil.copy(ROOT / name, build / "src" / name)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(build / "dist"),
            str(build / "src"),
        ],
        check=True,
        env={**os.environ, **OFFLINE},
        capture_output=True,
    )
    [built] = (build / "dist").glob("mnist_exp-*.whl")
    return built


@pytest.fixture(scope="module")
def python(wheel, tmp_path_factory) -> Path:
    """A fresh venv's python with the wheel installed, the dependencies reused from this venv."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # A plain path line: this venv's .pth files (the editable install of the checkout) stay off.
    (Path(site) / "reuse_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "--no-index",
            "-q",
            str(wheel),
        ],
        check=True,
        env={**os.environ, **OFFLINE},
        capture_output=True,
    )
    return python


@pytest.fixture(scope="module")
def workdir(python, tmp_path_factory, mnist_raw) -> Path:
    """An empty directory of a user's, after one run of the installed package in it."""
    directory = tmp_path_factory.mktemp("user")
    done = user_run(python, directory, "model=mlp", "epochs=1", "dataset.limit=1000")
    assert done.returncode == 0, done.stderr[-3000:]
    return directory


def user_env(**extra: str) -> dict[str, str]:
    """The environment of a user who set no store and no PYTHONPATH, offline."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("MLFLOW_TRACKING_URI", "PYTHONPATH") and not key.startswith("MNIST_EXP_")
    }
    return {**env, **OFFLINE, **extra}


def user_run(python: Path, directory: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [python, "-m", "mnist_exp.run", *args],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=600,
        env=user_env(**env),
    )


def store(directory: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{directory / 'mlflow.db'}")


def runs(directory: Path, filter_string: str = "") -> list:
    client = store(directory)
    experiment = client.get_experiment_by_name("mnist_exp").experiment_id
    return client.search_runs([experiment], filter_string=filter_string)


@pytest.mark.slow
def test_the_wheel_ships_the_configs_the_page_and_the_sweeper(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {str(p.relative_to(ROOT)) for p in (ROOT / "mnist_exp" / "conf").rglob("*.yaml")}
    static = {str(p.relative_to(ROOT)) for p in (ROOT / "mnist_exp/serving/static").iterdir()}
    assert configs and configs <= names
    assert "mnist_exp/serving/static/index.html" in static
    assert static <= names
    assert "hydra_plugins/mnist_exp_optuna/__init__.py" in names


@pytest.mark.slow
def test_the_venv_imports_the_installed_package_not_the_checkout(python, tmp_path):
    shown = subprocess.run(
        [
            python,
            "-c",
            "import mnist_exp, hydra_plugins.mnist_exp_optuna as p; "
            "print(mnist_exp.__file__); print(p.__file__)",
        ],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
        env=user_env(),
    ).stdout.split()
    venv = python.parents[1]
    assert all(venv in Path(path).parents for path in shown), shown


@pytest.mark.slow
def test_a_run_finishes_in_a_store_in_the_working_directory(workdir):
    [run] = runs(workdir, "params.`dataset.limit` = '1000'")
    assert run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith((workdir / "mlruns").resolve().as_uri())
    assert workdir / "outputs" in Path(run.data.tags["output_dir"]).parents


@pytest.mark.slow
def test_a_sweep_of_a_builtin_and_a_users_model_is_summarised_in_its_parent(
    python, workdir, tmp_path
):
    """Two jobs: `mlp` and the README's `tiny`, found through `hydra.searchpath` and PYTHONPATH."""
    (tmp_path / "my_models.py").write_text(USER_MODELS)
    (tmp_path / "my_conf" / "model").mkdir(parents=True)
    (tmp_path / "my_conf" / "model" / "tiny.yaml").write_text("_target_: my_models.tiny\n")
    args = ["-m", f"hydra.searchpath=[file://{tmp_path / 'my_conf'}]", "model=mlp,tiny"]
    args += ["epochs=1", "dataset.limit=500", "mlflow.registered_model=null"]
    done = user_run(python, workdir, *args, PYTHONPATH=str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    [parent] = runs(workdir, "tags.sweeper = 'BasicSweeper'")
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["jobs_finished"] == 2
    assert workdir / "outputs" / "multirun" in (workdir / parent.data.tags["sweep_dir"]).parents
    assert "summary.md" in [a.path for a in store(workdir).list_artifacts(parent.info.run_id)]
    children = runs(workdir, f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert {run.info.status for run in children} == {"FINISHED"}
    assert sorted(run.data.params["model._target_"] for run in children) == [
        "mnist_exp.groups.model.mlp",
        "my_models.tiny",
    ]


@pytest.mark.slow
def test_predict_serve_and_mlflow_ui_answer_from_the_working_directory(python, workdir, mnist_raw):
    """None is told where the store is. The servers start up (seconds of imports) while
    `predict` runs."""
    ports = {"serve": free_port(), "ui": free_port()}
    commands = {
        "serve": ["mnist_exp.serve", "--port", str(ports["serve"])],
        "ui": ["mlflow", "ui", "--port", str(ports["ui"]), "--workers", "1"],  # 4: 20 s more
    }
    logs = {name: workdir / f"{name}.log" for name in commands}  # why one exited, if it does
    servers = {
        name: subprocess.Popen(
            [python, "-m", *command],
            cwd=workdir,
            env=user_env(),
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=logs[name].open("w"),
        )
        for name, command in commands.items()
    }
    try:
        Image.fromarray(mnist_raw["x_test"][0]).save(workdir / "digit.png")  # a 7
        done = subprocess.run(
            [python, "-m", "mnist_exp.predict", "--json", "digit.png"],
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=300,
            env=user_env(),
        )
        assert done.returncode == 0, done.stderr[-3000:]
        [answer] = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        assert answer["digit"] in range(10)

        for name, server in servers.items():
            try:
                wait_until_up(f"http://127.0.0.1:{ports[name]}/", server, seconds=120)
            except AssertionError as error:
                raise AssertionError(f"{error}:\n{logs[name].read_text()[-3000:]}") from None
        page = urllib.request.urlopen(f"http://127.0.0.1:{ports['serve']}/", timeout=10)
        assert "<html" in page.read().decode().lower()
        api = f"http://127.0.0.1:{ports['ui']}/ajax-api/2.0/mlflow/runs/search"
        query = json.dumps({"experiment_ids": [runs(workdir)[0].info.experiment_id]}).encode()
        request = urllib.request.Request(api, query, {"Content-Type": "application/json"})
        found = json.loads(urllib.request.urlopen(request, timeout=10).read())["runs"]
        assert {run["info"]["run_id"] for run in found} == {r.info.run_id for r in runs(workdir)}
    finally:
        for server in servers.values():
            stop(server)
