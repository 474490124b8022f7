"""DDWSH fixtures (README: Fixtures), miner properties and the margin loss (the sampling weights themselves:
tests/test_distance_weighted.py)."""
import math

import pytest
import torch

from train.common import label_similarity
from train.DDWSH.loss import MarginLoss
from train.DDWSH.miner import sample_triplets


def t(values):
    return torch.tensor(values, dtype=torch.float64)


def margin_loss(num_classes=2, beta=1.2, margin=0.2, miner_input="distance_matrix"):
    return MarginLoss(num_classes, beta, margin, miner_input).double()


R3 = 1 / math.sqrt(3)
X = [[1, 0, 0], [0, 1, 0], [R3, R3, R3], [R3, R3, -R3]]
Y = [[0, 1, 0], [1, 0, 0], [R3, R3, -R3], [R3, R3, R3]]
LABELS = [[1, 0], [1, 0], [0, 1], [0, 1]]

X5 = [[1, 0, 0], [0.8, 0.6, 0], [0, 1, 0], [0, 0.6, 0.8], [-0.6, 0, 0.8]]
LABELS5 = [[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 1, 0]]


def test_anchor_with_only_positives_is_skipped():
    x = t([[1, 0], [0, 1], [1, 1]])
    labels = t([[1, 0], [1, 1], [0, 1]])  # every pair with row 1 shares a label
    _, _, valid = sample_triplets(torch.cdist(x, x), labels)
    assert valid.tolist() == [[True], [False], [True]]


def test_margin_loss_fixture_every_seed():
    loss = margin_loss()
    for seed in range(5):
        value = loss(t(X), t(LABELS), generator=torch.Generator().manual_seed(seed))
        assert value.item() == pytest.approx(0.76505536, abs=1e-7)
    # any positive row scaling gives the same value
    scaled = t(X) * t([[2.0], [0.5], [3.0], [1.0]])
    assert loss(scaled, t(LABELS)).item() == pytest.approx(0.76505536, abs=1e-7)


def test_margin_loss_fixture_by_hand_and_counting():
    d_ap = [math.sqrt(2)] * 2 + [math.sqrt(4 / 3)] * 2
    d_an = math.sqrt(2 - 2 / math.sqrt(3))
    pos = [max(d - 1.2 + 0.2, 0) for d in d_ap]
    neg = max(1.2 - d_an + 0.2, 0)
    assert (sum(pos) + 4 * neg) / 4 == pytest.approx(0.76505536, abs=1e-7)  # count 4 triplets, not 8 terms


def test_cross_modal_fixture():
    loss = margin_loss()
    for seed in range(3):
        value = loss(t(X), t(LABELS), t(Y), generator=torch.Generator().manual_seed(seed))
        assert value.item() == pytest.approx(0.48059836, abs=1e-7)


def test_inactive_terms_give_zero_tensor():
    loss = margin_loss(beta=1.0, margin=0.0)
    x = t([[1, 0], [1, 0], [-1, 0], [-1, 0]])  # d_ap = 0 < β, d_an = 2 > β: nothing active
    value = loss(x, t(LABELS))
    assert torch.is_tensor(value) and value.item() == 0.0


def test_no_anchor_gives_zero():
    loss = margin_loss()
    value = loss(t([[1, 0], [0, 1]]), t([[1, 0], [0, 1]]))  # nobody has a positive
    assert value.item() == 0.0


def test_multi_label_beta_fixture():
    loss = margin_loss()
    with torch.no_grad():
        loss.beta.copy_(t([1.0, 1.4]))
    x, labels = t([[1, 0], [0.6, 0.8], [-0.8, 0.6]]), t([[1, 1], [1, 0], [0, 0]])
    assert loss.anchor_beta(labels)[:2].tolist() == pytest.approx([1.2, 1.0], abs=1e-12)
    value = loss(x, labels)
    assert value.item() == pytest.approx(0.09442719, abs=1e-7)
    value.backward()
    assert loss.beta.grad.tolist() == pytest.approx([-1.0, 0.0], abs=1e-12)


def random_batch(seed, size=32, classes=6, dim=16):
    gen = torch.Generator().manual_seed(seed)
    labels = (torch.rand(size, classes, generator=gen) < 0.25).double()
    labels[torch.arange(size), torch.randint(classes, (size,), generator=gen)] = 1
    return torch.randn(size, dim, generator=gen, dtype=torch.float64), labels


