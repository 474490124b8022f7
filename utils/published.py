"""Published mAP numbers (data/reported_results.csv) with the protocol each paper used.

Each row gives one number of one paper: method, dataset, bits, task (i2t or t2i), map, source_key (the paper,
`<METHOD>-P`), `selection` (how the paper's code picks the reported evaluation: `sum`, one epoch by I->T + T->I,
or `per-direction`, each direction's best epoch on its own) and `metric` (`mAP` over the whole ranking or
`mAP@K`, the repos' first-min(K, R)-relevant-items definition), and a free-text protocol_note with the evidence.
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from utils.errors import UserError

SELECTIONS = ("sum", "per-direction")
REQUIRED_COLUMNS = ("method", "dataset", "bits", "task", "map", "source_key", "selection", "metric")
_METRIC = re.compile(r"mAP(@[1-9][0-9]*)?")


@dataclass(frozen=True)
class Published:
    """One published number and the protocol it was measured under."""

    value: float
    source: str
    selection: str  # "sum" or "per-direction"
    metric: str  # "mAP" or "mAP@K"


def load_published(path: Path) -> dict[tuple[str, str, int, str], Published]:
    """Published numbers by (method, dataset, bits, direction): the method's own paper first, else another source."""
    if not path.is_file():
        raise UserError(f"published results file not found: {path} (pass --reported FILE or --no-reported)")
    table: dict[tuple[str, str, int, str], Published] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise UserError(f"{path} lacks the column(s) {', '.join(missing)}; each row needs "
                            f"{', '.join(REQUIRED_COLUMNS)} (selection: sum|per-direction, metric: mAP|mAP@K)")
        for line, row in enumerate(reader, start=2):
            try:
                entry = Published(float(row["map"]), row["source_key"], row["selection"], row["metric"])
                key = (row["method"], row["dataset"], int(row["bits"]), row["task"])
            except ValueError as exc:
                raise UserError(f"{path}:{line}: {exc}") from None
            if entry.selection not in SELECTIONS or not _METRIC.fullmatch(entry.metric):
                raise UserError(f"{path}:{line}: selection must be sum or per-direction and metric mAP or mAP@K "
                                f"(got {entry.selection!r}, {entry.metric!r})")
            if key not in table or row["source_key"] == f"{row['method']}-P":
                table[key] = entry
    return table
