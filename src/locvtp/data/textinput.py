"""The one reader of a user's small text inputs: list files, id lists, query files, query arguments.

Why a module of its own: a UTF-8 byte-order mark (what Notepad, Excel's "CSV UTF-8" and PowerShell put in front of
a file) is invisible in a terminal, and every reader that kept it lost the first entry (``extract`` looked for
``lists/\\ufeff/data/a.mp4``; ``index --videos`` and ``search --queries`` kept it in the first id / query, which then
matched nothing). Every text input of the package goes through :func:`strip_bom` (the annotation readers of
:mod:`locvtp.data.formats` included), so the mark is dropped once, the same way, everywhere: at the start of the
text and at the start of each line (files joined with ``cat`` carry one per part).
"""
from __future__ import annotations

from pathlib import Path

from locvtp.errors import UsageError

BOM = "\ufeff"


def strip_bom(text: str) -> str:
    """``text`` without the byte-order marks in front of it (a query argument, an id, one line of a file)."""
    return text.lstrip(BOM)


def read_text_input(path: str | Path, flag: str, expected: str = "one entry per line") -> str:
    """The text of a user's file named by ``flag``, decoded as UTF-8 without byte-order marks (at the start of
    the file and of every line). A missing file, a directory or a file that is not UTF-8 is one
    :class:`~locvtp.errors.UsageError` naming ``flag`` and the file."""
    p = Path(path)
    if not p.exists():
        raise UsageError(f"{flag} {p}: no such file")
    if p.is_dir():
        raise UsageError(f"{flag} {p} is a directory: expected a text file with {expected}")
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{flag} {p}: not UTF-8 text ({exc.reason} at byte {exc.start}); expected {expected}"
                         ) from None
    return "\n".join(strip_bom(ln) for ln in text.split("\n"))


def read_lines(path: str | Path, flag: str, comments: bool = False) -> list[str]:
    """Non-empty, stripped lines of a user's text file (:func:`read_text_input`); ``comments``: lines starting with
    ``#`` are dropped too."""
    lines = [ln.strip() for ln in read_text_input(path, flag).splitlines()]
    return [ln for ln in lines if ln and not (comments and ln.startswith("#"))]


__all__ = ["BOM", "read_lines", "read_text_input", "strip_bom"]
