"""Shared method building blocks: label similarity, float32 regions, running means."""
import pytest
import torch

from train.common import RunningMean, at_least_float32, float32_region, label_similarity


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
