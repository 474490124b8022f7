"""DPSIH fixtures (README: Fixtures) and properties of the DSIE module, the loss, the codes and their distance."""
import itertools
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from train.common import label_similarity
from train.DPSIH.codes import MultiCodeDistance
from train.DPSIH.loss import (
    distribution_consistency,
    dpsih_loss,
    embedding_diversity,
    laplace_kernel,
    msc_loss,
    set_similarity,
)
from train.DPSIH.model import DSIE, DPSIHModel
from train.DPSIH.trainer import DPSIHConfig
from utils.metrics import mean_average_precision


def t(values):
    return torch.tensor(values, dtype=torch.float64)


LABELS = [[1, 0], [1, 1], [0, 1]]
E_I = [[[1, 0], [0.6, 0.8]], [[0.8, 0.6], [0, 1]], [[-1, 0], [0, -1]]]
E_T = [[[0.6, 0.8], [1, 0]], [[0, 1], [-0.6, 0.8]], [[-0.8, -0.6], [0.6, -0.8]]]
R_I = [[[.5, .5], [.5, .5]], [[.9, .1], [.1, .9]], [[.3, .4], [.4, .3]]]
R_T = [[[.2, .7], [.7, .2]], [[.6, .6], [.1, .2]], [[.5, .1], [.5, .1]]]


# ------------------------------------------------------------------------------------------- loss fixtures
def test_full_loss_fixture_sum_reduction():
    out = dpsih_loss(t(E_I), t(E_T), t(R_I), t(R_T), t(LABELS), margin=0.25, alpha1=0.01, alpha2=0.01)
    assert [out["msc_ii"].item(), out["msc_tt"].item(), out["msc_it"].item()] == pytest.approx([0.25, 0.45, 0.05],
                                                                                               abs=1e-12)
    assert out["msc"].item() == pytest.approx(0.75, abs=1e-12)
    assert out["dc"].item() == pytest.approx(1.5129347, abs=1e-5)
    assert out["dc"].item() == pytest.approx(1.5129344, abs=1e-7)  # float64 (the reference's value is float32)
    assert out["ed"].item() == pytest.approx(1.6463205, abs=1e-6)
    assert out["loss"].item() == pytest.approx(75.0315926, rel=1e-6)


def test_full_loss_fixture_mean_reduction():
    out = dpsih_loss(t(E_I), t(E_T), t(R_I), t(R_T), t(LABELS), reduction="mean")
    assert out["dc"].item() == pytest.approx(0.0420260, abs=1e-6)
    assert out["ed"].item() == pytest.approx(0.5487735, abs=1e-6)
    assert out["loss"].item() == pytest.approx(75.0059128, rel=1e-6)  # the reference's value (float32)
    assert out["loss"].item() == pytest.approx(75 + 0.01 * 0.0420260 + 0.01 * 0.5487735, abs=1e-7)


def brute_force_msc(x, y, labels, margin):
    sim = [[max(float(x[a, k] @ y[b, j]) for k in range(x.shape[1]) for j in range(y.shape[1]))
            for b in range(len(y))] for a in range(len(x))]
    shared = label_similarity(labels)
    values = []
    for a, p, n in itertools.product(range(len(x)), repeat=3):
        if p != a and shared[a, p] and not shared[a, n]:
            gap = sim[a][p] - sim[a][n]
            if gap <= margin:
                values.append(margin - gap)
    return sum(values) / len(values) if values else 0.0, [round(v, 6) for v in values]


@pytest.mark.parametrize("pair, expected, kept", [((E_I, E_I), 0.25, 1), ((E_T, E_T), 0.45, 2), ((E_I, E_T), 0.05, 1)])
def test_msc_fixture_matches_enumeration(pair, expected, kept):
    x, y = t(pair[0]), t(pair[1])
    value, terms = brute_force_msc(x, y, t(LABELS), 0.25)
    assert len(terms) == kept and value == pytest.approx(expected, abs=1e-12)
    assert msc_loss(x, y, t(LABELS), 0.25).item() == pytest.approx(expected, abs=1e-12)


