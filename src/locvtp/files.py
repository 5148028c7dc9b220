"""Files the commands write: atomic replacement, ownership, one writer per output, stale temporaries.

Why one module: a command may only delete or replace what it wrote itself. Each helper here states one rule
that every command follows the same way:

* **atomic writes** — data goes to a hidden temporary next to the target (``.NAME.tmp-PID-RAND``), is fsynced,
  then ``os.replace``d over it: a kill at any moment leaves the old file or the new one, never half of one;
* **ownership** — a directory a command fills gets a manifest (``.locvtp-manifest.json``) naming the command
  and the files it wrote; :func:`remove_owned` deletes exactly those, and :func:`replace_dir` refuses a target
  that holds anything else. A single file a command writes (``--plot F.png``, ``--out scores.json``, a
  report) is recorded in its directory's ledger (``.locvtp-files.json``: writer, size, mtime, inode);
  :func:`check_file_output` refuses, before any work, a path that exists and is not such a file unchanged since,
  and :func:`owned_file` replaces it atomically and records it. The rule is the same for every command and has
  no ``--force``: what a user owns is never replaced or deleted;
* **inputs stay apart from outputs** — :func:`check_apart` refuses an output that is, contains or lies inside an
  input, before anything is written;
* **one writer per output** — :class:`OutputLock` is an advisory ``flock`` on ``.NAME.lock`` next to the output;
  a second run on the same output stops at once with a message naming the holder;
* **stale temporaries** — the temporaries of a killed run carry the output's name; the next run on the same
  output removes them (:func:`remove_stale_temporaries`), which is safe because it holds the output's lock.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Optional

from locvtp.errors import NotOwnedError, OutputBusyError, OutputError, UsageError, describe_os_error, os_errno
from locvtp.tempnames import old_path, temp_path, temporary_of

MANIFEST = ".locvtp-manifest.json"
LEDGER = ".locvtp-files.json"


# ------------------------------------------------------------------------------------------------ atomic writes
def fsync_file(path: str | os.PathLike) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename inside ``path`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path to write; on success it is fsynced and replaces ``path``, on failure removed.

    >>> with atomic_path("out.npy", suffix=".npy") as tmp:
    ...     np.save(tmp, arr)
    """
    target = Path(path)
    tmp = temp_path(target, suffix)
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(target.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: object) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


