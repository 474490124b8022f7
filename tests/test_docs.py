"""The documentation is self-contained: every file a text refers to is in the repository.

Scans the repository's .md and .py files for `docs/<name>.md`, `train/<METHOD>/README.md` and Markdown links
`[text](path)`, and checks that each named path exists; no text may refer to the specification folder the
methods were built from (it is not part of the repository).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SKIPPED_DIRS = {"__pycache__", "node_modules"}
SKIPPED_TOP_LEVEL = {"result", "shared"}  # run outputs; the steering folder some checkouts carry beside the code
# joined at run time so that this file does not match itself
OUTSIDE_FOLDERS = tuple("/".join(("shared", name)) for name in ("methods", "specs"))

REPO_PATH = re.compile(r"(?<![\w./-])((?:docs/[\w.-]+\.md)|(?:train/[\w.-]+/README\.md))")
MARKDOWN_LINK = re.compile(r"\]\(([^)\s]+)\)")


def text_files() -> list[Path]:
    """The repository's .md and .py files (hidden folders, run outputs and caches left out)."""
    found = []
    for folder, dirs, files in os.walk(ROOT):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIPPED_DIRS
                         and not (here == ROOT and d in SKIPPED_TOP_LEVEL))
        found.extend(here / name for name in sorted(files) if name.endswith((".md", ".py")))
    return found


def lines_of(path: Path):
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        yield f"{path.relative_to(ROOT)}:{number}", line


def link_target(source: Path, target: str) -> Path | None:
    """The repository path a Markdown link points to, or None for web addresses and in-page anchors."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
        return None
    target = target.split("#", 1)[0]
    return (ROOT / target.lstrip("/")) if target.startswith("/") else (source.parent / target)


FILES = text_files()


def test_the_scan_sees_the_documentation():
    names = {path.relative_to(ROOT).as_posix() for path in FILES}
    assert {"README.md", "docs/architecture.md", "train/DSPH/README.md", "tests/test_docs.py"} <= names


def test_named_repository_paths_exist():
    missing = [f"{where}: {match}" for path in FILES for where, line in lines_of(path)
               for match in REPO_PATH.findall(line) if not (ROOT / match).exists()]
    assert not missing, "references to files that are not in the repository:\n" + "\n".join(missing)


def test_markdown_links_point_into_the_repository():
    broken = []
    for path in (p for p in FILES if p.suffix == ".md"):
        for where, line in lines_of(path):
            for target in MARKDOWN_LINK.findall(line):
                resolved = link_target(path, target)
                if resolved is None:
                    continue
                inside = resolved.resolve().is_relative_to(ROOT)
                if not inside or not resolved.exists():
                    broken.append(f"{where}: {target}")
    assert not broken, "links to paths outside the repository or missing:\n" + "\n".join(broken)


def test_no_reference_to_the_specification_folder():
    hits = [f"{where}: {line.strip()}" for path in FILES for where, line in lines_of(path)
            if any(folder in line for folder in OUTSIDE_FOLDERS)]
    assert not hits, "the specification folder is not part of the repository:\n" + "\n".join(hits)


@pytest.mark.parametrize("text, expected", [
    ("see docs/demo.md and train/DSPH/README.md.", ["docs/demo.md", "train/DSPH/README.md"]),
    ("each folder (`train/<METHOD>/README.md`)", []),
    ("../docs/x.md is relative", []),
])
def test_reference_pattern(text, expected):
    assert REPO_PATH.findall(text) == expected


def test_link_targets():
    readme = ROOT / "train" / "UMoED" / "README.md"
    assert link_target(readme, "../DIMCH/README.md") == readme.parent / "../DIMCH/README.md"
    assert link_target(readme, "https://example.org/x.md") is None
    assert link_target(readme, "#loss") is None
    assert link_target(ROOT / "README.md", "docs/demo.md#data") == ROOT / "docs/demo.md"
