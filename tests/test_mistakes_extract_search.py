"""Issue #18, user mistakes of `locvtp extract / merge / index / search`: each row is one mistake a careless user
makes; each must be ONE line on stderr naming the file or argument, with the right exit code (2 usage, 1 failure),
never a traceback, and nothing written."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from cli_helpers import assert_one_line_error, run_cli
from inference_helpers import linked_videos, make_checkpoint
from locvtp.featurestore.writer import journal_ids

NOT_UTF8 = b"\xff\xfe\xfa not text \x80\x81"


def _cli(argv) -> int:
    from locvtp.cli import main

    return main([str(a) for a in argv])


@pytest.fixture(scope="module")
def w(tiny_world, tiny_checkpoint, tmp_path_factory):
    """Paths every row uses: a checkpoint, 2 videos, their features (h5), an index, a features-encoder checkpoint,
    a non-UTF-8 file, an index of another embedding width (no checkpoint fingerprint)."""
    from locvtp.featurestore.record import ClipFeatures
    from locvtp.index import build_index_from_records

    root = tmp_path_factory.mktemp("mistakes")
    ns = SimpleNamespace(root=root)
    ns.ckpt = tiny_checkpoint
    ns.fck = make_checkpoint(tiny_world, root / "fck", video="features", in_dim=12)
    ns.vids = linked_videos(tiny_world, root / "vids", count=2)
    ns.video = sorted(ns.vids.iterdir())[0]
    ns.feats = root / "f.h5"
    assert _cli(["extract", "--checkpoint", ns.ckpt, "--videos", ns.vids, "--out", ns.feats, "--no-progress"]) == 0
    ns.idx = root / "idx"
    assert _cli(["index", "--features", ns.feats, "--out", ns.idx, "--no-progress"]) == 0
    ns.bad = root / "not_utf8.txt"
    ns.bad.write_bytes(NOT_UTF8)
    ns.idx8 = root / "idx8"  # an index of width 8 built from foreign features (no checkpoint_sha256)
    rng = np.random.default_rng(0)

    def records(load):
        for i in range(2):
            f = rng.normal(size=(4, 8)).astype(np.float32) if load else None
            win = np.stack([np.arange(4.0), np.arange(4.0) + 1], 1) if load else None
            yield ClipFeatures(f"v{i}", f, win, 1.0, 4.0, shape=(4, 8))

    build_index_from_records(records, ns.idx8, progress=False)
    ns.userfile = root / "notes.txt"
    ns.userfile.write_text("mine\n")
    # issue 26: empty input sets
    ns.empty_dir = root / "empty_dir"
    ns.empty_dir.mkdir()
    (ns.empty_dir / "notes.txt").write_text("not a video\n")
    ns.empty_list = root / "empty_list.txt"
    ns.empty_list.write_text("# only a comment\n\n")
    ns.dangling_only = root / "dangling_only"
    ns.dangling_only.mkdir()
    (ns.dangling_only / "gone.mp4").symlink_to(root / "nowhere.mp4")
    ns.loop = root / "LOOP"  # a link to itself
    ns.loop.symlink_to(ns.loop)
    return ns


def ext(w, *extra):
    return ["extract", "--checkpoint", w.ckpt, "--videos", w.vids, "--out", w.root / "new.h5", "--no-progress", *extra]


def srch(w, *extra, index=None):
    return ["search", "--index", index or w.idx, "--checkpoint", w.ckpt, *extra]


def idx(w, *extra):
    return ["index", "--features", w.feats, "--out", w.root / "new_idx", "--no-progress", *extra]


NO_CUDA = not torch.cuda.is_available()


def _sysfs_refuses_files() -> bool:
    """/sys refuses to create files even for root: a real permission error for the tests (which run as root,
    where chmod does not stop a write)."""
    try:
        fd = os.open("/sys/.locvtp-probe", os.O_CREAT | os.O_WRONLY, 0o600)
    except OSError:
        return True
    os.close(fd)
    os.unlink("/sys/.locvtp-probe")
    return False


class without_modules:
    """A row's argv builder whose case runs as if ``modules`` were not installed (an optional extra missing)."""

    def __init__(self, modules: str, argv):
        self.modules, self.argv = modules.split(), argv

    def __call__(self, w):
        return self.argv(w)


