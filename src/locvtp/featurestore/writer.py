"""The feature store's writers: HDF5 / npy-dir / npz-dir output, crash-safe and resumable, and the merge of shards.

The layouts are described in :mod:`locvtp.featurestore.reader` (which reads them back); this module writes
them. ``locvtp extract`` (the command) drives a writer video by video; ``locvtp merge`` calls
:func:`merge_shards`. Library code: nothing here parses arguments or prints.

Crash safety (why a journal)
----------------------------
HDF5 is not crash-safe: a process killed while a file is open for writing can leave it unreadable. So the HDF5
file is never modified in place. Finished videos are journalled atomically (``.npz`` written to a temporary
name, fsynced, then ``os.replace``d) in ``<out>.parts/``; :meth:`H5Writer.assemble` (re)builds the HDF5 file into a
temporary file from the previous HDF5 plus the journal and ``os.replace``s it over ``<out>``, after which the
journalled parts are deleted. A kill at any moment therefore leaves ``<out>`` either absent or a complete, valid
earlier version; the rerun skips every video found in ``<out>`` or in the journal, and a journal part lists only
videos whose features it durably holds (it is one file, renamed into place after its fsync).

Group commit (why a part holds several videos): a part per video cost two fsyncs, a rename and later an unlink per
video (≈ 9 ms + 3 ms on the project's disk), which bounded a run of many short videos to ~100 videos/s whatever
the encoder's speed. :meth:`H5Writer.add` keeps finished videos in memory and writes them as one part when
``GROUP_SECONDS`` have passed since the first of them, or ``GROUP_VIDEOS`` / ``GROUP_BYTES`` are reached, and
before any assembly; the extraction also commits what is finished when it stops on an error or Ctrl-C. What a
SIGKILL (or a machine crash) loses is therefore the videos finished since the last commit -- about a second of
work -- never a file. The directory formats (:class:`DirWriter`) are naturally journalled (one atomically written
file per video, the layout their readers want).

Ownership (why a claims log and not a manifest rewritten per video)
-------------------------------------------------------------------
An ``h5`` output is ours only when its root attributes carry the ``locvtp-features`` marker
(:func:`own_h5_attrs`); a directory output records what it wrote in an ownership manifest
(:func:`locvtp.files.write_manifest`, writer ``extract``) so ``--overwrite`` removes exactly those files
(:func:`discard_dir_output`). A million-video extraction must not rewrite a million-name JSON file after every
video: each rank appends the names it is about to write to ``DIR/.journal-rank<r>/claims.txt`` (one short line
per video, flushed before the file is written, so a kill never leaves an unclaimed file); the log is folded into
the manifest once at the end of the run (or at the start of the next run, or of an ``--overwrite``, after a
kill), under a lock on the manifest so ranks never lose each other's claims.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence

import numpy as np

from locvtp.errors import NotOwnedError, UsageError
from locvtp.featurestore.reader import FeatureError, _decode_attr, iter_features, read_features, safe_name
from locvtp.featurestore.record import ClipFeatures
from locvtp.files import (
    MANIFEST, OutputLock, atomic_path, atomic_write_bytes, atomic_write_text, check_file_output, file_writer,
    overlaps, read_manifest, remove_owned, remove_stale_temporaries, remove_temporaries_in, some_names,
    write_manifest, write_owned_text,
)

FEATURE_FORMAT = "locvtp-features"
FEATURE_VERSION = 1
FORMATS = ("h5", "npy-dir", "npz-dir")
# Run settings that must agree between a resumed run and what is already written.
SETTING_KEYS = (
    "embedding", "clip_seconds", "stride_seconds", "frames_per_clip", "frame_size", "model", "checkpoint_sha256",
    # a standard backbone's (`extract --backbone clip|s3d`, locvtp.standard_features): other weights or another
    # output/protocol make other features
    "backbone", "backbone_output", "weights_sha256", "protocol",
)
CLAIMS = "claims.txt"
MANIFEST_LOCK = f"{MANIFEST}.lock"
_H5_JOURNAL_ENTRIES = {"meta.json", "done", "failed"}
GROUP_SECONDS = 1.0  # a finished video waits at most about this long in memory before its journal part is written
GROUP_VIDEOS = 256
GROUP_BYTES = 32 << 20  # features held in memory before a commit


class ExtractError(FeatureError):
    """Extraction cannot start or continue (bad input list, settings mismatch, unreadable output)."""


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


@contextlib.contextmanager
def new_h5(path: Path) -> Iterator[Any]:
    """A new HDF5 file at ``path`` (open for writing), written through a Python file object.

    Why not ``h5py.File(path, "w")``: HDF5 buffers its writes and reports a failed one (no space left on the
    device, a file-size limit) only while closing the file, as "Exception ignored" tracebacks and a
    ``RuntimeError``, and HDF5 2.0 can then crash the process. Through a Python file object the failed write is an
    ordinary ``OSError`` with its errno, which the command reports as one line naming its output."""
    import h5py

    with open(path, "wb") as fh, h5py.File(fh, "w", libver=("v110", "latest")) as f:
        yield f


class _Writer:
    """Common part: settings check, failure journal, the failures file."""

    def __init__(self, settings: dict[str, Any], failures_path: Path, journal: Path):
        self.settings = settings
        self.failures_path = failures_path
        self.command = "extract"
        self.journal = journal
        self.journal.mkdir(parents=True, exist_ok=True)
        (self.journal / "failed").mkdir(exist_ok=True)

    def _check_settings(self, found: dict[str, Any], where: Path) -> None:
        for k in SETTING_KEYS:
            if k in found and found[k] is not None and k in self.settings:
                a, b = found[k], self.settings[k]
                same = (abs(float(a) - float(b)) < 1e-9) if isinstance(b, float) else (str(a) == str(b))
                if not same:
                    raise ExtractError(
                        f"{where}: was written with {k}={a!r}, this run has {k}={b!r}; resuming would mix "
                        "incompatible features (use the same settings, another --out, or --overwrite)"
                    )

    def fail(self, item: Any, reason: str) -> None:
        """Journal a failed video (``item``: anything with ``video_id`` and ``path``)."""
        rec = {"video_id": item.video_id, "path": str(item.path), "reason": reason}
        atomic_write_text(self.journal / "failed" / f"{safe_name(item.video_id)}.json", json.dumps(rec))

    def _clear_failure(self, vid: str) -> None:
        f = self.journal / "failed" / f"{safe_name(vid)}.json"
        if f.exists():
            f.unlink()

    def write_failures(self, attempted: set[str], done: set[str], skipped: Sequence[Mapping[str, str]] = ()
                       ) -> list[dict[str, str]]:
        """Write the failures file: the videos of ``attempted`` that failed (journalled, not in ``done``) and the
        ``skipped`` inputs (rows ``video_id``, ``path``, ``reason``, marked ``"skipped": true``). Returns the failed
        videos' rows (not the skipped ones)."""
        recs = []
        for f in sorted(q for q in (self.journal / "failed").glob("*.json") if not q.name.startswith(".")):
            try:
                rec = json.loads(f.read_text(encoding="utf-8"))
            except ValueError:
                continue
            if rec.get("video_id") in attempted and rec.get("video_id") not in done:
                recs.append(rec)
        recs.sort(key=lambda r: r["video_id"])
        rows = recs + [skipped_row(r) for r in skipped]
        write_failures_file(self.failures_path, sorted(rows, key=_failure_key), self.command)
        return recs


