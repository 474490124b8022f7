"""The optimizers of a run and the gradient scaler, with the backward / step helpers methods call.

A method with one loss uses the default step (zero, backward, unscale, hook, step all). A method with several
backward passes per iteration (e.g. a generator trained after the hash network) calls, in its own order,

    self.backward(loss)                     # scaled by the fp16 gradient scaler (a no-op scale otherwise)
    self.unscale_gradients(opt_a, opt_b)    # before clipping
    clip_grad_norm_(...)
    self.step(opt_a, opt_b)                 # step them, then update the scaler

so the fp16 scaler sees every backward and every step exactly once per group.
"""
from __future__ import annotations

from typing import Any

import torch


class Optimization:
    """The run's optimizers (the first is BertAdam over the model) and its GradScaler."""

    def __init__(self, optimizers: list[torch.optim.Optimizer], device_type: str, fp16: bool):
        self.optimizers = optimizers
        self.scaler = torch.amp.GradScaler(device_type, enabled=fp16)
        self._unscaled: set[int] = set()

    def zero_grad(self, *optimizers: torch.optim.Optimizer) -> None:
        """Clear the gradients of `optimizers` (all of them when none is named)."""
        for optimizer in optimizers or self.optimizers:
            optimizer.zero_grad(set_to_none=True)

    def backward(self, loss: torch.Tensor) -> None:
        """Backward of `loss`, scaled when fp16 training scales the loss."""
        self.scaler.scale(loss).backward()

    def unscale_gradients(self, *optimizers: torch.optim.Optimizer) -> None:
        """Divide the gradients of `optimizers` by the loss scale (before clipping); each at most once per step."""
        for optimizer in optimizers or self.optimizers:
            if id(optimizer) not in self._unscaled:
                self.scaler.unscale_(optimizer)
                self._unscaled.add(id(optimizer))

    def step(self, *optimizers: torch.optim.Optimizer) -> None:
        """Step `optimizers` (all when none is named; skipped on inf/nan fp16 gradients), then update the scaler."""
        for optimizer in optimizers or self.optimizers:
            if self.scaler.is_enabled() and not _has_gradients(optimizer):
                continue  # nothing to step (e.g. a loss without gradient), and the scaler would refuse it
            self.scaler.step(optimizer)
        self.scaler.update()
        self._unscaled.clear()

    def state_dict(self) -> dict[str, Any]:
        return {"optimizers": [opt.state_dict() for opt in self.optimizers], "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for optimizer, saved in zip(self.optimizers, state["optimizers"]):
            optimizer.load_state_dict(saved)
        self.scaler.load_state_dict(state["scaler"])


def _has_gradients(optimizer: torch.optim.Optimizer) -> bool:
    return any(p.grad is not None for group in optimizer.param_groups for p in group["params"])
