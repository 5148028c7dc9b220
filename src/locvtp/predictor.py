"""The Python front door for a trained model: :class:`LocVTPPredictor` binds a checkpoint to its preprocessing.

After lighthouse's predictor and open_clip's ``create_model_and_transforms``: one object holds the model, the
tokenizer and the preprocessing the model was trained with, so a caller cannot embed a video with the wrong clip
layout by forgetting an argument::

    from locvtp.predictor import LocVTPPredictor

    p = LocVTPPredictor.from_checkpoint("runs/demo", device="cpu", threads=1)
    video = p.encode_file("clip.mp4")                   # ClipFeatures: features [N, D], windows [N, 2] s, ...
    text = p.encode_text(["a person opens a door"])     # TextEmbeddings (+ .warnings per text)
    res = p.ground(video, "a person opens a door", top_k=5)   # GroundingResult: windows, scores, warnings
    hits = p.search("index_dir", ["a person opens a door"])   # SearchResponse (locvtp.index.MomentIndex)

Every command that embeds (``locvtp extract``, ``ground``, ``search``, ``evaluate``) goes through this class, so
the command line and Python give the same numbers (``tests/test_predictor.py`` checks it).

Preprocessing (:class:`Preprocessing`)
--------------------------------------
Read ONCE from the checkpoint's ``config.yaml`` (``data`` section), here and nowhere else:
``clip_seconds`` (``data.clip_seconds``), ``stride_seconds`` (= ``clip_seconds``: inference clips are
non-overlapping unless asked), ``frames_per_clip`` (``data.frames_per_clip``), ``frame_size``
(``data.frame_size``) and ``max_words`` (``data.max_words``, special tokens included). A config without a
``data`` section (or without one of these keys) falls back to the library defaults of ``locvtp.config.DataConfig``
-- 1.0 s clips, 4 frames of 32 px, 24 tokens -- the same fallbacks the commands used before this class existed.

What a caller may change and what not:

* ``clip_seconds`` and ``stride_seconds`` are the sliding-window choice (how a long video is cut): they may
  differ from training (``ground --clip-seconds``, ``extract --stride-seconds``); the model still sees
  ``frames_per_clip`` frames per clip.
* ``frames_per_clip``, ``frame_size`` and ``max_words`` are the model's input contract. Asking for other values
  (``extract --frames-per-clip 16`` on a 4-frame checkpoint, decoded clips of another shape, ``encode_file(...,
  frame_size=112)``) is a :class:`~locvtp.errors.UsageError` naming both values -- never a silent default, never a
  silent resize. Pre-extracted *input* features (a ``features`` video encoder) must have the encoder's width
  (``model.video.in_dim``).

One method per kind of input
----------------------------
``encode_file`` (a video file), ``encode_clips`` (decoded clips), ``encode_frames`` (decoded frames with their
times), ``encode_features`` (per-clip vectors in memory: joint embeddings or a ``features`` encoder's input) and
``encode_stored`` (one video of a feature store): each names what it takes, so an argument that means nothing for
the input (``windows`` for a file, ``times`` for clips) cannot be passed. ``ground`` takes what they return.

Features made by another checkpoint
-----------------------------------
The policy (``own`` / ``foreign`` / ``unknown`` / ``backbone``) lives in the feature store, beside the fingerprint
it reads: :mod:`locvtp.featurestore.provenance`. :meth:`LocVTPPredictor.check_features` applies it with this
model's fingerprint (and refuses an ``own`` extraction that recorded other ``frames_per_clip`` / ``frame_size``
than the checkpoint's); ``encode_stored``, ``open_index`` and so ``ground`` / ``search`` / ``serve`` go through it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from locvtp import runtime
from locvtp.config import DataConfig
from locvtp.errors import LocVTPError, UsageError
from locvtp.featurestore import ClipFeatures, feature_info, read_features
from locvtp.featurestore.provenance import check_provenance, feature_origin, recorded_mismatches, store_settings
from locvtp.inference import (
    DecodedClips, TextEmbeddings, decode_video_clips, embed_features, embed_texts, embed_video_frames,
    encode_clip_sequence, require_tokenizer, text_query_warnings,
)
from locvtp.localize import GroundingResult, ground_embeddings

# The fallbacks of a checkpoint whose config has no `data` section: DataConfig's own defaults (one place).
_DATA_DEFAULTS = DataConfig()
# The keyword arguments that may not contradict the checkpoint, with the config key that fixes them.
CONTRACT = {"frames_per_clip": "data.frames_per_clip", "frame_size": "data.frame_size"}


class PredictorError(LocVTPError, ValueError):
    """An input cannot be embedded or grounded with this checkpoint (the message names the file or value)."""


# ------------------------------------------------------------------------------------------ preprocessing
@dataclass(frozen=True)
class Preprocessing:
    """How a checkpoint turns a video and a sentence into model inputs (see the module docstring)."""

    clip_seconds: float = _DATA_DEFAULTS.clip_seconds
    stride_seconds: float = _DATA_DEFAULTS.clip_seconds
    frames_per_clip: int = _DATA_DEFAULTS.frames_per_clip
    frame_size: int = _DATA_DEFAULTS.frame_size
    max_words: int = _DATA_DEFAULTS.max_words

    @classmethod
    def from_config(cls, cfg: Any) -> "Preprocessing":
        """The checkpoint's ``cfg.data`` (the one place it is read), with the documented fallbacks."""
        dcfg = cfg.get("data", None) if hasattr(cfg, "get") else getattr(cfg, "data", None)

        def value(key: str, default: Any, kind: type) -> Any:
            v = dcfg.get(key, None) if dcfg is not None and hasattr(dcfg, "get") else getattr(dcfg, key, None)
            return kind(default if v is None else v)

        d = _DATA_DEFAULTS
        clip = value("clip_seconds", d.clip_seconds, float)
        return cls(clip, clip, value("frames_per_clip", d.frames_per_clip, int),
                   value("frame_size", d.frame_size, int), value("max_words", d.max_words, int))

    def with_windows(self, clip_seconds: Optional[float] = None,
                     stride_seconds: Optional[float] = None) -> "Preprocessing":
        """Another sliding-window cut (allowed); ``stride_seconds`` defaults to the (new) clip length."""
        clip = float(clip_seconds) if clip_seconds is not None else self.clip_seconds
        if clip_seconds is None and stride_seconds is None:
            return self
        stride = float(stride_seconds) if stride_seconds is not None else clip
        if not (clip > 0 and stride > 0):
            raise UsageError(f"clip_seconds and stride_seconds must be > 0, got {clip:g} and {stride:g}")
        return replace(self, clip_seconds=clip, stride_seconds=stride)


