"""DAGtH: Deep Adaptive Gradient-triplet Hashing for cross-modal retrieval (Zhu et al., ESWA 2025).

The reference release is partial (loss and miner only); the cross-modal training and the rotation stage are
reconstructed as the spec proposes (README.md lists what is reconstructed).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from train.base import HashTrainer
from train.common import float32_region
from train.config import BaseConfig
from utils.config import option
from utils.metrics import to_binary_codes

from .rotation import HouseholderRotation, fit_rotation
from .triplet import MARGIN_UPDATES, MINING, AdaptiveTriplet, label_masks


@dataclass
class DAGtHConfig(BaseConfig):
    # lab CLIP defaults (unified argsbase / DScPH-main); the reference gives no cross-modal values
    epochs: int = option(100, "training epochs")
    batch_size: int = option(128, "training batch size")
    triplet_mode: str = option("joint", "joint: one AdaTriplet over [image; text] codes (intra- and inter-modal "
                                        "triplets, one ε); directional: I-I, T-T, I-T, T-I terms, each with its "
                                        "own ε, summed", choices=("joint", "directional"))
    mining: str = option("all", "mined triplets: all (Δ ≤ ε), hard (Δ ≤ 0), semi-hard (0 < Δ ≤ ε)", choices=MINING)
    epsilon_init: float = option(0.25, "initial margin ε (with --margin-update batch replaced by mean(Δ)/k_delta "
                                         "from the first batch)")
    margin_update: str = option("batch", "when ε and β are re-estimated: batch (the DAGtH repo: from each batch), "
                                         "epoch (the AdaTriplet package: from the previous epoch's triplets; the "
                                         "first epoch uses the initial values) or fixed (never: ε₀/β₀, what "
                                         "DScPH-main's per-epoch re-created miner amounts to)",
                                choices=MARGIN_UPDATES)
    k_delta: float = option(2.0, "K_Δ of the automatic margin ε = clip(mean Δ / K_Δ, 0, 0.5)")
    loss_an: bool = option(False, "add the anchor-negative term (reference config: off)")
    beta_init: float = option(0.0, "initial anchor-negative threshold β")
    k_an: float = option(2.0, "K_an of β = 1 + (mean C_an − 1) / K_an")
    an_weight: float = option(1.0, "weight (la) of the anchor-negative term")
    rotation: str = option("post", "post: before each evaluation fit the Householder rotation on the frozen "
                                   "training codes and encode sign(h Hᵀ); none: sign(h)", choices=("post", "none"))
    rotation_steps: int = option(300, "full-batch Adam steps of the rotation fit")
    rotation_lr: float = option(0.01, "Adam learning rate of the rotation fit")

    # hash heads: kaiming (uniform fan_out, zero bias; QinLab unified)
    defaults = {"head_init": "kaiming"}
    # demo (tiny from-scratch CLIP): with ε re-estimated per batch, mean Δ ≈ 0 at random init gives ε ≈ 0 and the
    # loss rewards shrinking every cosine gap: all codes collapse to one (0.3165 mAP everywhere). A fixed ε₀ = 0.25
    # (the DScPH-main AdaTriplet behaviour) costs 0.25 at collapse and trains; PyTorch's head init avoids tanh
    # saturation (README: Demo).
    dataset_defaults = {"demo": dict(margin_update="fixed", head_init="default")}


class DAGtHCriterion(nn.Module):
    """AdaTriplet state (one miner, or four for the directional mode) and the Householder rotation."""

    PAIRS = ("i2i", "t2t", "i2t", "t2i")

    def __init__(self, cfg: DAGtHConfig):
        super().__init__()
        self.mode = cfg.triplet_mode
        names = ("joint",) if self.mode == "joint" else self.PAIRS
        self.terms = nn.ModuleDict({name: AdaptiveTriplet(cfg.epsilon_init, cfg.beta_init, cfg.k_delta, cfg.k_an,
                                                          cfg.an_weight, cfg.loss_an, cfg.mining, cfg.margin_update)
                                     for name in names})
        self.rotation = HouseholderRotation(cfg.output_dim)

    def forward(self, image: torch.Tensor, text: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """L_sim of a batch (no quantization term: the rotation is fitted separately)."""
        if self.mode == "joint":
            z = F.normalize(torch.cat([image, text]), dim=1)
            y = torch.cat([labels, labels])
            return self.terms["joint"](z @ z.T, *label_masks(y, y, same_items=True), symmetric=True)
        codes = {"i": F.normalize(image, dim=1), "t": F.normalize(text, dim=1)}
        out: dict[str, torch.Tensor] = {"loss": image.new_zeros(())}
        for name, term in self.terms.items():
            a, b = name[0], name[2]
            part = term(codes[a] @ codes[b].T, *label_masks(labels, labels, same_items=a == b), symmetric=a == b)
            out["loss"] = out["loss"] + part["loss"]
            out[f"{name}_loss"], out[f"{name}_epsilon"] = part["loss"], part["epsilon"]
        return out


class Trainer(HashTrainer):
    Config = DAGtHConfig
    name = "DAGtH"
    paper = "Deep adaptive gradient-triplet hashing for cross-modal retrieval (Expert Systems with Applications 2025)"

    def build_criterion(self) -> DAGtHCriterion:
        return DAGtHCriterion(self.cfg)

    def training_step(self, batch):
        image, text = self.model(batch["image"], batch["text"])
        return self.criterion(*self.global_batch(image, text, batch["label"]))

    def on_epoch_end(self, epoch: int) -> None:
        for term in self.criterion.terms.values():
            term.end_epoch()

    # ------------------------------------------------------------------ stage B: the rotation
    def training_codes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Continuous codes of every training pair in eval mode (eval transform, first caption), all processes."""
        codes = self.evaluator.encode_dataset(lambda batch: {"continuous": self.model(batch["image"], batch["text"])},
                                              self.data.train_eval, "encoding the training set")
        return codes["continuous"]

    def on_evaluation_start(self) -> None:
        """Fit H on the frozen training codes (not with --test: the checkpoint's H is used)."""
        cfg = self.cfg
        if cfg.rotation == "post" and not cfg.test:
            before, after = fit_rotation(self.criterion.rotation, *self.training_codes(), cfg.rotation_steps,
                                         cfg.rotation_lr)
            self.log.info(f"rotation fitted: bit-variance loss {before:.6f} -> {after:.6f}")

    def encode(self, batch):
        image, text = self.model(batch["image"], batch["text"])
        if self.cfg.rotation == "post":
            with float32_region(image, text) as (image, text):
                rotation = self.criterion.rotation.matrix().T
                image, text = image @ rotation, text @ rotation
        return {self.primary_code_set: (to_binary_codes(image), to_binary_codes(text))}
