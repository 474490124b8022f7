"""Seconds per 10,000 images of the dataset generators' image check (`--verify header|full`, `--workers`).

    python -m bench.image_check_speed [--images 2000] [--workers 1,2] [--data-dir DIR]

Without --data-dir it writes photo-sized JPEGs (500 x 375, quality 90, like MIRFlickr and COCO images; the
generator of bench/data_speed.py) into a temp folder, then times `dataset.raw_common.image_problems` over all of
them: the header check and the full decode, with each number of processes. Files are read once before timing,
so the numbers are decoding, not disk, speed.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from bench.data_speed import write_jpeg_dataset
from dataset.raw_common import image_problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.image_check_speed", description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--workers", default="1,2", help="comma-separated process counts to time")
    parser.add_argument("--data-dir", default=None, help="a folder of .jpg files to time instead")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.data_dir) if args.data_dir else write_jpeg_dataset(Path(tmp), args.images)
        paths = sorted(str(p) for p in folder.rglob("*.jpg"))[: args.images]
        size = sum(Path(p).stat().st_size for p in paths) / len(paths)
        for path in paths:  # warm the page cache
            Path(path).read_bytes()
        print(f"{len(paths)} JPEGs, mean {size / 1e3:.0f} KB")
        for workers in (int(w) for w in args.workers.split(",")):
            for mode in ("header", "full"):
                start = time.perf_counter()
                problems = image_problems(paths, mode, workers)
                seconds = time.perf_counter() - start
                assert not any(problems)
                print(f"--verify {mode:<6} --workers {workers}: {seconds / len(paths) * 1e4:7.1f} s per 10,000 images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
