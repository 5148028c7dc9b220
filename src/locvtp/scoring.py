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
from typing import Any, Iterable, Iterator, Sequence

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


def unpredicted(got: Any, items: Any, predictions: str | Path, require_all: bool, what: str,
                describe: Any) -> int:
    """How many of the annotated ``items`` have no prediction (``got`` holds the indices predicted); none at all,
    or (``require_all``) any missing, is a one-line error (the first missing one named by ``describe(index)``)."""
    if not got:
        raise ScoreError(f"{predictions}: no prediction lines")
    missing = len(items) - len(got)
    if missing and require_all:
        first = next(k for k in range(len(items)) if k not in got)
        raise ScoreError(f"{predictions}: {missing} of the {len(items)} {what} have no prediction "
                         f"(the first: {describe(first)})")
    return missing


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
    missing = unpredicted(preds, truth, predictions, require_all, "annotated queries",
                          lambda k: f"qid {truth[k].qid}, video {truth[k].vid!r}")
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


# ---------------------------------------------------------------------------------- the protocols' ground truth
# Torch-free, so that scoring needs no model: locvtp.downstream.steps / .segmentation use the same helpers.
@dataclass
class StepVideo:
    """One annotated CrossTask video: its task, id and ``(1-based step, start s, end s)`` segments."""

    task: str
    vid: str
    segments: list[tuple[int, float, float]]


def assignment_matrix(num_clips: int, num_steps: int, segments: Sequence[tuple[int, float, float]],
                      stride_seconds: float = 1.0) -> np.ndarray:
    """CrossTask ``read_assignment`` on a clip grid: ``segments`` = (1-based step, start s, end s) → uint8 ``[T, K]``.

    Steps outside ``1..K`` raise ``ValueError`` (the caller names the file).
    """
    y = np.zeros((num_clips, num_steps), dtype=np.uint8)
    for step, start, end in segments:
        k = int(step) - 1
        if not 0 <= k < num_steps:
            raise ValueError(f"step {step} outside 1..{num_steps}")
        lo = int(math.floor(float(start) / stride_seconds))
        hi = int(math.ceil(float(end) / stride_seconds))
        y[max(lo, 0):max(hi, 0), k] = 1
    return y


CROSSTASK_SPLITS = {"val": ["videos_val.csv"], "train": ["videos.csv"], "all": ["videos.csv", "videos_val.csv"]}


def read_crosstask(root: str | Path, split: str = "val", strict: bool = False
                   ) -> tuple[dict[str, list[str]], list[StepVideo], list[dict]]:
    """A CrossTask directory (``tasks_primary.txt``, ``videos[_val].csv``, ``annotations/``): the primary tasks'
    ordered step texts, the annotated videos of ``split`` (val = ``videos_val.csv``, train = ``videos.csv``,
    all = both) and the skipped records (a listed video without an annotation file is one: CrossTask evaluates
    annotated videos)."""
    from locvtp.data import formats

    root = Path(root)
    if split not in CROSSTASK_SPLITS:
        raise ValueError(f"CrossTask split must be one of {sorted(CROSSTASK_SPLITS)}, got {split!r}")
    tasks = formats.read_crosstask_tasks(root / "tasks_primary.txt", strict=strict)
    task_map = {t.task_id: t for t in tasks.records}
    skipped = _bad_records(tasks.skipped)
    listed = []
    for name in CROSSTASK_SPLITS[split]:
        res = formats.read_crosstask_videos(root / name, task_map, strict=strict)
        listed += res.records
        skipped += _bad_records(res.skipped)
    listed = list({(v.task_id, v.video_id): v for v in listed}.values())  # a video listed twice counts once
    ann = formats.read_crosstask_annotations(root / "annotations", listed, task_map, strict=strict)
    skipped += _bad_records(ann.skipped)
    videos = [StepVideo(a.task_id, a.video_id, [(s.step, s.start, s.end) for s in a.segments]) for a in ann.records]
    return {t.task_id: list(t.steps) for t in tasks.records}, videos, skipped


