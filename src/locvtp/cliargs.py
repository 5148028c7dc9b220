"""Argument parsing shared by every command: one-line usage errors and checked ranges.

Why: a range mistake (``--steps -1``, ``--nms 5``, ``--top-k 0``) must be refused where the argument is parsed,
with the argument's name, not deep inside a run or — worse — accepted. argparse prints its whole usage block
before the error; our commands print only ``locvtp CMD: error: argument --x: ... (see locvtp CMD --help)``.
"""
from __future__ import annotations

import argparse
import math
import sys
from typing import Callable, NoReturn, Optional


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line on stderr (exit code 2)."""

    def error(self, message: str) -> NoReturn:
        message = " ".join(message.split())
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """``--help`` with an option's default appended when it says something.

    Why not ``argparse.ArgumentDefaultsHelpFormatter``: it appends ``(default: None)`` / ``(default: False)`` to
    every option, and a second ``(default: ...)`` to a help text that already states its default in words
    (``video directory (default: DATA/videos) (default: None)``)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        d = action.default
        silent = (not action.option_strings or d is None or d is False or d == [] or d is argparse.SUPPRESS
                  or "default" in text.lower())
        if silent:
            return text
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"


def _number(kind: type, text: str) -> float:
    try:
        v = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}")
    if isinstance(v, float) and not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return v


def ranged(kind: type, low: float | None = None, high: float | None = None, low_open: bool = False,
           high_open: bool = False) -> Callable[[str], float]:
    """An argparse ``type`` accepting ``kind`` values in the interval (bounds open or closed)."""
    lo_txt = "" if low is None else ("> " if low_open else ">= ") + f"{low:g}"
    hi_txt = "" if high is None else ("< " if high_open else "<= ") + f"{high:g}"
    rule = " and ".join(t for t in (lo_txt, hi_txt) if t)

    def parse(text: str) -> float:
        v = _number(kind, text)
        bad_low = low is not None and (v <= low if low_open else v < low)
        bad_high = high is not None and (v >= high if high_open else v > high)
        if bad_low or bad_high:
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text}")
        return v

    parse.__name__ = f"{kind.__name__} ({rule})"
    return parse


positive_int = ranged(int, 0, low_open=True)
nonnegative_int = ranged(int, 0)
positive_float = ranged(float, 0.0, low_open=True)
nonnegative_float = ranged(float, 0.0)
fraction = ranged(float, 0.0, 1.0)  # an IoU threshold, a proportion


_COMMAND: list[str] = []  # the command this process runs, set once by locvtp.cli


def set_command(name: Optional[str]) -> Optional[str]:
    """Record which ``locvtp`` command runs (``locvtp.cli``, for the command's duration; None: none); returns the
    previous one, to restore."""
    previous = _COMMAND[0] if _COMMAND else None
    _COMMAND[:] = [] if name is None else [name]
    return previous


def current_prog() -> str:
    """``locvtp CMD`` for the command this process runs, ``locvtp`` outside the command line. Why: library code
    (a config loader shared by several commands) warns as ``locvtp CMD: warning: ...`` without knowing its caller."""
    return f"locvtp {_COMMAND[0]}" if _COMMAND else "locvtp"


def warn(prog: str, message: str) -> None:
    """A one-line warning on stderr, for a result that is returned but may not mean what it seems."""
    print(f"{prog}: warning: {' '.join(message.split())}", file=sys.stderr)


__all__ = ["ArgumentParser", "DefaultsHelpFormatter", "fraction", "nonnegative_float", "nonnegative_int", "positive_float", "positive_int",
           "current_prog", "ranged", "set_command", "warn"]
