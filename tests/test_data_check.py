"""dataset.check: a clean dataset passes with a report; each planted fault is found and named (exit 2)."""
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io as sio
from PIL import Image

from dataset.mat import write_pair_table

ROOT = Path(__file__).resolve().parents[1]


def make_dataset(folder: Path, count: int = 12) -> Path:
    rng = np.random.default_rng(0)
    (folder / "images").mkdir(parents=True)
    paths = []
    for i in range(count):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(buffer, format="JPEG")
        (folder / "images" / f"{i}.jpg").write_bytes(buffer.getvalue())
        paths.append(f"images/{i}.jpg")
    labels = np.eye(4)[np.arange(count) % 4]
    write_pair_table(folder, paths, [[f"caption {i}", "another"] for i in range(count)], labels)
    return folder


def check(folder: Path, *extra):
    return subprocess.run([sys.executable, "-m", "dataset.check", "--dataset", "coco", "--data-dir", str(folder), *extra],
                          capture_output=True, text=True, cwd=ROOT)


def test_clean_dataset_passes_with_report(tmp_path):
    done = check(make_dataset(tmp_path / "d"))
    assert done.returncode == 0, done.stderr
    for text in ("12 items (standard: 122218), 4 classes", "class frequencies", "captions per item: min 2",
                 "images: all 12 readable", "ok"):
        assert text in done.stdout


def plant(folder: Path, fault: str) -> None:
    if fault == "truncated image":
        image = folder / "images" / "3.jpg"
        image.write_bytes(image.read_bytes()[:200])
    elif fault == "missing image":
        (folder / "images" / "5.jpg").unlink()
        (folder / "images" / "6.jpg").unlink()
    elif fault == "length mismatch":
        sio.savemat(folder / "caption.mat", {"caption": [["only"], ["three"], ["captions"]]})
    elif fault == "empty label row":
        labels = sio.loadmat(folder / "label.mat")["category"]
        labels[7] = 0
        sio.savemat(folder / "label.mat", {"category": labels})


@pytest.mark.parametrize("fault, message", [
    ("truncated image", "1 of 12 items have a unreadable image: row 3"),
    ("missing image", "2 of 12 items have a missing image: row 5"),
    ("length mismatch", "index.mat has 12, caption.mat has 3, label.mat has 12"),
    ("empty label row", "1 of 12 items have an empty label row: row 7"),
])
def test_planted_fault_is_found_and_named(tmp_path, fault, message):
    folder = make_dataset(tmp_path / "d")
    plant(folder, fault)
    done = check(folder)
    assert done.returncode == 2
    assert message in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_options_skip_checks(tmp_path):
    folder = make_dataset(tmp_path / "d")
    plant(folder, "empty label row")
    plant(folder, "missing image")
    assert check(folder, "--allow-empty-labels", "--no-images").returncode == 0
    assert check(tmp_path / "absent").returncode == 2


def photo_jpeg(rng: np.random.Generator, width: int = 160, height: int = 120) -> bytes:
    """A photo-like JPEG: smooth gradients plus noise, so its scan data is most of the file."""
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], axis=-1)
    pixels = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def test_an_image_cut_after_its_header_is_found_by_the_default_check(tmp_path):
    folder = make_dataset(tmp_path / "d")
    jpeg = photo_jpeg(np.random.default_rng(1))
    (folder / "images" / "4.jpg").write_bytes(jpeg[: len(jpeg) * 3 // 5])  # header intact, scan cut short
    done = check(folder)
    assert done.returncode == 2 and "1 of 12 items have a unreadable image: row 4" in done.stderr, done.stderr
    assert check(folder, "--quick").returncode == 0  # a header check cannot see it


def test_parallel_image_check_equals_the_serial_one(tmp_path):
    from dataset.raw_common import CHECK_CHUNK, image_problems

    jpeg = photo_jpeg(np.random.default_rng(2), 32, 24)
    paths = []
    for i in range(4 * CHECK_CHUNK + 5):
        path = tmp_path / f"{i}.jpg"
        path.write_bytes(jpeg[: len(jpeg) // 2] if i in (7, 200) else jpeg)
        paths.append(str(path))
    paths.append(str(tmp_path / "absent.jpg"))
    serial = image_problems(paths, "full", workers=1)
    assert image_problems(paths, "full", workers=2) == serial
    assert [i for i, p in enumerate(serial) if p] == [7, 200, len(paths) - 1]
