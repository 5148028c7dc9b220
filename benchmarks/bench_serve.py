"""`locvtp serve` latency and upload throughput, against a real server process on a loopback port.

Measures (issue 17; targets: ground p50 < 100 ms, search p50 < 150 ms):

* ``/api/ground`` on an already-encoded video (the embeddings are cached: what is timed is the query's text
  encoding, the window scoring, the clip x word heatmap and JSON) -- p50 / p95 over ``--requests`` requests;
* ``/api/search`` over a corpus of ``--rows`` clips (default 10^6). The index holds RANDOM unit-norm embeddings
  of the model's width (no corpus of 10^6 real clips exists here; the search cost does not depend on the values);
* the encode throughput of an upload: a synthetic ``--upload-seconds`` s MPEG-4 Part 2 AVI (the case that also
  needs a playback transcode) uploaded with ``?wait=true``: clips/s and video seconds per second, and the split
  between transcoding and encoding reported by the job.

Latencies are measured twice: by the client over loopback with a kept-alive connection (request to last byte)
and by the server itself (the ``timing`` fields of the answers: model + index work only). The model is a
randomly initialised checkpoint of the demo's size (``--dim`` 128, tiny3d video encoder); a trained one of the
same shape costs the same. Prints the CPU model.

    .venv/bin/python benchmarks/bench_serve.py [--rows 1000000] [--requests 200] [--threads 2]
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


def random_index(out: Path, rows: int, dim: int, sha256: str, per_video: int = 200) -> None:
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

    build_index_from_records(records, out, {"checkpoint_sha256": sha256, "embedding": "joint"}, progress=False)


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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the server")
    ap.add_argument("--upload-seconds", type=float, default=120.0)
    ap.add_argument("--work", help="keep the files here (default: a temporary directory)")
    args = ap.parse_args()

    print(f"CPU: {cpu_model()} ({os.cpu_count()} cores); server torch threads {args.threads}", flush=True)
    tmp = tempfile.TemporaryDirectory(prefix="bench_serve_") if args.work is None else None
    work = Path(args.work or tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    from locvtp.world.generate import generate_world
    from locvtp.predictor import LocVTPPredictor
    from locvtp.serve.media import write_test_video

    world = work / "world"
    if not (world / "videos").is_dir():
        generate_world(world, seed=0, preset="tiny", progress=False)
    ckpt = work / "ckpt"
    if not ckpt.exists():
        make_checkpoint(world, ckpt, args.dim)
    sha = LocVTPPredictor.from_checkpoint(ckpt).sha256
    idx = work / f"idx_{args.rows}"
    t0 = time.time()
    if not (idx / "meta.json").is_file():
        random_index(idx, args.rows, args.dim, sha)
    print(f"index: {args.rows} random unit-norm clips of width {args.dim} ({time.time() - t0:.1f} s to build)",
          flush=True)

    log = work / "server.log"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "locvtp.cli", "serve", "--checkpoint", str(ckpt), "--videos",
                                 str(world / "videos"), "--index", str(idx), "--work-dir", str(work / "serve_work"),
                                 "--port", "0", "--threads", str(args.threads), "--max-upload-mb", "2000"],
                                stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        t0 = time.time()
        base = None
        while time.time() - t0 < 600 and base is None:
            m = re.search(r"locvtp serve: (http://[^/\s]+)/", log.read_text(errors="replace"))
            if m:
                base = m.group(1)
            elif proc.poll() is not None:
                raise SystemExit(f"server exited:\n{log.read_text()}")
            time.sleep(0.2)
        print(f"server up in {time.time() - t0:.1f} s (loads the model, opens the index)", flush=True)
        c = Client(base)

        video = "grd_00003.mp4"
        first, dt = c.post("/api/ground", {"video": video, "query": QUERY})
        print(f"first /api/ground on {video} (encodes {len(first['clip_windows'])} clips): {dt * 1000:.0f} ms",
              flush=True)
        queries = [f"{QUERY} {w}" for w in ("now", "slowly", "quickly", "again", "here", "there", "then", "")]
        client_t, server_t = [], []
        for i in range(args.requests):
            res, dt = c.post("/api/ground", {"video": video, "query": queries[i % len(queries)], "top_k": 5})
            client_t.append(dt)
            server_t.append(res["timing"]["embedding_seconds"] + res["timing"]["ground_seconds"])
        g_c, g_s = pct(client_t), pct(server_t)
        print(f"/api/ground (cached video, {len(first['clip_windows'])} clips, top 5 + heatmap), {args.requests} "
              f"requests: client p50 {g_c[0]:.1f} ms, p95 {g_c[1]:.1f} ms; server-side p50 {g_s[0]:.1f} ms, "
              f"p95 {g_s[1]:.1f} ms", flush=True)

        client_t, server_t = [], []
        c.post("/api/search", {"query": QUERY})  # warm-up
        for i in range(args.requests):
            res, dt = c.post("/api/search", {"query": queries[i % len(queries)], "top_k": 10})
            client_t.append(dt)
            server_t.append(res["timing"]["embed_seconds"] + res["timing"]["search_seconds"])
        s_c, s_s = pct(client_t), pct(server_t)
        print(f"/api/search over {args.rows} clips (exact, top 10 moments), {args.requests} requests: client p50 "
              f"{s_c[0]:.1f} ms, p95 {s_c[1]:.1f} ms; server-side p50 {s_s[0]:.1f} ms, p95 {s_s[1]:.1f} ms",
              flush=True)

        avi = write_test_video(work / "upload.avi", seconds=args.upload_seconds, fps=25, size=320)
        mb = avi.stat().st_size / 1e6
        res, dt = c.post("/api/upload?filename=upload.avi&wait=true", data=avi.read_bytes(),
                         ctype="application/octet-stream")
        clips = res["job"]["clips"]
        print(f"upload of a {args.upload_seconds:g} s 320x320 25 fps MPEG-4 Part 2 AVI ({mb:.1f} MB): ready in "
              f"{dt:.2f} s (transcode for playback + decode + encode) = {clips / dt:.1f} clips/s, "
              f"{args.upload_seconds / dt:.1f} video s per s", flush=True)
        h264 = work / "upload_h264.mp4"
        from locvtp.serve.media import transcode_h264

        t0 = time.perf_counter()
        transcode_h264(avi, h264)
        t_tr = time.perf_counter() - t0
        res, dt2 = c.post("/api/upload?filename=upload.mp4&wait=true", data=h264.read_bytes(),
                          ctype="application/octet-stream")
        print(f"the same video as H.264 MP4 (no transcode needed): ready in {dt2:.2f} s = "
              f"{res['job']['clips'] / dt2:.1f} clips/s, {args.upload_seconds / dt2:.1f} video s per s "
              f"(the transcode alone, in this process: {t_tr:.2f} s)", flush=True)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        if tmp is not None:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
