"""Paired bootstrap of the grounding head: is feature set A better than B, beyond query and head-seed noise?

Reads two ``grounding.json`` files written by `locvtp evaluate grounding --out DIR` on the *same* annotations
(e.g. the same world, the same query encoder, two ``--features`` files) and prints, for R1@0.5, R1@0.7 and mIoU,
the mean of each side, the difference A − B and its 95 % interval (:func:`locvtp.metrics.paired_bootstrap_diff`:
queries resampled jointly; head seeds resampled in pairs when both files have as many, else independently)::

    python -m locvtp.diagnostics.paired_bootstrap eval_locvtp/grounding.json eval_coarse/grounding.json

Per query it uses ``head_top1_iou`` (one value per head seed) of the predictions (``--scorer head``), or the IoU
of the top zero-shot window with the ground truth (``--scorer zero-shot``: all words, ``pred_relevant_windows``;
``zero-shot-content``: content words, ``content_pred_relevant_windows``; one value per query); queries that
either file could not ground (missing video) are left out and counted. ``--also A2 B2`` (repeatable) pools more
pairs of the same rows, e.g. other pre-training seeds: their seed columns are appended side by side, so each
replicate resamples queries jointly and pre-training x head seeds in pairs. ``--json FILE`` also writes the figures.
"""
from __future__ import annotations

import functools
import json
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


# --scorer -> the per-query key of a grounding.json prediction that holds its ranked windows (None: head_top1_iou)
SCORERS = {"head": None, "zero-shot": "pred_relevant_windows", "zero-shot-content": "content_pred_relevant_windows"}


@functools.lru_cache(maxsize=32)
def _predictions(path: str, mtime_ns: int, size: int) -> tuple[dict, ...]:
    """The predictions of a grounding.json, parsed once per file version: a comparison table reads each file for
    several pairs and scorers (``claims``, the demo's paired table)."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BootstrapInputError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from None
    preds = doc.get("predictions") if isinstance(doc, dict) else None
    if not isinstance(preds, list) or not preds:
        raise BootstrapInputError(f"{path}: no 'predictions' list (a grounding.json of `locvtp evaluate`?)")
    return tuple(preds)


def _read(path: str | Path, scorer: str = "head") -> list[dict]:
    try:
        st = Path(path).stat()
    except OSError as exc:
        raise BootstrapInputError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from None
    preds = _predictions(str(path), st.st_mtime_ns, st.st_size)
    key = SCORERS[scorer]
    if key is not None:
        if not any(key in p for p in preds):
            raise BootstrapInputError(f"{path}: no per-query {key!r} (--scorer {scorer}): evaluated with "
                                      "grounding.words that leaves it out, or by an older locvtp")
        return _with_top1_iou(preds, key, path)
    if not any("head_top1_iou" in p for p in preds):
        raise BootstrapInputError(f"{path}: no per-query head results ('head_top1_iou'): evaluated with --no-head, "
                                  "or by a locvtp older than the tan head")
    return list(preds)


def _with_top1_iou(preds: Sequence[dict], key: str, path: str | Path) -> list[dict]:
    """Each prediction with ``head_top1_iou = [IoU of its first key window with its gt]`` (grounding_top1_iou's,
    all queries in one call), None for a query without windows (one that could not be grounded)."""
    from locvtp.metrics import grounding_top1_iou

    if any("gt" not in p for p in preds):
        raise BootstrapInputError(f"{path}: a prediction without 'gt' (a grounding.json of `locvtp evaluate`?)")
    firsts = [[w[:2] for w in (p.get(key) or [])[:1]] for p in preds]
    iou = grounding_top1_iou(firsts, [p["gt"][:2] for p in preds])
    return [{**p, "head_top1_iou": [float(v)] if w else None} for p, w, v in zip(preds, firsts, iou)]


def paired_iou(path_a: str | Path, path_b: str | Path, scorer: str = "head") -> tuple[np.ndarray, np.ndarray, int]:
    """Top-1 IoUs ``[Q, Sa]`` and ``[Q, Sb]`` of the queries both files grounded, and how many were left out."""
    a, b = _read(path_a, scorer), _read(path_b, scorer)
    if len(a) != len(b) or any((p["video_id"], p["query"], p["gt"]) != (q["video_id"], q["query"], q["gt"])
                               for p, q in zip(a, b)):
        raise BootstrapInputError(f"{path_a} and {path_b} hold different queries: evaluate both on the same data")
    both = [k for k, (p, q) in enumerate(zip(a, b)) if p.get("head_top1_iou") and q.get("head_top1_iou")]
    if not both:
        raise BootstrapInputError(f"{path_a} and {path_b}: no query has head results in both")
    ia = np.array([a[k]["head_top1_iou"] for k in both], np.float64)
    ib = np.array([b[k]["head_top1_iou"] for k in both], np.float64)
    return ia, ib, len(a) - len(both)


def compare(path_a: str | Path, path_b: str | Path, n_boot: int = 10000, ci: float = 0.95, seed: int = 0,
            scorer: str = "head", also: Sequence[tuple[str | Path, str | Path]] = ()) -> dict[str, Any]:
    """Per figure: ``{"a", "b", "diff", "low", "high", "se", ...}``; plus the query and seed counts. ``also``:
    more (A, B) pairs on the same queries, pooled (their seed columns appended; see the module docstring)."""
    from locvtp.metrics import paired_bootstrap_diff

    pairs = [(path_a, path_b), *also]
    got = [paired_iou(pa, pb, scorer) for pa, pb in pairs]
    if len({len(ia) for ia, _, _ in got}) > 1:  # another pair grounded other queries: not one query axis
        raise BootstrapInputError("the --also pairs left out other queries than the first pair: pool files of one "
                                  "evaluation protocol on the same data")
    ia, ib = np.concatenate([g[0] for g in got], axis=1), np.concatenate([g[1] for g in got], axis=1)
    left_out = got[0][2]
    out: dict[str, Any] = {"a": str(path_a), "b": str(path_b), "also": [[str(x), str(y)] for x, y in also],
                           "scorer": scorer, "queries": len(ia), "left_out": left_out,
                           "seeds_a": ia.shape[1], "seeds_b": ib.shape[1], "figures": {}}
    for name, value in FIGURES.items():
        va, vb = value(ia), value(ib)
        res = paired_bootstrap_diff(va, vb, n_boot=n_boot, ci=ci, seed=seed)
        out["figures"][name] = {"a": float(va.mean()), "b": float(vb.mean()), **res}
    return out


def format_report(res: dict[str, Any]) -> str:
    paired = next(iter(res["figures"].values()))["paired_seeds"]
    pooled = f" + {len(res['also'])} pooled pair(s)" if res.get("also") else ""
    lines = [f"scorer: {res.get('scorer', 'head')}{pooled}",
             f"A = {res['a']} ({res['seeds_a']} seed columns)", f"B = {res['b']} ({res['seeds_b']} seed columns)",
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
    ap.add_argument("--scorer", choices=sorted(SCORERS), default="head",
                    help="head: the grounding head's top-1 (one column per head seed); zero-shot / "
                         "zero-shot-content: the zero-shot top-1 over all / content words")
    ap.add_argument("--also", nargs=2, action="append", default=[], metavar=("A", "B"),
                    help="another pair of the same two rows on the same queries (e.g. another pre-training "
                         "seed), pooled; repeatable")
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    args = ap.parse_args(argv)
    if not 0 < args.ci < 1:
        ap.error(f"argument --ci: must be in (0, 1), got {args.ci}")
    from locvtp.diagnostics.report import run_report

    return run_report(PROG, "paired_bootstrap", args.json,
                      lambda: compare(args.a, args.b, n_boot=args.boot, ci=args.ci, seed=args.seed,
                                      scorer=args.scorer, also=[tuple(p) for p in args.also]),
                      format_report)


if __name__ == "__main__":
    raise SystemExit(main())
