"""PR curves (Hamming radius) and top-N precision of several runs in one figure.

    python scripts/plot_pr.py RUN_DIR [RUN_DIR...] [--output pr.png]

Each run folder contributes its codes.mat (or, for a multi-length run, every codes-<bits>.mat), labelled
"<method> <bits> bits" (plus the dataset when the runs mix datasets). Codes are ranked by Hamming distance;
methods with their own distance are plotted on their ±1 codes.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.errors import UserError  # noqa: E402
from utils.plots import plot_pr_curves  # noqa: E402


def run_codes(run_dir: Path) -> list[tuple[str, str, Path]]:
    """(method, bits, codes file) of a run folder, one per code set."""
    summary_path = run_dir / "summary.json"
    if not summary_path.is_file():
        raise UserError(f"{run_dir} holds no summary.json: not a finished run folder")
    summary = json.loads(summary_path.read_text())
    per_set = sorted(run_dir.glob("codes-*.mat"))
    if per_set:
        return [(summary["method"], path.stem[len("codes-"):], path) for path in per_set]
    codes = run_dir / "codes.mat"
    if not codes.is_file():
        raise UserError(f"{run_dir} holds no codes.mat")
    return [(summary["method"], str(summary["bits"]), codes)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/plot_pr.py", description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (with summary.json and codes.mat)")
    parser.add_argument("--output", type=Path, default=Path("pr_curves.png"), help="PNG to write")
    args = parser.parse_args(argv)
    try:
        entries = []
        for run_dir in args.runs:
            if not run_dir.is_dir():
                raise UserError(f"run folder not found: {run_dir}")
            dataset = json.loads((run_dir / "summary.json").read_text())["dataset"] \
                if (run_dir / "summary.json").is_file() else ""
            entries += [(method, bits, dataset, path) for method, bits, path in run_codes(run_dir)]
        mixed = len({dataset for *_, dataset, _ in entries}) > 1
        runs: dict[str, Path] = {}
        for method, bits, dataset, path in entries:
            label = f"{method} {bits} bits" + (f" ({dataset})" if mixed else "")
            if label in runs:
                label += f" [{path.parent.name}]"
            runs[label] = path
        out = plot_pr_curves(runs, args.output)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
