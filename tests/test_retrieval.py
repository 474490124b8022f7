"""retrieval/: index a collection, search it by text or image, draw the gallery and the paper figure, bad input."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dataset.demo import CLASSES
from retrieval import figure, index, search
from retrieval.cli import load_hamming_model
from retrieval.codes import build_index, pack_codes, read_index, search_index, unpack_codes, write_index
from retrieval.collection import run_split
from retrieval.search import Query, Searcher
from retrieval.store import open_index
from utils.checkpoint import load_checkpoint, save_checkpoint
from utils.errors import UserError
from utils.metrics import hamming_distance

ROOT = Path(__file__).resolve().parents[1]


def run_main(entry, capsys, *args: str) -> tuple[int, str, str]:
    code = entry.main([*map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def demo_index(trained_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("index") / "demo"
    assert index.main(["--pretrained", str(trained_run), "--dataset", "demo", "--out", str(out), "--no-progress"]) == 0
    return out


@pytest.fixture(scope="module")
def searcher(demo_index):
    return Searcher(demo_index)


# ====================================================================== codes and FAISS
def test_packed_codes_keep_hamming_distances_and_rank_ties_by_position():
    rng = np.random.default_rng(0)
    codes = np.where(rng.random((300, 13)) < 0.5, -1.0, 1.0)  # 13 bits: not a multiple of 8
    codes[7] = codes[3]  # a tie with the same code
    packed = pack_codes(codes)
    assert packed.shape == (300, 2) and packed.dtype == np.uint8
    np.testing.assert_array_equal(unpack_codes(packed, 13), codes)
    distances, positions = search_index(build_index(packed), packed[:5], k=300)
    expected = hamming_distance(codes[:5], codes)
    for row in range(5):
        np.testing.assert_array_equal(distances[row], expected[row][positions[row]])
        np.testing.assert_array_equal(positions[row], np.argsort(expected[row], kind="stable"))


def test_approximate_index_finds_the_exact_neighbours_and_survives_a_file(tmp_path):
    rng = np.random.default_rng(1)
    packed = rng.integers(0, 256, size=(3000, 8), dtype=np.uint8)
    exact_distances, _ = search_index(build_index(packed), packed[:50], k=20)
    write_index(build_index(packed, "hnsw"), str(tmp_path / "hnsw.faiss"))
    approximate = read_index(str(tmp_path / "hnsw.faiss"))
    distances, positions = search_index(approximate, packed[:50], k=20)
    assert (positions[:, 0] == np.arange(50)).all()
    found = [np.minimum(np.bincount(a, minlength=65), np.bincount(e, minlength=65)).sum()
             for a, e in zip(distances, exact_distances)]
    assert np.mean(found) / 20 >= 0.95


# ====================================================================== index
def test_index_of_a_dataset_split(demo_index, trained_run, searcher):
    folder = open_index(demo_index)
    model = folder.fingerprint
    assert (model.method, model.bits, model.run) == ("DSPH", 64, str(trained_run.resolve()))
    assert folder.class_names == list(CLASSES) and folder.modalities == ["images", "texts"]
    assert folder.manifest["source"] == {"dataset": "demo", "split": "database"}
    images, texts = folder.load("images"), folder.load("texts")
    table, split = run_split(searcher.model.config)
    np.testing.assert_array_equal(images.ids, split.retrieval)
    np.testing.assert_array_equal(texts.ids, split.retrieval)
    np.testing.assert_array_equal(images.labels, table.labels[split.retrieval])
    assert texts.items[:3] == [table.captions[r][0] for r in split.retrieval[:3]]
    assert Path(images.items[0]) == Path(table.paths[split.retrieval[0]]).resolve()
    assert images.index.ntotal == len(images) == len(split.retrieval)


def test_index_of_an_image_folder_skips_unreadable_files(trained_run, shapes_data, tmp_path, capsys):
    photos = tmp_path / "photos"
    (photos / "more").mkdir(parents=True)
    for name in ("00001.png", "00002.png"):
        shutil.copy(shapes_data / "images" / name, photos / name)
    shutil.copy(shapes_data / "images" / "00003.png", photos / "more" / "c.PNG")
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    (photos / "notes.txt").write_text("not an image")
    texts = tmp_path / "texts.txt"
    texts.write_text("a red star\n\nthree blue hearts\n")
    out = tmp_path / "index"
    code, stdout, err = run_main(index, capsys, "--pretrained", trained_run, "--images", photos, "--texts", texts,
                                 "--out", out, "--no-progress")
    assert code == 0, err
    assert "indexed 3 images and 2 texts" in stdout
    assert "skipped 1 of 4 images" in err and "broken.jpg" in err
    assert (out / "skipped.txt").read_text().startswith(str((photos / "broken.jpg").resolve()) + "\t")
    folder = open_index(out)
    assert folder.manifest["skipped"] == 1 and folder.class_names is None
    images = folder.load("images")
    assert [Path(p).name for p in images.items] == ["00001.png", "00002.png", "c.PNG"]
    np.testing.assert_array_equal(images.ids, [0, 1, 3])  # positions in the sorted file list (broken.jpg was 2)
    assert images.labels is None
    np.testing.assert_array_equal(folder.load("texts").ids, [0, 2])  # line numbers
    code, stdout, err = run_main(search, capsys, out, "--text", "three blue hearts", "-k", "2", "--target", "texts",
                                 "--json")
    result = json.loads(stdout)
    assert result["results"][0] == {"rank": 1, "id": 2, "distance": 0, "text": "three blue hearts"}


def test_query_split_and_replacing_an_index(trained_run, searcher, tmp_path, capsys):
    out = tmp_path / "index"
    args = ["--pretrained", trained_run, "--dataset", "demo", "--split", "query", "--out", out, "--no-progress"]
    code, stdout, err = run_main(index, capsys, *args)
    assert code == 0, err
    assert "indexed 50 images and 50 texts" in stdout
    np.testing.assert_array_equal(open_index(out).load("texts").ids, run_split(searcher.model.config)[1].query)
    code, _, err = run_main(index, capsys, *args)
    assert_one_line_error(code, err, "holds an index already", "--overwrite")
    code, _, err = run_main(index, capsys, *args, "--overwrite")
    assert code == 0, err
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    code, _, err = run_main(index, capsys, *args[:-3], "--out", tmp_path / "notes", "--overwrite")
    assert_one_line_error(code, err, "not an index")
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"


def test_approximate_index_from_the_command_line(trained_run, tmp_path, capsys):
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(f"a {shape}" for shape in CLASSES))
    out = tmp_path / "index"
    code, stdout, _ = run_main(index, capsys, "--pretrained", trained_run, "--texts", texts, "--out", out,
                               "--approximate", "--no-progress")
    assert code == 0 and "approximate HNSW" in stdout
    assert open_index(out).manifest["parts"]["texts"]["index"] == "hnsw"
    code, stdout, _ = run_main(search, capsys, out, "--text", "a ring", "-k", "3", "--json")
    assert json.loads(stdout)["results"][0]["text"] == "a ring"


# ====================================================================== search
def test_text_queries_naming_a_shape_find_that_shape(searcher):
    """A briefly trained model: on average most of the top 10 images show the shape named (chance: 1 in 12)."""
    results = searcher.search([Query("text", f"a {shape}") for shape in CLASSES], k=10)
    precision = [np.mean([shape in hit.labels for hit in result.hits]) for shape, result in zip(CLASSES, results)]
    assert np.mean(precision) >= 0.6, dict(zip(CLASSES, precision))
    assert sum(p >= 0.5 for p in precision) >= 9, dict(zip(CLASSES, precision))


def test_json_output(demo_index, capsys):
    code, stdout, err = run_main(search, capsys, demo_index, "--text", "a circle", "-k", "10", "--json")
    assert code == 0, err
    result = json.loads(stdout)
    assert set(result) == {"query", "results"} and result["query"] == "a circle"
    rows = result["results"]
    assert [row["rank"] for row in rows] == list(range(1, 11))
    assert all(set(row) == {"rank", "id", "distance", "path", "labels"} for row in rows)
    assert [row["distance"] for row in rows] == sorted(row["distance"] for row in rows)
    assert sum("circle" in row["labels"] for row in rows) >= 6


def test_queries_file_image_queries_and_galleries(demo_index, shapes_data, tmp_path, capsys):
    folder = open_index(demo_index)
    images = folder.load("images")
    indexed_image = images.items[0]
    queries = tmp_path / "queries.txt"
    queries.write_text(f"a heart\nimage: {indexed_image}\ntext: image: not a path\n")
    code, stdout, err = run_main(search, capsys, demo_index, "--queries", queries, "-k", "5",
                                 "--gallery", tmp_path / "out.html")
    assert code == 0, err
    *tables, gallery_line = stdout.strip().split("\n\n")
    assert gallery_line == f"gallery: {tmp_path / 'out.html'}"
    assert len(tables) == 3 and "-> images" in tables[0] and "-> texts" in tables[1]
    # the image query is an indexed item: its labels are known, so each result says whether it shares one
    own = [CLASSES[c] for c in np.flatnonzero(images.labels[0])]
    assert f"query labels: {', '.join(own)}" in tables[1] and " rel " in tables[1].splitlines()[1]
    page = (tmp_path / "out.html").read_text()
    assert page.count("<tr>") == 3 and page.count("data:image/png;base64") >= 5 + 5 + 1
    code, stdout, err = run_main(search, capsys, demo_index, "--text", "a bar", "-k", "4", "--query-labels", "bar",
                                 "--gallery", tmp_path / "out.png")
    assert code == 0, err
    assert Image.open(tmp_path / "out.png").size[0] > 500
    assert "query labels: bar" in stdout


# ====================================================================== figure
def test_figure_at_print_resolution(trained_run, tmp_path, capsys):
    out = tmp_path / "figure.png"
    code, stdout, err = run_main(figure, capsys, trained_run, "--queries", "3", "-k", "4", "--out", out,
                                 "--no-progress")
    assert code == 0, err
    assert "3 t2i queries" in stdout
    image = Image.open(out)
    assert round(image.info["dpi"][0]) == 300 and image.size[0] > 1500
    code, stdout, err = run_main(figure, capsys, trained_run, "--direction", "i2t", "--queries", "2", "-k", "3",
                                 "--dpi", "100", "--out", tmp_path / "i2t.pdf", "--no-progress")
    assert code == 0, err
    assert (tmp_path / "i2t.pdf").read_bytes().startswith(b"%PDF")


# ====================================================================== bad input
def test_run_folder_without_best_pt(trained_run, tmp_path, capsys):
    unfinished = tmp_path / "unfinished"
    shutil.copytree(trained_run, unfinished, ignore=shutil.ignore_patterns("best.pt"))
    code, _, err = run_main(index, capsys, "--pretrained", unfinished, "--texts", __file__, "--out", tmp_path / "x")
    assert_one_line_error(code, err, "holds no best.pt")
    code, _, err = run_main(figure, capsys, unfinished, "--out", tmp_path / "f.png")
    assert_one_line_error(code, err, "holds no best.pt")
    assert not (tmp_path / "x").exists() and not (tmp_path / "f.png").exists()


def test_empty_image_folder(trained_run, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    code, _, err = run_main(index, capsys, "--pretrained", trained_run, "--images", tmp_path / "empty",
                            "--out", tmp_path / "x")
    assert_one_line_error(code, err, "holds no images")
    assert not (tmp_path / "x").exists()


def test_only_unreadable_images(trained_run, tmp_path, capsys):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.png").write_bytes(b"\x89PNG broken")
    code, _, err = run_main(index, capsys, "--pretrained", trained_run, "--images", tmp_path / "bad",
                            "--out", tmp_path / "x", "--no-progress")
    assert_one_line_error(code, err, "none of the 1 images can be read", "a.png")
    assert not (tmp_path / "x").exists()


def test_query_image_that_cannot_be_decoded(demo_index, tmp_path, capsys):
    broken = tmp_path / "query.jpg"
    broken.write_bytes(b"\xff\xd8\xff not really a jpeg")
    code, out, err = run_main(search, capsys, demo_index, "--image", broken)
    assert_one_line_error(code, err, "cannot decode query image", "query.jpg")
    assert out == ""
    code, out, err = run_main(search, capsys, demo_index, "--image", tmp_path / "absent.png")
    assert_one_line_error(code, err, "query image not found")


def test_k_larger_than_the_collection(demo_index, capsys):
    count = open_index(demo_index).manifest["parts"]["images"]["count"]
    code, out, err = run_main(search, capsys, demo_index, "--text", "a star", "-k", count + 1)
    assert_one_line_error(code, err, f"-k {count + 1} is larger than the {count} indexed images")
    assert out == ""


def test_index_built_by_another_model(demo_index, trained_run, shapes_data, train_demo, tmp_path, capsys):
    # the same method and code length with other weights
    other = tmp_path / "other"
    shutil.copytree(trained_run, other)
    payload = load_checkpoint(other / "best.pt")
    name = next(key for key, value in payload["model"].items() if value.is_floating_point())
    payload["model"][name] = payload["model"][name] + 0.01
    payload.pop("format")
    save_checkpoint(payload, other / "best.pt")
    code, _, err = run_main(search, capsys, demo_index, "--text", "a star", "--pretrained", other)
    assert_one_line_error(code, err, "was built by another model", "DSPH, 64 bits")
    # another code length
    short = train_demo(shapes_data, tmp_path / "bits32", "--output-dim", "32", "--train-num", "16",
                           "--batch-size", "16", "--epochs", "1")
    capsys.readouterr()
    code, _, err = run_main(search, capsys, demo_index, "--text", "a star", "--pretrained", short)
    assert_one_line_error(code, err, "was built by another model", "DSPH, 32 bits")


def test_a_method_with_its_own_distance_is_refused(monkeypatch):
    class MultiCodeModel:
        method, distance = "MultiCode", staticmethod(lambda a, b: a)

    monkeypatch.setattr("retrieval.cli.load_trained", lambda path, device: MultiCodeModel())
    with pytest.raises(UserError, match="MultiCode ranks its codes with its own distance"):
        load_hamming_model("run", "cpu")


def test_errors_leave_the_process_with_code_2_and_no_traceback(tmp_path):
    (tmp_path / "empty").mkdir()
    result = subprocess.run([sys.executable, "-m", "retrieval.index", "--pretrained", str(tmp_path),
                             "--images", str(tmp_path / "empty"), "--out", str(tmp_path / "x")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == f"error: --images {tmp_path / 'empty'} holds no images (looked for .jpg, .jpeg, " \
                                    ".png, .bmp, .gif, .webp, .tif, .tiff files, also in subfolders)"
    assert not (tmp_path / "x").exists()
