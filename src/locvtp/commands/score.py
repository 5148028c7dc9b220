"""`locvtp score`: a predictions file in, the metrics out -- as Moment-DETR's ``standalone_eval/eval.py``.

::

    locvtp score grounding --predictions runs/eval/grounding_predictions.jsonl \
        --annotations world/grounding/activitynet/val_1.json [--name grounding] [--out metrics.json]
    locvtp score qvhighlights --predictions runs/eval/qvhighlights_submission.jsonl \
        --annotations highlight_val_release.jsonl [--decimals 2] [--out metrics.json]

    locvtp score retrieval --predictions runs/eval/retrieval_similarity.npz \
        --annotations world/retrieval/MSRVTT_JSFUSION_test.csv [--name retrieval_ft]
    locvtp score steps --predictions runs/eval/steps_predictions.jsonl --annotations world/crosstask [--split val]
    locvtp score segmentation --predictions runs/eval/segmentation_predictions.jsonl \
        --annotations world/coin/COIN.json [--background background]

``retrieval`` / ``steps`` / ``segmentation``: the files ``locvtp evaluate --out`` writes for those tasks (formats:
:func:`locvtp.scoring.score_retrieval`, :func:`~locvtp.scoring.score_steps`,
:func:`~locvtp.scoring.score_segmentation`, ``docs/evaluation.md``), scored to ``evaluate``'s figures.
``qvhighlights``: a Moment-DETR submission (``pred_relevant_windows`` and / or ``pred_saliency_scores``, keyed by
the annotation's own ``qid``) scored as ``standalone_eval/eval.py`` scores it, under its key names
(``MR-full-mAP``, ``MR-full-R1@0.5``, ..., ``HL-min-VeryGood-Hit1``); see :mod:`locvtp.scoring`. The rest of
this docstring is about ``grounding``.

Why a separate command: the figures of ``locvtp evaluate`` can be recomputed from what it wrote, without the
model, the videos or torch, and predictions made by any other system can be scored by exactly the same code
(:mod:`locvtp.metrics`, which reproduces the field's reference scripts; conventions in ``docs/metrics.md``).

Predictions (JSON lines, one object per query; what ``locvtp evaluate --out DIR`` writes as
``DIR/grounding_predictions.jsonl`` and, with the 2D-TAN head, ``DIR/head_grounding_predictions.jsonl``)::

    {"qid": 3, "vid": "v_abc", "query": "a person opens a door",
     "pred_relevant_windows": [[12.0, 17.5, 0.91], [40.0, 44.0, 0.55], ...]}

``qid`` is the query's position among the annotation file's queries as ``locvtp.data.formats`` reads them, except
for QVHighlights, whose lines are matched by the annotation's own ``qid`` field, whatever their order (a qid
annotated twice, predicted twice or not annotated with a window is an error); ``vid`` (and ``query``, when
given) must match that annotation. A line
without ``qid`` -- what ``locvtp ground`` prints: ``{"video", "query", "vid", "duration",
"pred_relevant_windows", "warnings"}``, the same shape -- is the first not yet predicted annotation query with
that ``vid`` and ``query`` (a ``vid`` is the video file's stem). Other fields are ignored, and
``pred_relevant_windows`` are ``[start, end]`` or ``[start, end, score]`` in seconds, best first. Annotations:
ActivityNet Captions JSON (``.json``), Charades-STA (``.txt``; durations from the ``Charades_v1_<split>.csv``
next to it when present, or ``--durations``) or QVHighlights JSONL (``.jsonl``); the first ground-truth window
of a query is the one scored (2D-TAN's protocol, as ``locvtp evaluate``).

Metrics (``locvtp.metrics.grounding_recall``): ``<name>_R{1,5}@{0.1,0.3,0.5,0.7}`` and ``<name>_mIoU``, the keys
``locvtp evaluate`` reports (``--name head_grounding`` for the head's file). Only the queries with a prediction
line are scored (``evaluate`` leaves out a query whose video could not be embedded, and says so); how many
annotation queries have none is printed, and ``--require-all`` makes that an error.

A bad line is one error naming the file and the line (``locvtp score: error: preds.jsonl:7: ...``), exit 1.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from locvtp import cliargs
from locvtp.errors import UsageError
from locvtp.scoring import ScoreError, json_lines, parse_window, unpredicted

TASKS = ("grounding", "qvhighlights", "retrieval", "steps", "segmentation")
# The options only some tasks read (a flag given to another task is a usage error: it would change nothing).
TASK_OPTIONS = {"--name": ("grounding", "retrieval"), "--durations": ("grounding",), "--split": ("steps",),
                "--background": ("segmentation",)}


@dataclass(frozen=True)
class GroundTruth:
    """One annotated query: its video, sentence and the ground-truth window that is scored."""

    vid: str
    query: str
    start: float
    end: float
    qid: str = ""  # QVHighlights: the annotation's own qid, which its prediction lines are keyed by


def read_grounding_annotations(path: str | Path, durations: Optional[str | Path] = None) -> list[GroundTruth]:
    """The queries of an ActivityNet Captions / Charades-STA / QVHighlights file, in the order and with the
    rule ``locvtp evaluate`` uses (``locvtp.data.formats``, lenient; queries without a window dropped)."""
    from locvtp.data import formats

    p = Path(path)
    if not p.is_file():
        raise UsageError(f"--annotations {p}: no such file")
    ext = p.suffix.lower()
    if ext == ".json":
        res = formats.read_activitynet_captions(p)
    elif ext == ".jsonl":
        res = formats.read_qvhighlights(p)
    elif ext == ".txt":
        dur = Path(durations) if durations else p.with_name(p.name.replace("charades_sta_", "Charades_v1_")
                                                              ).with_suffix(".csv")
        res = formats.read_charades_sta(p, dur if dur.is_file() else None)
    else:
        raise UsageError(f"--annotations {p}: unknown annotation format {ext or '(no extension)'!r}; expected "
                         "ActivityNet Captions .json, Charades-STA .txt or QVHighlights .jsonl")
    out = [GroundTruth(r.video_id, r.query, float(r.windows[0][0]), float(r.windows[0][1]),
                       r.qid if ext == ".jsonl" else "") for r in res.records if r.windows]
    if ext == ".jsonl":
        seen: set[str] = set()
        for gt in out:
            if gt.qid in seen:
                raise ScoreError(f"{p}: qid {gt.qid} is annotated twice (prediction lines are matched by qid)")
            seen.add(gt.qid)
    return out


def _window(item: Any, where: str) -> tuple[float, float]:
    return parse_window(item, where)[:2]


def _by_text(truth: list[GroundTruth]) -> dict[tuple[str, str], list[int]]:
    """The annotation's qids of each (video, sentence), in order: how a line without ``qid`` is placed."""
    out: dict[tuple[str, str], list[int]] = {}
    for k, gt in enumerate(truth):
        out.setdefault((gt.vid, gt.query), []).append(k)
    return out


