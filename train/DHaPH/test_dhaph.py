"""DHaPH fixtures (README: Fixtures) and properties of the self-paced and hierarchy proxy losses."""
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from train.common import label_similarity
from train.DHaPH.hyperbolic import RiemannianGradient, ToPoincare, poincare_distance
from train.DHaPH.loss import (
    HierarchyProxyLoss,
    lca_triplet_loss,
    reciprocal_triplets,
    self_paced_delta,
    self_paced_loss,
)
from train.DHaPH.trainer import DHaPHConfig, Trainer

C = 0.1


def mobius_distance_literal(x, y, c=C):
    """The reference's form: materialise the (N, M, K) Möbius sums (−x_i) ⊕ y_j, then their norms."""
    xy = -x @ y.T
    x2, y2 = x.square().sum(1, keepdim=True), y.square().sum(1, keepdim=True)
    num = (1 + 2 * c * xy + c * y2.T)[..., None] * (-x)[:, None] + (1 - c * x2)[..., None] * y[None]
    den = 1 + 2 * c * xy + c ** 2 * x2 * y2.T
    z = (c ** 0.5 * (num / (den[..., None] + 1e-5)).norm(dim=-1)).clamp(-1 + 1e-5, 1 - 1e-5)
    return 2 / c ** 0.5 * torch.atanh(z)


# ------------------------------------------------------------------ Poincaré ball
POINTS = [[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]]


@pytest.mark.parametrize("dtype, expected", [(torch.float64, (2.070954, 4.714878, 5.403791)),
                                             (torch.float32, (2.070954, 4.714878, 5.403790))])
def test_poincare_distance_fixture(dtype, expected):
    d = poincare_distance(torch.tensor(POINTS, dtype=dtype), torch.tensor(POINTS, dtype=dtype), C)
    assert [d[0, 1].item(), d[0, 2].item(), d[1, 2].item()] == pytest.approx(expected, abs=1.5e-6)
    assert torch.all(d.diagonal() == 0)
    assert torch.allclose(d, d.T, atol=1e-6)


def test_poincare_distance_exact_value_without_the_denominator_epsilon():
    # d(0, (1, 0)) = 2/√c artanh(√c) = 2.070977; the reference's +1e-5 lowers it to 2.070954
    assert 2 / C ** 0.5 * math.atanh(C ** 0.5) == pytest.approx(2.070977, abs=1e-6)


def test_distance_closed_form_equals_materialised_mobius_sums():
    g = torch.Generator().manual_seed(0)
    x = ToPoincare()(3 * torch.randn(7, 16, generator=g, dtype=torch.float64))
    y = ToPoincare()(3 * torch.randn(5, 16, generator=g, dtype=torch.float64))
    assert torch.allclose(poincare_distance(x, y, C), mobius_distance_literal(x, y), atol=1e-10)
    # the gradients agree too (off the diagonal, where the literal form has a defined gradient)
    xa, ya = x.clone().requires_grad_(), y.clone().requires_grad_()
    xb, yb = x.clone().requires_grad_(), y.clone().requires_grad_()
    weights = torch.rand(7, 5, generator=g, dtype=torch.float64)
    (poincare_distance(xa, ya, C) * weights).sum().backward()
    (mobius_distance_literal(xb, yb) * weights).sum().backward()
    assert torch.allclose(xa.grad, xb.grad, atol=1e-9) and torch.allclose(ya.grad, yb.grad, atol=1e-9)


def test_criterion_blocks_equal_the_full_node_matrix():
    torch.manual_seed(0)
    loss = HierarchyProxyLoss(8, num_proxies=6).double()
    codes = torch.tanh(torch.randn(4, 8, dtype=torch.float64))
    points, lcas = loss.embed(codes), loss.proxies_to_ball(loss.proxies)
    full = mobius_distance_literal(torch.cat([points, lcas]), torch.cat([points, lcas]))
    assert torch.allclose(poincare_distance(points, points, C), full[:4, :4], atol=1e-10)
    assert torch.allclose(poincare_distance(points, lcas, C), full[:4, 4:], atol=1e-10)
    assert torch.allclose(poincare_distance(lcas, lcas, C), full[4:, 4:], atol=1e-10)


def test_to_poincare_fixture():
    out = ToPoincare(C, 2.3)(torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]], dtype=torch.float64))
    assert out[0].tolist() == pytest.approx([1.179070, 1.572093], abs=1e-6)
    assert out[0].norm().item() == pytest.approx(1.965117, abs=1e-6)
    assert out[1].tolist() == pytest.approx([0.297525, 0.396700], abs=1e-6)
    assert out[2].tolist() == [0.0, 0.0]