def skipped_row(r: Mapping[str, str]) -> dict[str, Any]:
    """The failures-file row of an input skipped while listing (``video_id``, ``path``, ``reason``)."""
    return {"video_id": str(r.get("video_id", "")), "path": str(r.get("path", "")), "reason": str(r["reason"]),
            "skipped": True}


def _failure_key(r: Mapping[str, Any]) -> tuple[str, str, bool]:
    return (str(r["video_id"]), str(r.get("path", "")), bool(r.get("skipped")))


def write_failures_file(path: Path, rows: Sequence[Mapping[str, Any]], command: str) -> None:
    """Write ``rows`` (one JSON object per line) to ``path`` through the output rule (:func:`locvtp.files.
    write_owned_text`: a user's file there is refused, ours replaced atomically), only when there is one (an empty
    file said nothing). With none, a failures file an earlier run left at ``path`` is removed when the ledger says
    locvtp wrote it; anything else there is kept (and refused before any work: ``files.check_file_output``)."""
    path = Path(path)
    if rows:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_owned_text(path, "".join(json.dumps(dict(r)) + "\n" for r in rows), command)
        return
    if not path.is_file() or path.is_symlink():
        return
    if file_writer(path) is not None:
        path.unlink()


class H5Writer(_Writer):
    """HDF5 output through the journal (see the module docstring)."""

    def __init__(self, out: Path, settings: dict[str, Any], failures_path: Path):
        self.out = out
        self.settings = settings
        self._written: set[str] = set()
        found = own_h5_attrs(out, "--out")  # refuses a foreign file before anything is created
        if found is not None:
            self._check_settings(found[0], out)
            self._written = found[1]
        super().__init__(settings, failures_path, out.with_name(out.name + ".parts"))
        self.parts = self.journal / "done"
        self.parts.mkdir(exist_ok=True)
        # This rank owns its journal and output name: temporary files left by a killed run can go (the caller
        # holds the output's lock; see run_extract).
        remove_temporaries_in(self.journal, recursive=True)
        remove_stale_temporaries(out)
        meta = self.journal / "meta.json"
        if meta.is_file():
            self._check_settings(json.loads(meta.read_text(encoding="utf-8")), meta)
        else:
            atomic_write_text(meta, json.dumps(settings, indent=1))
        self.pending = 0  # videos added since the last assembly (committed or not)
        self._group: list[tuple[ClipFeatures, Optional[str]]] = []
        self._group_bytes = 0
        self._group_since = 0.0

    def _parts(self) -> list[Path]:
        # Hidden names are temporary files of an interrupted atomic write: never journal entries.
        return sorted(q for q in self.parts.glob("*.npz") if not q.name.startswith("."))

    def done_ids(self, candidates: Optional[set[str]] = None) -> set[str]:
        ids = set(self._written) | {r.video_id for r, _ in self._group}
        for q in self._parts():
            try:
                ids.update(_part_ids(q))
            except (OSError, ValueError, KeyError, EOFError):
                q.unlink(missing_ok=True)  # cannot happen with atomic writes; be safe anyway
        return ids

    def add(self, r: ClipFeatures, source: Optional[str] = None) -> None:
        """Journal one video (``source``: its file, when the id rule cannot lead back to it; see
        :mod:`locvtp.data.videoids`): kept with the group being filled, written when the group is due."""
        import time

        if not self._group:
            self._group_since = time.monotonic()
        self._group.append((r, source))
        self._group_bytes += r.features.size * 4
        self.pending += 1
        self.commit_if_due()

    def commit_if_due(self) -> None:
        """Write the group when it is old or big enough (see the module docstring, "Group commit")."""
        import time

        if self._group and (len(self._group) >= GROUP_VIDEOS or self._group_bytes >= GROUP_BYTES
                            or time.monotonic() - self._group_since >= GROUP_SECONDS):
            self.commit()

    def commit(self) -> None:
        """Write the videos added so far as one journal part (atomic, fsynced); nothing to do without any. On an
        error (a full disk) the group is kept, so a later commit can still write it."""
        if not self._group:
            return
        recs = [r for r, _ in self._group]
        arrays: dict[str, np.ndarray] = {
            "video_id": np.array([r.video_id for r in recs]), "fps": np.array([r.fps for r in recs], np.float64),
            "duration": np.array([r.duration for r in recs], np.float64),
            "source": np.array([src or "" for _, src in self._group])}
        for i, r in enumerate(recs):
            arrays[f"features_{i}"] = r.features.astype(np.float32)
            arrays[f"windows_{i}"] = r.windows.astype(np.float64)
        atomic_write_bytes(self.parts / f"{safe_name(recs[0].video_id)}.npz", _npz_bytes(**arrays))
        self._group, self._group_bytes = [], 0
        for r in recs:
            self._clear_failure(r.video_id)

    def assemble(self) -> int:
        """Rebuild ``out`` = previous ``out`` + journal, atomically; then drop the merged parts."""
        import h5py

        self.commit()
        parts = self._parts()
        if not parts and self.out.exists():
            self.pending = 0
            return len(self._written)
        names: set[str] = set()
        with atomic_path(self.out) as tmp:
            with new_h5(tmp) as dst:
                dst.attrs["format"] = FEATURE_FORMAT
                dst.attrs["version"] = FEATURE_VERSION
                for k, v in self.settings.items():
                    if v is not None:
                        dst.attrs[k] = v
                journal_ids = {vid for q in parts for vid in _part_ids(q)}
                if self.out.exists():
                    with h5py.File(self.out, "r") as src:
                        for vid in src.keys():
                            if vid not in journal_ids:
                                src.copy(src[vid], dst, name=vid)
                                names.add(vid)
                for q in parts:
                    for vid, feats, windows, fps, duration, source in _part_videos(q):
                        if vid in names:  # (two parts of one id cannot happen: a done video is not redone)
                            continue
                        d = dst.create_dataset(vid, data=feats)
                        d.attrs["fps"], d.attrs["duration"], d.attrs["windows"] = fps, duration, windows
                        if source:
                            d.attrs["source"] = source
                        for k, v in self.settings.items():
                            if v is not None:
                                d.attrs[k] = v
                        names.add(vid)
        for q in parts:  # merged: the HDF5 file is now their durable home
            q.unlink(missing_ok=True)
        self._written = names
        self.pending = 0
        return len(names)

    def finish(self, attempted: set[str], skipped: Sequence[Mapping[str, str]] = ()) -> list[dict[str, str]]:
        """Assemble, write the failures file (failed videos and ``skipped`` inputs); returns the failed videos."""
        self.assemble()
        recs = self.write_failures(attempted, self._written, skipped)
        if not recs:
            shutil.rmtree(self.journal, ignore_errors=True)
        else:  # keep the failure journal so a rerun still knows; drop everything else
            shutil.rmtree(self.parts, ignore_errors=True)
        return recs