def test_msc_matches_enumeration_on_random_batch():
    torch.manual_seed(0)
    x = F.normalize(torch.randn(6, 3, 5, dtype=torch.float64), dim=-1)
    y = F.normalize(torch.randn(6, 3, 5, dtype=torch.float64), dim=-1)
    labels = t([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 1], [1, 0, 1], [0, 1, 0]])
    for margin in (0.1, 0.25, 2.0):
        assert msc_loss(x, y, labels, margin).item() == pytest.approx(brute_force_msc(x, y, labels, margin)[0],
                                                                      abs=1e-12)


def test_msc_without_kept_triplets_is_zero():
    x = t([[[1, 0]], [[1, 0]], [[-1, 0]]])
    assert msc_loss(x, x, t([[1, 0], [1, 0], [0, 1]]), 0.25).item() == 0.0  # t = 2 > margin for every triplet


def test_paired_item_is_not_a_positive_across_modalities():
    x = t([[[1, 0]], [[0, 1]]])
    assert msc_loss(x, x.flip(-1), t([[1], [1]]), 0.25).item() == 0.0  # two items, one label: only a = p pairs


def test_set_similarity_is_the_max_over_pairs_and_inner_product_for_one_embedding():
    torch.manual_seed(0)
    x, y = torch.randn(4, 3, 6, dtype=torch.float64), torch.randn(5, 3, 6, dtype=torch.float64)
    pooled = F.max_pool2d((x.reshape(-1, 6) @ y.reshape(-1, 6).T)[None], 3)[0]  # the reference's MaxPool2d form
    assert torch.allclose(set_similarity(x, y), pooled, atol=1e-12)
    assert torch.allclose(set_similarity(x[:, :1], y[:, :1]), x[:, 0] @ y[:, 0].T, atol=1e-12)


def test_dc_tiny_fixture_and_properties():
    dc = distribution_consistency(t([[0], [1]]), t([[0], [3]]), gamma=0.5)
    e = math.exp
    assert dc.item() == pytest.approx(2 + 2 * e(-.5) - 2 * (1 + e(-1.5) + e(-.5) + e(-1)) + 2 + 2 * e(-1.5), abs=1e-12)
    assert dc.item() == pytest.approx(1.2642411, abs=1e-7)
    x, y = torch.randn(8, 4, dtype=torch.float64), torch.randn(8, 4, dtype=torch.float64)
    assert distribution_consistency(x, x).item() == pytest.approx(0.0, abs=1e-12)
    assert distribution_consistency(x, y).item() > 0
    ratio = distribution_consistency(x, y) / distribution_consistency(x, y, reduction="mean")
    assert ratio.item() == pytest.approx(64.0, rel=1e-12)  # (B·n)² rows pairs


def test_laplace_kernel_matches_broadcast_norm_and_has_finite_gradient_at_zero_distance():
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    naive = torch.exp(-0.5 * torch.norm(x[:, None] - x, dim=2, p=2))
    assert torch.allclose(laplace_kernel(x, x, 0.5), naive, atol=1e-12)
    distribution_consistency(x, x.detach() + 1).backward()
    assert torch.isfinite(x.grad).all()


def test_ed_fixtures():
    identical = torch.ones(3, 4, 5, dtype=torch.float64)
    assert embedding_diversity(identical[:1]).item() == pytest.approx(math.sqrt(12) / 16, abs=1e-12)
    assert embedding_diversity(identical[:1]).item() == pytest.approx(0.2165064, abs=1e-7)
    assert embedding_diversity(identical).item() == pytest.approx(0.6495190, abs=1e-7)
    assert embedding_diversity(identical, "mean").item() == pytest.approx(0.2165064, abs=1e-7)
    orthogonal = torch.eye(4, dtype=torch.float64).repeat(2, 1, 1)
    assert embedding_diversity(orthogonal).item() == pytest.approx(0.0, abs=1e-12)


