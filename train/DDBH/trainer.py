"""DDBH: Deep Discriminative Boundary Hashing for Cross-modal Retrieval (Qin et al., IEEE TCSVT 2025)."""
from __future__ import annotations

from dataclasses import dataclass

from train.base import HashTrainer
from train.config import BaseConfig
from utils.config import option

from .loss import BoundaryHashLoss


@dataclass
class DDBHConfig(BaseConfig):
    # original repository (QinLab-WFU/DDBH utils/get_args.py) defaults
    epochs: int = option(100, "training epochs")
    batch_size: int = option(64, "training batch size")
    quantization_weight: float = option(0.1, "weight of the class-wise quantisation term (hard-coded 0.1 in the "
                                             "reference)")
    # hash heads (--head-init): default (PyTorch, original DDBH repo); the unified repo uses kaiming


class Trainer(HashTrainer):
    Config = DDBHConfig
    name = "DDBH"
    paper = "Deep Discriminative Boundary Hashing for Cross-modal Retrieval (IEEE TCSVT 2025)"

    def build_criterion(self) -> BoundaryHashLoss:
        return BoundaryHashLoss(self.cfg.output_dim, self.cfg.quantization_weight)

    def training_step(self, batch):
        image, text = self.model(batch["image"], batch["text"])
        return self.criterion(*self.global_batch(image, text, batch["label"]))
