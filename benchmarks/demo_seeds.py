"""Mean ± std of `locvtp demo` results over seeds (reads each run's results.json; prints a markdown table).

    python benchmarks/demo_seeds.py demo_run/results.json seed1/results.json seed2/results.json
"""
from __future__ import annotations

import argparse
import json
import statistics

from locvtp.demo import COLUMNS


def aggregate(paths: list[str], models=("random", "backbone", "coarse", "locvtp")) -> str:
    runs = [json.load(open(p, encoding="utf-8")) for p in paths]
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
    return "\n".join(rows) + f"\n\nseeds {seeds}; demo wall time (s, excluding set-up) {walls}"


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results", nargs="+")
    print(aggregate(ap.parse_args().results))
