"""`locvtp extract` / `locvtp merge`: clip features of a video collection, resumable and crash-safe.

Output formats
--------------
* ``h5`` (default): one HDF5 file, one float32 dataset ``[num_clips, D]`` per video id at the root (the
  layout 2D-TAN/ActivityNet feature readers use). Dataset attributes: ``fps``, ``duration``, ``clip_seconds``,
  ``stride_seconds``, ``frames_per_clip``, ``frame_size``, ``model``, ``checkpoint_sha256``, ``embedding``
  (``joint`` = L2-normalized joint-space embeddings, ``backbone`` = pre-projection features) and ``windows``
  (float64 ``[num_clips, 2]`` seconds). The root carries the same run settings plus ``format``/``version``.
* ``npy-dir``: ``DIR/<vid>.npy`` per video (the layout Charades I3D feature users expect) and
  ``DIR/_info/<vid>.json`` (fps, duration, windows); ``DIR/meta.json`` holds the run settings.
* ``npz-dir``: ``DIR/<vid>.npz`` with a ``features`` array (what Moment-DETR-style code reads) plus
  ``windows``, ``fps``, ``duration``; ``DIR/meta.json`` holds the run settings.

Crash safety (why a journal)
----------------------------
HDF5 is not crash-safe: a process killed while a file is open for writing can leave it unreadable. So the HDF5
file is never modified in place. Every finished video is journalled atomically (``.npz`` written to a temporary
name, then ``os.replace``) in ``<out>.parts/``; the HDF5 file is (re)assembled into a temporary file from the
previous HDF5 plus the journal and ``os.replace``d over ``<out>`` every ``--flush-every`` videos /
``--flush-seconds`` seconds and at the end, after which the journalled parts are deleted. A kill at any moment
therefore leaves ``<out>`` either absent or a complete, valid earlier version, and loses at most the video being
encoded; the rerun skips every video found in ``<out>`` or in the journal. The directory formats are naturally
journalled (one atomically written file per video). Assembly copies the existing file, hence the periodic flush
is time-based by default (a full copy every 10 minutes, not every video).

Failures
--------
A video that cannot be decoded or encoded never stops the run (unless ``--strict``): it is written to the
failures file (``<out stem>.failures.jsonl`` for ``h5``, ``DIR/failures.jsonl`` for directories; one JSON
object per line: ``video_id``, ``path``, ``reason``) and retried on the next run.

Ownership, one writer, inputs apart (why these rules)
----------------------------------------------------
``extract`` and ``merge`` only ever delete or replace what they wrote themselves. Before anything is written,
an ``--out`` that is, contains or lies inside an input (``--videos`` — the directory, or the list file itself —
and ``--checkpoint``) is refused. ``--overwrite`` of an ``h5`` output removes the file only when its root
attributes carry the ``locvtp-features`` marker (anything else: :class:`~locvtp.errors.NotOwnedError`) and its
``.parts`` journal only when it holds nothing but journal entries. A directory output records what it wrote in
an ownership manifest (:func:`locvtp.files.write_manifest`, writer ``extract``); ``--overwrite`` removes exactly
those files (:func:`locvtp.files.remove_owned`), so a user's file next to the outputs survives.

Why a claims log and not a manifest rewritten per video: a million-video extraction must not rewrite a
million-name JSON file after every video. Each rank appends the names it is about to write to
``DIR/.journal-rank<r>/claims.txt`` (one short line per video, flushed before the file is written, so a kill
never leaves an unclaimed file); the log is folded into the manifest once at the end of the run (or at the
start of the next run, or of an ``--overwrite``, after a kill), under a lock on the manifest so ranks never lose
each other's claims.

Every run holds :class:`locvtp.files.OutputLock` on its output for the whole run (``h5``: the rank's own file;
directories: the directory, or ``DIR.rank<r>`` under torchrun so ranks do not block each other), so a second
run on the same output stops at once with one line naming the holder instead of racing the first; holding the
lock, a run removes the temporaries a killed run left (:func:`locvtp.files.remove_stale_temporaries`).

Sharding
--------
Under ``torchrun`` (``RANK``/``WORLD_SIZE`` set) rank r takes every WORLD_SIZE-th video of the sorted list and
writes ``<stem>.rank<r>.h5`` (directories: the same directory, per-rank failures/journal files); ``locvtp
merge --out feats.h5 feats.rank*.h5`` joins the shards. No process group is needed: ranks never communicate.
"""
from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import shutil
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from locvtp import cliargs
from locvtp.errors import NotOwnedError, UsageError
from locvtp.features import (  # noqa: F401  (re-exported: the reader's historical home)
    FeatureError, FeatureRecord, _decode_attr, check_finite, detect_format, feature_info, iter_features,
    read_features, safe_name,
)
from locvtp.files import (
    MANIFEST, OutputLock, atomic_path, atomic_write_text, check_apart, read_manifest, remove_owned,
    remove_stale_temporaries, write_manifest,
)

