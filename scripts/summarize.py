"""Results tables from run folders: one table per dataset, methods x (I->T, T->I) x bit lengths.

    python scripts/summarize.py result/ [--format markdown|csv|latex] [--reported data/reported_results.csv]

Collects every summary.json below the given folders (the sweep's cells and any other run). Values are the
best evaluation's mAP over the whole ranking; the best value of each column is marked. Published numbers
(data/reported_results.csv, from the papers, with their source) are shown beside ours with the difference
ours - published; where the paper used another metric (TwDH: mAP@5000) the number is marked and compared
with our mAP@5000 when the run recorded it (--map-k 5000), else with mAP over the whole ranking.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.errors import UserError  # noqa: E402

DIRECTIONS = (("i2t", "I->T"), ("t2i", "T->I"))
DEFAULT_REPORTED = Path(__file__).resolve().parents[1] / "data" / "reported_results.csv"
DATASET_ORDER = ("flickr25k", "nuswide", "coco", "demo")


@dataclass
class Cell:
    """Our result for one (method, dataset, bits): mAP per direction, and mAP@K values when recorded."""

    maps: dict[str, float]
    map_at: dict[str, dict[int, float]]
    source: Path
    primary: bool  # from a run trained for these bits (not another length of a multi-length run)
    mtime: float


@dataclass
class Published:
    value: float
    source: str
    map_k: int | None  # None: mAP over the whole ranking


def _map_at_values(details: dict) -> dict[int, float]:
    return {int(key[4:]): value for key, value in details.items() if key.startswith("mAP@") and key[4:].isdigit()}


def collect(folders: list[Path]) -> tuple[dict[tuple[str, str, int], Cell], int]:
    """Every run's best mAP by (method, dataset, bits); the newest run wins a cell, a run's own bit length
    before another code length of a multi-length run. Returns the cells and how many runs were superseded."""
    cells: dict[tuple[str, str, int], Cell] = {}
    superseded = 0
    files = sorted({path for folder in folders for path in folder.rglob("summary.json")})
    for path in files:
        try:
            summary = json.loads(path.read_text())
            method, dataset, bits = summary["method"], summary["dataset"], int(summary["bits"])
            entries = [(bits, summary["best"], summary.get("best_details", {}), True)]
            for name, code_set in summary.get("code_sets", {}).items():
                if name.isdigit() and int(name) != bits:
                    entries.append((int(name), code_set["best"], code_set.get("best_details", {}), False))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UserError(f"{path} is not a run summary ({exc}); remove it or fix it") from None
        mtime = path.stat().st_mtime
        for entry_bits, best, details, primary in entries:
            map_at = {d: _map_at_values(details.get(d, {})) for d, _ in DIRECTIONS}
            cell = Cell({d: float(best[d]) for d, _ in DIRECTIONS}, map_at, path.parent, primary, mtime)
            key = (method, dataset, entry_bits)
            old = cells.get(key)
            if old is None or (cell.primary, cell.mtime) > (old.primary, old.mtime):
                superseded += old is not None
                cells[key] = cell
            else:
                superseded += 1
    return cells, superseded


def load_reported(path: Path) -> dict[tuple[str, str, int, str], Published]:
    """Published mAP by (method, dataset, bits, direction): the method's own paper first, else another source."""
    if not path.is_file():
        raise UserError(f"published results file not found: {path} (pass --reported FILE or --no-reported)")
    table: dict[tuple[str, str, int, str], Published] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            key = (row["method"], row["dataset"], int(row["bits"]), row["task"])
            note = row.get("protocol_note", "")
            map_k = 5000 if "mAP@5000" in note else None
            entry = Published(float(row["map"]), row["source_key"], map_k)
            own = row["source_key"] == f"{row['method']}-P"
            if key not in table or own:
                table[key] = entry
    return table


