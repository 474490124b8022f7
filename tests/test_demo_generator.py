"""The demo generator writes only into a new or empty folder, or one marked as its own; never over real data."""
import json

import pytest

import main
from dataset.demo import MARKER, ensure_demo, generate_demo
from utils.errors import UserError


def real_data(folder):
    """A folder as a dataset generator leaves it: three .mat files the demo generator did not write."""
    folder.mkdir()
    for name in ("index.mat", "caption.mat", "label.mat"):
        (folder / name).write_bytes(b"real " + name.encode())
    return {name: (folder / name).read_bytes() for name in ("index.mat", "caption.mat", "label.mat")}


def unchanged(folder, files) -> bool:
    return sorted(p.name for p in folder.iterdir()) == sorted(files) and all(
        (folder / name).read_bytes() == content for name, content in files.items())


def test_a_folder_of_real_data_is_refused(tmp_path):
    files = real_data(tmp_path / "coco")
    with pytest.raises(UserError, match="did not write") as error:
        generate_demo(tmp_path / "coco", num_items=4, progress=False)
    assert str(tmp_path / "coco") in str(error.value) and "caption.mat" in str(error.value)
    assert unchanged(tmp_path / "coco", files)


def test_main_with_the_demo_dataset_on_real_data_is_refused(tmp_path, capsys):
    files = real_data(tmp_path / "coco")
    code = main.main(["--dataset", "demo", "--data-dir", str(tmp_path / "coco"), "--save-dir", str(tmp_path / "run"),
                      "--epochs", "1", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "did not write" in err[0]
    assert unchanged(tmp_path / "coco", files)


def test_own_folders_are_rewritten_and_interrupted_ones_completed(tmp_path):
    folder = generate_demo(tmp_path / "demo", num_items=4, progress=False)
    generate_demo(folder, num_items=6, progress=False)  # its own folder: another size may replace it
    assert json.loads((folder / MARKER).read_text())["num_items"] == 6
    marker = json.loads((folder / MARKER).read_text())
    (folder / MARKER).write_text(json.dumps({**marker, "complete": False}))  # as a run killed while writing
    (folder / "index.mat").unlink()
    ensure_demo(folder, progress=False)
    assert (folder / "index.mat").is_file() and json.loads((folder / MARKER).read_text())["complete"]


def test_an_empty_folder_is_used(tmp_path):
    (tmp_path / "empty").mkdir()
    assert (generate_demo(tmp_path / "empty", num_items=2, progress=False) / "index.mat").is_file()
