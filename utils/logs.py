"""Run logging: one logger writing to the console and, once the run folder exists, to train.log."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

LOGGER_NAME = "hashing"


class _ConsoleHandler(logging.StreamHandler):
    """Writes to whatever `sys.stdout` is when a record comes (tests and notebooks replace it)."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:
        pass


def get_logger() -> logging.Logger:
    """The framework's logger, with a console handler on first use."""
    logger = logging.getLogger(LOGGER_NAME)
    if not any(isinstance(h, _ConsoleHandler) for h in logger.handlers):
        handler = _ConsoleHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


def log_to_file(path: Path) -> logging.Handler:
    """Also write the framework's log to `path` (appending, for --resume); returns the handler."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    get_logger().addHandler(handler)
    return handler


def stop_logging_to(handler: logging.Handler) -> None:
    """Detach and close a handler added by :func:`log_to_file` (a later run must not write into this file)."""
    get_logger().removeHandler(handler)
    handler.close()
