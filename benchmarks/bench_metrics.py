"""Timings of locvtp.metrics at evaluation-set sizes (prints medians; no asserts).

Sizes: MSR-VTT 1k-A retrieval (1000 x 1000), an MSVD-like multi-caption set (670 videos x 40 captions), Charades-STA
grounding (3720 queries, 16 x 16 2D-TAN map -> 136 moments), QVHighlights val (1550 queries, 10 predictions),
CrossTask (T = 300 frames, K = 10 steps), COIN-like segmentation (100 videos x 2000 frames).

Run: .venv/bin/python benchmarks/bench_metrics.py
"""
from __future__ import annotations

import statistics
import time

import numpy as np

from locvtp import metrics as M


def median_time(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def sort_based_ranks(sim: np.ndarray) -> np.ndarray:
    """CLIP4Clip-style rank extraction (full row sort), for a side-by-side comparison with the counting version."""
    sx = np.sort(-sim, axis=1)
    d = -np.diag(sim)[:, None]
    return np.where(sx - d == 0)[1]


def main() -> None:
    rng = np.random.default_rng(0)
    rows = []

    sim = rng.normal(size=(1000, 1000))
    t_vec = median_time(lambda: M.retrieval_metrics(sim))
    t_sort = median_time(lambda: sort_based_ranks(sim))
    rows.append(("retrieval_metrics 1000x1000", t_vec, f"sort-based ranks alone: {t_sort * 1e3:.1f} ms "
                                                       f"(ratio {t_sort / t_vec:.2f}x)"))

    n_video, caps = 670, 40
    msim = rng.normal(size=(n_video * caps, n_video))
    vot = np.repeat(np.arange(n_video), caps)
    rows.append(("multi_caption_retrieval_metrics 26800x670",
                 median_time(lambda: M.multi_caption_retrieval_metrics(msim, vot), 3), ""))

    n_q, n = 3720, 16
    maps = rng.random((n_q, n, n))
    durations = rng.uniform(10, 60, n_q)
    t_map = median_time(lambda: [M.score_map_to_windows(maps[i], durations[i]) for i in range(n_q)], 3)
    ranked = [M.score_map_to_windows(maps[i], durations[i])[0] for i in range(n_q)]
    starts = rng.uniform(0, 0.5, n_q) * durations
    gt = np.stack([starts, starts + rng.uniform(0.1, 0.5, n_q) * durations], axis=1)
    rows.append(("score_map_to_windows x3720 (16x16)", t_map, ""))
    rows.append(("grounding_recall 3720 queries x 136 moments",
                 median_time(lambda: M.grounding_recall(ranked, gt), 3), ""))

    n_q = 1550
    preds, gts = [], []
    for _ in range(n_q):
        s = np.sort(rng.uniform(0, 150, (10, 2)), axis=1)
        preds.append(np.concatenate([s, rng.random((10, 1))], axis=1))
        g = np.sort(rng.uniform(0, 150, (int(rng.integers(1, 4)), 2)), axis=1)
        gts.append(g)
    rows.append(("moment_retrieval_map 1550 queries x 10",
                 median_time(lambda: M.moment_retrieval_map(preds, gts), 3), ""))

    scores = rng.normal(size=(300, 10))
    t_fast = median_time(lambda: M.crosstask_viterbi(scores), 20)
    t_frame = median_time(lambda: M._viterbi_by_frame(-scores, True, 0.0), 5)
    rows.append(("crosstask_viterbi T=300 K=10 (per-step, vectorized over time)", t_fast,
                 f"per-frame pass: {t_frame * 1e3:.2f} ms (ratio {t_frame / t_fast:.1f}x)"))

    labels = np.array(["background"] + [f"s{i}" for i in range(10)])
    pred_l, gt_l = [], []
    for _ in range(100):
        g = np.repeat(labels[rng.integers(0, 11, 40)], 50)
        p = g.copy()
        flip = rng.random(g.size) < 0.05
        p[flip] = labels[rng.integers(0, 11, int(flip.sum()))]
        pred_l.append(p)
        gt_l.append(g)
    rows.append(("segmentation_metrics 100 videos x 2000 frames",
                 median_time(lambda: M.segmentation_metrics(pred_l, gt_l), 3), ""))

    width = max(len(r[0]) for r in rows)
    print(f"{'metric':<{width}}  median")
    for name, t, note in rows:
        print(f"{name:<{width}}  {t * 1e3:9.2f} ms  {note}")


if __name__ == "__main__":
    main()
