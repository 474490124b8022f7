"""Results tables from run folders: one table per dataset, methods x (I->T, T->I) x bit lengths.

    python scripts/summarize.py result/ [--format markdown|csv|latex] [--protocol sum|per-direction]
                                        [--reported data/reported_results.csv | --no-reported]

Collects every summary.json below the given folders (the sweep's cells and any other run). Our values are mAP
over the whole ranking under one protocol: `sum` (default: the evaluation each run selected, by I->T + T->I) or
`per-direction` (each direction's best evaluation on its own, marked ‡). A cell with several training seeds
shows mean ± standard deviation; the best value of each column is marked, and so are the values within one
standard deviation of it. The table shows each cell's epochs and seeds, and lists the settings that differ
between its cells. Published numbers (data/reported_results.csv, with their source) are shown beside ours with
the difference ours - published, ours taken under the paper's protocol: its selection (sum or per-direction)
and its metric (mAP, or mAP@K marked †, e.g. TwDH's mAP@5000, available when the run had --map-k K).
--protocol also sets the selection used for these differences.
"""
from __future__ import annotations

import argparse
import csv
import io
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.errors import UserError  # noqa: E402
from utils.metrics import DIRECTION_LABELS  # noqa: E402
from utils.published import Published, load_published  # noqa: E402
from utils.run_results import SELECTIONS, Cell, Collection, Stat, collect, differing_settings  # noqa: E402

# the two cross-modal directions the tables show, with their labels
TABLE_DIRECTIONS = tuple((d, DIRECTION_LABELS[d]) for d in ("i2t", "t2i"))
DEFAULT_REPORTED = Path(__file__).resolve().parents[1] / "data" / "reported_results.csv"
DATASET_ORDER = ("flickr25k", "nuswide", "coco", "demo")
PER_DIRECTION_MARK, MAP_AT_K_MARK = "‡", "†"


def protocol_marks(selection: str, metric: str) -> str:
    """† for mAP@K, ‡ for per-direction selection; nothing for sum-selected mAP over the whole ranking."""
    return (MAP_AT_K_MARK if metric != "mAP" else "") + (PER_DIRECTION_MARK if selection == "per-direction" else "")


@dataclass
class Entry:
    """One (method, direction, bits) cell of a table."""

    ours: Stat | None  # under the table's protocol
    best: bool = False  # best of its column
    near_best: bool = False  # within one standard deviation of the column's best
    published: Published | None = None
    compared: Stat | None = None  # ours under the comparison protocol (the paper's, or --protocol's selection)
    compared_selection: str = ""
    compared_metric: str = ""

    @property
    def difference(self) -> float | None:
        if self.published is None or self.compared is None:
            return None
        return self.compared.mean - self.published.value


@dataclass
class Table:
    dataset: str
    selection: str
    bits: list[int]
    cells: dict[tuple[str, int], Cell]  # (method, bits) -> cell
    rows: dict[str, dict[tuple[str, int], Entry]]  # method -> (direction, bits) -> entry

    def row_setting(self, method: str, value) -> str:
        """A per-cell property of a row, once if all its bit lengths agree, else per bit length."""
        shown = {b: value(self.cells[(method, b)]) for b in self.bits if (method, b) in self.cells}
        if len(set(shown.values())) == 1:
            return next(iter(shown.values()))
        return ", ".join(f"{b}: {text}" for b, text in shown.items())

    def epochs(self, method: str) -> str:
        return self.row_setting(method, lambda cell: "/".join(map(str, cell.epochs)) or "?")

    def seeds(self, method: str) -> str:
        def text(cell: Cell) -> str:
            seeds = ",".join("?" if s is None else str(s) for s in cell.seeds)
            return f"{seeds} (n={len(cell.runs)})" if len(cell.runs) > 1 else seeds
        return self.row_setting(method, text)

    def settings_note(self) -> str:
        """Which settings differ between the table's cells (empty if none)."""
        labels = {f"{m} {b}": self.cells[(m, b)].settings
                  for m, b in sorted(self.cells, key=lambda key: (key[0].lower(), key[1]))}
        parts = []
        for key, groups in differing_settings(labels).items():
            shown = []
            for value, group in groups:
                names = []
                for method in dict.fromkeys(label.rsplit(" ", 1)[0] for label in group):
                    of_method = [label for label in labels if label.rsplit(" ", 1)[0] == method]
                    in_group = [label for label in of_method if label in group]
                    names += [method] if len(in_group) == len(of_method) else in_group
                shown.append(f"{value} ({', '.join(names)})")
            parts.append(f"{key} {' vs '.join(shown)}")
        return "; ".join(parts)


def _comparison(cell: Cell, published: Published | None, direction: str, forced: str | None) -> Entry:
    entry = Entry(cell.stat(forced or "sum", "mAP", direction), published=published)
    if published is not None:
        entry.compared_selection = forced or published.selection
        entry.compared_metric = published.metric
        entry.compared = cell.stat(entry.compared_selection, published.metric, direction)
    return entry


