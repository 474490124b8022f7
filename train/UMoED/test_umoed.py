"""UMoED fixtures (README: Fixtures) and properties of the decoder, the Soft-MoE, the loss and the codes."""
import itertools
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from train.UMoED.loss import diversity, label_weights, positionwise_distance, tempered, umoed_loss, weighted_triplet
from train.UMoED.model import TokenDecoderHash, UMoEDModel, symbol_codes
from train.UMoED.moe import SoftMoE
from train.UMoED.trainer import Trainer, UMoEDConfig
from utils.errors import UserError


def t(values):
    return torch.tensor(values, dtype=torch.float64)


# ------------------------------------------------------------------------------------------- codes
def test_symbol_codes_four_symbols():
    logits = torch.eye(4).unsqueeze(0)  # positions m = 0..3 pick symbol m
    assert symbol_codes(logits).tolist() == [[-1, -1, -1, 1, 1, -1, 1, 1]]
    assert symbol_codes(torch.randn(5, 3, 4)).shape == (5, 6)


def test_symbol_codes_two_symbols():
    assert symbol_codes(t([[[.2, .9], [.7, .1]]])).tolist() == [[1, -1]]
    e = torch.randn(6, 8, 2)
    assert torch.equal(symbol_codes(e), torch.where(e[..., 1] > e[..., 0], 1.0, -1.0))


def test_symbol_codes_msb_first_for_sixteen_symbols():
    logits = F.one_hot(torch.tensor([[5, 12]]), 16).float()  # 0101, 1100
    assert symbol_codes(logits).tolist() == [[-1, 1, -1, 1, 1, 1, -1, -1]]


# ------------------------------------------------------------------------------------------- loss
def test_pairwise_distance_fixtures():
    a = tempered(F.normalize(t([[[1, 0], [0, 1]]]), dim=-1), 0.3)
    b = tempered(F.normalize(t([[[1, 0], [1, 0]]]), dim=-1), 0.3)
    sig = torch.sigmoid(torch.tensor(10 / 3, dtype=torch.float64))
    assert positionwise_distance(a, a).item() == pytest.approx(1 - (sig ** 2 + (1 - sig) ** 2).item(), abs=1e-12)
    assert positionwise_distance(a, a).item() == pytest.approx(0.06651745, abs=1e-8)
    assert positionwise_distance(a, b).item() == pytest.approx(0.5, abs=1e-12)
    a32 = tempered(F.normalize(torch.tensor([[[1.0, 0], [0, 1]]]), dim=-1), 0.3)
    assert positionwise_distance(a32, a32).item() == pytest.approx(0.0665174, abs=2e-7)


def test_positionwise_distance_matches_explicit_loops():
    a, b = torch.rand(3, 4, 2, dtype=torch.float64), torch.rand(2, 4, 2, dtype=torch.float64) - 0.3
    expected = [[sum(1 - max(0.0, float(a[i, m] @ b[j, m])) for m in range(4)) / 4 for j in range(2)] for i in range(3)]
    assert positionwise_distance(a, b).flatten().tolist() == pytest.approx(sum(expected, []), abs=1e-12)


def test_diversity_fixture_per_sample():
    e = F.normalize(t([[[1, 0], [1, .1], [0, 1], [.1, 1]]]), dim=-1)
    assert diversity(e).item() == pytest.approx(0.2733165, abs=1e-7)


def test_diversity_matches_pairwise_loop_and_is_a_mean_over_samples():
    e = F.normalize(torch.randn(3, 5, 4, dtype=torch.float64), dim=-1)
    per_sample = [sum(math.exp(-20 * float((e[b, i] - e[b, j]).square().sum()))
                      for i, j in itertools.combinations(range(5), 2)) / 10 for b in range(3)]
    assert diversity(e).item() == pytest.approx(sum(per_sample) / 3, abs=1e-12)


def brute_force_triplet(distance, labels, margin):
    similarity, weight = label_weights(labels)
    b = len(labels)
    terms = [max(0.0, float((weight[a, p] - weight[a, n]) * (distance[a, p] - distance[a, n] + margin)))
             for a, p, n in itertools.product(range(b), repeat=3) if similarity[a, p] == 1 and similarity[a, n] == 0]
    positive = [x for x in terms if x > 1e-16]
    return sum(positive) / (len(positive) + 1e-16)


