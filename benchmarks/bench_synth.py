"""Synthetic-world generation speed: planning, rendering and H.264 encoding per frame, and whole presets.

    python benchmarks/bench_synth.py [--repeats 3] [--demo]

Prints medians over repeats. Rendering and encoding are measured on the same set of videos so their
per-frame costs can be compared side by side.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from locvtp.world.annotations import build_annotations
from locvtp.world.generate import generate_world
from locvtp.world.plan import plan_world
from locvtp.world.render import render_video, write_mp4


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--videos", type=int, default=100, help="demo-plan videos used for the per-frame figures")
    ap.add_argument("--demo", action="store_true", help="also time a whole demo world (~20-60 s)")
    args = ap.parse_args()

    t_plan_demo = _median_time(lambda: plan_world(0, "demo"), args.repeats)
    plan = plan_world(0, "demo")
    t_ann_demo = _median_time(lambda: build_annotations(plan), args.repeats)
    specs = list(plan.videos())[: args.videos]
    n_frames = sum(s.num_frames for s in specs)
    frames = [render_video(s) for s in specs]
    t_render = _median_time(lambda: [render_video(s) for s in specs], args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        t_encode = _median_time(
            lambda: [write_mp4(Path(tmp) / f"{i}.mp4", f) for i, f in enumerate(frames)], args.repeats)
        t_tiny = _median_time(
            lambda: generate_world(Path(tempfile.mkdtemp(dir=tmp)), 0, "tiny", progress=False), args.repeats)
        t_demo = None
        if args.demo:
            t_demo = _median_time(
                lambda: generate_world(Path(tempfile.mkdtemp(dir=tmp)), 0, "demo", progress=False), 1)

    print(f"plan demo world:          {t_plan_demo * 1e3:8.1f} ms")
    print(f"build demo annotations:   {t_ann_demo * 1e3:8.1f} ms")
    print(f"render ({n_frames} frames):   {t_render / n_frames * 1e6:8.1f} us/frame  ({n_frames / t_render:,.0f} frames/s)")
    print(f"encode H.264 (same):      {t_encode / n_frames * 1e6:8.1f} us/frame  ({n_frames / t_encode:,.0f} frames/s)"
          f"   render:encode = {t_render / t_encode:.2f}")
    print(f"generate_world tiny:      {t_tiny:8.2f} s   (median of {args.repeats})")
    if t_demo is not None:
        print(f"generate_world demo:      {t_demo:8.2f} s   (1 run)")


if __name__ == "__main__":
    main()
