"""DSPH fixtures (README: Fixtures) and properties of the proxy loss."""
import math

import pytest
import torch

from train.coding_theory import code_threshold
from train.DSPH.loss import ProxyLoss


def make_loss(proxies, threshold, alpha=0.8):
    loss = ProxyLoss(len(proxies), len(proxies[0]), threshold, alpha)
    with torch.no_grad():
        loss.proxies.copy_(torch.tensor(proxies, dtype=torch.float64))
    return loss.double()


def total(proxies, x, y, labels, threshold, alpha=0.8):
    loss = make_loss(proxies, threshold, alpha)
    t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    return loss(t(x), t(y), t(labels))


def test_fixture_a_single_label_no_regulariser():
    out = total([[1, 0], [0, 1]], [[1, 0]], [[0, 1]], [[1, 0]], 0.0)
    assert out["proxy_image"].item() == pytest.approx(0.0)
    assert out["proxy_text"].item() == pytest.approx(2.0)
    assert out["regulariser"].item() == 0.0
    assert out["loss"].item() == pytest.approx(2.0)


FIXTURE_B = dict(proxies=[[1, 0], [0, 1], [-1, 0], [0, -1]], x=[[1, 0], [1, 0.2]], y=[[0.5, 0.5], [-1, 0.3]],
                 labels=[[1, 1, 0, 0], [0, 0, 1, 1]])


@pytest.mark.parametrize("threshold, expected, reg", [(0.0, 3.0062970, 1.1172847), (0.25, 2.5322680, 0.8172847)])
def test_fixture_b(threshold, expected, reg):
    out = total(FIXTURE_B["proxies"], FIXTURE_B["x"], FIXTURE_B["y"], FIXTURE_B["labels"], threshold)
    assert out["loss"].item() == pytest.approx(expected, abs=1e-6)
    assert out["regulariser"].item() == pytest.approx(reg, abs=1e-6)


def test_fixture_b_terms_at_zero_threshold():
    loss = make_loss(FIXTURE_B["proxies"], 0.0)
    t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    pull_x, push_x = loss.proxy_terms(t(FIXTURE_B["x"]), t(FIXTURE_B["labels"]))
    pull_y, push_y = loss.proxy_terms(t(FIXTURE_B["y"]), t(FIXTURE_B["labels"]))
    assert [pull_x.item(), push_x.item(), pull_y.item(), push_y.item()] == pytest.approx(
        [1.0441742, 0.2941742, 0.4788270, 0.0718370], abs=1e-6)


P4 = [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]]
X4 = [[1, 0.5, 0], [0, 1, -1], [0.2, 0.3, 0.4], [-1, 0, 0.5]]
Y4 = [[1, 0, 1], [-0.5, 1, 0], [0, 0, 1], [0.3, -0.2, 0.1]]


@pytest.mark.parametrize("threshold, expected, reg", [(0.0, 2.6680958, 0.2529821), (0.125, 2.4014292, 0.1529822)])
def test_fixture_c_mixed_single_and_multi_label(threshold, expected, reg):
    labels = [[1, 1, 0, 0], [0, 0, 1, 1], [1, 0, 1, 0], [0, 1, 0, 0]]
    out = total(P4, X4, Y4, labels, threshold)
    assert out["loss"].item() == pytest.approx(expected, abs=1e-6)
    assert out["regulariser"].item() == pytest.approx(reg, abs=1e-6)


def test_fixture_d_no_label_disjoint_pair():
    labels = [[1, 1, 0, 0], [0, 1, 1, 0], [1, 1, 0, 1], [0, 1, 0, 0]]
    out = total(P4, X4, Y4, labels, 0.0)
    assert out["regulariser"].item() == 0.0
    assert out["loss"].item() == pytest.approx(2.1555831, abs=1e-6)


def test_invariant_to_positive_rescaling():
    labels = [[1, 1, 0, 0], [0, 0, 1, 1], [1, 0, 1, 0], [0, 1, 0, 0]]
    base = total(P4, X4, Y4, labels, 0.125)["loss"].item()
    scaled = total([[3 * v for v in row] for row in P4], [[2 * v for v in r] for r in X4],
                   [[0.5 * v for v in r] for r in Y4], labels, 0.125)["loss"].item()
    assert scaled == pytest.approx(base, abs=1e-12)


def test_positive_proxy_moves_towards_code():
    loss = make_loss([[1.0, 0.0], [0.0, 1.0]], 0.0)
    code = torch.tensor([[0.6, 0.8]], dtype=torch.float64)
    labels = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    before = torch.cosine_similarity(loss.proxies[0], code[0], dim=0).item()
    out = loss(code, code, labels)
    out["loss"].backward()
    with torch.no_grad():
        loss.proxies -= 0.01 * loss.proxies.grad
    assert torch.cosine_similarity(loss.proxies[0], code[0], dim=0).item() > before


@pytest.mark.parametrize("bits, classes, expected", [(16, 80, 0.25), (32, 80, 0.125), (64, 24, 0.0), (64, 80, 0.0),
                                                     (16, 21, 0.0), (32, 24, 0.0), (16, 24, 0.0), (32, 21, 0.0)])
def test_threshold_lookup(bits, classes, expected):
    assert code_threshold(bits, classes) == expected


def test_threshold_table_entries():
    table = {16: (-1, -0.25, 0, 0, 0, 0.25, 0.25, 0.375), 32: (-1, -0.3125, -0.125, 0, 0, 0, 0.125, 0.1875),
             64: (-1, -0.3125, -0.125, -0.03125, 0, 0, 0, 0.09375), 128: (-1, -0.328125, -0.125, -0.0625, 0, 0, 0, 0)}
    for bits, row in table.items():
        for k, value in enumerate(row, start=1):
            assert code_threshold(bits, 2 ** k) == value  # C = 2^k gives ceil(log2 C) = k
    assert code_threshold(48, 24) is None and code_threshold(64, 300) is None


def test_proxy_init_std_and_determinism():
    a, b = ProxyLoss(80, 64, 0.0), ProxyLoss(80, 64, 0.0)
    assert torch.equal(a.proxies, b.proxies)
    assert a.proxies.std().item() == pytest.approx(math.sqrt(2 / 80), rel=0.15)


def test_proxy_init_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    ProxyLoss(24, 16, 0.0)
    assert torch.equal(torch.rand(3), expected)
