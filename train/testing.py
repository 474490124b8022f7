"""Helpers for method tests: a trainer's parts on a small stub backbone, without data, processes or run folder.

    trainer = build_trainer(Trainer, num_classes=3, output_dim=8)     # config options as keywords
    out = trainer.training_step(stub_batch(trainer, rows=6))
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from train.data import DataFacts


class StubBackbone(nn.Module):
    """A stand-in for CLIPBackbone: linear maps from small 'images' (B, image_dim) and 'texts' (B, text_dim)."""

    def __init__(self, embed_dim: int = 8, image_dim: int = 12, text_dim: int = 6):
        super().__init__()
        self.embed_dim, self.image_dim, self.text_dim = embed_dim, image_dim, text_dim
        self.image_size = 1
        self.image = nn.Linear(image_dim, embed_dim)
        self.text = nn.Linear(text_dim, embed_dim)

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return self.image(x)

    def encode_text(self, x: torch.Tensor) -> torch.Tensor:
        return self.text(x)


def build_trainer(trainer_cls: type, *, num_classes: int = 3, num_train: int = 16,
                  train_labels: torch.Tensor | None = None, backbone: nn.Module | None = None,
                  steps_per_epoch: int = 10, seed: int | None = 0, **options: Any):
    """A `trainer_cls` whose model, loss and optimizers are built on `backbone` (default: a `StubBackbone`).

    `options` are config values (`output_dim=8`, `head_init="default"`...); the config's field defaults apply
    otherwise. `train_labels` default to random multi-hot rows; `seed` seeds torch before building.
    """
    if seed is not None:
        torch.manual_seed(seed)
    cfg = trainer_cls.Config(**options)
    trainer = trainer_cls(cfg)
    if train_labels is None:
        generator = torch.Generator().manual_seed(0)
        train_labels = (torch.rand(num_train, num_classes, generator=generator) < 0.4).float()
    facts = DataFacts(num_classes, len(train_labels), train_labels)
    trainer.build_parts(backbone if backbone is not None else StubBackbone(), facts, steps_per_epoch)
    return trainer


def stub_batch(trainer, rows: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random batch for a trainer built on a `StubBackbone`: image, text, label, index (text_mask all False)."""
    backbone = trainer.backbone
    generator = torch.Generator().manual_seed(seed)
    return {"image": torch.randn(rows, backbone.image_dim, generator=generator),
            "text": torch.randn(rows, backbone.text_dim, generator=generator),
            "text_mask": torch.zeros(rows, backbone.text_dim, dtype=torch.bool),
            "label": (torch.rand(rows, trainer.num_classes, generator=generator) < 0.4).float(),
            "index": torch.arange(rows)}
