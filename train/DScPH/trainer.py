"""DScPH: Deep Semantic-consistent Penalizing Hashing (Qin et al., IEEE TMM 2025)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from train.base import HashTrainer
from train.config import BaseConfig
from utils.config import option

from .adatriplet import AutoMarginTriplet
from .loss import DScPHLoss


@dataclass
class DScPHConfig(BaseConfig):
    # QinLab unified repository defaults (the spec's recommendation); the original repository's values are
    # given in the help texts (original: --cpf-tau 0.3 --cpf-psi 0.3 --train-rotation --use-adatriplet
    # --proxy-optimizer adam --proxy-lr 1e-5 --head-init default --epochs 100 --batch-size 128)
    epochs: int = option(200, "training epochs (original repository: 100)")
    batch_size: int = option(300, "training batch size (original repository: 128)")
    cpf_tau: float = option(0.9, "CPF: negative proxies count when their cosine exceeds τ (original: 0.3)")
    cpf_psi: float = option(0.7, "CPF: offset ψ of the negative penalty (cos - ψ) (original: 0.3)")
    proxy_optimizer: str = option("bertadam", "optimizer of the CPF proxies: bertadam (a BertAdam group, weight "
                                              "decay included; unified) or adam (separate Adam; original)",
                                  choices=("bertadam", "adam"))
    proxy_lr: float = option(1e-3, "learning rate of the CPF proxies (original: 1e-5 with adam)")
    train_rotation: bool = option(False, "train the Householder rotation of the quantisation term at --clip-lr "
                                         "(original); unified: untrained, so it stays -I and has no effect")
    use_adatriplet: bool = option(False, "add the original repository's AdaTriplet-AM loss per modality")
    ada_margin: float = option(0.25, "AdaTriplet: initial margin ε of each epoch")
    ada_beta: float = option(0.0, "AdaTriplet: initial negative-pair threshold β_n of each epoch")
    ada_k_delta: float = option(2.0, "AdaTriplet: ε = mean(s_ap - s_an) / K_Δ")
    ada_k_an: float = option(2.0, "AdaTriplet: β_n = 1 - (1 - mean negative cosine) / K_an")

    # hash heads: kaiming (unified); the original repository: default (PyTorch)
    defaults = {"head_init": "kaiming"}
    # demo (tiny random-init CLIP): the original repository's CPF thresholds and head init; with the unified
    # τ 0.9 / ψ 0.7 the sign codes collapse towards chance, kaiming-initialised heads learn slower (README)
    dataset_defaults = {"demo": dict(cpf_tau=0.3, cpf_psi=0.3, head_init="default")}


class Trainer(HashTrainer):
    Config = DScPHConfig
    name = "DScPH"
    paper = "Deep Semantic-consistent Penalizing Hashing for Cross-modal Retrieval (IEEE TMM 2025)"

    def build_criterion(self) -> DScPHLoss:
        cfg = self.cfg
        ada = (AutoMarginTriplet(cfg.ada_margin, cfg.ada_beta, cfg.ada_k_delta, cfg.ada_k_an)
               if cfg.use_adatriplet else None)
        return DScPHLoss(self.num_classes, cfg.output_dim, cfg.cpf_tau, cfg.cpf_psi, cfg.train_rotation, ada)

    def param_groups(self) -> list[dict[str, Any]]:
        groups = super().param_groups()
        if self.cfg.proxy_optimizer == "bertadam":
            groups.append({"params": [self.criterion.cpf.proxies], "lr": self.cfg.proxy_lr})
        if self.cfg.train_rotation:
            groups.append({"params": list(self.criterion.rotation.parameters()), "lr": self.cfg.clip_lr})
        return groups

    def extra_optimizers(self) -> list[torch.optim.Optimizer]:
        if self.cfg.proxy_optimizer == "adam":
            return [torch.optim.Adam([self.criterion.cpf.proxies], lr=self.cfg.proxy_lr)]
        return []

    def on_epoch_start(self, epoch: int) -> None:
        if self.criterion.adatriplet is not None:
            self.criterion.adatriplet.reset()

    def training_step(self, batch):
        image, text = self.model(batch["image"], batch["text"])
        first_batch = self.global_step % self.steps_per_epoch == 0
        return self.criterion(*self.global_batch(image, text, batch["label"]), estimate_margins=first_batch)
