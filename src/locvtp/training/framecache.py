"""The frame cache (``data.cache=true``): every frame of every video of a corpus decoded once, at ``data.frame_size``
on the short side, into memory-mapped uint8 files that every rank and loader worker maps without copying.

Why it is built like the prepared corpus's other caches (:func:`locvtp.training.chunks.chunked_array`): decoding
every video is the one job of a launch whose time grows with the corpus. The videos, sorted by id, are cut into
chunks; each chunk is decoded by one worker process into its own piece (``pieces/NNNNNNN.u8``, written to a
temporary and ``os.replace``d, then its index part ``videos.parts/NNNNNNN.npz``: a chunk is done when its part
exists, so nothing half-written is ever read and a killed build redoes only the chunks without a part).
``share=(i, N)`` decodes every N-th chunk (``locvtp prepare --shard i/N`` on N machines, or the N ranks of a
``torchrun``), ``workers`` processes decode one share's chunks in parallel, and the first process that finds every
part writes ``times.npy`` and ``index.json`` — the latter last: it marks the cache complete. No piece is ever
copied, so the cache takes the decoded frames' size on disk once.

Layout of ``frames_{size}px_{key}/`` (format 3): ``pieces/*.u8`` (each video's frames [n, h, w, 3] raw, one
after the other: the short side is ``size`` and the aspect ratio is kept, so a random crop stays possible),
``times.npy`` (float64, every frame's time), ``index.json`` (``{vid: [byte_offset_in_piece, first_frame,
num_frames, duration, h, w, piece]}``, the pieces, the unreadable videos). Format 2 (one ``frames.u8``, six
fields per video), written by earlier versions by rank 0 alone, is still read. The key covers the frame size and
every video file's path, size and modification time.
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import os
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np

from locvtp.files import atomic_path, atomic_write_json, remove_temporaries_in
from locvtp.training.chunks import chunked_array
from locvtp.training.records import BadSample, BadSampleError, STRICT_NOTE, _reason

FORMAT = 3
MAX_PIECES = 1024  # chunks of a cache, up to MAX_CHUNK videos each (more videos: bigger chunks)
MAX_CHUNK = 256
OPEN_PIECES = 32  # memory maps a process keeps open at once (each holds a file descriptor)


class FrameCache:
    """Read side: clips of any video come from the same ``sample_clips`` that file decoding uses, so a cached run
    sees the clips a file-decoding run sees (tested). Pieces are mapped lazily, once per (worker) process."""

    kind = "pixels"

    def __init__(self, directory: Path, frames_per_clip: int, size: int):
        self.directory = Path(directory)
        meta = json.loads((self.directory / "index.json").read_text(encoding="utf-8"))
        self.index: dict[str, list] = meta["videos"]
        self.durations = {v: float(x[3]) for v, x in self.index.items()}
        # format 2: one frames.u8 of total_bytes; format 3: [file, bytes] per piece
        self.pieces: list[list] = meta.get("pieces") or [["frames.u8", int(meta["total_bytes"])]]
        self.bad = [BadSample(**b) for b in meta.get("bad", [])]
        self.frames_per_clip, self.size = frames_per_clip, size
        self._maps: OrderedDict[int, np.ndarray] = OrderedDict()
        self._times: Optional[np.ndarray] = None

    def __getstate__(self) -> dict:  # never pickle the mappings into workers
        d = dict(self.__dict__)
        d["_maps"], d["_times"] = OrderedDict(), None
        return d

    def _piece(self, k: int) -> np.ndarray:
        m = self._maps.get(k)
        if m is None:
            name, nbytes = self.pieces[k]
            m = (np.memmap(self.directory / name, dtype=np.uint8, mode="r", shape=(int(nbytes),)) if int(nbytes)
                 else np.zeros(0, dtype=np.uint8))
            self._maps[k] = m
            if len(self._maps) > OPEN_PIECES:  # least recently used first
                self._maps.popitem(last=False)
        else:
            self._maps.move_to_end(k)
        return m

    def frames(self, vid: str) -> tuple[np.ndarray, np.ndarray]:
        entry = self.index[vid]
        offset, first, n, _, h, w = entry[:6]
        piece = int(entry[6]) if len(entry) > 6 else 0
        if self._times is None:
            self._times = np.load(self.directory / "times.npy", mmap_mode="r")
        frames = self._piece(piece)[offset:offset + n * h * w * 3].reshape(n, h, w, 3)
        return frames, np.asarray(self._times[first:first + n])

    def clips(self, vid: str, windows: np.ndarray, jitter: bool, rng: np.random.Generator) -> np.ndarray:
        from locvtp.data.video import sample_clips

        frames, times = self.frames(vid)
        return sample_clips(frames, times, windows, self.frames_per_clip, self.size, jitter, rng,
                            duration=self.durations[vid], source=vid)

    @staticmethod
    def key(paths: dict[str, Path], size: int, layout: int = 3, stamp: Optional[bytes] = None) -> str:
        """Layout 2: per-video h x w in one file (earlier versions); layout 3: pieces (this one). ``stamp``:
        :func:`video_stamp` of ``paths``, when the caller has it (one ``stat`` per video for every key)."""
        h = hashlib.sha256(f"layout={layout}|size={size}".encode())
        h.update(video_stamp(paths) if stamp is None else stamp)
        return h.hexdigest()[:16]

    @classmethod
    def find(cls, roots: Iterable[Path], paths: dict[str, Path], frames_per_clip: int, size: int,
             stamp: Optional[bytes] = None) -> Optional["FrameCache"]:
        """A complete cache of these videos under one of ``roots`` (this format, else an earlier one), or None."""
        roots, stamp = [Path(r) for r in roots], video_stamp(paths) if stamp is None else stamp
        for layout in (3, 2):
            key = cls.key(paths, size, layout, stamp)
            for r in roots:
                d = r / f"frames_{size}px_{key}"
                if (d / "index.json").is_file():
                    return cls(d, frames_per_clip, size)
        return None

    @classmethod
    def build(cls, cache_root: Path, paths: dict[str, Path], frames_per_clip: int, size: int,
              strict: bool = False, progress: bool = True, share: tuple[int, int] = (0, 1), workers: int = 0,
              wait: bool = True, chunk: Optional[int] = None, stamp: Optional[bytes] = None
              ) -> tuple[Optional["FrameCache"], list[BadSample]]:
        """Decode this process's share of the videos (or reuse a complete cache); with ``wait``, wait for the other
        shares and return the cache and its unreadable videos, else ``(None, [])`` when a share is still missing.
        ``strict``: the first unreadable video raises :class:`BadSampleError`."""
        final = Path(cache_root) / f"frames_{size}px_{cls.key(paths, size, stamp=stamp)}"
        if (final / "index.json").is_file():
            done = cls(final, frames_per_clip, size)
            return done, done.bad
        vids = sorted(paths)
        chunk = chunk or int(min(MAX_CHUNK, max(1, math.ceil(len(vids) / MAX_PIECES))))  # a function of the list
        (final / "pieces").mkdir(parents=True, exist_ok=True)
        listing = final / "videos.json"
        if not listing.is_file():  # what the workers decode (identical for every share: written by whoever is first)
            atomic_write_json(listing, {"size": size, "chunk": chunk, "videos": [[v, str(paths[v])] for v in vids]})
        job = _DecodeJob(str(final), int(size), int(chunk), bool(strict))
        arrays = chunked_array(final, "videos", len(vids), chunk, job, share, workers, progress, wait,
                               desc="decoding videos into the frame cache")
        if arrays is None and not all((final / "videos.parts" / f"{i:07d}.npz").is_file()
                                      for i in range(max(1, math.ceil(len(vids) / chunk)))):
            return None, []
        if arrays is None:  # every share is done (this one last): assemble now
            arrays = chunked_array(final, "videos", len(vids), chunk, job, share, 0, False, True)
        if not (final / "index.json").is_file():
            _write_index(final, vids, paths, arrays, chunk, size)
        done = cls(final, frames_per_clip, size)
        return done, done.bad


def video_stamp(paths: dict[str, Path]) -> bytes:
    """What the key says of the video files: id, size and modification time of each (-1: missing)."""
    parts = []
    for vid in sorted(paths):
        st = paths[vid].stat() if paths[vid].exists() else None
        parts.append(f"|{vid}:{st.st_size if st else -1}:{int(st.st_mtime) if st else -1}")
    return "".join(parts).encode()


def _write_index(final: Path, vids: list[str], paths: dict[str, Path], arrays: dict[str, np.ndarray], chunk: int,
                 size: int) -> None:
    """``times.npy`` and then ``index.json`` (the completion mark) from every chunk's part. Several processes may
    get here at once: they write the same bytes, each atomically."""
    n = arrays["n"].astype(np.int64)
    first = np.concatenate([[0], np.cumsum(n)[:-1]]) if len(n) else n
    errors = {int(i): str(m) for i, m in zip(arrays["err_idx"], arrays["err_msg"])}
    index = {v: [int(arrays["offset"][k]), int(first[k]), int(n[k]), float(arrays["duration"][k]),
                 int(arrays["h"][k]), int(arrays["w"][k]), k // chunk]
             for k, v in enumerate(vids) if k not in errors}
    n_pieces = max(1, math.ceil(len(vids) / chunk))
    pieces = [[f"pieces/{p:07d}.u8", os.path.getsize(final / "pieces" / f"{p:07d}.u8")] for p in range(n_pieces)]
    bad = [BadSample("video", str(paths[vids[k]]), msg, vids[k]) for k, msg in sorted(errors.items())]
    with atomic_path(final / "times.npy", suffix=".npy") as tmp:
        np.save(tmp, arrays["times"].astype(np.float64))
    remove_temporaries_in(final / "pieces")  # pieces of killed decodes (every piece is complete by now)
    atomic_write_json(final / "index.json", {
        "format": FORMAT, "size": size, "key": final.name.rsplit("_", 1)[-1], "total_frames": int(n.sum()),
        "total_bytes": int(sum(b for _, b in pieces)), "pieces": pieces, "videos": index,
        "bad": [asdict(b) for b in bad]})


@functools.lru_cache(maxsize=4)
def _listing(directory: str) -> list[list[str]]:
    return json.loads((Path(directory) / "videos.json").read_text(encoding="utf-8"))["videos"]


@dataclass(frozen=True)
class _DecodeJob:
    """Picklable: decode videos ``lo:hi`` of the cache's sorted list into piece ``lo // chunk``."""

    directory: str
    size: int
    chunk: int
    strict: bool

    def __call__(self, lo: int, hi: int) -> dict:
        from locvtp.data.video import decode_frames

        entries = _listing(self.directory)[lo:hi]
        k_n = len(entries)
        out = {"n": np.zeros(k_n, np.int64), "offset": np.zeros(k_n, np.int64), "duration": np.zeros(k_n),
               "h": np.zeros(k_n, np.int64), "w": np.zeros(k_n, np.int64)}
        times, err_idx, err_msg, written = [], [], [], 0
        with atomic_path(Path(self.directory) / "pieces" / f"{lo // self.chunk:07d}.u8") as tmp, \
                open(tmp, "wb") as fh:
            for k, (vid, path) in enumerate(entries):
                try:
                    frames, t = decode_frames(Path(path), size=self.size)
                    if frames.shape[0] == 0:
                        raise OSError(f"{path}: no decodable frames")
                    duration = _duration_of(Path(path), t)
                except Exception as exc:  # noqa: BLE001  (any decoder failure = one bad video)
                    if self.strict:
                        raise BadSampleError(f"{path}: unreadable video: {_reason(exc)}{STRICT_NOTE}") from None
                    err_idx.append(lo + k)
                    err_msg.append(_reason(exc))
                    continue
                frames = np.ascontiguousarray(frames, dtype=np.uint8)
                fh.write(frames.tobytes())
                out["n"][k], out["h"][k], out["w"][k] = frames.shape[:3]
                out["offset"][k], out["duration"][k] = written, float(duration)
                written += int(frames.nbytes)
                times.append(np.asarray(t, dtype=np.float64))
        out["times"] = np.concatenate(times) if times else np.zeros(0)
        out["err_idx"] = np.asarray(err_idx, dtype=np.int64)
        out["err_msg"] = np.asarray(err_msg, dtype="<U300")
        return out