def _line_qid(rec: dict, truth: list[GroundTruth], by_text: dict[tuple[str, str], list[int]], taken: dict,
              where: str, by_qid: Optional[dict[str, int]] = None) -> int:
    """The index in ``truth`` of the query a prediction line is for: its ``qid`` (the annotation's own qid when
    ``by_qid`` maps them, QVHighlights; else the position; checked against ``vid`` / ``query`` when given), or
    -- a ``locvtp ground`` line has none -- the first not yet predicted annotation query with its ``vid`` and
    ``query``."""
    if "qid" not in rec:
        if "vid" not in rec or "query" not in rec:
            raise ScoreError(f"{where}: no 'qid' field, and no 'vid' and 'query' to find the query by")
        ks = by_text.get((str(rec["vid"]), str(rec["query"])))
        if not ks:
            raise ScoreError(f"{where}: no annotated query {str(rec['query'])[:40]!r} in video {rec['vid']!r} "
                             "(predictions made for another annotation file?)")
        free = [k for k in ks if k not in taken]
        if not free:
            raise ScoreError(f"{where}: query {str(rec['query'])[:40]!r} of video {rec['vid']!r} is predicted "
                             f"more often than it is annotated ({len(ks)})")
        return free[0]
    qid = rec["qid"]
    if by_qid is not None:  # QVHighlights: the annotation's own qid, wherever the line is
        if isinstance(qid, (bool, list, dict)) or qid is None or str(qid) not in by_qid:
            raise ScoreError(f"{where}: qid {qid!r} is not an annotated query with a ground-truth window "
                             "(predictions made for another annotation file?)")
        qid = by_qid[str(qid)]
    elif isinstance(qid, bool) or not isinstance(qid, int) or not 0 <= qid < len(truth):
        raise ScoreError(f"{where}: qid {qid!r} is not one of the annotation's {len(truth)} queries "
                         f"(0..{len(truth) - 1})")
    gt = truth[qid]
    if "vid" in rec and str(rec["vid"]) != gt.vid:
        raise ScoreError(f"{where}: qid {rec['qid']} is video {gt.vid!r} in the annotations, the line says "
                         f"{rec['vid']!r} (predictions made for another annotation file?)")
    if "query" in rec and str(rec["query"]) != gt.query:
        raise ScoreError(f"{where}: qid {rec['qid']} is the query {gt.query[:40]!r} in the annotations, the line "
                         f"says {str(rec['query'])[:40]!r}")
    if qid in taken:
        raise ScoreError(f"{where}: qid {rec['qid']} is predicted twice")
    return qid


