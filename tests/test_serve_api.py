"""`locvtp serve`: the JSON API against a real server process on a loopback port (the tiny synthetic world).

The server is started once per module with ``python -m locvtp.cli serve --port 0`` (the kernel picks a free
port; the server prints its URL), asked over HTTP with the standard library only, and always killed.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

QUERY = "the green triangle becomes larger"


# ------------------------------------------------------------------------------------------------ helpers
def call(base: str, method: str, path: str, body=None, data: bytes | None = None, headers=None, timeout=60):
    """(status, headers, body bytes) of one request; never raises on an HTTP error status."""
    hdrs = dict(headers or {})
    if body is not None:
        data = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(base + path, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def jcall(base, method, path, body=None, **kw):
    status, _, raw = call(base, method, path, body, **kw)
    return status, json.loads(raw) if raw else None


def send_tolerant(base: str, path: str, data: bytes, chunked: bool = False) -> tuple[int, dict]:
    """POST ``data`` and read the answer even when the server answers (413) and closes before the body is sent
    (urllib would report the broken pipe instead). ``chunked``: no Content-Length, so only the streaming
    check can stop it."""
    import http.client

    host, port = urllib.parse.urlsplit(base).netloc.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    conn.putrequest("POST", path)
    conn.putheader("Content-Type", "application/octet-stream")
    if chunked:
        conn.putheader("Transfer-Encoding", "chunked")
    else:
        conn.putheader("Content-Length", str(len(data)))
    conn.endheaders()
    try:
        for lo in range(0, len(data), 65536):
            piece = data[lo: lo + 65536]
            conn.send(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
        if chunked:
            conn.send(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server has answered already
    try:
        r = conn.getresponse()
        return r.status, json.loads(r.read() or b"null")
    finally:
        conn.close()


def _sigint_as_in_a_terminal() -> None:
    """The server gets Ctrl-C's default disposition even when the tests run as a background job (``nohup ... &``
    ignores SIGINT, and an ignored signal stays ignored across exec): the stop-signal tests send it SIGINT."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_server(args: list[str], log: Path, timeout: float = 90.0, env: dict | None = None
                 ) -> tuple[subprocess.Popen, str]:
    """Start ``locvtp serve ARGS --port 0`` and wait until it answers /api/health; returns (process, base URL).
    ``env``: variables to add to the server's environment (e.g. ``TMPDIR``)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", **(env or {}))
    fh = open(log, "wb")
    proc = subprocess.Popen([sys.executable, "-m", "locvtp.cli", "serve", "--port", "0", "--threads", "1", *args],
                            stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                            preexec_fn=_sigint_as_in_a_terminal)
    fh.close()
    deadline = time.time() + timeout
    base = None
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
        m = re.search(r"locvtp serve: (http://[^/\s]+)/", log.read_text(errors="replace"))
        if m:
            base = m.group(1)
            try:
                if call(base, "GET", "/api/health", timeout=5)[0] == 200:
                    return proc, base
            except OSError:
                pass
        time.sleep(0.2)
    stop_server(proc)
    raise AssertionError(f"server did not answer within {timeout} s:\n{log.read_text(errors='replace')}")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def served(tiny_world, tiny_checkpoint, tmp_path_factory):
    """A server on a copy of the world's videos (plus a link pointing out of it) and an index of them."""
    from locvtp.cli import main as cli

    root = tmp_path_factory.mktemp("serve_api")
    videos = root / "videos"
    shutil.copytree(tiny_world / "videos", videos)
    outside = root / "outside"
    outside.mkdir()
    shutil.copy(videos / "grd_00000.mp4", outside / "secret.mp4")
    (outside / "secret.txt").write_text("not for clients")
    os.symlink(outside / "secret.mp4", videos / "leak.mp4")  # inside --videos, pointing out: never served
    assert cli(["extract", "--checkpoint", str(tiny_checkpoint), "--videos", str(tiny_world / "videos"),
                "--out", str(root / "feats.h5"), "--no-progress", "--threads", "1"]) == 0
    assert cli(["index", "--features", str(root / "feats.h5"), "--out", str(root / "idx"), "--no-progress"]) == 0
    work = root / "work"
    proc, base = start_server(["--checkpoint", str(tiny_checkpoint), "--videos", str(videos), "--index",
                               str(root / "idx"), "--work-dir", str(work), "--max-upload-mb", "1"],
                              root / "server.log")
    try:
        yield {"base": base, "root": root, "videos": videos, "work": work, "outside": outside, "proc": proc,
               "checkpoint": tiny_checkpoint, "index": root / "idx", "log": root / "server.log"}
    finally:
        stop_server(proc)


