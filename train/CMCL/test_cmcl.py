"""CMCL fixtures (README: Fixtures): likelihood, contrastive terms, quantization, the whole loss, model and buffers."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dataset.builder import resolve_split_sizes
from dataset.catalog import resolve_dataset
from dataset.splits import split_rows
from model.clip import build_tiny_clip
from train.CMCL.loss import CMCLLoss, local_info_nce, quantization
from train.CMCL.model import CMCLHead, CMCLModel, CMCLOutput
from train.CMCL.trainer import CMCLConfig, Trainer
from train.common import bayesian_likelihood, info_nce
from utils.errors import UserError


def t(values):
    return torch.tensor(values, dtype=torch.float64)


# ------------------------------------------------------------------ likelihood and quantization
def test_likelihood_zero_inner_products_is_log2():
    for s in ([[1, 0]], [[0, 0]], [[1, 1]]):
        assert bayesian_likelihood(t([[0, 0]]), t([[1, -1], [2, 3]]), t(s)).item() == pytest.approx(math.log(2))


def test_likelihood_saturates():
    assert bayesian_likelihood(t([[100, 0]]), t([[1, 0]]), t([[1]])).item() == pytest.approx(0.0, abs=1e-12)
    assert bayesian_likelihood(t([[100, 0]]), t([[1, 0]]), t([[0]])).item() == pytest.approx(32.0, abs=1e-12)


def test_likelihood_numeric():
    similarity = ((t([[1, 0], [0, 1], [1, 1]]) @ t([[1, 0], [0, 1]]).T) > 0).double()
    assert similarity.tolist() == [[1, 0], [0, 1], [1, 1]]
    value = bayesian_likelihood(t([[1, 0], [0, 1], [1, 1]]), t([[2, -1], [0.5, 0.5]]), similarity)
    assert value.item() == pytest.approx(0.522895, abs=1e-6)


def test_quantization():
    b = t([[1, -1, 1], [-1, -1, 1]])
    assert quantization(b, b).item() == 0.0
    assert quantization(torch.zeros_like(b), b).item() == pytest.approx(1.0)
    assert quantization(t([[.5, -.5, 1], [0, -1, .2]]), b).item() == pytest.approx(0.356667, abs=1e-6)


# ------------------------------------------------------------------ contrastive
LOCAL_I = t([[[1, 0], [.6, .8]], [[0, 1], [1, 0]]])  # (L, m, D) as in the reference
LOCAL_T = t([[[.8, .6], [0, 1]], [[.6, .8], [1, 0]]])


def local_tokens():
    """The reference's (L, m, D) arrays, normalised, as batch-first (m, L, D)."""
    return F.normalize(LOCAL_I, dim=-1).transpose(0, 1), F.normalize(LOCAL_T, dim=-1).transpose(0, 1)


def test_local_info_nce_orthonormal_and_identical_tokens():
    tokens = torch.eye(64, dtype=torch.float64).expand(3, 64, 64)
    assert local_info_nce(tokens, tokens, 0.07).item() == pytest.approx(math.log(1 + 63 * math.exp(-1 / 0.07)),
                                                                        rel=1e-6)
    assert local_info_nce(tokens, tokens, 0.07).item() == pytest.approx(3.9366e-5, rel=1e-4)
    same = F.normalize(torch.ones(2, 64, 8, dtype=torch.float64), dim=-1)
    assert local_info_nce(same, same, 0.07).item() == pytest.approx(math.log(64))


def test_local_info_nce_numeric():
    a, b = local_tokens()
    assert local_info_nce(a, b, 0.07).item() == pytest.approx(0.035316, abs=1e-6)
    assert local_info_nce(a, b, 1.0).item() == pytest.approx(0.523509, abs=1e-6)


def test_global_info_nce_numeric_and_symmetric():
    a = F.normalize(t([[1, 0], [.6, .8], [0, 1]]), dim=1)
    b = F.normalize(t([[.8, .6], [0, 1], [-.6, .8]]), dim=1)
    assert info_nce(a, b, 0.07).item() == pytest.approx(1.766696, abs=1e-6)
    assert info_nce(b, a, 0.07).item() == pytest.approx(1.766696, abs=1e-6)
    assert info_nce(a, b, 1.0).item() == pytest.approx(0.891169, abs=1e-6)


def test_global_info_nce_is_the_clip_loss():
    torch.manual_seed(0)
    a, b = F.normalize(torch.randn(6, 5), dim=1), F.normalize(torch.randn(6, 5), dim=1)
    logits = a @ b.T / 0.07
    clip = (F.cross_entropy(logits, torch.arange(6)) + F.cross_entropy(logits.T, torch.arange(6))) / 2
    assert info_nce(a, b, 0.07).item() == pytest.approx(clip.item(), abs=1e-6)


# ------------------------------------------------------------------ whole loss
H_I = t([[.5, -.5, .1, .3], [.2, .8, -.3, -.1]])
H_T = t([[.4, -.6, .2, .2], [.1, .9, -.2, 0]])
R_I = {2: t([[.5, -.5, .5, .5], [.5, .5, -.5, -.5]]), 3: t([[.9, -.9, .9, .9], [0, 0, 0, 0]])}