FEATURE_FORMAT = "locvtp-features"
FEATURE_VERSION = 1
FORMATS = ("h5", "npy-dir", "npz-dir")
FEATURE_EXTENSIONS = (".h5", ".hdf5", ".hdf", ".npy", ".npz")
VIDEO_EXTENSIONS = (
    ".mp4", ".m4v", ".mkv", ".webm", ".avi", ".mov", ".mpg", ".mpeg", ".flv", ".ts", ".wmv", ".3gp", ".ogv",
)
# Run settings that must agree between a resumed run and what is already written.
SETTING_KEYS = (
    "embedding", "clip_seconds", "stride_seconds", "frames_per_clip", "frame_size", "model", "checkpoint_sha256",
)
# What a bad *input* raises: unreadable/corrupt files (VideoError and PyAV errors are OSErrors), bad values,
# out-of-memory on a huge video. Anything else (TypeError, AttributeError ...) is a bug and stops the run.
RECORDED_ERRORS = (OSError, ValueError, RuntimeError, MemoryError, EOFError, KeyError)


class ExtractError(FeatureError):
    """Extraction cannot start or continue (bad input list, settings mismatch, unreadable output)."""


# ------------------------------------------------------------------------------------------------ helpers
def _atomic_savez(path: Path, **arrays: np.ndarray) -> None:
    with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


def _atomic_save_npy(path: Path, arr: np.ndarray) -> None:
    with atomic_path(path, suffix=".npy") as tmp, open(tmp, "wb") as fh:
        np.save(fh, arr, allow_pickle=False)


def world_info() -> tuple[int, int]:
    """(rank, world_size) from the torchrun environment; (0, 1) in a single process."""
    try:
        from locvtp.distributed import world_info as dist_world_info  # type: ignore

        rank, world = dist_world_info()
        if world > 1:
            return int(rank), int(world)
    except Exception:  # noqa: BLE001 - module absent or no process group: fall back to the environment
        pass
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def rank_path(out: Path, fmt: str, rank: int, world: int) -> Path:
    """Per-rank output file (``feats.h5`` -> ``feats.rank3.h5``); directories are shared by all ranks."""
    if world <= 1 or fmt != "h5":
        return out
    return out.with_name(f"{out.stem}.rank{rank}{out.suffix or '.h5'}")


def default_failures_path(out: Path, fmt: str, rank: int = 0, world: int = 1) -> Path:
    if fmt == "h5":
        return out.with_name(f"{out.stem}.failures.jsonl")
    return out / ("failures.jsonl" if world <= 1 else f"failures.rank{rank}.jsonl")


# ------------------------------------------------------------------------------------------------ inputs
@dataclass(frozen=True)
class VideoItem:
    video_id: str
    path: Path


def _valid_id(vid: str) -> Optional[str]:
    """Reason why ``vid`` cannot name an HDF5 dataset / file, or None."""
    if not vid or vid in (".", ".."):
        return "empty video id"
    if "/" in vid or "\\" in vid or "\x00" in vid:
        return f"video id {vid!r} contains a path separator"
    return None


