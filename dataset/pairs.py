"""The torch Dataset of image-text pairs: one split of a PairTable."""
from __future__ import annotations

import random
from typing import Callable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from dataset.mat import PairTable
from utils.errors import UserError
from utils.text import CaptionTokenizer, padding_mask

CAPTION_CHOICES = ("random", "first")


def load_rgb(path: str) -> Image.Image:
    """The image at `path` as RGB; a missing or unreadable file is a UserError naming it."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError:
        raise UserError(f"image not found: {path} (wrong --data-dir or --data-root? "
                        "python -m dataset.check lists every missing image)") from None
    except OSError as exc:
        raise UserError(f"cannot read image {path}: {exc} (python -m dataset.check lists every bad image)") from None


class PathImages:
    """`row -> RGB image` decoded from the table's image paths (a class, not a lambda: loader workers started with
    `spawn` receive the dataset pickled)."""

    def __init__(self, paths: list[str]):
        self.paths = paths

    def __call__(self, row: int) -> Image.Image:
        return load_rgb(self.paths[row])


class PairDataset(Dataset):
    """Items of one split: `{"image", "text", "text_mask", "label", "index"}`.

    `index` is the item's position inside this split (0..len-1); methods with memory banks
    address the training set with it. `text_mask` is True at padding positions (after EOT).
    `caption_choice`: "random" draws one of the item's captions per access (the repos'
    behaviour; the training default), "first" always takes the first (deterministic evaluation).
    `labels` replaces the table's labels of `rows` (noisy training labels); `batch_label_noise`
    changes the labels of every batch the DataLoader fetches (`__getitems__`).
    """

    def __init__(
        self,
        table: PairTable,
        rows: np.ndarray,
        transform: Callable[[Image.Image], torch.Tensor],
        tokenizer: CaptionTokenizer,
        caption_choice: str = "random",
        image_loader: Callable[[int], Image.Image] | None = None,
        labels: np.ndarray | None = None,
        batch_label_noise: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        if caption_choice not in CAPTION_CHOICES:
            raise ValueError(f"caption_choice must be one of {CAPTION_CHOICES}")
        self.table = table
        self.rows = np.asarray(rows)
        self.transform = transform
        self.tokenizer = tokenizer
        self.caption_choice = caption_choice
        self.image_loader = image_loader or PathImages(table.paths)
        self.labels = torch.from_numpy(table.labels[self.rows] if labels is None else labels)
        if len(self.labels) != len(self.rows):
            raise ValueError(f"{len(self.labels)} label rows for {len(self.rows)} items")
        self.batch_label_noise = batch_label_noise

    def __len__(self) -> int:
        return len(self.rows)

    def caption(self, position: int) -> str:
        captions = self.table.captions[self.rows[position]]
        if self.caption_choice == "random" and len(captions) > 1:
            return captions[random.randrange(len(captions))]
        return captions[0]

    def __getitem__(self, position: int) -> dict[str, torch.Tensor | int]:
        row = int(self.rows[position])
        ids = self.tokenizer([self.caption(position)])[0]
        return {
            "image": self.transform(self.image_loader(row)),
            "text": ids,
            "text_mask": padding_mask(ids),
            "label": self.labels[position],
            "index": position,
        }

    def __getitems__(self, positions: list[int]) -> list[dict[str, torch.Tensor | int]]:
        """The items of one batch (the DataLoader's batched fetch), their labels through `batch_label_noise`."""
        items = [self[position] for position in positions]
        if self.batch_label_noise is not None and items:
            noisy = self.batch_label_noise(torch.stack([item["label"] for item in items]))
            for item, label in zip(items, noisy):
                item["label"] = label
        return items
