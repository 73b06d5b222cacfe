"""The model zoo: every architecture builds from its YAML with the parameters its comment states,
learns on real MNIST in-process, and a user's own architecture needs no change to the package."""

import inspect
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from mnist_exp import run_experiment
from mnist_exp.config.build import build, check
from mnist_exp.config.compose import CONF_DIR, compose_config
from mnist_exp.config.schema import validate
from mnist_exp.errors import ConfigError
from mnist_exp.groups import model as models
from mnist_exp.train import resolve_precision, set_precision

from .helpers import USER_MODELS, bf16_refused, run_module

ARCHITECTURES = sorted(path.stem for path in (CONF_DIR / "model").glob("*.yaml"))
IMAGES = np.random.default_rng(0).random((8, 28, 28, 1), dtype=np.float32)


def built(*overrides: str) -> keras.Model:
    cfg, _ = compose_config(overrides)
    validate(cfg)
    return build("model", cfg.model, input_shape=(28, 28, 1), num_classes=10)


def stated_params(name: str) -> int:
    """The parameter count a model YAML's comment states."""
    text = (CONF_DIR / "model" / f"{name}.yaml").read_text()
    return int(re.search(r"([\d,]+) parameters", text).group(1).replace(",", ""))


def test_the_zoo_has_the_four_architectures():
    assert set(ARCHITECTURES) >= {"mlp", "lenet5", "cnn", "cnn_bn"}


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_each_yaml_builds_the_parameter_count_its_comment_states(name):
    model = built(f"model={name}")
    assert model.count_params() == stated_params(name)
    probabilities = model(IMAGES, training=False).numpy()
    assert probabilities.shape == (8, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_each_yaml_lists_every_knob_at_its_builders_default(name):
    cfg, _ = compose_config([f"model={name}"])
    knobs = {k: v for k, v in OmegaConf.to_container(cfg.model).items() if k != "_target_"}
    builder = getattr(models, cfg.model._target_.rsplit(".", 1)[1])
    defaults = {
        parameter.name: list(parameter.default)
        if isinstance(parameter.default, tuple)
        else parameter.default
        for parameter in inspect.signature(builder).parameters.values()
        if parameter.default is not parameter.empty
    }
    assert knobs == defaults


def test_seed_cnn_has_2_380_938_params():
    assert models.cnn((28, 28, 1), 10).count_params() == 2_380_938


def test_sizes_are_config_knobs():
    model = built("model.dense_units=128", "model.conv1_filters=16")
    assert model.count_params() == 2_380_938 - (256 - 128) * (9216 + 1 + 10) - 16 * 10 - 16 * 9 * 64
    assert built("model=mlp", "model.units=[100]").count_params() == 784 * 100 + 100 + 1010
    assert len(built("model=cnn_bn", "model.filters=[8,16,32]").layers) > len(
        built("model=cnn_bn").layers
    )


def test_knobs_that_do_not_fit_the_image_are_one_config_error():
    with pytest.raises(
        ConfigError, match=r"^model: mnist_exp.groups.model.cnn cannot be built with these knobs"
    ):
        built("model.pool_size=30")  # 24x24 maps cannot be pooled 30x30


@pytest.fixture
def restore_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize(
    ("precision", "cpuinfo", "gpus", "isa_limit", "expected"),
    [
        ("auto", "flags : fpu avx512f avx512_bf16", [], "", "bf16"),
        ("auto", "flags : fpu amx_tile amx_bf16", [], "", "bf16"),
        ("auto", "flags : fpu amx_tile amx_bf16", [], "avx512_core_amx", "bf16"),
        ("auto", "flags : fpu amx_tile amx_bf16", [], "AVX2", "fp32"),  # oneDNN kept to AVX2
        ("auto", "flags : fpu avx2 avx512f", [], "", "fp32"),  # no native bf16: stay in fp32
        ("auto", "flags : avx2", [(8, 0)], "", "bf16"),
        ("auto", "flags : avx512_bf16", [(7, 5)], "", "fp32"),  # the GPU decides when there is one
        ("fp16", "flags : avx512_bf16", [], "AVX2", "fp16"),
    ],
)
def test_auto_precision_follows_the_hardware(precision, cpuinfo, gpus, isa_limit, expected):
    assert resolve_precision(precision, cpuinfo, gpus, isa_limit) == expected


def test_bf16_where_onednn_is_kept_below_the_cpus_bf16_is_refused_in_one_line():
    with pytest.raises(ConfigError, match=r"kept to AVX2 \(ONEDNN_MAX_CPU_ISA\).*precision=fp32"):
        resolve_precision("bf16", "flags : avx2 avx512f avx512_bf16", [], "AVX2")
    assert resolve_precision("bf16", "flags : avx2", [], "AVX2") == "bf16"  # emulated: it runs
    assert resolve_precision("bf16", "flags : avx512_bf16", [(8, 0)], "AVX2") == "bf16"  # GPU


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_bf16_policy_keeps_every_softmax_in_float32(name, restore_policy):
    if bf16_refused():  # the AVX2 stand-in: bf16 would crash TensorFlow, so it is refused
        with pytest.raises(ConfigError, match="ONEDNN_MAX_CPU_ISA"):
            set_precision("bf16")
        return
    assert set_precision("bf16") == "bf16"
    model = built(f"model={name}")
    assert model.layers[0].compute_dtype == "bfloat16"
    assert model.layers[0].variable_dtype == "float32"
    assert model.layers[-1].compute_dtype == "float32"
    assert model(IMAGES).dtype == "float32"


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_each_architecture_learns_in_one_short_epoch_in_process(name, tmp_path, tracking_uri):
    """Batch 32: 63 steps, enough for cnn_bn's BatchNorm statistics to settle."""
    result = run_experiment(
        [
            f"model={name}",
            "epochs=1",
            "dataset.limit=2000",
            "split.size=1000",
            "batch_size=32",
            f"mlflow.tracking_uri={tracking_uri}",
            f"hydra.run.dir={tmp_path / 'run'}",
        ]
    )
    assert result.val_accuracy > 0.6, result  # chance is 0.1
    assert result.test_accuracy > 0.6, result
    assert (result.epochs, result.output_dir) == (1, tmp_path / "run")
    client = MlflowClient(tracking_uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == f"{name} adadelta lr=1"
    assert run.data.params["model._target_"] == f"mnist_exp.groups.model.{name}"
    assert int(run.data.params["model_params"]) == stated_params(name)
    assert run.data.tags["choice.model"] == name
    champion = client.get_model_version_by_alias(f"mnist-{name}", "champion")
    assert champion.run_id == result.run_id


USER_ZOO = """\
from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from annotated_types import Ge

if TYPE_CHECKING:
    import keras


def wide(input_shape, num_classes, width: Annotated[int, Ge(1)] = 8) -> keras.Model:
    raise AssertionError("checking a config never builds")


class Narrow:
    def __init__(self, input_shape, num_classes, width: Annotated[int, Ge(1)] = 8) -> None:
        raise AssertionError("checking a config never builds")


def no_shape(num_classes, width: int = 8) -> keras.Model:
    raise AssertionError("checking a config never builds")
"""


@pytest.fixture
def user_zoo(tmp_path, monkeypatch):
    """A user's module of builders, importable as `user_zoo`."""
    (tmp_path / "user_zoo.py").write_text(USER_ZOO)
    monkeypatch.syspath_prepend(str(tmp_path))


@pytest.mark.parametrize("target", ["user_zoo.wide", "user_zoo.Narrow"])
def test_a_users_annotations_are_checked_in_any_style(target, user_zoo):
    check("model", OmegaConf.create({"_target_": target, "width": 3}))
    with pytest.raises(ConfigError) as error:
        check("model", OmegaConf.create({"_target_": target, "width": 0}))
    assert str(error.value) == (
        f"model.width=0 is not allowed: input should be greater than or equal to 1 ({target})."
    )
    with pytest.raises(ConfigError, match=r"model.width='3' is not allowed: input should be a"):
        check("model", OmegaConf.create({"_target_": target, "width": "3"}))


def test_a_builder_must_take_what_the_runner_passes(user_zoo):
    with pytest.raises(ConfigError, match=r"^model: user_zoo.no_shape must take input_shape "):
        check("model", OmegaConf.create({"_target_": "user_zoo.no_shape"}))


def test_an_optimizer_target_that_does_not_exist_is_one_config_error():
    with pytest.raises(ConfigError) as error:
        build("optimizer", OmegaConf.create({"_target_": "keras.optimizers.Adamm"}))
    assert str(error.value) == (
        "optimizer._target_=keras.optimizers.Adamm cannot be imported: "
        "module keras.optimizers has no Adamm."
    )


def test_run_experiment_refuses_a_bad_knob_before_anything_is_tracked(tmp_path):
    store = tmp_path / "mlflow.db"
    with pytest.raises(ConfigError, match=r"model.dropout=1.5 is not allowed"):
        run_experiment(
            ["model=cnn_bn", "model.dropout=1.5", f"mlflow.tracking_uri=sqlite:///{store}"]
        )
    assert not store.exists()


@pytest.mark.slow
def test_a_users_architecture_is_one_function_and_one_yaml_outside_the_package(
    tmp_path, tracking_uri
):
    """The README's recipe, run from a directory of the user's: nothing in mnist_exp/ changes."""
    (tmp_path / "my_models.py").write_text(USER_MODELS)
    (tmp_path / "my_conf" / "model").mkdir(parents=True)
    (tmp_path / "my_conf" / "model" / "tiny.yaml").write_text(
        "_target_: my_models.tiny\nwidth: 8\n"
    )
    (tmp_path / "my_conf" / "model" / "typo.yaml").write_text(
        "_target_: my_models.tiny\nwidht: 8\n"
    )
    uri = tracking_uri
    common = ["hydra.searchpath=[file://my_conf]", f"mlflow.tracking_uri={uri}"]
    user = {"PYTHONPATH": "."}

    done = run_module(
        "mnist_exp.run", *common, "model=tiny", "epochs=1", "dataset.limit=2000",
        cwd=tmp_path, env=user,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(uri)
    [run] = client.search_runs([client.get_experiment_by_name("mnist_exp").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "tiny adadelta lr=1"
    assert run.data.params["model._target_"] == "my_models.tiny"
    assert run.data.params["model.width"] == "8"
    assert run.data.metrics["test_accuracy"] > 0.6  # chance is 0.1
    assert client.get_model_version_by_alias("mnist-tiny", "champion").run_id == run.info.run_id

    typo = run_module("mnist_exp.run", *common, "model=typo", cwd=tmp_path, env=user, timeout=120)
    assert typo.returncode == 2
    assert typo.stderr.strip().splitlines()[-1] == (
        "error: model.widht is not an argument of my_models.tiny (it takes width); fix the name."
    )
    assert "Traceback" not in typo.stderr


@pytest.mark.parametrize(
    ("slurm", "expected"), [("1", 1), ("", None), ("garbage", None)], ids=["slurm", "none", "bad"]
)
def test_threads_follow_the_cpus_the_process_may_use(slurm, expected, monkeypatch):
    from mnist_exp.machine import usable_cpus

    monkeypatch.setenv("SLURM_CPUS_PER_TASK", slurm)
    assert usable_cpus() == (expected or len(os.sched_getaffinity(0)))


@pytest.mark.parametrize(("users", "expected"), [({}, "1"), ({"TF_ENABLE_ONEDNN_OPTS": "0"}, "0")])
def test_tensorflow_gets_its_settings_before_it_starts_and_a_users_win(users, expected):
    code = (
        "import os, mnist_exp; "
        "print(*(os.environ[f'TF_{name}'] for name in "
        "('NUM_INTRAOP_THREADS', 'NUM_INTEROP_THREADS', 'ENABLE_ONEDNN_OPTS')))"
    )
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=environment | {"SLURM_CPUS_PER_TASK": "1", "TF_NUM_INTEROP_THREADS": "3"} | users,
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.split() == ["1", "3", expected]