def fixture_criterion() -> CMCLLoss:
    loss = CMCLLoss(t([[1, 0], [0, 1], [1, 1]]), (2, 3), 4).double()
    targets = t([[1, -1, 1, 1], [1, 1, -1, 1], [1, 1, -1, -1]])
    for k in (2, 3, 4):
        image, text, target = loss.banks(k)
        image[1], text[1] = t([.3, .3, -.7, .6])[:k], t([-.2, .4, -.5, .5])[:k]
        target.copy_(targets[:, :k])
    return loss


def fixture_output() -> CMCLOutput:
    local_i, local_t = local_tokens()
    return CMCLOutput({k: H_I[:, :k] for k in (2, 3, 4)}, {k: H_T[:, :k] for k in (2, 3, 4)},
                      dict(R_I), {k: -0.5 * r for k, r in R_I.items()}, local_i, local_t,
                      F.normalize(t([[1, 0], [.6, .8]]), dim=1), F.normalize(t([[.8, .6], [0, 1]]), dim=1))


def test_whole_batch_loss_fixture():
    loss, out, index = fixture_criterion(), fixture_output(), torch.tensor([0, 2])
    labels = loss.train_labels[index]
    loss.update_banks(index, out)
    terms = loss.terms(out, labels, index)
    expected = {
        "intra_image_2": 0.003308, "intra_text_2": 0.003300, "inter_2": 6.617108, "quan_2": 0.63,
        "intra_image_3": 0.003250, "intra_text_3": 0.003268, "inter_3": 6.533694, "quan_3": 0.85,
        "intra_image_4": 0.065896, "intra_text_4": 0.065591, "inter_4": 131.680291, "quan_4": 20.1,
        "local_nce": 0.035316, "global_nce": 5.956452,
        "recon_image_2": 0.1, "recon_text_2": 0.625, "recon_image_3": 0.202, "recon_text_3": 0.6205,
    }
    assert set(terms) == set(expected)
    for key, value in expected.items():
        assert terms[key].item() == pytest.approx(value, abs=1e-6), key
    total = loss(out, labels, index)
    assert total["loss"].item() == pytest.approx(174.094974, abs=1e-5)
    assert total["reconstruction"].item() == pytest.approx(0.1 + 0.625 + 0.202 + 0.6205)
    assert total["quantization"].item() == pytest.approx(0.63 + 0.85 + 20.1)


def test_reconstruction_of_zero_is_mu_delta_aux_per_modality_and_length():
    loss = CMCLLoss(torch.eye(3), (16, 32, 64), 128)
    out = CMCLOutput({k: torch.zeros(2, k) for k in (16, 32, 64, 128)}, {k: torch.zeros(2, k) for k in (16, 32, 64, 128)},
                     {k: torch.zeros(2, 128) for k in (16, 32, 64)}, {k: torch.zeros(2, 128) for k in (16, 32, 64)},
                     torch.eye(4).expand(2, 4, 4), torch.eye(4).expand(2, 4, 4), torch.eye(2), torch.eye(2))
    terms = loss.terms(out, torch.eye(3)[:2], torch.tensor([0, 1]))
    for k in (16, 32, 64):
        for name in ("image", "text"):
            assert terms[f"recon_{name}_{k}"].item() == pytest.approx(20 * 0.005 * 128)


# ------------------------------------------------------------------ buffers
def test_buffer_protocol():
    torch.manual_seed(0)
    loss = CMCLLoss(torch.eye(5), (2, 3), 4)
    for k in (2, 3, 4):
        image, text, target = loss.banks(k)
        assert torch.equal(target, torch.sign(image + text))
    before = {k: [b.clone() for b in loss.banks(k)] for k in (2, 3, 4)}
    codes_i = {k: torch.rand(2, k) for k in (2, 3, 4)}
    codes_t = {k: -torch.rand(2, k) for k in (2, 3, 4)}
    out = CMCLOutput(codes_i, codes_t, {}, {}, torch.empty(0), torch.empty(0), torch.empty(0), torch.empty(0))
    loss.update_banks(torch.tensor([1, 3]), out)
    for k in (2, 3, 4):
        image, text, target = loss.banks(k)
        assert torch.equal(image[[1, 3]], codes_i[k]) and torch.equal(text[[1, 3]], codes_t[k])
        assert torch.equal(image[[0, 2, 4]], before[k][0][[0, 2, 4]])
        assert torch.equal(target, before[k][2])  # targets change only at the epoch's end
    loss.refresh_targets()
    for k in (2, 3, 4):
        image, text, target = loss.banks(k)
        assert torch.equal(target, torch.sign(image + text))
    names = set(loss.state_dict())
    assert names == {f"{kind}_{k}" for kind in ("bank_image", "bank_text", "target") for k in (2, 3, 4)}


