"""Can the pixel encoder see the actions at all? tiny3d trained *supervised* on the world's 1-s clips.

The control for `locvtp.diagnostics.action_probe`: if a from-scratch tiny3d, trained with cross-entropy on the action
under way in each 1-s clip of the pre-training videos (labels from ``ground_truth.json``: 7 actions + "none"),
classifies held-out clips well, then the encoder and the clip sampling are able to represent motion, and a
pre-trained model whose clip embeddings do not encode the action failed to learn it from its objective.
Clips of every 5th video are held out. Prints held-out accuracy (overall and per class) during training.

    python -m locvtp.diagnostics.supervised_probe --world demo_run/world
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from locvtp.diagnostics.action_probe import ACTIONS, clip_labels  # the same clip labels as the linear probe


def world_clips(world: Path, frames_per_clip: int = 4, size: int = 32):
    from locvtp.data.video import decode_frames, sample_clips

    gt = json.loads((world / "ground_truth.json").read_text())
    parts = {"train": ([], []), "test": ([], [])}
    rng = np.random.default_rng(0)
    for k, vid in enumerate(sorted(v for v, g in gt.items() if g["split"] == "pretrain")):
        g = gt[vid]
        frames, times = decode_frames(world / "videos" / f"{vid}.mp4", size=size)
        n = int(g["duration"])
        win = np.stack([np.arange(n), np.arange(n) + 1.0], 1).astype(np.float64)
        clips = sample_clips(frames, times, win, frames_per_clip, size, False, rng, duration=g["duration"], source=vid)
        xs, ys = parts["test" if k % 5 == 0 else "train"]
        xs.append(clips)
        ys += clip_labels(g["events"], n, 1.0)
    return {p: (torch.from_numpy(np.concatenate(x)), torch.tensor(y)) for p, (x, y) in parts.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--world", required=True, type=Path)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=64)
    a = ap.parse_args()
    from locvtp.model.video import Tiny3D

    torch.set_num_threads(1)
    torch.manual_seed(0)
    data = world_clips(a.world)
    (xtr, ytr), (xte, yte) = data["train"], data["test"]
    print(f"train clips {len(xtr)}, held-out clips {len(xte)}, held-out majority class "
          f"{np.bincount(yte.numpy()).max() / len(yte):.3f}")
    net = Tiny3D(a.width)
    head = nn.Linear(net.out_dim, len(ACTIONS))
    opt = torch.optim.AdamW(list(net.parameters()) + list(head.parameters()), lr=1e-3, weight_decay=0.05)
    t0 = time.time()
    for step in range(1, a.steps + 1):
        idx = torch.randint(len(xtr), (a.batch_size,))
        loss = nn.functional.cross_entropy(head(net(xtr[idx])), ytr[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 250 == 0 or step == a.steps:
            net.eval()
            with torch.no_grad():
                pred = torch.cat([head(net(xte[i:i + 256])).argmax(1) for i in range(0, len(xte), 256)])
            net.train()
            per = [float(((pred == yte) & (yte == k)).sum() / max(1, int((yte == k).sum()))) for k in range(len(ACTIONS))]
            print(f"step {step}: loss {loss.item():.3f}, held-out accuracy {float((pred == yte).float().mean()):.3f} "
                  f"(per class {', '.join(f'{c} {p:.2f}' for c, p in zip(ACTIONS, per))}) [{time.time() - t0:.0f} s]",
                  flush=True)


if __name__ == "__main__":
    main()
