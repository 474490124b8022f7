"""NUS-WIDE (official download) -> index.mat / caption.txt (or caption.mat) / label.mat, 21-concept protocol.

    python -m dataset.make_nuswide --root RAW/nuswide [--image-dir RAW/nuswide/Flickr] --save-dir dataset/nuswide

Raw layout: <root>/ImageList/Imagelist.txt (one image path per line, e.g. actor\\0001_2124494179.jpg),
<root>/Groundtruth/AllLabels/Labels_<concept>.txt (one 0/1 per line, same order),
<root>/NUS_WID_Tags/All_Tags.txt ("<photo id> tag tag ..." per line, same order) and the images under
<image-dir>/<folder>/<file>.jpg. A pair is kept when it has at least one of the 21 most frequent
concepts (195,834 pairs); label columns follow the 21 concepts of dataset/catalog.py (named in classes.txt); the
caption is the tags.
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
    read_lines,
    require_dir,
    require_file,
    run_generator,
    write_output,
)
from utils.errors import UserError

INFO = DATASETS["nuswide"]
CONCEPTS = INFO.class_names  # the 21 label columns, alphabetical
EMPTY_TAGS = "123456"  # the reference generators' placeholder for an image without tags


def read_label_column(path: Path, expected: int) -> np.ndarray:
    lines = [line.strip() for line in read_lines(path)]
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) != expected:
        raise UserError(f"{path} has {len(lines)} lines but ImageList/Imagelist.txt has {expected} (incomplete "
                        "download?)")
    bad = [i for i, v in enumerate(lines) if v not in ("0", "1")]
    if bad:
        raise UserError(f"{path}, line {bad[0] + 1}: {lines[bad[0]]!r} is not 0 or 1 ({len(bad)} such lines)")
    return np.array([v == "1" for v in lines], dtype=np.int8)


def read_not_used_ids(path: Path, count: int) -> np.ndarray:
    """Row mask of the reference's not-used-id list: spreadsheet row numbers, row = id - 2."""
    ids = []
    for number, line in enumerate(read_lines(path), start=1):
        if line.strip():
            if not line.strip().isdigit():
                raise UserError(f"{path}, line {number}: {line.strip()!r} is not an id")
            ids.append(int(line) - 2)
    mask = np.zeros(count, dtype=bool)
    ids = np.array(ids)
    if len(ids) and (ids.min() < 0 or ids.max() >= count):
        raise UserError(f"{path}: ids outside 2..{count + 1}; is this the reference's not-used-id.txt?")
    mask[ids] = True
    return mask


def main(argv: list[str] | None = None) -> None:
    parser = generator_parser("python -m dataset.make_nuswide", __doc__.split("\n")[0], INFO)
    parser.add_argument("--root", required=True, help="folder holding ImageList/, Groundtruth/ and NUS_WID_Tags/")
    parser.add_argument("--image-dir", default=None, help="folder of the image archive's <folder>/<file>.jpg "
                                                          "(default <root>/Flickr)")
    parser.add_argument("--not-used-ids", default=None,
                        help="apply the reference's not-used-id.txt instead of the 'at least one of the 21 concepts' "
                             "rule (ids are row numbers + 2)")
    args = parser.parse_args(argv)
    save_dir = output_folder(args.save_dir)
    root = require_dir(Path(args.root), "NUS-WIDE folder", "pass the folder of the unzipped download")
    image_dir = Path(args.image_dir) if args.image_dir else root / "Flickr"
    require_dir(image_dir, "NUS-WIDE image folder", "pass --image-dir, the folder holding the images' sub-folders")
    list_path = require_file(root / "ImageList" / "Imagelist.txt", "image list", "unzip NUS-WIDE's ImageList.zip")
    tags_path = require_file(root / "NUS_WID_Tags" / "All_Tags.txt", "tag file", "unzip NUS_WID_Tags.zip")
    label_dir = require_dir(root / "Groundtruth" / "AllLabels", "label folder", "unzip Groundtruth.zip")
    images = [line.strip().replace("\\", "/") for line in read_lines(list_path) if line.strip()]
    count = len(images)
    tag_lines = read_lines(tags_path)
    while tag_lines and not tag_lines[-1].strip() and len(tag_lines) > count:
        tag_lines.pop()
    if len(tag_lines) != count:
        raise UserError(f"{tags_path} has {len(tag_lines)} lines but {list_path} has {count} (incomplete download?)")
    labels = np.stack([read_label_column(require_file(label_dir / f"Labels_{name}.txt", "label file",
                                                      "unzip Groundtruth.zip completely"), count)
                       for name in CONCEPTS], axis=1)
    summary = Summary("NUS-WIDE", INFO.num_pairs)
    if args.not_used_ids:
        drop = read_not_used_ids(require_file(Path(args.not_used_ids), "not-used-id list", "check the path"), count)
        summary.dropped["listed in --not-used-ids"] += int(drop.sum())
        keep = ~drop
    else:
        keep = labels.sum(axis=1) > 0
        summary.dropped["none of the 21 concepts"] += int((~keep).sum())
    captions = []
    for line in tag_lines:
        tags = line.split()[1:]  # the first token is the Flickr photo id
        captions.append([" ".join(tags) if tags else EMPTY_TAGS])
    empty = np.array([c[0] == EMPTY_TAGS for c in captions]) & keep
    if empty.any():
        summary.warnings[f"no tags, caption set to the placeholder {EMPTY_TAGS}"] += int(empty.sum())
    rows = np.flatnonzero(keep)
    paths = [str(image_dir / images[i]) for i in rows]
    usable = filter_images(paths, args.verify, args.strict, summary, args.workers)
    rows = rows[usable]
    if not len(rows):
        raise UserError(f"no usable NUS-WIDE pairs (images expected under {image_dir})")
    captions = [captions[i] for i in rows]
    save_dir = Path(args.save_dir)
    write_output(save_dir, [str(image_dir / images[i]) for i in rows], captions, labels[rows], CONCEPTS,
                 args.family, args.absolute_paths, "txt", np.int8)
    print(summary.report(captions, labels[rows], CONCEPTS, save_dir))


if __name__ == "__main__":
    raise SystemExit(run_generator(main))
