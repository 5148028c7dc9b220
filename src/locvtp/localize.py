"""Zero-shot temporal localization: where in a video a sentence is, from clip and text embeddings alone.

One module for the scoring that ``locvtp ground`` (through :class:`locvtp.predictor.LocVTPPredictor`) and the
evaluation's zero-shot grounding (``locvtp.downstream.grounding``) both use, so the command and the reported
numbers cannot drift apart. No training, numpy only (no model, no torch).

Procedure:

1. per-clip relevance = ``alpha·z(clip·sentence) + (1−alpha)·z(mean over words of clip·word)`` (z = standardized
   over the video's clips; :func:`clip_relevance`, :func:`clip_query_scores` for one query). Which words:
   ``words="all"`` (the default) every valid word of the query, ``words="content"`` its content words only
   (:func:`query_words`: the one stop-word rule training's ``objective.stopwords`` uses, so a model trained with
   the stop-word mask is not credited, or debited, through the stop words' columns of the scorer). A component whose
   scores are equal up to rounding (:func:`is_flat`: a still or blank video) contributes exact zeros instead of
   its standardized rounding noise, so a flat curve gives every window the same score, 0, and the ranking is
   the documented tie order (earliest start first, then shortest), not an artefact of the last bits;
2. every window of consecutive clips [i, j] gets a window score (:func:`window_scores`; the default ``"oic"`` is
   AutoLoc's outer-inner contrast of the clips inside against their surroundings), ranked best first
   (:func:`rank_windows`);
3. greedy temporal NMS (``locvtp.metrics.nms``, 2D-TAN's convention) keeps the top-k windows (IoU above the
   threshold with a better window drops a window): :func:`top_windows`, or :func:`ground_embeddings` for the
   whole procedure with a :class:`GroundingResult` that says why its windows may mean nothing (``warnings``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

WINDOW_SCORES = ("tstat", "contrast", "oic", "oic_t")
# Which of a query's words the word-level term averages over (``ground --words``, ``grounding.words``).
WORD_SETS = ("all", "content")
# Why a words="content" query was scored over all its words (:func:`query_words`'s fallback), by reason.
CONTENT_FALLBACK = {
    "no_content": "no content word (only stop words of locvtp.data.stopwords)",
    "unknown": "no content-word marks (a tokenizer without token_to_id, or text embeddings made without them)",
}


def standardize(x: np.ndarray, axis: int = 0, eps: float = 1e-8) -> np.ndarray:
    """Zero mean, unit std along ``axis`` (a constant vector maps to zeros, not NaN)."""
    x = np.asarray(x, dtype=np.float64)
    mu = x.mean(axis=axis, keepdims=True)
    sd = x.std(axis=axis, keepdims=True)
    return (x - mu) / np.maximum(sd, eps)


# Flatness: how far apart scores may be and still be "the same" (one rule, used wherever a window is chosen).
# A score s_i = x_i·y is a D-term dot product of embeddings made in a precision with unit roundoff u = eps/2.
# Two clips whose exact embeddings are equal (a still or blank video) differ only by rounding: batch shapes,
# kernels and summation orders differ from clip to clip. We bound that rounding as that of one D-term dot
# product in the embeddings' precision, by the probabilistic bound of Higham & Mary (SIAM J. Sci. Comput.
# 41(5), 2019, Thm 3.1; rounding errors modelled as independent and mean-zero):
#     |fl(x·y) − x·y| ≤ λ·√D·u·Σ_k|x_k·y_k|   with probability ≥ 1 − 2D·exp(−λ²/2),
# λ = FLAT_LAMBDA = 6 (a miss rate of at most 3.2e-5 for D ≤ 1024). Two scores then differ by at most
# 2·λ√D·u·S = λ√D·eps·S, S = max_i Σ_k|x_ik·y_k| (≤ ‖x_i‖‖y‖ = 1 for cosines). The worst-case bound
# γ_D = D·u/(1 − D·u) is √D/λ times larger and would call a genuine spread of a few hundred ulps flat at
# D = 512. Measured (the tests' tiny model, D = 64, float32): the 10 clips of an all-black video differ by
# ≤ 9e-8 per embedding component and their scores by ≤ 7 ulps, under 1% of the tolerance; on the tiny world's
# real videos (same model, four queries) the smallest spread is 785 times it. Scores computed in float64 from float32
# embeddings carry the embeddings' rounding, so the precision is the *embeddings'* (:func:`score_precision`),
# not the scores' dtype.
FLAT_LAMBDA = 6.0


def score_precision(*embeddings: Any) -> np.dtype:
    """The precision the scores of these embeddings can carry: the coarsest floating dtype among them (an exact
    integer array counts as float64)."""
    dts = [np.asarray(e).dtype for e in embeddings if e is not None]
    dts = [d if np.issubdtype(d, np.floating) else np.dtype(np.float64) for d in dts] or [np.dtype(np.float64)]
    return max(dts, key=lambda d: np.finfo(d).eps)


def is_flat(scores: np.ndarray, dim: int, precision: Any = np.float32, scale: Any = None, axis: int = 0) -> Any:
    """Whether ``scores`` are equal along ``axis`` up to the rounding of the D-term dot products that made them:
    ``max − min ≤ FLAT_LAMBDA·√dim·eps(precision)·S`` (the bound and why: see ``FLAT_LAMBDA``).

    ``dim``: the embeddings' width D; ``precision``: their dtype (not the dtype of ``scores``: float64 scores of
    float32 embeddings carry float32 rounding); ``scale``: ``Σ_k|x_k·y_k|`` per score (or one number), S is its
    maximum; None uses ``max|s|``, a lower bound of it (right for scores of non-negative terms, too strict for
    cosines near 0, whose rounding is relative to Σ|x_k·y_k|, not to |s|). Returns a bool (1-D ``scores``) or a
    bool array over the other axes. Non-finite scores are never flat.
    """
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim}")
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        raise ValueError("is_flat needs at least one score")
    mag = np.abs(s) if scale is None else np.broadcast_to(np.abs(np.asarray(scale, dtype=np.float64)), s.shape)
    ref = np.maximum(np.max(mag, axis=axis), np.finfo(np.float64).tiny)
    tol = FLAT_LAMBDA * np.sqrt(float(dim)) * float(np.finfo(precision).eps) * ref
    return np.ptp(s, axis=axis) <= tol  # NaN spreads compare False


def _standardized_or_zero(raw: np.ndarray, scale: np.ndarray, dim: int, precision: Any) -> tuple[np.ndarray, Any]:
    """z over axis 0 of a score matrix ``[N, K]``, with flat columns exact zeros; and the columns' flatness."""
    flat = is_flat(raw, dim, precision, scale, axis=0)
    return np.where(flat, 0.0, standardize(raw, axis=0)), flat


