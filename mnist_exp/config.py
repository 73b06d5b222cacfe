"""Typed config schemas, registered in Hydra's ConfigStore; `validate` checks ranges and choices."""

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from hydra.core.config_store import ConfigStore
from hydra.experimental.callback import Callback
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mnist_exp.errors import ConfigError, exit_with

METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")
PRECISIONS = ("fp32", "bf16", "fp16", "auto")
MNIST_TRAIN_SIZE = 60_000
# Files in a run's output directory: the best checkpoint, and what `resume=<run_id>` continues from.
BEST_FILE, LAST_FILE, STATE_FILE = "best.keras", "last.keras", "state.json"


def require(ok: bool, key: str, value: Any, allowed: str) -> None:
    """Raise a ConfigError naming the key, its value and what is allowed, unless `ok`."""
    if not ok:
        raise ConfigError(f"{key}={value!r} is not allowed: {allowed}.")


def require_monitor(key: str, monitor: str, mode: str) -> None:
    require(monitor in METRICS, f"{key}.monitor", monitor, f"choose one of {', '.join(METRICS)}")
    require(mode in ("min", "max", "auto"), f"{key}.mode", mode, "choose min, max or auto")


@dataclass
class DatasetConfig:
    source_dir: str | None = None
    cache_dir: str = "~/.cache/mnist_exp"
    val_size: int = 5000
    limit: int | None = None

    def __post_init__(self) -> None:
        require(
            self.source_dir is None or Path(self.source_dir).expanduser().is_dir(),
            "dataset.source_dir",
            self.source_dir,
            "use a directory holding mnist.npz or the four IDX files, or null",
        )
        require(
            0 < self.val_size < MNIST_TRAIN_SIZE,
            "dataset.val_size",
            self.val_size,
            f"use 1..{MNIST_TRAIN_SIZE - 1}",
        )
        train_size = MNIST_TRAIN_SIZE - self.val_size
        require(
            self.limit is None or 0 < self.limit <= train_size,
            "dataset.limit",
            self.limit,
            f"use null (all) or 1..{train_size}",
        )


@dataclass
class CNNConfig:
    conv1_filters: int = 32
    conv2_filters: int = 64
    kernel_size: int = 3
    pool_size: int = 2
    dropout_conv: float = 0.25
    dense_units: int = 256
    dropout_dense: float = 0.5

    def __post_init__(self) -> None:
        for key in ("conv1_filters", "conv2_filters", "dense_units"):
            require(getattr(self, key) >= 1, f"model.{key}", getattr(self, key), "use >= 1")
        # Two valid convolutions and one pooling must leave at least one pixel of 28.
        require(1 <= self.kernel_size <= 12, "model.kernel_size", self.kernel_size, "use 1..12")
        side = 28 - 2 * (self.kernel_size - 1)
        require(1 <= self.pool_size <= side, "model.pool_size", self.pool_size, f"use 1..{side}")
        for key in ("dropout_conv", "dropout_dense"):
            require(
                0 <= getattr(self, key) < 1, f"model.{key}", getattr(self, key), "use 0 <= p < 1"
            )


@dataclass
class OptimizerConfig:
    keras_class: ClassVar[str]
    learning_rate: float = 0.001

    def __post_init__(self) -> None:
        require(self.learning_rate > 0, "optimizer.learning_rate", self.learning_rate, "use > 0")


@dataclass
class AdadeltaConfig(OptimizerConfig):
    keras_class: ClassVar[str] = "Adadelta"
    learning_rate: float = 1.0
    rho: float = 0.95
    epsilon: float = 1e-7


@dataclass
class AdamConfig(OptimizerConfig):
    keras_class: ClassVar[str] = "Adam"
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-7


@dataclass
class SGDConfig(OptimizerConfig):
    keras_class: ClassVar[str] = "SGD"
    learning_rate: float = 0.01
    momentum: float = 0.0
    nesterov: bool = False


@dataclass
class RMSpropConfig(OptimizerConfig):
    keras_class: ClassVar[str] = "RMSprop"
    rho: float = 0.9
    momentum: float = 0.0
    epsilon: float = 1e-7


OPTIMIZERS = {
    "adadelta": AdadeltaConfig,
    "adam": AdamConfig,
    "sgd": SGDConfig,
    "rmsprop": RMSpropConfig,
}


@dataclass
class CheckpointConfig:
    monitor: str = "val_accuracy"
    mode: str = "max"

    def __post_init__(self) -> None:
        require_monitor("callbacks.checkpoint", self.monitor, self.mode)


