"""The image cache gives the same tensors as decoding every time, is built once, and fails cleanly."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

import main
from dataset.builder import build_datasets
from dataset.catalog import SplitSizes
from dataset.demo import generate_demo
from dataset.image_cache import attach_image_cache
from dataset.mat import load_pair_table, write_pair_table
from dataset.transforms import normalize_uint8
from utils.errors import UserError

SIZE = 24


def make_table(folder, shapes=((50, 30), (40, 64), (24, 24), (70, 33), (31, 45), (60, 60))):
    rng = np.random.default_rng(0)
    (folder / "images").mkdir(parents=True)
    paths = []
    for i, (w, h) in enumerate(shapes):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"images/{i}.jpg")
        paths.append(f"images/{i}.jpg")
    labels = np.eye(3, dtype=np.float32)[np.arange(len(shapes)) % 3]
    write_pair_table(folder, paths, [[f"caption {i}"] for i in range(len(shapes))], labels)
    return load_pair_table(folder)


def bundle(table, kind):
    return build_datasets(table, SplitSizes(query=2, train=3, seed=0), SIZE, 32, kind, "first")


def as_float(image):
    return normalize_uint8(image[None])[0] if image.dtype == torch.uint8 else image


@pytest.mark.parametrize("kind", ["resize_crop", "flip"])
def test_cached_items_equal_decoded_items(tmp_path, kind):
    table = make_table(tmp_path / "data")
    plain, cached = bundle(table, kind), bundle(table, kind)
    attach_image_cache(cached, tmp_path / "cache", kind, SIZE, 0, build=True, wait=lambda: None, progress=False)
    for subset in ("train", "query", "retrieval"):
        for i in range(len(getattr(plain, subset))):
            torch.manual_seed(i)
            expected = getattr(plain, subset)[i]["image"]
            torch.manual_seed(i)
            got = getattr(cached, subset)[i]["image"]
            assert got.dtype == torch.uint8 and got.shape == (3, SIZE, SIZE)
            assert torch.allclose(as_float(got), expected, atol=1e-6), (subset, i)


def test_cache_is_built_once_and_keyed_by_the_images(tmp_path):
    table = make_table(tmp_path / "data")
    files = attach_image_cache(bundle(table, "resize_crop"), tmp_path / "cache", "resize_crop", SIZE, 0, True,
                               lambda: None, False)
    stamps = [f.stat().st_mtime_ns for f in files]
    again = attach_image_cache(bundle(table, "resize_crop"), tmp_path / "cache", "resize_crop", SIZE, 0, True,
                               lambda: None, False)
    assert again == files and [f.stat().st_mtime_ns for f in again] == stamps
    other = attach_image_cache(bundle(table, "flip"), tmp_path / "cache", "flip", SIZE + 8, 0, True, lambda: None,
                               False)
    assert set(other).isdisjoint(files)


def test_random_crops_cannot_be_cached(tmp_path):
    table = make_table(tmp_path / "data")
    with pytest.raises(UserError, match="flip_random_crop"):
        attach_image_cache(bundle(table, "flip_random_crop"), tmp_path / "cache", "flip_random_crop", SIZE, 0, True,
                           lambda: None, False)


def test_unreadable_image_leaves_no_cache_file(tmp_path):
    table = make_table(tmp_path / "data")
    (tmp_path / "data" / "images" / "3.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(UserError, match="3.jpg"):
        attach_image_cache(bundle(table, "flip"), tmp_path / "cache", "flip", SIZE, 0, True, lambda: None, False)
    assert list((tmp_path / "cache").iterdir()) == []


def test_training_with_the_cache_gives_the_same_run(tmp_path):
    data = generate_demo(tmp_path / "demo", num_items=96, progress=False)
    flags = ["--method", "_template", "--data-dir", str(data), "--dataset", "demo", "--query-num", "16", "--train-num",
             "48", "--epochs", "1", "--batch-size", "16", "--no-progress"]
    assert main.main([*flags, "--save-dir", str(tmp_path / "plain")]) == 0
    assert main.main([*flags, "--save-dir", str(tmp_path / "cached"), "--image-cache"]) == 0
    assert list((data / "cache").glob("*.npy"))
    plain, cached = (json.loads((tmp_path / name / "summary.json").read_text()) for name in ("plain", "cached"))
    assert cached["best"] == pytest.approx(plain["best"], abs=1e-6)


@pytest.mark.parametrize("damage", ["truncated", "empty", "not an array", "other shape"])
def test_a_damaged_cache_file_is_one_line(tmp_path, damage):
    table = make_table(tmp_path / "data")
    (file,) = attach_image_cache(bundle(table, "flip"), tmp_path / "cache", "flip", SIZE, 0, True, lambda: None, False)
    content = file.read_bytes()
    if damage == "other shape":
        np.save(file, np.zeros((2, SIZE, SIZE, 3), dtype=np.uint8))
    else:
        file.write_bytes({"truncated": content[: len(content) // 2], "empty": b"", "not an array": b"x" * 500}[damage])
    with pytest.raises(UserError, match="image cache .* is damaged .*delete it") as error:
        attach_image_cache(bundle(table, "flip"), tmp_path / "cache", "flip", SIZE, 0, True, lambda: None, False)
    assert str(file) in str(error.value) and "\n" not in str(error.value)
