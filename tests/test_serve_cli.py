"""`locvtp serve` as a command (issue 26 item 7): its work folder on every way out, and its messages.

The default work folder is ``$TMPDIR/locvtp-serve-*`` (``locvtp.serve.workdir``); every test points the server's
``TMPDIR`` at a folder of its own so a leftover is visible. Real servers run as subprocesses on a free loopback
port (``test_serve_api.start_server``) and are stopped with a real signal; failed starts run in-process as a
mistake table (one line, exit code, nothing left in the temporary directory).
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from cli_helpers import assert_one_line_error, run_cli
from inference_helpers import make_checkpoint, world_videos

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from test_serve_api import call, jcall, start_server, stop_server  # noqa: E402

QUERY = "the green triangle becomes larger"


def _cli(argv) -> int:
    from locvtp.cli import main

    return main([str(a) for a in argv])


@pytest.fixture(scope="module")
def s(tiny_world, tiny_checkpoint, tmp_path_factory):
    """Two videos, an index of them made with ``tiny_checkpoint``, and a second checkpoint (another seed: another
    fingerprint, same width) for which that index is foreign."""
    root = tmp_path_factory.mktemp("serve_cli")
    ns = SimpleNamespace(root=root, ckpt=tiny_checkpoint)
    ns.vids = root / "vids"
    ns.vids.mkdir()
    for p in world_videos(tiny_world)[:2]:
        shutil.copy(p, ns.vids / p.name)  # copies: links pointing out of --videos are not served
    assert _cli(["extract", "--checkpoint", ns.ckpt, "--videos", ns.vids, "--out", root / "f.h5", "--no-progress",
                 "--threads", "1"]) == 0
    ns.idx = root / "idx"
    assert _cli(["index", "--features", root / "f.h5", "--out", ns.idx, "--no-progress"]) == 0
    ns.other = make_checkpoint(tiny_world, root / "other", seed=1)
    return ns


def serve_tmp(tmp_path: Path) -> tuple[Path, dict]:
    """A TMPDIR of the test's own and the environment that gives it to the server."""
    t = tmp_path / "systmp"
    t.mkdir()
    return t, {"TMPDIR": str(t)}


def leftovers(tmpdir: Path) -> list[str]:
    return sorted(p.name for p in tmpdir.iterdir() if p.name.startswith("locvtp-serve-"))


def startup_line(log: Path) -> str:
    return next(ln for ln in log.read_text().splitlines() if ln.startswith("locvtp serve: http://"))


def stop_with(proc, sig: int, timeout: float = 60) -> int:
    os.killpg(proc.pid, sig)
    try:
        return proc.wait(timeout=timeout)
    finally:
        stop_server(proc)


# ------------------------------------------------------------------------------------------------ the work folder
@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 128 + signal.SIGTERM),
                                      (signal.SIGHUP, 128 + signal.SIGHUP)], ids=["SIGINT", "SIGTERM", "SIGHUP"])
def test_default_work_dir_is_removed_on_a_stop_signal(s, tmp_path, sig, code):
    tmpdir, env = serve_tmp(tmp_path)
    log = tmp_path / "server.log"
    proc, base = start_server(["--checkpoint", str(s.ckpt), "--videos", str(s.vids)], log, env=env)
    try:
        work = tmpdir / leftovers(tmpdir)[0]
        # the server writes into it: cached embeddings of a grounded video, a thumbnail
        vid = jcall(base, "GET", "/api/videos")[1]["videos"][0]["id"]
        assert jcall(base, "POST", "/api/ground", {"video": vid, "query": QUERY})[0] == 200
        assert call(base, "GET", f"/api/thumbnail?video={vid}&t=1")[0] == 200
        assert list((work / "embeddings").glob("*/*.npz")) and list((work / "thumbs").glob("*.jpg"))
        line = startup_line(log)
        assert f"work dir {work} (removed on exit)" in line, line
    finally:
        rc = stop_with(proc, sig)
    text = log.read_text()
    assert rc == code, text
    assert "Traceback" not in text, text
    assert leftovers(tmpdir) == [], text


