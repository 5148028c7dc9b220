"""Moment search at corpus scale: exact, IVF-Flat and IVF-PQ (on disk, re-ranked) side by side, text-like queries.

For each index kind it prints the build time, the peak resident memory (ru_maxrss) of the build and of the search
(each in its own child process, so one cannot inflate the other, and the search opens an index a finished process
wrote), the index's bytes on disk, the single-query p50/p95 latency of ``MomentIndex.search_moments(q, top_k=10)``
(pool 100 clips; second pass over the queries, warm page cache, the first pass printed beside it) and the recall@1 / recall@10 of *moments* against exact search; then an nprobe x rerank table of
the IVF-PQ index (the trade-off behind its defaults). Exact and IVF-Flat hold every fp32 vector in RAM, so they are
skipped above ``--exact-max`` clips; the exact reference is then computed by streaming the corpus.

The clustered corpus (``--clips N``, width ``--dim``; generated per video from ``(seed, video)``, never all in RAM):

* ``T`` topic means ``mu_t``: unit Gaussian vectors (``--topics``, default 1000).
* video ``v`` (length uniform in [30, 150] clips): topic ``t ~ U{T}``; video mean ``m_v = unit(mu_t + 1.0 g)``;
  1-4 segments (equal lengths), segment mean ``s = unit(m_v + 0.7 g)``; clip ``x = unit(s + 0.6 g)``; ``g`` is a
  fresh ``N(0, I/D)`` draw each time: a mixture of von Mises-Fisher-like clusters nested topic > video > segment
  (clip-to-segment cosine ~0.86, segment-to-video ~0.82, video-to-topic ~0.71).
* text-like query (never a corpus clip): for a random (video, segment), ``q = unit(s + gap + 1.0 g)`` with one
  ``gap`` vector of norm 1.0 shared by all queries: the modality gap (text embeddings sit off the clip
  clusters in a common direction), which is what makes IVF's nearest lists miss (cosine of q to its segment ~0.58).

Moments match when they are of the same video with temporal IoU >= 0.5; recall@10 = share of the exact top-10
moments found in the approximate top-10, recall@1 = share of queries whose top moment matches the exact top one.

Real embeddings: ``--features STORE`` (``locvtp extract`` output) with ``--checkpoint CKPT --queries FILE``
(one sentence a line, embedded by the checkpoint) instead of the generated corpus.

    nice -n 19 .venv/bin/python benchmarks/bench_search.py --clips 200000          # < 2 min on 2 cores
    nice -n 19 .venv/bin/python benchmarks/bench_search.py --clips 10000000 --kinds ivfpq
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))


# --------------------------------------------------------------------------------------------------------------
# the clustered corpus
# --------------------------------------------------------------------------------------------------------------
def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _lengths(n_clips: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng((seed, 1))
    lens = rng.integers(30, 151, size=n_clips // 30 + 2)
    cut = int(np.searchsorted(np.cumsum(lens), n_clips))
    lens = lens[: cut + 1].copy()
    lens[-1] -= int(lens.sum() - n_clips)
    return lens[lens > 0]


def _topics(dim: int, n_topics: int, seed: int) -> np.ndarray:
    return _unit(np.random.default_rng((seed, 0)).standard_normal((n_topics, dim)))


def _video(seed: int, v: int, n: int, topics: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(clips [n, D], segment means [S, D], segment of each clip [n]) of video ``v``: see the module docstring."""
    dim = topics.shape[1]
    rng = np.random.default_rng((seed, 2, v))
    sd = 1.0 / np.sqrt(dim)
    t = rng.integers(len(topics))
    m = _unit(topics[t] + rng.standard_normal(dim, dtype=np.float32) * sd)
    n_seg = int(min(n, rng.integers(1, 5)))
    segs = _unit(m + 0.7 * sd * rng.standard_normal((n_seg, dim), dtype=np.float32))
    seg_of = (np.arange(n) * n_seg) // n
    clips = _unit(segs[seg_of] + 0.6 * sd * rng.standard_normal((n, dim), dtype=np.float32))
    return clips, segs, seg_of


