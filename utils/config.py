"""Configuration: dataclasses are the single source of defaults; flags and YAML files are derived from them.

Precedence (lowest first): the dataclass field default (a subclass sets its own defaults for inherited fields
with `defaults = {...}`), the class's `dataset_defaults[<dataset>]` (merged along the class hierarchy, so a
method inherits the base's demo defaults and may override them), a `--config file.yaml`, and explicit
command-line flags. Values are checked when the config is built (`validate`).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import yaml

from utils.errors import UserError
from utils.text_files import read_utf8


def option(default: Any, help: str, choices: tuple | None = None, aliases: tuple[str, ...] = ()) -> Any:
    """A config field with its help text (shown by `--help`), optional choices and extra flag names.

    A `tuple[int, ...]` (or float / str) field is a comma list: `--short-bits 16,32,64` or a YAML list.
    """
    return field(default=default, metadata={"help": help, "choices": choices, "aliases": aliases})


def flag_name(name: str) -> str:
    """The command-line flag of a field: `output_dim` -> `--output-dim`."""
    return f"--{name.replace('_', '-')}"


@dataclass
class ConfigBase:
    """Root of all config classes: defaults per class and dataset, validation, YAML / flag conversion.

    `defaults`: this class's defaults for fields it inherits, e.g. `{"head_init": "kaiming"}` (instead of
    redeclaring the field). `inapplicable`: fields this class does not use, with the reason; their flags are
    hidden from `--help` and setting one is an error naming the reason.
    """

    defaults: ClassVar[dict[str, Any]] = {}
    dataset_defaults: ClassVar[dict[str, dict[str, Any]]] = {}
    inapplicable: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Turn the class's `defaults` into field defaults of its own (so `Config()` has them too)."""
        super().__init_subclass__(**kwargs)
        own = vars(cls).get("defaults", {})
        if not own:
            return
        inherited = {f.name: f for f in fields(cls)} if dataclasses.is_dataclass(cls) else {}
        annotations = dict(vars(cls).get("__annotations__", {}))
        for name, value in own.items():
            if name not in inherited:
                raise TypeError(f"{cls.__name__}.defaults names {name!r}, which is not an inherited option")
            annotations.setdefault(name, inherited[name].type)
            setattr(cls, name, field(default=value, metadata=inherited[name].metadata))
        cls.__annotations__ = annotations

    @classmethod
    def defaults_for(cls, dataset: str) -> dict[str, Any]:
        """The dataset's values that differ from the field defaults, merged from base to subclass."""
        merged: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):
            merged.update(vars(klass).get("dataset_defaults", {}).get(dataset, {}))
        unknown = set(merged) - {f.name for f in fields(cls)}
        if unknown:
            raise TypeError(f"{cls.__name__}.dataset_defaults names unknown fields {sorted(unknown)}")
        return merged

    @classmethod
    def inapplicable_fields(cls) -> dict[str, str]:
        """Fields unused by this class (merged along the hierarchy) -> why."""
        merged: dict[str, str] = {}
        for klass in reversed(cls.__mro__):
            merged.update(vars(klass).get("inapplicable", {}))
        return merged

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check the values; raise UserError naming the flag. Subclasses extend it (calling super)."""
        hints = field_types(type(self))
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise UserError(f"{flag_name(f.name)} {value}: expected a finite number")
            choices = f.metadata.get("choices")
            if choices and value is not None and value not in choices:
                raise UserError(f"{flag_name(f.name)} {value!r}: choose one of {', '.join(map(str, choices))}")
            if _is_tuple(hints[f.name]) and value is not None and not isinstance(value, tuple):
                object.__setattr__(self, f.name, coerce(f.name, value, hints[f.name]))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def require(condition: bool, name: str, value: Any, requirement: str) -> None:
    """UserError `--flag value: requirement` unless `condition` holds (for `validate` methods)."""
    if not condition:
        raise UserError(f"{flag_name(name)} {value}: {requirement}")


def field_types(cls: type) -> dict[str, Any]:
    """Resolved type annotations of a config dataclass (each base class in its own module's namespace)."""
    return typing.get_type_hints(cls)


def _base_type(annotation: Any) -> tuple[Any, bool]:
    """(type, optional?) of an annotation such as `int`, `float | None`, `str`, `tuple[int, ...]`."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"unsupported config annotation {annotation}")
        return _base_type(args[0])[0], True
    return annotation, False


def _is_tuple(annotation: Any) -> bool:
    return typing.get_origin(_base_type(annotation)[0]) is tuple


def _type_name(kind: Any) -> str:
    if typing.get_origin(kind) is tuple:
        return f"comma-separated {typing.get_args(kind)[0].__name__}s"
    return kind.__name__


def coerce(name: str, value: Any, annotation: Any) -> Any:
    """`value` converted to the field's type; UserError naming the field on a mismatch."""
    kind, optional = _base_type(annotation)
    if value is None:
        if optional:
            return None
        raise UserError(f"config value {name}: null is not allowed (expected {_type_name(kind)})")
    if typing.get_origin(kind) is tuple:
        item = typing.get_args(kind)[0]
        parts = [p.strip() for p in value.split(",") if p.strip()] if isinstance(value, str) else value
        if isinstance(parts, (int, float)) and not isinstance(parts, bool):
            parts = [parts]
        if not isinstance(parts, (list, tuple)):
            raise UserError(f"config value {name}: expected {_type_name(kind)}, got {value!r}")
        return tuple(coerce(name, part, item) for part in parts)
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


# written by the run folder beside the options: the method the config belongs to
METHOD_KEY = "method"


def load_yaml_mapping(path: str) -> dict[str, Any]:
    """The top-level mapping of a YAML config file (UserError for a missing, unreadable or malformed file)."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        content = yaml.safe_load(read_utf8(file, "config file")) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(content, dict):
        raise UserError(f"config file {path} must be a mapping of option names to values")
    return content


def read_yaml_config(path: str, cls: type) -> dict[str, Any]:
    """Values of a YAML config file (keys in snake_case or kebab-case), checked against the fields of `cls`.

    A top-level `method` key (written into every run's config.yaml) names the method and is not an option.
    """
    hints = field_types(cls)
    values = {}
    for key, value in load_yaml_mapping(path).items():
        name = str(key).replace("-", "_")
        if name == METHOD_KEY:
            continue
        if name not in hints:
            raise UserError(f"config file {path}: unknown option {key!r} for {cls.__name__} "
                            f"(python main.py --method NAME --help lists the options)")
        values[name] = coerce(name, value, hints[name])
    return values


def check_applicable(cls: type, values: dict[str, Any], source: str) -> None:
    """UserError if `values` (from flags or a YAML file) set a field that `cls` does not use."""
    unused = cls.inapplicable_fields()
    for name in values:
        if name in unused:
            raise UserError(f"{flag_name(name)} ({source}) has no effect here: {unused[name]}")


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports errors on one line and exits with code 2."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, defaults: dict[str, Any]) -> None:
    """One `--kebab-case` flag per field of `cls`, showing the effective default for the chosen dataset."""
    hints = field_types(cls)
    hidden = cls.inapplicable_fields()
    for f in fields(cls):
        kind, _ = _base_type(hints[f.name])
        default = defaults.get(f.name, f.default if f.default is not MISSING else f.default_factory())
        if isinstance(default, tuple):
            default = ",".join(map(str, default))
        meta = f.metadata
        names = [flag_name(f.name), *meta.get("aliases", ())]
        shown = argparse.SUPPRESS if f.name in hidden else f"{meta.get('help', '')} (default: {default})"
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

    convert.__name__ = _type_name(_base_type(annotation)[0])
    return convert


def _metavar(kind: Any) -> str:
    if typing.get_origin(kind) is tuple:
        return "A,B,..."
    return {int: "N", float: "X", str: "STR"}.get(kind, "VALUE")


def build_config(cls: type, dataset: str, yaml_values: dict[str, Any], flag_values: dict[str, Any]) -> Any:
    """The resolved config: field defaults < dataset defaults < YAML < flags."""
    values = {**cls.defaults_for(dataset), **yaml_values, **flag_values}
    return cls(**values)


def config_values(config: Any) -> dict[str, Any]:
    """The config as plain YAML-safe values (comma-list tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}


def write_yaml_config(config: Any, path: Path, method: str | None = None) -> None:
    """The resolved config as YAML (first the `method` key when given), loadable again with `--config`."""
    content = ({METHOD_KEY: method} if method else {}) | config_values(config)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(yaml.safe_dump(content, sort_keys=False, allow_unicode=True), encoding="utf-8")
    tmp.replace(path)
