"""The training loop: epochs of optimization steps, evaluation, last.pt, and the stop on a non-finite loss."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn
from tqdm import tqdm

from train.data import shuffle_for_epoch
from train.tensorboard_log import TensorBoardLog
from utils.errors import UserError

if TYPE_CHECKING:
    from train.base import HashTrainer


def fit(trainer: "HashTrainer") -> None:
    """Epochs from `epochs_done` to `cfg.epochs`, evaluating every `eval_every` epochs and after the last."""
    cfg = trainer.cfg
    board = TensorBoardLog.open(trainer.run_folder.file("tensorboard"), cfg.tensorboard_every) \
        if cfg.tensorboard and trainer.dist.is_main else None
    try:
        for epoch in range(trainer.epochs_done, cfg.epochs):
            trainer.on_epoch_start(epoch)
            logs = train_epoch(trainer, epoch, board)
            trainer.on_epoch_end(epoch)
            trainer.epochs_done = epoch + 1
            trainer.log.info(f"epoch {epoch + 1}/{cfg.epochs}: " + " ".join(f"{k} {v:.4f}" for k, v in logs.items()))
            stop = False
            if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
                results, codes = trainer.evaluate()
                if trainer.dist.is_main:
                    trainer.record_evaluation(epoch + 1, results, codes, logs)
                    if board is not None:
                        board.evaluation(epoch + 1, results)
                    stop = trainer.should_stop()
            if trainer.dist.is_main:
                trainer.run_folder.save_checkpoint(trainer.checkpoint_payload(with_optimizers=True), "last.pt")
            if trainer.dist.global_count(int(stop)):  # the main process's answer, on every process
                trainer.log.info(f"stopping early after epoch {epoch + 1}: no new best in the last evaluations")
                break
            trainer.dist.barrier()
        if board is not None:
            board.hparams(trainer.cfg, trainer.history)
    finally:
        if board is not None:
            board.close()


def train_epoch(trainer: "HashTrainer", epoch: int, board: TensorBoardLog | None = None) -> dict[str, float]:
    """One pass over the training set; returns the epoch means of the logged values.

    A non-finite loss stops the run (UserError naming the step and the loss terms): the last.pt of the
    previous epoch stays, and a model trained into NaN never becomes the best checkpoint.
    """
    trainer.model.train()
    if isinstance(trainer.criterion, nn.Module):
        trainer.criterion.train()
    loader = shuffle_for_epoch(trainer.train_loader, trainer.cfg.train_seed, epoch)
    sums: dict[str, torch.Tensor] = {}
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{trainer.cfg.epochs}", leave=False,
               disable=None if trainer.show_progress else True)
    for i, batch in enumerate(bar):
        out = trainer.optimization_step(trainer.to_device(batch))
        trainer.global_step += 1
        values = {key: value.detach().float() if torch.is_tensor(value) else torch.tensor(float(value))
                  for key, value in out.items()}
        if not math.isfinite(float(values["loss"])):
            terms = ", ".join(f"{key} {float(value):.4g}" for key, value in values.items())
            raise UserError(f"the loss became non-finite at step {trainer.global_step} (epoch {epoch + 1}): {terms}; "
                            "training stopped (lower --lr / --clip-lr, or check the data); last.pt holds the "
                            "previous epoch")
        for key, value in values.items():
            sums[key] = sums.get(key, 0) + value
        if board is not None:
            board.step(trainer.global_step, values, trainer.optimizers)
        if i % 10 == 0:
            bar.set_postfix(loss=f"{float(sums['loss']) / (i + 1):.4f}")
    return {key: float(total) / max(len(loader), 1) for key, total in sums.items()}
