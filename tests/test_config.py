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


CLI_MISTAKES = [
    ("batch_size=abc", "batch_size=abc is not allowed: Value 'abc' of type 'str' could not be"),
    ("batch_size=0", "batch_size=0 is not allowed: use >= 1."),
    ("epochs=-1", "epochs=-1 is not allowed: use >= 1."),
    ("model.dropout_conv=1.5", "model.dropout_conv=1.5 is not allowed: use 0 <= p < 1."),
    ("optimizer.learning_rate=0", "optimizer.learning_rate=0.0 is not allowed: use > 0."),
    ("optimizer.learning_rate=-0.1", "optimizer.learning_rate=-0.1 is not allowed: use > 0."),
    ("dataset.val_size=60000", "dataset.val_size=60000 is not allowed: use 1..59999."),
    ("callbacks.early_stopping.patience=-1", "callbacks.early_stopping.patience=-1 is not allowed"),
    (
        "optimizer=adamm",
        "optimizer=adamm is not an option: choose one of adadelta, adam, rmsprop, sgd.",
    ),
    ("bach_size=64", "bach_size is not a config key; did you mean batch_size?"),
    ("callbacks.early_stopping.monitor=val_los", "monitor='val_los' is not allowed: choose one of"),
    ("callbacks.checkpoint.mode=best", "callbacks.checkpoint.mode='best' is not allowed"),
    ("dataset.source_dir=/no/such/dir", "dataset.source_dir='/no/such/dir' is not allowed"),
    ("dataset.limit=0", "dataset.limit=0 is not allowed: use null (all) or 1..55000."),
    ("model.kernel_size=20", "model.kernel_size=20 is not allowed: use 1..12."),
    ("model.dense_units=0", "model.dense_units=0 is not allowed: use >= 1."),
    ("shuffle=maybe", "shuffle=maybe is not allowed: Value 'maybe' is not a valid bool"),
    ("seed=-1", "seed=-1 is not allowed: use >= 0."),
    (
        "experiment=sead",
        "experiment=sead is not an option: choose one of adam, keras_example, seed.",
    ),
    ("hydra.run.dir=/etc/hostname/out", "hydra.run.dir=/etc/hostname/out cannot be written"),
]


@pytest.mark.parametrize(("override", "message"), CLI_MISTAKES)
def test_cli_config_mistake_exits_2_with_a_clear_message_and_no_run(override, message, tmp_path):
    store = tmp_path / "mlflow.db"
    done = run_module(
        "mnist_exp.run", override, timeout=60, env={"MLFLOW_TRACKING_URI": f"sqlite:///{store}"}
    )
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert len(done.stderr.strip().splitlines()) <= 2
    assert not store.exists()  # nothing was tracked, nothing heavy started
