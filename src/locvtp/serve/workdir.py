"""The work folder of ``locvtp serve``: where it is, what it may hold, and what is removed on exit.

Why a rule of its own: the server writes uploads, playback copies, thumbnails and cached embeddings, and the
project's promise is that no command leaves its temporaries behind nor deletes a file it did not write.

* **No ``--work-dir``**: a new folder ``locvtp-serve-*`` in the system temporary directory (``$TMPDIR``), made
  only once the checkpoint and the index have loaded. It holds nothing but what the server wrote, so it is
  removed whole on every exit: normal shutdown, Ctrl-C, SIGTERM, SIGHUP, a failed start. (A second sweep at
  interpreter exit catches what an encoding thread still finishing may have written.)
* **``--work-dir DIR``**: created when absent; kept on exit, so a restart reuses its cached embeddings and
  uploads. It may hold only what ``locvtp serve`` wrote — its manifest (``.locvtp-manifest.json``) claims the
  five subfolders below — so a folder with anything else in it (``--work-dir .``, a folder of your own files) is
  refused with one line before anything is written. Inside it the server only ever removes its own
  half-received uploads (``tmp/<32 hex>.part``) and files it wrote itself. One server at a time: a second one
  on the same folder stops at once (``locvtp.files.OutputLock``, the ``.NAME.lock`` beside the folder).

Layout (names chosen by the server, never by a client)::

    uploads/  media/  thumbs/  embeddings/  tmp/   (see locvtp.serve.library)
"""
from __future__ import annotations

import atexit
import re
import shutil
import tempfile
from pathlib import Path
from typing import Mapping, Optional

from locvtp.errors import NotOwnedError, OutputBusyError, UsageError
from locvtp.files import OutputLock, check_apart, foreign_entries, some_names, write_manifest

WRITER = "serve"
SUBDIRS = ("uploads", "media", "thumbs", "embeddings", "tmp")
PARTIAL_UPLOAD = re.compile(r"^[0-9a-f]{32}\.part$")  # what library.Library.new_upload_path names


class WorkDir:
    """One server's work folder. ``given``: the ``--work-dir`` value (None: a temporary folder).
    ``inputs``: the command's input paths by flag (``--videos``, ``--index``, ``--checkpoint``), which the
    folder may not overlap. Checked at construction; created by :meth:`open`; cleaned by :meth:`close`."""

    def __init__(self, given: Optional[str | Path], inputs: Optional[Mapping[str, Optional[Path]]] = None):
        self.given = Path(given).expanduser() if given is not None else None
        self.inputs = dict(inputs or {})
        self.path: Optional[Path] = None
        self._old_tempdir: Optional[str] = None
        self._lock: Optional[OutputLock] = None
        if self.given is not None:
            self.check()

    @property
    def temporary(self) -> bool:
        """True when the folder is the server's own temporary one (removed on exit)."""
        return self.given is None

    def check(self) -> None:
        """Refuse a ``--work-dir`` that is a file, overlaps an input, or holds files serve did not write."""
        p = self.given
        if p.is_symlink() and not p.exists():
            raise UsageError(f"--work-dir {p}: a link to nothing (broken symlink); give a directory")
        if p.exists() and not p.is_dir():
            raise UsageError(f"--work-dir {p}: exists and is not a directory")
        check_apart(p, self.inputs, out_flag="--work-dir")
        if p.is_dir():
            foreign = foreign_entries(p, WRITER)
            if foreign:
                shown = some_names(foreign)
                raise NotOwnedError(f"--work-dir {p} holds files that `locvtp serve` did not write ({shown}): "
                                    "give a new or empty folder, or one an earlier `locvtp serve` used (nothing "
                                    "was written)")

    def open(self) -> Path:
        """Create the folder and its subfolders (once) and make it Python's tempfile directory; returns it."""
        if self.path is not None:
            return self.path
        path = self._temporary() if self.given is None else self._locked_given()
        try:
            for sub in SUBDIRS:
                (path / sub).mkdir(parents=True, exist_ok=True)
            write_manifest(path, WRITER, SUBDIRS)
            self.path = path
            self._remove_partial_uploads()
        except OSError as exc:
            self.path = None
            self._release(path)
            raise UsageError(f"--work-dir {self.given or path}: cannot write there ({exc.strerror})") from None
        self._old_tempdir = tempfile.tempdir
        # Anything a library spools (e.g. a multipart parser) lands in the work folder, never elsewhere.
        tempfile.tempdir = str(path / "tmp")
        return path

    @staticmethod
    def _temporary() -> Path:
        try:
            path = Path(tempfile.mkdtemp(prefix="locvtp-serve-")).resolve()
        except OSError as exc:
            raise UsageError(f"cannot create a work folder in the temporary directory {tempfile.gettempdir()} "
                             f"({exc.strerror}): set TMPDIR or give --work-dir") from None
        atexit.register(shutil.rmtree, path, True)  # after the encoding thread has ended (see module doc)
        return path

    def _locked_given(self) -> Path:
        """``--work-dir``, locked for this server, checked again under the lock."""
        try:
            self._lock = OutputLock(self.given, "serve").acquire()
        except OutputBusyError as exc:
            raise OutputBusyError(f"--work-dir {exc}") from None
        except OSError as exc:
            raise UsageError(f"--work-dir {self.given}: cannot write beside it ({exc.strerror})") from None
        try:
            self.check()
        except BaseException:
            self._release(self.given)
            raise
        return self.given.resolve()

    def _remove_partial_uploads(self) -> None:
        for q in (self.path / "tmp").iterdir():
            if PARTIAL_UPLOAD.match(q.name) and q.is_file():
                q.unlink(missing_ok=True)

    def close(self) -> None:
        """Remove the temporary folder whole, or only serve's half-received uploads from a ``--work-dir``."""
        if self.path is None:
            return
        if tempfile.tempdir == str(self.path / "tmp"):
            tempfile.tempdir = self._old_tempdir
        if self.given is not None and (self.path / "tmp").is_dir():
            self._remove_partial_uploads()
        self._release(self.path)
        self.path = None

    def _release(self, path: Path) -> None:
        if self.given is None:
            shutil.rmtree(path, ignore_errors=True)
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def describe(self) -> str:
        """How the startup line names the folder and its fate."""
        fate = "removed on exit" if self.given is None else "kept on exit"
        return f"work dir {self.path} ({fate})"


__all__ = ["SUBDIRS", "WRITER", "WorkDir"]
