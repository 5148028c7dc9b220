"""`locvtp synth`: write the procedural video-text world (the command; the library is :mod:`locvtp.world`).

Its errors (a directory holding something else, no permission, ...) are raised like every command's and
printed by :mod:`locvtp.cli` as one line (``WorldExistsError`` exits 2: a user's file in the way)."""
from __future__ import annotations

import json
import sys
import time

from locvtp.world.plan import (
    GENERATOR_VERSION, GENERATOR_VERSIONS, MOMENT_VERSION, PRESETS, RECIPE_VERSION, check_request,
)
from locvtp.world.generate import generate_world


def main(argv: list[str] | None = None) -> int:
    from locvtp.cliargs import ArgumentParser, nonnegative_int

    ap = ArgumentParser(prog="locvtp synth", description=(
        "Write the procedural video-text world: H.264 MP4s plus annotation files in the real formats "
        "(HowTo100M, WebVid, ActivityNet Captions, Charades-STA, QVHighlights, MSR-VTT, CrossTask, COIN). "
        "With --stats DIR, print the moment statistics of an existing world instead."))
    ap.add_argument("--out", help="output directory")
    ap.add_argument("--stats", metavar="DIR", help=(
        "print the moment statistics of the complete world in DIR (any generator version): video and moment "
        "lengths, moment/video ratio, events per video, narrations per event, the share of videos repeating an "
        "action on another actor and of queries whose action another event has (the verb alone cannot place them), "
        "what a verb-only oracle finds, "
        "the share of pre-training context pairs crossing an event boundary with and without "
        "objective.context_in_span; writes nothing"))
    ap.add_argument("--json", action="store_true", help="with --stats: print the statistics as JSON")
    ap.add_argument("--seed", type=nonnegative_int, default=None, help="random seed (default 0)")
    ap.add_argument("--preset", choices=sorted(PRESETS), default=None, help=(
        "default tiny; "
        "tiny, demo: the demo's world; long (ActivityNet/YouCook2-like: 50-120 s videos, 3-5 events of median "
        ">= 10 s) and charades (Charades-STA-like: ~30 s videos, 1-3 moments of 5-12 s) need generator 1.4 or later; "
        "recipe (YouCook2-like: long's timing, the same action recurring on other objects) needs 1.6 or later"))
    ap.add_argument("--generator-version", "--version", dest="version", choices=GENERATOR_VERSIONS,
                    default=None, help=(
                        f"world generator version (default: {GENERATOR_VERSION} for tiny and demo, {MOMENT_VERSION} for "
                        f"long and charades, {RECIPE_VERSION} for recipe); 1.3 has harder CrossTask/COIN test "
                        "sets, 1.4 adds the long and charades presets, 1.5 gives them the demo world's labelled EPIC "
                        "set, 1.6 adds the recipe preset (docs/world_versions.md)"))
    ap.add_argument("--force", action="store_true", help="overwrite an existing world in --out")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    if args.stats is not None:
        given = [name for name, value in (("--out", args.out), ("--seed", args.seed), ("--preset", args.preset),
                                          ("--generator-version", args.version), ("--force", args.force or None))
                 if value is not None]
        if given:
            ap.error(f"--stats DIR reads the world in DIR as it is and writes nothing: drop {', '.join(given)}")
        return _print_stats(args.stats, args.json)
    args.seed = 0 if args.seed is None else args.seed
    args.preset = "tiny" if args.preset is None else args.preset
    if args.out is None:
        ap.error("the following arguments are required: --out (or --stats DIR)")
    if args.json:
        ap.error("--json goes with --stats DIR")
    try:
        version = check_request(args.preset, args.version)
    except ValueError as exc:
        ap.error(f"--preset {args.preset} --generator-version {args.version}: {exc}")
    args.version = version
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


def _print_stats(path: str, as_json: bool) -> int:
    from locvtp.world.stats import format_stats, world_stats

    stats = world_stats(path)
    print(json.dumps(stats, indent=1) if as_json else format_stats(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