@dataclass
class QueryMoments:
    """One query's search result: its moments (``locvtp.index.Moment``, best first) and query warnings."""

    query: str
    moments: list
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"query": self.query, "moments": [m.to_json() for m in self.moments], "warnings": self.warnings}


@dataclass
class SearchResponse:
    """:meth:`LocVTPPredictor.search`: one :class:`QueryMoments` per query, index-level warnings, timings."""

    results: list[QueryMoments]
    warnings: list[str] = field(default_factory=list)
    embed_seconds: float = 0.0
    search_seconds: float = 0.0


# ------------------------------------------------------------------------------------------ the predictor
class LocVTPPredictor:
    """A trained LocVTP model with its tokenizer and preprocessing; see the module docstring.

    Build it with :meth:`from_checkpoint` (a checkpoint or run directory) or :meth:`from_loaded` (a
    ``locvtp.checkpoint.Checkpoint``). ``threads``: torch intra-op threads during each call (restored after;
    None leaves torch's setting alone).
    """

    def __init__(self, model: Any, tokenizer: Any, cfg: Any, path: Any = None, sha256: str = "",
                 device: Optional[str] = None, threads: Optional[int] = None) -> None:
        from locvtp.inference import model_device

        if threads is not None and int(threads) < 1:
            raise UsageError(f"threads must be >= 1 (or None), got {threads}")
        self.model = model
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.path = Path(path) if path is not None else None
        self.sha256 = str(sha256 or "")
        self.device = str(device) if device is not None else str(model_device(model))
        self.threads = int(threads) if threads is not None else None
        self.preprocessing = Preprocessing.from_config(cfg)
        self._checkpoint: Any = None

    # -- construction -----------------------------------------------------------------------------------
    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu", threads: Optional[int] = None,
                        verify: bool = True) -> "LocVTPPredictor":
        """Load a checkpoint (or the newest of a run directory) onto ``device`` ("auto" | "cpu" | "cuda[:N]" |
        "mps", checked before loading)."""
        from locvtp.checkpoint import load_checkpoint, resolve_checkpoint
        from locvtp.device import resolve_device

        dev = resolve_device(device, what="device")
        ck = load_checkpoint(resolve_checkpoint(path), map_location=dev, verify=verify)
        return cls.from_loaded(ck, device=dev, threads=threads)

    @classmethod
    def from_loaded(cls, ckpt: Any, device: Optional[str] = None, threads: Optional[int] = None
                    ) -> "LocVTPPredictor":
        """Wrap an already loaded ``locvtp.checkpoint.Checkpoint`` (no copy of the model)."""
        p = cls(ckpt.model, getattr(ckpt, "tokenizer", None), ckpt.cfg, getattr(ckpt, "path", None),
                str(getattr(ckpt, "sha256", "") or ""), device=device, threads=threads)
        p._checkpoint = ckpt
        return p

    # -- facts about the model ----------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        """Width of the joint space (clip and text embeddings)."""
        return int(self.model.dim)

    @property
    def takes_pixels(self) -> bool:
        """True for a pixel video encoder; False for a ``features`` encoder (reads pre-extracted features)."""
        return bool(getattr(self.model, "takes_pixels", True))

    @property
    def input_width(self) -> Optional[int]:
        """Width of the input features a ``features`` encoder reads (``model.video.in_dim``); None for pixels."""
        if self.takes_pixels:
            return None
        return int(getattr(self.model.video_encoder, "in_dim", 0) or self.cfg.model.video.in_dim)

    def require_tokenizer(self, command: str = "this command") -> Any:
        """The tokenizer, or an ``InferenceError`` naming the checkpoint (see ``inference.require_tokenizer``)."""
        holder = self._checkpoint if self._checkpoint is not None else self
        return require_tokenizer(holder, command)

    def thread_limit(self) -> Any:
        """``threads`` torch threads for a block (every call of the predictor runs in one), then the previous
        setting again (:func:`locvtp.runtime.threads`; faiss too when it is loaded); a no-op when ``threads`` is
        None."""
        return runtime.threads(self.threads)

    # -- preprocessing --------------------------------------------------------------------------------------
    def resolve_preprocessing(self, clip_seconds: Optional[float] = None, stride_seconds: Optional[float] = None,
                              frames_per_clip: Optional[int] = None, frame_size: Optional[int] = None,
                              flags: Optional[Mapping[str, str]] = None) -> Preprocessing:
        """The checkpoint's preprocessing with a caller's choices: another window cut is allowed, a
        ``frames_per_clip`` / ``frame_size`` other than the checkpoint's is a ``UsageError`` naming both values.
        ``flags`` names the command-line flag of an argument in the message (``{"frame_size": "--frame-size"}``).
        """
        prep = self.preprocessing
        for name, given in (("frames_per_clip", frames_per_clip), ("frame_size", frame_size)):
            if given is not None and int(given) != getattr(prep, name):
                self._contradiction(name, int(given), flags)
        return prep.with_windows(clip_seconds, stride_seconds)

    def _contradiction(self, name: str, given: Any, flags: Optional[Mapping[str, str]] = None,
                       what: str = "") -> None:
        arg = (flags or {}).get(name, name)
        sep = " " if arg.startswith("-") else " = "
        where = f"{self.path}/config.yaml" if self.path is not None else "the checkpoint's config"
        raise UsageError(f"{arg}{sep}{given}{what}: the model was trained with {CONTRACT[name]} = "
                         f"{getattr(self.preprocessing, name)} ({where}); embeddings made with other inputs would "
                         "be silently wrong (leave it unset to use the checkpoint's value)")

    # -- features policy ----------------------------------------------------------------------------------
    def check_features(self, info: Mapping[str, Any], where: str, allow_foreign_features: bool = False,
                       allow_flag: str = "allow_foreign_features=True") -> list[str]:
        """The feature store's provenance policy (:mod:`locvtp.featurestore.provenance`) for this model: raise,
        or return the warnings to report. ``where`` names the store; ``allow_flag`` how to override. An ``own``
        store whose extraction recorded other input settings than the checkpoint's is a ``UsageError``."""
        warnings = check_provenance(info, where, self.sha256, allow_foreign_features, allow_flag)
        if self.takes_pixels and feature_origin(info, self.sha256) == "own":
            expected = {name: getattr(self.preprocessing, name) for name in CONTRACT}
            for name, recorded in recorded_mismatches(info, expected):
                self._contradiction(name, recorded, what=f" (recorded by the extraction {where})")
        return warnings

    def feature_settings(self, preprocessing: Optional[Preprocessing] = None, embedding: str = "joint"
                         ) -> dict[str, Any]:
        """The settings a feature store of this model's clip vectors records (what ``check_features`` reads)."""
        prep = preprocessing or self.preprocessing
        return store_settings(self.model, self.sha256, self.path, prep.clip_seconds, prep.stride_seconds,
                              prep.frames_per_clip, prep.frame_size, embedding)

    # -- video --------------------------------------------------------------------------------------------
    def decode_video(self, path: str | Path, preprocessing: Optional[Preprocessing] = None) -> DecodedClips:
        """The decode half of :meth:`encode_file` (thread-safe: no model involved)."""
        prep = preprocessing or self.preprocessing
        return decode_video_clips(path, prep.clip_seconds, prep.stride_seconds, prep.frames_per_clip,
                                  prep.frame_size)

    def _batch(self, batch_clips: Optional[int]) -> int:
        from locvtp.inference import DEFAULT_BATCH_CLIPS

        return int(batch_clips) if batch_clips is not None else DEFAULT_BATCH_CLIPS

    def _require_pixels(self, what: str) -> None:
        if not self.takes_pixels:
            raise UsageError(f"{what}: this checkpoint's video encoder reads pre-extracted features, not video "
                             "pixels: give a feature file with video_id (or the features themselves)")

    def encode_file(self, path: str | Path, *, clip_seconds: Optional[float] = None,
                    stride_seconds: Optional[float] = None, frames_per_clip: Optional[int] = None,
                    frame_size: Optional[int] = None, backbone: bool = False,
                    batch_clips: Optional[int] = None) -> ClipFeatures:
        """A video file's clip embeddings (``embedding="joint"``, ``video_id`` = the file's stem), decoded with
        the checkpoint's preprocessing. ``clip_seconds`` / ``stride_seconds`` may choose another window cut;
        ``frames_per_clip`` / ``frame_size``, when given, must equal the checkpoint's (else ``UsageError``)."""
        path = Path(path)
        prep = self.resolve_preprocessing(clip_seconds, stride_seconds, frames_per_clip, frame_size)
        self._require_pixels(str(path))
        warnings = []
        if prep.stride_seconds > prep.clip_seconds:
            warnings.append(f"--stride-seconds {prep.stride_seconds:g} is longer than the clip "
                            f"({prep.clip_seconds:g} s): only {prep.clip_seconds / prep.stride_seconds:.0%} of the "
                            "video is looked at, windows span unseen gaps")
        with self.thread_limit():
            dec = self.decode_video(path, prep)
            emb, bb = encode_clip_sequence(self.model, dec.clips, batch_clips=self._batch(batch_clips),
                                           backbone=backbone, device=self.device)
        return ClipFeatures(path.stem, emb, dec.windows, dec.fps, dec.duration, bb, warnings, embedding="joint")

    def encode_clips(self, clips: DecodedClips | np.ndarray, windows: Optional[np.ndarray] = None, *,
                     fps: float = 0.0, duration: Optional[float] = None, backbone: bool = False,
                     batch_clips: Optional[int] = None) -> ClipFeatures:
        """Decoded clips' embeddings: a :class:`~locvtp.inference.DecodedClips` (its windows, fps, duration), or
        clips ``uint8 [N, F, S, S, 3]`` with their ``windows [N, 2]`` seconds (``duration``: default the last
        window's end). Their frames per clip and frame size must be the checkpoint's (else ``UsageError``)."""
        if isinstance(clips, DecodedClips):
            clips, windows, fps, duration = clips.clips, clips.windows, clips.fps, clips.duration
        elif windows is None:
            raise PredictorError("decoded clips [N, F, S, S, 3] need their windows [N, 2] (seconds)")
        self._require_pixels("decoded clips")
        clips = np.asarray(clips)
        windows = np.asarray(windows, np.float64).reshape(-1, 2)
        if clips.ndim != 5 or clips.shape[-1] != 3:
            raise PredictorError(f"decoded clips must be uint8 [N, F, S, S, 3], got shape {clips.shape}")
        if len(clips) and clips.shape[1] != self.preprocessing.frames_per_clip:
            self._contradiction("frames_per_clip", int(clips.shape[1]), what=" (decoded clips)")
        if len(clips) and clips.shape[2:4] != (self.preprocessing.frame_size,) * 2:
            self._contradiction("frame_size", "x".join(map(str, clips.shape[2:4])), what=" (decoded clips)")
        if len(windows) != len(clips):
            raise PredictorError(f"{len(windows)} windows for {len(clips)} decoded clips")
        dur = float(duration) if duration is not None else (float(windows[-1, 1]) if len(windows) else 0.0)
        with self.thread_limit():
            emb, bb = encode_clip_sequence(self.model, clips, batch_clips=self._batch(batch_clips),
                                           backbone=backbone, device=self.device)
        return ClipFeatures("", emb, windows, float(fps), dur, bb, embedding="joint")

    def encode_frames(self, frames: np.ndarray, times: np.ndarray, duration: float, *, fps: float = 0.0,
                      clip_seconds: Optional[float] = None, stride_seconds: Optional[float] = None,
                      frames_per_clip: Optional[int] = None, frame_size: Optional[int] = None,
                      backbone: bool = False, batch_clips: Optional[int] = None) -> ClipFeatures:
        """Decoded frames ``uint8 [M, H, W, 3]`` at ``times [M]`` (seconds) of a video of ``duration`` seconds,
        cut into clips with the checkpoint's preprocessing (``clip_seconds`` / ``stride_seconds``: another cut)."""
        prep = self.resolve_preprocessing(clip_seconds, stride_seconds, frames_per_clip, frame_size)
        self._require_pixels("decoded frames")
        frames = np.asarray(frames)
        if frames.dtype != np.uint8 or frames.ndim != 4:
            raise PredictorError(f"decoded frames must be uint8 [M, H, W, 3], got {frames.dtype} {frames.shape}")
        if times is None or duration is None:
            raise PredictorError("decoded frames [M, H, W, 3] need their times [M] (seconds) and the video's duration")
        with self.thread_limit():
            return embed_video_frames(self.model, frames, np.asarray(times, np.float64), float(duration), fps=fps,
                                      clip_seconds=prep.clip_seconds, stride_seconds=prep.stride_seconds,
                                      frames_per_clip=prep.frames_per_clip, frame_size=prep.frame_size,
                                      batch_clips=self._batch(batch_clips), backbone=backbone, device=self.device)

    def encode_features(self, features: ClipFeatures | np.ndarray, *, windows: Optional[np.ndarray] = None,
                        fps: float = 0.0, duration: Optional[float] = None, video_id: Optional[str] = None,
                        features_are: str = "auto", backbone: bool = False,
                        batch_clips: Optional[int] = None) -> ClipFeatures:
        """Per-clip vectors in memory (a :class:`~locvtp.featurestore.record.ClipFeatures` or ``float [N, D]``
        with optional ``windows``): the model's joint embeddings (``features_are="joint"``: checked, used as they
        are) or a ``features`` encoder's input (``"input"``: embedded). ``"auto"``: the record's ``embedding``
        when it is ``"joint"``, else input for a features encoder and joint for a pixel model."""
        if isinstance(features, ClipFeatures):
            rec = features
            kind = self._features_kind(features_are, {"embedding": rec.embedding})
        else:
            rec = ClipFeatures(str(video_id or "features"), np.asarray(features), windows, fps,
                               float(duration) if duration is not None else 0.0)
            kind = self._features_kind(features_are)
        with self.thread_limit():
            return self._encode_features(rec, kind, backbone, batch_clips, str(rec.video_id))

    def encode_stored(self, store: str | Path, video_id: str, *, features_are: str = "auto",
                      backbone: bool = False, batch_clips: Optional[int] = None,
                      allow_foreign_features: bool = False) -> ClipFeatures:
        """One video of a feature store (``locvtp extract`` output, serve's cache, or a foreign HDF5 / npy-dir /
        npz-dir): joint-space features go through :meth:`check_features` (the provenance policy), a ``features``
        encoder's input is embedded. A missing id is a ``MissingVideoError`` naming the store and the id."""
        path = Path(store)
        info = feature_info(path)
        kind = self._features_kind(features_are, info)
        warnings = self.check_features(info, str(path), allow_foreign_features) if kind == "joint" else []
        rec = read_features(path, video_id)  # MissingVideoError (a KeyError) / NonFiniteFeaturesError name it
        with self.thread_limit():
            emb = self._encode_features(rec, kind, backbone, batch_clips, f"{path}: video {video_id!r}")
        emb.warnings = warnings + emb.warnings
        return emb

    def _features_kind(self, features_are: str, info: Optional[Mapping[str, Any]] = None) -> str:
        if features_are not in ("auto", "joint", "input"):
            raise UsageError(f"features_are must be 'auto', 'joint' or 'input', got {features_are!r}")
        if features_are != "auto":
            return features_are
        if info is not None and str(info.get("embedding") or "") == "joint":
            return "joint"
        return "joint" if self.takes_pixels else "input"

    def _encode_features(self, rec: ClipFeatures, kind: str, backbone: bool, batch_clips: Optional[int],
                         where: str) -> ClipFeatures:
        feats = np.asarray(rec.features, dtype=np.float32)
        if feats.ndim != 2:
            raise PredictorError(f"{where}: features must be [num_clips, D], got shape {feats.shape}")
        if kind == "joint":
            if feats.shape[0] == 0:
                raise PredictorError(f"{where} has no clips")
            if feats.shape[1] != self.dim:
                where_ck = self.path if self.path is not None else "this checkpoint"
                raise PredictorError(f"{where} has {feats.shape[1]}-dim features but checkpoint {where_ck} embeds "
                                     f"queries in {self.dim} dims (were they extracted with another model, or with "
                                     "--backbone?)")
            windows = rec.windows if rec.windows is not None else _consecutive(len(feats), self.preprocessing)
            dur = rec.duration if rec.duration else float(np.asarray(windows)[-1, 1])
            return ClipFeatures(rec.video_id, feats, np.asarray(windows, np.float64).reshape(-1, 2), rec.fps, dur,
                                embedding="joint")
        if self.takes_pixels:
            raise UsageError(f"{where}: this checkpoint's video encoder reads pixels, not input features")
        if feats.shape[1] != self.input_width:
            raise UsageError(f"{where} has features of width {feats.shape[1]}, the checkpoint's features encoder "
                             f"reads width {self.input_width} (model.video.in_dim)")
        kw = {} if batch_clips is None else {"batch_clips": int(batch_clips)}
        e = embed_features(self.model, feats, windows=rec.windows, clip_seconds=self.preprocessing.clip_seconds,
                           backbone=backbone, device=self.device, **kw)
        dur = rec.duration if rec.duration else e.duration
        return ClipFeatures(rec.video_id, e.features, e.windows, rec.fps, dur, e.backbone, embedding="joint")

    # -- text ---------------------------------------------------------------------------------------------
    def text_warnings(self, text: str) -> list[str]:
        """Why a query's result may not mean what it seems (cut to ``max_words``, no known word)."""
        return text_query_warnings(self.require_tokenizer(), text, self.preprocessing.max_words)

    def encode_text(self, texts: str | Sequence[str], batch_size: Optional[int] = None,
                    warnings: bool = True) -> TextEmbeddings:
        """Sentence and word embeddings (``max_words`` of the checkpoint), with ``warnings[i]`` per text
        (``warnings=False``: not computed, e.g. for a corpus of captions)."""
        texts = [texts] if isinstance(texts, str) else [str(t) for t in texts]
        tok = self.require_tokenizer()
        notes = [text_query_warnings(tok, t, self.preprocessing.max_words) for t in texts] if warnings else []
        kw = {} if batch_size is None else {"batch_size": int(batch_size)}
        with self.thread_limit():
            emb = embed_texts(self.model, tok, texts, max_words=self.preprocessing.max_words, device=self.device,
                              **kw)
        emb.warnings = notes
        return emb

    # -- grounding ------------------------------------------------------------------------------------------
    def ground(self, video: ClipFeatures, query: str, *, top_k: int = 5, nms: float = 0.5, alpha: float = 0.5,
               window_score: Optional[str] = None, max_seconds: Optional[float] = None,
               words: str = "all") -> GroundingResult:
        """Top-k windows of ``query`` in one video: the scoring of ``locvtp ground`` (``locvtp.localize``).

        ``words``: which of the query's words the word-level term averages over: ``"all"`` or ``"content"``
        (stop words of ``locvtp.data.stopwords`` left out; a query with no content word falls back to all its
        words and says so in ``warnings``: ``locvtp.localize.query_words``).

        ``video``: the video's clip vectors, as one of the ``encode_*`` methods returns them (joint embeddings,
        used as they are; any other :class:`~locvtp.featurestore.record.ClipFeatures` goes through
        :meth:`encode_features` first). The result's ``vid`` is the record's ``video_id``; its ``warnings`` hold
        the query's, the video's and the ranking's (the command's order). A query with no words is a
        ``UsageError``.
        """
        from locvtp.inference import NO_WORDS
        from locvtp.localize import WORD_SETS

        if words not in WORD_SETS:
            raise UsageError(f"words must be one of {', '.join(WORD_SETS)}, got {words!r}")
        if not isinstance(video, ClipFeatures):
            raise PredictorError(f"ground takes a video's clip vectors (ClipFeatures), got {type(video).__name__}: "
                                 "embed it first (encode_file, encode_stored, encode_clips, encode_frames or "
                                 "encode_features)")
        warnings = self.text_warnings(query)
        if any(NO_WORDS in w for w in warnings):
            raise UsageError(f"query {query!r} has no words to ground")
        emb = video if video.embedding == "joint" else self.encode_features(video)
        warnings += list(emb.warnings or [])
        text = self.encode_text([query])
        windows = np.asarray(emb.windows, np.float64).reshape(-1, 2)
        # (with one clip the step only matters as a bound: every window is that clip)
        step = float(np.median(np.diff(windows[:, 0]))) if len(windows) > 1 else self.preprocessing.clip_seconds
        max_clips = None
        if max_seconds is not None:
            max_clips = max(1, int(round(max_seconds / max(step, 1e-9))))
            if max_seconds < step and len(windows) > 1:
                warnings.append(f"--max-seconds {max_seconds:g} is shorter than one clip step ({step:g} s): every "
                                "window is a single clip")
        res = ground_embeddings(emb.features, windows, text.sentence[0], text.words[0], query=query,
                                duration=emb.duration, top_k=top_k, alpha=alpha, nms_threshold=nms,
                                max_clips=max_clips, window_score=window_score,
                                content=text.content[0] if text.content else None, word_set=words)
        res.vid = str(emb.video_id or "")
        res.warnings = warnings + res.warnings
        return res

    # -- search ---------------------------------------------------------------------------------------------
    def open_index(self, index: Any, backend: str = "auto", nprobe: Optional[int] = None,
                   allow_foreign_features: bool = False, allow_flag: str = "allow_foreign_features=True",
                   where: Optional[str] = None) -> tuple[Any, list[str]]:
        """A ``locvtp.index.MomentIndex`` (opened from a path, or as given) checked against this model: the
        feature policy on its fingerprint, then its width. Returns (index, warnings)."""
        from locvtp.index import MomentIndex

        idx = index if isinstance(index, MomentIndex) else MomentIndex(index, backend=backend, nprobe=nprobe)
        name = where or f"index {idx.path}"
        info = {"checkpoint_sha256": idx.meta.get("checkpoint_sha256"), "embedding": None}
        warnings = self.check_features(info, name, allow_foreign_features, allow_flag)
        if self.dim != idx.dim:
            raise UsageError(f"{name} holds embeddings of width {idx.dim}, the checkpoint {self.path} embeds "
                             f"queries with width {self.dim}: use the checkpoint whose features built this index")
        return idx, warnings

    def search(self, index: Any, queries: str | Sequence[str], *, top_k: int = 10, pool: Optional[int] = None,
               gap: int = 0, tolerance: float = 0.5, backend: str = "auto", nprobe: Optional[int] = None,
               allow_foreign_features: bool = False) -> SearchResponse:
        """Moments of a moment index (``locvtp index`` output: a path or a ``MomentIndex``) for text queries:
        what ``locvtp search`` prints (one :class:`QueryMoments` per query)."""
        queries = [queries] if isinstance(queries, str) else list(queries)
        idx, warnings = self.open_index(index, backend, nprobe, allow_foreign_features)
        return self.search_index(idx, queries, top_k=top_k, pool=pool, gap=gap, tolerance=tolerance,
                                 warnings=warnings)

    def search_index(self, idx: Any, queries: Sequence[str], top_k: int = 10, pool: Optional[int] = None,
                     gap: int = 0, tolerance: float = 0.5, warnings: Sequence[str] = (),
                     pool_flag: str = "pool") -> SearchResponse:
        """:meth:`search` on an index already checked by :meth:`open_index`. A query that got fewer moments than
        ``top_k`` says why in its warnings (the CLI, the API and the page alike: a silent short list reads as
        "nothing else matches"); ``pool_flag`` is how the caller's user names ``pool``."""
        t0 = time.perf_counter()
        text = self.encode_text(list(queries))
        t1 = time.perf_counter()
        with self.thread_limit():
            found = idx.search_moments(text.sentence, top_k=top_k, pool=pool, gap=gap, tolerance=tolerance)
        t2 = time.perf_counter()
        results = [QueryMoments(q, m, w) for q, m, w in zip(queries, found, text.warnings)]
        for r in results:
            short = idx.shortfall_warning(top_k, len(r.moments), pool, pool_flag=pool_flag)
            if short:
                r.warnings.append(short)
        return SearchResponse(results, list(warnings), t1 - t0, t2 - t1)


def _consecutive(n: int, prep: Preprocessing) -> np.ndarray:
    starts = np.arange(n, dtype=np.float64) * prep.stride_seconds
    return np.stack([starts, starts + prep.clip_seconds], axis=1)


__all__ = ["CONTRACT", "LocVTPPredictor", "Preprocessing", "PredictorError", "QueryMoments", "SearchResponse"]
