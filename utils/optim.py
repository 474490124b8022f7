"""BertAdam and its learning-rate schedules, exactly as the CLIP-hashing reference repos use them.

BertAdam (the HuggingFace BERT port) differs from torch's AdamW: no bias correction, epsilon
added to sqrt(v), gradient norm clipped per parameter tensor, decoupled weight decay added to
the update of every tensor (biases and norms included), and a schedule evaluated at each
parameter's own step count (0 at the first update, so the first update has learning rate 0
under a warmup schedule). See docs/backbone.md, section "BertAdam and its schedules".
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Callable, Iterable

import torch
from torch.optim import Optimizer


def warmup_cosine(x: float, warmup: float) -> float:
    """x / warmup during warmup, then 0.5 (1 + cos(pi x)) of the *global* progress x (a small drop at x = warmup)."""
    return x / warmup if x < warmup else 0.5 * (1.0 + math.cos(math.pi * x))


def warmup_constant(x: float, warmup: float) -> float:
    """x / warmup during warmup, then 1."""
    return x / warmup if x < warmup else 1.0


def warmup_linear(x: float, warmup: float) -> float:
    """x / warmup during warmup, then linear decay to 0 at x = 1."""
    return x / warmup if x < warmup else max((x - 1.0) / (warmup - 1.0), 0.0)


SCHEDULES: dict[str, Callable[[float, float], float]] = {
    "warmup_cosine": warmup_cosine,
    "warmup_constant": warmup_constant,
    "warmup_linear": warmup_linear,
}


def schedule_factor(step: int, t_total: int, warmup: float, schedule: str = "warmup_cosine") -> float:
    """Learning-rate factor at `step` of `t_total`; `t_total = -1` disables scheduling (factor 1)."""
    if t_total == -1:
        return 1.0
    return SCHEDULES[schedule](step / t_total, warmup)


class BertAdam(Optimizer):
    """Adam without bias correction, with per-tensor gradient clipping and decoupled weight decay.

    Per group: `lr`, `warmup` (fraction of t_total), `t_total` (-1: no schedule), `schedule`,
    `b1`, `b2`, `e`, `weight_decay`, `max_grad_norm` (<= 0: no clipping). Parameters whose
    gradient is None are skipped and their step count does not advance.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float,
        warmup: float = -1,
        t_total: int = -1,
        schedule: str = "warmup_cosine",
        b1: float = 0.9,
        b2: float = 0.999,
        e: float = 1e-6,
        weight_decay: float = 0.01,
        max_grad_norm: float = 1.0,
    ):
        if lr < 0:
            raise ValueError(f"invalid learning rate {lr}")
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {schedule!r}; choose one of {sorted(SCHEDULES)}")
        if t_total != -1 and not 0.0 < warmup < 1.0:
            raise ValueError(f"warmup must be in (0, 1) when scheduling, got {warmup}")
        defaults = dict(lr=lr, warmup=warmup, t_total=t_total, schedule=schedule, b1=b1, b2=b2, e=e,
                        weight_decay=weight_decay, max_grad_norm=max_grad_norm)
        super().__init__(params, defaults)

    def get_lr(self) -> list[float]:
        """Scheduled learning rate of every parameter that has state ([0] before the first step); for logging."""
        rates = []
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state.get(p)
                if state:
                    rates.append(group["lr"] * schedule_factor(state["step"], group["t_total"], group["warmup"],
                                                                group["schedule"]))
        return rates or [0.0]

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            for p in params:
                if p.grad.is_sparse:
                    raise RuntimeError("BertAdam does not support sparse gradients")
                if not self.state[p]:
                    self.state[p].update(step=0, next_m=torch.zeros_like(p), next_v=torch.zeros_like(p))
            # parameters that skipped steps have their own counts: update each count group with its own lr
            by_step: dict[int, list[torch.Tensor]] = defaultdict(list)
            for p in params:
                by_step[self.state[p]["step"]].append(p)
            for step, group_params in by_step.items():
                self._update(group, group_params, step)
        return loss

    def _update(self, group: dict, params: list[torch.Tensor], step: int) -> None:
        grads = [p.grad for p in params]
        if group["max_grad_norm"] > 0:
            norms = torch._foreach_norm(grads)
            coefs = [(group["max_grad_norm"] / (n + 1e-6)).clamp_(max=1.0) for n in norms]
            torch._foreach_mul_(grads, coefs)
        ms = [self.state[p]["next_m"] for p in params]
        vs = [self.state[p]["next_v"] for p in params]
        torch._foreach_mul_(ms, group["b1"])
        torch._foreach_add_(ms, grads, alpha=1 - group["b1"])
        torch._foreach_mul_(vs, group["b2"])
        torch._foreach_addcmul_(vs, grads, grads, value=1 - group["b2"])
        denominators = torch._foreach_sqrt(vs)
        torch._foreach_add_(denominators, group["e"])
        updates = torch._foreach_div(ms, denominators)
        if group["weight_decay"] > 0.0:
            torch._foreach_add_(updates, params, alpha=group["weight_decay"])
        lr = group["lr"] * schedule_factor(step, group["t_total"], group["warmup"], group["schedule"])
        torch._foreach_add_(params, updates, alpha=-lr)
        for p in params:
            self.state[p]["step"] = step + 1