def _duration_of(path: Path, times: np.ndarray) -> float:
    from locvtp.data.video import probe_video

    try:
        return float(probe_video(path).duration)
    except Exception:  # noqa: BLE001  (fall back to the decoded timestamps)
        step = float(np.median(np.diff(times))) if len(times) > 1 else 0.0
        return float(times[-1]) + step


def corpus_frame_cache(d: Any, store_dir: Path, video_dir: Optional[Path], vids: list[str],
                       share: tuple[int, int] = (0, 1), workers: int = 0, strict: bool = False, progress: bool = True,
                       wait: bool = True, legacy_roots: Iterable[Path] = ()
                       ) -> tuple[Optional[FrameCache], list[BadSample]]:
    """The frame cache of a config's videos ``vids`` (``cfg.data`` as ``d``): under ``data.cache_dir``, else in
    the prepared corpus's directory ``store_dir``; a complete one there (or under ``legacy_roots``: ``RUN/cache``,
    where earlier versions put it) is used as it is, else this process decodes its ``share``."""
    from locvtp.data.videoids import video_path

    if video_dir is None or not Path(video_dir).is_dir():
        raise FileNotFoundError(2, "data.video_dir: no such directory", str(video_dir))
    root = frame_cache_root(d, store_dir)
    paths = {v: video_path(video_dir, v) for v in vids}
    size = int(d.frame_size)
    stamp = video_stamp(paths)  # one stat per video for this launch
    found = FrameCache.find([root, *legacy_roots], paths, int(d.frames_per_clip), size, stamp)
    if found is not None:
        return found, found.bad
    return FrameCache.build(root, paths, int(d.frames_per_clip), size, strict, progress, share, workers, wait,
                            stamp=stamp)


def frame_cache_root(d: Any, store_dir: Path) -> Path:
    """``data.cache_dir`` (``~`` expanded), else the prepared corpus's own directory."""
    return Path(os.path.expanduser(str(d.cache_dir))) if d.get("cache_dir") else Path(store_dir)


__all__ = ["FORMAT", "FrameCache", "corpus_frame_cache", "frame_cache_root", "video_stamp"]
