"""DIMCH fixtures (README: Fixtures), the O(N²) diversity form against the direct one, layouts and invariances."""
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from train.DIMCH.loss import DIMCHLoss, diversity, mmd, ndcg_weights, quantization, smooth_chamfer, weighted_triplet
from train.DIMCH.model import SetOutput, TokenSetHash


def t(values, dtype=torch.float64):
    return torch.tensor(values, dtype=dtype)


def test_smooth_chamfer_fixtures():
    identity = t([[[1, 0], [0, 1]]])
    assert smooth_chamfer(identity, identity).item() == pytest.approx(1 + math.log1p(math.exp(-16)) / 16, abs=1e-12)
    assert smooth_chamfer(identity.float(), identity.float()).item() == 1.0
    ones, twos = t([[[1, 0], [1, 0]]]), t([[[0, 1], [0, 1]]])
    assert smooth_chamfer(ones, twos).item() == pytest.approx(math.log(2) / 16, abs=1e-12)
    assert smooth_chamfer(ones, twos).item() == pytest.approx(0.0433217, abs=1e-7)


def test_triplet_fixtures():
    sim, weights = ndcg_weights(torch.eye(2, dtype=torch.float64))
    assert weighted_triplet(t([[.2, .5], [.6, .1]]), sim, weights, .3).item() == 0
    assert weighted_triplet(t([[.2, .4], [.6, .1]]), sim, weights, .3).item() == pytest.approx(0.1, abs=1e-12)
    sim32, weights32 = ndcg_weights(torch.eye(2))
    assert weighted_triplet(torch.tensor([[.2, .4], [.6, .1]]), sim32, weights32, .3).item() == pytest.approx(
        0.1, abs=1e-7)
    sim, weights = ndcg_weights(t(LABELS))
    dist = t([[.1, .3, .2], [.4, .2, .5], [.3, .1, .6]])
    assert weighted_triplet(dist, sim, weights, .3).item() == pytest.approx(0.3596082, abs=1e-7)


def test_ndcg_weights_by_hand():
    sim, weights = ndcg_weights(t(LABELS))  # gains [[2,1,0],[1,1,0],[0,0,1]]
    assert sim.tolist() == [[1, 1, 0], [1, 1, 0], [0, 0, 1]]
    z0 = 3 + 1 / math.log2(3)
    z1 = 1 + 1 / math.log2(3)
    expected = [[3 / z0, 1 / z0, 0], [1 / z1, 1 / z1, 0], [0, 0, 1]]
    assert weights.flatten().tolist() == pytest.approx([v for row in expected for v in row], abs=1e-12)
    _, unlabeled = ndcg_weights(t([[0, 0], [1, 0]]))
    assert torch.isfinite(unlabeled).all() and unlabeled[0].tolist() == [0, 0]


def test_mmd_fixtures():
    x = F.normalize(torch.randn(6, 4, dtype=torch.float64), dim=1)
    assert mmd(x, x).item() == pytest.approx(0.0, abs=1e-12)
    assert mmd(t([[1, 0]]), t([[0, 1]])).item() == pytest.approx(2 - 2 * math.exp(-math.sqrt(2) / 2), abs=1e-12)
    assert mmd(t([[1, 0]]), t([[0, 1]])).item() == pytest.approx(1.0138626, abs=1e-7)


def direct_diversity(elements, set_size, t=20.0):
    """Σ_{i<j} exp(−t‖E_i − E_j‖²) / (M(M−1)/2) by explicit pairs, over the flattened (N, K) elements."""
    flat = elements.reshape(-1, elements.shape[-1])
    total = sum(torch.exp(-t * (flat[i] - flat[j]).square().sum()) for i, j in
                itertools.combinations(range(len(flat)), 2))
    return total / (set_size * (set_size - 1) / 2)


def test_diversity_fixture_and_equivalence_with_the_direct_form():
    e = F.normalize(t([[1, 0], [1, .1], [0, 1], [.1, 1]]), dim=1).reshape(2, 2, 2)
    assert diversity(e).item() == pytest.approx(1.6398992, abs=1e-7)
    assert diversity(e).item() == pytest.approx(direct_diversity(e, 2).item(), abs=1e-12)
    torch.manual_seed(0)
    for shape in ((3, 4, 5), (5, 8, 3)):
        e = F.normalize(torch.randn(*shape, dtype=torch.float64), dim=-1) * 0.3
        assert diversity(e, 2.0).item() == pytest.approx(direct_diversity(e, shape[1], 2.0).item(), rel=1e-10)
        per_set = torch.stack([direct_diversity(s, shape[1], 2.0) for s in e]).mean()
        assert diversity(e, 2.0, per_set=True).item() == pytest.approx(per_set.item(), rel=1e-10)


LABELS = [[1, 1, 0], [1, 0, 0], [0, 0, 1]]
E_IMG = [[[1, .2, 0], [0, 1, .3]], [[.5, .5, -.2], [-.3, .1, 1]], [[.2, -1, .4], [1, 0, -.5]]]
E_TXT = [[[.9, .1, .1], [.1, .8, .2]], [[.4, .6, 0], [0, .2, .9]], [[-.2, -.8, .5], [.7, .3, -.4]]]
H_IMG = [[.6, -.4, .2], [.1, .7, -.5], [-.8, .3, .9]]
H_TXT = [[.5, -.2, .3], [-.3, .6, -.4], [-.7, .2, .8]]


def fixture_output(dtype=torch.float64, perm=(0, 1, 2)):
    perm = list(perm)
    return SetOutput(t(E_IMG, dtype)[perm], t(H_IMG, dtype)[perm], t(E_TXT, dtype)[perm], t(H_TXT, dtype)[perm])


