"""Streaming the members of a huge top-level JSON object, one at a time, in bounded memory.

Why: HowTo100M's ``caption.json`` is one 7–8 GB object ``{video_id: {...}, ...}``. ``json.load`` would hold it,
and every narration as Python objects, at once. :func:`iter_object_members` reads it in chunks and hands out
``(key, value, resume_at)`` one member at a time, decoding each value with the standard library's C decoder
(``JSONDecoder.raw_decode``), so the result equals ``json.loads`` member by member. ``resume_at`` is the byte
offset just after the member: passing it back as ``start`` continues there (a killed conversion resumes).

Text is decoded as UTF-8 with ``surrogateescape`` (invalid bytes survive as lone surrogates, which the readers
report per record) and a leading byte-order mark is skipped, as :mod:`locvtp.data.formats` does for small files.
A syntax error raises :class:`JSONStreamError` with the line and column ``json.loads`` would report.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

_WS = " \t\n\r"
_NUMBER_TAIL = frozenset("0123456789.eE+-")
_DECODER = json.JSONDecoder()


class NotAnObjectError(TypeError):
    """The file's top-level value is not an object (it holds no members to stream)."""


class JSONStreamError(ValueError):
    """Malformed JSON: ``lineno``/``colno`` are 1-based, counted from the start of the file."""

    def __init__(self, msg: str, lineno: int, colno: int):
        super().__init__(f"line {lineno} column {colno}: {msg}")
        self.msg, self.lineno, self.colno = msg, lineno, colno


class _Reader:
    """A text window over the file: ``buf[pos:]`` is unread. ``mark`` is the end of the last complete member;
    ``byte_at_mark`` its byte offset in the file (what a resume seeks to), ``lines``/``col`` its line count and
    column (for error positions). The window drops what lies before ``mark`` once that exceeds a chunk, so memory
    stays at a few chunks whatever the file size."""

    def __init__(self, path: Path, start: int, chunk_bytes: int, max_value_bytes: int):
        self.fh = open(path, "rb")
        self.fh.seek(start)
        self.chunk, self.max_value = chunk_bytes, max_value_bytes
        self.buf, self.pos, self.mark = "", 0, 0
        self.eof = False
        self.byte_at_mark = start
        self.lines, self.col = 0, 0  # newlines before mark (counted from `start`), chars after the last one
        self._pending = b""  # an incomplete UTF-8 sequence at the end of the last chunk

    def close(self) -> None:
        self.fh.close()

    def more(self) -> bool:
        if self.eof:
            return False
        data = self.fh.read(self.chunk)
        if not data:
            self.eof = True
            if self._pending:
                self.buf += self._pending.decode("utf-8", errors="surrogateescape")
                self._pending = b""
            return False
        data = self._pending + data
        cut = len(data)
        for k in range(1, min(4, len(data)) + 1):  # keep back a multi-byte sequence cut by the chunk edge
            b = data[-k]
            if b & 0xC0 == 0x80:
                continue
            need = 2 if b & 0xE0 == 0xC0 else 3 if b & 0xF0 == 0xE0 else 4 if b & 0xF8 == 0xF0 else 1
            if k < need:
                cut = len(data) - k
            break
        self._pending = data[cut:]
        if self.mark > self.chunk:  # drop what lies before the last member boundary
            self.buf, self.pos, self.mark = self.buf[self.mark:], self.pos - self.mark, 0
        self.buf += data[:cut].decode("utf-8", errors="surrogateescape")
        return True

    def peek(self) -> str:
        while True:
            n = len(self.buf)
            while self.pos < n and self.buf[self.pos] in _WS:
                self.pos += 1
            if self.pos < n:
                return self.buf[self.pos]
            if not self.more():
                return ""

    def decode(self) -> Any:
        """The JSON value at ``pos`` (reading on while it is cut by the end of the window)."""
        while True:
            try:
                value, end = _DECODER.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                if len(self.buf) - self.pos < self.max_value and self.more():
                    continue
                raise self.error(exc.msg, exc.pos) from None
            if (isinstance(value, (int, float)) and (end >= len(self.buf) or self.buf[end] in _NUMBER_TAIL)
                    and len(self.buf) - self.pos < self.max_value and self.more()):
                continue  # a number may go on in the next chunk ("1" of "1.5", "1e" of "1e-3")
            self.pos = end
            return value

    def advance_mark(self) -> None:
        """``pos`` is a member boundary: move the mark there."""
        seg = self.buf[self.mark:self.pos]
        self.byte_at_mark += len(seg.encode("utf-8", errors="surrogateescape"))
        nl = seg.count("\n")
        if nl:
            self.lines += nl
            self.col = len(seg) - seg.rfind("\n") - 1
        else:
            self.col += len(seg)
        self.mark = self.pos

    def error(self, msg: str, pos: int | None = None) -> JSONStreamError:
        pos = self.pos if pos is None else pos
        seg = self.buf[self.mark:pos]
        nl = seg.count("\n")
        col = (len(seg) - seg.rfind("\n")) if nl else (self.col + len(seg) + 1)
        return JSONStreamError(msg, self.lines + nl + 1, col)


def iter_object_members(path: str | Path, start: int = 0, chunk_bytes: int = 1 << 22,
                        max_value_bytes: int = 1 << 28) -> Iterator[tuple[str, Any, int]]:
    """``(key, value, resume_at)`` for each member of the file's top-level object, in file order.

    ``start=0`` reads from the beginning (``{`` expected, after an optional BOM); ``start=resume_at`` of an
    earlier member continues after it (error positions are then counted from there). Raises
    :class:`JSONStreamError` on malformed JSON (including a value over ``max_value_bytes``) and :class:`NotAnObjectError`
    when the top level is not an object.
    """
    r = _Reader(Path(path), start, chunk_bytes, max_value_bytes)
    try:
        first = start == 0
        if first:
            r.more()
            if r.buf.startswith("\ufeff"):  # a byte-order mark is not part of the document (nor of its columns)
                r.pos = r.mark = 1
                r.byte_at_mark += 3
            c = r.peek()
            if c != "{":
                if c == "":
                    raise r.error("Expecting value")
                raise NotAnObjectError(f"top level is {type(r.decode()).__name__}, not an object")
            r.pos += 1
        while True:
            c = r.peek()
            if c == "}":
                r.pos += 1
                if r.peek() != "":
                    raise r.error("Extra data")
                return
            if not first:
                if c != ",":
                    raise r.error("Expecting ',' delimiter")
                r.pos += 1
                c = r.peek()
            if c != '"':
                raise r.error("Expecting property name enclosed in double quotes")
            key = r.decode()
            if r.peek() != ":":
                raise r.error("Expecting ':' delimiter")
            r.pos += 1
            if r.peek() == "":
                raise r.error("Expecting value")
            value = r.decode()
            r.advance_mark()
            first = False
            yield key, value, r.byte_at_mark
    finally:
        r.close()


__all__ = ["JSONStreamError", "NotAnObjectError", "iter_object_members"]
