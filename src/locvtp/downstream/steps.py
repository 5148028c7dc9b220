"""Action step localization (CrossTask protocol), zero-shot.

For a video of task τ with K ordered steps, every clip is scored against every step text in the joint space
(sentence and word level, as zero-shot grounding: ``clip_query_score_matrix``) → ``[T, K]``, log-softmax over
the steps per clip (as CrossTask's own evaluation, :func:`log_softmax_steps`); CrossTask's dynamic
program (``locvtp.metrics.crosstask_viterbi``) picks one clip per step, in the task's order, maximizing the total
score; a step counts as recalled when its chosen clip lies inside one of its annotated intervals
(``locvtp.metrics.step_recall``: recall per task, then the mean over tasks, as DmZhukov/CrossTask ``get_recalls``).

Ground truth follows CrossTask's ``read_assignment``: with per-second features, step k is on at rows
``floor(start) .. ceil(end) - 1``. Our clips are ``stride`` seconds apart, so rows are
``floor(start / stride) .. ceil(end / stride) - 1`` (identical for the usual 1-s clips).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from locvtp.downstream.common import DownstreamError


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


@dataclass
class StepVideo:
    task: str
    vid: str
    segments: list[tuple[int, float, float]]  # (1-based step, start s, end s)


def log_softmax_steps(scores: np.ndarray) -> np.ndarray:
    """Per clip, log-softmax over the task's K steps (``[T, K]`` → ``[T, K]``).

    CrossTask's own evaluation runs its DP on ``-log_softmax`` of the classifier's per-frame step scores
    (``train.py::eval``: ``O = lsm(net(X, task)); dp(y, -O)``); we do the same with the zero-shot scores. It
    removes what a clip has in common with *every* step (a clip similar to all texts would otherwise attract
    every step): measured on the demo world, step_recall 97.5 → 97.8 with oracle embeddings, and 15.2 → 26.4 for
    a weakly trained (coarse-only, 200 steps) model, whose raw scores favoured idle clips.
    """
    s = np.asarray(scores, dtype=np.float64)
    m = s.max(axis=1, keepdims=True)
    return s - (m + np.log(np.exp(s - m).sum(axis=1, keepdims=True)))


@dataclass
class StepsOptions:
    alpha: float = 0.5  # weight of the sentence level vs the word level in the clip-step scores
    normalize: str = "log_softmax"  # log_softmax (per clip over the steps, as CrossTask's eval) | none
    split: str = "val"  # val (videos_val.csv, the zero-shot protocol) | train (videos.csv) | all


def run_steps(ctx, opts: StepsOptions | None = None) -> "TaskResult":
    """Zero-shot CrossTask recall on the chosen split's annotated videos of the primary tasks."""
    from locvtp.runtime import progress as tqdm

    from locvtp.downstream.common import TaskResult
    from locvtp.downstream.grounding import clip_query_score_matrix
    from locvtp.metrics import crosstask_viterbi, step_recall

    opts = opts or StepsOptions()
    if opts.normalize not in ("log_softmax", "none"):
        raise DownstreamError(f"steps.normalize must be 'log_softmax' or 'none', got {opts.normalize!r}")
    task_steps, videos, skipped = load_crosstask(ctx.data_dir, opts.split, strict=ctx.strict)
    if not videos:
        raise DownstreamError(f"no annotated CrossTask videos for split {opts.split!r} under {ctx.data_dir}")
    step_emb = {t: ctx.bank.texts(steps) for t, steps in task_steps.items()}
    y_true: dict[str, dict[str, np.ndarray]] = {}
    y_pred: dict[str, dict[str, np.ndarray]] = {}
    preds, missing, too_short = [], [], []
    for v in tqdm(videos, desc="step localization", disable=not ctx.progress, leave=False):
        seq = ctx.bank.video(v.vid)
        if seq is None or len(seq.features) == 0:
            missing.append(v.vid)
            continue
        if len(seq.features) < len(task_steps[v.task]):  # one clip per step is impossible
            too_short.append(v.vid)
            continue
        emb = step_emb[v.task]
        scores = clip_query_score_matrix(seq.features, emb.sentence, emb.words, alpha=opts.alpha)  # [T, K]
        if opts.normalize == "log_softmax":
            scores = log_softmax_steps(scores)
        pred = np.asarray(crosstask_viterbi(scores))
        stride = float(np.median(np.diff(seq.windows[:, 0]))) if len(seq.windows) > 1 else ctx.stride_seconds
        truth = assignment_matrix(len(seq.features), len(task_steps[v.task]), v.segments, stride)
        y_true.setdefault(v.task, {})[v.vid] = truth
        y_pred.setdefault(v.task, {})[v.vid] = pred
        chosen = pred.argmax(axis=0)
        preds.append({"task": v.task, "video_id": v.vid,
                      "predicted_clip_per_step": chosen.tolist(),
                      "predicted_seconds_per_step": seq.windows[chosen].round(3).tolist(),
                      "steps_present": sorted({s for s, _, _ in v.segments}),
                      "hits": [int(truth[c, k]) for k, c in enumerate(chosen)]})
    if not y_true:
        raise DownstreamError(f"steps: no CrossTask video could be evaluated (missing: {missing[:5]})")
    result = step_recall(y_true, y_pred)
    metrics = {"step_recall": float(result["recall"])}
    # The floor: the same Viterbi on i.i.d. Gaussian score matrices, averaged over 3 seeded draws.
    rng = np.random.default_rng(ctx.seed)
    chance = []
    for _ in range(3):
        rand_pred = {t: {v: np.asarray(crosstask_viterbi(rng.normal(size=y.shape))) for v, y in vids.items()}
                     for t, vids in y_true.items()}
        chance.append(step_recall(y_true, rand_pred)["recall"])
    metrics["chance_step_recall"] = float(np.mean(chance))
    info = {"split": opts.split, "tasks": len(task_steps), "videos": len(videos), "evaluated_videos": len(preds),
            "missing_videos": missing, "videos_shorter_than_their_steps": too_short, "skipped_annotations": skipped,
            "per_task_recall": {str(k): float(v) for k, v in result["per_task"].items()},
            "settings": {"alpha": opts.alpha, "normalize": opts.normalize}}
    return TaskResult("steps", metrics, preds, info)


