"""Does a video backbone trained on one world's labelled segments recognise another world's actions?

Why generator 1.5 exists (docs/world_versions.md, "Generator 1.5"): the backbone trained on 1.4 `long`'s EPIC split
did not generalise. Two suspects — too few distinct segments, or the cyclic long actions — are told apart by
training on each world's EPIC training split with `locvtp backbone`'s recipe and defaults (`fit_backbone`) and
scoring every trained backbone on every world's validation split and on its own training clips::

    python -m locvtp.diagnostics.backbone_transfer W13 W14L --steps 1500 --seed 0

Prints one row per training world, verb / noun accuracy (%) per column; ``--json FILE`` also writes them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

PROG = "python -m locvtp.diagnostics.backbone_transfer"


def transfer(worlds: Sequence[Path], steps: int, seed: int, progress: bool = False) -> dict[str, Any]:
    """``{"rows": {train world: {scored set: {head: accuracy %}}}, "segments": {world: training segments}}``."""
    import torch

    from locvtp.backbone import clip_accuracy, epic_clips, fit_backbone
    from locvtp.commands.backbone import build_parser

    args = {}
    data = {}
    for w in worlds:
        a = build_parser().parse_args(["--data", str(w), "--labels", "epic-kitchens", "--background", "--out",
                                       "unused.safetensors", "--steps", str(steps), "--seed", str(seed)])
        args[str(w)] = a
        train, held, _ = epic_clips(Path(w), a.epic_train, a.epic_val, a.clip_seconds, a.frames_per_clip,
                                    a.frame_size, progress=progress, video_dir=a.video_dir, background=True)
        data[str(w)] = (train, held)
    every = [c for pair in data.values() for c in pair]
    classes = {h: int(max(c.labels[h].max() for c in every if len(c))) + 1 for h in every[0].labels}
    rows: dict[str, dict[str, dict[str, float]]] = {}
    for w, (train, _) in data.items():
        torch.manual_seed(seed)
        net, heads = fit_backbone(train, classes, args[w], progress)
        scored = {f"{v} val": held for v, (_, held) in data.items()}
        scored["own training clips"] = train
        rows[w] = {name: {h: round(100 * acc, 1) for h, acc in clip_accuracy(net, heads, clips)[1].items()}
                   for name, clips in scored.items()}
    return {"steps": steps, "seed": seed, "rows": rows}


def format_report(res: dict[str, Any]) -> str:
    cols = list(next(iter(res["rows"].values())))
    lines = ["| trained on \\ scored on (verb / noun %) | " + " | ".join(cols) + " |",
             "|---|" + "---:|" * len(cols)]
    for w, row in res["rows"].items():
        lines.append(f"| {w} | " + " | ".join(f"{row[c]['verb']:.1f} / {row[c]['noun']:.1f}" for c in cols) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from locvtp.cliargs import ArgumentParser, nonnegative_int, positive_int
    from locvtp.diagnostics.report import run_report

    ap = ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    ap.add_argument("worlds", nargs="+", type=Path, help="synthetic worlds with EPIC-format splits (generator >= 1.2)")
    ap.add_argument("--steps", type=positive_int, default=1500, help="training steps (the demo's: 1500)")
    ap.add_argument("--seed", type=nonnegative_int, default=0)
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    a = ap.parse_args(argv)
    return run_report(PROG, "backbone_transfer", a.json, lambda: transfer(a.worlds, a.steps, a.seed), format_report)


if __name__ == "__main__":
    raise SystemExit(main())
