"""From command-line overrides to a checked config, alike for the CLI and `run_experiment`."""

import difflib
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from mnist_exp.config.job import Job
from mnist_exp.config.options import group_options
from mnist_exp.config.schema import flatten, no_password, register_configs, validate
from mnist_exp.errors import ConfigError, exit_with

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
# `~` where a path begins in a value: after `=`, in a sweep after `,`, in a list after `[` or `,`,
# in `folder:~/a` after `:`, inside quotes. Never a leading `~key` (Hydra's delete).
HOME_PATH = re.compile(r"(?<=[=,\[:'\"])~(?=/|$|[,\]'\"])")
register_configs()
OmegaConf.register_new_resolver("pid", os.getpid, use_cache=True)  # ${pid:} in hydra.run.dir
# ${options:model} in the help template: `cnn | cnn_bn | ...`, read from conf/ when --help asks
OmegaConf.register_new_resolver("options", lambda group: " | ".join(group_options(CONF_DIR, group)))


def job_of(hydra: DictConfig, output_dir: str | Path, in_sweep: bool) -> Job:
    """The Job of a `hydra` node: Hydra's runtime config, or the one `compose_config` returns."""
    return Job(
        output_dir=Path(output_dir).resolve(),
        overrides=tuple(hydra.overrides.task),
        choices=dict(group_choices(hydra)),
        sweep_dir=hydra.sweep.dir if in_sweep else None,
        number=hydra.job.num if in_sweep else 0,
    )


def group_choices(hydra: DictConfig) -> list[tuple[str, str]]:
    """(group, option) of each of the project's config groups that has one; several options of
    one group (`callbacks=[default,reduce_lr]`, which Hydra leaves out of its choices) are
    joined by commas."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    pairs = [
        (group, str(option))
        for group, option in hydra.runtime.choices.items()
        if option is not None and not group.startswith(("hydra", "schema")) and "@" not in group
    ]
    for override in OverridesParser.create().parse_overrides(list(hydra.overrides.task)):
        options = override.value()
        if isinstance(options, list) and (CONF_DIR / override.key_or_group).is_dir():
            pairs.append((override.key_or_group, ",".join(map(str, options))))
    return pairs


def home_expanded(overrides: Sequence[str]) -> list[str]:
    """The overrides with each path's leading `~` made the home directory: bash leaves it as it is
    after a dotted key (`dataset.root=~/a`), Hydra's lexer refuses it unquoted, and `paths.root`
    needs it before Hydra puts it into `hydra.run.dir`."""
    home = str(Path.home())
    return [HOME_PATH.sub(lambda _: home, override) for override in overrides]


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

    overrides = home_expanded(overrides)
    try:
        cfg = composed(overrides)
    except OverrideParseException as error:
        raise unparsable(overrides, error) from None
    except MissingConfigException as error:
        group = (error.missing_cfg_file or "").rsplit("/", 1)[0]
        choices = ", ".join(error.options or [])
        value = typed_value(overrides, group)
        raise ConfigError(f"{group}={value} is not an option: choose one of {choices}.") from None
    except ConfigCompositionException as error:
        cause = error.__cause__
        key = getattr(cause, "full_key", None)
        if key is None:
            raise ConfigError(str(error).splitlines()[0]) from None
        if isinstance(cause, OmegaConfBaseException) and "not in" in str(cause):
            chosen_groups = [o for o in overrides if is_group(o.lstrip("+~").partition("=")[0])]
            known = list(flatten(OmegaConf.to_container(composed(chosen_groups), resolve=False)))
            close = meant(key, known)
            hint = f"did you mean {close}?" if close else "see `python -m mnist_exp.run --cfg job`."
            raise ConfigError(f"{key} is not a config key; {hint}") from None
        reason = str(cause).splitlines()[0]
        raise ConfigError(
            f"{key}={typed_value(overrides, key)} is not allowed: {reason}."
        ) from None
    hydra = cfg.hydra
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, hydra


def meant(key: str, known: list[str]) -> str | None:
    """The key of the user's own composition a mistyped one most likely meant: one beside it
    whose last word's initials it is (`optimizer.lr`: `optimizer.learning_rate`), else the
    closest spelling."""
    parent, _, word = key.rpartition(".")
    for candidate in known:
        near, _, name = candidate.rpartition(".")
        if near == parent and "".join(part[:1] for part in name.split("_")) == word:
            return candidate
    return next(iter(difflib.get_close_matches(key, known, n=1)), None)


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


def typed_value(overrides: Sequence[str], key: str) -> str:
    """The value an override gave `key`, as typed."""
    values = (o.split("=", 1)[1] for o in overrides if o.lstrip("+~").startswith(f"{key}="))
    return next(values, "?")


def check_overrides(overrides: Sequence[str], multirun: bool = False) -> None:
    """Compose and validate what these overrides ask for, before Hydra starts anything. In a
    sweep (`multirun`): every combination of the swept config groups (model=mlp,cnn_bn), each
    with every value of each other swept key; a search's intervals are left to the search."""
    from itertools import product

    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import Glob
    from hydra.errors import OverrideParseException

    overrides = home_expanded(overrides)
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except OverrideParseException as error:
        raise unparsable(overrides, error) from None
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    for override in fixed:
        if override.startswith("hydra.sweeper.storage="):
            no_password("hydra.sweeper.storage", override.partition("=")[2])
    swept = {
        o.get_key_element(): [f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()]
        for o in parsed
        if o.is_discrete_sweep() and not isinstance(o.value(), Glob)
    }
    searching = any(o.startswith("hparams_search=") for o in fixed)
    if "model" in swept and searching:
        raise ConfigError(
            "model is swept, but a search explores one architecture's space "
            "(conf/hparams_search/space/): run one search per model=."
        )
    starts = [o.partition("=")[2] for o in fixed if o.lstrip("+").startswith("init_from=")]
    starts += [o.partition("=")[2] for o in swept.get("init_from", [])]
    if starts and searching:
        raise ConfigError(
            "init_from and hparams_search: a search changes the architecture that the weights "
            "fix; fine-tune with a grid instead (-m optimizer.learning_rate=0.0001,0.0003)."
        )
    if multirun and (alias := next((s for s in starts if "@" in s), None)):
        raise ConfigError(
            f"init_from={alias}: in a sweep, give the version (models:/name/3), not an alias, "
            "which a job of the sweep could move while it runs."
        )
    knobs = [value for key, values in swept.items() if not is_group(key) for value in values]
    for combination in product(*(values for key, values in swept.items() if is_group(key))):
        for knob in [None, *knobs]:
            validate(compose_config([*fixed, *combination, *([knob] if knob else [])])[0])


def is_group(key: str) -> bool:
    """Whether an override's key selects a config group option (model=...) rather than a value."""
    return (CONF_DIR / key).is_dir() or "/" in key


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


def claim_dir(directory: Path) -> Path:
    """`directory`, or `directory-2`, `-3`, ...: the first that does not exist yet, created now.
    mkdir is atomic, so two runs never get the same one."""
    for attempt in range(1, 1000):
        candidate = (
            directory if attempt == 1 else directory.with_name(f"{directory.name}-{attempt}")
        )
        try:
            candidate.mkdir(parents=True)
            return candidate
        except FileExistsError:
            continue
    raise ConfigError(f"hydra.run.dir={directory}: 999 runs already use it; choose another.")


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
