"""Decoded, resized images kept in one uint8 memory-mapped file, so later epochs and runs skip JPEG decoding.

A cache holds the deterministic part of a transform (the resize) for a list of images as an (N, S, S, 3)
uint8 array; the random part (a flip) runs on the uint8 tensor at load time, and batches travel as uint8
(4x less to copy) until the trainer normalises them on its device (`dataset.transforms.normalize_uint8`),
giving the same tensors as the PIL path. `--image-cache` turns it on; files live in `<data-dir>/cache/` (or `--cache-dir`),
named by geometry, size and a fingerprint of the image paths, and are built once (atomically) and reused by
every later run and every method.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode
from tqdm import tqdm

from dataset.pairs import load_rgb
from utils.errors import UserError

# training transform -> (cached geometry, random flip at load time); eval always uses "squash"
CACHEABLE_TRAIN = {"resize_crop": ("center", False), "flip": ("squash", True)}


def geometry(kind: str, size: int) -> Callable[[Image.Image], Image.Image]:
    """The deterministic resize of a transform: `squash` to size x size, or `center` (shorter side, centre crop)."""
    if kind == "squash":
        return T.Resize((size, size), interpolation=InterpolationMode.BICUBIC)
    if kind == "center":
        return T.Compose([T.Resize(size, interpolation=InterpolationMode.BICUBIC), T.CenterCrop(size)])
    raise ValueError(f"unknown cache geometry {kind!r}")


def tensor_transform(flip: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    """The load-time part for a uint8 (3, S, S) image: a random horizontal flip, or nothing."""
    return T.RandomHorizontalFlip() if flip else T.Compose([])


class _Decoded(Dataset):
    def __init__(self, paths: Sequence[str], resize: Callable[[Image.Image], Image.Image]):
        self.paths, self.resize = paths, resize

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray:
        return np.asarray(self.resize(load_rgb(self.paths[i])), dtype=np.uint8)


def cache_path(folder: Path, paths: Sequence[str], kind: str, size: int) -> Path:
    digest = hashlib.sha1("\n".join(paths).encode()).hexdigest()[:12]
    return Path(folder) / f"images-{kind}-{size}-{len(paths)}-{digest}.npy"


def build_cache(paths: Sequence[str], kind: str, size: int, target: Path, num_workers: int = 0,
                progress: bool = True) -> None:
    """Decode and resize every image into `target` (written as `.partial`, renamed when complete)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    array = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=(len(paths), size, size, 3))
    # its own generator: building the cache must not move the global RNG (the run stays the same as without)
    loader = DataLoader(_Decoded(paths, geometry(kind, size)), batch_size=64, num_workers=num_workers,
                        collate_fn=np.stack, generator=torch.Generator())
    position = 0
    try:
        for batch in tqdm(loader, desc=f"caching {len(paths)} images ({kind} {size}px)", disable=not progress):
            array[position:position + len(batch)] = batch
            position += len(batch)
        array.flush()
        del array
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)


def check_cache_file(path: Path, shape: tuple[int, ...]) -> None:
    """A UserError naming `path` unless it is a complete uint8 array of `shape` (a header and size check; the
    file is read with allow_pickle=False, so it never unpickles anything)."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        problem = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}" if str(exc) else type(exc).__name__
    else:
        if array.dtype == np.uint8 and array.shape == shape:
            return
        problem = f"holds {array.dtype} {array.shape} instead of uint8 {shape}"
    raise UserError(f"image cache {path} is damaged ({problem}); delete it and the next run rebuilds it")


class CachedImages:
    """`row -> uint8 (3, S, S) tensor` from a cache file; `rows` are the table rows the file holds, in order."""

    def __init__(self, path: Path, rows: np.ndarray):
        self.path = path
        self.lookup = {int(row): i for i, row in enumerate(rows)}
        self._array: np.ndarray | None = None  # opened lazily, once per worker process

    def __call__(self, row: int) -> torch.Tensor:
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r", allow_pickle=False)
        return torch.from_numpy(np.array(self._array[self.lookup[row]])).permute(2, 0, 1)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_array": None}


def attach_image_cache(data, folder: Path, train_kind: str, size: int, num_workers: int, build: bool,
                       wait: Callable[[], None], progress: bool = True) -> list[Path]:
    """Point the bundle's datasets at cache files (building missing ones when `build`, i.e. on rank 0; every
    process then calls `wait`). Returns the cache files used."""
    if train_kind not in CACHEABLE_TRAIN:
        raise UserError(f"--image-cache cannot hold --train-transform {train_kind} (random crops need the full "
                        f"image); use one of {', '.join(CACHEABLE_TRAIN)} or drop --image-cache")
    table = data.table
    all_rows = np.arange(len(table))
    train_geometry, train_flip = CACHEABLE_TRAIN[train_kind]
    plans = {"squash": all_rows}
    if train_geometry != "squash":
        plans[train_geometry] = np.asarray(data.train.rows)
    files = {kind: cache_path(folder, [table.paths[r] for r in rows], kind, size) for kind, rows in plans.items()}
    if build:
        for kind, rows in plans.items():
            if not files[kind].is_file():
                build_cache([table.paths[r] for r in rows], kind, size, files[kind], num_workers, progress)
    wait()
    for kind, rows in plans.items():
        check_cache_file(files[kind], (len(rows), size, size, 3))
    sources = {kind: CachedImages(files[kind], rows) for kind, rows in plans.items()}
    data.train.image_loader, data.train.transform = sources[train_geometry], tensor_transform(train_flip)
    for subset in (data.query, data.retrieval, data.train_eval):
        subset.image_loader, subset.transform = sources["squash"], tensor_transform(False)
    return list(files.values())
