"""`locvtp ground`: zero-shot grounding of one sentence in one video (a file PyAV reads, or precomputed features).

Procedure (no training; the same scoring as the evaluation's zero-shot grounding, reused from
``locvtp.downstream.grounding`` so the command and the reported numbers cannot drift apart):

1. embed the video's sliding-window clips and the query (``locvtp.inference``);
2. per-clip relevance = ``alpha·z(clip·sentence) + (1−alpha)·z(mean over words of clip·word)`` (z = standardized
   over the video's clips; :func:`~locvtp.downstream.grounding.clip_query_scores`);
3. every window of consecutive clips [i, j] gets the evaluation's window score
   (:func:`~locvtp.downstream.grounding.window_scores`; ``--window-score`` picks the kind, default: the
   evaluation's default, a contrast of the clips inside against their surroundings);
4. greedy temporal NMS (``locvtp.metrics.nms``, 2D-TAN's convention) keeps the top-k windows (IoU > ``--nms``
   with a better window drops a window).

Output: one JSON object on stdout: ``video``, ``query``, ``duration``, ``windows`` (``start``, ``end`` seconds,
``score`` = the window score, best first) and, with ``--curve``, the per-clip ``clip_scores`` (raw cosine to the
sentence) and ``clip_windows``. ``--plot out.png`` draws the curve with the windows (matplotlib, Agg backend;
written atomically, nothing is left behind on failure).

Warnings. A result that cannot mean what it seems still comes out (the caller may want it), but with a
``warnings`` list in the JSON and one ``locvtp ground: warning: ...`` line each on stderr:

* the query is cut to the model's token budget, or none of its words is known to the tokenizer
  (:func:`locvtp.inference.text_query_warnings`); a query with no words at all is an error;
* the video gives a single clip (a video shorter than one clip, e.g. a 1-frame file, or ``--clip-seconds``
  longer than the video): the only window is the whole video, and its score (0: nothing outside it to compare
  with) says nothing about the query;
* every clip scores the same for the query (e.g. a still video): any window ranking is arbitrary;
* fewer windows than ``--top-k`` survive (too few clips for that many distinct windows at that ``--nms``);
* ``--max-seconds`` is shorter than one clip step, so every window is a single clip;
* ``--stride-seconds`` is longer than the clip, so the clips leave parts of the video unseen;
* ``--features`` were extracted with another checkpoint than the one that embeds the query.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from locvtp.errors import LocVTPError, UsageError

PROG = "locvtp ground"
# Window scoring kinds of locvtp.downstream.grounding.window_scores (kept here so `--help` need not import it;
# a test checks that the two agree).
WINDOW_SCORE_KINDS = ("tstat", "contrast", "oic", "oic_t")


class GroundError(LocVTPError, ValueError):
    """An input of `locvtp ground` cannot be used (the message names the file or argument)."""


@dataclass
class GroundingResult:
    query: str
    duration: float
    windows: np.ndarray  # [K, 2] seconds, best first
    scores: np.ndarray  # [K]
    clip_windows: np.ndarray  # [N, 2]
    clip_relevance: np.ndarray  # [N] combined standardized relevance (what windows are scored on)
    clip_cosine: np.ndarray  # [N] raw clip·sentence cosine
    warnings: list[str] = field(default_factory=list)  # why the windows may not mean what they seem

    def to_json(self, curve: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {
            "query": self.query,
            "duration": round(float(self.duration), 4),
            "windows": [{"start": round(float(s), 4), "end": round(float(e), 4), "score": float(sc)}
                        for (s, e), sc in zip(self.windows, self.scores)],
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
) -> GroundingResult:
    """Top-k windows of one query in one video from embeddings (see the module docstring for the procedure).

    ``clips [N, D]`` and ``clip_windows [N, 2]`` (seconds) of the video, ``sentence [D]``, ``words [L, D]``
    (valid words; None = sentence only). ``window_score``: a kind of
    ``locvtp.downstream.grounding.window_scores`` (None: its default).
    """
    from locvtp.downstream.grounding import clip_query_scores, rank_windows
    from locvtp.metrics import nms

    clips = np.asarray(clips, dtype=np.float32)
    clip_windows = np.asarray(clip_windows, dtype=np.float64).reshape(-1, 2)
    if clips.ndim != 2 or clips.shape[0] == 0:
        raise ValueError(f"need clip embeddings [N>=1, D], got shape {clips.shape}")
    if clip_windows.shape[0] != clips.shape[0]:
        raise ValueError(f"{clip_windows.shape[0]} clip windows for {clips.shape[0]} clips")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    w = None if words is None or np.asarray(words).size == 0 else np.asarray(words, np.float32)
    relevance = clip_query_scores(clips, np.asarray(sentence, np.float32), w, alpha=alpha)
    kw = {} if window_score is None else {"kind": window_score}
    ranked, vals = rank_windows(relevance, clip_windows, min_len=min_clips, max_len=max_clips, **kw)
    keep = nms(ranked, None, nms_threshold, top_k=top_k) if len(ranked) else np.zeros(0, dtype=np.int64)
    dur = float(duration) if duration is not None else float(clip_windows[-1, 1])
    res = GroundingResult(query, dur, ranked[keep], vals[keep], clip_windows, relevance,
                          clips @ np.asarray(sentence, np.float32))
    res.warnings = _clip_warnings(res, top_k, nms_threshold)
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
    if np.ptp(res.clip_relevance) < 1e-6:
        out.append(f"all {n} clips score the same for this query (a still or blank video?): the window ranking "
                   "is arbitrary")
    if len(res.windows) < top_k:
        out.append(f"only {len(res.windows)} window(s) of the {top_k} asked: {n} clips do not give more windows "
                   f"that overlap less than IoU {nms_threshold:g}")
    return out


def plot_grounding(result: GroundingResult, out: str | Path, title: Optional[str] = None,
                   truth: Optional[Sequence[float]] = None) -> Path:
    """The per-clip curve with the top-k windows (rank 1 darkest); written with the Agg backend."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from locvtp.viz import check_figure_path

    out = Path(out)
    check_figure_path(out)  # before drawing: a directory or an unknown extension is refused up front
    centers = result.clip_windows.mean(axis=1)
    k = len(result.windows)
    fig, (ax, lanes) = plt.subplots(2, 1, figsize=(8, 2.6 + 0.22 * (k + 1)), sharex=True,
                                    gridspec_kw={"height_ratios": [3, 0.5 + 0.3 * (k + 1)]})
    ax.plot(centers, result.clip_relevance, marker=".", color="tab:blue", label="clip relevance (z)")
    ax2 = ax.twinx()
    ax2.plot(centers, result.clip_cosine, color="tab:gray", alpha=0.6, lw=1)
    ax2.set_ylabel("cosine to sentence", color="tab:gray", fontsize=8)
    if k:
        ax.axvspan(result.windows[0, 0], result.windows[0, 1], color="tab:red", alpha=0.15, label="top-1 window")
    ax.set_ylabel("relevance")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=7)
    # One lane per ranked window (rank 1 on top), ground truth below them when given.
    for r, ((s, e), sc) in enumerate(zip(result.windows, result.scores)):
        lanes.broken_barh([(s, e - s)], (k - r - 0.4, 0.8), color="tab:red", alpha=0.9 - 0.5 * r / max(k, 1))
        lanes.text(e, k - r, f" #{r + 1} {sc:.2f}", va="center", fontsize=7)
    ticks, labels = list(range(1, k + 1)), [f"#{k - i}" for i in range(k)]  # rank r sits at y = k - r
    if truth is not None:
        lanes.broken_barh([(truth[0], truth[1] - truth[0])], (-0.4, 0.8), color="tab:green")
        ticks, labels = [0] + ticks, ["truth"] + labels
    lanes.set_yticks(ticks)
    lanes.set_yticklabels(labels, fontsize=7)
    lanes.set_ylim(min(ticks) - 0.7, k + 0.7)
    lanes.set_xlim(0, max(result.duration, float(result.clip_windows[-1, 1])))
    lanes.set_xlabel("time (s)")
    ax.set_title(title or f"query: {result.query!r}", fontsize=9)
    fig.tight_layout()
    from locvtp.viz import save_figure

    return save_figure(fig, out, dpi=110)