def test_single_embedding_has_no_dc_or_ed():
    x = F.normalize(torch.randn(4, 1, 3), dim=-1)
    out = dpsih_loss(x, x, torch.rand(4, 1, 3), torch.rand(4, 1, 3), t([[1, 0], [1, 0], [0, 1], [0, 1]]).float())
    assert "dc" not in out and out["loss"].item() == pytest.approx(100 * out["msc"].item())


# ------------------------------------------------------------------------------------------- model
def test_dsie_shapes_unit_rows_and_attention_sums():
    torch.manual_seed(0)
    dsie = DSIE(4, 16, 8)
    embeds, attn, residual = dsie(torch.tanh(torch.randn(3, 8)), torch.randn(3, 49, 16))
    assert embeds.shape == residual.shape == (3, 4, 8) and attn.shape == (3, 49, 4)
    assert torch.allclose(embeds.norm(dim=-1), torch.ones(3, 4), atol=1e-6)
    assert torch.allclose(attn.sum(dim=1), torch.ones(3, 4), atol=1e-6)
    assert ((residual > 0) & (residual < 1)).all()


def test_dsie_padding_mask():
    torch.manual_seed(0)
    dsie = DSIE(2, 16, 8)
    tokens, mask = torch.randn(2, 6, 16), torch.tensor([[False] * 4 + [True] * 2, [False] * 6])
    _, attn, _ = dsie(torch.zeros(2, 8), tokens, mask)
    assert (attn[0, 4:] == 0).all() and torch.allclose(attn.sum(1), torch.ones(2, 2), atol=1e-6)
    changed = tokens.clone()
    changed[0, 4:] = 5.0
    assert torch.allclose(dsie(torch.zeros(2, 8), changed, mask)[0], dsie(torch.zeros(2, 8), tokens, mask)[0])


def test_dsie_init():
    dsie = DSIE(4, 768, 64)
    assert dsie.w1.weight.shape == (384, 768) and dsie.w1.bias is None and dsie.w2.bias is None
    assert dsie.fc.weight.abs().max().item() <= math.sqrt(6 / (768 + 64)) and (dsie.fc.bias == 0).all()


class ViTStandIn(torch.nn.Module):
    """The token interface of model.clip.CLIPBackbone with a ViT (ln_post) and different widths per part."""

    embed_dim, image_token_width, text_width, is_vit = 12, 10, 8, True

    def __init__(self):
        super().__init__()
        self.clip = SimpleNamespace(visual=SimpleNamespace(ln_post=torch.nn.LayerNorm(10)))
        self.image = torch.nn.Linear(3, 10)
        self.text = torch.nn.Embedding(20, 8)
        self.pool_i, self.pool_t = torch.nn.Linear(10, 12), torch.nn.Linear(8, 12)

    def encode_image_tokens(self, images, project=True):
        tokens = self.clip.visual.ln_post(self.image(images))
        return SimpleNamespace(pooled=self.pool_i(tokens.mean(1)), tokens=tokens, mask=None)

    def encode_text_tokens(self, ids, project=True):
        tokens = self.text(ids)
        return SimpleNamespace(pooled=self.pool_t(tokens[:, -1]), tokens=tokens, mask=None)


def test_model_widths_and_double_ln_post():
    backbone = ViTStandIn()
    model = DPSIHModel(backbone, bits=6, embeds=3).eval()
    (e_i, a_i, r_i), (e_t, a_t, r_t) = model(torch.randn(2, 7, 3), torch.randint(0, 20, (2, 5)))
    assert e_i.shape == e_t.shape == (2, 3, 6) and a_i.shape == (2, 7, 3) and a_t.shape == (2, 5, 3)
    assert model.image_dsie.w1.in_features == 10 and model.text_dsie.w1.in_features == 8
    with torch.no_grad():  # a non-trivial ln_post, so applying it twice differs from once
        backbone.clip.visual.ln_post.weight.fill_(2.0)
        backbone.clip.visual.ln_post.bias.fill_(0.5)
    images = torch.randn(2, 7, 3)
    once = backbone.encode_image_tokens(images).tokens
    assert torch.allclose(model.image_features(images)[1], backbone.clip.visual.ln_post(once))
    single = DPSIHModel(backbone, bits=6, embeds=3, double_ln_post=False)
    assert torch.equal(single.image_features(images)[1], once)


