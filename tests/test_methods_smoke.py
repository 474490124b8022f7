"""Every registered method (and the template) trains one short epoch on a small demo set and writes its outputs.

Method-specific checks live in train/<METHOD>/test_*.py; this file names no method.
"""
import json

import numpy as np
import pytest
import scipy.io as sio
import torch

import main
from dataset.demo import generate_demo
from train.base import HashTrainer
from train.registry import available_methods, load_method
from utils.metrics import evaluate_codes

SMOKE_FLAGS = ["--dataset", "demo", "--query-num", "16", "--train-num", "48", "--epochs", "1", "--batch-size", "16",
               "--eval-every", "1", "--no-progress"]


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory):
    return generate_demo(tmp_path_factory.mktemp("demo") / "data", num_items=96, progress=False)


@pytest.mark.parametrize("method", [*available_methods(), "_template"])
def test_method_trains_and_writes_outputs(method, small_demo, tmp_path):
    run_dir = tmp_path / "run"
    assert main.main(["--method", method, "--data-dir", str(small_demo), "--save-dir", str(run_dir),
                      *SMOKE_FLAGS]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    for name in ("config.yaml", "train.log", "metrics.jsonl", "codes.mat", "pr_curve.png", "best.pt"):
        assert (run_dir / name).is_file(), name
    assert not (run_dir / "last.pt").exists()
    # loads without unpickling code; last.pt, written every epoch, passed save_checkpoint's weights_only check
    torch.load(run_dir / "best.pt", weights_only=True)
    assert set(summary["best"]) == {"i2t", "t2i", "i2i", "t2t"} and summary["best_epoch"] == 1
    codes = sio.loadmat(run_dir / "codes.mat")
    assert codes["q_img"].shape[0] == 16 and codes["r_img"].shape[0] == 96 - 16
    assert set(np.unique(codes["q_img"])) <= {-1.0, 1.0}
    if load_method(method).distance is HashTrainer.distance:  # Hamming codes: summary == recomputation
        recomputed = evaluate_codes(codes["q_img"], codes["q_txt"], codes["r_img"], codes["r_txt"], codes["q_l"],
                                    codes["r_l"])
        assert recomputed["i2t"]["mAP"] == pytest.approx(summary["best"]["i2t"], abs=1e-12)


@pytest.mark.parametrize("method", available_methods())
def test_method_help_lists_its_options(method, capsys):
    with pytest.raises(SystemExit) as done:
        main.main(["--method", method, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "--output-dim" in out and "--epochs" in out
