"""DCHMT fixtures (README: Fixtures), head and code properties."""
import math

import pytest
import torch

from model.heads import AttentionPairHead, PairSoftmaxHead, pair_codes
from train.common import label_similarity
from train.DCHMT.loss import quantization_loss, similarity_loss


def t(values):
    return torch.tensor(values, dtype=torch.float64)


def loss_value(image, text, similarity, vartheta, loss_type="l2", bits=2):
    return similarity_loss(t(image), t(text), t(similarity), bits, vartheta, loss_type)


def test_tiny_fixture():
    codes = [[1, 0, 0, 1], [0, 1, 0, 1]]
    out = loss_value(codes, codes, [[1, 0], [0, 1]], 0.75)
    assert out["loss"].item() == pytest.approx(3 * 2 * (math.sqrt(3) - math.sqrt(2)) ** 2 / 4, abs=1e-7)
    assert out["loss"].item() == pytest.approx(0.1515308, abs=1e-7)
    assert loss_value(codes, codes, [[1, 1], [1, 1]], 0.75)["loss"].item() == pytest.approx(3.0, abs=1e-12)


def test_soft_fixture():
    image = [[.9, .1, .2, .8], [.3, .7, .6, .4]]
    text = [[.8, .2, .1, .9], [.5, .5, .5, .5]]
    out = loss_value(image, text, [[1, 0], [0, 1]], 0.75)
    assert [out["pos_i2t"].item(), out["neg_i2t"].item()] == pytest.approx([0.035, 0.396602], abs=1e-6)
    assert [out["pos_i2i"].item(), out["neg_i2i"].item()] == pytest.approx([0.0, 0.253648], abs=1e-6)
    assert [out["pos_t2t"].item(), out["neg_t2t"].item()] == pytest.approx([0.0, 0.525255], abs=1e-6)
    assert out["loss"].item() == pytest.approx(1.2105051, abs=1e-6)
    q_i, q_t = quantization_loss(t(image)), quantization_loss(t(text))
    assert [q_i.item(), q_t.item()] == pytest.approx([0.70, 0.75], abs=1e-12)
    assert (out["loss"] + 0.001 * (q_i + q_t) / 2).item() == pytest.approx(1.2112301, abs=1e-6)


MULTI_I = [[.6, .4, .3, .7], [.2, .8, .9, .1], [.5, .5, .4, .6]]
MULTI_T = [[.7, .3, .2, .8], [.1, .9, .6, .4], [.9, .1, .5, .5]]
MULTI_L = [[1, 1, 0], [0, 1, 0], [0, 0, 1]]


def test_multi_label_fixture_vartheta_half():
    s = label_similarity(t(MULTI_L)).double()
    assert s.tolist() == [[1, 1, 0], [1, 1, 0], [0, 0, 1]]
    out = similarity_loss(t(MULTI_I), t(MULTI_T), s, 2, 0.5)
    expected = {"pos_i2t": 0.3044444, "neg_i2t": 0.2814057, "pos_i2i": 0.2311111, "neg_i2i": 0.4048742,
                "pos_t2t": 0.2311111, "neg_t2t": 0.1984170, "loss": 1.6513635}
    for key, value in expected.items():
        assert out[key].item() == pytest.approx(value, abs=1e-6), key


def test_multi_label_fixture_vartheta_three_quarters_and_l1():
    s = label_similarity(t(MULTI_L)).double()
    out = similarity_loss(t(MULTI_I), t(MULTI_T), s, 2, 0.75)
    assert [out["neg_i2t"].item(), out["neg_i2i"].item(), out["neg_t2t"].item()] == pytest.approx(
        [0.5363815, 0.7045797, 0.4097699], abs=1e-6)
    assert out["loss"].item() == pytest.approx(2.4173977, abs=1e-6)
    q = (quantization_loss(t(MULTI_I)) + quantization_loss(t(MULTI_T))) / 2
    assert quantization_loss(t(MULTI_I)).item() == pytest.approx(0.7933333, abs=1e-6)
    assert (out["loss"] + 0.001 * q).item() == pytest.approx(2.4181411, abs=1e-6)
    l1 = similarity_loss(t(MULTI_I), t(MULTI_T), s, 2, 0.5, "l1")
    assert l1["loss"].item() == pytest.approx(1.8099257, abs=1e-6)


def test_far_negatives_and_identical_positives_give_zero_loss_and_gradient():
    image = t([[1, 0, 1, 0], [0, 1, 0, 1]]).requires_grad_()  # 2 bits apart: D = 2 >= m = sqrt(2)
    out = similarity_loss(image, image, torch.eye(2, dtype=torch.float64), 2, 0.5)
    out["loss"].backward()
    assert out["loss"].item() == 0.0
    assert torch.all(image.grad == 0)


