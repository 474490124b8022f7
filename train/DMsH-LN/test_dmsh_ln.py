"""DMsH-LN fixtures (README: Fixtures), the vectorised MS loss against the reference's per-anchor loop, LabelNet."""
import importlib
import math

import pytest
import torch
import torch.nn.functional as F

from train.common import label_overlap

# the folder name has a hyphen, so the package is imported by name
loss_module = importlib.import_module("train.DMsH-LN.loss")
LabelNet = importlib.import_module("train.DMsH-LN.labelnet").LabelNet
trainer_module = importlib.import_module("train.DMsH-LN.trainer")
DMsHLNLoss, multi_similarity_loss, positive_mask = (loss_module.DMsHLNLoss, loss_module.multi_similarity_loss,
                                                    loss_module.positive_mask)


def t(values, dtype=torch.float64):
    return torch.tensor(values, dtype=dtype)


H = [[0.9, -0.8, 0.7], [0.85, -0.6, 0.9], [-0.7, 0.8, 0.6], [0.6, 0.7, -0.9]]
T = [[0.8, -0.9, 0.5], [0.7, -0.7, 0.8], [-0.6, 0.9, 0.7], [0.5, 0.6, -0.8]]
Y = [[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1]]


def loop_reference(feats, positive, other=None):
    """The reference's per-anchor loop, written from the README's formulas (independent of the vectorised form)."""
    sim = F.normalize(feats @ (feats if other is None else other).T, dim=1)
    losses = []
    for i in range(len(feats)):
        pos = sim[i][positive[i]]
        pos = pos[pos < 1 - 1e-5]
        neg = sim[i][~positive[i]]
        if len(pos) == 0 or len(neg) == 0:
            continue
        hard_neg = neg[neg + 0.1 > pos.min()]
        hard_pos = pos[pos - 0.1 < neg.max()]
        if len(hard_neg) == 0 or len(hard_pos) == 0:
            continue
        losses.append(torch.log(1 + torch.exp(-2.0 * (hard_pos - 0.5)).sum()) / 2.0
                      + torch.log(1 + torch.exp(40.0 * (hard_neg - 0.5)).sum()) / 40.0)
    return sum(losses) / len(feats) if losses else feats.new_zeros(())


# ------------------------------------------------------------------ fixtures
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_ms_fixture_with_label_mask(dtype):
    h, text, positive = t(H, dtype), t(T, dtype), positive_mask(t(Y, dtype))
    assert multi_similarity_loss(h, positive).item() == pytest.approx(0.421655, abs=1e-6)
    assert multi_similarity_loss(text, positive).item() == pytest.approx(0.414681, abs=1e-6)
    assert multi_similarity_loss(h, positive, other=text).item() == pytest.approx(0.416854, abs=1e-6)


def test_original_variant_total():
    out = DMsHLNLoss(3, 3, "labels")(t(H), t(T), t(Y))
    assert out["loss"].item() == pytest.approx(0.421655 + 0.414681 + 0.416854, abs=3e-6)


def test_rows_unit_norm_and_scale_invariance():
    sim = F.normalize(t(H) @ t(H).T, dim=1)
    assert torch.allclose(sim.norm(dim=1), torch.ones(4, dtype=torch.float64))
    positive = positive_mask(t(Y))
    assert multi_similarity_loss(3 * t(H), positive).item() == pytest.approx(0.421655, abs=1e-6)
    assert multi_similarity_loss(0.2 * t(H), positive, other=5 * t(T)).item() == pytest.approx(0.416854, abs=1e-6)


def test_no_negatives_gives_zero():
    assert multi_similarity_loss(t(H), positive_mask(torch.ones(4, 3, dtype=torch.float64))).item() == 0.0


def test_disjoint_labels_with_orthogonal_codes_give_zero():
    codes = torch.eye(3, dtype=torch.float64) * t([[2.0], [0.5], [1.0]])
    positive = positive_mask(torch.eye(3, dtype=torch.float64))
    assert torch.equal(F.normalize(codes @ codes.T, dim=1), torch.eye(3, dtype=torch.float64))
    assert multi_similarity_loss(codes, positive).item() == 0.0


def fixture_labelnet():
    net = LabelNet(3, 3)
    with torch.no_grad():
        net.fc1.weight.copy_(t([[1, 0, -1], [0, 1, 0], [1, 1, 1]]))
        net.fc1.bias.copy_(t([0, -0.5, 0]))
        net.fc2.weight.copy_(0.5 * t([[1, -1, 0], [0, 1, -1], [-1, 0, 1]]))
        net.fc2.bias.copy_(t([0.1, 0, -0.1]))
    net.set_alpha(3)
    return net


