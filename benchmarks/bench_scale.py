"""Pre-training at corpus scale: prepare time, launch-to-first-step time and peak memory against corpus size.

    python benchmarks/bench_scale.py [--sizes 100000 1000000 4000000 13600000] [--per-video 400] [--dim 32]
                                     [--workers 2] [--work DIR] [--md docs/benchmarks/scale.md]

For each size N this writes a HowTo100M-format corpus of N narrations (``caption.json``, ``--per-video``
narrations per video, as HowTo100M has ≈ 110 on average and the issue measured with 400) with per-clip ``.npy``
features (an ``npy-dir``: one ``<vid>.npy`` [clips, D] per video, 1 s clips), then runs in fresh processes

1. ``locvtp prepare --workers W`` (the one-time conversion, with a fixed tokenizer so its words mask is built;
   with ``--corpus-tokenizer`` no ``data.tokenizer``: prepare trains the corpus's own WordPiece on its bounded
   sample, as issue 24 measured);
2. ``locvtp pretrain ... train.max_steps=1`` on the prepared corpus (features encoder, 2 loader workers): what
   every later run's start-up costs, since nothing it reads is trained or computed again,

and prints wall time and peak memory for each: the sum of PSS (proportional set size: shared pages divided by
the processes sharing them) over the process tree, sampled every 0.1 s with psutil, and the growth per
narration between the smallest and the largest size, extrapolated to HowTo100M's 136 M narrations.
Corpora are cached under ``--work`` (default: a temporary directory) so reruns skip the writing.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from locvtp.runtime import cpu_model
import psutil

HOWTO100M = 136_000_000
_WORDS = ("the a cut stir pour add mix onion pan salt water bowl knife slice heat oil garlic pepper fry boil "
          "chop whisk bake oven tray spoon flour sugar egg butter").split()


def write_corpus(d: Path, n: int, per_video: int, dim: int) -> tuple[Path, Path]:
    """caption.json + feats/<vid>.npy (+ meta.json as `locvtp extract --format npy-dir` writes it)."""
    cap, feats = d / "caption.json", d / "feats"
    done = d / "done"
    if done.is_file():
        return cap, feats
    feats.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    words = np.array(_WORDS)
    n_videos = -(-n // per_video)
    with open(cap, "w", encoding="utf-8") as fh:
        fh.write("{")
        left = n
        for v in range(n_videos):
            k = min(per_video, left)
            left -= k
            duration = 600.0
            st = np.sort(rng.uniform(0, duration - 10, k)).round(2)
            en = (st + rng.uniform(1, 8, k)).round(2)
            text = [" ".join(words[rng.integers(0, len(words), 7)]) for _ in range(k)]
            vid = f"v{v:07d}"
            fh.write(("," if v else "") + json.dumps(vid) + ":" +
                     json.dumps({"start": st.tolist(), "end": en.tolist(), "text": text}))
            np.save(feats / f"{vid}.npy", rng.standard_normal((int(duration), dim)).astype(np.float32))
        fh.write("}")
    (feats / "meta.json").write_text(json.dumps({"layout": "npy-dir", "clip_seconds": 1.0, "stride_seconds": 1.0}))
    done.write_text("ok")
    return cap, feats


def anonymous_bytes(pid: int) -> int:
    """Private memory that is not a file mapping (heap, numpy arrays): ``Anonymous`` of smaps_rollup."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Anonymous:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class PeakPss:
    """Peaks of the summed PSS and of the summed anonymous memory of a process and its children, sampled in a
    thread. PSS also counts the pages of memory-mapped files a process has touched (the corpus columns), which
    the kernel can drop at any time; anonymous memory is what the processes themselves hold."""

    def __init__(self, pid: int):
        self.proc = psutil.Process(pid)
        self.peak = 0
        self.peak_anon = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            total = anon = 0
            try:
                procs = [self.proc, *self.proc.children(recursive=True)]
            except psutil.Error:
                break
            for p in procs:
                try:
                    total += p.memory_full_info().pss
                    anon += anonymous_bytes(p.pid)
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            self.peak_anon = max(self.peak_anon, anon)
            time.sleep(0.1)

    def stop(self) -> tuple[int, int]:
        self._stop.set()
        self._t.join()
        return self.peak, self.peak_anon


def run(cmd: list[str], env: dict, log: Path) -> tuple[float, tuple[int, int]]:
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        p = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        mon = PeakPss(p.pid)
        rc = p.wait()
    peak = mon.stop()
    dt = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({rc}); see {log}:\n{log.read_text()[-2000:]}")
    return dt, peak


