"""Shared plumbing of the downstream tasks: seeding, atomic JSON, tables, the per-model embedding bank.

Why a bank: the four tasks read overlapping videos and the same sentences; embedding a video is by far the most
expensive step on CPU, so every needed video is embedded once per model and every task reads the cache.
"""
from __future__ import annotations

import json
import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from locvtp.errors import LocVTPError
from locvtp.featurestore.record import ClipFeatures
from locvtp.inference import TextEmbeddings
from locvtp.localize import standardize  # noqa: F401  (re-exported: its historical home)


class DownstreamError(LocVTPError, ValueError):
    """A downstream input (annotation, feature file, checkpoint) is unusable; the message names it."""


class MissingFeaturesError(DownstreamError, KeyError):
    """A feature file has no (usable) rows for a video. Still a ``KeyError`` for callers that catch one; a
    ``LocVTPError`` so that ``--strict`` reports it as one line."""

    __str__ = Exception.__str__  # not KeyError's quoted repr


# --------------------------------------------------------------------------------------------- reproducibility
def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch so every head and every shuffle is a function of ``seed``."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def single_threaded() -> Any:
    """Run the block with one intra-op thread, then restore the previous setting (:func:`locvtp.runtime.threads`).

    Why: the task heads work on tensors of a few thousand elements, where a parallel region costs more than the
    work; on a shared, busy CPU the threads' spin-waits made a head's step 25x slower with 2 threads than with 1
    (measured: 41 ms vs 1.03 s per batch of the 2D-TAN head at load 10 on 2 cores).
    """
    from locvtp import runtime

    return runtime.threads(1)


def run_single_threaded(fn: Callable) -> Callable:
    """Decorator form of :func:`single_threaded` (keeps the signature and docstring)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with single_threaded():
            return fn(*args, **kwargs)

    return wrapper


def torch_generator(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(int(seed))
    return g


# --------------------------------------------------------------------------------------------- output
def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, torch.Tensor):
        return _jsonable(obj.detach().cpu().tolist())
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None  # JSON has no NaN/inf
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: str | os.PathLike, obj: Any, command: str = "evaluate") -> Path:
    """Write ``obj`` as JSON atomically as ``command``'s own file (:func:`locvtp.files.write_owned_text`: a
    temporary sibling, then ``os.replace``, removed on failure; a file there that locvtp did not write is
    refused, never replaced); numpy/torch values converted."""
    from locvtp.files import write_owned_text

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_jsonable(obj), indent=1, sort_keys=False) + "\n"  # before the file: a bad value writes nothing
    return write_owned_text(path, text, command)


def write_jsonl(path: str | os.PathLike, rows: Iterable[Any], command: str = "evaluate") -> Path:
    """Write one JSON object per line, as :func:`write_json`. Floats keep their full precision (``repr``
    round-trips), so a predictions file scores to exactly the figures it was made with."""
    from locvtp.files import write_owned_text

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_owned_text(path, "".join(json.dumps(_jsonable(r)) + "\n" for r in rows), command)


def write_npz(path: str | os.PathLike, arrays: Mapping[str, np.ndarray], command: str = "evaluate") -> Path:
    """Write ``arrays`` as one uncompressed ``.npz`` (no pickled objects), as :func:`write_json`: atomically, as
    ``command``'s own file."""
    from locvtp.files import owned_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with owned_file(path, command) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **{k: np.asarray(v) for k, v in arrays.items()})
    return path


