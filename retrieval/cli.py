"""What the retrieval commands share: model options, loading a Hamming model, one-line errors."""
from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

import torch

from train.inference import load_trained
from utils.errors import UserError


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """--device, --batch-size, --no-progress."""
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: auto)")
    parser.add_argument("--batch-size", type=positive_int, default=None,
                        help="items encoded at once (default: the run's --eval-batch-size)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="show progress bars")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def resolve_device(name: str) -> str:
    """`auto` -> cuda when available, else cpu."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def load_hamming_model(path: str, device: str) -> Any:
    """`train.inference.load_trained`, refusing a method whose codes are not ranked by Hamming distance."""
    model = load_trained(path, resolve_device(device))
    if model.distance is not None:
        raise UserError(f"{model.method} ranks its codes with its own distance, not the Hamming distance; "
                        "retrieval (FAISS binary indexes) supports Hamming codes only")
    return model


def run_command(body: Callable[[], int]) -> int:
    """Run a command's body; a UserError becomes one `error: ...` line on stderr and exit code 2."""
    try:
        return body()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