# ------------------------------------------------------------------ model
def test_head_parameter_count_at_clip_width():
    head = CMCLHead(512, (16, 32, 64), 128)
    assert sum(p.numel() for p in head.parameters()) == 12_830_704


def tiny_head() -> CMCLHead:
    torch.manual_seed(0)
    return CMCLHead(64, (16, 32, 64), 128, concepts=8)


def test_shapes_sharing_and_eval_determinism():
    head = tiny_head().eval()
    pooled, tokens = torch.randn(3, 64), torch.randn(3, 5, 64)
    out = head(pooled, tokens, None, pooled, torch.randn(3, 7, 64), torch.zeros(3, 7, dtype=torch.bool))
    assert {k: v.shape for k, v in out.codes_image.items()} == {k: (3, k) for k in (16, 32, 64, 128)}
    assert {k: v.shape for k, v in out.recon_text.items()} == {k: (3, 128) for k in (16, 32, 64)}
    assert out.concepts_image.shape == (3, 8, 64) and out.global_text.shape == (3, 64)
    assert torch.allclose(out.concepts_text.norm(dim=-1), torch.ones(3, 8), atol=1e-5)
    assert torch.allclose(out.global_image.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.equal(out.global_image, out.global_text)  # one global MLP for both modalities
    fused = torch.randn(3, 64)
    codes_i, recon_i = head.hash(fused)
    codes_t, recon_t = head.hash(fused)
    assert all(torch.equal(codes_i[k], codes_t[k]) for k in codes_i)  # shared encoders and decoders
    again = head(pooled, tokens, None, pooled, torch.randn(3, 7, 64), None)
    assert torch.equal(again.codes_image[64], out.codes_image[64])  # eval mode: dropout off
    head.train()
    first = head(pooled, tokens, None, pooled, tokens, None).codes_image[64]
    assert not torch.equal(first, head(pooled, tokens, None, pooled, tokens, None).codes_image[64])


def test_text_padding_is_ignored_by_the_local_branch():
    head = tiny_head().eval()
    tokens = torch.randn(2, 6, 64)
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[:, 3:] = True
    changed = tokens.clone()
    changed[:, 3:] = 50.0
    queries = head.norm_q(head.concepts).expand(2, -1, -1)
    with torch.no_grad():
        assert torch.allclose(head.local_text(queries, tokens, mask), head.local_text(queries, changed, mask), atol=1e-5)


def test_model_on_tiny_clip_batch_of_one():
    torch.manual_seed(0)
    backbone = build_tiny_clip()
    model = CMCLModel(backbone, CMCLHead(backbone.embed_dim, (16, 32), 64, concepts=4)).eval()
    texts = torch.zeros(1, 32, dtype=torch.long)
    texts[0, :4] = torch.tensor([49406, 320, 1125, 49407])
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64), texts, torch.arange(32)[None] > 3)
    assert out.codes_text[64].shape == (1, 64) and out.recon_image[16].shape == (1, 64)


# ------------------------------------------------------------------ trainer pieces
def test_selection_averages_the_six_short_length_maps():
    trainer = Trainer(CMCLConfig(code_lengths=(16, 32, 64)))
    results = {str(k): {"i2t": {"mAP": 0.1 * i}, "t2i": {"mAP": 0.1 * i + 0.05}} for i, k in enumerate((16, 32, 64, 128))}
    assert trainer.selection_score(results) == pytest.approx((0 + .05 + .1 + .15 + .2 + .25) / 6)


def test_code_lengths_are_a_checked_comma_list():
    assert CMCLConfig(code_lengths="16,32,64").code_lengths == (16, 32, 64)
    for bad in ("16,x", "16,16", "0,8", ""):
        with pytest.raises(UserError):
            CMCLConfig(code_lengths=bad)
    with pytest.raises(UserError, match="--output-dim 24"):
        CMCLConfig(output_dim=24)


@pytest.mark.parametrize("dataset, n, sizes", [("flickr25k", 20015, (2000, 10000, 18015)),
                                               ("coco", 122218, (5000, 10000, 117218)),
                                               ("nuswide", 190421, (2100, 10500, 188321))])
def test_mith_split_reproduces_cmcl_sizes(dataset, n, sizes):
    assert CMCLConfig.defaults_for(dataset).get("split", CMCLConfig.split) == "mith"
    protocol = resolve_split_sizes(resolve_dataset(dataset), "mith", None, None, None)
    assert protocol.seed == 1
    split = split_rows(n, protocol.query, protocol.train, protocol.seed)
    assert (len(split.query), len(split.train), len(split.retrieval)) == sizes
    assert np.isin(split.train, split.retrieval).all()


def test_dataset_defaults_follow_the_run_scripts():
    assert CMCLConfig.defaults_for("flickr25k")["hyper_recon"] == 0.001
    assert CMCLConfig.defaults_for("nuswide")["epochs"] == 10
    assert CMCLConfig.defaults_for("coco")["lr"] == 2e-3
    assert CMCLConfig.defaults_for("demo")["split"] == "standard"
