"""DDBH fixtures (README: Fixtures) and properties of the boundary-preserving loss."""
import math

import pytest
import torch

from train.common import label_similarity
from train.DDBH.loss import (
    BoundaryHashLoss,
    base_points,
    boundary_logits,
    boundary_loss,
    boundary_loss_at,
    classwise_quantization,
    likelihood_parameters,
)


def t(values, dtype=torch.float32):
    return torch.tensor(values, dtype=dtype)


def loop_boundary_loss(u, v, labels, bits):
    """README.md, section Loss, literally: one anchor row at a time, boolean masks, Python floats for base points."""
    s = label_similarity(labels)
    inner = u @ v.T
    upper, c = bits / 4, -(6 / bits) * math.log(99)
    sims, diss, count = 0.0, 0.0, 0
    for r in range(len(u)):
        if s[r].sum() == 0 or (~s[r]).sum() == 0:
            continue
        count += 1
        sim, dis = inner[r][s[r]], inner[r][~s[r]]
        mean_s = sim.mean().clamp(0, upper).item()
        d_max = dis.sort().values[int(len(dis) * 0.9):].mean().item()
        bp = mean_s - (upper - mean_s) / upper * abs(mean_s - d_max)
        mean_d = dis.mean().clamp(0, upper).item()
        s_min = sim.sort(descending=True).values[int(len(sim) * 0.9):].mean().item()
        bpd = mean_d - mean_d / upper * abs(mean_d - s_min)
        sim_loss = torch.cat([torch.nn.functional.softplus(c * (sim[sim > bp] - bp)),
                              torch.nn.functional.softplus(2 * c * (sim[sim < bp] - bp))])
        dis_loss = torch.cat([torch.nn.functional.softplus(-c * (dis[dis < bpd] - bpd)),
                              torch.nn.functional.softplus(-2 * c * (dis[dis > bpd] - bpd))])
        sims, diss = sims + sim_loss.mean(), diss + dis_loss.mean()
    return (sims + diss) / count if count else 0.0


# ------------------------------------------------------------------ likelihood parameters
@pytest.mark.parametrize("bits, expected", [(16, -1.723169944), (32, -0.861584972), (64, -0.430792486)])
def test_slope_and_hard_side_factor(bits, expected):
    c, a, offset = likelihood_parameters(bits)
    assert c == pytest.approx(expected, abs=1e-9)
    assert c == pytest.approx(-(6 / bits) * math.log(99), abs=1e-12)
    assert a == pytest.approx(2.0, abs=1e-15)
    assert offset == 0.0


@pytest.mark.parametrize("bits", [16, 32, 64])
def test_likelihood_anchor_points(bits):
    likelihood = lambda diff, easy: torch.sigmoid(-boundary_logits(t([diff], torch.float64),  # noqa: E731
                                                                   t([easy], torch.bool), bits)).item()
    assert likelihood(bits / 6, True) == pytest.approx(0.99, abs=1e-12)
    assert likelihood(-bits / 12, False) == pytest.approx(0.01, abs=1e-12)
    for easy in (True, False):
        loss = torch.nn.functional.softplus(boundary_logits(t([0.0]), t([easy], torch.bool), bits)).item()
        assert loss == pytest.approx(math.log(2), abs=1e-7)


# ------------------------------------------------------------------ fixtures A and B
FIXTURE_A = dict(bits=4, labels=[[1, 0], [1, 0], [0, 1], [0, 1]],
                 u_i=[[.8, .6, .4, .2], [.7, .3, -.5, .6], [-.6, -.4, .9, -.3], [-.2, .7, -.8, -.5]],
                 u_t=[[.9, .5, .3, -.2], [.4, -.6, .8, .7], [-.5, -.9, -.3, -.6], [.7, -.2, -.4, -.8]],
                 expected=dict(bpl_ii=4.0675693, bpl_tt=5.4492531, bpl_it=2.3288405, q_i=0.5287499, q_t=0.51,
                               loss=11.9495382))
_UI_B = [[.9, -.8, .7, .6, -.5, .4, .3, -.2], [.8, -.7, .9, .5, .5, .3, -.4, .1], [-.6, .9, .2, .8, .7, -.3, .5, .6],
         [-.9, .1, -.8, -.7, .6, -.5, .4, .9], [.2, .3, -.4, .5, .6, .7, -.8, .9]]