def _bad_records(skipped: Iterable[Any]) -> list[dict]:
    return [{"file": str(b.file), "location": str(b.location), "reason": str(b.reason)} for b in skipped]


BACKGROUND = "background"


@dataclass
class SegVideo:
    """One COIN video: its id, duration (-1 when unknown) and ``(start s, end s, label)`` segments."""

    vid: str
    duration: float
    segments: list[tuple[float, float, str]]


def read_coin_splits(path: str | Path, strict: bool = False) -> tuple[list[SegVideo], list[SegVideo], list[dict]]:
    """``COIN.json``: (training videos, testing videos, skipped records)."""
    from locvtp.data import formats

    res = formats.read_coin(path, strict=strict)
    split: dict[str, list[SegVideo]] = {"training": [], "testing": []}
    for v in res.records:
        if v.subset in split:
            split[v.subset].append(SegVideo(v.video_id, float(v.duration) if v.duration else -1.0,
                                            [(s.start, s.end, s.label) for s in v.segments]))
    return split["training"], split["testing"], _bad_records(res.skipped)


def frame_labels(times: np.ndarray, segments: Sequence[tuple[float, float, str]],
                 background: str = BACKGROUND) -> list[str]:
    """The label at each time (seconds): the segment containing it (``start <= t < end``), else background;
    overlapping segments (annotation errors) resolve to the one listed last, as a painter would."""
    t = np.asarray(times, dtype=np.float64).reshape(-1)
    out = np.full(t.shape[0], background, dtype=object)
    for start, end, label in segments:  # a handful of segments per video
        out[(t >= float(start)) & (t < float(end))] = label
    return [str(x) for x in out]


def segmentation_figures(m: dict[str, float]) -> dict[str, float]:
    """:func:`locvtp.metrics.segmentation_metrics`'s figures under ``locvtp evaluate``'s names
    (``segmentation_acc``, ``segmentation_edit``, ``segmentation_F1@10`` ...)."""
    names = {"Acc": "acc", "Edit": "edit"}
    return {f"segmentation_{names.get(k, k)}": float(v) for k, v in m.items()}


# ------------------------------------------------------------------------------------------------ retrieval
SIMILARITY_KEYS = ("sim", "video_ids", "query_video_ids", "queries")


