"""DGHDGH: Deep Global-sense Hard-negative Discriminative Generation Hashing (ICLR 2026)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.nn.utils import clip_grad_norm_

from train.base import HashTrainer
from train.common import RunningMean
from train.config import BaseConfig
from utils.config import option, require

from .gnn import SOFTMAX_MODES
from .loss import DGHDGHLoss, lambda3_rule


@dataclass
class DGHDGHConfig(BaseConfig):
    # original repository (QinLab-WFU/DGHDGH argsbase.py / train/get_args.py) defaults
    epochs: int = option(100, "training epochs")
    batch_size: int = option(128, "training batch size")
    margin: float = option(0.25, "triplet margin on cosine similarities")
    alpha: float = option(5.0, "hardness α of the generated negatives: η = exp(−α / J̄_r)")
    beta: float = option(2.0, "β of the dynamic λ3 rule (1 − exp(−β / J̄_gen), then 0.1 or 0.9)")
    lambda1: float = option(1.0, "weight of J_r (triplets on real negatives)")
    lambda2: float = option(1.0, "weight of J_gca (graph node classification)")
    lambda4: float = option(10.0, "weight of J_cz (classifier step)")
    lambda5: float = option(10.0, "weight of J_ce in the generator loss")
    lambda6: float = option(10.0, "weight of J_sim in the generator loss")
    lambda7: float = option(0.3, "weight of J_div in the generator loss")
    gnn_layers: int = option(2, "message-passing layers of the generator GNN")
    gnn_heads: int = option(4, "attention heads of the GNN node model (must divide --output-dim)")
    dghdgh_softmax: str = option("plus_one", "segment softmax of the GNN node attention (the reference helper is "
                                             "missing): plus_one = exp(s) / (1 + Σ exp(s)), or standard",
                                 choices=SOFTMAX_MODES)
    gnn_lr: float | None = option(None, "Adam learning rate of the GNN (default: --clip-lr, the reference)")
    gnn_weight_decay: float | None = option(None, "Adam (L2) weight decay of the GNN (default: --weight-decay)")
    classifier_lr: float | None = option(None, "Adam learning rate of the softmax classifier (default: --clip-lr)")
    model_clip_norm: float = option(2.0, "global gradient-norm clip of CLIP + heads before BertAdam")
    gnn_clip_norm: float = option(1.0, "global gradient-norm clip of the GNN before each of its steps")

    # hash heads: kaiming (uniform fan_out, zero bias; the reference LinearHash)
    defaults = {"head_init": "kaiming"}
    # demo only (README): the reference kaiming(fan_out) head saturates tanh on the tiny backbone (0.44 -> 0.87 mAP)
    dataset_defaults = {"demo": dict(head_init="default")}

    def validate(self) -> None:
        super().validate()
        require(self.gnn_heads >= 1 and self.output_dim % self.gnn_heads == 0, "gnn_heads", self.gnn_heads,
                f"must divide --output-dim {self.output_dim}")


class Trainer(HashTrainer):
    Config = DGHDGHConfig
    name = "DGHDGH"
    paper = ("Deep Global-sense Hard-negative Discriminative Generation Hashing for Cross-modal Retrieval "
             "(ICLR 2026)")

    distributed = "unsupported"
    distributed_note = ("its classifier and generator backward passes run outside DistributedDataParallel, so their "
                        "gradients would not be averaged over the processes")

    def __init__(self, cfg: DGHDGHConfig):
        super().__init__(cfg)
        self.meters = {"J_r": RunningMean(), "J_gen": RunningMean()}

    def build_criterion(self) -> DGHDGHLoss:
        cfg = self.cfg
        return DGHDGHLoss(cfg.output_dim, self.num_classes, cfg.gnn_layers, cfg.gnn_heads, cfg.dghdgh_softmax,
                          cfg.margin, cfg.alpha)

    def extra_optimizers(self) -> list[torch.optim.Optimizer]:
        """[GNN Adam (coupled L2 decay), classifier Adam], both at --clip-lr by default as the reference."""
        cfg = self.cfg
        gnn = torch.optim.Adam(self.criterion.gnn.parameters(), lr=cfg.gnn_lr or cfg.clip_lr,
                               weight_decay=cfg.weight_decay if cfg.gnn_weight_decay is None else cfg.gnn_weight_decay)
        classifier = torch.optim.Adam(self.criterion.classifier.parameters(), lr=cfg.classifier_lr or cfg.clip_lr)
        return [gnn, classifier]

    def on_epoch_start(self, epoch: int) -> None:
        for meter in self.meters.values():
            meter.reset()

    def training_step(self, batch):
        """Stage 2: J_m = λ1 J_r + λ2 J_gca + λ3 J_syn on the normalised codes (the codes are kept for stages 3-4)."""
        cfg = self.cfg
        image, text = self.model(batch["image"], batch["text"])
        image, text = F.normalize(image, dim=1), F.normalize(text, dim=1)
        self._codes = (image, text, batch["label"])
        out = self.criterion.stage2(image, text, batch["label"], self.meters["J_r"].mean)
        out["lambda3"] = torch.tensor(lambda3_rule(self.meters["J_gen"].mean, cfg.beta))
        out["loss"] = cfg.lambda1 * out["J_r"] + cfg.lambda2 * out["J_gca"] + out["lambda3"] * out["J_syn"]
        return out

    def optimization_step(self, batch):
        """The reference order: stage 2 (BertAdam + GNN), classifier, stage 1 (GNN only), each with its clip."""
        cfg, criterion = self.cfg, self.criterion
        bert, gnn_optimizer, classifier_optimizer = self.optimizers
        gnn_params = list(criterion.gnn.parameters())
        self.zero_grad(bert, gnn_optimizer)
        with self.autocast():
            out = self.step_module(batch)
        if out["loss"].requires_grad:
            self.backward(out["loss"])
        self.meters["J_r"].add(float(out["J_r"].detach()))
        self.unscale_gradients(bert, gnn_optimizer)
        clip_grad_norm_(self.model.parameters(), cfg.model_clip_norm)
        clip_grad_norm_(gnn_params, cfg.gnn_clip_norm)
        self.step(bert, gnn_optimizer)

        image, text, labels = self._codes
        self._codes = None
        self.zero_grad(classifier_optimizer)
        with self.autocast():
            out["J_cz"] = criterion.classifier_loss(image, text, labels)
        self.backward(cfg.lambda4 * out["J_cz"])
        self.step(classifier_optimizer)

        self.zero_grad(gnn_optimizer)
        with self.autocast():
            out.update(criterion.stage1(image, text, labels, self.meters["J_r"].mean))
        out["J_gen"] = cfg.lambda5 * out["J_ce"] + cfg.lambda6 * out["J_sim"] + cfg.lambda7 * out["J_div"]
        if out["J_gen"].requires_grad:
            self.backward(out["J_gen"])
        self.unscale_gradients(gnn_optimizer)
        clip_grad_norm_(gnn_params, cfg.gnn_clip_norm)
        self.step(gnn_optimizer)
        self.meters["J_gen"].add(float(out["J_gen"].detach()))
        return out