def read_grounding_predictions(path: str | Path, truth: list[GroundTruth]) -> dict[int, np.ndarray]:
    """``{qid: windows [n, 2] best first}`` from a predictions file, each line checked against ``truth``."""
    out: dict[int, np.ndarray] = {}
    by_text = _by_text(truth)
    by_qid = {gt.qid: k for k, gt in enumerate(truth)} if any(gt.qid for gt in truth) else None
    for where, rec in json_lines(path):
        if "pred_relevant_windows" not in rec:
            missing = " or ".join(repr(k) for k in ("qid", "pred_relevant_windows") if k not in rec)
            raise ScoreError(f"{where}: no {missing} field")
        qid = _line_qid(rec, truth, by_text, out, where, by_qid)
        windows = rec["pred_relevant_windows"]
        if not isinstance(windows, list):
            raise ScoreError(f"{where}: pred_relevant_windows must be a list of windows")
        arr = [_window(w, f"{where}: window {i}") for i, w in enumerate(windows)]
        out[qid] = np.asarray(arr, np.float64).reshape(-1, 2)
    return out


def score_grounding(predictions: str | Path, annotations: str | Path, name: str = "grounding",
                    durations: Optional[str | Path] = None, require_all: bool = False) -> dict[str, Any]:
    """Metrics of a grounding predictions file: ``{"metrics": {<name>_R1@0.5: ...}, "queries": scored,
    "annotated": n, "unpredicted": n - scored}`` (see the module docstring)."""
    from locvtp.metrics import grounding_recall

    truth = read_grounding_annotations(annotations, durations)
    if not truth:
        raise ScoreError(f"{annotations}: no query with a ground-truth window")
    preds = read_grounding_predictions(predictions, truth)
    missing = unpredicted(preds, truth, predictions, require_all, "annotated queries",
                          lambda k: f"qid {truth[k].qid or k}, video {truth[k].vid!r}")
    qids = sorted(preds)  # evaluate's order: the annotation's
    gt = np.array([[truth[k].start, truth[k].end] for k in qids], np.float64)
    metrics = {f"{name}_{k}": float(v) for k, v in grounding_recall([preds[k] for k in qids], gt).items()}
    return {"metrics": metrics, "queries": len(qids), "annotated": len(truth), "unpredicted": missing}


