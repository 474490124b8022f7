"""BertAdam and its schedules against the reference's values (docs/backbone.md) and a naive re-implementation."""
import math

import pytest
import torch

from utils.optim import BertAdam, schedule_factor, warmup_constant, warmup_linear


def test_warmup_cosine_fixture():
    values = [schedule_factor(step, 100, 0.1) for step in (0, 5, 10, 50, 99)]
    assert values == pytest.approx([0.0, 0.5, 0.975528, 0.5, 0.000247], abs=1e-6)


def test_other_schedules_and_no_schedule():
    assert warmup_constant(0.05, 0.1) == 0.5 and warmup_constant(0.7, 0.1) == 1.0
    assert warmup_linear(0.55, 0.1) == pytest.approx(0.5) and warmup_linear(1.0, 0.1) == 0.0
    assert schedule_factor(7, -1, 0.1) == 1.0


def naive_bertadam(params, grads_per_step, lrs, t_total, warmup=0.1, wd=0.2, clip=1.0):
    state = [dict(step=0, m=torch.zeros_like(p), v=torch.zeros_like(p)) for p in params]
    for grads in grads_per_step:
        for p, g, s, lr in zip(params, grads, state, lrs):
            if g is None:
                continue
            g = g.clone()
            norm = g.norm()
            g = g * min(1.0, clip / (norm.item() + 1e-6))
            s["m"] = 0.9 * s["m"] + 0.1 * g
            s["v"] = 0.98 * s["v"] + 0.02 * g * g
            update = s["m"] / (s["v"].sqrt() + 1e-6) + wd * p
            x = s["step"] / t_total
            factor = x / warmup if x < warmup else 0.5 * (1 + math.cos(math.pi * x))
            p -= lr * factor * update
            s["step"] += 1
    return params


def test_matches_naive_implementation_with_groups_and_skipped_gradients():
    torch.manual_seed(0)
    start = [torch.randn(3, 4), torch.randn(5)]
    params = [torch.nn.Parameter(p.clone()) for p in start]
    optimizer = BertAdam([{"params": params[:1], "lr": 1e-2}, {"params": params[1:], "lr": 1e-3}], lr=1e-3,
                         warmup=0.1, t_total=20, b1=0.9, b2=0.98, e=1e-6, weight_decay=0.2, max_grad_norm=1.0)
    history = []
    for step in range(15):
        grads = [torch.randn(3, 4) * 3, None if step == 3 else torch.randn(5) * 0.1]
        history.append(grads)
        for p, g in zip(params, grads):
            p.grad = None if g is None else g.clone()
        optimizer.step()
    expected = naive_bertadam([p.clone() for p in start], history, [1e-2, 1e-3], 20)
    for p, q in zip(params, expected):
        assert torch.allclose(p, q, atol=1e-6)
    assert optimizer.state[params[0]]["step"] == 15 and optimizer.state[params[1]]["step"] == 14


def test_first_update_under_warmup_has_zero_learning_rate():
    p = torch.nn.Parameter(torch.ones(3))
    optimizer = BertAdam([p], lr=0.1, warmup=0.1, t_total=10, weight_decay=0.0)
    p.grad = torch.ones(3)
    optimizer.step()
    assert torch.equal(p.detach(), torch.ones(3))
    # the next step has x = 1/10 = warmup: already the cosine branch (the reference's small drop)
    assert optimizer.get_lr() == pytest.approx([0.1 * 0.5 * (1 + math.cos(math.pi * 0.1))])
