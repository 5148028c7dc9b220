"""Corpus moment search: the `locvtp index` and `locvtp search` commands.

The index itself -- its layout, how it is built, searched and how clip hits merge into moments -- is library code
in :mod:`locvtp.index`. This module only parses
arguments, calls the library through :class:`locvtp.predictor.LocVTPPredictor`, and prints.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from locvtp import cliargs, runtime
from locvtp.data.textinput import read_lines, strip_bom
from locvtp.errors import UsageError
from locvtp.files import check_apart
from locvtp.index import MomentIndex, build_index


# ----------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------
def index_main(argv: list[str] | None = None) -> int:
    p = cliargs.ArgumentParser(prog="locvtp index", description="Build a moment-search index over clip features.")
    p.add_argument("--features", required=True, help="feature file/dir from `locvtp extract` (h5, npy-dir, npz-dir)")
    p.add_argument("--out", required=True,
                   help="index directory to write (replaced atomically; only an index `locvtp index` wrote is "
                        "replaced)")
    p.add_argument("--kind", choices=("exact", "ivf", "ivfpq", "auto"), default=None,
                   help="exact inner product; ivf (faiss IVF-Flat, all vectors in RAM); ivfpq (compressed codes on "
                        "disk, re-ranked on float16 vectors: corpora of 10^6-10^9 clips); auto (default): exact up "
                        "to 250k clips, else ivfpq (docs/usage.md)")
    p.add_argument("--ivf", type=cliargs.positive_int, default=None, metavar="NLIST",
                   help="lists of an IVF kind (default: a power of two near sqrt(clips)); without --kind: "
                        "--kind ivf")
    p.add_argument("--nprobe", type=cliargs.positive_int, default=None,
                   help="IVF lists probed per query, recorded in the index (default: ivf NLIST/16, ivfpq the lists "
                        "holding ~500k codes, at most NLIST/2)")
    p.add_argument("--rerank", type=cliargs.positive_int, default=None,
                   help="ivfpq: candidates re-scored exactly per query, recorded in the index (default 1000)")
    p.add_argument("--pq-m", type=cliargs.positive_int, default=None,
                   help="ivfpq: bytes per code (PQ sub-quantizers; must divide the width; default width/8)")
    p.add_argument("--opq", action="store_true",
                   help="ivfpq: an OPQ rotation before the PQ (slower to train; no recall gain measured on the "
                        "benchmark corpus: docs/benchmarks/search_scale.md)")
    p.add_argument("--train-size", type=cliargs.positive_int, default=100_000,
                   help="IVF training sample size (at least 39 rows a list are used)")
    p.add_argument("--seed", type=cliargs.nonnegative_int, default=0, help="seed of the training sample")
    p.add_argument("--allow-backbone", action="store_true", help="index backbone features anyway")
    p.add_argument("--videos", default=None, metavar="LIST",
                   help="index only the video ids listed in this file (one per line, '#' comments)")
    p.add_argument("--strict", action="store_true",
                   help="fail on a video with NaN/inf features instead of skipping and reporting it")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.kind == "exact" and args.ivf is not None:
        p.error("--ivf: an exact index has no lists (give --kind ivf, ivfpq or auto)")
    video_ids = None
    check_apart(args.out, {"--features": args.features, "--videos": args.videos})
    if args.videos:
        video_ids = read_lines(args.videos, "--videos", comments=True)
        if not video_ids:
            raise UsageError(f"--videos {args.videos}: lists no video id")
    skipped: list[str] = []

    def on_skip(video_id: str, message: str) -> None:
        skipped.append(video_id)
        if len(skipped) <= 20:
            cliargs.warn("locvtp index", f"skipped: {message}")

    kind = args.kind or ("ivf" if args.ivf is not None else "auto")
    meta = build_index(args.features, args.out, ivf=args.ivf, nprobe=args.nprobe, train_size=args.train_size,
                       seed=args.seed, progress=not args.no_progress, allow_backbone=args.allow_backbone,
                       video_ids=video_ids, strict=args.strict, on_skip=on_skip, kind=kind,
                       pq={"m": args.pq_m, "opq": args.opq, "rerank": args.rerank})
    if len(skipped) > 20:
        cliargs.warn("locvtp index", f"... and {len(skipped) - 20} more videos with non-finite features skipped")
    note = (f"; skipped {len(skipped)} video(s) with non-finite features (listed under 'skipped' in "
            f"{Path(args.out) / 'meta.json'}; --strict makes this an error)" if skipped else "")
    print(f"indexed {meta['rows']} clips of {meta['videos']} videos ({meta['kind']}, dim {meta['dim']}) -> {args.out}"
          f"{note}", file=sys.stderr)
    return 0


def search_main(argv: list[str] | None = None) -> int:
    p = cliargs.ArgumentParser(prog="locvtp search", description="Search a moment index with text queries; "
                               "prints one JSON object per query on stdout.")
    p.add_argument("query", nargs="*", help="query sentence(s)")
    p.add_argument("--index", required=True, help="index directory from `locvtp index`")
    p.add_argument("--checkpoint", required=True, help="checkpoint (or run dir) used to embed the query")
    p.add_argument("--queries", default=None, help="file with one query per line (in addition to positional ones)")
    p.add_argument("--top-k", type=cliargs.positive_int, default=10, help="moments per query (at most the index size)")
    p.add_argument("--pool", type=cliargs.positive_int, default=None,
                   help="clips retrieved before merging (default max(50, 10*k); at most the index size)")
    p.add_argument("--gap", type=cliargs.nonnegative_int, default=0,
                   help="merge hits at most GAP clips apart (default: adjacent)")
    p.add_argument("--tolerance", type=cliargs.fraction, default=0.5,
                   help="a neighbour joins a moment if its score >= floor + (1-TOL)*(seed - floor), floor = the "
                   "pool's lowest score; 0 = single clips, 1 = chain every adjacent pool hit")
    p.add_argument("--backend", choices=("auto", "faiss", "numpy"), default="auto")
    p.add_argument("--nprobe", type=cliargs.positive_int, default=None,
                   help="IVF lists probed per query (default: the index's)")
    p.add_argument("--rerank", type=cliargs.positive_int, default=None,
                   help="ivfpq: candidates re-scored exactly per query (default: the index's)")
    p.add_argument("--device", default="cpu", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--threads", type=cliargs.nonnegative_int, default=0,
                   help="CPU threads for faiss/torch (0: library default). On a busy machine 1 thread is often "
                        "faster for single queries: see docs/benchmarks/extract_search.md")
    p.add_argument("--allow-foreign-features", "--allow-checkpoint-mismatch", dest="allow_foreign_features",
                   action="store_true", help="search even if the index was built from another checkpoint's features "
                   "(the flag's name in ground and serve too; --allow-checkpoint-mismatch is its former name)")
    args = p.parse_args(argv)
    queries = [strip_bom(q) for q in args.query]
    if args.queries:
        queries += read_lines(args.queries, "--queries")
    if not queries:
        p.error("give at least one query (positional or --queries FILE)")
    empty = [i for i, q in enumerate(queries, 1) if not q.strip()]
    if empty:
        p.error(f"query {empty[0]} is empty or whitespace only: there is nothing to search for")
    from locvtp.device import resolve_device

    device = resolve_device(args.device)
    # --threads for torch and faiss during the command (restored after: search_main may run inside a program)
    with runtime.threads(args.threads or None, faiss=True):
        return _search(args, queries, device)


def _search(args, queries: list[str], device: str) -> int:
    index = MomentIndex(args.index, backend=args.backend, nprobe=args.nprobe, rerank=args.rerank)
    from locvtp.predictor import LocVTPPredictor

    pred = LocVTPPredictor.from_checkpoint(args.checkpoint, device=device)
    # the feature policy of locvtp.predictor on the index's fingerprint, then its width
    index, index_warnings = pred.open_index(index, allow_foreign_features=args.allow_foreign_features,
                                            allow_flag="--allow-foreign-features", where=f"--index {args.index}")
    for w in index_warnings:
        cliargs.warn("locvtp search", w)
    pred.require_tokenizer("locvtp search")
    resp = pred.search_index(index, queries, top_k=args.top_k, pool=args.pool, gap=args.gap,
                             tolerance=args.tolerance, pool_flag="--pool")
    for r in resp.results:
        for w in r.warnings:
            cliargs.warn("locvtp search", w)
    for r in resp.results:
        print(json.dumps(r.to_json()))
    print(f"{len(queries)} queries: embed {1e3 * resp.embed_seconds:.1f} ms, search {1e3 * resp.search_seconds:.1f} ms "
          f"({index.backend}, {index.kind}, {len(index)} clips)", file=sys.stderr)
    return 0