def test_default_work_dir_is_removed_when_the_start_fails(s, tmp_path):
    """A failed start in a real process: an index of another checkpoint (refused after the model loaded)."""
    import subprocess
    import sys

    tmpdir, env = serve_tmp(tmp_path)
    r = subprocess.run([sys.executable, "-m", "locvtp.cli", "serve", "--checkpoint", str(s.other), "--index",
                        str(s.idx), "--port", "0", "--threads", "1"], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, **env))
    assert r.returncode == 1, r.stderr
    assert "--allow-foreign-features" in r.stderr and "allow_foreign_features=True" not in r.stderr, r.stderr
    assert leftovers(tmpdir) == [] and not any(tmpdir.iterdir()), list(tmpdir.iterdir())


def test_given_work_dir_is_kept_and_only_serve_files_are_touched(s, tmp_path):
    """A --work-dir that does not exist is created, kept on exit and accepted again; a file a user put inside a
    serve subfolder survives, serve's own half-received upload does not."""
    tmpdir, env = serve_tmp(tmp_path)
    work = tmp_path / "a" / "work"
    args = ["--checkpoint", str(s.ckpt), "--videos", str(s.vids), "--work-dir", str(work)]
    proc, base = start_server(args, tmp_path / "1.log", env=env)
    try:
        vid = jcall(base, "GET", "/api/videos")[1]["videos"][0]["id"]
        assert jcall(base, "POST", "/api/ground", {"video": vid, "query": QUERY})[0] == 200
        assert "(kept on exit)" in startup_line(tmp_path / "1.log")
    finally:
        assert stop_with(proc, signal.SIGTERM) == 128 + signal.SIGTERM
    cached = sorted((work / "embeddings").glob("*/*.npz"))
    assert cached and (work / ".locvtp-manifest.json").is_file()
    mine = work / "media" / "mine.txt"
    mine.write_text("my notes\n")
    (work / "tmp" / "keep.part").write_text("mine too\n")
    ours = work / "tmp" / ("ab" * 16 + ".part")  # what a killed upload leaves: serve's own
    ours.write_bytes(b"half")
    proc, base = start_server(args, tmp_path / "2.log", env=env)
    try:
        assert jcall(base, "GET", "/api/health")[0] == 200
    finally:
        assert stop_with(proc, signal.SIGINT) == 130
    assert mine.read_text() == "my notes\n" and (work / "tmp" / "keep.part").read_text() == "mine too\n"
    assert not ours.exists()
    assert sorted((work / "embeddings").glob("*/*.npz")) == cached
    assert leftovers(tmpdir) == []


def test_foreign_index_is_served_with_the_flag_and_a_warning(s, tmp_path):
    tmpdir, env = serve_tmp(tmp_path)
    log = tmp_path / "server.log"
    proc, base = start_server(["--checkpoint", str(s.other), "--videos", str(s.vids), "--index", str(s.idx),
                               "--allow-foreign-features"], log, env=env)
    try:
        status, health = jcall(base, "GET", "/api/health")
        assert status == 200 and any("was made with checkpoint" in w for w in health["index_warnings"])
        status, res = jcall(base, "POST", "/api/search", {"query": QUERY, "top_k": 2})
        assert status == 200 and len(res["moments"]) == 2 and res["warnings"], res
        line = startup_line(log)
        assert "None" not in line and f"index: {health['index']['rows']} clips of 2 videos" in line, line
    finally:
        stop_with(proc, signal.SIGTERM)
    warn = [ln for ln in log.read_text().splitlines() if ln.startswith("locvtp serve: warning: --index ")]
    assert len(warn) == 1 and "was made with checkpoint" in warn[0], log.read_text()
    assert leftovers(tmpdir) == []


