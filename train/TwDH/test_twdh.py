"""TwDH fixtures (README: Fixtures), asset construction and code properties."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from model.heads import pair_codes
from train.TwDH.centers import (
    analytic_transform,
    find_asset,
    long_centers,
    read_matrix,
    short_centers,
    sylvester_hadamard,
)
from train.TwDH.loss import TwDHLoss, bce, center_targets, onehot, pair_softmax, quantization
from train.TwDH.trainer import Trainer, TwDHConfig
from utils.errors import UserError


def t(values):
    return torch.tensor(values, dtype=torch.float64)


def pairs(values):
    """Flat reference vectors (B, 2K) -> (B, K, 2)."""
    x = t(values)
    return x.reshape(x.shape[0], -1, 2)


def test_onehot_and_decoding():
    assert onehot(t([[1, -1, 1]])).flatten(1).tolist() == [[0, 1, 1, 0, 0, 1]]
    codes = t([[1, -1, 1, 1], [-1, -1, 1, -1]])
    assert torch.equal(pair_codes(onehot(codes)), codes)


def test_multi_label_targets_ties_share_one_random_vector():
    centers = t([[1, 1, -1, -1], [1, -1, 1, -1]])
    labels = t([[1, 1], [1, 1], [1, 0]])
    seen = set()
    for seed in range(8):
        torch.manual_seed(seed)
        targets = center_targets(labels, centers)
        assert torch.equal(targets[0], targets[1])
        assert targets[0, 0] == 1 and targets[0, 3] == -1
        assert set(targets[0, 1:3].tolist()) <= {-1.0, 1.0}
        assert targets[2].tolist() == [1, 1, -1, -1]
        seen.add(tuple(targets[0, 1:3].tolist()))
    assert len(seen) > 1  # the tie filling is random


def test_unlabeled_sample_gets_minus_one_everywhere():
    targets = center_targets(t([[0, 0], [1, 0]]), t([[1, 1, -1, -1], [1, -1, 1, -1]]))
    assert targets[0].tolist() == [-1, -1, -1, -1]
    assert onehot(targets[0]).flatten().tolist() == [1, 0] * 4


def test_bce_and_quantization_fixture():
    p = pairs([[.8, .2, .3, .7]])
    value = bce(p, t([[-1, 1]]))  # onehot = [1, 0, 0, 1]
    assert value.item() == pytest.approx(0.2899092, abs=1e-7)
    assert value.item() == pytest.approx(-(np.log(.8) + np.log(.7)) / 2, abs=1e-12)
    assert quantization(p).item() == pytest.approx(0.74, abs=1e-12)


C_LONG = [[1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]]
C_SHORT = [[1, -1], [-1, 1], [1, 1]]
LABELS = [[1, 0, 0], [1, 1, 1]]
P_IMG = [[.3, .7, .6, .4, .2, .8, .9, .1], [.1, .9, .8, .2, .4, .6, .5, .5]]
P_TXT = [[.4, .6, .7, .3, .1, .9, .6, .4], [.2, .8, .3, .7, .6, .4, .7, .3]]
T_ROWS = [[.5, -.5, .2, -.2], [-.5, .5, -.2, .2], [.1, -.1, .6, -.6], [-.1, .1, -.6, .6],
          [.3, -.3, -.4, .4], [-.3, .3, .4, -.4], [0, 0, .5, -.5], [0, 0, -.5, .5]]


def fixture_loss(low_rate, transform=T_ROWS):
    return TwDHLoss(t(C_LONG), {2: t(C_SHORT)}, {2: t(transform)}, quan_alpha=0.5, low_rate=low_rate).double()


def test_full_loss_fixture_long_only():
    assert center_targets(t(LABELS), t(C_LONG)).tolist() == [[1, -1, 1, -1], [1, -1, -1, -1]]
    crit = fixture_loss(0.0)
    targets = center_targets(t(LABELS), t(C_LONG))
    assert bce(pairs(P_IMG), targets).item() == pytest.approx(0.3917433, abs=1e-7)
    assert bce(pairs(P_TXT), targets).item() == pytest.approx(0.4722879, abs=1e-7)
    assert [quantization(pairs(P_IMG)).item(), quantization(pairs(P_TXT)).item()] == pytest.approx([0.72, 0.80])
    out = crit(pairs(P_IMG), pairs(P_TXT), t(LABELS))
    assert out["loss"].item() == pytest.approx(0.8120157, abs=1e-7)
    assert "bce_2" not in out  # short terms skipped at low_rate 0


def test_full_loss_fixture_with_short_path():
    crit = fixture_loss(1.0)
    short_img = pair_softmax(crit.short_logits(pairs(P_IMG), 2))
    assert short_img.flatten().tolist() == pytest.approx(
        [0.3273930, 0.6726070, 0.7957597, 0.2042403, 0.3100255, 0.6899745, 0.6364526, 0.3635474], abs=1e-7)
    assert center_targets(t(LABELS), t(C_SHORT)).tolist() == [[1, -1], [1, 1]]
    out = crit(pairs(P_IMG), pairs(P_TXT), t(LABELS))
    assert out["bce_2"].item() == pytest.approx(0.4541464, abs=1e-7)
    assert out["quantization_2"].item() == pytest.approx(0.8491942, abs=1e-7)
    assert out["loss"].item() == pytest.approx(2.1153562, abs=1e-7)


def test_transform_gets_no_gradient_and_no_influence_at_low_rate_zero():
    other = (t(T_ROWS) * 3).flip(0).tolist()
    values = [fixture_loss(0.0, tr)(pairs(P_IMG), pairs(P_TXT), t(LABELS))["loss"].item() for tr in (T_ROWS, other)]
    assert values[0] == values[1]
    for low_rate, expect_grad in ((0.0, False), (1.0, True)):
        crit = fixture_loss(low_rate)
        crit.transform_2.requires_grad_()
        crit(pairs(P_IMG).requires_grad_(), pairs(P_TXT), t(LABELS))["loss"].backward()
        assert (crit.transform_2.grad is not None) == expect_grad


def test_short_codes_do_not_depend_on_the_softmax_and_long_codes_are_pair_argmax():
    torch.manual_seed(0)
    crit = fixture_loss(0.0)
    image = torch.softmax(torch.randn(50, 4, 2, dtype=torch.float64), -1)
    text = torch.softmax(torch.randn(50, 4, 2, dtype=torch.float64), -1)
    sets = crit.codes(image, text)
    assert set(sets) == {"4", "2"}
    assert torch.equal(sets["4"][0], pair_codes(image))
    assert torch.equal(sets["2"][1], pair_codes(pair_softmax(crit.short_logits(text, 2))))
    assert sets["2"][0].shape == (50, 2) and set(sets["2"][0].unique().tolist()) <= {-1.0, 1.0}


def test_sylvester_hadamard():
    h = sylvester_hadamard(16)
    assert torch.equal(h @ h.T, 16 * torch.eye(16)) and torch.all(h[0] == 1)
    with pytest.raises(ValueError):
        sylvester_hadamard(12)


@pytest.mark.parametrize("classes, long_bits", [(24, 512), (80, 128), (21, 1024)])
def test_long_centers_are_distinct_hadamard_rows_at_distance_half(classes, long_bits):
    centers = long_centers(classes, long_bits, torch.Generator().manual_seed(1))
    distance = (long_bits - centers @ centers.T) / 2
    assert torch.equal(distance, long_bits / 2 * (1 - torch.eye(classes)))
    assert torch.all(centers.sum(1) == 0)


@pytest.mark.parametrize("classes, bits, kind", [(12, 16, "H"), (21, 32, "H"), (24, 16, "[H;-H]"), (80, 64, "[H;-H]"),
                                                 (80, 16, "random"), (80, 32, "random")])
def test_short_centers_balanced_distinct(classes, bits, kind):
    centers = short_centers(classes, bits, torch.Generator().manual_seed(0))
    assert centers.shape == (classes, bits) and set(centers.unique().tolist()) == {-1.0, 1.0}
    assert torch.all(centers.sum(1) == 0)
    distance = (bits - centers @ centers.T) / 2
    off = distance[~torch.eye(classes, dtype=torch.bool)]
    assert off.min() >= {"H": bits / 2, "[H;-H]": bits / 2, "random": 2}[kind]
    if kind == "random":  # at least as good as the reference's random COCO centers (min distance 2 / 8)
        assert off.min() >= {16: 2, 32: 8}[bits]


@pytest.mark.parametrize("classes, long_bits, bits", [(24, 512, 16), (24, 512, 32), (24, 512, 64), (21, 512, 16),
                                                      (80, 512, 16), (80, 512, 64), (80, 128, 32)])
def test_analytic_transform_maps_every_class_center_exactly(classes, long_bits, bits):
    generator = torch.Generator().manual_seed(3)
    long, short = long_centers(classes, long_bits, generator), short_centers(classes, bits, generator)
    transform = analytic_transform(long, short)
    assert transform.shape == (2 * long_bits, 2 * bits)
    logits = onehot(long).flatten(1) @ transform
    pair = logits.reshape(classes, bits, 2)
    assert torch.allclose(pair[..., 1] - pair[..., 0], short, atol=1e-5)
    assert torch.equal(pair_codes(pair), short)


def test_analytic_transform_matches_the_spec_entries():
    long = t([[1, -1, 1, -1], [1, 1, -1, -1]])
    short = t([[1, -1], [-1, 1]])
    w = short.T @ long / 4
    transform = analytic_transform(long, short)
    for i in range(4):
        for k in range(2):
            assert transform[2 * i + 1, 2 * k + 1] == transform[2 * i, 2 * k] == w[k, i] / 2
            assert transform[2 * i + 1, 2 * k] == transform[2 * i, 2 * k + 1] == -w[k, i] / 2


def test_asset_files_in_both_torch_formats_and_npy(tmp_path):
    centers = long_centers(5, 16, torch.Generator().manual_seed(0)).long()
    torch.save(centers, tmp_path / "16.pkl", _use_new_zipfile_serialization=False)  # COCO/NUS short/*.pkl format
    np.save(tmp_path / "8.npy", centers[:, :8].numpy())
    torch.save(centers.float(), tmp_path / "4.pt")
    assert torch.equal(read_matrix(find_asset(tmp_path, "16"), (5, 16), pm1=True), centers.float())
    assert read_matrix(find_asset(tmp_path, "8"), (5, 8), pm1=True).dtype == torch.float32
    with pytest.raises(UserError, match="5x6 tensor"):
        read_matrix(find_asset(tmp_path, "4"), (5, 6), pm1=True)
    torch.save(centers.float() * 0.5, tmp_path / "2.pt")
    with pytest.raises(UserError, match=r"\+1 and -1"):
        read_matrix(find_asset(tmp_path, "2"), (5, 16), pm1=True)
    with pytest.raises(UserError, match="not found"):
        find_asset(tmp_path, "32")


def test_config_defaults():
    cfg = TwDHConfig(dataset="coco")
    assert (cfg.map_k, cfg.long_dim, cfg.short_bits, cfg.quan_alpha, cfg.low_rate) == (5000, 512, (16, 32, 64), .5, 0)
    assert (cfg.batch_size, cfg.epochs, cfg.lr, cfg.clip_lr) == (128, 100, 1e-3, 1e-5)
    assert cfg.train_transform == "flip_random_crop"


def test_trainer_reads_reference_layout_and_generates_otherwise(tmp_path):
    generator = torch.Generator().manual_seed(7)
    long, short = long_centers(5, 16, generator), short_centers(5, 4, generator)
    (tmp_path / "long").mkdir()
    (tmp_path / "short").mkdir()
    (tmp_path / "trans" / "16").mkdir(parents=True)
    torch.save(long.long(), tmp_path / "long" / "16.pkl")
    np.save(tmp_path / "short" / "4.npy", short.numpy())
    learned = torch.randn(32, 8)
    torch.save(learned, tmp_path / "trans" / "16" / "4.pkl")

    def fake(**options):
        cfg = TwDHConfig(long_dim=16, short_bits="4", output_dim=4, **options)
        return SimpleNamespace(cfg=cfg, num_classes=5, short_lengths=(4,))

    trainer = fake(center_dir=str(tmp_path), transform_dir=str(tmp_path / "trans"))
    loaded_long, loaded_short = Trainer.class_centers(trainer)
    assert torch.equal(loaded_long, long) and torch.equal(loaded_short[4], short)
    assert torch.equal(Trainer.transforms(trainer, loaded_long, loaded_short)[4], learned)
    analytic = Trainer.transforms(fake(center_dir=str(tmp_path)), loaded_long, loaded_short)[4]
    assert torch.equal(analytic, analytic_transform(long, short))
    generated = Trainer.class_centers(fake(center_seed=3))
    assert torch.equal(generated[0], Trainer.class_centers(fake(center_seed=3))[0])
    assert not torch.equal(generated[0], Trainer.class_centers(fake(center_seed=4))[0])
    with pytest.raises(UserError, match="--center-dir"):
        Trainer.transforms(fake(transform_dir=str(tmp_path / "trans")), long, {4: short})
    with pytest.raises(UserError, match="power of two"):
        long_centers(5, 24, generator)
