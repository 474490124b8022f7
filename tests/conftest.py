"""Fixtures shared by test files: a briefly trained model on demo images (trained once per session), an interrupted
training."""
import contextlib
from pathlib import Path
from typing import Callable, ContextManager

import numpy as np
import pytest

import main
from dataset.demo import draw_item
from dataset.mat import write_pair_table
from train import loop

SHAPES_ITEMS = 600
SHAPES_QUERY = 50


def write_single_shape_demo(folder: Path, count: int, seed: int = 0) -> Path:
    """Demo items (drawn by the demo generator) that show one shape each, in the demo's file format.

    A tiny model trained for ~40 s on one CPU thread learns these well enough to search by shape name; the full
    demo set (one to three shapes per image) needs the demo's 4 minutes.
    """
    (folder / "images").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    paths, captions, labels = [], [], []
    while len(paths) < count:
        image, caption, label = draw_item(rng)
        if label.sum() == 1:
            paths.append(f"images/{len(paths):05d}.png")
            image.save(folder / paths[-1])
            captions.append([caption])
            labels.append(label)
    write_pair_table(folder, paths, captions, np.stack(labels))
    return folder


def train_demo_run(data: Path, save_dir: Path, *flags: str) -> Path:
    """A DSPH run folder trained on `data` (the demo's settings unless `flags` change them)."""
    code = main.main(["--method", "DSPH", "--dataset", "demo", "--data-dir", str(data),
                      "--index-file", str(data / "index.mat"), "--query-num", str(SHAPES_QUERY),
                      "--save-dir", str(save_dir), "--no-progress", *flags])
    assert code == 0
    return save_dir


@pytest.fixture(scope="session")
def shapes_data(tmp_path_factory) -> Path:
    return write_single_shape_demo(tmp_path_factory.mktemp("shapes") / "data", SHAPES_ITEMS)


@pytest.fixture(scope="session")
def trained_run(shapes_data, tmp_path_factory) -> Path:
    """DSPH, 64 bits, 12 epochs of 400 items in batches of 16: text queries by shape name find that shape."""
    return train_demo_run(shapes_data, tmp_path_factory.mktemp("runs") / "dsph64", "--train-num", "400",
                          "--batch-size", "16", "--epochs", "12", "--eval-every", "12")


@pytest.fixture(scope="session")
def train_demo():
    """:func:`train_demo_run`, for tests that train a run of their own."""
    return train_demo_run


@pytest.fixture
def ctrl_c_in_second_epoch() -> Callable[[], ContextManager[None]]:
    """A context manager: inside it, training raises KeyboardInterrupt (a user's Ctrl-C) as the second epoch starts."""

    @contextlib.contextmanager
    def interrupted():
        original = loop.train_epoch

        def stop_in_second_epoch(trainer, epoch, board=None):
            if epoch == 1:
                raise KeyboardInterrupt
            return original(trainer, epoch, board)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(loop, "train_epoch", stop_in_second_epoch)
            yield

    return interrupted