def test_startup_line_without_index_or_videos_says_what_to_give(s, tmp_path):
    tmpdir, env = serve_tmp(tmp_path)
    log = tmp_path / "server.log"
    proc, _ = start_server(["--checkpoint", str(s.ckpt)], log, env=env)
    stop_with(proc, signal.SIGTERM)
    line = startup_line(log)
    assert "None" not in line and "none clips" not in line, line
    assert "index: none (give --index DIR for the search page)" in line, line
    assert "videos: none (give --videos DIR, or upload one on the page)" in line, line
    assert leftovers(tmpdir) == []


# ------------------------------------------------------------------------------------------------ failed starts
@pytest.fixture
def never_serve(monkeypatch):
    """In-process rows must fail before serving: a start that gets that far fails the test instead of hanging."""
    import uvicorn

    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: pytest.fail("the server started"))


def _rows(s, tmp_path: Path):
    """(name, argv after --checkpoint, exit code, needles of the one line); each row leaves no work folder."""
    afile = tmp_path / "afile"
    afile.write_text("x")
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("mine\n")
    notidx = tmp_path / "notidx"
    notidx.mkdir()
    (notidx / "readme.txt").write_text("not an index\n")
    return [
        ("foreign_index", [s.other, "--index", s.idx], 1, ["--index", "--allow-foreign-features"]),
        ("index_not_an_index", [s.ckpt, "--index", notidx], 1, ["--index", "not a moment index"]),
        ("index_missing", [s.ckpt, "--index", tmp_path / "nope"], 2, ["--index"]),
        ("work_dir_is_a_file", [s.ckpt, "--work-dir", afile], 2, ["--work-dir", "afile"]),
        ("work_dir_holds_user_files", [s.ckpt, "--work-dir", theirs], 2, ["--work-dir", "notes.txt"]),
        ("work_dir_inside_index", [s.ckpt, "--index", s.idx, "--work-dir", s.idx / "w"], 2, ["--work-dir"]),
    ]


ROW_NAMES = ["foreign_index", "index_not_an_index", "index_missing", "work_dir_is_a_file",
             "work_dir_holds_user_files", "work_dir_inside_index"]


@pytest.mark.parametrize("name", ROW_NAMES)
def test_failed_start_is_one_line_and_leaves_nothing(s, tmp_path, monkeypatch, capsys, never_serve, name):
    tmpdir = tmp_path / "systmp"
    tmpdir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmpdir))
    row = {r[0]: r for r in _rows(s, tmp_path)}[name]
    _, argv, code, needles = row
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    res = run_cli(["serve", "--checkpoint", argv[0], *argv[1:], "--port", "0", "--threads", "1"], capsys)
    line = assert_one_line_error(res, code, *needles)
    assert "allow_foreign_features=" not in line and "None" not in line, line
    assert not any(tmpdir.iterdir()), list(tmpdir.iterdir())
    assert tempfile.tempdir == str(tmpdir)  # the process's tempfile directory is restored
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before  # nothing written, nothing removed (the user's notes.txt included)
    assert not (s.idx / "w").exists()


def test_busy_port_leaves_no_work_folder(s, tmp_path, monkeypatch, capsys, never_serve):
    tmpdir = tmp_path / "systmp"
    tmpdir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmpdir))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        res = run_cli(["serve", "--checkpoint", s.ckpt, "--port", port], capsys)
    assert_one_line_error(res, 2, "--port", str(port))
    assert not any(tmpdir.iterdir())


def test_second_server_on_the_same_work_dir_is_refused(s, tmp_path, capsys, never_serve):
    tmpdir, env = serve_tmp(tmp_path)
    work = tmp_path / "work"
    proc, _ = start_server(["--checkpoint", str(s.ckpt), "--work-dir", str(work)], tmp_path / "1.log", env=env)
    try:
        res = run_cli(["serve", "--checkpoint", s.ckpt, "--work-dir", work, "--port", "0"], capsys)
        line = assert_one_line_error(res, 1, "--work-dir", str(work))
        assert re.search(r"pid \d+", line), line
        assert proc.poll() is None  # the first server is untouched
    finally:
        stop_with(proc, signal.SIGTERM)
    assert (work / "embeddings").is_dir()
