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


def sweep(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / "scripts" / "sweep.sh"), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"})


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
