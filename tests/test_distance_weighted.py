"""train/distance_weighted.py: the sampling weights and the distances they use.

Two sets of expected values:
- `tests/distance_weighted_fixtures.json` ("miner_numpy"): computed independently in float64 NumPy from Wu et al.'s
  formula (weights ∝ 1/q(max(d, 0.5)), 0 on positives, normalised) for the unit rows of X and Y below with LABELS:
  every row of the intra-modal matrix with n = 4 and n = 64, the cross-modal matrix with n = 4, and the
  distance-matrix mode (distances between rows of the intra-modal matrix, squared values clamped at 1e-4, n = 5).
- the five 3-d codes X5: values of the released QinLab-WFU sampler code (`pdist`, `inverse_sphere_distances`, run in
  float32, hence the 1e-6 tolerance of the distance-matrix mode).
"""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from train.common import label_similarity
from train.distance_weighted import inverse_sphere_weights, mining_distances, profile_distances, triplet_roles

F64 = torch.float64
NUMPY = json.loads((Path(__file__).parent / "distance_weighted_fixtures.json").read_text())["miner_numpy"]

X = [[0.9, -0.2, 0.5, -0.7], [0.4, 0.3, -0.6, -0.1], [-0.5, 0.8, -0.2, 0.3], [-0.3, -0.6, 0.7, 0.9],
     [0.6, 0.1, -0.8, 0.3]]
Y = [[0.7, -0.4, 0.2, -0.5], [0.1, 0.6, -0.3, -0.4], [-0.8, 0.2, 0.4, 0.6], [0.2, -0.9, 0.5, 0.1],
     [0.5, 0.3, -0.6, 0.1]]