def synthetic_records(n_clips: int, dim: int, n_topics: int, seed: int):
    """``records(load)`` factory (as :func:`locvtp.index.build_index_from_records` takes) of the corpus."""
    from locvtp.featurestore.record import ClipFeatures

    lens = _lengths(n_clips, seed)
    topics = _topics(dim, n_topics, seed)

    def records(load: bool):
        for v, n in enumerate(lens.tolist()):
            feats = windows = None
            if load:
                feats = _video(seed, v, n, topics)[0]
                st = np.arange(n, dtype=np.float64)
                windows = np.stack([st, st + 1.0], 1)
            yield ClipFeatures(f"v{v:08d}", feats, windows, 0.0, float(n), shape=(n, dim))

    return records


def synthetic_queries(n_clips: int, dim: int, n_topics: int, seed: int, n_queries: int) -> np.ndarray:
    lens = _lengths(n_clips, seed)
    topics = _topics(dim, n_topics, seed)
    rng = np.random.default_rng((seed, 3))
    gap = _unit(rng.standard_normal(dim))  # norm 1: the shared modality-gap offset
    out = []
    for v in rng.choice(len(lens), n_queries, replace=n_queries > len(lens)):
        _, segs, _ = _video(seed, int(v), int(lens[v]), topics)
        s = segs[rng.integers(len(segs))]
        out.append(s + gap + rng.standard_normal(dim).astype(np.float32) / np.sqrt(dim))
    return _unit(np.stack(out))


def real_records(features: str):
    from locvtp.featurestore import iter_features

    def records(load: bool):
        yield from iter_features(features, load=load)

    return records


def real_queries(checkpoint: str, queries: str) -> np.ndarray:
    from locvtp.predictor import LocVTPPredictor

    lines = [ln.strip() for ln in Path(queries).read_text(encoding="utf-8").splitlines() if ln.strip()]
    return np.asarray(LocVTPPredictor.from_checkpoint(checkpoint).encode_text(lines, warnings=False).sentence,
                      dtype=np.float32)


# --------------------------------------------------------------------------------------------------------------
# children: one build or one search per process (peak RSS of that phase alone)
# --------------------------------------------------------------------------------------------------------------
def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class AnonPeak:
    """Peak of the process' anonymous resident memory (``RssAnon``: its own allocations), sampled every 50 ms.
    ``ru_maxrss`` also counts the pages of memory-mapped files the process touched, which the kernel can evict
    (page cache): the two together say how much RAM the index needs and how much it merely benefits from."""

    def __init__(self):
        import threading

        self.peak = 0.0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    @staticmethod
    def now_mb() -> float:
        try:
            for line in open("/proc/self/status"):
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) / 1024.0
        except OSError:
            pass
        return float("nan")

    def _run(self):
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self.now_mb())

    def stop(self) -> float:
        self._stop.set()
        self._t.join()
        return max(self.peak, self.now_mb())


def _records_of(args):
    if args.features:
        return real_records(args.features)
    return synthetic_records(args.clips, args.dim, args.topics, args.seed)


def build_index_of(args, kind: str, out: Path, extra_meta: dict | None = None) -> dict:
    """The index of ``kind`` this benchmark measures (corpus and build options from ``args``, this script's
    parser): also what ``bench_serve.py --kind ivfpq`` serves, so the two measure the same index."""
    from locvtp.index import build_index_from_records

    return build_index_from_records(_records_of(args), out, extra_meta, kind=kind, progress=False,
                                    train_size=args.train_size, ivf=args.nlist, pq={"opq": args.opq, "m": args.pq_m})