def test_riemannian_gradient_scale():
    x = torch.tensor([[1.0, 0.5]], dtype=torch.float64, requires_grad=True)
    y = RiemannianGradient.apply(x, C)
    assert torch.equal(y, x)
    (y * torch.tensor([[2.0, -3.0]], dtype=torch.float64)).sum().backward()
    assert (1 - C * 1.25) ** 2 / 4 == 0.19140625
    assert x.grad.tolist() == [[2 * 0.19140625, -3 * 0.19140625]]


# ------------------------------------------------------------------ self-paced loss
A = [[1.0, 0.0], [0.6, 0.8], [0.2, 1.0]]
B = [[0.8, 0.6], [0.0, 1.0], [0.9, 0.3]]
Y = [[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]


@pytest.mark.parametrize("total, epoch, expected", [(100, 1, 0.420541), (100, 33, 0.522641), (100, 34, 0.522641),
                                                    (200, 1, 0.419050)])
def test_self_paced_loss_fixture(total, epoch, expected):
    delta = self_paced_delta(epoch - 1, total)
    out = self_paced_loss(torch.tensor(A), torch.tensor(B), label_similarity(torch.tensor(Y)), delta, 0.3)
    assert out.item() == pytest.approx(expected, abs=1e-6)


def test_self_paced_loss_without_weights():
    out = self_paced_loss(torch.tensor(A), torch.tensor(B), label_similarity(torch.tensor(Y)), 0.0, 0.3)
    assert out.item() == pytest.approx(0.417562, abs=1e-6)


def test_self_paced_weights_are_detached():
    a = torch.tensor(A, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(B, dtype=torch.float64)
    s = label_similarity(torch.tensor(Y))
    self_paced_loss(a, b, s, 0.7).backward()
    grad = a.grad.clone()
    # the same loss with the weights computed beforehand as constants
    a.grad = None
    cos = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T
    with torch.no_grad():
        w_pos, w_neg = torch.exp(-1 - cos) ** (0.7 / 4), torch.exp(-1 + cos) ** 0.7
    p = (s * torch.exp(cos / 0.3) * w_pos).sum(1)
    n = (~s * torch.exp(cos / 0.3) * w_neg).sum(1)
    (-torch.log(p / (p + n))).mean().backward()
    assert torch.allclose(grad, a.grad, atol=1e-12)


def test_self_paced_loss_skips_rows_without_positives():
    a = torch.tensor(A, requires_grad=True)
    labels = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])  # row 2 is unlabelled: no positive for (I, T)
    out = self_paced_loss(a, torch.tensor(B), label_similarity(labels), 0.5)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(a.grad).all()


@pytest.mark.parametrize("total, epoch, expected", [(100, 0, 1 / 33), (100, 15, 16 / 33), (100, 32, 1.0),
                                                    (100, 33, 1.0), (100, 99, 1.0), (200, 0, 1 / 66),
                                                    (200, 65, 1.0), (2, 0, 1.0), (1, 0, 1.0)])
def test_delta_schedule(total, epoch, expected):
    assert self_paced_delta(epoch, total) == pytest.approx(expected, abs=1e-15)


# ------------------------------------------------------------------ reciprocal-neighbour sampler
GRAPH = [[2, 1.5, 1.2, 0.2], [1.5, 2, 1.3, 0.1], [1.2, 1.3, 2, 0.05], [0.9, 0.8, 0.05, 2]]


def test_sampler_fixture_k3():
    torch.manual_seed(0)
    anchor, positive, negative = reciprocal_triplets(torch.tensor(GRAPH), 3, 50)
    assert len(anchor) == 150
    assert [(anchor == i).sum().item() for i in range(4)] == [50, 50, 50, 0]
    expected = {0: ({1, 2}, {0, 3}), 1: ({0, 2}, {1, 3}), 2: ({0, 1}, {2, 3})}
    for i, (pos, neg) in expected.items():
        assert set(positive[anchor == i].tolist()) <= pos
        assert set(negative[anchor == i].tolist()) <= neg


def test_sampler_without_anchor_gives_no_triplet_and_zero_loss():
    # the reference raises here (np.concatenate of an empty list)
    assert reciprocal_triplets(torch.tensor(GRAPH), 2, 50) is None
    assert lca_triplet_loss(None, torch.ones(4, 3)).item() == 0.0


