"""PairDataset: items pickle (loader workers started with `spawn` receive the dataset pickled) and train."""
import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dataset.builder import build_datasets
from dataset.catalog import SplitSizes
from dataset.demo import generate_demo
from dataset.image_cache import attach_image_cache
from dataset.mat import load_pair_table

ROOT = Path(__file__).resolve().parents[1]
SPAWN_MAIN = "import multiprocessing, sys; multiprocessing.set_start_method('spawn'); import main; " \
             "sys.exit(main.main(sys.argv[1:]))"


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    return generate_demo(tmp_path_factory.mktemp("demo") / "data", num_items=48, progress=False)


def same_item(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) if torch.is_tensor(a[k]) else a[k] == b[k] for k in a)


@pytest.mark.parametrize("cached", [False, True])
def test_every_subset_pickles_and_gives_the_same_items(demo_dir, tmp_path, cached):
    data = build_datasets(load_pair_table(demo_dir), SplitSizes(query=8, train=16, seed=0), 32, 32, "flip", "first")
    if cached:
        attach_image_cache(data, tmp_path / "cache", "flip", 32, 0, build=True, wait=lambda: None, progress=False)
    for subset in (data.train, data.query, data.retrieval, data.train_eval):
        copy = pickle.loads(pickle.dumps(subset))
        torch.manual_seed(0)
        expected = subset[3]
        torch.manual_seed(0)
        assert same_item(copy[3], expected)


@pytest.mark.parametrize("cached", [False, True])
def test_training_set_as_evaluation_items(demo_dir, tmp_path, cached):
    """`train_eval`: the training pairs exactly as the database gives them (eval transform and caption; with the
    image cache, from the cache), under the training labels."""
    data = build_datasets(load_pair_table(demo_dir), SplitSizes(query=8, train=16, seed=0), 32, 32, "resize_crop",
                          "first")
    if cached:
        attach_image_cache(data, tmp_path / "cache", "resize_crop", 32, 0, build=True, wait=lambda: None,
                           progress=False)
    assert len(data.train_eval) == len(data.train) == 16
    assert torch.equal(data.train_eval.labels, data.train.labels)
    for i in range(16):
        item = data.train_eval[i]
        assert same_item(item, data.retrieval[i])
        assert item["image"].dtype == (torch.uint8 if cached else torch.float32)


def test_one_epoch_with_spawn_loader_workers(demo_dir, tmp_path):
    """The start method of macOS and Windows: every loader (training, query, database) starts a spawned worker."""
    run_dir = tmp_path / "run"
    flags = ["--method", "_template", "--dataset", "demo", "--data-dir", str(demo_dir), "--save-dir", str(run_dir),
             "--query-num", "8", "--train-num", "16", "--epochs", "1", "--batch-size", "8", "--num-workers", "1",
             "--prefetch-factor", "1", "--no-progress"]
    done = subprocess.run([sys.executable, "-c", SPAWN_MAIN, *flags], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((run_dir / "summary.json").read_text())["best_epoch"] == 1
