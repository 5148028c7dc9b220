"""`locvtp ground`: zero-shot grounding of one sentence in one video (a file PyAV reads, or precomputed features).

Procedure (no training; :meth:`locvtp.predictor.LocVTPPredictor.ground`, whose scoring lives in
``locvtp.localize`` with the evaluation's zero-shot grounding, so the command and the reported numbers cannot
drift apart):

1. embed the video's sliding-window clips (the checkpoint's preprocessing) and the query (``locvtp.predictor``);
2. per-clip relevance = ``alpha·z(clip·sentence) + (1−alpha)·z(mean over words of clip·word)`` (z = standardized
   over the video's clips; :func:`~locvtp.localize.clip_query_scores`); ``--words content`` averages the word
   term over the query's content words only (:func:`~locvtp.localize.query_words`: the stop-word rule of
   training's ``objective.stopwords``);
3. every window of consecutive clips [i, j] gets the evaluation's window score
   (:func:`~locvtp.localize.window_scores`; ``--window-score`` picks the kind, default: the
   evaluation's default, a contrast of the clips inside against their surroundings);
4. greedy temporal NMS (``locvtp.metrics.nms``, 2D-TAN's convention) keeps the top-k windows (IoU > ``--nms``
   with a better window drops a window).

Output: one JSON object on stdout: ``video`` (the file, or ``FEATURES:ID``), then the grounding result's one
shape (:meth:`locvtp.localize.GroundingResult.to_json`, the same as ``locvtp serve``'s API): ``query``, ``vid``
(the video's id: the file's stem, or ``--video-id``), ``duration``, ``pred_relevant_windows`` (Moment-DETR's
``[[start, end, score], ...]`` in seconds, best first; ``score`` = the window score) and ``warnings``; with
``--curve``, the per-clip ``clip_scores`` (raw cosine to the sentence), ``clip_relevance`` and ``clip_windows``.
The line is a prediction line ``locvtp score`` reads (it matches ``vid`` and ``query`` to the annotations), so
the output of several ``ground`` runs appended to one file can be scored. ``--plot out.png`` draws the curve with
the windows (matplotlib, Agg backend; written atomically, nothing is left behind on failure).

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
* ``--words content`` on a query with no content word (only stop words): scored over all its words, as
  ``--words all``;
* ``--stride-seconds`` is longer than the clip, so the clips leave parts of the video unseen;
* ``--features`` carry no checkpoint fingerprint, or (with ``--allow-foreign-features``) were extracted with
  another checkpoint than the one that embeds the query (without that flag: an error; the policy of
  ``locvtp.predictor``).

``--features`` of a ``features``-encoder checkpoint that are its raw *input* (no ``embedding=joint`` setting)
are embedded first; joint-space features are used as they are.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Sequence

from locvtp.errors import UsageError
from locvtp.localize import WINDOW_SCORES, WORD_SETS, GroundingResult  # numpy only: `--help` stays fast

PROG = "locvtp ground"


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

    return save_figure(fig, out, dpi=110, command="ground")


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
    p.add_argument("--window-score", default=None, choices=WINDOW_SCORES,
                   help="window scoring kind of locvtp.localize.window_scores (default: the evaluation's)")
    p.add_argument("--words", default="all", choices=WORD_SETS,
                   help="the query's words the word-level term averages over: all, or content (stop words of "
                   "training's objective.stopwords=english left out; a query of stop words only falls back to "
                   "all, with a warning)")
    p.add_argument("--max-seconds", type=positive_float, default=None, help="longest window considered")
    p.add_argument("--curve", action="store_true", help="include per-clip scores in the JSON")
    p.add_argument("--allow-foreign-features", action="store_true",
                   help="ground in --features extracted with another checkpoint (a warning instead of an error)")
    p.add_argument("--device", default="cpu", help="auto | cpu | cuda[:N] | mps")
    return p


def _check_plot_path(path: str) -> Path:
    """``--plot`` checked before any work: not a directory, an existing parent directory, a known image type,
    and not a file locvtp did not write (:func:`locvtp.files.check_file_output`: never replaced).

    Why exit 2 (a usage error): the argument names the wrong kind of thing, like a bad value argparse refuses,
    and nothing has been computed yet. A missing directory is not created: a typo must not leave new directories.
    """
    from locvtp.files import check_file_output
    from locvtp.viz import check_figure_path

    out = Path(path)
    try:
        check_figure_path(out)
    except UsageError as exc:
        raise UsageError(f"--plot {exc}") from None
    return check_file_output(out, "ground", "--plot")


def _device(spec: str) -> str:
    from locvtp.device import resolve_device

    return resolve_device(spec)


def _looks_like_video(text: str) -> bool:
    from locvtp.data.videoids import VIDEO_EXTENSIONS

    return Path(text).suffix.lower() in VIDEO_EXTENSIONS or Path(text).is_file()


def _check_order(p: Any, args: Any) -> None:
    """Name the argument that looks misplaced: a forgotten QUERY (its VIDEO then lands in QUERY) or VIDEO and
    QUERY swapped. Why here: argparse sees only strings, and would say "give VIDEO" or "no such file: the red
    circle" about what is really an order mistake."""
    if args.features is not None:
        return
    if args.video is None and _looks_like_video(args.query):
        p.error(f"argument QUERY is missing: {args.query} is the VIDEO; give the sentence to ground after it "
                f"(locvtp ground --checkpoint CKPT {args.query} \"a sentence\")")
    if args.video is not None and not Path(args.video).exists() and _looks_like_video(args.query):
        p.error(f"VIDEO {args.video!r} is not a file and QUERY {args.query!r} looks like a video: the order is VIDEO "
                f"then QUERY (locvtp ground --checkpoint CKPT {args.query} {args.video!r})")


