"""`locvtp evaluate TASK --checkpoint CKPT --data DIR`: the paper's four downstream tasks, one table.

The command only: arguments in, :func:`locvtp.downstream.evaluate.evaluate_all` (the library) does the work.
"""
from __future__ import annotations

import argparse
import sys

from locvtp.downstream.evaluate import TASKS, evaluate_all, load_options


def build_parser() -> argparse.ArgumentParser:
    from locvtp.cliargs import ArgumentParser, DefaultsHelpFormatter, nonnegative_int, positive_int

    p = ArgumentParser(prog="locvtp evaluate", description=__doc__.split("\n\n")[0],
                       formatter_class=DefaultsHelpFormatter)
    p.add_argument("task", choices=[*TASKS, "all"], help="which downstream task")
    p.add_argument("--checkpoint", required=True, help="checkpoint directory or run directory")
    p.add_argument("--data", required=True, help="data root (a synthetic world or the same layout)")
    p.add_argument("--features", default=None, help="clip features (HDF5 / npy-dir / npz-dir) for the heads")
    p.add_argument("--out", default=None, help="directory for <task>.json and metrics.json")
    p.add_argument("--video-dir", default=None, help="video directory (default: DATA/videos)")
    p.add_argument("--config", default=None, help="downstream options YAML (configs/downstream/default.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override an option, e.g. --set grounding.head_cfg.epochs=30 (repeatable)")
    p.add_argument("--finetune", action="store_true", help="retrieval: also fine-tune contrastively on train")
    p.add_argument("--grounding-dataset", choices=["activitynet", "charades", "qvhighlights"], default=None,
                   help="grounding annotations to read (default from the options: activitynet)")
    p.add_argument("--no-head", action="store_true", help="grounding: zero-shot only (skip the 2D-TAN head)")
    p.add_argument("--head", choices=["tan", "checkpoint_text"], default=None,
                   help="grounding head variant: tan = 2D-TAN's protocol, one query encoder (word vectors + LSTM) "
                        "shared by every checkpoint; checkpoint_text = the checkpoint's sentence embedding "
                        "(default from the options: tan)")
    p.add_argument("--head-seeds", type=positive_int, default=None,
                   help="tan head: number of head seeds averaged (default from the options: 5)")
    p.add_argument("--seg-head", choices=["linear", "tcn"], default=None, help="segmentation classifier")
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.add_argument("--device", default="cpu", help="auto | cpu | cuda[:N] | mps")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch intra-op threads, >= 1 (default: torch's); 1 is fastest on a busy machine")
    p.add_argument("--strict", action="store_true", help="fail on the first bad annotation or video")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = list(args.overrides)
    if args.finetune:
        overrides.append("retrieval.finetune=true")
    if args.grounding_dataset:
        overrides.append(f"grounding.dataset={args.grounding_dataset}")
    if args.no_head:
        overrides.append("grounding.head=false")
    if args.head:
        overrides.append(f"grounding.head_variant={args.head}")
    if args.head_seeds:
        overrides.append(f"grounding.tan_cfg.seeds={args.head_seeds}")
    if args.seg_head:
        overrides.append(f"segmentation.probe.head={args.seg_head}")
    tasks = TASKS if args.task == "all" else (args.task,)
    # Errors are raised (locvtp.errors) and reported by locvtp.cli as one line naming the file or option.
    opts = load_options(args.config, overrides)
    evaluate_all(args.checkpoint, args.data, out_dir=args.out, tasks=tasks, features=args.features,
                 progress=not args.quiet, seed=args.seed, options=opts, video_dir=args.video_dir,
                 strict=args.strict, device=args.device, threads=args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
