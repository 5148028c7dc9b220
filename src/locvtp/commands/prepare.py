"""`locvtp prepare`: build the prepared corpus of a pre-training config ahead of time (docs/training.md).

`locvtp pretrain` prepares by itself on first use; running this first moves that work off the training job:
on one machine with ``--workers N``, or split across machines with ``--shard i/N`` on each (then once more without
``--shard``, or simply the first `pretrain`, to assemble). A killed run resumes where it stopped. With
``data.cache=true`` (raw videos) this includes decoding every video into the frame cache; unreadable videos are
skipped and listed (``--strict``: the first one fails).
"""
from __future__ import annotations

import re
import sys
import time
from typing import Optional

from locvtp.cliargs import ArgumentParser, nonnegative_int, warn
from locvtp.errors import UsageError

PROG = "locvtp prepare"
MAX_LISTED = 20  # unreadable videos named on stderr (all of them are in the frame cache's index.json)


def _shard(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)/(\d+)", text.strip())
    if not m or not 0 <= int(m.group(1)) < int(m.group(2)):
        raise UsageError(f"--shard {text!r}: expected i/N with 0 <= i < N (e.g. 0/4)")
    return int(m.group(1)), int(m.group(2))


def main(argv: Optional[list[str]] = None) -> int:
    from locvtp.config import find_config, load_config
    from locvtp.training.corpus import prepare_corpus

    ap = ArgumentParser(prog=PROG, description=__doc__.split("\n")[0].split(": ", 1)[1],
                        epilog="example: locvtp prepare --config configs/pretrain_howto100m.yaml --workers 16 "
                               "data.root=/data/howto100m")
    ap.add_argument("--config", required=True, help="YAML config (a path, or the name of a shipped config)")
    ap.add_argument("--workers", type=nonnegative_int, default=0, help="worker processes (0: this process only)")
    ap.add_argument("--shard", default=None, help="i/N: compute only this machine's share of the chunks (and of the frame cache's videos) and exit")
    ap.add_argument("--strict", action="store_true", help="fail on the first malformed row (or unreadable video, for the frame cache) instead of reporting it")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. data.root=/data/howto100m")
    args = ap.parse_intermixed_args(argv)
    share = _shard(args.shard) if args.shard else (0, 1)
    cfg = load_config(find_config(args.config), args.overrides)
    t0 = time.perf_counter()
    prepared = prepare_corpus(cfg, share=share, workers=args.workers, strict=args.strict,
                              progress=not args.no_progress, wait=args.shard is None, frames=True)
    bad = prepared.frame_cache_bad
    for b in bad[:MAX_LISTED]:
        warn(PROG, f"unreadable video skipped: {b.source}: {b.reason}")
    if len(bad) > MAX_LISTED:
        warn(PROG, f"... and {len(bad) - MAX_LISTED} more unreadable videos: every one is listed under \"bad\" in "
                   f"{prepared.frame_cache.directory / 'index.json'}")
    what = f"shard {share[0]}/{share[1]} done" if args.shard else "prepared"
    print(f"{what} in {time.perf_counter() - t0:.1f} s: {prepared.summary()}", file=sys.stderr)
    return 0


__all__ = ["main"]