def format_table(rows: Mapping[str, Mapping[str, float]] | Mapping[str, float], title: str | None = None,
                 digits: int = 2) -> str:
    """A plain-text table.

    ``rows`` is either ``{metric: value}`` (one column) or ``{row_name: {metric: value}}`` (one row per model /
    task, the union of metrics as columns, missing cells shown as ``-``).
    """
    if rows and all(not isinstance(v, Mapping) for v in rows.values()):
        rows = {"value": dict(rows)}  # type: ignore[arg-type]
        transpose = True
    else:
        transpose = False
    rows = {k: dict(v) for k, v in rows.items()}  # type: ignore[union-attr]
    columns: list[str] = []
    for r in rows.values():
        for c in r:
            if c not in columns:
                columns.append(c)

    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, (float, np.floating)):
            return "nan" if not math.isfinite(float(v)) else f"{float(v):.{digits}f}"
        return str(v)

    lines = []
    if title:
        lines.append(title)
    if transpose:
        (only,) = rows.values()
        w = max([len(c) for c in columns] + [6])
        lines += [f"  {c:<{w}}  {cell(only.get(c)):>10}" for c in columns]
        return "\n".join(lines)
    name_w = max([len(n) for n in rows] + [5])
    widths = [max(len(c), 7) for c in columns]
    header = " " * (name_w + 2) + "  ".join(f"{c:>{w}}" for c, w in zip(columns, widths))
    lines += [header, "-" * len(header)]
    for name, r in rows.items():
        lines.append(f"{name:<{name_w}}  " + "  ".join(f"{cell(r.get(c)):>{w}}" for c, w in zip(columns, widths)))
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- small numerics
def overlap_pool_matrix(windows: np.ndarray, duration: float, num_bins: int) -> np.ndarray:
    """Weights ``[num_bins, n]`` that average clip features into ``num_bins`` equal time bins of ``[0, duration]``.

    Bin k covers ``[k, k+1] * duration / num_bins`` (the time grid 2D-TAN's N×N map lives on); a clip contributes
    in proportion to its temporal overlap with the bin. A bin no clip overlaps (clips shorter than the video's
    tail, or a gap) takes the clip whose centre is nearest, so every row sums to 1.
    """
    windows = np.asarray(windows, dtype=np.float64).reshape(-1, 2)
    n = windows.shape[0]
    if n == 0:
        raise DownstreamError("cannot pool an empty clip sequence")
    duration = float(duration)
    if not duration > 0:
        duration = float(windows[:, 1].max())
    edges = np.linspace(0.0, duration, num_bins + 1)
    lo = np.maximum(edges[:-1, None], windows[None, :, 0])
    hi = np.minimum(edges[1:, None], windows[None, :, 1])
    w = np.clip(hi - lo, 0.0, None)
    total = w.sum(axis=1, keepdims=True)
    empty = total[:, 0] <= 0
    if empty.any():
        centres = windows.mean(axis=1)
        bin_centres = (edges[:-1] + edges[1:]) / 2
        nearest = np.abs(bin_centres[empty, None] - centres[None, :]).argmin(axis=1)
        w[empty] = 0.0
        w[np.flatnonzero(empty), nearest] = 1.0
        total = w.sum(axis=1, keepdims=True)
    return (w / total).astype(np.float32)


