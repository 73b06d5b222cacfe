"""Objects from `_target_` configs: check a node's knobs against its builder, then build it."""

import inspect
import re
import typing
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mnist_exp.errors import ConfigError

# What the runner passes to a group's builder itself; a config must not set these.
SUPPLIED = {"model": ("input_shape", "num_classes")}


def target_of(key: str, node: DictConfig) -> Any:
    """Import the callable a node names with `_target_`; a ConfigError if it cannot be."""
    from hydra.utils import get_object

    target = node.get("_target_")
    if not isinstance(target, str):
        raise ConfigError(f"{key} has no _target_: name the function or class that builds it.")
    try:
        return get_object(target)
    except Exception as error:
        cause = error.__cause__ or error
        raise ConfigError(
            f"{key}._target_={target} cannot be imported ({str(cause).splitlines()[0]}); "
            "check the name, and that its module is on PYTHONPATH."
        ) from None


def check(key: str, node: DictConfig) -> None:
    """Check a node's knobs against its builder's signature: names, types and the ranges its
    annotations declare, strictly ("3" is not 3: the builder gets the values as they are)."""
    import pydantic

    target = target_of(key, node)
    knobs = {
        name: value
        for name, value in OmegaConf.to_container(node, resolve=True).items()
        if not name.startswith("_")
    }
    supplied = SUPPLIED.get(key, ())
    if given := sorted(set(knobs) & set(supplied)):
        raise ConfigError(f"{key}.{given[0]} is set by the runner from the data; remove it.")
    signature = inspect.signature(target)
    try:
        hints = typing.get_type_hints(target, include_extras=True)
    except Exception:  # one name does not resolve (e.g. a return type imported for type checkers)
        hints = {
            name: hint
            for name, parameter in signature.parameters.items()
            if not isinstance(hint := parameter.annotation, str) and hint is not parameter.empty
        }
    fields, open_ended = {}, False
    for name, parameter in signature.parameters.items():
        if parameter.kind is parameter.VAR_KEYWORD:
            open_ended = True
        elif name not in supplied and parameter.kind is not parameter.VAR_POSITIONAL:
            default = ... if parameter.default is parameter.empty else parameter.default
            fields[name] = (hints.get(name, Any), default)
    schema = pydantic.create_model(
        node._target_,
        __config__=pydantic.ConfigDict(
            strict=True, extra="allow" if open_ended else "forbid", arbitrary_types_allowed=True
        ),
        **fields,
    )
    try:
        schema.model_validate(knobs)
    except pydantic.ValidationError as error:
        raise ConfigError(explain(key, node._target_, signature, error.errors()[0])) from None


def explain(key: str, target: str, signature: inspect.Signature, error: dict) -> str:
    """One line for pydantic's first complaint, naming the knob, the builder and the fix."""
    name = str(error["loc"][0])
    where = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"{key}.{name} is not an argument of {target}{signature}; remove it or rename it."
    if error["type"] == "missing":
        return f"{key}.{name} is missing: {target} needs it; add it to the {key} config."
    return f"{key}.{where}={error['input']!r} is not allowed: {error['msg'].lower()} ({target})."


def build(key: str, node: DictConfig, **supplied: Any) -> Any:
    """Call the node's `_target_` with its knobs and `supplied`; a builder's ValueError (knobs that
    do not fit together or the data) becomes a one-line ConfigError."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(node, **supplied, _convert_="all")
    except InstantiationException as error:
        cause = error.__cause__
        if not isinstance(cause, ValueError):
            raise
        # Keras' messages carry colour codes and a dump of the call's arguments: keep the gist.
        reason = re.sub(r"\x1b\[[0-9;]*m", "", str(cause)).split("Arguments received by")[0]
        reason = " ".join(reason.split())[:300]
        raise ConfigError(
            f"{key}: {node._target_} cannot build a model of these knobs ({reason}); change them."
            if key == "model"
            else f"{key}: {node._target_} cannot be built ({reason}); change its knobs."
        ) from None
