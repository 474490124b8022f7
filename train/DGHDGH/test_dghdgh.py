"""DGHDGH fixtures (README: Fixtures), reshape-vs-scatter equivalence, the compact synthetic cosine, step order."""
import math

import pytest
import torch
import torch.nn.functional as F

from train.common import label_similarity
from train.DGHDGH.gnn import EdgeUpdate, GNNDecoder, NodeAttention, edge_attributes, edge_softmax
from train.DGHDGH.loss import (
    diversity_loss,
    eta,
    lambda3_rule,
    synthetic_cosine,
    synthetic_negatives,
    triplet_loss,
    triplet_mask,
)
from train.testing import StubBackbone, build_trainer


def t(values, dtype=torch.float32):
    return torch.tensor(values, dtype=dtype)


LABELS = t([[1, 0], [1, 0], [0, 1]])
Z_I = t([[1, 0], [0.6, 0.8], [0.8, 0.6]])
Z_T = t([[0.8, 0.6], [0, 1], [1, 0]])


# ---------------------------------------------------------------- triplets and triplet loss
def test_triplet_fixture():
    assert triplet_mask(LABELS, cross=False).nonzero().tolist() == [[0, 1, 2], [1, 0, 2]]
    assert triplet_mask(LABELS, cross=True).nonzero().tolist() == [[0, 0, 2], [0, 1, 2], [1, 0, 2], [1, 1, 2],
                                                                   [2, 2, 0], [2, 2, 1]]


def test_triplet_loss_fixture():
    intra, cross = triplet_mask(LABELS, False), triplet_mask(LABELS, True)
    values = [triplet_loss(Z_I, Z_I, intra), triplet_loss(Z_I, Z_T, cross), triplet_loss(Z_T, Z_I, cross),
              triplet_loss(Z_T, Z_T, intra)]
    assert [v.item() for v in values] == pytest.approx([0.53, 0.45, 0.3566667, 0.45], abs=1e-6)
    assert (sum(values) / 4).item() == pytest.approx(0.4466667, abs=1e-6)


def test_triplet_loss_without_triplets_is_zero():
    same = t([[1, 0]] * 3)
    x = torch.randn(3, 4, requires_grad=True)
    loss = triplet_loss(x, x, triplet_mask(same, False))
    loss.backward()
    assert loss.item() == 0 and torch.all(x.grad == 0)


# ---------------------------------------------------------------- synthetic negatives
PULL_J0 = [[1, 0], [1, 0], [0.8632449, 0.2735103], [0.9414210, 0.1171579], [0.8, 0.6], [0.1171578, 0.9414211]]


@pytest.mark.parametrize("running, rows", [
    (0.0, PULL_J0),
    (0.25, {2: [0.7264911, 0.5470178], 3: [0.8828427, 0.2343146], 5: [0.2343145, 0.8828427]}),
    (5.0, {2: [0.7768003, 0.4463995], 3: [0.9043926, 0.1912148], 5: [0.1912148, 0.9043926]}),
])
def test_pulling_fixture(running, rows):
    cross = triplet_mask(LABELS, True)
    negatives = synthetic_negatives(Z_I, Z_T, cross.nonzero(as_tuple=True), torch.full((3, 3, 2), 0.5),
                                    eta(5.0, running))
    expected = PULL_J0 if isinstance(rows, list) else [rows.get(i, PULL_J0[i]) for i in range(6)]
    assert negatives.tolist() == [pytest.approx(row, abs=1e-6) for row in expected]


@pytest.mark.parametrize("running, expected", [(0.0, 0.7166667), (0.25, 0.6001319)])
def test_synthetic_triplet_fixture(running, expected):
    cross = triplet_mask(LABELS, True)
    cos = synthetic_cosine(Z_I, Z_T, torch.full((3, 3, 2), 0.5), eta(5.0, running))
    assert triplet_loss(Z_I, Z_T, cross, 0.25, cos, hard=True).item() == pytest.approx(expected, abs=1e-6)


def test_eta():
    assert eta(5.0, 0.0) == pytest.approx(math.exp(-5e-6)) and eta(5.0, 5.0) == pytest.approx(math.exp(-1))


