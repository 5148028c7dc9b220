"""`locvtp pretrain`: the command (arguments, resume settings, what is printed); the run is
:func:`locvtp.training.loop.pretrain` (docs/training.md).

``torchrun --nproc_per_node=N -m locvtp.cli pretrain ...`` runs it under DDP.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

from locvtp.config import find_config
from locvtp.training.loop import PROG, pretrain


def main(argv: Optional[list[str]] = None) -> int:
    from locvtp.cliargs import ArgumentParser
    from locvtp.config import load_config
    from locvtp.training.resume import allowed_names, resume_config

    ap = ArgumentParser(
        prog=PROG, description="Pre-train LocVTP (single process, or DDP under torchrun).",
        epilog="example: locvtp pretrain --config configs/pretrain_synthetic.yaml --out runs/a "
               "train.max_steps=200 data.root=world; resumed: locvtp pretrain --out runs/a --resume auto "
               "train.max_steps=400")
    ap.add_argument("--config", default=None, help="YAML config (a path, or the name of a shipped config); "
                    "optional with --resume, which starts from the run's own saved settings")
    ap.add_argument("--out", required=True, help="run directory (checkpoints, metrics, logs)")
    ap.add_argument("--resume", default=None, help="'auto' (newest complete checkpoint in --out) or a checkpoint dir")
    ap.add_argument("--allow-changes", action="append", metavar="KEY[,KEY...]",
                    help="with --resume: let these keys or sections (data.root, objective) of the run change")
    ap.add_argument("--strict", action="store_true", help="fail on the first bad sample instead of skipping it")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    ap.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. train.max_steps=200")
    args = ap.parse_intermixed_args(argv)  # overrides may come before, between or after the options
    # errors are reported by locvtp.cli (one line naming the file, key or argument; --debug shows the stack)
    allow = allowed_names(args.allow_changes)
    if args.resume is None:
        if args.config is None:
            ap.error("the following arguments are required: --config (or --resume to continue a run)")
        if allow:
            ap.error("argument --allow-changes: only with --resume (a new run has no settings to change)")
        cfg, resume = load_config(find_config(args.config), args.overrides), None
    else:
        cfg, resume = resume_config(Path(args.out), args.resume, args.config, args.overrides,
                                    warn=int(os.environ.get("RANK", "0")) == 0)
    final = pretrain(cfg, args.out, resume=resume, strict=args.strict, progress=not args.quiet, allow_changes=allow)
    if int(os.environ.get("RANK", "0")) == 0:
        print(final)
    return 0


if __name__ == "__main__":  # python -m locvtp.commands.pretrain ...: the same one-line errors as `locvtp pretrain`
    from locvtp.cli import main as _cli_main

    sys.exit(_cli_main(["pretrain", *sys.argv[1:]]))
