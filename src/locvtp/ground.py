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
sentence) and ``clip_windows``. ``--plot out.png`` draws the curve with the windows (matplotlib, Agg backend).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np


@dataclass
class GroundingResult:
    query: str
    duration: float
    windows: np.ndarray  # [K, 2] seconds, best first
    scores: np.ndarray  # [K]
    clip_windows: np.ndarray  # [N, 2]
    clip_relevance: np.ndarray  # [N] combined standardized relevance (what windows are scored on)
    clip_cosine: np.ndarray  # [N] raw clip·sentence cosine

    def to_json(self, curve: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {
            "query": self.query,
            "duration": round(float(self.duration), 4),
            "windows": [{"start": round(float(s), 4), "end": round(float(e), 4), "score": float(sc)}
                        for (s, e), sc in zip(self.windows, self.scores)],
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
    return GroundingResult(query, dur, ranked[keep], vals[keep], clip_windows, relevance,
                           clips @ np.asarray(sentence, np.float32))


def plot_grounding(result: GroundingResult, out: str | Path, title: Optional[str] = None,
                   truth: Optional[Sequence[float]] = None) -> Path:
    """The per-clip curve with the top-k windows (rank 1 darkest); written with the Agg backend."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    out = Path(out)
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
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp{out.suffix or '.png'}")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, out)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="locvtp ground", description="Zero-shot grounding of a sentence in one video: "
                                "top-k windows (seconds) with scores as JSON on stdout.")
    p.add_argument("video", nargs="?", default=None, help="video file (omit with --features)")
    p.add_argument("query", help="the sentence to ground")
    p.add_argument("--checkpoint", required=True, help="checkpoint or run directory")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--plot", default=None, help="write the score curve with the windows to this PNG")
    p.add_argument("--features", default=None, help="precomputed features (`locvtp extract` output) instead of "
                   "decoding VIDEO")
    p.add_argument("--video-id", default=None, help="video id inside --features")
    p.add_argument("--clip-seconds", type=float, default=None)
    p.add_argument("--stride-seconds", type=float, default=None)
    p.add_argument("--alpha", type=float, default=0.5, help="sentence vs word weight of the clip relevance")
    p.add_argument("--nms", type=float, default=0.5, help="IoU above which a lower-ranked window is dropped")
    p.add_argument("--window-score", default=None,
                   help="window scoring kind of locvtp.downstream.grounding.window_scores (default: the evaluation's)")
    p.add_argument("--max-seconds", type=float, default=None, help="longest window considered")
    p.add_argument("--curve", action="store_true", help="include per-clip scores in the JSON")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    if args.features is None and args.video is None:
        p.error("give VIDEO, or --features FILE --video-id ID")
    if args.features is not None and args.video_id is None:
        if args.video is None:
            p.error("--features needs --video-id (or a VIDEO argument whose stem is the id)")
        args.video_id = Path(args.video).stem
    if args.top_k < 1:
        p.error("--top-k must be >= 1")
    try:
        from locvtp.checkpoint import load_checkpoint, resolve_checkpoint
        from locvtp.inference import embed_texts, embed_video_file

        ckpt = load_checkpoint(resolve_checkpoint(args.checkpoint), map_location=args.device)
        model = ckpt.model
        dcfg = ckpt.cfg.data if "data" in ckpt.cfg else None
        clip_s = args.clip_seconds or (float(dcfg.clip_seconds) if dcfg is not None else 1.0)
        max_words = int(dcfg.max_words) if dcfg is not None else 24
        if args.features is not None:
            from locvtp.features import feature_info, read_features

            info = feature_info(args.features)
            if info.get("embedding") == "backbone":
                raise ValueError(f"{args.features}: holds backbone features (extract --backbone); grounding needs "
                                 "the joint-space embeddings")
            sha = info.get("checkpoint_sha256")
            if sha and sha != ckpt.sha256:
                print(f"locvtp ground: warning: {args.features} was extracted with checkpoint {sha[:12]}…, the "
                      f"query is embedded with {ckpt.sha256[:12]}…", file=sys.stderr)
            rec = read_features(args.features, args.video_id)
            clips, windows, duration, source = rec.features, rec.windows, rec.duration, f"{args.features}:{args.video_id}"
        else:
            stride = args.stride_seconds or clip_s
            emb = embed_video_file(model, args.video, clip_seconds=clip_s, stride_seconds=stride,
                                   frames_per_clip=int(dcfg.frames_per_clip) if dcfg is not None else 4,
                                   frame_size=int(dcfg.frame_size) if dcfg is not None else 32, device=args.device)
            clips, windows, duration, source = emb.clips, emb.windows, emb.duration, str(args.video)
        text = embed_texts(model, ckpt.tokenizer, [args.query], max_words=max_words, device=args.device)
        step = float(np.median(np.diff(windows[:, 0]))) if len(windows) > 1 else clip_s
        max_clips = None if args.max_seconds is None else max(1, int(round(args.max_seconds / max(step, 1e-9))))
        res = ground_embeddings(clips, windows, text.sentence[0], text.words[0], query=args.query,
                                duration=duration, top_k=args.top_k, alpha=args.alpha, nms_threshold=args.nms,
                                max_clips=max_clips, window_score=args.window_score)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        print(f"locvtp ground: error: {exc}", file=sys.stderr)
        return 1
    out = {"video": source, **res.to_json(curve=args.curve)}
    if args.plot:
        out["plot"] = str(plot_grounding(res, args.plot))
    print(json.dumps(out))
    return 0


__all__ = ["GroundingResult", "ground_embeddings", "main", "plot_grounding"]
