"""Dataset generators on real data (COCO-2017 mini, MIRFlickr annotations) and a NUS-WIDE raw fixture."""
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dataset.catalog import DATASETS
from dataset.make_coco import main as make_coco
from dataset.make_flickr25k import main as make_flickr
from dataset.make_nuswide import CONCEPTS
from dataset.make_nuswide import main as make_nuswide
from dataset.mat import load_pair_table
from utils.errors import UserError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
COCO = SHARED / "coco-mini"
MIRFLICKR = SHARED / "mirflickr25k-annotations"
needs_coco = pytest.mark.skipif(not COCO.is_dir(), reason=f"real COCO sample not found at {COCO}")
needs_mirflickr = pytest.mark.skipif(not MIRFLICKR.is_dir(), reason=f"MIRFlickr annotations not found at {MIRFLICKR}")


def tiny_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buffer, format="JPEG")
    return buffer.getvalue()


def run_module(module, *args):
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1])


# ------------------------------------------------------------------------------------------- COCO
def expected_coco(coco_dir: Path):
    """Labels and captions straight from the official JSON files, computed independently."""
    captions = json.loads((coco_dir / "annotations" / "captions_train2017.json").read_text())
    instances = json.loads((coco_dir / "annotations" / "instances_train2017.json").read_text())
    columns = {c["id"]: i for i, c in enumerate(sorted(instances["categories"], key=lambda c: c["id"]))}
    labels = {}
    for ann in instances["annotations"]:
        labels.setdefault(ann["image_id"], set()).add(columns[ann["category_id"]])
    texts = {}
    for ann in captions["annotations"]:
        texts.setdefault(ann["image_id"], []).append(ann["caption"])
    names = {img["id"]: img["file_name"] for img in captions["images"]}
    return sorted(labels), labels, texts, names


@needs_coco
def test_make_coco_on_real_data(tmp_path):
    make_coco(["--coco-dir", str(COCO), "--save-dir", str(tmp_path / "coco")])
    table = load_pair_table(tmp_path / "coco")
    ids, labels, texts, names = expected_coco(COCO)
    assert len(table) == len(ids) == 80 and table.labels.shape == (80, 80)
    for row, image_id in enumerate(ids):
        assert set(np.flatnonzero(table.labels[row])) == labels[image_id]
        assert table.captions[row] == [t.strip() for t in texts[image_id]]
        assert Path(table.paths[row]).name == names[image_id]
        assert Path(table.paths[row]).is_file()
    assert np.array_equal(table.labels, table.labels.astype(bool))


@needs_coco
def test_make_coco_paths_are_relative_and_survive_a_move(tmp_path):
    raw = tmp_path / "data" / "raw"
    shutil.copytree(COCO, raw)
    make_coco(["--coco-dir", str(raw), "--save-dir", str(tmp_path / "data" / "coco")])
    shutil.move(tmp_path / "data", tmp_path / "moved")  # images and .mat files move together
    table = load_pair_table(tmp_path / "moved" / "coco")
    assert all(Path(p).is_file() and "moved" in p for p in table.paths)


@needs_coco
def test_make_coco_label_family_one_caption(tmp_path):
    make_coco(["--coco-dir", str(COCO), "--save-dir", str(tmp_path / "coco"), "--family", "label"])
    table = load_pair_table(tmp_path / "coco")
    ids, _, texts, _ = expected_coco(COCO)
    for row, image_id in enumerate(ids):
        (caption,) = table.captions[row]
        assert any(t.strip().startswith(caption.rstrip(".")) for t in texts[image_id])
        assert caption.count(".") <= 1
    import scipy.io as sio
    assert "label" in sio.loadmat(tmp_path / "coco" / "label.mat")


@needs_coco
@pytest.mark.parametrize("fault", ["missing_json", "bad_schema", "bad_json", "no_folder"])
def test_make_coco_bad_input_is_one_line_and_writes_nothing(tmp_path, fault):
    raw = tmp_path / "raw"
    shutil.copytree(COCO, raw)
    target = raw / "annotations" / "instances_train2017.json"
    if fault == "missing_json":
        target.unlink()
    elif fault == "bad_schema":
        target.write_text(json.dumps({"images": [], "annotations": [{"id": 1}], "categories": []}))
    elif fault == "bad_json":
        target.write_text("{not json")
    coco_dir = tmp_path / "nowhere" if fault == "no_folder" else raw
    done = run_module("dataset.make_coco", "--coco-dir", coco_dir, "--save-dir", tmp_path / "out")
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert not list((tmp_path / "out").glob("*")) if (tmp_path / "out").exists() else True


