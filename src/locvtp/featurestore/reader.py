"""The feature store's reader: per-video clip features in the three layouts the writer produces.

Formats (written by :mod:`locvtp.featurestore.writer` for ``locvtp extract``, read here by every consumer:
``ground``, ``index``, the downstream evaluation and pre-training on features):

* ``h5``: one HDF5 file, one float32 dataset ``[num_clips, D]`` per video id at the root (the layout
  2D-TAN/ActivityNet feature readers use), with ``fps``, ``duration`` and ``windows`` attributes; the root holds
  the run settings. A group holding a ``c3d_features`` dataset (the ActivityNet C3D release) is read too.
* ``npy-dir``: ``DIR/<name>.npy`` per video plus ``DIR/_info/<name>.json`` (its id, fps, duration, windows);
  ``DIR/meta.json`` holds the run settings. ``<name>`` is the id itself when it is a plain file name, else a
  stable hash (:func:`safe_name`): the id is read from ``_info``.
* ``npz-dir``: ``DIR/<name>.npz`` with ``features`` (what Moment-DETR-style code reads) plus ``windows``,
  ``fps``, ``duration`` and ``video_id``; ``DIR/meta.json`` holds the run settings.

Why finiteness is checked here: a NaN or infinite value turns every score it touches into NaN, and a NaN score
silently ranks last (grounding returns a meaningless window, the index never returns the row). Every loaded
record is checked; a bad one is a :class:`~locvtp.errors.NonFiniteFeaturesError` naming the file and the video,
or — with ``on_bad`` — reported and skipped, so a million-video job loses one video, not the run.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np

from locvtp.errors import LocVTPError, NonFiniteFeaturesError
from locvtp.featurestore.record import ClipFeatures

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
INDEX_FORMAT = "locvtp-moment-index"  # what `locvtp index` writes in meta.json (locvtp.index imports it from here)


class FeatureError(LocVTPError, RuntimeError):
    """A feature file or directory cannot be read (the message names it)."""


class MissingVideoError(LocVTPError, KeyError):
    """A requested video id is not in the features (a ``KeyError`` naming the file and the id, which the command
    line reports as one line)."""

    def __str__(self) -> str:  # KeyError's str() would quote its message
        return str(self.args[0]) if self.args else ""


def safe_name(video_id: str) -> str:
    """A file name for ``video_id``: the id itself when it is a plain name, else a stable hash."""
    if _SAFE_NAME.match(video_id) and len(video_id) <= 200:
        return video_id
    return "_id-" + hashlib.sha1(video_id.encode("utf-8")).hexdigest()[:20]



def detect_format(path: str | Path) -> str:
    p = Path(path)
    if p.is_file():
        return "h5"
    if p.is_dir():
        meta = p / "meta.json"
        if meta.is_file():
            try:
                found = json.loads(meta.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError):
                found = None
            fmt = found.get("layout") if isinstance(found, dict) else None
            if fmt in ("npy-dir", "npz-dir"):
                return fmt
            if isinstance(found, dict) and found.get("format") == INDEX_FORMAT or (p / "row_video.npy").is_file():
                raise FeatureError(f"{p} is a moment-search index (written by `locvtp index`), not a feature store: "
                                   "give the features `locvtp extract` wrote (the ones the index was built from)")
        if any(p.glob("*.npz")):
            return "npz-dir"
        if any(p.glob("*.npy")):
            return "npy-dir"
        raise FeatureError(f"{p}: no .npz/.npy feature files in this directory")
    from locvtp.errors import broken_link

    if broken_link(p):  # exists() is False for a link to nothing and for a loop: say which, not "no such file"
        raise FeatureError(f"{p}: {broken_link(p)}")
    raise FeatureError(f"{p}: no such feature file or directory")


def _decode_attr(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode("utf-8")
    if isinstance(v, np.generic):
        return v.item()
    return v


def feature_info(path: str | Path) -> dict[str, Any]:
    """Run settings of a feature file/dir (root attributes or ``meta.json``); ``{}`` for foreign files."""
    p = Path(path)
    fmt = detect_format(p)
    if fmt == "h5":
        import h5py

        try:
            with h5py.File(p, "r") as f:
                return {k: _decode_attr(v) for k, v in f.attrs.items()}
        except OSError as exc:
            raise FeatureError(f"{p}: not a readable HDF5 file: {exc}") from None
    meta = p / "meta.json"
    if meta.is_file():
        try:
            return dict(json.loads(meta.read_text(encoding="utf-8")))
        except ValueError as exc:
            raise FeatureError(f"{meta}: invalid JSON: {exc}") from None
    return {}


def _default_windows(n: int, info: dict[str, Any], duration: Optional[float]) -> np.ndarray:
    clip = float(info.get("clip_seconds") or 1.0)
    stride = float(info.get("stride_seconds") or clip)
    starts = np.arange(n, dtype=np.float64) * stride
    ends = starts + clip
    if duration is not None and duration > 0 and n:
        ends = np.minimum(ends, duration)
    return np.stack([starts, ends], axis=1)


def _h5_dataset(obj: Any) -> Any:
    """The feature dataset of a root entry: itself, or the single/`c3d_features` dataset of a group (the
    ActivityNet C3D release nests features as ``f[vid]["c3d_features"]``)."""
    import h5py

    if isinstance(obj, h5py.Dataset):
        return obj
    if isinstance(obj, h5py.Group):
        dsets = [v for v in obj.values() if isinstance(v, h5py.Dataset)]
        for d in dsets:
            if d.name.endswith("features"):
                return d
        if len(dsets) == 1:
            return dsets[0]
    return None


def iter_features(path: str | Path, load: bool = True, video_ids: Optional[list[str]] = None,
                  on_bad: Optional[Callable[[str, str], None]] = None) -> Iterator[ClipFeatures]:
    """Iterate the videos of a feature file/dir (any of the three formats), sorted by id; with ``video_ids``, those
    videos in that order (``KeyError`` naming the file and the id when one is absent, whatever the format).

    Loaded features are checked for NaN/inf (:func:`check_finite`): a bad video raises, or with
    ``on_bad(video_id, message)`` is reported there and skipped.
    """
    for rec in _iter_records(Path(path), load, video_ids):
        if load:
            try:
                check_finite(rec, path)
            except NonFiniteFeaturesError as exc:
                if on_bad is None:
                    raise
                on_bad(rec.video_id, str(exc))
                continue
        yield rec


def _iter_records(path: Path, load: bool, video_ids: Optional[list[str]]) -> Iterator[ClipFeatures]:
    p = Path(path)
    fmt = detect_format(p)
    info = feature_info(p)
    kind = info.get("embedding")
    kind = str(kind) if kind in ("joint", "backbone") else None
    if fmt == "h5":
        import h5py

        with h5py.File(p, "r") as f:
            keys = sorted(f.keys()) if video_ids is None else list(video_ids)
            for vid in keys:
                if vid not in f:
                    raise MissingVideoError(f"{p}: no video {vid!r}")
                d = _h5_dataset(f[vid])
                if d is None or d.ndim != 2:
                    continue
                fps = float(_decode_attr(d.attrs.get("fps", 0.0)) or 0.0)
                dur = _decode_attr(d.attrs.get("duration", None))
                n, dim = int(d.shape[0]), int(d.shape[1])
                feats = windows = None
                if load:
                    feats = np.asarray(d[()], dtype=np.float32)
                    windows = (np.asarray(d.attrs["windows"], dtype=np.float64).reshape(-1, 2)
                               if "windows" in d.attrs else _default_windows(n, info, dur))
                src = _decode_attr(d.attrs.get("source", None))
                yield ClipFeatures(vid, feats, windows, fps,
                                   float(dur) if dur is not None else (float(windows[-1, 1]) if load and n else 0.0),
                                   embedding=kind, shape=(n, dim), source=str(src) if src else None)
        return
    ext = ".npz" if fmt == "npz-dir" else ".npy"
    if video_ids is None:
        files = sorted(q for q in p.glob(f"*{ext}") if not q.name.startswith("."))
    else:
        files = [p / f"{safe_name(v)}{ext}" for v in video_ids]
        absent = [v for v, q in zip(video_ids, files) if not q.is_file()]
        if absent:
            raise MissingVideoError(f"{p}: no video {absent[0]!r}")
    for q in files:
        if fmt == "npz-dir":
            with np.load(q, allow_pickle=False) as z:
                if "features" not in z:
                    raise FeatureError(f"{q}: no 'features' array (keys: {sorted(z.keys())})")
                vid = str(z["video_id"]) if "video_id" in z else q.stem
                source = str(z["source"]) if "source" in z else None
                feats = (np.asarray(z["features"], dtype=np.float32) if load
                         else np.empty(_npz_shape(z, "features"), dtype=np.float32))
                fps = float(z["fps"]) if "fps" in z else 0.0
                dur = float(z["duration"]) if "duration" in z else None
                windows = (np.asarray(z["windows"], np.float64).reshape(-1, 2) if "windows" in z
                           else _default_windows(len(feats), info, dur))
        else:
            arr = np.load(q, mmap_mode=None if load else "r", allow_pickle=False)
            feats = np.asarray(arr, dtype=np.float32) if load else arr
            vid, fps, dur, windows, source = q.stem, 0.0, None, None, None
            side = p / "_info" / f"{q.stem}.json"
            if side.is_file():
                meta = json.loads(side.read_text(encoding="utf-8"))
                vid, fps, dur = meta.get("video_id", vid), float(meta.get("fps", 0.0)), meta.get("duration")
                source = meta.get("source") or None
                if load and "windows" in meta:
                    windows = np.asarray(meta["windows"], np.float64).reshape(-1, 2)
            if load and windows is None:
                windows = _default_windows(len(feats), info, dur)
        if feats.ndim != 2:
            raise FeatureError(f"{q}: features must be [num_clips, D], got shape {feats.shape}")
        n, dim = int(feats.shape[0]), int(feats.shape[1])
        if dur is None:
            dur = float(windows[-1, 1]) if windows is not None and n else 0.0
        yield ClipFeatures(vid, feats if load else None, windows if load else None, fps, float(dur), embedding=kind,
                           shape=(n, dim), source=source)


def _npz_shape(z: Any, key: str) -> tuple[int, ...]:
    """Shape of an array inside an open ``NpzFile`` from its header only (the data is not read)."""
    with z.zip.open(f"{key}.npy") as fh:
        version = np.lib.format.read_magic(fh)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, _ = read(fh)
    return tuple(shape)


def read_features(path: str | Path, video_id: str) -> ClipFeatures:
    """One video's features (``KeyError`` naming the file when absent; NaN/inf values raise
    :class:`NonFiniteFeaturesError`)."""
    return next(iter_features(path, load=True, video_ids=[video_id]))


def check_finite(rec: ClipFeatures, where: str | Path) -> ClipFeatures:
    """``rec`` unchanged, or :class:`NonFiniteFeaturesError` naming ``where`` and the video when a loaded
    feature value is NaN or infinite."""
    if rec.features is not None and rec.features.size and not np.isfinite(rec.features).all():
        bad = int(rec.features.size - np.isfinite(rec.features).sum())
        raise NonFiniteFeaturesError(f"{where}: video {rec.video_id!r} has {bad} non-finite feature values "
                                     "(NaN/inf); re-extract it")
    return rec


__all__ = ["ClipFeatures", "FeatureError", "MissingVideoError", "check_finite", "detect_format",
           "feature_info", "iter_features", "read_features", "safe_name"]
