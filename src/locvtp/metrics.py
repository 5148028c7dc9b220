"""Evaluation metrics for the four downstream tasks: numpy arrays in, plain Python numbers out.

Users compare numbers across papers, so every function follows one community reference implementation
*convention for convention* (comparison operators, tie handling, median definition, NMS order, how averages are
taken). Each docstring names its reference file and lists the conventions it reproduces, and says where it
deliberately differs (only where the reference crashes, returns NaN, or depends on an unspecified sort order).

Common rules:

* Recalls, accuracies, F1, mAP and mIoU are percentages in [0, 100]; ranks are 1-based. Nothing is rounded.
* Arithmetic is float64 and follows the reference's order of operations (e.g. ``mean(hits) * 100`` where the
  reference does that, ``100 * count / n`` where it does that), so values agree to the last bit whenever the
  reference itself computes in float64.
* Windows are ``[start, end]`` in seconds with ``end >= start``; zero-length windows are allowed. Where a
  reference divides 0 by 0 (only possible when both windows have zero length) it produces NaN; here that IoU is
  0 (see :func:`temporal_iou`).
* Bad input raises ``ValueError`` naming the argument (and the index / key inside it).

This module imports nothing from the rest of the package.
"""
from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence

import numpy as np

__all__ = [
    "retrieval_metrics",
    "multi_caption_retrieval_metrics",
    "temporal_iou",
    "nms",
    "score_map_to_windows",
    "grounding_recall",
    "grounding_top1_iou",
    "paired_bootstrap_diff",
    "moment_retrieval_map",
    "moment_retrieval_metrics",
    "highlight_labels",
    "highlight_detection",
    "step_recall",
    "crosstask_viterbi",
    "segmentation_metrics",
]

# IoU thresholds of moment_detr's mAP: np.linspace(0.5, 0.95, 10) rounded to two decimals as the reference does.
_MR_IOU_THRESHOLDS = tuple(float(f"{t:.2f}") for t in np.linspace(0.5, 0.95, 10))
# moment_detr's ground-truth length buckets (seconds, ``lo < length <= hi``); "full" keeps every window.
MR_LENGTH_RANGES = (("short", 0.0, 10.0), ("middle", 10.0, 30.0), ("long", 30.0, 150.0), ("full", 0.0, 150.0))
# moment_detr's highlight thresholds: a clip is positive for an annotator whose score (0..4) is >= the minimum.
HL_MIN_SCORES = (("Fair", 2), ("Good", 3), ("VeryGood", 4))


