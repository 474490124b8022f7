"""TwDH: Two-Step Discrete Hashing for Cross-Modal Retrieval (Tu et al., IEEE TMM 2024)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from dataset.transforms import TRAIN_TRANSFORMS
from model.heads import AttentionPairHead, DualHashModel
from train.base import HashTrainer
from train.config import BaseConfig
from utils.config import option, require
from utils.errors import UserError

from .centers import analytic_transform, find_asset, long_centers, read_matrix, short_centers
from .loss import TwDHLoss


@dataclass
class TwDHConfig(BaseConfig):
    # kalenforn configs/TwDH/config.yaml (the official code)
    epochs: int = option(100, "training epochs")
    batch_size: int = option(128, "training batch size")
    train_transform: str = option("flip_random_crop", "training image transform (kalenforn: random flip and "
                                  "RandomResizedCrop)", choices=TRAIN_TRANSFORMS)
    map_k: int | None = option(5000, "also report mAP@K (first min(K, R) relevant items; the paper's mAP@5000)")
    output_dim: int = option(64, "the reported code length: one of --short-bits, or --long-dim", aliases=("--bits",))
    long_dim: int = option(512, "length L of the trained long code (a power of two above the class count)")
    short_bits: tuple[int, ...] = option((16, 32, 64), "short code lengths S (comma-separated), each decoded from "
                                                       "p_long @ T_S")
    quan_alpha: float = option(0.5, "weight of the long code's pair quantization term")
    low_rate: float = option(0.0, "weight of the short codes' BCE + quantization terms (0: long code only)")
    center_dir: str | None = option(None, "folder with long/<L>.pkl and short/<S>.pkl class centers (the reference "
                                          "layout; .pkl/.pt/.npy); default: generated from --center-seed")
    transform_dir: str | None = option(None, "folder with <L>/<S>.pkl long-to-short matrices (the reference trans/ "
                                             "folder); default: the analytic transform of the centers")
    center_seed: int = option(0, "seed of the generated class centers (choice and order of the rows)")

    # from scratch, the tiny image tower fits TwDH's per-bit center targets slowly (README: demo)
    dataset_defaults = {"demo": dict(epochs=30)}
    inapplicable = {"head_init": "TwDH has its own hash heads", "head_dropout": "TwDH has its own hash heads"}

    def validate(self) -> None:
        super().validate()
        shown = ",".join(map(str, self.short_bits))
        require(bool(self.short_bits) and all(2 <= s < self.long_dim for s in self.short_bits), "short_bits", shown,
                "each length must lie in [2, --long-dim)")
        require(self.output_dim in (*self.short_bits, self.long_dim), "output_dim", self.output_dim,
                f"is not a TwDH code length: choose one of --short-bits {shown} or --long-dim {self.long_dim}")


class Trainer(HashTrainer):
    Config = TwDHConfig
    name = "TwDH"
    paper = "Two-Step Discrete Hashing for Cross-Modal Retrieval (IEEE TMM 2024)"
    distributed = "local"
    distributed_note = ("the loss sees the global batch, but the random fill of tied center bits is drawn from each "
                        "process's own stream, as the reference draws it (DDP averages the draws)")

    @property
    def short_lengths(self) -> tuple[int, ...]:
        """The distinct short code lengths, ascending."""
        return tuple(sorted(set(self.cfg.short_bits)))

    def build_model(self) -> DualHashModel:
        dim, bits = self.backbone.embed_dim, self.cfg.long_dim
        return DualHashModel(self.backbone, AttentionPairHead(dim, bits, "batch"), AttentionPairHead(dim, bits, "layer"))

    def build_criterion(self) -> TwDHLoss:
        cfg = self.cfg
        long, shorts = self.class_centers()
        transforms = self.transforms(long, shorts)
        return TwDHLoss(long, shorts, transforms, cfg.quan_alpha, cfg.low_rate)

    def class_centers(self) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Long (C, L) and short (C, S) centers: read from --center-dir, or generated."""
        cfg, classes = self.cfg, self.num_classes
        if cfg.center_dir is not None:
            folder = Path(cfg.center_dir)
            long = read_matrix(find_asset(folder / "long", str(cfg.long_dim)), (classes, cfg.long_dim), pm1=True)
            shorts = {s: read_matrix(find_asset(folder / "short", str(s)), (classes, s), pm1=True)
                      for s in self.short_lengths}
            return long, shorts
        generator = torch.Generator().manual_seed(cfg.center_seed)
        long = long_centers(classes, cfg.long_dim, generator)
        return long, {s: short_centers(classes, s, generator) for s in self.short_lengths}

    def transforms(self, long: torch.Tensor, shorts: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        """T_S (2L, 2S): read from --transform-dir, or the analytic map of the centers."""
        cfg = self.cfg
        if cfg.transform_dir is None:
            return {s: analytic_transform(long, c) for s, c in shorts.items()}
        if cfg.center_dir is None:
            raise UserError("--transform-dir needs the centers it was learned for: pass --center-dir too")
        folder = Path(cfg.transform_dir) / str(cfg.long_dim)
        return {s: read_matrix(find_asset(folder, str(s)), (2 * cfg.long_dim, 2 * s), pm1=False) for s in shorts}

    def training_step(self, batch):
        image, text = self.model(batch["image"], batch["text"])
        return self.criterion(*self.global_batch(image, text, batch["label"]))

    def encode(self, batch):
        image, text = self.model(batch["image"], batch["text"])
        return self.criterion.codes(image, text)
