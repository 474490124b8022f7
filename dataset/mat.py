"""Read and write the three-file dataset format (index / caption / label) of the hashing repos.

Both on-disk families are accepted (see docs/datasets.md):

* "category" family (DCHMT / QinLab generators): labels under `category`, COCO captions as a
  cell row of ragged caption lists, MIRFlickr captions as an (N, 1) char matrix, NUS-WIDE
  captions in a `caption.txt`.
* "label" family (MITH / CMCL generators): labels under `label`, one caption string per item.

Everything is normalised to :class:`PairTable`: stripped image paths, a list of >= 1 caption
strings per item and a float32 0/1 label matrix. A `classes.txt` beside the label file (one name per
line, in label-column order; our generators write it) gives the class names.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import scipy.io as sio

from utils.errors import UserError
from utils.text_files import read_utf8

INDEX_KEYS = ("index", "imgs", "FAll")
CAPTION_KEYS = ("caption", "tags", "YAll")
LABEL_KEYS = ("category", "label", "LAll", "labels")
CAPTION_FILES = ("caption.mat", "caption.txt")
CLASS_FILE = "classes.txt"


@dataclass
class PairTable:
    """An image-text dataset in row order: item i is (paths[i], captions[i], labels[i])."""

    paths: list[str]
    captions: list[list[str]]
    labels: np.ndarray  # float32 (N, C), values 0/1
    class_names: tuple[str, ...] | None = None  # one per label column, where known

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def num_classes(self) -> int:
        return int(self.labels.shape[1])


def _loadmat(path: Path, keys: Sequence[str], what: str) -> np.ndarray:
    if not path.is_file():
        raise UserError(f"{what} file not found: {path} (prepare the dataset, see docs/datasets.md, or pass --data-dir)")
    try:
        content = sio.loadmat(str(path))
    except Exception as exc:  # scipy raises several unrelated types for corrupt files
        raise UserError(f"cannot read {path}: {exc} (is it a MATLAB .mat file?)") from None
    for key in keys:
        if key in content:
            return content[key]
    found = sorted(k for k in content if not k.startswith("__"))
    raise UserError(f"{path} has none of the variables {', '.join(keys)} (found: {', '.join(found) or 'none'})")


def _strings(value: np.ndarray) -> list[str]:
    """All strings held by a loaded char matrix / cell element, stripped of MATLAB's padding."""
    arr = np.asarray(value)
    if arr.dtype == object:
        return [s for item in arr.reshape(-1) for s in _strings(item)]
    if arr.size == 0:
        return [""]
    return [str(s).strip() for s in arr.reshape(-1)]


def read_index(path: Path) -> list[str]:
    """Image paths from an index.mat, stripped of MATLAB's space padding."""
    arr = _loadmat(path, INDEX_KEYS, "index")
    if arr.dtype != object and arr.dtype.kind != "U":
        raise UserError(f"{path}: the index variable must hold image paths (strings), got {arr.dtype} data")
    return _strings(arr)


def read_captions(path: Path) -> list[list[str]]:
    """Captions per item from a caption.mat (any family) or a caption.txt (one line per item)."""
    if path.suffix == ".txt":
        if not path.is_file():
            raise UserError(f"caption file not found: {path} (prepare the dataset, see docs/datasets.md)")
        return [[line.strip()] for line in read_utf8(path, "caption file").splitlines()]
    arr = _loadmat(path, CAPTION_KEYS, "caption")
    if arr.dtype == object:  # ragged cell row (1, N) or column: one cell per item
        return [_strings(item) for item in arr.reshape(-1)]
    if arr.dtype.kind != "U":
        raise UserError(f"{path}: the caption variable must hold strings, got {arr.dtype} data")
    if arr.ndim == 1:  # label family: one string per item
        return [[s.strip()] for s in arr.tolist()]
    return [[s.strip() for s in row] for row in arr.reshape(arr.shape[0], -1).tolist()]


