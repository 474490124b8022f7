"""Precision-recall and top-N precision figures from codes files (one line per run)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

from utils.metrics import load_codes_file, pr_curve_by_radius, topn_grid, topn_precision_curve  # noqa: E402

PANELS = (("i2t", "q_img", "r_txt", "I→T"), ("t2i", "q_txt", "r_img", "T→I"))


def plot_pr_curves(runs: dict[str, str | Path], out_path: str | Path, distance: Callable | None = None) -> Path:
    """Write a PNG with PR curves (Hamming radius 0..K) and top-N precision, I→T and T→I, one line per run.

    `runs` maps a legend label (e.g. "DSPH 64 bits") to the run's codes file; `distance` replaces the
    Hamming distance for codes of another format (see utils.metrics).
    """
    fig, axes = plt.subplots(2, 2, figsize=(10, 8.5))
    for label, path in runs.items():
        codes = load_codes_file(path)
        ns = topn_grid(codes["r_img"].shape[0], points=20)
        for column, (_, query_key, db_key, title) in enumerate(PANELS):
            precision, recall = pr_curve_by_radius(codes[query_key], codes[db_key], codes["q_l"], codes["r_l"],
                                                   distance=distance)
            pr_axis, topn_axis = axes[0, column], axes[1, column]
            pr_axis.plot(recall, precision, marker=".", label=label)
            pr_axis.set(title=f"{title} precision-recall (Hamming radius)", xlabel="recall", ylabel="precision",
                        xlim=(0, 1.02), ylim=(0, 1.02))
            _, topn = topn_precision_curve(codes[query_key], codes[db_key], codes["q_l"], codes["r_l"], ns,
                                           distance=distance)
            topn_axis.plot(ns, topn, marker=".", label=label)
            topn_axis.set(title=f"{title} top-N precision", xlabel="N (retrieved items)", ylabel="precision",
                          ylim=(0, 1.02))
    for axis in axes.flat:
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    fig.tight_layout()
    out_path = Path(out_path)
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return out_path
