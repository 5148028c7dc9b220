"""Embed whole videos and sentences with a trained LocVTP model (shared by extract, ground, search, evaluation).

Everything here runs under ``torch.inference_mode`` with the model in eval mode (restored afterwards), batched:
no Python loop over clips or words inside a forward.

Clip windows. A video of duration d is cut by :func:`locvtp.data.video.sliding_windows` into N windows of
``clip_seconds`` every ``stride_seconds`` (default: ``clip_seconds``, i.e. non-overlapping); the frames are decoded
once, streaming (:func:`locvtp.data.video.decode_windows`: only the sampled frames are kept), and every window
gets ``frames_per_clip`` frames by the rule the training loader uses (segment centres, short-side resize, centre
crop; identical to :func:`locvtp.data.video.sample_clips` on decoded frames, which
:func:`embed_video_frames` uses).

Long videos. Pixel CNNs see one clip at a time, so clips are encoded in chunks of ``batch_clips`` (bounded
memory, results independent of the chunk size). When the video encoder has a temporal transformer across clips
(``model.video.temporal_layers > 0``) the per-clip backbone features of *all* N clips are computed in chunks and
the transformer then runs once over the whole sequence ``[1, N, Dv]``: a clip's embedding depends on its whole
video, exactly as in training where a sample is a sequence of clips. Beyond the transformer's ``max_clips``
positions the position table is interpolated (see ``locvtp.model.video.TemporalTransformer``), an approximation
for videos much longer than anything seen in training. Without temporal layers, chunking changes nothing.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from locvtp.errors import LocVTPError
from locvtp.featurestore.record import ClipFeatures

DEFAULT_BATCH_CLIPS = 64
DEFAULT_BATCH_TEXTS = 256


class InferenceError(LocVTPError, ValueError):
    """A loaded checkpoint or input cannot be used for inference (the message names the file)."""


def require_tokenizer(ckpt: Any, command: str = "this command") -> Any:
    """``ckpt.tokenizer``, or an :class:`InferenceError` naming the checkpoint and its missing
    ``tokenizer.json`` (a checkpoint saved without a tokenizer cannot embed text)."""
    tok = getattr(ckpt, "tokenizer", None)
    if tok is None:
        where = getattr(ckpt, "path", None) or "the checkpoint"
        raise InferenceError(f"{where}: the checkpoint has no tokenizer.json; {command} needs it to embed text "
                             "(copy the tokenizer.json of the run that trained it into the checkpoint directory)")
    tcfg = _text_cfg(ckpt)
    if tcfg is not None and str(tcfg.get("name", "")) in ("transformer", "clip") and tcfg.get("vocab_size"):
        want, have = int(tcfg["vocab_size"]), getattr(tok, "vocab_size", None)
        if have is not None and int(have) != want:
            # A tokenizer from another run maps words to ids this model never learned: every query would be
            # embedded as noise (or fail on an id past the table) -- refuse it up front, naming the file.
            raise InferenceError(f"{getattr(ckpt, 'path', 'the checkpoint')}/tokenizer.json: {have} tokens, but "
                                 f"the model was trained with a {want}-token vocabulary (model.text.vocab_size): "
                                 "the tokenizer belongs to another run")
    return tok


def _text_cfg(ckpt: Any) -> Any:
    """``ckpt.cfg.model.text`` (None when the config does not say)."""
    try:
        return ckpt.cfg.model.text
    except (AttributeError, KeyError):
        return None


@dataclass
class TextEmbeddings:
    """The embeddings of n texts: sentence embeddings ``[n, D]``; per text the valid (non-special, non-pad) word
    embeddings ``[L_i, D]``, the matching token strings (``len(tokens[i]) == words[i].shape[0]``; empty when the
    embeddings came from a cache that does not keep them), ``content[i]`` (bool ``[L_i]``: which of those words
    are content words by the one stop-word rule, :func:`locvtp.data.stopwords.content_words`, the rule training's
    ``objective.stopwords`` uses; empty when unknown: a tokenizer without ``token_to_id``, or a source that does
    not keep them) and ``warnings[i]``, the query warnings of text i (:func:`text_query_warnings`) when
    ``locvtp.predictor`` made them. One class for the predictor's result and the evaluation's cached embeddings
    (``locvtp.downstream.common.EmbeddingBank.texts``)."""

    sentence: np.ndarray
    words: list[np.ndarray] = field(default_factory=list)
    tokens: list[list[str]] = field(default_factory=list)
    warnings: list[list[str]] = field(default_factory=list)
    content: list[np.ndarray] = field(default_factory=list)


TextEmbedding = TextEmbeddings  # the former name of the same class


@dataclass
class DecodedClips:
    """The decode half of :func:`embed_video_file` (useful to decode in a worker thread while encoding): the
    *pixels* of the clips, the encoder's input -- the one per-video record that is not
    :class:`~locvtp.featurestore.record.ClipFeatures` (vectors), because it holds something else."""

    clips: np.ndarray  # uint8 [N, F, S, S, 3]
    windows: np.ndarray  # float64 [N, 2]
    fps: float
    duration: float


# ------------------------------------------------------------------------------------------------ utilities
@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Eval mode + inference mode for the block; the previous train/eval flag is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield model
    finally:
        model.train(was_training)


def model_device(model: torch.nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def has_temporal_layers(model: Any) -> bool:
    """True when the video encoder mixes information across clips (so a video must be one sequence)."""
    return getattr(model.video_encoder, "temporal", None) is not None


def _to_numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().to("cpu", torch.float32).numpy()


# ------------------------------------------------------------------------------------------------ video
def decode_video_clips(
    path: str | Path,
    clip_seconds: float,
    stride_seconds: Optional[float],
    frames_per_clip: int,
    frame_size: int,
) -> DecodedClips:
    """Decode a video once and cut it into sliding-window clips ``uint8 [N, F, S, S, 3]``.

    The preprocessing is the checkpoint's (``locvtp.predictor.Preprocessing``, read from its ``data`` config):
    no defaults here, so a caller cannot silently cut clips another checkpoint would not see.
    ``stride_seconds`` None = ``clip_seconds`` (non-overlapping windows).

    Raises ``locvtp.data.video.VideoError`` (an ``OSError``) naming the file when it cannot be read.
    """
    from locvtp.data import video as V

    stride = clip_seconds if stride_seconds is None else stride_seconds
    info = V.probe_video(path)
    duration = float(info.duration)
    windows = np.asarray(V.sliding_windows(duration, clip_seconds, stride), dtype=np.float64).reshape(-1, 2)
    # decode_windows streams the file once and keeps only the sampled frames: memory O(N*F) frames, not the
    # whole decoded video; it selects exactly what sample_clips would pick from decode_frames' output.
    clips = V.decode_windows(path, windows, frames_per_clip, frame_size, jitter=False, rng=None)
    return DecodedClips(np.asarray(clips), windows, float(info.fps), duration)


def encode_clip_sequence(
    model: Any,
    clips: np.ndarray | torch.Tensor,
    batch_clips: int = DEFAULT_BATCH_CLIPS,
    backbone: bool = False,
    device: Optional[torch.device | str] = None,
) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Encode the N clips of ONE video (uint8 ``[N, F, H, W, 3]`` or float features ``[N, Din]``).

    Returns (embeddings float32 ``[N, D]``, backbone features ``[N, Dv]`` if ``backbone`` else None).
    See the module docstring for how long videos and temporal layers are handled.
    """
    if batch_clips < 1:
        raise ValueError(f"batch_clips must be >= 1, got {batch_clips}")
    device = torch.device(device) if device is not None else model_device(model)
    x = torch.as_tensor(clips)
    n = int(x.shape[0])
    if n == 0:
        dv = int(getattr(model.video_encoder, "out_dim", 0))
        return np.zeros((0, int(model.dim)), np.float32), (np.zeros((0, dv), np.float32) if backbone else None)
    enc = model.video_encoder
    temporal = getattr(enc, "temporal", None)
    with eval_mode(model):
        if temporal is None:
            # Clips are independent: chunk freely.
            embs, bbs = [], []
            for lo in range(0, n, batch_clips):
                chunk = x[lo : lo + batch_clips].to(device).unsqueeze(0)
                bb = model.video_backbone(chunk)
                embs.append(F.normalize(model.video_proj(bb), dim=-1)[0])
                if backbone:
                    bbs.append(bb[0])
            emb = torch.cat(embs)
            bb_all = torch.cat(bbs) if backbone else None
        else:
            cnn = getattr(enc, "cnn", None)
            if cnn is not None:
                # Per-clip CNN in chunks, then the transformer once over the whole video.
                feats = torch.cat([cnn(x[lo : lo + batch_clips].to(device)) for lo in range(0, n, batch_clips)])
                bb_seq = temporal(feats.unsqueeze(0))
            else:
                # Feature encoders: the per-clip MLP is cheap, encode the whole sequence at once.
                bb_seq = model.video_backbone(x.to(device).unsqueeze(0))
            emb = F.normalize(model.video_proj(bb_seq), dim=-1)[0]
            bb_all = bb_seq[0] if backbone else None
    return _to_numpy(emb), (_to_numpy(bb_all) if bb_all is not None else None)


AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def amp_context(device: torch.device | str, amp: Optional[str]) -> Any:
    """``--amp bf16|fp16``: autocast on ``device``'s type in that precision; None: full precision (no context)."""
    if amp is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=AMP_DTYPES[amp])


class ClipBatchEncoder:
    """Encode the clips of *many* videos in one forward (``locvtp extract``'s pipeline), then finish each video.

    Why two steps: a pixel CNN sees one clip at a time, so clips of different videos can share a batch; a temporal
    transformer across clips (``temporal_layers > 0``) needs a video's whole sequence, so it runs in
    :meth:`finish` once all of the video's clips are through :meth:`clips`. The result equals
    :func:`encode_clip_sequence` on each video up to float rounding (the batches differ). ``amp``: ``"bf16"`` /
    ``"fp16"`` runs the forwards under autocast on the model's device (outputs are float32 either way)."""

    def __init__(self, model: Any, device: Optional[torch.device | str] = None, backbone: bool = False,
                 amp: Optional[str] = None):
        if getattr(model.video_encoder, "cnn", None) is None:
            raise InferenceError("batching clips across videos needs a pixel video encoder (tiny3d, c3d)")
        self.model = model
        self.device = torch.device(device) if device is not None else model_device(model)
        self.backbone = bool(backbone)
        self.temporal = getattr(model.video_encoder, "temporal", None)
        self.amp = amp

    def _autocast(self) -> Any:
        return amp_context(self.device, self.amp)

    def clips(self, x: torch.Tensor) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """uint8 clips ``[n, F, S, S, 3]`` of any videos -> (per-clip float32 output ``[n, *]``, backbone
        features or None). Without temporal layers the output is the final embedding and the backbone
        features are returned when asked for; with them, the output is the CNN features :meth:`finish` needs."""
        with eval_mode(self.model), self._autocast():
            feats = self.model.video_encoder.cnn(x.to(self.device, non_blocking=True))
            if self.temporal is not None:
                return _to_numpy(feats), None
            emb = F.normalize(self.model.video_proj(feats).float(), dim=-1)
        return _to_numpy(emb), (_to_numpy(feats) if self.backbone else None)

    def finish(self, out: np.ndarray, bb: Optional[np.ndarray]) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """One video's (embeddings, backbone features) from the :meth:`clips` outputs of all its clips, in order."""
        if self.temporal is None:
            return out, bb
        with eval_mode(self.model), self._autocast():
            seq = self.temporal(torch.from_numpy(out).to(self.device).unsqueeze(0))
            emb = F.normalize(self.model.video_proj(seq).float(), dim=-1)[0]
        return _to_numpy(emb), (_to_numpy(seq[0]) if self.backbone else None)