def test_full_loss_fixture():
    out = DIMCHLoss()(fixture_output(), t(LABELS))
    expected = {"token_triplet": 0.0957702, "mmd": 0.0431062, "diversity": 0.0130648, "hash_triplet": 0.3326527,
                "quantization": 0.3338889}
    for key, value in expected.items():
        assert out[key].item() == pytest.approx(value, abs=1e-7), key
    assert out["loss"].item() == pytest.approx(21.8020584, abs=1e-6)
    out32 = DIMCHLoss()(fixture_output(torch.float32), t(LABELS, torch.float32))
    assert out32["loss"].item() == pytest.approx(21.8020592, abs=5e-6)
    assert quantization(t(H_IMG)).item() == pytest.approx(0.3166667, abs=1e-7)
    assert quantization(t(H_TXT)).item() == pytest.approx(0.3511111, abs=1e-7)


def test_loss_invariant_to_joint_batch_permutation_and_set_order():
    base = DIMCHLoss()(fixture_output(), t(LABELS))["loss"].item()
    perm = [2, 0, 1]
    permuted = DIMCHLoss()(fixture_output(perm=perm), t(LABELS)[perm])["loss"].item()
    assert permuted == pytest.approx(base, abs=1e-12)
    x = F.normalize(t(E_IMG), dim=-1)
    y = F.normalize(t(E_TXT), dim=-1)
    assert torch.allclose(smooth_chamfer(x, y), smooth_chamfer(x.flip(1), y.flip(1)), atol=1e-12)


def test_quantization_zero_at_binary_codes():
    assert quantization(t([[1, -1, 1], [-1, -1, 1]])).item() == 0


def test_loss_gradients_are_finite_with_duplicate_elements_and_batch_128_runs():
    torch.manual_seed(0)
    e_img = torch.randn(128, 8, 64, requires_grad=True)
    e_txt = torch.randn(128, 8, 64)
    e_txt[:, 1] = e_txt[:, 0]  # identical elements: zero distances in MMD and diversity
    h_img, h_txt = torch.tanh(torch.randn(128, 64)), torch.tanh(torch.randn(128, 64, requires_grad=True))
    labels = (torch.rand(128, 10) < 0.2).float()
    out = DIMCHLoss()(SetOutput(e_img, h_img, e_txt.requires_grad_(), h_txt), labels)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and torch.isfinite(e_img.grad).all() and torch.isfinite(e_txt.grad).all()


@pytest.mark.parametrize("batch", [32, 50])
def test_token_set_hash_layout_is_explicit(batch):
    """The reference guessed the layout from the shape and broke at batch 32 (text) / 50 (image)."""
    torch.manual_seed(0)
    head = TokenSetHash(num_tokens=batch, dim=16, bits=6, set_size=3).eval()
    tokens = torch.randn(batch, batch, 16)
    elements, h = head(tokens)
    assert elements.shape == (batch, 3, 6) and h.shape == (batch, 6)
    assert torch.all(h.abs() < 1)
    single_elements, single_h = head(tokens[5:6])
    assert torch.allclose(single_h, h[5:6], atol=1e-6) and torch.allclose(single_elements, elements[5:6], atol=1e-6)
    with pytest.raises(ValueError):
        head(tokens.transpose(0, 1)[:, :-1])


def test_token_set_hash_init():
    head = TokenSetHash(num_tokens=10, dim=32, bits=8)
    assert torch.all(head.conv.bias == 0) and torch.all(head.mlp[0].bias == 0) and torch.all(head.mlp[3].bias == 0)
    assert head.mlp[3].weight.abs().max() <= math.sqrt(2) * math.sqrt(3 / 8) + 1e-6  # kaiming_uniform fan_out = 8
    assert head.conv.weight.std().item() == pytest.approx(math.sqrt(2 / 30), rel=0.2)  # kaiming_normal fan_in = 10·3


def test_model_sequences_on_the_tiny_backbone():
    from model.clip import build_tiny_clip
    from train.DIMCH.model import DIMCHModel, image_token_count
    from utils.text import padding_mask

    torch.manual_seed(0)
    backbone = build_tiny_clip()
    assert image_token_count(backbone) == 1 + (backbone.image_size // 32) ** 2  # pooled + ResNet grid
    model = DIMCHModel(backbone, bits=8, set_size=4, zero_text_padding=True).eval()
    ids = torch.zeros(3, 32, dtype=torch.long)
    ids[:, 0], ids[:, 1:4], ids[0, 4], ids[1:, 6] = 49406, 320, 49407, 49407
    mask = padding_mask(ids)
    tokens = model.text_tokens(ids, mask)
    assert tokens.shape == (3, 32, backbone.embed_dim)
    assert torch.all(tokens[mask] == 0) and torch.all(tokens[~mask].abs().sum(-1) > 0)
    out = model(torch.randn(3, 3, backbone.image_size, backbone.image_size), ids, mask)
    assert out.image_elements.shape == (3, 4, 8) and out.text_hash.shape == (3, 8)


def test_config_defaults_reference_and_demo():
    from dataclasses import fields

    from train.DIMCH import Trainer

    def resolved(dataset):
        return {f.name: f.default for f in fields(Trainer.Config)} | Trainer.Config.defaults_for(dataset)

    coco, demo = resolved("coco"), resolved("demo")
    assert (coco["quan_alpha"], coco["epochs"], coco["batch_size"]) == (1.0, 100, 20)  # kalenforn config
    assert (demo["quan_alpha"], demo["epochs"], demo["backbone"]) == (0.1, 30, "tiny")
