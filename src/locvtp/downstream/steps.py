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

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from locvtp.downstream.common import DownstreamError
from locvtp.scoring import StepVideo, assignment_matrix, read_crosstask  # noqa: F401  (torch-free: locvtp score)


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

# The per-video predictions `evaluate` writes (`locvtp score steps` reads them): {"task", "video_id",
# "num_clips", "clip_stride" (s), "step_clips" (the clip chosen for each of the task's steps, in order)}.
STEPS_PREDICTIONS = "steps_predictions.jsonl"


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
    preds, missing, too_short, lines = [], [], [], []
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
        lines.append({"task": v.task, "video_id": v.vid, "num_clips": len(seq.features), "clip_stride": stride,
                      "step_clips": chosen.tolist()})
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
    return TaskResult("steps", metrics, preds, info, prediction_files={STEPS_PREDICTIONS: lines})


def load_crosstask(data_dir: str | Path, split: str = "val", strict: bool = False
                   ) -> tuple[dict[str, list[str]], list[StepVideo], list[dict]]:
    """CrossTask under ``<data>/crosstask/``: :func:`locvtp.scoring.read_crosstask` (the primary tasks' ordered
    step texts, the annotated videos of ``split``, the skipped records)."""
    return read_crosstask(Path(data_dir) / "crosstask", split, strict)
