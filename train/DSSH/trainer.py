"""DSSH: Deep Stochastic Spherical Hashing with von Mises-Fisher distributions (IEEE TKDE 2026)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from train.base import HashTrainer
from train.config import BaseConfig
from utils.config import option, require

from .loss import DSSHLoss, fill_empty_labels

SCHEDULE_UNITS = ("samples", "steps")


@dataclass
class DSSHConfig(BaseConfig):
    # reference defaults (QinLab-WFU/DSSH, _args.py and _init.py)
    proxy_lr: float = option(1e-2, "learning rate of the class proxies (a BertAdam group)")
    temperature_lr: float = option(1e-3, "learning rate of the temperature τ (a BertAdam group)")
    samples: int | None = option(None, "vMF samples per code and loss term (default: the number of training items, "
                                       "as the reference; memory grows with batch x samples x bits)")
    kappa_confidence: float = option(0.7, "κ_c of the proxy initialisation: std κ_c/(1-κ_c²)·(K-1)/√K")
    init_temperature: float = option(0.0, "initial temperature τ (β = exp(-τ))")
    proxy_seed: int = option(0, "seed of the proxy initialisation")
    schedule_unit: str = option("samples", "what BertAdam's t_total counts: samples (training items x epochs, the "
                                           "reference: its warmup never ends and the lrs stay far below the nominal "
                                           "ones) or steps (steps per epoch x epochs)", choices=SCHEDULE_UNITS)
    epoch_lr_decay: float = option(0.01, "after every epoch all learning rates are multiplied by exp(-x) (the "
                                         "reference's ExponentialLR(gamma=exp(-0.01)); 0: off)")

    defaults = {"epochs": 200, "batch_size": 128, "lr": 0.1, "clip_lr": 1e-3, "patience": 10}
    # demo (tiny random-init CLIP): few vMF samples, t_total in steps (the base demo rates are the effective rates, as
    # for every method), 25 epochs (README, Demo)
    dataset_defaults = {"demo": dict(samples=10, schedule_unit="steps", epochs=25)}

    def validate(self) -> None:
        super().validate()
        require(self.samples is None or self.samples >= 1, "samples", self.samples,
                "must be at least 1 (or left out for the number of training items)")
        require(0 < self.kappa_confidence < 1, "kappa_confidence", self.kappa_confidence, "must lie in (0, 1)")
        for name in ("proxy_lr", "temperature_lr", "epoch_lr_decay"):
            require(getattr(self, name) >= 0, name, getattr(self, name), "must not be negative")


class Trainer(HashTrainer):
    Config = DSSHConfig
    name = "DSSH"
    paper = "Deep Stochastic Spherical Hashing with von Mises-Fisher Distributions for Cross-Modal Retrieval " \
            "(IEEE TKDE 2026)"

    def build_criterion(self) -> DSSHLoss:
        cfg = self.cfg
        return DSSHLoss(self.num_classes, cfg.output_dim, cfg.samples or self.num_train,
                        init_temperature=cfg.init_temperature, kappa_confidence=cfg.kappa_confidence,
                        proxy_seed=cfg.proxy_seed)

    def param_groups(self) -> list[dict[str, Any]]:
        """CLIP at clip_lr, the heads at lr, the proxies at proxy_lr, the temperature at temperature_lr."""
        vmf = self.criterion.vmf
        return [*super().param_groups(), {"params": [vmf.proxies], "lr": self.cfg.proxy_lr},
                {"params": [vmf.temperature], "lr": self.cfg.temperature_lr}]

    def schedule_steps(self) -> int:
        """The schedule's length in samples (reference: training items x epochs) or steps (`--schedule-unit`)."""
        if self.cfg.schedule_unit == "samples":
            return self.num_train * self.cfg.epochs
        return super().schedule_steps()

    def should_stop(self) -> bool:
        """The reference's early stop: `--patience` evaluations in a row in which neither I->T nor T->I improved."""
        if self.cfg.patience <= 0:
            return False
        bests = self.history.per_direction.get(self.primary_code_set, {}).get("mAP", {})
        last_gain = max((bests[d]["epoch"] for d in ("i2t", "t2i") if d in bests), default=None)
        return self.history.evaluations_since(last_gain) >= self.cfg.patience

    def on_epoch_end(self, epoch: int) -> None:
        """Exponential decay of every learning rate (kept in the optimizer state, so --resume continues it)."""
        factor = math.exp(-self.cfg.epoch_lr_decay)
        for group in self.optimizer.param_groups:
            group["lr"] *= factor

    def training_step(self, batch):
        image, text = self.model(batch["image"], batch["text"])
        image, text, labels = self.global_batch(image, text, batch["label"])
        generator = self.step_generator()  # the same draws in every process
        return self.criterion(image, text, fill_empty_labels(labels, generator), generator=generator)