def random_batch(b=7, k=6, c=3, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    labels = (torch.rand(b, c, generator=g) < 0.4).to(dtype)
    x = F.normalize(torch.randn(b, k, generator=g, dtype=dtype), dim=1)
    y = F.normalize(torch.randn(b, k, generator=g, dtype=dtype), dim=1)
    lam = torch.rand(b, b, k, generator=g, dtype=dtype)
    return labels, x, y, lam


@pytest.mark.parametrize("running", [0.0, 0.3, 5.0])
def test_compact_synthetic_cosine_equals_explicit_negatives(running):
    labels, x, y, lam = random_batch()
    eta_value = eta(5.0, running)
    leaves = [v.clone().requires_grad_() for v in (x, y, lam)]
    valid = triplet_mask(labels, True)
    a, p, n = valid.nonzero(as_tuple=True)
    explicit = F.cosine_similarity(leaves[0][a], synthetic_negatives(*leaves[:2], (a, p, n), leaves[2], eta_value))
    explicit.sum().backward()
    grads = [v.grad.clone() for v in leaves]
    for v in leaves:
        v.grad = None
    compact = synthetic_cosine(*leaves[:2], leaves[2], eta_value)
    assert compact.shape == (7, 7, 7)
    assert torch.allclose(compact[valid], explicit.detach(), atol=1e-12)
    compact[valid].sum().backward()
    assert all(torch.allclose(v.grad, g, atol=1e-10) for v, g in zip(leaves, grads))


def test_pulling_limits():
    labels, x, y, lam = random_batch(seed=1)
    triplets = triplet_mask(labels, True).nonzero(as_tuple=True)
    a, p, n = triplets
    distance = torch.cdist(x, y)
    closer = distance[a, p] < distance[a, n]
    assert closer.any() and (~closer).any()
    hardest = synthetic_negatives(x, y, triplets, torch.zeros_like(lam), 1.0)  # λη = 0: r = ρ
    assert torch.allclose((hardest - x[a]).norm(dim=1)[closer], distance[a, p][closer])
    assert torch.equal(hardest[~closer], y[n][~closer])
    assert torch.allclose(synthetic_negatives(x, y, triplets, torch.ones_like(lam), 1.0), y[n])  # λη = 1


# ---------------------------------------------------------------- graph generator and GNN
def test_graph_generator_fixture():
    x = t([[1, 2, 3], [3, 1, 2], [0, 0, 1]])
    edges = edge_attributes(x)
    assert edges.shape == (3, 3, 3)  # E = B² edges, edges[r, c] = edge r·B + c of the reference
    pearson = [[1, -0.5, 0.8660254], [-0.5, 1, 0], [0.8660254, 0, 1]]
    assert edges.sum(-1).tolist() == [pytest.approx(row, abs=1e-6) for row in pearson]
    assert edges[0, 1].tolist() == pytest.approx([-0.5, 0, 0], abs=1e-7)
    cross = edge_attributes(x, t([[2, 0, 1], [1, 1, 0], [0, 2, 2]]))
    assert cross[0, 2].tolist() == pytest.approx([0.5773503, 0, 0.2886751], abs=1e-6)


def scatter_softmax_plus_one(scores, index, size):
    """Edge-list form (E on dim 1) of the reconstructed helper, with index_reduce/index_add as torch_scatter."""
    top = scores.new_zeros(scores.shape[0], size, 1).index_reduce(1, index, scores, "amax", include_self=False)
    top = top.clamp(min=0)
    exp = (scores - top.index_select(1, index)).exp()
    total = scores.new_zeros(scores.shape[0], size, 1).index_add(1, index, exp)
    return exp / (total + (-top).exp()).index_select(1, index)


def edge_list_node_attention(module: NodeAttention, source, target, mask):
    """The reference's edge-list attention: edges (r, c) row-major, scores masked, scatter softmax and scatter_add."""
    b, dim = source.shape
    heads, head_dim = module.heads, dim // module.heads
    r = torch.arange(b).repeat_interleave(b)
    c = torch.arange(b).repeat(b)
    q = module.q(target).view(b, heads, head_dim).transpose(0, 1)
    k = module.k(source).view(b, heads, head_dim).transpose(0, 1)
    v = module.v(source).view(b, heads, head_dim).transpose(0, 1)
    scores = (q.index_select(1, c) * k.index_select(1, r)).sum(-1, keepdim=True) / math.sqrt(head_dim)
    scores = scores.clone()
    scores[:, mask.view(-1).nonzero().squeeze(1), :] = -1e9
    weights = scatter_softmax_plus_one(scores, c, b)
    out = torch.zeros(heads, b, head_dim, dtype=source.dtype).index_add(1, c, weights * v.index_select(1, r))
    return module.out(out.transpose(0, 1).reshape(b, dim))


@pytest.mark.filterwarnings("ignore:index_reduce")
def test_node_attention_reshape_equals_edge_list_scatter():
    torch.manual_seed(0)
    module = NodeAttention(8, 4, "plus_one").double()
    source, target = torch.randn(5, 8, dtype=torch.float64), torch.randn(5, 8, dtype=torch.float64)
    labels = t([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 1], [0, 0, 0]], torch.float64)
    mask = label_similarity(labels)
    assert torch.allclose(module(source, target, mask), edge_list_node_attention(module, source, target, mask))


