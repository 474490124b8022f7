"""HashTrainer: everything that is the same for all methods.

A method subclasses `HashTrainer`, sets `Config` (its dataclass of options), `name` and `paper`,
and overrides only what differs (docs/architecture.md lists the hooks):

    build_model()          the network (default: CLIP + one linear-tanh head per modality)
    build_criterion()      the loss; an nn.Module's parameters and buffers are checkpointed
    param_groups()         BertAdam groups (default: backbone at clip_lr, the rest of the model at lr)
    extra_optimizers()     optimizers for parts outside BertAdam (e.g. proxies with SGD)
    training_step(batch)   -> {"loss": tensor, **logs}; the only required override
    before_optimizer_step() e.g. a global gradient clip
    on_epoch_start/end(epoch), before_evaluation(), after_evaluation()
    encode(batch)          -> {code_set_name: (image_codes, text_codes)} as ±1
    distance()             None (Hamming) or a callable for other code formats
    selection_score(results)  which evaluation is "best"
    extra_state()/load_extra_state()  state that is neither a module nor an optimizer

and may call `global_batch(*tensors)` in `training_step`: under torchrun it gathers the outputs and labels
of the whole global batch (differentiably), so a loss over pairs or triplets of the batch is the loss of
one process; without torchrun it returns its arguments.

The base owns data loading, the training loop, evaluation on the query/database split, the best
and last checkpoints, --resume, --test, logging and the run folder's files.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import scipy.io as sio
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from dataset.batch_sampler import GlobalBatchSampler
from dataset.builder import DataBundle, build_datasets, load_table, resolve_split_sizes
from dataset.catalog import resolve_dataset
from dataset.image_cache import attach_image_cache
from dataset.label_noise import LabelNoise
from dataset.transforms import normalize_uint8
from model.clip import CLIPBackbone, build_backbone
from model.heads import DualHashModel, LinearTanhHead
from train.config import BaseConfig
from utils.checkpoint import load_checkpoint, save_checkpoint
from utils.config import write_yaml_config
from utils.distributed import setup_distributed, sync_batchnorm
from utils.errors import UserError
from utils.logs import get_logger, log_to_file
from utils.metrics import evaluate_codes, to_binary_codes
from utils.optim import BertAdam
from utils.plots import plot_pr_curves
from utils.seed import rng_state, seed_everything, set_rng_state

DIRECTIONS = ("i2t", "t2i", "i2i", "t2t")
Batch = dict[str, Any]
CodeSets = dict[str, tuple[torch.Tensor, torch.Tensor]]
Results = dict[str, dict[str, dict[str, float]]]  # code set -> direction -> metric -> value


class _StepModule(nn.Module):
    """Model and criterion as one module whose forward is the method's training step (wrapped by DDP)."""

    def __init__(self, trainer: "HashTrainer"):
        super().__init__()
        self.model = trainer.model
        self.criterion = trainer.criterion if isinstance(trainer.criterion, nn.Module) else nn.Module()
        self._trainer = [trainer]  # a list, so the trainer is not registered as a submodule

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        return self._trainer[0].training_step(batch)


