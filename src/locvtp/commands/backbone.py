"""`locvtp backbone`: supervised pre-training of the tiny3d backbone on labelled action videos (the command:
arguments and what is printed; the work is :func:`locvtp.backbone.train_backbone`).
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from locvtp.cliargs import (ArgumentParser, DefaultsHelpFormatter, nonnegative_float, nonnegative_int,
                            positive_float, positive_int, ranged)
from locvtp.backbone import BackboneResult, train_backbone


_at_least_8 = ranged(int, 8)


def _even_width(text: str) -> int:
    w = _at_least_8(text)
    if w % 2:
        raise argparse.ArgumentTypeError(f"must be an even integer >= 8, got {text}")
    return w


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="locvtp backbone", description=__doc__.split("\n")[0],
                                formatter_class=DefaultsHelpFormatter)
    p.add_argument("--data", required=True, help="data root (a synthetic world or the same layout)")
    p.add_argument("--out", required=True, help="output .safetensors (a .json summary is written next to it)")
    p.add_argument("--labels", choices=("msrvtt", "epic-kitchens"), default="msrvtt",
                   help="annotation layout: MSR-VTT video categories (one head) or EPIC-KITCHENS-100 action "
                        "segments (verb and noun heads)")
    p.add_argument("--msrvtt", default="retrieval/MSRVTT_data.json", help="labelled videos, relative to --data")
    p.add_argument("--train-split", default="retrieval/MSRVTT_train.9k.csv",
                   help="CSV of training video ids, relative to --data ('' = use the JSON's split field)")
    p.add_argument("--epic-train", default="epic/EPIC_100_train.csv", help="EPIC-KITCHENS-100 training segments")
    p.add_argument("--epic-val", default="epic/EPIC_100_validation.csv",
                   help="EPIC-KITCHENS-100 held-out segments ('' = none)")
    p.add_argument("--background", action="store_true",
                   help="epic-kitchens: also train on the clips outside every segment, as one extra class per head")
    p.add_argument("--video-dir", default="videos", help="video directory (<id>.mp4), relative to --data")
    p.add_argument("--width", type=_even_width, default=16,
                   help="tiny3d width, an even integer >= 8 (must match model.video.width)")
    p.add_argument("--norm", choices=("group", "batch"), default="group",
                   help="tiny3d normalisation (must match model.video.norm)")
    p.add_argument("--clip-seconds", type=positive_float, default=1.0)
    p.add_argument("--frames-per-clip", type=positive_int, default=4)
    p.add_argument("--frame-size", type=positive_int, default=32)
    p.add_argument("--steps", type=positive_int, default=400)
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--lr", type=positive_float, default=1e-3)
    p.add_argument("--weight-decay", type=nonnegative_float, default=0.05)
    p.add_argument("--warmup", type=nonnegative_int, default=20)
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.add_argument("--threads", type=nonnegative_int, default=1, help="torch threads (0 = torch's default)")
    p.add_argument("--strict", action="store_true", help="an unreadable video or bad row is an error")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def describe_classes(res: BackboneResult) -> str:
    return ", ".join(f"{n} {h} classes" for h, n in res.classes.items())


def describe_accuracy(res: BackboneResult) -> str:
    """e.g. ``41.0 % (verb 95.2 %, noun 43.1 %)``; ``n/a`` without held-out clips."""
    if res.heldout_accuracy is None:
        return "n/a (no held-out labelled video)"
    per = ", ".join(f"{h} {100 * a:.1f} %" for h, a in res.heldout_accuracy_per_head.items())
    return f"{100 * res.heldout_accuracy:.1f} %" + (f" ({per})" if len(res.heldout_accuracy_per_head) > 1 else "")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.train_split = args.train_split or None
    res = train_backbone(args, progress=not args.quiet)
    print(f"[backbone] {res.path}: tiny3d trained on {res.train_clips} {res.labels} clips "
          f"({describe_classes(res)}, {res.steps} steps, {res.seconds:.0f} s); held-out clip accuracy "
          f"{describe_accuracy(res)} on {res.heldout_clips} clips; skipped {len(res.skipped)} bad videos/rows")
    for s in res.skipped[:10]:
        print(f"  skipped {s['source']}: {s['reason']}", file=sys.stderr)
    return 0
