"""Checkpoint files: written atomically, read with a clear error for a wrong or broken file."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from utils.errors import UserError

FORMAT = "clip-hashing-checkpoint-v1"


def save_checkpoint(payload: dict[str, Any], path: Path) -> None:
    """torch.save to a temporary file in the same folder, then rename: the file is whole or absent."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".pt.partial")
    os.close(fd)
    try:
        torch.save({"format": FORMAT, **payload}, tmp)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint written by :func:`save_checkpoint` (a run folder is accepted for its last.pt)."""
    path = Path(path)
    if path.is_dir():
        path = path / "last.pt"
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as exc:
        raise UserError(f"cannot read checkpoint {path}: {type(exc).__name__} (is the file complete?)") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError(f"{path} is not a checkpoint of this framework (best.pt / last.pt of a run folder)")
    return payload
