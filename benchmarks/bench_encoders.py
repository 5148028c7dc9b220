"""Encoder speed on CPU: median wall time of forward and forward+backward for each encoder at training sizes.

    python benchmarks/bench_encoders.py [--threads 2] [--repeats 7] [--batch 32] [--clips 8]

Prints one table (milliseconds, median of ``--repeats`` runs after warm-up) and side-by-side ratios for the
choices that matter on CPU: GroupNorm vs BatchNorm in tiny3d, and how much of a pixel step is the video tower.
"""
from __future__ import annotations

import argparse
import statistics
import os
import time

import torch
from tqdm import tqdm

from locvtp.config import load_config
from locvtp.model import LocVTP


def _time_once(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _make_fns(overrides, make_inputs):
    torch.manual_seed(0)
    model = LocVTP.from_config(load_config(None, overrides))
    clips, clip_mask, ids, mask = make_inputs(model)

    def video_fwd():
        model.eval()
        with torch.no_grad():
            model.encode_video(clips, clip_mask)

    def text_fwd():
        model.eval()
        with torch.no_grad():
            model.encode_text(ids, mask)

    def step():
        model.train()
        model.zero_grad(set_to_none=True)
        c = model.encode_video(clips, clip_mask)
        w, s = model.encode_text(ids, mask)
        (c.sum() + w.sum() + s.sum()).backward()

    return model, (video_fwd, text_fwd, step)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--words", type=int, default=24)
    ap.add_argument("--only", nargs="*", default=None, help="run only rows whose name contains one of these")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    B, T, L = args.batch, args.clips, args.words

    def inputs(feature_dim=None, f=4, size=32):
        def make(model):
            g = torch.Generator().manual_seed(0)
            if feature_dim is None:
                clips = torch.randint(0, 256, (B, T, f, size, size, 3), generator=g, dtype=torch.uint8)
            else:
                clips = torch.randn(B, T, feature_dim, generator=g)
            clip_mask = torch.ones(B, T, dtype=torch.bool)
            ids = torch.randint(5, model.text_encoder.vocab_size if hasattr(model.text_encoder, "vocab_size")
                                else 100, (B, L), generator=g)
            lengths = torch.randint(4, L + 1, (B,), generator=g)
            mask = torch.arange(L).unsqueeze(0) < lengths.unsqueeze(1)
            return clips, clip_mask, ids * mask, mask
        return make

    rows = [
        ("tiny3d w32 GroupNorm (default)", [], inputs()),
        ("tiny3d w32 BatchNorm", ["model.video.norm=batch"], inputs()),
        ("tiny3d w32 + 1 temporal layer", ["model.video.temporal_layers=1"], inputs()),
        ("features 512-d (S3D-like)", ["model.video.name=features", "model.video.in_dim=512"], inputs(512)),
        ("features 4096-d + 2 temporal layers", ["model.video.name=features", "model.video.in_dim=4096",
                                                 "model.video.temporal_layers=2"], inputs(4096)),
    ]
    rows = [r for r in rows if not args.only or any(o in r[0] for o in args.only)]
    print(f"torch {torch.__version__}, threads={args.threads}, B={B}, T={T}, F=4, 32x32 pixels, L={L}, "
          f"median of {args.repeats}")
    print(f"{'encoder':40s} {'params':>8s} {'video fwd ms':>13s} {'text fwd ms':>12s} {'step fwd+bwd ms':>16s}")
    built = [(name, *_make_fns(ov, make)) for name, ov, make in rows]
    samples = {name: ([], [], []) for name, _, _ in built}
    # Interleaved: every repeat times every configuration once, so load from other processes hits all rows alike.
    for r in tqdm(range(args.repeats + 2), desc="repeats", leave=False):
        for name, _, fns in built:
            for i, fn in enumerate(fns):
                t = _time_once(fn)
                if r >= 2:  # first two rounds are warm-up
                    samples[name][i].append(t)
    results = {}
    for name, model, _ in built:
        vf, tf, fb = (1000.0 * statistics.median(x) for x in samples[name])
        results[name] = (vf, tf, fb)
        print(f"{name:40s} {model.num_parameters() / 1e6:7.2f}M {vf:13.1f} {tf:12.1f} {fb:16.1f}")
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    if "tiny3d w32 GroupNorm (default)" in results and "tiny3d w32 BatchNorm" in results:
        gn, bn = results["tiny3d w32 GroupNorm (default)"], results["tiny3d w32 BatchNorm"]
        print(f"ratio GroupNorm/BatchNorm: video fwd {gn[0] / bn[0]:.2f}x, step {gn[2] / bn[2]:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