def _mark_best(entries: list[Entry]) -> None:
    """Bold the column's best mean; mark the means within one standard deviation (the larger of the two) of it."""
    present = [e for e in entries if e.ours is not None]
    if not present:
        return
    top = max(present, key=lambda e: e.ours.mean)
    for entry in present:
        entry.best = entry.ours.mean == top.ours.mean
        spread = max(entry.ours.std or 0.0, top.ours.std or 0.0)
        entry.near_best = not entry.best and spread > 0 and top.ours.mean - entry.ours.mean <= spread


def build_tables(collection: Collection, published: dict, protocol: str | None) -> list[Table]:
    """One table per dataset; `protocol` (None: sum) selects our values and, when given, the comparisons'."""
    tables = []
    datasets = sorted({d for _, d, _ in collection.cells},
                      key=lambda d: (DATASET_ORDER.index(d) if d in DATASET_ORDER else 99, d))
    for dataset in datasets:
        cells = {(m, b): cell for (m, d, b), cell in collection.cells.items() if d == dataset}
        bits = sorted({b for _, b in cells})
        methods = sorted({m for m, _ in cells}, key=str.lower)
        rows: dict[str, dict[tuple[str, int], Entry]] = {m: {} for m in methods}
        for direction, _ in TABLE_DIRECTIONS:
            for b in bits:
                column = []
                for method in methods:
                    cell = cells.get((method, b))
                    entry = Entry(None) if cell is None else _comparison(
                        cell, published.get((method, dataset, b, direction)), direction, protocol)
                    rows[method][(direction, b)] = entry
                    column.append(entry)
                _mark_best(column)
        tables.append(Table(dataset, protocol or "sum", bits, cells, rows))
    return tables


def _value(stat: Stat | None, digits: int = 4, pm: str = " ± ") -> str:
    if stat is None:
        return "-"
    return f"{stat.mean:.{digits}f}" + ("" if stat.std is None else f"{pm}{stat.std:.{digits}f}")


def _entry_text(entry: Entry, table: Table, bold: tuple[str, str], near: tuple[str, str], pm: str) -> str:
    text = _value(entry.ours, pm=pm)
    if entry.best:
        text = f"{bold[0]}{text}{bold[1]}"
    elif entry.near_best:
        text = f"{near[0]}{text}{near[1]}"
    published = entry.published
    if published is not None:
        inside = f"{published.value:.4f}{protocol_marks(published.selection, published.metric)}"
        same_as_shown = (entry.compared_selection, entry.compared_metric) == (table.selection, "mAP")
        if entry.compared is not None and not same_as_shown:
            marks = protocol_marks(entry.compared_selection, entry.compared_metric)
            inside += f" vs {entry.compared.mean:.4f}{marks}"
        if entry.difference is not None:
            inside += f", {entry.difference:+.4f}"
        text += f" ({inside})"
    return text


def _header_mark(table: Table) -> str:
    return PER_DIRECTION_MARK if table.selection == "per-direction" else ""