def test_edge_update_equals_token_pair_attention():
    torch.manual_seed(0)
    module = EdgeUpdate(6).double().eval()  # dropout off for the comparison
    nodes, edges = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 4, 6, dtype=torch.float64)
    m = module.node_to_edge(nodes)
    r, c = torch.arange(4).repeat_interleave(4), torch.arange(4).repeat(4)
    tokens = torch.stack([m[r], m[c]], dim=1)  # (E, 2, K)
    q, k, v = module.q(edges.view(16, 1, 6)), module.k(tokens), module.v(tokens)
    attended = torch.bmm(torch.softmax(torch.bmm(q, k.transpose(1, 2)) / math.sqrt(6), -1), v).squeeze(1)
    e = module.norm(attended + edges.view(16, 6))
    expected = module.norm(module.ffn(e) + e)
    assert torch.allclose(module(nodes, edges).view(16, 6), expected)


def test_edge_to_node_sum_equals_scatter_add_over_rows():
    edges = torch.randn(4, 4, 3)
    r = torch.arange(4).repeat_interleave(4)
    assert torch.allclose(edges.sum(dim=1), torch.zeros(4, 3).index_add(0, r, edges.view(16, 3)))


def test_plus_one_softmax_properties():
    scores = t([[[2.0], [-1e9], [0.5]], [[-1e9], [-1e9], [-1e9]]]).transpose(0, 1)  # (r=3, c=2, 1)
    w = edge_softmax(scores, dim=0, mode="plus_one")
    assert torch.all((w >= 0) & (w < 1))
    assert w[:, 0].sum().item() == pytest.approx((math.exp(2) + math.exp(0.5)) / (1 + math.exp(2) + math.exp(0.5)))
    assert w[:, 1].abs().max().item() == 0.0  # every incoming edge masked: aggregates nothing
    standard = edge_softmax(scores, dim=0, mode="standard")
    assert torch.allclose(standard[:, 1], torch.full((3, 1), 1 / 3))  # the alternative averages uniformly
    big = t([[30.0], [29.0]])
    assert torch.allclose(edge_softmax(big, 0), torch.softmax(t([[30.0], [29.0], [0.0]]), 0)[:2], rtol=1e-6)


def test_gnn_shapes_and_ranges():
    torch.manual_seed(0)
    gnn = GNNDecoder(8, 5, layers=2, heads=4)
    labels, x, y, _ = random_batch(6, 8, 5, dtype=torch.float32)
    mask = label_similarity(labels)
    preds, reprs = gnn(x, y, edge_attributes(x, y), mask)
    assert preds.shape == (6, 5) and reprs.shape == (6, 6, 8)
    assert torch.all((reprs > 0) & (reprs < 1))
    assert not any(p.requires_grad for p in (gnn.edge_bn.bias, gnn.node_bn.bias))


def test_diversity_fixture():
    reprs = t([[.1, .9], [.3, .5], [.5, .1], [.2, .2], [.2, .4], [.8, .6], [.9, .9], [.7, .1], [.5, .5]]).view(3, 3, 2)
    assert diversity_loss(reprs).item() == pytest.approx(0.6472331, abs=1e-6)
    assert diversity_loss(torch.rand(3, 1, 4).expand(3, 3, 4)).item() == pytest.approx(1.0)


@pytest.mark.parametrize("running, expected", [(0.0, 0.1), (0.5, 0.9), (0.87, 0.1), (5.0, 0.1), (0.8686, 0.1),
                                               (0.8685, 0.9), (-0.001, 0.1), (-0.0028, 0.1), (-1e-300, 0.1),
                                               (-0.003, 0.1), (-5.0, 0.1)])
def test_lambda3_rule(running, expected):
    assert lambda3_rule(running) == expected


# ---------------------------------------------------------------- step order and optimizer isolation
def stub_trainer():
    from train.DGHDGH.trainer import Trainer

    torch.manual_seed(0)
    backbone = StubBackbone(embed_dim=6, image_dim=4, text_dim=3)
    trainer = build_trainer(Trainer, num_classes=3, backbone=backbone, output_dim=8, clip_lr=1e-2)
    trainer.optimization.optimizers[0] = torch.optim.SGD(trainer.model.parameters(), lr=0.1)
    assert trainer.cfg.gnn_lr is None and trainer.optimizers[1].param_groups[0]["lr"] == 1e-2
    return trainer


def stub_batch():
    labels = t([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 1], [0, 0, 1], [1, 0, 1]])
    return {"image": torch.randn(6, 4), "text": torch.randn(6, 3), "label": labels}


def grads_of(module):
    return [p.grad for p in module.parameters() if p.requires_grad]