def child_build(args, kind: str, out: Path) -> dict:
    if (out / "meta.json").is_file():  # --keep: an index of an earlier run
        meta = json.loads((out / "meta.json").read_text())
        return {"build_s": float("nan"), "build_cpu_s": float("nan"), "build_rss_mb": float("nan"),
                "build_anon_mb": float("nan"), "bytes": sum(p.stat().st_size for p in out.iterdir()),
                "rows": meta["rows"], "settings": meta.get("ivfpq") or {"nlist": meta.get("nlist")}}
    anon = AnonPeak()
    t0 = time.perf_counter()
    meta = build_index_of(args, kind, out)
    took = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in out.iterdir())
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {"build_s": took, "build_cpu_s": ru.ru_utime + ru.ru_stime, "build_rss_mb": _peak_rss_mb(),
            "build_anon_mb": anon.stop(), "bytes": size,
            "rows": meta["rows"],
            "settings": meta.get("ivfpq") or {"nlist": meta.get("nlist"), "nprobe": meta.get("nprobe")}}


def _timed(index, queries: np.ndarray) -> tuple[list, np.ndarray]:
    index.search_moments(queries[:1], top_k=10)  # warm-up: thread pools, first pages
    res, times = [], []
    for q in queries:
        t0 = time.perf_counter()
        res.append(index.search_moments(q[None], top_k=10)[0])
        times.append(time.perf_counter() - t0)
    return [[(m.video_id, m.start, m.end) for m in r] for r in res], np.asarray(times) * 1e3


def child_search(args, kind: str, path: Path, queries: np.ndarray) -> dict:
    from locvtp.index import MomentIndex

    anon = AnonPeak()
    index = MomentIndex(path, backend="faiss")
    _, cold = _timed(index, queries)  # first pass: pages of the lists / vectors possibly still on disk
    moments, t = _timed(index, queries)  # second pass: the figures reported (warm page cache)
    out = {"p50_ms": float(np.median(t)), "p95_ms": float(np.percentile(t, 95)), "moments": moments,
           "cold_p50_ms": float(np.median(cold)), "cold_p95_ms": float(np.percentile(cold, 95)),
           "search_rss_mb": _peak_rss_mb(), "search_anon_mb": anon.stop()}
    if kind == "ivfpq" and args.sweep:
        import faiss

        ivf = faiss.extract_index_ivf(index._faiss)
        sweep = []
        for nprobe in args.nprobe:
            for rerank in args.rerank:
                ivf.nprobe, index.rerank = int(min(nprobe, ivf.nlist)), int(rerank)
                m, tt = _timed(index, queries)
                sweep.append({"nprobe": nprobe, "rerank": rerank, "p50_ms": float(np.median(tt)),
                              "p95_ms": float(np.percentile(tt, 95)), "moments": m})
        out["sweep"] = sweep
    return out