def journal_ids(out: Path) -> list[str]:
    """The videos the journal of the HDF5 output ``out`` holds (finished, not yet assembled into ``out``), sorted."""
    done = Path(out).with_name(Path(out).name + ".parts") / "done"
    parts = sorted(q for q in done.glob("*.npz") if not q.name.startswith(".")) if done.is_dir() else []
    return sorted(v for q in parts for v in _part_ids(q))


def _part_ids(q: Path) -> list[str]:
    """The video ids a journal part holds (a group part, or a one-video part of an earlier version)."""
    with np.load(q, allow_pickle=False) as z:
        return [str(v) for v in np.atleast_1d(z["video_id"])]


def _part_videos(q: Path) -> Iterator[tuple[str, np.ndarray, np.ndarray, float, float, str]]:
    """(id, features, windows, fps, duration, source or "") of each video of a journal part, in order."""
    with np.load(q, allow_pickle=False) as z:
        if z["video_id"].ndim == 0:  # one video per part (written before group commit)
            src = str(z["source"]) if "source" in z else ""
            yield (str(z["video_id"]), np.asarray(z["features"], np.float32), np.asarray(z["windows"], np.float64),
                   float(z["fps"]), float(z["duration"]), src)
            return
        for i, vid in enumerate(z["video_id"]):
            yield (str(vid), np.asarray(z[f"features_{i}"], np.float32), np.asarray(z[f"windows_{i}"], np.float64),
                   float(z["fps"][i]), float(z["duration"][i]), str(z["source"][i]))


