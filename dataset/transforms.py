"""CLIP image preprocessing with torchvision (docs/datasets.md, per-item preprocessing)."""
from __future__ import annotations

import torch
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
TRAIN_TRANSFORMS = ("resize_crop", "flip_random_crop", "flip")


def train_transform(size: int, kind: str = "resize_crop") -> T.Compose:
    """Training transform.

    `resize_crop` (QinLab, DCHMT, MITH): shorter side to `size` (bicubic), centre crop, no
    augmentation. `flip_random_crop` (kalenforn): random horizontal flip and RandomResizedCrop.
    `flip`: squash to `size` plus a random horizontal flip (the demo's light augmentation).
    """
    normalize = [T.ToTensor(), T.Normalize(CLIP_MEAN, CLIP_STD)]
    if kind == "resize_crop":
        return T.Compose([T.Resize(size, interpolation=InterpolationMode.BICUBIC), T.CenterCrop(size), *normalize])
    if kind == "flip_random_crop":
        return T.Compose([T.RandomHorizontalFlip(), T.RandomResizedCrop(size), *normalize])
    if kind == "flip":
        return T.Compose([T.Resize((size, size), interpolation=InterpolationMode.BICUBIC), T.RandomHorizontalFlip(),
                          *normalize])
    raise ValueError(f"unknown train transform {kind!r}; choose one of {TRAIN_TRANSFORMS}")


def eval_transform(size: int) -> T.Compose:
    """Query / database transform of every repo: squash to size x size (bicubic, aspect ratio not kept)."""
    return T.Compose([T.Resize((size, size), interpolation=InterpolationMode.BICUBIC), T.ToTensor(),
                      T.Normalize(CLIP_MEAN, CLIP_STD)])


def normalize_uint8(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) images (the image cache's batches) -> CLIP-normalised float32, on their device."""
    mean = torch.tensor(CLIP_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=images.device).view(1, 3, 1, 1)
    return (images.float() / 255 - mean) / std