@needs_coco
def test_make_coco_drops_and_counts_a_corrupt_image(tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(COCO, raw)
    victim = sorted((raw / "train2017").glob("*.jpg"))[0]
    victim.write_bytes(b"not a jpeg")
    done = run_module("dataset.make_coco", "--coco-dir", raw, "--save-dir", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    assert "dropped 1: unreadable image" in done.stdout
    assert len(load_pair_table(tmp_path / "out")) == 79
    strict = run_module("dataset.make_coco", "--coco-dir", raw, "--save-dir", tmp_path / "strict", "--strict")
    assert strict.returncode == 2 and victim.name in strict.stderr


@needs_coco
def test_make_coco_decodes_every_image_by_default(tmp_path):
    """A JPEG cut after its header passes a header check; the default full decode drops it before training."""
    raw = tmp_path / "raw"
    shutil.copytree(COCO, raw)
    victim = sorted((raw / "train2017").glob("*.jpg"))[1]
    content = victim.read_bytes()
    victim.write_bytes(content[: len(content) * 3 // 5])
    done = run_module("dataset.make_coco", "--coco-dir", raw, "--save-dir", tmp_path / "out")
    assert done.returncode == 0 and "dropped 1: unreadable image" in done.stdout, done.stdout + done.stderr
    assert len(load_pair_table(tmp_path / "out")) == 79


@needs_coco
@pytest.mark.parametrize("save_dir", ["file", "below_a_file"])
def test_make_coco_save_dir_that_cannot_be_a_folder_is_one_line(tmp_path, capsys, save_dir):
    from dataset.raw_common import run_generator

    (tmp_path / "file").write_text("keep me")
    target = tmp_path / "file" if save_dir == "file" else tmp_path / "file" / "coco"
    assert run_generator(make_coco, ["--coco-dir", str(COCO), "--save-dir", str(target)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --save-dir") and "file" in err[0]
    assert (tmp_path / "file").read_text() == "keep me"


# ------------------------------------------------------------------------------------------- MIRFlickr
CONCEPT_NAMES = ("animals", "baby", "bird", "car", "clouds", "dog", "female", "flower", "food", "indoor", "lake",
                 "male", "night", "people", "plant_life", "portrait", "river", "sea", "sky", "structures", "sunset",
                 "transport", "tree", "water")  # the column order of all_labels.txt (alphabetical)


@pytest.fixture(scope="module")
def mirflickr_raw(tmp_path_factory):
    """The official archive layout rebuilt from the real annotations: 25,000 stand-in images, tag files,
    24 potential-label lists (+ _r1 lists and a README that must be ignored)."""
    if not MIRFLICKR.is_dir():
        pytest.skip(f"MIRFlickr annotations not found at {MIRFLICKR}")
    root = tmp_path_factory.mktemp("mirflickr")
    ids = [int(line.strip().split("/im")[1].split(".")[0]) for line in (MIRFLICKR / "all_imgs.txt").read_text().split()]
    labels = np.loadtxt(MIRFLICKR / "all_labels.txt", dtype=np.int64)
    tags = (MIRFLICKR / "all_tags.txt").read_text(encoding="utf-8").split("\n")[: len(ids)]
    images = root / "mirflickr"
    (images / "meta" / "tags").mkdir(parents=True)
    jpeg = tiny_jpeg()
    tag_of = dict(zip(ids, tags))
    for image_id in range(1, 25001):
        (images / f"im{image_id}.jpg").write_bytes(jpeg)
        words = tag_of.get(image_id, "unlabelled,picture")
        (images / "meta" / "tags" / f"tags{image_id}.txt").write_text("\n".join(words.split(",")) + "\n")
    annotations = root / "mirflickr25k_annotations_v080"
    annotations.mkdir()
    id_array = np.array(ids)
    for column, name in enumerate(CONCEPT_NAMES):
        members = id_array[labels[:, column] == 1]
        (annotations / f"{name}.txt").write_text("".join(f"{i}\n" for i in members))
        if column % 3 == 0:
            (annotations / f"{name}_r1.txt").write_text("".join(f"{i}\n" for i in members[::2]))
    (annotations / "README.txt").write_text("MIRFLICKR-25000 annotations\n")
    return root, ids, labels, tags


def test_make_flickr25k_keeps_the_20015_labelled_pairs(mirflickr_raw, tmp_path):
    root, ids, labels, tags = mirflickr_raw
    make_flickr(["--root", str(root), "--save-dir", str(tmp_path / "flickr"), "--verify", "none"])
    table = load_pair_table(tmp_path / "flickr")
    assert len(table) == 20015 == len(ids)
    assert np.array_equal(table.labels, labels)  # numeric id order = the release's row order
    assert table.class_names == CONCEPT_NAMES == DATASETS["flickr25k"].class_names
    assert [Path(p).name for p in table.paths] == [f"im{i}.jpg" for i in ids]
    assert [c[0] for c in table.captions] == [t.replace(",", " ") for t in tags]


def test_make_flickr25k_string_order_and_label_family(mirflickr_raw, tmp_path):
    root, ids, labels, _ = mirflickr_raw
    make_flickr(["--root", str(root), "--save-dir", str(tmp_path / "f"), "--verify", "none", "--row-order", "string",
                 "--family", "label"])
    table = load_pair_table(tmp_path / "f")
    order = sorted(range(len(ids)), key=lambda k: str(ids[k]))
    assert np.array_equal(table.labels, labels[order])
    assert [Path(p).name for p in table.paths] == [f"im{ids[k]}.jpg" for k in order]
    assert [Path(p).name for p in table.paths[:3]] == ["im1.jpg", "im100.jpg", "im1000.jpg"]  # im10 has no label


def test_make_flickr25k_small_layout_variants_and_errors(tmp_path):
    root = tmp_path / "raw"
    images = root / "mirflickr25k" / "mirflickr"  # the QinLab layout
    (images / "meta" / "tags").mkdir(parents=True)
    annotations = root / "mirflickr25k_annotations_v080"
    annotations.mkdir()
    jpeg = tiny_jpeg()
    for i in (1, 2, 3, 4):
        (images / f"im{i}.jpg").write_bytes(jpeg)
    (images / "meta" / "tags" / "tags1.txt").write_text("sky\nblue\n")
    (images / "meta" / "tags" / "tags2.txt").write_text("")
    (images / "im3.jpg").write_bytes(jpeg[:40])  # truncated
    (annotations / "sky.txt").write_text("1\n2\n3\n")
    (annotations / "dog.txt").write_text("2\n")
    done = run_module("dataset.make_flickr25k", "--root", root, "--save-dir", tmp_path / "out", "--verify", "full")
    assert done.returncode == 0, done.stderr
    table = load_pair_table(tmp_path / "out")
    assert [Path(p).name for p in table.paths] == ["im1.jpg", "im2.jpg"]
    assert table.labels.tolist() == [[0, 1], [1, 1]] and table.class_names == ("dog", "sky")
    assert table.captions == [["sky blue"], [""]]
    for text in ("dropped 1: unreadable image", "dropped 1: image in none of the 2 concept lists",
                 "no tags, caption left empty"):
        assert text in done.stdout
    (annotations / "dog.txt").write_text("2\nnot-a-number\n")
    bad = run_module("dataset.make_flickr25k", "--root", root, "--save-dir", tmp_path / "bad")
    assert bad.returncode == 2 and "dog.txt, line 2" in bad.stderr and not (tmp_path / "bad").exists()


# ------------------------------------------------------------------------------------------- NUS-WIDE
def build_nuswide(root: Path, count: int = 30):
    rng = np.random.default_rng(0)
    (root / "ImageList").mkdir(parents=True)
    (root / "Groundtruth" / "AllLabels").mkdir(parents=True)
    (root / "NUS_WID_Tags").mkdir(parents=True)
    names = [f"folder{i % 3}\\{i:04d}_{1000 + i}.jpg" for i in range(count)]
    (root / "ImageList" / "Imagelist.txt").write_text("\r\n".join(names) + "\r\n")
    labels = (rng.random((count, len(CONCEPTS))) < 0.15).astype(int)
    labels[::5] = 0  # every fifth image has none of the 21 concepts
    for column, concept in enumerate(CONCEPTS + ("zebra", "toy")):  # extra concepts must be ignored
        values = labels[:, column] if column < len(CONCEPTS) else rng.integers(0, 2, count)
        (root / "Groundtruth" / "AllLabels" / f"Labels_{concept}.txt").write_text("".join(f"{v}\n" for v in values))
    tags = [f"{1000 + i} " + ("" if i % 7 == 3 else f"tag{i} word{i % 4}") for i in range(count)]
    (root / "NUS_WID_Tags" / "All_Tags.txt").write_text("\n".join(tags) + "\n")
    jpeg = tiny_jpeg()
    for name in names:
        path = root / "Flickr" / name.replace("\\", "/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(jpeg)
    return labels, tags


def test_make_nuswide_fixture(tmp_path):
    labels, tags = build_nuswide(tmp_path / "raw")
    make_nuswide(["--root", str(tmp_path / "raw"), "--save-dir", str(tmp_path / "nus")])
    table = load_pair_table(tmp_path / "nus")
    kept = np.flatnonzero(labels.sum(1) > 0)
    assert len(table) == len(kept) and np.array_equal(table.labels, labels[kept])
    assert table.class_names == CONCEPTS == DATASETS["nuswide"].class_names
    expected = [" ".join(tags[i].split()[1:]) or "123456" for i in kept]
    assert [c[0] for c in table.captions] == expected
    assert (tmp_path / "nus" / "caption.txt").is_file() and all(Path(p).is_file() for p in table.paths)


def test_make_nuswide_not_used_ids_and_mismatch(tmp_path):
    labels, _ = build_nuswide(tmp_path / "raw")
    ids = tmp_path / "not-used-id.txt"
    ids.write_text("2\n3\n10")  # rows 0, 1 and 8; no final newline, as the reference file
    make_nuswide(["--root", str(tmp_path / "raw"), "--save-dir", str(tmp_path / "nus"), "--not-used-ids", str(ids),
                  "--family", "label"])
    assert len(load_pair_table(tmp_path / "nus")) == 30 - 3
    (tmp_path / "raw" / "Groundtruth" / "AllLabels" / "Labels_sky.txt").write_text("0\n1\n")
    with pytest.raises(UserError, match="Labels_sky.txt has 2 lines"):
        make_nuswide(["--root", str(tmp_path / "raw"), "--save-dir", str(tmp_path / "x")])
