"""What every command shares: recipe parsing and the exit convention.

Parsing: dataclass defaults < YAML recipe < command line, with TRL's `TrlParser` (the recipe's
values become its defaults through `set_defaults_with_config`; a key no dataclass has is refused). On
top of it we check the *types* of values that came from YAML (argparse converts only
string defaults, so `n: 1.5` or `seed: [1]` would otherwise slip through) and turn every failure
into one `ConfigError` that names the offending key.

Exit convention (`run_command`, used by every entry point: probe run/compare/plot/ppl, train,
train.build_base): bad input, an `InputError`, is one line on stderr naming it and exit status 2; a
failure mid-run is exit status 1 (`RunFailed`: one line; anything unexpected: its traceback).
"""

from __future__ import annotations

import dataclasses
import errno
import sys
import types
import typing
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from trl import TrlParser


class InputError(Exception):
    """Bad input (recipe, command line, model dir, probe dir): one line naming it, exit 2."""


class RunFailed(Exception):
    """The run started and failed in a way it names itself (e.g. a non-finite loss): one line, exit 1."""


class ConfigError(InputError, ValueError):
    """A recipe or command line is wrong; the message names the key."""


FULL_DISK = (errno.ENOSPC, errno.EDQUOT)


def run_command(prog: str, work: Callable[[], object]) -> int:
    """Run a command's work under the exit convention; returns the exit status (0 when it finished).

    A full disk (or quota) is a failure mid-run, said in one line: whatever the command finished is on
    disk, and rerunning it continues. Any other unexpected exception is not caught: it is a bug to see
    in full, and Python exits 1 on it.
    """
    try:
        work()
    except InputError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    except RunFailed as error:
        print(f"{prog}: failed: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        if error.errno not in FULL_DISK:
            raise
        where = f" ({error.filename})" if error.filename else ""
        print(
            f"{prog}: failed: {error.strerror}{where}; finished work is kept: free space and rerun the "
            "same command to continue",
            file=sys.stderr,
        )
        return 1
    return 0


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


def check_types(config: Any, name: str | None = None) -> None:
    """Raise ConfigError naming the first field whose value does not match its annotation, as
    `name.field` (default: the dataclass's name)."""
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
                f"{name or type(config).__name__}.{field.name}: expected {hints[field.name]}, "
                f"got {value!r} ({type(value).__name__})"
            )


class RecipeLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a mapping with a repeated key (PyYAML keeps the last value, so a
    recipe could say two things and mean the second without a word)."""


def _mapping_without_repeats(loader: RecipeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    first_line: dict = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            if key in first_line:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} (first at line {first_line[key] + 1})",
                    key_node.start_mark,
                )
        except TypeError:  # an unhashable key: construct_mapping names it
            break
        first_line[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


RecipeLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_repeats)


def read_recipe(path: str) -> dict:
    """A recipe's YAML mapping. ConfigError, one line, names a file that is missing, unreadable, not
    UTF-8, not YAML (where), holds a repeated key, or is not a mapping."""
    try:
        text = Path(path).read_text(encoding="utf-8")
        recipe = yaml.load(text, Loader=RecipeLoader)  # a SafeLoader: no Python objects from YAML
    except OSError as error:
        raise ConfigError(f"cannot read recipe {path}: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"recipe {path}: not UTF-8 text (byte {error.object[error.start]:#04x} at offset {error.start})"
        ) from None
    except yaml.YAMLError as error:
        raise ConfigError(f"recipe {path}: {_yaml_problem(error)}") from None
    if not isinstance(recipe, dict):
        raise ConfigError(f"recipe {path} must be a YAML mapping")
    return recipe


def _yaml_problem(error: yaml.YAMLError) -> str:
    """One line: what PyYAML found wrong and where (1-based line and column)."""
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    mark = getattr(error, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem


def parse(
    dataclass_types: tuple[type, ...],
    args: Sequence[str] | None = None,
    recipe_ignores: Iterable[str] = (),
) -> tuple[Any, ...]:
    """Parse `--config recipe.yaml` plus command-line overrides into instances of `dataclass_types`.

    `recipe_ignores` names recipe keys that belong to another command sharing the recipe (`probe ppl`
    reads a probe recipe's task section and skips its sampling section); they are dropped from the
    recipe only, never from the command line. Only our own dataclasses are type-checked;
    TRL/transformers configs validate themselves.
    """
    args = list(sys.argv[1:] if args is None else args)
    parser = TrlParser(dataclass_types)
    if "--config" in args:  # the recipe's values become the parser's defaults, as TrlParser does it
        at = args.index("--config")
        if at + 1 >= len(args):
            raise ConfigError("--config needs a recipe path")
        path, args = args[at + 1], args[:at] + args[at + 2 :]
        recipe = read_recipe(path)
        ignores = set(recipe_ignores)
        unknown = parser.set_defaults_with_config(**{k: v for k, v in recipe.items() if k not in ignores})
        if unknown:  # ["--key", "value", ...]
            raise ConfigError(f"recipe {path}: unknown key(s) {unknown[::2]}")
    try:
        configs = parser.parse_args_into_dataclasses(args=args)
    except SystemExit as error:  # argparse already printed what was wrong
        raise ConfigError(f"invalid command line or recipe (argparse exit {error.code})") from None
    except ValueError as error:
        raise ConfigError(str(error)) from None
    for config in configs:
        check_types(config)
    return tuple(configs)