def list_videos(spec: str | Path, recursive: bool = False, strict: bool = False
                ) -> tuple[list[VideoItem], list[dict[str, str]]]:
    """Videos to extract from a directory or a list file, sorted by id.

    Directory: every file with a video extension (``VIDEO_EXTENSIONS``); id = file stem (``recursive``:
    relative path without extension, ``/`` replaced by ``__``). List file: one ``path`` or ``id<TAB>path`` per
    line, ``#`` comments; relative paths are relative to the list file. Returns (items, problems) where each
    problem names the line/file (lenient); ``strict`` raises ``ExtractError`` instead.
    """
    spec = Path(spec)
    items: list[VideoItem] = []
    problems: list[dict[str, str]] = []

    def problem(where: str, reason: str) -> None:
        if strict:
            raise ExtractError(f"{where}: {reason}")
        problems.append({"location": where, "reason": reason})

    if spec.is_dir():
        files = spec.rglob("*") if recursive else spec.iterdir()
        for f in files:
            if f.is_file() and f.suffix.lower() in VIDEO_EXTENSIONS and not f.name.startswith("."):
                vid = str(f.relative_to(spec).with_suffix("")).replace(os.sep, "__") if recursive else f.stem
                items.append(VideoItem(vid, f))
    elif spec.is_file():
        if spec.suffix.lower() in VIDEO_EXTENSIONS:
            raise UsageError(f"--videos {spec} is a video file: give the directory that holds the videos, or a "
                             "list file (one `path` or `id<TAB>path` per line)")
        if spec.suffix.lower() in FEATURE_EXTENSIONS:
            raise UsageError(f"--videos {spec} is a feature file, but this checkpoint's video encoder reads "
                             "pixels: give a directory of videos or a list file (feature files are the input of a "
                             "`features` video encoder)")
        try:
            lines = spec.read_text(encoding="utf-8").split("\n")
        except UnicodeDecodeError as exc:
            raise UsageError(f"--videos {spec}: not a UTF-8 text list file ({exc.reason} at byte {exc.start}); "
                             "give a directory of videos or a list file (one `path` or `id<TAB>path` per line)"
                             ) from None
        for lineno, raw in enumerate(lines, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            where = f"{spec}:{lineno}"
            if "\t" in line:
                vid, _, p = line.partition("\t")
                vid, p = vid.strip(), p.strip()
            else:
                vid, p = "", line
            path = Path(p) if os.path.isabs(p) else spec.parent / p
            vid = vid or path.stem
            reason = _valid_id(vid)
            if reason:
                problem(where, reason)
                continue
            items.append(VideoItem(vid, path))
    else:
        raise ExtractError(f"--videos {spec}: no such directory or list file")
    seen: dict[str, VideoItem] = {}
    unique = []
    for it in items:
        if it.video_id in seen:
            problem(str(it.path), f"duplicate video id {it.video_id!r} (also {seen[it.video_id].path}); skipped")
            continue
        seen[it.video_id] = it
        unique.append(it)
    unique.sort(key=lambda it: it.video_id)
    return unique, problems


# ------------------------------------------------------------------------------------------------ writing
@dataclass
class Result:
    video_id: str
    features: np.ndarray  # float32 [N, D]
    windows: np.ndarray  # float64 [N, 2]
    fps: float
    duration: float


class _Writer:
    """Common part: settings check, failure journal, the failures file."""

    def __init__(self, settings: dict[str, Any], failures_path: Path, journal: Path):
        self.settings = settings
        self.failures_path = failures_path
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

    def fail(self, item: VideoItem, reason: str) -> None:
        rec = {"video_id": item.video_id, "path": str(item.path), "reason": reason}
        atomic_write_text(self.journal / "failed" / f"{safe_name(item.video_id)}.json", json.dumps(rec))

    def _clear_failure(self, vid: str) -> None:
        f = self.journal / "failed" / f"{safe_name(vid)}.json"
        if f.exists():
            f.unlink()

    def write_failures(self, attempted: set[str], done: set[str]) -> list[dict[str, str]]:
        recs = []
        for f in sorted(q for q in (self.journal / "failed").glob("*.json") if not q.name.startswith(".")):
            try:
                rec = json.loads(f.read_text(encoding="utf-8"))
            except ValueError:
                continue
            if rec.get("video_id") in attempted and rec.get("video_id") not in done:
                recs.append(rec)
        recs.sort(key=lambda r: r["video_id"])
        text = "".join(json.dumps(r) + "\n" for r in recs)
        self.failures_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.failures_path, text)
        return recs