class DirWriter(_Writer):
    """npy-dir / npz-dir output: each video's file is written atomically, so the directory is its own journal.

    What it writes is claimed first in ``.journal-rank<r>/claims.txt`` and folded into the directory's ownership
    manifest at the end (see the module docstring), so ``--overwrite`` can remove exactly these files.
    """

    def __init__(self, out: Path, fmt: str, settings: dict[str, Any], failures_path: Path, rank: int = 0,
                 single_process: bool = True, emptied: bool = False):
        self.out = out
        self.fmt = fmt
        meta = out / "meta.json"
        if not emptied:  # (``emptied``: --overwrite just removed our files; what is left is the user's, kept)
            check_dir_output(out, "--out")  # a file, a folder of other files, a foreign meta.json: refused
        out.mkdir(parents=True, exist_ok=True)
        super().__init__(settings, failures_path, out / f".journal-rank{rank}")
        self._claims_path = self.journal / CLAIMS
        _fold_claims(out, [self._claims_path])  # what a killed earlier run of this rank claimed
        self._claims = open(self._claims_path, "a", encoding="utf-8")
        own = [self.journal.name, "meta.json", MANIFEST_LOCK]
        with contextlib.suppress(ValueError):
            own.append(failures_path.resolve().relative_to(out.resolve()).as_posix())  # the default failures file
        self._claim(*own)
        if meta.is_file():
            found = _read_json(meta)
            self._check_settings(found, meta)
            if found.get("layout") not in (None, fmt):
                raise ExtractError(f"{meta}: this directory holds {found['layout']} features, this run writes "
                                   f"{fmt}; one directory holds one layout (use --format {found['layout']}, another "
                                   "--out, or --overwrite)")
        payload = {"format": FEATURE_FORMAT, "version": FEATURE_VERSION, "layout": fmt, **settings}
        atomic_write_text(meta, json.dumps(payload, indent=1))
        if fmt == "npy-dir":
            (out / "_info").mkdir(exist_ok=True)
        if single_process:  # shared by all ranks under torchrun: only a lone process may sweep temporaries
            for directory in (out, out / "_info"):
                remove_temporaries_in(directory)
            remove_temporaries_in(self.journal, recursive=True)
        self.pending = 0

    def _claim(self, *names: str) -> None:
        """Record ``names`` (relative to the directory) as ours *before* they are written: a kill after this
        line leaves at worst a claim on a file that does not exist, never a file nobody claims."""
        self._claims.write("".join(f"{n}\n" for n in names))
        self._claims.flush()

    def _ext(self) -> str:
        return ".npz" if self.fmt == "npz-dir" else ".npy"

    def done_ids(self, candidates: Optional[set[str]] = None) -> set[str]:
        """Ids among ``candidates`` whose file exists (a stat per video, no file is opened)."""
        if candidates is None:
            return {r.video_id for r in iter_features(self.out, load=False)} if any(
                self.out.glob(f"*{self._ext()}")) else set()
        return {v for v in candidates if (self.out / f"{safe_name(v)}{self._ext()}").is_file()}

    def add(self, r: ClipFeatures, source: Optional[str] = None) -> None:
        """Write one video (``source``: its file, when the id rule cannot lead back to it)."""
        name = safe_name(r.video_id)
        feats = r.features.astype(np.float32)
        if self.fmt == "npz-dir":
            self._claim(f"{name}.npz")
            extra = {"source": np.array(source)} if source else {}
            atomic_write_bytes(self.out / f"{name}.npz", _npz_bytes(
                features=feats, windows=r.windows.astype(np.float64), fps=np.array(r.fps, np.float64),
                duration=np.array(r.duration, np.float64), video_id=np.array(r.video_id), **extra))
        else:  # side info first, the .npy last: its presence marks the video done
            self._claim(f"_info/{name}.json", f"{name}.npy")
            info = {"video_id": r.video_id, "fps": r.fps, "duration": r.duration, "windows": r.windows.tolist()}
            if source:
                info["source"] = source
            atomic_write_text(self.out / "_info" / f"{name}.json", json.dumps(info))
            atomic_write_bytes(self.out / f"{name}.npy", _npy_bytes(feats))
        self._clear_failure(r.video_id)

    def assemble(self) -> int:
        return 0

    def commit(self) -> None:
        """Nothing waits: each video's file is written by :meth:`add`."""

    def commit_if_due(self) -> None:
        """Nothing waits: each video's file is written by :meth:`add`."""

    def close(self) -> None:
        """Fold this run's claims into the manifest (also after an error: what was written stays claimed)."""
        if not self._claims.closed:
            self._claims.close()
            _fold_claims(self.out, [self._claims_path])

    def finish(self, attempted: set[str], skipped: Sequence[Mapping[str, str]] = ()) -> list[dict[str, str]]:
        """Write the failures file (failed videos and ``skipped`` inputs); returns the failed videos."""
        recs = self.write_failures(attempted, self.done_ids(attempted), skipped)
        self.close()
        if not recs:
            shutil.rmtree(self.journal, ignore_errors=True)
        return recs