def test_sampler_top_k_shrinks_to_a_batch_smaller_than_k():
    # the reference's topk(15) raises for fewer than 15 items; here k becomes the batch size, so every item is
    # every other's neighbour: all pairs are mutual and no negative but the anchor itself is left
    graph = torch.rand(5, 5)
    torch.manual_seed(0)
    small = reciprocal_triplets(graph, 15, 20)
    torch.manual_seed(0)
    exact = reciprocal_triplets(graph, 5, 20)
    assert all(torch.equal(a, b) for a, b in zip(small, exact))
    anchor, positive, negative = small
    assert torch.equal(torch.bincount(anchor, minlength=5), torch.full((5,), 20))
    assert (positive != anchor).all() and torch.equal(negative, anchor)


def test_sampler_properties_on_random_graph():
    torch.manual_seed(1)
    graph = torch.rand(30, 30)
    graph = graph + graph.T + 2 * torch.eye(30)
    k = 5
    anchor, positive, negative = reciprocal_triplets(graph, k, 50)
    top = graph.topk(k, dim=1).indices
    in_top = torch.zeros(30, 30, dtype=torch.bool).scatter_(1, top, True)
    mutual = in_top & in_top.T
    mutual.fill_diagonal_(False)
    assert mutual[anchor, positive].all()
    assert not mutual[anchor, negative].any()
    counts = torch.bincount(anchor, minlength=30)
    assert torch.equal(counts > 0, mutual.sum(1) > 1)
    assert set(counts[counts > 0].tolist()) == {50}


# ------------------------------------------------------------------ gHHC
DCP = torch.tensor([[1.0, 0.5], [2.0, 30.0], [40.0, 45.0], [50.0, 3.0]])


def triplets(*columns):
    return tuple(torch.tensor(c) for c in columns)


def test_lca_loss_fixture():
    for _ in range(5):  # the logit gaps swamp the Gumbel noise
        assert lca_triplet_loss(triplets([0], [1], [3]), DCP, 0.1).item() == pytest.approx(0.6, abs=1e-6)
        assert lca_triplet_loss(triplets([0, 0], [1, 1], [3, 2]), DCP, 0.1).item() == pytest.approx(0.3, abs=1e-6)


def test_lca_loss_is_zero_when_the_two_lcas_coincide():
    for _ in range(5):
        assert lca_triplet_loss(triplets([0], [1], [2]), DCP, 0.1).item() == 0.0


def test_hard_gumbel_pick_is_one_hot():
    picks = F.gumbel_softmax(torch.randn(100, 7), dim=1, hard=True)
    assert set(picks.unique().tolist()) == {0.0, 1.0} and torch.equal(picks.sum(1), torch.ones(100))


# ------------------------------------------------------------------ criterion and trainer wiring
def test_proxy_init_and_checkpointed_state():
    torch.manual_seed(0)
    loss = HierarchyProxyLoss(64, num_proxies=500)
    assert loss.proxies.norm(dim=1).mean().item() == pytest.approx(2.3 * 0.9, rel=0.02)
    assert {"proxies", "embed.linear.weight", "embed.linear.bias"} == set(loss.state_dict())


def _stub_trainer(hp_detach: bool):
    torch.manual_seed(0)
    cfg = DHaPHConfig(hp_detach=hp_detach, num_proxies=20, topk=3)
    heads = torch.nn.ModuleList([torch.nn.Linear(6, 8), torch.nn.Linear(6, 8)])
    model = lambda img, txt: (torch.tanh(heads[0](img)), torch.tanh(heads[1](txt)))  # noqa: E731
    criterion = HierarchyProxyLoss(8, cfg.num_proxies, cfg.margin, cfg.topk)
    stub = SimpleNamespace(cfg=cfg, model=model, criterion=criterion, delta=0.5, global_batch=lambda *rows: rows)
    batch = {"image": torch.randn(12, 6), "text": torch.randn(12, 6), "label": torch.eye(3)[torch.arange(12) % 3]}
    return stub, heads, batch


@pytest.mark.parametrize("hp_detach", [True, False])
def test_hierarchy_loss_reaches_the_heads_only_without_detach(hp_detach):
    stub, heads, batch = _stub_trainer(hp_detach)
    out = Trainer.training_step(stub, batch)
    hp = out["hp_image"] + out["hp_text"]
    assert hp.item() > 0
    grads = torch.autograd.grad(hp, list(heads.parameters()), allow_unused=True, retain_graph=True)
    if hp_detach:
        assert all(g is None or not g.any() for g in grads)
    else:
        assert any(g is not None and g.abs().sum() > 0 for g in grads)
    proxy_grad = torch.autograd.grad(hp, stub.criterion.proxies)[0]
    assert proxy_grad.abs().sum() > 0