def render_markdown(tables: list[Table]) -> str:
    out = []
    for table in tables:
        header = (["method"] + [f"{label} {b}{_header_mark(table)}" for _, label in TABLE_DIRECTIONS for b in table.bits]
                  + ["epochs", "seeds"])
        out += [f"### {table.dataset}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for method, row in table.rows.items():
            cells = [_entry_text(row[(d, b)], table, ("**", "**"), ("_", "_"), " ± ")
                     for d, _ in TABLE_DIRECTIONS for b in table.bits]
            out.append("| " + " | ".join([method, *cells, table.epochs(method), table.seeds(method)]) + " |")
        out.append("")
        note = table.settings_note()
        if note:
            out += [f"Settings that differ between cells: {note}.", ""]
    return "\n".join(out)


def render_latex(tables: list[Table]) -> str:
    out = []
    for table in tables:
        arrows = [label.replace("->", r"$\to$") for _, label in TABLE_DIRECTIONS]
        mark = r"$^\ddagger$" if table.selection == "per-direction" else ""
        out += [f"% {table.dataset}", r"\begin{tabular}{l" + "c" * (2 * len(table.bits)) + "}", r"\toprule",
                "Method & " + " & ".join(rf"\multicolumn{{{len(table.bits)}}}{{c}}{{{a}{mark}}}" for a in arrows)
                + r" \\",
                " & " + " & ".join(f"{b} bits" for _ in TABLE_DIRECTIONS for b in table.bits) + r" \\", r"\midrule"]
        for method, row in table.rows.items():
            cells = [_entry_text(row[(d, b)], table, (r"\textbf{", "}"), (r"\underline{", "}"), r" $\pm$ ")
                     .replace(MAP_AT_K_MARK + PER_DIRECTION_MARK, r"$^{\dagger\ddagger}$")
                     .replace(MAP_AT_K_MARK, r"$^\dagger$").replace(PER_DIRECTION_MARK, r"$^\ddagger$")
                     for d, _ in TABLE_DIRECTIONS for b in table.bits]
            out.append(f"{method} & " + " & ".join(cells) + r" \\")
        out += [r"\bottomrule", r"\end{tabular}"]
        out += [f"% {method}: epochs {table.epochs(method)}, seeds {table.seeds(method)}" for method in table.rows]
        note = table.settings_note()
        if note:
            out.append(f"% settings that differ between cells: {note}")
        out.append("")
    return "\n".join(out)


def render_csv(tables: list[Table]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["dataset", "method", "bits", "direction", "selection", "map", "std", "n", "seeds", "epochs",
                     "best_in_column", "within_std_of_best", "published", "published_selection", "published_metric",
                     "published_source", "ours_compared", "compared_selection", "compared_metric", "difference"])
    for table in tables:
        for method, row in table.rows.items():
            for direction, _ in TABLE_DIRECTIONS:
                for b in table.bits:
                    entry, cell = row[(direction, b)], table.cells.get((method, b))
                    ours, published = entry.ours, entry.published
                    writer.writerow([
                        table.dataset, method, b, direction, table.selection,
                        "" if ours is None else f"{ours.mean:.6f}",
                        "" if ours is None or ours.std is None else f"{ours.std:.6f}",
                        "" if ours is None else ours.n,
                        "" if cell is None else ";".join("" if s is None else str(s) for s in cell.seeds),
                        "" if cell is None else ";".join(map(str, cell.epochs)),
                        int(entry.best), int(entry.near_best),
                        "" if published is None else published.value,
                        "" if published is None else published.selection,
                        "" if published is None else published.metric,
                        "" if published is None else published.source,
                        "" if entry.compared is None else f"{entry.compared.mean:.6f}",
                        entry.compared_selection, entry.compared_metric,
                        "" if entry.difference is None else f"{entry.difference:+.6f}"])
    return buffer.getvalue()


def legend(tables: list[Table], collection: Collection, forced: bool, latex: bool) -> list[str]:
    """The lines explaining the marks, and which runs were left out."""
    selection = tables[0].selection
    chosen = ("each direction's best evaluation on its own (per-direction, ‡)" if selection == "per-direction"
              else "the evaluation each run selected, by I->T + T->I (sum)")
    lines = [f"mAP over the whole ranking at {chosen}; best of each column in bold, values within one standard "
             f"deviation of it (the larger of the two cells') {'underlined' if latex else 'in italics'}; mean ± "
             "standard deviation over the training seeds where a cell has several (n with the seeds)."]
    entries = [e for t in tables for row in t.rows.values() for e in row.values()]
    if any(e.published is not None for e in entries):
        rule = (f"ours under --protocol {selection} and the paper's metric" if forced
                else "ours under the paper's protocol")
        lines.append(f"In brackets: the published number, marked with its protocol (‡ each direction's best epoch, "
                     f"† mAP@K), and ours minus published, {rule} (given after 'vs' where it is not the value of the "
                     "cell). Where the run did not record the paper's metric (--map-k K) the difference is left out. "
                     "Every protocol selects epochs on the query set, the field's practice (docs/evaluation.md).")
    reasons: dict[str, int] = {}
    for item in collection.superseded:
        reasons[item.reason] = reasons.get(item.reason, 0) + 1
    if reasons:
        lines.append(f"Left out: {'; '.join(f'{count} x {reason}' for reason, count in reasons.items())}.")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/summarize.py", description=__doc__.split("\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="result folders to search for summary.json")
    parser.add_argument("--format", choices=("markdown", "csv", "latex"), default="markdown")
    parser.add_argument("--protocol", choices=SELECTIONS, default=None,
                        help="selection of the best evaluation for our values and for every comparison (default: "
                             "our values by sum, each comparison under its paper's protocol)")
    parser.add_argument("--reported", type=Path, default=DEFAULT_REPORTED, help="published results CSV")
    parser.add_argument("--no-reported", action="store_true", help="leave out the published numbers")
    args = parser.parse_args(argv)
    try:
        for folder in args.folders:
            if not folder.is_dir():
                raise UserError(f"result folder not found: {folder} (run scripts/sweep.sh or main.py first)")
        collection = collect(args.folders)
        if not collection.cells:
            raise UserError(f"no summary.json under {', '.join(map(str, args.folders))}: no finished run yet")
        published = {} if args.no_reported else load_published(args.reported)
        tables = build_tables(collection, published, args.protocol)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.format == "csv":
        print(render_csv(tables), end="")
    else:
        print(render_markdown(tables) if args.format == "markdown" else render_latex(tables))
        prefix = "% " if args.format == "latex" else ""
        lines = legend(tables, collection, args.protocol is not None, args.format == "latex")
        print("\n".join(prefix + line for line in lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
