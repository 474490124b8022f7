"""DSCGH: Deep Semantic Center-Guided Hashing (Sui et al., Expert Systems with Applications 2026)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from dataset.catalog import resolve_dataset
from train.base import HashTrainer
from train.coding_theory import check_threshold_bits, resolve_threshold
from train.config import BaseConfig
from utils.config import option, require
from utils.errors import UserError

from .centers import csq_centers, read_centers
from .codes import GAMMA_RULES, ORTHOGONALIZATIONS, DiscreteCodes
from .loss import DSCGHLoss


@dataclass
class DSCGHConfig(BaseConfig):
    # reference defaults (QinLab-WFU/DSCGH, utils/get_args.py; margin and weights hard-coded there)
    epochs: int = option(100, "training epochs")
    batch_size: int = option(64, "training batch size (the reference README's command: 256)")
    centers: str | None = option(None, "hash centres from a .npy file of shape classes x bits with ±1 entries (e.g. "
                                       "the reference's centers/CSQ_init_True_coco_80_16_L2_alpha1.npy); default: "
                                       "generated, the first C rows of [H_K; -H_K], which equal the reference files "
                                       "wherever classes <= 2 x bits")
    random_extra_centers: bool = option(False, "with generated centres and more classes than 2 x bits: fill the "
                                               "remaining centres with seeded random balanced rows (not the "
                                               "paper's optimised centres)")
    threshold: float | None = option(None, "cosine threshold δ for absent-class centres (default: the coding-theory "
                                           "table for --output-dim bits and the class count)")
    margin: float = option(0.4, "margin of the cosine triplet loss")
    triplet_weight: float = option(1.0, "weight of the cross-modal triplet sums")
    quantization_weight: float = option(1e-4, "weight of the quantization sum towards the discrete codes")
    gamma: float = option(0.01, "initial penalty γ of the discrete-code update")
    gamma_rule: str = option("reference", "γ after each update: reference (1.05 γ₀, set once) or geometric "
                                          "(1.05 γ every epoch)", choices=GAMMA_RULES)
    orthogonalization: str = option("polar", "orthonormal factor of the auxiliary codes: polar (U Vᵀ, the nearest) "
                                             "or reference (U V, as the reference code)", choices=ORTHOGONALIZATIONS)

    defaults = {"output_dim": 16}
    # demo (tiny random-init CLIP): the triplet sum (thousands of triplets per batch) stalls training from the
    # collapsed initial codes; at 1e-4 it weighs about as the triplet mean (README, Demo)
    dataset_defaults = {"demo": dict(triplet_weight=1e-4)}

    def validate(self) -> None:
        super().validate()
        require(self.margin >= 0, "margin", self.margin, "must not be negative")
        require(self.gamma > 0, "gamma", self.gamma, "must be positive")
        for name in ("triplet_weight", "quantization_weight"):
            require(getattr(self, name) >= 0, name, getattr(self, name), "must not be negative")
        require(self.threshold is None or -1 <= self.threshold < 1, "threshold", self.threshold,
                "must lie in [-1, 1) (a cosine)")
        check_threshold_bits(self.threshold, self.output_dim)
        if self.centers is not None:
            require(Path(self.centers).is_file(), "centers", self.centers, "no such file")
            return
        check_generated_centers(self.numclass or resolve_dataset(self.dataset).num_classes, self.output_dim,
                                self.random_extra_centers, self.dataset)


def check_generated_centers(classes: int, bits: int, random_extra: bool, dataset: str) -> None:
    """Refuse code lengths and class counts for which generated centres are not the reference's."""
    if bits < 2 or bits & (bits - 1):
        raise UserError(f"--output-dim {bits}: DSCGH's generated hash centres need a power-of-two code length; "
                        "pass --centers FILE.npy for other lengths")
    if classes > 2 * bits and not random_extra:
        raise UserError(f"DSCGH at {bits} bits for {classes} classes: more classes than 2 x bits, where the reference "
                        "uses centres optimised from a trained classifier (not part of this method); pass "
                        f"--centers FILE.npy (the reference's centers/CSQ_init_True_{dataset}_{classes}_{bits}_L2_"
                        "alpha1.npy), use --output-dim >= "
                        f"{1 << max(1, (classes - 1).bit_length() - 1)}, or --random-extra-centers (seeded random "
                        "balanced rows, not the paper's centres)")


class DSCGHCriterion(nn.Module):
    """The loss (with its fixed centres) and the discrete codes of the training items, both checkpointed."""

    def __init__(self, loss: DSCGHLoss, codes: DiscreteCodes):
        super().__init__()
        self.loss = loss
        self.codes = codes

    def forward(self, image: torch.Tensor, text: torch.Tensor, labels: torch.Tensor,
                index: torch.Tensor) -> dict[str, torch.Tensor]:
        """Loss of the (global) batch; stores its outputs for the end-of-epoch code update (as the reference)."""
        targets = self.codes.targets(index)
        self.codes.record(index, image, text)
        return self.loss(image, text, labels, targets)


class Trainer(HashTrainer):
    Config = DSCGHConfig
    name = "DSCGH"
    paper = "Deep semantic center-guided hashing for multi-label cross-modal retrieval (ESWA 2026)"

    def build_criterion(self) -> DSCGHCriterion:
        cfg = self.cfg
        generator = torch.Generator().manual_seed(cfg.train_seed or 0)
        if cfg.centers is not None:
            centers = read_centers(cfg.centers, self.num_classes, cfg.output_dim)
        else:
            check_generated_centers(self.num_classes, cfg.output_dim, cfg.random_extra_centers, cfg.dataset)
            centers = csq_centers(self.num_classes, cfg.output_dim, generator)
        threshold = resolve_threshold(cfg.threshold, cfg.output_dim, self.num_classes, self.name)
        loss = DSCGHLoss(centers, threshold, margin=cfg.margin, triplet_weight=cfg.triplet_weight,
                         quantization_weight=cfg.quantization_weight)
        codes = DiscreteCodes(self.num_train, cfg.output_dim, generator, gamma=cfg.gamma, gamma_rule=cfg.gamma_rule,
                              orthogonalization=cfg.orthogonalization)
        return DSCGHCriterion(loss, codes)

    def training_step(self, batch):
        image, text = self.model(batch["image"], batch["text"])
        return self.criterion(*self.global_batch(image, text, batch["label"], batch["index"]))

    def on_epoch_end(self, epoch: int) -> None:
        """Re-estimate the discrete codes from the training labels and the epoch's outputs (before evaluation)."""
        self.criterion.codes.update(self.train_labels)
