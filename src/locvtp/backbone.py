"""`locvtp backbone`: supervised pre-training of the pixel backbone on labelled action videos.

Why: video–text pre-training in the literature does not start from a blank video network. LocVTP's released code
runs C3D (Sports-1M weights), MIL-NCE-style work uses S3D/I3D trained on Kinetics, and most users feed
pre-extracted backbone features. A backbone that already responds to *what moves how* is what lets the
clip-level objectives find clip–word correspondences at all: trained from scratch on narrated windows alone, our
tiny3d learns which objects are on screen and never which one acts (docs/results.md). This command is the
Kinetics step for the synthetic world, or for any labelled set in one of two published layouts:

* ``--labels epic-kitchens`` (what ``make demo`` uses): EPIC-KITCHENS-100 action segments
  (``EPIC_100_train.csv`` / ``EPIC_100_validation.csv``). Every ``clip_seconds`` clip inside a segment gets its
  ``verb_class`` and ``noun_class``; two linear heads are trained jointly, as EPIC action recognition is. In the
  world the verb is the action and the noun the acting object ("circle:red"), so the backbone learns *which*
  object does *what* — an action-only backbone knew the motion but could not tell the actor's shape
  (docs/results.md). ``--background`` also trains on the clips between segments, as one extra "no action" class
  per head (as temporal action detectors train on untrimmed video): a backbone for *localization* must tell an
  action from its absence (the demo's seed-0 LocVTP row: zero-shot grounding R1@0.5 45.0 without, 58.0 with;
  docs/results.md);
* ``--labels msrvtt``: ``MSRVTT_data.json`` with a ``category`` per video and a train-id CSV; every clip of a
  training video gets its video's category (one head).

A ``tiny3d`` network plus the linear heads is trained with cross-entropy; the heads are dropped and the backbone is
written as safetensors for ``model.video.pretrained`` (same ``width`` and ``norm``).

Only the training split is used for training (never an evaluation video); held-out clip accuracy (every head
right, and per head) on the held-out labelled videos is printed and stored next to the weights. Unreadable
videos are skipped, counted and reported (``--strict`` makes them fatal). The file is written atomically
(a hidden temporary, fsynced, then ``os.replace``; nothing is left behind when the write fails).

    locvtp backbone --data world --labels epic-kitchens --background --steps 1500 \\
        --out world/backbone_tiny3d.safetensors
    locvtp pretrain --config configs/pretrain_synthetic.yaml --out runs/x data.root=world \\
        model.video.pretrained=world/backbone_tiny3d.safetensors
"""
from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from locvtp.errors import LocVTPError, UsageError


class BackboneError(LocVTPError, RuntimeError):
    """Nothing to learn from (no labelled clip could be read); the message names the annotation file."""


@dataclass
class LabelledClips:
    """Decoded clips uint8 ``[N, F, S, S, 3]`` and one int64 label array ``[N]`` per classification head."""

    clips: np.ndarray
    labels: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.clips)


@dataclass
class BackboneResult:
    path: str
    labels: str  # "msrvtt" | "epic-kitchens"
    classes: dict[str, int]  # head -> number of classes
    train_clips: int
    heldout_clips: int
    heldout_accuracy: Optional[float]  # every head right (EPIC's "action" accuracy; the category for MSR-VTT)
    heldout_accuracy_per_head: dict[str, float]
    steps: int
    seconds: float
    skipped: list[dict] = field(default_factory=list)


def _clip_windows(start: float, end: float, clip_seconds: float, duration: float) -> np.ndarray:
    """Consecutive ``clip_seconds`` windows covering [start, end); a span shorter than one clip gets one window
    centred on it (clamped to the video)."""
    n = int(math.floor((end - start) / clip_seconds + 1e-6))
    if n >= 1:
        return start + np.stack([np.arange(n), np.arange(n) + 1.0], 1) * clip_seconds
    s = min(max(0.0, 0.5 * (start + end) - 0.5 * clip_seconds), max(0.0, duration - clip_seconds))
    return np.array([[s, s + clip_seconds]])


