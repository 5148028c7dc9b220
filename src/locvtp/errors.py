"""The package's error types: what the command line reports as one line instead of a stack trace.

Why a common base: ``locvtp.cli`` catches :class:`LocVTPError` (and the user-caused OS errors) around every
command and prints ``locvtp CMD: error: MESSAGE`` — one line that names the file, key or argument — with exit
code 2 for a usage mistake and 1 for a failure. Anything else is a bug and keeps its traceback. Every error type
of the package derives from :class:`LocVTPError`; each also keeps the builtin base it always had (``ValueError``,
``OSError``, ...), so ``except ValueError`` in user code still works.
"""
from __future__ import annotations

import contextlib
import errno as _errno
import os
import re
import sys
from typing import Iterator, Optional


class LocVTPError(Exception):
    """A failure the user can act on; the message must name the file, key or argument concerned."""

    exit_code = 1


class UsageError(LocVTPError, ValueError):
    """A bad argument, config value or choice of paths (exit code 2, like argparse's own errors)."""

    exit_code = 2


class TokenizerError(LocVTPError, ValueError):
    """A tokenizer file or a text cannot be used (the message names the file, or the text's index)."""


class OutputBusyError(LocVTPError, RuntimeError):
    """Another process holds the lock on the output this command was asked to write."""


class NotOwnedError(UsageError):
    """An output path holds something this command did not write, so it will not delete or replace it."""


class NonFiniteFeaturesError(LocVTPError, ValueError):
    """A feature file holds NaN or infinite values for a video (the message names the file and the video)."""


# What an errno means, in the words a user reads in the one-line error (os.strerror is terse, "[Errno 40] Too
# many levels of symbolic links" says nothing of a loop).
_OS_WORDS = {
    _errno.ENOENT: "no such file or directory",
    _errno.ENOTDIR: "a part of this path is a file, not a directory",
    _errno.EISDIR: "is a directory, not a file",
    _errno.EEXIST: "already exists",
    _errno.EACCES: "permission denied",
    _errno.EPERM: "operation not permitted",
    _errno.ENOSPC: "no space left on the device",
    _errno.EDQUOT: "disk quota exceeded",
    _errno.EROFS: "read-only file system",
    _errno.ELOOP: "a symbolic link that loops back to itself",
    _errno.EFBIG: "file too large (a file-size limit of the file system or of this process)",
    _errno.ENAMETOOLONG: "file name too long",
    _errno.EIO: "input/output error (a failing disk or network file system)",
    _errno.EMFILE: "too many open files in this process",
    _errno.ENFILE: "too many open files on the system",
    _errno.EXDEV: "not on the same file system",
    _errno.ENOTEMPTY: "directory not empty",
}
# Errnos that say something about the machine (disk, permissions, limits), not about the package's code: reported
# as one line even when the library that raised them gave no file name.
ENVIRONMENT_ERRNOS = frozenset({
    _errno.ENOSPC, _errno.EDQUOT, _errno.EROFS, _errno.EFBIG, _errno.EIO, _errno.EACCES, _errno.EPERM,
    _errno.EMFILE, _errno.ENFILE, _errno.ELOOP, _errno.ENAMETOOLONG,
})
_C_ERRNO = re.compile(r"errno\s*=\s*(\d+)")


def os_error_words(err: Optional[int], fallback: str = "") -> str:
    """The meaning of ``err`` in words, with its symbolic name (``no space left on the device (ENOSPC)``)."""
    if not err:
        return fallback or "an operating-system error"
    words = _OS_WORDS.get(err) or (fallback or os.strerror(err)).lower()
    return f"{words} ({_errno.errorcode.get(err, f'errno {err}')})"


def os_errno(exc: BaseException) -> Optional[int]:
    """The errno of an OS failure: ``exc.errno``, or the ``errno = N`` HDF5 puts in the text of the ``OSError``
    / ``RuntimeError`` h5py raises for a failed write (its errors carry no errno attribute)."""
    err = getattr(exc, "errno", None)
    if isinstance(err, int) and err > 0:
        return err
    if isinstance(exc, (OSError, RuntimeError)):
        m = _C_ERRNO.search(str(exc))
        if m and int(m.group(1)) in _errno.errorcode:
            return int(m.group(1))
    return None