def acceptance(rows: list) -> list[str]:
    """Issue 24's start-up criterion, when both 1 M and 4 M were measured: 4 M starts within 45 s and within
    1.5 x the 1 M time + 10 s, with at most 200 MB more peak memory (PSS)."""
    at = {n: (fs, fm) for n, _, _, fs, fm in rows}
    if 1_000_000 not in at or 4_000_000 not in at:
        return []
    (f1, m1), (f4, m4) = at[1_000_000], at[4_000_000]
    ok = f4 <= 45 and f4 <= 1.5 * f1 + 10 and m4[0] - m1[0] <= 200e6
    return ["", f"issue 24 start-up criterion (4 M within 45 s and 1.5 x 1 M + 10 s = {1.5 * f1 + 10:.1f} s, memory "
                f"growth <= 200 MB): {f4:.1f} s, +{(m4[0] - m1[0]) / 1e6:.0f} MB -> {'met' if ok else 'NOT met'}"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 4_000_000, 13_600_000])
    ap.add_argument("--per-video", type=int, default=400)
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--md", type=Path, default=None, help="also write the table to this Markdown file")
    ap.add_argument("--corpus-tokenizer", action="store_true",
                    help="no data.tokenizer: the corpus's own WordPiece (trained by prepare on a bounded sample)")
    ap.add_argument("--launch-only", action="store_true",
                    help="reuse each size's prepared corpus and prepare figures from an earlier run in --work")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_scale_"))
    work.mkdir(parents=True, exist_ok=True)
    from locvtp.data.tokenizer import train_tokenizer

    tok_file = work / "tokenizer" / "tokenizer.json"
    if not tok_file.is_file():
        train_tokenizer([" ".join(_WORDS)], vocab_size=200).save(tok_file.parent)
    print(f"CPU: {cpu_model()} ({os.cpu_count()} cores); work dir {work}", flush=True)
    rows = []
    for n in args.sizes:
        d = work / f"n{n}"
        t = time.perf_counter()
        cap, feats = write_corpus(d, n, args.per_video, args.dim)
        print(f"N={n}: corpus ready ({time.perf_counter() - t:.0f} s)", flush=True)
        env = {**os.environ, "LOCVTP_CACHE": str(d / "cache"), "OMP_NUM_THREADS": "1"}
        common = ["--config", "pretrain_synthetic", f"data.root={d}", "data.kind=features", f"data.features={feats}",
                  "data.caption_file=caption.json"] + ([] if args.corpus_tokenizer else [f"data.tokenizer={tok_file}"])
        if args.launch_only and (d / "prepare.json").is_file():  # keep the prepare figures of the first run
            prep_s, prep_mem = json.loads((d / "prepare.json").read_text())
        else:
            import shutil

            shutil.rmtree(d / "cache", ignore_errors=True)  # a fresh prepare every time
            prep_s, prep_mem = run([sys.executable, "-m", "locvtp.cli", "prepare", *common, "--workers",
                                    str(args.workers), "--no-progress"], env, d / "prepare.log")
            (d / "prepare.json").write_text(json.dumps([prep_s, prep_mem]))
        run_dir = d / "run"
        if run_dir.exists():
            import shutil

            shutil.rmtree(run_dir)
        first_s, first_mem = run([sys.executable, "-m", "locvtp.cli", "pretrain", *common, "--out", str(run_dir),
                                  "--quiet", "train.max_steps=1", "train.batch_size=8", "data.num_workers=2",
                                  "model.video.name=features", f"model.video.in_dim={args.dim}",
                                  "model.video.hidden=64", "model.dim=64", "model.text.width=64",
                                  "model.text.layers=1", "train.save_every=1000", "train.val_every=0"],
                                 env, d / "pretrain.log")
        rows.append((n, prep_s, prep_mem, first_s, first_mem))
        print(f"N={n}: prepare {prep_s:.1f} s, peak PSS {prep_mem[0] / 2**30:.2f} GiB (anonymous "
              f"{prep_mem[1] / 2**30:.2f}); launch to first step {first_s:.1f} s, peak PSS "
              f"{first_mem[0] / 2**30:.2f} GiB (anonymous {first_mem[1] / 2**30:.2f})", flush=True)
    G = 2**30
    lines = [f"CPU: {cpu_model()}, {os.cpu_count()} cores; {args.per_video} narrations/video, {args.dim}-d features, "
             f"prepare --workers {args.workers}; memory summed over the process tree (PSS, and its anonymous part)",
             "", "| narrations | prepare (s) | prepare peak PSS / anon (GiB) | launch → first step (s) | "
                 "first-step peak PSS / anon (GiB) |", "|---:|---:|---:|---:|---:|"]
    for n, ps, pm, fs, fm in rows:
        lines.append(f"| {n:,} | {ps:.1f} | {pm[0] / G:.2f} / {pm[1] / G:.2f} | {fs:.1f} | {fm[0] / G:.2f} / "
                     f"{fm[1] / G:.2f} |")
    if len(rows) >= 2:
        (n0, p0, pm0, f0, fm0), (n1, p1, pm1, f1, fm1) = rows[0], rows[-1]
        dn = n1 - n0

        def grow(a: float, b: float) -> float:
            return (b - a) / dn

        def at(a: float, b: float) -> float:  # extrapolated to HowTo100M from the growth between the two ends
            return b + grow(a, b) * (HOWTO100M - n1)

        lines += ["", f"growth per narration ({n0:,} → {n1:,}): prepare {grow(p0, p1) * 1e6:.2f} µs, "
                      f"PSS {grow(pm0[0], pm1[0]):.1f} B, anonymous {grow(pm0[1], pm1[1]):.1f} B; first step "
                      f"{grow(f0, f1) * 1e6:.3f} µs, PSS {grow(fm0[0], fm1[0]):.1f} B, anonymous "
                      f"{grow(fm0[1], fm1[1]):.1f} B",
                  f"extrapolated to {HOWTO100M:,} narrations: prepare {at(p0, p1) / 60:.0f} min, PSS "
                  f"{at(pm0[0], pm1[0]) / G:.2f} GiB (anonymous {at(pm0[1], pm1[1]) / G:.2f}); launch to first step "
                  f"{at(f0, f1):.0f} s, PSS {at(fm0[0], fm1[0]) / G:.2f} GiB (anonymous {at(fm0[1], fm1[1]) / G:.2f})"]
    lines += acceptance(rows)
    text = "\n".join(lines)
    print("\n" + text)
    if args.md:
        args.md.write_text(text + "\n")


if __name__ == "__main__":
    main()
