"""Mean ± std of `locvtp demo` / `locvtp ablate` results over seeds (reads each run's results.json or
ablation.json; prints a markdown table with one row per model / ablation row).

    python -m locvtp.diagnostics.demo_seeds demo_run/results.json seed1/results.json seed2/results.json
    python -m locvtp.diagnostics.demo_seeds abl0/ablation.json abl1/ablation.json abl2/ablation.json
"""
from __future__ import annotations

import argparse
import json
import statistics

from locvtp.demo import COLUMNS


def aggregate(paths: list[str], models=None) -> str:
    runs = [json.load(open(p, encoding="utf-8")) for p in paths]
    if models is None:  # every entry that holds metrics, in first-seen order
        models = list(dict.fromkeys(k for r in runs for k, v in r.items()
                                    if isinstance(v, dict) and any(c in v for c, _ in COLUMNS)))
    head = "| model | " + " | ".join(h for _, h in COLUMNS) + " |"
    rows = [head, "|---|" + "|".join("---:" for _ in COLUMNS) + "|"]
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


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results", nargs="+")
    print(aggregate(ap.parse_args().results))
