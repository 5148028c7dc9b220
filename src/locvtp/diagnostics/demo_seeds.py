"""Mean ± std of `locvtp demo` / `locvtp ablate` results over seeds (reads each run's results.json or
ablation.json; prints a markdown table with one row per model / ablation row).

    python -m locvtp.diagnostics.demo_seeds demo_run/results.json seed1/results.json seed2/results.json
    python -m locvtp.diagnostics.demo_seeds abl0/ablation.json abl1/ablation.json abl2/ablation.json
    python -m locvtp.diagnostics.demo_seeds abl0/ablation.json abl1/ablation.json --versus +fine+temporal

``--versus ROW``: each row's *paired* difference to ROW, seed by seed (row − ROW in the same file; mean ± std, and
in how many seeds it is above zero): rows trained from the same backbone and seed share much of their noise, so a
paired difference is the sharper test of a component.
"""
from __future__ import annotations

import argparse
import json
import statistics

from locvtp.commands.demo import COLUMNS


def _read(paths: list[str]) -> list[dict]:
    """Each results file as a dict; a missing or unreadable one stops with its name (no traceback)."""
    runs = []
    for p in paths:
        try:
            with open(p, encoding="utf-8") as f:
                runs.append(json.load(f))
        except (OSError, ValueError) as exc:
            raise SystemExit(f"{p}: cannot read results ({type(exc).__name__}: {exc})") from None
    return runs


def _models(runs: list[dict]) -> list[str]:
    """Every entry that holds metrics, in first-seen order."""
    return list(dict.fromkeys(k for r in runs for k, v in r.items()
                              if isinstance(v, dict) and any(c in v for c, _ in COLUMNS)))


def _header(first: str) -> list[str]:
    return ["| " + first + " | " + " | ".join(h for _, h in COLUMNS) + " |",
            "|---|" + "|".join("---:" for _ in COLUMNS) + "|"]


def aggregate(paths: list[str], models=None) -> str:
    runs = _read(paths)
    models = _models(runs) if models is None else models
    rows = _header("model")
    for m in models:
        if not any(m in r for r in runs):
            continue
        cells = []
        for key, _ in COLUMNS:
            vals = [r[m][key] for r in runs if m in r and key in r[m]]
            if not vals:
                cells.append("–")
            elif len(vals) == 1:
                cells.append(f"{vals[0]:.1f}")
            else:
                cells.append(f"{statistics.mean(vals):.1f} ± {statistics.stdev(vals):.1f}")
        rows.append(f"| {m} | " + " | ".join(cells) + " |")
    seeds = [r.get("seed") for r in runs]
    walls = [r.get("wall_seconds") for r in runs]
    if all(w is None for w in walls):  # ablation.json files carry neither
        return "\n".join(rows) + f"\n\n{len(runs)} runs"
    return "\n".join(rows) + f"\n\nseeds {seeds}; demo wall time (s, excluding set-up) {walls}"


def paired(paths: list[str], reference: str) -> str:
    """Markdown table of each row's per-seed difference to ``reference`` (files lacking either are skipped)."""
    runs = _read(paths)
    if not any(reference in r for r in runs):
        raise SystemExit(f"--versus {reference!r}: no such row in {paths}")
    models = [m for m in _models(runs) if m != reference]
    rows = _header(f"row − {reference}")
    for m in models:
        cells = []
        for key, _ in COLUMNS:
            d = [r[m][key] - r[reference][key] for r in runs
                 if m in r and reference in r and key in r[m] and key in r[reference]]
            if not d:
                cells.append("–")
                continue
            spread = f" ± {statistics.stdev(d):.1f}" if len(d) > 1 else ""
            cells.append(f"{statistics.mean(d):+.1f}{spread} ({sum(x > 0 for x in d)}/{len(d)})")
        rows.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n\n(k/n: seeds in which the row is above the reference)"


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results", nargs="+")
    ap.add_argument("--versus", default=None, metavar="ROW", help="paired per-seed differences to this row")
    a = ap.parse_args()
    print(paired(a.results, a.versus) if a.versus else aggregate(a.results))