class _Collector:
    """Decodes labelled spans video by video into train / held-out :class:`LabelledClips`; a video that cannot
    be read is skipped and reported (``strict``: fatal)."""

    def __init__(self, heads: Sequence[str], clip_seconds: float, frames_per_clip: int, frame_size: int,
                 strict: bool):
        self.heads = list(heads)
        self.cs, self.fpc, self.size, self.strict = clip_seconds, frames_per_clip, frame_size, strict
        self.parts = {p: ([], {h: [] for h in self.heads}) for p in ("train", "heldout")}
        self.skipped: list[dict] = []
        self.rng = np.random.default_rng(0)

    def add(self, path: Path, video_id: str, spans: list[tuple[float, Optional[float], dict[str, int]]],
            part: str, background: Optional[dict[str, int]] = None, duration: Optional[float] = None) -> None:
        """``spans``: (start, end or None = the video's end, labels) of one video. ``background``: labels for
        the clips of the video's ``clip_seconds`` grid whose centre lies in no span (None: not used).
        ``duration``: the video's length from its annotation (default: the decoded frames' span)."""
        from locvtp.data.video import decode_frames, sample_clips

        try:
            frames, times = decode_frames(path, size=self.size)
            if frames.shape[0] == 0:
                raise OSError("no decodable frames")
            duration = float(duration) if duration is not None else float(times[-1]) + 1e-3
            new_x: list[np.ndarray] = []
            new_y: dict[str, list[int]] = {h: [] for h in self.heads}
            if background is not None:
                starts = np.arange(int(math.floor(duration / self.cs + 1e-6)))[:, None] * self.cs
                grid = starts + np.array([0.0, self.cs])
                centre = grid.mean(1)
                inside = np.zeros(len(grid), bool)
                for start, end, _ in spans:
                    inside |= (centre >= start) & (centre < (duration if end is None else end))
                if (~inside).any():
                    spans = [*spans, *((float(a), float(b), background) for a, b in grid[~inside])]
            for start, end, labels in spans:
                end = duration if end is None else min(float(end), duration)
                win = _clip_windows(float(start), end, self.cs, duration)
                new_x.append(sample_clips(frames, times, win, self.fpc, self.size, False, self.rng,
                                          duration=duration, source=video_id))
                for h in self.heads:
                    new_y[h] += [int(labels[h])] * len(win)
        except Exception as exc:  # noqa: BLE001 - one bad video must not end the run
            if self.strict:
                from locvtp.training.records import BadSampleError

                raise BadSampleError(f"{path}: unreadable video ({video_id}): {exc} (--strict)") from exc
            self.skipped.append({"source": str(path), "reason": f"{type(exc).__name__}: {exc}"})
            return
        xs, ys = self.parts[part]  # all of a video's clips, or none of them
        xs += new_x
        for h in self.heads:
            ys[h] += new_y[h]

    def result(self) -> tuple[LabelledClips, LabelledClips]:
        out = []
        for part in ("train", "heldout"):
            xs, ys = self.parts[part]
            clips = np.concatenate(xs) if xs else np.zeros((0, self.fpc, self.size, self.size, 3), np.uint8)
            out.append(LabelledClips(clips, {h: np.asarray(v, dtype=np.int64) for h, v in ys.items()}))
        return out[0], out[1]


def labelled_clips(data: Path, msrvtt: str, train_split: Optional[str], clip_seconds: float, frames_per_clip: int,
                   frame_size: int, strict: bool = False, progress: bool = True, video_dir: str = "videos"):
    """MSR-VTT layout: every clip of a labelled video gets the video's ``category`` (head ``category``); split
    into (train, held-out) by the train-id CSV (or the JSON's ``split`` field when no CSV is given).
    Returns (train, held-out, skipped)."""
    from locvtp.runtime import progress as tqdm

    from locvtp.data.videoids import video_path
    from locvtp.data.formats import read_msrvtt_data, read_msrvtt_split_csv

    meta = read_msrvtt_data(data / msrvtt, strict=strict)
    videos = [v for v in meta.records if v.category is not None]
    if not videos:
        raise BackboneError(f"{data / msrvtt} has no video with a 'category': nothing to learn from")
    train_ids = set(read_msrvtt_split_csv(data / train_split, strict=strict).records) if train_split else None
    col = _Collector(["category"], clip_seconds, frames_per_clip, frame_size, strict)
    col.skipped += [{"source": f"{b.file}: {b.location}", "reason": b.reason} for b in meta.skipped]
    for v in tqdm(videos, desc="decoding labelled videos", unit="video", disable=not progress):
        is_train = (v.video_id in train_ids) if train_ids is not None else (v.split == "train")
        col.add(data / v.url if v.url else video_path(data / video_dir, v.video_id), v.video_id,
                [(float(v.start or 0.0), v.end, {"category": int(v.category)})], "train" if is_train else "heldout",
                duration=v.end)
    return (*col.result(), col.skipped)


