"""How hard a world's step-localization (CrossTask) and segmentation (COIN) test sets are, from its plan alone.

No model and no video is needed: every figure is computed from the exact ground truth of ``plan_world`` with the
project's own protocol functions (``locvtp.downstream.steps`` / ``segmentation``, ``locvtp.metrics``):

* structure: steps per task, video length, step segments shorter than 2 s (< 2 one-second clips), look-alike
  step pairs, distractor (non-step) actions, clips that straddle two labels;
* chance: step recall of i.i.d. random scores through the same Viterbi (as ``run_steps``' ``chance_step_recall``,
  more draws), segmentation accuracy of the majority label (``chance_segmentation_acc``) and of uniformly random
  labels;
* oracles (that the task stays solvable, and what partial knowledge is worth): clip "features" that say exactly
  which (object, action) happens in how much of each clip, and the same with the object reduced to its colour,
  its shape, or nothing. Step scores = the clip's share covered by an event matching the step's text under that
  knowledge; segmentation = the project's linear probe trained on such features of the COIN training videos.

    python tests/world_difficulty.py --preset demo --seed 0            # both versions, as a markdown table
"""
from __future__ import annotations

import argparse
import itertools
import sys

import numpy as np

from locvtp.world.plan import CLIP_SECONDS, GENERATOR_VERSIONS, PRESETS, Task, VideoSpec, WorldPlan, plan_world
from locvtp.data.video import sliding_windows
from locvtp.downstream.segmentation import ProbeConfig, clip_labels, train_probe
from locvtp.downstream.steps import assignment_matrix, log_softmax_steps
from locvtp.metrics import crosstask_viterbi, segmentation_metrics, step_recall

# What a partially informed model knows of an event: the key its clips are described by.
KNOWLEDGE = {
    "exact": lambda o, a: (o.colour, o.shape, a),
    "colour+action": lambda o, a: (o.colour, a),
    "shape+action": lambda o, a: (o.shape, a),
    "action": lambda o, a: (a,),
}


def _windows(v: VideoSpec) -> np.ndarray:
    return sliding_windows(v.duration, CLIP_SECONDS, CLIP_SECONDS)


def _coverage(windows: np.ndarray, start: float, end: float) -> np.ndarray:
    """Share of each window covered by [start, end)."""
    inter = np.clip(np.minimum(windows[:, 1], end) - np.maximum(windows[:, 0], start), 0.0, None)
    return inter / (windows[:, 1] - windows[:, 0])


def _step_segments(v: VideoSpec) -> list[tuple[int, float, float]]:
    return [(k, e.start, e.end) for k, e in zip(v.extra["steps"], v.events) if k is not None]


def lookalike_pairs(task: Task) -> int:
    """Step pairs of a task with the same action on objects that share their colour or their shape."""
    n = 0
    for (i, a), (j, b) in itertools.combinations(task.steps, 2):
        oi, oj = task.objects[i], task.objects[j]
        n += a == b and (oi.colour == oj.colour or oi.shape == oj.shape)
    return n


def structure(plan: WorldPlan) -> dict[str, float]:
    tasks = plan.crosstask_tasks + plan.coin_tasks
    vids = plan.splits["crosstask_val"] + plan.splits["coin_test"]
    segs = [e - s for v in vids for _, s, e in _step_segments(v)]
    mixed, clips, bg_moving, bg = 0, 0, 0, 0
    for v in vids:
        w = _windows(v)
        labels = np.zeros((len(w), len(v.events)))
        for j, e in enumerate(v.events):
            labels[:, j] = _coverage(w, e.start, e.end)
        step_cov = labels[:, [j for j, k in enumerate(v.extra["steps"]) if k is not None]].sum(axis=1)
        distractor_cov = labels.sum(axis=1) - step_cov
        idle = 1.0 - labels.sum(axis=1)
        mixed += int(sum(((row > 1e-9).sum() + (idl > 1e-9)) >= 2 for row, idl in zip(labels, idle)))
        clips += len(w)
        centre_is_bg = np.array([lab == "background" for lab in clip_labels(
            w, [(s, e, str(k)) for k, s, e in _step_segments(v)])])
        bg += int(centre_is_bg.sum())
        bg_moving += int((centre_is_bg & (distractor_cov > 0.5)).sum())
    return {
        "tasks": len(tasks),
        "steps_per_task": float(np.mean([len(t.steps) for t in tasks])),
        "test_videos": len(vids),
        "video_seconds": float(np.mean([v.duration for v in vids])),
        "step_segments": len(segs),
        "step_seconds": float(np.mean(segs)),
        "steps_shorter_than_2_clips_pct": 100.0 * float(np.mean(np.array(segs) < 2.0)),
        "lookalike_step_pairs_per_task": float(np.mean([lookalike_pairs(t) for t in tasks])),
        "distractor_actions_per_video": float(np.mean([sum(k is None for k in v.extra["steps"]) for v in vids])),
        "clips_straddling_two_labels_pct": 100.0 * mixed / clips,
        "background_clips_with_an_action_pct": 100.0 * bg_moving / max(1, bg),
    }


