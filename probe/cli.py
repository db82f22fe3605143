"""Recipe parsing shared by every command: dataclass defaults < YAML recipe < command line.

TRL's `TrlParser` already rejects unknown YAML keys; on top of it we check the *types* of
values that came from YAML (argparse converts only string defaults, so `n: 1.5` or
`seed: [1]` would otherwise slip through) and turn every failure into one `ConfigError`
that names the offending key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Sequence
from typing import Any, Literal, Union, get_args, get_origin

from trl import TrlParser


class ConfigError(ValueError):
    """A recipe or command line is wrong; the message names the key."""


def _type_ok(value: Any, annotation: Any) -> bool:
    if annotation is Any:
        return True
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        return any(_type_ok(value, arg) for arg in get_args(annotation))
    if origin is Literal:
        return value in get_args(annotation)
    if annotation is type(None):
        return value is None
    if origin in (list, tuple, Sequence):
        (item_type, *_) = get_args(annotation) or (Any,)
        return isinstance(value, (list, tuple)) and all(_type_ok(v, item_type) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(annotation, type):
        # Enums and other classes accept their own values (TRL/transformers enums are str-valued).
        return isinstance(value, annotation) or isinstance(value, str)
    return True


def _is_ours(cls: type) -> bool:
    return cls.__module__.split(".")[0] in ("probe", "train", "tests")


def check_types(config: Any) -> None:
    """Raise ConfigError naming the first field whose value does not match its annotation."""
    hints = typing.get_type_hints(type(config))
    # Only fields that leash declares: inherited TRL/transformers fields validate themselves.
    ours = {
        name for cls in type(config).__mro__ if _is_ours(cls) for name in vars(cls).get("__annotations__", {})
    }
    for field in dataclasses.fields(config):
        if not field.init or field.name not in hints or field.name not in ours:
            continue
        value = getattr(config, field.name)
        if not _type_ok(value, hints[field.name]):
            raise ConfigError(
                f"{type(config).__name__}.{field.name}: expected {hints[field.name]}, "
                f"got {value!r} ({type(value).__name__})"
            )


def parse(dataclass_types: tuple[type, ...], args: Sequence[str] | None = None) -> tuple[Any, ...]:
    """Parse `--config recipe.yaml` plus command-line overrides into instances of `dataclass_types`.

    Only our own dataclasses are type-checked; TRL/transformers configs validate themselves.
    """
    parser = TrlParser(dataclass_types)
    try:
        configs = parser.parse_args_and_config(args=list(args) if args is not None else None)
    except SystemExit as error:  # argparse already printed what was wrong
        raise ConfigError(f"invalid command line or recipe (argparse exit {error.code})") from None
    except ValueError as error:
        raise ConfigError(str(error)) from None
    for config in configs:
        check_types(config)
    return tuple(configs)
