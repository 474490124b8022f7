"""`--method NAME` -> trainer class. Each method is a folder `train/<NAME>/` whose package exposes `Trainer`.

Methods are imported only when asked for, so a broken method folder breaks only itself.
"""
from __future__ import annotations

import difflib
import importlib
import traceback
from pathlib import Path

from utils.errors import UserError

TRAIN_DIR = Path(__file__).resolve().parent


def available_methods() -> list[str]:
    """Names of the method folders (those starting with "_", like _template, are examples, not listed)."""
    return sorted((p.name for p in TRAIN_DIR.iterdir() if (p / "__init__.py").is_file() and not p.name.startswith("_")),
                  key=str.lower)


def _folder_for(name: str) -> str:
    folders = [p.name for p in TRAIN_DIR.iterdir() if (p / "__init__.py").is_file()]
    if name in folders:
        return name
    matches = [f for f in folders if f.lower() == name.lower()]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise UserError(f"method name {name!r} is ambiguous: {' and '.join(sorted(matches))} differ only in case; "
                        "spell it exactly")
    suggestion = difflib.get_close_matches(name, available_methods(), n=1)
    hint = f" (did you mean {suggestion[0]}?)" if suggestion else ""
    raise UserError(f"unknown method {name!r}{hint}; available: {', '.join(available_methods())}")


def load_method(name: str) -> type:
    """The trainer class of method `name` (case-insensitive)."""
    folder = _folder_for(name)
    try:
        module = importlib.import_module(f"train.{folder}")
    except Exception as exc:
        where = traceback.extract_tb(exc.__traceback__)[-1]
        raise UserError(f"method {folder} failed to import: {type(exc).__name__}: {exc} "
                        f"({Path(where.filename).name}:{where.lineno}); other methods are unaffected") from None
    trainer = getattr(module, "Trainer", None)
    if trainer is None:
        raise UserError(f"train/{folder}/__init__.py must expose the method's trainer class as `Trainer`")
    return trainer