def embed_video_frames(
    model: Any,
    frames: np.ndarray,
    times: np.ndarray,
    duration: float,
    fps: float = 0.0,
    *,
    clip_seconds: float,
    frames_per_clip: int,
    frame_size: int,
    stride_seconds: Optional[float] = None,
    batch_clips: int = DEFAULT_BATCH_CLIPS,
    backbone: bool = False,
    device: Optional[torch.device | str] = None,
) -> ClipFeatures:
    """Embed a video from already decoded frames ``uint8 [M, H, W, 3]`` with timestamps ``times [M]`` (s); the
    checkpoint's preprocessing as in :func:`decode_video_clips`."""
    from locvtp.data import video as V

    stride = clip_seconds if stride_seconds is None else stride_seconds
    windows = np.asarray(V.sliding_windows(float(duration), clip_seconds, stride), dtype=np.float64).reshape(-1, 2)
    if windows.shape[0] == 0 or len(frames) == 0:
        clips = np.zeros((0, frames_per_clip, frame_size, frame_size, 3), dtype=np.uint8)
    else:
        clips = V.sample_clips(frames, times, windows, frames_per_clip, frame_size, jitter=False, rng=None,
                               duration=float(duration))
    emb, bb = encode_clip_sequence(model, clips, batch_clips=batch_clips, backbone=backbone, device=device)
    return ClipFeatures("", emb, windows, float(fps), float(duration), bb, embedding="joint")


