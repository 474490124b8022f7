"""The newcomer's path: a copy of train/_template under a new name works with no edit outside its folder."""
import shutil
import subprocess
import sys
from pathlib import Path

from dataset.demo import generate_demo

ROOT = Path(__file__).resolve().parents[1]
NOT_COPIED = shutil.ignore_patterns(".git", ".venv", "result", "__pycache__", ".pytest_cache", "demo", "*.pt",
                                    "shared", ".gl", ".whl")


def test_a_template_copy_passes_its_tests_help_smoke_and_a_demo_run(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(ROOT, repo, ignore=NOT_COPIED)
    folder = repo / "train" / "MyHash"
    shutil.copytree(repo / "train" / "_template", folder)
    (folder / "test_template.py").rename(folder / "test_myhash.py")
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}

    def python(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *args], cwd=repo, capture_output=True, text=True, env=env, timeout=600)

    tests = python("-m", "pytest", "-q", "train/MyHash", "tests/test_methods_smoke.py", "-k", "MyHash")
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-2000:]
    assert "5 passed" in tests.stdout  # its 3 tests + the smoke run + the --help test, found automatically
    data = generate_demo(tmp_path / "demo", num_items=120, progress=False)
    demo = python("main.py", "--method", "MyHash", "--data-dir", str(data), "--query-num", "20", "--train-num", "80",
                  "--epochs", "2", "--no-progress")
    assert demo.returncode == 0, demo.stderr[-2000:]
    assert list((repo / "result" / "Template" / "demo" / "64").glob("*/summary.json"))