def build_parser():
    from locvtp.cliargs import ArgumentParser, fraction, positive_float, positive_int

    p = ArgumentParser(prog=PROG, description="Zero-shot grounding of a sentence in one video: top-k windows "
                       "(seconds) with scores as JSON on stdout.")
    p.add_argument("video", nargs="?", default=None, help="video file (omit with --features)")
    p.add_argument("query", help="the sentence to ground")
    p.add_argument("--checkpoint", required=True, help="checkpoint or run directory")
    p.add_argument("--top-k", type=positive_int, default=5, help="windows returned (>= 1)")
    p.add_argument("--plot", default=None, help="write the score curve with the windows to this PNG (its "
                   "directory must exist)")
    p.add_argument("--features", default=None, help="precomputed features (`locvtp extract` output) instead of "
                   "decoding VIDEO")
    p.add_argument("--video-id", default=None, help="video id inside --features")
    p.add_argument("--clip-seconds", type=positive_float, default=None,
                   help="clip length (default: the checkpoint's data.clip_seconds)")
    p.add_argument("--stride-seconds", type=positive_float, default=None, help="clip stride (default: the clip "
                   "length)")
    p.add_argument("--alpha", type=fraction, default=0.5, help="sentence vs word weight of the clip relevance "
                   "(0..1)")
    p.add_argument("--nms", type=fraction, default=0.5, help="IoU (0..1) above which a lower-ranked window is "
                   "dropped")
    p.add_argument("--window-score", default=None, choices=WINDOW_SCORE_KINDS,
                   help="window scoring kind of locvtp.downstream.grounding.window_scores (default: the evaluation's)")
    p.add_argument("--max-seconds", type=positive_float, default=None, help="longest window considered")
    p.add_argument("--curve", action="store_true", help="include per-clip scores in the JSON")
    p.add_argument("--device", default="cpu", help="auto | cpu | cuda[:N] | mps")
    return p


