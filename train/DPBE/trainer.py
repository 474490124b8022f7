"""DPBE: Deep Probabilistic Binary Embedding via Learning Reliable Uncertainty (ACM MM 2025)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from model.heads import DualHashModel
from train.base import HashTrainer
from train.common import float32_region
from train.config import BaseConfig
from utils.config import option
from utils.metrics import to_binary_codes

from .laplace import LaplaceHashHead, count_triplets, diag_ggn, hessian_scale
from .loss import affinity, reduce_samples, similarity_losses


@dataclass
class DPBEConfig(BaseConfig):
    # original repository (QinLab-WFU/DPBE get_args + argsbase) defaults
    epochs: int = option(200, "training epochs")
    batch_size: int = option(300, "training batch size")
    train_n_samples: int = option(5, "head-weight samples per training step")
    valid_n_samples: int = option(5, "head-weight samples averaged into the codes (drawn once per evaluation)")
    loss_mode: str = option("last_over_S", "last_over_S: the reference's last-sample loss / S; mean: the mean "
                                           "over the samples (the LAM formulation)", choices=("last_over_S", "mean"))
    max_pairs: int = option(5000, "cap b of the triplet count in the precision scale N² / b")
    hessian_memory_factor: float = option(0.999, "decay γ of the online precision: H <- γ H + curvature")
    prior_precision: float = option(1.0, "prior precision of the head weights")
    posterior_scale: float = option(1.0, "factor on the precision in σ = 1 / sqrt(scale · H + prior)")
    laplace_n: int | None = option(None, "dataset size N of the Laplace posterior (precision init and the N² "
                                         "scale); default: the training-set size (reference: train_num)")

    inapplicable = {"head_init": "DPBE has its own hash heads", "head_dropout": "DPBE has its own hash heads"}
    # the regression at noisy sampled weights learns the from-scratch demo model more slowly (README)
    dataset_defaults = {"demo": dict(epochs=25)}


class Trainer(HashTrainer):
    Config = DPBEConfig
    name = "DPBE"
    paper = ("Deep Probabilistic Binary Embedding via Learning Reliable Uncertainty for Cross-Modal Retrieval "
             "(ACM MM 2025)")

    @property
    def laplace_n(self) -> int:
        return self.cfg.laplace_n or self.num_train

    def build_model(self) -> DualHashModel:
        dim, bits = self.backbone.embed_dim, self.cfg.output_dim
        return DualHashModel(self.backbone, LaplaceHashHead(dim, bits, self.laplace_n),
                             LaplaceHashHead(dim, bits, self.laplace_n))

    def _sample(self, head: LaplaceHashHead, n_samples: int,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return head.sample_weights(n_samples, self.cfg.prior_precision, self.cfg.posterior_scale, generator)

    def training_step(self, batch):
        """On the global batch: every process draws the same weights (step generator) and keeps the same precision."""
        cfg, model = self.cfg, self.model
        *features, labels = self.global_batch(model.backbone.encode_image(batch["image"]),
                                              model.backbone.encode_text(batch["text"]), batch["label"])
        heads = (model.image_head, model.text_head)
        generator = self.step_generator()
        weights = [self._sample(head, cfg.train_n_samples, generator) for head in heads]
        codes = [head.sampled_forward(f, *w) for head, f, w in zip(heads, features, weights)]
        losses = similarity_losses(*codes, affinity(labels))
        self._update_precision(heads, features, weights, labels)
        return {"loss": reduce_samples(losses, cfg.loss_mode), "sample_loss": losses.mean()}

    @torch.no_grad()
    def _update_precision(self, heads, features, weights, labels: torch.Tensor) -> None:
        """H <- γ H + relu(N²/b · mean_s diagGGN(θ_s)) per head, at the sampled weights on detached features.

        A batch without any reference triplet (b = 0, where the reference divides by zero) adds no curvature.
        """
        n_triplets = int(count_triplets(labels))
        scale = hessian_scale(n_triplets, self.laplace_n, self.cfg.max_pairs) if n_triplets else 0.0
        for head, f, (weight, bias) in zip(heads, features, weights):
            with float32_region(f.detach(), weight.detach(), bias.detach()) as (f, weight, bias):
                curvature = diag_ggn(f, weight, bias)
                head.update_hessian(scale * curvature.mean(dim=0), self.cfg.hessian_memory_factor)

    # ------------------------------------------------------------------ codes
    def on_evaluation_start(self) -> None:
        """Draw the evaluation's weight samples once; query and database sets (and all processes) share them."""
        generator = self.step_generator(stream=1)
        with torch.no_grad():
            self._eval_weights = [self._sample(head, self.cfg.valid_n_samples, generator)
                                  for head in (self.model.image_head, self.model.text_head)]

    def on_evaluation_end(self) -> None:
        self._eval_weights = None

    def encode(self, batch):
        if getattr(self, "_eval_weights", None) is None:
            self.on_evaluation_start()
        model = self.model
        features = (model.backbone.encode_image(batch["image"]), model.backbone.encode_text(batch["text"]))
        image, text = (LaplaceHashHead.sampled_forward(f, *w).mean(dim=0) for f, w in zip(features, self._eval_weights))
        return {self.primary_code_set: (to_binary_codes(image), to_binary_codes(text))}
