"""The package's error types: what the command line reports as one line instead of a stack trace.

Why a common base: ``locvtp.cli`` catches :class:`LocVTPError` (and the user-caused OS errors) around every
command and prints ``locvtp CMD: error: MESSAGE`` — one line that names the file, key or argument — with exit
code 2 for a usage mistake and 1 for a failure. Anything else is a bug and keeps its traceback. Every error type
of the package derives from :class:`LocVTPError`; each also keeps the builtin base it always had (``ValueError``,
``OSError``, ...), so ``except ValueError`` in user code still works.
"""
from __future__ import annotations


class LocVTPError(Exception):
    """A failure the user can act on; the message must name the file, key or argument concerned."""

    exit_code = 1


class UsageError(LocVTPError, ValueError):
    """A bad argument, config value or choice of paths (exit code 2, like argparse's own errors)."""

    exit_code = 2


class OutputBusyError(LocVTPError, RuntimeError):
    """Another process holds the lock on the output this command was asked to write."""


class NotOwnedError(UsageError):
    """An output path holds something this command did not write, so it will not delete or replace it."""


class OutputError(LocVTPError, OSError):
    """An output cannot be written where the user asked (its folder is a file, read-only, full, ...): the message
    names the user's output path and the cause, never a hidden temporary or lock file of ours."""


class NonFiniteFeaturesError(LocVTPError, ValueError):
    """A feature file holds NaN or infinite values for a video (the message names the file and the video)."""


__all__ = ["LocVTPError", "NonFiniteFeaturesError", "NotOwnedError", "OutputBusyError", "OutputError",
           "UsageError"]
