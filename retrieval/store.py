"""The index folder: packed codes, ids, paths or texts, labels and a FAISS index per modality, and a manifest.

    INDEX/manifest.json          format, the model (method, bits, run folder, best.pt and its SHA-256), class names,
                                 what was indexed, per modality: count, index kind
    INDEX/images/ and texts/     codes.npy (N, ceil(bits/8)) uint8, ids.npy int64, items.json (absolute image paths
                                 or texts), labels.npy (N, C) uint8 where known, index.faiss
    INDEX/skipped.txt            unreadable images, one "path<TAB>reason" per line (only when there were some)

The folder is written under a temporary name and renamed when complete, so it is whole or absent.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.codes import build_index, read_index, write_index
from utils.errors import UserError

FORMAT = "clip-hashing-index-v1"
MODALITIES = ("images", "texts")
MANIFEST = "manifest.json"
SKIPPED = "skipped.txt"


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelFingerprint:
    """What identifies the model that made the codes: searching with another one is refused."""

    method: str
    bits: int
    run: str  # the run folder
    checkpoint: str  # its best.pt
    checkpoint_sha256: str

    @classmethod
    def of(cls, model: Any) -> "ModelFingerprint":
        """The fingerprint of a loaded `train.inference.TrainedModel`."""
        checkpoint = Path(model.checkpoint).resolve()
        return cls(model.method, int(model.bits), str(checkpoint.parent), str(checkpoint), file_sha256(checkpoint))

    def describe(self) -> str:
        return f"{self.method}, {self.bits} bits, {self.checkpoint} (sha256 {self.checkpoint_sha256[:12]})"

    def check_same(self, other: "ModelFingerprint", index_dir: Path) -> None:
        """UserError unless `other` is the same model with the same code length."""
        if self.bits != other.bits or self.method != other.method or self.checkpoint_sha256 != other.checkpoint_sha256:
            raise UserError(f"{index_dir} was built by another model ({self.describe()}) than the one given "
                            f"({other.describe()}); search with the model that built it or index again")


@dataclass
class Part:
    """The indexed items of one modality."""

    ids: np.ndarray  # int64 (N,): dataset row, position in the sorted image list, or line of the texts file
    items: list[str]  # absolute image paths or texts
    codes: np.ndarray  # packed uint8 (N, ceil(bits / 8))
    labels: np.ndarray | None  # uint8 (N, C) multi-hot, or None
    index: Any = None  # the FAISS index; built on write when absent

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class IndexFolder:
    """An opened index folder: its manifest and, loaded on demand, each modality's part."""

    path: Path
    manifest: dict[str, Any]

    @property
    def fingerprint(self) -> ModelFingerprint:
        return ModelFingerprint(**self.manifest["model"])

    @property
    def class_names(self) -> list[str] | None:
        return self.manifest.get("class_names")

    @property
    def modalities(self) -> list[str]:
        return [m for m in MODALITIES if m in self.manifest["parts"]]

    def load(self, modality: str) -> Part:
        """The part of `modality` ("images" or "texts") with its FAISS index."""
        folder = self.path / modality
        try:
            labels = np.load(folder / "labels.npy") if (folder / "labels.npy").is_file() else None
            return Part(ids=np.load(folder / "ids.npy"), items=json.loads((folder / "items.json").read_text("utf-8")),
                        codes=np.load(folder / "codes.npy"), labels=labels,
                        index=read_index(str(folder / "index.faiss")))
        except (OSError, ValueError, RuntimeError) as exc:
            raise UserError(f"{folder} is damaged ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
                            "index the collection again") from None


def open_index(path: str | Path) -> IndexFolder:
    """The index folder at `path`; UserError if it is not one."""
    path = Path(path)
    manifest_file = path / MANIFEST
    if not manifest_file.is_file():
        raise UserError(f"{path} is not an index folder (no {MANIFEST}); build one with python -m retrieval.index")
    try:
        manifest = json.loads(manifest_file.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {manifest_file}: {exc}; index the collection again") from None
    if manifest.get("format") != FORMAT:
        raise UserError(f"{path} holds an index of format {manifest.get('format')!r}, not {FORMAT!r}; "
                        "index the collection again")
    return IndexFolder(path, manifest)


def write_index_folder(out: str | Path, fingerprint: ModelFingerprint, parts: dict[str, Part],
                       class_names: list[str] | None, source: dict[str, Any], index_kind: str,
                       skipped: list[tuple[str, str]], overwrite: bool = False) -> Path:
    """Write an index folder atomically (a temporary sibling renamed at the end); returns its path."""
    out = Path(out)
    check_output_folder(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        manifest = {"format": FORMAT, "model": asdict(fingerprint), "class_names": class_names, "source": source,
                    "parts": {}, "skipped": len(skipped)}
        for modality, part in parts.items():
            folder = tmp / modality
            folder.mkdir(parents=True)
            np.save(folder / "codes.npy", part.codes)
            np.save(folder / "ids.npy", part.ids.astype(np.int64))
            (folder / "items.json").write_text(json.dumps(part.items, ensure_ascii=False), "utf-8")
            if part.labels is not None:
                np.save(folder / "labels.npy", part.labels.astype(np.uint8))
            index = part.index if part.index is not None else build_index(part.codes, index_kind)
            write_index(index, str(folder / "index.faiss"))
            manifest["parts"][modality] = {"count": len(part), "index": index_kind}
        if skipped:
            (tmp / SKIPPED).write_text("".join(f"{path}\t{reason}\n" for path, reason in skipped), "utf-8")
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False), "utf-8")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def check_output_folder(out: Path, overwrite: bool) -> None:
    """UserError unless `out` is absent, an empty folder, or (with `overwrite`) an index folder."""
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    if not out.is_dir():
        raise UserError(f"--out {out} is a file; choose a folder name")
    if not (out / MANIFEST).is_file():
        raise UserError(f"--out {out} is a folder that is not an index; choose a new or empty folder")
    if not overwrite:
        raise UserError(f"--out {out} holds an index already; add --overwrite to replace it, or choose another folder")
