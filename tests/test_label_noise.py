"""--label-noise: RSH's noise model on the training items only, seeded, exact rate; 0 changes nothing."""
import itertools

import numpy as np
import pytest
import scipy.io as sio
import torch
import yaml
from PIL import Image
from torch.utils.data import DataLoader

import main
from dataset.batch_sampler import GlobalBatchSampler
from dataset.builder import build_datasets
from dataset.catalog import SplitSizes
from dataset.demo import generate_demo
from dataset.label_noise import LabelNoise, swap_labels
from dataset.mat import PairTable, load_pair_table
from utils.errors import UserError


def bits(text: str) -> np.ndarray:
    return np.array([[int(b) for b in row] for row in text.split()], dtype=np.float32)


# Produced by running RSH's own `add_noise_to_labels` (QinLab-WFU/RSH, commit fda3a92, train/hash_train_RSH.py, the
# function unmodified, `self.args.noise_rate` = rate, `self.rank` = "cpu") on the training rows of `labels` right
# after the reference `split_data` drew its permutation with np.random.seed(seed), as its dataset-level variant does.
REFERENCE = {
    "empty and full rows": dict(query=2, train=8, seed=1814, rate=0.5, labels=bits(
        "10000 01100 11111 00000 00010 10101 01000 00110 10001 00001 01010 11000"), noisy=bits(
        "10001 00110 00010 01000 10101 01000 01010 01000")),
    "multi-label": dict(query=10, train=25, seed=1, rate=0.8, labels=bits(
        "1100100 1010000 0010011 0100000 1001001 0100100 0000010 0010101 0001100 0010100 0000101 1101100 0010010 "
        "0000001 0100001 0100000 0001000 0000001 0010000 1000110 0001011 1010010 0001001 0100011 0010010 0000001 "
        "0000100 1000000 0000001 1000000 1000110 0100100 0100001 0101000 1001000 1000000 0000111 0011100 0100000 "
        "0001000"), noisy=bits(
        "0110000 0010000 1010100 0100101 0110000 1000000 0001011 0100100 0000101 0000010 0100011 1010000 1000001 "
        "0001011 1000000 0000001 0010000 0001000 1010001 0100000 1000100 0000100 1100010 0000100 1000100")),
}


def table_of(labels: np.ndarray) -> PairTable:
    return PairTable(paths=[f"{i}.png" for i in range(len(labels))], captions=[["x"]] * len(labels), labels=labels)


def bundle(labels: np.ndarray, query: int, train: int, seed: int, noise: LabelNoise | None):
    return build_datasets(table_of(labels), SplitSizes(query, train, seed), 32, 32, "flip", "first", noise)


@pytest.mark.parametrize("case", list(REFERENCE))
def test_fixed_noise_equals_the_reference_draw(case):
    ref = REFERENCE[case]
    data = bundle(ref["labels"], ref["query"], ref["train"], ref["seed"], LabelNoise(ref["rate"]))
    assert np.array_equal(data.train.labels.numpy(), ref["noisy"])


def random_labels(rows: int = 2000, classes: int = 24) -> np.ndarray:
    rng = np.random.default_rng(0)
    labels = (rng.random((rows, classes)) < 0.15).astype(np.float32)
    labels[labels.sum(1) == 0, rng.integers(classes)] = 1
    return labels


@pytest.mark.parametrize("rate", [0.2, 0.5, 0.8])
def test_only_training_labels_change_at_the_exact_rate(rate):
    labels = random_labels()
    clean = bundle(labels, 300, 1000, 1814, None)
    noisy = bundle(labels, 300, 1000, 1814, LabelNoise(rate))
    assert torch.equal(noisy.query.labels, clean.query.labels)
    assert torch.equal(noisy.retrieval.labels, clean.retrieval.labels)  # the database keeps the clean labels...
    assert torch.equal(noisy.retrieval.labels, torch.from_numpy(labels[noisy.split.retrieval]))
    assert torch.equal(noisy.train_eval.labels, noisy.train.labels)  # ...of the pairs the training set relabels
    changed = noisy.train.labels != clean.train.labels
    assert changed.any(1).sum() == int(1000 * rate)
    assert (changed.sum(1)[changed.any(1)] == 2).all()  # one class lost, one gained
    assert torch.equal(noisy.train.labels.sum(1), clean.train.labels.sum(1))