# ------------------------------------------------------------------------------------------------ ownership

def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ExtractError(f"{path}: not valid JSON ({exc})") from None


def _manifest_lock(directory: Path) -> OutputLock:
    """A short blocking lock around a manifest update, so ranks folding their claims at once lose none (its
    ``.locvtp-manifest.json.lock`` is removed on release)."""
    return OutputLock(directory / MANIFEST, "extract", wait=True)


def _fold_claims(out: Path, claim_files: list[Path]) -> None:
    """Move the names listed in ``claim_files`` into ``out``'s manifest (writer ``extract``), then drop them."""
    files = [f for f in claim_files if f.is_file()]
    if not files:
        return
    names: set[str] = set()
    for f in files:
        names.update(ln for ln in f.read_text(encoding="utf-8", errors="replace").split("\n") if ln)
    with _manifest_lock(out):
        write_manifest(out, "extract", names)
    for f in files:
        f.unlink(missing_ok=True)


def own_h5_attrs(path: Path, flag: str) -> Optional[tuple[dict[str, Any], set[str]]]:
    """(root attributes, video ids) of an existing ``locvtp extract`` HDF5 file at ``path``; None when absent.
    Anything else at ``path`` is refused: it is not ours to rewrite or delete."""
    if not path.exists() and not path.is_symlink():
        return None
    if path.is_dir():
        raise UsageError(f"{flag} {path} is a directory: an h5 output is a file (for a directory of per-video "
                         "files pass --format npy-dir or npz-dir)")
    import h5py

    try:
        with h5py.File(path, "r") as f:
            attrs = {k: _decode_attr(v) for k, v in f.attrs.items()}
            keys = set(f.keys())
    except OSError:
        raise NotOwnedError(f"{flag} {path} exists and is not an HDF5 file: refusing to replace it; move it away "
                            "or choose another output") from None
    if attrs.get("format") != FEATURE_FORMAT:
        raise NotOwnedError(f"{flag} {path} is an HDF5 file that `locvtp extract` did not write (no format="
                            f"{FEATURE_FORMAT!r} attribute): refusing to replace it; choose another output")
    return attrs, keys