def test_weighted_triplet_matches_brute_force():
    torch.manual_seed(0)
    labels = (torch.rand(6, 4) > 0.6).double()
    labels[:, 0] += (labels.sum(1) == 0).double()
    distance = torch.rand(6, 6, dtype=torch.float64)
    assert weighted_triplet(distance, labels, 0.1).item() == pytest.approx(brute_force_triplet(distance, labels, 0.1),
                                                                           abs=1e-12)


def test_label_weights_ideal_dcg_normaliser():
    labels = t([[1, 1, 0], [1, 0, 0], [0, 0, 1]])
    similarity, weight = label_weights(labels)
    assert similarity.tolist() == [[1, 1, 0], [1, 1, 0], [0, 0, 1]]
    z0 = 3 + 1 / math.log2(3)  # row 0 shares [2, 1, 0] labels: (2^2 - 1) / log2 2 + (2^1 - 1) / log2 3
    assert weight[0].tolist() == pytest.approx([3 / z0, 1 / z0, 0.0], abs=1e-12)


FULL_IMAGE = [[[2, -1], [1.8, -1.1]], [[-1, 1], [1, .2]], [[.3, -.8], [-1.2, .4]]]
FULL_TEXT = [[[1.5, -.5], [.2, 1]], [[-.4, 1.2], [-.5, 1.1]], [[1, .1], [-.9, .9]]]
FULL_LABELS = [[1, 1, 0], [1, 0, 0], [0, 0, 1]]


def test_full_loss_fixture():
    out = umoed_loss(t(FULL_IMAGE), t(FULL_TEXT), t(FULL_LABELS), temperature=0.3, margin=0.1, triplet_alpha=1,
                     unif_alpha=0.8)
    expected = {"triplet_i2t": 0.0854061, "triplet_t2i": 0.2739221, "div_image": 0.2886062, "div_text": 0.2675646,
                "loss": 0.2381443}
    for key, value in expected.items():
        assert out[key].item() == pytest.approx(value, abs=1e-6), key
    assert ((out["triplet_i2t"] + out["triplet_t2i"]) / 4).item() == pytest.approx(0.0898321, abs=1e-6)
    assert ((out["div_image"] + out["div_text"]) / 3).item() == pytest.approx(0.1853903, abs=1e-6)


def test_t2i_distance_is_the_transpose_of_i2t():
    a = tempered(F.normalize(t(FULL_IMAGE), dim=-1), 0.3)
    b = tempered(F.normalize(t(FULL_TEXT), dim=-1), 0.3)
    assert torch.allclose(positionwise_distance(b, a), positionwise_distance(a, b).T, atol=1e-15)


def test_loss_invariant_to_positive_rescaling():
    base = umoed_loss(t(FULL_IMAGE), t(FULL_TEXT), t(FULL_LABELS))["loss"].item()
    scaled = umoed_loss(3 * t(FULL_IMAGE), 0.25 * t(FULL_TEXT), t(FULL_LABELS))["loss"].item()
    assert scaled == pytest.approx(base, abs=1e-12)


def test_loss_gradient_is_finite_for_identical_positions():
    e = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]], requires_grad=True)
    umoed_loss(e, e, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))["loss"].backward()
    assert torch.isfinite(e.grad).all()


def test_a_row_without_labels_gives_a_finite_loss():
    # the reference divides by the row's ideal DCG, 0 for a label-less row, and returns NaN; here the row's
    # gains are 0, so it only acts as a negative of the other anchors
    labels = t([[1, 1, 0], [0, 0, 0], [0, 0, 1]])
    image, text = t(FULL_IMAGE).requires_grad_(), t(FULL_TEXT)
    out = umoed_loss(image, text, labels)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and torch.isfinite(image.grad).all()
    _, weight = label_weights(labels)
    assert weight[1].tolist() == [0, 0, 0]


