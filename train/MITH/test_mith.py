"""MITH fixtures (README: Fixtures), module shapes and the memory-bank protocol."""
import math

import pytest
import torch
import torch.nn.functional as F

from model.clip import build_tiny_clip
from model.positions import sinusoidal_positions
from train.common import bayesian_likelihood, info_nce
from train.MITH.loss import BANKS, MITHLoss, concept_info_nce, distillation_loss
from train.MITH.model import BitwiseHashing, MITHHead, MITHModel, MITHOutput, aggregate_tokens


def t(values):
    return torch.tensor(values, dtype=torch.float64)


# ------------------------------------------------------------------ likelihood
def test_likelihood_fixture():
    assert bayesian_likelihood(t([[1, 1]]), t([[1, 1]]), t([[1]])).item() == pytest.approx(0.3132617, abs=1e-7)
    assert bayesian_likelihood(t([[1, 1]]), t([[1, 1]]), t([[0]])).item() == pytest.approx(1.3132617, abs=1e-7)
    assert bayesian_likelihood(t([[1, 1]]), t([[1, 1]]), t([[1]])).item() == pytest.approx(math.log(1 + math.e) - 1)


def test_likelihood_clamps_before_halving():
    assert bayesian_likelihood(t([[200.0]]), t([[1.0]]), t([[0]])).item() == pytest.approx(32.0, abs=1e-9)
    assert bayesian_likelihood(t([[200.0]]), t([[1.0]]), t([[1]])).item() == pytest.approx(0.0, abs=1e-9)


# ------------------------------------------------------------ token aggregation
ONE_HOT = torch.eye(3, dtype=torch.float64)[None]  # (N=1, L=3, D=3): merged vectors are the weights


def lta(scores, top_k, mask=None):
    mask = None if mask is None else torch.tensor([mask])
    return aggregate_tokens(ONE_HOT, t([scores]), mask, top_k)[0]


def test_lta_fixture_top1():
    merged = lta([[.5, .2], [-.1, .9], [.3, .4]], 1)
    assert merged[0].tolist() == pytest.approx([1, 0, 0], abs=1e-7)
    assert merged[1].tolist() == pytest.approx([0, 0.622459, 0.377541], abs=1e-6)


def test_lta_fixture_padding():
    merged = lta([[.5, .2], [-.1, .9], [.3, .4]], 1, mask=[False, False, True])
    assert merged[0].tolist() == pytest.approx([1, 0, 0], abs=1e-7)
    assert merged[1].tolist() == pytest.approx([0, 1, 0], abs=1e-7)


def test_lta_fixture_no_positive_score_gives_zero_concept():
    merged = lta([[.5, -.2], [.1, -.9], [.3, -.4]], 1)
    assert merged[0].tolist() == pytest.approx([0.4017596, 0.2693075, 0.3289329], abs=1e-7)
    assert merged[1].tolist() == [0, 0, 0]


def test_lta_fixture_three_concepts_top2():
    merged = lta([[.5, .2, .1], [-.1, .9, .6], [.3, .4, .8]], 2)
    assert merged[0].tolist() == pytest.approx([1, 0, 0], abs=1e-7)
    assert merged[1].tolist() == pytest.approx([0.2361188, 0.4754849, 0.2883962], abs=1e-7)
    assert merged[2].tolist() == pytest.approx([0, 0.4501660, 0.5498340], abs=1e-7)


def test_lta_ties_keep_more_than_k_and_no_gradient_through_scores():
    scores = t([[[.5, .5], [.2, .1]]]).requires_grad_()
    tokens = torch.eye(2, dtype=torch.float64)[None].requires_grad_()
    merged = aggregate_tokens(tokens, scores, None, 1)
    # token 0 keeps both tied concepts, token 1 only concept 0: concept 1 is token 0 alone
    assert merged[0, :, 0].tolist() == pytest.approx([1 / (1 + math.exp(-.3)), 1.0])
    merged.sum().backward()
    assert scores.grad is None and tokens.grad is not None


def test_lta_masked_positions_never_weighted():
    torch.manual_seed(0)
    tokens, scores = torch.randn(4, 6, 8), torch.rand(4, 6, 5)
    mask = torch.zeros(4, 6, dtype=torch.bool)
    mask[:, 4:] = True
    changed = tokens.clone()
    changed[:, 4:] = 100.0
    assert torch.allclose(aggregate_tokens(tokens, scores, mask, 2), aggregate_tokens(changed, scores, mask, 2))


