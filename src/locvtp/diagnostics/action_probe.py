"""Do a checkpoint's embeddings encode *what happens*, or only *what is shown*? Two diagnostics on a synthetic world.

1. **Clip action probe.** Every 1-s clip of the world's pre-training videos is embedded (`embed_video_file`) and
   labelled from ``ground_truth.json`` with the action under way at its centre (7 actions + "none"). A linear
   classifier is trained on the clips of 4/5 of the videos and tested on the other 1/5. Accuracy near the
   majority class means the clip embedding carries no action information: the model cannot localize.
2. **Text action sensitivity.** Mean cosine between sentence embeddings of "the <colour> <shape> <action>"
   sentences that share the object but differ in the action, and that share the action but differ in the object.
   A text encoder that ignores action words gives ≈ 1 for the first.

    python -m locvtp.diagnostics.action_probe --world demo_run/world demo_run/runs/random demo_run/runs/coarse demo_run/runs/locvtp
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

ACTIONS = ["none", "move_left", "move_right", "move_up", "move_down", "grow", "shrink", "blink"]


def clip_labels(events: list[dict], n: int, clip_seconds: float) -> list[int]:
    out = []
    for t in range(n):
        centre = (t + 0.5) * clip_seconds
        lab = 0
        for e in events:
            if e["start"] <= centre < e["end"]:
                lab = ACTIONS.index(e["action"])
        out.append(lab)
    return out


def action_probe(checkpoint: str, world: Path, max_videos: int = 400, seed: int = 0) -> dict:
    from locvtp.checkpoint import load_checkpoint, resolve_checkpoint
    from locvtp.inference import embed_texts, embed_video_file
    from locvtp.predictor import Preprocessing

    ck = load_checkpoint(resolve_checkpoint(checkpoint))
    d = Preprocessing.from_config(ck.cfg)  # the checkpoint's preprocessing, as every command reads it
    gt = json.loads((world / "ground_truth.json").read_text())
    vids = sorted(v for v, g in gt.items() if g["split"] == "pretrain")[:max_videos]
    feats: dict[str, list] = {"train": [], "test": []}
    labels: dict[str, list] = {"train": [], "test": []}
    for k, vid in enumerate(vids):
        emb = embed_video_file(ck.model, world / "videos" / f"{vid}.mp4", clip_seconds=d.clip_seconds,
                               stride_seconds=d.stride_seconds, frames_per_clip=d.frames_per_clip,
                               frame_size=d.frame_size).features
        part = "test" if k % 5 == 0 else "train"
        feats[part].append(emb)
        labels[part] += clip_labels(gt[vid]["events"], len(emb), float(d.clip_seconds))
    xtr, xte = (torch.tensor(np.concatenate(feats[p]), dtype=torch.float32) for p in ("train", "test"))
    ytr, yte = (torch.tensor(labels[p]) for p in ("train", "test"))
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
    torch.manual_seed(seed)
    head = torch.nn.Linear(xtr.shape[1], len(ACTIONS))
    opt = torch.optim.Adam(head.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(500):
        loss = torch.nn.functional.cross_entropy(head((xtr - mu) / sd), ytr)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        acc = float((head((xte - mu) / sd).argmax(1) == yte).float().mean())
    majority = float(np.bincount(yte.numpy(), minlength=len(ACTIONS)).max() / len(yte))

    objs = [("red", "ball"), ("blue", "square"), ("green", "triangle"), ("white", "diamond")]
    acts = ["moves left", "moves right", "rises", "grows", "shrinks", "blinks"]
    texts = [f"the {c} {s} {a}" for c, s in objs for a in acts]
    s = embed_texts(ck.model, ck.tokenizer, texts, max_words=int(d.max_words)).sentence
    s = s / np.linalg.norm(s, axis=1, keepdims=True)
    cos = s @ s.T
    n, A = len(texts), len(acts)
    same_obj = float(np.mean([cos[i, j] for i in range(n) for j in range(n) if i != j and i // A == j // A]))
    same_act = float(np.mean([cos[i, j] for i in range(n) for j in range(n) if i != j and i % A == j % A]))
    return {"probe_acc": acc, "majority": majority, "test_clips": len(yte),
            "text_cos_same_object": same_obj, "text_cos_same_action": same_act}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoints", nargs="+", help="checkpoint or run directories")
    ap.add_argument("--world", required=True, type=Path)
    ap.add_argument("--videos", type=int, default=400, help="pre-training videos to use (at most)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    print("| checkpoint | clip action probe acc | majority class | text cos, same object / other action "
          "| text cos, same action / other object |")
    print("|---|---:|---:|---:|---:|")
    for c in a.checkpoints:
        r = action_probe(c, a.world, a.videos)
        print(f"| {c} | {r['probe_acc']:.3f} | {r['majority']:.3f} | {r['text_cos_same_object']:.3f} "
              f"| {r['text_cos_same_action']:.3f} |", flush=True)