# --------------------------------------------------------------------------------------------- embeddings
@dataclass
class EmbeddingBank:
    """Per-model cache of clip and text embeddings, filled once and shared by all tasks.

    ``embed_video(vid) -> ClipFeatures`` and ``embed_texts(list[str]) -> TextEmbeddings`` are the two expensive
    calls (bound to a model by :func:`make_bank`); ``frozen`` optionally maps a video id to externally
    extracted features (``--features``), used by the supervised heads instead of the embeddings. Failures are
    kept with their reason (``failed``: embedding, ``failed_features``: feature rows); ``strict`` raises instead.
    """

    embed_video: Callable[[str], ClipFeatures]
    embed_texts_fn: Callable[[list[str]], TextEmbeddings]
    frozen: Callable[[str], ClipFeatures] | None = None
    progress: bool = True
    strict: bool = False
    _videos: dict[str, ClipFeatures] = field(default_factory=dict)
    _texts: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)
    _frozen: dict[str, ClipFeatures] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    failed_features: dict[str, str] = field(default_factory=dict)

    def prefetch(self, vids: Iterable[str], desc: str = "embed videos", strict: bool | None = None) -> None:
        """Embed every not-yet-cached video once (lenient: a video that fails is recorded in ``failed``)."""
        from locvtp.runtime import progress as tqdm

        todo = [v for v in dict.fromkeys(vids) if v not in self._videos and v not in self.failed]
        for vid in tqdm(todo, desc=desc, disable=not self.progress or not todo, leave=False):
            try:
                self._videos[vid] = self.embed_video(vid)
            except (OSError, ValueError, RuntimeError, KeyError) as exc:
                if self.strict if strict is None else strict:
                    raise
                self.failed[vid] = f"{type(exc).__name__}: {exc}"

    def video(self, vid: str) -> ClipFeatures | None:
        """Clip embeddings of ``vid`` (None if it failed to embed)."""
        if vid not in self._videos and vid not in self.failed:
            self.prefetch([vid])
        return self._videos.get(vid)

    def features(self, vid: str) -> ClipFeatures | None:
        """Frozen features for supervised heads: ``--features`` rows if given, else the clip embeddings."""
        if self.frozen is None:
            return self.video(vid)
        if vid in self.failed_features:
            return None
        if vid not in self._frozen:
            try:
                self._frozen[vid] = self.frozen(vid)
            except (KeyError, OSError, ValueError) as exc:
                if self.strict:
                    raise
                self.failed_features[vid] = f"{type(exc).__name__}: {exc}"
                return None
        return self._frozen[vid]

    def texts(self, texts: Sequence[str], batch_size: int = 256) -> TextEmbeddings:
        """Sentence and word embeddings of ``texts`` (each distinct string embedded once), with the words'
        content marks (``TextEmbeddings.content``; an empty array per text when the embedder gave none)."""
        todo = [t for t in dict.fromkeys(texts) if t not in self._texts]
        for k in range(0, len(todo), batch_size):
            chunk = todo[k:k + batch_size]
            emb = self.embed_texts_fn(chunk)
            marks = emb.content if len(emb.content) == len(chunk) else [np.zeros(0, bool)] * len(chunk)
            for t, s, w, c in zip(chunk, emb.sentence, emb.words, marks):
                self._texts[t] = (np.asarray(s, np.float32), np.asarray(w, np.float32), np.asarray(c, bool))
        if not texts:
            return TextEmbeddings(np.zeros((0, 0), np.float32), [])
        return TextEmbeddings(np.stack([self._texts[t][0] for t in texts]), [self._texts[t][1] for t in texts],
                              content=[self._texts[t][2] for t in texts])


# --------------------------------------------------------------------------------------------- context
class VideoLocator:
    """Video id -> file in ``video_dir``, by the one id rule every command shares
    (:func:`locvtp.data.videoids.find_video`: the same extensions ``extract`` lists, ``sub__clip`` ->
    ``sub/clip.<ext>``)."""

    def __init__(self, video_dir: str | os.PathLike):
        self.video_dir = Path(video_dir)

    def __call__(self, vid: str) -> Path:
        from locvtp.data.videoids import VIDEO_EXTENSIONS, find_video

        path = find_video(self.video_dir, vid)
        if path is None:
            raise FileNotFoundError(f"video {vid!r} not found in {self.video_dir} (extensions "
                                    f"{' '.join(VIDEO_EXTENSIONS)})")
        return path


