"""The server's state: which videos exist, their cached embeddings, upload jobs, the work directory.

Why a registry of ids instead of paths: a request names a video by an id this module handed out (a library
video's path relative to ``--videos``, or ``upload:<32 hex>`` for an upload) and the id is *looked up*, never
joined to a directory. A request therefore cannot reach a file outside ``--videos``, ``--index`` and the work
directory whatever it sends (``../../etc/passwd``, an absolute path, a symlink inside ``--videos`` that points
out: such links are not listed).

Work directory layout (every file named by the server)::

    uploads/<32 hex><.ext>   uploaded videos (the extension from an allow-list, else .bin)
    media/<key>.mp4          H.264 copies for playback of videos a browser cannot play
    thumbs/<key>-<ms>.jpg    search thumbnails
    embeddings/<sha16>/      clip embeddings of the checkpoint with that fingerprint, computed once: an
                             npz-dir feature store (``<key>.npz`` per video file, ``meta.json`` with the
                             checkpoint's fingerprint and preprocessing) that ``ground --features``,
                             ``index`` and ``evaluate --features`` read like ``extract``'s output
    tmp/                     uploads being received; Python's tempfile directory of the server process
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from locvtp.data.videoids import VIDEO_EXTENSIONS, find_video, is_video_name
from locvtp.errors import LocVTPError, UsageError
from locvtp.files import check_apart

VIDEO_SUFFIXES = VIDEO_EXTENSIONS  # the one list (locvtp.data.videoids), under the name this module exported
UPLOAD_ID = re.compile(r"^upload:([0-9a-f]{32})$")
MAX_LIBRARY = 100_000
ENCODE_CHUNK = 64  # clips per encode call of an upload: the unit of its progress


class NotFound(LocVTPError, KeyError):
    """A video, job or file id the server does not know (HTTP 404)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "not found"


class Busy(LocVTPError, RuntimeError):
    """The video is being prepared (HTTP 409)."""


@dataclass
class Video:
    id: str
    name: str
    path: Path
    source: str  # "library" | "upload"
    key: str  # names its cached files: changes when the file changes
    added: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "source": self.source}


@dataclass
class Job:
    """Preparing one upload: transcoding (when needed), decoding, encoding. ``progress`` in [0, 1]."""

    id: str
    video: str
    name: str
    state: str = "queued"  # queued | transcoding | decoding | encoding | ready | error
    progress: float = 0.0
    message: str = ""
    clips: int = 0
    started: float = field(default_factory=time.time)
    finished: Optional[float] = None
    done: threading.Event = field(default_factory=threading.Event)

    def to_json(self) -> dict[str, Any]:
        d = {"id": self.id, "video": self.video, "name": self.name, "state": self.state,
             "progress": round(float(self.progress), 4), "message": self.message, "clips": self.clips,
             "seconds": round((self.finished or time.time()) - self.started, 3)}
        return d


def file_key(path: Path, salt: str = "") -> str:
    st = path.stat()
    raw = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{salt}"
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


def _inside(path: Path, root: Path) -> bool:
    try:
        r = path.resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symbolic link loop (Python < 3.13)
        return False
    return r == root or root in r.parents


