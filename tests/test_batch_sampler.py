"""GlobalBatchSampler: the single-process order of a shuffling DataLoader; the shares of processes cover it."""
import pytest
import torch
from torch.utils.data import DataLoader

from dataset.batch_sampler import GlobalBatchSampler


@pytest.mark.parametrize("num_workers", [0, 2])
def test_one_process_gives_the_batches_of_a_shuffling_dataloader(num_workers):
    generator = torch.Generator()
    loader = DataLoader(list(range(103)), batch_size=32, shuffle=True, generator=generator, num_workers=num_workers)
    for epoch in range(3):
        generator.manual_seed(7 * 1000 + epoch)
        sampler = GlobalBatchSampler(103, 32, seed=7)
        sampler.set_epoch(epoch)
        assert list(sampler) == [batch.tolist() for batch in loader]
        assert len(sampler) == 4


def test_process_shares_are_contiguous_parts_of_the_global_batches():
    single = GlobalBatchSampler(103, 32, seed=3)
    shares = [GlobalBatchSampler(103, 32, rank=r, world_size=3, seed=3) for r in range(3)]
    for sampler in (single, *shares):
        sampler.set_epoch(5)
    per_rank = [list(s) for s in shares]
    assert [len(s) for s in shares] == [4, 4, 4] and all(len(p) == 4 for p in per_rank)
    for step, batch in enumerate(single):
        assert sum((p[step] for p in per_rank), []) == batch  # gathered in rank order = the global batch
        assert max(len(p[step]) for p in per_rank) - min(len(p[step]) for p in per_rank) <= 1


def test_a_last_batch_smaller_than_the_process_count_is_dropped():
    shares = [GlobalBatchSampler(33, 32, rank=r, world_size=2, seed=0) for r in range(2)]
    assert [len(s) for s in shares] == [1, 1] and all(len(list(s)) == 1 for s in shares)
    assert len(GlobalBatchSampler(33, 32)) == 2
    with pytest.raises(ValueError, match="smaller than"):
        GlobalBatchSampler(10, 1, world_size=2)
