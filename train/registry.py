"""`--method NAME` -> trainer class. Each method is a folder `train/<NAME>/` whose package exposes `Trainer`.

Methods are imported only when asked for, so a broken method folder breaks only itself. A folder's
`__init__.py` may declare other names for the method, `ALIASES = ("NAME", ...)`, read without importing it
(e.g. a paper acronym that differs from another method's only in case, whose folder therefore has a
case-distinct name). `python -m train.registry NAME...` prints the canonical (folder) names.
"""
from __future__ import annotations

import ast
import difflib
import importlib
import sys
import traceback
from pathlib import Path

from utils.errors import UserError

TRAIN_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = TRAIN_DIR.parent


def _folders() -> list[str]:
    return [p.name for p in TRAIN_DIR.iterdir() if (p / "__init__.py").is_file()]


def available_methods() -> list[str]:
    """Names of the method folders (those starting with "_", like _template, are examples, not listed)."""
    return sorted((name for name in _folders() if not name.startswith("_")), key=str.lower)


def declared_aliases(folder: str) -> tuple[str, ...]:
    """The `ALIASES` tuple of `train/<folder>/__init__.py` (string literals only), without importing it."""
    tree = ast.parse((TRAIN_DIR / folder / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "ALIASES" for t in node.targets):
            value = ast.literal_eval(node.value)
            if not isinstance(value, (tuple, list)) or not all(isinstance(v, str) for v in value):
                raise UserError(f"train/{folder}/__init__.py: ALIASES must be a tuple of strings")
            return tuple(value)
    return ()


def _names() -> dict[str, str]:
    """Every name a method answers to -> its folder (folder names first: an alias never shadows a folder)."""
    folders = _folders()
    names = {alias: folder for folder in folders for alias in declared_aliases(folder)}
    names.update({folder: folder for folder in folders})
    return names


def canonical_name(name: str) -> str:
    """The folder of method `name`: exact folder or alias, else a unique case-insensitive match."""
    names = _names()
    if name in names:
        return names[name]
    matches = sorted({spelling for spelling in names if spelling.lower() == name.lower()})
    if len({names[m] for m in matches}) == 1:
        return names[matches[0]]
    if matches:
        described = [m if names[m] == m else f"{m} ({names[m]})" for m in matches]
        raise UserError(f"method name {name!r} is ambiguous: {' and '.join(described)} differ only in case; "
                        "spell it exactly")
    suggestion = difflib.get_close_matches(name, available_methods(), n=1)
    hint = f" (did you mean {suggestion[0]}?)" if suggestion else ""
    raise UserError(f"unknown method {name!r}{hint}; available: {', '.join(available_methods())}")


def _is_project_module(module: str) -> bool:
    """Whether `module` (dotted) lives in this repository rather than in an installed package."""
    top = module.split(".")[0]
    return (PROJECT_ROOT / top).is_dir() or (PROJECT_ROOT / f"{top}.py").is_file()


def load_method(name: str) -> type:
    """The trainer class of method `name` (a folder name or alias; case-insensitive where unambiguous).

    A package missing from this Python (torch, numpy, ...) is reported as such, not as the method's failure."""
    folder = canonical_name(name)
    try:
        module = importlib.import_module(f"train.{folder}")
    except ModuleNotFoundError as exc:
        if exc.name and not _is_project_module(exc.name):
            raise UserError(f"{exc.name.split('.')[0]} is not installed in this Python ({sys.executable}); install "
                            "the requirements into it (pip install -r requirements.txt) or run the Python of the "
                            "project's environment") from None
        raise _import_failure(folder, exc) from None
    except Exception as exc:
        raise _import_failure(folder, exc) from None
    trainer = getattr(module, "Trainer", None)
    if trainer is None:
        raise UserError(f"train/{folder}/__init__.py must expose the method's trainer class as `Trainer`")
    return trainer


def _import_failure(folder: str, exc: Exception) -> UserError:
    where = traceback.extract_tb(exc.__traceback__)[-1]
    return UserError(f"method {folder} failed to import: {type(exc).__name__}: {exc} "
                     f"({Path(where.filename).name}:{where.lineno}); other methods are unaffected")


def main(argv: list[str] | None = None) -> int:
    """Print the canonical name of each NAME (one per line); exit 2 with a one-line error for an unknown one."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print("usage: python -m train.registry NAME...  (prints each method's canonical name)", file=sys.stderr)
        return 2
    try:
        print("\n".join(canonical_name(name) for name in argv))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
