"""A conf group's options as the files in conf/ name them, the default first: `--help` lists
them (`${options:model}` in conf/config.yaml's help template), so a new option file is listed
without another edit."""

from pathlib import Path

import yaml


def group_defaults(text: str) -> dict[str, tuple[str | None, str | None]]:
    """{group: (default option, package)} from a defaults list: `split: holdout` -> holdout."""
    found = {}
    for entry in yaml.safe_load(text).get("defaults", []):
        if isinstance(entry, dict):
            ((key, option),) = entry.items()
            group, _, package = key.removeprefix("optional ").partition("@")
            found[group] = (option, package or None)
    return found


def group_options(conf_dir: Path, group: str) -> list[str]:
    """The option files of `conf_dir/group`: the default of config.yaml's defaults list first,
    then the others by name."""
    default, _ = group_defaults((conf_dir / "config.yaml").read_text()).get(group, (None, None))
    names = sorted(path.stem for path in (conf_dir / group).glob("*.yaml"))
    return sorted(names, key=lambda name: name != default)
