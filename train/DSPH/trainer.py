"""DSPH: Deep Semantic-aware Proxy Hashing (Huo et al., IEEE TCSVT 2024)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from train.base import HashTrainer
from train.coding_theory import check_threshold_bits, resolve_threshold
from train.config import BaseConfig
from utils.config import option

from .loss import ProxyLoss


@dataclass
class DSPHConfig(BaseConfig):
    # original repository (QinLab-WFU/DSPH) defaults
    epochs: int = option(100, "training epochs")
    batch_size: int = option(64, "training batch size")
    alpha: float = option(0.8, "weight of the label-disjoint pair regulariser")
    threshold: float | None = option(None, "cosine threshold δ for absent-class proxies (default: coding-theory "
                                           "table for --output-dim bits and the class count)")
    proxy_lr: float = option(0.02, "SGD learning rate of the class proxies")
    proxy_momentum: float = option(0.9, "SGD momentum of the class proxies")
    proxy_weight_decay: float = option(5e-4, "SGD weight decay of the class proxies")
    proxy_seed: int = option(0, "seed of the proxy initialisation (reference: hypseed 0)")


    def validate(self) -> None:
        super().validate()
        check_threshold_bits(self.threshold, self.output_dim)


class Trainer(HashTrainer):
    Config = DSPHConfig
    name = "DSPH"
    paper = "Deep Semantic-aware Proxy Hashing for Multi-label Cross-modal Retrieval (IEEE TCSVT 2024)"

    def build_criterion(self) -> ProxyLoss:
        cfg = self.cfg
        threshold = resolve_threshold(cfg.threshold, cfg.output_dim, self.num_classes, self.name)
        return ProxyLoss(self.num_classes, cfg.output_dim, threshold, cfg.alpha, cfg.proxy_seed)

    def extra_optimizers(self) -> list[torch.optim.Optimizer]:
        cfg = self.cfg
        return [torch.optim.SGD(self.criterion.parameters(), lr=cfg.proxy_lr, momentum=cfg.proxy_momentum,
                                weight_decay=cfg.proxy_weight_decay)]

    def training_step(self, batch):
        image, text = self.model(batch["image"], batch["text"])
        return self.criterion(*self.global_batch(image, text, batch["label"]))