class HashTrainer:
    """The shared trainer; see the module docstring for the hooks a method overrides."""

    Config: ClassVar[type[BaseConfig]] = BaseConfig
    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""

    def __init__(self, cfg: BaseConfig):
        self.cfg = cfg
        self.log = get_logger()
        self.dist = setup_distributed(cfg.device)
        self.device = self.dist.device
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN time its conv algorithms once
        self.dataset_info = resolve_dataset(cfg.dataset)
        self.split_sizes = resolve_split_sizes(self.dataset_info, cfg.split, cfg.query_num, cfg.train_num, cfg.seed)
        self._check_precision()
        table = load_table(self.dataset_info, cfg.data_dir, cfg.index_file, cfg.caption_file, cfg.label_file,
                           cfg.data_root, cfg.numclass, progress=cfg.progress and self.dist.is_main)
        seed_everything(self.split_sizes.seed + self.dist.rank)
        self.backbone: CLIPBackbone = build_backbone(cfg.backbone, cfg.clip_path, cfg.max_words)
        self.data: DataBundle = build_datasets(table, self.split_sizes, self.backbone.image_size, cfg.max_words,
                                               cfg.train_transform, cfg.eval_caption,
                                               LabelNoise(cfg.label_noise, cfg.label_noise_mode, cfg.label_noise_seed))
        self.num_workers = min(8, os.cpu_count() or 1) if cfg.num_workers is None else cfg.num_workers
        if cfg.image_cache:
            folder = Path(cfg.cache_dir or Path(cfg.data_dir or self.dataset_info.default_dir) / "cache")
            attach_image_cache(self.data, folder, cfg.train_transform, self.backbone.image_size, self.num_workers,
                               build=self.dist.is_main, wait=self.dist.barrier, progress=cfg.progress and self.dist.is_main)
        self.num_classes = self.data.num_classes
        self.num_train = len(self.data.train)
        self.train_labels = self.data.train.labels.to(self.device)
        self.model = self.build_model().to(self.device)
        criterion = self.build_criterion()
        self.criterion = criterion.to(self.device) if isinstance(criterion, nn.Module) else criterion
        self.train_loader = self._train_loader()
        self.steps_per_epoch = len(self.train_loader)
        self.optimizer = self.build_optimizer()
        self.optimizers: list[torch.optim.Optimizer] = [self.optimizer, *self.extra_optimizers()]
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.precision == "fp16")
        self.step_module: nn.Module = _StepModule(self)
        if self.dist.enabled:
            self.step_module = sync_batchnorm(self.step_module, self.device)  # BatchNorm over the global batch
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.step_module = nn.parallel.DistributedDataParallel(self.step_module, device_ids=ids,
                                                                   find_unused_parameters=True)
        self.epochs_done = 0
        self.global_step = 0
        self.best: dict[str, Any] = {"score": -math.inf, "epoch": None, "results": None}
        self.last_results: Results | None = None
        self.run_dir: Path | None = None

    # ============================================================== hooks for methods
    def build_model(self) -> nn.Module:
        """CLIP with `Linear(D, bits) -> Dropout(0.2) -> tanh` per modality; forward(images, texts) -> (img, txt)."""
        dim, bits = self.backbone.embed_dim, self.cfg.output_dim
        return DualHashModel(self.backbone, LinearTanhHead(dim, bits), LinearTanhHead(dim, bits))

    def build_criterion(self) -> nn.Module | Callable | None:
        """The loss. Learnable parts (proxies, label networks...) belong here: they are checkpointed."""
        return None

    def param_groups(self) -> list[dict[str, Any]]:
        """BertAdam parameter groups: the backbone at `clip_lr`, every other model parameter at `lr`."""
        backbone = {id(p) for p in self.backbone.parameters()}
        rest = [p for p in self.model.parameters() if id(p) not in backbone and p.requires_grad]
        return [{"params": [p for p in self.backbone.parameters() if p.requires_grad], "lr": self.cfg.clip_lr},
                {"params": rest, "lr": self.cfg.lr}]

    def build_optimizer(self) -> torch.optim.Optimizer:
        """BertAdam over `param_groups()` with the reference settings and a warmup-cosine schedule."""
        groups = [g for g in self.param_groups() if g["params"]]
        return BertAdam(groups, lr=self.cfg.lr, warmup=self.cfg.warmup_proportion,
                        t_total=self.steps_per_epoch * self.cfg.epochs, schedule="warmup_cosine",
                        b1=0.9, b2=0.98, e=1e-6, weight_decay=self.cfg.weight_decay,
                        max_grad_norm=self.cfg.max_grad_norm)

    def extra_optimizers(self) -> list[torch.optim.Optimizer]:
        """Optimizers stepped after BertAdam every iteration (e.g. SGD for loss proxies)."""
        return []

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Forward and loss of one batch: `{"loss": scalar tensor, **other values to log}`."""
        raise NotImplementedError(f"{type(self).__name__} must implement training_step")

    def global_batch(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """This step's rows of every process, in rank order (differentiable; the identity in one process).

        Call it on the model outputs and labels before an in-batch loss: the gradients then equal those
        of one process holding the whole --batch-size (tests/test_distributed.py).
        """
        return self.dist.gather_batch(*tensors)

    def before_optimizer_step(self) -> None:
        """Called after backward, before the optimizers step (gradients are unscaled)."""

    def on_epoch_start(self, epoch: int) -> None:
        """Called before each training epoch (0-based)."""

    def on_epoch_end(self, epoch: int) -> None:
        """Called after each training epoch (0-based), before any evaluation."""

    def before_evaluation(self) -> None:
        """Called before the query and database sets are encoded (the model is in eval mode)."""

    def after_evaluation(self) -> None:
        """Called after both sets are encoded, before the model returns to train mode."""

    def encode(self, batch: Batch) -> CodeSets:
        """±1 codes of a batch for each code set: `{name: (image_codes, text_codes)}`."""
        image, text = self.model(batch["image"], batch["text"])
        return {self.primary_code_set: (to_binary_codes(image), to_binary_codes(text))}

    @property
    def primary_code_set(self) -> str:
        """The code set reported as the run's result (a method with several names the one of --output-dim)."""
        return str(self.cfg.output_dim)

    def distance(self) -> Callable | None:
        """Distance between code sets for ranking; None is the Hamming distance."""
        return None

    def selection_score(self, results: Results) -> float:
        """Which evaluation is the best: I->T + T->I mAP of the primary code set."""
        primary = results[self.primary_code_set]
        return primary["i2t"]["mAP"] + primary["t2i"]["mAP"]

    def extra_state(self) -> dict[str, Any]:
        """Method state that is neither in the model, the criterion nor an optimizer (checkpointed)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`extra_state` returned."""

    # ================================================================= data loading
    def _train_loader(self) -> DataLoader:
        """Shuffled global batches of --batch-size; under torchrun each process loads its share of every one."""
        if self.cfg.batch_size < self.dist.world_size:
            raise UserError(f"--batch-size {self.cfg.batch_size} is smaller than the {self.dist.world_size} processes")
        sampler = GlobalBatchSampler(len(self.data.train), self.cfg.batch_size, self.dist.rank, self.dist.world_size,
                                     seed=self.split_sizes.seed)
        # the generator (re-seeded every epoch like the sampler) gives the workers' seeds
        return DataLoader(self.data.train, batch_sampler=sampler, pin_memory=self.device.type == "cuda",
                          persistent_workers=self.num_workers > 0, generator=torch.Generator(),
                          **self._worker_options())

    def eval_loader(self, dataset) -> tuple[DataLoader, np.ndarray]:
        """Sequential loader over this process's share of `dataset` (all of it without torchrun), and the rows."""
        rows = self.dist.shard(len(dataset))
        loader = DataLoader(Subset(dataset, rows.tolist()), batch_size=self.cfg.eval_batch_size, shuffle=False,
                            pin_memory=self.device.type == "cuda", **self._worker_options())
        return loader, rows

    def _worker_options(self) -> dict[str, Any]:
        if self.num_workers == 0:
            return {"num_workers": 0}
        return {"num_workers": self.num_workers, "prefetch_factor": self.cfg.prefetch_factor}

    def _progress_disabled(self) -> bool | None:
        """tqdm's `disable`: off when asked or on other ranks; None lets tqdm hide bars when not on a terminal."""
        return None if self.cfg.progress and self.dist.is_main else True

    def to_device(self, batch: Batch) -> Batch:
        """The batch on the training device; uint8 images (from the image cache) are normalised there."""
        batch = {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
        if batch["image"].dtype == torch.uint8:
            batch["image"] = normalize_uint8(batch["image"])
        return batch

    # ================================================================ precision
    def _check_precision(self) -> None:
        if self.cfg.precision == "fp16" and self.dist.device.type != "cuda":
            raise UserError("--precision fp16 needs a CUDA GPU; use fp32 (or bf16) on the CPU")

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed-precision context for forward passes (a no-op for fp32)."""
        if self.cfg.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.cfg.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    # ================================================================ training
    def optimization_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Zero grads, run `training_step` (under DDP/autocast), backward, step every optimizer.

        A loss without gradient (e.g. no valid triplet in the batch) skips backward and the steps.
        """
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            out = self.step_module(batch)
        loss = out["loss"]
        if torch.is_tensor(loss) and loss.requires_grad:
            self.scaler.scale(loss).backward()
            for optimizer in self.optimizers:
                self.scaler.unscale_(optimizer)
            self.before_optimizer_step()
            for optimizer in self.optimizers:
                self.scaler.step(optimizer)
            self.scaler.update()
        return out

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the training set; returns the epoch means of the logged values."""
        self.model.train()
        if isinstance(self.criterion, nn.Module):
            self.criterion.train()
        loader = self.train_loader
        loader.batch_sampler.set_epoch(epoch)
        loader.generator.manual_seed(self.split_sizes.seed * 1000 + epoch)
        sums: dict[str, torch.Tensor] = {}
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{self.cfg.epochs}", leave=False,
                   disable=self._progress_disabled())
        for i, batch in enumerate(bar):
            out = self.optimization_step(self.to_device(batch))
            self.global_step += 1
            for key, value in out.items():
                value = value.detach().float() if torch.is_tensor(value) else torch.tensor(float(value))
                sums[key] = sums.get(key, 0) + value
            if i % 10 == 0:
                bar.set_postfix(loss=f"{float(sums['loss']) / (i + 1):.4f}")
        return {key: float(total) / max(len(loader), 1) for key, total in sums.items()}

    # ================================================================ evaluation
    @torch.no_grad()
    def encode_dataset(self, dataset, desc: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Codes of every item of `dataset`, in dataset order, gathered over all processes."""
        loader, _ = self.eval_loader(dataset)
        parts: dict[str, tuple[list, list]] = {}
        for batch in tqdm(loader, desc=desc, leave=False, disable=self._progress_disabled()):
            with self.autocast():
                code_sets = self.encode(self.to_device(batch))
            for name, (image, text) in code_sets.items():
                images, texts = parts.setdefault(name, ([], []))
                images.append(image.float())
                texts.append(text.float())
        return {name: (self.dist.gather_rows(torch.cat(images)).cpu().numpy(),
                       self.dist.gather_rows(torch.cat(texts)).cpu().numpy())
                for name, (images, texts) in parts.items()}

    def evaluate(self) -> tuple[Results, dict[str, dict[str, np.ndarray]]]:
        """Encode query and database sets and compute every metric of every code set (all four directions)."""
        self.model.eval()
        if isinstance(self.criterion, nn.Module):
            self.criterion.eval()
        self.before_evaluation()
        query = self.encode_dataset(self.data.query, "encoding queries")
        database = self.encode_dataset(self.data.retrieval, "encoding database")
        self.after_evaluation()
        self.model.train()
        q_labels = self.data.query.labels.numpy()
        r_labels = self.data.retrieval.labels.numpy()
        results: Results = {}
        codes: dict[str, dict[str, np.ndarray]] = {}
        for name in query:
            codes[name] = {"q_img": query[name][0], "q_txt": query[name][1], "r_img": database[name][0],
                           "r_txt": database[name][1], "q_l": q_labels, "r_l": r_labels}
            if self.dist.is_main:
                results[name] = evaluate_codes(*query[name], *database[name], q_labels, r_labels,
                                               distance=self.distance(), map_k=self.cfg.map_k)
        return results, codes

    # ================================================================ checkpoints
    def _modules_state(self) -> dict[str, Any]:
        state = {"model": self.model.state_dict()}
        if isinstance(self.criterion, nn.Module):
            state["criterion"] = self.criterion.state_dict()
        return state

    def _load_modules_state(self, payload: dict[str, Any], source: str) -> None:
        try:
            self.model.load_state_dict(payload["model"])
            if isinstance(self.criterion, nn.Module) and "criterion" in payload:
                self.criterion.load_state_dict(payload["criterion"])
        except RuntimeError as exc:
            raise UserError(f"{source} does not fit this model ({str(exc).splitlines()[0]}); was it trained with "
                            "another method, --output-dim or --backbone?") from None

    def _checkpoint_payload(self, with_optimizers: bool) -> dict[str, Any]:
        payload = {"method": self.name, "config": asdict(self.cfg), "epochs_done": self.epochs_done,
                   "global_step": self.global_step, **self._modules_state(), "extra": self.extra_state()}
        if with_optimizers:
            payload.update(optimizers=[opt.state_dict() for opt in self.optimizers], scaler=self.scaler.state_dict(),
                           rng=rng_state(), best=self.best, last_results=self.last_results)
        return payload

    def resume_from(self, path: str) -> None:
        """Restore model, criterion, optimizers (with their schedule position), RNG and bookkeeping."""
        payload = load_checkpoint(path)
        if "optimizers" not in payload:
            raise UserError(f"{path} holds no optimizer state (a best.pt?); resume from the run's last.pt")
        if payload["method"] != self.name:
            raise UserError(f"{path} was written by method {payload['method']}, not {self.name}")
        self._load_modules_state(payload, str(path))
        for optimizer, state in zip(self.optimizers, payload["optimizers"]):
            optimizer.load_state_dict(state)
        self.scaler.load_state_dict(payload["scaler"])
        set_rng_state(payload["rng"])
        self.load_extra_state(payload["extra"])
        self.epochs_done = payload["epochs_done"]
        self.global_step = payload["global_step"]
        self.best = payload["best"]
        self.last_results = payload["last_results"]

    def load_weights(self, path: str) -> int:
        """Model (and criterion) weights of a checkpoint; returns the epochs it had trained."""
        payload = load_checkpoint(path)
        self._load_modules_state(payload, str(path))
        self.load_extra_state(payload.get("extra", {}))
        return int(payload.get("epochs_done", 0))

    # ================================================================ run folder
    def _make_run_dir(self) -> Path:
        cfg = self.cfg
        if cfg.save_dir:
            path = Path(cfg.save_dir)
        else:
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            path = Path(cfg.result_dir) / self.name / self.dataset_info.name / str(cfg.output_dim) / stamp
        if self.dist.is_main:
            path.mkdir(parents=True, exist_ok=True)
            log_to_file(path / "train.log")
            write_yaml_config(cfg, path / "config.yaml")
        return path

    def _write_codes(self, codes: dict[str, dict[str, np.ndarray]]) -> None:
        """codes.mat holds the primary code set; with several sets each also goes to codes-<name>.mat."""
        files = {"codes.mat": codes[self.primary_code_set]}
        if len(codes) > 1:
            files.update({f"codes-{name}.mat": arrays for name, arrays in codes.items()})
        for file_name, arrays in files.items():
            tmp = self.run_dir / f"{file_name}.partial"
            sio.savemat(tmp, arrays)
            tmp.replace(self.run_dir / file_name)

    def _record(self, epoch: int, results: Results, codes, train_logs: dict[str, float]) -> None:
        """Log an evaluation, append it to metrics.jsonl and keep the best checkpoint and codes."""
        self.last_results = results
        primary = results[self.primary_code_set]
        score = self.selection_score(results)
        improved = score > self.best["score"]
        if improved:
            self.best = {"score": score, "epoch": epoch, "results": results}
            self._write_codes(codes)
            if self.cfg.save_best and not self.cfg.test:
                save_checkpoint(self._checkpoint_payload(with_optimizers=False), self.run_dir / "best.pt")
        line = {"epoch": epoch, "step": self.global_step, "time": round(time.time() - self._start, 1),
                "train": train_logs, "results": results}
        with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(line) + "\n")
        maps = "  ".join(f"{d.upper().replace('2', '->')} {primary[d]['mAP']:.4f}" for d in DIRECTIONS)
        best = self.best["results"][self.primary_code_set]
        self.log.info(f"epoch {epoch}: mAP {maps}  (best epoch {self.best['epoch']}: I->T {best['i2t']['mAP']:.4f} "
                      f"T->I {best['t2i']['mAP']:.4f}){'  *' if improved else ''}")

    def _summary(self, chance: float) -> dict[str, Any]:
        def maps(results: Results, name: str) -> dict[str, float]:
            return {d: results[name][d]["mAP"] for d in DIRECTIONS}

        best, last = self.best["results"], self.last_results
        summary = {"method": self.name, "dataset": self.dataset_info.name, "bits": self.cfg.output_dim,
                   "code_set": self.primary_code_set, "best": maps(best, self.primary_code_set),
                   "last": maps(last, self.primary_code_set), "best_epoch": self.best["epoch"],
                   "epochs": self.epochs_done, "chance_mAP": chance,
                   "best_details": best[self.primary_code_set], "last_details": last[self.primary_code_set]}
        if len(best) > 1:
            summary["code_sets"] = {name: {"best": maps(best, name), "last": maps(last, name),
                                           "best_details": best[name], "last_details": last[name]}
                                    for name in best}
        return summary

    def _finish(self) -> dict[str, Any]:
        """Write summary.json and pr_curve.png, print the result table."""
        chance = chance_map(self.data.query.labels, self.data.retrieval.labels)
        summary = self._summary(chance)
        codes_file = self.run_dir / "codes.mat"
        plot_pr_curves({f"{self.name} {self.primary_code_set} bits": codes_file}, self.run_dir / "pr_curve.png",
                       distance=self.distance())
        # summary.json comes last: its presence marks a finished run (sweeps skip such cells)
        tmp = self.run_dir / "summary.json.partial"
        tmp.write_text(json.dumps(summary, indent=2))
        tmp.replace(self.run_dir / "summary.json")
        self.log.info(format_result_table(summary))
        self.log.info(f"run folder: {self.run_dir}")
        return summary

    # ================================================================ entry points
    def run(self) -> dict[str, Any] | None:
        """Train (or, with --test, evaluate --pretrained) and write the run folder. Returns the summary."""
        cfg = self.cfg
        self._start = time.time()
        if cfg.test:
            if not cfg.pretrained:
                raise UserError("--test needs --pretrained CHECKPOINT (a best.pt or last.pt of a run folder)")
            self.epochs_done = self.load_weights(cfg.pretrained)
        elif cfg.resume:
            self.resume_from(cfg.resume)
        elif cfg.pretrained:
            self.load_weights(cfg.pretrained)
        self.run_dir = self._make_run_dir()
        self.log.info(self.describe())
        if cfg.test:
            results, codes = self.evaluate()
            if self.dist.is_main:
                self.best = {"score": -math.inf, "epoch": None, "results": None}
                self._record(self.epochs_done, results, codes, {})
        else:
            self.fit()
        summary = self._finish() if self.dist.is_main else None
        last = self.run_dir / "last.pt"
        if self.dist.is_main and not cfg.test and not cfg.keep_last and last.exists():
            last.unlink()
        return summary

    def fit(self) -> None:
        """Epochs from `epochs_done` to `cfg.epochs`, evaluating every `eval_every` epochs and after the last."""
        cfg = self.cfg
        for epoch in range(self.epochs_done, cfg.epochs):
            self.on_epoch_start(epoch)
            logs = self.train_epoch(epoch)
            self.on_epoch_end(epoch)
            self.epochs_done = epoch + 1
            self.log.info(f"epoch {epoch + 1}/{cfg.epochs}: " + " ".join(f"{k} {v:.4f}" for k, v in logs.items()))
            if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
                results, codes = self.evaluate()
                if self.dist.is_main:
                    self._record(epoch + 1, results, codes, logs)
            if self.dist.is_main:
                save_checkpoint(self._checkpoint_payload(with_optimizers=True), self.run_dir / "last.pt")
            self.dist.barrier()

    def describe(self) -> str:
        """One line about the run: method, data sizes, model size, device."""
        params = sum(p.numel() for p in self.model.parameters())
        d = self.data
        return (f"{self.name} on {self.dataset_info.name}: {len(d.table)} pairs, {self.num_classes} classes, "
                f"query {len(d.query)} / train {len(d.train)} / database {len(d.retrieval)} (seed "
                f"{self.split_sizes.seed}); {self.cfg.backbone} backbone, {params / 1e6:.1f} M parameters, "
                f"{self.cfg.output_dim} bits, {self.steps_per_epoch} steps/epoch on {self.device}"
                f"{f' x {self.dist.world_size} processes' if self.dist.enabled else ''}")


def chance_map(query_labels: torch.Tensor, database_labels: torch.Tensor, chunk: int = 1024) -> float:
    """mAP of a random ranking: the mean over queries of the fraction of relevant database items."""
    fractions = []
    for start in range(0, len(query_labels), chunk):
        relevant = (query_labels[start:start + chunk] @ database_labels.T) > 0
        fractions.append(relevant.float().mean(dim=1))
    return float(torch.cat(fractions).mean())


def format_result_table(summary: dict[str, Any]) -> str:
    """The run's result as a small text table (best and last evaluation, chance level)."""
    head = f"{summary['method']} on {summary['dataset']}, {summary['code_set']} bits (best epoch {summary['best_epoch']})"
    rows = [f"{'mAP':<8}" + "".join(f"{d.upper().replace('2', '->'):>9}" for d in DIRECTIONS)]
    for key in ("best", "last"):
        rows.append(f"{key:<8}" + "".join(f"{summary[key][d]:>9.4f}" for d in DIRECTIONS))
    rows.append(f"{'chance':<8}" + f"{summary['chance_mAP']:>9.4f}" * 4)
    return "\n".join([head, *rows])