def _check_plot_path(path: str) -> Path:
    """``--plot`` checked before any work: not a directory, an existing parent directory, a known image type.

    Why exit 2 (a usage error): the argument names the wrong kind of thing, like a bad value argparse refuses,
    and nothing has been computed yet. A missing directory is not created: a typo must not leave new directories.
    """
    from locvtp.viz import check_figure_path

    out = Path(path)
    try:
        check_figure_path(out)
    except UsageError as exc:
        raise UsageError(f"--plot {exc}") from None
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        what = "is not a directory" if parent.exists() else "does not exist"
        raise UsageError(f"--plot {out}: directory {parent} {what}")
    return out


def _read_feature_record(args: Any, ckpt: Any, warnings: list[str]) -> Any:
    """The ``--video-id`` record of ``--features``, checked against the checkpoint (kind, width, origin)."""
    from locvtp.features import feature_info, read_features

    info = feature_info(args.features)
    if info.get("embedding") == "backbone":
        raise UsageError(f"--features {args.features}: holds backbone features (extract --backbone); grounding "
                         "needs the joint-space embeddings (extract without --backbone)")
    sha = info.get("checkpoint_sha256")
    if sha and ckpt.sha256 and sha != ckpt.sha256:
        warnings.append(f"{args.features} was extracted with checkpoint {sha[:12]}…, the query is embedded with "
                        f"{ckpt.sha256[:12]}…: the scores compare two different models")
    try:
        rec = read_features(args.features, args.video_id)  # NaN/inf: NonFiniteFeaturesError naming file + video
    except KeyError as exc:
        raise UsageError(f"--video-id {args.video_id}: not in --features {args.features} ({exc.args[0]})") from None
    dim = int(ckpt.model.dim)
    if rec.dim != dim:
        raise GroundError(f"{args.features}: video {args.video_id!r} has {rec.dim}-dim features but checkpoint "
                          f"{ckpt.path} embeds queries in {dim} dims (were they extracted with another model, or "
                          "with --backbone?)")
    if rec.num_clips == 0:
        raise GroundError(f"{args.features}: video {args.video_id!r} has no clips")
    return rec


