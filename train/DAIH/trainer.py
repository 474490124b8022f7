"""DAIH: Deep Augmented Inter-class Hashing for Cross-Modal Retrieval (Wu et al., Information Fusion 2026)."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from train.base import HashTrainer
from train.config import BaseConfig
from train.data import shuffle_for_epoch, train_loader
from train.distance_weighted import LOWER_CUTOFF, MINER_INPUTS
from train.evaluator import Batch
from utils.config import option, require
from utils.optim import schedule_factor

from .clustering import kmeans_labels, standardize_by_labels
from .loss import DAIHLoss
from .miner import POSITIVE_SAMPLING
from .model import DAIHModel

LR_SCHEDULES = ("constant", "warmup_cosine")
# streams of `step_generator`: the two gates, the class step's miner, the auxiliary step's miner
GATES, CLASS_MINER, AUXILIARY_MINER = 0, 1, 2
LOGGED = ("class_metric", "class_decorrelation", "auxiliary_metric", "auxiliary_decorrelation", "auxiliary_steps")


@dataclass
class DAIHConfig(BaseConfig):
    # reference (QinLab-WFU/DAIH config.py) defaults
    lr: float = option(1e-5, "Adam learning rate of the four heads (the reference: one group with CLIP, 1e-5)")
    weight_decay: float = option(4e-4, "Adam (coupled L2) weight decay of CLIP and the heads")
    beta: float = option(1.2, "initial value of every class and cluster boundary β")
    beta_lr: float = option(5e-4, "Adam learning rate of the class and cluster boundaries β (no weight decay)")
    margin: float = option(0.2, "margin m of the margin losses")
    miner_input: str = option("embeddings", "what the negative sampler measures: embeddings (Wu et al.: the "
                                            "embedding distances, n = K) or distance_matrix (distances between rows "
                                            "of the distance matrix, n = B: the likely behaviour of the missing "
                                            "reference miner)", choices=MINER_INPUTS)
    miner_positives: str = option("one", "triplets per anchor: one (MIC's sampler: one random positive) or all (Wu "
                                         "et al.: every positive, each with its own sampled negative)",
                                  choices=POSITIVE_SAMPLING)
    miner_cutoff: float = option(LOWER_CUTOFF, "lower clamp of the distances the sampling weights use")
    adversarial_weight: float = option(10.0, "weight of the decorrelation losses in both steps")
    adversarial_hidden: int = option(512, "hidden width of the decorrelation regressor")
    adversarial_lr: float = option(1e-5, "Adam learning rate of the decorrelation regressor")
    adversarial_weight_decay: float = option(1e-6, "Adam (coupled L2) weight decay of the decorrelation regressor")
    n_clusters: int = option(10, "k-means clusters per modality (the auxiliary task's surrogate labels)")
    cluster_update_every: int = option(3, "recluster the auxiliary embeddings after every N epochs")
    kmeans_iterations: int = option(20, "Lloyd iterations of each k-means")
    lr_schedule: str = option("constant", "learning-rate schedule of the Adam groups: constant (the reference) or "
                                          "warmup_cosine (linear warmup over --warmup-proportion of the steps, then "
                                          "cosine decay, as BertAdam's)", choices=LR_SCHEDULES)
    class_step_probability: float = option(1.0, "probability of the class step in an iteration")
    auxiliary_step_probability: float = option(0.8, "probability of the auxiliary step in an iteration")

    defaults = {"epochs": 100, "batch_size": 128, "output_dim": 32, "clip_lr": 1e-5, "patience": 10}
    inapplicable = {"head_init": "DAIH's heads keep PyTorch's initialisation",
                    "head_dropout": "DAIH's heads have no dropout",
                    "max_grad_norm": "DAIH does not clip gradients"}
    # The demo's from-scratch backbone: k-means of random features make the auxiliary task noise at first, and the
    # full adversarial weight slows the class embedding (measured, README section Demo).
    dataset_defaults = {"demo": dict(output_dim=64, weight_decay=4e-4, epochs=40, lr_schedule="warmup_cosine",
                                     miner_positives="all", miner_cutoff=1.4, adversarial_weight=1.0,
                                     auxiliary_step_probability=0.3)}

    def validate(self) -> None:
        super().validate()
        for name in ("cluster_update_every", "kmeans_iterations", "adversarial_hidden"):
            value = getattr(self, name)
            require(value >= 1, name, value, "must be at least 1")
        require(self.n_clusters >= 2, "n_clusters", self.n_clusters, "must be at least 2")
        for name in ("beta_lr", "adversarial_lr", "adversarial_weight_decay", "adversarial_weight", "margin",
                     "miner_cutoff"):
            value = getattr(self, name)
            require(value >= 0, name, value, "must not be negative")
        for name in ("class_step_probability", "auxiliary_step_probability"):
            value = getattr(self, name)
            require(0 <= value <= 1, name, value, "must lie in [0, 1]")


class Trainer(HashTrainer):
    Config = DAIHConfig
    name = "DAIH"
    paper = "Deep Augmented Inter-class Hashing for Cross-Modal Retrieval (Information Fusion 2026)"

    def __init__(self, cfg: DAIHConfig):
        super().__init__(cfg)
        self.cluster_ids: torch.Tensor | None = None  # (2, num_train): image and text cluster id of each item
        self.auxiliary_batches: Iterator[Batch] | None = None
        self._auxiliary_loaders: list | None = None

    # ------------------------------------------------------------------ parts
    def build_model(self) -> DAIHModel:
        return DAIHModel(self.backbone, self.cfg.output_dim)

    def build_criterion(self) -> DAIHLoss:
        cfg = self.cfg
        return DAIHLoss(cfg.output_dim, self.num_classes, cfg.n_clusters, cfg.beta, cfg.margin, cfg.miner_cutoff,
                        cfg.miner_input, cfg.adversarial_hidden, cfg.adversarial_weight, cfg.miner_positives)

    def param_groups(self) -> list[dict[str, Any]]:
        """CLIP and the heads (coupled weight decay), the regressor, β_cls and β_aux (no weight decay)."""
        cfg = self.cfg
        return [{"params": [p for p in self.backbone.parameters() if p.requires_grad], "lr": cfg.clip_lr,
                 "weight_decay": cfg.weight_decay},
                {"params": self.model.head_parameters(), "lr": cfg.lr, "weight_decay": cfg.weight_decay},
                {"params": list(self.criterion.decorrelation.parameters()), "lr": cfg.adversarial_lr,
                 "weight_decay": cfg.adversarial_weight_decay},
                {"params": [self.criterion.cls.beta], "lr": cfg.beta_lr, "weight_decay": 0.0},
                {"params": [self.criterion.aux.beta], "lr": cfg.beta_lr, "weight_decay": 0.0}]

    def build_optimizer(self) -> torch.optim.Optimizer:
        """One plain Adam (no schedule, no clipping) over `param_groups()`, as the reference."""
        groups = [{**g, "base_lr": g["lr"]} for g in self.param_groups() if g["params"]]
        return torch.optim.Adam(groups, lr=self.cfg.lr)

    def set_learning_rates(self) -> None:
        """Under `--lr-schedule warmup_cosine`: every group's rate is its base rate times the schedule's factor at
        this global step (a function of the step alone, so --resume continues the schedule)."""
        cfg = self.cfg
        if cfg.lr_schedule == "constant":
            return
        factor = schedule_factor(self.global_step, self.schedule_steps(), cfg.warmup_proportion, cfg.lr_schedule)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor

    # ------------------------------------------------------------------ steps
    def optimization_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The class step (probability `class_step_probability`) on `batch`, then the auxiliary step (probability
        `auxiliary_step_probability`) on the next batches of the two auxiliary loaders, each with its own backward
        and Adam step. The auxiliary batches are drawn in every iteration (the reference zips the three loaders)."""
        cfg = self.cfg
        self.set_learning_rates()
        gates = torch.rand(2, generator=self.step_generator(GATES), device=self.device).tolist()
        auxiliary = next(self.auxiliary_batches)
        zero = torch.zeros((), device=self.device)
        logs = {"loss": zero, **dict.fromkeys(LOGGED, zero)}
        if gates[0] < cfg.class_step_probability:
            out = self._gated_step(batch)
            logs.update(out, loss=out["loss"].detach())
        if gates[1] < cfg.auxiliary_step_probability:
            out = self._gated_step(auxiliary)
            logs.update(out, loss=logs["loss"] + out["loss"].detach(), auxiliary_steps=torch.ones((), device=zero.device))
        return logs

    def _gated_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        self.zero_grad()
        with self.autocast():
            out = self.step_module(batch)
        self.backward(out["loss"])
        self.unscale_gradients()
        self.on_before_optimizer_step()
        self.step()
        return {key: value.detach() for key, value in out.items()}

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The class step's loss on a labelled batch, or the auxiliary step's on a batch of `auxiliary_batch`."""
        if "image_index" in batch:
            return self.auxiliary_loss(batch)
        image_cls, image_aux = self.model.embed_image(batch["image"])
        text_cls, text_aux = self.model.embed_text(batch["text"])
        gathered = self.global_batch(image_cls, image_aux, text_cls, text_aux, batch["label"])
        return self.criterion.class_step(*gathered, generator=self.step_generator(CLASS_MINER))

    def auxiliary_loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Auxiliary step: the images of one batch and the texts of another, labelled with their cluster ids."""
        image_cls, image_aux = self.model.embed_image(batch["image"])
        text_cls, text_aux = self.model.embed_text(batch["text"])
        image_clusters, text_clusters = (F.one_hot(self.cluster_ids[m][batch[key]], self.cfg.n_clusters).float()
                                         for m, key in enumerate(("image_index", "text_index")))
        image_cls, image_aux, image_clusters = self.global_batch(image_cls, image_aux, image_clusters)
        text_cls, text_aux, text_clusters = self.global_batch(text_cls, text_aux, text_clusters)
        return self.criterion.auxiliary_step(image_cls, image_aux, image_clusters, text_cls, text_aux, text_clusters,
                                             generator=self.step_generator(AUXILIARY_MINER))

    @staticmethod
    def auxiliary_batch(image_batch: Batch, text_batch: Batch) -> Batch:
        """The auxiliary step's input: the images (and training-set positions) of one batch, the texts of another."""
        return {"image": image_batch["image"], "image_index": image_batch["index"], "text": text_batch["text"],
                "text_index": text_batch["index"]}

    # ------------------------------------------------------------------ per-epoch state
    def on_epoch_start(self, epoch: int) -> None:
        """Initial clusters before the first epoch; this epoch's shuffles of the two auxiliary loaders."""
        if epoch == 0 or self.cluster_ids is None:
            self.cluster_ids = self.initial_clusters()
        self.auxiliary_batches = self.auxiliary_iterator(epoch)

    def on_epoch_end(self, epoch: int) -> None:
        """After every `cluster_update_every`-th epoch: k-means on the normalised auxiliary embeddings."""
        if (epoch + 1) % self.cfg.cluster_update_every == 0:
            image, text = self.training_set_embeddings("auxiliary")
            self.cluster_ids = self.cluster(image, text, epoch + 1)

    def initial_clusters(self) -> torch.Tensor:
        """k-means on the L2-normalised CLIP features standardised by class (per modality)."""
        image, text = self.training_set_embeddings("features")
        labels = self.train_labels
        return self.cluster(standardize_by_labels(F.normalize(image, dim=1), labels),
                            standardize_by_labels(F.normalize(text, dim=1), labels), 0)

    def cluster(self, image: torch.Tensor, text: torch.Tensor, epoch: int) -> torch.Tensor:
        """(2, N) cluster ids of the image and text rows; seeded by the training seed, the epoch and the modality,
        so every process (holding the same gathered rows) computes the same ids."""
        cfg = self.cfg
        seed = ((cfg.train_seed or 0) * 1000 + epoch) * 2
        ids = [kmeans_labels(rows, cfg.n_clusters, seed + m, cfg.kmeans_iterations) for m, rows in
               enumerate((image, text))]
        return torch.stack(ids).to(self.device)

    def training_set_embeddings(self, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Image and text rows of the whole training set, in its order, as the evaluation reads items (`train_eval`:
        evaluation transform, `--eval-caption`), model in eval mode: the CLIP `features` or the normalised
        `auxiliary` embeddings; gathered over all processes."""

        def encode(batch: Batch) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
            if kind == "features":
                return {kind: (self.backbone.encode_image(batch["image"]), self.backbone.encode_text(batch["text"]))}
            return {kind: (self.model.embed_image(batch["image"])[1], self.model.embed_text(batch["text"])[1])}

        self.model.eval()
        rows = self.evaluator.encode_dataset(encode, self.data.train_eval, f"encoding the training set ({kind})")
        self.model.train()
        return rows[kind]

    def auxiliary_iterator(self, epoch: int) -> Iterator[Batch]:
        """This epoch's auxiliary batches: images from one shuffled pass over the training set, texts from another
        (seeds: training seed + 1 and + 2; the class loader uses the training seed)."""
        cfg = self.cfg
        if self._auxiliary_loaders is None:
            self._auxiliary_loaders = [train_loader(self.data, cfg.batch_size, self.dist, cfg.train_seed + offset,
                                                    self.num_workers, cfg.prefetch_factor) for offset in (1, 2)]
        images, texts = (shuffle_for_epoch(loader, cfg.train_seed + offset, epoch)
                         for offset, loader in enumerate(self._auxiliary_loaders, start=1))
        return (self.auxiliary_batch(self.to_device(a), self.to_device(b)) for a, b in zip(images, texts))

    # ------------------------------------------------------------------ checkpoints
    def extra_state(self) -> dict[str, Any]:
        return {} if self.cluster_ids is None else {"cluster_ids": self.cluster_ids.cpu()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if "cluster_ids" in state:
            self.cluster_ids = state["cluster_ids"].to(self.device)
