"""What gets indexed (an image folder, a texts file, a dataset split) and its encoding to packed codes.

Unreadable images are skipped and returned with the reason, never abort a long run.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from dataset.builder import load_table, resolve_split_sizes
from dataset.catalog import resolve_dataset
from dataset.mat import PairTable
from dataset.splits import Split, split_rows
from retrieval.codes import pack_codes
from utils.errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
SPLITS = ("database", "query", "train")


@dataclass
class Items:
    """Items of one modality to encode: ids, absolute image paths or texts, multi-hot labels where known."""

    ids: np.ndarray
    items: list[str]
    labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, positions: list[int] | np.ndarray) -> "Items":
        positions = np.asarray(positions, dtype=np.int64)
        return Items(self.ids[positions], [self.items[p] for p in positions],
                     None if self.labels is None else self.labels[positions])


# ===================================================================== sources
def image_folder(folder: str | Path) -> Items:
    """The image files under `folder` (recursively, sorted); id = position in that list."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"--images {folder} is not a folder")
    paths = sorted(str(p.resolve()) for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise UserError(f"--images {folder} holds no images (looked for {', '.join(IMAGE_SUFFIXES)} files, "
                        "also in subfolders)")
    return Items(np.arange(len(paths), dtype=np.int64), paths)


def text_file(path: str | Path) -> Items:
    """The non-blank lines of a UTF-8 text file; id = 0-based line number."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--texts {path}: file not found (one text per line)")
    try:
        lines = path.read_text("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise UserError(f"--texts {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    kept = [(i, line.strip()) for i, line in enumerate(lines) if line.strip()]
    if not kept:
        raise UserError(f"--texts {path} holds no text (one text per line)")
    return Items(np.array([i for i, _ in kept], dtype=np.int64), [t for _, t in kept])


def run_split(config: Any, data_dir: str | None = None) -> tuple[PairTable, Split]:
    """The run's dataset table and its query/train/database split: the rows its evaluation used."""
    info = resolve_dataset(config.dataset)
    sizes = resolve_split_sizes(info, config.split, config.query_num, config.train_num, config.seed)
    table = load_table(info, data_dir or config.data_dir, config.index_file, config.caption_file, config.label_file,
                       config.data_root, config.numclass, progress=False)
    return table, split_rows(len(table), sizes.query, sizes.train, sizes.seed)


def dataset_split(config: Any, name: str, split: str, data_dir: str | None = None
                  ) -> tuple[Items, Items, list[str] | None]:
    """(images, first captions, class names) of one split of dataset `name`; id = the item's row in the dataset.

    The run's own dataset is split as in its evaluation (its protocol, sizes, seed and files); another dataset
    uses its standard protocol and `data_dir` (default dataset/<name>).
    """
    info = resolve_dataset(name)
    if info.name == resolve_dataset(config.dataset).name:
        table, rows = run_split(config, data_dir)
    else:
        sizes = resolve_split_sizes(info, "standard", None, None, None)
        table = load_table(info, data_dir, progress=False)
        rows = split_rows(len(table), sizes.query, sizes.train, sizes.seed)
    chosen = {"database": rows.retrieval, "query": rows.query, "train": rows.train}[split]
    labels = table.labels[chosen].astype(np.uint8)
    ids = chosen.astype(np.int64)
    images = Items(ids, [str(Path(table.paths[r]).resolve()) for r in chosen], labels)
    texts = Items(ids, [table.captions[r][0] for r in chosen], labels)
    return images, texts, list(table.class_names) if table.class_names else None


# ===================================================================== encoding
class _ImageFiles(Dataset):
    """(position, transformed image or None, reason) per path: a file that cannot be decoded is not an error here."""

    def __init__(self, paths: list[str], transform: Callable[[Image.Image], torch.Tensor]):
        self.paths = paths
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, position: int) -> tuple[int, torch.Tensor | None, str]:
        try:
            with Image.open(self.paths[position]) as image:
                return position, self.transform(image.convert("RGB")), ""
        except Exception as exc:  # PIL and its plugins raise many types for broken files
            return position, None, f"{type(exc).__name__}: {exc}"


def _collate(rows: list[tuple[int, torch.Tensor | None, str]]) -> tuple[list[int], torch.Tensor | None, list]:
    good = [(position, image) for position, image, _ in rows if image is not None]
    bad = [(position, reason) for position, image, reason in rows if image is None]
    images = torch.stack([image for _, image in good]) if good else None
    return [position for position, _ in good], images, bad


def _progress(total: int, desc: str, enabled: bool) -> tqdm:
    return tqdm(total=total, desc=desc, unit="item", leave=False, disable=None if enabled else True)


def encode_images(model: Any, items: Items, batch_size: int, num_workers: int = 0, progress: bool = True
                  ) -> tuple[Items, np.ndarray, list[tuple[str, str]]]:
    """(readable items, their packed codes, [(path, reason)] of the unreadable ones), in item order."""
    loader = DataLoader(_ImageFiles(items.items, model.image_transform), batch_size=batch_size,
                        num_workers=num_workers, collate_fn=_collate)
    kept, codes, skipped = [], [], []
    with _progress(len(items), "encoding images", progress) as bar:
        for positions, images, bad in loader:
            if images is not None:
                kept.extend(positions)
                codes.append(pack_codes(model.encode_images(images)))
            skipped.extend((items.items[position], reason) for position, reason in bad)
            bar.update(len(positions) + len(bad))
    packed = np.concatenate(codes) if codes else np.zeros((0, (model.bits + 7) // 8), np.uint8)
    return items.subset(kept), packed, skipped


def encode_texts(model: Any, items: Items, batch_size: int, progress: bool = True) -> np.ndarray:
    """Packed codes of the texts, in item order."""
    codes = []
    with _progress(len(items), "encoding texts", progress) as bar:
        for start in range(0, len(items), batch_size):
            texts = items.items[start:start + batch_size]
            codes.append(pack_codes(model.encode_texts(*model.tokenize(texts))))
            bar.update(len(texts))
    return np.concatenate(codes)


def read_query_image(model: Any, path: str | Path) -> torch.Tensor:
    """The transformed query image (1, 3, H, W); UserError if it is missing or cannot be decoded."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"query image not found: {path}")
    try:
        with Image.open(path) as image:
            return model.image_transform(image.convert("RGB"))[None]
    except Exception as exc:  # PIL and its plugins raise many types for broken files
        raise UserError(f"cannot decode query image {path} ({type(exc).__name__}: {exc}); pass a readable image "
                        "(JPEG, PNG, ...)") from None
