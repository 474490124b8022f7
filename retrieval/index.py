"""Index a collection with a trained model: its codes, items and a FAISS binary index in one folder.

    python -m retrieval.index --pretrained RUN --dataset demo --out index/demo            # a split of a dataset
    python -m retrieval.index --pretrained RUN --images photos/ [--texts captions.txt] --out index/photos

RUN is a run folder (best.pt + config.yaml) or its best.pt. A dataset split indexes its images and their first
captions with labels; --images indexes every image file under a folder (unreadable ones are listed in
INDEX/skipped.txt and skipped); --texts indexes one text per line. --approximate builds an HNSW graph instead of
the exact (brute-force) index: for millions of items.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from retrieval.cli import add_model_options, load_hamming_model, run_command
from retrieval.collection import SPLITS, dataset_split, encode_images, encode_texts, image_folder, text_file
from retrieval.store import SKIPPED, ModelFingerprint, Part, check_output_folder, write_index_folder
from utils.config import OneLineParser
from utils.errors import UserError

SHOWN_SKIPPED = 5


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m retrieval.index", description=__doc__.split("\n")[0],
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           epilog="\n".join(__doc__.split("\n")[2:]))
    parser.add_argument("--pretrained", required=True, metavar="RUN",
                        help="run folder (best.pt + config.yaml) or best.pt")
    parser.add_argument("--images", metavar="DIR", help="index the image files under DIR")
    parser.add_argument("--dataset", metavar="NAME", help="index a split of a dataset (images and first captions)")
    parser.add_argument("--split", choices=SPLITS, default="database", help="split of --dataset (default: database)")
    parser.add_argument("--data-dir", metavar="DIR",
                        help="folder of --dataset's files (default: the run's for its own dataset, else dataset/NAME)")
    parser.add_argument("--texts", metavar="FILE", help="index the texts of FILE, one per line")
    parser.add_argument("--out", required=True, metavar="INDEX_DIR", help="the index folder to write")
    parser.add_argument("--approximate", action="store_true",
                        help="approximate HNSW index instead of exact search (collections of millions)")
    parser.add_argument("--num-workers", type=int, default=0, metavar="N", help="image decoding processes (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing index folder at --out")
    add_model_options(parser)
    return parser


def _check_sources(args: argparse.Namespace) -> None:
    if args.images and args.dataset:
        raise UserError("--images and --dataset exclude each other; index them into two folders")
    if args.dataset and args.texts:
        raise UserError("--dataset indexes the split's captions already; index --texts FILE into its own folder")
    if not (args.images or args.dataset or args.texts):
        raise UserError("nothing to index: give --images DIR, --dataset NAME or --texts FILE")


def _report_skipped(skipped: list[tuple[str, str]], total: int, out: Path) -> None:
    print(f"skipped {len(skipped)} of {total} images that cannot be read (all listed in {out / SKIPPED}):",
          file=sys.stderr)
    for path, reason in skipped[:SHOWN_SKIPPED]:
        print(f"  {path}: {reason}", file=sys.stderr)
    if len(skipped) > SHOWN_SKIPPED:
        print(f"  ... and {len(skipped) - SHOWN_SKIPPED} more", file=sys.stderr)


def index_collection(args: argparse.Namespace) -> int:
    """Encode the chosen collection and write the index folder; returns the exit code."""
    _check_sources(args)
    out = Path(args.out)
    check_output_folder(out, args.overwrite)
    images = image_folder(args.images) if args.images else None
    texts = text_file(args.texts) if args.texts else None
    model = load_hamming_model(args.pretrained, args.device)
    class_names = None
    source = {"images": str(Path(args.images).resolve())} if args.images else {}
    if args.texts:
        source["texts"] = str(Path(args.texts).resolve())
    if args.dataset:
        images, texts, class_names = dataset_split(model.config, args.dataset, args.split, args.data_dir)
        source = {"dataset": args.dataset, "split": args.split}
    batch_size = args.batch_size or model.config.eval_batch_size
    parts: dict[str, Part] = {}
    skipped: list[tuple[str, str]] = []
    if images is not None:
        kept, codes, skipped = encode_images(model, images, batch_size, args.num_workers, args.progress)
        if not len(kept):
            path, reason = skipped[0]
            raise UserError(f"none of the {len(images)} images can be read (first: {path}: {reason})")
        parts["images"] = Part(kept.ids, kept.items, codes, kept.labels)
    if texts is not None:
        codes = encode_texts(model, texts, batch_size, args.progress)
        parts["texts"] = Part(texts.ids, texts.items, codes, texts.labels)
    kind = "hnsw" if args.approximate else "flat"
    write_index_folder(out, ModelFingerprint.of(model), parts, class_names, source, kind, skipped, args.overwrite)
    if skipped:
        _report_skipped(skipped, len(images), out)
    counts = " and ".join(f"{len(part)} {modality}" for modality, part in parts.items())
    described = "approximate HNSW" if args.approximate else "exact"
    print(f"indexed {counts} with {model.method} ({model.bits} bits, {described} index) into {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(lambda: index_collection(args))


if __name__ == "__main__":
    sys.exit(main())
