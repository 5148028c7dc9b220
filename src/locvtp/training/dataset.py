"""Pre-training datasets: caption records -> windows of T clips -> padded, tokenized batches.

Three sources share one sample rule (see docs/training.md, "How a training sample is cut"):

* videos + HowTo100M narrations (`caption.json`): one sample per narration, a window of ``T`` clips of
  ``clip_seconds`` centred on the narration's centre (jittered by ``±jitter_seconds`` in training, because
  real narrations are misaligned), shifted to lie inside the video. The window is wider than most narrations on
  purpose: it carries the temporal context the fine-grained and temporal objectives need;
* videos + WebVid CSV captions: one sample per row, the window is the whole video;
* pre-extracted per-clip features (any layout ``locvtp extract`` writes: HDF5, npy-dir, npz-dir; stride and ids
  from the extraction itself) with either caption format: the same windows, each clip the mean of the feature
  rows whose centres fall inside it.

A window of length ``W`` holds ``n = min(T, max(1, floor(W / clip_seconds)))`` equal clips; the remaining
``T - n`` slots are padding, masked by ``clip_mask`` (only videos shorter than the window have them).

Why a per-sample random generator keyed by ``(seed, epoch, index)``: the sample a step sees then depends on
nothing but its position in the data order, so results are identical with 0, 1 or 8 loader workers, across
ranks, and after a resume.

Bad samples (unreadable video, malformed caption row, missing features) are skipped and reported, never
silently dropped: readers report malformed rows, an up-front scan reports unreadable videos, and a sample that
still fails at decode time is replaced by the next good one (so every batch keeps its size, which DDP's
gathers need) and reported. ``strict=True`` raises on the first one instead.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset
from locvtp.config import ConfigError
from locvtp.data.corpus import read_split_ids, resolve_data_path
from locvtp.data.offsets import draw_offsets
from locvtp.data.sampler import ResumableBatchSampler  # noqa: F401  (re-exported)
from locvtp.data.stopwords import content_words, stopword_ids
from locvtp.errors import LocVTPError


class BadSampleError(LocVTPError, RuntimeError):
    """A sample could not be read (strict mode); the message names the file and the sample."""


STRICT_NOTE = " (--strict: the first bad sample stops the run; without it, it is skipped and reported)"


class NoSamplesError(LocVTPError, ValueError):
    """Nothing is left to train on (every sample bad, or none in the caption file); the message says why."""


# ----------------------------------------------------------------------------------------------------------
# Records and bad-sample accounting
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CaptionItem:
    """One pre-training pair before decoding: a caption and the time span it refers to."""

    vid: str
    text: str
    start: float  # seconds; HowTo100M: narration span, WebVid: 0
    end: float  # seconds; WebVid: +inf (= whole video)
    source: str  # "file:line" or "file:key" (for bad-sample reports)


@dataclass(frozen=True)
class BadSample:
    """One skipped sample or row, as written to ``bad_samples.jsonl``."""

    kind: str  # "row" (malformed caption row) | "video" (unreadable video) | "features" | "sample" (decode-time)
    source: str  # file (and line / key)
    reason: str
    vid: Optional[str] = None

    @property
    def key(self) -> str:
        return f"{self.kind}|{self.source}|{self.vid}"

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


class BadSampleLog:
    """Collects bad samples (deduplicated), appends them to a JSONL file, counts them.

    ``count`` is the number of distinct *training samples* lost (a corrupt video loses all of its narrations;
    each is one line), so the summary "skipped k of N samples" adds up.
    """

    def __init__(self, path: Optional[Path] = None):
        self.path = Path(path) if path is not None else None
        self._seen: set[str] = set()
        self.records: list[BadSample] = []
        if self.path is not None and self.path.is_file():  # resumed run: keep what was reported before
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    d = json.loads(line)
                    rec = BadSample(d["kind"], d["source"], d["reason"], d.get("vid"))
                except (ValueError, KeyError):
                    continue
                if rec.key not in self._seen:
                    self._seen.add(rec.key)
                    self.records.append(rec)

    @property
    def count(self) -> int:
        return len(self.records)

    def add(self, recs: Sequence[BadSample]) -> list[BadSample]:
        new = []
        for r in recs:
            if r.key not in self._seen:
                self._seen.add(r.key)
                self.records.append(r)
                new.append(r)
        if new and self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as fh:
                for r in new:
                    fh.write(json.dumps(r.to_json(), ensure_ascii=False) + "\n")
        return new


# ----------------------------------------------------------------------------------------------------------
# The window rule (pure functions, tested on their own)
# ----------------------------------------------------------------------------------------------------------
def split_window(a: float, b: float, num_clips: int, clip_seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """[a, b] -> (windows float64 [T, 2], clip_mask bool [T]): n equal clips, then T - n padding slots."""
    length = max(float(b) - float(a), 1e-6)
    n = int(min(num_clips, max(1, math.floor(length / clip_seconds + 1e-6))))
    edges = a + (length / n) * np.arange(n + 1)
    windows = np.zeros((num_clips, 2), dtype=np.float64)
    windows[:n, 0], windows[:n, 1] = edges[:-1], edges[1:]
    windows[n:] = windows[n - 1]  # padding repeats the last clip (masked; keeps decoders in range)
    mask = np.zeros(num_clips, dtype=bool)
    mask[:n] = True
    return windows, mask


def narration_window(start: float, end: float, duration: float, num_clips: int, clip_seconds: float,
                     jitter_seconds: float = 0.0, rng: Optional[np.random.Generator] = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """T clips of ``clip_seconds`` centred on the narration's (jittered) centre, shifted inside [0, duration].

    Videos shorter than the window give ``[0, duration]`` split into ``floor(duration / clip_seconds)`` clips.
    """
    length = num_clips * clip_seconds
    centre = 0.5 * (float(start) + float(end))
    if jitter_seconds > 0 and rng is not None:
        centre += rng.uniform(-jitter_seconds, jitter_seconds)
    if duration <= length:
        return split_window(0.0, duration, num_clips, clip_seconds)
    a = min(max(centre - 0.5 * length, 0.0), duration - length)
    return split_window(a, a + length, num_clips, clip_seconds)


def whole_video_window(duration: float, num_clips: int, clip_seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """WebVid: the whole video split into T clips (fewer, masked, if it is shorter than T clip_seconds)."""
    return split_window(0.0, duration, num_clips, clip_seconds)


def pool_features(feats: np.ndarray, windows: np.ndarray, stride: float, clip_seconds: float) -> np.ndarray:
    """Per-clip features of each window: mean of the rows whose centre lies in it (nearest row if none).

    ``feats`` [N, D] has row k covering [k*stride, k*stride + clip_seconds]. Returns float32 [T, D].
    """
    n = feats.shape[0]
    centres = np.arange(n) * stride + 0.5 * clip_seconds  # [N]
    inside = (centres[None, :] >= windows[:, :1]) & (centres[None, :] < windows[:, 1:])  # [T, N]
    empty = ~inside.any(axis=1)
    if empty.any():
        mid = 0.5 * (windows[empty, 0] + windows[empty, 1])
        nearest = np.clip(np.rint((mid - 0.5 * clip_seconds) / stride).astype(np.int64), 0, n - 1)
        inside[np.nonzero(empty)[0], nearest] = True
    weights = inside / inside.sum(axis=1, keepdims=True)
    return (weights @ np.asarray(feats, dtype=np.float64)).astype(np.float32)




# ----------------------------------------------------------------------------------------------------------
# Clip sources: video files, the pre-decoded frame cache, feature files
# ----------------------------------------------------------------------------------------------------------
class VideoFileSource:
    """Decodes the MP4 for every sample (no cache): ``locvtp.data.video.decode_windows`` on the sample's windows.

    ``infos`` (probed once up front) gives the durations the window rule needs.
    """

    kind = "pixels"

    def __init__(self, paths: dict[str, Path], infos: dict[str, Any], frames_per_clip: int, size: int):
        self.paths, self.infos = paths, infos
        self.durations = {v: float(i.duration) for v, i in infos.items()}
        self.frames_per_clip, self.size = frames_per_clip, size

    def clips(self, vid: str, windows: np.ndarray, jitter: bool, rng: np.random.Generator) -> np.ndarray:
        from locvtp.data.video import decode_windows

        return decode_windows(self.paths[vid], windows, self.frames_per_clip, self.size, jitter, rng)


class FrameCache:
    """All frames of every video, decoded once at ``size`` into one memory-mapped uint8 file.

    Layout of the cache directory: ``frames.u8`` (each video's frames [n, h, w, 3] raw, one after the other:
    the short side is ``size`` and the aspect ratio is kept, so a random crop stays possible), ``times.npy``
    (float64 [total_frames]), ``index.json`` ({vid: [byte_offset, first_frame, num_frames, duration, h, w]},
    plus the key that says which videos and frame size it was built for). Clips come from the same
    ``sample_clips`` that file decoding uses, so a cached run sees the clips a file-decoding run sees.
    Built in a temporary sibling directory and ``os.replace``d into place (a killed build leaves nothing).
    """

    kind = "pixels"

    def __init__(self, directory: Path, frames_per_clip: int, size: int):
        self.directory = Path(directory)
        meta = json.loads((self.directory / "index.json").read_text(encoding="utf-8"))
        self.index: dict[str, list] = meta["videos"]
        self.durations = {v: float(x[3]) for v, x in self.index.items()}
        self.total_bytes = int(meta["total_bytes"])
        self.frames_per_clip, self.size = frames_per_clip, size
        self._frames: Optional[np.ndarray] = None  # opened lazily: one mapping per (worker) process
        self._times: Optional[np.ndarray] = None

    def _open(self) -> None:
        if self.total_bytes == 0:  # every video was bad: nothing to map
            self._frames = np.zeros(0, dtype=np.uint8)
        else:
            self._frames = np.memmap(self.directory / "frames.u8", dtype=np.uint8, mode="r",
                                     shape=(self.total_bytes,))
        self._times = np.load(self.directory / "times.npy", mmap_mode="r")

    def __getstate__(self) -> dict:  # never pickle the mapping into workers
        d = dict(self.__dict__)
        d["_frames"] = d["_times"] = None
        return d

    def frames(self, vid: str) -> tuple[np.ndarray, np.ndarray]:
        if self._frames is None:
            self._open()
        offset, first, n, _, h, w = self.index[vid]
        frames = self._frames[offset:offset + n * h * w * 3].reshape(n, h, w, 3)
        return frames, np.asarray(self._times[first:first + n])

    def clips(self, vid: str, windows: np.ndarray, jitter: bool, rng: np.random.Generator) -> np.ndarray:
        from locvtp.data.video import sample_clips

        frames, times = self.frames(vid)
        return sample_clips(frames, times, windows, self.frames_per_clip, self.size, jitter, rng,
                            duration=self.durations[vid], source=vid)

    @staticmethod
    def key(paths: dict[str, Path], size: int) -> str:
        h = hashlib.sha256(f"layout=2|size={size}".encode())  # layout 2: per-video h x w (non-square videos)
        for vid in sorted(paths):
            st = paths[vid].stat() if paths[vid].exists() else None
            h.update(f"|{vid}:{st.st_size if st else -1}:{int(st.st_mtime) if st else -1}".encode())
        return h.hexdigest()[:16]

    @classmethod
    def build(cls, cache_root: Path, paths: dict[str, Path], frames_per_clip: int, size: int,
              strict: bool = False, progress: bool = True) -> tuple["FrameCache", list[BadSample]]:
        """Decode every video once (or reuse a matching cache). Unreadable videos are returned as bad."""
        from locvtp.runtime import progress as tqdm

        from locvtp.data.video import decode_frames

        key = cls.key(paths, size)
        final = Path(cache_root) / f"frames_{size}px_{key}"
        if (final / "index.json").is_file():
            meta = json.loads((final / "index.json").read_text(encoding="utf-8"))
            bad = [BadSample(**b) for b in meta.get("bad", [])]
            return cls(final, frames_per_clip, size), bad
        tmp = final.with_name(final.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        index: dict[str, list] = {}
        times_all: list[np.ndarray] = []
        bad: list[BadSample] = []
        total = total_bytes = 0
        with open(tmp / "frames.u8", "wb") as fh:
            for vid in tqdm(sorted(paths), desc="decoding videos into the frame cache", disable=not progress,
                            unit="video"):
                try:
                    frames, times = decode_frames(paths[vid], size=size)
                    if frames.shape[0] == 0:
                        raise OSError(f"{paths[vid]}: no decodable frames")
                    duration = _duration_of(paths[vid], times)
                except Exception as exc:  # noqa: BLE001  (any decoder failure = one bad video)
                    if strict:
                        shutil.rmtree(tmp, ignore_errors=True)
                        raise BadSampleError(f"{paths[vid]}: unreadable video: {exc}{STRICT_NOTE}") from exc
                    bad.append(BadSample("video", str(paths[vid]), _reason(exc), vid))
                    continue
                frames = np.ascontiguousarray(frames, dtype=np.uint8)
                fh.write(frames.tobytes())
                n, h, w = (int(x) for x in frames.shape[:3])
                index[vid] = [total_bytes, total, n, float(duration), h, w]
                times_all.append(np.asarray(times, dtype=np.float64))
                total += n
                total_bytes += int(frames.nbytes)
        np.save(tmp / "times.npy", np.concatenate(times_all) if times_all else np.zeros(0))
        meta = {"size": size, "key": key, "total_frames": total, "total_bytes": total_bytes, "videos": index,
                "bad": [asdict(b) for b in bad]}
        (tmp / "index.json").write_text(json.dumps(meta), encoding="utf-8")
        try:
            os.replace(tmp, final)
        except OSError:  # another rank/process finished the same cache first: use theirs
            shutil.rmtree(tmp, ignore_errors=True)
        return cls(final, frames_per_clip, size), bad


def _duration_of(path: Path, times: np.ndarray) -> float:
    from locvtp.data.video import probe_video

    try:
        return float(probe_video(path).duration)
    except Exception:  # noqa: BLE001  (fall back to the decoded timestamps)
        step = float(np.median(np.diff(times))) if len(times) > 1 else 0.0
        return float(times[-1]) + step


def _reason(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {msg}"[:300]


class FeatureSource:
    """Pre-extracted per-clip features in any layout ``locvtp extract`` writes (:mod:`locvtp.features`): an HDF5
    file (one dataset per video id), an ``npy-dir`` or an ``npz-dir``.

    Why the extraction's own metadata: a directory's ``meta.json`` says the seconds between rows
    (``stride_seconds``) and per clip (``clip_seconds``); reading a 0.5 s-stride extraction as 1 s misaligns every
    caption. Like the HDF5 attributes, these win over ``data.feature_stride``. Ids that are not plain file names
    are stored under a hashed name (:func:`locvtp.features.safe_name`, the id in ``_info/`` or the npz's
    ``video_id``); they are found by that name.

    Lazy: with ``video_ids`` only the files of those videos are looked at (their headers, for the row count), and
    rows are read per sample. Loaded rows are checked for NaN/inf: a bad video fails the sample that reads it,
    which the dataset reports as a bad sample naming the file and the video (``--strict``: fatal).
    """

    kind = "features"

    def __init__(self, path: Path, clip_seconds: float, stride: Optional[float] = None,
                 video_ids: Optional[Sequence[str]] = None,
                 known_lengths: Optional[dict[str, tuple[int, int]]] = None):
        from locvtp.features import FeatureError, detect_format, feature_info

        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(2, "data.features: no such feature file or directory (a relative path is "
                                       "resolved under data.root)", str(self.path))
        self.is_h5 = self.path.is_file()
        self._h5 = None
        self.clip_seconds = clip_seconds
        self.stride = stride
        self.lengths: dict[str, int] = {}
        self.files: dict[str, Path] = {}  # npy-dir / npz-dir: the file of each video id
        self.dim = 0
        if self.is_h5:
            import h5py

            try:
                f = h5py.File(self.path, "r")
            except OSError as exc:
                raise FeatureError(f"data.features: {self.path}: not a readable HDF5 file: {exc}") from None
            with f:
                attrs = dict(f.attrs)
                if not attrs and len(f):  # settings on the datasets instead of the root: the first one's
                    first = f[next(iter(f.keys()))]
                    attrs = dict(first.attrs) if isinstance(first, h5py.Dataset) else {}
                if known_lengths is None:
                    names = f.keys() if video_ids is None else [v for v in video_ids if v in f]
                    for vid in names:
                        ds = f[vid]
                        if isinstance(ds, h5py.Dataset) and ds.ndim == 2:
                            self.lengths[vid] = int(ds.shape[0])
                            self.dim = int(ds.shape[1])
            self.clip_seconds = float(attrs.get("clip_seconds", clip_seconds))
            self.stride = float(attrs.get("stride_seconds", stride or self.clip_seconds))
        else:
            self.layout = detect_format(self.path)
            info = feature_info(self.path)
            self.clip_seconds = float(info.get("clip_seconds") or clip_seconds)
            self.stride = float(info.get("stride_seconds") or stride or self.clip_seconds)
            if known_lengths is None and video_ids is None:
                self._scan_all()
            elif known_lengths is None:
                for vid in video_ids:
                    self._find(vid)
        if known_lengths is not None:  # from the prepared corpus: (rows, dim), rows -1 = no features
            for vid, (n, dim) in known_lengths.items():
                if n >= 0:
                    self.lengths[vid], self.dim = int(n), int(dim)
        self.durations = {v: n * self.stride + max(self.clip_seconds - self.stride, 0.0)
                          for v, n in self.lengths.items()}

    def _ext(self) -> str:
        return ".npz" if self.layout == "npz-dir" else ".npy"

    def _rows_in(self, q: Path) -> Optional[tuple[int, int]]:
        """(rows, dim) of a feature file from its header only; None when it is not a 2-D array."""
        from locvtp.features import FeatureError, _npz_shape

        try:
            if self.layout == "npz-dir":
                with np.load(q, allow_pickle=False) as z:
                    shape = _npz_shape(z, "features") if "features" in z else ()
            else:
                shape = np.load(q, mmap_mode="r", allow_pickle=False).shape
        except (OSError, ValueError, KeyError) as exc:
            raise FeatureError(f"data.features: {q}: unreadable feature file: {exc}") from None
        return (int(shape[0]), int(shape[1])) if len(shape) == 2 else None

    def _add(self, vid: str, q: Path) -> None:
        shape = self._rows_in(q)
        if shape is not None:
            self.lengths[vid], self.dim = shape
            self.files[vid] = q

    def _find(self, vid: str) -> None:
        """The file of ``vid``: its :func:`safe_name` (what ``locvtp extract`` writes), else ``<vid>.npy`` as
        other tools name them. A video with neither stays out of ``lengths`` (reported as missing)."""
        from locvtp.features import safe_name

        for name in dict.fromkeys((safe_name(vid), vid)):
            q = self.path / f"{name}{self._ext()}"
            if "/" not in name and q.is_file():
                self._add(vid, q)
                return

    def _file(self, vid: str) -> Path:
        """The file of ``vid`` (found on first use when the lengths came from the prepared corpus)."""
        q = self.files.get(vid)
        if q is None:
            from locvtp.features import safe_name

            for name in dict.fromkeys((safe_name(vid), vid)):
                cand = self.path / f"{name}{self._ext()}"
                if "/" not in name and cand.is_file():
                    q = self.files[vid] = cand
                    break
            else:
                raise FileNotFoundError(2, f"no feature file for video {vid!r}", str(self.path / f"{vid}{self._ext()}"))
        return q

    def _scan_all(self) -> None:
        """Every video of the directory, with its id from ``_info`` / the npz (the slow path: all headers)."""
        for rec in _iter_feature_headers(self.path):
            self._add(rec[0], rec[1])

    def __getstate__(self) -> dict:
        d = dict(self.__dict__)
        d["_h5"] = None
        return d

    def rows(self, vid: str, lo: int, hi: int) -> np.ndarray:
        from locvtp.features import FeatureRecord, check_finite

        if self.is_h5:
            if self._h5 is None:
                import h5py

                self._h5 = h5py.File(self.path, "r")
            out, where = np.asarray(self._h5[vid][lo:hi]), self.path
        elif self.layout == "npz-dir":
            where = self._file(vid)
            with np.load(where, allow_pickle=False) as z:
                out = np.asarray(z["features"][lo:hi])
        else:
            where = self._file(vid)
            out = np.asarray(np.load(where, mmap_mode="r", allow_pickle=False)[lo:hi])
        check_finite(FeatureRecord(vid, len(out), self.dim, out, None, 0.0, 0.0), where)
        return out

    def clips(self, vid: str, windows: np.ndarray, jitter: bool, rng: np.random.Generator) -> np.ndarray:
        n = self.lengths[vid]
        lo = max(int(math.floor(windows[0, 0] / self.stride)) - 1, 0)
        hi = min(int(math.ceil(windows[-1, 1] / self.stride)) + 1, n)
        feats = self.rows(vid, lo, hi)
        shifted = windows - lo * self.stride
        return pool_features(feats, shifted, self.stride, self.clip_seconds)


def _iter_feature_headers(path: Path) -> Iterator[tuple[str, Path]]:
    """(video id, file) of every feature file of an npy-dir / npz-dir (ids from ``_info`` or the npz)."""
    from locvtp.features import detect_format

    ext = ".npz" if detect_format(path) == "npz-dir" else ".npy"
    for q in sorted(path.glob(f"*{ext}")):
        if q.name.startswith("."):
            continue
        vid = q.stem
        if ext == ".npz":
            with np.load(q, allow_pickle=False) as z:
                vid = str(z["video_id"]) if "video_id" in z else vid
        else:
            side = path / "_info" / f"{q.stem}.json"
            if side.is_file():
                try:
                    vid = str(json.loads(side.read_text(encoding="utf-8")).get("video_id", vid))
                except ValueError as exc:
                    from locvtp.features import FeatureError

                    raise FeatureError(f"{side}: invalid JSON: {exc}") from None
        yield vid, q


# ----------------------------------------------------------------------------------------------------------
# The dataset
# ----------------------------------------------------------------------------------------------------------
class PretrainDataset(Dataset):
    """Map-style dataset indexed by ``(epoch, index)`` (see ``ResumableBatchSampler``) or by ``index``.

    Returns a dict: ``clips`` (uint8 [T,F,S,S,3] or float32 [T,Din]), ``clip_mask`` bool [T], ``text``,
    ``index``, ``vid``, ``bad`` (samples that failed and were replaced on the way to this one).
    """

    def __init__(self, items: list[CaptionItem], source: Any, num_clips: int, clip_seconds: float,
                 jitter_seconds: float = 0.0, train: bool = True, seed: int = 0, strict: bool = False,
                 max_retries: int = 16, max_offset: int = 0, offset_in_span: bool = False):
        self.items, self.source = items, source
        self.max_offset = max_offset  # > 0: draw the temporal objective's offsets δ ∈ [-max_offset, max_offset] here
        # objective.context_in_span: reference and context clip both inside the narration's own span
        self.offset_in_span = bool(offset_in_span)
        self.num_clips, self.clip_seconds = num_clips, clip_seconds
        self.jitter_seconds, self.train = jitter_seconds, train
        self.seed, self.strict, self.max_retries = seed, strict, max_retries

    def __len__(self) -> int:
        return len(self.items)

    def windows(self, item: CaptionItem, rng: Optional[np.random.Generator]) -> tuple[np.ndarray, np.ndarray]:
        duration = self.source.durations[item.vid]
        if math.isinf(item.end):
            return whole_video_window(duration, self.num_clips, self.clip_seconds)
        jitter = self.jitter_seconds if self.train else 0.0
        return narration_window(item.start, item.end, duration, self.num_clips, self.clip_seconds, jitter, rng)

    def load(self, index: int, epoch: int = 0) -> dict:
        """One sample, no replacement (raises on failure)."""
        item = self.items[index]
        rng = np.random.default_rng([self.seed, epoch, index])
        windows, mask = self.windows(item, rng)
        n = int(mask.sum())
        clips = self.source.clips(item.vid, windows[:n], self.train, rng)
        if clips.shape[0] != n:
            raise OSError(f"{item.vid}: decoder returned {clips.shape[0]} clips, expected {n}")
        if n < self.num_clips:  # zero padding up to T (masked)
            pad = np.zeros((self.num_clips - n, *clips.shape[1:]), dtype=clips.dtype)
            clips = np.concatenate([clips, pad], axis=0)
        sample = {"clips": clips, "clip_mask": mask, "text": item.text, "index": index, "vid": item.vid,
                  "windows": windows.astype(np.float32)}
        if self.max_offset > 0:
            # The temporal objective's δ per clip, from this sample's own generator: a sample gets the same
            # offsets whichever rank, batch or worker it lands in (DDP == single process, exact resume).
            g = torch.Generator().manual_seed(int(rng.integers(0, 2**62)))
            span = None
            if self.offset_in_span:  # clips whose centre lies in the narration's (unjittered) [start, end]
                centre = windows.mean(axis=1)
                in_span = mask & (centre >= item.start) & (centre <= item.end)
                sample["span_mask"] = in_span
                span = torch.from_numpy(in_span)[None]
            sample["offsets"] = draw_offsets(torch.from_numpy(mask)[None], self.max_offset, g,
                                             span_mask=span)[0].numpy()
        return sample

    def __getitem__(self, key) -> dict:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        bad: list[BadSample] = []
        for attempt in range(self.max_retries):
            i = (index + attempt) % len(self.items)
            try:
                sample = self.load(i, epoch)
            except Exception as exc:  # noqa: BLE001  (decode/read failure = one bad sample)
                item = self.items[i]
                if self.strict:
                    raise BadSampleError(f"{item.source}: sample {i} (video {item.vid}) failed: {exc}"
                                         f"{STRICT_NOTE}") from exc
                bad.append(BadSample("sample", item.source, _reason(exc), item.vid))
                continue
            sample["bad"] = bad
            return sample
        raise BadSampleError(f"{self.max_retries} consecutive samples from index {index} failed; last: "
                             f"{bad[-1].source}: {bad[-1].reason}")


class Collator:
    """Stacks samples and tokenizes their texts (runs in the loader workers, so tokenization is parallel)."""

    def __init__(self, tokenizer: Any, max_words: int):
        self.tokenizer, self.max_words = tokenizer, max_words

    def __call__(self, samples: list[dict]) -> dict:
        clips = np.stack([s["clips"] for s in samples])
        batch = {
            "clips": torch.from_numpy(clips),
            "clip_mask": torch.from_numpy(np.stack([s["clip_mask"] for s in samples])),
            "index": torch.tensor([s["index"] for s in samples], dtype=torch.long),
            "vids": [s["vid"] for s in samples],
            "texts": [s["text"] for s in samples],
            "bad": [b for s in samples for b in s.get("bad", [])],
        }
        if "offsets" in samples[0]:
            batch["offsets"] = torch.from_numpy(np.stack([s["offsets"] for s in samples])).long()
        tok = self.tokenizer([s["text"] for s in samples], max_length=self.max_words)
        batch["input_ids"] = tok["input_ids"].long()
        batch["attention_mask"] = tok["attention_mask"].bool()
        batch["word_mask"] = tok["word_mask"].bool()
        if hasattr(self.tokenizer, "token_to_id"):  # objective.stopwords: the words that may be positives
            if getattr(self, "_stop_ids", None) is None:
                self._stop_ids = torch.tensor(stopword_ids(self.tokenizer), dtype=torch.long)
            batch["content_mask"] = content_words(batch["input_ids"], batch["word_mask"], self._stop_ids)
        return batch


# ----------------------------------------------------------------------------------------------------------
# Building a dataset from the config
# ----------------------------------------------------------------------------------------------------------
@dataclass
class PretrainData:
    dataset: PretrainDataset
    bad: list[BadSample] = field(default_factory=list)  # found while building (rows, videos, features)
    total: int = 0  # samples in the caption files, including the bad ones

    def summary(self, skipped: int, log_path: Optional[Path] = None) -> str:
        where = f": see {log_path}" if log_path is not None else ""
        return f"skipped {skipped} of {self.total} samples{where}"


def find_video(video_dir: Path, vid: str) -> Path:
    """The file of video ``vid`` in ``video_dir`` by the one id rule (:func:`locvtp.data.videoids.find_video`: the
    extensions of ``VIDEO_EXTENSIONS``, ``.MP4`` included); ``<video_dir>/<vid>.mp4`` when there is none, so that
    probing reports "file not found" with that path."""
    from locvtp.data.videoids import find_video as find

    return find(video_dir, vid) or Path(video_dir) / f"{vid}.mp4"


_CHECK_CHUNK = 1 << 22  # narrations per step of the up-front checks (bounds their temporaries: ~100 MB)


def build_pretrain_data(cfg: Any, prepared: Any, tokenizer: Any, run_dir: Path, strict: bool = False,
                        progress: bool = True, is_main: bool = True, barrier: Any = None,
                        share: tuple[int, int] = (0, 1)) -> PretrainData:
    """Sources, up-front checks and the dataset, from ``cfg.data`` and the prepared corpus
    (:func:`locvtp.data.corpus.prepare_corpus`).

    Nothing per narration becomes a Python object: the checks (unreadable video, caption without words under
    ``tokenizer``, narration after the end of its video) are array operations over the corpus's columns, and the
    dataset's items are made on access. Only the samples found bad get a record, worded as the in-memory path
    words it. Under DDP every rank calls this with ``share=(rank, world)``: the words mask is computed in shares
    by all ranks at once (:func:`~locvtp.data.corpus.words_mask`); the frame cache (``data.cache``, for corpora
    that fit on disk decoded) is built by rank 0 while the others wait at ``barrier``.
    """
    from locvtp.data.corpus import CaptionItems, words_mask

    d = cfg.data
    root = Path(os.path.expanduser(str(d.root)))
    store = prepared.store
    cand, used = _candidates(store)
    vid_names = store.video_ids
    vids = sorted(vid_names[k] for k in np.nonzero(used)[0])
    if d.kind == "features":
        source, bad_videos = _feature_source(cfg, prepared, root, used, vids)
    elif d.kind == "videos":
        source, bad_videos = _video_source(d, prepared, root, used, vids, run_dir, strict, progress, is_main,
                                           barrier or (lambda: None))
    else:
        raise ConfigError(f"data.kind must be 'videos' or 'features', got {d.kind!r}")
    ok_words = words_mask(store, tokenizer, int(d.max_words), share=share, progress=progress)
    good, bad = _check_samples(store, cand, used, source, bad_videos, ok_words, strict)
    if not len(good):
        raise NoSamplesError(f"no usable pre-training samples under {root} ({len(bad)} bad; first: "
                             f"{bad[0].source}: {bad[0].reason})" if bad else f"no pre-training samples under {root}")
    store.release()  # unmap the columns the scan touched: training maps again only what it reads
    oc = cfg.objective
    dataset = PretrainDataset(CaptionItems(store, good), source, int(d.num_clips), float(d.clip_seconds),
                              float(d.jitter_seconds), train=True, seed=int(cfg.seed), strict=strict,
                              max_offset=int(oc.max_offset) if oc.temporal else 0,
                              offset_in_span=bool(getattr(oc, "context_in_span", False)))
    return PretrainData(dataset=dataset, bad=bad, total=len(cand) + len(store.bad_rows()))


def _candidates(store: Any) -> tuple[np.ndarray, np.ndarray]:
    """(the narration indices to check, in order; which videos they use, as a mask over the store's videos)."""
    keep = store.keep_mask()
    idx_dtype = np.int32 if store.n < 2**31 else np.int64
    cand = (np.nonzero(keep)[0].astype(idx_dtype) if keep is not None else np.arange(store.n, dtype=idx_dtype))
    used = np.zeros(store.num_videos, dtype=bool)
    for lo in range(0, len(cand), _CHECK_CHUNK):
        narr_video = store.narr_video
        used[narr_video[cand[lo:lo + _CHECK_CHUNK]] if keep is not None else narr_video[lo:lo + _CHECK_CHUNK]] = True
        del narr_video
        store.release()  # one chunk of the column mapped at a time: its pages never pile up in this process
    return cand, used


def _feature_source(cfg: Any, prepared: Any, root: Path, used: np.ndarray, vids: list[str]):
    """(FeatureSource, {vid: (source, reason)} of the videos without usable features)."""
    d = cfg.data
    if d.features is None:
        raise ConfigError("data.kind=features needs data.features (an HDF5 file or a directory of <vid>.npy)")
    vid_names, rows, known = prepared.store.video_ids, prepared.feature_rows, None
    if rows is not None:  # lengths from the prepared corpus: no feature file is opened at launch
        known = {vid_names[k]: (int(rows["rows"][k]), int(rows["dim"][k])) for k in np.nonzero(used)[0]}
    source = FeatureSource(resolve_data_path(root, d.features), float(d.clip_seconds), d.feature_stride,
                           video_ids=vids, known_lengths=known)
    in_dim = int(cfg.model.video.in_dim) if cfg.model.video.name == "features" else None
    if in_dim is not None and source.dim and source.dim != in_dim:
        raise ConfigError(f"data.features: {source.path} holds {source.dim}-d features but "
                          f"model.video.in_dim={in_dim}; set model.video.in_dim={source.dim}")
    bad_videos: dict[str, tuple[str, str]] = {}
    for v in vids:
        if v not in source.lengths:
            bad_videos[v] = (str(source.path), f"no features for video {v!r} in {source.path}")
        elif source.lengths[v] == 0:
            bad_videos[v] = (str(source.path), f"empty feature array for video {v!r}")
    return source, bad_videos


def _video_source(d: Any, prepared: Any, root: Path, used: np.ndarray, vids: list[str], run_dir: Path,
                  strict: bool, progress: bool, is_main: bool, barrier: Any):
    """(FrameCache or VideoFileSource, {vid: (source, reason)} of the unreadable videos)."""
    from locvtp.data.video import VideoInfo

    video_dir = resolve_data_path(root, d.video_dir)
    paths = {v: find_video(video_dir, v) for v in vids}
    bad_videos: dict[str, tuple[str, str]] = {}
    if d.cache:
        cache_root = Path(os.path.expanduser(str(d.cache_dir))) if d.cache_dir else Path(run_dir) / "cache"
        if is_main:
            FrameCache.build(cache_root, paths, int(d.frames_per_clip), int(d.frame_size), strict, progress)
        barrier()
        source, bad = FrameCache.build(cache_root, paths, int(d.frames_per_clip), int(d.frame_size), strict,
                                       progress=False)
        bad_videos.update({b.vid: (b.source, b.reason) for b in bad})
        return source, bad_videos
    probes, vid_names = prepared.probes, prepared.store.video_ids
    errors = {int(k): str(m) for k, m in zip(probes["err_idx"], probes["err_msg"])}
    infos = {}
    for k in np.nonzero(used)[0]:
        v = vid_names[k]
        if int(k) in errors:
            if strict:
                raise BadSampleError(f"{paths[v]}: unreadable video: {errors[int(k)]}{STRICT_NOTE}")
            bad_videos[v] = (str(paths[v]), errors[int(k)])
        else:
            infos[v] = VideoInfo(*(float(probes["fps"][k]), float(probes["duration"][k]),
                                   int(probes["num_frames"][k]), int(probes["width"][k]),
                                   int(probes["height"][k])))
    return VideoFileSource(paths, infos, int(d.frames_per_clip), int(d.frame_size)), bad_videos


def _check_samples(store: Any, cand: np.ndarray, used: np.ndarray, source: Any, bad_videos: dict,
                   ok_words: np.ndarray, strict: bool) -> tuple[np.ndarray, list[BadSample]]:
    """(the good narration indices, a record per bad one): unreadable video, caption without words, narration
    after the video's end — as array operations, in chunks (the temporaries stay small at any corpus size)."""
    vid_names, keep = store.video_ids, store.keep_mask()
    video_bad = np.zeros(store.num_videos, dtype=bool)
    duration = np.full(store.num_videos, np.nan)
    for k in np.nonzero(used)[0]:
        v = vid_names[k]
        if v in bad_videos:
            video_bad[k] = True
        else:
            duration[k] = source.durations[v]
    bad: list[BadSample] = [BadSample("row", f"{f}: {loc}", reason) for f, loc, reason in store.bad_rows()]
    good_parts = []
    for lo in range(0, len(cand), _CHECK_CHUNK):
        idx = cand[lo:lo + _CHECK_CHUNK]
        at = slice(int(idx[0]), int(idx[-1]) + 1) if keep is None else idx  # no split: views, not gathers
        vid_of = store.narr_video[at]
        starts, ends = np.asarray(store.starts[at]), np.asarray(store.ends[at])
        is_bad_video = video_bad[vid_of]
        no_words = ~ok_words[at] & ~is_bad_video
        with np.errstate(invalid="ignore"):
            after_end = np.isfinite(ends) & (starts >= duration[vid_of]) & ~is_bad_video & ~no_words
        bad_pos = np.nonzero(is_bad_video | no_words | after_end)[0]
        for p in bad_pos:
            i = int(idx[p])
            vid, src_i = vid_names[int(vid_of[p])], store.source(i)
            if is_bad_video[p]:
                src, reason = bad_videos[vid]
                rec = BadSample("video", src_i, f"{src}: {reason}" if src not in reason else reason, vid)
            elif no_words[p]:
                rec = BadSample("row", src_i, f"caption has no word tokens: {store.text(i)!r:.80}", vid)
            else:
                rec = BadSample("row", src_i, f"narration [{starts[p]:.2f}, {ends[p]:.2f}] s starts after the end "
                                              f"of the video ({source.durations[vid]:.2f} s)", vid)
            if strict:
                raise BadSampleError(f"{rec.source}: {rec.reason}{STRICT_NOTE}")
            bad.append(rec)
        good_parts.append(np.delete(idx, bad_pos) if len(bad_pos) else idx)
        del vid_of, starts, ends
        store.release()  # unmap this chunk's columns before the next (bounded memory at any corpus size)
    return (np.concatenate(good_parts) if good_parts else cand[:0]), bad


def load_caption_items(dcfg: Any, strict: bool = False) -> tuple[list[CaptionItem], list[BadSample]]:
    """Caption records of ``data.captions`` (howto100m | webvid) via ``locvtp.data.formats``, as CaptionItems.

    Malformed rows come back as ``BadSample("row", ...)`` (strict: the reader raises ``FormatError``).
    An optional ``data.split_file`` (one video id per line) restricts the videos used.
    """
    from locvtp.data import formats

    root = Path(os.path.expanduser(str(dcfg.root)))
    path = resolve_data_path(root, dcfg.caption_file)
    if not path.is_file():
        raise FileNotFoundError(f"data.caption_file: {path} does not exist (data.root={root})")
    if dcfg.captions == "howto100m":
        res = formats.read_howto100m_captions(path, strict=strict)
        items = [CaptionItem(r.video_id, r.text, float(r.start), float(r.end),
                             f"{path}: key {r.video_id!r} narration {r.start:.2f}-{r.end:.2f} s")
                 for r in res.records]
    elif dcfg.captions == "webvid":  # videos are found by id under data.video_dir (contentUrl is often a URL)
        res = formats.read_webvid_csv(path, strict=strict)
        items = [CaptionItem(r.video_id, r.caption, 0.0, math.inf, f"{path}: videoid {r.video_id!r}")
                 for r in res.records]
    else:
        raise ConfigError(f"data.captions must be 'howto100m' or 'webvid', got {dcfg.captions!r}")
    bad = [BadSample("row", f"{b.file}: {b.location}", b.reason) for b in res.skipped]
    if dcfg.split_file:
        split = resolve_data_path(root, dcfg.split_file)
        if not split.is_file():
            raise FileNotFoundError(f"data.split_file: {split} does not exist (data.root={root})")
        keep = read_split_ids(split)
        items = [it for it in items if it.vid in keep]
    return items, bad