def load_crosstask(data_dir: str | Path, split: str = "val", strict: bool = False
                   ) -> tuple[dict[str, list[str]], list[StepVideo], list[dict]]:
    """CrossTask under ``<data>/crosstask/`` via ``locvtp.data.formats``: the primary tasks' ordered step texts,
    the annotated videos of ``split`` (val = ``videos_val.csv``, train = ``videos.csv``, all = both), and the
    skipped records (a listed video without an annotation file is one: CrossTask evaluates annotated videos)."""
    from locvtp.data import formats
    from locvtp.downstream.common import bad_records

    root = Path(data_dir) / "crosstask"
    files = {"val": ["videos_val.csv"], "train": ["videos.csv"], "all": ["videos.csv", "videos_val.csv"]}
    if split not in files:
        raise ValueError(f"CrossTask split must be one of {sorted(files)}, got {split!r}")
    tasks = formats.read_crosstask_tasks(root / "tasks_primary.txt", strict=strict)
    task_map = {t.task_id: t for t in tasks.records}
    skipped = bad_records(tasks.skipped)
    listed = []
    for name in files[split]:
        res = formats.read_crosstask_videos(root / name, task_map, strict=strict)
        listed += res.records
        skipped += bad_records(res.skipped)
    listed = list({(v.task_id, v.video_id): v for v in listed}.values())  # a video listed twice counts once
    ann = formats.read_crosstask_annotations(root / "annotations", listed, task_map, strict=strict)
    skipped += bad_records(ann.skipped)
    videos = [StepVideo(a.task_id, a.video_id, [(s.step, s.start, s.end) for s in a.segments]) for a in ann.records]
    return {t.task_id: list(t.steps) for t in tasks.records}, videos, skipped
