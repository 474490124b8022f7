"""main.py end to end: one-line errors with exit code 2, config files, --resume and --test."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io as sio
import yaml

import main
from dataset.catalog import DATASETS
from dataset.demo import draw_item, generate_demo
from dataset.splits import split_rows
from train.registry import available_methods
from utils.metrics import chance_map

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--dataset", "demo", "--query-num", "16", "--train-num", "48", "--batch-size", "16", "--no-progress"]


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory):
    return generate_demo(tmp_path_factory.mktemp("demo") / "data", num_items=96, progress=False)


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_missing_dataset_is_one_line_error(tmp_path):
    result = run_cli("--method", "DSPH", "--dataset", "coco", "--save-dir", str(tmp_path / "run"), cwd=tmp_path)
    assert_one_line_error(result, "dataset/coco", "make_")
    assert not (tmp_path / "run").exists()


def test_missing_clip_weights_is_one_line_error(small_demo, tmp_path):
    result = run_cli("--method", "DSPH", "--data-dir", str(small_demo), "--backbone", "ViT-B-32",
                     "--clip-path", str(tmp_path / "ViT-B-32.pt"), "--save-dir", str(tmp_path / "run"), *SMALL)
    assert_one_line_error(result, "ViT-B-32.pt", "--clip-path")
    assert not (tmp_path / "run").exists()


def test_unknown_method_lists_the_available_ones():
    message = assert_one_line_error(run_cli("--method", "NoSuchMethod"), "NoSuchMethod")
    for name in available_methods():
        assert name in message


@pytest.mark.parametrize("args, needle", [(["--epochs", "abc"], "--epochs"), (["--no-such-flag", "1"], "--no-such-flag"),
                                          (["--dataset", "imagenet"], "imagenet")])
def test_bad_flags_are_one_line_errors(args, needle):
    assert_one_line_error(run_cli("--method", "DSPH", *args), needle)


def test_config_file_reruns_a_run_and_flags_win(small_demo, tmp_path):
    first = tmp_path / "first"
    assert main.main(["--method", "_template", "--data-dir", str(small_demo), "--save-dir", str(first), "--epochs", "1",
                      "--output-dim", "16", *SMALL]) == 0
    config = yaml.safe_load((first / "config.yaml").read_text())
    assert config["output_dim"] == 16 and config["epochs"] == 1
    _, cfg = main.parse_config(["--method", "_template", "--config", str(first / "config.yaml"), "--output-dim", "32"])
    assert cfg.output_dim == 32 and cfg.epochs == 1 and cfg.batch_size == 16
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: many\n")
    result = run_cli("--method", "_template", "--config", str(bad))
    assert_one_line_error(result, "epochs")


def test_resume_continues_exactly_where_an_interrupted_run_stopped(small_demo, tmp_path, ctrl_c_in_second_epoch):
    flags = ["--method", "_template", "--data-dir", str(small_demo), "--epochs", "2", "--eval-every", "1", *SMALL]
    assert main.main([*flags, "--save-dir", str(tmp_path / "straight")]) == 0

    with ctrl_c_in_second_epoch():
        assert main.main([*flags, "--save-dir", str(tmp_path / "cut")]) == 130
    assert (tmp_path / "cut" / "last.pt").is_file() and not (tmp_path / "cut" / "summary.json").exists()
    assert main.main([*flags, "--save-dir", str(tmp_path / "cut"), "--resume", str(tmp_path / "cut")]) == 0

    straight = json.loads((tmp_path / "straight" / "summary.json").read_text())
    resumed = json.loads((tmp_path / "cut" / "summary.json").read_text())
    assert resumed["best_epoch"] == straight["best_epoch"]
    for key in ("best", "last"):
        assert resumed[key] == pytest.approx(straight[key], abs=1e-9)
    a, b = sio.loadmat(tmp_path / "straight" / "codes.mat"), sio.loadmat(tmp_path / "cut" / "codes.mat")
    assert np.array_equal(a["q_img"], b["q_img"]) and np.array_equal(a["r_txt"], b["r_txt"])


def test_test_mode_reproduces_the_best_evaluation(small_demo, tmp_path):
    flags = ["--method", "_template", "--data-dir", str(small_demo), "--epochs", "1", *SMALL]
    assert main.main([*flags, "--save-dir", str(tmp_path / "train")]) == 0
    assert main.main([*flags, "--save-dir", str(tmp_path / "test"), "--test", "--pretrained",
                      str(tmp_path / "train" / "best.pt")]) == 0
    trained = json.loads((tmp_path / "train" / "summary.json").read_text())
    tested = json.loads((tmp_path / "test" / "summary.json").read_text())
    assert tested["best"] == pytest.approx(trained["best"], abs=1e-12)


def test_demo_chance_level_is_at_most_0_35():
    """The default demo (2,500 items, seed 0) with its split: a random ranking scores at most 0.35 mAP."""
    rng = np.random.default_rng(0)
    labels = np.stack([draw_item(rng)[2] for _ in range(2500)]).astype(np.float64)
    sizes = DATASETS["demo"].protocols["standard"]
    split = split_rows(len(labels), sizes.query, sizes.train, sizes.seed)
    assert chance_map(labels[split.query], labels[split.retrieval]) <= 0.35


def test_concurrent_demo_generation_waits_for_the_first_writer(tmp_path):
    """A second generator (another torchrun rank, a parallel sweep cell) waits on the lock and reuses the data."""
    import threading

    from filelock import FileLock

    folder = tmp_path / "demo"
    done = threading.Event()
    worker = threading.Thread(target=lambda: (generate_demo(folder, num_items=8, progress=False), done.set()))
    with FileLock(f"{folder}.lock"):  # an unfinished writer holds it
        worker.start()
        assert not done.wait(0.5) and not (folder / "demo.json").exists()
    worker.join(timeout=60)
    assert done.is_set() and (folder / "demo.json").is_file() and len(list((folder / "images").iterdir())) == 8
    stamp = (folder / "index.mat").stat().st_mtime_ns
    generate_demo(folder, num_items=8, progress=False)  # already there: reused, not rewritten
    assert (folder / "index.mat").stat().st_mtime_ns == stamp


def test_method_names_are_case_insensitive_unless_ambiguous():
    from train.registry import canonical_name, load_method
    from utils.errors import UserError

    assert load_method("dsph").name == "DSPH"
    assert canonical_name("DNPH") == "DNPH-TOMM" and canonical_name("DNpH") == "DNpH"  # an alias, a folder
    with pytest.raises(UserError, match="ambiguous: DNPH \\(DNPH-TOMM\\) and DNpH"):
        load_method("dnph")


def test_no_two_method_folders_differ_only_in_case():
    """A clone on a case-insensitive file system (macOS, Windows) would merge them; result folders too."""
    folders = [p.name for p in (ROOT / "train").iterdir() if p.is_dir()]
    assert len({f.lower() for f in folders}) == len(folders)


def test_aliases_are_read_without_importing_and_resolved(tmp_path, monkeypatch, capsys):
    from train import registry
    from utils.errors import UserError

    for folder, body in {"Foo": "raise RuntimeError('imported')\n", "Bar-X": "ALIASES = ('FOO', 'bx')\n",
                         "Bad": "ALIASES = 'B'\n"}.items():
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "__init__.py").write_text(body)
    monkeypatch.setattr(registry, "TRAIN_DIR", tmp_path)
    with pytest.raises(UserError, match="ALIASES must be a tuple of strings"):
        registry.canonical_name("Foo")
    (tmp_path / "Bad" / "__init__.py").unlink()
    assert registry.canonical_name("Foo") == "Foo"  # a folder wins over another folder's alias
    assert registry.canonical_name("FOO") == registry.canonical_name("BX") == registry.canonical_name("bar-x") == "Bar-X"
    with pytest.raises(UserError, match="ambiguous"):
        registry.canonical_name("foo")
    with pytest.raises(UserError, match="unknown method 'Barx' \\(did you mean Bar-X\\?\\)"):
        registry.canonical_name("Barx")
    assert registry.main(["bx", "Foo"]) == 0 and capsys.readouterr().out.split() == ["Bar-X", "Foo"]
    assert registry.main(["nope"]) == 2 and capsys.readouterr().err.startswith("error: unknown method 'nope'")
