"""DGHDGH: Deep Global-sense Hard-negative Discriminative Generation Hashing (ICLR 2026)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.nn.utils import clip_grad_norm_

from model.heads import DualHashModel, LinearTanhHead
from train.base import HashTrainer
from train.config import BaseConfig
from utils.config import option
from utils.errors import UserError

from .gnn import SOFTMAX_MODES
from .loss import DGHDGHLoss, lambda3_rule


@dataclass
class DGHDGHConfig(BaseConfig):
    # original repository (QinLab-WFU/DGHDGH argsbase.py / train/get_args.py) defaults
    epochs: int = option(100, "training epochs")
    batch_size: int = option(128, "training batch size")
    head_dropout: float = option(0.2, "dropout before tanh in the hash heads")
    head_init: str = option("kaiming", "hash-head init: kaiming (uniform fan_out, zero bias; the reference "
                                       "LinearHash) or default (PyTorch)", choices=("kaiming", "default"))
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

    # demo only (README): the reference kaiming(fan_out) head saturates tanh on the tiny backbone (0.44 -> 0.87 mAP)
    dataset_defaults = {"demo": dict(head_init="default")}


class RunningMean:
    """The epoch's running mean of a loss (timm's AverageMeter on floats); 0 until the first update."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.total, self.count = 0.0, 0

    def update(self, value: float) -> None:
        self.total += value
        self.count += 1

    @property
    def avg(self) -> float:
        return self.total / self.count if self.count else 0.0


class Trainer(HashTrainer):
    Config = DGHDGHConfig
    name = "DGHDGH"
    paper = ("Deep Global-sense Hard-negative Discriminative Generation Hashing for Cross-modal Retrieval "
             "(ICLR 2026)")

    def __init__(self, cfg: DGHDGHConfig):
        if cfg.precision == "fp16":
            raise UserError("DGHDGH steps the GNN twice per iteration, which the fp16 gradient scaler does not "
                            "support; use --precision bf16 or fp32")
        if cfg.output_dim % cfg.gnn_heads:
            raise UserError(f"--gnn-heads {cfg.gnn_heads} must divide --output-dim {cfg.output_dim}")
        self.meters = {"J_r": RunningMean(), "J_gen": RunningMean()}
        super().__init__(cfg)
        if self.dist.enabled:
            raise UserError("DGHDGH runs in a single process (its extra backward passes are outside DDP)")

    def build_model(self) -> DualHashModel:
        dim, bits, p, init = self.backbone.embed_dim, self.cfg.output_dim, self.cfg.head_dropout, self.cfg.head_init
        return DualHashModel(self.backbone, LinearTanhHead(dim, bits, p, init=init),
                             LinearTanhHead(dim, bits, p, init=init))

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
        out = self.criterion.stage2(image, text, batch["label"], self.meters["J_r"].avg)
        out["lambda3"] = torch.tensor(lambda3_rule(self.meters["J_gen"].avg, cfg.beta))
        out["loss"] = cfg.lambda1 * out["J_r"] + cfg.lambda2 * out["J_gca"] + out["lambda3"] * out["J_syn"]
        return out

    def optimization_step(self, batch):
        """The reference order: stage 2 (BertAdam + GNN), classifier, stage 1 (GNN only), each with its clip."""
        cfg, criterion = self.cfg, self.criterion
        bert, gnn_optimizer, classifier_optimizer = self.optimizers
        gnn_params = list(criterion.gnn.parameters())
        bert.zero_grad(set_to_none=True)
        gnn_optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            out = self.step_module(batch)
        if out["loss"].requires_grad:
            out["loss"].backward()
        self.meters["J_r"].update(float(out["J_r"].detach()))
        clip_grad_norm_(self.model.parameters(), cfg.model_clip_norm)
        bert.step()
        clip_grad_norm_(gnn_params, cfg.gnn_clip_norm)
        gnn_optimizer.step()

        image, text, labels = self._codes
        self._codes = None
        classifier_optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            out["J_cz"] = criterion.classifier_loss(image, text, labels)
        (cfg.lambda4 * out["J_cz"]).backward()
        classifier_optimizer.step()

        gnn_optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            out.update(criterion.stage1(image, text, labels, self.meters["J_r"].avg))
        out["J_gen"] = cfg.lambda5 * out["J_ce"] + cfg.lambda6 * out["J_sim"] + cfg.lambda7 * out["J_div"]
        if out["J_gen"].requires_grad:
            out["J_gen"].backward()
        clip_grad_norm_(gnn_params, cfg.gnn_clip_norm)
        gnn_optimizer.step()
        self.meters["J_gen"].update(float(out["J_gen"].detach()))
        return out
