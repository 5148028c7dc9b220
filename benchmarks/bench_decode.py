"""Decode throughput: MP4 files -> training clips (T x F x size x size x 3 uint8), with 1 and 2 worker processes.

    python benchmarks/bench_decode.py [--source auto|synthetic|own] [--videos 16] [--samples 64] [--repeats 5]
                                      [--workers 0 1 2] [--md docs/benchmarks/decode.md]

Each sample is what the pre-training loader asks for: a random 8-s window of one video, split into T=8 clips of
F=4 frames (with jitter), decoded by ``locvtp.data.video.decode_clips`` through a ``torch.utils.data.DataLoader``
(batch 8, persistent workers, one warm-up pass). ``--workers 0`` is the in-process baseline. Also timed in-process:
whole-video decoding (``decode_frames``) and the in-memory path (``sample_clips`` on pre-decoded frames) that a
cache uses. Prints the median over ``--repeats`` of clip frames per second (T*F per sample) and the ratios, plus
frames per CPU-second (this process and its workers), which a busy shared machine distorts much less than wall
time: on an idle machine, N workers approach N x that figure minus the main process's share.

Videos: the tiny synthetic world (``generate_world(dir, seed=0, preset="tiny")``) when it is importable, else
``--videos`` MP4s written here with the same codec settings (32x32, 8 fps, 30 s, H.264, no B-frames, 2-s GOP).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

from locvtp.data.video import decode_clips, decode_frames, probe_video, sample_clips, clip_windows

T, F, SIZE, WINDOW_S = 8, 4, 32, 8.0


def write_own_videos(out: Path, n: int, seconds: float = 30.0, fps: int = 8, size: int = 32) -> list[Path]:
    """Moving squares on a textured background, encoded like the synthetic world's MP4s."""
    import av
    from tqdm import tqdm

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for v in tqdm(range(n), desc="writing MP4s", leave=False):
        rng = np.random.default_rng(v)
        path = out / f"bench_{v:03d}.mp4"
        paths.append(path)
        if path.exists():
            continue
        bg = rng.integers(0, 255, (size // 4, size // 4, 3)).repeat(4, 0).repeat(4, 1).astype(np.uint8)
        with av.open(str(path), "w", format="mp4") as c:
            s = c.add_stream("libx264", rate=fps, options={
                "crf": "4", "preset": "veryfast", "threads": "1",
                "x264-params": f"bframes=0:keyint={2 * fps}:min-keyint={2 * fps}:scenecut=0"})
            s.width, s.height, s.pix_fmt = size, size, "yuv420p"
            s.time_base = Fraction(1, fps)
            x, y, vx, vy = 8.0, 8.0, rng.uniform(-1, 1), rng.uniform(-1, 1)
            colour = rng.integers(0, 255, 3).astype(np.uint8)
            for i in range(int(seconds * fps)):
                img = bg.copy()
                x, y = (x + vx) % (size - 8), (y + vy) % (size - 8)
                img[int(y):int(y) + 8, int(x):int(x) + 8] = colour
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                frame.pts, frame.time_base = i, Fraction(1, fps)
                for p in s.encode(frame):
                    c.mux(p)
            for p in s.encode():
                c.mux(p)
    return paths


def get_videos(source: str, work: Path, n: int) -> tuple[list[Path], str]:
    if source in ("auto", "synthetic"):
        try:
            from locvtp.world.generate import generate_world

            world = work / "world"
            if not (world / "manifest.json").exists():
                generate_world(world, seed=0, preset="tiny", progress=True)
            paths = sorted((world / "videos").glob("*.mp4"))
            if paths:
                return paths, "synthetic world (seed 0, preset tiny)"
            raise RuntimeError("the synthetic world has no videos")
        except Exception as e:  # the generator may not exist yet or may fail: say so, then fall back
            if source == "synthetic":
                raise
            print(f"[bench_decode] synthetic world unavailable ({type(e).__name__}: {e}); writing own MP4s",
                  file=sys.stderr)
    return write_own_videos(work / "own", n), f"{n} own MP4s (32x32, 8 fps, 30 s, H.264)"


class ClipDataset:
    """Random 8-s windows (deterministic per index), decoded from the file on every access."""

    def __init__(self, items):
        self.items = items  # [(path, start, end, seed)]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        path, start, end, seed = self.items[i]
        return decode_clips(path, T, F, SIZE, start=start, end=end, jitter=True, rng=np.random.default_rng(seed))


def make_items(paths, n_samples, seed=0):
    rng = np.random.default_rng(seed)
    infos = {p: probe_video(p) for p in paths}
    items = []
    for i in range(n_samples):
        p = paths[i % len(paths)]
        d = infos[p].duration
        start = float(rng.uniform(0, max(0.0, d - WINDOW_S)))
        items.append((str(p), start, min(d, start + WINDOW_S), seed * 100003 + i))
    return items


def _init_worker(_):
    import torch

    torch.set_num_threads(1)


def _cpu_seconds() -> float:
    """User+system CPU of this process and its (worker) children: a figure the shared machine's load hardly moves."""
    import psutil

    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.Error:
            pass
    return total


def time_loader(items, workers: int, repeats: int) -> tuple[list[float], list[float]]:
    import torch
    from torch.utils.data import DataLoader

    ds = ClipDataset(items)
    kw = dict(batch_size=8, shuffle=False, num_workers=workers)
    if workers > 0:
        kw.update(persistent_workers=True, worker_init_fn=_init_worker, prefetch_factor=4)
    loader = DataLoader(ds, **kw)
    frames = len(items) * T * F
    for batch in loader:  # warm-up: workers started, files in the page cache
        assert batch.shape[1:] == (T, F, SIZE, SIZE, 3) and batch.dtype == torch.uint8
    rates, cpu_rates = [], []
    for _ in range(repeats):
        c0, t0 = _cpu_seconds(), time.perf_counter()
        for _batch in loader:
            pass
        t1, c1 = time.perf_counter(), _cpu_seconds()
        rates.append(frames / (t1 - t0))
        cpu_rates.append(frames / max(c1 - c0, 1e-9))
    del loader
    return rates, cpu_rates


def time_inprocess(fn, frames_per_call: int, repeats: int) -> tuple[list[float], list[float]]:
    fn()
    rates, cpu_rates = [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        t1, c1 = time.perf_counter(), time.process_time()
        rates.append(frames_per_call / (t1 - t0))
        cpu_rates.append(frames_per_call / max(c1 - c0, 1e-9))
    return rates, cpu_rates


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", choices=["auto", "synthetic", "own"], default="auto")
    ap.add_argument("--work", default=None, help="directory for the videos (default: a temporary one)")
    ap.add_argument("--videos", type=int, default=16, help="own MP4s to write when not using the synthetic world")
    ap.add_argument("--samples", type=int, default=64, help="training samples per pass")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--md", default=None, help="also write the results as markdown to this file")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        paths, what = get_videos(args.source, work, args.videos)
        infos = [probe_video(p) for p in paths]
        items = make_items(paths, args.samples)
        rows = []  # (name, median frames/s, all rates)

        for w in args.workers:
            rates, cpu = time_loader(items, w, args.repeats)
            name = "DataLoader, in-process (num_workers=0)" if w == 0 else f"DataLoader, {w} worker process{'es' if w > 1 else ''}"
            rows.append((name, statistics.median(rates), rates, statistics.median(cpu)))

        # Why video._to_rgb reuses one single-threaded swscale context: the naive per-frame conversion, side by side.
        from locvtp.data import video as V

        ds = ClipDataset(items)
        fast_rgb = V._to_rgb
        try:
            V._to_rgb = lambda frame, w, h: frame.to_ndarray(format="rgb24", width=w, height=h)
            rates, cpu = time_inprocess(lambda: [ds[i] for i in range(len(ds))], len(items) * T * F, args.repeats)
        finally:
            V._to_rgb = fast_rgb
        rows.append(("decode_clips in-process, naive per-frame `to_ndarray` (for comparison)",
                     statistics.median(rates), rates, statistics.median(cpu)))

        # Whole-video decode (what building a cache costs) and the in-memory sampler (what a cache gives).
        sub = paths[: min(4, len(paths))]
        n_src = sum(probe_video(p).num_frames for p in sub)
        rates, cpu = time_inprocess(lambda: [decode_frames(p) for p in sub], n_src, args.repeats)
        rows.append(("decode_frames (whole video, source frames/s, in-process)", statistics.median(rates), rates,
                     statistics.median(cpu)))
        cache = {str(p): decode_frames(p) for p in paths}

        def from_cache():
            for path, s, e, seed in items:
                fr, tm = cache[path]
                sample_clips(fr, tm, clip_windows(s, e, T), F, SIZE, jitter=True, rng=np.random.default_rng(seed))

        rates, cpu = time_inprocess(from_cache, len(items) * T * F, args.repeats)
        rows.append(("sample_clips on in-memory frames (in-process)", statistics.median(rates), rates,
                     statistics.median(cpu)))

    base = {w: r for w, r in zip(args.workers, rows)}
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    lines = [
        f"Videos: {what}; {len(paths)} files, mean duration {np.mean([i.duration for i in infos]):.1f} s, "
        f"{infos[0].width}x{infos[0].height} @ {infos[0].fps:g} fps.",
        f"Samples: {len(items)} random {WINDOW_S:g}-s windows -> T={T} clips x F={F} frames, {SIZE}x{SIZE}, jitter; "
        f"batch 8; median of {args.repeats} passes after one warm-up.",
        f"Machine: {os.cpu_count()} CPUs, load average {load[0]:.1f} at the end (shared machine: absolute numbers are noisy), "
        f"Python {platform.python_version()}.",
        "",
        "| path | clip frames/s (median, wall) | samples/s | frames per CPU-second (median) | all passes (wall) |",
        "|---|---:|---:|---:|---|",
    ]
    for name, med, rates, cpu in rows:
        per_sample = "" if name.startswith("decode_frames") else f"{med / (T * F):.1f}"
        lines.append(f"| {name} | {med:,.0f} | {per_sample} | {cpu:,.0f} | {', '.join(f'{r:,.0f}' for r in rates)} |")
    lines.append("")
    if 1 in base and 2 in base:
        lines.append(f"Ratio 2 workers / 1 worker: **{base[2][1] / base[1][1]:.2f}x**.")
    if 0 in base and 1 in base:
        lines.append(f"Ratio 1 worker / in-process: {base[1][1] / base[0][1]:.2f}x.")
    if 0 in base:
        lines.append(f"Ratio in-memory sampler / file decoding, both in-process: {rows[-1][1] / base[0][1]:.1f}x.")
        naive = next(r for r in rows if "naive" in r[0])
        lines.append(f"Ratio reused single-threaded converter / naive per-frame `to_ndarray`: {base[0][1] / naive[1]:.2f}x "
                     f"wall, {base[0][3] / naive[3]:.2f}x per CPU-second.")
    text = "\n".join(lines)
    print(text)
    if args.md:
        md = Path(args.md)
        md.parent.mkdir(parents=True, exist_ok=True)
        tmp_md = md.with_name(f".{md.name}.tmp")
        tmp_md.write_text(f"# Decode benchmark\n\n`{' '.join(['python benchmarks/bench_decode.py'] + (argv if argv is not None else sys.argv[1:]))}`\n\n{text}\n")
        os.replace(tmp_md, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