# ------------------------------------------------------------------------------------------- Soft-MoE
def test_soft_moe_matches_the_per_slot_formula():
    torch.manual_seed(0)
    moe = SoftMoE(6, 5, experts=3, slots=2).double()
    with torch.no_grad():
        moe.weight.normal_()
        moe.bias.normal_()
    x = torch.randn(2, 4, 6, dtype=torch.float64)
    logits = torch.einsum("bmd,dnp->bmnp", x, moe.phi)
    expected = torch.zeros(2, 4, 5, dtype=torch.float64)
    for b in range(2):
        dispatch = logits[b].softmax(dim=0)  # (M, n, p)
        combine = logits[b].reshape(4, -1).softmax(dim=1).reshape(4, 3, 2)
        for e, s in itertools.product(range(3), range(2)):
            slot_input = (dispatch[:, e, s, None] * x[b]).sum(0)
            slot_output = slot_input @ moe.weight[e] + moe.bias[e]
            expected[b] += combine[:, e, s, None] * slot_output
    assert torch.allclose(moe(x), expected, atol=1e-12)


def test_soft_moe_init_bounds():
    torch.manual_seed(0)
    moe = SoftMoE(2048, 512, experts=8, slots=8)
    assert 0.12 < moe.phi.abs().max().item() <= 0.125
    bound = 1 / math.sqrt(2048 * 512)
    assert 0.9 * bound < moe.weight.abs().max().item() <= bound
    assert moe.bias.abs().max().item() <= bound


# ------------------------------------------------------------------------------------------- decoder and model
def small_head(**kwargs):
    args = dict(memory_dim=16, queries=4, vocabulary=4, d_model=16, layers=2, heads=2, dim_feedforward=32,
                experts=2, slots=2, dropout=0.3)
    args.update(kwargs)
    return TokenDecoderHash(**args)


@pytest.mark.parametrize("moe", [True, False])
def test_decoder_is_invariant_to_memory_order(moe):
    torch.manual_seed(0)
    head = small_head(moe=moe).eval()
    memory = torch.randn(3, 7, 16)
    out = head(memory)
    assert out.shape == (3, 4, 4)
    assert torch.allclose(head(memory[:, torch.randperm(7)]), out, atol=1e-5)


def test_padding_mask_hides_padding_tokens():
    torch.manual_seed(0)
    head = small_head().eval()
    memory = torch.randn(2, 6, 16)
    mask = torch.tensor([[False] * 4 + [True] * 2, [False] * 6])
    changed = memory.clone()
    changed[0, 4:] = torch.randn(2, 16)
    assert torch.allclose(head(memory, mask), head(changed, mask), atol=1e-6)
    assert not torch.allclose(head(memory), head(changed), atol=1e-4)


def test_hidden_dim_adds_a_memory_projection():
    head = small_head(d_model=8)
    assert head.input is not None and head(torch.randn(2, 5, 16)).shape == (2, 4, 4)
    assert small_head().input is None


def layer_vector(head, index):
    return torch.nn.utils.parameters_to_vector(head.layers[index].parameters())


@pytest.mark.parametrize("moe", [True, False])
def test_decoder_layers_start_as_copies_of_the_first_like_the_reference(moe):
    torch.manual_seed(0)
    head = small_head(moe=moe, layers=3)
    assert torch.equal(layer_vector(head, 0), layer_vector(head, 1))
    assert torch.equal(layer_vector(head, 0), layer_vector(head, 2))
    first, second = list(head.layers[0].parameters()), list(head.layers[1].parameters())
    assert all(a is not b for a, b in zip(first, second))  # copies, not shared parameters
    with torch.no_grad():
        first[0].add_(1.0)
    assert not torch.equal(layer_vector(head, 0), layer_vector(head, 1))


@pytest.mark.parametrize("moe", [True, False])
def test_independent_decoder_init_draws_each_layer(moe):
    torch.manual_seed(0)
    head = small_head(moe=moe, layer_init="independent")
    assert not torch.allclose(layer_vector(head, 0), layer_vector(head, 1))


def test_unknown_decoder_init_is_refused():
    with pytest.raises(ValueError, match="layer_init"):
        small_head(layer_init="shared")