class Library:
    """Videos (``--videos`` and uploads), embeddings cache, upload jobs. Thread-safe."""

    def __init__(self, predictor: Any, work_dir: Path, videos_dir: Optional[Path] = None,
                 index_dir: Optional[Path] = None, cache_videos: int = 256):
        self.p = predictor
        self.videos_dir = videos_dir.resolve() if videos_dir is not None else None
        self.index_dir = index_dir.resolve() if index_dir is not None else None
        self.work = Path(work_dir).resolve()
        check_apart(self.work, {"--videos": self.videos_dir, "--index": self.index_dir}, out_flag="--work-dir")
        for sub in ("uploads", "media", "thumbs", "embeddings", "tmp"):
            (self.work / sub).mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._video_locks: dict[str, threading.Lock] = {}
        self._videos: dict[str, Video] = {}
        self._by_stem: dict[str, str] = {}
        self._emb: "OrderedDict[str, Any]" = OrderedDict()
        self._store_lock = threading.Lock()
        self._writer: Any = None  # the embedding store's DirWriter, opened at the first write
        self._cache_videos = int(cache_videos)
        self.jobs: dict[str, Job] = {}
        self._errors: dict[str, str] = {}  # video id -> why it cannot be used (a failed upload)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="locvtp-encode")
        self._scanned = 0.0
        self._index_sources = self._read_index_sources()
        self.rescan(force=True)
        self._adopt_uploads()

    # -- registry -----------------------------------------------------------------------------------------
    def rescan(self, force: bool = False) -> None:
        """List ``--videos`` again (at most every 2 s unless ``force``): files added while serving appear."""
        if self.videos_dir is None or (not force and time.time() - self._scanned < 2.0):
            return
        found: dict[str, Video] = {}
        root = self.videos_dir
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for fn in sorted(filenames):
                if not is_video_name(fn):
                    continue
                path = Path(dirpath) / fn
                if not _inside(path, root) or not path.is_file():
                    continue  # a link out of --videos is never served
                rel = path.relative_to(root).as_posix()
                found[rel] = Video(rel, rel, path, "library", "")
                if len(found) >= MAX_LIBRARY:
                    break
        with self._lock:
            keep = {k: v for k, v in self._videos.items() if v.source == "upload"}
            for k, v in found.items():
                old = self._videos.get(k)
                keep[k] = old if old is not None and old.source == "library" else v
            self._videos = keep
            self._by_stem = {}
            for k, v in found.items():
                self._by_stem.setdefault(Path(k).with_suffix("").as_posix(), k)
                self._by_stem.setdefault(Path(k).stem, k)
            self._scanned = time.time()

    def _adopt_uploads(self) -> None:
        """Uploads of an earlier run in the same ``--work-dir`` stay available."""
        for path in sorted((self.work / "uploads").iterdir()):
            m = re.match(r"^([0-9a-f]{32})(\.[a-z0-9]+)$", path.name)
            if m and path.is_file():
                vid = f"upload:{m.group(1)}"
                self._videos[vid] = Video(vid, f"upload {m.group(1)[:8]}{m.group(2)}", path, "upload", "")

    def list(self) -> list[dict[str, Any]]:
        self.rescan()
        with self._lock:
            vids = sorted(self._videos.values(), key=lambda v: (v.source != "upload", -v.added if v.source ==
                                                                   "upload" else 0, v.id))
            out = []
            for v in vids:
                d = v.to_json()
                d["cached"] = self._emb_key(v) in self._emb if v.key else False
                job = self.jobs.get(v.id)
                if job is not None:
                    d["job"] = job.to_json()
                out.append(d)
            return out

    def get(self, video_id: Any) -> Video:
        if not isinstance(video_id, str) or not video_id or len(video_id) > 1024:
            raise NotFound("no video id given" if not video_id else "unknown video id")
        with self._lock:
            v = self._videos.get(video_id)
        if v is None:
            self.rescan()
            with self._lock:
                v = self._videos.get(video_id)
        if v is None:
            raise NotFound(f"unknown video {video_id!r}: pick one of GET /api/videos")
        if video_id in self._errors:
            raise UsageError(self._errors[video_id])
        if not v.path.is_file():
            raise NotFound(f"video {video_id!r} is gone from the disk")
        if not v.key:
            v.key = file_key(v.path)
        return v

    def _read_index_sources(self) -> dict[str, str]:
        """``{video id: file}`` the index recorded where an id cannot lead back to its file (``video_sources`` in
        its meta.json, from the feature store: see :mod:`locvtp.data.videoids`)."""
        if self.index_dir is None:
            return {}
        try:
            meta = json.loads((self.index_dir / "meta.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        src = meta.get("video_sources") if isinstance(meta, dict) else None
        return {str(k): str(v) for k, v in src.items()} if isinstance(src, dict) else {}

    def _library_id(self, path: Path) -> Optional[str]:
        """The registry id of ``path`` (a file under ``--videos``), or None when it is not a listed library video."""
        if self.videos_dir is None:
            return None
        for p in (path, Path(os.path.realpath(path.parent)) / path.name):
            try:
                rel = p.relative_to(self.videos_dir).as_posix()
            except ValueError:
                continue
            with self._lock:
                v = self._videos.get(rel)
            if v is not None and v.source == "library":
                return rel
        return None

    def for_index_video(self, index_video_id: str) -> Optional[str]:
        """The library id of the video an index names, or None when no video under ``--videos`` is it.

        By the one id rule every command shares (:func:`locvtp.data.videoids.find_video` under ``--videos``, with
        the index's recorded ``video_sources`` first: ``sub dir__clip 3`` -> ``sub dir/clip 3.mp4``); else, for an
        index of a flat extraction of one subfolder, the video of that relative path or file name anywhere under
        ``--videos``. The result is always a listed library video (never a path outside ``--videos``)."""
        self.rescan()
        if self.videos_dir is not None:
            path = find_video(self.videos_dir, index_video_id, self._index_sources)
            lib_id = self._library_id(path) if path is not None else None
            if lib_id is not None:
                return lib_id
        with self._lock:
            v = self._videos.get(index_video_id)
            if v is not None and v.source == "library":
                return index_video_id
            return self._by_stem.get(index_video_id) or self._by_stem.get(Path(index_video_id).stem)

    def video_lock(self, key: str) -> threading.Lock:
        with self._lock:
            return self._video_locks.setdefault(key, threading.Lock())

    # -- embeddings -----------------------------------------------------------------------------------------
    def _emb_key(self, v: Video) -> str:
        return f"{v.key}-{(self.p.sha256 or 'nosha')[:16]}"

    @property
    def store(self) -> Path:
        """This checkpoint's embedding cache: an ``npz-dir`` feature store (``locvtp.featurestore``) whose
        ``meta.json`` records the checkpoint's fingerprint and preprocessing; a video's id in it is its key."""
        return self.work / "embeddings" / (self.p.sha256 or "nosha")[:16]

    def cached_embedding(self, v: Video) -> Any:
        with self._lock:
            e = self._emb.get(self._emb_key(v))
            if e is not None:
                self._emb.move_to_end(self._emb_key(v))
            return e

    def embedding(self, v: Video, progress: Optional[Callable[[str, float], None]] = None) -> Any:
        """The video's clip embeddings, computed once (memory, then the feature store :attr:`store` on disk)
        per checkpoint."""
        e = self.cached_embedding(v)
        if e is not None:
            return e
        key = self._emb_key(v)
        with self.video_lock(key):  # one computation per video, however many requests ask at once
            e = self.cached_embedding(v)
            if e is None:
                e = self._load_embedding(v)
                if e is None:
                    e = self._compute(v, progress)
                    self._save_embedding(v, e)
                with self._lock:
                    self._emb[key] = e
                    while len(self._emb) > self._cache_videos:
                        self._emb.popitem(last=False)
        return e

    def _compute(self, v: Video, progress: Optional[Callable[[str, float], None]]) -> Any:
        from locvtp.featurestore.record import ClipFeatures
        from locvtp.inference import DecodedClips

        say = progress or (lambda stage, frac: None)
        say("decoding", 0.0)
        dec = self.p.decode_video(v.path)  # the checkpoint's preprocessing, read by the predictor
        n = len(dec.clips)
        if n == 0:
            raise UsageError(f"{v.name}: too short to hold one clip of {self.p.preprocessing.clip_seconds:g} s")
        independent = getattr(getattr(self.p.model, "video_encoder", None), "temporal", None) is None
        if not independent or n <= ENCODE_CHUNK:
            say("encoding", 0.0)
            feats = self.p.encode_clips(dec).features
        else:  # clips are encoded independently: chunks give the same numbers, and progress
            parts = []
            for lo in range(0, n, ENCODE_CHUNK):
                say("encoding", lo / n)
                sub = DecodedClips(dec.clips[lo: lo + ENCODE_CHUNK], dec.windows[lo: lo + ENCODE_CHUNK], dec.fps,
                                   dec.duration)
                parts.append(self.p.encode_clips(sub).features)
            feats = np.concatenate(parts)
        say("encoding", 1.0)
        return ClipFeatures(v.key, feats, dec.windows, dec.fps, dec.duration, embedding="joint")

    def _load_embedding(self, v: Video) -> Any:
        """The video's record in :attr:`store`, or None (absent, unreadable, not joint embeddings: recomputed)."""
        from locvtp.featurestore import read_features, safe_name

        if not (self.store / f"{safe_name(v.key)}.npz").is_file():
            return None
        try:
            rec = read_features(self.store, v.key)
        except (OSError, ValueError, KeyError, LocVTPError):
            return None
        return rec if rec.embedding == "joint" else None

    def _save_embedding(self, v: Video, e: Any) -> None:
        """Write ``e`` into :attr:`store` with the feature store's writer (atomic, claimed in its manifest)."""
        from locvtp.featurestore import DirWriter

        with self._store_lock:
            if self._writer is None:
                out = self.store
                out.parent.mkdir(parents=True, exist_ok=True)
                self._writer = DirWriter(out, "npz-dir", self.p.feature_settings(), out / "failures.jsonl")
            self._writer.add(e, source=str(v.path))

    # -- playback and thumbnails ----------------------------------------------------------------------------
    def playable_path(self, v: Video, progress: Optional[Callable[[float], None]] = None) -> Path:
        """The file a browser plays: the video itself, or its cached H.264 MP4 copy (made once)."""
        from locvtp.serve import media

        out = self.work / "media" / f"{v.key}.mp4"
        if out.is_file():
            return out
        with self.video_lock(f"media-{v.key}"):
            if out.is_file():
                return out
            if media.is_playable(media.describe(v.path)):
                return v.path
            return media.transcode_h264(v.path, out, progress=progress)

    def thumbnail(self, v: Video, seconds: float) -> Path:
        from locvtp.serve import media

        ms = int(round(max(0.0, float(seconds)) * 1000))
        out = self.work / "thumbs" / f"{v.key}-{ms}.jpg"
        if out.is_file():
            return out
        with self.video_lock(f"thumb-{v.key}-{ms}"):
            if not out.is_file():
                media.thumbnail_jpeg(v.path, seconds, out)
        return out

    # -- uploads --------------------------------------------------------------------------------------------
    def new_upload_path(self, filename: str) -> tuple[str, Path]:
        """A server-chosen id and temporary path for an upload (``filename`` only chooses the extension)."""
        hexid = uuid.uuid4().hex
        return hexid, self.work / "tmp" / f"{hexid}.part"

    def add_upload(self, hexid: str, part: Path, filename: str) -> Video:
        suffix = Path(str(filename or "")).suffix.lower()
        suffix = suffix if suffix in VIDEO_SUFFIXES else ".bin"
        final = self.work / "uploads" / f"{hexid}{suffix}"
        os.replace(part, final)
        shown = re.sub(r"[^\w.\- ()\[\]]+", "_", Path(str(filename or "upload")).name)[:80] or "upload"
        vid = f"upload:{hexid}"
        v = Video(vid, shown, final, "upload", file_key(final))
        with self._lock:
            self._videos[vid] = v
        return v

    def start_job(self, v: Video, on_error: Optional[Callable[[Video], None]] = None) -> Job:
        job = Job(uuid.uuid4().hex, v.id, v.name)
        with self._lock:
            self.jobs[v.id] = job
            self.jobs[job.id] = job
        self._pool.submit(self._run_job, job, v)
        return job

    def _run_job(self, job: Job, v: Video) -> None:
        # Progress: playback copy 0-30 %, decoding 30-50 %, encoding 50-100 %.
        def stage(name: str, lo: float, hi: float) -> Callable[[float], None]:
            def cb(frac: float) -> None:
                job.state = name
                job.progress = lo + (hi - lo) * max(0.0, min(1.0, frac))
            return cb

        try:
            job.state = "transcoding"
            self.playable_path(v, stage("transcoding", 0.0, 0.3))
            dec_cb, enc_cb = stage("decoding", 0.3, 0.5), stage("encoding", 0.5, 1.0)

            def progress(name: str, frac: float) -> None:
                (dec_cb if name == "decoding" else enc_cb)(frac)

            emb = self.embedding(v, progress)
            job.clips = int(emb.features.shape[0])
            job.state, job.progress, job.message = "ready", 1.0, f"{job.clips} clips encoded"
        except Exception as exc:  # noqa: BLE001 (any failure is the job's message; the server keeps serving)
            msg = str(getattr(exc, "reason", "") or exc) or type(exc).__name__
            job.state, job.message = "error", f"{v.name}: {msg}"
            with self._lock:
                self._errors[v.id] = job.message
            try:
                v.path.unlink(missing_ok=True)  # a file that cannot be used is not kept
            except OSError:
                pass
        finally:
            job.finished = time.time()
            job.done.set()

    def job(self, job_id: str) -> Job:
        with self._lock:
            j = self.jobs.get(job_id) if isinstance(job_id, str) else None
        if j is None:
            raise NotFound(f"unknown job {job_id!r}")
        return j

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._store_lock:  # what the store's writer claimed goes into its manifest; its journal goes
            if self._writer is not None:
                self._writer.finish(set())
                self._writer = None


def index_summary(idx: Any) -> dict[str, Any]:
    return {"rows": int(len(idx)), "videos": int(len(idx.videos)), "dim": int(idx.dim), "kind": str(idx.kind),
            "backend": str(idx.backend)}


def dumps(obj: Any) -> str:
    return json.dumps(obj)


__all__ = ["Busy", "Job", "Library", "NotFound", "UPLOAD_ID", "VIDEO_SUFFIXES", "Video", "file_key"]
