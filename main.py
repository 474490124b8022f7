"""Train or evaluate one cross-modal hashing method.

    python main.py                                   # the demo: DSPH on built-in synthetic data, tiny backbone
    python main.py --method DSPH --dataset coco --output-dim 64
    python main.py --method DSPH --help              # DSPH's options and defaults
    python main.py --method DSPH --dataset coco --test --pretrained result/.../best.pt
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from dataset.catalog import resolve_dataset
from train.registry import available_methods, canonical_name, load_method
from utils.config import (
    METHOD_KEY,
    OneLineParser,
    add_config_arguments,
    build_config,
    check_applicable,
    load_yaml_mapping,
    read_yaml_config,
)
from utils.errors import UserError

DEMO_METHOD = "DSPH"
# Flags of the reference repos that need no value here (training is the default).
IGNORED_FLAGS = ("--is-train",)


def _selector_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python main.py", add_help=False)
    parser.add_argument("--method", default=None)
    parser.add_argument("--dataset", default=None)
    parser.add_argument("--config", default=None)
    parser.add_argument("--resume", default=None)
    parser.add_argument("--save-dir", default=None)
    parser.add_argument("-h", "--help", action="store_true")
    return parser


def resumed_folder(resume: str) -> Path:
    """The run folder `--resume` names (a folder, or the folder of a last.pt)."""
    path = Path(resume)
    if path.is_dir():
        return path
    if path.is_file():
        return path.parent
    raise UserError(f"--resume {resume}: no such run folder or last.pt")


def parse_config(argv: list[str]):
    """(trainer class, resolved config) from the command line; `--help` prints the method's options and exits.

    The method and the dataset come from `--method` / `--dataset`, else from the `--config` file (a run's
    config.yaml names both), else the demo. `--resume DIR` alone continues that run: its config.yaml is the
    config file and DIR the run folder, unless `--config` / `--save-dir` say otherwise.
    """
    argv = [a for a in argv if a not in IGNORED_FLAGS]
    selected, _ = _selector_parser().parse_known_args(argv)
    yaml_path = selected.config
    if selected.resume and not yaml_path and not selected.help:
        folder_config = resumed_folder(selected.resume) / "config.yaml"
        yaml_path = str(folder_config) if folder_config.is_file() else None
    content = load_yaml_mapping(yaml_path) if yaml_path else {}
    yaml_method = content.get(METHOD_KEY)
    if selected.method and yaml_method and canonical_name(selected.method) != canonical_name(str(yaml_method)):
        raise UserError(f"{yaml_path} is a config of {yaml_method}, not {selected.method}; drop --method or "
                        f"use a config of {selected.method}")
    trainer_cls = load_method(selected.method or yaml_method or DEMO_METHOD)
    yaml_dataset = content.get("dataset")
    dataset = resolve_dataset(selected.dataset or (str(yaml_dataset) if yaml_dataset else "demo")).name
    config_cls = trainer_cls.Config
    parser = OneLineParser(
        prog="python main.py",
        description=f"{trainer_cls.name}: {trainer_cls.paper}\nDefaults shown are those for --dataset {dataset}.",
        epilog=f"methods: {', '.join(available_methods())}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--method", default=DEMO_METHOD, help=f"method to run (default: {DEMO_METHOD})")
    parser.add_argument("--config", help="YAML file of option values (command-line flags win)")
    add_config_arguments(parser, config_cls, config_cls.defaults_for(dataset))
    flags = vars(parser.parse_args(argv))
    flags.pop("method")
    flags.pop("config")
    check_applicable(config_cls, flags, "command line")
    yaml_values = read_yaml_config(yaml_path, config_cls) if yaml_path else {}
    if yaml_path:
        check_applicable(config_cls, {k: v for k, v in yaml_values.items()
                                      if v != config_cls.defaults_for(dataset).get(k, _field_default(config_cls, k))},
                         yaml_path)
    flags["dataset"] = dataset
    if selected.resume and not selected.save_dir:
        flags["save_dir"] = str(resumed_folder(selected.resume))
    return trainer_cls, build_config(config_cls, dataset, yaml_values, flags)


def _field_default(cls: type, name: str):
    return next(f.default for f in dataclasses.fields(cls) if f.name == name)


def user_message(exc: BaseException) -> str:
    """The user-facing line of an error, also when a DataLoader worker re-raised it with its traceback."""
    text = str(exc).strip()
    lines = text.splitlines()
    if len(lines) > 1 and "Traceback" in text:
        text = lines[-1].split("UserError: ", 1)[-1]
    return text


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        trainer_cls, cfg = parse_config(argv)
        trainer_cls(cfg).run()
    except UserError as exc:
        print(f"error: {user_message(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; continue with --resume <run folder>", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
