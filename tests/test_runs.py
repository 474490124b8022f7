"""The run lifecycle: folders that are never overwritten, the lock of a live run, --config and --resume DIR, values
checked before work starts, a non-finite loss, foreign checkpoints, logs, per-direction bests, TensorBoard, seeds."""
import hashlib
import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

import main
from dataset.demo import generate_demo
from dataset.make_coco import main as make_coco
from train.registry import load_method
from utils.metrics import DIRECTIONS

SHARED_COCO = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco-mini"
SMALL = ["--query-num", "16", "--train-num", "48", "--batch-size", "16", "--epochs", "1", "--no-progress"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return generate_demo(tmp_path_factory.mktemp("demo") / "data", num_items=96, progress=False)


def run(demo_dir: Path, save_dir: Path, *extra: str, method: str = "_template") -> int:
    return main.main(["--method", method, "--data-dir", str(demo_dir), "--save-dir", str(save_dir), *SMALL, *extra])


def folder_digest(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file() and p.name != "run.lock"}


def one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


# ---------------------------------------------------------------------------- runs never destroy data
def test_a_finished_run_folder_is_refused_and_left_byte_identical(demo, tmp_path, capsys):
    folder = tmp_path / "run"
    assert run(demo, folder) == 0
    before = folder_digest(folder)
    assert run(demo, folder, "--epochs", "2") == 2
    one_line_error(capsys, "finished run", "--overwrite")
    assert folder_digest(folder) == before
    assert run(demo, folder, "--overwrite") == 0  # explicit: replaced, not appended
    assert len((folder / "metrics.jsonl").read_text().splitlines()) == 1


def test_an_unfinished_run_folder_is_refused_unless_resumed(demo, tmp_path, capsys):
    folder = tmp_path / "run"
    assert run(demo, folder, "--epochs", "2", "--keep-last") == 0
    (folder / "summary.json").unlink()  # as if cut off after an epoch: its last.pt stays
    capsys.readouterr()
    assert run(demo, folder) == 2
    one_line_error(capsys, "unfinished run", "--resume")


def test_two_live_runs_cannot_share_a_folder_and_a_killed_run_releases_it(demo, tmp_path, capsys):
    folder = tmp_path / "shared"
    folder.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from filelock import FileLock
        lock = FileLock({str(folder / 'run.lock')!r})
        lock.acquire()
        print('locked', flush=True)
        time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert run(demo, folder) == 2
        one_line_error(capsys, "another live run")
        assert not (folder / "config.yaml").exists()
    finally:
        holder.kill()  # kill -9: the OS releases the lock
        holder.wait()
    assert run(demo, folder) == 0


def test_save_dir_that_is_a_file_or_unwritable_is_one_line(demo, tmp_path, capsys):
    file = tmp_path / "file"
    file.write_text("x")
    assert run(demo, file) == 2
    one_line_error(capsys, "is a file")
    locked = tmp_path / "readonly"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("this user can write into read-only folders (root): the unwritable case cannot be built")
        assert run(demo, locked / "run") == 2
        one_line_error(capsys, "cannot write")
    finally:
        locked.chmod(0o700)


@pytest.mark.skipif(not SHARED_COCO.is_dir(), reason=f"real COCO sample not found at {SHARED_COCO}")
def test_rerunning_a_coco_config_trains_on_coco_and_leaves_the_data_alone(tmp_path):
    data = tmp_path / "coco"
    make_coco(["--coco-dir", str(SHARED_COCO), "--save-dir", str(data)])
    before = folder_digest(data)
    first = tmp_path / "first"
    assert main.main(["--method", "_template", "--dataset", "coco", "--data-dir", str(data), "--backbone", "tiny",
                      "--save-dir", str(first), "--query-num", "10", "--train-num", "40", "--batch-size", "16",
                      "--epochs", "1", "--no-progress"]) == 0
    config = yaml.safe_load((first / "config.yaml").read_text())
    assert config["method"] == "_template" and config["dataset"] == "coco"
    assert main.main(["--config", str(first / "config.yaml"), "--save-dir", str(tmp_path / "again")]) == 0
    assert json.loads((tmp_path / "again" / "summary.json").read_text())["dataset"] == "coco"
    assert folder_digest(data) == before


def test_resume_dir_alone_continues_that_run_with_its_config_and_folder(demo, tmp_path, ctrl_c_in_second_epoch):
    folder = tmp_path / "run"
    with ctrl_c_in_second_epoch():
        assert run(demo, folder, "--epochs", "2", "--output-dim", "16", "--eval-every", "1") == 130
    assert main.main(["--resume", str(folder)]) == 0
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["epochs"] == 2 and summary["bits"] == 16 and summary["method"] == "Template"
    assert [json.loads(line)["epoch"] for line in (folder / "metrics.jsonl").read_text().splitlines()] == [1, 2]


# ---------------------------------------------------------------------------- checked before work starts
@pytest.mark.parametrize("flags, needle", [(["--epochs", "0"], "--epochs 0"), (["--output-dim", "-8"], "--output-dim -8"),
                                           (["--batch-size", "0"], "--batch-size 0"), (["--lr", "nan"], "--lr nan"),
                                           (["--query-num", "0"], "--query-num 0"),
                                           (["--label-noise", "1.5"], "--label-noise 1.5")])
@pytest.mark.parametrize("method", ["DSPH", "DCHMT"])
def test_bad_values_fail_before_any_data_is_read(method, flags, needle, tmp_path, capsys):
    code = main.main(["--method", method, "--data-dir", str(tmp_path / "absent"), *flags])
    assert code == 2
    one_line_error(capsys, needle)


def test_options_a_method_does_not_use_are_refused(tmp_path, capsys):
    assert main.main(["--method", "MITH", "--head-init", "kaiming", "--data-dir", str(tmp_path)]) == 2
    one_line_error(capsys, "--head-init", "MITH")


def test_a_non_finite_loss_stops_with_one_line_and_never_becomes_best(demo, tmp_path, capsys, monkeypatch):
    trainer_cls = load_method("_template")
    original = trainer_cls.training_step

    def poisoned(self, batch):
        out = original(self, batch)
        if self.global_step == 2:
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(trainer_cls, "training_step", poisoned)
    assert run(demo, tmp_path / "nan", "--epochs", "2") == 2
    one_line_error(capsys, "non-finite", "step 3", "pairwise")
    assert not (tmp_path / "nan" / "best.pt").exists() and not (tmp_path / "nan" / "summary.json").exists()


def test_test_mode_refuses_another_methods_or_lengths_checkpoint(demo, tmp_path, capsys):
    assert run(demo, tmp_path / "dsph", method="DSPH") == 0
    checkpoint = str(tmp_path / "dsph" / "best.pt")
    assert run(demo, tmp_path / "t1", "--test", "--pretrained", checkpoint, method="DNpH") == 2
    one_line_error(capsys, "DSPH", "--method DSPH")
    assert run(demo, tmp_path / "t2", "--test", "--pretrained", checkpoint, "--output-dim", "32", method="DSPH") == 2
    one_line_error(capsys, "64-bit", "--output-dim 64")
    empty = tmp_path / "empty.pt"
    torch.save({"format": "clip-hashing-checkpoint-v1", "method": "DSPH"}, empty)
    assert run(demo, tmp_path / "t3", "--test", "--pretrained", str(empty), method="DSPH") == 2
    one_line_error(capsys, "damaged checkpoint", "model")


def test_pretrained_from_another_method_logs_what_was_loaded(demo, tmp_path, caplog):
    assert run(demo, tmp_path / "dsph", method="DSPH") == 0
    with caplog.at_level(logging.INFO, logger="hashing"):
        assert run(demo, tmp_path / "dnph", "--pretrained", str(tmp_path / "dsph" / "best.pt"), method="DNpH") == 0
    line = next(r.getMessage() for r in caplog.records if "--pretrained" in r.getMessage())
    assert "(DSPH): loaded" in line and "model.backbone" in line and "not loaded 0" in line


# ---------------------------------------------------------------------------- process hygiene
def test_two_runs_in_one_process_keep_separate_logs(demo, tmp_path):
    assert run(demo, tmp_path / "a", "--output-dim", "16") == 0
    assert run(demo, tmp_path / "b", "--output-dim", "32") == 0
    log_a, log_b = ((tmp_path / name / "train.log").read_text() for name in ("a", "b"))
    assert "16 bits" in log_a and "32 bits" not in log_a and str(tmp_path / "b") not in log_a
    assert "32 bits" in log_b and "16 bits" not in log_b
    assert not [h for h in logging.getLogger("hashing").handlers if isinstance(h, logging.FileHandler)]


# ---------------------------------------------------------------------------- reporting
def test_summary_holds_each_directions_best_from_metrics_jsonl(demo, tmp_path):
    folder = tmp_path / "run"
    assert run(demo, folder, "--epochs", "3", "--eval-every", "1", "--map-k", "20") == 0
    summary = json.loads((folder / "summary.json").read_text())
    lines = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    code_set = summary["code_set"]
    for metric in ("mAP", "mAP@20"):
        for direction in DIRECTIONS:
            values = [line["results"][code_set][direction][metric] for line in lines]
            best = summary["best_per_direction"][metric][direction]
            assert best["value"] == max(values)
            assert lines[values.index(max(values))]["epoch"] == best["epoch"]
    assert summary["seed"] == 1814 and summary["train_seed"] == 1814 and summary["label_noise"] == 0.0


def test_train_seed_changes_training_but_not_the_split(demo, tmp_path):
    assert run(demo, tmp_path / "s1", "--train-seed", "1") == 0
    assert run(demo, tmp_path / "s2", "--train-seed", "2") == 0
    one, two = (json.loads((tmp_path / n / "summary.json").read_text()) for n in ("s1", "s2"))
    assert one["seed"] == two["seed"] == 1814 and (one["train_seed"], two["train_seed"]) == (1, 2)
    assert one["best_details"] != two["best_details"]
    from scipy.io import loadmat
    codes_1, codes_2 = (loadmat(tmp_path / n / "codes.mat") for n in ("s1", "s2"))
    assert (codes_1["q_l"] == codes_2["q_l"]).all() and (codes_1["r_l"] == codes_2["r_l"]).all()


def test_tensorboard_event_files_read_back(demo, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = tmp_path / "run"
    assert run(demo, folder, "--epochs", "2", "--eval-every", "1", "--tensorboard", "--tensorboard-every", "1") == 0
    events = EventAccumulator(str(folder / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert "train/loss" in tags and "train/pairwise" in tags and any(t.startswith("lr/") for t in tags)
    assert "64bits/i2t/mAP" in tags and len(events.Scalars("64bits/t2i/mAP")) == 2
    assert len(events.Scalars("train/loss")) == 6  # 3 steps per epoch, 2 epochs


def test_tensorboard_missing_is_one_line(demo, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    assert run(demo, tmp_path / "run", "--tensorboard") == 2
    one_line_error(capsys, "pip install tensorboard")


def test_patience_stops_after_evaluations_without_a_new_best(demo, tmp_path, monkeypatch):
    trainer_cls = load_method("_template")
    scores = iter([1.0, 0.5, 0.4, 0.3])
    monkeypatch.setattr(trainer_cls, "selection_score", lambda self, results: next(scores))
    folder = tmp_path / "run"
    assert run(demo, folder, "--epochs", "4", "--eval-every", "1", "--patience", "2") == 0
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["epochs"] == 3 and summary["best_epoch"] == 1  # epochs 2 and 3 brought nothing new
    assert len((folder / "metrics.jsonl").read_text().splitlines()) == 3