def _run_child(argv: list[str], what: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, *argv, "--_child", *what], capture_output=True, text=True)
    if proc.returncode:
        sys.stderr.write(proc.stderr[-3000:])
        raise SystemExit(f"child {what} failed ({proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------------------------
# exact reference by streaming, recall of moments
# --------------------------------------------------------------------------------------------------------------
def streamed_exact_moments(records, index_dir: Path, queries: np.ndarray, pool: int = 100) -> list:
    """Exact top-10 moments without any index: the corpus streamed in blocks, the ``pool`` best clips kept per
    query, merged by the library's :func:`locvtp.index.merge_moments` on the rows of ``index_dir``."""
    from locvtp.index import merge_moments

    n = len(queries)
    best_s = np.full((n, 0), -np.inf)
    best_r = np.zeros((n, 0), dtype=np.int64)
    pos, block = 0, []

    def flush(pos0, block):
        nonlocal best_s, best_r
        x = np.concatenate(block)
        s = (queries.astype(np.float64) @ x.T.astype(np.float64))
        cs = np.concatenate([best_s, s], 1)
        cr = np.concatenate([best_r, np.broadcast_to(np.arange(pos0, pos0 + len(x)), s.shape)], 1)
        keep = np.argsort(-cs, axis=1, kind="stable")[:, :pool]
        best_s, best_r = np.take_along_axis(cs, keep, 1), np.take_along_axis(cr, keep, 1)

    start = 0
    for rec in records(True):
        if rec.num_clips == 0:
            continue
        block.append(np.asarray(rec.features, dtype=np.float32))
        pos += rec.num_clips
        if pos - start >= 131072:
            flush(start, block)
            start, block = pos, []
    if block:
        flush(start, block)
    rv = np.load(index_dir / "row_video.npy", mmap_mode="r")
    rc = np.load(index_dir / "row_clip.npy", mmap_mode="r")
    rw = np.load(index_dir / "row_window.npy", mmap_mode="r")
    videos = json.loads((index_dir / "videos.json").read_text())
    return [[(m.video_id, m.start, m.end) for m in merge_moments(best_r[i], best_s[i], rv, rc, rw, videos, 10)]
            for i in range(n)]


def _iou(a, b) -> float:
    inter = max(0.0, min(a[2], b[2]) - max(a[1], b[1]))
    union = max(a[2], b[2]) - min(a[1], b[1])
    return inter / union if union > 0 else 0.0


def _match(a, b) -> bool:
    return a[0] == b[0] and _iou(a, b) >= 0.5


def moment_recall(found: list, exact: list) -> tuple[float, float]:
    r10 = [np.mean([any(_match(e, f) for f in fs) for e in es]) for fs, es in zip(found, exact) if es]
    r1 = [bool(fs) and _match(fs[0], es[0]) for fs, es in zip(found, exact) if es]
    return float(np.mean(r1)), float(np.mean(r10))


# --------------------------------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=200_000)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--topics", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--queries", type=int, default=100, help="number of synthetic text-like queries")
    p.add_argument("--kinds", nargs="+", default=["exact", "ivf", "ivfpq"])
    p.add_argument("--exact-max", type=int, default=2_000_000, help="skip exact/ivf above this many clips (RAM)")
    p.add_argument("--train-size", type=int, default=100_000)
    p.add_argument("--opq", action="store_true", help="ivfpq with an OPQ rotation")
    p.add_argument("--pq-m", type=int, default=None, help="ivfpq code bytes (default: the library's, dim/8)")
    p.add_argument("--nlist", type=int, default=None, help="lists of the IVF kinds (default: the library's)")
    p.add_argument("--threads", type=int, default=1, help="faiss/BLAS threads (1: single-query latency)")
    p.add_argument("--sweep", action=argparse.BooleanOptionalAction, default=True, help="nprobe x rerank table")
    p.add_argument("--nprobe", type=int, nargs="+", default=[16, 32, 64, 128])
    p.add_argument("--rerank", type=int, nargs="+", default=[100, 300, 1000])
    p.add_argument("--features", default=None, help="real embeddings: a feature store instead of the generator")
    p.add_argument("--checkpoint", default=None, help="with --features: embeds --query-file")
    p.add_argument("--query-file", default=None, help="with --features: one text query a line")
    p.add_argument("--workdir", default=None, help="where the indexes go (default: a temp dir, removed)")
    p.add_argument("--keep", default=None, metavar="DIR",
                   help="keep the indexes in DIR and reuse those already there (same corpus options!)")
    p.add_argument("--_child", nargs="+", default=None, help=argparse.SUPPRESS)
    return p


def _queries(args) -> np.ndarray:
    if args.features:
        if not (args.checkpoint and args.query_file):
            raise SystemExit("--features needs --checkpoint and --query-file (real text queries)")
        return real_queries(args.checkpoint, args.query_file)
    return synthetic_queries(args.clips, args.dim, args.topics, args.seed, args.queries)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    if args._child:
        import faiss

        faiss.omp_set_num_threads(args.threads)
        what, kind, path = args._child
        if what == "build":
            res = child_build(args, kind, Path(path))
        else:
            res = child_search(args, kind, Path(path), np.load(Path(path).parent / "queries.npy"))
        print(json.dumps(res))
        return 0
    import faiss

    from locvtp.runtime import cpu_model

    base = [a for a in argv]
    load = os.getloadavg()[0]
    print(f"# bench_search: {cpu_model()}, {os.cpu_count()} cpus, load average {load:.1f} at start, "
          f"faiss {faiss.__version__}, {args.threads} thread(s); "
          + (f"features {args.features}" if args.features else
             f"clustered corpus of {args.clips:,} clips, D={args.dim}, {args.topics} topics, {args.queries} "
             "text-like queries (segment mean + shared gap + noise)"))
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(args.keep or tmp)
        work.mkdir(parents=True, exist_ok=True)
        queries = _queries(args)
        np.save(work / "queries.npy", queries)
        results = {}
        for kind in args.kinds:
            if kind in ("exact", "ivf") and args.clips > args.exact_max and not args.features:
                print(f"  {kind}: skipped above --exact-max {args.exact_max:,} clips "
                      f"(holds {4 * args.dim * args.clips / 2**30:.1f} GiB of fp32 vectors in RAM)")
                continue
            b = _run_child(base, ["build", kind, str(work / kind)])
            print(f"  built {kind}: {b['build_s']:.1f} s ({b['build_cpu_s']:.1f} s CPU), "
                  f"peak RSS {b['build_rss_mb']:.0f} MB "
                  f"(anonymous {b['build_anon_mb']:.0f} MB), "
                  f"{b['bytes'] / 2**20:.0f} MiB on disk, {b['settings']}", flush=True)
            s = _run_child(base, ["search", kind, str(work / kind)])
            results[kind] = {**b, **s}
        ref_dir = work / next(iter(results))
        t0 = time.perf_counter()
        cached = work / "exact_moments.json"  # --keep: the streamed reference of an earlier run, same queries
        if "exact" in results:
            exact = results["exact"]["moments"]
        elif args.keep and cached.is_file() and json.loads(cached.read_text())["queries"] == queries.tolist():
            exact = json.loads(cached.read_text())["moments"]
        else:
            exact = streamed_exact_moments(_records_of(args), ref_dir, queries)
            cached.write_text(json.dumps({"queries": queries.tolist(), "moments": exact}))
        print(f"  exact reference: {'the exact index' if 'exact' in results else 'streamed'} "
              f"({time.perf_counter() - t0:.1f} s)")
        print(f"\n{'kind':<8}{'build s':>9}{'CPU s':>8}{'build RSS (anon) MB':>21}{'search RSS (anon) MB':>22}"
              f"{'disk MiB':>10}{'p50 ms':>9}{'p95 ms':>9}{'R@1':>7}{'R@10':>7}")
        for kind, r in results.items():
            r1, r10 = moment_recall(r["moments"], exact)
            print(f"{kind:<8}{r['build_s']:>9.1f}{r['build_cpu_s']:>8.1f}"
                  f"{r['build_rss_mb']:>14.0f} ({r['build_anon_mb']:>4.0f})"
                  f"{r['search_rss_mb']:>15.0f} ({r['search_anon_mb']:>4.0f})"
                  f"{r['bytes'] / 2**20:>10.0f}{r['p50_ms']:>9.2f}{r['p95_ms']:>9.2f}{r1:>7.3f}{r10:>7.3f}"
                  f"   (first pass over the queries: p50 {r['cold_p50_ms']:.2f}, p95 {r['cold_p95_ms']:.2f} ms)")
        if "ivfpq" in results and results["ivfpq"].get("sweep"):
            print(f"\nivfpq trade-off (nlist {results['ivfpq']['settings']['nlist']}):\n"
                  f"{'nprobe':>7}{'rerank':>8}{'p50 ms':>9}{'p95 ms':>9}{'R@1':>7}{'R@10':>7}")
            for row in results["ivfpq"]["sweep"]:
                r1, r10 = moment_recall(row["moments"], exact)
                print(f"{row['nprobe']:>7}{row['rerank']:>8}{row['p50_ms']:>9.2f}{row['p95_ms']:>9.2f}"
                      f"{r1:>7.3f}{r10:>7.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
