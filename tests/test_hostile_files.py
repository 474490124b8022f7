"""Crafted files at every entry point that loads weights: nothing of them runs, each ends with one line, exit 2.

A hostile pickle (an object whose unpickling calls os.mkdir) and a hostile TorchScript archive (a scripted
`__setstate__` that writes a file with torch.from_file) are given to main.py --pretrained, --test --pretrained,
--resume DIR, --clip-path and `python -m model.clip convert`; the file or folder they would create must not appear.
"""
import contextlib
import os
import pickle
import warnings
from pathlib import Path
from typing import Tuple

import pytest
import torch
from torch import nn

import main
from dataset.demo import generate_demo
from model.clip import main as clip_main
from utils.checkpoint import FORMAT

SMALL = ["--method", "_template", "--dataset", "demo", "--query-num", "16", "--train-num", "48", "--batch-size", "16",
         "--epochs", "1", "--no-progress"]
KINDS = ("pickle", "legacy-pickle", "torchscript")


class CreatesADirectory:
    """Unpickling this object calls os.mkdir(path): a stand-in for any code a crafted pickle runs."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return os.mkdir, (self.path,)


class WritesAFile(nn.Module):
    """Scripted, its __setstate__ (run by torch.jit.load) writes 8 bytes to `path`."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path
        self.weight = nn.Parameter(torch.zeros(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight

    @torch.jit.export
    def __getstate__(self) -> Tuple[str, bool, torch.Tensor]:
        return (self.path, self.training, self.weight)

    @torch.jit.export
    def __setstate__(self, state: Tuple[str, bool, torch.Tensor]) -> None:
        self.path = state[0]
        self.training = state[1]
        written = torch.from_file(state[0], True, 2)
        written.fill_(1.0)
        self.weight = state[2] + written * 0.0


def write_hostile(kind: str, path: Path, target: Path) -> Path:
    """A file of `kind` at `path` whose unsafe loading creates `target`."""
    payload = {"format": FORMAT, "method": "_template", "model": {"weight": CreatesADirectory(str(target))}}
    if kind == "pickle":
        torch.save(payload, path)
    elif kind == "legacy-pickle":
        path.write_bytes(pickle.dumps(payload))
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.jit.script(WritesAFile(str(target))).save(str(path))
    return path


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory):
    return generate_demo(tmp_path_factory.mktemp("demo") / "data", num_items=96, progress=False)


@pytest.mark.parametrize("kind", KINDS)
def test_the_hostile_files_run_code_when_loaded_unsafely(tmp_path, kind):
    """The fixtures are real: the loaders this project no longer uses would create the target."""
    target = tmp_path / "target"
    path = write_hostile(kind, tmp_path / "hostile.pt", target)
    with warnings.catch_warnings(), contextlib.suppress(RuntimeError):  # a legacy file fails after unpickling
        warnings.simplefilter("ignore")
        if kind == "torchscript":
            torch.jit.load(str(path))
        else:
            torch.load(path, weights_only=False)
    assert target.exists()


def assert_refused(code: int, capsys, target: Path, hostile: Path) -> None:
    """Exit 2 with one line that names the hostile file (its loader refused it), and no target."""
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and str(hostile) in err[0], err
    assert not target.exists()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", ["pretrained", "test", "resume"])
def test_checkpoint_entry_points(small_demo, tmp_path, capsys, monkeypatch, kind, mode):
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "target"
    if mode == "resume":
        folder = tmp_path / "interrupted"
        folder.mkdir()
        hostile = write_hostile(kind, folder / "last.pt", target)
        args = ["--resume", str(folder)]
    else:
        hostile = write_hostile(kind, tmp_path / "best.pt", target)
        args = ["--pretrained", str(hostile), *(["--test"] if mode == "test" else [])]
    code = main.main([*SMALL, "--data-dir", str(small_demo), "--save-dir", str(tmp_path / "run"), *args])
    assert_refused(code, capsys, target, hostile)


@pytest.mark.parametrize("kind", KINDS)
def test_clip_path(small_demo, tmp_path, capsys, monkeypatch, kind):
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "target"
    weights = write_hostile(kind, tmp_path / "ViT-B-32.pt", target)
    code = main.main([*SMALL, "--data-dir", str(small_demo), "--save-dir", str(tmp_path / "run"),
                      "--backbone", "ViT-B-32", "--clip-path", str(weights)])
    assert_refused(code, capsys, target, weights)


@pytest.mark.parametrize("kind", KINDS)
def test_clip_convert(tmp_path, capsys, kind):
    target = tmp_path / "target"
    weights = write_hostile(kind, tmp_path / "ViT-B-32.pt", target)
    assert_refused(clip_main(["convert", str(weights), str(tmp_path / "out.safetensors")]), capsys, target, weights)
    assert not (tmp_path / "out.safetensors").exists()
