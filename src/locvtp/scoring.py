"""Predictions files in the field's formats, read and scored without a model (what ``locvtp score`` runs).

QVHighlights (``locvtp score qvhighlights``): a Moment-DETR submission (JSON lines, one object per query)::

    {"qid": 2579, "query": "...", "vid": "NUsG9BgSes0_210.0_360.0",
     "pred_relevant_windows": [[0, 70, 0.9986], [78, 146, 0.4138], ...],
     "pred_saliency_scores": [-0.2452, -0.3779, ...]}

against a QVHighlights annotation file (``highlight_val_release.jsonl``: ``qid``, ``vid``, ``duration``,
``relevant_windows``, ``relevant_clip_ids``, ``saliency_scores``), scored as ``standalone_eval/eval.py`` scores
it: moment retrieval (:func:`locvtp.metrics.moment_retrieval_metrics`, when the lines hold
``pred_relevant_windows``) and highlight detection (:func:`locvtp.metrics.highlight_detection`, when they hold
``pred_saliency_scores``: one score per 2-s clip). ``qid`` is the annotation's own ``qid``. Figures are
unrounded: ``standalone_eval`` prints them rounded to 2 decimals.

This module imports nothing from :mod:`locvtp.commands`; a bad line is one :class:`ScoreError` naming the file
and the line.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from locvtp.errors import LocVTPError, UsageError


class ScoreError(LocVTPError, ValueError):
    """A predictions or annotations file cannot be scored; the message names the file and the line."""


def parse_window(item: Any, where: str, sizes: tuple[int, ...] = (2, 3)) -> tuple[float, ...]:
    """One predicted window ``[start, end]`` / ``[start, end, score]`` (``sizes``: the lengths accepted)."""
    shape = " or ".join({2: "[start, end]", 3: "[start, end, score]"}[k] for k in sizes)
    if not isinstance(item, (list, tuple)) or len(item) not in sizes:
        raise ScoreError(f"{where}: a predicted window must be {shape}, got {json.dumps(item)[:60]}")
    try:
        values = [float(v) for v in item]
    except (TypeError, ValueError):
        raise ScoreError(f"{where}: a predicted window holds a non-number: {json.dumps(item)[:60]}") from None
    if not all(math.isfinite(v) for v in values):
        raise ScoreError(f"{where}: a predicted window holds NaN or inf: {json.dumps(item)[:60]}")
    if values[1] < values[0]:
        raise ScoreError(f"{where}: a predicted window ends before it starts: {json.dumps(item)[:60]}")
    return tuple(values)


def json_lines(path: str | Path, flag: str = "--predictions") -> Iterator[tuple[str, dict]]:
    """``(where, object)`` per non-blank line of a JSON-lines file (``where`` = ``file:line``)."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{flag} {p}: no such file")
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise ScoreError(f"{p}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{p}:{lineno}"
        try:
            rec = json.loads(line)
        except ValueError as exc:
            raise ScoreError(f"{where}: not a JSON object ({exc})") from None
        if not isinstance(rec, dict):
            raise ScoreError(f"{where}: expected a JSON object, got {type(rec).__name__}")
        yield where, rec


# ------------------------------------------------------------------------------------------------ QVHighlights
@dataclass(frozen=True)
class QVQuery:
    """One annotated QVHighlights query: its ``qid`` (as text), video, sentence, ground-truth windows ``[k, 2]``
    and whole-video saliency labels ``[n_clips, 3]`` (None: the line has no ``relevant_clip_ids``)."""

    qid: str
    vid: str
    query: str
    windows: np.ndarray
    saliency: np.ndarray | None


def read_qvhighlights_truth(path: str | Path) -> list[QVQuery]:
    """A QVHighlights annotation file, strictly (a bad line is an error naming it), in file order."""
    from locvtp.data import formats
    from locvtp.metrics import highlight_labels

    p = Path(path)
    if not p.is_file():
        raise UsageError(f"--annotations {p}: no such file")
    res = formats.read_qvhighlights(p, strict=True)
    out, seen = [], set()
    for r in res.records:
        if r.qid in seen:
            raise ScoreError(f"{p}: qid {r.qid} is annotated twice")
        seen.add(r.qid)
        sal = highlight_labels(r.duration or 0.0, r.clip_ids, r.saliency) if r.clip_ids else None
        out.append(QVQuery(r.qid, r.video_id, r.query, np.asarray(r.windows, np.float64).reshape(-1, 2), sal))
    if not out:
        raise ScoreError(f"{p}: no annotated query")
    return out


def _saliency(value: Any, where: str) -> np.ndarray:
    if not isinstance(value, list):
        raise ScoreError(f"{where}: pred_saliency_scores must be a list of numbers (one per 2-s clip)")
    try:
        arr = np.array([float(v) for v in value if not isinstance(v, bool)], np.float64)
    except (TypeError, ValueError):
        raise ScoreError(f"{where}: pred_saliency_scores holds a non-number") from None
    if len(arr) != len(value) or not np.isfinite(arr).all():
        raise ScoreError(f"{where}: pred_saliency_scores holds a non-number, NaN or inf")
    return arr


def read_qvhighlights_submission(path: str | Path, truth: list[QVQuery]
                                 ) -> dict[int, tuple[np.ndarray | None, np.ndarray | None]]:
    """``{index in truth: (windows [n, 3] or None, saliency [m] or None)}``, each line checked against
    ``truth``; every line must hold the same kinds of prediction (windows, saliency or both)."""
    by_qid = {q.qid: k for k, q in enumerate(truth)}
    out: dict[int, tuple[np.ndarray | None, np.ndarray | None]] = {}
    kinds = None
    for where, rec in json_lines(path):
        if "qid" not in rec:
            raise ScoreError(f"{where}: no 'qid' field")
        k = by_qid.get(str(rec["qid"]))
        if k is None:
            raise ScoreError(f"{where}: qid {rec['qid']!r} is not annotated (predictions made for another "
                             "annotation file?)")
        if "vid" in rec and str(rec["vid"]) != truth[k].vid:
            raise ScoreError(f"{where}: qid {rec['qid']} is video {truth[k].vid!r} in the annotations, the line "
                             f"says {rec['vid']!r}")
        if k in out:
            raise ScoreError(f"{where}: qid {rec['qid']} is predicted twice")
        has = ("pred_relevant_windows" in rec, "pred_saliency_scores" in rec)
        if not any(has):
            raise ScoreError(f"{where}: no 'pred_relevant_windows' or 'pred_saliency_scores' field")
        if kinds is not None and has != kinds:
            missing = "pred_relevant_windows" if kinds[0] and not has[0] else "pred_saliency_scores"
            raise ScoreError(f"{where}: no {missing!r} field, which the earlier lines have")
        kinds = has
        windows = None
        if has[0]:
            if not isinstance(rec["pred_relevant_windows"], list):
                raise ScoreError(f"{where}: pred_relevant_windows must be a list of windows")
            windows = np.asarray([parse_window(w, f"{where}: window {i}", (3,))
                                  for i, w in enumerate(rec["pred_relevant_windows"])], np.float64).reshape(-1, 3)
        out[k] = (windows, _saliency(rec["pred_saliency_scores"], where) if has[1] else None)
    if not out:
        raise ScoreError(f"{path}: no prediction lines")
    return out


def _range_warnings(metrics: dict[str, float]) -> list[str]:
    from locvtp.metrics import MR_LENGTH_RANGES

    return [f"no scored query has a ground-truth window of length in ({lo:g}, {hi:g}] s: MR-{name}-mAP left out"
            for name, lo, hi in MR_LENGTH_RANGES if name != "full" and f"MR-{name}-mAP" not in metrics]


def score_qvhighlights(predictions: str | Path, annotations: str | Path, require_all: bool = False
                       ) -> dict[str, Any]:
    """Moment retrieval and highlight detection figures of a QVHighlights submission, with Moment-DETR's
    ``standalone_eval`` key names: ``{"metrics", "queries", "annotated", "unpredicted", "warnings"}``."""
    from locvtp.metrics import highlight_detection, moment_retrieval_metrics

    truth = read_qvhighlights_truth(annotations)
    preds = read_qvhighlights_submission(predictions, truth)
    missing = len(truth) - len(preds)
    if missing and require_all:
        first = next(k for k in range(len(truth)) if k not in preds)
        raise ScoreError(f"{predictions}: {missing} of the {len(truth)} annotated queries have no prediction "
                         f"(the first: qid {truth[first].qid}, video {truth[first].vid!r})")
    ks = sorted(preds)  # annotation order
    metrics: dict[str, float] = {}
    warnings: list[str] = []
    if preds[ks[0]][0] is not None:
        mr = moment_retrieval_metrics([preds[k][0] for k in ks], [truth[k].windows for k in ks])
        metrics.update(sorted(mr.items()))  # standalone_eval sorts its MR keys
        warnings += _range_warnings(mr)
    if preds[ks[0]][1] is not None:
        unlabelled = [k for k in ks if truth[k].saliency is None]
        if len(unlabelled) == len(ks):
            raise ScoreError(f"{annotations}: no scored query has 'relevant_clip_ids' / 'saliency_scores': "
                             "highlight detection cannot be scored")
        if unlabelled:
            warnings.append(f"{len(unlabelled)} scored queries have no highlight labels (the first: qid "
                            f"{truth[unlabelled[0]].qid}): AP 0 and no hit at every threshold")
        gts = [truth[k].saliency if truth[k].saliency is not None else np.zeros((0, 3)) for k in ks]
        metrics.update(highlight_detection([preds[k][1] for k in ks], gts))
    return {"metrics": metrics, "queries": len(ks), "annotated": len(truth), "unpredicted": missing,
            "warnings": warnings}


__all__ = ["QVQuery", "ScoreError", "json_lines", "parse_window", "read_qvhighlights_submission",
           "read_qvhighlights_truth", "score_qvhighlights"]
