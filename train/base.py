"""HashTrainer: the hooks a method overrides, and the run that ties the engine parts together.

A method subclasses `HashTrainer`, sets `Config` (its dataclass of options), `name` and `paper`, and overrides
only what differs (docs/architecture.md lists the hooks):

    build_model()            the network (default: CLIP + one Linear-Dropout-tanh head per modality)
    build_criterion()        the loss; an nn.Module's parameters and buffers are checkpointed
    param_groups()           BertAdam groups (default: backbone at clip_lr, the rest of the model at lr)
    schedule_steps()         length of the warmup-cosine schedule in steps (default: steps per epoch x epochs)
    extra_optimizers()       optimizers for parts outside BertAdam (e.g. proxies with SGD)
    training_step(batch)     -> {"loss": tensor, **logs}; the only required override
    optimization_step(batch) the whole step, for methods with several backward passes (use backward/step)
    on_before_optimizer_step(), on_epoch_start(epoch), on_epoch_end(epoch),
    on_evaluation_start(), on_evaluation_end()
    encode(batch)            -> {code_set_name: (image_codes, text_codes)} as ±1
    distance()               None (Hamming) or a callable for other code formats
    selection_score(results) which evaluation is "best"
    extra_state()/load_extra_state()  state that is neither a module nor an optimizer

and calls `global_batch(*tensors)` in `training_step` before an in-batch loss: under torchrun it gathers the
outputs and labels of the whole global batch (differentiably), so the loss is the loss of one process.
`distributed` declares how the method behaves under torchrun.

Construction is cheap (it stores the config). `run()` does the work: `setup()` (processes, data, backbone,
then `build_parts()`: model, loss, optimizers), the training loop (train/loop.py), evaluation
(train/evaluator.py) and the run folder's files (train/run_folder.py). Tests build a trainer's parts on a
stub backbone without data through `train.testing.build_trainer`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from dataset.builder import DataBundle, build_datasets, load_table, resolve_split_sizes
from dataset.catalog import resolve_dataset
from dataset.image_cache import attach_image_cache
from dataset.label_noise import LabelNoise
from dataset.transforms import normalize_uint8
from model.clip import build_backbone
from model.heads import DualHashModel, LinearTanhHead
from train.config import BaseConfig
from train.data import DataFacts, loader_options, train_loader, worker_count
from train.evaluator import Batch, Codes, CodeSets, Evaluator
from train.history import EvaluationHistory, Results, format_result_table, map_table
from train.optimization import Optimization
from train.run_folder import RunFolder
from utils.checkpoint import load_checkpoint
from utils.distributed import DistContext, requested_world_size, setup_distributed, sync_batchnorm, teardown_distributed
from utils.errors import UserError
from utils.logs import get_logger
from utils.metrics import chance_map, to_binary_codes
from utils.optim import BertAdam
from utils.plots import plot_pr_curves
from utils.seed import rng_state, seed_everything, set_rng_state

DISTRIBUTED_MODES = ("exact", "local", "unsupported")
# what --resume reads from a last.pt besides the model
RESUME_ENTRIES = ("optimizers", "scaler", "rng", "extra", "epochs_done", "global_step", "history")


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
    # Under torchrun: "exact" (every loss term sees the gathered global batch: N processes train like one;
    # tested with two processes), "local" (runs, but some terms see only each process's batch: the method's
    # README says which and why), or "unsupported" (refused before any setup). `distributed_note` says why.
    distributed: ClassVar[str] = "exact"
    distributed_note: ClassVar[str] = ""

    def __init__(self, cfg: BaseConfig):
        self.cfg = cfg
        self.log = get_logger()
        self.epochs_done = 0
        self.global_step = 0
        self.history = EvaluationHistory(self.primary_code_set, self._per_direction_metrics())
        self.run_folder: RunFolder | None = None

    # ============================================================== hooks for methods
    def build_model(self) -> nn.Module:
        """CLIP with `Linear(D, bits) -> Dropout -> tanh` per modality (`--head-init`, `--head-dropout`)."""
        return DualHashModel(self.backbone, self.default_head(), self.default_head())

    def default_head(self) -> LinearTanhHead:
        """One default hash head: `Linear(D, bits) -> Dropout(--head-dropout) -> tanh`, `--head-init` weights."""
        return LinearTanhHead(self.backbone.embed_dim, self.cfg.output_dim, self.cfg.head_dropout,
                              init=self.cfg.head_init)

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
                        t_total=self.schedule_steps(), schedule="warmup_cosine",
                        b1=0.9, b2=0.98, e=1e-6, weight_decay=self.cfg.weight_decay,
                        max_grad_norm=self.cfg.max_grad_norm)

    def schedule_steps(self) -> int:
        """Length of the learning-rate schedule in optimizer steps: steps per epoch x epochs."""
        return self.steps_per_epoch * self.cfg.epochs

    def extra_optimizers(self) -> list[torch.optim.Optimizer]:
        """Optimizers stepped after BertAdam every iteration (e.g. SGD for loss proxies)."""
        return []

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Forward and loss of one batch: `{"loss": scalar tensor, **other values to log}`."""
        raise NotImplementedError(f"{type(self).__name__} must implement training_step")

    def optimization_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Zero grads, run `training_step` (under DDP/autocast), backward, step every optimizer.

        A loss without gradient (e.g. no valid triplet in the batch) skips backward and the steps. A method
        with several backward passes overrides this with `zero_grad`, `backward`, `unscale_gradients`, `step`.
        """
        self.zero_grad()
        with self.autocast():
            out = self.step_module(batch)
        loss = out["loss"]
        if torch.is_tensor(loss) and loss.requires_grad:
            self.backward(loss)
            self.unscale_gradients()
            self.on_before_optimizer_step()
            self.step()
        return out

    def on_before_optimizer_step(self) -> None:
        """Called after backward, before the optimizers step (gradients are unscaled)."""

    def on_epoch_start(self, epoch: int) -> None:
        """Called before each training epoch (0-based)."""

    def on_epoch_end(self, epoch: int) -> None:
        """Called after each training epoch (0-based), before any evaluation."""

    def on_evaluation_start(self) -> None:
        """Called before the query and database sets are encoded (the model is in eval mode)."""

    def on_evaluation_end(self) -> None:
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

    def should_stop(self) -> bool:
        """Called after each evaluation (main process; the answer reaches every process): end training early.

        Default: `--patience N` evaluations in a row without a new best by `selection_score`.
        """
        patience = self.cfg.patience
        return patience > 0 and self.history.evaluations_since(self.history.best["epoch"]) >= patience

    def extra_state(self) -> dict[str, Any]:
        """Method state that is neither in the model, the criterion nor an optimizer (checkpointed)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`extra_state` returned."""

    # ============================================================== helpers for methods
    def global_batch(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """This step's rows of every process, in rank order (differentiable; the identity in one process).

        Call it on the model outputs and labels before an in-batch loss: the gradients then equal those
        of one process holding the whole --batch-size (tests/test_distributed.py).
        """
        return self.dist.gather_batch(*tensors)

    def global_batch_of(self, outputs: Any) -> Any:
        """`global_batch` for a structure of tensors (a dataclass, dict, tuple or list), returned in that structure."""
        if not self.dist.enabled:
            return outputs
        return map_tensors(outputs, lambda tensor: self.dist.gather_batch(tensor)[0])

    def step_generator(self, stream: int = 0) -> torch.Generator:
        """A generator on the training device seeded from the training seed, the global step and `stream`.

        Under torchrun every process draws the same values (random parts of a loss computed on the gathered batch,
        such as flipped bits or sampled codes, then agree); the draws differ from step to step and are restored
        exactly by --resume.
        """
        generator = torch.Generator(device=self.device)
        generator.manual_seed(((self.cfg.train_seed or 0) * 1_000_003 + self.global_step) * 101 + stream)
        return generator

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed-precision context for forward passes (a no-op for fp32)."""
        if self.cfg.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.cfg.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def zero_grad(self, *optimizers: torch.optim.Optimizer) -> None:
        """Clear the gradients of `optimizers` (all when none is named)."""
        self.optimization.zero_grad(*optimizers)

    def backward(self, loss: torch.Tensor) -> None:
        """Backward of `loss` (scaled under fp16)."""
        self.optimization.backward(loss)

    def unscale_gradients(self, *optimizers: torch.optim.Optimizer) -> None:
        """Unscale the fp16 gradients of `optimizers` (all when none is named) before clipping them."""
        self.optimization.unscale_gradients(*optimizers)

    def step(self, *optimizers: torch.optim.Optimizer) -> None:
        """Step `optimizers` (all when none is named) and update the fp16 gradient scaler."""
        self.optimization.step(*optimizers)

    @property
    def optimizers(self) -> list[torch.optim.Optimizer]:
        return self.optimization.optimizers

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """BertAdam over the model (the first optimizer)."""
        return self.optimization.optimizers[0]

    @property
    def scaler(self) -> torch.amp.GradScaler:
        return self.optimization.scaler

    # ================================================================= setup
    @classmethod
    def method_folder(cls) -> str:
        """The registry name of the method: its folder under train/ (what `--method` and config.yaml use)."""
        parts = cls.__module__.split(".")
        return parts[1] if len(parts) > 2 and parts[0] == "train" else cls.name

    @classmethod
    def check_distributed(cls, world_size: int) -> None:
        """Refuse torchrun for a method that does not support it (before any setup)."""
        if world_size > 1 and cls.distributed == "unsupported":
            raise UserError(f"{cls.name} cannot run under torchrun: {cls.distributed_note}; run it as one process")

    def setup(self) -> None:
        """Processes, run-folder check, data, backbone, then the model, loss and optimizers (`build_parts`)."""
        cfg = self.cfg
        self.check_distributed(requested_world_size())
        self.dataset_info = resolve_dataset(cfg.dataset)
        self.split_sizes = resolve_split_sizes(self.dataset_info, cfg.split, cfg.query_num, cfg.train_num, cfg.seed)
        cfg.seed = self.split_sizes.seed
        cfg.train_seed = self.split_sizes.seed if cfg.train_seed is None else cfg.train_seed
        self.run_folder = RunFolder(self._run_path(), resume=bool(cfg.resume), overwrite=cfg.overwrite)
        self.run_folder.check()
        dist = setup_distributed(cfg.device)
        if cfg.precision == "fp16" and dist.device.type != "cuda":
            raise UserError("--precision fp16 needs a CUDA GPU; use fp32 (or bf16) on the CPU")
        if dist.enabled and self.distributed == "local":
            self.log.info(f"{self.name} under torchrun: {self.distributed_note}")
        if dist.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN time its conv algorithms once
        table = load_table(self.dataset_info, cfg.data_dir, cfg.index_file, cfg.caption_file, cfg.label_file,
                           cfg.data_root, cfg.numclass, progress=cfg.progress and dist.is_main)
        seed_everything(cfg.train_seed + dist.rank)
        backbone = build_backbone(cfg.backbone, cfg.clip_path, cfg.max_words)
        self.data: DataBundle = build_datasets(table, self.split_sizes, backbone.image_size, cfg.max_words,
                                               cfg.train_transform, cfg.eval_caption,
                                               LabelNoise(cfg.label_noise, cfg.label_noise_mode, cfg.label_noise_seed))
        self.num_workers = worker_count(cfg.num_workers)
        if cfg.image_cache:
            folder = Path(cfg.cache_dir or Path(cfg.data_dir or self.dataset_info.default_dir) / "cache")
            attach_image_cache(self.data, folder, cfg.train_transform, backbone.image_size, self.num_workers,
                               build=dist.is_main, wait=dist.barrier, progress=cfg.progress and dist.is_main)
        self.train_loader = train_loader(self.data, cfg.batch_size, dist, cfg.train_seed, self.num_workers,
                                         cfg.prefetch_factor)
        self.build_parts(backbone, DataFacts.from_data(self.data, dist.device), len(self.train_loader), dist)
        self.evaluator = Evaluator(dist, cfg.eval_batch_size, loader_options(self.num_workers, cfg.prefetch_factor),
                                   self.to_device, self.autocast, show_progress=self.show_progress)

    def build_parts(self, backbone: nn.Module, facts: DataFacts, steps_per_epoch: int,
                    dist: DistContext | None = None) -> None:
        """The model, loss and optimizers (and DDP under torchrun) on `backbone` for data described by `facts`."""
        self.dist = dist or DistContext(0, 1, torch.device("cpu"))
        self.device = self.dist.device
        self.backbone = backbone
        self.facts = facts
        self.num_classes = facts.num_classes
        self.num_train = facts.num_train
        self.train_labels = facts.train_labels
        self.steps_per_epoch = steps_per_epoch
        self.model = self.build_model().to(self.device)
        criterion = self.build_criterion()
        self.criterion = criterion.to(self.device) if isinstance(criterion, nn.Module) else criterion
        optimizers = [self.build_optimizer(), *self.extra_optimizers()]
        self.optimization = Optimization(optimizers, self.device.type, fp16=self.cfg.precision == "fp16")
        self.step_module: nn.Module = _StepModule(self)
        if self.dist.enabled:
            self.step_module = sync_batchnorm(self.step_module, self.device)  # BatchNorm over the global batch
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.step_module = nn.parallel.DistributedDataParallel(self.step_module, device_ids=ids,
                                                                   find_unused_parameters=True)

    def to_device(self, batch: Batch) -> Batch:
        """The batch on the training device; uint8 images (from the image cache) are normalised there."""
        batch = {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
        if batch["image"].dtype == torch.uint8:
            batch["image"] = normalize_uint8(batch["image"])
        return batch

    @property
    def show_progress(self) -> bool:
        """Progress bars on: asked for and on the main process."""
        return self.cfg.progress and self.dist.is_main

    def _run_path(self) -> Path:
        cfg = self.cfg
        if cfg.save_dir:
            return Path(cfg.save_dir)
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        return Path(cfg.result_dir) / self.name / self.dataset_info.name / str(cfg.output_dim) / stamp

    def _per_direction_metrics(self) -> tuple[str, ...]:
        return ("mAP",) if self.cfg.map_k is None else ("mAP", f"mAP@{self.cfg.map_k}")

    # ================================================================ evaluation
    def evaluate(self) -> tuple[Results, Codes]:
        """Encode query and database sets and compute every metric of every code set (all four directions)."""
        self.model.eval()
        if isinstance(self.criterion, nn.Module):
            self.criterion.eval()
        self.on_evaluation_start()
        results, codes = self.evaluator.evaluate(self.encode, self.data.query, self.data.retrieval,
                                                 distance=self.distance(), map_k=self.cfg.map_k)
        self.on_evaluation_end()
        self.model.train()
        return results, codes

    def record_evaluation(self, epoch: int, results: Results, codes: Codes, train_logs: dict[str, float]) -> None:
        """Log an evaluation, append it to metrics.jsonl and keep the best checkpoint and codes."""
        improved = self.history.add(epoch, results, self.selection_score(results))
        if improved:
            self.run_folder.write_codes(codes, self.primary_code_set)
            if self.cfg.save_best and not self.cfg.test:
                self.run_folder.save_checkpoint(self.checkpoint_payload(with_optimizers=False), "best.pt")
        self.run_folder.append_metrics({"epoch": epoch, "step": self.global_step,
                                        "time": round(time.time() - self._start, 1), "train": train_logs,
                                        "results": results})
        self.log.info(self.history.progress_line(epoch, improved))

    # ================================================================ checkpoints
    def checkpoint_payload(self, with_optimizers: bool) -> dict[str, Any]:
        """What best.pt (weights) and last.pt (everything for --resume) hold."""
        payload = {"method": self.name, "config": asdict(self.cfg), "facts": self.facts.to_record(),
                   "epochs_done": self.epochs_done, "global_step": self.global_step, **self._modules_state(),
                   "extra": self.extra_state()}
        if with_optimizers:
            payload.update(self.optimization.state_dict(), rng=rng_state(), history=self.history.state_dict())
        return payload

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

    def _check_same_run_kind(self, payload: dict[str, Any], path: str, purpose: str) -> None:
        """The checkpoint's method and code length must be this run's (for --test and --resume)."""
        if payload.get("method") != self.name:
            raise UserError(f"{path} was written by method {payload.get('method')}, not {self.name}; {purpose} "
                            f"with --method {payload.get('method')}")
        bits = payload.get("config", {}).get("output_dim")
        if bits is not None and bits != self.cfg.output_dim:
            raise UserError(f"{path} holds {bits}-bit codes, not --output-dim {self.cfg.output_dim}; {purpose} "
                            f"with --output-dim {bits}")

    def resume_from(self, path: str) -> None:
        """Restore model, criterion, optimizers (with their schedule position), RNG and bookkeeping."""
        payload = load_checkpoint(path)
        if "optimizers" not in payload:
            raise UserError(f"{path} holds no optimizer state (a best.pt?); resume from the run's last.pt")
        missing = [key for key in RESUME_ENTRIES if key not in payload]
        if missing:
            raise UserError(f"{path} is a damaged checkpoint (no {', '.join(missing)} entry); resume from another "
                            "last.pt")
        self._check_same_run_kind(payload, path, "resume it")
        self._load_modules_state(payload, str(path))
        self.optimization.load_state_dict(payload)
        set_rng_state(payload["rng"])
        self.load_extra_state(payload["extra"])
        self.epochs_done = payload["epochs_done"]
        self.global_step = payload["global_step"]
        self.history.load_state_dict(payload["history"])

    def load_weights_for_test(self, path: str) -> int:
        """Model (and criterion) weights of a checkpoint of this method and code length; returns its epochs."""
        payload = load_checkpoint(path)
        self._check_same_run_kind(payload, path, "evaluate it")
        self._load_modules_state(payload, str(path))
        self.load_extra_state(payload.get("extra", {}))
        return int(payload.get("epochs_done", 0))

    def load_pretrained(self, path: str) -> None:
        """Start training from a checkpoint, possibly of another method: every tensor whose name and shape fit
        is loaded; the log says which parts were loaded and which were not."""
        payload = load_checkpoint(path)
        targets = {"model": self.model}
        if isinstance(self.criterion, nn.Module):
            targets["criterion"] = self.criterion
        loaded, skipped = [], []
        for key, module in targets.items():
            own = module.state_dict()
            fitting = {name: value for name, value in payload.get(key, {}).items()
                       if name in own and torch.is_tensor(value) and value.shape == own[name].shape}
            module.load_state_dict(fitting, strict=False)
            loaded += [f"{key}.{name}" for name in fitting]
            skipped += [f"{key}.{name}" for name in own if name not in fitting]
        if not loaded:
            raise UserError(f"{path} has no weights that fit this {self.name} model; check --backbone and --method")
        if payload.get("method") == self.name:
            self.load_extra_state(payload.get("extra", {}))
        self.log.info(f"--pretrained {path} ({payload.get('method')}): loaded {len(loaded)} tensors "
                      f"({_summarise_names(loaded)}); not loaded {len(skipped)} ({_summarise_names(skipped)})")

    # ================================================================ entry points
    def run(self) -> dict[str, Any] | None:
        """Train (or, with --test, evaluate --pretrained) and write the run folder. Returns the summary."""
        from train.loop import fit  # the loop module imports this one

        cfg = self.cfg
        self._start = time.time()
        try:
            self.setup()
            if cfg.test:
                if not cfg.pretrained:
                    raise UserError("--test needs --pretrained CHECKPOINT (a best.pt or last.pt of a run folder)")
                self.epochs_done = self.load_weights_for_test(cfg.pretrained)
            elif cfg.resume:
                self.resume_from(cfg.resume)
            elif cfg.pretrained:
                self.load_pretrained(cfg.pretrained)
            if self.dist.is_main:
                self.run_folder.open(cfg, self.method_folder())
            self.log.info(self.describe())
            if cfg.test:
                results, codes = self.evaluate()
                if self.dist.is_main:
                    self.record_evaluation(self.epochs_done, results, codes, {})
            else:
                fit(self)
            summary = self.finish() if self.dist.is_main else None
            last = self.run_folder.file("last.pt")
            if self.dist.is_main and not cfg.test and not cfg.keep_last and last.exists():
                last.unlink()
            return summary
        finally:
            if self.run_folder is not None:
                self.run_folder.close()
            teardown_distributed()

    def finish(self) -> dict[str, Any]:
        """Write summary.json and pr_curve.png, print the result table."""
        summary = self.summary(chance_map(self.data.query.labels, self.data.retrieval.labels))
        plot_pr_curves({f"{self.name} {self.primary_code_set} bits": self.run_folder.file("codes.mat")},
                       self.run_folder.file("pr_curve.png"), distance=self.distance())
        self.run_folder.write_summary(summary)
        self.log.info(format_result_table(summary))
        self.log.info(f"run folder: {self.run_folder.path}")
        return summary

    def summary(self, chance: float) -> dict[str, Any]:
        """The content of summary.json."""
        best, last, primary = self.history.best["results"], self.history.last, self.primary_code_set
        summary = {"method": self.name, "dataset": self.dataset_info.name, "bits": self.cfg.output_dim,
                   "code_set": primary, "best": map_table(best, primary), "last": map_table(last, primary),
                   "best_epoch": self.history.best["epoch"],
                   "best_per_direction": self.history.per_direction.get(primary, {}),
                   "epochs": self.epochs_done, "seed": self.cfg.seed, "train_seed": self.cfg.train_seed,
                   "label_noise": self.cfg.label_noise,
                   "label_noise_mode": self.cfg.label_noise_mode, "chance_mAP": chance,
                   "best_details": best[primary], "last_details": last[primary]}
        if len(best) > 1:
            summary["code_sets"] = {name: {"best": map_table(best, name), "last": map_table(last, name),
                                           "best_per_direction": self.history.per_direction.get(name, {}),
                                           "best_details": best[name], "last_details": last[name]}
                                    for name in best}
        return summary

    def describe(self) -> str:
        """One line about the run: method, data sizes, model size, device."""
        params = sum(p.numel() for p in self.model.parameters())
        d = self.data
        return (f"{self.name} on {self.dataset_info.name}: {len(d.table)} pairs, {self.num_classes} classes, "
                f"query {len(d.query)} / train {len(d.train)} / database {len(d.retrieval)} (seed "
                f"{self.split_sizes.seed}, training seed {self.cfg.train_seed}); {self.cfg.backbone} backbone, "
                f"{params / 1e6:.1f} M parameters, {self.cfg.output_dim} bits, {self.steps_per_epoch} steps/epoch "
                f"on {self.device}{f' x {self.dist.world_size} processes' if self.dist.enabled else ''}")


def map_tensors(value: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """`value` with `fn` applied to every tensor inside it (dataclasses, dicts, tuples and lists are walked)."""
    if torch.is_tensor(value):
        return fn(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{f.name: map_tensors(getattr(value, f.name), fn)
                                             for f in dataclasses.fields(value) if f.init})
    if isinstance(value, dict):
        return {key: map_tensors(item, fn) for key, item in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(map_tensors(item, fn) for item in value)
    return value


def _summarise_names(names: list[str], shown: int = 3) -> str:
    """A short description of many parameter names: their top-level prefixes with counts."""
    if not names:
        return "none"
    prefixes: dict[str, int] = {}
    for name in names:
        prefix = ".".join(name.split(".")[:2])
        prefixes[prefix] = prefixes.get(prefix, 0) + 1
    items = [f"{prefix} ({count})" for prefix, count in sorted(prefixes.items(), key=lambda kv: -kv[1])]
    return ", ".join(items[:shown]) + (f", ... {len(items) - shown} more" if len(items) > shown else "")

