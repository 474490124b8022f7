"""The run folder: its files, the rule that a run never destroys another, and the lock of a live run.

A folder holding a finished run (summary.json) or another run's last.pt is refused unless the run resumes it
(`--resume`) or the user asks to replace it (`--overwrite`). A live run holds an OS-level lock on
`run.lock` (released by the OS when the process dies, so a run killed with kill -9 can be resumed), so two
runs cannot share a folder. Every file is written atomically (temporary name, then rename).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io as sio
from filelock import FileLock, Timeout

from utils.checkpoint import save_checkpoint
from utils.config import write_yaml_config
from utils.errors import UserError
from utils.logs import log_to_file, stop_logging_to

LOCK_NAME = "run.lock"
# the files of a run, removed first when --overwrite replaces one
RUN_FILES = ("summary.json", "metrics.jsonl", "train.log", "config.yaml", "best.pt", "last.pt", "codes.mat",
             "pr_curve.png")


class RunFolder:
    """One run's folder: `check()` (no writes), `open()` (create, lock, log, config.yaml), files, `close()`."""

    def __init__(self, path: Path, resume: bool = False, overwrite: bool = False):
        self.path = Path(path)
        self.resume = resume
        self.overwrite = overwrite
        self._lock: FileLock | None = None
        self._log_handler: logging.Handler | None = None

    # ------------------------------------------------------------------ opening
    def check(self) -> None:
        """Refuse a folder this run may not use; writes nothing (called before any work starts)."""
        path = self.path
        if path.exists() and not path.is_dir():
            raise UserError(f"--save-dir {path} is a file, not a folder; choose a folder path")
        if self.resume:
            return
        if not self.overwrite and (path / "summary.json").exists():
            raise UserError(f"{path} holds a finished run (summary.json); choose another --save-dir, or pass "
                            "--overwrite to replace it")
        if not self.overwrite and (path / "last.pt").exists():
            raise UserError(f"{path} holds an unfinished run (last.pt); continue it with --resume {path}, choose "
                            "another --save-dir, or pass --overwrite to replace it")
        parent = next((p for p in (path, *path.parents) if p.exists()), None)
        if parent is not None and not os.access(parent, os.W_OK | os.X_OK):
            raise UserError(f"cannot write to {parent} (for --save-dir {path}); choose a writable folder")

    def open(self, config: Any, method: str) -> None:
        """Create and lock the folder, start train.log, write config.yaml (removing old files on --overwrite)."""
        self.check()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create the run folder {self.path}: {exc.strerror}; choose another "
                            "--save-dir") from None
        lock = FileLock(str(self.path / LOCK_NAME))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise UserError(f"another live run is using {self.path}; wait for it or choose another "
                            "--save-dir") from None
        self._lock = lock
        if self.overwrite and not self.resume:
            for name in RUN_FILES:
                (self.path / name).unlink(missing_ok=True)
        self._log_handler = log_to_file(self.path / "train.log")
        write_yaml_config(config, self.path / "config.yaml", method)

    def close(self) -> None:
        """Stop writing train.log and release the lock (idempotent)."""
        if self._log_handler is not None:
            stop_logging_to(self._log_handler)
            self._log_handler = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # ------------------------------------------------------------------ files
    def file(self, name: str) -> Path:
        return self.path / name

    def append_metrics(self, line: dict[str, Any]) -> None:
        """One evaluation as a line of metrics.jsonl."""
        with open(self.path / "metrics.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(line) + "\n")

    def write_codes(self, codes: dict[str, dict[str, np.ndarray]], primary: str) -> None:
        """codes.mat holds the primary code set; with several sets each also goes to codes-<name>.mat."""
        files = {"codes.mat": codes[primary]}
        if len(codes) > 1:
            files.update({f"codes-{name}.mat": arrays for name, arrays in codes.items()})
        for file_name, arrays in files.items():
            tmp = self.path / f"{file_name}.partial"
            sio.savemat(tmp, arrays)
            tmp.replace(self.path / file_name)

    def write_summary(self, summary: dict[str, Any]) -> None:
        """summary.json, written last: its presence marks a finished run (sweeps skip such cells)."""
        tmp = self.path / "summary.json.partial"
        tmp.write_text(json.dumps(summary, indent=2), encoding="utf-8")
        tmp.replace(self.path / "summary.json")

    def save_checkpoint(self, payload: dict[str, Any], name: str) -> None:
        save_checkpoint(payload, self.path / name)
