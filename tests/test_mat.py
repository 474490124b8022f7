"""Reading both .mat families, caption.txt, path remapping, and the errors for bad files."""
import numpy as np
import pytest
import scipy.io as sio

from dataset.mat import load_pair_table, remap_root, write_pair_table
from utils.errors import UserError

CAPTIONS = [["A dog runs.", "Two dogs", "A third caption"], [""], ["only one"]]
LABELS = np.array([[1, 0], [0, 1], [1, 1]])


def test_category_family_as_the_reference_generators_write_it(tmp_path):
    """COCO-style ragged cell captions from a list of lists, absolute paths, int64 labels under `category`."""
    sio.savemat(tmp_path / "index.mat", {"index": ["/data/coco/a.jpg", "/data/coco/bb.jpg", "/data/coco/c.jpg"]})
    sio.savemat(tmp_path / "caption.mat", {"caption": [["first a", "second a"], ["only b"], ["c1", "c2", "c3"]]})
    sio.savemat(tmp_path / "label.mat", {"category": LABELS.astype(np.int64)})
    table = load_pair_table(tmp_path)
    assert table.paths == ["/data/coco/a.jpg", "/data/coco/bb.jpg", "/data/coco/c.jpg"]
    assert table.captions == [["first a", "second a"], ["only b"], ["c1", "c2", "c3"]]
    assert table.labels.dtype == np.float32 and table.labels.tolist() == LABELS.tolist()


def test_mirflickr_column_captions_and_float64_labels(tmp_path):
    sio.savemat(tmp_path / "index.mat", {"index": ["im1.jpg", "im10.jpg"]})
    sio.savemat(tmp_path / "caption.mat", {"caption": [["sky clouds blue"], [""]]})
    sio.savemat(tmp_path / "label.mat", {"category": np.array([[1.0, 0.0], [0.0, 1.0]])})
    table = load_pair_table(tmp_path)
    assert table.captions == [["sky clouds blue"], [""]]
    assert table.paths == [str(tmp_path / "im1.jpg"), str(tmp_path / "im10.jpg")]


def test_label_family_and_nuswide_caption_txt(tmp_path):
    sio.savemat(tmp_path / "index.mat", {"index": ["a.jpg", "b.jpg"]})
    sio.savemat(tmp_path / "label.mat", {"label": np.array([[1, 0], [1, 1]], dtype=np.float32)})
    sio.savemat(tmp_path / "caption.mat", {"caption": ["one string", "another string"]})
    assert load_pair_table(tmp_path).captions == [["one string"], ["another string"]]
    (tmp_path / "caption.mat").unlink()
    (tmp_path / "caption.txt").write_text("tag1 tag2\n123456\n", encoding="utf-8")
    table = load_pair_table(tmp_path)
    assert table.captions == [["tag1 tag2"], ["123456"]]
    assert table.labels.dtype == np.float32


@pytest.mark.parametrize("layout", ["cells", "column", "flat", "txt"])
def test_writer_round_trip(tmp_path, layout):
    write_pair_table(tmp_path, ["a/1.jpg", "b/2.jpg", "/abs/3.jpg"], CAPTIONS, LABELS, caption_layout=layout,
                     label_key="label" if layout == "flat" else "category")
    table = load_pair_table(tmp_path)
    expected = CAPTIONS if layout == "cells" else [[c[0]] for c in CAPTIONS]
    assert table.captions == expected
    assert table.paths == [str(tmp_path / "a/1.jpg"), str(tmp_path / "b/2.jpg"), "/abs/3.jpg"]
    assert table.labels.tolist() == LABELS.tolist()
    assert not list(tmp_path.glob("*.partial"))


def test_remap_root_by_common_prefix_and_by_explicit_pair():
    paths = ["/home/x/coco/train2017/1.jpg", "/home/x/coco/val2017/2.jpg"]
    assert remap_root(paths, "/data/coco") == ["/data/coco/train2017/1.jpg", "/data/coco/val2017/2.jpg"]
    assert remap_root(paths, "/home/x=/mnt") == ["/mnt/coco/train2017/1.jpg", "/mnt/coco/val2017/2.jpg"]


def write_valid(tmp_path):
    write_pair_table(tmp_path, ["1.jpg", "2.jpg", "3.jpg"], CAPTIONS, LABELS)


def test_missing_folder_and_missing_file(tmp_path):
    with pytest.raises(UserError, match="data folder not found"):
        load_pair_table(tmp_path / "nowhere")
    write_valid(tmp_path)
    (tmp_path / "label.mat").unlink()
    with pytest.raises(UserError, match="label file not found"):
        load_pair_table(tmp_path)


def test_length_mismatch_names_every_file(tmp_path):
    write_valid(tmp_path)
    sio.savemat(tmp_path / "label.mat", {"category": LABELS[:2]})
    with pytest.raises(UserError, match="index.mat has 3, caption.mat has 3, label.mat has 2"):
        load_pair_table(tmp_path)


def test_wrong_variable_non_binary_labels_and_corrupt_file(tmp_path):
    write_valid(tmp_path)
    sio.savemat(tmp_path / "label.mat", {"something": LABELS})
    with pytest.raises(UserError, match="none of the variables category, label"):
        load_pair_table(tmp_path)
    sio.savemat(tmp_path / "label.mat", {"category": LABELS * 2})
    with pytest.raises(UserError, match="0/1"):
        load_pair_table(tmp_path)
    (tmp_path / "label.mat").write_bytes(b"garbage")
    with pytest.raises(UserError, match="cannot read"):
        load_pair_table(tmp_path)