def read_labels(path: Path) -> np.ndarray:
    """Multi-hot labels (N, C) as float32; raises if not a 0/1 matrix."""
    arr = _loadmat(path, LABEL_KEYS, "label")
    if arr.ndim != 2 or arr.dtype.kind not in "biuf":
        raise UserError(f"{path}: labels must be a numeric (N, C) matrix, got shape {arr.shape} of {arr.dtype}")
    labels = arr.astype(np.float32)
    if not np.isin(labels, (0.0, 1.0)).all():
        raise UserError(f"{path}: labels must be 0/1 multi-hot, found other values")
    return labels


def read_class_names(path: Path, num_classes: int) -> tuple[str, ...]:
    """The names of a classes.txt (one per line, in label-column order), checked against the label columns."""
    with open(path, encoding="utf-8") as handle:
        names = [line.strip() for line in handle.read().splitlines()]
    while names and not names[-1]:
        names.pop()
    if len(names) != num_classes:
        raise UserError(f"{path} lists {len(names)} class names but the label file has {num_classes} columns (one "
                        "name per line, in label-column order; fix or delete it)")
    if not all(names):
        raise UserError(f"{path}, line {names.index('') + 1}: empty class name (one name per line; fix or delete it)")
    return tuple(names)


def find_caption_file(data_dir: Path) -> Path:
    """caption.mat if present, else caption.txt (NUS-WIDE category family)."""
    for name in CAPTION_FILES:
        if (data_dir / name).is_file():
            return data_dir / name
    return data_dir / CAPTION_FILES[0]


def remap_root(paths: list[str], data_root: str) -> list[str]:
    """Rewrite baked absolute image paths.

    `data_root` is either `OLD=NEW` (replace the prefix OLD by NEW) or a folder that replaces
    the longest directory prefix shared by all paths (e.g. `/home/x/coco/` of
    `/home/x/coco/train2017/1.jpg` and `/home/x/coco/val2017/2.jpg`).
    """
    if "=" in data_root:
        old, new = data_root.split("=", 1)
        return [new + p[len(old):] if p.startswith(old) else p for p in paths]
    common = os.path.commonpath(paths) if len(paths) > 1 else os.path.dirname(paths[0])
    if len(paths) > 1 and all(p == common for p in paths):  # pragma: no cover - duplicate single path
        common = os.path.dirname(common)
    return [os.path.join(data_root, os.path.relpath(p, common)) for p in paths]


