"""Do clip embeddings tell the moments of one video apart? Mean cosine between clips of one video vs of others.

A model that localizes must give different embeddings to different moments of the same video; the demo's
finding (docs/results.md) is that ours do not. For each checkpoint, the first N held-out grounding videos of a
synthetic world are embedded with `locvtp.inference.embed_video_file` and two means are printed.

    python -m locvtp.diagnostics.clip_similarity --world demo_run/world demo_run/runs/random demo_run/runs/coarse demo_run/runs/locvtp
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch


def clip_similarity(checkpoint: str, world: Path, num_videos: int = 12) -> tuple[float, float]:
    from locvtp.checkpoint import load_checkpoint, resolve_checkpoint
    from locvtp.data.formats import read_activitynet_captions
    from locvtp.inference import embed_video_file
    from locvtp.predictor import Preprocessing

    queries = read_activitynet_captions(world / "grounding" / "activitynet" / "val_1.json").records
    vids = sorted({q.video_id for q in queries})[:num_videos]
    ck = load_checkpoint(resolve_checkpoint(checkpoint))
    d = Preprocessing.from_config(ck.cfg)  # the checkpoint's preprocessing, as every command reads it
    embs = [embed_video_file(ck.model, world / "videos" / f"{v}.mp4", clip_seconds=d.clip_seconds,
                             stride_seconds=d.stride_seconds, frames_per_clip=d.frames_per_clip,
                             frame_size=d.frame_size).features for v in vids]
    within = float(np.mean([(e @ e.T)[np.triu_indices(len(e), 1)].mean() for e in embs]))
    between = float(np.mean([(a @ b.T).mean() for i, a in enumerate(embs) for j, b in enumerate(embs) if i != j]))
    return within, between


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoints", nargs="+", help="checkpoint or run directories")
    ap.add_argument("--world", required=True, type=Path)
    ap.add_argument("--videos", type=int, default=12)
    a = ap.parse_args()
    torch.set_num_threads(1)
    print("| checkpoint | clips of one video | clips of different videos |\n|---|---:|---:|")
    for ck in a.checkpoints:
        w, b = clip_similarity(ck, a.world, a.videos)
        print(f"| {ck} | {w:.3f} | {b:.3f} |")
