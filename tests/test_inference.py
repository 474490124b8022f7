"""train/inference.py: a trained run loaded for use encodes exactly as its evaluation did."""
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io as sio
import torch
from PIL import Image

from dataset.demo import CLASSES
from retrieval.collection import run_split
from train.inference import load_trained
from utils.errors import UserError


@pytest.fixture(scope="module")
def model(trained_run):
    return load_trained(trained_run)


def test_interface(model, trained_run):
    assert model.method == "DSPH" and model.bits == 64 and model.config.output_dim == 64
    assert model.dataset == "demo" and model.class_names == list(CLASSES)
    assert model.distance is None
    assert model.checkpoint == trained_run / "best.pt"
    ids, mask = model.tokenize(["a star", "a red circle and a blue square"])
    assert ids.shape == mask.shape == (2, model.config.max_words) and mask.dtype == torch.bool
    assert not mask[:, :3].any() and mask[0, -1]
    codes = model.encode_texts(ids, mask)
    assert codes.shape == (2, 64) and set(codes.unique().tolist()) <= {-1.0, 1.0}
    image = model.image_transform(Image.new("RGB", (100, 80), (200, 30, 30)))
    assert image.shape == (3, 64, 64)
    assert model.encode_images(image[None]).shape == (1, 64)


def test_codes_equal_the_runs_evaluation(model):
    """The database codes of codes.mat (written by the run's best evaluation) come out again, per modality."""
    recorded = sio.loadmat(str(Path(model.checkpoint).parent / "codes.mat"))
    table, split = run_split(model.config)
    rows = split.retrieval[:40]
    images = torch.stack([model.image_transform(Image.open(table.paths[r]).convert("RGB")) for r in rows])
    np.testing.assert_array_equal(model.encode_images(images).numpy(), recorded["r_img"][:40])
    texts = model.tokenize([table.captions[r][0] for r in rows])
    np.testing.assert_array_equal(model.encode_texts(*texts).numpy(), recorded["r_txt"][:40])


def test_a_best_pt_file_loads_like_its_folder(model, trained_run):
    again = load_trained(trained_run / "best.pt")
    ids, mask = model.tokenize(["a heart"])
    assert torch.equal(again.encode_texts(ids, mask), model.encode_texts(ids, mask))


def test_a_run_folder_without_best_pt_is_refused(trained_run, tmp_path):
    unfinished = tmp_path / "unfinished"
    shutil.copytree(trained_run, unfinished, ignore=shutil.ignore_patterns("best.pt"))
    with pytest.raises(UserError, match="holds no best.pt"):
        load_trained(unfinished)
    with pytest.raises(UserError, match="no run folder or checkpoint"):
        load_trained(tmp_path / "missing")


def test_loading_reads_no_dataset(model, trained_run, tmp_path):
    """The model is rebuilt from the config and the checkpoint alone: a copy whose data folder is gone loads."""
    import yaml

    moved = tmp_path / "moved"
    shutil.copytree(trained_run, moved)
    config = yaml.safe_load((moved / "config.yaml").read_text())
    config["data_dir"], config["index_file"] = str(tmp_path / "gone"), str(tmp_path / "gone" / "index.mat")
    (moved / "config.yaml").write_text(yaml.safe_dump(config))
    again = load_trained(moved)
    ids, mask = model.tokenize(["a heart", "two stars"])
    assert torch.equal(again.encode_texts(ids, mask), model.encode_texts(ids, mask))
    assert again.class_names == list(CLASSES)
