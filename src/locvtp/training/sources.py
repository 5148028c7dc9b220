"""Where a sample's clips come from: the windows of a caption (narration, whole video) and the two sources that
fill them, decoded video files (:class:`VideoFileSource`, :class:`~locvtp.training.framecache.FrameCache`) or pre-extracted per-clip
features in any layout ``locvtp extract`` writes (:class:`FeatureSource`).

The sample rule itself is docs/training.md, "How a training sample is cut"; :mod:`locvtp.training.dataset`
turns these windows into batches.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from locvtp.training.framecache import FrameCache  # noqa: F401  (re-exported: the pixel sources live together)


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


class FeatureSource:
    """Pre-extracted per-clip features in any layout ``locvtp extract`` writes (:mod:`locvtp.featurestore`): an HDF5
    file (one dataset per video id), an ``npy-dir`` or an ``npz-dir``.

    Why the extraction's own metadata: a directory's ``meta.json`` says the seconds between rows
    (``stride_seconds``) and per clip (``clip_seconds``); reading a 0.5 s-stride extraction as 1 s misaligns every
    caption. Like the HDF5 attributes, these win over ``data.feature_stride``. Ids that are not plain file names
    are stored under a hashed name (:func:`locvtp.featurestore.safe_name`, the id in ``_info/`` or the npz's
    ``video_id``); they are found by that name.

    Lazy: with ``video_ids`` only the files of those videos are looked at (their headers, for the row count), and
    rows are read per sample. Loaded rows are checked for NaN/inf: a bad video fails the sample that reads it,
    which the dataset reports as a bad sample naming the file and the video (``--strict``: fatal).
    """

    kind = "features"

    def __init__(self, path: Path, clip_seconds: float, stride: Optional[float] = None,
                 video_ids: Optional[Sequence[str]] = None,
                 known_lengths: Optional[dict[str, tuple[int, int]]] = None):
        from locvtp.featurestore.reader import FeatureError, detect_format, feature_info

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
        from locvtp.featurestore.reader import FeatureError, _npz_shape

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
        from locvtp.featurestore.reader import safe_name

        for name in dict.fromkeys((safe_name(vid), vid)):
            q = self.path / f"{name}{self._ext()}"
            if "/" not in name and q.is_file():
                self._add(vid, q)
                return

    def _file(self, vid: str) -> Path:
        """The file of ``vid`` (found on first use when the lengths came from the prepared corpus)."""
        q = self.files.get(vid)
        if q is None:
            from locvtp.featurestore.reader import safe_name

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
        from locvtp.featurestore.reader import check_finite
        from locvtp.featurestore.record import ClipFeatures

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
        check_finite(ClipFeatures(vid, out, None), where)
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
    from locvtp.featurestore.reader import detect_format

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
                    from locvtp.featurestore.reader import FeatureError

                    raise FeatureError(f"{side}: invalid JSON: {exc}") from None
        yield vid, q
