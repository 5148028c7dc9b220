"""`locvtp extract` / `locvtp merge`: the commands (arguments, what is printed); the work is
:func:`locvtp.extraction.run_extract` and :func:`locvtp.featurestore.merge_shards` (docs/usage.md).
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
from pathlib import Path

from locvtp import cliargs
from locvtp.errors import UsageError, writing
from locvtp.featurestore import FORMATS, merge_shards
from locvtp.files import overlaps
from locvtp.extraction import run_extract
from locvtp.model.clip_visual import ACTIVATIONS, CLIP_ARCHS
from locvtp.model.s3d import S3D_OUTPUTS
from locvtp.standard_features import BACKBONES


def build_parser() -> argparse.ArgumentParser:
    p = cliargs.ArgumentParser(
        prog="locvtp extract",
        description="Clip features of every video in a directory or list (resumable; see docs/usage.md).",
    )
    p.add_argument("--checkpoint", default=None, help="checkpoint directory or run directory (or --backbone NAME)")
    p.add_argument("--videos", required=True,
                   help="directory of videos, or a list file (one `path` or `id<TAB>path` per line); for a "
                        "features-encoder model: a feature file/dir")
    p.add_argument("--out", required=True, help="output .h5 file, or directory for npy-dir / npz-dir")
    p.add_argument("--format", choices=FORMATS, default="h5")
    p.add_argument("--clip-seconds", type=cliargs.positive_float, default=None,
                   help="clip length (default: checkpoint's data config)")
    p.add_argument("--stride-seconds", type=cliargs.positive_float, default=None,
                   help="clip stride (default: = clip length)")
    p.add_argument("--frames-per-clip", type=cliargs.positive_int, default=None,
                   help="default: checkpoint's data config")
    p.add_argument("--frame-size", type=cliargs.positive_int, default=None, help="default: checkpoint's data config")
    p.add_argument("--backbone", nargs="?", const=True, default=False, choices=BACKBONES, metavar="NAME",
                   help="with --checkpoint and no NAME: write the model's pre-projection backbone features instead of "
                   "the joint-space embeddings; NAME (clip | s3d) with --weights: the field's standard features "
                   "under their published protocol, no checkpoint (docs/features.md)")
    p.add_argument("--weights", default=None, help="--backbone NAME's local weights file (OpenAI CLIP .pt, "
                   "open_clip state dict, s3d_howto100m.pth; nothing is downloaded)")
    p.add_argument("--clip-arch", default=None, choices=tuple(CLIP_ARCHS),
                   help="--backbone clip: check the weights are this tower (default: read from the weights)")
    p.add_argument("--clip-activation", default=None, choices=ACTIVATIONS,
                   help="--backbone clip: MLP activation, quick_gelu (OpenAI weights, open_clip *-quickgelu; the "
                   "default) or gelu (open_clip LAION models without -quickgelu)")
    p.add_argument("--s3d-output", default=None, choices=S3D_OUTPUTS,
                   help="--backbone s3d: embedding (512-d, VideoCLIP's; the default) or mixed_5c (1024-d)")
    p.add_argument("--batch-size", "--batch-clips", dest="batch_clips", type=cliargs.positive_int, default=None,
                   help="clips per encoder forward, batched across videos (default 64; --backbone s3d: 8)")
    p.add_argument("--workers", type=cliargs.nonnegative_int, default=default_workers(),
                   help="processes decoding ahead of the encoder (0: decode in this process; default: cores - 1, "
                   "at least 1, at most 8)")
    p.add_argument("--decode-workers", type=cliargs.positive_int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--amp", choices=("bf16", "fp16"), default=None,
                   help="encode under autocast in this precision on the device (faster on GPUs; features then "
                   "differ from fp32 ones by the precision's rounding)")
    p.add_argument("--shard", type=parse_shard, default=None, metavar="I/N",
                   help="extract shard I of N (0 <= I < N; videos split by a hash of their id) into its own "
                   "store (feats.shardI-of-N.h5, or DIR.shardI-of-N); join them with `locvtp merge`")
    p.add_argument("--runner", choices=("local", "ray"), default="local",
                   help="local: decode processes on this machine (default); ray: decode tasks and encoder actors on "
                   "a Ray cluster (needs `pip install 'locvtp[ray]'`; docs/usage.md, 'On a Ray cluster')")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="--runner ray: the cluster (auto: the one `ray start` made on this machine, or host:port, "
                   "ray://host:port); default: a local Ray instance of --workers decode CPUs")
    p.add_argument("--ray-encoders", type=cliargs.positive_int, default=None, metavar="N",
                   help="--runner ray: encoder actors (default: one per GPU of the cluster, else one)")
    p.add_argument("--threads", type=cliargs.nonnegative_int, default=0, help="torch CPU threads (0: torch default)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--recursive", action="store_true", help="search --videos DIR recursively")
    p.add_argument("--failures", default=None, help="failures file (default next to --out)")
    p.add_argument("--flush-every", type=cliargs.nonnegative_int, default=0,
                   help="h5: reassemble the file every N videos (0: off)")
    p.add_argument("--flush-seconds", type=cliargs.nonnegative_float, default=600.0,
                   help="h5: reassemble at most this often (0: off)")
    p.add_argument("--overwrite", action="store_true",
                   help="discard what an earlier extraction wrote to --out instead of resuming (never other files)")
    p.add_argument("--strict", action="store_true", help="fail on the first bad video instead of recording it")
    p.add_argument("--no-progress", action="store_true")
    return p


def default_workers() -> int:
    """One decoding process per core left to the encoder (1 on a 2-core machine), at most 8."""
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def parse_shard(text: str) -> tuple[int, int]:
    """``I/N`` -> (I, N) with 0 <= I < N (a Slurm job array's ``$SLURM_ARRAY_TASK_ID/N``)."""
    i, sep, n = str(text).partition("/")
    try:
        shard, count = int(i), int(n)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected I/N (e.g. 3/8), got {text!r}") from None
    if not sep or count < 1 or not 0 <= shard < count:
        raise argparse.ArgumentTypeError(f"expected I/N with 0 <= I < N (e.g. 3/8), got {text!r}")
    return shard, count


def main(argv: list[str] | None = None) -> int:
    """``locvtp extract``; errors are :class:`~locvtp.errors.LocVTPError` s that ``locvtp.cli`` prints as one line."""
    args = build_parser().parse_args(argv)
    s = run_extract(args, progress=not args.no_progress)
    for pr in s.list_problems:
        print(f"locvtp extract: skipped input {pr['location']}: {pr['reason']}", file=sys.stderr)
    rate = s.clips / s.loop_seconds if s.loop_seconds > 0 else 0.0
    skipped = f", {len(s.list_problems)} inputs skipped" if s.list_problems else ""
    print(f"extracted {s.extracted} videos ({s.clips} clips, {rate:.1f} clips/s), {s.skipped_done} already done, "
          f"{s.failed} failed of {s.total}{skipped} -> {s.out}", file=sys.stderr)
    if s.failed or s.list_problems:
        print(f"failed videos and skipped inputs: see {s.failures_path}", file=sys.stderr)
    return 0


def merge_main(argv: list[str] | None = None) -> int:
    p = cliargs.ArgumentParser(prog="locvtp merge", description="Merge the feature stores of `locvtp extract "
                               "--shard I/N` jobs or torchrun ranks: HDF5 files into one file, npy-dir / npz-dir "
                               "directories into one directory.")
    p.add_argument("shards", nargs="+", help="shard files / directories or glob patterns (e.g. 'feats.rank*.h5', "
                   "'feats.shard*-of-8.h5', 'feats.shard*-of-8')")
    p.add_argument("--out", required=True, help="the merged .h5 file (h5 shards) or directory (directory shards)")
    p.add_argument("--failures", default=None, help="merged failures file (default <out stem>.failures.jsonl; "
                   "directories: OUT/failures.jsonl)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out (only a feature file `locvtp extract`/`merge` wrote)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    out = Path(args.out)
    shards: list[Path] = []
    for s in args.shards:
        matches = sorted(glob.glob(s)) if any(c in s for c in "*?[") else [s]
        if not matches:
            raise UsageError(f"no file matches the shard pattern {s!r}")
        if len(matches) > 1 or matches[0] != s:
            hit = [m for m in matches if overlaps(m, out) == "is"]
            if hit:
                raise UsageError(f"--out {out} matches the shard pattern {s!r}: merging into an input would "
                                 "overwrite its videos; choose an --out the pattern does not match")
        shards += [Path(m) for m in matches]
    shards = list(dict.fromkeys(shards))
    with writing(out, "--out"):  # no space, read-only, ...: one line naming --out
        n, nf = merge_shards(shards, out, Path(args.failures) if args.failures else None,
                             progress=not args.no_progress, overwrite=args.overwrite)
    print(f"merged {len(shards)} shards: {n} videos, {nf} failures -> {out}", file=sys.stderr)
    return 0