# ------------------------------------------------------------------------------------------- codes and distance
def test_multi_code_distance_is_the_closest_pair():
    rng = np.random.default_rng(0)
    q, r = rng.choice([-1.0, 1.0], size=(5, 3 * 8)), rng.choice([-1.0, 1.0], size=(7, 3 * 8))
    expected = [[min(int((q[i].reshape(3, 8)[a] != r[j].reshape(3, 8)[b]).sum()) for a in range(3) for b in range(3))
                 for j in range(7)] for i in range(5)]
    assert MultiCodeDistance(3, 8, chunk=3)(q, r).tolist() == expected


def test_multi_code_map_equals_hamming_map_for_one_embedding():
    rng = np.random.default_rng(1)
    q, r = rng.choice([-1.0, 1.0], size=(20, 16)), rng.choice([-1.0, 1.0], size=(60, 16))
    ql, rl = rng.integers(0, 2, size=(20, 4)), rng.integers(0, 2, size=(60, 4))
    assert mean_average_precision(q, r, ql, rl, distance=MultiCodeDistance(1, 16)) == pytest.approx(
        mean_average_precision(q, r, ql, rl), abs=1e-12)


def test_multi_code_map_invariant_to_permuting_the_embeddings():
    rng = np.random.default_rng(2)
    q, r = rng.choice([-1.0, 1.0], size=(15, 4 * 8)), rng.choice([-1.0, 1.0], size=(40, 4 * 8))
    ql, rl = rng.integers(0, 2, size=(15, 3)), rng.integers(0, 2, size=(40, 3))
    permuted = r.reshape(40, 4, 8)[:, [2, 0, 3, 1]].reshape(40, -1)
    distance = MultiCodeDistance(4, 8)
    assert mean_average_precision(q, permuted, ql, rl, distance=distance) == pytest.approx(
        mean_average_precision(q, r, ql, rl, distance=distance), abs=1e-12)


def test_reference_defaults():
    cfg = DPSIHConfig()
    assert (cfg.epochs, cfg.batch_size, cfg.output_dim, cfg.num_embeds) == (100, 128, 32, 4)
    assert (cfg.margin, cfg.alpha1, cfg.alpha2, cfg.gamma, cfg.msc_weight) == (0.25, 0.01, 0.01, 0.5, 100.0)
    assert (cfg.lr, cfg.clip_lr, cfg.grad_clip, cfg.dropout, cfg.reduction) == (1e-3, 1e-5, 2.0, 0.0, "sum")


def test_head_init_choice():
    backbone = ViTStandIn()
    kaiming = DPSIHModel(backbone, bits=6, embeds=2)
    default = DPSIHModel(backbone, bits=6, embeds=2, head_init="default")
    assert (kaiming.image_head.fc.bias == 0).all() and kaiming.image_head.fc.weight.abs().max() > 1 / math.sqrt(12)
    assert default.text_head.fc.weight.abs().max() <= 1 / math.sqrt(12)
    assert DPSIHConfig.defaults_for("demo")["head_init"] == "default" and DPSIHConfig().head_init == "kaiming"


def test_resnet_tokens_are_layer_normalised():
    backbone = ViTStandIn()
    backbone.is_vit = False
    model = DPSIHModel(backbone, bits=6, embeds=2)
    images = torch.randn(2, 7, 3) * 30
    tokens = model.image_features(images)[1]
    assert torch.allclose(tokens.mean(-1), torch.zeros(2, 7), atol=1e-5)
    assert torch.allclose(tokens.var(-1, unbiased=False), torch.ones(2, 7), atol=1e-3)
    raw = DPSIHModel(backbone, bits=6, embeds=2, resnet_token_norm=False)
    assert torch.equal(raw.image_features(images)[1], backbone.encode_image_tokens(images).tokens)
