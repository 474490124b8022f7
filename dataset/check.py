"""Validate a prepared dataset and print a report.

    python -m dataset.check --dataset coco [--data-dir DIR] [--allow-empty-labels] [--no-images] [--quick]
                            [--workers N]

Checks, in order: the three files exist and agree in length, labels are a 0/1 matrix, no item is
without a label (unless allowed), every image exists and decodes. The first kind of problem found
ends the check with exit code 2 and a message saying how many items have it, with examples.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from dataset.catalog import resolve_dataset
from dataset.mat import PairTable, load_pair_table
from dataset.raw_common import default_workers, image_problems
from utils.config import OneLineParser
from utils.errors import UserError

EXAMPLES = 3


def _examples(table: PairTable, rows: np.ndarray) -> str:
    shown = ", ".join(f"row {r} ({table.paths[r]})" for r in rows[:EXAMPLES])
    return shown + (", ..." if len(rows) > EXAMPLES else "")


def check_labels(table: PairTable, allow_empty: bool) -> None:
    empty = np.flatnonzero(table.labels.sum(axis=1) == 0)
    if len(empty) and not allow_empty:
        raise UserError(f"{len(empty)} of {len(table)} items have an empty label row: {_examples(table, empty)} "
                        "(regenerate the data, or pass --allow-empty-labels if this is intended)")


def check_images(table: PairTable, mode: str, workers: int = 1) -> None:
    problems: dict[str, list[int]] = {}
    for row, problem in enumerate(image_problems(table.paths, mode, workers)):
        if problem:
            problems.setdefault(problem, []).append(row)
    for problem in ("missing image", "unreadable image"):
        rows = np.array(problems.get(problem, []))
        if len(rows):
            fix = ("wrong --data-dir or --data-root, or an incomplete download" if problem == "missing image"
                   else "truncated or corrupt files; re-download them")
            raise UserError(f"{len(rows)} of {len(table)} items have a {problem}: {_examples(table, rows)} ({fix})")


def report(table: PairTable, name: str, standard: int) -> str:
    labels = table.labels
    freq = labels.sum(axis=0).astype(int)
    names = table.class_names or [str(i) for i in range(labels.shape[1])]
    per_item = np.array([len(c) for c in table.captions])
    words = np.array([len(c.split()) for caps in table.captions for c in caps])
    empty_captions = sum(1 for caps in table.captions if not any(c.strip() for c in caps))
    order = np.argsort(-freq, kind="stable")
    lines = [f"{name}: {len(table)} items (standard: {standard}), {labels.shape[1]} classes",
             f"  labels per item: mean {labels.sum(1).mean():.2f}, max {int(labels.sum(1).max())}; "
             f"empty label rows: {int((labels.sum(1) == 0).sum())}",
             "  class frequencies: " + ", ".join(f"{names[i]} {freq[i]}" for i in order),
             f"  captions per item: min {per_item.min()}, mean {per_item.mean():.2f}, max {per_item.max()}; "
             f"words per caption: mean {words.mean():.1f}, max {words.max()}; items without text: {empty_captions}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m dataset.check", description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", required=True, help="coco, flickr25k, nuswide or demo")
    parser.add_argument("--data-dir", default=None, help="folder of the three files (default dataset/<name>)")
    parser.add_argument("--data-root", default=None, help="rewrite absolute image paths (see main.py --help)")
    parser.add_argument("--allow-empty-labels", action="store_true", help="accept items without any label")
    parser.add_argument("--no-images", action="store_true", help="skip the image check")
    parser.add_argument("--quick", action="store_true",
                        help="check image headers only instead of decoding every image (fast, misses truncated files)")
    parser.add_argument("--workers", type=int, default=default_workers(),
                        help="processes decoding images (default: the CPU cores available)")
    args = parser.parse_args(argv)
    try:
        info = resolve_dataset(args.dataset)
        table = load_pair_table(Path(args.data_dir or info.default_dir), data_root=args.data_root)
        table.class_names = table.class_names or info.names_for(table.labels)
        check_labels(table, args.allow_empty_labels)
        print(report(table, info.name, info.num_pairs))
        if not args.no_images:
            check_images(table, "header" if args.quick else "full", args.workers)
            print(f"  images: all {len(table)} readable")
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