def test_labelnet_fixture_codes_and_mask():
    net = fixture_labelnet()
    assert net.alpha == 2.0
    codes = net(t(Y))
    assert codes.dtype == torch.float32
    expected = [[0.833655, -0.761594, -0.197375], [0.604368, -0.905148, 0.664037],
                [-0.291313, -0.462117, 0.664037], [0.197375, -0.761594, 0.664037]]
    assert torch.allclose(codes, t(expected, torch.float32), atol=1e-6)
    mask = [[1, 1, 0, 1], [1, 1, 1, 1], [0, 1, 1, 1], [1, 1, 1, 1]]
    assert torch.equal(positive_mask(codes), t(mask, torch.float32).bool())


def test_unified_fixture_with_labelnet_mask():
    criterion = DMsHLNLoss(3, 3, "labelnet")
    criterion.labelnet.load_state_dict(fixture_labelnet().state_dict())
    criterion.labelnet.set_alpha(3)
    out = criterion(t(H), t(T), t(Y))
    assert out["ms_image"].item() == pytest.approx(0.207378, abs=1e-6)
    assert out["ms_text"].item() == 0.0  # every anchor skipped
    assert out["ms_cross"].item() == pytest.approx(0.206531, abs=1e-6)
    assert out["loss"].item() == pytest.approx(0.413909, abs=1e-6)


# ------------------------------------------------------------------ LabelNet
@pytest.mark.parametrize("classes, bits, hidden", [(24, 16, 20), (24, 64, 44), (21, 32, 26), (80, 16, 48),
                                                   (80, 64, 72)])
def test_labelnet_hidden_width(classes, bits, hidden):
    net = LabelNet(classes, bits)
    assert (net.fc1.out_features, net.fc2.in_features, net.fc2.out_features) == (hidden, hidden, bits)


def test_labelnet_output_alpha_and_identical_rows():
    net = LabelNet(5, 8)
    labels = (torch.rand(6, 5, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    labels[3] = labels[1]
    for epoch in (0, 4):
        net.set_alpha(epoch)
        assert net.alpha == pytest.approx(math.sqrt(epoch + 1))
        codes = net(labels)
        assert codes.shape == (6, 8) and codes.abs().max() < 1
        assert torch.equal(codes[1], codes[3]) and positive_mask(codes)[1, 3]


def test_labelnet_gets_no_gradient():
    criterion = DMsHLNLoss(3, 3, "labelnet")
    criterion.labelnet.load_state_dict(fixture_labelnet().state_dict())
    criterion.labelnet.set_alpha(3)
    h = t(H).requires_grad_()
    out = criterion(h, t(T), t(Y))
    out["loss"].backward()
    assert h.grad is not None and h.grad.abs().sum() > 0
    assert all(p.grad is None for p in criterion.labelnet.parameters())


# ------------------------------------------------------------------ vectorised == loop
@pytest.mark.parametrize("seed", range(6))
def test_vectorised_matches_loop(seed):
    gen = torch.Generator().manual_seed(seed)
    n = 12
    feats, other = torch.randn(n, 8, generator=gen), torch.randn(n, 8, generator=gen)
    if seed % 2:  # near-binary codes: larger Ŝ, so the α_n term and the mining matter
        feats, other = torch.tanh(4 * feats), torch.tanh(4 * other)
    labels = (torch.rand(n, 5, generator=gen) < 0.3).float()
    labels[0] = 0  # a row without positives (skipped)
    labels[1] = 1  # a row without negatives... except row 0
    positive = positive_mask(labels)
    for g in (None, other):
        a, b = feats.clone().requires_grad_(), feats.clone().requires_grad_()
        got, expected = multi_similarity_loss(a, positive, g), loop_reference(b, positive, g)
        assert got.item() == pytest.approx(float(expected.detach()), abs=1e-6)
        got.backward()
        if expected.requires_grad:
            expected.backward()
            assert torch.allclose(a.grad, b.grad, atol=1e-6)


def test_config_defaults():
    cfg = trainer_module.DMsHLNConfig()
    assert (cfg.epochs, cfg.batch_size, cfg.similarity_source) == (100, 128, "labels")


def test_default_labelnet_marks_label_disjoint_pairs_positive():
    """The reference's untrained LabelNet (PyTorch init) gives codes sharing one dominant direction: on a typical
    batch every pair, label-disjoint ones included, is positive, so the MS loss has no negatives and is 0."""
    torch.manual_seed(0)
    net = LabelNet(24, 64)
    labels = (torch.rand(128, 24) < 0.125).float()
    disjoint = label_overlap(labels) == 0
    assert disjoint.sum() > 1000
    positive = positive_mask(net(labels))
    assert positive.all()
    criterion = DMsHLNLoss(24, 64, "labelnet")
    criterion.labelnet.load_state_dict(net.state_dict())
    h, text = torch.randn(128, 64), torch.randn(128, 64)
    loss = criterion(h, text, labels)["loss"]
    assert loss.item() == 0.0 and not loss.requires_grad  # the base skips the optimizer step
    assert DMsHLNLoss(24, 64, "labels")(h, text, labels)["loss"].item() > 0