def build_parser() -> Any:
    p = cliargs.ArgumentParser(prog="locvtp score", description="Metrics of a predictions file against its "
                               "annotations (no model needed); see docs/evaluation.md.")
    p.add_argument("task", choices=TASKS, help="what the predictions are")
    p.add_argument("--predictions", required=True, help="predictions JSON lines, or retrieval's similarity .npz "
                   "(locvtp evaluate --out writes them)")
    p.add_argument("--annotations", required=True,
                   help="ground truth: grounding: ActivityNet Captions .json, Charades-STA .txt or QVHighlights "
                        ".jsonl; qvhighlights: its .jsonl; retrieval: the JSFusion test .csv or MSRVTT_data.json; "
                        "steps: the CrossTask directory; segmentation: COIN.json")
    p.add_argument("--durations", default=None, help="Charades-STA: Charades_v1_<split>.csv (default: next to it)")
    p.add_argument("--name", default=None, help="metric prefix (default: the task; head_grounding for the head's, "
                   "retrieval_ft / retrieval_allcap for those similarity files)")
    p.add_argument("--split", default=None, choices=("val", "train", "all"),
                   help="steps: the CrossTask videos scored (default val, evaluate's steps.split)")
    p.add_argument("--background", default=None, help="segmentation: the background label (default background)")
    p.add_argument("--require-all", action="store_true", help="fail when an annotated query has no prediction")
    p.add_argument("--decimals", type=int, default=None, metavar="N",
                   help="round every figure to N decimals, as float(f'{v:.Nf}') (2: the figures standalone_eval "
                        "prints); default: unrounded")
    p.add_argument("--out", default=None, help="also write the result as JSON to this file")
    return p


def _score(args: Any, name: str) -> dict[str, Any]:
    from locvtp import scoring

    if args.task == "qvhighlights":
        return scoring.score_qvhighlights(args.predictions, args.annotations, args.require_all)
    if args.task == "retrieval":
        return scoring.score_retrieval(args.predictions, args.annotations, name, args.require_all)
    if args.task == "steps":
        return scoring.score_steps(args.predictions, args.annotations, args.split or "val", args.require_all)
    if args.task == "segmentation":
        return scoring.score_segmentation(args.predictions, args.annotations, args.background or scoring.BACKGROUND,
                                          args.require_all)
    return score_grounding(args.predictions, args.annotations, name, args.durations, args.require_all)


def _rounded(value: Any, decimals: int) -> Any:
    """Every float in a (nested) metrics dict as a reference script prints it: ``float(f"{v:.{n}f}")``."""
    if isinstance(value, dict):
        return {k: _rounded(v, decimals) for k, v in value.items()}
    if isinstance(value, float):
        return float(f"{value:.{decimals}f}")
    return value


def main(argv: list[str] | None = None) -> int:
    from locvtp.files import check_apart, check_file_output, write_owned_text

    args = build_parser().parse_args(argv)
    name = args.name or args.task
    if args.out:  # before the work: a user's file at --out is never replaced
        check_apart(args.out, {"--predictions": args.predictions, "--annotations": args.annotations})
        check_file_output(args.out, "score", "--out")
    for flag, tasks in TASK_OPTIONS.items():
        if getattr(args, flag[2:]) is not None and args.task not in tasks:
            raise UsageError(f"{flag}: not used by the {args.task} task (only by {' and '.join(tasks)})")
    if args.decimals is not None and not 0 <= args.decimals <= 15:
        raise UsageError(f"--decimals {args.decimals}: must be between 0 and 15")
    res = _score(args, name)
    if args.decimals is not None:
        res["metrics"] = _rounded(res["metrics"], args.decimals)
    for w in res.get("warnings", []):
        print(f"locvtp score: warning: {w}", file=sys.stderr)
    if args.out:
        write_owned_text(args.out, json.dumps(res, indent=1) + "\n", "score")
    print(json.dumps(res["metrics"], indent=1))
    what = "videos" if args.task in ("steps", "segmentation") else "queries"
    note = f"; {res['unpredicted']} annotated {what} have no prediction" if res["unpredicted"] else ""
    print(f"scored {res['queries']} of {res['annotated']} {what}{note}", file=sys.stderr)
    return 0


__all__ = ["GroundTruth", "ScoreError", "main", "read_grounding_annotations", "read_grounding_predictions",
           "score_grounding"]
