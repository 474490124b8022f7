"""DCGH: Deep Class-guided Hashing (Chen, Zhu, Zhu; Applied Sciences 2025)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from train.base import HashTrainer
from train.config import BaseConfig
from utils.config import option, require
from utils.errors import UserError

from .loss import DCGHLoss


@dataclass
class DCGHConfig(BaseConfig):
    # reference defaults (donnotnormal/DCGH, utils/get_args.py and utils/utils.py)
    epochs: int = option(100, "training epochs")
    batch_size: int = option(64, "training batch size (the reference README's command: 128)")
    threshold: float = option(0.0, "cosine threshold δ of the absent-class and label-disjoint hinges (reference: "
                                   "computed from the coding-theory table but unused, i.e. 0)")
    pair_weight: float = option(0.05, "weight of the pairwise term (code cosine reaches label cosine)")
    negative_weight: float = option(0.8, "weight of the label-disjoint multi-label pair term")
    variance_weight: float = option(1.0, "weight of the variance constraint on the proxy distances")
    proxy_lr: float = option(0.02, "SGD learning rate of the class proxies")
    proxy_momentum: float = option(0.9, "SGD momentum of the class proxies")
    proxy_weight_decay: float = option(5e-4, "SGD weight decay of the class proxies")
    proxy_seed: int = option(0, "seed of the proxy initialisation (reference: hypseed 0)")

    def validate(self) -> None:
        super().validate()
        require(-1 <= self.threshold < 1, "threshold", self.threshold, "must lie in [-1, 1) (a cosine)")
        for name in ("pair_weight", "negative_weight", "variance_weight", "proxy_lr", "proxy_momentum",
                     "proxy_weight_decay"):
            value = getattr(self, name)
            require(value >= 0, name, value, "must not be negative")


class Trainer(HashTrainer):
    Config = DCGHConfig
    name = "DCGH"
    paper = "Deep Class-Guided Hashing for Multi-Label Cross-Modal Retrieval (Applied Sciences 2025)"

    def build_criterion(self) -> DCGHLoss:
        cfg = self.cfg
        if self.num_classes < 2:
            raise UserError(f"DCGH needs at least 2 classes (its variance constraint), the data has "
                            f"{self.num_classes}")
        return DCGHLoss(self.num_classes, cfg.output_dim, threshold=cfg.threshold, pair_weight=cfg.pair_weight,
                        negative_weight=cfg.negative_weight, variance_weight=cfg.variance_weight,
                        proxy_seed=cfg.proxy_seed)

    def extra_optimizers(self) -> list[torch.optim.Optimizer]:
        """The proxies: a constant-rate SGD of their own, stepped after BertAdam (the model only)."""
        cfg = self.cfg
        return [torch.optim.SGD(self.criterion.parameters(), lr=cfg.proxy_lr, momentum=cfg.proxy_momentum,
                                weight_decay=cfg.proxy_weight_decay)]

    def training_step(self, batch):
        image, text = self.model(batch["image"], batch["text"])
        return self.criterion(*self.global_batch(image, text, batch["label"]))