def test_stages_touch_only_their_parameters():
    trainer = stub_trainer()
    criterion = trainer.criterion
    batch = stub_batch()
    out = trainer.training_step(batch)
    out["loss"].backward()
    assert all(g is not None for g in grads_of(trainer.model))
    assert all(g is None for g in grads_of(criterion.classifier))
    gnn = criterion.gnn  # J_gca reaches the node path; λ is detached in stage 2
    assert all(g is not None for g in grads_of(gnn.cls) + grads_of(gnn.node_layers) + grads_of(gnn.reduce_fc))
    assert all(g is None for g in grads_of(gnn.fc))
    image, text, labels = trainer._codes
    for module in (trainer.model, criterion):
        module.zero_grad(set_to_none=True)
    criterion.classifier_loss(image, text, labels).backward()
    assert all(g is None for g in grads_of(trainer.model)) and all(g is None for g in grads_of(criterion.gnn))
    assert all(g is not None for g in grads_of(criterion.classifier))
    criterion.zero_grad(set_to_none=True)
    stage1 = criterion.stage1(image, text, labels, 0.3)
    (10 * stage1["J_ce"] + 10 * stage1["J_sim"] + 0.3 * stage1["J_div"]).backward()
    assert all(g is None for g in grads_of(trainer.model))
    assert sum(g is not None for g in grads_of(criterion.gnn)) > len(grads_of(criterion.gnn)) // 2


def test_optimization_step_order_and_running_means(monkeypatch):
    trainer = stub_trainer()
    criterion = trainer.criterion
    seen = {}
    stage1 = criterion.stage1

    def spy(image, text, labels, running_r):
        seen["running_r"] = running_r
        seen["gnn"] = [p.detach().clone() for p in criterion.gnn.parameters()]
        return stage1(image, text, labels, running_r)

    monkeypatch.setattr(criterion, "stage1", spy)
    before = {name: [p.detach().clone() for p in m.parameters()]
              for name, m in (("model", trainer.model), ("gnn", criterion.gnn), ("cls", criterion.classifier))}
    out = trainer.optimization_step(stub_batch())
    assert seen["running_r"] == pytest.approx(float(out["J_r"].detach()))  # J̄_r includes this step in stage 1
    assert trainer.meters["J_gen"].mean == pytest.approx(float(out["J_gen"].detach()))
    assert float(out["lambda3"]) == pytest.approx(0.1)  # J̄_gen was still 0
    changed = lambda old, module: any(not torch.equal(a, b) for a, b in zip(old, module.parameters()))  # noqa: E731
    assert changed(before["model"], trainer.model) and changed(before["cls"], criterion.classifier)
    assert changed(before["gnn"], criterion.gnn)
    assert changed(seen["gnn"], criterion.gnn)  # stage 1 stepped the GNN again
    assert any(not torch.equal(a, b) for a, b in zip(before["gnn"], seen["gnn"]))  # after its stage-2 step


# ---------------------------------------------------------------- head init and demo defaults
def test_head_init_option_and_demo_default():
    from train.DGHDGH.trainer import DGHDGHConfig, Trainer

    assert DGHDGHConfig().head_init == "kaiming"  # the reference LinearHash
    demo = DGHDGHConfig.defaults_for("demo")
    assert demo["head_init"] == "default" and demo["epochs"] == 15 and "lambda2" not in demo  # base demo values
    for name in ("coco", "flickr25k", "nuswide"):
        assert "head_init" not in DGHDGHConfig.defaults_for(name)
    for init, bound in (("kaiming", math.sqrt(6 / 8)), ("default", 1 / math.sqrt(6))):
        model = build_trainer(Trainer, num_classes=3, backbone=StubBackbone(embed_dim=6), output_dim=8,
                              head_init=init).model
        for head in (model.image_head, model.text_head):
            assert head.fc.weight.abs().max() <= bound
            assert (head.fc.bias == 0).all() == (init == "kaiming")
        assert model.image_head.fc.weight.abs().max() > 0.8 * bound


def test_optimization_step_goes_through_an_enabled_gradient_scaler():
    """fp16 training scales every backward and unscales before each clip. With a power-of-two loss scale on fp32
    arithmetic, scaling and unscaling cancel exactly: a run through an enabled GradScaler must end where the
    unscaled run ends (an unscaled backward or a skipped step would not), over all four optimizer steps."""
    plain, scaled = stub_trainer(), stub_trainer()
    scaled.optimization.scaler = torch.amp.GradScaler("cpu", enabled=True, init_scale=2.0 ** 8)
    for trainer in (plain, scaled):
        torch.manual_seed(5)
        for _ in range(2):
            trainer.optimization_step(stub_batch())
    for module in ("model", "criterion"):
        for a, b in zip(getattr(plain, module).parameters(), getattr(scaled, module).parameters()):
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)
    assert scaled.scaler.get_scale() == 2.0 ** 8  # no inf/nan step was skipped