def embed_video_file(
    model: Any,
    path: str | Path,
    *,
    clip_seconds: float,
    frames_per_clip: int,
    frame_size: int,
    stride_seconds: Optional[float] = None,
    batch_clips: int = DEFAULT_BATCH_CLIPS,
    backbone: bool = False,
    device: Optional[torch.device | str] = None,
) -> ClipFeatures:
    """Decode ``path`` once and embed all its sliding-window clips (see the module docstring), with the
    checkpoint's preprocessing (:func:`decode_video_clips`).

    ``backbone=True`` also returns the pre-projection features in ``.backbone``.
    Raises ``VideoError`` (``OSError``) naming the file if it cannot be decoded.
    """
    if not getattr(model, "takes_pixels", True):
        raise ValueError(
            f"{path}: this model's video encoder reads pre-extracted features, not pixels; use embed_features"
        )
    dec = decode_video_clips(path, clip_seconds, stride_seconds, frames_per_clip, frame_size)
    emb, bb = encode_clip_sequence(model, dec.clips, batch_clips=batch_clips, backbone=backbone, device=device)
    return ClipFeatures(Path(path).stem, emb, dec.windows, dec.fps, dec.duration, bb, embedding="joint")


def embed_features(
    model: Any,
    feats: np.ndarray | torch.Tensor,
    windows: Optional[np.ndarray] = None,
    *,
    clip_seconds: float,
    batch_clips: int = 4096,
    backbone: bool = False,
    device: Optional[torch.device | str] = None,
) -> ClipFeatures:
    """Embed pre-extracted per-clip features ``[N, Din]`` with a ``features`` video encoder.

    ``windows`` defaults to consecutive ``clip_seconds`` windows (the layout of per-second feature files).
    """
    if getattr(model, "takes_pixels", False):
        raise ValueError("this model's video encoder reads pixels; use embed_video_file / embed_video_frames")
    x = torch.as_tensor(np.asarray(feats, dtype=np.float32))
    if x.dim() != 2:
        raise ValueError(f"features must be [N, Din], got shape {tuple(x.shape)}")
    n = int(x.shape[0])
    if windows is None:
        starts = np.arange(n, dtype=np.float64) * clip_seconds
        windows = np.stack([starts, starts + clip_seconds], axis=1)
    windows = np.asarray(windows, dtype=np.float64).reshape(-1, 2)
    if windows.shape[0] != n:
        raise ValueError(f"windows has {windows.shape[0]} rows for {n} feature rows")
    emb, bb = encode_clip_sequence(model, x, batch_clips=batch_clips, backbone=backbone, device=device)
    duration = float(windows[-1, 1]) if n else 0.0
    return ClipFeatures("", emb, windows, 0.0, float(duration), bb, embedding="joint")


