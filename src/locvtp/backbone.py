"""`locvtp backbone`: supervised pre-training of the pixel backbone on labelled action videos.

Why: video–text pre-training in the literature does not start from a blank video network. LocVTP's released code
runs C3D (Sports-1M weights), MIL-NCE-style work uses S3D/I3D trained on Kinetics, and most users feed
pre-extracted backbone features. A backbone that already responds to *what moves how* is what lets the
clip-level objectives find clip–word correspondences at all: trained from scratch on narrated windows alone, our
tiny3d learns which objects are on screen and never which one acts (docs/results.md). This command is the
Kinetics step for the synthetic world — or for any labelled set in MSR-VTT layout (``MSRVTT_data.json`` with a
``category`` per video, a train-id CSV): every ``clip_seconds`` clip of a training video is labelled with its
video's category and a ``tiny3d`` network plus a linear classifier is trained with cross-entropy. The classifier is
dropped; the backbone is written as safetensors for ``model.video.pretrained`` (same ``width`` and ``norm``).

Only the training split is used for training (never the retrieval test videos); held-out clip accuracy on the
other labelled videos is printed and stored next to the weights. Unreadable videos are skipped, counted and
reported (``--strict`` makes them fatal). The file is written atomically (temporary file, then ``os.replace``).

    locvtp backbone --data world --out world/backbone_tiny3d.safetensors
    locvtp pretrain --config configs/pretrain_synthetic.yaml --out runs/x data.root=world \\
        model.video.pretrained=world/backbone_tiny3d.safetensors
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np


@dataclass
class BackboneResult:
    path: str
    classes: int
    train_clips: int
    heldout_clips: int
    heldout_accuracy: Optional[float]
    steps: int
    seconds: float
    skipped: list[dict] = field(default_factory=list)


def labelled_clips(data: Path, msrvtt: str, train_split: Optional[str], clip_seconds: float, frames_per_clip: int,
                   frame_size: int, strict: bool = False, progress: bool = True):
    """Decode every labelled video into uint8 clips [N,F,S,S,3] with the video's category, split into
    (train, held-out) by the train-id CSV (or the JSON's ``split`` field when no CSV is given)."""
    from tqdm import tqdm

    from locvtp.data.formats import read_msrvtt_data, read_msrvtt_split_csv
    from locvtp.data.video import decode_frames, sample_clips

    meta = read_msrvtt_data(data / msrvtt, strict=strict)
    videos = [v for v in meta.records if v.category is not None]
    if not videos:
        raise SystemExit(f"locvtp backbone: {data / msrvtt} has no video with a 'category': nothing to learn from")
    train_ids = set(read_msrvtt_split_csv(data / train_split, strict=strict).records) if train_split else None
    skipped = [{"source": f"{b.file}: {b.location}", "reason": b.reason} for b in meta.skipped]
    parts: dict[str, tuple[list[np.ndarray], list[int]]] = {"train": ([], []), "heldout": ([], [])}
    rng = np.random.default_rng(0)
    for v in tqdm(videos, desc="decoding labelled videos", unit="video", disable=not progress):
        path = data / v.url if v.url else data / "videos" / f"{v.video_id}.mp4"
        try:
            frames, times = decode_frames(path, size=frame_size)
            if frames.shape[0] == 0:
                raise OSError("no decodable frames")
            end = float(v.end) if v.end is not None else float(times[-1]) + 1e-3
            start = float(v.start or 0.0)
            n = max(1, int(math.floor((end - start) / clip_seconds + 1e-6)))
            win = start + np.stack([np.arange(n), np.arange(n) + 1.0], 1) * clip_seconds
            clips = sample_clips(frames, times, win, frames_per_clip, frame_size, False, rng,
                                 duration=end, source=v.video_id)
        except Exception as exc:  # noqa: BLE001 - one bad video must not end the run
            if strict:
                raise SystemExit(f"locvtp backbone: {path}: unreadable video: {exc}") from exc
            skipped.append({"source": str(path), "reason": f"{type(exc).__name__}: {exc}"})
            continue
        is_train = (v.video_id in train_ids) if train_ids is not None else (v.split == "train")
        xs, ys = parts["train" if is_train else "heldout"]
        xs.append(clips)
        ys += [int(v.category)] * len(clips)
    out = {}
    for k, (xs, ys) in parts.items():
        out[k] = (np.concatenate(xs) if xs else np.zeros((0, frames_per_clip, frame_size, frame_size, 3), np.uint8),
                  np.asarray(ys, dtype=np.int64))
    return out["train"], out["heldout"], skipped


def train_backbone(args: argparse.Namespace, progress: bool = True) -> BackboneResult:
    import torch
    from safetensors.torch import save_file
    from torch import nn
    from tqdm import tqdm

    from locvtp.model.video import Tiny3D

    t0 = time.time()
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = Path(args.data)
    (xtr, ytr), (xte, yte), skipped = labelled_clips(data, args.msrvtt, args.train_split, args.clip_seconds,
                                                   args.frames_per_clip, args.frame_size, args.strict, progress)
    if len(xtr) == 0:
        raise SystemExit(f"locvtp backbone: no training clip (train split {args.train_split} matched no labelled video)")
    classes = int(max(ytr.max(), yte.max() if len(yte) else 0)) + 1
    net = Tiny3D(args.width, args.norm, dropout=0.1)
    head = nn.Linear(net.out_dim, classes)
    params = list(net.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(1, args.warmup)) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / args.steps))))
    x_all, y_all = torch.from_numpy(xtr), torch.from_numpy(ytr)
    gen = torch.Generator().manual_seed(args.seed)
    bar = tqdm(range(args.steps), desc="backbone", unit="step", disable=not progress)
    for _ in bar:
        idx = torch.randint(len(x_all), (min(args.batch_size, len(x_all)),), generator=gen)
        clips = x_all[idx]  # no flip augmentation: a flip turns "moves left" into "moves right"
        loss = nn.functional.cross_entropy(head(net(clips)), y_all[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    acc = None
    if len(xte):
        net.eval()
        with torch.no_grad():
            pred = torch.cat([head(net(torch.from_numpy(xte[i:i + 256]))).argmax(1) for i in range(0, len(xte), 256)])
        acc = float((pred.numpy() == yte).mean())
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp),
              metadata={"encoder": "tiny3d", "width": str(args.width), "norm": args.norm})
    os.replace(tmp, out)
    res = BackboneResult(str(out), classes, len(xtr), len(xte), acc, args.steps, round(time.time() - t0, 1), skipped)
    side = out.with_suffix(".json")
    tmp = side.with_name(side.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({**asdict(res), "args": vars(args)}, indent=1, default=str), encoding="utf-8")
    os.replace(tmp, side)
    return res


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="locvtp backbone", description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", required=True, help="data root (a synthetic world or the same layout)")
    p.add_argument("--out", required=True, help="output .safetensors (a .json summary is written next to it)")
    p.add_argument("--msrvtt", default="retrieval/MSRVTT_data.json", help="labelled videos, relative to --data")
    p.add_argument("--train-split", default="retrieval/MSRVTT_train.9k.csv",
                   help="CSV of training video ids, relative to --data ('' = use the JSON's split field)")
    p.add_argument("--width", type=int, default=16, help="tiny3d width (must match model.video.width)")
    p.add_argument("--norm", default="group", help="tiny3d normalisation (must match model.video.norm)")
    p.add_argument("--clip-seconds", type=float, default=1.0)
    p.add_argument("--frames-per-clip", type=int, default=4)
    p.add_argument("--frame-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (0 = torch's default)")
    p.add_argument("--strict", action="store_true", help="an unreadable video or bad row is an error")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.train_split = args.train_split or None
    res = train_backbone(args, progress=not args.quiet)
    acc = "n/a (no held-out labelled video)" if res.heldout_accuracy is None else f"{100 * res.heldout_accuracy:.1f} %"
    print(f"[backbone] {res.path}: tiny3d trained on {res.train_clips} clips ({res.classes} classes, {res.steps} steps, "
          f"{res.seconds:.0f} s); held-out clip accuracy {acc} on {res.heldout_clips} clips; "
          f"skipped {len(res.skipped)} bad videos/rows")
    for s in res.skipped[:10]:
        print(f"  skipped {s['source']}: {s['reason']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