def main(argv: list[str] | None = None) -> int:
    """Errors are raised (``locvtp.errors``) and reported by ``locvtp.cli`` as one line."""
    from locvtp.cliargs import warn

    p = build_parser()
    args = p.parse_args(argv)
    if args.features is None and args.video is None:
        p.error("give VIDEO, or --features FILE --video-id ID")
    if args.features is not None and args.video_id is None:
        if args.video is None:
            p.error("--features needs --video-id (or a VIDEO argument whose stem is the id)")
        args.video_id = Path(args.video).stem
    elif args.features is not None and args.video is not None:
        p.error(f"give VIDEO ({args.video}) or --features with --video-id ({args.video_id}), not both")
    if args.features is not None:
        given = [f for f, v in (("--clip-seconds", args.clip_seconds), ("--stride-seconds", args.stride_seconds))
                 if v is not None]
        if given:  # silently ignoring them would answer another question than the one asked
            p.error(f"{' and '.join(given)} cannot apply to --features: the clips were cut at extraction "
                    "(re-extract with other clip settings, or ground the video file)")
    plot = _check_plot_path(args.plot) if args.plot is not None else None
    from locvtp.device import resolve_device

    device = resolve_device(args.device)  # before loading: no CUDA is not a corrupt checkpoint
    from locvtp.checkpoint import load_checkpoint, resolve_checkpoint
    from locvtp.inference import NO_WORDS, embed_texts, embed_video_file, require_tokenizer, text_query_warnings

    ckpt = load_checkpoint(resolve_checkpoint(args.checkpoint), map_location=device)
    tokenizer = require_tokenizer(ckpt, PROG)
    model = ckpt.model
    dcfg = ckpt.cfg.data if "data" in ckpt.cfg else None
    clip_s = args.clip_seconds if args.clip_seconds is not None else (float(dcfg.clip_seconds) if dcfg is not None
                                                                      else 1.0)
    max_words = int(dcfg.max_words) if dcfg is not None else 24
    warnings = text_query_warnings(tokenizer, args.query, max_words)
    if any(NO_WORDS in w for w in warnings):
        raise UsageError(f"argument query: {args.query!r} has no words to ground")
    if args.features is not None:
        rec = _read_feature_record(args, ckpt, warnings)
        clips, windows, duration = rec.features, rec.windows, rec.duration
        source = f"{args.features}:{args.video_id}"
    else:
        if not getattr(model, "takes_pixels", True):
            raise UsageError(f"--checkpoint {args.checkpoint}: this model reads pre-extracted features, not video "
                             "pixels; give --features FILE --video-id ID")
        stride = args.stride_seconds if args.stride_seconds is not None else clip_s
        if stride > clip_s:
            warnings.append(f"--stride-seconds {stride:g} is longer than the clip ({clip_s:g} s): only "
                            f"{clip_s / stride:.0%} of the video is looked at, windows span unseen gaps")
        emb = embed_video_file(model, args.video, clip_seconds=clip_s, stride_seconds=stride,
                               frames_per_clip=int(dcfg.frames_per_clip) if dcfg is not None else 4,
                               frame_size=int(dcfg.frame_size) if dcfg is not None else 32, device=device)
        clips, windows, duration, source = emb.clips, emb.windows, emb.duration, str(args.video)
    text = embed_texts(model, tokenizer, [args.query], max_words=max_words, device=device)
    step = float(np.median(np.diff(windows[:, 0]))) if len(windows) > 1 else clip_s
    max_clips = None
    if args.max_seconds is not None:
        max_clips = max(1, int(round(args.max_seconds / max(step, 1e-9))))
        if args.max_seconds < step and len(windows) > 1:
            warnings.append(f"--max-seconds {args.max_seconds:g} is shorter than one clip step ({step:g} s): every "
                            "window is a single clip")
    res = ground_embeddings(clips, windows, text.sentence[0], text.words[0], query=args.query,
                            duration=duration, top_k=args.top_k, alpha=args.alpha, nms_threshold=args.nms,
                            max_clips=max_clips, window_score=args.window_score)
    res.warnings = warnings + res.warnings
    out = {"video": source, **res.to_json(curve=args.curve)}
    if plot is not None:
        out["plot"] = str(plot_grounding(res, plot))
    for w in res.warnings:
        warn(PROG, w)
    print(json.dumps(out))
    return 0


__all__ = ["GroundError", "GroundingResult", "build_parser", "ground_embeddings", "main", "plot_grounding"]