LABELS = [[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [1, 0, 1]]

X5 = [[1, 0, 0], [0.8, 0.6, 0], [0, 1, 0], [0, 0.6, 0.8], [-0.6, 0, 0.8]]
LABELS5 = [[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 1, 0]]


def t(values):
    return torch.tensor(values, dtype=F64)


def close(actual, expected, rtol=1e-9, atol=1e-15):
    assert torch.allclose(actual, torch.as_tensor(expected, dtype=F64), rtol=rtol, atol=atol), (actual, expected)


def distance_rows(cross=False):
    x, y = F.normalize(t(X), dim=-1), F.normalize(t(Y), dim=-1)
    return torch.cdist(x, y if cross else x)


SHARES = label_similarity(t(LABELS))


# ---------------------------------------------------------------- independent NumPy fixtures
@pytest.mark.parametrize("key, cross, dim", [("embeddings_intra", False, 4), ("embeddings_cross", True, 4),
                                             ("embeddings_intra_dim64", False, 64)])
def test_weights_match_numpy(key, cross, dim):
    source, n = mining_distances(distance_rows(cross), "embeddings", dim)
    assert n == dim
    close(inverse_sphere_weights(source, SHARES, n), NUMPY[key])


def test_distance_matrix_mode_weights_match_numpy():
    source, n = mining_distances(distance_rows(), "distance_matrix", 4)
    assert n == 5  # the number of columns, not the embedding size
    close(inverse_sphere_weights(source, SHARES, n), NUMPY["distance_matrix_intra"])


# ---------------------------------------------------------------- reference sampler values
def anchor0_weights(mode):
    x = t(X5)
    distances = torch.cdist(x, x).clamp_min(1e-8)
    source, dim = mining_distances(distances, mode, 3)
    return source[0], inverse_sphere_weights(source, label_similarity(t(LABELS5)), dim)[0]


def test_embeddings_mode_reference_values():
    source, q = anchor0_weights("embeddings")
    assert source.clamp_min(0.5).tolist() == pytest.approx([0.5, 0.63245553, 1.41421354, 1.41421354, 1.78885448],
                                                           abs=1e-7)
    assert q.tolist() == pytest.approx([0, 0, 0.35834983, 0.35834983, 0.28330037], abs=1e-7)
    d = source[2:]
    assert q[2:].tolist() == pytest.approx((1 / d / (1 / d).sum()).tolist(), abs=1e-12)  # q ∝ 1/d for n = 3


def test_distance_matrix_mode_reference_values():
    source, q = anchor0_weights("distance_matrix")
    assert source.clamp_min(0.5).tolist() == pytest.approx([0.5, 1.07464206, 2.1164031, 2.32450151, 2.81136394],
                                                           abs=1e-6)
    assert q.tolist() == pytest.approx([0, 0, 0.45842621, 0.34599897, 0.19557483], abs=1e-6)


# ---------------------------------------------------------------- properties
def reference_recipe(distances, positives, dim):
    """The released samplers' NumPy recipe: zero log q on positives, subtract the row max, exp, zero, normalise."""
    d = np.maximum(distances, 0.5)
    log_q = (2.0 - dim) * np.log(d) - ((dim - 3) / 2) * np.log(np.maximum(1.0 - 0.25 * d * d, 1e-8))
    log_q[positives] = 0
    q = np.exp(log_q - log_q.max(axis=1, keepdims=True))
    q[positives] = 0
    return q / q.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("dim", [16, 128])
def test_weights_sum_to_one_zero_on_positives_finite_and_equal_the_recipe(dim):
    gen = torch.Generator().manual_seed(dim)
    x = torch.randn(24, 8, generator=gen, dtype=F64)
    labels = (torch.rand(24, 5, generator=gen) < 0.3).double()
    labels[:, 0] += labels.sum(dim=1) == 0
    shares = label_similarity(labels)
    source = profile_distances(torch.cdist(x, x))
    q = inverse_sphere_weights(source, shares, dim)
    assert torch.isfinite(q).all()
    assert (q[shares] == 0).all()
    has_negative = (~shares).any(dim=1)
    assert q.sum(dim=1)[has_negative].tolist() == pytest.approx([1.0] * int(has_negative.sum()), abs=1e-12)
    expected = reference_recipe(source.numpy(), shares.numpy(), dim)
    assert np.allclose(q.numpy()[has_negative.numpy()], expected[has_negative.numpy()], atol=1e-12)


def test_weights_follow_the_closed_form_on_the_sphere():
    # n = 3: 1/q(d) ∝ d^{-1} (cutoff 0.5): weights ∝ 1/max(d, 0.5)
    d = t([[0.0, 0.3, 1.0, 2.0]])
    positives = torch.tensor([[True, False, False, False]])
    expected = t([0.0, 2.0, 1.0, 0.5])
    close(inverse_sphere_weights(d, positives, 3)[0], expected / expected.sum())


def test_a_row_of_positives_gets_zero_weights():
    labels = t([[1, 0], [1, 1], [0, 1]])  # every column shares a label with row 1
    q = inverse_sphere_weights(torch.cdist(t([[1, 0], [0, 1], [1, 1]]), t([[1, 0], [0, 1], [1, 1]])),
                               label_similarity(labels), 16)
    assert q[1].tolist() == [0, 0, 0]


def test_profile_distances_are_distances_between_rows():
    d = distance_rows()
    profile = profile_distances(d)
    assert torch.allclose(profile[0, 1], (d[0] - d[1]).norm())
    assert torch.allclose(profile.diagonal(), torch.full((5,), math.sqrt(1e-4), dtype=F64))  # the clamp
    with pytest.raises(ValueError, match="miner input"):
        mining_distances(d, "profile", 4)


def test_triplet_roles():
    labels = t([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0], [1, 0, 0], [0, 1, 1]])
    shares, candidates, anchors = triplet_roles(labels)
    assert torch.equal(shares, label_similarity(labels))
    assert torch.equal(candidates, shares & ~torch.eye(6, dtype=torch.bool))
    # row 3 has no label (never anchors); every other row has a candidate and a negative
    assert anchors.tolist() == [True, True, True, False, True, True]
    _, _, anchors = triplet_roles(t([[1, 0], [1, 1], [0, 1]]))
    assert anchors.tolist() == [True, False, True]  # row 1 shares a label with every row: no negative
