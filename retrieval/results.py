"""What a search returns: the query, and its ranked hits with distances, labels and relevance."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Query:
    """A text or an image path, with the query's class names where known."""

    kind: str  # "text" or "image"
    value: str
    labels: list[str] | None = None


@dataclass
class Hit:
    """One ranked result; `relevant` (shares a class with the query) is None where either side's labels are unknown."""

    rank: int
    id: int
    distance: int
    item: str  # image path or text
    labels: list[str] | None
    relevant: bool | None


@dataclass
class Result:
    query: Query
    target: str  # "images" or "texts"
    hits: list[Hit]

    def to_json(self) -> dict[str, Any]:
        """`{"query", "results": [{"rank", "id", "distance", "path" | "text", "labels"}]}` (labels where known)."""
        key = "path" if self.target == "images" else "text"
        rows = []
        for hit in self.hits:
            row = {"rank": hit.rank, "id": hit.id, "distance": hit.distance, key: hit.item}
            if hit.labels is not None:
                row["labels"] = hit.labels
            rows.append(row)
        return {"query": self.query.value, "results": rows}