FIXTURE_B = dict(bits=8, labels=[[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]], u_i=_UI_B,
                 u_t=[[-0.9 * v for v in reversed(row)] for row in _UI_B],
                 expected=dict(bpl_ii=5.0570736, bpl_tt=3.7484744, bpl_it=4.5111794, q_i=0.8625000, q_t=1.0044250,
                               loss=13.5034189))


@pytest.mark.parametrize("fixture", [FIXTURE_A, FIXTURE_B], ids=["A", "B"])
def test_reference_fixture(fixture):
    u_i, u_t, labels = t(fixture["u_i"]), t(fixture["u_t"]), t(fixture["labels"])
    out = BoundaryHashLoss(fixture["bits"])(u_i, u_t, labels)
    similar = label_similarity(labels)
    got = {key: out[key].item() for key in ("bpl_ii", "bpl_tt", "bpl_it", "loss")}
    got.update(q_i=classwise_quantization(u_i, similar).item(), q_t=classwise_quantization(u_t, similar).item())
    for key, value in fixture["expected"].items():
        assert got[key] == pytest.approx(value, abs=1e-5), key


def test_fixture_b_second_listing_of_text_codes():
    u_t = [[.18, -.27, -.36, .45, -.54, -.63, .72, -.81], [-.09, .36, -.27, -.45, -.45, -.81, .63, -.72],
           [-.54, -.45, .27, -.63, -.72, -.18, -.81, .54], [-.81, -.36, .45, -.54, .63, .72, -.09, .81],
           [-.81, .72, -.63, -.54, -.45, .36, -.27, -.18]]
    assert torch.allclose(t(u_t), t(FIXTURE_B["u_t"]), atol=1e-7)


def test_fixture_b_row_similar_to_all_is_not_an_anchor():
    labels = t(FIXTURE_B["labels"])
    inner = t(FIXTURE_B["u_i"]) @ t(FIXTURE_B["u_i"]).T
    _, _, valid = base_points(inner, label_similarity(labels), 8)
    assert valid.tolist() == [True, True, True, True, False]


# ------------------------------------------------------------------ vectorised form == per-row loop
@pytest.mark.parametrize("seed", range(5))
def test_vectorised_equals_row_loop(seed):
    g = torch.Generator().manual_seed(seed)
    u = torch.tanh(2 * torch.randn(8, 16, generator=g, dtype=torch.float64))
    v = torch.tanh(2 * torch.randn(8, 16, generator=g, dtype=torch.float64))
    labels = (torch.rand(8, 4, generator=g, dtype=torch.float64) < 0.35).double()
    labels[labels.sum(1) == 0, 0] = 1
    s = label_similarity(labels)
    for a, b in ((u, u), (v, v), (u, v)):
        expected = loop_boundary_loss(a, b, labels, 16)
        assert boundary_loss(a, b, s, 16).item() == pytest.approx(float(expected), abs=1e-6)


@pytest.mark.parametrize("n, kept", [(1, 1), (9, 1), (10, 1), (11, 2), (20, 2), (30, 3), (31, 4), (63, 7)])
def test_tail_size_is_n_minus_floor_of_ninety_percent(n, kept):
    # one anchor, n dissimilar products 1..n, its similar product (itself) huge: dMax = mean of the `kept` largest
    inner = torch.cat([t([100.0]), torch.arange(1, n + 1, dtype=torch.float32)])[None]
    similar = torch.zeros(1, n + 1, dtype=torch.bool)
    similar[0, 0] = True
    bits = 4 * 1000  # U = 1000 > every product: meanS = 100 unclamped
    bp, _, _ = base_points(inner, similar, bits)
    d_max = sum(range(n - kept + 1, n + 1)) / kept
    assert n - int(n * 0.9) == kept
    assert bp.item() == pytest.approx(100 - (1000 - 100) / 1000 * abs(100 - d_max), abs=1e-4)