def discard_h5_output(out: Path) -> None:
    """``--overwrite`` of an h5 output: remove the file (only a locvtp feature file) and its ``.parts`` journal
    (only when it holds nothing but journal entries)."""
    own_h5_attrs(out, "--out")
    journal = out.with_name(out.name + ".parts")
    if journal.is_dir() and not journal.is_symlink():
        foreign = [q.name for q in journal.iterdir() if q.name not in _H5_JOURNAL_ENTRIES
                   and not q.name.startswith(".")]
        if foreign:
            raise NotOwnedError(f"{journal} holds files that are not an extraction journal ({', '.join(foreign[:5])})"
                                ": refusing to delete it; move it away")
        shutil.rmtree(journal)
    elif journal.exists() or journal.is_symlink():
        raise NotOwnedError(f"{journal} exists and is not an extraction journal: refusing to delete it; move it away")
    out.unlink(missing_ok=True)


def _is_feature_meta(meta: Path) -> bool:
    try:
        return json.loads(meta.read_text(encoding="utf-8")).get("format") == FEATURE_FORMAT
    except (OSError, ValueError, UnicodeDecodeError, AttributeError):
        return False


def check_dir_output(out: Path, flag: str) -> None:
    """Refuse a directory output that is a file, holds someone else's ``meta.json``, or holds visible files
    but no extraction (``meta.json``) at all."""
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir():
        raise UsageError(f"{flag} {out} exists and is not a directory (npy-dir / npz-dir write a directory; an "
                         "HDF5 output is --format h5)")
    meta = out / "meta.json"
    if meta.exists():
        if not _is_feature_meta(meta):
            raise NotOwnedError(f"{flag} {out} holds a meta.json that `locvtp extract` did not write: refusing to "
                                "write features into it; choose another output")
        return
    visible = sorted(q.name for q in out.iterdir() if not q.name.startswith("."))
    if visible:
        shown = some_names(visible)
        raise NotOwnedError(f"{flag} {out} is a directory of other files ({shown}) and no extraction: refusing to "
                            "write features into it; choose a new or empty directory")


def discard_dir_output(out: Path) -> int:
    """``--overwrite`` of a directory output: remove exactly the files extractions wrote into it (their
    manifest, after folding the claims of killed runs); a user's file survives. Returns how many were removed."""
    if not out.exists() and not out.is_symlink():
        return 0
    check_dir_output(out, "--out")
    _fold_claims(out, sorted(out.glob(f".journal-rank*/{CLAIMS}")))
    m = read_manifest(out)
    if m is None or m.writer != "extract":
        if (out / "meta.json").exists():
            raise NotOwnedError(f"--out {out} holds features but no ownership manifest ({MANIFEST}: written by an "
                                "older locvtp): --overwrite cannot tell its files from yours; delete it yourself "
                                "or choose another output")
        return 0
    return remove_owned(out, "extract")