@pytest.fixture(scope="module")
def predictor(tiny_checkpoint):
    from locvtp.predictor import LocVTPPredictor

    return LocVTPPredictor.from_checkpoint(tiny_checkpoint, threads=1)


def alive(base: str) -> None:
    status, h = jcall(base, "GET", "/api/health")
    assert status == 200 and h["ok"] is True


# ------------------------------------------------------------------------------------------------ tests
def test_pages_docs_and_local_assets(served):
    base = served["base"]
    assert base.startswith("http://127.0.0.1:")  # loopback unless told otherwise
    for path in ("/", "/search", "/api/docs"):
        status, headers, raw = call(base, "GET", path)
        assert status == 200 and b"<html" in raw, path
        assert "default-src 'self'" in headers.get("content-security-policy", "")
        for src in re.findall(rb'(?:src|href)="([^"]+)"', raw):
            assert src.startswith(b"/"), (path, src)  # every asset from this server
            assert call(base, "GET", src.decode())[0] == 200, src
    from locvtp.serve.app import STATIC

    for f in STATIC.iterdir():  # no CDN anywhere: the only URL is the SVG namespace name
        text = f.read_text(encoding="utf-8")
        urls = set(re.findall(r"https?://[^\s\"'`)]+", text)) - {"http://www.w3.org/2000/svg"}
        assert not urls, (f.name, urls)
    assert call(base, "GET", "/docs")[0] == 404  # Swagger UI from a CDN: disabled
    status, spec = jcall(base, "GET", "/openapi.json")
    assert status == 200
    for p in ("/api/ground", "/api/search", "/api/upload", "/api/videos", "/api/media", "/api/jobs/{job_id}"):
        assert p in spec["paths"], p
    status, vids = jcall(base, "GET", "/api/videos")
    ids = {v["id"] for v in vids["videos"]}
    assert "grd_00003.mp4" in ids and "leak.mp4" not in ids


def test_ground_equals_the_predictor(served, predictor):
    base = served["base"]
    status, res = jcall(base, "POST", "/api/ground", {"video": "grd_00003.mp4", "query": QUERY, "top_k": 3})
    assert status == 200, res
    ref = predictor.ground(predictor.encode_file(served["videos"] / "grd_00003.mp4"), QUERY, top_k=3).to_json()
    got, want = np.array(res["pred_relevant_windows"]), np.array(ref["pred_relevant_windows"])
    assert got[:, :2].tolist() == want[:, :2].tolist() and res["vid"] == res["video"] == "grd_00003.mp4"
    np.testing.assert_allclose(got[:, 2], want[:, 2], rtol=1e-5, atol=1e-6)
    assert {"query", "vid", "duration", "pred_relevant_windows", "warnings"} <= set(res)  # the CLI's shape
    n = len(res["clip_windows"])
    assert n == len(res["clip_scores"]) == len(res["clip_relevance"]) == len(res["heatmap"]) == 14
    assert len(res["heatmap"][0]) == len(res["words"]) == len(predictor.encode_text([QUERY]).tokens[0])
    # cached: the second call does not encode the video again
    status, again = jcall(base, "POST", "/api/ground", {"video": "grd_00003.mp4", "query": QUERY, "top_k": 3})
    assert again["pred_relevant_windows"] == res["pred_relevant_windows"]
    assert again["timing"]["embedding_seconds"] < 0.05


