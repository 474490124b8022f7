"""Configuration: dataclasses are the single source of defaults; flags and YAML files are derived from them.

Precedence (lowest first): the dataclass field default, the class's `dataset_defaults[<dataset>]`
(merged along the class hierarchy, so a method inherits the base's demo defaults and may
override them), a `--config file.yaml`, and explicit command-line flags.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import yaml

from utils.errors import UserError
from utils.text_files import read_utf8


def option(default: Any, help: str, choices: tuple | None = None, aliases: tuple[str, ...] = ()) -> Any:
    """A config field with its help text (shown by `--help`), optional choices and extra flag names."""
    meta = {"help": help, "choices": choices, "aliases": aliases}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ConfigBase:
    """Root of all config classes: per-dataset defaults and YAML / flag conversion."""

    dataset_defaults: ClassVar[dict[str, dict[str, Any]]] = {}

    @classmethod
    def defaults_for(cls, dataset: str) -> dict[str, Any]:
        """Field values that differ from the field defaults on `dataset`, merged from base to subclass."""
        merged: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):
            merged.update(vars(klass).get("dataset_defaults", {}).get(dataset, {}))
        unknown = set(merged) - {f.name for f in fields(cls)}
        if unknown:
            raise TypeError(f"{cls.__name__}.dataset_defaults names unknown fields {sorted(unknown)}")
        return merged

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def field_types(cls: type) -> dict[str, Any]:
    """Resolved type annotations of a config dataclass (each base class in its own module's namespace)."""
    return typing.get_type_hints(cls)


def _base_type(annotation: Any) -> tuple[type, bool]:
    """(scalar type, optional?) of an annotation such as `int`, `float | None`, `str`."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"unsupported config annotation {annotation}")
        return _base_type(args[0])[0], True
    return annotation, False


def coerce(name: str, value: Any, annotation: Any) -> Any:
    """`value` converted to the field's type; UserError naming the field on a mismatch."""
    kind, optional = _base_type(annotation)
    if value is None:
        if optional:
            return None
        raise UserError(f"config value {name}: null is not allowed (expected {kind.__name__})")
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise UserError(f"config value {name}: expected true/false, got {value!r}")
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    if kind in (int, float) and isinstance(value, str):
        try:
            return kind(value)
        except ValueError:
            pass
    raise UserError(f"config value {name}: expected {kind.__name__}, got {value!r}")


def read_yaml_config(path: str, cls: type) -> dict[str, Any]:
    """Values of a YAML config file (keys in snake_case or kebab-case), checked against the fields of `cls`."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        content = yaml.safe_load(read_utf8(file, "config file")) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(content, dict):
        raise UserError(f"config file {path} must be a mapping of option names to values")
    hints = field_types(cls)
    values = {}
    for key, value in content.items():
        name = str(key).replace("-", "_")
        if name not in hints:
            raise UserError(f"config file {path}: unknown option {key!r} for {cls.__name__} "
                            f"(python main.py --method NAME --help lists the options)")
        values[name] = coerce(name, value, hints[name])
    return values


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports errors on one line and exits with code 2."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, defaults: dict[str, Any]) -> None:
    """One `--kebab-case` flag per field of `cls`, showing the effective default for the chosen dataset."""
    hints = field_types(cls)
    for f in fields(cls):
        kind, _ = _base_type(hints[f.name])
        default = defaults.get(f.name, f.default if f.default is not MISSING else f.default_factory())
        meta = f.metadata
        names = [f"--{f.name.replace('_', '-')}", *meta.get("aliases", ())]
        shown = f"{meta.get('help', '')} (default: {default})"
        if kind is bool:
            parser.add_argument(*names, dest=f.name, action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=shown)
        else:
            parser.add_argument(*names, dest=f.name, type=_flag_type(f.name, hints[f.name]),
                                choices=meta.get("choices"), default=argparse.SUPPRESS, metavar=_metavar(kind),
                                help=shown)


def _flag_type(name: str, annotation: Any):
    def convert(text: str) -> Any:
        if text.lower() in ("none", "null"):
            return coerce(name, None, annotation)
        try:
            return coerce(name, text, annotation)
        except UserError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = _base_type(annotation)[0].__name__
    return convert


def _metavar(kind: type) -> str:
    return {int: "N", float: "X", str: "STR"}.get(kind, "VALUE")


def build_config(cls: type, dataset: str, yaml_values: dict[str, Any], flag_values: dict[str, Any]) -> Any:
    """The resolved config: field defaults < dataset defaults < YAML < flags."""
    values = {**cls.defaults_for(dataset), **yaml_values, **flag_values}
    return cls(**values)


def write_yaml_config(config: Any, path: Path) -> None:
    """The resolved config as YAML, loadable again with `--config`."""
    path.write_text(yaml.safe_dump(dataclasses.asdict(config), sort_keys=False))
