"""DNPH: Deep Neighborhood-aware Proxy Hashing with Uniform Distribution Constraint (Huo et al., ACM TOMM 2024)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from train.base import HashTrainer
from train.config import BaseConfig
from utils.config import option

from .loss import DNPHLoss
from .model import DNPHModel


@dataclass
class DNPHConfig(BaseConfig):
    # original repository (QinLab-WFU/OUR-DNPH) defaults; the unified repo uses 200 epochs, batch 300
    epochs: int = option(100, "training epochs")
    batch_size: int = option(64, "training batch size")
    margin: float = option(1.0, "additive margin on the squared distance to the positive proxies (mrg)")
    noise_weight: float = option(0.1, "weight λ of the uniform-distribution (noise-as-targets) term")
    proxy_update: str = option("none", "none: proxies stay at their random init (both QinLab repos never step their "
                                       "optimizer); sgd: learned by plain SGD (kalenforn)", choices=("none", "sgd"))
    proxy_lr: float = option(1e-4, "SGD learning rate of the proxies with --proxy-update sgd")
    proxy_seed: int = option(0, "seed of the proxy initialisation N(0, 1)/8")

    # hash heads: kaiming (uniform fan_out, zero bias; unified repo and kalenforn); OUR-DNPH: default (PyTorch)
    defaults = {"head_init": "kaiming"}
    # the tiny demo backbone saturates tanh under the kaiming head init and needs more epochs (README)
    dataset_defaults = {"demo": dict(head_init="default", epochs=25)}


class Trainer(HashTrainer):
    Config = DNPHConfig
    name = "DNPH-TOMM"
    paper = ("Deep Neighborhood-aware Proxy Hashing with Uniform Distribution Constraint for Cross-modal Retrieval "
             "(ACM TOMM 2024)")
    distributed = "local"
    distributed_note = ("the loss sees the global batch, but the random ±1 targets of its uniform-distribution term come "
                        "from each process's own NumPy stream, as the reference draws them (DDP averages the draws)")

    def build_model(self) -> DNPHModel:
        return DNPHModel(self.backbone, self.default_head(), self.default_head(), self.num_classes)

    def build_criterion(self) -> DNPHLoss:
        cfg = self.cfg
        criterion = DNPHLoss(self.num_classes, cfg.output_dim, cfg.margin, cfg.noise_weight, cfg.proxy_seed)
        # the reference computes proxy gradients but never applies them: freezing gives the same proxies
        criterion.proxies.requires_grad_(cfg.proxy_update != "none")
        return criterion

    def extra_optimizers(self) -> list[torch.optim.Optimizer]:
        if self.cfg.proxy_update == "sgd":
            return [torch.optim.SGD(self.criterion.parameters(), lr=self.cfg.proxy_lr)]
        return []

    def training_step(self, batch):
        outputs = self.model.codes_and_logits(batch["image"], batch["text"])
        return self.criterion(*self.global_batch(*outputs, batch["label"]))

    # encode(): the base's sign of the eval-mode code outputs; the logits and proxies are not used
