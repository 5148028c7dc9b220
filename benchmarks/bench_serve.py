"""`locvtp serve` latency and upload throughput, against a real server process on a loopback port.

Measures (issue 17; targets: ground p50 < 100 ms, search p50 < 150 ms):

* ``/api/ground`` on an already-encoded video (the embeddings are cached: what is timed is the query's text
  encoding, the window scoring, the clip x word heatmap and JSON) -- p50 / p95 over ``--requests`` requests;
* ``/api/search`` over a corpus of ``--clips`` clips (default 10^6). The default index (``--kind exact``) holds
  RANDOM unit-norm embeddings of the model's width (the cost of exact search does not depend on the values);
* the encode throughput of an upload: a synthetic ``--upload-seconds`` s MPEG-4 Part 2 AVI (the case that also
  needs a playback transcode) uploaded with ``?wait=true``: clips/s and video seconds per second, and the split
  between transcoding and encoding reported by the job.

``--kind ivfpq`` (issue 24: target ``/api/search`` p50 < 150 ms at 10^7 clips) serves an IVF-PQ index of the
clustered corpus of ``bench_search.py`` instead (its generator and build, imported: the same index as
``bench_search.py --clips N --kinds ivfpq``; width ``--dim``, default 256 as there), or the index ``--index
DIR`` (e.g. ``DIR/ivfpq`` of ``bench_search.py --keep DIR``), and measures ``/api/search`` only (ground and
upload do not touch the index). An IVF-PQ search's cost depends on the query (which lists it probes, which
candidates it re-reads), so the queries are the world's distinct narrations, sent once each before timing
(first pass, printed) and then ``--requests`` times round-robin; the split of a request's time is printed:
text encoding and index search + moment grouping (the server's ``timing`` fields), HTTP + JSON (client time
minus those), and index search vs moment grouping (measured in this process on the same queries, index and
checkpoint, after the HTTP run), with the server's CPU time per request (``/proc``; load-independent).

Latencies are measured twice: by the client over loopback with a kept-alive connection (request to last byte)
and by the server itself (the ``timing`` fields of the answers: model + index work only). The model is a
randomly initialised checkpoint of the demo's shape (tiny3d video encoder, width ``--dim``); a trained one of the
same shape costs the same. Prints the CPU model and the load average.

    .venv/bin/python benchmarks/bench_serve.py [--clips 1000000] [--requests 200] [--threads 2]
    nice -n 19 .venv/bin/python benchmarks/bench_serve.py --kind ivfpq --clips 10000000 --work /tmp/bs
    nice -n 19 .venv/bin/python benchmarks/bench_serve.py --index /tmp/ivfpq1e7/ivfpq   # an index built before
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from locvtp.runtime import cpu_model

ROOT = Path(__file__).resolve().parents[1]
QUERY = "the green triangle becomes larger"


def make_checkpoint(world: Path, out: Path, dim: int) -> Path:
    """A randomly initialised model of the demo's shape with a tokenizer trained on the world's narrations."""
    import torch

    from locvtp.checkpoint import save_checkpoint
    from locvtp.config import default_config
    from locvtp.data.tokenizer import train_tokenizer
    from locvtp.model import LocVTP

    cap = json.loads((world / "pretrain" / "caption.json").read_text(encoding="utf-8"))
    tok = train_tokenizer([t for v in cap.values() for t in v["text"]], vocab_size=300)
    cfg = default_config()
    cfg.data.root = str(world)
    cfg.model.dim = dim
    cfg.model.text.vocab_size = tok.vocab_size
    torch.manual_seed(0)
    return save_checkpoint(out, LocVTP.from_config(cfg), cfg, tok)


def random_index(out: Path, rows: int, dim: int, sha256: str, per_video: int = 200) -> dict:
    from locvtp.featurestore.record import ClipFeatures
    from locvtp.index import build_index_from_records

    n_videos = (rows + per_video - 1) // per_video

    def records(load: bool):
        for v in range(n_videos):
            n = min(per_video, rows - v * per_video)
            feats = windows = None
            if load:
                x = np.random.default_rng((0, v)).standard_normal((n, dim), dtype=np.float32)
                feats = x / np.linalg.norm(x, axis=1, keepdims=True)
                st = np.arange(n, dtype=np.float64)
                windows = np.stack([st, st + 1.0], 1)
            yield ClipFeatures(f"v{v:07d}", feats, windows, 0.0, float(n), shape=(n, dim))

    return build_index_from_records(records, out, {"checkpoint_sha256": sha256, "embedding": "joint"},
                                    progress=False)


def ivfpq_index(out: Path, clips: int, dim: int, sha256: str) -> dict:
    """``bench_search.py``'s clustered corpus of ``clips`` clips as an IVF-PQ index (its defaults), recorded as
    this checkpoint's joint embeddings so that ``serve`` opens it without ``--allow-foreign-features``."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_search

    args = bench_search._parser().parse_args(["--clips", str(clips), "--dim", str(dim)])
    return bench_search.build_index_of(args, "ivfpq", out, {"checkpoint_sha256": sha256, "embedding": "joint"})