# ------------------------------------------------------------------ base points carry no gradient
def test_no_gradient_through_base_points():
    g = torch.Generator().manual_seed(3)
    labels = (torch.rand(8, 3, generator=g) < 0.4).double()
    labels[labels.sum(1) == 0, 1] = 1
    s = label_similarity(labels)
    u = torch.tanh(torch.randn(8, 16, generator=g, dtype=torch.float64)).requires_grad_()
    v = torch.tanh(torch.randn(8, 16, generator=g, dtype=torch.float64)).requires_grad_()
    boundary_loss(u, v, s, 16).backward()
    grads = u.grad.clone(), v.grad.clone()
    u.grad = v.grad = None
    with torch.no_grad():
        bp, bpd, valid = base_points(u @ v.T, s, 16)
    boundary_loss_at(u @ v.T, s, bp.clone(), bpd.clone(), valid, 16).backward()
    assert torch.equal(grads[0], u.grad) and torch.equal(grads[1], v.grad)
    assert grads[0].abs().sum() > 0


# ------------------------------------------------------------------ quantisation
def test_quantization_is_zero_for_binary_codes():
    codes = t([[1, -1, 1, 1], [-1, -1, 1, -1], [1, 1, 1, 1]])
    assert classwise_quantization(codes, label_similarity(t([[1, 0], [0, 1], [1, 1]]))).item() == 0.0


def test_quantization_weights_by_neighbour_count():
    u = t([[.5, -1, 1, 1], [-1, -1, 1, -1]])
    labels = t([[1, 0], [0, 1]])
    single = classwise_quantization(u, label_similarity(labels)).item()
    assert single == pytest.approx(0.25 / 8, abs=1e-7)  # only row 0 has an error, weight 1, mean over 2×4
    # duplicate row 0: both copies now have 2 neighbours (weight 2) and there are 3×4 entries
    doubled = classwise_quantization(u[[0, 0, 1]], label_similarity(labels[[0, 0, 1]])).item()
    assert doubled == pytest.approx(2 * 2 * 0.25 / 12, abs=1e-7)


# ------------------------------------------------------------------ invalid rows and guards
def test_rows_without_both_pair_types_contribute_nothing():
    g = torch.Generator().manual_seed(7)
    u = torch.tanh(torch.randn(5, 8, generator=g, dtype=torch.float64))
    labels = t([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 0], [1, 1, 0]], torch.float64)
    full = boundary_loss(u, u, label_similarity(labels), 8).item()
    assert full == pytest.approx(float(loop_boundary_loss(u, u, labels, 8)), abs=1e-9)
    # row 4 is similar to everything: changing only its row of the inner products does not change the loss
    inner = u @ u.T
    s = label_similarity(labels)
    bp, bpd, valid = base_points(inner, s, 8)
    assert not valid[4]
    shifted = inner.clone()
    shifted[4] += 3.0
    assert boundary_loss_at(shifted, s, bp, bpd, valid, 8).item() == pytest.approx(full, abs=1e-12)


@pytest.mark.parametrize("labels", [[[1, 0], [1, 0], [1, 1]], [[0, 0], [0, 0], [0, 0]], [[1, 0]]],
                         ids=["all-similar", "unlabelled", "single-sample"])
def test_no_valid_row_gives_zero(labels):
    u = t([[.5, -.2, .3, .9], [.1, .8, -.4, .2], [-.6, .3, .7, -.1]])[:len(labels)]
    out = BoundaryHashLoss(4)(u, u, t(labels))
    assert out["bpl_ii"].item() == out["bpl_tt"].item() == out["bpl_it"].item() == 0.0


def test_exact_ties_give_a_finite_loss():
    # the reference gives NaN here (a row's dissimilar products all sit exactly at BPd = 0)
    u = t([[.5, .5, .5, -.5], [.5, -.5, .5, .5], [-.5, -.5, -.5, -.5], [.5, -.5, -.5, -.5]])
    labels = t([[1, 0], [1, 0], [0, 1], [0, 1]])
    value = boundary_loss(u, u, label_similarity(labels), 4)
    assert torch.isfinite(value)


def test_loss_runs_in_float32_under_autocast():
    u_i, u_t, labels = t(FIXTURE_A["u_i"]), t(FIXTURE_A["u_t"]), t(FIXTURE_A["labels"])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = BoundaryHashLoss(4)(u_i.bfloat16(), u_t.bfloat16(), labels)
    assert out["loss"].dtype == torch.float32
    assert out["loss"].item() == pytest.approx(FIXTURE_A["expected"]["loss"], abs=0.05)  # inputs rounded to bf16
