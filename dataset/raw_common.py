"""What the three dataset generators share: arguments, image checks, the run summary and the output."""
from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from PIL import Image
from tqdm import tqdm

from dataset.catalog import DatasetInfo
from dataset.mat import write_pair_table
from utils.config import OneLineParser
from utils.errors import UserError

VERIFY_MODES = ("none", "header", "full")
CHECK_CHUNK = 64  # images per task of the decoding processes
FAMILIES = ("category", "label")


def generator_parser(prog: str, description: str, info: DatasetInfo) -> argparse.ArgumentParser:
    """The options every generator has; each adds its own input options."""
    parser = OneLineParser(prog=prog, description=description)
    parser.add_argument("--save-dir", default=info.default_dir, help=f"output folder (default {info.default_dir})")
    parser.add_argument("--family", choices=FAMILIES, default="category",
                        help="on-disk family: category (DCHMT/QinLab files) or label (MITH/CMCL files)")
    parser.add_argument("--absolute-paths", action="store_true",
                        help="write absolute image paths (default: relative to --save-dir, so the data can move)")
    parser.add_argument("--verify", choices=VERIFY_MODES, default="full",
                        help="image check: full (decode every image, finds truncated files; the default), header "
                             "(open and verify the header only: fast, misses truncated files) or none")
    parser.add_argument("--workers", type=int, default=default_workers(),
                        help="processes decoding images for the check (default: the CPU cores available)")
    parser.add_argument("--strict", action="store_true",
                        help="stop at a missing or unreadable image instead of dropping the pair")
    return parser


def run_generator(main: Callable[[list[str] | None], None], argv: list[str] | None = None) -> int:
    """Run a generator's main; a UserError becomes one line on stderr and exit code 2."""
    try:
        main(argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def default_workers() -> int:
    """The CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def output_folder(path: str) -> Path:
    """`--save-dir` checked before any work: a folder, or a path where one can be created."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--save-dir {folder} is a file; pass a folder for the three .mat files")
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"--save-dir {folder} cannot be created: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"--save-dir {folder} cannot be written: no write permission in {existing}")
    return folder


def require_file(path: Path, what: str, fix: str) -> Path:
    if not path.is_file():
        raise UserError(f"{what} not found: {path} ({fix})")
    return path


def require_dir(path: Path, what: str, fix: str) -> Path:
    if not path.is_dir():
        raise UserError(f"{what} not found: {path} ({fix})")
    return path


def image_problem(path: str, mode: str) -> str | None:
    """Why the image at `path` cannot be used ("missing image", "unreadable image"), or None."""
    if not os.path.isfile(path):
        return "missing image"
    if mode == "none":
        return None
    try:
        with Image.open(path) as image:
            if mode == "full":
                image.load()
            else:
                image.verify()
    except Exception:
        return "unreadable image"
    return None


@dataclass
class Summary:
    """What a generator kept and dropped, and why; printed at the end of a run."""

    name: str
    standard_pairs: int
    dropped: Counter = field(default_factory=Counter)
    warnings: Counter = field(default_factory=Counter)

    def report(self, captions: Sequence[Sequence[str]], labels: np.ndarray, classes: Sequence[str],
               save_dir: Path) -> str:
        kept = len(captions)
        per_item = np.array([len(c) for c in captions]) if kept else np.zeros(1)
        words = np.array([len(c.split()) for caps in captions for c in caps]) if kept else np.zeros(1)
        freq = labels.sum(axis=0).astype(int) if kept else np.zeros(len(classes), int)
        lines = [f"{self.name}: kept {kept} pairs in {save_dir}"]
        if kept != self.standard_pairs:
            lines.append(f"  note: the standard {self.name} set has {self.standard_pairs} pairs; this download "
                         f"gives {kept} (expected for a partial download)")
        for reason, count in sorted(self.dropped.items()):
            lines.append(f"  dropped {count}: {reason}")
        for reason, count in sorted(self.warnings.items()):
            lines.append(f"  warning, {count} items: {reason}")
        lines.append(f"  classes: {len(classes)}; labels per pair: mean {labels.sum(1).mean() if kept else 0:.2f}")
        order = np.argsort(-freq)
        lines.append("  most frequent: " + ", ".join(f"{classes[i]} {freq[i]}" for i in order[:5]))
        lines.append("  least frequent: " + ", ".join(f"{classes[i]} {freq[i]}" for i in order[::-1][:5]))
        lines.append(f"  captions per pair: min {per_item.min()}, mean {per_item.mean():.2f}, max {per_item.max()}; "
                     f"words per caption: mean {words.mean():.1f}, max {words.max()}")
        return "\n".join(lines)


def image_problems(paths: Sequence[str], mode: str, workers: int = 1) -> list[str | None]:
    """:func:`image_problem` of every path, in order, with a progress bar; `workers` > 1 decodes in processes."""
    check = partial(image_problem, mode=mode)
    bar = partial(tqdm, desc="checking images" if mode == "none" else f"checking images ({mode})", unit="img",
                  total=len(paths), disable=None)
    if workers <= 1 or len(paths) < 4 * CHECK_CHUNK:
        return list(bar(map(check, paths)))
    methods = multiprocessing.get_all_start_methods()  # forkserver: children free of the parent's threads
    context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    with ProcessPoolExecutor(min(workers, len(paths) // CHECK_CHUNK), mp_context=context) as pool:
        return list(bar(pool.map(check, paths, chunksize=CHECK_CHUNK)))


def filter_images(paths: Sequence[str], mode: str, strict: bool, summary: Summary, workers: int = 1) -> np.ndarray:
    """Boolean mask of the usable images (progress bar); dropped ones are counted in the summary."""
    keep = np.ones(len(paths), dtype=bool)
    for i, (path, problem) in enumerate(zip(paths, image_problems(paths, mode, workers))):
        if problem:
            if strict:
                raise UserError(f"{problem}: {path} (fix the download, or drop --strict to skip such pairs)")
            summary.dropped[problem] += 1
            keep[i] = False
    return keep


def write_output(save_dir: Path, image_paths: Sequence[str], captions: Sequence[Sequence[str]], labels: np.ndarray,
                 class_names: Sequence[str], family: str, absolute: bool, category_layout: str, label_dtype) -> None:
    """Write the three files and classes.txt: category family with `category_layout` captions, label family with
    one caption each."""
    try:
        save_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create --save-dir {save_dir}: {exc.strerror}") from None
    base = save_dir.resolve()
    stored = [str(Path(p).resolve()) if absolute else os.path.relpath(Path(p).resolve(), base) for p in image_paths]
    if family == "category":
        write_pair_table(save_dir, stored, captions, labels, label_key="category", caption_layout=category_layout,
                         label_dtype=label_dtype, class_names=class_names)
    else:
        write_pair_table(save_dir, stored, captions, labels, label_key="label", caption_layout="flat",
                         label_dtype=np.float32, class_names=class_names)


def read_lines(path: Path) -> list[str]:
    """Lines of a text file (UTF-8, undecodable bytes replaced), without line endings."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        return handle.read().splitlines()


def progress(items: Iterable, desc: str, total: int | None = None) -> Iterable:
    return tqdm(items, desc=desc, total=total, disable=None)
