"""DNpH: Deep Neighborhood-preserving Hashing with Quadratic Spherical Mutual Information (Qin et al., TMM 2024)."""
from __future__ import annotations

from dataclasses import dataclass

from train.base import HashTrainer
from train.config import BaseConfig
from utils.config import option

from .loss import qsmi_loss


@dataclass
class DNpHConfig(BaseConfig):
    # original repository (QinLab-WFU/DNpH) get_args defaults; the unified repo uses 200 epochs, batch 300
    epochs: int = option(100, "training epochs")
    batch_size: int = option(64, "training batch size")
    eps: float = option(1e-8, "additive eps of the code normalisation u / (||u|| + eps)")

    # hash heads: kaiming (uniform fan_out, zero bias; unified repo); the original DNpH repo: default
    defaults = {"head_init": "kaiming"}
    # demo only (README): the kaiming head saturates tanh on the tiny backbone's features and learns too slowly
    dataset_defaults = {"demo": dict(head_init="default", epochs=25)}


class Trainer(HashTrainer):
    Config = DNpHConfig
    name = "DNpH"
    paper = ("Deep Neighborhood-preserving Hashing with Quadratic Spherical Mutual Information for Cross-modal "
             "Retrieval (IEEE TMM 2024)")

    def training_step(self, batch):
        image, text = self.model(batch["image"], batch["text"])
        return qsmi_loss(*self.global_batch(image, text, batch["label"]), self.cfg.eps)

    # encode(): the base's sign of the eval-mode head outputs (= sign of the pre-tanh linear output)
