"""Split protocol regression values (docs/datasets.md, Splits) and invariants."""
import numpy as np
import pytest

from dataset.splits import split_rows
from utils.errors import UserError

TABLE = [  # N, seed, q, t, first 3 query rows, first 3 train rows, last retrieval row
    (20015, 1814, 5000, 10000, [19460, 7831, 17831], [16, 3433, 17957], 10265),
    (122218, 1814, 5000, 10000, [110374, 106988, 64378], [47900, 644, 2816], 89601),
    (195834, 1814, 5000, 10000, [57723, 167302, 18799], [79576, 101618, 86069], 91702),
    (20015, 1, 2000, 10000, [11550, 16587, 6189], [1204, 4300, 1160], 235),
    (122218, 1, 5000, 10000, [89146, 35722, 24652], [118914, 104544, 84655], 98539),
    (190421, 1, 2100, 10500, [114085, 13813, 155323], [168487, 89960, 135508], 128037),
]


@pytest.mark.parametrize("n, seed, q, t, query, train, last", TABLE)
def test_reference_split_rows(n, seed, q, t, query, train, last):
    split = split_rows(n, q, t, seed)
    assert split.query[:3].tolist() == query
    assert split.train[:3].tolist() == train
    assert split.retrieval[-1] == last
    assert len(split.query) == q and len(split.train) == t and len(split.retrieval) == n - q


def test_train_is_inside_retrieval_and_query_is_disjoint():
    split = split_rows(1000, 100, 500, 7)
    assert np.array_equal(split.train, split.retrieval[:500])
    assert not set(split.query) & set(split.retrieval)
    assert sorted(np.concatenate([split.query, split.retrieval]).tolist()) == list(range(1000))


def test_sizes_too_large_is_a_user_error():
    with pytest.raises(UserError, match="exceeds"):
        split_rows(100, 50, 60, 1)