# ------------------------------------------------------------------ contrastive
def test_info_nce_identical_orthonormal_batches():
    for n, expected in ((2, 6.2487e-7), (3, math.log(1 + 2 * math.exp(-1 / 0.07)))):
        x = torch.eye(n, 4)
        assert info_nce(x, x, 0.07).item() == pytest.approx(expected, abs=1e-6)
    x64 = torch.eye(2, 4, dtype=torch.float64)
    assert info_nce(x64, x64, 0.07).item() == pytest.approx(6.2487e-7, rel=1e-4)


def test_info_nce_symmetric():
    torch.manual_seed(1)
    a, b = F.normalize(torch.randn(5, 8), dim=1), F.normalize(torch.randn(5, 8), dim=1)
    assert info_nce(a, b, 0.07).item() == pytest.approx(info_nce(b, a, 0.07).item(), abs=1e-6)


# ------------------------------------------------------------------ distillation
def test_distillation_gradient_ratio():
    c, tok = t([[0.3]]).requires_grad_(), t([[-0.2]]).requires_grad_()
    zero = t([[0.0]])
    loss = distillation_loss(c, tok, zero, zero)
    assert loss.item() == pytest.approx(0.275)
    loss.backward()
    assert c.grad.item() == pytest.approx(0.1) and tok.grad.item() == pytest.approx(-1.0)


# ------------------------------------------------------------------ full loss
def fixture_outputs():
    trans_i = F.normalize(t([[[1, 0], [0, 1]], [[.6, .8], [.8, -.6]]]), dim=-1).transpose(0, 1)  # (K,N,D) -> (N,K,D)
    trans_t = F.normalize(t([[[.8, .6], [.1, 1]], [[.6, .8], [1, 0]]]), dim=-1).transpose(0, 1)
    return MITHOutput(cls_image=t([[.5, -.3], [.2, .8]]), cls_text=t([[.4, -.1], [-.6, .7]]),
                      tok_image=t([[.3, -.5], [.1, .6]]), tok_text=t([[.2, .2], [-.4, .9]]),
                      res_image=F.normalize(t([[1, .2], [.3, 1]]), dim=1),
                      res_text=F.normalize(t([[.9, .1], [-.2, 1]]), dim=1),
                      concepts_image=trans_i, concepts_text=trans_t)


def fixture_loss():
    loss = MITHLoss(t([[1, 0], [0, 1], [1, 1]]), bits=2).double()
    row1 = {"cls_image": [.7, -.2], "cls_text": [-.3, .5], "tok_image": [.1, .1], "tok_text": [-.5, -.5]}
    for name, values in row1.items():
        getattr(loss, f"bank_{name}")[1] = t(values)
    return loss


def test_full_loss_fixture():
    loss, out = fixture_loss(), fixture_outputs()
    loss.update_banks(torch.tensor([0, 2]), out)
    terms = loss(out, t([[1, 0], [1, 1]]))
    # the terms are the reference's float32 values (cls_inter is 13.9055912 in float64); the total is the float64 one
    expected = {"tokens_intra": 1.3330851, "cls_inter": 13.9055920, "quantization": 8.03, "distillation": 0.187,
                "info_nce": 0.1939979}
    for key, value in expected.items():
        assert terms[key].item() == pytest.approx(value, abs=1e-6), key
    assert terms["loss"].item() == pytest.approx(23.6496743, abs=2e-7)
    assert terms["loss"].item() == pytest.approx(23.6496746, abs=1e-6)
    assert info_nce(out.res_image, out.res_text, 0.07).item() == pytest.approx(0.0002682, abs=1e-7)
    assert concept_info_nce(out.concepts_image, out.concepts_text, 0.07).item() == pytest.approx(0.3611780, abs=1e-7)


def test_full_loss_quantization_target():
    out = fixture_outputs()
    target = torch.sign(0.99 * (out.cls_image + out.cls_text) + 0.01 * (out.tok_image + out.tok_text))
    assert target.tolist() == [[1, -1], [-1, 1]]


def test_bank_update_before_loss_and_other_rows_untouched():
    loss, out = fixture_loss(), fixture_outputs()
    before = {name: getattr(loss, f"bank_{name}").clone() for name in BANKS}
    loss.update_banks(torch.tensor([0, 2]), out)
    for name in BANKS:
        bank = getattr(loss, f"bank_{name}")
        assert torch.equal(bank[[0, 2]], getattr(out, name))
        assert torch.equal(bank[1], before[name][1])
    assert {k for k in loss.state_dict()} == {f"bank_{name}" for name in BANKS}


