"""Typed config schemas, registered in Hydra's ConfigStore; `validate` checks ranges and choices.

Groups that build an object name its builder with `_target_`; a builder's schema is its annotated
signature (`mnist_exp.config.build.check`).
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from mnist_exp.config import build
from mnist_exp.errors import ConfigError
from mnist_exp.names import METRICS

PRECISIONS = ("fp32", "bf16", "fp16", "auto")
# better: the alias moves to a version that beats its holder on the same validation data;
# always: to every new version, whatever it was validated on
PROMOTIONS = ("better", "always")


def no_password(key: str, url: str | None) -> None:
    """Refuse a URL with a password in it: it would be written into every run's config and logs."""
    password = urlsplit(url).password if url and "://" in url else None
    if password:
        raise ConfigError(
            f"{key} holds a password, which every run would write into its config and logs: put "
            f"it in ~/.pgpass (or PGPASSWORD) and give {url.replace(f':{password}@', '@')}."
        )


def require(ok: bool, key: str, value: Any, allowed: str) -> None:
    """Raise a ConfigError naming the key, its value and what is allowed, unless `ok`."""
    if not ok:
        raise ConfigError(f"{key}={value!r} is not allowed: {allowed}.")


@dataclass
class MlflowConfig:
    tracking_uri: str | None = None
    experiment_name: str = "mnist_exp"
    registered_model: str | None = "{dataset}-{model}"
    alias: str = "champion"
    promote: str = "better"
    system_metrics: bool = True
    system_metrics_interval: float = 1.0
    heartbeat_seconds: int = 15

    def __post_init__(self) -> None:
        no_password("mlflow.tracking_uri", self.tracking_uri)
        name = self.registered_model
        try:
            ok = name is None or bool(name.format(dataset="mnist", model="cnn"))
        except (ValueError, KeyError, IndexError):
            ok = False
        require(
            ok,
            "mlflow.registered_model",
            name,
            "use a name, where {dataset} and {model} stand for the data and architecture, or null",
        )
        require(
            self.promote in PROMOTIONS,
            "mlflow.promote",
            self.promote,
            f"choose one of {', '.join(PROMOTIONS)}",
        )
        require(
            self.system_metrics_interval > 0,
            "mlflow.system_metrics_interval",
            self.system_metrics_interval,
            "use > 0 (seconds)",
        )
        require(
            self.heartbeat_seconds >= 1,
            "mlflow.heartbeat_seconds",
            self.heartbeat_seconds,
            "use a whole number of seconds >= 1",
        )


def extra_options() -> dict[str, tuple[dict[str, Any], str | None]]:
    """Each option of the dataset group an `evaluate.extra` entry can name: its YAML's node, and
    the knob that `NAME:DIR` sets (the option's one required knob: folder's `root`), or None where
    the name alone is the set (`mnist`)."""
    from mnist_exp.config.compose import CONF_DIR  # compose imports this module

    options = {}
    for path in sorted((CONF_DIR / "dataset").glob("*.yaml")):
        node = OmegaConf.to_container(OmegaConf.load(path))
        required = [key for key, value in node.items() if value == MISSING]
        if len(required) <= 1:
            options[path.stem] = (node, required[0] if required else None)
    return options


def extra_node(spec: str) -> dict[str, Any] | None:
    """The node of the dataset option an `evaluate.extra` entry names, with its DIR
    (`folder:DIR`) for the option's required knob; None if it names no option as the option
    takes it."""
    kind, _, where = spec.partition(":")
    node, knob = extra_options().get(kind, (None, None))
    if node is None or (knob is None) != (not where):
        return None
    return {**node, knob: where} if knob else dict(node)


def extra_name(spec: str) -> str:
    """What an `evaluate.extra` entry is called in metrics and artifacts: `mnist`, or its
    directory's name (`folder:~/my_digits`: `my_digits`)."""
    kind, _, where = spec.partition(":")
    name = Path(where).expanduser().name if where else kind
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


@dataclass
class EvaluateConfig:
    extra: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.extra:
            return
        forms = [f"{name}:DIR" if knob else name for name, (_, knob) in extra_options().items()]
        allowed = f"give each set as {', '.join(forms[:-1])} or {forms[-1]}"
        for spec in self.extra:
            where = spec.partition(":")[2]
            require(extra_node(spec) is not None, "evaluate.extra", spec, allowed)
            require(
                not where or Path(where).expanduser().exists(),
                "evaluate.extra",
                spec,
                f"{where} does not exist",
            )
        names = [extra_name(spec) for spec in self.extra]
        require(
            len(set(names)) == len(names),
            "evaluate.extra",
            self.extra,
            "two sets have one name (their directories'); rename one",
        )