class H5Writer(_Writer):
    """HDF5 output through the journal (see the module docstring)."""

    def __init__(self, out: Path, settings: dict[str, Any], failures_path: Path):
        self.out = out
        self.settings = settings
        self._written: set[str] = set()
        found = _own_h5_attrs(out, "--out")  # refuses a foreign file before anything is created
        if found is not None:
            self._check_settings(found[0], out)
            self._written = found[1]
        super().__init__(settings, failures_path, out.with_name(out.name + ".parts"))
        self.parts = self.journal / "done"
        self.parts.mkdir(exist_ok=True)
        # This rank owns its journal and output name: temporary files left by a killed run can go (the caller
        # holds the output's lock; see run_extract).
        for stale in self.journal.rglob(".*.tmp-*"):
            stale.unlink(missing_ok=True)
        remove_stale_temporaries(out)
        meta = self.journal / "meta.json"
        if meta.is_file():
            self._check_settings(json.loads(meta.read_text(encoding="utf-8")), meta)
        else:
            atomic_write_text(meta, json.dumps(settings, indent=1))
        self.pending = 0

    def _parts(self) -> list[Path]:
        # Hidden names are temporary files of an interrupted atomic write: never journal entries.
        return sorted(q for q in self.parts.glob("*.npz") if not q.name.startswith("."))

    def done_ids(self, candidates: Optional[set[str]] = None) -> set[str]:
        ids = set(self._written)
        for q in self._parts():
            try:
                with np.load(q, allow_pickle=False) as z:
                    ids.add(str(z["video_id"]))
            except (OSError, ValueError, KeyError, EOFError):
                q.unlink(missing_ok=True)  # cannot happen with atomic writes; be safe anyway
        return ids

    def add(self, r: Result) -> None:
        _atomic_savez(self.parts / f"{safe_name(r.video_id)}.npz", video_id=np.array(r.video_id),
                      features=r.features.astype(np.float32), windows=r.windows.astype(np.float64),
                      fps=np.array(r.fps, np.float64), duration=np.array(r.duration, np.float64))
        self._clear_failure(r.video_id)
        self.pending += 1

    def assemble(self) -> int:
        """Rebuild ``out`` = previous ``out`` + journal, atomically; then drop the merged parts."""
        import h5py

        parts = self._parts()
        if not parts and self.out.exists():
            self.pending = 0
            return len(self._written)
        names: set[str] = set()
        with atomic_path(self.out) as tmp:
            with h5py.File(tmp, "w", libver=("v110", "latest")) as dst:
                dst.attrs["format"] = FEATURE_FORMAT
                dst.attrs["version"] = FEATURE_VERSION
                for k, v in self.settings.items():
                    if v is not None:
                        dst.attrs[k] = v
                journal_ids = {}
                for q in parts:
                    with np.load(q, allow_pickle=False) as z:
                        journal_ids[str(z["video_id"])] = q
                if self.out.exists():
                    with h5py.File(self.out, "r") as src:
                        for vid in src.keys():
                            if vid not in journal_ids:
                                src.copy(src[vid], dst, name=vid)
                                names.add(vid)
                for vid, q in sorted(journal_ids.items()):
                    with np.load(q, allow_pickle=False) as z:
                        d = dst.create_dataset(vid, data=np.asarray(z["features"], np.float32))
                        d.attrs["fps"] = float(z["fps"])
                        d.attrs["duration"] = float(z["duration"])
                        d.attrs["windows"] = np.asarray(z["windows"], np.float64)
                        for k, v in self.settings.items():
                            if v is not None:
                                d.attrs[k] = v
                    names.add(vid)
        for q in parts:  # merged: the HDF5 file is now their durable home
            q.unlink(missing_ok=True)
        self._written = names
        self.pending = 0
        return len(names)

    def finish(self, attempted: set[str]) -> list[dict[str, str]]:
        self.assemble()
        recs = self.write_failures(attempted, self._written)
        if not recs:
            shutil.rmtree(self.journal, ignore_errors=True)
        else:  # keep the failure journal so a rerun still knows; drop everything else
            shutil.rmtree(self.parts, ignore_errors=True)
        return recs


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
            _check_dir_output(out, "--out")  # a file, a folder of other files, a foreign meta.json: refused
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
            for stale in [*out.glob(".*.tmp-*"), *out.glob("_info/.*.tmp-*"), *self.journal.rglob(".*.tmp-*")]:
                stale.unlink(missing_ok=True)
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

    def add(self, r: Result) -> None:
        name = safe_name(r.video_id)
        feats = r.features.astype(np.float32)
        if self.fmt == "npz-dir":
            self._claim(f"{name}.npz")
            _atomic_savez(self.out / f"{name}.npz", features=feats, windows=r.windows.astype(np.float64),
                          fps=np.array(r.fps, np.float64), duration=np.array(r.duration, np.float64),
                          video_id=np.array(r.video_id))
        else:  # side info first, the .npy last: its presence marks the video done
            self._claim(f"_info/{name}.json", f"{name}.npy")
            info = {"video_id": r.video_id, "fps": r.fps, "duration": r.duration, "windows": r.windows.tolist()}
            atomic_write_text(self.out / "_info" / f"{name}.json", json.dumps(info))
            _atomic_save_npy(self.out / f"{name}.npy", feats)
        self._clear_failure(r.video_id)

    def assemble(self) -> int:
        return 0

    def close(self) -> None:
        """Fold this run's claims into the manifest (also after an error: what was written stays claimed)."""
        if not self._claims.closed:
            self._claims.close()
            _fold_claims(self.out, [self._claims_path])

    def finish(self, attempted: set[str]) -> list[dict[str, str]]:
        recs = self.write_failures(attempted, self.done_ids(attempted))
        self.close()
        if not recs:
            shutil.rmtree(self.journal, ignore_errors=True)
        return recs