def epic_clips(data: Path, train_csv: str, heldout_csv: Optional[str], clip_seconds: float, frames_per_clip: int,
               frame_size: int, strict: bool = False, progress: bool = True, video_dir: str = "videos",
               background: bool = False):
    """EPIC-KITCHENS-100 layout: the clips inside each annotated segment get its ``verb_class`` and
    ``noun_class`` (two heads, as EPIC action recognition is trained); segments of ``heldout_csv`` (the
    validation file) give the held-out accuracy. ``background``: the clips of an annotated video that lie in no
    segment get one extra class per head ("no action"), as temporal action detectors train on untrimmed video;
    without it they are not used (EPIC labels none). Returns (train, held-out, skipped)."""
    from locvtp.runtime import progress as tqdm

    from locvtp.data.videoids import video_path
    from locvtp.data.formats import read_epic_kitchens

    col = _Collector(["verb", "noun"], clip_seconds, frames_per_clip, frame_size, strict)
    segments = {}
    for part, rel in (("train", train_csv), ("heldout", heldout_csv)):
        if rel:
            res = read_epic_kitchens(data / rel, strict=strict)
            col.skipped += [{"source": f"{b.file}: {b.location}", "reason": b.reason} for b in res.skipped]
            segments[part] = res.records
    if not segments.get("train"):
        raise BackboneError(f"{data / train_csv} has no valid segment: nothing to learn from")
    every = [seg for segs in segments.values() for seg in segs]
    # background = the last class of each head
    bg = ({"verb": max(s.verb_class for s in every) + 1, "noun": max(s.noun_class for s in every) + 1}
          if background else None)
    todo: list[tuple[str, str, list]] = []
    for part, segs in segments.items():
        by_video: dict[str, list] = {}
        for seg in segs:
            by_video.setdefault(seg.video_id, []).append(
                (seg.start, seg.end, {"verb": seg.verb_class, "noun": seg.noun_class}))
        todo += [(part, vid, spans) for vid, spans in by_video.items()]
    for part, vid, spans in tqdm(todo, desc="decoding labelled videos", unit="video", disable=not progress):
        col.add(video_path(data / video_dir, vid), vid, spans, part, bg)
    return (*col.result(), col.skipped)


def train_backbone(args: argparse.Namespace, progress: bool = True) -> BackboneResult:
    import torch
    from safetensors.torch import save_file

    t0 = time.time()
    check_args(args)
    torch.manual_seed(args.seed)
    data = Path(args.data)
    if args.labels == "epic-kitchens":
        train, held, skipped = epic_clips(data, args.epic_train, args.epic_val or None, args.clip_seconds,
                                          args.frames_per_clip, args.frame_size, args.strict, progress, args.video_dir,
                                          args.background)
    else:
        train, held, skipped = labelled_clips(data, args.msrvtt, args.train_split, args.clip_seconds,
                                              args.frames_per_clip, args.frame_size, args.strict, progress,
                                              args.video_dir)
    if len(train) == 0:
        raise BackboneError(f"no training clip could be decoded from {data} ({len(skipped)} videos/rows skipped; "
                            "first: " + (f"{skipped[0]['source']}: {skipped[0]['reason']}" if skipped else "none")
                            + ")")
    classes = {h: int(max(train.labels[h].max(), held.labels[h].max() if len(held) else 0)) + 1
               for h in train.labels}
    net, classifiers = fit_backbone(train, classes, args, progress)
    acc, per_head = clip_accuracy(net, classifiers, held) if len(held) else (None, {})
    from locvtp.files import owned_file, write_owned_text

    out = Path(args.out)
    with owned_file(out, "backbone", suffix=".safetensors") as tmp:
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp),
                  metadata={"encoder": "tiny3d", "width": str(args.width), "norm": args.norm, "labels": args.labels})
    res = BackboneResult(str(out), args.labels, classes, len(train), len(held), acc, per_head, args.steps,
                         round(time.time() - t0, 1), skipped)
    write_owned_text(out.with_suffix(".json"), json.dumps({**asdict(res), "args": vars(args)}, indent=1, default=str),
                     "backbone")
    return res


