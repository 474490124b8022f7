"""DHaPH: Deep Hierarchy-aware Proxy Hashing with Self-paced Learning for Cross-modal Retrieval
(Huo et al., IEEE TKDE 2024)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from train.base import HashTrainer
from train.common import label_similarity
from train.config import BaseConfig
from utils.config import option

from .loss import HierarchyProxyLoss, self_paced_delta, self_paced_loss


@dataclass
class DHaPHConfig(BaseConfig):
    # original repository (QinLab-WFU/DHaPH utils/get_args.py) defaults
    epochs: int = option(100, "training epochs (the self-paced weights ramp up over the first third)")
    batch_size: int = option(64, "training batch size")
    tau: float = option(0.3, "temperature τ of the self-paced contrastive loss")
    self_paced: bool = option(True, "self-paced weights w+ = exp(-1-s)^(δ/4), w- = exp(-1+s)^δ on the "
                                    "contrastive terms")
    alpha: float = option(1.0, "weight of the hierarchy proxy loss")
    num_proxies: int = option(500, "number of hyperbolic proxies (latent ancestors)", aliases=("--HM",))
    margin: float = option(0.1, "margin μ of the LCA hinge terms")
    topk: int = option(15, "k of the reciprocal nearest-neighbour triplet mining")
    triplets_per_anchor: int = option(50, "positives (and negatives) sampled per anchor")
    lca_temperature: float = option(0.1, "logit temperature of the Gumbel-softmax LCA pick")
    hp_detach: bool = option(True, "feed detached codes to the hierarchy loss (reference: it then trains only the "
                                   "hyperbolic layer and the proxies); --no-hp-detach lets it shape the codes")
    hp_lr: float = option(1e-5, "AdamW learning rate of the hyperbolic embedding layer")
    proxy_lr: float = option(1e-5, "AdamW learning rate of the proxies")
    hp_weight_decay: float = option(0.01, "AdamW weight decay of the embedding layer and the proxies")
    # hash heads (--head-init): default (PyTorch, original DHaPH repo); the unified repo uses kaiming

    # the demo trains on the CPU: 500 proxies make the LCA triplets (50 per proxy anchor × 500 proxies, each
    # Gumbel pick over all proxies) cost ~10 s per step there; 64 keep a step well under a second
    dataset_defaults = {"demo": dict(num_proxies=64)}


class Trainer(HashTrainer):
    Config = DHaPHConfig
    name = "DHaPH"
    paper = ("Deep Hierarchy-aware Proxy Hashing with Self-paced Learning for Cross-modal Retrieval "
             "(IEEE TKDE 2024)")
    delta: float = 0.0  # self-paced δ of the current epoch, set by on_epoch_start
    distributed = "local"
    distributed_note = ("the loss sees the global batch, but its sampled triplets and Gumbel LCA picks come from each "
                        "process's own random stream (DDP averages the processes' draws)")

    def build_criterion(self) -> HierarchyProxyLoss:
        cfg = self.cfg
        return HierarchyProxyLoss(cfg.output_dim, cfg.num_proxies, cfg.margin, cfg.topk, cfg.triplets_per_anchor,
                                  cfg.lca_temperature)

    def extra_optimizers(self) -> list[torch.optim.Optimizer]:
        cfg = self.cfg
        groups = [{"params": self.criterion.embed.parameters(), "lr": cfg.hp_lr},
                  {"params": [self.criterion.proxies], "lr": cfg.proxy_lr}]
        return [torch.optim.AdamW(groups, weight_decay=cfg.hp_weight_decay)]

    def on_epoch_start(self, epoch: int) -> None:
        self.delta = self_paced_delta(epoch, self.cfg.epochs) if self.cfg.self_paced else 0.0

    def training_step(self, batch):
        cfg = self.cfg
        image, text, labels = self.global_batch(*self.model(batch["image"], batch["text"]), batch["label"])
        similar = label_similarity(labels)
        out = {"ms_ii": self_paced_loss(image, image, similar, self.delta, cfg.tau),
               "ms_tt": self_paced_loss(text, text, similar, self.delta, cfg.tau),
               "ms_it": self_paced_loss(image, text, similar, self.delta, cfg.tau)}
        if cfg.hp_detach:
            image, text = image.detach(), text.detach()
        out.update(self.criterion(image, text, similar))
        loss = out["ms_ii"] + out["ms_tt"] + out["ms_it"] + cfg.alpha * (out["hp_image"] + out["hp_text"])
        return {"loss": loss, **out}
