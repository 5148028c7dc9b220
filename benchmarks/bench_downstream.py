"""Cost of the downstream task logic (everything after embedding): prints medians.

    python benchmarks/bench_downstream.py [--repeats 5]

- zero-shot grounding: ranking all windows of one query's curve (N clips) — per query;
- 2D-TAN head: one training step (batch 16, N = 16, default head) with 1 vs 2 intra-op threads;
- segmentation probe: 300 full-batch steps of the linear probe on 2 000 clips.
Embedding the videos (``locvtp.inference``) is measured by the inference benchmarks; ``locvtp evaluate``
reports its own split (``embed_seconds`` vs ``<task>_seconds``).
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    from locvtp.downstream.common import single_threaded
    from locvtp.downstream.grounding import HeadConfig, TAN2DHead, moment_iou, rank_windows, scaled_iou_bce
    from locvtp.downstream.segmentation import ProbeConfig, train_probe

    rng = np.random.default_rng(0)
    print(f"torch {torch.__version__}, default threads {torch.get_num_threads()}")
    for n in (30, 60, 120):
        curve = rng.normal(size=n)
        windows = np.stack([np.arange(n), np.arange(1, n + 1)], axis=1).astype(float)
        t = median_time(lambda: rank_windows(curve, windows), args.repeats * 4)
        print(f"zero-shot rank_windows, N={n:4d} clips: {t * 1e3:8.2f} ms / query")

    cfg = HeadConfig()
    head = TAN2DHead(128, 128, cfg.num_clips, cfg.hidden, cfg.layers, cfg.kernel, cfg.pooling)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr)
    x = torch.randn(cfg.batch_size, cfg.num_clips, 128)
    q = torch.randn(cfg.batch_size, 128)
    iou = moment_iou(torch.tensor([[2.0, 9.0]] * cfg.batch_size), torch.full((cfg.batch_size,), 30.0), cfg.num_clips)

    def step():
        loss = scaled_iou_bce(head(x, q), iou, head.mask2d)
        opt.zero_grad()
        loss.backward()
        opt.step()

    res = {}
    for threads in (1, 2):
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        res[threads] = median_time(step, args.repeats * 4)
        torch.set_num_threads(before)
        print(f"2D-TAN head train step (batch {cfg.batch_size}, N={cfg.num_clips}, {threads} thread(s)): "
              f"{res[threads] * 1e3:8.2f} ms")
    print(f"  ratio 2 threads / 1 thread: {res[2] / res[1]:.2f}")

    feats = [rng.normal(size=(40, 128)).astype(np.float32) for _ in range(50)]
    labels = [[str(k) for k in rng.integers(0, 8, 40)] for _ in range(50)]
    with single_threaded():
        t = median_time(lambda: train_probe(feats, labels, ProbeConfig()), max(1, args.repeats // 2))
    print(f"linear probe, 300 steps on {sum(len(f) for f in feats)} clips: {t:8.2f} s")


if __name__ == "__main__":
    main()
