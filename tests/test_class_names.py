"""Class names in label-column order: the catalog, classes.txt, reference files without names, the bundle."""
import json
from pathlib import Path

import numpy as np
import pytest

from dataset.builder import build_datasets, load_table
from dataset.catalog import DATASETS, SplitSizes, resolve_dataset
from dataset.demo import CLASSES, generate_demo
from dataset.make_coco import main as make_coco
from dataset.mat import load_pair_table, write_pair_table
from utils.errors import UserError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
COCO = SHARED / "coco-mini"
MIRFLICKR = SHARED / "mirflickr25k-annotations"


def write_unnamed(folder: Path, labels: np.ndarray) -> Path:
    """A reference repo's three files: no classes.txt."""
    write_pair_table(folder, [f"{i}.jpg" for i in range(len(labels))], [[f"text {i}"] for i in range(len(labels))],
                     labels)
    return folder


@pytest.mark.parametrize("name", list(DATASETS))
def test_catalog_names_one_distinct_name_per_label_column(name):
    info = DATASETS[name]
    assert len(info.class_names) == info.num_classes == len(set(info.class_names))
    assert all(n and n == n.strip() for n in info.class_names)
    assert not info.class_counts or len(info.class_counts) == len(set(info.class_counts)) == info.num_classes


@pytest.mark.skipif(not COCO.is_dir(), reason=f"real COCO sample not found at {COCO}")
def test_coco_names_follow_the_official_category_ids(tmp_path):
    """make_coco's columns are the categories in ascending id: classes.txt and the catalog name them in that order,
    and each image's named columns are exactly the names of its annotated categories."""
    instances = json.loads((COCO / "annotations" / "instances_train2017.json").read_text())
    by_id = {c["id"]: c["name"] for c in instances["categories"]}
    assert DATASETS["coco"].class_names == tuple(by_id[i] for i in sorted(by_id))
    make_coco(["--coco-dir", str(COCO), "--save-dir", str(tmp_path / "coco")])
    table = load_pair_table(tmp_path / "coco")
    assert table.class_names == DATASETS["coco"].class_names
    assert (tmp_path / "coco" / "classes.txt").read_text().splitlines() == list(table.class_names)
    annotated: dict[int, set[str]] = {}
    for ann in instances["annotations"]:
        annotated.setdefault(ann["image_id"], set()).add(by_id[ann["category_id"]])
    for row, image_id in enumerate(sorted(annotated)):
        assert {table.class_names[c] for c in np.flatnonzero(table.labels[row])} == annotated[image_id]


@pytest.mark.skipif(not MIRFLICKR.is_dir(), reason=f"MIRFlickr annotations not found at {MIRFLICKR}")
def test_mirflickr_columns_are_named_by_their_counts_in_any_order(tmp_path):
    """The release's all_labels.txt is in catalog order; a file with the concepts in another order (the QinLab
    generator's file-system order) gets each column's name from its count."""
    labels = np.loadtxt(MIRFLICKR / "all_labels.txt", dtype=np.float32)
    info = resolve_dataset("flickr25k")
    assert tuple(labels.sum(axis=0).astype(int)) == info.class_counts
    assert info.names_for(labels) == info.class_names
    order = np.random.default_rng(0).permutation(24)
    assert info.names_for(labels[:, order]) == tuple(info.class_names[i] for i in order)
    assert info.names_for(labels[:500][:, order]) == info.class_names  # not the standard set: catalog order


def test_reference_files_take_the_catalog_names_when_the_column_count_matches(tmp_path):
    labels = np.eye(80, dtype=np.float32)[np.arange(90) % 80]
    table = load_table(DATASETS["coco"], str(write_unnamed(tmp_path / "coco", labels)))
    assert table.class_names == DATASETS["coco"].class_names
    other = load_table(DATASETS["coco"], str(write_unnamed(tmp_path / "other", labels[:, :7])))
    assert other.class_names is None


def test_classes_txt_overrides_the_catalog_and_is_checked(tmp_path):
    folder = write_unnamed(tmp_path / "nus", np.eye(21, dtype=np.float32))
    names = [f"concept {i}" for i in range(21)]
    (folder / "classes.txt").write_text("\n".join(names) + "\n\n")
    assert load_table(DATASETS["nuswide"], str(folder)).class_names == tuple(names)
    (folder / "classes.txt").write_text("\n".join(names[:20]) + "\n")
    with pytest.raises(UserError, match="lists 20 class names but the label file has 21 columns"):
        load_pair_table(folder)
    (folder / "classes.txt").write_text("\n".join(names[:3] + [" "] + names[4:]) + "\n")
    with pytest.raises(UserError, match="line 4: empty class name"):
        load_pair_table(folder)


def test_writer_writes_names_and_removes_stale_ones(tmp_path):
    labels = np.eye(3, dtype=np.float32)
    write_pair_table(tmp_path, ["a", "b", "c"], [["x"], ["y"], ["z"]], labels, class_names=["cat", "dog", "bird"])
    assert load_pair_table(tmp_path).class_names == ("cat", "dog", "bird")
    with pytest.raises(ValueError, match="2 class names for 3 label columns"):
        write_pair_table(tmp_path, ["a", "b", "c"], [["x"], ["y"], ["z"]], labels, class_names=["cat", "dog"])
    write_pair_table(tmp_path, ["a", "b", "c"], [["x"], ["y"], ["z"]], labels[:, :2])
    assert not (tmp_path / "classes.txt").exists() and load_pair_table(tmp_path).class_names is None


def test_demo_names_reach_the_data_bundle(tmp_path):
    folder = generate_demo(tmp_path / "demo", num_items=30, progress=False)
    assert (folder / "classes.txt").read_text().splitlines() == list(CLASSES)
    data = build_datasets(load_table(DATASETS["demo"], str(folder)), SplitSizes(5, 10, 0), 32, 32, "flip", "first")
    assert data.class_names == CLASSES and len(data.class_names) == data.num_classes
    (folder / "classes.txt").unlink()  # a demo folder written before classes.txt existed: the catalog's names
    assert load_table(DATASETS["demo"], str(folder)).class_names == CLASSES
