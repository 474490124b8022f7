"""Train or evaluate one cross-modal hashing method.

    python main.py                                   # the demo: DSPH on built-in synthetic data, tiny backbone
    python main.py --method DSPH --dataset coco --output-dim 64
    python main.py --method DSPH --help              # DSPH's options and defaults
    python main.py --method DSPH --dataset coco --test --pretrained result/.../best.pt
"""
from __future__ import annotations

import argparse
import sys

from dataset.catalog import resolve_dataset
from train.registry import available_methods, load_method
from utils.config import OneLineParser, add_config_arguments, build_config, read_yaml_config
from utils.errors import UserError

DEMO_METHOD = "DSPH"
# Flags of the reference repos that need no value here (training is the default).
IGNORED_FLAGS = ("--is-train",)


def _selector_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python main.py", add_help=False)
    parser.add_argument("--method", default=DEMO_METHOD)
    parser.add_argument("--dataset", default="demo")
    parser.add_argument("--config", default=None)
    parser.add_argument("-h", "--help", action="store_true")
    return parser


def parse_config(argv: list[str]):
    """(trainer class, resolved config) from the command line; `--help` prints the method's options and exits."""
    argv = [a for a in argv if a not in IGNORED_FLAGS]
    selected, _ = _selector_parser().parse_known_args(argv)
    trainer_cls = load_method(selected.method)
    dataset = resolve_dataset(selected.dataset).name
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
    yaml_path = flags.pop("config")
    yaml_values = read_yaml_config(yaml_path, config_cls) if yaml_path else {}
    flags["dataset"] = dataset
    return trainer_cls, build_config(config_cls, dataset, yaml_values, flags)


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
