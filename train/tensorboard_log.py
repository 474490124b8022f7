"""`--tensorboard`: loss terms and learning rates every N steps, every metric of every evaluation, the hparams."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from train.history import EvaluationHistory, Results
from utils.errors import UserError


class TensorBoardLog:
    """Event files under the run folder (`tensorboard --logdir result/` shows every run of a sweep)."""

    def __init__(self, writer: Any, every: int):
        self.writer = writer
        self.every = every

    @classmethod
    def open(cls, folder: Path, every: int) -> "TensorBoardLog":
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError("--tensorboard needs the tensorboard package: pip install tensorboard "
                            "(or drop --tensorboard)") from None
        return cls(SummaryWriter(log_dir=str(folder)), every)

    def step(self, global_step: int, values: dict[str, torch.Tensor], optimizers: list[torch.optim.Optimizer]) -> None:
        """The step's loss terms and each optimizer group's learning rate, every `every` steps."""
        if global_step % self.every:
            return
        for key, value in values.items():
            self.writer.add_scalar(f"train/{key}", float(value), global_step)
        for index, optimizer in enumerate(optimizers):
            rates = optimizer.get_lr() if hasattr(optimizer, "get_lr") else [g["lr"] for g in optimizer.param_groups]
            for group, rate in enumerate(rates):
                self.writer.add_scalar(f"lr/optimizer{index}_group{group}", float(rate), global_step)

    def evaluation(self, epoch: int, results: Results) -> None:
        """Every scalar metric of every code set and direction, at the epoch."""
        for code_set, directions in results.items():
            for direction, metrics in directions.items():
                for metric, value in metrics.items():
                    if isinstance(value, (int, float)):
                        self.writer.add_scalar(f"{code_set}bits/{direction}/{metric}", value, epoch)
        self.writer.flush()

    def hparams(self, config: Any, history: EvaluationHistory) -> None:
        """The run's options with its best mAP (TensorBoard's HPARAMS tab)."""
        options = {k: (v if isinstance(v, (int, float, str, bool)) else str(v))
                   for k, v in dataclasses.asdict(config).items()}
        best = history.best["results"][history.primary] if history.best["results"] else {}
        metrics = {f"hparam/best_{d}_mAP": best[d]["mAP"] for d in best}
        self.writer.add_hparams(options, metrics, run_name=".")

    def close(self) -> None:
        self.writer.close()