# ------------------------------------------------------------------------------------------------ stale temporaries
# (their names: locvtp.tempnames)
def temporaries_in(directory: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Every temporary this module names inside ``directory`` (a journal or output directory the caller owns)."""
    d = Path(directory)
    if not d.is_dir():
        return []
    found = d.rglob(".*") if recursive else d.glob(".*")
    return sorted(q for q in found if temporary_of(q.name) is not None)


def stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """The ``.NAME.tmp-*`` / ``.NAME.old-*`` siblings of ``path`` that an interrupted write left behind."""
    p = Path(path)
    return [q for q in temporaries_in(p.parent) if temporary_of(q.name) == p.name]


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def remove_temporaries_in(directory: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Remove every temporary this module names inside ``directory`` (files or directories; nothing else is
    touched). Call it only on a directory the caller owns, holding its lock. Returns what was removed."""
    found = temporaries_in(directory, recursive)
    for q in found:
        _remove(q)
    return found


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove what :func:`stale_temporaries` finds. Call it only while holding ``OutputLock(path)``: then no
    live run can own those temporaries. Returns what was removed."""
    found = stale_temporaries(path)
    for q in found:
        _remove(q)
    return found


# ------------------------------------------------------------------------------------------------ inputs vs outputs
def _resolved(p: str | os.PathLike) -> Path:
    """The absolute path without symlinks. A symlink loop is an ``OSError(ELOOP)`` naming ``p`` (the path the user
    gave), not the ``RuntimeError`` that ``Path.resolve`` raises for it before Python 3.13."""
    try:
        return Path(p).expanduser().resolve()
    except RuntimeError as exc:  # "Symlink loop from ..." (3.13+ raises OSError(ELOOP) itself)
        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), os.fspath(p)) from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP and exc.filename != os.fspath(p):
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), os.fspath(p)) from exc
        raise


def overlaps(a: str | os.PathLike, b: str | os.PathLike) -> Optional[str]:
    """How path ``a`` relates to path ``b``: ``"is"``, ``"contains"``, ``"lies inside"``, or None."""
    ra, rb = _resolved(a), _resolved(b)
    if ra == rb:
        return "is"
    if ra in rb.parents:
        return "contains"
    if rb in ra.parents:
        return "lies inside"
    return None


def check_apart(out: str | os.PathLike, inputs: Mapping[str, str | os.PathLike | None],
                out_flag: str = "--out") -> None:
    """Refuse (:class:`UsageError`) an output that is, contains or lies inside one of ``inputs``
    (``{"--videos": path, ...}``), before anything is written or deleted."""
    for flag, inp in inputs.items():
        if inp is None:
            continue
        how = overlaps(out, inp)
        if how is not None:
            raise UsageError(f"{out_flag} {out} {how} the input {flag} {inp}: choose an output apart from the "
                             "inputs (nothing was written or deleted)")


# ------------------------------------------------------------------------------------------------ ownership
@dataclass(frozen=True)
class Manifest:
    """What one command wrote into one directory (names relative to it)."""

    writer: str
    files: frozenset[str]


def read_manifest(directory: str | os.PathLike) -> Optional[Manifest]:
    """The directory's manifest, or None when it has none (or an unreadable one: then nothing is ours)."""
    f = Path(directory) / MANIFEST
    try:
        raw = json.loads(f.read_text(encoding="utf-8"))
        return Manifest(str(raw["writer"]), frozenset(str(x) for x in raw["files"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_manifest(directory: str | os.PathLike, writer: str, files: Iterable[str]) -> None:
    """Record (atomically) that ``writer`` wrote ``files`` into ``directory``; merged with an existing manifest
    of the same writer, so a resumed run keeps the claim on what an earlier run wrote."""
    d = Path(directory)
    old = read_manifest(d)
    names = set(files)
    if old is not None and old.writer == writer:
        names |= old.files
    names.discard(MANIFEST)
    atomic_write_json(d / MANIFEST, {"writer": writer, "files": sorted(names)})


def foreign_entries(directory: str | os.PathLike, writer: str) -> list[str]:
    """Top-level entries of ``directory`` that ``writer``'s manifest does not claim (hidden temporaries and
    lock files of our own outputs excluded)."""
    d = Path(directory)
    m = read_manifest(d)
    owned = set(m.files) if m is not None and m.writer == writer else set()
    out = []
    for q in sorted(d.iterdir()):
        if q.name in (MANIFEST, LEDGER) or q.name in owned or temporary_of(q.name) is not None or (
                q.name.startswith(".") and q.name.endswith(".lock")):
            continue
        if q.is_dir() and not q.is_symlink():
            inside = [f.relative_to(d).as_posix() for f in q.rglob("*") if not f.is_dir()]
            if inside and all(f in owned for f in inside):
                continue  # a folder that holds only files we wrote
        out.append(q.name)
    return out


def remove_owned(directory: str | os.PathLike, writer: str) -> int:
    """Delete the files ``writer``'s manifest lists in ``directory`` (and the manifest); leave everything else,
    and the directory itself when something else remains. Returns how many files were removed."""
    d = Path(directory)
    m = read_manifest(d)
    if m is None or m.writer != writer:
        return 0
    n = 0
    parents: set[Path] = set()
    for name in sorted(m.files, key=lambda s: -s.count("/")):
        q = d / name
        if ".." in Path(name).parts or Path(name).is_absolute():
            continue  # a tampered manifest never reaches outside the directory
        if q.is_file() or q.is_symlink():
            q.unlink()
            n += 1
        elif q.is_dir():
            shutil.rmtree(q)
            n += 1
        parents.update(q.parents)
    (d / MANIFEST).unlink(missing_ok=True)
    inside = [p for p in parents if d in p.parents]
    for sub in sorted(inside, key=lambda p: -len(p.parts)):
        with contextlib.suppress(OSError):
            sub.rmdir()  # only the folders our files lived in, once they are empty
    with contextlib.suppress(OSError):
        if [q.name for q in d.iterdir()] == [LEDGER]:
            (d / LEDGER).unlink()  # it recorded only files of ours, and none is left
        d.rmdir()
    return n


def some_names(names: list[str], limit: int = 5) -> str:
    """The first ``limit`` of ``names`` for a one-line message (``a, b, c and 4 more``)."""
    more = len(names) - limit
    return ", ".join(names[:limit]) + (f" and {more} more" if more > 0 else "")


def check_replaceable_dir(out: str | os.PathLike, writer: str, what: str) -> None:
    """Refuse to replace ``out`` unless it is absent or a directory holding only what ``writer`` wrote."""
    p = Path(out)
    if not p.exists() and not p.is_symlink():
        return
    if not p.is_dir() or p.is_symlink():
        raise NotOwnedError(f"{p} exists and is not a {what} (a file or link): refusing to replace it; "
                            "remove it yourself or choose another output")
    m = read_manifest(p)
    if m is None or m.writer != writer:
        if not any(p.iterdir()):
            return
        raise NotOwnedError(f"{p} is a directory that `locvtp {writer}` did not write (no {MANIFEST} of it): "
                            "refusing to replace it; choose another output")
    foreign = foreign_entries(p, writer)
    if foreign:
        raise NotOwnedError(f"{p} holds files that `locvtp {writer}` did not write ({some_names(foreign)}): refusing "
                            "to replace it; move them or choose another output")


def replace_dir(tmp: str | os.PathLike, out: str | os.PathLike, writer: str, what: str) -> None:
    """Move a fully written directory ``tmp`` (with its manifest) to ``out``, replacing an earlier output of the
    same ``writer`` — never anything else (:func:`check_replaceable_dir`) — with no window in which ``out``
    holds half of either."""
    check_replaceable_dir(out, writer, what)
    swap_dir(tmp, out)


def swap_dir(tmp: str | os.PathLike, out: str | os.PathLike) -> None:
    """Put the fully written directory ``tmp`` at ``out``, with no window in which ``out`` holds half of either.

    ``os.replace`` cannot overwrite a non-empty directory: an existing ``out`` is moved aside first (hidden name
    with :data:`OLD_TAG`, so no reader picks it), put back if the final rename fails, removed after. Whether
    ``out`` may be replaced is the caller's decision (:func:`replace_dir` checks the manifest)."""
    tmp_p, out_p = Path(tmp), Path(out)
    old = None
    if out_p.exists():
        old = old_path(out_p)
        os.replace(out_p, old)
    try:
        os.replace(tmp_p, out_p)
    except BaseException:
        if old is not None and not out_p.exists():
            os.replace(old, out_p)
        raise
    fsync_dir(out_p.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------------------------------------ OS errors
def output_error(path: str | os.PathLike, exc: OSError, flag: str = "") -> OutputError:
    """The one-line error for an OS failure while writing the user's output ``path``: it names ``path`` (and
    ``flag``) and the cause in words (:func:`locvtp.errors.describe_os_error`), not the hidden temporary, lock or
    parent the OS named. Nothing was replaced: every writer here goes through a temporary."""
    err = os_errno(exc) or errno.EIO
    detail = describe_os_error(exc)
    if err in (errno.ENOTDIR, errno.EEXIST):
        bad = next((q for q in reversed(Path(path).parents) if q.exists() and not q.is_dir()), None)
        if bad is not None:
            detail = f"{bad}: is a file, where a directory is needed ({errno.errorcode[err]})"
    return OutputError(err, path, flag or None, note="nothing was replaced", detail=detail)


# ------------------------------------------------------------------------------------------------ one writer
class OutputLock:
    """An advisory lock on one output path: ``flock`` on ``.NAME.lock`` beside it, held for the whole run.

    Why a sibling file: it works the same for file and directory outputs and for outputs that do not exist yet.
    The lock file names its holder (pid and command) for the message a second run prints; it is removed on
    release, and a run that acquires it checks it still locks the file at that path (a holder that just removed
    it may have been waited on), so two runs can never both hold one output. ``wait=True`` blocks instead of
    refusing (short critical sections: a manifest or ledger update). An OS failure (the output's folder is a
    file, read-only, ...) is an :class:`~locvtp.errors.OutputError` naming the output, not the lock file.
    """

    def __init__(self, path: str | os.PathLike, command: str, wait: bool = False):
        self.path = Path(path)
        self.command = command
        self.wait = wait
        self.lock_path = self.path.with_name(f".{self.path.name}.lock")
        self._fd: Optional[int] = None

    def _holder(self) -> str:
        try:
            text = self.lock_path.read_text(encoding="utf-8").strip()
        except OSError:
            return "another process"
        pid, _, cmd = text.partition(" ")
        return f"`locvtp {cmd}` (pid {pid})" if pid.isdigit() and cmd else "another process"

    def _lock_once(self) -> Optional[int]:
        """An fd locking the file now at ``lock_path``, or None when that file changed under us (retry)."""
        import fcntl

        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if self.wait else fcntl.LOCK_NB))
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise OutputBusyError(f"{self.path}: {self._holder()} is writing this output; wait for it to "
                                      "finish or choose another output") from None
            raise
        try:
            same = os.fstat(fd).st_ino == os.stat(self.lock_path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the previous holder removed the file between our open and our lock: take the new one
        return None

    def acquire(self) -> "OutputLock":
        try:
            self.lock_path.parent.mkdir(parents=True, exist_ok=True)
            fd = None
            while fd is None:
                fd = self._lock_once()
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()} {self.command}\n".encode())
        except OutputBusyError:
            raise
        except OSError as exc:
            raise output_error(self.path, exc) from None
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.lock_path.unlink()  # while still locked: a waiter then sees a stale inode and retries
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


# ------------------------------------------------------------------------------------------------ single files
# Why a ledger and not the file's content: the rule must hold for every format (PNG, JSON, safetensors, JSONL)
# without sniffing, and a file that merely looks like ours (a user's copy, an edited report) must stay theirs.
# A file counts as ours only while its size, mtime and inode are those recorded when we wrote it: a user who
# edits or replaces it makes it theirs. An unreadable ledger claims nothing.
def _stat_record(st: os.stat_result) -> dict[str, int]:
    return {"size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns), "ino": int(st.st_ino)}


def read_ledger(directory: str | os.PathLike) -> dict[str, dict]:
    """``{file name: {writer, size, mtime_ns, ino}}`` of the files locvtp wrote in ``directory`` ({} when there
    is no ledger or it is unreadable: then nothing there is ours)."""
    try:
        raw = json.loads((Path(directory) / LEDGER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    files = raw.get("files") if isinstance(raw, dict) else None
    if not isinstance(files, dict):
        return {}
    return {str(k): v for k, v in files.items() if isinstance(v, dict)}


def _matches(rec: dict, st: os.stat_result) -> bool:
    return stat.S_ISREG(st.st_mode) and all(rec.get(k) == v for k, v in _stat_record(st).items())


def file_writer(path: str | os.PathLike) -> Optional[str]:
    """The command that wrote the regular file at ``path``, when locvtp wrote it and it is unchanged since;
    None for anything else (a user's file, an edited one, a link, a directory, nothing)."""
    p = Path(path)
    try:
        st = os.lstat(p)
    except OSError:
        return None
    rec = read_ledger(p.parent).get(p.name)
    if rec is None or not _matches(rec, st):
        return None
    return str(rec.get("writer") or "") or None


def _refuse_foreign_file(p: Path, flag: str) -> None:
    where = f"{flag} {p}" if flag else str(p)
    if p.is_dir() and not p.is_symlink():
        raise NotOwnedError(f"{where} is a directory; give a file name (nothing was written)")
    if (p.exists() or p.is_symlink()) and file_writer(p) is None:
        raise NotOwnedError(f"{where} exists and was not written by locvtp (or was changed since): refusing to "
                            "replace it (nothing was written); move it or choose another path")


def check_file_output(path: str | os.PathLike, command: str, flag: str, make_parent: bool = False) -> Path:
    """Check, before any work, that ``command`` may write the file ``path`` given as ``flag``: its folder
    exists (``make_parent``: may be created; a :class:`UsageError` otherwise) and ``path`` is absent or a file
    locvtp wrote and nobody changed since (else :class:`NotOwnedError`). There is no ``--force`` for this."""
    p = Path(path)
    where = f"{flag} {p}" if flag else str(p)
    parent = p.parent
    blocker = next((q for q in [*reversed(parent.parents), parent] if q.exists() and not q.is_dir()), None)
    if blocker is not None:
        raise UsageError(f"{where}: {blocker} is not a directory (nothing was written)")
    if not parent.exists() and not make_parent:
        raise UsageError(f"{where}: directory {parent} does not exist (nothing was written)")
    _refuse_foreign_file(p, flag)
    probe = parent if parent.exists() else next((q for q in parent.parents if q.exists()), Path("."))
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputError(errno.EACCES, p, flag or None, note="nothing was written",
                          detail=f"no permission to write in {probe} (EACCES)")
    return p


def _record(target: Path, command: str) -> None:
    """Add ``target`` (just written) to its directory's ledger, dropping entries that no longer match their
    file. Called under the ledger's lock."""
    d = target.parent
    ledger = {}
    for name, rec in read_ledger(d).items():
        with contextlib.suppress(OSError):
            if _matches(rec, os.lstat(d / name)):
                ledger[name] = rec
    ledger[target.name] = {"writer": command, **_stat_record(os.lstat(target))}
    atomic_write_json(d / LEDGER, {"files": ledger})


@contextlib.contextmanager
def owned_file(path: str | os.PathLike, command: str, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path to write ``path``; on success it replaces ``path`` atomically and is recorded as
    ``command``'s in the folder's ledger; on failure it is removed and ``path`` is as it was. ``path`` is
    checked again just before the replacement (under the ledger's lock, so concurrent writers into one folder
    lose no entry): a file a user put there meanwhile is not replaced either.

    >>> with owned_file("scores.json", "score") as tmp:
    ...     tmp.write_text(text)
    """
    target = Path(path)
    tmp = temp_path(target, suffix)
    try:
        try:
            yield tmp
            fsync_file(tmp)
            with OutputLock(target.parent / LEDGER, command, wait=True):
                _refuse_foreign_file(target, "")
                os.replace(tmp, target)
                _record(target, command)
        except OSError as exc:
            if isinstance(exc, OutputError) or exc.filename is None or Path(exc.filename) != tmp:
                raise
            raise output_error(target, exc) from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(target.parent)


def write_owned_text(path: str | os.PathLike, text: str, command: str) -> Path:
    """:func:`owned_file` for a text file (UTF-8)."""
    with owned_file(path, command) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


__all__ = [
    "LEDGER", "MANIFEST", "Manifest", "OutputLock", "atomic_path", "atomic_write_bytes", "atomic_write_json",
    "atomic_write_text", "check_apart", "check_file_output", "check_replaceable_dir", "file_writer",
    "foreign_entries", "fsync_dir", "fsync_file", "output_error", "overlaps", "owned_file", "read_ledger",
    "read_manifest", "remove_owned", "remove_stale_temporaries", "replace_dir", "some_names", "stale_temporaries",
    "temporaries_in", "write_manifest", "write_owned_text",
]
