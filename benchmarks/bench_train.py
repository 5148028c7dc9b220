"""Pre-training throughput: samples/s, data-wait share and peak RSS of ``configs/pretrain_synthetic.yaml``.

    python benchmarks/bench_train.py [--world DIR] [--workers 0 1 2] [--steps 60] [--warmup 10] [--full]
                                     [--md docs/benchmarks/train.md]

For each number of loader workers, one ``locvtp pretrain`` process (a fresh process, so peak memory is its own)
trains ``--steps`` steps on the demo world (``locvtp synth --preset demo``, generated under the work dir if
``--world`` is not given) with the shared frame cache already built (decoding is measured by bench_decode.py).
Reported, from ``metrics.jsonl`` after ``--warmup`` steps: median samples/s, the share of step time the training
loop spent waiting for the next batch (``data_wait``), CPU seconds per 1 000 samples (this process tree; a busy
shared machine distorts it far less than wall time), and the peak RSS of the whole process tree (trainer + loader
workers, sampled every 0.1 s with psutil). ``--full`` also times one complete run of the config as shipped
(what ``make demo`` does twice), from the command to the final checkpoint.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "pretrain_synthetic.yaml"


def ensure_world(world: Path | None, work: Path) -> Path:
    if world is not None:
        return world
    world = work / "world_demo"
    if not (world / "manifest.json").is_file():
        from locvtp.world.generate import generate_world

        generate_world(world, seed=0, preset="demo", progress=True)
    return world


def run_once(world: Path, out: Path, cache: Path, overrides: list[str]) -> dict:
    """One training process (in a fresh run dir); returns wall time, peak tree RSS/PSS (MB), CPU s, metrics rows."""
    if out.exists():
        shutil.rmtree(out)
    cmd = [sys.executable, "-m", "locvtp.cli", "pretrain", "--config", str(CONFIG), "--out", str(out), "--quiet",
           f"data.root={world}", f"data.cache_dir={cache}", *overrides]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ps = psutil.Process(proc.pid)
    peak, peak_pss, cpu = 0.0, 0.0, {}
    while proc.poll() is None:
        try:
            tree = [ps, *ps.children(recursive=True)]
            rss = pss = 0
            for p in tree:
                try:
                    mem = p.memory_full_info()  # PSS: the memory-mapped frame cache shared by workers counts once
                    rss, pss = rss + mem.rss, pss + getattr(mem, "pss", mem.rss)
                    t = p.cpu_times()
                    cpu[p.pid] = t.user + t.system
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            peak, peak_pss = max(peak, rss / 2**20), max(peak_pss, pss / 2**20)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.1)
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"training failed ({proc.returncode}):\n{stderr[-3000:]}")
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return {"wall": wall, "peak_rss_mb": peak, "peak_pss_mb": peak_pss, "cpu_s": sum(cpu.values()), "rows": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--world", type=Path, default=None, help="a synthetic world (default: generate the demo preset)")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "locvtp_bench_train")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=10, help="steps excluded from the figures")
    ap.add_argument("--full", action="store_true", help="also time one complete run of the shipped config")
    ap.add_argument("--md", type=Path, default=None, help="write the table to this markdown file")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="extra overrides for every run")
    a = ap.parse_args(argv)
    a.work.mkdir(parents=True, exist_ok=True)
    world = ensure_world(a.world, a.work)
    cache = a.work / "cache"
    print(f"world {world}; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")
    # build the frame cache once (not part of the figures)
    run_once(world, a.work / "warm", cache, ["train.max_steps=1", "train.save_every=0", "data.num_workers=0"])

    results = []
    for w in a.workers:
        out = a.work / f"run_w{w}"
        r = run_once(world, out, cache, [f"data.num_workers={w}", f"train.max_steps={a.steps}", "train.log_every=5",
                                         "train.save_every=0", *a.set])
        rows = [x for x in r["rows"] if x["step"] > a.warmup and "samples_per_s" in x]
        sps = statistics.median(x["samples_per_s"] for x in rows)
        wait = statistics.median(x["data_wait"] for x in rows)
        samples = a.steps * _batch()
        res = {"workers": w, "samples_per_s": sps, "data_wait": wait, "peak_rss_mb": r["peak_rss_mb"],
               "peak_pss_mb": r["peak_pss_mb"],
               "cpu_s_per_1k": 1000 * r["cpu_s"] / samples, "wall": r["wall"]}
        results.append(res)
        print(f"workers={w}: {sps:6.1f} samples/s  data wait {100 * wait:5.1f}% of step time  "
              f"peak RSS {r['peak_rss_mb']:6.0f} MB (PSS {r['peak_pss_mb']:.0f} MB)  "
              f"CPU {res['cpu_s_per_1k']:.1f} s/1k samples  "
              f"(whole process {r['wall']:.0f} s)")
    base = results[0]["samples_per_s"]
    for r in results[1:]:
        print(f"workers={r['workers']} vs workers={results[0]['workers']}: x{r['samples_per_s'] / base:.2f} samples/s")

    full = None
    if a.full:
        out = a.work / "run_full"
        fresh_cache = a.work / "cache_full"
        if fresh_cache.exists():
            shutil.rmtree(fresh_cache)
        r = run_once(world, out, fresh_cache, list(a.set))
        full = {"wall": r["wall"], "peak_rss_mb": r["peak_rss_mb"], "cpu_s": r["cpu_s"],
                "steps": r["rows"][-1]["step"]}
        print(f"full run of {CONFIG.name} ({full['steps']} steps, frame cache built from scratch): "
              f"{full['wall']:.0f} s wall, {full['cpu_s']:.0f} CPU s, peak RSS {full['peak_rss_mb']:.0f} MB "
              f"(PSS {r['peak_pss_mb']:.0f} MB)")

    if a.md is not None:
        lines = [f"overrides: `{' '.join(a.set) or '(none)'}`; load average at start {os.getloadavg()[0]:.1f}", "",
                 "| loader workers | samples/s | data wait (share of step time) | peak RSS, sum over processes (MB) "
                 "| peak PSS (MB) | CPU s / 1k samples |", "|---:|---:|---:|---:|---:|---:|"]
        for r in results:
            lines.append(f"| {r['workers']} | {r['samples_per_s']:.1f} | {100 * r['data_wait']:.1f} % "
                         f"| {r['peak_rss_mb']:.0f} | {r['peak_pss_mb']:.0f} | {r['cpu_s_per_1k']:.1f} |")
        text = "\n".join(lines) + "\n"
        if full is not None:
            text += (f"\nFull run of `{CONFIG.name}` ({full['steps']} steps, frame cache built from scratch): "
                     f"{full['wall']:.0f} s wall, {full['cpu_s']:.0f} CPU s, peak RSS {full['peak_rss_mb']:.0f} MB.\n")
        a.md.parent.mkdir(parents=True, exist_ok=True)
        a.md.write_text(text, encoding="utf-8")
        print(f"wrote {a.md}")
    return 0


def _batch() -> int:
    from locvtp.config import load_config

    return int(load_config(CONFIG).train.batch_size)


if __name__ == "__main__":
    sys.exit(main())