@dataclass
class FeatureFile:
    """Per-video clip features written by ``locvtp extract`` or a foreign tool: an HDF5 file (one ``[N, D]``
    dataset per video id, the layout 2D-TAN users know), an ``npy-dir`` or an ``npz-dir``. Reading goes through
    ``locvtp.featurestore.iter_features`` (one reader for every format); ``attrs`` are the run settings."""

    path: Path
    attrs: dict = field(default_factory=dict)

    @classmethod
    def open(cls, path: str | os.PathLike) -> "FeatureFile":
        from locvtp.featurestore.reader import FeatureError, feature_info

        path = Path(path)
        if not path.exists():
            from locvtp.errors import broken_link

            raise DownstreamError(f"feature file {path}: {broken_link(path)}" if broken_link(path) else
                                  f"feature file not found: {path}")
        try:
            attrs = feature_info(path)
        except FeatureError as exc:
            raise DownstreamError(str(exc)) from None
        return cls(path, {str(k): _jsonable(v) for k, v in attrs.items()})

    def read(self, vid: str, duration: float | None = None) -> ClipFeatures:
        """Rows of ``vid`` with their windows (the file's own, else consecutive clips of the run settings).
        Raises ``KeyError`` naming the file when the video is absent."""
        from locvtp.featurestore.reader import iter_features

        try:
            rec = next(iter(iter_features(self.path, load=True, video_ids=[vid])), None)
        except KeyError:
            raise MissingFeaturesError(f"{self.path}: no features for video {vid!r}") from None
        except (FileNotFoundError, OSError) as exc:
            raise MissingFeaturesError(f"{self.path}: no features for video {vid!r} ({exc})") from None
        if rec is None or rec.features is None:
            raise MissingFeaturesError(f"{self.path}: no usable [num_clips, D] features for video {vid!r}")
        windows = np.asarray(rec.windows, dtype=np.float64).reshape(-1, 2).copy()
        dur = float(rec.duration) if rec.duration and rec.duration > 0 else None
        if dur is None:
            dur = float(duration) if duration and duration > 0 else (float(windows[-1, 1]) if len(windows) else 0.0)
        return ClipFeatures(vid, np.asarray(rec.features, np.float32), windows, rec.fps, dur,
                            embedding=rec.embedding)

    def is_joint_embedding_of(self, sha256: str) -> bool:
        """True when the file holds *this* checkpoint's joint-space clip embeddings (``locvtp extract`` default):
        they can then replace decoding the videos (the provenance policy: origin ``own``)."""
        from locvtp.featurestore.provenance import feature_origin

        return str(self.attrs.get("embedding", "")) == "joint" and feature_origin(self.attrs, sha256) == "own"


@dataclass
class EvalContext:
    """Everything a task needs: the loaded model, its embedding bank, where the data is and where results go."""

    model: Any
    tokenizer: Any
    cfg: Any  # the checkpoint's full config (``cfg.data`` has clip_seconds, frames_per_clip, ...)
    data_dir: Path
    bank: EmbeddingBank
    out_dir: Path | None = None
    seed: int = 0
    progress: bool = True
    strict: bool = False
    checkpoint_path: str = ""
    checkpoint_sha256: str = ""
    durations: dict[str, float] = field(default_factory=dict)  # from annotations, for feature-file windows
    preprocessing: Any = None  # locvtp.predictor.Preprocessing (None: read from ``cfg`` by the predictor's rule)

    def __post_init__(self) -> None:
        if self.preprocessing is None:
            from locvtp.predictor import Preprocessing

            self.preprocessing = Preprocessing.from_config(self.cfg)

    @property
    def max_words(self) -> int:
        return int(self.preprocessing.max_words)

    @property
    def stride_seconds(self) -> float:
        return float(self.preprocessing.stride_seconds)


