"""DCHMT: Differentiable Cross-Modal Hashing via Multimodal Transformers (Tu et al., ACM MM 2022)."""
from __future__ import annotations

from dataclasses import dataclass

from model.heads import AttentionPairHead, DualHashModel, PairSoftmaxHead, pair_codes
from train.base import HashTrainer
from train.common import label_similarity
from train.config import BaseConfig
from utils.config import option

from .loss import quantization_loss, similarity_loss


@dataclass
class DCHMTConfig(BaseConfig):
    # original repository (kalenforn/DCHMT) get_args defaults
    epochs: int = option(100, "training epochs")
    batch_size: int = option(64, "training batch size")
    vartheta: float = option(0.5, "margin ϑ: negatives are pushed to ϑ·K flipped bits (m = sqrt(2Kϑ))")
    loss_type: str = option("l2", "squared (l2) or plain (l1) distance terms", choices=("l2", "l1"))
    head: str = option("original", "hash head: original (Linear-ReLU-K pair softmaxes) or kalenforn "
                                   "(attention + norm + Linear(512, 2K))", choices=("original", "kalenforn"))
    hidden_dim: int = option(128, "hidden width of the original head")
    quan_alpha: float = option(0.0, "weight of kalenforn's pair quantization term (kalenforn: 0.001)")

    # pair heads (--head-init): kaiming (uniform fan_out, zero bias; the reference); default (PyTorch's init) gives
    # unsaturated pairs on a from-scratch backbone
    defaults = {"head_init": "kaiming"}
    inapplicable = {"head_dropout": "DCHMT's pair heads have no dropout"}
    # coco: the original README's COCO command (the paper setting). demo (from-scratch tiny backbone, README Demo):
    # the kaiming(fan_out) pair init starts saturated and almost constant; the ϑ = 0.5 margin (32 of 64 bits
    # between every pair without a shared label) dominates the multi-label demo and learns slowly.
    dataset_defaults = {"coco": dict(vartheta=0.75, lr=1e-4, batch_size=256),
                        "demo": dict(head_init="default", vartheta=0.125, epochs=25)}


class Trainer(HashTrainer):
    Config = DCHMTConfig
    name = "DCHMT"
    paper = "Differentiable Cross-Modal Hashing via Multimodal Transformers (ACM MM 2022)"

    def build_model(self) -> DualHashModel:
        dim, bits, init = self.backbone.embed_dim, self.cfg.output_dim, self.cfg.head_init
        if self.cfg.head == "kalenforn":
            return DualHashModel(self.backbone, AttentionPairHead(dim, bits, "batch", init=init),
                                 AttentionPairHead(dim, bits, "layer", init=init))
        hidden = self.cfg.hidden_dim
        return DualHashModel(self.backbone, PairSoftmaxHead(dim, bits, hidden, init=init),
                             PairSoftmaxHead(dim, bits, hidden, init=init))

    def training_step(self, batch):
        image, text, labels = self.global_batch(*self.model(batch["image"], batch["text"]), batch["label"])
        cfg = self.cfg
        similarity = label_similarity(labels).to(labels.dtype)
        out = similarity_loss(image.flatten(1), text.flatten(1), similarity, cfg.output_dim, cfg.vartheta, cfg.loss_type)
        if cfg.quan_alpha > 0:
            out["quantization"] = (quantization_loss(image) + quantization_loss(text)) / 2
            out["loss"] = out["loss"] + cfg.quan_alpha * out["quantization"]
        return out

    def encode(self, batch):
        image, text = self.model(batch["image"], batch["text"])
        return {self.primary_code_set: (pair_codes(image), pair_codes(text))}
