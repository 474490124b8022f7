"""Text files read as UTF-8, or refused with one line naming the file and the first undecodable byte."""
from __future__ import annotations

from pathlib import Path

from utils.errors import UserError


def read_utf8(path: str | Path, what: str) -> str:
    """The text of `path` (UTF-8, a leading byte-order mark dropped); a UserError if it is not UTF-8.

    No other encoding is guessed: a Latin-1 or GBK file would decode to wrong characters without an error,
    so the message says where the first bad byte is and how to convert the file.
    """
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise UserError(f"{what} {path} is not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start} "
                        f"(line {line}); convert it, e.g. iconv -f latin1 -t utf-8") from None
