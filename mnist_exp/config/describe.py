"""`--cfg job`: the composed config as YAML, each knob with the comment of the file that set it."""

import re
from collections.abc import Sequence
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from mnist_exp.config.compose import compose_config, group_choices


def describe(overrides: Sequence[str], resolve: bool = False) -> str:
    """`--cfg job`: the composed config as YAML, each knob with its config file's comment."""
    cfg, hydra = compose_config(overrides)
    sources = [Path(s.path) for s in hydra.runtime.config_sources if s.schema == "file"]

    def read(name: str) -> str | None:
        path = next((s / f"{name}.yaml" for s in sources if (s / f"{name}.yaml").is_file()), None)
        return None if path is None else path.read_text()

    texts = [("", read("config"))]
    for group, options in group_choices(hydra):
        for option in options.split(","):
            for text in group_texts(group, option, read):
                texts.append(("", text) if "@package _global_" in text else (group, text))
    comments: dict[str, str] = {}
    # Global files (experiment=...) override the groups' values, so their comments win too.
    for package, text in sorted(texts, key=lambda item: "@package _global_" in item[1]):
        comments.update(yaml_comments(text, f"{package}." if package else ""))
    lines = []
    for path, line in yaml_paths(OmegaConf.to_yaml(cfg, resolve=resolve)):
        lines.append(f"{line:<40}  # {comments[path]}" if path in comments else line)
    return "\n".join(lines) + "\n"


def group_texts(group: str, option: str, read) -> list[str]:
    """The text of a group's option file and of the files its defaults list pulls in under its
    package (`callbacks/default` -> checkpoint, early_stopping; `/averaging@_here_`)."""
    text = read(option[1:] if option.startswith("/") else f"{group}/{option}")
    if text is None:
        return []
    return [text] + [t for entry in included(text) for t in group_texts(group, entry, read)]


def included(text: str) -> list[str]:
    """The files a config's defaults list merges into its own package: other options of its
    group (`checkpoint`) and files named from conf/ with `@_here_` (`/averaging`)."""
    found = []
    for entry in (yaml.safe_load(text) or {}).get("defaults", []):
        if isinstance(entry, str) and entry != "_self_":
            name, _, package = entry.partition("@")
            if not package or (package == "_here_" and name.startswith("/")):
                found.append(name)
    return found


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