@dataclass
class PathsConfig:
    root: str = "."  # relative: to the working directory, resolved where it is used

    def __post_init__(self) -> None:
        require(
            bool(self.root.strip()) and not Path(self.root).is_file(),
            "paths.root",
            self.root,
            "use a directory (made if missing), relative to the working directory or absolute",
        )


@dataclass
class Config:
    # Each group that builds something: its builder's _target_ and knobs (checked by `validate`).
    dataset: dict[str, Any] = MISSING  # the images: MNIST, an IDX set, a folder
    split: dict[str, Any] = MISSING  # which images validate
    model: dict[str, Any] = MISSING
    optimizer: dict[str, Any] = MISSING
    schedule: dict[str, Any] = MISSING
    callbacks: dict[str, dict[str, Any]] = MISSING  # {name: a callback's builder and knobs}
    augment: dict[str, Any] | None = None  # {} or null: none
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    seed: int = 42
    batch_size: int = 128
    steps_per_execution: int | None = None
    epochs: int = 50
    label_smoothing: float = 0.0
    shuffle: bool = True
    deterministic: bool = False
    resume: str | None = None
    init_from: str | None = None
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
        require(
            self.steps_per_execution is None or self.steps_per_execution >= 1,
            "steps_per_execution",
            self.steps_per_execution,
            "use >= 1, or null to let the run choose",
        )
        require(self.epochs >= 1, "epochs", self.epochs, "use >= 1")
        require(
            0 <= self.label_smoothing < 1,
            "label_smoothing",
            self.label_smoothing,
            "use 0 <= label_smoothing < 1",
        )
        require(self.seed >= 0, "seed", self.seed, "use >= 0")
        rate = self.optimizer.get("learning_rate")
        require(
            isinstance(rate, int | float) and not isinstance(rate, bool),
            "optimizer.learning_rate",
            rate,
            "set a number: the schedule starts from it",
        )


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
    ConfigStore.instance().store(name="schema", node=Config)


def target_nodes(node: DictConfig, prefix: str = "") -> list[tuple[str, DictConfig]]:
    """(key, node) of every `_target_` node: `model`, `callbacks.checkpoint`, ..."""
    found = []
    for key, child in node.items():
        if not isinstance(child, DictConfig) or OmegaConf.get_type(child) is not dict:
            continue
        if "_target_" in child:
            found.append((f"{prefix}{key}", child))
        else:
            found += target_nodes(child, f"{prefix}{key}.")
    return found


def validate(cfg: DictConfig) -> Config:
    """Turn the composed config into dataclasses, checking every range, and check each `_target_`
    node against its builder (a `monitor` against the compiled metrics); raise a one-line
    ConfigError if anything is off."""
    config = converted(cfg)
    for key, node in target_nodes(cfg):
        build.check(key, node)
        if "monitor" in node:
            allowed = f"the model compiles {', '.join(METRICS)}; choose one"
            require(node.monitor in METRICS, f"{key}.monitor", node.monitor, allowed)
    check_rate_owner(config)
    return config


def validate_store(cfg: DictConfig) -> tuple[MlflowConfig, str]:
    """The store's part of the config (`mlflow`, `paths.root`), validated ahead of the rest: what
    a run starts from (a resume, `init_from`) is looked up there before the run is validated."""
    return converted(cfg.mlflow), converted(cfg.paths).root


def converted(node: DictConfig) -> Any:
    """A typed node as its dataclass, its ranges checked; a one-line ConfigError if not."""
    try:
        return OmegaConf.to_object(node)
    except MissingMandatoryValue as error:  # a YAML's ??? that nothing set
        raise ConfigError(f"{error.full_key} is missing: set it ({error.full_key}=...).") from None
    except OmegaConfBaseException as error:
        raise ConfigError(str(error).splitlines()[0]) from None


# Callbacks that set the learning rate, which a schedule other than `constant` sets each step.
RATE_SETTERS = ("ReduceLROnPlateau", "LearningRateScheduler")


def check_rate_owner(config: Config) -> None:
    """A schedule and a callback that sets the learning rate cannot both own it."""
    if build.returned_type("schedule", config.schedule) == "float":  # constant: the rate itself
        return
    for name, node in config.callbacks.items():
        if build.returned_type(f"callbacks.{name}", node) in RATE_SETTERS:
            raise ConfigError(
                f"callbacks.{name} sets the learning rate, which the schedule already sets each "
                "step; use schedule=constant with it, or drop it."
            )