def test_noise_is_reproducible_for_a_seed_and_differs_for_another():
    labels = random_labels()
    first, again = (bundle(labels, 300, 1000, 1814, LabelNoise(0.5)).train.labels for _ in range(2))
    assert torch.equal(first, again)
    default_seed = bundle(labels, 300, 1000, 1814, LabelNoise(0.5, seed=1814)).train.labels
    assert torch.equal(first, default_seed)
    other = bundle(labels, 300, 1000, 1814, LabelNoise(0.5, seed=7)).train.labels
    assert not torch.equal(first, other)


def test_zero_rate_changes_nothing():
    labels = random_labels()
    clean, zero = bundle(labels, 300, 1000, 1814, None), bundle(labels, 300, 1000, 1814, LabelNoise(0.0))
    for subset in ("train", "query", "retrieval", "train_eval"):
        assert torch.equal(getattr(zero, subset).labels, getattr(clean, subset).labels)
    assert zero.train.batch_label_noise is None
    assert LabelNoise(0.0, "batch").batch_noise() is None


def test_batch_mode_redraws_every_batch_with_the_seeded_global_generator():
    """RSH's training loop: floor(rate * B) items of each batch get fresh noise; the stored labels stay clean."""
    labels = random_labels()
    data = bundle(labels, 300, 1000, 1814, LabelNoise(0.3, "batch"))
    data.train.image_loader = lambda row: Image.new("RGB", (8, 8))  # the labels are what is tested
    assert torch.equal(data.train.labels, torch.from_numpy(labels[data.split.train]))
    positions = list(range(40, 60))
    np.random.seed(0)
    batches = [torch.stack([item["label"] for item in data.train.__getitems__(positions)]) for _ in range(50)]
    clean = data.train.labels[positions]
    changed = torch.stack([(batch != clean).any(1) for batch in batches])
    assert (changed.sum(1) == 6).all()  # floor(0.3 * 20) per batch
    assert changed.float().mean(0).min() > 0.05  # different items each time, every one of them now and then
    np.random.seed(0)
    assert torch.equal(torch.stack([item["label"] for item in data.train.__getitems__(positions)]), batches[0])
    loader = DataLoader(data.train, batch_sampler=GlobalBatchSampler(len(data.train), 20, seed=1))  # as trainers do
    for batch in itertools.islice(loader, 5):
        assert (batch["label"] != data.train.labels[batch["index"]]).any(1).sum() == 6


def test_swap_labels_keeps_the_input_and_handles_degenerate_rows():
    labels = np.array([[0, 0, 0], [1, 1, 1], [1, 0, 0]], dtype=np.float32)
    noisy = swap_labels(labels, 1.0, np.random.RandomState(0))
    assert labels.tolist() == [[0, 0, 0], [1, 1, 1], [1, 0, 0]]
    assert noisy.sum(1).tolist() == [1, 2, 1] and noisy[2, 0] == 0


@pytest.mark.parametrize("rate, mode, message", [(-0.1, "fixed", "--label-noise -0.1"), (1.5, "fixed", "in \\[0, 1\\]"),
                                                 (0.2, "pairs", "--label-noise-mode 'pairs'")])
def test_bad_values_are_user_errors(rate, mode, message):
    with pytest.raises(UserError, match=message):
        LabelNoise(rate, mode)


def test_a_run_records_the_rate_and_evaluates_on_clean_labels(tmp_path):
    folder = generate_demo(tmp_path / "demo", num_items=48, progress=False)
    run_dir = tmp_path / "run"
    assert main.main(["--method", "_template", "--dataset", "demo", "--data-dir", str(folder), "--save-dir",
                      str(run_dir), "--query-num", "8", "--train-num", "16", "--epochs", "1", "--batch-size", "8",
                      "--label-noise", "0.5", "--no-progress"]) == 0
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["label_noise"] == 0.5 and config["label_noise_mode"] == "fixed"
    split = bundle(load_pair_table(folder).labels, 8, 16, 1814, None).split
    codes, labels = sio.loadmat(run_dir / "codes.mat"), load_pair_table(folder).labels
    assert np.array_equal(codes["q_l"], labels[split.query]) and np.array_equal(codes["r_l"], labels[split.retrieval])
