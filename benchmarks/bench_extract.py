"""Extraction throughput: decode-only, encode-only, serial and end-to-end clips/s, on the tiny world AND on long videos.

For each input set (the tiny synthetic world; ``--long-videos`` generated H.264 videos of ``--long-seconds`` at
320x240, 25 fps, written with PyAV) the script prints, in one run (medians of ``--repeats``):

* decode only: the pipeline's decoding (:class:`locvtp.extract_pipeline.ClipChunks`) in this process, 1 thread;
* encode only: :class:`locvtp.inference.ClipBatchEncoder` on the already decoded clips, batches of
  ``--batch-size``, ``--threads`` torch threads;
* serial: what decode then encode would give, ``1 / (1/decode + 1/encode)``;
* end to end: ``locvtp extract`` into a fresh HDF5 file with ``--workers`` decoding processes (journal, final
  assembly; model loading excluded), and its ratio to serial.

The model is the default size (tiny3d, 32x32 frames, 4 frames/clip) with a random initialisation (speed does
not depend on the weights) or ``--checkpoint``. torchcodec against PyAV on the same clips: ``bench_codec.py``.

    nice -n 19 .venv/bin/python benchmarks/bench_extract.py [--threads 2] [--workers 1] [--long-videos 3]
        [--runner ray]
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def make_long_videos(out: Path, n: int, seconds: float, fps: int = 25) -> list[Path]:
    """``n`` H.264 320x240 videos of moving shapes on a textured background (so the codec has real work)."""
    import av

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    yy, xx = np.mgrid[0:240, 0:320]
    for v in range(n):
        p = out / f"long_{v:02d}.mp4"
        rng = np.random.default_rng(v)
        base = (rng.integers(0, 60, (240, 320, 3))).astype(np.uint8)
        with av.open(str(p), "w") as c:
            s = c.add_stream("libx264", rate=fps)
            s.width, s.height, s.pix_fmt = 320, 240, "yuv420p"
            s.options = {"preset": "veryfast", "crf": "23"}
            for i in range(int(seconds * fps)):
                img = base.copy()
                cx, cy = 160 + 120 * np.sin(i / 40 + v), 120 + 90 * np.cos(i / 55 + 2 * v)
                img[(xx - cx) ** 2 + (yy - cy) ** 2 < 900] = (200, 40 + 7 * v, 90)
                img[int(cy) % 200:int(cy) % 200 + 30, (3 * i) % 290:(3 * i) % 290 + 30] = (30, 180, 220)
                for pkt in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    c.mux(pkt)
            for pkt in s.encode():
                c.mux(pkt)
        paths.append(p)
    return paths


def measure(name: str, vdir: Path, ckpt: str, prep, model, args, tmp: Path) -> dict:
    import torch

    from locvtp.commands.extract import build_parser
    from locvtp.extract_pipeline import ClipChunks, WindowClips
    from locvtp.extraction import RECORDED_ERRORS, VideoItem, run_extract
    from locvtp.inference import ClipBatchEncoder

    items = [VideoItem(p.stem, p) for p in sorted(vdir.glob("*.mp4"))]
    enc = ClipBatchEncoder(model, "cpu")
    dec, encr, e2e = [], [], []
    for r in range(args.repeats):
        torch.set_num_threads(1)
        t0 = time.perf_counter()
        chunks = [c["clips"] for c in ClipChunks(items, WindowClips(prep), RECORDED_ERRORS)]
        t_dec = time.perf_counter() - t0
        clips = torch.from_numpy(np.concatenate(chunks))
        n = clips.shape[0]
        torch.set_num_threads(args.threads)
        t0 = time.perf_counter()
        for lo in range(0, n, args.batch_size):
            enc.clips(clips[lo:lo + args.batch_size])
        t_enc = time.perf_counter() - t0
        out = tmp / f"{name}{r}.h5"
        a = build_parser().parse_args(["--checkpoint", ckpt, "--videos", str(vdir), "--out", str(out),
                                       "--threads", str(args.threads), "--batch-size", str(args.batch_size),
                                       "--workers", str(args.workers), "--device", "cpu", "--runner", args.runner])
        s = run_extract(a, progress=False)
        assert s.clips == n and s.failed == 0, (s.clips, n, s.failed)
        dec.append(n / t_dec)
        encr.append(n / t_enc)
        e2e.append(s.clips / s.loop_seconds)
    d, e, x = (float(np.median(v)) for v in (dec, encr, e2e))
    serial = 1.0 / (1.0 / d + 1.0 / e)
    return {"name": name, "videos": len(items), "clips": n, "decode": d, "encode": e, "serial": serial, "e2e": x,
            "ratio": x / serial, "e2e_runs": e2e}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--world", default=None, help="synthetic world dir (default: generate the tiny one)")
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--threads", type=int, default=2, help="torch threads of the encoder")
    p.add_argument("--workers", type=int, default=1, help="decoding processes of the end-to-end run")
    p.add_argument("--long-workers", type=int, default=2, help="decoding processes for the long videos")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--long-videos", type=int, default=3)
    p.add_argument("--long-seconds", type=float, default=120.0)
    p.add_argument("--runner", choices=("local", "ray"), default="local",
                   help="end to end on this machine's pipeline or on Ray Data (a local Ray instance started once, "
                   "before the measurements: its start-up is not in the figures)")
    args = p.parse_args(argv)
    if args.runner == "ray":
        from locvtp.extract_ray import require_ray

        t0 = time.perf_counter()
        require_ray().init(num_cpus=max(args.workers, args.long_workers) + 1, include_dashboard=False,
                           log_to_driver=False, logging_level="WARNING")
        print(f"# ray: local instance started in {time.perf_counter() - t0:.1f} s")

    import torch

    from locvtp.checkpoint import load_checkpoint, save_checkpoint
    from locvtp.config import default_config
    from locvtp.data.tokenizer import train_tokenizer
    from locvtp.model import LocVTP
    from locvtp.predictor import Preprocessing
    from locvtp.world.generate import generate_world

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        world = Path(args.world) if args.world else tmp / "world"
        if not args.world:
            generate_world(world, seed=0, preset="tiny", progress=False)
        ckpt = args.checkpoint
        if ckpt is None:
            cfg = default_config()
            tok = train_tokenizer(["a red circle moves left", "the blue square grows"], vocab_size=100)
            cfg.model.text.vocab_size = tok.vocab_size
            torch.manual_seed(0)
            ckpt = str(save_checkpoint(tmp / "ckpt", LocVTP.from_config(cfg), cfg, tok))
        ck = load_checkpoint(ckpt)
        prep = Preprocessing.from_config(ck.cfg)
        t0 = time.perf_counter()
        make_long_videos(tmp / "long", args.long_videos, args.long_seconds)
        t_gen = time.perf_counter() - t0
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"# bench_extract: CPU {cpu_model()} x {os.cpu_count()}, torch {torch.__version__}, {args.threads} "
              f"encoder threads, batch {args.batch_size}, {prep.frames_per_clip} frames x {prep.frame_size}px per "
              f"clip of {prep.clip_seconds:g} s, load average {load:.1f} at start")
        print(f"# long videos: {args.long_videos} x {args.long_seconds:g} s 320x240 H.264 25 fps "
              f"(generated in {t_gen:.1f} s)")
        tiny_workers = args.workers
        rows = [measure("tiny", world / "videos", ckpt, prep, ck.model, args, tmp)]
        args.workers = args.long_workers
        rows.append(measure("long", tmp / "long", ckpt, prep, ck.model, args, tmp))
        print(f"{'input':<8}{'videos':>7}{'clips':>7}{'decode':>10}{'encode':>10}{'serial':>10}{'end2end':>10}"
              f"{'e2e/serial':>12}  (clips/s, medians)")
        for r in rows:
            print(f"{r['name']:<8}{r['videos']:>7}{r['clips']:>7}{r['decode']:>10.1f}{r['encode']:>10.1f}"
                  f"{r['serial']:>10.1f}{r['e2e']:>10.1f}{r['ratio']:>11.2f}x  runs "
                  + " ".join(f"{v:.0f}" for v in r["e2e_runs"]))
        print(f"# end to end (--runner {args.runner}): --workers {tiny_workers} (tiny), "
              f"--workers {args.long_workers} (long); load average {os.getloadavg()[0]:.1f} at the end")
        print("# decoding is PyAV's; torchcodec against PyAV on the same clips: benchmarks/bench_codec.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
