"""Checkpoint files: written atomically, read without running code, with a clear error for a wrong file.

A checkpoint is read with `torch.load(weights_only=True)`: PyTorch's restricted unpickler builds tensors,
containers and plain values and refuses anything else, so a crafted `.pt` cannot run code. What
:func:`save_checkpoint` writes is therefore limited to those types (it checks before renaming the file into
place); NumPy's RNG state is stored as a tensor (`utils.seed`). docs/trust.md says what each loader trusts.
"""
from __future__ import annotations

import os
import re
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any, Sequence

import torch

from utils.errors import UserError

FORMAT = "clip-hashing-checkpoint-v1"
REQUIRED_KEYS = ("method", "config", "model")  # entries every checkpoint has


def save_checkpoint(payload: dict[str, Any], path: Path) -> None:
    """torch.save to a temporary file in the same folder, then rename: the file is whole or absent.

    Raises TypeError (a programming error, not a user error) when the payload holds a type that
    `torch.load(weights_only=True)` refuses, e.g. a NumPy array in a method's `extra_state()`.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".pt.partial")
    os.close(fd)
    try:
        torch.save({"format": FORMAT, **payload}, tmp)
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(tmp)
        if unsafe:
            raise TypeError(f"checkpoint payload holds types that do not load with weights_only=True: "
                            f"{', '.join(sorted(unsafe))}; store tensors and plain Python values instead")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def is_torchscript_archive(path: str | Path) -> bool:
    """True for a zip written by `torch.jit.save` (it holds `constants.pkl` and `code/`, unlike `torch.save`)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.count("/") == 1 and name.endswith("/constants.pkl") for name in archive.namelist())
    except zipfile.BadZipFile:
        return False


def load_checkpoint(path: str | Path, require: Sequence[str] = ()) -> dict[str, Any]:
    """A checkpoint written by :func:`save_checkpoint` (a run folder is accepted for its last.pt).

    It must hold `method`, `config` (a dict) and `model` (a dict) and every entry named in `require`
    (e.g. what --resume reads); otherwise a one-line UserError.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "last.pt"
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    not_ours = f"{path} is not a checkpoint of this framework (best.pt / last.pt of a run folder)"
    if is_torchscript_archive(path):
        raise UserError(f"{not_ours}: it is a TorchScript archive (CLIP weights go to --clip-path)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. about the pickle protocol: the error below says what matters
            payload = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        refused = refused_global(exc)
        if refused:
            raise UserError(f"{not_ours}: it holds objects other than tensors and plain values ({refused}), which "
                            "are never loaded because unpickling them can run code") from None
        raise UserError(f"cannot read checkpoint {path}: {type(exc).__name__} (is the file complete?)") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError(not_ours)
    required = (*REQUIRED_KEYS, *require)
    missing = [key for key in required if key not in payload]
    if missing or not isinstance(payload["model"], dict) or not isinstance(payload["config"], dict):
        what = f"no {', '.join(missing)} entry" if missing else "a model or config entry that is not a dict"
        raise UserError(f"{path} is a damaged checkpoint ({what}); use another best.pt / last.pt")
    return payload


def refused_global(exc: Exception) -> str | None:
    """The name PyTorch's weights-only unpickler refused (e.g. `posix.system`), or None for another failure."""
    found = re.search(r"GLOBAL (\S+)", str(exc))
    return found.group(1).rstrip(".") if found else None
