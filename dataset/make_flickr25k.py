"""MIRFlickr-25K (official download) -> index.mat / caption.mat / label.mat.

    python -m dataset.make_flickr25k --root RAW/mirflickr --save-dir dataset/flickr25k [--family category|label]

Raw layout (from mirflickr25k.zip and mirflickr25k_annotations_v080.zip), either
<root>/mirflickr/im<id>.jpg + <root>/mirflickr/meta/tags/tags<id>.txt, or the same under
<root>/mirflickr25k/; and <root>/mirflickr25k_annotations_v080/<concept>.txt (24 lists of image ids;
the "_r1" lists and README.txt are ignored). A pair is kept when its image appears in at least one
of the 24 lists (20,015 pairs); label columns are the concepts in sorted order (named in classes.txt), the
caption is the image's tags joined by spaces.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from dataset.catalog import DATASETS
from dataset.raw_common import (
    Summary,
    filter_images,
    generator_parser,
    output_folder,
    progress,
    read_lines,
    require_dir,
    run_generator,
    write_output,
)
from utils.errors import UserError

INFO = DATASETS["flickr25k"]
ANNOTATION_DIR = "mirflickr25k_annotations_v080"


def find_image_dir(root: Path) -> Path:
    """The folder holding im<id>.jpg and meta/tags: <root>/mirflickr or <root>/mirflickr25k/mirflickr."""
    for candidate in (root / "mirflickr", root / "mirflickr25k" / "mirflickr", root):
        if (candidate / "meta" / "tags").is_dir() or (candidate / "im1.jpg").is_file():
            return candidate
    raise UserError(f"no MIRFlickr images under {root} (expected {root}/mirflickr/im1.jpg and "
                    f"{root}/mirflickr/meta/tags/; unzip mirflickr25k.zip there)")


def read_concepts(annotation_dir: Path) -> dict[str, set[int]]:
    """Concept name -> ids of the images annotated with it (the 24 "potential" lists, sorted by name)."""
    files = sorted(p for p in annotation_dir.glob("*.txt") if "_r1" not in p.stem and p.stem.lower() != "readme")
    if not files:
        raise UserError(f"no concept lists (<concept>.txt) in {annotation_dir} (unzip mirflickr25k_annotations_v080"
                        ".zip there)")
    concepts = {}
    for path in files:
        ids = set()
        for number, line in enumerate(read_lines(path), start=1):
            text = line.strip()
            if not text:
                continue
            if not text.isdigit():
                raise UserError(f"{path}, line {number}: {text!r} is not an image id (expected one number per line)")
            ids.add(int(text))
        concepts[path.stem] = ids
    return concepts


def read_tags(tags_dir: Path, image_id: int, summary: Summary) -> str:
    """The image's tags (one per line in tags<id>.txt) joined by single spaces; counted warnings if absent."""
    path = tags_dir / f"tags{image_id}.txt"
    if not path.is_file():
        summary.warnings["tag file missing, caption left empty"] += 1
        return ""
    tags = [line.strip() for line in read_lines(path) if line.strip()]
    if not tags:
        summary.warnings["no tags, caption left empty"] += 1
    return " ".join(tags)


def main(argv: list[str] | None = None) -> None:
    parser = generator_parser("python -m dataset.make_flickr25k", __doc__.split("\n")[0], INFO)
    parser.add_argument("--root", required=True, help="folder holding mirflickr/ and mirflickr25k_annotations_v080/")
    parser.add_argument("--row-order", choices=("numeric", "string"), default="numeric",
                        help="sort image ids as numbers (the MITH/CMCL release order) or as strings (the "
                             "QinLab/DCHMT generators' order, which their seed-1814 splits assume)")
    parser.add_argument("--drop-untagged", action="store_true", help="drop pairs whose image has no tags")
    args = parser.parse_args(argv)
    save_dir = output_folder(args.save_dir)
    root = require_dir(Path(args.root), "MIRFlickr folder", "pass the folder of the unzipped download")
    annotation_dir = root / ANNOTATION_DIR
    if not annotation_dir.is_dir():
        annotation_dir = require_dir(root / "mirflickr25k" / ANNOTATION_DIR, "annotation folder",
                                     f"unzip mirflickr25k_annotations_v080.zip into {root}")
    image_dir = find_image_dir(root)
    concepts = read_concepts(annotation_dir)
    names = list(concepts)
    labelled = sorted(set().union(*concepts.values()), key=(int if args.row_order == "numeric" else str))
    summary = Summary("MIRFlickr-25K", INFO.num_pairs)
    present = {int(p.stem[2:]) for p in image_dir.glob("im*.jpg") if p.stem[2:].isdigit()}
    unlabelled = len(present - set(labelled))
    if unlabelled:
        summary.dropped[f"image in none of the {len(names)} concept lists"] += unlabelled
    labels = np.array([[image_id in concepts[name] for name in names] for image_id in labelled], dtype=np.float64)
    paths = [str(image_dir / f"im{image_id}.jpg") for image_id in labelled]
    tags_dir = image_dir / "meta" / "tags"
    captions = [[read_tags(tags_dir, image_id, summary)] for image_id in progress(labelled, "reading tags")]
    keep = filter_images(paths, args.verify, args.strict, summary, args.workers)
    if args.drop_untagged:
        untagged = np.array([not c[0] for c in captions])
        summary.dropped["no tags (--drop-untagged)"] += int((keep & untagged).sum())
        keep &= ~untagged
    if not keep.any():
        raise UserError(f"no usable MIRFlickr pairs under {root}")
    paths = [p for p, ok in zip(paths, keep) if ok]
    captions = [c for c, ok in zip(captions, keep) if ok]
    labels = labels[keep]
    save_dir = Path(args.save_dir)
    write_output(save_dir, paths, captions, labels, names, args.family, args.absolute_paths, "column", np.float64)
    print(summary.report(captions, labels, names, save_dir))


if __name__ == "__main__":
    raise SystemExit(run_generator(main))