def make_bank(model: Any, tokenizer: Any, cfg: Any, locate: Callable[[str], Path], features: FeatureFile | None,
              durations: Mapping[str, float], progress: bool = True, checkpoint_sha256: str = "",
              strict: bool = False, predictor: Any = None) -> EmbeddingBank:
    """Bind the expensive calls to the model, through ``predictor`` (a ``locvtp.predictor.LocVTPPredictor``;
    None: one over ``model``, ``tokenizer``, ``cfg`` and ``checkpoint_sha256``).

    Pixel models embed each video file with the checkpoint's preprocessing (``LocVTPPredictor.encode_file``);
    ``--features`` rows then feed the supervised heads. Feature models (``model.video.name = features``) read
    their input from ``--features``, and the heads use the resulting joint embeddings. A feature file that holds
    this very checkpoint's joint embeddings (the predictor's feature policy: origin ``own``, as ``locvtp extract``
    writes) is used for everything, and no video is decoded; any other file is never used as the model's
    embeddings.
    """
    if predictor is None:
        from locvtp.predictor import LocVTPPredictor

        predictor = LocVTPPredictor(model, tokenizer, cfg, sha256=checkpoint_sha256)
    pred = predictor
    takes_pixels = pred.takes_pixels
    if not takes_pixels and features is None:
        raise DownstreamError("this checkpoint's video encoder reads pre-extracted features: pass --features H5")

    def embed_video(vid: str) -> ClipFeatures:
        if takes_pixels:
            emb = pred.encode_file(locate(vid))
            return ClipFeatures(vid, np.asarray(emb.features, np.float32), np.asarray(emb.windows, np.float64),
                                emb.fps, float(emb.duration), embedding="joint")
        assert features is not None
        raw = features.read(vid, durations.get(vid))
        emb = pred.encode_features(raw.features, windows=raw.windows, features_are="input")
        return ClipFeatures(vid, np.asarray(emb.features, np.float32), raw.windows, raw.fps, raw.duration,
                            embedding="joint")

    def embed_txt(texts: list[str]) -> TextEmbeddings:
        t = pred.encode_text(texts, warnings=False)
        return TextEmbeddings(np.asarray(t.sentence, np.float32), [np.asarray(w, np.float32) for w in t.words],
                              content=list(t.content))

    if features is not None and takes_pixels and features.is_joint_embedding_of(pred.sha256):
        pred.check_features(features.attrs, str(features.path))  # own: its recorded frames must be the model's

        def embed_video(vid: str) -> ClipFeatures:  # noqa: F811  (already this model's clip embeddings)
            return features.read(vid, durations.get(vid))

        return EmbeddingBank(embed_video, embed_txt, frozen=None, progress=progress, strict=strict)
    frozen = None
    if features is not None and takes_pixels:
        def frozen(vid: str) -> ClipFeatures:
            return features.read(vid, durations.get(vid))

    return EmbeddingBank(embed_video, embed_txt, frozen=frozen, progress=progress, strict=strict)


@dataclass
class TaskResult:
    """What a task returns: flat metrics (already prefixed, e.g. ``grounding_R1@0.5``), per-query predictions,
    and ``info`` (counts, skipped inputs with reasons, settings used) — all written to ``<out>/<task>.json``."""

    task: str
    metrics: dict[str, float]
    predictions: list[dict] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    # Extra files for ``<out>``: name -> JSON-lines rows (e.g. ``grounding_predictions.jsonl``, what ``locvtp
    # score`` reads); not part of ``<task>.json``.
    prediction_files: dict[str, list[dict]] = field(default_factory=dict)
    # name -> arrays written as one ``.npz`` (retrieval's similarity matrices, ``locvtp score retrieval``'s input)
    array_files: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"task": self.task, "metrics": self.metrics, "info": self.info, "predictions": self.predictions}


def prefixed(prefix: str, metrics: Mapping[str, Any]) -> dict[str, float]:
    """``{"R1": 3.0}`` → ``{"<prefix>_R1": 3.0}`` (numbers only)."""
    return {f"{prefix}_{k}": float(v) for k, v in metrics.items() if isinstance(v, (int, float, np.number))}


def bad_records(skipped: Iterable[Any]) -> list[dict]:
    """``formats.BadRecord``s as JSON-ready dicts (file, location, reason)."""
    return [{"file": str(b.file), "location": str(b.location), "reason": str(b.reason)} for b in skipped]
