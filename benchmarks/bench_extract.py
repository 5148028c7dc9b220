"""Extraction throughput on the synthetic world: clips/s for decode, encode, and the whole `locvtp extract` run.

Prints decode-only, encode-only and end-to-end clips/s (median of ``--repeats`` runs) for the default model size
(tiny3d, 32x32 frames, 4 frames/clip) with a random initialisation (speed does not depend on the weights) or
``--checkpoint``. End-to-end = ``locvtp extract`` into a fresh HDF5 file (decode in a prefetch thread overlapped
with the encoder, per-video journal with fsync, final HDF5 assembly; model loading excluded).

    .venv/bin/python benchmarks/bench_extract.py [--world DIR | --preset tiny] [--threads 2]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--world", default=None, help="synthetic world dir (default: generate one in a temp dir)")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-clips", type=int, default=64)
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from locvtp.checkpoint import load_checkpoint, save_checkpoint
    from locvtp.config import default_config
    from locvtp.world.generate import generate_world
    from locvtp.data.tokenizer import train_tokenizer
    from locvtp.commands.extract import build_parser
    from locvtp.extraction import run_extract
    from locvtp.inference import decode_video_clips, encode_clip_sequence
    from locvtp.model import LocVTP

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        world = Path(args.world) if args.world else tmp / "world"
        if not args.world:
            generate_world(world, seed=0, preset=args.preset, progress=False)
        ckpt = args.checkpoint
        if ckpt is None:
            cfg = default_config()
            tok = train_tokenizer(["a red circle moves left", "the blue square grows"], vocab_size=100)
            cfg.model.text.vocab_size = tok.vocab_size
            torch.manual_seed(0)
            ckpt = str(save_checkpoint(tmp / "ckpt", LocVTP.from_config(cfg), cfg, tok))
        ck = load_checkpoint(ckpt)
        d = ck.cfg.data
        videos = sorted((world / "videos").glob("*.mp4"))
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"# bench_extract: {len(videos)} videos, {args.threads} torch threads, model "
              f"{ck.model.summary() if hasattr(ck.model, 'summary') else type(ck.model).__name__}, "
              f"{d.frames_per_clip} frames x {d.frame_size}px per clip, load average {load:.1f}")

        dec_rates, enc_rates, e2e_rates = [], [], []
        for r in range(args.repeats):
            t0 = time.perf_counter()
            decoded = [decode_video_clips(v, d.clip_seconds, None, d.frames_per_clip, d.frame_size) for v in videos]
            t_dec = time.perf_counter() - t0
            n = sum(x.clips.shape[0] for x in decoded)
            t0 = time.perf_counter()
            for x in decoded:
                encode_clip_sequence(ck.model, x.clips, batch_clips=args.batch_clips)
            t_enc = time.perf_counter() - t0
            out = tmp / f"f{r}.h5"
            a = build_parser().parse_args(["--checkpoint", ckpt, "--videos", str(world / "videos"), "--out", str(out),
                                           "--threads", str(args.threads), "--batch-clips", str(args.batch_clips),
                                           "--device", "cpu"])
            s = run_extract(a, progress=False)
            dec_rates.append(n / t_dec)
            enc_rates.append(n / t_enc)
            e2e_rates.append(s.clips / s.loop_seconds)
        print(f"clips per run: {n}")
        print(f"{'stage':<28}{'clips/s (median)':>18}{'min':>10}{'max':>10}")
        for name, rates in (("decode (PyAV, 1 thread)", dec_rates), ("encode (model)", enc_rates),
                            ("end-to-end `locvtp extract`", e2e_rates)):
            print(f"{name:<28}{np.median(rates):>18.1f}{min(rates):>10.1f}{max(rates):>10.1f}")
        serial = 1.0 / (1.0 / np.median(dec_rates) + 1.0 / np.median(enc_rates))
        print(f"serial decode+encode would give {serial:.1f} clips/s; end-to-end / serial = "
              f"{np.median(e2e_rates) / serial:.2f}x (overlap of decode and encode)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
