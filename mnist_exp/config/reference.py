"""The config reference: every conf group's options with their header comments and knobs, as
Markdown for the docs site (docs/hooks.py puts it on docs/reference/config.md)."""

from pathlib import Path

import yaml

from mnist_exp.config.compose import CONF_DIR
from mnist_exp.config.describe import included, yaml_comments, yaml_paths
from mnist_exp.config.options import group_defaults


def reference(conf_dir: Path = CONF_DIR) -> str:
    """Markdown for `conf_dir`: config.yaml's run knobs, then each group's options in order."""
    main = (conf_dir / "config.yaml").read_text()
    defaults = group_defaults(main)
    order = list(defaults)  # the defaults list's order, then the groups it does not name
    groups = sorted({str(p.parent.relative_to(conf_dir)) for p in conf_dir.rglob("*.yaml")} - {"."})
    groups.sort(key=lambda group: order.index(group) if group in order else len(order))
    parts = ["## Run knobs", "`mnist_exp/conf/config.yaml`", header(main), knob_table(main, "")]
    for group in groups:
        default, package = defaults.get(group, (None, None))
        parts.append(f"## `{group}`")
        for path in sorted((conf_dir / group).glob("*.yaml")):
            text = path.read_text()
            package_of_file = package or group.replace("/", ".")
            prefix = "" if "@package _global_" in text else f"{package_of_file}."
            mark = " (default)" if path.stem == default else ""
            # Knobs a file takes from conf/ (`/averaging@_here_`) are listed as its own.
            shared = [
                (conf_dir / f"{name[1:]}.yaml").read_text()
                for name in included(text)
                if name[0] == "/"
            ]
            parts += [
                f"### `{group}={path.stem}`{mark}",
                f"`{path.relative_to(conf_dir.parent.parent)}`",
                header(text),
                defaults_line(text),
                knob_table("\n".join([text, *shared]), prefix),
            ]
    return "\n\n".join(part for part in parts if part) + "\n"


def header(text: str) -> str:
    """The comment lines a file opens with, line by line (`# @package` left out)."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        if not line.startswith("# @package"):
            lines.append(line.lstrip("#").strip())
    return cell("  \n".join(lines))


def defaults_line(text: str) -> str:
    """What an option's own defaults list pulls in (its schema and the files from conf/ whose
    knobs its table lists left out)."""
    entries = (yaml.safe_load(text) or {}).get("defaults", [])
    picks = [
        f"`{entry}`" if isinstance(entry, str) else "`{}: {}`".format(*next(iter(entry.items())))
        for entry in entries
        if entry != "_self_" and not (isinstance(entry, str) and entry.startswith("/"))
    ]
    return f"Defaults list: {', '.join(picks)}." if picks else ""


def knob_table(text: str, prefix: str) -> str:
    """One row per key that has a value or a comment: its dotted path, value and comment."""
    comments = yaml_comments(text, prefix)
    rows = []
    for path, line in yaml_paths(text):
        if path is None or path == "defaults":
            continue
        value = line.split(":", 1)[1].split(" # ", 1)[0].strip()
        comment = comments.get(prefix + path, "")
        if value or comment:
            shown = f"`{value}`" if value else ""
            rows.append(f"| `{prefix}{path}` | {shown} | {cell(comment)} |")
    if not rows:
        return ""
    return "\n".join(["| knob | value | what it does |", "| --- | --- | --- |", *rows])


def cell(text: str) -> str:
    """Text safe in a Markdown table: no bare `|`, no `<word>` read as an HTML tag."""
    return text.replace("|", "\\|").replace("<", "&lt;")