def load_pair_table(
    data_dir: str | Path,
    index_file: str | None = None,
    caption_file: str | None = None,
    label_file: str | None = None,
    data_root: str | None = None,
) -> PairTable:
    """Load and cross-check the three files of a prepared dataset.

    Relative image paths are resolved against `data_dir`; explicit file arguments override
    the default names (`index.mat`, `caption.mat` or `caption.txt`, `label.mat`). Class names are
    read from a `classes.txt` in the label file's folder, if there is one.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir() and not (index_file and caption_file and label_file):
        raise UserError(
            f"data folder not found: {data_dir} (prepare the dataset with python -m dataset.make_<name>, "
            "see docs/datasets.md, or pass --data-dir)"
        )
    index_path = Path(index_file) if index_file else data_dir / "index.mat"
    caption_path = Path(caption_file) if caption_file else find_caption_file(data_dir)
    label_path = Path(label_file) if label_file else data_dir / "label.mat"
    paths = read_index(index_path)
    captions = read_captions(caption_path)
    labels = read_labels(label_path)
    sizes = {index_path.name: len(paths), caption_path.name: len(captions), label_path.name: labels.shape[0]}
    if len(set(sizes.values())) != 1:
        listed = ", ".join(f"{name} has {n}" for name, n in sizes.items())
        raise UserError(f"dataset files in {data_dir} disagree on the number of items: {listed}")
    if not paths:
        raise UserError(f"{index_path} holds no items")
    if data_root:
        paths = remap_root(paths, data_root)
    paths = [p if os.path.isabs(p) else os.path.normpath(data_dir / p) for p in paths]
    class_path = label_path.parent / CLASS_FILE
    class_names = read_class_names(class_path, labels.shape[1]) if class_path.is_file() else None
    return PairTable(paths=paths, captions=captions, labels=labels, class_names=class_names)


def _savemat_to(path: Path, variables: dict) -> None:
    with open(path, "wb") as handle:
        sio.savemat(handle, variables)


def write_pair_table(
    save_dir: str | Path,
    paths: Sequence[str],
    captions: Sequence[Sequence[str]],
    labels: np.ndarray,
    label_key: str = "category",
    caption_layout: str = "cells",
    label_dtype: str | np.dtype = np.float32,
    class_names: Sequence[str] | None = None,
) -> None:
    """Write index.mat, caption.mat (or caption.txt), label.mat and, given `class_names`, classes.txt: all
    appear whole, or none changes (a classes.txt of earlier files is removed when no names are given).

    `caption_layout` picks the on-disk form of the captions, all read by :func:`read_captions`
    and by the reference repos' readers of that family:
    "cells" (a cell row, one char matrix of >= 1 captions per item: category-family COCO),
    "column" (an (N, 1) char matrix, first caption per item: category-family MIRFlickr),
    "flat" (N strings, first caption per item: label family),
    "txt" (caption.txt, first caption per item, one line each: category-family NUS-WIDE).
    """
    if not (len(paths) == len(captions) == len(labels)):
        raise ValueError(f"lengths differ: {len(paths)} paths, {len(captions)} captions, {len(labels)} labels")
    if class_names is not None and len(class_names) != np.shape(labels)[1]:
        raise ValueError(f"{len(class_names)} class names for {np.shape(labels)[1]} label columns")
    save_dir = Path(save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    first = [caps[0].replace("\n", " ") if caps else "" for caps in captions]
    staged: list[tuple[Path, Path]] = []  # (temporary file, final name): renamed only when all are written

    def stage(name: str) -> Path:
        fd, tmp = tempfile.mkstemp(dir=save_dir, prefix=f".{name}.", suffix=".partial")
        os.close(fd)
        staged.append((Path(tmp), save_dir / name))
        return Path(tmp)

    try:
        if caption_layout == "txt":
            stage("caption.txt").write_text("".join(line + "\n" for line in first), encoding="utf-8")
        elif caption_layout == "cells":
            cells = np.empty(len(captions), dtype=object)
            for i, caps in enumerate(captions):
                cells[i] = np.array(list(caps) or [""])
            _savemat_to(stage("caption.mat"), {"caption": cells})
        elif caption_layout == "column":
            _savemat_to(stage("caption.mat"), {"caption": np.array(first).reshape(-1, 1)})
        elif caption_layout == "flat":
            _savemat_to(stage("caption.mat"), {"caption": np.array(first)})
        else:
            raise ValueError(f"unknown caption_layout {caption_layout!r}")
        _savemat_to(stage("index.mat"), {"index": np.array(list(paths))})
        _savemat_to(stage("label.mat"), {label_key: np.asarray(labels).astype(label_dtype)})
        if class_names is not None:
            stage(CLASS_FILE).write_text("".join(f"{name}\n" for name in class_names), encoding="utf-8")
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    for other in (*CAPTION_FILES, CLASS_FILE):  # stale files of earlier data would shadow or misname ours
        if other not in {final.name for _, final in staged}:
            (save_dir / other).unlink(missing_ok=True)
    mode = _default_file_mode()
    for tmp, final in staged:
        os.chmod(tmp, mode)
        os.replace(tmp, final)


def _default_file_mode() -> int:
    """The mode a plainly created file gets under the current umask (mkstemp's files are 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask
