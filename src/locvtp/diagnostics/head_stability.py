"""Does the ``tan`` grounding head train stably? Its validation curves under candidate training recipes.

Issue 23's runs found head seeds that collapse: the training loss rises after a few epochs and the head ends near
the blind prior (validation R1@0.5 ≈ 20 where sibling seeds reach 85). This trains the head of `locvtp evaluate
grounding` (``tan`` variant, same features, word vectors, validation split and seeds) under each recipe (a set of
``grounding.*`` overrides) on each checkpoint, and prints **validation** figures only: the choice of recipe must not
look at the test split (``docs/results.md``, "The head's training recipe").

    python -m locvtp.diagnostics.head_stability RUN_A RUN_B --world W \\
        --recipe "current:" --recipe "lr1e-3:grounding.tan_cfg.lr=1e-3,grounding.tan_cfg.epochs=40"

    python -m locvtp.diagnostics.head_stability check s0/eval/*/grounding.json     # evaluations already run

Per recipe and checkpoint: each head seed's best validation R1@0.5, its best epoch, whether it *collapsed* (best
validation R1@0.5 more than ``--collapse-gap`` points below the best seed of the same checkpoint and recipe, or a
final training loss more than 5 % above its minimum, i.e. training diverged), and the seconds spent. Features are
embedded once per checkpoint and cached (``--cache``) so that recipes compare on identical inputs.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

DIVERGED = 1.05  # final training loss above this multiple of its minimum: the run diverged


@dataclass
class SeedOutcome:
    seed: int
    best_val: float  # best validation R1@0.5
    best_epoch: int
    epochs_run: int
    diverged: bool
    collapsed: bool = False


def parse_recipe(text: str) -> tuple[str, list[str]]:
    """``NAME:key=value,key=value`` → (NAME, overrides); ``NAME:`` is the defaults."""
    name, sep, rest = text.partition(":")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"recipe {text!r}: expected NAME:key=value,... (NAME: alone = defaults)")
    return name, [o for o in rest.split(",") if o]


def outcomes(logs: Sequence, seeds: Sequence[int], collapse_gap: float) -> list[SeedOutcome]:
    """Per head seed: best validation R1@0.5 and epoch, divergence, collapse (see the module docstring)."""
    out = []
    for s, log in zip(seeds, logs):
        best = max(sc[0] for sc in log.scores) if log.scores else float("nan")
        out.append(SeedOutcome(s, best, log.best_epoch, len(log.losses),
                               bool(log.losses and log.losses[-1] > DIVERGED * min(log.losses))))
    top = max(o.best_val for o in out)
    for o in out:
        o.collapsed = o.diverged or o.best_val < top - collapse_gap
    return out


def _cached_head_data(ck: str, world: Path, cache: Path | None, opts):
    """The head's arrays for one checkpoint (embedding the videos is the slow part: cached as .npz + .json, no
    pickle, keyed by the checkpoint's and world's paths)."""
    from locvtp.downstream.evaluate import prepare_context
    from locvtp.downstream.grounding import GroundingQuery, HeadData, head_data

    key = hashlib.sha256(f"{Path(ck).resolve()}|{world.resolve()}".encode()).hexdigest()[:16]
    arrays = ("x_train", "gt_train", "dur_train", "x_test", "gt_test", "dur_test")
    if cache is not None and (cache / f"{key}.json").is_file():
        with np.load(cache / f"{key}.npz") as z:
            a = {k: z[k] for k in arrays}
        meta = json.loads((cache / f"{key}.json").read_text(encoding="utf-8"))
        empty = np.zeros((0, 0), np.float32)
        return HeadData(a["x_train"], empty, a["gt_train"], a["dur_train"], a["x_test"], empty, a["gt_test"],
                        a["dur_test"], meta["used_test"], meta["train_queries"], None,
                        [GroundingQuery(**q) for q in meta["queries_train"]],
                        [GroundingQuery(**q) for q in meta["queries_test"]])
    ctx, _ = prepare_context(ck, world, None, ["grounding"], opts, None, False, 0, None, False, "cpu")
    data = head_data(ctx, opts.grounding, sentences=False)
    if cache is not None:
        from locvtp.files import write_owned_text

        cache.mkdir(parents=True, exist_ok=True)
        tmp = cache / f"{key}.tmp.npz"
        np.savez(tmp, **{k: getattr(data, k) for k in arrays})
        tmp.replace(cache / f"{key}.npz")
        write_owned_text(cache / f"{key}.json", json.dumps({
            "checkpoint": str(ck), "used_test": list(data.used_test), "train_queries": data.train_queries,
            "queries_train": [asdict(q) for q in data.queries_train],
            "queries_test": [asdict(q) for q in data.queries_test]}), "head_stability")
    return data


def _stopping_logs(info: dict) -> list:
    """The early-stopping logs a ``tan`` evaluation stored in its grounding.json ``info``."""
    from locvtp.downstream.tan import EarlyStopping

    return [EarlyStopping(losses=list(losses), scores=[tuple(v) for v in scores], best_epoch=int(best))
            for losses, scores, best in zip(info["head_losses"], info["head_val_scores"], info["head_best_epochs"])]


def check_main(argv: list[str]) -> int:
    """``check``: the collapse definition applied to evaluations already run (their stored validation curves)."""
    ap = argparse.ArgumentParser(prog="head_stability check", description=check_main.__doc__)
    ap.add_argument("grounding_json", nargs="+", type=Path)
    ap.add_argument("--collapse-gap", type=float, default=20.0)
    a = ap.parse_args(argv)
    total = collapsed = 0
    for path in a.grounding_json:
        info = json.loads(path.read_text(encoding="utf-8")).get("info", {})
        if "head_val_scores" not in info:
            print(f"{path}: no tan head curves (head_variant={info.get('head_variant')!r}); skipped")
            continue
        res = outcomes(_stopping_logs(info), info["head_seeds"], a.collapse_gap)
        total, collapsed = total + len(res), collapsed + sum(o.collapsed for o in res)
        print(f"{path}: val R1@0.5 {[round(o.best_val, 1) for o in res]}, best epochs "
              f"{[o.best_epoch for o in res]}/{[o.epochs_run for o in res]}, collapsed {sum(o.collapsed for o in res)}")
    print(f"collapsed head seeds: {collapsed} of {total}")
    return 0


def main(argv: list[str] | None = None) -> int:
    import sys

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["check"]:
        return check_main(argv[1:])
    from locvtp.downstream.evaluate import check_options, load_options
    from locvtp.downstream.tan import run_tan_protocol

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoints", nargs="+", help="checkpoint or run directories")
    ap.add_argument("--world", required=True, type=Path)
    ap.add_argument("--recipe", action="append", type=parse_recipe, required=True,
                    help="NAME:key=value,... (grounding.* options; repeat for each recipe)")
    ap.add_argument("--collapse-gap", type=float, default=20.0)
    ap.add_argument("--cache", type=Path, default=None, help="directory caching each checkpoint's head arrays")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    base = check_options(load_options(None, []))
    report: dict[str, dict] = {}
    for ck in a.checkpoints:
        data = _cached_head_data(ck, a.world, a.cache, base)
        for name, overrides in a.recipe:
            g = check_options(load_options(None, overrides)).grounding
            t0 = time.perf_counter()
            run = run_tan_protocol(data, g.head_cfg, g.tan_cfg, seed=0)
            seconds = time.perf_counter() - t0
            res = outcomes(run.logs, run.seeds, a.collapse_gap)
            report.setdefault(name, {})[ck] = {"seconds": seconds, "seeds": [asdict(o) for o in res],
                                               "val_curves": [[s[0] for s in log.scores] for log in run.logs],
                                               "losses": [log.losses for log in run.logs]}
            print(f"{name:<14} {ck}: val R1@0.5 per seed {[round(o.best_val, 1) for o in res]} "
                  f"(epochs {[o.best_epoch for o in res]}/{[o.epochs_run for o in res]}), "
                  f"collapsed {sum(o.collapsed for o in res)}, {seconds:.0f} s", flush=True)
    print("\nrecipe         mean best val R1@0.5   collapsed seeds   seconds")
    for name, rows in report.items():
        vals = [s["best_val"] for r in rows.values() for s in r["seeds"]]
        col = sum(s["collapsed"] for r in rows.values() for s in r["seeds"])
        secs = sum(r["seconds"] for r in rows.values())
        print(f"{name:<14} {np.mean(vals):20.1f}   {col:>6d}/{len(vals):<8d} {secs:8.0f}")
    if a.json:
        from locvtp.files import write_owned_text

        write_owned_text(a.json, json.dumps(report, indent=1), "head_stability")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
