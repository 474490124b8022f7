"""scripts/: the sweep (resumable, stops on failure), the results tables and the multi-run PR plot."""
import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from dataset.demo import generate_demo

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import summarize  # noqa: E402


def write_summary(folder: Path, method: str, dataset: str, bits: int, i2t: float, t2i: float, details=None,
                  code_sets=None) -> None:
    folder.mkdir(parents=True)
    summary = {"method": method, "dataset": dataset, "bits": bits, "best": {"i2t": i2t, "t2i": t2i, "i2i": 0, "t2t": 0},
               "best_details": details or {"i2t": {"mAP": i2t}, "t2i": {"mAP": t2i}}}
    if code_sets:
        summary["code_sets"] = code_sets
    (folder / "summary.json").write_text(json.dumps(summary))


@pytest.fixture
def results(tmp_path):
    root = tmp_path / "result"
    write_summary(root / "DCHMT/flickr25k/16/sweep", "DCHMT", "flickr25k", 16, 0.80, 0.79)
    write_summary(root / "DSPH/flickr25k/16/sweep", "DSPH", "flickr25k", 16, 0.82, 0.78)
    write_summary(root / "DSPH/flickr25k/32/sweep", "DSPH", "flickr25k", 32, 0.83, 0.81)
    details = {"i2t": {"mAP": 0.84, "mAP@5000": 0.86}, "t2i": {"mAP": 0.83, "mAP@5000": 0.85}}
    other_length = {"16": {"best": {"i2t": 0.81, "t2i": 0.80}, "best_details": {"i2t": {"mAP": 0.81}, "t2i": {"mAP": 0.80}}}}
    write_summary(root / "TwDH/flickr25k/32/sweep", "TwDH", "flickr25k", 32, 0.84, 0.83, details, other_length)
    return root


def test_markdown_table_marks_best_and_compares_with_published(results, capsys):
    assert summarize.main([str(results)]) == 0
    out = capsys.readouterr().out
    assert "### flickr25k" in out and "| method | I->T 16 | I->T 32 | T->I 16 | T->I 32 |" in out
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| D") or
            line.startswith("| T")}
    assert "**0.8200**" in rows["DSPH"] and "**0.8300**" not in rows["DSPH"]  # best I->T 16 is DSPH, I->T 32 is TwDH
    assert "0.8000 (0.8263, -0.0263)" in rows["DCHMT"]  # DCHMT's own paper, ours - published
    assert "0.8400" in rows["TwDH"] and "(0.8927†, -0.0327)" in rows["TwDH"]  # mAP@5000 compared with mAP@5000
    assert "0.8100" in rows["TwDH"]  # the 16-bit code set of the 32-bit run fills the 16-bit cell
    assert "mAP@5000" in out


def test_csv_and_latex(results, capsys):
    assert summarize.main([str(results), "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    dchmt = next(r for r in rows if r["method"] == "DCHMT" and r["direction"] == "i2t")
    assert dchmt["published"] == "0.8263" and dchmt["published_source"] == "DCHMT-P" and dchmt["best_in_column"] == "0"
    assert summarize.main([str(results), "--format", "latex", "--no-reported"]) == 0
    out = capsys.readouterr().out
    assert r"\textbf{0.8400}" in out and r"\begin{tabular}" in out and "0.8263" not in out


def test_summarize_errors(tmp_path, capsys):
    assert summarize.main([str(tmp_path / "missing")]) == 2
    (tmp_path / "empty").mkdir()
    assert summarize.main([str(tmp_path / "empty")]) == 2
    assert "no summary.json" in capsys.readouterr().err


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory):
    return generate_demo(tmp_path_factory.mktemp("demo") / "data", num_items=96, progress=False)


def sweep(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / "scripts" / "sweep.sh"), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env=env or {"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"})


def python_without_torch(folder: Path, *names: str) -> Path:
    """Executables that run this Python without site-packages (-S), hence without torch."""
    folder.mkdir(parents=True)
    for name in names:
        (folder / name).write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
        (folder / name).chmod(0o755)
    return folder / names[0]