def _oracle_step_scores(v: VideoSpec, task: Task, know, windows: np.ndarray) -> np.ndarray:
    keys = [know(task.objects[i], a) for i, a in task.steps]
    scores = np.zeros((len(windows), len(keys)))
    for e in v.events:
        key = know(v.objects[e.obj], e.action)
        cov = _coverage(windows, e.start, e.end)
        for k, kk in enumerate(keys):
            if kk == key:
                scores[:, k] += cov
    return scores


def steps(plan: WorldPlan, draws: int = 20, seed: int = 0) -> dict[str, float]:
    """CrossTask val: chance (random scores) and oracle step recall, as run_steps computes them."""
    tasks = {t.task_id: t for t in plan.crosstask_tasks}
    y_true: dict[str, dict[str, np.ndarray]] = {}
    windows = {}
    for v in plan.splits["crosstask_val"]:
        w = _windows(v)
        windows[v.vid] = w
        y_true.setdefault(v.extra["task"], {})[v.vid] = assignment_matrix(
            len(w), len(tasks[v.extra["task"]].steps), _step_segments(v), 1.0)
    rng = np.random.default_rng(seed)
    chance = [step_recall(y_true, {t: {vid: crosstask_viterbi(rng.normal(size=y.shape)) for vid, y in vs.items()}
                                   for t, vs in y_true.items()})["recall"] for _ in range(draws)]
    out = {"chance_step_recall": float(np.mean(chance)), "chance_step_recall_std": float(np.std(chance))}
    for name, know in KNOWLEDGE.items():
        pred: dict[str, dict[str, np.ndarray]] = {}
        for v in plan.splits["crosstask_val"]:
            s = _oracle_step_scores(v, tasks[v.extra["task"]], know, windows[v.vid])
            pred.setdefault(v.extra["task"], {})[v.vid] = crosstask_viterbi(log_softmax_steps(s))
        out[f"oracle_{name}_step_recall"] = step_recall(y_true, pred)["recall"]
    return out


def _clip_features(v: VideoSpec, know, vocab: dict, windows: np.ndarray) -> np.ndarray:
    x = np.zeros((len(windows), len(vocab)), np.float32)
    for e in v.events:
        x[:, vocab[know(v.objects[e.obj], e.action)]] += _coverage(windows, e.start, e.end)
    return x


def segmentation(plan: WorldPlan, seed: int = 0) -> dict[str, float]:
    """COIN test: chance (majority, random labels) and the linear probe on oracle clip features."""
    texts = {t.task_id: t.step_texts() for t in plan.coin_tasks}

    def labelled(vids):
        out = []
        for v in vids:
            w = _windows(v)
            segs = [(s, e, texts[v.extra["task"]][k - 1]) for k, s, e in _step_segments(v)]
            out.append((v, w, clip_labels(w, segs)))
        return out

    train, test = labelled(plan.splits["coin_train"]), labelled(plan.splits["coin_test"])
    y_te = [y for _, _, y in test]
    counts: dict[str, int] = {}
    for _, _, y in train:
        for lab in y:
            counts[lab] = counts.get(lab, 0) + 1
    majority = max(sorted(counts), key=counts.__getitem__)
    classes = sorted(counts)
    rng = np.random.default_rng(seed)
    rand = [segmentation_metrics([[classes[j] for j in rng.integers(len(classes), size=len(y))] for y in y_te],
                                 y_te)["Acc"] for _ in range(20)]
    out = {"classes": len(classes),
           "chance_segmentation_acc": segmentation_metrics([[majority] * len(y) for y in y_te], y_te)["Acc"],
           "random_label_segmentation_acc": float(np.mean(rand))}
    for name, know in KNOWLEDGE.items():
        vocab: dict = {}
        for v, _, _ in train + test:
            for e in v.events:
                vocab.setdefault(know(v.objects[e.obj], e.action), len(vocab))
        probe = train_probe([_clip_features(v, know, vocab, w) for v, w, _ in train], [y for _, _, y in train],
                            ProbeConfig(), seed=seed)
        pred = [probe.predict(_clip_features(v, know, vocab, w)) for v, w, _ in test]
        out[f"oracle_{name}_segmentation_acc"] = segmentation_metrics(pred, y_te)["Acc"]
    return out


def measure(seed: int, preset: str, version: str) -> dict[str, float]:
    plan = plan_world(seed, preset, version)
    return {**structure(plan), **steps(plan, seed=seed), **segmentation(plan, seed=seed)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="demo", choices=sorted(PRESETS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--versions", nargs="*", default=list(GENERATOR_VERSIONS))
    a = ap.parse_args(argv)
    rows = {v: measure(a.seed, a.preset, v) for v in a.versions}
    print(f"preset {a.preset}, seed {a.seed}: CrossTask val / COIN test sets\n")
    print("| | " + " | ".join(f"generator {v}" for v in rows) + " |")
    print("|---|" + "---:|" * len(rows))
    for key in next(iter(rows.values())):
        cells = [f"{r[key]:.1f}" if isinstance(r[key], float) else str(r[key]) for r in rows.values()]
        print(f"| {key} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
