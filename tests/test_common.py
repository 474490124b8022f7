"""Shared method building blocks: label similarity, likelihood, InfoNCE, float32 regions, running means."""
import math

import pytest
import torch

from train.common import RunningMean, at_least_float32, bayesian_likelihood, float32_region, info_nce, label_similarity


def test_label_similarity_batch_and_cross():
    labels = torch.tensor([[1.0, 0, 0], [1, 1, 0], [0, 0, 1]])
    expected = torch.tensor([[True, True, False], [True, True, False], [False, False, True]])
    assert torch.equal(label_similarity(labels), expected)
    no_diag = label_similarity(labels, diagonal=False)
    assert torch.equal(no_diag, expected & ~torch.eye(3, dtype=torch.bool))
    bank = torch.tensor([[0.0, 0, 1], [0, 1, 0]])
    assert torch.equal(label_similarity(labels, bank), torch.tensor([[False, False], [False, True], [True, False]]))
    with pytest.raises(ValueError):
        label_similarity(labels, bank, diagonal=False)


def test_float32_region_promotes_half_keeps_double():
    half, double = torch.ones(2, dtype=torch.bfloat16), torch.ones(2, dtype=torch.float64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with float32_region(half, double) as (a, b):
            assert a.dtype == torch.float32 and b.dtype == torch.float64
            assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32  # autocast is off here
    assert at_least_float32(torch.ones(1, dtype=torch.float16)).dtype == torch.float32


def test_running_mean():
    mean = RunningMean()
    assert mean.mean == 0.0
    mean.add(1.0)
    mean.add(4.0, count=2)
    assert mean.mean == pytest.approx(3.0)
    mean.reset()
    assert mean.mean == 0.0 and mean.count == 0


def test_bayesian_likelihood_values():
    """log 2 at zero inner products whatever S; the clamp at ±64 before halving saturates the terms."""
    zero = bayesian_likelihood(torch.zeros(2, 3), torch.ones(4, 3), torch.ones(2, 4))
    assert zero.item() == pytest.approx(math.log(2))
    assert bayesian_likelihood(torch.tensor([[200.0]]), torch.tensor([[1.0]]), torch.tensor([[0.0]])).item() == 32.0
    assert bayesian_likelihood(torch.tensor([[200.0]]), torch.tensor([[1.0]]), torch.tensor([[1.0]])).item() == 0.0
    bank, codes = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.5, -1.0], [1.0, 1.0]])
    s = 0.5 * torch.tensor([-1.5, 3.0])
    expected = (torch.log1p(s.exp()) - torch.tensor([0.0, 1.0]) * s).mean()
    assert bayesian_likelihood(bank, codes, torch.tensor([[0.0, 1.0]])).item() == pytest.approx(expected.item())


def test_info_nce_matches_the_clip_loss():
    generator = torch.Generator().manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(5, 4, generator=generator), dim=1)
    b = torch.nn.functional.normalize(torch.randn(5, 4, generator=generator), dim=1)
    logits = a @ b.T / 0.07
    rows = -torch.log_softmax(logits, dim=1).diagonal().mean()
    columns = -torch.log_softmax(logits, dim=0).diagonal().mean()
    assert info_nce(a, b, 0.07).item() == pytest.approx(0.5 * (rows + columns).item(), rel=1e-6)
    assert info_nce(a, b, 0.07).item() == pytest.approx(info_nce(b, a, 0.07).item(), rel=1e-6)