# ------------------------------------------------------------------------------------------------ ownership
CLAIMS = "claims.txt"
MANIFEST_LOCK = f"{MANIFEST}.lock"
_H5_JOURNAL_ENTRIES = {"meta.json", "done", "failed"}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ExtractError(f"{path}: not valid JSON ({exc})") from None


@contextlib.contextmanager
def _manifest_lock(directory: Path):
    """A short blocking lock around a manifest update, so ranks folding their claims at once lose none."""
    import fcntl

    fd = os.open(directory / MANIFEST_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


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


def _own_h5_attrs(path: Path, flag: str) -> Optional[tuple[dict[str, Any], set[str]]]:
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


def _discard_h5_output(out: Path) -> None:
    """``--overwrite`` of an h5 output: remove the file (only a locvtp feature file) and its ``.parts`` journal
    (only when it holds nothing but journal entries)."""
    _own_h5_attrs(out, "--out")
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


def _check_dir_output(out: Path, flag: str) -> None:
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
        shown = ", ".join(visible[:5]) + (f" and {len(visible) - 5} more" if len(visible) > 5 else "")
        raise NotOwnedError(f"{flag} {out} is a directory of other files ({shown}) and no extraction: refusing to "
                            "write features into it; choose a new or empty directory")


def _discard_dir_output(out: Path) -> int:
    """``--overwrite`` of a directory output: remove exactly the files extractions wrote into it (their
    manifest, after folding the claims of killed runs); a user's file survives. Returns how many were removed."""
    if not out.exists() and not out.is_symlink():
        return 0
    _check_dir_output(out, "--out")
    _fold_claims(out, sorted(out.glob(f".journal-rank*/{CLAIMS}")))
    m = read_manifest(out)
    if m is None or m.writer != "extract":
        if (out / "meta.json").exists():
            raise NotOwnedError(f"--out {out} holds features but no ownership manifest ({MANIFEST}: written by an "
                                "older locvtp): --overwrite cannot tell its files from yours; delete it yourself "
                                "or choose another output")
        return 0
    return remove_owned(out, "extract")


# ------------------------------------------------------------------------------------------------ the run
@dataclass
class ExtractSummary:
    out: Path
    failures_path: Path
    total: int
    skipped_done: int
    extracted: int
    failed: int
    clips: int
    seconds: float  # whole run, model loading included
    list_problems: list[dict[str, str]]
    loop_seconds: float = 0.0  # decode + encode + journal + final assembly (what clips/s is measured on)


def _settings(ckpt: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The run settings written with the features (``ckpt``: the ``LocVTPPredictor`` or a loaded checkpoint)."""
    model = ckpt.model
    summary = model.summary() if hasattr(model, "summary") else type(model).__name__
    return {
        "embedding": "backbone" if args.backbone else "joint",
        "clip_seconds": float(args.clip_seconds),
        "stride_seconds": float(args.stride_seconds),
        "frames_per_clip": int(args.frames_per_clip),
        "frame_size": int(args.frame_size),
        "model": summary,
        "checkpoint_sha256": str(ckpt.sha256),
        "checkpoint": str(ckpt.path),
    }


def run_extract(args: argparse.Namespace, progress: bool = True) -> ExtractSummary:
    """The body of ``locvtp extract`` (arguments as parsed by :func:`build_parser`)."""
    from locvtp.device import resolve_device

    rank, world = world_info()
    t_start = time.perf_counter()
    device = resolve_device(args.device)
    # -- outputs: apart from the inputs, locked for the whole run (nothing is written before both hold) ------
    out = rank_path(Path(args.out), args.format, rank, world)
    # h5: next to this rank's file (feats.rank3.failures.jsonl, which `merge` picks up); dirs: per-rank name inside
    failures_path = Path(args.failures) if args.failures else default_failures_path(out, args.format, rank, world)
    if args.failures and world > 1:
        failures_path = failures_path.with_name(f"{failures_path.stem}.rank{rank}{failures_path.suffix}")
    inputs = {"--videos": args.videos, "--checkpoint": args.checkpoint}
    check_apart(Path(args.out), inputs)
    check_apart(out, inputs)
    check_apart(failures_path, inputs, out_flag="--failures")
    if failures_path.resolve() == out.resolve():
        raise UsageError(f"--failures {failures_path} is the --out file: choose another failures file")
    if args.overwrite and args.format != "h5" and world > 1:
        raise UsageError("--overwrite with a directory format under torchrun would race between ranks: "
                         f"run `locvtp extract --overwrite` once without torchrun, or delete {out} yourself")
    lock_target = out if args.format == "h5" or world <= 1 else out.with_name(f"{out.name}.rank{rank}")
    with OutputLock(lock_target, "extract"):
        return _run_locked(args, out, failures_path, rank, world, device, t_start, progress)


def _run_locked(args: argparse.Namespace, out: Path, failures_path: Path, rank: int, world: int, device: str,
                t_start: float, progress: bool) -> "ExtractSummary":
    """Load the model, list the inputs, open the writer (the caller holds the output's lock)."""
    from locvtp.predictor import LocVTPPredictor

    pred = LocVTPPredictor.from_checkpoint(args.checkpoint, device=device, threads=args.threads or None)
    # The checkpoint's preprocessing (the predictor reads it once); another window cut is allowed, frames per
    # clip or a frame size other than the checkpoint's are a UsageError naming both values.
    prep = pred.resolve_preprocessing(args.clip_seconds, args.stride_seconds, args.frames_per_clip, args.frame_size,
                                      flags={"frames_per_clip": "--frames-per-clip", "frame_size": "--frame-size"})
    args.clip_seconds, args.stride_seconds = prep.clip_seconds, prep.stride_seconds
    args.frames_per_clip, args.frame_size = prep.frames_per_clip, prep.frame_size
    pixels = pred.takes_pixels

    # -- inputs -------------------------------------------------------------------------------------------
    if pixels:
        items, problems = list_videos(args.videos, recursive=args.recursive, strict=args.strict)
    else:  # a features encoder: inputs are per-clip feature files (any format iter_features reads)
        recs = list(iter_features(args.videos, load=False))
        want = pred.input_width
        wrong = [r for r in recs if want is not None and r.dim != int(want)]
        if wrong:
            raise UsageError(f"--videos {args.videos}: video {wrong[0].video_id!r} has features of width "
                             f"{wrong[0].dim} ({len(wrong)} of {len(recs)} videos differ), the checkpoint's features "
                             f"encoder reads width {want} (model.video.in_dim)")
        items = [VideoItem(r.video_id, Path(args.videos)) for r in recs]
        problems = []
    if world > 1:
        items = items[rank::world]

    # -- outputs (this run holds the output's lock: see run_extract) ----------------------------------------
    if args.overwrite:  # only what an extraction wrote itself (see the module docstring)
        if args.format == "h5":
            _discard_h5_output(out)
        else:
            _discard_dir_output(out)
    settings = _settings(pred, args)
    if args.format == "h5":
        out.parent.mkdir(parents=True, exist_ok=True)
        writer: Any = H5Writer(out, settings, failures_path)
    else:
        writer = DirWriter(out, args.format, settings, failures_path, rank=rank, single_process=world <= 1,
                           emptied=bool(args.overwrite))
    try:
        with pred.thread_limit():  # --threads for the whole run (decoding resizes with torch too); restored after
            return _extract_loop(args, writer, items, problems, out, failures_path, rank, world, pred, prep,
                                 t_start, progress)
    finally:
        if isinstance(writer, DirWriter):
            writer.close()


def _extract_loop(args: argparse.Namespace, writer: Any, items: list[VideoItem], problems: list[dict[str, str]],
                  out: Path, failures_path: Path, rank: int, world: int, pred: Any, prep: Any,
                  t_start: float, progress: bool) -> "ExtractSummary":
    """Decode ahead, encode, write, flush; the per-video loop of ``locvtp extract`` (``pred``: the
    ``LocVTPPredictor``, ``prep``: the preprocessing resolved from the checkpoint and the arguments)."""
    pixels = pred.takes_pixels
    done = writer.done_ids({it.video_id for it in items})
    todo = [it for it in items if it.video_id not in done]
    skipped_done = len(items) - len(todo)

    def load(it: VideoItem) -> Any:
        if pixels:
            return pred.decode_video(it.path, prep)
        return read_features(it.path, it.video_id)

    def encode(it: VideoItem, data: Any) -> Result:
        if pixels:
            if data.clips.shape[0] == 0:
                raise ValueError("no clips: the video has no decodable frames")
            e = pred.encode_video(data, batch_clips=args.batch_clips, backbone=args.backbone)
            return Result(it.video_id, e.backbone if args.backbone else e.clips, data.windows, data.fps,
                          data.duration)
        e = pred.encode_video(data, features_are="input", batch_clips=args.batch_clips, backbone=args.backbone)
        return Result(it.video_id, e.backbone if args.backbone else e.clips, e.windows, data.fps, data.duration)

    extracted = failed = clips = 0
    t_loop = time.perf_counter()
    last_flush = time.monotonic()
    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), desc=f"extract{f' rank {rank}' if world > 1 else ''}", unit="video",
               disable=not progress, dynamic_ncols=True, mininterval=1.0)
    workers = max(1, int(args.decode_workers))
    prefetch = workers + 1
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        futures: list[tuple[VideoItem, Future]] = []
        nxt = 0
        while nxt < len(todo) or futures:
            while nxt < len(todo) and len(futures) < prefetch:
                futures.append((todo[nxt], pool.submit(load, todo[nxt])))
                nxt += 1
            it, fut = futures.pop(0)
            try:
                res = encode(it, fut.result())
                if not np.all(np.isfinite(res.features)):
                    raise ValueError("non-finite values in the features")
            except RECORDED_ERRORS as exc:  # lenient by design: record, continue (bugs still raise)
                if args.strict:
                    raise ExtractError(f"{it.path}: {type(exc).__name__}: {exc}") from exc
                writer.fail(it, f"{type(exc).__name__}: {exc}")
                failed += 1
            else:
                writer.add(res)
                extracted += 1
                clips += res.features.shape[0]
            bar.update(1)
            bar.set_postfix(ok=extracted, failed=failed, clips=clips)
            due_n = args.flush_every and writer.pending >= args.flush_every
            due_t = args.flush_seconds and time.monotonic() - last_flush >= args.flush_seconds and writer.pending
            if due_n or due_t:
                writer.assemble()
                last_flush = time.monotonic()
    bar.close()
    attempted = {it.video_id for it in items}
    recs = writer.finish(attempted)
    t_end = time.perf_counter()
    return ExtractSummary(out, failures_path, len(items), skipped_done, extracted, len(recs), clips,
                          t_end - t_start, problems, t_end - t_loop)


def build_parser() -> argparse.ArgumentParser:
    p = cliargs.ArgumentParser(
        prog="locvtp extract",
        description="Clip features of every video in a directory or list (resumable; see docs/usage.md).",
    )
    p.add_argument("--checkpoint", required=True, help="checkpoint directory or run directory")
    p.add_argument("--videos", required=True,
                   help="directory of videos, or a list file (one `path` or `id<TAB>path` per line); for a "
                        "features-encoder model: a feature file/dir")
    p.add_argument("--out", required=True, help="output .h5 file, or directory for npy-dir / npz-dir")
    p.add_argument("--format", choices=FORMATS, default="h5")
    p.add_argument("--clip-seconds", type=cliargs.positive_float, default=None,
                   help="clip length (default: checkpoint's data config)")
    p.add_argument("--stride-seconds", type=cliargs.positive_float, default=None,
                   help="clip stride (default: = clip length)")
    p.add_argument("--frames-per-clip", type=cliargs.positive_int, default=None,
                   help="default: checkpoint's data config")
    p.add_argument("--frame-size", type=cliargs.positive_int, default=None, help="default: checkpoint's data config")
    p.add_argument("--backbone", action="store_true", help="write pre-projection backbone features instead of "
                   "the joint-space embeddings")
    p.add_argument("--batch-clips", type=cliargs.positive_int, default=64, help="clips per encoder forward")
    p.add_argument("--decode-workers", type=cliargs.positive_int, default=1,
                   help="threads decoding ahead of the encoder")
    p.add_argument("--threads", type=cliargs.nonnegative_int, default=0, help="torch CPU threads (0: torch default)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--recursive", action="store_true", help="search --videos DIR recursively")
    p.add_argument("--failures", default=None, help="failures file (default next to --out)")
    p.add_argument("--flush-every", type=cliargs.nonnegative_int, default=0,
                   help="h5: reassemble the file every N videos (0: off)")
    p.add_argument("--flush-seconds", type=cliargs.nonnegative_float, default=600.0,
                   help="h5: reassemble at most this often (0: off)")
    p.add_argument("--overwrite", action="store_true",
                   help="discard what an earlier extraction wrote to --out instead of resuming (never other files)")
    p.add_argument("--strict", action="store_true", help="fail on the first bad video instead of recording it")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    """``locvtp extract``; errors are :class:`~locvtp.errors.LocVTPError` s that ``locvtp.cli`` prints as one line."""
    args = build_parser().parse_args(argv)
    s = run_extract(args, progress=not args.no_progress)
    for pr in s.list_problems:
        print(f"locvtp extract: skipped input {pr['location']}: {pr['reason']}", file=sys.stderr)
    rate = s.clips / s.loop_seconds if s.loop_seconds > 0 else 0.0
    print(f"extracted {s.extracted} videos ({s.clips} clips, {rate:.1f} clips/s), {s.skipped_done} already done, "
          f"{s.failed} failed of {s.total} -> {s.out}", file=sys.stderr)
    if s.failed:
        print(f"failed videos: see {s.failures_path}", file=sys.stderr)
    return 0


# ------------------------------------------------------------------------------------------------ merge
def merge_shards(shards: list[Path], out: Path, failures_out: Optional[Path] = None,
                 progress: bool = True, overwrite: bool = False) -> tuple[int, int]:
    """Merge per-rank HDF5 files into ``out`` (atomic). Returns (videos, failures).

    All shards must share the run settings; a video present in two shards must have identical features.
    ``out`` must not be one of the shards (its videos would be lost); an existing ``out`` is replaced only with
    ``overwrite`` and only when it is a locvtp feature file. The merge holds ``out``'s lock.
    """
    if not shards:
        raise UsageError("merge: no shard files given")
    out = Path(out)
    for sh in shards:
        if Path(sh).resolve() == out.resolve():
            raise UsageError(f"--out {out} is also one of the input shards: merging into it would overwrite its "
                             "videos; write the merged file to another path")
    fpath = Path(failures_out) if failures_out else out.with_name(f"{out.stem}.failures.jsonl")
    for sh in shards:
        if Path(sh).resolve() == fpath.resolve():
            raise UsageError(f"--failures {fpath} is one of the input shards: choose another failures file")
    with OutputLock(out, "merge"):
        remove_stale_temporaries(out)
        if out.exists() or out.is_symlink():
            if not overwrite:
                raise UsageError(f"--out {out} exists: pass --overwrite to replace it (only a feature file "
                                 "`locvtp extract`/`merge` wrote is replaced)")
            _own_h5_attrs(out, "--out")  # refuses anything else
        return _merge_locked([Path(sh) for sh in shards], out, fpath, progress)


def _merge_locked(shards: list[Path], out: Path, fpath: Path, progress: bool) -> tuple[int, int]:
    import h5py

    ref: Optional[dict[str, Any]] = None
    seen: dict[str, Path] = {}
    fail_recs: dict[str, dict] = {}
    with atomic_path(out) as tmp:
        with h5py.File(tmp, "w", libver=("v110", "latest")) as dst:
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
                    try:
                        lines = ff.read_text(encoding="utf-8").splitlines()
                    except UnicodeDecodeError as exc:
                        raise ExtractError(f"{ff}: not a UTF-8 failures file ({exc.reason} at byte {exc.start})"
                                           ) from None
                    for ln in lines:
                        try:
                            rec = json.loads(ln)
                            fail_recs[rec["video_id"]] = rec
                        except (ValueError, KeyError, TypeError):
                            continue
    recs = [r for v, r in sorted(fail_recs.items()) if v not in seen]
    atomic_write_text(fpath, "".join(json.dumps(r) + "\n" for r in recs))
    return len(seen), len(recs)


def tqdm_maybe(it: list, progress: bool, desc: str) -> Any:
    if not progress:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, desc=desc, unit="video", leave=False)


