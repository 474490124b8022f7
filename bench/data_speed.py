"""Images per second of the training data pipeline, with and without the image cache.

    python -m bench.data_speed [--images 2000] [--size 224] [--batch-size 128] [--num-workers N]
                               [--data-dir DIR]   # default: a generated set of 500x375 JPEGs in a temp folder

Without --data-dir it writes a dataset of photo-sized JPEGs (500 x 375, like MIRFlickr and COCO images) in
the pair-table format, then times full passes of the training loader: decoding JPEGs every epoch, building
the cache once, and reading from the cache. Prints images per second of each, for the first epoch (worker
start-up, first tokenisation of each caption) and the later ones (the steady state of a long run).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from dataset.builder import build_datasets
from dataset.catalog import SplitSizes
from dataset.image_cache import attach_image_cache
from dataset.mat import load_pair_table, write_pair_table


def write_jpeg_dataset(folder: Path, count: int, seed: int = 0) -> Path:
    """`count` 500x375 JPEGs (smooth colour fields with noise, about 60 KB each) and their .mat files."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[0:375, 0:500]
    paths = []
    for i in range(count):
        base = rng.uniform(0, 255, 3)
        slope = rng.uniform(-0.4, 0.4, (2, 3))
        image = base + x[..., None] * slope[0] + y[..., None] * slope[1] + rng.normal(0, 12, (375, 500, 3))
        path = f"images/{i:06d}.jpg"
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(folder / path, quality=90)
        paths.append(path)
    labels = (rng.random((count, 10)) < 0.2).astype(np.float32)
    labels[np.arange(count), rng.integers(0, 10, count)] = 1
    write_pair_table(folder, paths, [[f"a photo {i}"] for i in range(count)], labels)
    return folder


def images_per_second(dataset, batch_size: int, num_workers: int, epochs: int) -> tuple[float, float]:
    """Images/s of the first epoch (worker start-up included) and of the later ones, as the trainer loads:
    shuffled, persistent workers (their caption memo survives the epoch), pinned memory when a GPU is there."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers,
                        prefetch_factor=4 if num_workers else None, persistent_workers=num_workers > 0,
                        pin_memory=torch.cuda.is_available())
    rates = []
    for _ in range(epochs):
        start, images = time.perf_counter(), 0
        for batch in loader:
            images += batch["image"].shape[0]
        rates.append(images / (time.perf_counter() - start))
    later = rates[1:] or rates
    return rates[0], sum(later) / len(later)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.data_speed", description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--num-workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--epochs", type=int, default=3, help="passes per pipeline (the first includes start-up)")
    parser.add_argument("--transform", default="resize_crop", help="training transform (resize_crop or flip)")
    parser.add_argument("--data-dir", type=Path, default=None, help="an existing dataset folder instead")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.data_dir or write_jpeg_dataset(Path(tmp) / "jpegs", args.images)
        table = load_pair_table(folder)
        n = len(table)
        sizes = SplitSizes(query=max(1, n // 20), train=n - max(1, n // 20), seed=0)
        data = build_datasets(table, sizes, args.size, 32, args.transform, "first")
        decoded = images_per_second(data.train, args.batch_size, args.num_workers, args.epochs)
        start = time.perf_counter()
        attach_image_cache(data, Path(tmp) / "cache", args.transform, args.size, args.num_workers, build=True,
                           wait=lambda: None, progress=False)
        build_seconds = time.perf_counter() - start
        cached = images_per_second(data.train, args.batch_size, args.num_workers, args.epochs)
    print(f"{len(data.train)} training images, {args.size}px, transform {args.transform}, batch {args.batch_size}, "
          f"{args.num_workers} workers, {os.cpu_count()} CPU cores")
    print(f"{'images/s':>38} {'first epoch':>12} {'later epochs':>13}")
    print(f"{'decoding JPEGs every epoch':>38} {decoded[0]:12.1f} {decoded[1]:13.1f}")
    print(f"{'reading the cache':>38} {cached[0]:12.1f} {cached[1]:13.1f}   ({cached[1] / decoded[1]:.1f}x decoding)")
    print(f"building the cache (once): {n / build_seconds:.1f} images/s ({build_seconds:.1f} s for {n} images)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