def read_similarity(path: str | Path) -> tuple[np.ndarray, list[str], list[str], list[str]]:
    """A retrieval predictions file: ``.npz`` with ``sim [n_query, n_video]`` (finite), ``video_ids [n_video]``
    (the columns), ``query_video_ids [n_query]`` and ``queries [n_query]`` (each row's annotated video and
    sentence: which annotation query the row is)."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"--predictions {p}: no such file")
    try:
        with np.load(p, allow_pickle=False) as z:
            missing = [k for k in SIMILARITY_KEYS if k not in z.files]
            if missing:
                raise ScoreError(f"{p}: no {', '.join(repr(k) for k in missing)} array (a retrieval predictions "
                                 f"file holds {', '.join(SIMILARITY_KEYS)})")
            sim, cols, rows, queries = (z[k] for k in SIMILARITY_KEYS)
    except (OSError, ValueError, EOFError) as exc:
        if isinstance(exc, ScoreError):
            raise
        raise ScoreError(f"{p}: not a .npz of arrays without pickled objects ({exc})") from None
    if sim.ndim != 2 or sim.dtype.kind not in "fiu" or 0 in sim.shape:
        raise ScoreError(f"{p}: 'sim' must be a non-empty 2-D numeric array, got {sim.dtype} of shape {sim.shape}")
    for name, arr, n in (("video_ids", cols, sim.shape[1]), ("query_video_ids", rows, sim.shape[0]),
                         ("queries", queries, sim.shape[0])):
        if arr.shape != (n,) or arr.dtype.kind != "U":
            raise ScoreError(f"{p}: {name!r} must be {n} strings (sim is {sim.shape}), got {arr.dtype} of "
                             f"shape {arr.shape}")
    if not np.isfinite(sim).all():
        i, j = np.argwhere(~np.isfinite(sim))[0]
        raise ScoreError(f"{p}: sim[{i}, {j}] is NaN or inf")
    return sim, cols.tolist(), rows.tolist(), queries.tolist()


def _retrieval_truth(path: str | Path) -> tuple[dict[tuple[str, str], int], bool]:
    """``{(video, sentence): count}`` of an MSR-VTT annotation file and whether it is multi-caption: the JSFusion
    test ``.csv`` (one query per video) or ``MSRVTT_data.json`` (every caption), read as ``evaluate`` reads them."""
    from locvtp.data import formats

    p = Path(path)
    if not p.is_file():
        raise UsageError(f"--annotations {p}: no such file")
    pairs: dict[tuple[str, str], int] = {}
    if p.suffix.lower() == ".csv":
        for q in formats.read_msrvtt_jsfusion_csv(p).records:
            pairs[(q.video_id, q.sentence)] = pairs.get((q.video_id, q.sentence), 0) + 1
        return pairs, False
    if p.suffix.lower() == ".json":
        for v in formats.read_msrvtt_data(p).records:
            for c in v.captions:
                pairs[(v.video_id, c)] = pairs.get((v.video_id, c), 0) + 1
        return pairs, True
    raise UsageError(f"--annotations {p}: unknown retrieval annotation format {p.suffix or '(no extension)'!r}; "
                     "expected the JSFusion test .csv or MSRVTT_data.json")


def score_retrieval(predictions: str | Path, annotations: str | Path, name: str = "retrieval",
                    require_all: bool = False) -> dict[str, Any]:
    """Text→video and video→text figures of a similarity file (:func:`read_similarity`) against MSR-VTT's
    annotations, as ``locvtp evaluate`` computes them: the JSFusion ``.csv`` (one caption per video) with
    :func:`locvtp.metrics.retrieval_metrics` on the matrix reordered to put each row's video on the diagonal
    (``<name>_R1``, ..., ``<name>_v2t_R1``, ...); ``MSRVTT_data.json`` (several captions per video, the columns'
    order kept: it breaks text→video ties) with :func:`locvtp.metrics.multi_caption_retrieval_metrics`."""
    from locvtp.metrics import multi_caption_retrieval_metrics, retrieval_metrics

    sim, cols, rows, queries = read_similarity(predictions)
    pairs, multi = _retrieval_truth(annotations)
    col_of = {v: j for j, v in enumerate(cols)}
    if len(col_of) != len(cols):
        dup = next(v for v in cols if cols.count(v) > 1)
        raise ScoreError(f"{predictions}: video {dup!r} is a column twice in 'video_ids'")
    seen: dict[tuple[str, str], int] = {}
    for i, key in enumerate(zip(rows, queries)):
        if key not in pairs:
            raise ScoreError(f"{predictions}: row {i} (video {key[0]!r}, {key[1][:40]!r}) is not an annotated "
                             f"query of {annotations}")
        seen[key] = seen.get(key, 0) + 1
        if seen[key] > pairs[key]:
            raise ScoreError(f"{predictions}: row {i} (video {key[0]!r}, {key[1][:40]!r}) is predicted more often "
                             f"than it is annotated ({pairs[key]})")
        if key[0] not in col_of:
            raise ScoreError(f"{predictions}: row {i}'s video {key[0]!r} is not among the columns ('video_ids')")
    truth = np.array([col_of[v] for v in rows], dtype=np.int64)
    if multi:
        videos = set(cols)
        annotated = sum(n for (v, _), n in pairs.items() if v in videos)
        if len(set(truth.tolist())) < len(cols):
            lone = next(v for j, v in enumerate(cols) if j not in set(truth.tolist()))
            raise ScoreError(f"{predictions}: column video {lone!r} has no caption row")
        res = multi_caption_retrieval_metrics(sim, truth)
        t2v, v2t = res["text_to_video"], res["video_to_text"]
    else:
        annotated = sum(pairs.values())
        if len(rows) != len(cols) or len(set(truth.tolist())) != len(cols):
            raise ScoreError(f"{predictions}: one caption per video (JSFusion) needs each column video to be the "
                             f"video of exactly one row; got {len(rows)} rows, {len(cols)} columns, "
                             f"{len(set(truth.tolist()))} distinct row videos")
        diag = sim[:, truth]  # row i's video in column i
        t2v, v2t = retrieval_metrics(diag), retrieval_metrics(diag.T)
    missing = annotated - len(rows)
    if missing and require_all:
        raise ScoreError(f"{predictions}: {missing} of the {annotated} annotated queries have no row")
    metrics = {f"{name}_{k}": float(v) for k, v in t2v.items()}
    metrics.update({f"{name}_v2t_{k}": float(v) for k, v in v2t.items()})
    return {"metrics": metrics, "queries": len(rows), "annotated": annotated, "unpredicted": missing,
            "videos": len(cols)}


# ------------------------------------------------------------------------------------------ step localization
def _step_clips(rec: dict, n_steps: int, where: str) -> tuple[np.ndarray, float]:
    """A steps line's ``[T, K]`` 0/1 prediction and its clip stride, checked."""
    t, stride, steps = rec.get("num_clips"), rec.get("clip_stride"), rec.get("step_clips")
    if isinstance(t, bool) or not isinstance(t, int) or t < 1:
        raise ScoreError(f"{where}: num_clips must be a positive integer, got {t!r}")
    if isinstance(stride, bool) or not isinstance(stride, (int, float)) or not math.isfinite(stride) or stride <= 0:
        raise ScoreError(f"{where}: clip_stride must be a positive number of seconds, got {stride!r}")
    if not isinstance(steps, list) or len(steps) != n_steps:
        raise ScoreError(f"{where}: step_clips must be a list of {n_steps} entries (one per step of the task, in "
                         f"order: a clip index, a list of them or null), got {json.dumps(steps)[:60]}")
    y = np.zeros((t, n_steps), dtype=np.uint8)
    for k, c in enumerate(steps):
        clips = [] if c is None else c if isinstance(c, list) else [c]
        for i in clips:
            if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < t:
                raise ScoreError(f"{where}: step {k + 1}'s clip {i!r} is not a clip index in 0..{t - 1}")
            y[i, k] = 1
    return y, float(stride)