def test_the_ground_page_reads_the_api_shape():
    """The page draws what /api/ground sends: pred_relevant_windows triples, not the former windows objects."""
    from locvtp.serve.app import STATIC

    js = (STATIC / "ground.js").read_text(encoding="utf-8")
    assert "res.pred_relevant_windows" in js and "([start, end, score])" in js
    assert not re.search(r"\b(res|last)\.windows\b", js)


def test_the_embedding_cache_is_a_feature_store(served, predictor, capsys):
    """What the server cached for a grounded video is an npz-dir feature store carrying this checkpoint's
    fingerprint: `locvtp ground --features` reads it (no provenance warning) and answers as the API did."""
    from cli_helpers import run_cli
    from locvtp.featurestore import feature_info, iter_features
    from locvtp.featurestore.provenance import feature_origin

    base = served["base"]
    status, res = jcall(base, "POST", "/api/ground", {"video": "grd_00003.mp4", "query": QUERY, "top_k": 3})
    assert status == 200, res
    (store,) = [d for d in (served["work"] / "embeddings").iterdir() if d.is_dir()]
    info = feature_info(store)
    assert info["layout"] == "npz-dir" and info["embedding"] == "joint"
    assert feature_origin(info, predictor.sha256) == "own" and info["frame_size"] == predictor.preprocessing.frame_size
    recs = [r for r in iter_features(store) if r.source and Path(r.source).name == "grd_00003.mp4"]
    assert len(recs) == 1 and recs[0].features.shape == (14, predictor.dim)
    cli = run_cli(["ground", "--checkpoint", served["checkpoint"], "--features", store, "--video-id",
                   recs[0].video_id, QUERY, "--top-k", "3"], capsys)
    assert cli.code == 0 and "warning" not in cli.err, cli.err
    out = json.loads(cli.out)
    got, want = np.array(out["pred_relevant_windows"]), np.array(res["pred_relevant_windows"])
    assert got[:, :2].tolist() == want[:, :2].tolist() and out["warnings"] == res["warnings"]
    np.testing.assert_allclose(got[:, 2], want[:, 2], rtol=1e-5, atol=1e-6)


def test_search_thumbnails_and_media(served, predictor):
    base = served["base"]
    status, res = jcall(base, "POST", "/api/search", {"query": QUERY, "top_k": 4})
    assert status == 200, res
    ref = predictor.search(served["index"], QUERY, top_k=4).results[0].to_json()
    assert [(m["video_id"], m["start"], m["end"]) for m in res["moments"]] == \
        [(m["video_id"], m["start"], m["end"]) for m in ref["moments"]]
    for m in res["moments"]:
        assert m["video"] == f"{m['video_id']}.mp4"
        st, hd, img = call(base, "GET", m["thumbnail"])
        assert st == 200 and hd["content-type"] == "image/jpeg" and img[:2] == b"\xff\xd8"
    st, hd, part = call(base, "GET", "/api/media?video=grd_00003.mp4", headers={"Range": "bytes=0-99"})
    assert st == 206 and len(part) == 100 and hd["content-type"] == "video/mp4"  # seekable in a browser
    st, _, whole = call(base, "GET", "/api/media?video=grd_00003.mp4")
    assert whole == (served["videos"] / "grd_00003.mp4").read_bytes()  # H.264 MP4: served as it is


