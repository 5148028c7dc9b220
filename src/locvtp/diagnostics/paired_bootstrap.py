"""Paired bootstrap of the grounding head: is feature set A better than B, beyond query and head-seed noise?

Reads two ``grounding.json`` files written by `locvtp evaluate grounding --out DIR` on the *same* annotations
(e.g. the same world, the same query encoder, two ``--features`` files) and prints, for R1@0.5, R1@0.7 and mIoU,
the mean of each side, the difference A − B and its 95 % interval (:func:`locvtp.metrics.paired_bootstrap_diff`:
queries resampled jointly; head seeds resampled in pairs when both files have as many, else independently)::

    python -m locvtp.diagnostics.paired_bootstrap eval_locvtp/grounding.json eval_coarse/grounding.json

Per query it uses ``head_top1_iou`` (one value per head seed) of the predictions; queries that either file could
not ground (missing video) are left out and counted. ``--json FILE`` also writes the figures.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from locvtp.errors import LocVTPError

PROG = "python -m locvtp.diagnostics.paired_bootstrap"
# figure name -> per-query value from a top-1 IoU (grounding_recall's strict thresholds, percent)
FIGURES = {"R1@0.5": lambda iou: 100.0 * (iou > 0.5), "R1@0.7": lambda iou: 100.0 * (iou > 0.7),
           "mIoU": lambda iou: 100.0 * iou}


class BootstrapInputError(LocVTPError, ValueError):
    """A grounding.json that cannot be compared (unreadable, no per-query head results, other queries)."""


def _read(path: str | Path) -> list[dict]:
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BootstrapInputError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from None
    preds = doc.get("predictions") if isinstance(doc, dict) else None
    if not isinstance(preds, list) or not preds:
        raise BootstrapInputError(f"{path}: no 'predictions' list (a grounding.json of `locvtp evaluate`?)")
    if not any("head_top1_iou" in p for p in preds):
        raise BootstrapInputError(f"{path}: no per-query head results ('head_top1_iou'): evaluated with --no-head, "
                                  "or by a locvtp older than the tan head")
    return preds


def paired_iou(path_a: str | Path, path_b: str | Path) -> tuple[np.ndarray, np.ndarray, int]:
    """Top-1 IoUs ``[Q, Sa]`` and ``[Q, Sb]`` of the queries both files grounded, and how many were left out."""
    a, b = _read(path_a), _read(path_b)
    if len(a) != len(b) or any((p["video_id"], p["query"], p["gt"]) != (q["video_id"], q["query"], q["gt"])
                               for p, q in zip(a, b)):
        raise BootstrapInputError(f"{path_a} and {path_b} hold different queries: evaluate both on the same data")
    both = [k for k, (p, q) in enumerate(zip(a, b)) if p.get("head_top1_iou") and q.get("head_top1_iou")]
    if not both:
        raise BootstrapInputError(f"{path_a} and {path_b}: no query has head results in both")
    ia = np.array([a[k]["head_top1_iou"] for k in both], np.float64)
    ib = np.array([b[k]["head_top1_iou"] for k in both], np.float64)
    return ia, ib, len(a) - len(both)


def compare(path_a: str | Path, path_b: str | Path, n_boot: int = 10000, ci: float = 0.95, seed: int = 0
            ) -> dict[str, Any]:
    """Per figure: ``{"a", "b", "diff", "low", "high", "se", ...}``; plus the query and seed counts."""
    from locvtp.metrics import paired_bootstrap_diff

    ia, ib, left_out = paired_iou(path_a, path_b)
    out: dict[str, Any] = {"a": str(path_a), "b": str(path_b), "queries": len(ia), "left_out": left_out,
                           "seeds_a": ia.shape[1], "seeds_b": ib.shape[1], "figures": {}}
    for name, value in FIGURES.items():
        va, vb = value(ia), value(ib)
        res = paired_bootstrap_diff(va, vb, n_boot=n_boot, ci=ci, seed=seed)
        out["figures"][name] = {"a": float(va.mean()), "b": float(vb.mean()), **res}
    return out


def format_report(res: dict[str, Any]) -> str:
    paired = next(iter(res["figures"].values()))["paired_seeds"]
    lines = [f"A = {res['a']} ({res['seeds_a']} head seeds)", f"B = {res['b']} ({res['seeds_b']} head seeds)",
             "seeds resampled " + ("in pairs (seed k of A with seed k of B)" if paired else "independently"),
             f"{res['queries']} queries" + (f" ({res['left_out']} left out: no head result in one file)"
                                            if res["left_out"] else ""),
             f"{'figure':<8} {'A':>7} {'B':>7} {'A - B':>7}  interval"]
    for name, f in res["figures"].items():
        lines.append(f"{name:<8} {f['a']:7.2f} {f['b']:7.2f} {f['diff']:+7.2f}  "
                     f"[{f['low']:+.2f}, {f['high']:+.2f}] ({100 * f['ci']:g} %, {f['n_boot']} replicates)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from locvtp.cliargs import ArgumentParser, fraction, nonnegative_int, positive_int

    ap = ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    ap.add_argument("a", help="grounding.json of feature set A")
    ap.add_argument("b", help="grounding.json of feature set B (same annotations)")
    ap.add_argument("--boot", type=positive_int, default=10000, help="bootstrap replicates")
    ap.add_argument("--ci", type=fraction, default=0.95, help="interval coverage, in (0, 1)")
    ap.add_argument("--seed", type=nonnegative_int, default=0, help="bootstrap seed")
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    args = ap.parse_args(argv)
    if not 0 < args.ci < 1:
        ap.error(f"argument --ci: must be in (0, 1), got {args.ci}")
    try:
        if args.json is not None:
            from locvtp.files import check_file_output

            check_file_output(Path(args.json), "paired_bootstrap", "--json")
        res = compare(args.a, args.b, n_boot=args.boot, ci=args.ci, seed=args.seed)
    except LocVTPError as exc:  # an unusable input file (1), an --json that is not ours to replace (2)
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return int(getattr(exc, "exit_code", 1))
    print(format_report(res))
    if args.json is not None:
        from locvtp.files import write_owned_text

        write_owned_text(Path(args.json), json.dumps(res, indent=1) + "\n", "paired_bootstrap")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
