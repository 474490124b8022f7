"""The qualitative retrieval figure of a paper, for a finished run.

    python -m retrieval.figure RUN [--queries 5] [-k 8] [--direction t2i|i2t] [--seed 0] [--dpi 300] --out fig.png

Query items are drawn (seeded) from the run's query split and ranked against its whole database, exactly the
split of its evaluation. Each row shows the query (a caption for t2i, an image for i2t) and its top-k results,
framed green when they share a class with the query and red when not. The format follows the suffix of --out
(.png, .pdf or .svg); --dpi sets the print resolution.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from retrieval.cli import add_model_options, load_hamming_model, positive_int, run_command
from retrieval.codes import build_index, pack_codes, search_index
from retrieval.collection import Items, encode_images, encode_texts, read_query_image, run_split
from retrieval.gallery import draw_results
from retrieval.results import Hit, Query, Result
from utils.config import OneLineParser
from utils.errors import UserError

FIGURE_SUFFIXES = (".png", ".pdf", ".svg")
DIRECTIONS = ("t2i", "i2t")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m retrieval.figure", description=__doc__.split("\n")[0],
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           epilog="\n".join(__doc__.split("\n")[2:]))
    parser.add_argument("run", metavar="RUN", help="a finished run folder (best.pt + config.yaml) or its best.pt")
    parser.add_argument("--queries", type=positive_int, default=5, help="query items, one row each (default 5)")
    parser.add_argument("-k", type=positive_int, default=8, help="results per query (default 8)")
    parser.add_argument("--direction", choices=DIRECTIONS, default="t2i",
                        help="t2i: caption queries, image results; i2t: image queries, caption results (default t2i)")
    parser.add_argument("--seed", type=int, default=0, help="which query items are drawn (default 0)")
    parser.add_argument("--dpi", type=positive_int, default=300, help="resolution (default 300, print)")
    parser.add_argument("--out", required=True, metavar="FILE", help="the figure: .png, .pdf or .svg")
    add_model_options(parser)
    return parser


def _names(labels: np.ndarray, class_names: list[str] | None) -> list[str] | None:
    return None if class_names is None else [class_names[c] for c in np.flatnonzero(labels)]


def make_figure(args: argparse.Namespace) -> int:
    """Encode the drawn queries and the database, rank, and draw; returns the exit code."""
    out = Path(args.out)
    if out.suffix.lower() not in FIGURE_SUFFIXES:
        raise UserError(f"--out {out}: the file name must end in {', '.join(FIGURE_SUFFIXES)}")
    model = load_hamming_model(args.run, args.device)
    table, split = run_split(model.config)
    if args.queries > len(split.query):
        raise UserError(f"--queries {args.queries} is more than the {len(split.query)} items of the query split")
    if args.k > len(split.retrieval):
        raise UserError(f"-k {args.k} is larger than the {len(split.retrieval)} database items")
    query_rows = np.sort(np.random.default_rng(args.seed).choice(split.query, args.queries, replace=False))
    batch_size = args.batch_size or model.config.eval_batch_size
    rows = split.retrieval
    labels = table.labels[rows] > 0
    if args.direction == "t2i":
        queries = [Query("text", table.captions[r][0]) for r in query_rows]
        database = Items(rows.astype(np.int64), [str(Path(table.paths[r]).resolve()) for r in rows], labels)
        database, codes, _ = encode_images(model, database, batch_size, progress=args.progress)
        query_codes = pack_codes(model.encode_texts(*model.tokenize([q.value for q in queries])))
    else:
        queries = [Query("image", str(Path(table.paths[r]).resolve())) for r in query_rows]
        database = Items(rows.astype(np.int64), [table.captions[r][0] for r in rows], labels)
        codes = encode_texts(model, database, batch_size, progress=args.progress)
        query_codes = pack_codes(model.encode_images(torch.cat([read_query_image(model, q.value) for q in queries])))
    distances, positions = search_index(build_index(codes), query_codes, args.k)
    results = []
    for query, row, row_distances, row_positions in zip(queries, query_rows, distances, positions):
        query_labels = table.labels[row] > 0
        query.labels = _names(query_labels, model.class_names)
        hits = [Hit(rank, int(database.ids[p]), int(d), database.items[p],
                    _names(database.labels[p], model.class_names), bool((database.labels[p] & query_labels).any()))
                for rank, (d, p) in enumerate(zip(row_distances, row_positions), start=1)]
        results.append(Result(query, "images" if args.direction == "t2i" else "texts", hits))
    out.parent.mkdir(parents=True, exist_ok=True)
    draw_results(results, out, dpi=args.dpi, annotate=False)
    relevant = sum(hit.relevant for result in results for hit in result.hits)
    print(f"wrote {out}: {args.queries} {args.direction} queries of {model.method} ({model.bits} bits), "
          f"{relevant} of {args.queries * args.k} results relevant")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(lambda: make_figure(args))


if __name__ == "__main__":
    sys.exit(main())