@pytest.mark.parametrize("mode", ["distance_matrix", "embeddings"])
def test_triplets_deterministic_and_consistent(mode):
    x, labels = random_batch(0)
    distances = torch.cdist(x, x)
    first = sample_triplets(distances, labels, mode, 16, generator=torch.Generator().manual_seed(7))
    second = sample_triplets(distances, labels, mode, 16, generator=torch.Generator().manual_seed(7))
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    positive, negative, valid = (v.squeeze(1) for v in first)
    rows = torch.arange(len(x))[valid]
    assert valid.any()
    assert (positive[valid] != rows).all()
    assert ((labels[rows] * labels[positive[valid]]).sum(dim=1) > 0).all()
    assert ((labels[rows] * labels[negative[valid]]).sum(dim=1) == 0).all()


def test_negative_frequencies_follow_weights():
    x, labels = t(X5), t(LABELS5)
    distances = torch.cdist(x, x).clamp_min(1e-8)
    gen = torch.Generator().manual_seed(0)
    counts = torch.zeros(5)
    for _ in range(1500):
        counts[sample_triplets(distances, labels, "distance_matrix", 3, generator=gen)[1][0, 0]] += 1
    assert (counts / 1500).tolist() == pytest.approx([0, 0, 0.45842621, 0.34599897, 0.19557483], abs=0.04)


def test_beta_gradient_only_for_classes_of_active_anchors():
    loss = margin_loss(num_classes=3, margin=0.5)
    x = t([[1, 0], [0.6, 0.8], [-0.8, 0.6], [-0.6, -0.8]])
    labels = t([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 0]])  # class 2 unused, class 1 anchor has no positive
    loss(x, labels).backward()
    grad = loss.beta.grad
    assert grad[0] != 0 and grad[1] == 0 and grad[2] == 0


def test_training_loss_shapes_and_gradients():
    x, labels = random_batch(1)
    y = x + 0.1 * torch.randn_like(x)
    x.requires_grad_(True)
    loss = margin_loss(num_classes=6)
    total = loss(x, labels) + loss(y, labels) + loss(x, labels, y)
    total.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_all_positives_pairs_every_positive_with_a_negative():
    x, labels = random_batch(2)
    distances = torch.cdist(x, x)
    positive, negative, valid = sample_triplets(distances, labels, "embeddings", 16, "all",
                                                torch.Generator().manual_seed(0))
    assert positive.shape == negative.shape == valid.shape == (32, 32)
    shares = label_similarity(labels)
    has_negative = (~shares).any(dim=1, keepdim=True)
    assert torch.equal(valid, shares & ~torch.eye(32, dtype=torch.bool) & has_negative)
    assert (positive == torch.arange(32)).all()
    rows = torch.arange(32)[:, None].expand(32, 32)
    assert not shares[rows[valid], negative[valid]].any()


def test_all_positives_loss_on_fixture():
    """Every anchor of the margin fixture has one positive, so "all" gives the reference value."""
    loss = MarginLoss(2, 1.2, 0.2, positives="all").double()
    assert loss(t(X), t(LABELS)).item() == pytest.approx(0.76505536, abs=1e-7)


@pytest.mark.parametrize("init", ["kaiming", "default"])
def test_head_init_option(init):
    from train.DDWSH import Trainer
    from train.testing import StubBackbone, build_trainer

    assert Trainer.Config().head_init == "kaiming"  # the reference LinearHash
    model = build_trainer(Trainer, backbone=StubBackbone(embed_dim=512), output_dim=64, head_init=init).model
    for head in (model.image_head, model.text_head):
        assert torch.all(head.fc.bias == 0) == (init == "kaiming")
        bound = math.sqrt(6 / 64) if init == "kaiming" else 1 / math.sqrt(512)  # kaiming_uniform fan_out vs PyTorch
        assert head.fc.weight.abs().max() <= bound and head.fc.weight.abs().max() > 0.9 * bound


def test_config_defaults_reference_and_demo():
    from train.DDWSH import Trainer

    reference = Trainer.Config()
    assert (reference.head_init, reference.ddwsh_miner_input, reference.ddwsh_positives) == \
        ("kaiming", "distance_matrix", "one")
    assert reference.ddwsh_lower_cutoff == 0.5
    demo = Trainer.Config.defaults_for("demo")
    assert (demo["head_init"], demo["ddwsh_miner_input"], demo["ddwsh_positives"]) == ("default", "embeddings", "all")
    assert (demo["ddwsh_lower_cutoff"], demo["epochs"], demo["backbone"]) == (1.4, 25, "tiny")
    for name in ("coco", "flickr25k", "nuswide"):
        assert not {"head_init", "ddwsh_miner_input", "ddwsh_positives"} & set(Trainer.Config.defaults_for(name))