def clip_relevance(clips: np.ndarray, sentences: np.ndarray, words: Sequence[np.ndarray] | None = None,
                   alpha: float = 0.5, precision: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-clip relevance of K queries ``[N, K]``: ``alpha·z(clips·sentence_k) + (1−alpha)·z(mean_l
    clips·words_k[l])``, and which queries are flat ``[K]`` (bool: every clip scores the same for them).

    ``clips [N, D]``, ``sentences [K, D]``, ``words[k] [L_k, D]`` (valid words only; None, or a query with no
    word, uses the sentence alone). ``z`` standardizes each query's column over the clips of this video: window
    scores and the step Viterbi only see the *shape* of a column, and standardizing keeps the sentence and the
    word components on an equal footing whatever their raw dynamic range. A component flat by :func:`is_flat`
    is zeros, not its standardized rounding noise; a query is flat when every component it uses is.
    ``precision``: the embeddings' dtype (None: :func:`score_precision` of the arrays given).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if precision is None:
        precision = score_precision(clips, sentences, *(() if words is None else words))
    clips = np.asarray(clips, dtype=np.float64)
    d = clips.shape[1]
    sentences = np.asarray(sentences, dtype=np.float64).reshape(-1, d)
    mag = np.abs(clips)
    sent, flat = _standardized_or_zero(clips @ sentences.T, mag @ np.abs(sentences).T, d, precision)
    flat = np.array(flat, dtype=bool).reshape(-1)
    if words is None or alpha == 1.0:
        return sent, flat
    out = sent.copy()
    for k, w in enumerate(words):  # K queries of one video (a handful): not a model forward
        w = np.asarray(w, dtype=np.float64).reshape(-1, d)
        if w.size:
            word, word_flat = _standardized_or_zero((clips @ w.T).mean(axis=1)[:, None],
                                                    (mag @ np.abs(w).mean(axis=0))[:, None], d, precision)
            out[:, k] = alpha * sent[:, k] + (1.0 - alpha) * word[:, 0]
            flat[k] = bool(word_flat[0]) and (flat[k] or alpha == 0.0)
    return out, flat


def query_words(words: np.ndarray | None, content: np.ndarray | None = None, word_set: str = "all"
                ) -> tuple[np.ndarray | None, str]:
    """The word embeddings one query's word-level term averages over, and the fallback taken ("" for none; else
    a key of ``CONTENT_FALLBACK``).

    ``words [L, D]`` (valid words; None or empty: no word term), ``content`` bool ``[L]`` (which are content
    words, ``TextEmbeddings.content``; None or empty: unknown). ``word_set="all"``: every word. ``"content"``:
    the content words; a query with none (only stop words) or without marks falls back to all its words, so it
    scores exactly as under ``"all"`` -- the two scorers then differ only through the stop words' columns, which
    is what comparing them is for.
    """
    if word_set not in WORD_SETS:
        raise ValueError(f"words must be one of {WORD_SETS}, got {word_set!r}")
    if word_set == "all" or words is None or np.asarray(words).size == 0:
        return words, ""
    if content is None or np.asarray(content).size == 0:
        return words, "unknown"
    keep = np.asarray(content, dtype=bool).reshape(-1)
    w = np.asarray(words)
    if keep.shape[0] != w.shape[0]:
        raise ValueError(f"{keep.shape[0]} content marks for {w.shape[0]} words")
    return (w[keep], "") if keep.any() else (words, "no_content")


def clip_query_score_matrix(clips: np.ndarray, sentences: np.ndarray, words: Sequence[np.ndarray] | None = None,
                            alpha: float = 0.5) -> np.ndarray:
    """Per-clip relevance of K queries → ``[N, K]`` (:func:`clip_relevance` without the flatness flags)."""
    return clip_relevance(clips, sentences, words, alpha)[0]


def clip_query_scores(clips: np.ndarray, sentence: np.ndarray, words: np.ndarray | None = None,
                      alpha: float = 0.5) -> np.ndarray:
    """One query's per-clip curve ``[N]`` (see :func:`clip_relevance`)."""
    w = None if words is None else [np.asarray(words)]
    return clip_relevance(clips, np.asarray(sentence)[None], w, alpha)[0][:, 0]


def window_scores(scores: np.ndarray, kind: str = "oic", min_len: int = 1, max_len: int | None = None,
                  inflation: float = 0.25) -> np.ndarray:
    """Score every window [i, j] (clips i..j inclusive) of a per-clip curve → ``[N, N]``, −inf where invalid.

    Default ``"oic"``: measured on oracle clip embeddings of the demo world (exact ground truth, plus Gaussian
    noise to mimic imperfect models; grounding *train* split), R1@0.5 for noise 0 / 0.5 / 1 / 2:
    oic 86/83/65/27, tstat 67/67/59/36, contrast 98/32/9/2, oic_t 61/57/41/23 — the local contrast is the most
    robust across the range a useful model lives in. Its failure mode: one isolated, strongly matching clip
    (a spike far above the query's true bump) wins, where ``tstat`` would keep the bump (see the tests).

    Global kinds compare the window with *everything* outside it:
    ``"contrast"``: mean inside − mean outside; ``"tstat"``: the same difference divided by
    ``sqrt(1/n_in + 1/n_out)``, the two-sample t statistic under i.i.d. clip noise.
    Local kinds compare it with its *surroundings* only — the flanks of ``max(1, round(inflation·n_in))`` clips on
    each side, clipped to the video (AutoLoc's outer-inner contrast, Shou et al. ECCV 2018, inflation 0.25):
    ``"oic"``: mean inside − mean of the flanks; ``"oic_t"``: that difference over ``sqrt(1/n_in + 1/n_flanks)``.

    Why both a t statistic and local flanks: the plain contrast of a single noisy clip is as large as that of the
    whole bump it belongs to, so it prefers one-clip windows on noisy curves (dividing by the difference's
    standard error is the length prior that follows from the noise model); and a global comparison is pulled
    by the rest of the video (a window that also swallows a neighbouring, moderately similar event beats the
    exact one when idle clips elsewhere are much lower), which the flanks avoid. A window with nothing to
    compare with (the whole video) scores 0. Windows shorter than ``min_len`` or longer than ``max_len`` clips
    are invalid.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    n = s.shape[0]
    if kind not in WINDOW_SCORES:
        raise ValueError(f"window score kind must be one of {WINDOW_SCORES}, got {kind!r}")
    csum = np.concatenate([[0.0], np.cumsum(s)])
    i = np.arange(n)[:, None]
    j = np.arange(n)[None, :]
    n_in = (j - i + 1).astype(np.float64)
    valid = (j >= i) & (n_in >= min_len)
    if max_len is not None:
        valid &= n_in <= max_len
    jj = np.clip(j + 1, 0, n)
    n_in = np.maximum(n_in, 1.0)  # i > j entries are masked at the end; keep the arithmetic finite
    sum_in = csum[jj] - csum[i]
    if kind in ("contrast", "tstat"):
        n_out = n - n_in
        sum_out = csum[n] - sum_in
    else:
        r = np.maximum(1, np.round(inflation * n_in)).astype(np.int64)
        lo = np.clip(i - r, 0, n)
        hi = np.clip(j + 1 + r, 0, n)
        n_out = (i - lo) + (hi - jj).astype(np.float64)
        sum_out = (csum[i] - csum[lo]) + (csum[hi] - csum[jj])
    has_out = n_out > 0
    safe_out = np.maximum(n_out, 1)
    diff = np.where(has_out, sum_in / n_in - sum_out / safe_out, 0.0)
    if kind in ("tstat", "oic_t"):
        diff = np.where(has_out, diff / np.sqrt(1.0 / n_in + 1.0 / safe_out), 0.0)
    return np.where(valid, diff, -np.inf)


def rank_windows(scores: np.ndarray, windows: np.ndarray, kind: str = "oic", max_candidates: int | None = 500,
                 min_len: int = 1, max_len: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Candidate windows in seconds, best first: ``([M, 2] seconds, [M] scores)``.

    ``windows [N, 2]`` are the clips' time spans; window [i, j] spans ``windows[i, 0] .. windows[j, 1]``.
    Ties keep the (i, j) row-major order (stable sort), so the ranking is deterministic. Only the best
    ``max_candidates`` are returned: NMS then keeps the top few of them (None keeps all N(N+1)/2).
    """
    windows = np.asarray(windows, dtype=np.float64).reshape(-1, 2)
    ws = window_scores(scores, kind=kind, min_len=min_len, max_len=max_len)
    ii, jj = np.nonzero(np.isfinite(ws))
    vals = ws[ii, jj]
    order = np.argsort(-vals, kind="stable")
    if max_candidates is not None:
        order = order[:max_candidates]
    ranked = np.stack([windows[ii[order], 0], windows[jj[order], 1]], axis=1)
    return ranked, vals[order]


def top_windows(ranked: np.ndarray, top_k: int = 5, threshold: float = 0.5) -> np.ndarray:
    """The first ``top_k`` windows that survive 2D-TAN's NMS (``locvtp.metrics.nms``): what the JSON records."""
    from locvtp.metrics import nms

    ranked = np.asarray(ranked, dtype=np.float64).reshape(-1, 2)
    return ranked[nms(ranked, None, threshold, top_k=top_k)] if len(ranked) else ranked


# --------------------------------------------------------------------------------------------------- 2D-TAN head


def pred_relevant_windows(windows: np.ndarray, scores: np.ndarray, decimals: Optional[int] = None
                          ) -> list[list[float]]:
    """Ranked windows as Moment-DETR's ``pred_relevant_windows``: ``[[start, end, score], ...]`` best first
    (seconds; ``decimals`` rounds start and end, never the score). The one shape of a grounding result, in
    ``locvtp evaluate``'s prediction files, ``locvtp ground``'s JSON and ``locvtp serve``'s API alike, so
    ``locvtp score`` reads any of them."""
    w = np.asarray(windows, np.float64).reshape(-1, 2)
    sc = np.asarray(scores, np.float64).reshape(-1)

    def sec(x: float) -> float:
        return round(float(x), decimals) if decimals is not None else float(x)

    return [[sec(a), sec(b), float(c)] for (a, b), c in zip(w, sc)]


@dataclass
class GroundingResult:
    """One query's top windows in one video. :meth:`to_json` is the result's one JSON shape: ``query``, ``vid``
    (the video's id), ``duration``, ``pred_relevant_windows`` (:func:`pred_relevant_windows`) and ``warnings``
    (with ``curve``: the per-clip ``clip_windows``, ``clip_scores`` and ``clip_relevance``)."""

    query: str
    duration: float
    windows: np.ndarray  # [K, 2] seconds, best first
    scores: np.ndarray  # [K]
    clip_windows: np.ndarray  # [N, 2]
    clip_relevance: np.ndarray  # [N] combined standardized relevance (what windows are scored on)
    clip_cosine: np.ndarray  # [N] raw clip·sentence cosine
    warnings: list[str] = field(default_factory=list)  # why the windows may not mean what they seem
    flat: bool = False  # every clip scores the same (is_flat): every window scores 0, ranked in the tie order
    vid: str = ""  # the video's id (a file's stem, a feature store's key); "" when unknown

    def to_json(self, curve: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {
            "query": self.query,
            "vid": self.vid,
            "duration": round(float(self.duration), 4),
            "pred_relevant_windows": pred_relevant_windows(self.windows, self.scores, decimals=4),
            "warnings": list(self.warnings),
        }
        if curve:
            d["clip_windows"] = np.round(self.clip_windows, 4).tolist()
            d["clip_scores"] = [float(x) for x in self.clip_cosine]
            d["clip_relevance"] = [float(x) for x in self.clip_relevance]
        return d


def ground_embeddings(
    clips: np.ndarray,
    clip_windows: np.ndarray,
    sentence: np.ndarray,
    words: Optional[np.ndarray] = None,
    query: str = "",
    duration: Optional[float] = None,
    top_k: int = 5,
    alpha: float = 0.5,
    nms_threshold: float = 0.5,
    min_clips: int = 1,
    max_clips: Optional[int] = None,
    window_score: Optional[str] = None,
    content: Optional[np.ndarray] = None,
    word_set: str = "all",
) -> GroundingResult:
    """Top-k windows of one query in one video from embeddings (see the module docstring for the procedure).

    ``clips [N, D]`` and ``clip_windows [N, 2]`` (seconds) of the video, ``sentence [D]``, ``words [L, D]``
    (valid words; None = sentence only); ``word_set`` / ``content``: which words the word level averages over
    (:func:`query_words`; a fallback is said in ``warnings``). ``window_score``: a kind of
    :func:`window_scores` (None: its default). Scores equal up to the embeddings' rounding (:func:`is_flat`)
    are treated as equal: every window scores 0, the windows come in the tie order of :func:`rank_windows`,
    ``flat`` is set and ``warnings`` says so.
    """
    from locvtp.metrics import nms

    # Computed on float32 copies: the scores carry float32 rounding at best, coarser if the input was coarser.
    precision = score_precision(clips, sentence, words, np.float32(0))
    clips = np.asarray(clips, dtype=np.float32)
    clip_windows = np.asarray(clip_windows, dtype=np.float64).reshape(-1, 2)
    if clips.ndim != 2 or clips.shape[0] == 0:
        raise ValueError(f"need clip embeddings [N>=1, D], got shape {clips.shape}")
    if clip_windows.shape[0] != clips.shape[0]:
        raise ValueError(f"{clip_windows.shape[0]} clip windows for {clips.shape[0]} clips")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    words, fallback = query_words(words, content, word_set)
    w = None if words is None or np.asarray(words).size == 0 else np.asarray(words, np.float32)
    rel, flat = clip_relevance(clips, np.asarray(sentence, np.float32)[None], None if w is None else [w],
                               alpha=alpha, precision=precision)
    relevance = rel[:, 0]
    kw = {} if window_score is None else {"kind": window_score}
    ranked, vals = rank_windows(relevance, clip_windows, min_len=min_clips, max_len=max_clips, **kw)
    keep = nms(ranked, None, nms_threshold, top_k=top_k) if len(ranked) else np.zeros(0, dtype=np.int64)
    dur = float(duration) if duration is not None else float(clip_windows[-1, 1])
    res = GroundingResult(query, dur, ranked[keep], vals[keep], clip_windows, relevance,
                          clips @ np.asarray(sentence, np.float32), flat=bool(flat[0]))
    res.warnings = _clip_warnings(res, top_k, nms_threshold)
    if fallback and alpha < 1.0:
        res.warnings.insert(0, f"words=content: the query has {CONTENT_FALLBACK[fallback]}: its word-level term "
                               "averages over all its words, as with words=all")
    return res


def _clip_warnings(res: GroundingResult, top_k: int, nms_threshold: float) -> list[str]:
    """Why the windows of ``res`` may mean nothing (see the module docstring)."""
    n = len(res.clip_windows)
    out = []
    if n == 1:
        w = res.clip_windows[0]
        out.append(f"the video ({res.duration:.3g} s) gives a single clip [{w[0]:.3g}, {w[1]:.3g}] s: the only "
                   "window is the whole video and its score says nothing about the query (a video shorter than "
                   "one clip, or --clip-seconds longer than the video)")
        return out
    if res.flat:
        out.append(f"all {n} clips score the same for this query (a still or blank video?): every window scores "
                   "0 and the windows are in the tie order (earliest start first, then shortest), not ranked "
                   "by the query")
    if len(res.windows) < top_k:
        out.append(f"only {len(res.windows)} window(s) of the {top_k} asked: {n} clips do not give more windows "
                   f"that overlap less than IoU {nms_threshold:g}")
    return out


__all__ = [
    "CONTENT_FALLBACK", "FLAT_LAMBDA", "GroundingResult", "WINDOW_SCORES", "WORD_SETS", "clip_query_score_matrix",
    "clip_query_scores", "clip_relevance", "ground_embeddings", "is_flat", "pred_relevant_windows",
    "query_words", "rank_windows", "score_precision", "standardize", "top_windows", "window_scores",
]