# ------------------------------------------------------------------------------------------------ merge
def merge_shards(shards: list[Path], out: Path, failures_out: Optional[Path] = None,
                 progress: bool = True, overwrite: bool = False) -> tuple[int, int]:
    """Merge the stores of ranks / ``--shard`` jobs into ``out``. Returns (videos, failures).

    HDF5 shards (files) merge into one HDF5 file, written atomically; npy-dir / npz-dir shards (directories)
    merge into one directory of the same layout, written like an extraction's (:class:`DirWriter`: atomic per
    video, an ownership manifest). All shards must share the run settings (and a directory's layout); a video
    present in two shards must have identical features. ``out`` must not be one of the shards (its videos would
    be lost); an existing ``out`` is replaced only with ``overwrite`` and only when an extraction or merge wrote
    it. The merge holds ``out``'s lock.
    """
    if not shards:
        raise UsageError("merge: no shard files given")
    out = Path(out)
    for sh in shards:
        if overlaps(sh, out) == "is":
            raise UsageError(f"--out {out} is also one of the input shards: merging into it would overwrite its "
                             "videos; write the merged file to another path")
    dirs = [Path(sh).is_dir() for sh in shards]
    if any(dirs):
        if not all(dirs):
            files = [str(sh) for sh, d in zip(shards, dirs) if not d]
            raise UsageError(f"merge: {files[0]} is a file but other shards are directories: one merge joins "
                             "shards of one format (h5 files, or npy-dir / npz-dir directories)")
        return _merge_dirs([Path(sh) for sh in shards], out, failures_out, progress, overwrite)
    fpath = Path(failures_out) if failures_out else out.with_name(f"{out.stem}.failures.jsonl")
    for sh in shards:
        if overlaps(sh, fpath) == "is":
            raise UsageError(f"--failures {fpath} is one of the input shards: choose another failures file")
    with OutputLock(out, "merge"):
        check_file_output(fpath, "merge", "--failures" if failures_out else "--out's failures file",
                          make_parent=True)
        remove_stale_temporaries(out)
        if out.exists() or out.is_symlink():
            if not overwrite:
                raise UsageError(f"--out {out} exists: pass --overwrite to replace it (only a feature file "
                                 "`locvtp extract`/`merge` wrote is replaced)")
            own_h5_attrs(out, "--out")  # refuses anything else
        return _merge_locked([Path(sh) for sh in shards], out, fpath, progress)


def _merge_locked(shards: list[Path], out: Path, fpath: Path, progress: bool) -> tuple[int, int]:
    import h5py

    ref: Optional[dict[str, Any]] = None
    seen: dict[str, Path] = {}
    fail_recs: dict[str, dict] = {}
    with atomic_path(out) as tmp:
        with new_h5(tmp) as dst:
            for sh in shards:
                if not sh.is_file():
                    raise ExtractError(f"{sh}: no such shard file" if not sh.exists() else f"{sh}: not a file")
                try:
                    src = h5py.File(sh, "r")
                except OSError as exc:
                    raise ExtractError(f"{sh}: not a readable HDF5 file: {exc}") from None
                with src:
                    attrs = {k: _decode_attr(v) for k, v in src.attrs.items()}
                    settings = {k: attrs.get(k) for k in SETTING_KEYS}
                    if ref is None:
                        ref = settings
                        for k, v in attrs.items():
                            dst.attrs[k] = v
                    else:
                        for k in SETTING_KEYS:
                            if str(settings[k]) != str(ref[k]):
                                raise ExtractError(f"{sh}: {k}={settings[k]!r} differs from {shards[0]} "
                                                   f"({ref[k]!r}); these shards cannot be merged")
                    keys = sorted(src.keys())
                    for vid in tqdm_maybe(keys, progress, f"merge {sh.name}"):
                        if vid in seen:
                            if not np.array_equal(src[vid][()], dst[vid][()]):
                                raise ExtractError(f"{sh}: video {vid!r} also in {seen[vid]} with different features")
                            continue
                        src.copy(src[vid], dst, name=vid)
                        seen[vid] = sh
                ff = sh.with_name(f"{sh.stem}.failures.jsonl")
                if ff.is_file():
                    _read_failures(ff, fail_recs)
    # a skipped input stays listed even when its id was extracted from another file (a shared id)
    recs = [r for k, r in sorted(fail_recs.items()) if r.get("skipped") or r["video_id"] not in seen]
    write_failures_file(fpath, recs, "merge")
    return len(seen), sum(1 for r in recs if not r.get("skipped"))