# ----------------------------------------------------------------------------------------------------------------
# input validation
# ----------------------------------------------------------------------------------------------------------------
def _finite_matrix(x, name: str, *, square: bool = False) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array, got shape {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{name}: empty array of shape {a.shape}")
    if square and a.shape[0] != a.shape[1]:
        raise ValueError(f"{name}: expected a square [n, n] matrix (ground truth on the diagonal), got shape {a.shape}")
    if not np.isfinite(a).all():
        bad = np.argwhere(~np.isfinite(a))[0]
        raise ValueError(f"{name}: non-finite value at index {tuple(int(i) for i in bad)}")
    return a


def _windows(x, name: str, *, allow_empty: bool = True) -> np.ndarray:
    """A float64 ``[n, 2]`` array of ``[start, end]`` windows with finite values and ``end >= start``."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1 and a.size == 0:
        a = a.reshape(0, 2)
    if a.ndim != 2 or a.shape[1] != 2:
        raise ValueError(f"{name}: expected windows of shape [n, 2], got shape {a.shape}")
    if not allow_empty and a.shape[0] == 0:
        raise ValueError(f"{name}: needs at least one window")
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: non-finite window at row {int(np.argwhere(~np.isfinite(a))[0, 0])}")
    inverted = np.flatnonzero(a[:, 1] < a[:, 0])
    if inverted.size:
        i = int(inverted[0])
        raise ValueError(f"{name}: window at row {i} has end < start ({a[i, 0]!r} > {a[i, 1]!r})")
    return a


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` with 0 where ``den == 0`` (the references produce NaN there)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.zeros(np.broadcast(num, den).shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out


# ----------------------------------------------------------------------------------------------------------------
# text-video retrieval (CLIP4Clip)
# ----------------------------------------------------------------------------------------------------------------
def _clip4clip_ranks(sim: np.ndarray) -> np.ndarray:
    """0-based ranks of the diagonal as CLIP4Clip's ``compute_metrics`` extracts them (one per tied position)."""
    diag = np.diag(sim)[:, None]
    greater = (sim > diag).sum(axis=1)
    ties = (sim == diag).sum(axis=1)  # >= 1: the diagonal element itself
    # Row i contributes ranks greater[i], greater[i] + 1, ..., greater[i] + ties[i] - 1.
    offsets = np.arange(int(ties.sum())) - np.repeat(np.cumsum(ties) - ties, ties)
    return np.repeat(greater, ties) + offsets


def _rank_summary(ranks: np.ndarray, *, lower_median: bool, mean_of_shifted: bool) -> dict[str, float]:
    n = ranks.size
    out = {f"R{k}": float(100 * int(np.sum(ranks < k)) / n) for k in (1, 5, 10)}
    if lower_median:  # torch.median: the lower of the two middle values
        out["MedianR"] = float(np.sort(ranks)[(n - 1) // 2] + 1)
    else:  # np.median: the mean of the two middle values
        out["MedianR"] = float(np.median(ranks) + 1)
    out["MeanR"] = float(np.mean(ranks + 1)) if mean_of_shifted else float(np.mean(ranks) + 1)
    return out


def retrieval_metrics(sim) -> dict[str, float]:
    """Text-to-video retrieval metrics of a square similarity matrix ``sim[n_text, n_video]``.

    Ground truth is the diagonal (text i describes video i). Returns ``R1, R5, R10`` (percent), ``MedianR`` and
    ``MeanR`` (1-based). For video-to-text, pass ``sim.T``.

    Reference: ArrowLuo/CLIP4Clip ``metrics.py::compute_metrics``. Conventions reproduced:

    * rank of a query = number of candidates with a strictly higher similarity (0-based; reported ranks +1);
    * **ties**: when ``k`` candidates (the true one included) share the true candidate's similarity, the reference
      (``np.where(sort(-x) - diag == 0)``) emits one rank per tied position, ``g, g+1, ..., g+k-1``; every one of
      them enters the counts and the denominator. So a row tied with two others adds three ranks;
    * ``R@K`` = ``100 * #(rank < K) / #ranks`` (``R1`` is ``rank == 0``);
    * ``MedianR`` = ``np.median(ranks) + 1``: the mean of the two middle values for an even count;
    * ``MeanR`` = ``np.mean(ranks) + 1``.

    Deviation: non-finite similarities raise (the reference silently drops rows whose diagonal is NaN/inf).
    """
    s = _finite_matrix(sim, "sim", square=True)
    return _rank_summary(_clip4clip_ranks(s), lower_median=False, mean_of_shifted=False)


def multi_caption_retrieval_metrics(sim, video_of_text) -> dict[str, dict[str, float]]:
    """Retrieval metrics when a video has several captions (MSVD, VATEX, ...).

    ``sim[n_text, n_video]`` holds every caption against every video; ``video_of_text[n_text]`` gives the video
    (column) each caption describes. Every video needs at least one caption. Returns
    ``{"text_to_video": {...}, "video_to_text": {...}}``, each with ``R1, R5, R10, MedianR, MeanR``.

    Reference: ArrowLuo/CLIP4Clip ``metrics.py::tensor_text_to_video_metrics`` and ``tensor_video_to_text_sim``
    (used by ``main_task_retrieval.py::eval_epoch`` for multi-sentence datasets, where the ``[n_text, n_video]``
    matrix is regrouped into ``[n_video, max_captions, n_video]`` padded with ``-inf``). Conventions reproduced:

    * **text→video**: every caption is one query ranked against all videos (padding excluded). Its rank is the
      position of its video after a descending sort (double ``argsort``); ``R@K = 100 * #(rank < K) / n_text``;
      ``MedianR`` is ``torch.median(ranks + 1)``, i.e. the **lower** middle value for an even count (unlike
      ``compute_metrics``); ``MeanR = np.mean(ranks + 1)``;
    * **video→text**: a video is scored against each *caption group* by the maximum similarity over that group's
      captions (``max`` over the caption axis), giving an ``[n_video, n_video]`` matrix ranked by
      :func:`retrieval_metrics` (``compute_metrics``: tied positions expanded, averaging median).

    Deviations: ties in text→video are broken deterministically, as a stable descending sort does (an equal-scored
    video with a lower index ranks first); the reference uses ``torch.argsort``, whose order among ties is
    unspecified (and not stable on CPU). The reference divides in float32 for ``R@K``; here it is float64.
    """
    s = _finite_matrix(sim, "sim")
    n_text, n_video = s.shape
    v = np.asarray(video_of_text)
    if v.shape != (n_text,):
        raise ValueError(f"video_of_text: expected shape ({n_text},) to match sim "
                         f"[n_text={n_text}, n_video={n_video}], got shape {v.shape}")
    if v.dtype.kind not in "iu":
        raise ValueError(f"video_of_text: expected integer video indices, got dtype {v.dtype}")
    if v.size and (v.min() < 0 or v.max() >= n_video):
        bad = int(np.flatnonzero((v < 0) | (v >= n_video))[0])
        raise ValueError(f"video_of_text[{bad}] = {int(v[bad])} is outside [0, {n_video})")
    counts = np.bincount(v, minlength=n_video)
    if (counts == 0).any():
        missing = np.flatnonzero(counts == 0)
        raise ValueError(f"video_of_text: videos without any caption: {missing[:10].tolist()}"
                         f"{' ...' if missing.size > 10 else ''} (each video needs at least one caption)")

    # text -> video: stable descending rank of the true video.
    true = s[np.arange(n_text), v][:, None]
    cols = np.arange(n_video)[None, :]
    ranks_t2v = (s > true).sum(axis=1) + ((s == true) & (cols < v[:, None])).sum(axis=1)
    t2v = _rank_summary(ranks_t2v, lower_median=True, mean_of_shifted=True)

    # video -> text: max over each video's captions, then compute_metrics on [video query, caption group].
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    grouped = s if np.all(v[1:] >= v[:-1]) else s[np.argsort(v, kind="stable")]
    group_max = np.maximum.reduceat(grouped, starts, axis=0)  # [caption group (video), video]
    v2t = _rank_summary(_clip4clip_ranks(group_max.T), lower_median=False, mean_of_shifted=False)
    return {"text_to_video": t2v, "video_to_text": v2t}


# ----------------------------------------------------------------------------------------------------------------
# temporal grounding (2D-TAN) and moment retrieval (Moment-DETR)
# ----------------------------------------------------------------------------------------------------------------
def temporal_iou(a, b) -> np.ndarray | float:
    """IoU of every window in ``a`` with every window in ``b`` (``[N, 2]`` x ``[M, 2]`` -> ``[N, M]``).

    ``inter = max(0, min(ends) - max(starts))``, ``union = len_a + len_b - inter``. A single window (shape ``[2]``)
    drops its axis, so two single windows give a float.

    Degenerate windows: the union is 0 only when both windows have zero length; the IoU is then 0, whether or not
    the two points coincide. The references divide 0 by 0 there (NaN): 2D-TAN's recall then counts a miss (as
    here), its NMS suppresses, and Moment-DETR's AP matching counts a hit.
    """
    a_arr = np.asarray(a, dtype=np.float64)
    b_arr = np.asarray(b, dtype=np.float64)
    single_a, single_b = a_arr.shape == (2,), b_arr.shape == (2,)
    wa = _windows(a_arr.reshape(1, 2) if single_a else a_arr, "a")
    wb = _windows(b_arr.reshape(1, 2) if single_b else b_arr, "b")
    iou = _iou_cross(wa, wb)
    if single_a and single_b:
        return float(iou[0, 0])
    if single_a:
        return iou[0]
    if single_b:
        return iou[:, 0]
    return iou


def _iou_cross(wa: np.ndarray, wb: np.ndarray) -> np.ndarray:
    inter = np.clip(np.minimum(wa[:, None, 1], wb[None, :, 1]) - np.maximum(wa[:, None, 0], wb[None, :, 0]), 0, None)
    union = (wa[:, 1] - wa[:, 0])[:, None] + (wb[:, 1] - wb[:, 0])[None, :] - inter
    return _safe_div(inter, union)


def _iou_hull(wa: np.ndarray, wb: np.ndarray) -> np.ndarray:
    """IoU with the hull ``max(ends) - min(starts)`` as the denominator, as 2D-TAN ``eval.iou`` and Moment-DETR's
    paired IoU compute it (equal to the true IoU when the windows overlap, 0 otherwise; the float rounding can
    differ from :func:`_iou_cross` in the last bit, which matters at a threshold)."""
    inter = np.maximum(0.0, np.minimum(wa[:, None, 1], wb[None, :, 1]) - np.maximum(wa[:, None, 0], wb[None, :, 0]))
    hull = np.maximum(0.0, np.maximum(wa[:, None, 1], wb[None, :, 1]) - np.minimum(wa[:, None, 0], wb[None, :, 0]))
    return _safe_div(inter, hull)


def nms(windows, scores=None, threshold: float = 0.5, top_k: int | None = None) -> np.ndarray:
    """Greedy temporal non-maximum suppression; returns the indices (into ``windows``) of the kept windows, best first.

    ``scores=None`` keeps the given order (windows already ranked best first, as 2D-TAN passes them); otherwise the
    windows are first sorted by descending score, ties kept in input order (stable).

    Reference: microsoft/2D-TAN ``lib/core/eval.py::nms``. Conventions reproduced:

    * take the first remaining window, keep it, then drop every remaining window whose IoU with it is
      **> threshold** (a window at exactly ``threshold`` survives);
    * IoU here is ``inter / (len_i + len_j - inter)``;
    * stop as soon as ``top_k`` windows are kept (the reference's ``top_k=-1`` = no limit is ``None`` here).

    Degenerate windows: two zero-length windows have IoU 0 here (never suppress each other); the reference's 0/0
    makes them suppress each other wherever they are.
    """
    w = _windows(windows, "windows")
    n = w.shape[0]
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k: must be >= 1 or None, got {top_k}")
    if scores is None:
        order = np.arange(n)
    else:
        sc = np.asarray(scores, dtype=np.float64)
        if sc.shape != (n,):
            raise ValueError(f"scores: expected shape ({n},) to match windows [{n}, 2], got shape {sc.shape}")
        if not np.isfinite(sc).all():
            raise ValueError(f"scores: non-finite value at index {int(np.flatnonzero(~np.isfinite(sc))[0])}")
        order = np.argsort(-sc, kind="stable")
    # Greedy and sequential by nature; each round compares the kept window with all survivors at once, so the cost
    # is O(kept x n) rather than a full n x n IoU matrix (top_k is small in evaluation).
    keep: list[int] = []
    remaining = order
    while remaining.size:
        i = int(remaining[0])
        keep.append(i)
        if top_k is not None and len(keep) == top_k:
            break
        rest = remaining[1:]
        remaining = rest[_iou_cross(w[i:i + 1], w[rest])[0] <= threshold]
    return np.asarray(keep, dtype=np.int64)


def score_map_to_windows(score2d, duration: float, valid=None) -> tuple[np.ndarray, np.ndarray]:
    """Rank the moments of a 2D-TAN ``N x N`` score map; returns ``(windows [M, 2] in seconds, scores [M])``.

    Entry ``(i, j)`` with ``i <= j`` is the moment covering clips ``i..j``: ``[i, j + 1] / N * duration``. ``valid``
    (optional boolean ``[N, N]``) restricts the candidates further, e.g. to a sparse 2D-TAN map's computed entries.

    Reference: microsoft/2D-TAN ``moment_localization/train.py::get_proposal_results``. Conventions reproduced:
    flatten, sort by score descending (``argsort(...)[::-1]``), keep the upper triangle including the diagonal,
    end index + 1, divide by ``N`` then multiply by the duration.

    Deviations: equal scores are ordered by *descending* flat index ``i * N + j`` (what reversing a stable ascending
    sort gives; the reference's quicksort order among ties is unspecified). Coordinates are float64 (the reference
    converts to float32).
    """
    s = np.asarray(score2d, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] != s.shape[1] or s.shape[0] == 0:
        raise ValueError(f"score2d: expected a square [N, N] score map, got shape {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError(f"score2d: non-finite score at index {tuple(int(i) for i in np.argwhere(~np.isfinite(s))[0])}")
    duration = float(duration)
    if not np.isfinite(duration) or duration <= 0:
        raise ValueError(f"duration: must be a positive number of seconds, got {duration!r}")
    n = s.shape[0]
    ii, jj = np.triu_indices(n)
    if valid is not None:
        m = np.asarray(valid)
        if m.shape != s.shape:
            raise ValueError(f"valid: expected shape {s.shape} to match score2d, got shape {m.shape}")
        keep = m.astype(bool)[ii, jj]
        ii, jj = ii[keep], jj[keep]
    # (ii, jj) are in increasing flat order, so reversing a stable ascending sort puts the later entry first on ties.
    order = np.argsort(s[ii, jj], kind="stable")[::-1]
    ii, jj = ii[order], jj[order]
    windows = np.stack([ii / n * duration, (jj + 1) / n * duration], axis=1).astype(np.float64)
    return windows, s[ii, jj]


def _threshold_key(t: float) -> str:
    return f"{float(t):g}"


def grounding_recall(ranked_windows: Sequence, gt_windows, recalls: Iterable[int] = (1, 5),
                     ious: Iterable[float] = (0.1, 0.3, 0.5, 0.7), nms_threshold: float = 0.5) -> dict[str, float]:
    """Temporal sentence grounding recall ``R{n}@{m}`` and ``mIoU`` (percent), one ground-truth window per query.

    ``ranked_windows``: one ``[n_i, 2]`` array per query (seconds, best first); ``gt_windows``: ``[n_query, 2]``.
    Returns e.g. ``{"R1@0.5": ..., "R5@0.7": ..., "mIoU": ...}`` for every recall x IoU pair.

    Reference: microsoft/2D-TAN ``lib/core/eval.py::eval`` (and ``display_results`` for the percentages).
    Conventions reproduced:

    * per query, :func:`nms` over the ranked windows with ``nms_threshold``, stopping at ``max(recalls)`` kept;
    * IoU with the ground truth uses the hull ``max(ends) - min(starts)`` as the denominator (``eval.iou``);
    * a query counts for ``R{n}@{m}`` when any of its first ``n`` kept windows has IoU **> m** (strict: exactly ``m``
      is a miss);
    * ``mIoU`` is the mean over queries of the IoU of the **top-1** kept window (the reference's
      ``np.sort(overlap[0])[-3:]`` holds one value: the first prediction's IoU with the single GT window);
    * ``R = mean(hits) * 100``, ``mIoU = mean(iou) * 100``, unrounded.

    Deviation: a query without any predicted window is a miss with IoU 0 (the reference crashes).
    """
    gt = _windows(gt_windows, "gt_windows", allow_empty=False)
    if isinstance(ranked_windows, np.ndarray) and ranked_windows.ndim == 3:
        ranked_windows = list(ranked_windows)
    if len(ranked_windows) != gt.shape[0]:
        raise ValueError(f"ranked_windows: got {len(ranked_windows)} queries but gt_windows has {gt.shape[0]} rows")
    recalls = [int(r) for r in recalls]
    ious = [float(t) for t in ious]
    if not recalls or min(recalls) < 1:
        raise ValueError(f"recalls: expected positive integers, got {recalls}")
    max_recall = max(recalls)
    hits = np.zeros((len(ious), len(recalls), gt.shape[0]), dtype=bool)
    top1 = np.zeros(gt.shape[0], dtype=np.float64)
    for q, windows in enumerate(ranked_windows):
        w = _windows(windows, f"ranked_windows[{q}]")
        if w.shape[0] == 0:
            continue
        kept = w[nms(w, None, nms_threshold, top_k=max_recall)]
        overlap = _iou_hull(kept, gt[q:q + 1])[:, 0]
        top1[q] = overlap[0]
        for i, t in enumerate(ious):
            above = overlap > t
            for j, r in enumerate(recalls):
                hits[i, j, q] = above[:r].any()
    out: dict[str, float] = {}
    for j, r in enumerate(recalls):
        for i, t in enumerate(ious):
            out[f"R{r}@{_threshold_key(t)}"] = float(hits[i, j].mean() * 100)
    out["mIoU"] = float(np.mean(top1) * 100)
    return out


def grounding_top1_iou(ranked_windows: Sequence, gt_windows) -> np.ndarray:
    """Per query, the IoU (hull denominator, as :func:`grounding_recall`) of its top-ranked window with the ground
    truth; 0 for a query without windows. ``R1@m`` is ``mean(iou > m) * 100`` and ``mIoU`` ``mean(iou) * 100``,
    exactly :func:`grounding_recall`'s (NMS keeps the first window first): the per-query form that paired
    comparisons (:func:`paired_bootstrap_diff`) resample."""
    gt = _windows(gt_windows, "gt_windows", allow_empty=False)
    if len(ranked_windows) != gt.shape[0]:
        raise ValueError(f"ranked_windows: got {len(ranked_windows)} queries but gt_windows has {gt.shape[0]} rows")
    out = np.zeros(gt.shape[0], dtype=np.float64)
    firsts = [(q, _windows(w, f"ranked_windows[{q}]")[:1]) for q, w in enumerate(ranked_windows)]
    has = np.array([q for q, w in firsts if len(w)], dtype=np.int64)
    if len(has):
        top = np.concatenate([w for _, w in firsts if len(w)])
        out[has] = np.diagonal(_iou_hull(top, gt[has]))
    return out


def paired_bootstrap_diff(a, b, n_boot: int = 10000, ci: float = 0.95, seed: int = 0, chunk: int = 256,
                          pair_seeds: bool | None = None) -> dict[str, float]:
    """Mean difference ``mean(a) - mean(b)`` and its percentile bootstrap interval, resampling queries and seeds.

    ``a [Q, Sa]``, ``b [Q, Sb]``: a per-query value (e.g. ``100 * (IoU > 0.5)``) for each head seed of two feature
    sets on the *same* Q queries. Each replicate draws Q queries with replacement, shared by ``a`` and ``b`` (the
    pairing: a hard query is hard for both), and seeds with replacement, and takes ``mean over drawn queries of
    (mean over a's drawn seeds - mean over b's drawn seeds)``. ``pair_seeds`` (None: when ``Sa == Sb``): one seed
    draw for both sides, seed k of ``a`` with seed k of ``b`` (the ``tan`` head's seed k gives every row the same
    LSTM initialization and batch order); else each side's seeds are drawn independently. Draws, in this order per
    block of ``chunk`` replicates from ``numpy.random.default_rng(seed)``: query indices ``[c, Q]``, a's seed
    indices ``[c, Sa]``, then (unpaired only) b's ``[c, Sb]``. Returns ``diff`` (on the data), ``low``, ``high``
    (the ``(1 - ci) / 2`` and ``(1 + ci) / 2`` quantiles of the replicates, numpy's linear interpolation), ``se``
    (their standard deviation) and the counts.
    """
    a = _finite_matrix(a, "a")
    b = _finite_matrix(b, "b")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"a and b must hold the same queries (rows): got {a.shape} and {b.shape}")
    if not 0 < ci < 1 or n_boot < 1 or chunk < 1:
        raise ValueError(f"need 0 < ci < 1, n_boot >= 1, chunk >= 1: got ci={ci}, n_boot={n_boot}, chunk={chunk}")
    q, sa, sb = a.shape[0], a.shape[1], b.shape[1]
    paired = (sa == sb) if pair_seeds is None else bool(pair_seeds)
    if paired and sa != sb:
        raise ValueError(f"pair_seeds needs as many seeds in a as in b: got {sa} and {sb}")
    rng = np.random.default_rng(seed)
    reps = []
    for start in range(0, n_boot, chunk):
        c = min(chunk, n_boot - start)
        qc = _draw_counts(rng.integers(0, q, size=(c, q)), q)  # [c, Q]: how often each query was drawn
        ac = _draw_counts(rng.integers(0, sa, size=(c, sa)), sa) / sa  # [c, Sa]: seed weights
        bc = ac if paired else _draw_counts(rng.integers(0, sb, size=(c, sb)), sb) / sb
        per_query = ac @ a.T - bc @ b.T  # [c, Q]: each query's seed-resampled difference
        reps.append((qc * per_query).sum(axis=1) / q)
    rep = np.concatenate(reps)
    lo, hi = np.quantile(rep, [(1 - ci) / 2, (1 + ci) / 2])
    return {"diff": float(a.mean() - b.mean()), "low": float(lo), "high": float(hi), "se": float(rep.std()),
            "queries": q, "seeds_a": sa, "seeds_b": sb, "paired_seeds": paired, "n_boot": int(n_boot),
            "ci": float(ci)}


def _draw_counts(idx: np.ndarray, n: int) -> np.ndarray:
    """``[c, k]`` indices in ``[0, n)`` -> ``[c, n]`` counts per row (one bincount over row-offset indices)."""
    c = idx.shape[0]
    flat = (idx + n * np.arange(c)[:, None]).ravel()
    return np.bincount(flat, minlength=c * n).reshape(c, n).astype(np.float64)


def _interpolated_ap(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    """VOC-2011-style interpolated AP per row of ``[n_thresholds, n]`` curves: pad precision with 0 at both ends and
    recall with 0 / 1, make precision monotone from the right, sum precision x recall increments where recall
    changes (summing only those entries, as the reference does, so the float additions are the same)."""
    n_rows = precision.shape[0]
    p = np.concatenate([np.zeros((n_rows, 1)), precision, np.zeros((n_rows, 1))], axis=1)
    r = np.concatenate([np.zeros((n_rows, 1)), recall, np.ones((n_rows, 1))], axis=1)
    p = np.maximum.accumulate(p[:, ::-1], axis=1)[:, ::-1]
    terms = (r[:, 1:] - r[:, :-1]) * p[:, 1:]
    changed = r[:, 1:] != r[:, :-1]
    return np.array([np.sum(terms[t][changed[t]]) for t in range(n_rows)])


def _ap_detection(pred: np.ndarray, gt: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """AP at each IoU threshold for one query (ActivityNet / MMAction2 ``compute_average_precision_detection``)."""
    n_thr = len(thresholds)
    n_pred = pred.shape[0]
    if n_pred == 0:
        return np.zeros(n_thr)
    pred = pred[np.argsort(-pred[:, 2], kind="stable")]  # Python's list.sort(key=-score): stable
    iou = _iou_cross(pred[:, :2], gt)  # [n_pred, n_gt]
    # GTs by decreasing IoU; reversing a stable ascending sort puts the higher GT index first among ties.
    gt_order = np.argsort(iou, axis=1, kind="stable")[:, ::-1]
    thr = np.asarray(thresholds, dtype=np.float64)
    tp = np.zeros((n_thr, n_pred))
    locked = np.zeros((n_thr, gt.shape[0]), dtype=bool)
    rows = np.arange(n_thr)
    for p in range(n_pred):  # greedy matching is sequential in score order; thresholds are handled together
        g_order = gt_order[p]
        # Walking the GTs by decreasing IoU, the reference stops at the first IoU < t and skips locked GTs, so the
        # match is the first GT (in that order) with IoU >= t that is still free.
        free = (iou[p, g_order][None, :] >= thr[:, None]) & ~locked[:, g_order]
        hit = free.any(axis=1)
        first = np.argmax(free, axis=1)
        tp[hit, p] = 1
        locked[rows[hit], g_order[first[hit]]] = True
    fp = 1 - tp
    tp_c = np.cumsum(tp, axis=1)
    fp_c = np.cumsum(fp, axis=1)
    recall = tp_c / float(gt.shape[0])
    precision = tp_c / (tp_c + fp_c)
    return _interpolated_ap(precision, recall)


def moment_retrieval_map(predictions: Sequence, gt_windows: Sequence, max_pred_windows: int | None = 10
                         ) -> dict[str, float]:
    """Moment retrieval mAP and R1 (percent) with possibly several ground-truth windows per query (QVHighlights).

    ``predictions``: one ``[n_i, 3]`` array ``(start, end, score)`` per query, ranked best first as a Moment-DETR
    submission is; ``gt_windows``: one ``[k_i, 2]`` array per query (``k_i >= 1``). Returns ``mAP`` (mean over IoU
    0.5:0.05:0.95), ``mAP@0.5``, ``mAP@0.75``, ``R1@0.5``, ``R1@0.7``.

    Reference: jayleicn/moment_detr ``standalone_eval/eval.py`` (``compute_mr_ap``, ``compute_mr_r1``) and
    ``standalone_eval/utils.py`` (``compute_average_precision_detection``, ``interpolated_precision_recall``).
    Conventions reproduced:

    * thresholds ``np.linspace(0.5, 0.95, 10)`` rounded to 2 decimals;
    * **mAP**: only the first ``max_pred_windows`` (10) predictions *in the given order* are kept, then sorted by
      descending score (stable: ties keep their order). Each prediction, in that order, is matched to the
      ground-truth windows by decreasing IoU: a GT with IoU **< t** ends the search
      (false positive), an already-matched GT is skipped in favour of the next one, the first free GT with
      IoU **>= t** makes a true positive. Precision/recall from cumulative counts (recall over the number of GT
      windows), AP = interpolated (VOC 2011) area. AP is averaged over queries per threshold, ``mAP`` is the mean
      of those 10 values; all x 100;
    * **R1**: the *first* prediction in the given order (not the highest-scored one) is compared with the GT
      window of maximum IoU (first one on ties), using the hull-denominator IoU; hit when IoU **>= t**;
      ``R1 = mean(hits) * 100``;
    * the GT windows are all used (``max_gt_windows=None``); no length-range filtering (the "full" range).

    Deviations: values are not rounded to 2 decimals; a query without predictions counts AP 0 and an R1 miss (the
    reference leaves it out of mAP and crashes in R1); zero-length windows have IoU 0 with each other. GTs with
    equal IoU are tried higher index first, which is what the reference's ``tiou_arr.argsort()[::-1]`` gives when
    numpy's default sort is stable; on SIMD (AVX-512) numpy builds that order is unspecified, and it can change
    which GT a prediction claims (and so a later prediction's match).
    """
    if len(predictions) != len(gt_windows):
        raise ValueError(f"predictions: got {len(predictions)} queries but gt_windows has {len(gt_windows)}")
    if len(predictions) == 0:
        raise ValueError("predictions: no queries")
    if max_pred_windows is not None and max_pred_windows < 1:
        raise ValueError(f"max_pred_windows: must be >= 1 or None, got {max_pred_windows}")
    thresholds = _MR_IOU_THRESHOLDS
    ap_rows = []
    r1_hits = np.zeros((len(thresholds), len(predictions)), dtype=bool)
    for q, (pred, gt) in enumerate(zip(predictions, gt_windows)):
        p = np.asarray(pred, dtype=np.float64)
        if p.ndim == 1 and p.size == 0:
            p = p.reshape(0, 3)
        if p.ndim != 2 or p.shape[1] != 3:
            raise ValueError(f"predictions[{q}]: expected shape [n, 3] (start, end, score), got shape {p.shape}")
        _windows(p[:, :2], f"predictions[{q}]")
        if not np.isfinite(p[:, 2]).all():
            raise ValueError(f"predictions[{q}]: non-finite score")
        g = _windows(gt, f"gt_windows[{q}]", allow_empty=False)
        limited = p[:max_pred_windows] if max_pred_windows is not None else p
        ap_rows.append(_ap_detection(limited, g, thresholds))
        if p.shape[0]:
            first = p[:1, :2]
            best_gt = int(np.argmax(_iou_cross(first, g)[0]))
            iou1 = _iou_hull(first, g[best_gt:best_gt + 1])[0, 0]
            r1_hits[:, q] = iou1 >= np.asarray(thresholds)
    ap_thds = np.array(ap_rows).mean(0)  # per threshold, over queries
    out = {"mAP": float(100 * np.mean(ap_thds))}
    for t, v in zip(thresholds, ap_thds):
        if t in (0.5, 0.75):
            out[f"mAP@{_threshold_key(t)}"] = float(100 * v)
    for t, hits in zip(thresholds, r1_hits):
        if t in (0.5, 0.7):
            out[f"R1@{_threshold_key(t)}"] = float(np.mean(hits) * 100)
    return out


def _windows_in_range(gt: np.ndarray, lo: float, hi: float) -> np.ndarray:
    length = gt[:, 1] - gt[:, 0]
    return gt[(length > lo) & (length <= hi)]


def moment_retrieval_metrics(predictions: Sequence, gt_windows: Sequence, max_pred_windows: int | None = 10
                             ) -> dict[str, float]:
    """Moment retrieval figures under the names Moment-DETR's ``standalone_eval`` reports (its ``brief`` dict):
    ``MR-full-mAP``, ``MR-full-mAP@0.5``, ``MR-full-mAP@0.75``, ``MR-full-R1@0.5``, ``MR-full-R1@0.7``,
    ``MR-short-mAP``, ``MR-middle-mAP``, ``MR-long-mAP`` (percent, unrounded).

    Arguments as :func:`moment_retrieval_map`, which computes each bucket. Reference: jayleicn/moment_detr
    ``standalone_eval/eval.py::eval_moment_retrieval`` and ``get_data_by_range``. Conventions reproduced:

    * buckets by ground-truth window length ``lo < length <= hi``: short (0, 10], middle (10, 30], long
      (30, 150] seconds; in a bucket a query keeps only its windows in range, a query with none is left out
      (of its predictions too); "full" keeps every query and every window, whatever its length;
    * each bucket's mAP (mean over IoU 0.5:0.05:0.95) and R1 are :func:`moment_retrieval_map`'s.

    Deviation: a bucket without any query is left out of the result (the reference reports NaN for it).
    """
    if len(predictions) != len(gt_windows):
        raise ValueError(f"predictions: got {len(predictions)} queries but gt_windows has {len(gt_windows)}")
    gts = [_windows(g, f"gt_windows[{q}]", allow_empty=False) for q, g in enumerate(gt_windows)]
    out: dict[str, float] = {}
    for name, lo, hi in MR_LENGTH_RANGES:
        if name == "full":
            kept = list(range(len(gts)))
            sub = gts
        else:
            in_range = [_windows_in_range(g, lo, hi) for g in gts]
            kept = [q for q, g in enumerate(in_range) if len(g)]
            sub = [in_range[q] for q in kept]
        if not kept:
            continue
        m = moment_retrieval_map([predictions[q] for q in kept], sub, max_pred_windows)
        if name == "full":
            out.update({f"MR-full-{k}": v for k, v in m.items()})
        else:
            out[f"MR-{name}-mAP"] = m["mAP"]
    return out


def highlight_labels(duration: float, clip_ids, scores, clip_length: float = 2.0, n_annotators: int = 3
                     ) -> np.ndarray:
    """The ``[n_clips, n_annotators]`` saliency labels of a whole video from QVHighlights' ``relevant_clip_ids``
    and ``saliency_scores`` (one row of annotator scores per listed clip): unlisted clips score 0.
    ``n_annotators`` only matters when no clip is listed (QVHighlights has 3).

    Reference: jayleicn/moment_detr ``standalone_eval/eval.py::mk_gt_scores``: ``int(duration / clip_length)``
    clips. Deviation: a listed clip at or past that count extends the video to hold it (the reference raises
    ``IndexError``; QVHighlights' own files never do, rounded synthetic durations can).
    """
    ids = np.asarray(clip_ids, dtype=np.int64).reshape(-1)
    sal = np.asarray(scores, dtype=np.float64)
    if len(ids) == 0 and sal.size == 0:
        sal = np.zeros((0, n_annotators))
    if sal.ndim != 2 or sal.shape[0] != len(ids) or sal.shape[1] == 0:
        raise ValueError(f"scores: expected one row of annotator scores per clip id ({len(ids)}), got shape "
                         f"{sal.shape}")
    if len(ids) and ids.min() < 0:
        raise ValueError(f"clip_ids: negative clip id {int(ids.min())}")
    if len(np.unique(ids)) != len(ids):
        raise ValueError("clip_ids: a clip is listed twice")
    if not np.isfinite(sal).all():
        raise ValueError("scores: non-finite value")
    duration = float(duration)
    if not np.isfinite(duration) or duration < 0:
        raise ValueError(f"duration: must be a non-negative number of seconds, got {duration!r}")
    n = max(int(duration / clip_length), int(ids.max()) + 1 if len(ids) else 0)
    out = np.zeros((n, sal.shape[1]), dtype=np.float64)
    out[ids] = sal
    return out


def _saliency_ap(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """AP of one query's clips for each annotator column of ``labels [n, A]`` (0/1), as Moment-DETR's
    ``get_ap`` computes it with sklearn's ``precision_recall_curve`` (one operating point per distinct score)."""
    n, n_ann = labels.shape
    out = np.zeros(n_ann)
    if n == 0:
        return out
    order = np.argsort(-scores, kind="stable")
    s = scores[order]
    last = np.concatenate([np.flatnonzero(s[1:] != s[:-1]), [n - 1]])  # end of each group of equal scores
    tp = np.cumsum(labels[order], axis=0)[last]  # [K, A]: positives at or above each distinct score
    precision = tp / (last + 1.0)[:, None]
    for a in range(n_ann):  # 3 annotators: each has its own recall steps
        pos = tp[-1, a]
        if pos == 0 or pos == n:  # one class only: get_ap returns 0 (none relevant) or 1 (all relevant)
            out[a] = 0.0 if pos == 0 else 1.0
            continue
        # sklearn's order: lowest score (recall 1) first, then (precision 1, recall 0) appended
        recall = np.concatenate([(tp[::-1, a] / pos).astype(np.float32), [np.float32(0)]])
        interp = np.maximum.accumulate(np.concatenate([precision[::-1, a], [1.0]]))
        out[a] = np.mean(interp[np.flatnonzero(np.diff(recall))])
    return out


def highlight_detection(pred_saliency: Sequence, gt_saliency: Sequence,
                        min_scores: Sequence[tuple[str, float]] = HL_MIN_SCORES) -> dict[str, float]:
    """Highlight detection (QVHighlights): ``HL-min-{Fair,Good,VeryGood}-{mAP,Hit1}`` (percent, unrounded).

    ``pred_saliency``: one 1-D array of clip scores per query (2-s clips, higher = more salient);
    ``gt_saliency``: one ``[n_clips, n_annotators]`` array of 0..4 labels per query (:func:`highlight_labels`).

    Reference: jayleicn/moment_detr ``standalone_eval/eval.py::eval_highlight`` (``compute_hl_hit1``,
    ``compute_hl_ap``, ``compute_ap_from_tuple``) and ``standalone_eval/utils.py::get_ap``. Conventions reproduced:

    * per threshold (Fair >= 2, Good >= 3, VeryGood >= 4) a clip is positive for an annotator whose label is
      >= the threshold;
    * **HIT@1**: the clip of highest predicted score (``np.argmax``: the first on ties, over the whole prediction)
      is a hit when any annotator marks it positive; a clip past the video's labels is a miss; mean over queries;
    * **mAP**: predictions cut or zero-padded to the video's clip count; per (query, annotator) AP with one
      operating point per distinct score (tied clips enter together), precision made monotone from the right,
      then the *plain mean* of the precision at each recall level reached (not weighted by the recall step);
      an annotator with no positive clip has AP 0, one with only positive clips AP 1; mAP = mean over queries
      and annotators; both x 100.

    Deviations: a query without any labelled clip (no ``relevant_clip_ids``; a video shorter than a clip) has AP
    0 and no hit (the reference raises); an empty prediction is a miss.
    """
    if len(pred_saliency) != len(gt_saliency):
        raise ValueError(f"pred_saliency: got {len(pred_saliency)} queries but gt_saliency has {len(gt_saliency)}")
    if len(gt_saliency) == 0:
        raise ValueError("gt_saliency: no queries")
    preds, gts = [], []
    for q, (p, g) in enumerate(zip(pred_saliency, gt_saliency)):
        p = np.asarray(p, dtype=np.float64).reshape(-1)
        g = np.asarray(g, dtype=np.float64)
        if g.ndim != 2 or (g.shape[1] == 0 and g.shape[0]):
            raise ValueError(f"gt_saliency[{q}]: expected [n_clips, n_annotators] labels, got shape {g.shape}")
        if not np.isfinite(p).all():
            raise ValueError(f"pred_saliency[{q}]: non-finite score at index {int(np.flatnonzero(~np.isfinite(p))[0])}")
        preds.append(p)
        gts.append(g)
    out: dict[str, float] = {}
    for name, min_score in min_scores:
        ap_rows, hits = [], np.zeros(len(gts))
        for q, (p, g) in enumerate(zip(preds, gts)):
            binary = (g >= min_score).astype(np.float64)
            n = binary.shape[0]
            fitted = np.concatenate([p[:n], np.zeros(max(0, n - len(p)))])
            ap_rows.append(_saliency_ap(binary, fitted))
            if len(p) and int(np.argmax(p)) < n:
                hits[q] = binary[int(np.argmax(p))].max(initial=0.0)
        same_width = len({len(r) for r in ap_rows}) == 1  # the reference's [queries, 3] array when it can be
        out[f"HL-min-{name}-mAP"] = float(100 * np.mean(np.array(ap_rows) if same_width else np.concatenate(ap_rows)))
        out[f"HL-min-{name}-Hit1"] = float(100 * np.mean(hits))
    return out


# ----------------------------------------------------------------------------------------------------------------
# action step localization (CrossTask)
# ----------------------------------------------------------------------------------------------------------------
def _step_matrix(x, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 2:
        raise ValueError(f"{name}: expected a [T, K] array, got shape {a.shape}")
    if a.dtype.kind not in "biuf":
        raise ValueError(f"{name}: expected a numeric 0/1 array, got dtype {a.dtype}")
    return a


def step_recall(y_true: Mapping[Hashable, Mapping[Hashable, np.ndarray]],
                y_pred: Mapping[Hashable, Mapping[Hashable, np.ndarray]]) -> dict:
    """CrossTask step localization recall (percent): ``{"recall": mean over tasks, "per_task": {task: recall}}``.

    ``y_true[task][video]`` is a ``[T, K]`` 0/1 matrix of annotated (frame, step) pairs; ``y_pred[task][video]``
    the predicted assignment (e.g. :func:`crosstask_viterbi`: one frame per step).

    Reference: DmZhukov/CrossTask ``train.py::get_recalls`` and its caller ``eval``. Conventions reproduced:

    * only videos present in both ``y_true[task]`` and ``y_pred[task]`` count; tasks come from ``y_true``;
    * per task: matches = ``sum(y_true * y_pred)`` over its videos, total = number of steps annotated in at least
      one frame (``(y_true.sum(0) > 0).sum()``); recall = matches / total (micro within a task);
    * the headline recall is the unweighted mean over tasks (macro); both x 100.

    Deviations: a task missing from ``y_pred`` or without any annotated step in the evaluated videos raises a
    ``ValueError`` naming it (the reference raises ``KeyError`` / ``ZeroDivisionError``).
    """
    if not isinstance(y_true, Mapping) or not isinstance(y_pred, Mapping):
        raise ValueError("y_true, y_pred: expected dicts task -> video -> [T, K] array")
    if not y_true:
        raise ValueError("y_true: no tasks")
    per_task: dict = {}
    for task, videos_true in y_true.items():
        if task not in y_pred:
            raise ValueError(f"y_pred: task {task!r} of y_true has no predictions")
        videos_pred = y_pred[task]
        match = 0.0
        total = 0
        for vid in videos_true:
            if vid not in videos_pred:
                continue
            t = _step_matrix(videos_true[vid], f"y_true[{task!r}][{vid!r}]")
            p = _step_matrix(videos_pred[vid], f"y_pred[{task!r}][{vid!r}]")
            if t.shape != p.shape:
                raise ValueError(f"y_pred[{task!r}][{vid!r}]: shape {p.shape} does not match "
                                 f"y_true[{task!r}][{vid!r}] shape {t.shape}")
            total += int((t.sum(axis=0) > 0).sum())
            match += float((t.astype(np.float64) * p.astype(np.float64)).sum())
        if total == 0:
            raise ValueError(f"y_true: task {task!r} has no annotated step in the videos that were predicted")
        per_task[task] = match / total
    recall = float(np.mean(list(per_task.values())) * 100)
    return {"recall": recall, "per_task": {k: float(v * 100) for k, v in per_task.items()}}


def crosstask_viterbi(scores, exactly_one: bool = True, background_score: float = 0.0) -> np.ndarray:
    """Order-constrained step assignment: returns a ``[T, K]`` uint8 matrix with each step at one frame, in order.

    ``scores[T, K]``: how well frame ``t`` matches step ``k`` (higher is better, e.g. log-probabilities or
    similarities). The path maximizes the summed scores of its (frame, step) pairs subject to step ``k`` occurring
    after step ``k - 1``; every other frame is background and scores ``background_score``.

    Reference: DmZhukov/CrossTask ``dp.pyx::dp`` (called as ``dp(y, -O)`` on log-probabilities ``O``; here cost =
    ``-scores``). Conventions reproduced:

    * states ``bg_0, step_1, bg_1, ..., step_K, bg_K``; a step state is entered from the previous background or
      directly from the previous step; with ``exactly_one`` a step lasts one frame (only background states repeat);
    * tie-breaking of the forward pass (strict ``>``): staying is preferred, then coming from ``k - 1``, then from
      ``k - 2``, so among equal-cost paths the earlier placement of the previous step wins;
    * end state: ``bg_K`` only if its cost is strictly lower than ``step_K`` at the last frame (a tie puts the last
      step on the last frame).

    With ``exactly_one`` and ``background_score == 0`` the same decisions are computed step by step, vectorized
    over time (prefix minima), instead of frame by frame. Deviations: costs are float64 (the reference takes
    float32 arrays); ``T < K`` raises (no valid path); when ``T == K`` the reference may backtrack from the
    unreachable ``bg_K`` state, here the only valid path (step k on frame k) is returned.
    """
    s = _finite_matrix(scores, "scores")
    n_frames, n_steps = s.shape
    if n_frames < n_steps:
        raise ValueError(f"scores: {n_frames} frames cannot hold {n_steps} ordered steps (shape {s.shape})")
    if not np.isfinite(background_score):
        raise ValueError(f"background_score: must be finite, got {background_score!r}")
    cost = -s
    if exactly_one and background_score == 0:
        frames = _viterbi_by_step(cost)
        y = np.zeros((n_frames, n_steps), dtype=np.uint8)
        y[frames, np.arange(n_steps)] = 1
        return y
    return _viterbi_by_frame(cost, exactly_one, -float(background_score))


def _viterbi_by_step(cost: np.ndarray) -> np.ndarray:
    """Frames of steps 1..K for ``exactly_one`` with zero background cost.

    best[k][f] = cost of steps 1..k with step k on frame f = ``min_{f' < f} best[k-1][f'] + cost[f, k]`` (the same
    left-to-right float additions as the frame-by-frame pass, whose background additions are exact zeros). The
    reference's preferences pick the earliest minimizer of each prefix, except at the end (see caller).
    """
    n_frames, n_steps = cost.shape
    frames_idx = np.arange(n_frames)
    best = cost[:, 0].copy()  # step 1 can start at frame 0 (from bg_0, cost 0)
    first_argmin = []  # per step k >= 2: earliest argmin of best[k-1] over frames < f, for each f
    for k in range(1, n_steps):
        run_min = np.minimum.accumulate(best)
        new_min = np.concatenate([[True], run_min[1:] < run_min[:-1]])
        arg = np.maximum.accumulate(np.where(new_min, frames_idx, 0))
        prev_min = np.concatenate([[np.inf], run_min[:-1]])  # over frames < f
        prev_arg = np.concatenate([[-1], arg[:-1]])
        best = prev_min + cost[:, k]
        first_argmin.append(prev_arg)
    # End: bg_K (earliest minimizer over frames < T-1) only if strictly better than step K on the last frame.
    last = n_frames - 1
    if last >= n_steps:  # bg_K reachable: step K fits before the last frame
        head = best[:last]
        j = int(np.argmin(head))  # np.argmin: first minimizer; unreachable frames are +inf
        f = j if head[j] < best[last] else last
    else:
        f = last
    out = np.empty(n_steps, dtype=np.int64)
    out[-1] = f
    for k in range(n_steps - 1, 0, -1):
        f = int(first_argmin[k - 1][f])
        out[k - 1] = f
    return out


def _viterbi_by_frame(cost: np.ndarray, exactly_one: bool, bg_cost: float) -> np.ndarray:
    """The reference's frame-by-frame dynamic program, vectorized over the 2K+1 states."""
    n_frames, n_steps = cost.shape
    n_states = 2 * n_steps + 1
    k = np.arange(n_states)
    step_of_state = np.where(k % 2 == 0, 0, (k + 1) // 2)
    is_step = step_of_state > 0
    may_stay = ~is_step | (not exactly_one)
    may_skip = is_step & (k >= 2)
    prev = np.full(n_states, np.inf)
    prev[0] = 0.0
    choice = np.zeros((n_frames + 1, n_states), dtype=np.int8)  # 0 stay, 1 from k-1, 2 from k-2, -1 unreachable
    for t in range(1, n_frames + 1):
        cand = np.full((3, n_states), np.inf)
        cand[0, may_stay] = prev[may_stay]
        cand[1, 1:] = prev[:-1]
        cand[2, may_skip] = prev[k[may_skip] - 2]
        c = np.argmin(cand, axis=0)  # first minimum: the reference's preference order on ties
        val = cand[c, k]
        reachable = np.isfinite(val)
        add = np.where(is_step, cost[t - 1, np.maximum(step_of_state - 1, 0)], bg_cost)
        prev = np.where(reachable, val + add, np.inf)
        choice[t] = np.where(reachable, c, -1)
    last_step, last_bg = n_states - 2, n_states - 1
    state = last_bg if (np.isfinite(prev[last_bg]) and prev[last_bg] < prev[last_step]) else last_step
    y = np.zeros((n_frames, n_steps), dtype=np.uint8)
    for t in range(n_frames, 0, -1):
        if step_of_state[state] > 0:
            y[t - 1, step_of_state[state] - 1] = 1
        state -= int(choice[t, state])
    return y


# ----------------------------------------------------------------------------------------------------------------
# action segmentation (MS-TCN)
# ----------------------------------------------------------------------------------------------------------------
def _segments(labels: np.ndarray, background: frozenset) -> tuple[list, np.ndarray, np.ndarray]:
    """Maximal runs of equal labels (object array), background runs dropped: (labels, starts, ends), end exclusive."""
    n = labels.shape[0]
    change = np.flatnonzero(labels[1:] != labels[:-1]) + 1
    starts = np.concatenate([[0], change]).astype(np.int64)
    ends = np.concatenate([change, [n]]).astype(np.int64)
    run_labels = labels[starts].tolist()
    keep = np.array([lab not in background for lab in run_labels], dtype=bool)
    seg_labels = [lab for lab, k in zip(run_labels, keep) if k]
    return seg_labels, starts[keep], ends[keep]


def _object_array(items: list) -> np.ndarray:
    arr = np.empty(len(items), dtype=object)
    arr[:] = items
    return arr


def _levenshtein(p: list, y: list) -> float:
    """Edit distance with unit costs, one row of the table at a time (insertions via a running minimum)."""
    m, n = len(p), len(y)
    ar = np.arange(n + 1, dtype=np.float64)
    row = ar.copy()
    differ = (_object_array(p)[:, None] != _object_array(y)[None, :]).astype(np.float64)  # substitution costs
    for i in range(1, m + 1):
        sub = row[:-1] + differ[i - 1]
        new = np.empty(n + 1)
        new[0] = i
        new[1:] = np.minimum(row[1:] + 1, sub)  # deletion, substitution / match
        row = np.minimum.accumulate(new - ar) + ar  # insertion: D[i, j] = min_{j' <= j} tmp[j'] + (j - j')
    return float(row[-1])


def _f_counts(p_lab, p_s, p_e, y_lab, y_s, y_e, overlap: float) -> tuple[float, float, float]:
    if len(p_lab) == 0:
        return 0.0, 0.0, float(len(y_lab))
    if len(y_lab) == 0:
        return 0.0, float(len(p_lab)), 0.0
    inter = np.minimum(p_e[:, None], y_e[None, :]) - np.maximum(p_s[:, None], y_s[None, :])
    hull = np.maximum(p_e[:, None], y_e[None, :]) - np.minimum(p_s[:, None], y_s[None, :])
    same = (_object_array(p_lab)[:, None] == _object_array(y_lab)[None, :]).astype(bool)
    iou = (1.0 * inter / hull) * same  # negative for disjoint same-label segments, as in the reference
    hits = [False] * len(y_lab)
    tp = fp = 0
    for row in iou.tolist():  # sequential: a GT segment can be hit once
        best = max(row)
        idx = row.index(best)  # the first maximum, as np.argmax
        if best >= overlap and not hits[idx]:
            tp += 1
            hits[idx] = True
        else:
            fp += 1
    return float(tp), float(fp), float(len(y_lab) - sum(hits))


def _as_labels(x, name: str) -> np.ndarray:
    """Per-frame labels as a 1-D object array of Python scalars (so ``1 == 1.0`` and ``"a" == "a"`` compare as in
    the reference's lists, and mixed int / str labels are never cast to strings)."""
    if isinstance(x, (str, bytes)) or not isinstance(x, Iterable):
        raise ValueError(f"{name}: expected a sequence of per-frame labels, got {type(x).__name__}")
    items = x.tolist() if isinstance(x, np.ndarray) else list(x)
    if isinstance(x, np.ndarray) and x.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D sequence of per-frame labels, got shape {x.shape}")
    arr = np.empty(len(items), dtype=object)
    arr[:] = items
    if any(isinstance(i, (list, tuple, np.ndarray)) for i in items[:1]):
        raise ValueError(f"{name}: expected a 1-D sequence of per-frame labels, got nested sequences")
    return arr


def segmentation_metrics(pred_labels: Sequence, gt_labels: Sequence, background="background",
                         overlaps: Iterable[float] = (0.1, 0.25, 0.5)) -> dict[str, float]:
    """Action segmentation metrics over a set of videos: ``Acc``, ``Edit``, ``F1@10``, ``F1@25``, ``F1@50`` (percent).

    ``pred_labels`` / ``gt_labels``: one per-frame label sequence per video (strings or integers), equal lengths per
    video. ``background``: a label, a collection of labels, or ``None``; background frames count for ``Acc`` but
    form no segments for ``Edit`` and ``F1``.

    Reference: yabufarha/ms-tcn ``eval.py`` (``get_labels_start_end_time``, ``levenstein``, ``edit_score``,
    ``f_score``, ``main``). Conventions reproduced:

    * ``Acc`` = ``100 * correct frames / all frames``, pooled over videos (background included);
    * segments = maximal runs of one label, background runs dropped (two runs of one label split by background
      are two segments);
    * ``Edit`` = per video ``(1 - levenshtein(pred segments, gt segments) / max(n_pred, n_gt)) * 100``, then the
      mean over videos;
    * ``F1@τ``: each predicted segment, in temporal order, takes the GT segment of highest ``IoU x same label``
      (first on ties), IoU over the hull ``max(ends) - min(starts)`` (negative when disjoint); true positive when
      that IoU is **>= τ** and the GT segment is not hit yet, otherwise false positive (no second choice);
      unmatched GT segments are false negatives. tp/fp/fn are summed over videos, then
      ``F1 = 2PR / (P + R)`` with NaN -> 0, x 100.

    Deviations (the reference fails there): a video where neither sequence has a segment has Edit 100 (reference:
    0/0 = NaN); predicted segments in a video with no GT segment are all false positives (reference: argmax of an
    empty array raises).
    """
    if isinstance(pred_labels, (str, bytes)) or isinstance(gt_labels, (str, bytes)):
        raise ValueError("pred_labels, gt_labels: expected one label sequence per video")
    if len(pred_labels) != len(gt_labels):
        raise ValueError(f"pred_labels: got {len(pred_labels)} videos but gt_labels has {len(gt_labels)}")
    if len(gt_labels) == 0:
        raise ValueError("gt_labels: no videos")
    if background is None:
        bg = frozenset()
    elif isinstance(background, (str, bytes)) or not isinstance(background, Iterable):
        bg = frozenset([background])
    else:
        bg = frozenset(background)
    overlaps = [float(o) for o in overlaps]
    tp = np.zeros(len(overlaps))
    fp = np.zeros(len(overlaps))
    fn = np.zeros(len(overlaps))
    correct = 0
    total = 0
    edit = 0.0
    for v, (pred, gt) in enumerate(zip(pred_labels, gt_labels)):
        p = _as_labels(pred, f"pred_labels[{v}]")
        g = _as_labels(gt, f"gt_labels[{v}]")
        if len(g) == 0:
            raise ValueError(f"gt_labels[{v}]: empty label sequence")
        if len(p) != len(g):
            raise ValueError(f"pred_labels[{v}]: {len(p)} frames but gt_labels[{v}] has {len(g)}")
        correct += int(np.count_nonzero(g == p))
        total += len(g)
        p_seg = _segments(p, bg)
        g_seg = _segments(g, bg)
        longest = max(len(p_seg[0]), len(g_seg[0]))
        edit += 100.0 if longest == 0 else (1 - _levenshtein(p_seg[0], g_seg[0]) / longest) * 100
        for i, o in enumerate(overlaps):
            a, b, c = _f_counts(*p_seg, *g_seg, o)
            tp[i] += a
            fp[i] += b
            fn[i] += c
    out = {"Acc": 100 * float(correct) / total, "Edit": (1.0 * edit) / len(gt_labels)}
    with np.errstate(divide="ignore", invalid="ignore"):
        for i, o in enumerate(overlaps):
            precision = tp[i] / (tp[i] + fp[i])
            recall = tp[i] / (tp[i] + fn[i])
            f1 = 2.0 * (precision * recall) / (precision + recall)
            out[f"F1@{round(o * 100):d}"] = float(np.nan_to_num(f1) * 100)
    return out