def score_steps(predictions: str | Path, annotations: str | Path, split: str = "val",
                require_all: bool = False) -> dict[str, Any]:
    """CrossTask step recall (``step_recall``, :func:`locvtp.metrics.step_recall`) of a steps predictions file
    (JSON lines ``{"task", "video_id", "num_clips", "clip_stride", "step_clips"}``) against a CrossTask directory:
    each video's truth is :func:`assignment_matrix` on the line's clip grid, as ``locvtp evaluate`` builds it."""
    from locvtp.metrics import step_recall

    root = Path(annotations)
    if not root.is_dir():
        raise UsageError(f"--annotations {root}: not a directory (give the CrossTask directory: "
                         "tasks_primary.txt, videos_val.csv, annotations/)")
    try:
        task_steps, videos, _ = read_crosstask(root, split)
    except FileNotFoundError as exc:
        raise ScoreError(f"--annotations {root}: {exc}") from None
    index = {(v.task, v.vid): k for k, v in enumerate(videos)}
    got: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for where, rec in json_lines(predictions):
        key = (str(rec.get("task")), str(rec.get("video_id")))
        if "task" not in rec or "video_id" not in rec:
            raise ScoreError(f"{where}: no 'task' or 'video_id' field")
        k = index.get(key)
        if k is None:
            raise ScoreError(f"{where}: video {key[1]!r} of task {key[0]!r} is not an annotated {split} video of "
                             f"{root}")
        if k in got:
            raise ScoreError(f"{where}: video {key[1]!r} of task {key[0]!r} is predicted twice")
        y, stride = _step_clips(rec, len(task_steps[key[0]]), where)
        try:
            truth = assignment_matrix(len(y), y.shape[1], videos[k].segments, stride)
        except ValueError as exc:
            raise ScoreError(f"{root}: video {key[1]!r}: {exc}") from None
        got[k] = (truth, y)
    missing = unpredicted(got, videos, predictions, require_all, "annotated videos",
                          lambda k: f"{videos[k].vid!r} of task {videos[k].task!r}")
    y_true: dict[str, dict[str, np.ndarray]] = {}
    y_pred: dict[str, dict[str, np.ndarray]] = {}
    for k in sorted(got):  # evaluate's order: the annotations'
        y_true.setdefault(videos[k].task, {})[videos[k].vid] = got[k][0]
        y_pred.setdefault(videos[k].task, {})[videos[k].vid] = got[k][1]
    try:
        res = step_recall(y_true, y_pred)
    except ValueError as exc:
        raise ScoreError(f"{predictions}: {exc}") from None
    return {"metrics": {"step_recall": float(res["recall"])}, "per_task": res["per_task"], "queries": len(got),
            "annotated": len(videos), "unpredicted": missing}