def merge_main(argv: list[str] | None = None) -> int:
    p = cliargs.ArgumentParser(prog="locvtp merge", description="Merge per-rank HDF5 feature shards "
                               "(`locvtp extract` under torchrun) into one file.")
    p.add_argument("shards", nargs="+", help="shard files or glob patterns (e.g. 'feats.rank*.h5')")
    p.add_argument("--out", required=True)
    p.add_argument("--failures", default=None, help="merged failures file (default <out stem>.failures.jsonl)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out (only a feature file `locvtp extract`/`merge` wrote)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    out = Path(args.out)
    shards: list[Path] = []
    for s in args.shards:
        matches = sorted(glob.glob(s)) if any(c in s for c in "*?[") else [s]
        if not matches:
            raise UsageError(f"no file matches the shard pattern {s!r}")
        if len(matches) > 1 or matches[0] != s:
            hit = [m for m in matches if Path(m).resolve() == out.resolve()]
            if hit:
                raise UsageError(f"--out {out} matches the shard pattern {s!r}: merging into an input would "
                                 "overwrite its videos; choose an --out the pattern does not match")
        shards += [Path(m) for m in matches]
    shards = list(dict.fromkeys(shards))
    n, nf = merge_shards(shards, out, Path(args.failures) if args.failures else None,
                         progress=not args.no_progress, overwrite=args.overwrite)
    print(f"merged {len(shards)} shards: {n} videos, {nf} failures -> {out}", file=sys.stderr)
    return 0


__all__ = [
    "ExtractError", "FeatureRecord", "VideoItem", "detect_format", "feature_info", "iter_features", "list_videos",
    "main", "merge_main", "merge_shards", "read_features", "run_extract",
]