def fit_backbone(train: LabelledClips, classes: dict[str, int], args: argparse.Namespace, progress: bool = True):
    """A Tiny3D (``args.width``, ``args.norm``) and one linear classifier per head, trained with cross-entropy on
    ``train`` by ``locvtp backbone``'s recipe (AdamW, warm-up then cosine, ``args.steps`` batches drawn with
    ``args.seed``, ``args.threads`` torch threads); returns (network in eval mode, classifiers). The caller seeds
    torch for the initialization."""
    import torch
    from torch import nn

    from locvtp.model.video import Tiny3D
    from locvtp.runtime import progress as tqdm

    if args.threads:  # the thread count changes the float reductions, so the figures are per thread count
        torch.set_num_threads(args.threads)
    heads = list(train.labels)
    net = Tiny3D(args.width, args.norm, dropout=0.1)
    classifiers = nn.ModuleDict({h: nn.Linear(net.out_dim, n) for h, n in classes.items()})
    params = list(net.parameters()) + list(classifiers.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(1, args.warmup)) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / args.steps))))
    x_all = torch.from_numpy(train.clips)
    y_all = {h: torch.from_numpy(v) for h, v in train.labels.items()}
    gen = torch.Generator().manual_seed(args.seed)
    bar = tqdm(range(args.steps), desc="backbone", unit="step", disable=not progress)
    for _ in bar:
        idx = torch.randint(len(x_all), (min(args.batch_size, len(x_all)),), generator=gen)
        feats = net(x_all[idx])  # no flip augmentation: a flip turns "moves left" into "moves right"
        loss = sum(nn.functional.cross_entropy(classifiers[h](feats), y_all[h][idx]) for h in heads)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    net.eval()
    return net, classifiers


def clip_accuracy(net, classifiers, clips: LabelledClips) -> tuple[float, dict[str, float]]:
    """(share of clips with every head right, per-head accuracy) of a trained backbone and its classifiers."""
    import torch

    with torch.no_grad():
        feats = torch.cat([net(torch.from_numpy(clips.clips[i:i + 256])) for i in range(0, len(clips), 256)])
        right = {h: classifiers[h](feats).argmax(1).numpy() == clips.labels[h] for h in clips.labels}
    return float(np.logical_and.reduce(list(right.values())).mean()), {h: float(r.mean()) for h, r in right.items()}


def check_args(args: argparse.Namespace) -> None:
    """The mistakes a run would otherwise find late (after decoding every video) or never: a missing --data or
    annotation file, an output that is a directory, that has the summary's name, or that is an input file; and
    an output (weights or summary) that exists and was not written by locvtp (:func:`locvtp.files.check_file_output`)."""
    from locvtp.files import check_apart, check_file_output

    data, out = Path(args.data), Path(args.out)
    if not data.is_dir():
        raise UsageError(f"--data {data}: no such directory (a synthetic world or the same layout)")
    if args.labels == "epic-kitchens":
        needed = [("--epic-train", args.epic_train), ("--epic-val", args.epic_val)]
    else:
        needed = [("--msrvtt", args.msrvtt), ("--train-split", args.train_split)]
    for flag, rel in needed:
        if rel and not (data / rel).is_file():
            raise UsageError(f"--data {data} has no {rel} ({flag}, needed by --labels {args.labels}); point "
                             f"{flag} at the file, relative to --data")
    if out.is_dir():
        raise UsageError(f"--out {out} is a directory; give the .safetensors file to write")
    if out.suffix == ".json":
        raise UsageError(f"--out {out}: the .json summary is written next to the weights; give a .safetensors "
                         "name")
    check_apart(out, {flag: data / rel for flag, rel in needed if rel})  # inside --data is fine, over an input not
    check_file_output(out, "backbone", "--out")
    check_file_output(out.with_suffix(".json"), "backbone", "--out's summary")