def index_info(path: Path) -> tuple[int, int, str, str | None]:
    """(rows, width, kind, checkpoint sha256) of a built index, without loading it."""
    meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
    dim = int(np.load(path / "embeddings.npy", mmap_mode="r").shape[1])
    return int(meta["rows"]), dim, str(meta["kind"]), meta.get("checkpoint_sha256")


def world_queries(world: Path) -> list[str]:
    """The world's distinct narrations and Charades-STA sentences, in a fixed order: varied text queries (an
    IVF-PQ search probes other lists and re-reads other vectors for each)."""
    cap = json.loads((world / "pretrain" / "caption.json").read_text(encoding="utf-8"))
    texts = {t for v in cap.values() for t in v["text"]}
    for f in sorted((world / "grounding" / "charades").glob("charades_sta_*.txt")):
        texts |= {ln.split("##", 1)[1].strip() for ln in f.read_text(encoding="utf-8").splitlines() if "##" in ln}
    return sorted(texts)


def build_apart(fn, *args) -> dict:
    """``fn(*args)`` in a fresh (spawned) process: faiss' OpenMP threads, left spinning by a build, would
    otherwise eat the CPU of this process' later timings (measured: 220 ms instead of 2 ms a text encoding)."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as ex:
        return ex.submit(fn, *args).result()


class Client:
    def __init__(self, base: str):
        host, port = base.split("//", 1)[1].rsplit(":", 1)
        self.conn = http.client.HTTPConnection(host, int(port), timeout=600)
        self.conn.connect()
        import socket

        # headers and body leave in two writes: without TCP_NODELAY, Nagle + delayed ACK add ~40 ms per request
        self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def post(self, path: str, body: object = None, data: bytes | None = None, ctype: str = "application/json"):
        payload = json.dumps(body).encode() if data is None else data
        t0 = time.perf_counter()
        self.conn.request("POST", path, body=payload, headers={"Content-Type": ctype})
        r = self.conn.getresponse()
        raw = r.read()
        dt = time.perf_counter() - t0
        if r.status >= 300:
            raise RuntimeError(f"{path}: HTTP {r.status}: {raw[:300]!r}")
        return json.loads(raw), dt


def pct(xs: list[float]) -> tuple[float, float]:
    a = np.asarray(xs) * 1000.0
    return float(np.percentile(a, 50)), float(np.percentile(a, 95))


def start_server(ckpt: Path, world: Path, idx: Path, work: Path, threads: int, foreign: bool
                 ) -> tuple[subprocess.Popen, str]:
    """``locvtp serve`` in its own process group on a free port; returns (process, base URL) once it listens."""
    log = work / "server.log"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    argv = [sys.executable, "-m", "locvtp.cli", "serve", "--checkpoint", str(ckpt), "--videos", str(world / "videos"),
            "--index", str(idx), "--work-dir", str(work / "serve_work"), "--port", "0", "--threads", str(threads),
            "--max-upload-mb", "2000"] + (["--allow-foreign-features"] if foreign else [])
    with open(log, "wb") as fh:
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    t0 = time.time()
    while time.time() - t0 < 600:
        m = re.search(r"locvtp serve: (http://[^/\s]+)/", log.read_text(errors="replace"))
        if m:
            print(f"server up in {time.time() - t0:.1f} s (loads the model, opens the index)", flush=True)
            return proc, m.group(1)
        if proc.poll() is not None:
            raise SystemExit(f"server exited:\n{log.read_text()}")
        time.sleep(0.2)
    stop_server(proc)
    raise SystemExit(f"server not up after 600 s:\n{log.read_text()}")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far, all its threads (``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_ground(c: Client, requests: int) -> None:
    video = "grd_00003.mp4"
    first, dt = c.post("/api/ground", {"video": video, "query": QUERY})
    print(f"first /api/ground on {video} (encodes {len(first['clip_windows'])} clips): {dt * 1000:.0f} ms",
          flush=True)
    queries = [f"{QUERY} {w}" for w in ("now", "slowly", "quickly", "again", "here", "there", "then", "")]
    client_t, server_t = [], []
    for i in range(requests):
        res, dt = c.post("/api/ground", {"video": video, "query": queries[i % len(queries)], "top_k": 5})
        client_t.append(dt)
        server_t.append(res["timing"]["embedding_seconds"] + res["timing"]["ground_seconds"])
    g_c, g_s = pct(client_t), pct(server_t)
    print(f"/api/ground (cached video, {len(first['clip_windows'])} clips, top 5 + heatmap), {requests} "
          f"requests: client p50 {g_c[0]:.1f} ms, p95 {g_c[1]:.1f} ms; server-side p50 {g_s[0]:.1f} ms, "
          f"p95 {g_s[1]:.1f} ms", flush=True)


def bench_search(c: Client, queries: list[str], requests: int, what: str, pid: int) -> dict:
    """``/api/search`` (top 10 moments): one pass over ``queries`` (pages of the index on first touch), then
    ``requests`` timed requests; prints p50/p95 of the client time and of each part, returns the last answers."""
    first = [c.post("/api/search", {"query": q, "top_k": 10})[1] for q in queries]
    print(f"/api/search over {what}, first pass over the {len(queries)} distinct queries: client p50 "
          f"{pct(first)[0]:.1f} ms, p95 {pct(first)[1]:.1f} ms", flush=True)
    t = {"client": [], "embed": [], "search": [], "http": []}
    answers = {}
    cpu0 = cpu_seconds(pid)
    for i in range(requests):
        q = queries[i % len(queries)]
        res, dt = c.post("/api/search", {"query": q, "top_k": 10})
        answers[q] = res
        e, s = res["timing"]["embed_seconds"], res["timing"]["search_seconds"]
        t["client"].append(dt), t["embed"].append(e), t["search"].append(s), t["http"].append(dt - e - s)
    cpu = (cpu_seconds(pid) - cpu0) / requests * 1000.0
    s_c, s_s = pct(t["client"]), pct([e + s for e, s in zip(t["embed"], t["search"])])
    print(f"/api/search over {what} (top 10 moments), {requests} requests: client p50 {s_c[0]:.1f} ms, p95 "
          f"{s_c[1]:.1f} ms; server-side p50 {s_s[0]:.1f} ms, p95 {s_s[1]:.1f} ms; server CPU "
          f"{cpu:.1f} ms a request", flush=True)
    print("  split (p50 / p95 ms): " + ", ".join(
        f"{k} {pct(v)[0]:.1f} / {pct(v)[1]:.1f}" for k, v in
        (("text encoding", t["embed"]), ("index search + moment grouping", t["search"]),
         ("HTTP + JSON + rest", t["http"]))), flush=True)
    return answers


def search_split(ckpt: Path, idx: Path, queries: list[str], threads: int, answers: dict) -> None:
    """The server's search path (``LocVTPPredictor.search_index``) cut in three and timed in this process: text
    encoding, ``MomentIndex.search_clips`` (the index) and ``merge_moments`` (the grouping), wall and CPU time;
    checks that it finds the moments the server answered."""
    from locvtp.index import merge_moments
    from locvtp.predictor import LocVTPPredictor

    p = LocVTPPredictor.from_checkpoint(ckpt, threads=threads)
    index, _ = p.open_index(idx, allow_foreign_features=True)
    _, pool = index.effective_pool(10)
    wall, cpu, same = [], [], 0
    for q in queries:
        marks = [(time.perf_counter(), time.process_time())]
        text = p.encode_text([q])
        marks.append((time.perf_counter(), time.process_time()))
        with p.thread_limit():
            scores, rows = index.search_clips(text.sentence, pool)
            marks.append((time.perf_counter(), time.process_time()))
            found = merge_moments(rows[0], scores[0], index.row_video, index.row_clip, index.row_window,
                                  index.videos, 10)
        marks.append((time.perf_counter(), time.process_time()))
        wall.append(np.diff([m[0] for m in marks])), cpu.append(np.diff([m[1] for m in marks]))
        if q in answers:
            served = [(m["video_id"], m["start"]) for m in answers[q]["moments"]]
            same += [(m.video_id, round(m.start, 4)) for m in found] == served
    w, c = np.asarray(wall) * 1000.0, np.asarray(cpu) * 1000.0
    names = ("text encoding", "index search", "moment grouping")
    print(f"  in-process split, {len(queries)} queries (pool {pool} clips), p50 wall / CPU ms: " + ", ".join(
        f"{n} {np.median(w[:, i]):.2f} / {np.median(c[:, i]):.2f}" for i, n in enumerate(names))
        + f"; same moments as the server's answers for {same} of {sum(q in answers for q in queries)} queries",
        flush=True)


def bench_upload(c: Client, work: Path, seconds: float) -> None:
    from locvtp.serve.media import transcode_h264, write_test_video

    avi = write_test_video(work / "upload.avi", seconds=seconds, fps=25, size=320)
    mb = avi.stat().st_size / 1e6
    res, dt = c.post("/api/upload?filename=upload.avi&wait=true", data=avi.read_bytes(),
                     ctype="application/octet-stream")
    clips = res["job"]["clips"]
    print(f"upload of a {seconds:g} s 320x320 25 fps MPEG-4 Part 2 AVI ({mb:.1f} MB): ready in "
          f"{dt:.2f} s (transcode for playback + decode + encode) = {clips / dt:.1f} clips/s, "
          f"{seconds / dt:.1f} video s per s", flush=True)
    h264 = work / "upload_h264.mp4"
    t0 = time.perf_counter()
    transcode_h264(avi, h264)
    t_tr = time.perf_counter() - t0
    res, dt2 = c.post("/api/upload?filename=upload.mp4&wait=true", data=h264.read_bytes(),
                      ctype="application/octet-stream")
    print(f"the same video as H.264 MP4 (no transcode needed): ready in {dt2:.2f} s = "
          f"{res['job']['clips'] / dt2:.1f} clips/s, {seconds / dt2:.1f} video s per s "
          f"(the transcode alone, in this process: {t_tr:.2f} s)", flush=True)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", "--rows", dest="clips", type=int, default=1_000_000, help="clips of the index")
    ap.add_argument("--kind", choices=["exact", "ivfpq"], default="exact",
                    help="exact: random vectors + ground + upload; ivfpq: bench_search's corpus, search only")
    ap.add_argument("--index", type=Path, default=None,
                    help="serve this built index instead (search only; its width sets --dim)")
    ap.add_argument("--dim", type=int, default=None, help="model width (default 128 exact, 256 ivfpq)")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the server")
    ap.add_argument("--upload-seconds", type=float, default=120.0)
    ap.add_argument("--work", help="keep the files here and reuse them (default: a temporary directory)")
    return ap


def prepare(args, work: Path) -> tuple[Path, Path, Path, str, bool]:
    """The world, the checkpoint and the index of this run: (world, checkpoint, index, what, foreign)."""
    from locvtp.predictor import LocVTPPredictor
    from locvtp.world.generate import generate_world

    if args.index is not None:
        args.clips, args.dim, kind, idx_sha = index_info(args.index)
    args.dim = args.dim or (256 if args.kind == "ivfpq" else 128)
    world = work / "world"
    if not (world / "videos").is_dir():
        generate_world(world, seed=0, preset="tiny", progress=False)
    ckpt = work / ("ckpt" if args.dim == 128 else f"ckpt_d{args.dim}")
    if not ckpt.exists():
        make_checkpoint(world, ckpt, args.dim)
    sha = LocVTPPredictor.from_checkpoint(ckpt).sha256
    if args.index is not None:
        what = f"{args.clips} clips ({kind} index {args.index}, width {args.dim})"
        return world, ckpt, args.index, what, idx_sha != sha
    idx = work / (f"idx_{args.clips}" if args.kind == "exact" else f"ivfpq_{args.clips}_d{args.dim}")
    t0 = time.time()
    if not (idx / "meta.json").is_file():
        meta = build_apart(random_index if args.kind == "exact" else ivfpq_index, idx, args.clips, args.dim, sha)
        print(f"index built in {time.time() - t0:.1f} s: {args.kind}, {args.clips} clips"
              + (f", {meta.get('ivfpq')}, nprobe {meta.get('nprobe')}" if args.kind == "ivfpq" else ""), flush=True)
    what = (f"{args.clips} random unit-norm clips of width {args.dim} (exact)" if args.kind == "exact" else
            f"{args.clips} clustered clips of width {args.dim} (bench_search corpus, IVF-PQ)")
    return world, ckpt, idx, what, False


def main() -> int:
    args = _parser().parse_args()
    print(f"CPU: {cpu_model()} ({os.cpu_count()} cores), load average {os.getloadavg()[0]:.1f}, nice "
          f"{os.nice(0)}; server torch threads {args.threads}", flush=True)
    tmp = tempfile.TemporaryDirectory(prefix="bench_serve_") if args.work is None else None
    work = Path(args.work or tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    try:
        world, ckpt, idx, what, foreign = prepare(args, work)
        search_only = args.kind == "ivfpq" or args.index is not None
        proc, base = start_server(ckpt, world, idx, work, args.threads, foreign)
        try:
            c = Client(base)
            if not search_only:
                bench_ground(c, args.requests)
            queries = world_queries(world)
            answers = bench_search(c, queries, args.requests, what, proc.pid)
            if not search_only:
                bench_upload(c, work, args.upload_seconds)
        finally:
            stop_server(proc)
        search_split(ckpt, idx, queries, args.threads, answers)
        print(f"load average at the end {os.getloadavg()[0]:.1f}", flush=True)
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
