"""`locvtp synth`: write the procedural video-text world (the command; the library is :mod:`locvtp.world`).

Its errors (a directory holding something else, no permission, ...) are raised like every command's and
printed by :mod:`locvtp.cli` as one line (``WorldExistsError`` exits 2: a user's file in the way)."""
from __future__ import annotations

import sys
import time

from locvtp.world.plan import GENERATOR_VERSION, GENERATOR_VERSIONS, PRESETS
from locvtp.world.generate import generate_world


def main(argv: list[str] | None = None) -> int:
    from locvtp.cliargs import ArgumentParser, nonnegative_int

    ap = ArgumentParser(prog="locvtp synth", description=(
        "Write the procedural video-text world: H.264 MP4s plus annotation files in the real formats "
        "(HowTo100M, WebVid, ActivityNet Captions, Charades-STA, QVHighlights, MSR-VTT, CrossTask, COIN)."))
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--seed", type=nonnegative_int, default=0)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    ap.add_argument("--generator-version", "--version", dest="version", choices=GENERATOR_VERSIONS,
                    default=GENERATOR_VERSION, help=(
                        f"world generator version (default {GENERATOR_VERSION}); 1.3 has harder CrossTask/COIN test "
                        "sets (docs/world_versions.md)"))
    ap.add_argument("--force", action="store_true", help="overwrite an existing world in --out")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    m = generate_world(args.out, seed=args.seed, preset=args.preset, progress=not args.quiet, force=args.force,
                       version=args.version)
    c = m["counts"]
    verb = "reusing the complete world already in" if m.get("reused") else "wrote"
    print(f"{verb} {args.out} (seed={m['seed']}, preset={m['preset']}, generator {m['generator_version']}) "
          f"in {time.perf_counter() - t0:.1f} s")
    print(f"  videos/            {c['videos']} MP4s, {c['seconds']:.0f} s, {c['frames']} frames "
          f"({m['frame_size']}x{m['frame_size']} @ {m['fps']} fps)")
    print(f"  pretrain/          caption.json: {c['pretrain_narrations']} narrations over {c['pretrain_videos']} "
          f"videos; webvid.csv: {c['split_webvid']} videos")
    print(f"  grounding/         ActivityNet, Charades-STA, QVHighlights: {c['split_grounding_train']} train / "
          f"{c['split_grounding_test']} test videos, {c['grounding_test_queries']} test queries")
    print(f"  retrieval/         MSR-VTT: {c['split_retrieval_train']} train / {c['split_retrieval_test']} test videos")
    print(f"  crosstask/         {c['crosstask_tasks']} tasks, {c['split_crosstask_train']} train / "
          f"{c['split_crosstask_val']} val videos")
    print(f"  coin/              {c['coin_tasks']} tasks, {c['split_coin_train']} train / {c['split_coin_test']} test videos")
    print(f"  epic/              EPIC-KITCHENS-100 action segments: {c['split_epic_train']} train / "
          f"{c['split_epic_val']} validation videos")
    return 0


if __name__ == "__main__":
    sys.exit(main())