def test_upload_avi_is_transcoded_encoded_and_grounded(served, tmp_path, predictor):
    from locvtp.serve import media

    base = served["base"]
    avi = media.write_test_video(tmp_path / "clip.avi", seconds=6.0)  # MPEG-4 Part 2: browsers cannot play it
    status, up = jcall(base, "POST", "/api/upload?filename=clip.avi", data=avi.read_bytes(),
                       headers={"Content-Type": "application/octet-stream"})
    assert status == 202, up
    vid, job = up["video"]["id"], up["job"]["id"]
    assert re.fullmatch(r"upload:[0-9a-f]{32}", vid)
    seen = set()
    for _ in range(300):
        st, j = jcall(base, "GET", f"/api/jobs/{job}")
        assert st == 200
        seen.add(j["state"])
        if j["state"] in ("ready", "error"):
            break
        time.sleep(0.05)
    assert j["state"] == "ready", j
    assert j["progress"] == 1.0 and j["clips"] == 6
    st, hd, mp4 = call(base, "GET", f"/api/media?video={urllib.parse.quote(vid)}")
    assert st == 200 and hd["content-type"] == "video/mp4"
    (tmp_path / "got.mp4").write_bytes(mp4)
    info = media.describe(tmp_path / "got.mp4")
    assert info["codec"] == "h264" and info["pix_fmt"] == "yuv420p" and abs(info["duration"] - 6.0) < 0.25
    status, res = jcall(base, "POST", "/api/ground", {"video": vid, "query": QUERY, "top_k": 2})
    assert status == 200, res
    ref = predictor.ground(predictor.encode_file(avi), QUERY, top_k=2).to_json()  # the upload's = the predictor's
    assert [w[:2] for w in res["pred_relevant_windows"]] == [w[:2] for w in ref["pred_relevant_windows"]]
    # multipart works too, and the server names the file itself
    boundary = "xxBOUNDARYxx"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"../../evil.avi\"\r\n"
            f"Content-Type: video/x-msvideo\r\n\r\n").encode() + avi.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    status, up2 = jcall(base, "POST", "/api/upload?wait=true", data=body,
                        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert status == 201, up2
    names = sorted(p.name for p in (served["work"] / "uploads").iterdir())
    assert names and all(re.fullmatch(r"[0-9a-f]{32}\.avi", n) for n in names), names
    assert not list(served["root"].rglob("evil.avi")) and not (served["root"].parent / "evil.avi").exists()


@pytest.mark.parametrize("case", ["text", "truncated", "empty", "oversize"])
def test_bad_uploads_are_4xx_and_the_server_keeps_serving(served, tmp_path, case):
    from locvtp.serve import media

    base = served["base"]
    good = media.write_test_video(tmp_path / "ok.avi", seconds=4.0).read_bytes()
    data, want = {
        "text": (b"this is a text file, not a video\n" * 50, {415}),
        "truncated": (good[: len(good) // 3], {415, 422}),
        "empty": (b"", {422}),
        "oversize": (os.urandom(int(1.5 * 1024 * 1024)), {413}),  # the server runs with --max-upload-mb 1
    }[case]
    if case == "oversize":  # refused from its Content-Length, and while streaming when it has none
        status, res = send_tolerant(base, "/api/upload?filename=big.mp4&wait=true", data)
        assert status == 413, res
        status, res = send_tolerant(base, "/api/upload?filename=big.mp4&wait=true", data, chunked=True)
    else:
        status, res = jcall(base, "POST", f"/api/upload?filename={case}.mp4&wait=true", data=data,
                            headers={"Content-Type": "application/octet-stream"})
    assert status in want, (status, res)
    assert isinstance(res["detail"], str) and res["detail"] and str(served["work"]) not in res["detail"]
    if case == "oversize":
        assert "--max-upload-mb" in res["detail"]
    assert not list((served["work"] / "tmp").glob("*.part"))  # nothing half-received is left
    alive(base)


@pytest.mark.parametrize("body,status,needle", [
    ({"video": "grd_00003.mp4", "query": ""}, 422, "empty"),
    ({"video": "grd_00003.mp4", "query": "   "}, 422, "empty"),
    ({"video": "grd_00003.mp4", "query": " ".join(["word"] * 10_000)}, 422, "too long"),
    ({"video": "grd_00003.mp4", "query": QUERY, "top_k": 0}, 422, "top_k"),
    ({"video": "grd_00003.mp4", "query": QUERY, "nms": 7}, 422, "nms"),
    ({"video": "nope.mp4", "query": QUERY}, 404, "unknown video"),
    ({"query": QUERY}, 404, "video"),
    ({"video": "grd_00003.mp4", "query": QUERY, "bogus": 1}, 422, "bogus"),
])
def test_bad_ground_requests(served, body, status, needle):
    st, res = jcall(served["base"], "POST", "/api/ground", body)
    assert st == status and needle in res["detail"], (st, res)
    alive(served["base"])


def test_bad_search_and_malformed_json(served):
    base = served["base"]
    for q, needle in (("", "empty"), (" ".join(["w"] * 10_000), "too long")):
        st, res = jcall(base, "POST", "/api/search", {"query": q})
        assert st == 422 and needle in res["detail"]
    st, _, raw = call(base, "POST", "/api/ground", data=b'{"video": "grd_00003.mp4",',
                      headers={"Content-Type": "application/json"})
    assert st == 400 and b"not valid JSON" in raw
    st, res = jcall(base, "GET", "/api/thumbnail?video=grd_00003.mp4&t=-1")
    assert st == 422
    alive(base)


@pytest.mark.parametrize("path", [
    "/api/media?video=../../etc/passwd",
    "/api/media?video=%2Fetc%2Fpasswd",
    "/api/media?video=..%2Foutside%2Fsecret.mp4",
    "/api/media?video=leak.mp4",  # a link inside --videos that points out of it
    "/api/thumbnail?video=..%2Foutside%2Fsecret.mp4&t=1",
    "/api/thumbnail?video=leak.mp4&t=1",
    "/static/..%2F..%2Fapp.py",
    "/static/../app.py",
    "/api/jobs/..%2F..%2Fsecret.txt",
    "/../outside/secret.txt",
])
def test_no_path_traversal(served, path):
    st, _, raw = call(served["base"], "GET", path)
    assert st == 404, (path, st, raw[:200])
    assert b"not for clients" not in raw
    st, res = jcall(served["base"], "POST", "/api/ground", {"video": "../outside/secret.mp4", "query": QUERY})
    assert st == 404


def test_twenty_simultaneous_requests(served):
    base = served["base"]
    vids = ["grd_00000.mp4", "grd_00001.mp4"]
    reqs = [("/api/ground", {"video": vids[i % 2], "query": QUERY, "top_k": 3}) for i in range(10)]
    reqs += [("/api/search", {"query": f"{QUERY} {['fast', 'slowly'][i % 2]}", "top_k": 3}) for i in range(10)]
    expected = {}
    for path, body in reqs:  # the sequential answers (this also caches both videos' embeddings)
        key = json.dumps([path, body], sort_keys=True)
        if key not in expected:
            st, res = jcall(base, "POST", path, body)
            assert st == 200
            expected[key] = res

    def strip(res):
        return {k: v for k, v in res.items() if k != "timing"}

    with ThreadPoolExecutor(20) as ex:
        got = list(ex.map(lambda r: (r, jcall(base, "POST", r[0], r[1])), reqs))
    assert len(got) == 20
    for (path, body), (st, res) in got:
        assert st == 200, res
        assert strip(res) == strip(expected[json.dumps([path, body], sort_keys=True)])


def test_cli_refuses_a_busy_port_in_one_line(tiny_checkpoint):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "locvtp.cli", "serve", "--checkpoint", str(tiny_checkpoint),
                            "--port", str(port)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and str(port) in lines[0] and "Traceback" not in r.stderr


def test_work_dir_inside_videos_is_refused(tiny_checkpoint, tmp_path):
    vids = tmp_path / "v"
    vids.mkdir()
    r = subprocess.run([sys.executable, "-m", "locvtp.cli", "serve", "--checkpoint", str(tiny_checkpoint),
                        "--videos", str(vids), "--work-dir", str(vids / "w"), "--port", "0"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--work-dir" in r.stderr and "Traceback" not in r.stderr, r.stderr