def _dir_settings(sh: Path) -> tuple[str, dict[str, Any]]:
    """(layout, run settings) of a directory shard, from its ``meta.json`` (anything else is refused)."""
    meta = sh / "meta.json"
    if not meta.is_file() or not _is_feature_meta(meta):
        raise ExtractError(f"{sh}: not a feature directory `locvtp extract` wrote (no locvtp meta.json)")
    found = _read_json(meta)
    layout = str(found.get("layout") or "")
    if layout not in ("npy-dir", "npz-dir"):
        raise ExtractError(f"{meta}: unknown layout {layout!r}")
    return layout, {k: v for k, v in found.items() if k not in ("format", "version", "layout")}


def _merge_dirs(shards: list[Path], out: Path, failures_out: Optional[Path], progress: bool,
                overwrite: bool) -> tuple[int, int]:
    """:func:`merge_shards` of npy-dir / npz-dir shards into one directory (see there)."""
    found = [_dir_settings(sh) for sh in shards]
    layout, ref = found[0]
    for sh, (lay, st) in zip(shards[1:], found[1:]):
        if lay != layout:
            raise ExtractError(f"{sh}: layout {lay} differs from {shards[0]} ({layout}); these shards cannot be merged")
        for k in SETTING_KEYS:
            if str(st.get(k)) != str(ref.get(k)):
                raise ExtractError(f"{sh}: {k}={st.get(k)!r} differs from {shards[0]} ({ref.get(k)!r}); these "
                                   "shards cannot be merged")
    fpath = Path(failures_out) if failures_out else out / "failures.jsonl"
    with OutputLock(out, "merge"):
        if out.exists() or out.is_symlink():
            if not overwrite:
                raise UsageError(f"--out {out} exists: pass --overwrite to replace it (only the files an "
                                 "extraction or merge wrote are removed)")
            discard_dir_output(out)
        writer = DirWriter(out, layout, ref, fpath, emptied=overwrite)
        writer.command = "merge"
        seen: dict[str, Path] = {}
        fail_recs: dict[tuple[str, str, bool], dict] = {}
        try:
            for sh in shards:
                for rec in tqdm_maybe(iter_features(sh), progress, f"merge {sh.name}"):  # one video in memory at a time
                    if rec.video_id in seen:
                        if not np.array_equal(rec.features, read_features(out, rec.video_id).features):
                            raise ExtractError(f"{sh}: video {rec.video_id!r} also in {seen[rec.video_id]} with "
                                               "different features")
                        continue
                    writer.add(rec, source=rec.source)
                    seen[rec.video_id] = sh
                for ff in sorted(sh.glob("failures*.jsonl")):
                    _read_failures(ff, fail_recs)
        finally:
            writer.close()
        shutil.rmtree(writer.journal, ignore_errors=True)
    recs = [r for k, r in sorted(fail_recs.items()) if r.get("skipped") or r["video_id"] not in seen]
    write_failures_file(fpath, recs, "merge")
    return len(seen), sum(1 for r in recs if not r.get("skipped"))


def _read_failures(ff: Path, into: dict) -> None:
    """Add the rows of a shard's failures file to ``into`` (keyed by :func:`_failure_key`)."""
    try:
        lines = ff.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise ExtractError(f"{ff}: not a UTF-8 failures file ({exc.reason} at byte {exc.start})") from None
    for ln in lines:
        try:
            rec = json.loads(ln)
            into[_failure_key(rec)] = rec
        except (ValueError, KeyError, TypeError, AttributeError):
            continue


def tqdm_maybe(it: Iterable, progress: bool, desc: str) -> Any:
    if not progress:
        return it
    from locvtp.runtime import progress as tqdm

    return tqdm(it, desc=desc, unit="video", leave=False)


__all__ = [
    "CLAIMS", "DirWriter", "ExtractError", "FEATURE_FORMAT", "FEATURE_VERSION", "FORMATS", "H5Writer", "MANIFEST_LOCK",
    "SETTING_KEYS", "check_dir_output", "discard_dir_output", "discard_h5_output", "journal_ids", "merge_shards",
    "own_h5_attrs",
]