def test_gradient_signs():
    a = t([[0.6, 0.4]]).requires_grad_()
    b = t([[0.4, 0.6]])
    positive = similarity_loss(a, b, t([[1.0]]), 1, 0.5)["pos_i2t"]
    positive.backward()
    assert a.grad[0, 0] > 0  # moving a towards b (decreasing a0) lowers the loss
    a.grad = None
    negative = similarity_loss(a, b, t([[0.0]]), 1, 0.5)["neg_i2t"]
    negative.backward()
    assert a.grad[0, 0] < 0  # increasing the distance lowers the loss


def test_permutation_and_swap_invariance():
    s = label_similarity(t(MULTI_L)).double()
    base = similarity_loss(t(MULTI_I), t(MULTI_T), s, 2, 0.5)["loss"].item()
    perm = [2, 0, 1]
    permuted = similarity_loss(t(MULTI_I)[perm], t(MULTI_T)[perm], s[perm][:, perm], 2, 0.5)["loss"].item()
    swapped = similarity_loss(t(MULTI_T), t(MULTI_I), s, 2, 0.5)["loss"].item()
    assert permuted == pytest.approx(base, abs=1e-12) and swapped == pytest.approx(base, abs=1e-12)


@pytest.mark.parametrize("head", [PairSoftmaxHead(16, 5, hidden=8), AttentionPairHead(16, 5, "layer", heads=2)])
def test_heads_give_probability_pairs_and_pm1_codes(head):
    out = head(torch.randn(3, 16))
    assert out.shape == (3, 5, 2)
    assert torch.allclose(out.sum(-1), torch.ones(3, 5))
    codes = pair_codes(out)
    assert codes.shape == (3, 5) and set(codes.unique().tolist()) <= {-1.0, 1.0}


def test_pair_codes_ties_are_minus_one():
    assert pair_codes(torch.tensor([[[0.5, 0.5], [0.2, 0.8], [0.9, 0.1]]])).tolist() == [[-1, 1, -1]]


def test_attention_head_works_for_batch_of_one():
    head = AttentionPairHead(16, 4, "batch", heads=2).eval()
    assert head(torch.randn(1, 16)).shape == (1, 4, 2)


def test_original_head_init_bounds():
    head = PairSoftmaxHead(512, 64, hidden=128)
    assert head.pairs.weight.abs().max().item() <= math.sqrt(3) + 1e-6  # kaiming fan_out = 2 per bit block
    assert head.pairs.weight.abs().max().item() > 1.5
    assert head.fc.weight.abs().max().item() <= math.sqrt(2) * math.sqrt(3 / 128) + 1e-6
    assert torch.all(head.pairs.bias == 0)


def test_head_init_default_keeps_pytorch_init_and_unsaturates_pairs():
    torch.manual_seed(0)
    reference = PairSoftmaxHead(128, 64, hidden=128), AttentionPairHead(128, 64, "layer", heads=2)
    assert reference[0].pairs.weight.abs().max().item() > 1.5  # kaiming(fan_out) by default
    assert all(torch.all(head.pairs.bias == 0) for head in reference)
    heads = PairSoftmaxHead(128, 64, hidden=128, init="default"), AttentionPairHead(128, 64, "layer", heads=2,
                                                                                      init="default")
    for head in heads:
        bound = 1 / math.sqrt(head.pairs.in_features)  # nn.Linear's default weight/bias bound
        assert head.pairs.weight.abs().max().item() <= bound + 1e-6 and head.pairs.bias.abs().max().item() > 0
    x = torch.randn(32, 128)
    assert heads[0](x).max(-1).values.mean().item() < 0.7  # pairs start near (0.5, 0.5)
    with pytest.raises(ValueError, match="unknown init"):
        PairSoftmaxHead(8, 4, hidden=8, init="xavier")


def test_trainer_passes_head_init_to_both_heads():
    from types import SimpleNamespace

    from train.DCHMT import Trainer

    for head_kind in ("original", "kalenforn"):
        for init in ("kaiming", "default"):
            cfg = SimpleNamespace(head=head_kind, head_init=init, output_dim=8, hidden_dim=128)
            model = Trainer.build_model(SimpleNamespace(backbone=SimpleNamespace(embed_dim=16), cfg=cfg))
            for head in (model.image_head, model.text_head):
                assert torch.all(head.pairs.bias == 0) == (init == "kaiming")


def test_config_defaults_reference_and_demo():
    from dataclasses import fields

    from train.DCHMT import Trainer

    def resolved(dataset):
        return {f.name: f.default for f in fields(Trainer.Config)} | Trainer.Config.defaults_for(dataset)

    coco, flickr, demo = resolved("coco"), resolved("flickr25k"), resolved("demo")
    assert (coco["head_init"], coco["vartheta"], coco["lr"], coco["batch_size"]) == ("kaiming", 0.75, 1e-4, 256)
    assert (flickr["head_init"], flickr["vartheta"], flickr["epochs"]) == ("kaiming", 0.5, 100)
    assert demo["head_init"] == "default" and demo["backbone"] == "tiny"