def user_path(filename: object) -> str:
    """The path to name for an OS error: a hidden temporary (``.f.h5.tmp-12-ab12cd34``) or lock (``.f.h5.lock``) of
    an output is reported as the output itself (``f.h5``), which is what the user passed."""
    from pathlib import Path

    from locvtp.tempnames import temporary_of

    p = Path(os.fsdecode(filename)) if isinstance(filename, (str, bytes, os.PathLike)) else Path(str(filename))
    name = temporary_of(p.name)
    if name is None and p.name.startswith(".") and p.name.endswith(".lock") and len(p.name) > 6:
        name = p.name[1:-5]
    return str(p.with_name(name)) if name else str(p)


def describe_os_error(exc: BaseException) -> str:
    """``PATH: what the errno means (ENAME)`` (``PATH -> PATH2`` for a rename), or the meaning alone when the
    error names no file. ``EEXIST`` on a file is what ``mkdir`` of a path through a file raises: said so."""
    err = os_errno(exc)
    strerror = getattr(exc, "strerror", None) or ""
    words = os_error_words(err, strerror) if err else (strerror or str(exc))
    if err and strerror and strerror != os.strerror(err):  # a message of its own (not the C library's): keep it
        words = f"{strerror} ({_errno.errorcode.get(err, f'errno {err}')})"
    name = getattr(exc, "filename", None)
    if name is None:
        return words
    where = user_path(name)
    if err == _errno.EEXIST and os.path.lexists(where) and not os.path.isdir(where):
        words = "is a file (or link), where a directory is needed (EEXIST)"
    if getattr(exc, "filename2", None) is not None:
        where += f" -> {user_path(exc.filename2)}"  # type: ignore[attr-defined]
    return f"{where}: {words}"


def broken_link(path: "str | os.PathLike[str]") -> str:
    """Why ``path`` cannot be followed when it is a symbolic link that loops or points to nothing ("" otherwise).
    Why: ``Path.exists()`` is False for both, and "not found" sends the user looking for a file that is there."""
    if not os.path.islink(path):
        return ""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == _errno.ENOENT:
            return f"dangling symbolic link (its target {os.readlink(path)} does not exist)"
        return os_error_words(exc.errno, exc.strerror or "")
    return ""


class OutputError(LocVTPError, OSError):
    """The OS refused a write to an output (no space, read-only, no permission, ...): the message names the user's
    argument (``--out feats.h5``), not only the hidden temporary or lock file the failing call happened to touch.
    ``detail``: what failed (:func:`describe_os_error`), ``note``: what the user can do / what was kept."""

    def __init__(self, err: int, path: "str | os.PathLike[str]", flag: Optional[str] = None, note: str = "",
                 detail: str = ""):
        OSError.__init__(self, err, os_error_words(err), str(path))
        self.flag, self.note, self.detail = flag, note, detail

    def __str__(self) -> str:
        where = f"{self.flag} {self.filename}" if self.flag else str(self.filename)
        what = self.detail or self.strerror
        if what.startswith(f"{self.filename}: "):
            what = what[len(f"{self.filename}: "):]
        return f"{where}: cannot write: {what}" + (f"; {self.note}" if self.note else "")


@contextlib.contextmanager
def writing(path: "str | os.PathLike[str]", flag: Optional[str] = None, note: str = "") -> Iterator[None]:
    """Re-raise an OS failure of the block (``OSError``, or h5py's ``RuntimeError`` carrying an errno) as an
    :class:`OutputError` naming ``flag path``. Why: numpy and h5py raise ENOSPC with no file name, or with the
    name of a temporary the user never chose. HDF5's own complaints about the same failure while it closes the file
    (printed as "Exception ignored in ..." tracebacks) are kept off stderr for the block's duration."""
    ignored: list[BaseException] = []
    hook = sys.unraisablehook
    sys.unraisablehook = lambda u: ignored.append(u.exc_value) if os_errno(u.exc_value) else hook(u)
    try:
        yield
    except OutputError as exc:
        if exc.flag is None and flag and os.fspath(exc.filename) == os.fspath(path):
            exc.flag = flag  # raised below us (an OutputLock) without the user's argument name: add it
        if note and note not in exc.note:
            exc.note = f"{exc.note}; {note}" if exc.note else note
        raise
    except LocVTPError:
        raise
    except (OSError, RuntimeError) as exc:
        err = os_errno(exc)
        if err is None or (isinstance(exc, RuntimeError) and err not in ENVIRONMENT_ERRNOS):
            raise
        raise OutputError(err, path, flag, note, describe_os_error(exc)) from exc
    finally:
        sys.unraisablehook = hook


__all__ = ["ENVIRONMENT_ERRNOS", "LocVTPError", "NonFiniteFeaturesError", "NotOwnedError", "OutputBusyError",
           "OutputError", "UsageError", "broken_link", "describe_os_error", "os_errno", "os_error_words", "user_path", "writing"]