SYSFS = pytest.mark.skipif(not _sysfs_refuses_files(), reason="/sys accepts new files here")

# (id, argv builder, exit code, needles the one line must name)
CASES = [
    # ---- extract: ranges (case 8) -----------------------------------------------------------------------
    ("extract-batch-clips-0", lambda w: ext(w, "--batch-clips", "0"), 2, ["--batch-clips"]),
    ("extract-decode-workers-0", lambda w: ext(w, "--decode-workers", "0"), 2, ["--decode-workers"]),
    ("extract-workers-negative", lambda w: ext(w, "--workers", "-1"), 2, ["--workers"]),
    ("extract-shard-out-of-range", lambda w: ext(w, "--shard", "3/3"), 2, ["--shard", "0 <= I < N", "'3/3'"]),
    ("extract-shard-not-i-of-n", lambda w: ext(w, "--shard", "3"), 2, ["--shard", "I/N"]),
    ("extract-amp-unknown", lambda w: ext(w, "--amp", "fp8"), 2, ["--amp", "fp8"]),
    ("extract-threads-negative", lambda w: ext(w, "--threads", "-1"), 2, ["--threads"]),
    ("extract-flush-every-negative", lambda w: ext(w, "--flush-every", "-1"), 2, ["--flush-every"]),
    ("extract-flush-seconds-negative", lambda w: ext(w, "--flush-seconds", "-5"), 2, ["--flush-seconds"]),
    ("extract-clip-seconds-0", lambda w: ext(w, "--clip-seconds", "0"), 2, ["--clip-seconds"]),
    ("extract-stride-nan", lambda w: ext(w, "--stride-seconds", "nan"), 2, ["--stride-seconds"]),
    ("extract-frames-per-clip-0", lambda w: ext(w, "--frames-per-clip", "0"), 2, ["--frames-per-clip"]),
    ("extract-frame-size-negative", lambda w: ext(w, "--frame-size", "-32"), 2, ["--frame-size"]),
    # ---- extract: --runner ray (issue 24) ------------------------------------------------------------------
    ("extract-runner-ray-without-ray", without_modules("ray", lambda w: ext(w, "--runner", "ray")), 2,
     ["--runner ray needs the optional extra: pip install 'locvtp[ray]'"]),
    ("extract-runner-unknown", lambda w: ext(w, "--runner", "slurm"), 2, ["--runner", "slurm"]),
    ("extract-ray-address-without-ray-runner", lambda w: ext(w, "--ray-address", "auto"), 2,
     ["--ray-address", "--runner ray"]),
    ("extract-runner-ray-device-index", lambda w: ext(w, "--runner", "ray", "--device", "cuda:1"), 2,
     ["--device cuda:1", "--runner ray", "auto, cpu or cuda"]),
    ("extract-ray-encoders-0", lambda w: ext(w, "--runner", "ray", "--ray-encoders", "0"), 2, ["--ray-encoders"]),
    ("extract-runner-ray-features-checkpoint", lambda w: ["extract", "--checkpoint", w.fck, "--videos", w.feats,
                                                          "--out", w.root / "new.h5", "--runner", "ray"], 2,
     ["--runner ray", "fck", "feature files"]),
    # ---- extract: device (case 9) ----------------------------------------------------------------------
    pytest.param("extract-device-cuda", lambda w: ext(w, "--device", "cuda"), 2, ["--device", "CUDA"],
                 marks=pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")),
    # ---- extract: inputs ---------------------------------------------------------------------------------
    ("extract-list-not-utf8", lambda w: ["extract", "--checkpoint", w.ckpt, "--videos", w.bad, "--out",
                                         w.root / "new.h5", "--no-progress"], 2, ["--videos", "not_utf8.txt", "UTF-8"]),
    ("extract-video-file-as-videos", lambda w: ["extract", "--checkpoint", w.ckpt, "--videos", w.video, "--out",
                                                w.root / "new.h5"], 2, ["--videos", "video file"]),
    ("extract-feature-file-for-pixel-model", lambda w: ["extract", "--checkpoint", w.ckpt, "--videos", w.feats,
                                                        "--out", w.root / "new.h5"], 2, ["--videos", "f.h5"]),
    ("extract-features-wrong-width", lambda w: ["extract", "--checkpoint", w.fck, "--videos", w.feats, "--out",
                                                w.root / "new.h5", "--no-progress"], 2, ["f.h5", "64", "12"]),
    ("extract-videos-missing", lambda w: ["extract", "--checkpoint", w.ckpt, "--videos", w.root / "nope", "--out",
                                          w.root / "new.h5"], 1, ["--videos", "nope"]),
    # ---- extract: empty input sets (issue 26): an error, and no empty store ---------------------------------
    ("extract-videos-dir-without-videos", lambda w: ext(w)[:3] + ["--videos", w.empty_dir, "--out", w.root / "new.h5"],
     2, ["--videos", "empty_dir", "no video file", ".mp4"]),
    ("extract-videos-empty-list", lambda w: ext(w)[:3] + ["--videos", w.empty_list, "--out", w.root / "new.h5"],
     2, ["--videos", "empty_list.txt", "lists no video"]),
    ("extract-videos-only-dangling-links", lambda w: ext(w)[:3] + ["--videos", w.dangling_only, "--out",
                                                                    w.root / "new.h5"],
     2, ["--videos", "dangling_only", "1 input(s) skipped", "gone.mp4", "dangling symbolic link"]),
    ("extract-videos-empty-dir-npy", lambda w: ext(w)[:3] + ["--videos", w.empty_dir, "--out", w.root / "newdir",
                                                             "--format", "npy-dir"], 2, ["--videos", "empty_dir"]),
    # ---- extract: outputs (case 1) ---------------------------------------------------------------------
    ("extract-out-inside-checkpoint", lambda w: ["extract", "--checkpoint", w.ckpt, "--videos", w.vids, "--out",
                                                 w.ckpt / "f.h5"], 2, ["--out", "--checkpoint"]),
    ("extract-out-file-for-dir-format", lambda w: ext(w, "--format", "npy-dir")[:5] + [
        "--out", w.userfile, "--format", "npy-dir"], 2, ["--out", "notes.txt", "not a directory"]),
    ("extract-out-dir-for-h5", lambda w: ["extract", "--checkpoint", w.ckpt, "--videos", w.vids, "--out", w.idx],
     2, ["--out", "idx", "directory"]),
    ("extract-out-foreign-text-file", lambda w: ["extract", "--checkpoint", w.ckpt, "--videos", w.vids, "--out",
                                                 w.userfile, "--overwrite"], 2, ["--out", "notes.txt"]),
    ("extract-failures-is-out", lambda w: ext(w, "--failures", w.root / "new.h5"), 2, ["--failures", "new.h5"]),
    # ---- OS errors (issue 26): one line naming the user's path --------------------------------------------
    ("extract-videos-symlink-loop", lambda w: ["extract", "--checkpoint", w.ckpt, "--videos", w.loop, "--out",
                                               w.root / "new.h5"], 1, ["LOOP", "loops back to itself", "ELOOP"]),
    ("extract-out-symlink-loop", lambda w: ["extract", "--checkpoint", w.ckpt, "--videos", w.vids, "--out", w.loop],
     1, ["LOOP", "ELOOP"]),
    ("extract-failures-symlink-loop", lambda w: ext(w, "--failures", w.loop), 1, ["LOOP", "ELOOP"]),
    ("extract-out-parent-is-a-file", lambda w: ["extract", "--checkpoint", w.ckpt, "--videos", w.vids, "--out",
                                                w.userfile / "x.h5"], 1,
     ["--out", "notes.txt/x.h5", "notes.txt: is a file", "directory is needed"]),
    pytest.param("extract-out-permission-denied", lambda w: ext(w)[:5] + ["--out", "/sys/locvtp-x.h5"], 1,
                 ["--out /sys/locvtp-x.h5: cannot write: permission denied (EACCES)"], marks=SYSFS),
    ("merge-out-symlink-loop", lambda w: ["merge", "--out", w.loop, w.feats], 1, ["LOOP", "ELOOP"]),
    ("merge-out-parent-is-a-file", lambda w: ["merge", "--out", w.userfile / "m.h5", w.feats], 1,
     ["--out", "notes.txt: is a file"]),
    pytest.param("merge-out-permission-denied", lambda w: ["merge", "--out", "/sys/locvtp-m.h5", w.feats], 1,
                 ["--out /sys/locvtp-m.h5: cannot write: permission denied (EACCES)"], marks=SYSFS),
    ("index-features-symlink-loop", lambda w: ["index", "--features", w.loop, "--out", w.root / "i2"], 1,
     ["LOOP", "ELOOP"]),
    ("index-out-symlink-loop", lambda w: ["index", "--features", w.feats, "--out", w.loop], 1, ["LOOP", "ELOOP"]),
    ("index-out-parent-is-a-file", lambda w: ["index", "--features", w.feats, "--out", w.userfile / "idx"], 1,
     ["notes.txt: is a file", "directory is needed"]),
    ("search-index-symlink-loop", lambda w: srch(w, "q", index=w.loop), 1, ["LOOP"]),
    # ---- merge (case 3) --------------------------------------------------------------------------------
    ("merge-no-match", lambda w: ["merge", "--out", w.root / "m.h5", str(w.root / "nothing*.h5")], 2,
     ["nothing*.h5"]),
    ("merge-file-and-directory-shards", lambda w: ["merge", "--out", w.root / "m.h5", w.feats, w.root], 2,
     ["f.h5", "is a file but other shards are directories"]),
    ("merge-missing-shard", lambda w: ["merge", "--out", w.root / "m.h5", w.root / "gone.h5"], 1, ["gone.h5"]),
    ("merge-out-is-input", lambda w: ["merge", "--out", w.feats, w.feats], 2, ["--out", "f.h5", "input"]),
    ("merge-out-exists", lambda w: ["merge", "--out", w.userfile, w.feats], 2, ["--out", "notes.txt", "--overwrite"]),
    ("merge-overwrite-foreign", lambda w: ["merge", "--out", w.userfile, w.feats, "--overwrite"], 2,
     ["notes.txt"]),
    ("merge-shard-not-hdf5", lambda w: ["merge", "--out", w.root / "m.h5", w.bad], 1, ["not_utf8.txt"]),
    # ---- index -----------------------------------------------------------------------------------------
    ("index-ivf-0", lambda w: idx(w, "--ivf", "0"), 2, ["--ivf"]),
    ("index-nprobe-0", lambda w: idx(w, "--nprobe", "0"), 2, ["--nprobe"]),
    ("index-train-size-0", lambda w: idx(w, "--train-size", "0"), 2, ["--train-size"]),
    ("index-kind-unknown", lambda w: idx(w, "--kind", "fast"), 2, ["--kind", "fast"]),
    ("index-kind-exact-with-ivf", lambda w: idx(w, "--kind", "exact", "--ivf", "8"), 2, ["--ivf", "exact"]),
    ("index-pq-m-not-dividing-width", lambda w: idx(w, "--kind", "ivfpq", "--pq-m", "7"), 2, ["--pq-m", "7"]),
    ("index-rerank-0", lambda w: idx(w, "--kind", "ivfpq", "--rerank", "0"), 2, ["--rerank"]),
    ("index-ivf-more-than-clips", lambda w: idx(w, "--ivf", "100000"), 2, ["--ivf", "100000"]),
    ("index-videos-not-utf8", lambda w: idx(w, "--videos", w.bad), 2, ["--videos", "not_utf8.txt", "UTF-8"]),
    ("index-videos-missing", lambda w: idx(w, "--videos", w.root / "ids.txt"), 2, ["--videos", "ids.txt"]),
    ("index-videos-dir", lambda w: idx(w, "--videos", w.vids), 2, ["--videos", "vids", "directory"]),
    ("index-unknown-video-id", lambda w: idx(w, "--videos", w.root / "ids_unknown.txt"), 1, ["f.h5", "zzz"]),
    ("index-features-missing", lambda w: ["index", "--features", w.root / "nope.h5", "--out", w.root / "i2"], 1,
     ["nope.h5"]),
    ("index-features-not-hdf5", lambda w: ["index", "--features", w.bad, "--out", w.root / "i2"], 1,
     ["not_utf8.txt"]),
    ("index-out-is-features", lambda w: ["index", "--features", w.feats, "--out", w.feats], 2,
     ["--out", "--features"]),
    ("index-out-is-user-file", lambda w: ["index", "--features", w.feats, "--out", w.userfile], 2, ["notes.txt"]),
    # ---- search (cases 7, 8, 9 and tracebacks) -----------------------------------------------------------
    ("search-top-k-0", lambda w: srch(w, "q", "--top-k", "0"), 2, ["--top-k"]),
    ("search-pool-negative", lambda w: srch(w, "q", "--pool", "-5"), 2, ["--pool"]),
    ("search-gap-negative", lambda w: srch(w, "q", "--gap", "-1"), 2, ["--gap"]),
    ("search-tolerance-2", lambda w: srch(w, "q", "--tolerance", "2"), 2, ["--tolerance"]),
    ("search-nprobe-0", lambda w: srch(w, "q", "--nprobe", "0"), 2, ["--nprobe"]),
    ("search-rerank-0", lambda w: srch(w, "q", "--rerank", "0"), 2, ["--rerank"]),
    ("search-threads-negative", lambda w: srch(w, "q", "--threads", "-1"), 2, ["--threads"]),
    pytest.param("search-device-cuda", lambda w: srch(w, "q", "--device", "cuda"), 2, ["--device", "CUDA"],
                 marks=pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")),
    ("search-queries-missing", lambda w: srch(w, "--queries", w.root / "qs.txt"), 2, ["--queries", "qs.txt"]),
    ("search-queries-dir", lambda w: srch(w, "--queries", w.vids), 2, ["--queries", "vids", "directory"]),
    ("search-queries-not-utf8", lambda w: srch(w, "--queries", w.bad), 2, ["--queries", "not_utf8.txt", "UTF-8"]),
    ("search-empty-query", lambda w: srch(w, "  "), 2, ["query 1", "empty"]),
    ("search-no-query", lambda w: srch(w), 2, ["query"]),
    ("search-index-width-differs", lambda w: srch(w, "q", index=w.idx8), 2, ["idx8", "8", "64"]),
    ("search-index-not-an-index", lambda w: srch(w, "q", index=w.vids), 1, ["vids", "not a moment index"]),
    ("search-index-is-a-file", lambda w: srch(w, "q", index=w.feats), 1, ["f.h5", "not a moment index"]),
    # ---- an index given where features are expected (issue 26) ---------------------------------------------
    ("ground-features-is-an-index", lambda w: ["ground", "--checkpoint", w.ckpt, "--features", w.idx, "--video-id",
                                               "v0", "a red circle"], 1,
     ["idx", "moment-search index", "locvtp index", "not a feature store"]),
    ("index-features-is-an-index", lambda w: ["index", "--features", w.idx, "--out", w.root / "i2"], 1,
     ["idx", "moment-search index", "not a feature store"]),
    ("search-checkpoint-missing", lambda w: ["search", "--index", w.idx, "--checkpoint", w.root / "nock", "q"], 1,
     ["nock"]),
]


@pytest.mark.parametrize("case_id,argv,code,needles", CASES, ids=[
    c.values[0] if hasattr(c, "values") else c[0] for c in CASES])
def test_one_line_error(w, capsys, monkeypatch, case_id, argv, code, needles):
    for name in getattr(argv, "modules", ()):  # `import name` raises ImportError
        monkeypatch.setitem(sys.modules, name, None)
    (w.root / "ids_unknown.txt").write_text("zzz\n")
    before = sorted(p.name for p in w.root.iterdir())
    res = run_cli(argv(w), capsys)
    assert_one_line_error(res, code, *needles)
    after = sorted(p.name for p in w.root.iterdir())
    assert after == before, f"{case_id} wrote or deleted {set(after) ^ set(before)}"
    assert w.userfile.read_text() == "mine\n"


def test_top_k_and_pool_larger_than_the_index_are_capped(w, capsys):
    """Case 7: `--top-k 10000000` on a small index used to allocate ~95 GiB and die; now it returns at most the
    index's rows, and the library caps it too (not only the command line)."""
    from locvtp.index import MomentIndex

    res = run_cli(srch(w, "a red circle", "--top-k", "10000000", "--pool", "99999999"), capsys)
    assert res.code == 0, res.err
    index = MomentIndex(w.idx)
    out = json.loads(res.out.strip().splitlines()[0])
    assert 1 <= len(out["moments"]) <= len(index)
    q = np.random.default_rng(0).normal(size=(2, index.dim)).astype(np.float32)
    scores, rows = index.search_clips(q, 10**9)
    assert rows.shape == (2, len(index)) and (rows >= 0).all()
    assert len(index.search_moments(q[0], top_k=10**9, pool=10**9)[0]) <= len(index)
    from locvtp.errors import UsageError

    for kw in ({"top_k": 0}, {"pool": -5}, {"gap": -1}, {"tolerance": 1.5}):
        with pytest.raises(UsageError):
            index.search_moments(q[0], **kw)


def test_query_warnings_in_json_and_on_stderr(w, capsys):
    """A query of unknown words ranks by noise: said once on stderr and listed in the JSON `warnings`."""
    res = run_cli(srch(w, "xyzzy qwertyuiop", "a red circle", "--top-k", "1"), capsys)  # (1: no shortfall warning)
    assert res.code == 0, res.err
    lines = [json.loads(ln) for ln in res.out.strip().splitlines()]
    assert lines[0]["warnings"] and "known" in lines[0]["warnings"][0]
    assert lines[1]["warnings"] == []
    warn_lines = [ln for ln in res.err_lines if "warning" in ln]
    assert len(warn_lines) == 1 and "xyzzy" in warn_lines[0]


def test_top_k_larger_than_the_moments_warns(w, capsys):
    """Issue 26: `--top-k 1000` over a small index says that fewer moments exist (JSON `warnings` and stderr), and a
    top-k the index can fill says nothing."""
    res = run_cli(srch(w, "a red circle", "--top-k", "1000"), capsys)
    assert res.code == 0, res.err
    out = json.loads(res.out.strip().splitlines()[0])
    n = len(out["moments"])
    assert 1 <= n < 1000
    short = [x for x in out["warnings"] if "asked for 1000 moments" in x]
    assert len(short) == 1 and f"only {n} exist" in short[0]
    warn = [ln for ln in res.err_lines if ln.startswith("locvtp search: warning: asked for 1000 moments")]
    assert len(warn) == 1
    res = run_cli(srch(w, "a red circle", "--top-k", "1"), capsys)
    assert res.code == 0 and json.loads(res.out.strip().splitlines()[0])["warnings"] == []
    assert "warning" not in res.err


def test_bom_never_reaches_a_query_or_an_id(w, capsys, tmp_path):
    """Issue 26: a UTF-8 byte-order mark in a --queries file, a query argument or an `index --videos` list is
    dropped (it used to stay in the first query / id, which then matched nothing)."""
    from locvtp.index import MomentIndex

    q = tmp_path / "q.txt"
    q.write_bytes("\ufeffa red circle\n\ufeffa blue square\n".encode("utf-8"))
    res = run_cli(srch(w, "\ufeffa green triangle", "--queries", q, "--top-k", "1"), capsys)
    assert res.code == 0, res.err
    assert [json.loads(ln)["query"] for ln in res.out.strip().splitlines()] == [
        "a green triangle", "a red circle", "a blue square"]
    vid = sorted(MomentIndex(w.idx).videos)[0]
    ids = tmp_path / "ids.txt"
    ids.write_bytes(f"\ufeff{vid}\n".encode("utf-8"))
    res = run_cli(["index", "--features", w.feats, "--out", tmp_path / "i", "--videos", ids, "--no-progress"], capsys)
    assert res.code == 0, res.err
    assert MomentIndex(tmp_path / "i").videos == [vid]


# --------------------------------------------------------------------------------------- OS failures while writing
def _no_temporaries(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if ".tmp-" in p.name or p.name.endswith(".lock")]


def _full_disk_at_close(monkeypatch):
    """HDF5 assembly fails as a full disk makes it fail: the data is written, the file's close fails (ENOSPC,
    no file name, as h5py reports it)."""
    from locvtp.featurestore import writer

    real = writer.new_h5

    @contextlib.contextmanager
    def full(path):
        with real(path) as f:
            yield f
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(writer, "new_h5", full)


def test_extract_full_disk_is_one_line_and_resumes(w, capsys, monkeypatch, tmp_path):
    """ENOSPC while the HDF5 file is assembled: one line naming --out (the 26-line traceback of issue 26), exit 1,
    no temporary and no half file left, the finished videos kept in the journal; the rerun resumes them."""
    out = tmp_path / "feats.h5"
    _full_disk_at_close(monkeypatch)
    res = run_cli(["extract", "--checkpoint", w.ckpt, "--videos", w.vids, "--out", out, "--no-progress"], capsys)
    line = assert_one_line_error(res, 1, f"--out {out}: cannot write: no space left on the device (ENOSPC)",
                                 f"kept in {out}.parts")
    assert "tmp-" not in line
    assert not out.exists() and _no_temporaries(tmp_path) == []
    assert len(journal_ids(out)) == 2
    monkeypatch.undo()
    res = run_cli(["extract", "--checkpoint", w.ckpt, "--videos", w.vids, "--out", out, "--no-progress"], capsys)
    assert res.code == 0 and "extracted 0 videos" in res.err and "2 already done" in res.err, res.err
    from locvtp.featurestore.reader import read_features

    assert np.array_equal(read_features(out, w.video.stem).features, read_features(w.feats, w.video.stem).features)


@pytest.mark.parametrize("fmt", ["h5", "npy-dir"])
def test_extract_full_disk_in_a_video_file(w, capsys, monkeypatch, tmp_path, fmt):
    """ENOSPC writing one video's file (numpy's write names no file): one line naming --out, nothing half-written."""
    from locvtp.featurestore import writer

    def full(path, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(writer, "atomic_write_bytes", full)
    out = tmp_path / ("feats.h5" if fmt == "h5" else "feats")
    res = run_cli(["extract", "--checkpoint", w.ckpt, "--videos", w.vids, "--out", out, "--format", fmt,
                   "--no-progress"], capsys)
    assert_one_line_error(res, 1, f"--out {out}: cannot write: no space left on the device (ENOSPC)")
    assert _no_temporaries(tmp_path) == []
    assert not list(tmp_path.rglob("*.npy")) and not list(tmp_path.rglob("*.npz")) and not (tmp_path / "feats.h5"
                                                                                            ).exists()


def test_extract_read_only_output_names_out_not_the_lock(w, capsys, monkeypatch, tmp_path):
    """A read-only place: the failing call creates the hidden lock file, the line names --out."""
    from locvtp.files import OutputLock

    def read_only(self):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self.lock_path))

    monkeypatch.setattr(OutputLock, "acquire", read_only)
    out = tmp_path / "feats.h5"
    res = run_cli(["extract", "--checkpoint", w.ckpt, "--videos", w.vids, "--out", out], capsys)
    line = assert_one_line_error(res, 1, f"--out {out}: cannot write: read-only file system (EROFS)")
    assert ".lock" not in line


def test_extract_file_size_limit_real_hdf5(w, tmp_path):
    """The real thing, not a monkeypatch: a process whose file-size limit (RLIMIT_FSIZE) stops the HDF5 file one
    byte short. HDF5 reported that as dozens of "Exception ignored" tracebacks and could crash the process; the
    user now reads one line naming --out, and the journal keeps the finished videos."""
    out = tmp_path / "feats.h5"
    limit = w.feats.stat().st_size - 1  # the same two videos: the parts fit, the assembled file does not
    code = ("import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
            f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit})); from locvtp.cli import main; "
            "sys.exit(main(sys.argv[1:]))")
    r = subprocess.run([sys.executable, "-c", code, "extract", "--checkpoint", str(w.ckpt), "--videos", str(w.vids),
                        "--out", str(out), "--no-progress", "--threads", "1"], capture_output=True, text=True,
                       timeout=300, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 1 and len(lines) == 1, r.stderr[-3000:]
    assert lines[0].startswith(f"locvtp extract: error: --out {out}: cannot write: file too large"), lines
    assert "EFBIG" in lines[0] and not out.exists() and _no_temporaries(tmp_path) == []
    assert len(journal_ids(out)) == 2


def test_extract_progress_into_a_pipe_is_not_one_line_per_video(w, capsys, tmp_path):
    """Into a pipe or a log (not a terminal) the bar prints its first and last line, not a redraw per video
    (its ok/failed postfix used to force one)."""
    res = run_cli(["extract", "--checkpoint", w.ckpt, "--videos", w.vids, "--out", tmp_path / "f.h5"], capsys)
    assert res.code == 0, res.err
    bar = [ln for ln in res.err.replace("\r", "\n").splitlines() if ln.startswith("extract:")]
    assert len(bar) == 2 and "2/2" in bar[-1] and "ok=2" in bar[-1], bar
