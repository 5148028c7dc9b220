"""Forward+backward time of the three LocVTP objectives (features given, context head included).

Prints, per (B, T, L) at D = 256 and 2 threads, the median of >= 5 runs of:
  fused      — ``LocVTPObjective`` as shipped (fp32);
  fused-bf16 — the same with ``bf16_products=True`` (bf16 GEMMs and exp matrix, fp32-accumulated sums);
  masked     — the straightforward vectorised version (explicit block mask + masked log-sum-exp, autograd);
  loop       — a loop reference written the way the authors' release computes its losses: Python loops over
               the batch and over clips / words picking each anchor's positives and negatives (fewer repeats);
  floor      — the similarity products at the *padded* sizes, in fp32: C·Wᵀ and Z·Wᵀ ((B·T)×(B·L), fine
               and temporal) forward, and their four backward products (dC, dW, dZ, dW). The fused op
               multiplies only the valid clips / warped clips / words (about half of those products with
               these masks), which is why it can run below this floor.
All columns are measured in the same run, interleaved, so the ratios are meaningful on a shared machine even
when the absolute times are not.

    python benchmarks/bench_objectives.py                      # full grid, prints a markdown table
    python benchmarks/bench_objectives.py --out docs/benchmarks/objectives.md
    python benchmarks/bench_objectives.py --sizes 32,5,16 --repeats 7
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from locvtp.objectives import LocVTPObjective, draw_offsets

GRID = [(b, t, l) for b in (32, 128) for t in (5, 10) for l in (16, 32)]


# ----------------------------------------------------------------------------------------------------------
# the authors'-style loop reference (default options: hard top-k, no intra negatives)
# ----------------------------------------------------------------------------------------------------------
# METHOD.md's objective (no stop-word mask, like the authors' loop); the default since issue 15 masks them
METHOD = {"stopwords": "none"}


def authors_style_loop(obj: LocVTPObjective, clips, words, sentence, clip_mask, word_mask, offsets):
    """Python loops over batch and clips / words, picking positives and negatives per anchor (as the release)."""
    B, T, _ = clips.shape
    tau, k, g = obj.tau_fine, obj.topk, obj.context_head
    valid_c = [clip_mask[i].nonzero().flatten().tolist() for i in range(B)]
    valid_w = [word_mask[i].nonzero().flatten().tolist() for i in range(B)]
    Ci = [clips[i, valid_c[i]] for i in range(B)]
    Wi = [words[i, valid_w[i]] for i in range(B)]
    # coarse
    v = torch.stack([F.normalize(Ci[i].mean(0), dim=0) for i in range(B)])
    logits = obj.scale() * v @ sentence.t()
    target = torch.arange(B)
    coarse = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
    other_words = [torch.cat([Wi[j] for j in range(B) if j != i] or [words.new_zeros(0, words.shape[2])]) for i in range(B)]
    other_clips = [torch.cat([Ci[j] for j in range(B) if j != i] or [clips.new_zeros(0, clips.shape[2])]) for i in range(B)]
    cw, wc, tz, tw = [], [], [], []
    for i in range(B):
        with torch.no_grad():
            S = Ci[i] @ Wi[i].t()
            P = S.topk(min(k, S.shape[1]), dim=1).indices
            Q = S.topk(min(k, S.shape[0]), dim=0).indices.t()
        z = {}
        for n, t in enumerate(valid_c[i]):  # clip anchors (and their warped versions)
            pos = Wi[i][P[n]]
            # positives then negatives (the shared negative matrix is not copied per anchor)
            lg = torch.cat([pos @ clips[i, t], other_words[i] @ clips[i, t]]) / tau
            cw.append(torch.logsumexp(lg, 0) - torch.logsumexp(lg[: len(pos)], 0))
            d = int(offsets[i, t])
            if d != 0 and 0 <= t + d < T and bool(clip_mask[i, t + d]):
                z[t] = F.normalize(g(clips[i, t + d], offsets[i, t]), dim=0)
                lg = torch.cat([pos @ z[t], other_words[i] @ z[t]]) / tau
                tz.append(torch.logsumexp(lg, 0) - torch.logsumexp(lg[: len(pos)], 0))
        for n, l in enumerate(valid_w[i]):  # word anchors
            pos = Ci[i][Q[n]]
            neg = other_clips[i] @ words[i, l]
            lg = torch.cat([pos @ words[i, l], neg]) / tau
            wc.append(torch.logsumexp(lg, 0) - torch.logsumexp(lg[: len(pos)], 0))
            q = valid_c[i][int(Q[n, 0])]
            if q in z:
                lg = torch.cat([(z[q] @ words[i, l])[None], neg]) / tau
                tw.append(torch.logsumexp(lg, 0) - lg[0])
    zero = clips.new_zeros(())
    fine = 0.5 * (torch.stack(cw).mean() + torch.stack(wc).mean())
    temporal = 0.5 * ((torch.stack(tz).mean() if tz else zero) + (torch.stack(tw).mean() if tw else zero))
    return {"coarse": coarse, "fine": fine, "temporal": temporal, "total": coarse + fine + temporal}


# ----------------------------------------------------------------------------------------------------------
def make_inputs(B, T, L, D, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = F.normalize(torch.randn(B, T, D, generator=g), dim=-1).requires_grad_()
    w = F.normalize(torch.randn(B, L, D, generator=g), dim=-1).requires_grad_()
    s = F.normalize(torch.randn(B, D, generator=g), dim=-1).requires_grad_()
    # realistic padding: videos and sentences of varying length, a masked [CLS]
    cm = torch.arange(T)[None] < torch.randint(max(1, T // 2), T + 1, (B,), generator=g)[:, None]
    wm = torch.arange(L)[None] < torch.randint(max(2, L // 2), L + 1, (B,), generator=g)[:, None]
    wm[:, 0] = False
    off = draw_offsets(cm, 2, generator=torch.Generator().manual_seed(seed + 1))
    return c, w, s, cm, wm, off


def fwd_bwd(fn, inputs):
    c, w, s = inputs[:3]
    for x in (c, w, s):
        x.grad = None
    out = fn(*inputs)
    out["total"].backward()
    return out


def floor_fn(B, T, L, D):
    """The fp32 similarity products at the padded sizes: two (B·T)×(B·L) forward, four backward."""
    g = torch.Generator().manual_seed(3)
    C, Z = torch.randn(B * T, D, generator=g), torch.randn(B * T, D, generator=g)
    W = torch.randn(B * L, D, generator=g)
    G1, G2 = torch.randn(B * T, B * L, generator=g), torch.randn(B * T, B * L, generator=g)

    def run():
        torch.mm(C, W.t())
        torch.mm(Z, W.t())
        torch.mm(G1, W)
        torch.mm(G1.t(), C)
        torch.mm(G2, W)
        torch.mm(G2.t(), Z)

    return run


CLOCK = time.perf_counter  # --clock cpu: time.process_time (CPU seconds of this process, all threads)


def timed(fn, *args) -> float:
    t0 = CLOCK()
    fn(*args)
    return CLOCK() - t0


def bench_size(B, T, L, D, repeats, loop_repeats, with_loop=True):
    inputs = make_inputs(B, T, L, D)
    torch.manual_seed(0)
    fused = LocVTPObjective(dim=D, **METHOD)
    bf16 = LocVTPObjective(dim=D, bf16_products=True, **METHOD)
    masked = LocVTPObjective(dim=D, fused=False, **METHOD)
    for m in (bf16, masked):
        m.load_state_dict(fused.state_dict())
    floor = floor_fn(B, T, L, D)
    cols = {"fused": [], "fused-bf16": [], "masked": [], "floor": [], "loop": []}
    runs = {
        "fused": lambda: fwd_bwd(fused, inputs),
        "fused-bf16": lambda: fwd_bwd(bf16, inputs),
        "masked": lambda: fwd_bwd(masked, inputs),
        "floor": floor,
    }
    for fn in runs.values():  # warm-up
        fn()
    for _ in range(repeats):  # interleaved: the machine's load hits every column alike
        for name, fn in runs.items():
            cols[name].append(timed(fn))
    if with_loop:
        for _ in range(loop_repeats):
            cols["loop"].append(timed(lambda: fwd_bwd(lambda *a: authors_style_loop(fused, *a), inputs)))
    return {k: (statistics.median(v) if v else float("nan")) for k, v in cols.items()}


def check_agreement(D=256):
    """The loop reference and the fused objective agree (so the timing compares like with like)."""
    inputs = make_inputs(6, 5, 9, D, seed=5)
    obj = LocVTPObjective(dim=D, **METHOD)
    a = obj(*inputs)
    b = authors_style_loop(obj, *inputs)
    return max(abs(float(a[k].detach()) - float(b[k].detach())) for k in ("coarse", "fine", "temporal", "total"))


def render(rows, threads, note, clock="wall") -> str:
    lines = [
        "# Objectives benchmark (forward + backward, all three terms, context head included)",
        "",
        f"`python benchmarks/bench_objectives.py --threads {threads} --clock {clock}` — D = 256, {threads} thread(s), "
        f"{'wall-clock' if clock == 'wall' else 'process CPU'} time, median of the repeats; "
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}. {note}",
        "",
        "Columns: *fused* = `LocVTPObjective` as shipped (fp32); *bf16* = `bf16_products=True`; *masked* = the "
        "straightforward vectorised implementation (explicit block mask, autograd); *loop* = Python loops over "
        "batch and clips/words picking positives and negatives (the authors' release style); *floor* = the fp32 "
        "similarity products at the padded sizes (C·Wᵀ and Z·Wᵀ, (B·T)×(B·L), forward + 4 backward products); "
        "the fused op multiplies only valid rows / columns, so it can go below it.",
        "",
        "| B | T | L | fused ms | bf16 ms | masked ms | loop ms | floor ms | loop/fused | loop/bf16 | fused/floor | bf16/floor | masked/fused |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (B, T, L), r in rows:
        f, h, m, lp, fl = (r[k] * 1e3 for k in ("fused", "fused-bf16", "masked", "loop", "floor"))
        has_loop = lp == lp  # not NaN
        loop_s = f"{lp:.0f}" if has_loop else "—"
        r1 = f"{lp / f:.0f}×" if has_loop else "—"
        r2 = f"{lp / h:.0f}×" if has_loop else "—"
        lines.append(
            f"| {B} | {T} | {L} | {f:.1f} | {h:.1f} | {m:.1f} | {loop_s} | {fl:.1f} | {r1} | {r2} | "
            f"{f / fl:.2f} | {h / fl:.2f} | {m / f:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="*", default=None, help="B,T,L triples (default: the 8-point grid)")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--loop-repeats", type=int, default=1)
    ap.add_argument(
        "--loop-sizes", nargs="*", default=["32,5,16", "32,10,32", "128,5,16", "128,10,32"],
        help="B,T,L triples where the (slow: minutes at B=128) loop reference is timed; 'all' for every size",
    )
    ap.add_argument("--no-loop", action="store_true")
    ap.add_argument(
        "--clock", choices=("wall", "cpu"), default="wall",
        help="cpu = CPU time of this process: with --threads 1 it is insensitive to other tenants of the machine",
    )
    ap.add_argument("--out", type=Path, default=None, help="also write the markdown table here (atomically)")
    args = ap.parse_args(argv)
    if args.repeats < 5:
        print("note: fewer than 5 repeats requested", file=sys.stderr)
    torch.set_num_threads(args.threads)
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    sizes = [tuple(int(v) for v in s.split(",")) for s in args.sizes] if args.sizes else GRID
    err = check_agreement(args.dim)
    print(f"loop reference vs fused objective, max |Δ| over terms: {err:.2e}")
    if err > 1e-3:
        print("ERROR: loop reference disagrees with the objective", file=sys.stderr)
        return 1
    rows = []
    loop_sizes = sizes if "all" in args.loop_sizes else [tuple(int(v) for v in s.split(",")) for s in args.loop_sizes]
    for B, T, L in tqdm(sizes, desc="sizes"):
        with_loop = not args.no_loop and (B, T, L) in loop_sizes
        r = bench_size(B, T, L, args.dim, args.repeats, args.loop_repeats, with_loop=with_loop)
        rows.append(((B, T, L), r))
        tqdm.write(
            f"B={B} T={T} L={L}: fused {r['fused']*1e3:.1f} ms, bf16 {r['fused-bf16']*1e3:.1f} ms, "
            f"masked {r['masked']*1e3:.1f} ms, loop {r['loop']*1e3:.0f} ms, floor {r['floor']*1e3:.1f} ms"
        )
        partial = render(rows, args.threads, "(partial)", args.clock)
        if args.out:  # keep what is measured even if the run is interrupted
            _atomic_write(args.out.with_name(args.out.name + ".partial"), partial)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    note = (
        f"Load average at the end of the run: {load:.1f} on {os.cpu_count()} cores (shared machine). "
        f"Loop reference: {args.loop_repeats} run(s), at the sizes where a figure is shown; others: {args.repeats}."
    )
    table = render(rows, args.threads, note, args.clock)
    print(table)
    if args.out:
        _atomic_write(args.out, table)
        partial = args.out.with_name(args.out.name + ".partial")
        if partial.exists():
            partial.unlink()
    return 0


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