def parse_args(argv: list[str] | None) -> Any:
    """The arguments, options anywhere (``VIDEO --top-k 1 QUERY`` too), checked together before any work."""
    from locvtp.data.textinput import strip_bom

    p = build_parser()
    args, extra = p.parse_known_intermixed_args(argv)
    args.query = strip_bom(args.query) if args.query is not None else None  # pasted text may carry a BOM
    if extra and not any(e.startswith("-") for e in extra):  # `ground ... VIDEO the red circle`: unquoted words
        p.error(f"unrecognized arguments: {' '.join(extra)}: a QUERY of several words goes in quotes "
                f"(\"{' '.join([args.query, *extra])}\")")
    if extra:
        p.error(f"unrecognized arguments: {' '.join(extra)}")
    _check_order(p, args)
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
    return args


def _save_plot(res: GroundingResult, plot: Path, out: dict) -> Optional[BaseException]:
    """Draw ``--plot``; an OS failure (read-only directory, no space) is returned, not raised: the result was
    computed and is printed first, then the command fails with one line naming ``--plot``."""
    from locvtp.errors import OutputError, writing

    try:
        with writing(plot, "--plot", note="the grounding result was printed on stdout without the plot"):
            out["plot"] = str(plot_grounding(res, plot))
    except OutputError as exc:
        return exc
    return None


def main(argv: list[str] | None = None) -> int:
    """Errors are raised (``locvtp.errors``) and reported by ``locvtp.cli`` as one line."""
    from locvtp.cliargs import warn
    from locvtp.featurestore.reader import MissingVideoError
    from locvtp.inference import NO_WORDS

    args = parse_args(argv)
    plot = _check_plot_path(args.plot) if args.plot is not None else None
    from locvtp.featurestore.provenance import ForeignFeaturesError
    from locvtp.predictor import LocVTPPredictor

    # the device is checked before loading: no CUDA is not a corrupt checkpoint
    pred = LocVTPPredictor.from_checkpoint(args.checkpoint, device=_device(args.device))
    pred.require_tokenizer(PROG)
    if any(NO_WORDS in w for w in pred.text_warnings(args.query)):
        raise UsageError(f"argument query: {args.query!r} has no words to ground")
    if args.features is None and not pred.takes_pixels:
        raise UsageError(f"--checkpoint {args.checkpoint}: this model reads pre-extracted features, not video "
                         "pixels; give --features FILE --video-id ID")
    source = f"{args.features}:{args.video_id}" if args.features is not None else str(args.video)
    try:
        if args.features is not None:
            video = pred.encode_stored(args.features, args.video_id,
                                       allow_foreign_features=args.allow_foreign_features)
        else:
            video = pred.encode_file(args.video, clip_seconds=args.clip_seconds, stride_seconds=args.stride_seconds)
    except MissingVideoError as exc:
        raise UsageError(f"--video-id {args.video_id}: not in --features {args.features} ({exc.args[0]})") from None
    except ForeignFeaturesError as exc:
        raise exc.with_flag("--allow-foreign-features") from None
    res = pred.ground(video, args.query, top_k=args.top_k, alpha=args.alpha, nms=args.nms,
                      max_seconds=args.max_seconds, window_score=args.window_score, words=args.words)
    out = {"video": source, **res.to_json(curve=args.curve)}
    plot_failed = _save_plot(res, plot, out) if plot is not None else None
    for w in res.warnings:
        warn(PROG, w)
    print(json.dumps(out), flush=True)
    if plot_failed is not None:
        raise plot_failed
    return 0