def test_sweep_without_torch_stops_before_the_first_cell(tmp_path):
    python = python_without_torch(tmp_path / "bin", "python3", "python")
    args = ("DSPH", "--datasets", "demo", "--bits", "16", "--result-dir", str(tmp_path / "r"))
    result = sweep(*args, env={"PATH": f"{python.parent}:/usr/bin:/bin"})  # no PYTHON, no virtual environment
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{python} (python3 on PATH) cannot import torch" in lines[0] and "PYTHON=" in lines[0]
    assert not (tmp_path / "r").exists()
    venv_python = python_without_torch(tmp_path / "venv/bin", "python")  # an active environment wins over PATH
    result = sweep(*args, env={"VIRTUAL_ENV": str(tmp_path / "venv"), "PATH": f"{python.parent}:/usr/bin:/bin"})
    assert f"{venv_python} (the active virtual environment) cannot import torch" in result.stderr
    result = sweep(*args, env={"PYTHON": str(python), "VIRTUAL_ENV": sys.prefix, "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2 and f"{python} ($PYTHON) cannot import torch" in result.stderr


def test_sweep_seeds_run_one_cell_per_seed(tmp_path):
    calls = tmp_path / "calls.jsonl"
    fake = tmp_path / "python"  # runs everything with this Python, but records main.py calls instead of training
    fake.write_text(f"""#!{sys.executable}
import json, os, sys
args = sys.argv[1:]
if not args[0].endswith("main.py"):  # the torch check and the method-name lookup
    os.execv(sys.executable, [sys.executable, *args])
with open({str(calls)!r}, "a") as handle:
    handle.write(json.dumps(args) + "\\n")
save_dir = args[args.index("--save-dir") + 1]
os.makedirs(save_dir, exist_ok=True)
open(os.path.join(save_dir, "summary.json"), "w").write("{{}}")
""")
    fake.chmod(0o755)
    env = {"PYTHON": str(fake), "PATH": "/usr/bin:/bin"}
    args = ("dsph", "--datasets", "demo", "--bits", "16,32", "--seeds", "1,2", "--result-dir", str(tmp_path / "r"),
            "--", "--epochs", "2")
    first = sweep(*args, env=env)
    assert first.returncode == 0, first.stderr
    runs = [json.loads(line) for line in calls.read_text().splitlines()]
    assert [(r[r.index("--output-dim") + 1], r[r.index("--train-seed") + 1]) for r in runs] == [
        ("16", "1"), ("16", "2"), ("32", "1"), ("32", "2")]
    assert all(r[r.index("--save-dir") + 1].endswith(f"DSPH/demo/{r[r.index('--output-dim') + 1]}/sweep/seed"
                                                     f"{r[r.index('--train-seed') + 1]}") and r[-2:] == ["--epochs", "2"]
               for r in runs)
    (tmp_path / "r/DSPH/demo/32/sweep/seed1/summary.json").unlink()
    again = sweep(*args, env=env)
    assert "1 cells run, 3 skipped" in again.stdout and "32 bits seed 1 ->" in again.stdout
    clash = sweep("DSPH", "--seeds", "1", "--", "--train-seed", "3", env=env)
    assert clash.returncode == 2 and "--seeds sets --train-seed" in clash.stderr


def test_main_names_a_missing_package_instead_of_blaming_the_method():
    code = ("import runpy, sys; sys.modules['torch'] = None; sys.argv = ['main.py', '--method', 'DSPH']; "
            "runpy.run_path('main.py', run_name='__main__')")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"error: torch is not installed in this Python ({sys.executable}); ")
    assert "DSPH" not in result.stderr


def test_a_method_that_imports_a_missing_project_module_is_blamed(monkeypatch):
    from train import registry
    from utils.errors import UserError

    def import_module(name):
        raise ModuleNotFoundError("No module named 'train.DSPH.gone'", name="train.DSPH.gone")

    monkeypatch.setattr(registry.importlib, "import_module", import_module)
    with pytest.raises(UserError, match=r"^method DSPH failed to import: ModuleNotFoundError: .*other methods"):
        registry.load_method("dsph")


def test_sweep_runs_the_grid_resumes_and_stops_on_failure(small_demo, tmp_path):
    extra = ["--", "--data-dir", str(small_demo), "--query-num", "16", "--train-num", "48", "--epochs", "1",
             "--batch-size", "16", "--no-progress"]
    first = sweep("_template", "--datasets", "demo", "--bits", "16,32", "--result-dir", str(tmp_path / "r"), *extra)
    assert first.returncode == 0, first.stderr[-2000:]
    cells = sorted((tmp_path / "r").rglob("summary.json"))
    assert [c.parent.parent.name for c in cells] == ["16", "32"]
    (tmp_path / "r/_template/demo/32/sweep/summary.json").unlink()  # as if killed during the second cell
    # another spelling of the method names the same cell folders
    again = sweep("_TEMPLATE", "--datasets", "demo", "--bits", "16,32", "--result-dir", str(tmp_path / "r"), *extra)
    assert again.returncode == 0
    assert "16 bits: done before, skipped" in again.stdout and "1 cells run, 1 skipped" in again.stdout

    failing = sweep("_template", "--datasets", "nosuchdataset,demo", "--bits", "16", "--result-dir",
                    str(tmp_path / "f"), *extra)
    assert failing.returncode == 1 and "stopped" in failing.stderr
    assert "failed (exit 2) before writing a log" in failing.stderr and "train.log" not in failing.stderr
    assert not list((tmp_path / "f").rglob("summary.json"))  # nothing after the failing cell ran
    unknown = sweep("_template,NoSuchMethod", "--datasets", "demo", "--result-dir", str(tmp_path / "u"), *extra)
    assert unknown.returncode == 2 and "unknown method 'NoSuchMethod'" in unknown.stderr
    assert not (tmp_path / "u").exists()  # checked before any cell runs
    assert sweep("x", "--bits", "sixteen").returncode == 2


def test_plot_pr_draws_several_runs(small_demo, tmp_path):
    import main

    for bits in (16, 32):
        assert main.main(["--method", "_template", "--data-dir", str(small_demo), "--dataset", "demo", "--query-num",
                          "16", "--train-num", "48", "--epochs", "1", "--batch-size", "16", "--no-progress",
                          "--output-dim", str(bits), "--save-dir", str(tmp_path / f"run{bits}")]) == 0
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "plot_pr.py"), str(tmp_path / "run16"),
                             str(tmp_path / "run32"), "--output", str(tmp_path / "pr.png")], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "pr.png").stat().st_size > 10_000
    bad = subprocess.run([sys.executable, str(ROOT / "scripts" / "plot_pr.py"), str(tmp_path)], capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ")
