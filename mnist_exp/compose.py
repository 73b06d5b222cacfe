"""From command-line overrides to a checked config, alike for the CLI and `run_experiment`."""

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from mnist_exp.config import flatten, register_configs, validate
from mnist_exp.errors import ConfigError, exit_with

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
register_configs()


@dataclass(frozen=True)
class Job:
    """What Hydra knows of one run: where it writes, how it was asked for, which sweep it is in."""

    output_dir: Path
    overrides: tuple[str, ...]
    choices: dict[str, str]  # config group -> option, e.g. {"model": "cnn_bn"}
    sweep_dir: str | None = None  # set for a job of a multirun
    number: int = 0  # the job's number in its sweep


def job_of(hydra: DictConfig, output_dir: str | Path) -> Job:
    """The Job of a `hydra` node: Hydra's runtime config, or the one `compose_config` returns."""
    multirun = hydra.mode is not None and str(hydra.mode).endswith("MULTIRUN")
    return Job(
        output_dir=Path(output_dir).resolve(),
        overrides=tuple(hydra.overrides.task),
        choices=dict(chosen(hydra)),
        sweep_dir=hydra.sweep.dir if multirun else None,
        number=hydra.job.num if multirun else 0,
    )


def compose_config(overrides: Sequence[str]) -> tuple[DictConfig, DictConfig]:
    """The config `python -m mnist_exp.run *overrides` would run, and its `hydra` node. Hydra's
    errors (unknown key, option or type) become one ConfigError line naming the key and value."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import (
        ConfigCompositionException,
        MissingConfigException,
        OverrideParseException,
    )

    def composed(with_overrides: Sequence[str]) -> DictConfig:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose("config", overrides=list(with_overrides), return_hydra_config=True)

    try:
        cfg = composed(overrides)
    except OverrideParseException as error:
        raise unparsable(overrides, error) from None
    except MissingConfigException as error:
        group = (error.missing_cfg_file or "").rsplit("/", 1)[0]
        choices = ", ".join(error.options or [])
        value = given(overrides, group)
        raise ConfigError(f"{group}={value} is not an option: choose one of {choices}.") from None
    except ConfigCompositionException as error:
        cause = error.__cause__
        key = getattr(cause, "full_key", None)
        if key is None:
            raise ConfigError(str(error).splitlines()[0]) from None
        if isinstance(cause, OmegaConfBaseException) and "not in" in str(cause):
            known = list(flatten(OmegaConf.to_container(composed([]), resolve=False)))
            close = difflib.get_close_matches(key, known, n=1)
            hint = (
                f"did you mean {close[0]}?" if close else "see `python -m mnist_exp.run --cfg job`."
            )
            raise ConfigError(f"{key} is not a config key; {hint}") from None
        reason = str(cause).splitlines()[0]
        raise ConfigError(f"{key}={given(overrides, key)} is not allowed: {reason}.") from None
    hydra = cfg.hydra
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, hydra


def unparsable(overrides: Sequence[str], error: Exception) -> ConfigError:
    """Name the override Hydra's grammar refused, and how to quote it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    bad = next(o for o in [*overrides, "?"] if o == "?" or not parses(OverridesParser.create(), o))
    return ConfigError(
        f"{bad} cannot be parsed ({str(error).splitlines()[0]}); quote a value with special "
        "characters, e.g. 'key=\"a{b}\"' (see Hydra's override grammar)."
    )


def parses(parser: Any, override: str) -> bool:
    try:
        parser.parse_overrides([override])
    except Exception:
        return False
    return True


def given(overrides: Sequence[str], key: str) -> str:
    """The value an override gave `key`, as typed."""
    values = (o.split("=", 1)[1] for o in overrides if o.lstrip("+~").startswith(f"{key}="))
    return next(values, "?")


def check_overrides(overrides: Sequence[str]) -> None:
    """Compose and validate what these overrides ask for, before Hydra starts anything. In a
    sweep, each value a swept key takes is checked once (beside the fixed overrides); a search's
    intervals are left to the search."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import Glob
    from hydra.errors import OverrideParseException

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except OverrideParseException as error:
        raise unparsable(overrides, error) from None
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    variants = [fixed]
    for override in parsed:
        if override.is_discrete_sweep() and not isinstance(override.value(), Glob):
            key = override.get_key_element()
            variants += [[*fixed, f"{key}={value}"] for value in override.sweep_string_iterator()]
    for variant in variants:
        validate(compose_config(variant)[0])


def describe(overrides: Sequence[str], resolve: bool = False) -> str:
    """`--cfg job`: the composed config as YAML, each knob with its config file's comment."""
    cfg, hydra = compose_config(overrides)
    comments: dict[str, str] = {}
    sources = [Path(s.path) for s in hydra.runtime.config_sources if s.schema == "file"]
    files = [("", "config")] + [(group, f"{group}/{option}") for group, option in chosen(hydra)]
    for package, name in files:
        path = next((s / f"{name}.yaml" for s in sources if (s / f"{name}.yaml").is_file()), None)
        if path is not None:
            text = path.read_text()
            prefix = "" if "@package _global_" in text else f"{package}." if package else ""
            comments.update(yaml_comments(text, prefix))
    lines = []
    for path, line in yaml_paths(OmegaConf.to_yaml(cfg, resolve=resolve)):
        lines.append(f"{line:<40}  # {comments[path]}" if path in comments else line)
    return "\n".join(lines) + "\n"


def chosen(hydra: DictConfig) -> list[tuple[str, str]]:
    """(group, option) of each of the project's config groups, in the order Hydra composed them."""
    return [
        (group, str(option))
        for group, option in hydra.runtime.choices.items()
        if option is not None and not group.startswith(("hydra", "schema")) and "@" not in group
    ]


KEY_LINE = re.compile(r"^(\s*)([\w.]+):")


def yaml_paths(text: str) -> list[tuple[str | None, str]]:
    """Each line of block YAML with the dotted path of the key it sets (None for other lines)."""
    stack: list[tuple[int, str]] = []
    out = []
    for line in text.splitlines():
        match = KEY_LINE.match(line)
        if not match or line.lstrip().startswith("#"):
            out.append((None, line))
            continue
        indent = len(match.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match.group(2)))
        out.append((".".join(key for _, key in stack), line))
    return out


def yaml_comments(text: str, prefix: str) -> dict[str, str]:
    """{"model.dropout": "after each stage"} from the `key: value  # comment` lines of a file."""
    comments = {}
    for path, line in yaml_paths(text):
        if path is not None and path != "defaults" and " # " in line:
            comments[prefix + path] = line.split(" # ", 1)[1].strip()
    return comments


class CheckOutputDir(Callback):
    """Hydra callback: a run or sweep directory that cannot be created is a config error."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            check_writable("hydra.run.dir", config.hydra.run.dir)
        except ConfigError as error:
            exit_with(error)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            check_writable("hydra.sweep.dir", config.hydra.sweep.dir)
        except ConfigError as error:
            exit_with(error)


def check_writable(key: str, directory: str | Path) -> None:
    """Create `directory` if needed and prove it takes a file; a ConfigError if it cannot."""
    try:
        Path(directory).mkdir(parents=True, exist_ok=True)
        Path(directory, ".write_test").touch()
        Path(directory, ".write_test").unlink()
    except OSError as error:
        raise ConfigError(
            f"{key}={directory} cannot be written ({error.strerror}); choose a writable directory."
        ) from None