def _format_value(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def build_tables(cells, reported):
    """{dataset: (bits list, {method: {(direction, bits): (ours, best?, published, diff)}})}."""
    tables = {}
    datasets = sorted({d for _, d, _ in cells}, key=lambda d: (DATASET_ORDER.index(d) if d in DATASET_ORDER else 99, d))
    for dataset in datasets:
        keys = [k for k in cells if k[1] == dataset]
        bits = sorted({b for _, _, b in keys})
        methods = sorted({m for m, _, _ in keys})
        column_best = {}
        for direction, _ in DIRECTIONS:
            for b in bits:
                values = [cells[(m, dataset, b)].maps[direction] for m in methods if (m, dataset, b) in cells]
                column_best[(direction, b)] = max(values) if values else None
        rows = {}
        for method in methods:
            row = {}
            for direction, _ in DIRECTIONS:
                for b in bits:
                    cell = cells.get((method, dataset, b))
                    ours = cell.maps[direction] if cell else None
                    published = reported.get((method, dataset, b, direction))
                    diff = compared = None
                    if cell and published:
                        compared = ours
                        if published.map_k is not None:
                            compared = cell.map_at[direction].get(published.map_k)
                        diff = None if compared is None else compared - published.value
                    row[(direction, b)] = (ours, ours is not None and ours == column_best[(direction, b)], published,
                                           diff, compared)
            rows[method] = row
        tables[dataset] = (bits, rows)
    return tables


def _cell_text(entry, bold: tuple[str, str]) -> str:
    ours, is_best, published, diff, compared = entry
    text = _format_value(ours)
    if is_best:
        text = f"{bold[0]}{text}{bold[1]}"
    if published is not None:
        mark = "†" if published.map_k is not None else ""
        delta = "" if diff is None else f", {diff:+.4f}"
        text += f" ({published.value:.4f}{mark}{delta})"
    return text


def render_markdown(tables) -> str:
    out = []
    for dataset, (bits, rows) in tables.items():
        header = ["method"] + [f"{label} {b}" for _, label in DIRECTIONS for b in bits]
        out += [f"### {dataset}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for method, row in rows.items():
            out.append("| " + " | ".join([method] + [_cell_text(row[(d, b)], ("**", "**")) for d, _ in DIRECTIONS
                                                     for b in bits]) + " |")
        out.append("")
    return "\n".join(out)


def render_latex(tables) -> str:
    out = []
    for dataset, (bits, rows) in tables.items():
        arrow_labels = [label.replace("->", r"$\to$") for _, label in DIRECTIONS]
        out += [f"% {dataset}", r"\begin{tabular}{l" + "c" * (2 * len(bits)) + "}", r"\toprule",
                "Method & " + " & ".join(rf"\multicolumn{{{len(bits)}}}{{c}}{{{label}}}" for label in arrow_labels)
                + r" \\",
                " & " + " & ".join(f"{b} bits" for _ in DIRECTIONS for b in bits) + r" \\", r"\midrule"]
        for method, row in rows.items():
            cells = [_cell_text(row[(d, b)], (r"\textbf{", "}")).replace("†", r"$^\dagger$")
                     for d, _ in DIRECTIONS for b in bits]
            out.append(f"{method} & " + " & ".join(cells) + r" \\")
        out += [r"\bottomrule", r"\end{tabular}", ""]
    return "\n".join(out)


def render_csv(tables) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["dataset", "method", "bits", "direction", "map", "best_in_column", "published",
                     "published_metric", "published_source", "ours_compared", "difference"])
    for dataset, (bits, rows) in tables.items():
        for method, row in rows.items():
            for direction, _ in DIRECTIONS:
                for b in bits:
                    ours, is_best, published, diff, compared = row[(direction, b)]
                    metric = "" if published is None else ("mAP" if published.map_k is None else f"mAP@{published.map_k}")
                    writer.writerow([dataset, method, b, direction, _format_value(ours, 6), int(is_best),
                                     "" if published is None else published.value, metric,
                                     "" if published is None else published.source,
                                     "" if compared is None else f"{compared:.6f}",
                                     "" if diff is None else f"{diff:+.6f}"])
    return buffer.getvalue()


def legend(reported_used: bool) -> str:
    text = "mAP over the whole ranking of the best evaluation; best of each column in bold."
    if reported_used:
        text += (" In brackets: the published number and ours minus published. † the paper reports mAP@5000 (first "
                 "min(5000, R) relevant items); the difference then uses our mAP@5000 where the run recorded it "
                 "(--map-k 5000), and is left out otherwise.")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/summarize.py", description=__doc__.split("\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="result folders to search for summary.json")
    parser.add_argument("--format", choices=("markdown", "csv", "latex"), default="markdown")
    parser.add_argument("--reported", type=Path, default=DEFAULT_REPORTED, help="published results CSV")
    parser.add_argument("--no-reported", action="store_true", help="leave out the published numbers")
    args = parser.parse_args(argv)
    try:
        for folder in args.folders:
            if not folder.is_dir():
                raise UserError(f"result folder not found: {folder} (run scripts/sweep.sh or main.py first)")
        cells, superseded = collect(args.folders)
        if not cells:
            raise UserError(f"no summary.json under {', '.join(map(str, args.folders))}: no finished run yet")
        reported = {} if args.no_reported else load_reported(args.reported)
        tables = build_tables(cells, reported)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.format == "csv":
        print(render_csv(tables), end="")
    else:
        print(render_markdown(tables) if args.format == "markdown" else render_latex(tables))
        used = any(entry[2] is not None for _, rows in tables.values() for row in rows.values() for entry in row.values())
        print(("% " if args.format == "latex" else "") + legend(used))
        if superseded:
            print(("% " if args.format == "latex" else "") + f"{superseded} older or secondary result(s) of the same "
                  "cells were superseded by newer runs.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