def test_loss_gradient_only_through_batch_codes():
    loss, out = fixture_loss(), fixture_outputs()
    out.cls_image.requires_grad_()
    loss.update_banks(torch.tensor([0, 2]), out)
    loss(out, t([[1, 0], [1, 1]]))["loss"].backward()
    assert out.cls_image.grad is not None and all(not getattr(loss, f"bank_{n}").requires_grad for n in BANKS)


# ------------------------------------------------------------------ modules
def test_sinusoidal_positions():
    table = sinusoidal_positions(4, 6)
    assert table[0].tolist() == pytest.approx([v / 6 ** 0.5 for v in (0, 1, 0, 1, 0, 1)])
    assert table[1, 0].item() == pytest.approx(math.sin(1) / 6 ** 0.5, abs=1e-7)
    assert table[3, 3].item() == pytest.approx(math.cos(3 * 10000 ** (-2 / 6)) / 6 ** 0.5, abs=1e-7)


def test_bitwise_hashing_matches_separate_linears_and_batch_of_one():
    torch.manual_seed(0)
    head, x = BitwiseHashing(8, 5), torch.randn(1, 5, 8)
    expected = torch.stack([torch.tanh(x[:, k] @ head.weight[k] + head.bias[k]) for k in range(5)], dim=1)
    assert head(x).shape == (1, 5) and torch.allclose(head(x), expected, atol=1e-6)
    assert head.weight.abs().max() <= 1 / math.sqrt(8)


def test_model_shapes_text_mask_and_codes():
    torch.manual_seed(0)
    backbone = build_tiny_clip()
    model = MITHModel(backbone, MITHHead(backbone.embed_dim, 16)).eval()
    images = torch.randn(3, 3, 64, 64)
    texts = torch.zeros(3, 32, dtype=torch.long)
    texts[:, 0], texts[:, 1:4], texts[:, 4] = 49406, 320, 49407
    texts[2, 4], texts[2, 5] = 1125, 49407
    padding = torch.arange(32)[None] > texts.argmax(dim=1, keepdim=True)
    with torch.no_grad():
        out = model(images, texts, padding)
        single = model(images[:1], texts[:1], padding[:1])
    for name in ("cls_image", "cls_text", "tok_image", "tok_text"):
        value = getattr(out, name)
        assert value.shape == (3, 16) and value.abs().max() < 1
    assert out.concepts_image.shape == out.concepts_text.shape == (3, 16, backbone.embed_dim)
    assert torch.allclose(out.concepts_text.norm(dim=-1), torch.ones(3, 16), atol=1e-5)
    assert torch.allclose(out.res_image.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(single.tok_text, out.tok_text[:1], atol=1e-5)  # batch of one works
    # padding and EOS positions carry no weight: changing the tokens there leaves the local text hash unchanged
    tokens = backbone.encode_text_tokens(texts, key_padding_mask=padding)
    changed = tokens.tokens.clone()
    changed[tokens.mask] = 5.0
    with torch.no_grad():
        scores = model.head.gcl(tokens.tokens)[1]
        a = model.head.lct_text(tokens.tokens, scores, tokens.mask)[0]
        b = model.head.lct_text(changed, scores, tokens.mask)[0]
    assert torch.allclose(a, b, atol=1e-6)


def test_gcl_is_shared_between_modalities():
    head = MITHHead(32, 8)
    x = torch.randn(2, 32)
    out = head(x, torch.randn(2, 3, 32), None, x, torch.randn(2, 4, 32), None)
    assert torch.equal(out.cls_image, out.cls_text) and torch.equal(out.res_image, out.res_text)
    assert head.lct_image is not head.lct_text


def test_demo_defaults_leave_the_reference_weights_elsewhere():
    from train.MITH.trainer import MITHConfig

    demo = MITHConfig.defaults_for("demo")
    assert demo["split"] == "standard" and demo["epochs"] == 15
    assert (demo["hyper_cls_inter"], demo["hyper_info_nce"], demo["hyper_quan"]) == (100.0, 5.0, 1.0)
    reference = MITHConfig()
    assert (reference.hyper_cls_inter, reference.hyper_info_nce, reference.hyper_quan) == (10.0, 50.0, 8.0)
    assert (reference.hyper_tokens_intra, reference.hyper_distill, reference.hyper_alpha) == (1.0, 1.0, 0.01)
    for name in ("coco", "flickr25k", "nuswide"):
        assert not {"hyper_cls_inter", "hyper_info_nce", "hyper_quan"} & set(MITHConfig.defaults_for(name))