class TinyBackbone(torch.nn.Module):
    """Stand-in with the token interface of model.clip.CLIPBackbone (width 16, 3 patches, 5 text positions)."""

    embed_dim = 16

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(3, 16)
        self.embed = torch.nn.Embedding(10, 16)

    def encode_image_tokens(self, images):
        tokens = self.proj(images)
        return SimpleNamespace(pooled=tokens.mean(1), tokens=tokens, mask=None)

    def encode_text_tokens(self, ids):
        tokens = self.embed(ids)
        return SimpleNamespace(pooled=tokens[:, -1], tokens=tokens, mask=None)


def test_one_shared_head_for_both_modalities():
    torch.manual_seed(0)
    backbone = TinyBackbone()
    model = UMoEDModel(backbone, small_head()).eval()
    head_keys = {k.split(".")[0] for k in model.state_dict() if not k.startswith("backbone.")}
    assert head_keys == {"head"}
    image, text = model(torch.randn(2, 3, 3), torch.randint(0, 10, (2, 5)))
    assert image.shape == text.shape == (2, 4, 4)
    grads = torch.autograd.grad(text.sum(), model.head.queries)
    assert grads[0].abs().sum() > 0  # the text path runs through the same queries as the image path
    memory = torch.cat([backbone.encode_image_tokens(torch.ones(1, 3, 3)).pooled[:, None],
                        backbone.encode_image_tokens(torch.ones(1, 3, 3)).tokens], dim=1)
    assert torch.allclose(model.encode_image(torch.ones(1, 3, 3)), model.head(memory))


# ------------------------------------------------------------------------------------------- configuration
def build(**overrides):
    cfg = UMoEDConfig(**{**UMoEDConfig.defaults_for("demo"), "decoder_layers": 1, "dim_feedforward": 16,
                         "decoder_heads": 2, "num_experts": 2, "slots_per_expert": 2, **overrides})
    return Trainer.build_model(SimpleNamespace(cfg=cfg, backbone=TinyBackbone()))


def test_default_positions_give_one_bit_each():
    model = build(output_dim=16)
    assert model.head.queries.shape == (16, 16) and model.head.classifier.out_features == 2
    model = build(output_dim=32, set_dim=8)
    assert model.head.queries.shape == (8, 16) and model.head.classifier.out_features == 16


def test_decoder_init_option_reaches_the_head():
    def vectors(model):
        return [torch.nn.utils.parameters_to_vector(layer.parameters()) for layer in model.head.layers]

    torch.manual_seed(0)
    first, second = vectors(build(decoder_layers=2))
    assert UMoEDConfig().decoder_init == "copy" and torch.equal(first, second)
    first, second = vectors(build(decoder_layers=2, decoder_init="independent"))
    assert not torch.allclose(first, second)


@pytest.mark.parametrize("bits, positions", [(64, 3), (64, 2), (16, 32)])
def test_unsupported_code_layout_is_a_user_error(bits, positions):
    with pytest.raises(UserError):
        build(output_dim=bits, set_dim=positions)


def test_reference_defaults():
    cfg = UMoEDConfig()
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.clip_lr, cfg.weight_decay) == (100, 100, 1e-4, 1e-5, 0.2)
    assert (cfg.decoder_layers, cfg.decoder_heads, cfg.dim_feedforward, cfg.num_experts, cfg.slots_per_expert) == (
        6, 8, 2048, 8, 8)
    assert (cfg.dropout, cfg.extreme_t, cfg.margin, cfg.triplet_alpha, cfg.unif_alpha) == (0.3, 0.3, 0.1, 1.0, 0.8)
    assert cfg.moe and cfg.extreme and not cfg.mask_padding


def test_config_defaults_reference_and_demo():
    reference = UMoEDConfig()
    assert (reference.decoder_layers, reference.dim_feedforward, reference.dropout) == (6, 2048, 0.3)
    assert (reference.unif_alpha, reference.margin, reference.epochs, reference.batch_size) == (0.8, 0.1, 100, 100)
    demo = UMoEDConfig.defaults_for("demo")
    assert (demo["decoder_layers"], demo["dim_feedforward"], demo["dropout"]) == (2, 512, 0.0)
    assert (demo["unif_alpha"], demo["epochs"], demo["backbone"]) == (0.1, 40, "tiny")
    for name in ("coco", "flickr25k", "nuswide"):
        assert not {"decoder_layers", "unif_alpha", "epochs"} & set(UMoEDConfig.defaults_for(name))