# ----------------------------------------------------------------------------------------------- segmentation
def _labels(rec: dict, where: str) -> tuple[np.ndarray, list]:
    times, pred = rec.get("frame_times"), rec.get("pred")
    if not isinstance(times, list) or not times:
        raise ScoreError(f"{where}: frame_times must be a non-empty list of seconds (one per predicted frame)")
    try:
        t = np.array([float(v) for v in times if not isinstance(v, bool)], np.float64)
    except (TypeError, ValueError):
        raise ScoreError(f"{where}: frame_times holds a non-number") from None
    if len(t) != len(times) or not np.isfinite(t).all():
        raise ScoreError(f"{where}: frame_times holds a non-number, NaN or inf")
    if not isinstance(pred, list) or len(pred) != len(t):
        raise ScoreError(f"{where}: pred must be a list of {len(t)} labels (one per frame time)")
    if not all(isinstance(v, str) for v in pred):
        raise ScoreError(f"{where}: pred holds a label that is not a string")
    return t, pred


def score_segmentation(predictions: str | Path, annotations: str | Path, background: str = BACKGROUND,
                       require_all: bool = False) -> dict[str, Any]:
    """COIN segmentation figures (``segmentation_acc``, ``_edit``, ``_F1@{10,25,50}``:
    :func:`locvtp.metrics.segmentation_metrics`) of per-frame predictions (JSON lines ``{"video_id",
    "frame_times", "pred"}``) against ``COIN.json``'s testing videos: a frame's truth is the segment containing
    its time (:func:`frame_labels`), as ``locvtp evaluate`` labels its clips by their centres."""
    from locvtp.metrics import segmentation_metrics

    p = Path(annotations)
    if not p.is_file():
        raise UsageError(f"--annotations {p}: no such file")
    _, test, _ = read_coin_splits(p)
    index = {v.vid: k for k, v in enumerate(test)}
    got: dict[int, tuple[list, list]] = {}
    for where, rec in json_lines(predictions):
        vid = str(rec.get("video_id"))
        if "video_id" not in rec:
            raise ScoreError(f"{where}: no 'video_id' field")
        k = index.get(vid)
        if k is None:
            raise ScoreError(f"{where}: video {vid!r} is not a testing video of {p}")
        if k in got:
            raise ScoreError(f"{where}: video {vid!r} is predicted twice")
        times, pred = _labels(rec, where)
        got[k] = (pred, frame_labels(times, test[k].segments, background))
    missing = unpredicted(got, test, predictions, require_all, "testing videos", lambda k: repr(test[k].vid))
    ks = sorted(got)  # evaluate's order: the annotation's
    m = segmentation_metrics([got[k][0] for k in ks], [got[k][1] for k in ks], background=background)
    return {"metrics": segmentation_figures(m), "queries": len(ks), "annotated": len(test), "unpredicted": missing}


__all__ = ["BACKGROUND", "CROSSTASK_SPLITS", "QVQuery", "ScoreError", "SegVideo", "StepVideo", "assignment_matrix",
           "frame_labels", "json_lines", "parse_window", "read_coin_splits", "read_crosstask",
           "read_qvhighlights_submission", "read_qvhighlights_truth", "read_similarity", "score_qvhighlights",
           "score_retrieval", "score_segmentation", "score_steps", "segmentation_figures"]
