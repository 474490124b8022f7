"""MS-COCO 2017 (official download) -> index.mat / caption.mat / label.mat.

    python -m dataset.make_coco --coco-dir RAW/coco --save-dir dataset/coco [--family category|label]

Raw layout: <coco>/annotations/{captions,instances}_{train,val}2017.json and <coco>/{train,val}2017/*.jpg.
Rows: images with at least one instance annotation, sorted by image id, train2017 before val2017
(122,218 pairs for the full download); 80 label columns in ascending COCO category id (person first), named
in classes.txt.
Category family: all captions of an image; label family: one caption per image (docs/datasets.md).
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

from dataset.catalog import DATASETS
from dataset.raw_common import (
    Summary,
    filter_images,
    generator_parser,
    output_folder,
    progress,
    require_dir,
    run_generator,
    write_output,
)
from utils.errors import UserError

SPLITS = ("train2017", "val2017")
INFO = DATASETS["coco"]


def _load_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            content = json.load(handle)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}); re-download it") from None
    if not isinstance(content, dict):
        raise UserError(f"{path} is not a COCO annotation file (expected a JSON object)")
    return content


def _field(record: dict, key: str, path: Path, section: str):
    if not isinstance(record, dict) or key not in record:
        raise UserError(f"{path}: an entry of '{section}' has no '{key}' (is this the official COCO annotation "
                        "file?)")
    return record[key]


def _section(content: dict, key: str, path: Path) -> list:
    if not isinstance(content.get(key), list):
        raise UserError(f"{path} has no '{key}' list (is this the official COCO {path.stem.split('_')[0]} file?)")
    return content[key]


def read_split(coco_dir: Path, split: str, categories: dict[int, int] | None) -> tuple[list, dict[int, int], int]:
    """Rows (image id, image path, captions, label vector) of one split, the category -> column map, and the
    number of captioned images dropped for having no instance annotation."""
    captions_path = coco_dir / "annotations" / f"captions_{split}.json"
    instances_path = coco_dir / "annotations" / f"instances_{split}.json"
    for path in (captions_path, instances_path):
        if not path.is_file():
            raise UserError(f"COCO annotation file not found: {path} (unzip annotations_trainval2017.zip into "
                            f"{coco_dir}, or leave {split} out with --splits)")
    captions_json = _load_json(captions_path)
    instances_json = _load_json(instances_path)
    file_names = {_field(img, "id", captions_path, "images"): _field(img, "file_name", captions_path, "images")
                  for img in _section(captions_json, "images", captions_path)}
    captions: dict[int, list[str]] = {}
    for ann in _section(captions_json, "annotations", captions_path):
        captions.setdefault(_field(ann, "image_id", captions_path, "annotations"), []).append(
            str(_field(ann, "caption", captions_path, "annotations")))
    if categories is None:
        ids = sorted(_field(c, "id", instances_path, "categories")
                     for c in _section(instances_json, "categories", instances_path))
        categories = {category: column for column, category in enumerate(ids)}
    labels: dict[int, np.ndarray] = {}
    for ann in _section(instances_json, "annotations", instances_path):
        image_id = _field(ann, "image_id", instances_path, "annotations")
        category = _field(ann, "category_id", instances_path, "annotations")
        if category not in categories:
            raise UserError(f"{instances_path}: annotation of unknown category id {category}")
        labels.setdefault(image_id, np.zeros(len(categories), dtype=np.int64))[categories[category]] = 1
    rows = []
    for image_id in sorted(labels):
        if image_id not in file_names or not captions.get(image_id):
            continue  # instance annotations of an image without captions: not a pair
        rows.append((image_id, str(coco_dir / split / file_names[image_id]), captions[image_id], labels[image_id]))
    unlabelled = sum(1 for image_id in file_names if captions.get(image_id) and image_id not in labels)
    return rows, categories, unlabelled


def category_names(coco_dir: Path, split: str) -> list[str]:
    """The category names in ascending category id: the order of the label columns."""
    content = _load_json(coco_dir / "annotations" / f"instances_{split}.json")
    records = sorted(content["categories"], key=lambda c: c["id"])
    return [str(c.get("name", c["id"])) for c in records]


def one_caption(captions: list[str], rng: random.Random) -> str:
    """The label family's single caption: one drawn with a seeded generator, cut after its first sentence."""
    chosen = captions[rng.randrange(len(captions))].strip()
    head, dot, _ = chosen.partition(".")
    return (head + dot).strip() if head.strip() else chosen


def main(argv: list[str] | None = None) -> None:
    parser = generator_parser("python -m dataset.make_coco", __doc__.split("\n")[0], INFO)
    parser.add_argument("--coco-dir", required=True, help="folder of the official COCO 2017 download")
    parser.add_argument("--splits", default=",".join(SPLITS), help="comma-separated splits to include, in order")
    args = parser.parse_args(argv)
    save_dir = output_folder(args.save_dir)
    coco_dir = require_dir(Path(args.coco_dir), "COCO folder", "pass the folder holding annotations/ and train2017/")
    splits = [s for s in args.splits.split(",") if s]
    unknown = set(splits) - set(SPLITS)
    if unknown:
        raise UserError(f"unknown split(s) {', '.join(sorted(unknown))}; choose from {', '.join(SPLITS)}")
    summary = Summary("MS-COCO", INFO.num_pairs)
    present = [s for s in splits if (coco_dir / "annotations" / f"captions_{s}.json").is_file()
               or (coco_dir / "annotations" / f"instances_{s}.json").is_file()]
    if not present:
        raise UserError(f"no COCO annotation files in {coco_dir / 'annotations'} (unzip annotations_trainval2017.zip)")
    for split in splits:
        if split not in present:
            summary.warnings[f"{split} absent from the download, left out"] += 1
    rows, categories = [], None
    for split in progress(present, "reading annotations"):
        split_rows, categories, unlabelled = read_split(coco_dir, split, categories)
        rows.extend(split_rows)
        if unlabelled:
            summary.dropped[f"no instance annotation ({split})"] += unlabelled
    paths = [row[1] for row in rows]
    keep = filter_images(paths, args.verify, args.strict, summary, args.workers)
    rows = [row for row, ok in zip(rows, keep) if ok]
    if not rows:
        raise UserError(f"no usable COCO pairs in {coco_dir} (are the images under {coco_dir}/train2017?)")
    labels = np.stack([row[3] for row in rows])
    if args.family == "label":
        rng = random.Random(1)
        captions = [[one_caption(row[2], rng)] for row in rows]
    else:
        captions = [row[2] for row in rows]
    save_dir = Path(args.save_dir)
    names = category_names(coco_dir, present[0])
    write_output(save_dir, [row[1] for row in rows], captions, labels, names, args.family, args.absolute_paths,
                 "cells", np.int64)
    print(summary.report(captions, labels, names, save_dir))


if __name__ == "__main__":
    raise SystemExit(run_generator(main))
