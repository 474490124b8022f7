"""Search an index by text or image with the model that built it.

    python -m retrieval.search index/demo --text "a star" -k 10
    python -m retrieval.search index/demo --image query.png -k 10 --json
    python -m retrieval.search index/demo --queries queries.txt --gallery results.html

A text query searches the indexed images (the texts when the index holds no images), an image query the indexed
texts (else the images); --target images|texts chooses. --queries FILE runs one query per line: a text, or
`image: PATH`. Where the collection has labels each result shows them, and whether it shares one with the query
(known from --query-labels or when the query is itself an indexed item). --json prints one line per query:
{"query": ..., "results": [{"rank", "id", "distance", "path" or "text", "labels"}]}.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from retrieval.cli import add_model_options, load_hamming_model, positive_int, run_command
from retrieval.codes import HNSW_EF_SEARCH, pack_codes, search_index
from retrieval.collection import read_query_image
from retrieval.gallery import check_gallery_path, write_gallery
from retrieval.results import Hit, Query, Result
from retrieval.store import MODALITIES, ModelFingerprint, Part, open_index
from utils.config import OneLineParser
from utils.errors import UserError

IMAGE_PREFIX = "image:"
TEXT_PREFIX = "text:"


def read_queries(path: str | Path) -> list[Query]:
    """One query per non-blank line of a UTF-8 file: a text (optionally `text: ...`) or `image: PATH`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--queries {path}: file not found (one query per line: a text or 'image: PATH')")
    try:
        lines = [line.strip() for line in path.read_text("utf-8").splitlines()]
    except UnicodeDecodeError as exc:
        raise UserError(f"--queries {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    queries = []
    for line in filter(None, lines):
        if line.lower().startswith(IMAGE_PREFIX):
            queries.append(Query("image", line[len(IMAGE_PREFIX):].strip()))
        elif line.lower().startswith(TEXT_PREFIX):
            queries.append(Query("text", line[len(TEXT_PREFIX):].strip()))
        else:
            queries.append(Query("text", line))
    if not queries:
        raise UserError(f"--queries {path} holds no query")
    return queries


class Searcher:
    """An index folder and the model that built it, loaded once for any number of queries."""

    def __init__(self, index_dir: str | Path, pretrained: str | None = None, device: str = "auto"):
        self.folder = open_index(index_dir)
        built_by = self.folder.fingerprint
        if pretrained is None and not Path(built_by.checkpoint).is_file():
            raise UserError(f"the checkpoint that built {index_dir} is gone ({built_by.checkpoint}); pass "
                            "--pretrained RUN with the same model")
        self.model = load_hamming_model(pretrained or built_by.checkpoint, device)
        built_by.check_same(ModelFingerprint.of(self.model), self.folder.path)
        self.class_names = self.folder.class_names
        self._parts: dict[str, Part] = {}
        self._positions: dict[str, dict[str, int]] = {}

    def part(self, modality: str) -> Part:
        if modality not in self._parts:
            self._parts[modality] = self.folder.load(modality)
        return self._parts[modality]

    def target_for(self, kind: str, target: str | None) -> str:
        """The modality a query of `kind` searches: `target`, else the other modality where indexed."""
        held = self.folder.modalities
        if target is not None:
            if target not in held:
                raise UserError(f"{self.folder.path} holds no {target} (it holds {' and '.join(held)})")
            return target
        preferred = "images" if kind == "text" else "texts"
        return preferred if preferred in held else held[0]

    def parse_labels(self, names: str) -> list[str]:
        """Comma-separated class names, checked against the collection's classes."""
        if not self.class_names:
            raise UserError(f"--query-labels: {self.folder.path} has no labels (index a dataset split to have them)")
        labels = [name.strip() for name in names.split(",") if name.strip()]
        unknown = [name for name in labels if name not in self.class_names]
        if unknown or not labels:
            raise UserError(f"--query-labels {names!r}: unknown class {', '.join(unknown) or '(none given)'}; "
                            f"classes: {', '.join(self.class_names)}")
        return labels

    def _indexed_labels(self, query: Query) -> list[str] | None:
        """The class names of the indexed item that is the query itself (same image file or same text), if any."""
        modality = "images" if query.kind == "image" else "texts"
        if not self.class_names or modality not in self.folder.modalities:
            return None
        part = self.part(modality)
        if part.labels is None:
            return None
        if modality not in self._positions:
            self._positions[modality] = {item: position for position, item in enumerate(part.items)}
        key = str(Path(query.value).resolve()) if query.kind == "image" else query.value
        position = self._positions[modality].get(key)
        return None if position is None else self._names(part.labels[position])

    def _names(self, row: np.ndarray) -> list[str]:
        return [self.class_names[c] for c in np.flatnonzero(row)]

    def encode(self, queries: list[Query], batch_size: int) -> np.ndarray:
        """Packed codes (Q, ceil(bits / 8)) of the queries, in order; every query image is read first."""
        images = {i: read_query_image(self.model, q.value) for i, q in enumerate(queries) if q.kind == "image"}
        texts = {i: q.value for i, q in enumerate(queries) if q.kind == "text"}
        codes = np.zeros((len(queries), (self.model.bits + 7) // 8), np.uint8)
        for positions in _chunks(list(images), batch_size):
            codes[positions] = pack_codes(self.model.encode_images(torch.cat([images[i] for i in positions])))
        for positions in _chunks(list(texts), batch_size):
            codes[positions] = pack_codes(self.model.encode_texts(*self.model.tokenize([texts[i] for i in positions])))
        return codes

    def search(self, queries: list[Query], k: int, target: str | None = None, batch_size: int = 64,
               ef_search: int = HNSW_EF_SEARCH) -> list[Result]:
        """The k nearest indexed items of each query, in query order (all inputs are checked before any search)."""
        targets = [self.target_for(query.kind, target) for query in queries]
        for modality in dict.fromkeys(targets):
            if k > len(self.part(modality)):
                raise UserError(f"-k {k} is larger than the {len(self.part(modality))} indexed {modality}; "
                                f"use -k {len(self.part(modality))} or less")
        codes = self.encode(queries, batch_size)
        results: list[Result | None] = [None] * len(queries)
        for modality in dict.fromkeys(targets):
            part = self.part(modality)
            rows = [i for i, t in enumerate(targets) if t == modality]
            distances, positions = search_index(part.index, codes[rows], k, ef_search)
            for row, row_distances, row_positions in zip(rows, distances, positions):
                query = queries[row]
                if query.labels is None:
                    query.labels = self._indexed_labels(query)
                hits = [self._hit(part, rank, int(d), int(p), query)
                        for rank, (d, p) in enumerate(zip(row_distances, row_positions), start=1) if p >= 0]
                results[row] = Result(query, modality, hits)
        return results

    def _hit(self, part: Part, rank: int, distance: int, position: int, query: Query) -> Hit:
        labels = None if part.labels is None or not self.class_names else self._names(part.labels[position])
        relevant = None if labels is None or query.labels is None else bool(set(labels) & set(query.labels))
        return Hit(rank, int(part.ids[position]), distance, part.items[position], labels, relevant)


def _chunks(items: list[int], size: int) -> list[list[int]]:
    return [items[start:start + size] for start in range(0, len(items), size)]


# ===================================================================== command line
def format_result(result: Result, model: Any) -> str:
    """A result as a small text table: rank, Hamming distance, id, [relevant], [labels], path or text."""
    query = result.query
    shown = f'"{query.value}"' if query.kind == "text" else query.value
    head = f"{query.kind} query {shown} -> {result.target} ({model.method}, {model.bits} bits)"
    if query.labels is not None:
        head += f", query labels: {', '.join(query.labels)}"
    with_labels = any(hit.labels is not None for hit in result.hits)
    with_relevance = any(hit.relevant is not None for hit in result.hits)
    header = ["rank", "dist", "id"] + (["rel"] if with_relevance else []) + (["labels"] if with_labels else [])
    table = [header + ["path" if result.target == "images" else "text"]]
    for hit in result.hits:
        cells = [str(hit.rank), str(hit.distance), str(hit.id)]
        if with_relevance:
            cells.append("yes" if hit.relevant else "no")
        if with_labels:
            cells.append(",".join(hit.labels or []) or "-")
        table.append(cells + [hit.item])
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = [head] + ["  ".join([c.rjust(w) if i < 3 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
                                + [row[-1]]) for row in table]
    return "\n".join(line.rstrip() for line in lines)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m retrieval.search", description=__doc__.split("\n")[0],
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           epilog="\n".join(__doc__.split("\n")[2:]))
    parser.add_argument("index", metavar="INDEX_DIR", help="a folder written by python -m retrieval.index")
    given = parser.add_mutually_exclusive_group(required=True)
    given.add_argument("--text", help="a text query")
    given.add_argument("--image", metavar="PATH", help="an image query")
    given.add_argument("--queries", metavar="FILE", help="one query per line: a text or 'image: PATH'")
    parser.add_argument("-k", type=positive_int, default=10, help="results per query (default 10)")
    parser.add_argument("--target", choices=MODALITIES, help="search the indexed images or texts (default: the "
                                                             "other modality than the query's, where indexed)")
    parser.add_argument("--query-labels", metavar="NAMES", help="the query's class names, comma-separated: marks "
                                                                 "which results share one")
    parser.add_argument("--json", action="store_true", help="one JSON object per query instead of tables")
    parser.add_argument("--gallery", metavar="FILE", help="also draw the results: .png or .html")
    parser.add_argument("--pretrained", metavar="RUN", help="the model (default: the checkpoint that built the index)")
    parser.add_argument("--ef-search", type=positive_int, default=HNSW_EF_SEARCH,
                        help=f"candidates an approximate index explores per query (default {HNSW_EF_SEARCH})")
    add_model_options(parser)
    return parser


def run_search(args: argparse.Namespace) -> int:
    """Parse the queries, search, print tables or JSON lines, and draw the gallery; returns the exit code."""
    if args.gallery:
        check_gallery_path(args.gallery)
    if args.queries:
        queries = read_queries(args.queries)
    else:
        queries = [Query("text", args.text) if args.text is not None else Query("image", args.image)]
    searcher = Searcher(args.index, args.pretrained, args.device)
    if args.query_labels:
        labels = searcher.parse_labels(args.query_labels)
        for query in queries:
            query.labels = labels
    batch_size = args.batch_size or searcher.model.config.eval_batch_size
    results = searcher.search(queries, args.k, args.target, batch_size, args.ef_search)
    if args.gallery:
        write_gallery(results, args.gallery)
    for result in results:
        if args.json:
            print(json.dumps(result.to_json(), ensure_ascii=False))
        else:
            print(format_result(result, searcher.model) + "\n")
    if args.gallery and not args.json:
        print(f"gallery: {args.gallery}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(lambda: run_search(args))


if __name__ == "__main__":
    sys.exit(main())
