"""Every config in conf/ composes; the schema rejects bad values with a clear message."""

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException

from mnist_exp.config import AdadeltaConfig, Config, register_configs, validate
from mnist_exp.errors import ConfigError

from .helpers import ROOT, run_module

CONF = ROOT / "conf"
GROUP_OPTIONS = [f"{path.parent.name}={path.stem}" for path in sorted(CONF.glob("*/*.yaml"))]

register_configs()


def composed(*overrides: str) -> Config:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return validate(compose("config", overrides=list(overrides)))


@pytest.mark.parametrize("option", GROUP_OPTIONS)
def test_every_group_option_composes(option):
    assert isinstance(composed(option), Config)


def test_defaults_reproduce_the_seed_except_adadelta_learning_rate():
    cfg = composed()
    assert (cfg.batch_size, cfg.epochs, cfg.shuffle) == (128, 50, True)
    assert cfg.optimizer == AdadeltaConfig(learning_rate=1.0)
    assert (cfg.callbacks.checkpoint.monitor, cfg.callbacks.checkpoint.mode) == (
        "val_accuracy",
        "max",
    )
    stopping = cfg.callbacks.early_stopping
    assert (stopping.monitor, stopping.patience) == ("val_loss", 5)
    assert cfg.dataset.val_size == 5000


def test_experiment_seed_uses_tensorflow_default_adadelta_rate():
    assert composed("experiment=seed").optimizer.learning_rate == 0.001


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("batch_size=-8", "batch_size=-8"),
        ("epochs=0", "epochs=0"),
        ("model.dropout_conv=1.0", "model.dropout_conv=1.0"),
        ("model.dropout_dense=1.5", "model.dropout_dense=1.5"),
        ("optimizer.learning_rate=0", "optimizer.learning_rate=0.0"),
        ("dataset.val_size=60000", "dataset.val_size=60000"),
        ("callbacks.early_stopping.patience=-1", "callbacks.early_stopping.patience=-1"),
        ("callbacks.early_stopping.monitor=val_los", "callbacks.early_stopping.monitor='val_los'"),
    ],
)
def test_schema_rejects_out_of_range_values(override, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        composed(override)


def test_unknown_optimizer_lists_the_choices():
    with pytest.raises(HydraException) as error:
        composed("optimizer=adamm")
    for choice in ("adadelta", "adam", "rmsprop", "sgd"):
        assert f"\t{choice}\n" in str(error.value)


@pytest.mark.parametrize("override", ["batch_size=abc", "bach_size=64", "optimizer.beta_1=0.5"])
def test_wrong_types_and_unknown_keys_fail_at_compose_time(override):
    with pytest.raises(HydraException):
        composed(override)


def test_cli_reports_a_bad_value_in_one_line_with_status_2():
    done = run_module("mnist_exp.run", "batch_size=0", timeout=60)
    assert done.returncode == 2
    assert "batch_size=0 is not allowed: use >= 1." in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
