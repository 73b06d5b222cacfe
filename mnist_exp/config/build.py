"""Objects from `_target_` configs: check a node's knobs against its builder, then build it."""

import importlib
import inspect
import re
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mnist_exp.errors import ConfigError, MnistExpError

# What the runner passes to a group's builders, those of them a builder takes; a config must not
# set these. `build` holds the runner to exactly these. The builders of the groups in REQUIRED
# must take all of theirs.
SUPPLIED = {
    "dataset": ("split",),
    "evaluate": ("split",),  # evaluate.extra's sets: dataset builders, given no split
    "split": ("labels",),
    "model": ("input_shape", "num_classes"),
    "optimizer": ("schedule",),  # the learning rate over training, from the optimizer's rate
    "schedule": ("learning_rate", "epochs", "steps_per_epoch"),
    "callbacks": ("work_dir",),
}
REQUIRED = ("dataset", "split", "model", "optimizer")


# Builder modules of earlier versions, and where they are now.
MOVED = {
    "mnist_exp.models": "mnist_exp.groups.model",
    "mnist_exp.schedules": "mnist_exp.groups.schedule",
    "mnist_exp.splits": "mnist_exp.groups.split",
    "mnist_exp.augment": "mnist_exp.groups.augment",
    "mnist_exp.callbacks": "mnist_exp.groups.callbacks",
}


def target_of(key: str, target: Any) -> Any:
    """Import the callable `key._target_` names (`package.module.name`); a ConfigError if not."""
    if not isinstance(target, str) or "." not in target:
        raise ConfigError(f"{key}._target_={target!r} is not allowed: name a module.function.")
    module_name, _, name = target.rpartition(".")
    problem = f"{key}._target_={target} cannot be imported"
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        module = None
        problem = f"{problem} ({error}); is its module on PYTHONPATH?"
    if module is not None and hasattr(module, name):
        return getattr(module, name)
    if module_name in MOVED:
        problem = f"{key}._target_={target} has moved: use {MOVED[module_name]}.{name}."
    elif module is not None:
        problem = f"{problem}: module {module_name} has no {name}."
    raise ConfigError(problem)


def annotations(target: Any) -> dict[str, Any]:
    """Each parameter's annotation, resolved one by one: a name that only type checkers import
    (a return type, say) leaves the others checked. A class is described by its __init__."""
    function = target.__init__ if inspect.isclass(target) else target
    hints = {}
    for name, parameter in inspect.signature(target).parameters.items():
        hint = parameter.annotation
        if isinstance(hint, str):  # `from __future__ import annotations`
            try:
                hint = eval(hint, getattr(function, "__globals__", {}))
            except Exception:
                continue
        if hint is not parameter.empty:
            hints[name] = hint
    return hints


def plain_values(node: Mapping[str, Any]) -> dict[str, Any]:
    """A node as plain values: a DictConfig resolved, a validated config's dict as it is."""
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def returned_type(key: str, node: Mapping[str, Any]) -> str:
    """The name of the type a node's builder is annotated to return (`ReduceLROnPlateau`,
    `float`); a class builds itself."""
    target = target_of(key, node["_target_"])
    if inspect.isclass(target):
        return target.__name__
    annotation = inspect.signature(target).return_annotation
    name = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    return name.strip("'\"").rpartition(".")[2]


def check(key: str, node: Mapping[str, Any]) -> None:
    """Check a node's knobs against its builder's signature: names, types and the ranges its
    annotations declare, strictly ("3" is not 3: the builder gets the values as they are)."""
    import pydantic

    target = target_of(key, node["_target_"])
    knobs = {name: value for name, value in plain_values(node).items() if not name.startswith("_")}
    parameters = inspect.signature(target).parameters
    open_ended = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    supplied = SUPPLIED.get(key.split(".")[0], ())
    if given := sorted(set(knobs) & set(supplied)):
        raise ConfigError(f"{key}.{given[0]} is set by the runner; remove it.")
    missing = [name for name in supplied if name not in parameters]
    if key in REQUIRED and not open_ended and missing:
        raise ConfigError(f"{key}: {node['_target_']} must take {' and '.join(missing)} arguments.")
    hints = annotations(target)
    fields = {
        name: (hints.get(name, Any), ... if p.default is p.empty else p.default)
        for name, p in parameters.items()
        if name not in supplied and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }
    schema = pydantic.create_model(
        node["_target_"],
        __config__=pydantic.ConfigDict(
            strict=True, extra="allow" if open_ended else "forbid", arbitrary_types_allowed=True
        ),
        **fields,
    )
    try:
        schema.model_validate(knobs)
    except pydantic.ValidationError as error:
        first = error.errors()[0]
        message = explain(
            key, node["_target_"], list(fields), first, knob_path(knobs, first["loc"])
        )
        raise ConfigError(message) from None


def knob_path(knobs: dict[str, Any], loc: tuple) -> str:
    """The knob pydantic's `loc` points at, as a config key (`units.1`): the names of a union's
    member types that pydantic puts in `loc` (`constrained-int`) are not keys, so left out."""
    value, parts = knobs, []
    for part in loc:
        inside = dict(enumerate(value)) if isinstance(value, list) else value
        if isinstance(inside, dict) and part in inside:
            value = inside[part]
            parts.append(str(part))
    return ".".join(parts) or str(loc[0])


def explain(key: str, target: str, knobs: list[str], error: dict, where: str) -> str:
    """One line for pydantic's first complaint about the knob at `where`, naming it, the builder
    and the fix."""
    name = str(error["loc"][0])
    if error["type"] == "extra_forbidden":
        takes = ", ".join(knobs) or "no knobs"
        return f"{key}.{name} is not an argument of {target} (it takes {takes}); fix the name."
    if error["type"] == "missing":
        return f"{key}.{name} is missing: {target} needs it; add it to the {key} config."
    reason = error["msg"].removeprefix("Value error, ").lower()
    return f"{key}.{where}={error['input']!r} is not allowed: {reason} ({target})."


def build(key: str, node: Mapping[str, Any], **supplied: Any) -> Any:
    """Call the node's `_target_` with its knobs and those of `supplied` it takes. What a config
    can get wrong (a name that does not import, knobs that do not fit together or the data) is
    a ConfigError; data a builder refuses, its DataError."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    parameters = inspect.signature(target_of(key, node["_target_"])).parameters
    promised = set(SUPPLIED.get(key.split(".")[0], ()))
    assert promised == set(supplied), f"the runner must pass {sorted(promised)} to {key}"
    if not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        supplied = {name: value for name, value in supplied.items() if name in parameters}
    try:
        # Untyped, so that a supplied object (a function, an array) is passed as it is.
        return instantiate(OmegaConf.create(plain_values(node)), **supplied, _convert_="all")
    except InstantiationException as error:
        cause = error.__cause__
        if isinstance(cause, MnistExpError):  # a config or data mistake, already one line
            raise cause from None
        if not isinstance(cause, ValueError):
            raise
        # Keras' messages carry colour codes and a dump of the call's arguments: keep the gist.
        reason = re.sub(r"\x1b\[[0-9;]*m", "", str(cause)).split("Arguments received by")[0]
        reason = " ".join(reason.split())[:300]
        raise ConfigError(
            f"{key}: {node['_target_']} cannot be built with these knobs ({reason}); change them."
        ) from None