# ------------------------------------------------------------------------------------------------ text
def _token_strings(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    """Token strings of ``ids`` (locvtp ``Tokenizer.id_to_token`` or an HF tokenizer's ``convert_ids_to_tokens``)."""
    fn = getattr(tokenizer, "convert_ids_to_tokens", None)
    if fn is not None:
        return [str(t) for t in fn([int(i) for i in ids])]
    fn = getattr(tokenizer, "id_to_token", None)
    if fn is not None:
        return [str(fn(int(i))) for i in ids]
    return [str(int(i)) for i in ids]


def _encoding_pieces(tokenizer: Any, text: str) -> tuple[list[str], list[int], list[tuple[int, int]], int, str]:
    """``text`` encoded WITHOUT truncation: (tokens, is-a-word flags, character offsets, number of special
    tokens the tokenizer adds, its unknown token). Works with a locvtp ``Tokenizer``, a ``tokenizers.Tokenizer``
    or a transformers tokenizer."""
    backend = getattr(tokenizer, "backend", tokenizer)
    if hasattr(backend, "encode") and hasattr(backend, "post_processor") and hasattr(backend, "model"):
        enc = backend.encode(text)  # a tokenizers.Tokenizer: our own or an HF one
        pp = backend.post_processor
        n_special = pp.num_special_tokens_to_add(False) if pp is not None else 0
        unk = getattr(backend.model, "unk_token", None) or "[UNK]"
        return list(enc.tokens), [1 - int(s) for s in enc.special_tokens_mask], list(enc.offsets), n_special, unk
    pieces = list(tokenizer.tokenize(text))  # transformers: no offsets without a fast tokenizer; good enough
    n_special = int(tokenizer.num_special_tokens_to_add(False)) if hasattr(tokenizer, "num_special_tokens_to_add") else 2
    return pieces, [1] * len(pieces), [(0, 0)] * len(pieces), n_special, str(getattr(tokenizer, "unk_token", "[UNK]"))


NO_WORDS = "has no words"  # in the warning for a query without any word (callers may refuse such a query)


def text_query_warnings(tokenizer: Any, text: str, max_words: int) -> list[str]:
    """Warnings for a query whose ranking cannot mean what it seems (empty list: nothing to say).

    Why: the model only ever sees the first ``max_words`` tokens (special tokens included, as in training) and
    maps unknown words to one shared unknown token, so a long query is silently cut and a query of unknown
    words ranks by noise -- both still return a confident-looking list. The cases:
    (a) the query has more word pieces than fit ``max_words``: it names what is ignored;
    (b) none of its words is known to the tokenizer (every word piece is the unknown token), or it has no
    words at all (empty, whitespace, or only characters the tokenizer drops).
    Text that is not valid Unicode (undecodable command-line bytes) is a ``UsageError``, not a warning.
    """
    text = str(text)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # bytes the terminal could not decode (Python keeps them as surrogates)
        from locvtp.errors import UsageError

        raise UsageError(f"query {_excerpt(text)}: not valid text (undecodable bytes at character {exc.start}); "
                         "pass UTF-8") from None
    tokens, is_word, offsets, n_special, unk = _encoding_pieces(tokenizer, text)
    words = [(t, o) for t, w, o in zip(tokens, is_word, offsets) if w]
    if not words:
        return [f"query {_excerpt(text)} {NO_WORDS} (empty, whitespace, or only characters the tokenizer drops): "
                "there is nothing to match"]
    out = []
    if all(t == unk for t, _ in words):
        out.append(f"none of the words of query {_excerpt(text)} is known to the tokenizer (all {len(words)} word "
                   f"piece(s) are {unk}): the ranking is not about its words")
    fit = max(0, int(max_words) - n_special)
    if len(words) > fit:
        start = words[fit][1][0]
        ignored = f": {_excerpt(text[start:])} is ignored" if start > 0 else ", the rest is ignored"
        out.append(f"query has {len(words)} word pieces; only the first {fit} fit max_words={max_words} "
                   f"(which counts the {n_special} special tokens){ignored}")
    return out


def _excerpt(text: str, limit: int = 40) -> str:
    """``text`` quoted for a one-line message, shortened to ``limit`` characters."""
    t = " ".join(text.split()) or text[:limit]
    return repr(t if len(t) <= limit else t[: limit - 1] + "…")


def embed_texts(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    max_words: int = 24,
    batch_size: int = DEFAULT_BATCH_TEXTS,
    device: Optional[torch.device | str] = None,
) -> TextEmbeddings:
    """Sentence and word embeddings of ``texts`` (batched; ``max_words`` includes special tokens, as in training).

    ``words[i]``/``tokens[i]``/``content[i]`` keep only the tokenizer's ``word_mask`` positions (no
    [CLS]/[SEP]/padding); ``content`` marks the content words (:func:`locvtp.data.stopwords.content_words`), for
    the zero-shot scorer's ``words="content"`` (:func:`locvtp.localize.query_words`).
    """
    from locvtp.data.stopwords import content_words, stopword_ids

    if tokenizer is None:
        raise InferenceError("no tokenizer to embed text with (the checkpoint has no tokenizer.json)")
    texts = [str(t) for t in texts]
    device = torch.device(device) if device is not None else model_device(model)
    dim = int(model.dim)
    if not texts:
        return TextEmbeddings(np.zeros((0, dim), np.float32), [], [])
    sentences, words, tokens, content = [], [], [], []
    stop = stopword_ids(tokenizer) if hasattr(tokenizer, "token_to_id") else None  # None: the rule cannot apply
    with eval_mode(model):
        for lo in range(0, len(texts), batch_size):
            batch = tokenizer(texts[lo : lo + batch_size], max_length=max_words)
            ids = torch.as_tensor(batch["input_ids"]).long()
            att = torch.as_tensor(batch["attention_mask"]).bool()
            wmask = torch.as_tensor(batch.get("word_mask", att)).bool() & att
            w, s = model.encode_text(ids.to(device), att.to(device))
            sentences.append(_to_numpy(s))
            w = _to_numpy(w)
            wm = wmask.numpy()
            ids_np = ids.numpy()
            cm = None if stop is None else content_words(ids, wmask, stop).numpy()
            for i in range(w.shape[0]):  # unpacking the output per sentence; the forward itself is batched
                words.append(np.ascontiguousarray(w[i][wm[i]]))
                tokens.append(_token_strings(tokenizer, ids_np[i][wm[i]].tolist()))
                if cm is not None:
                    content.append(cm[i][wm[i]])
    return TextEmbeddings(np.concatenate(sentences), words, tokens, content=content)


__all__ = [
    "AMP_DTYPES", "ClipBatchEncoder", "ClipFeatures", "DecodedClips", "TextEmbedding", "TextEmbeddings", "amp_context",
    "decode_video_clips", "embed_features", "embed_texts",
    "embed_video_file", "embed_video_frames", "encode_clip_sequence", "eval_mode", "has_temporal_layers",
    "InferenceError", "NO_WORDS", "require_tokenizer", "text_query_warnings",
]