@dataclass
class EarlyStoppingConfig:
    monitor: str = "val_loss"
    mode: str = "min"
    patience: int = 5
    min_delta: float = 0.0

    def __post_init__(self) -> None:
        require_monitor("callbacks.early_stopping", self.monitor, self.mode)
        require(self.patience >= 0, "callbacks.early_stopping.patience", self.patience, "use >= 0")
        require(
            self.min_delta >= 0, "callbacks.early_stopping.min_delta", self.min_delta, "use >= 0"
        )


@dataclass
class CallbacksConfig:
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)


@dataclass
class MlflowConfig:
    tracking_uri: str | None = None
    experiment_name: str = "mnist_exp"
    registered_model: str | None = "mnist-cnn"
    alias: str = "champion"


@dataclass
class Config:
    dataset: DatasetConfig = MISSING
    model: CNNConfig = MISSING
    optimizer: Any = MISSING
    callbacks: CallbacksConfig = MISSING
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    seed: int = 42
    batch_size: int = 128
    epochs: int = 50
    shuffle: bool = True
    deterministic: bool = False
    resume: str | None = None
    skip_finished: bool = False
    precision: str = "auto"

    def __post_init__(self) -> None:
        require(
            self.precision in PRECISIONS,
            "precision",
            self.precision,
            f"choose one of {', '.join(PRECISIONS)}",
        )
        require(self.batch_size >= 1, "batch_size", self.batch_size, "use >= 1")
        require(self.epochs >= 1, "epochs", self.epochs, "use >= 1")
        require(self.seed >= 0, "seed", self.seed, "use >= 0")


class CheckOutputDir(Callback):
    """Hydra callback: a run or sweep directory that cannot be created is a config error."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_writable("hydra.run.dir", config.hydra.run.dir)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_writable("hydra.sweep.dir", config.hydra.sweep.dir)


def check_writable(key: str, directory: str) -> None:
    try:
        Path(directory).mkdir(parents=True, exist_ok=True)
        Path(directory, ".write_test").touch()
        Path(directory, ".write_test").unlink()
    except OSError as error:
        exit_with(
            ConfigError(
                f"{key}={directory} cannot be written ({error.strerror}); "
                "choose a writable directory."
            )
        )


def check_overrides(conf_dir: str, overrides: list[str]) -> None:
    """Compose once so Hydra's own errors (unknown key, wrong type, unknown group option) come out
    as one ConfigError line naming the key, the value and what is allowed."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException, MissingConfigException

    def composed(with_overrides: list[str]) -> DictConfig:
        with initialize_config_dir(config_dir=conf_dir, version_base="1.3"):
            return compose("config", overrides=with_overrides)

    try:
        composed(overrides)
    except MissingConfigException as error:
        group = (error.missing_cfg_file or "").split("/")[0]
        choices = ", ".join(error.options or [])
        value = next((o.split("=", 1)[1] for o in overrides if o.startswith(f"{group}=")), "?")
        raise ConfigError(f"{group}={value} is not an option: choose one of {choices}.") from None
    except ConfigCompositionException as error:
        cause = error.__cause__
        key = getattr(cause, "full_key", None)
        if key is None:
            raise ConfigError(str(error).splitlines()[0]) from None
        value = next((o.split("=", 1)[1] for o in overrides if o.startswith(f"{key}=")), "?")
        if isinstance(cause, OmegaConfBaseException) and "not in" in str(cause):
            known = list(flatten(OmegaConf.to_container(composed([]), resolve=False)))
            close = difflib.get_close_matches(key, known, n=1)
            hint = (
                f"did you mean {close[0]}?" if close else "see `python -m mnist_exp.run --cfg job`."
            )
            raise ConfigError(f"{key} is not a config key; {hint}") from None
        reason = str(cause).splitlines()[0]
        raise ConfigError(f"{key}={value} is not allowed: {reason}.") from None


def flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    """{"a": {"b": 1}} -> {"a.b": 1}: config keys as Hydra overrides and MLflow params name them."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def register_configs() -> None:
    """Store the schemas so the YAML files are type-checked as Hydra composes them."""
    store = ConfigStore.instance()
    store.store(name="schema", node=Config)
    for name, node in OPTIMIZERS.items():
        store.store(group="schema/optimizer", name=name, node=node)


def validate(cfg: DictConfig) -> Config:
    """Turn the composed config into dataclasses, checking every range; raise ConfigError if not."""
    try:
        return OmegaConf.to_object(cfg)
    except OmegaConfBaseException as error:
        raise ConfigError(str(error).splitlines()[0]) from None
