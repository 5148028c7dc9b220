"""Issue #18 for the output-writing commands `extract`, `merge`, `index`: never delete or replace what the user
owns (inputs apart from outputs, --overwrite only of our own outputs), one writer per output (lock), temporaries
of a killed run removed by the next one, and no silently missing rows (NaN/inf features reported)."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest

from cli_helpers import assert_one_line_error, run_cli
from inference_helpers import world_videos


def _snapshot(d: Path) -> dict[str, bytes]:
    """Every file under ``d`` (links followed) and its bytes."""
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def w(tiny_world, tiny_checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("safety")
    ns = SimpleNamespace(root=root, ckpt=tiny_checkpoint)
    ns.vids = root / "vids"
    ns.vids.mkdir()
    for p in world_videos(tiny_world)[:2]:
        (ns.vids / p.name).write_bytes(p.read_bytes())  # real files: a deletion would show
    (ns.vids / "README.txt").write_text("my notes about these videos\n")
    return ns


def _extract(w, out, *extra, videos=None):
    return ["extract", "--checkpoint", w.ckpt, "--videos", videos or w.vids, "--out", out, "--no-progress", *extra]


# ------------------------------------------------------------------------------------------------ case 1
@pytest.mark.parametrize("out_rel,fmt", [("vids", "npy-dir"), ("vids", "h5"), ("vids/feats", "npz-dir"),
                                         ("vids/f.h5", "h5")])
def test_extract_out_overlapping_videos_is_refused_and_deletes_nothing(w, capsys, out_rel, fmt):
    """`extract --videos vids --out vids --format npy-dir --overwrite` used to rmtree the videos."""
    before = _snapshot(w.vids)
    res = run_cli(_extract(w, w.root / out_rel, "--format", fmt, "--overwrite"), capsys)
    assert_one_line_error(res, 2, "--out", "--videos")
    assert _snapshot(w.vids) == before
    assert sorted(p.name for p in w.vids.iterdir()) == sorted(before)


def test_extract_list_file_parent_is_not_an_input(w, tmp_path, capsys):
    """A list file is the input, not its folder: the features may go next to it."""
    lst = tmp_path / "videos.txt"
    lst.write_text(f"{sorted(w.vids.glob('*.mp4'))[0]}\n")
    res = run_cli(_extract(w, tmp_path / "f.h5", videos=lst), capsys)
    assert res.code == 0, res.err
    res = run_cli(_extract(w, lst, "--overwrite", videos=lst), capsys)
    assert_one_line_error(res, 2, "--out", "--videos")
    assert lst.is_file()


def test_extract_h5_overwrite_only_replaces_a_feature_file(w, tmp_path, capsys):
    """--overwrite used to unlink whatever --out was; and without it a foreign HDF5 file was merged into."""
    user = tmp_path / "mine.h5"
    with h5py.File(user, "w") as f:
        f["precious"] = np.arange(5.0)
    before = user.read_bytes()
    for extra in ((), ("--overwrite",)):
        res = run_cli(_extract(w, user, *extra), capsys)
        assert_one_line_error(res, 2, "mine.h5", "did not write")
        assert user.read_bytes() == before
    # a feature file of ours is replaced; a folder of the user's files named like the journal is not deleted
    out = tmp_path / "f.h5"
    assert run_cli(_extract(w, out), capsys).code == 0
    parts = tmp_path / "f.h5.parts"
    parts.mkdir()
    (parts / "diary.txt").write_text("mine")
    res = run_cli(_extract(w, out, "--overwrite"), capsys)
    assert_one_line_error(res, 2, "f.h5.parts", "diary.txt")
    assert (parts / "diary.txt").read_text() == "mine" and out.is_file()
    (parts / "diary.txt").unlink()
    res = run_cli(_extract(w, out, "--overwrite", "--clip-seconds", "2"), capsys)
    assert res.code == 0, res.err
    with h5py.File(out, "r") as f:
        assert float(f.attrs["clip_seconds"]) == 2.0


@pytest.mark.parametrize("fmt", ["npy-dir", "npz-dir"])
def test_extract_dir_overwrite_keeps_user_files(w, tmp_path, capsys, fmt):
    out = tmp_path / "feats"
    assert run_cli(_extract(w, out, "--format", fmt), capsys).code == 0
    manifest = json.loads((out / ".locvtp-manifest.json").read_text())
    ext = ".npy" if fmt == "npy-dir" else ".npz"
    assert manifest["writer"] == "extract" and {p.name for p in out.glob(f"*{ext}")} <= set(manifest["files"])
    (out / "mine.txt").write_text("keep me")
    (out / "notes.npy").write_bytes(b"not features")  # a user's file with a feature-like name
    res = run_cli(_extract(w, out, "--format", fmt, "--overwrite"), capsys)
    assert res.code == 0, res.err
    assert (out / "mine.txt").read_text() == "keep me"
    assert (out / "notes.npy").read_bytes() == b"not features"
    assert len(list(out.glob(f"*{ext}"))) == 2 + (fmt == "npy-dir")
    # a folder of the user's files is not an extraction: refused, with or without --overwrite
    mine = tmp_path / "docs"
    mine.mkdir()
    (mine / "a.txt").write_text("a")
    for extra in ((), ("--overwrite",)):
        res = run_cli(_extract(w, mine, "--format", fmt, *extra), capsys)
        assert_one_line_error(res, 2, "docs", "a.txt")
    assert sorted(p.name for p in mine.iterdir()) == ["a.txt"]


def test_extract_dir_claims_survive_a_kill(w, tmp_path, capsys):
    """Files written by a killed run (claims not yet folded into the manifest) are still removed by --overwrite."""
    from locvtp.featurestore.writer import CLAIMS

    out = tmp_path / "feats"
    assert run_cli(_extract(w, out, "--format", "npz-dir"), capsys).code == 0
    journal = out / ".journal-rank0"
    journal.mkdir()
    (out / "ghost.npz").write_bytes(b"half a run")
    (journal / CLAIMS).write_text("ghost.npz\n")  # what a run killed right after writing it leaves
    (out / "mine.txt").write_text("keep")
    assert run_cli(_extract(w, out, "--format", "npz-dir", "--overwrite"), capsys).code == 0
    assert not (out / "ghost.npz").exists() and (out / "mine.txt").read_text() == "keep"


def test_extract_refuses_another_layout_in_the_same_directory(w, tmp_path, capsys):
    out = tmp_path / "feats"
    assert run_cli(_extract(w, out, "--format", "npy-dir"), capsys).code == 0
    res = run_cli(_extract(w, out, "--format", "npz-dir"), capsys)
    assert_one_line_error(res, 1, "meta.json", "npy-dir", "npz-dir")
    assert not list(out.glob("*.npz"))


# ------------------------------------------------------------------------------------------------ case 3
@pytest.fixture(scope="module")
def shards(w, tmp_path_factory):
    d = tmp_path_factory.mktemp("shards")
    vids = sorted(w.vids.glob("*.mp4"))
    for i, v in enumerate(vids):
        lst = d / f"l{i}.txt"
        lst.write_text(f"{v}\n")
        from locvtp.cli import main

        assert main([str(a) for a in _extract(w, d / f"x{i}.h5", videos=lst)]) == 0
    return d


def test_merge_out_among_inputs_or_existing_is_refused(shards, capsys):
    x, y = shards / "x0.h5", shards / "x1.h5"
    before = x.read_bytes()
    res = run_cli(["merge", "--out", x, x, y, "--no-progress"], capsys)
    assert_one_line_error(res, 2, "--out", "x0.h5", "input")
    assert x.read_bytes() == before
    res = run_cli(["merge", "--out", x, str(shards / "x*.h5"), "--no-progress", "--overwrite"], capsys)
    assert_one_line_error(res, 2, "--out", "x*.h5")
    assert x.read_bytes() == before
    user = shards / "report.h5"
    user.write_text("not yours")
    for extra in ((), ("--overwrite",)):
        res = run_cli(["merge", "--out", user, x, y, "--no-progress", *extra], capsys)
        assert_one_line_error(res, 2, "report.h5")
        assert user.read_text() == "not yours"
    out = shards / "all.h5"
    assert run_cli(["merge", "--out", out, x, y, "--no-progress"], capsys).code == 0
    res = run_cli(["merge", "--out", out, x, y, "--no-progress"], capsys)
    assert_one_line_error(res, 2, "all.h5", "--overwrite")
    assert run_cli(["merge", "--out", out, x, y, "--no-progress", "--overwrite"], capsys).code == 0
    with h5py.File(out, "r") as f:
        assert len(f.keys()) == 2


# ------------------------------------------------------------------------------------------------ case 2
def _features(path: Path, lengths=(4, 6, 3), dim=8, nan_in=()) -> None:
    from locvtp.featurestore import ClipFeatures, H5Writer

    settings = {"embedding": "joint", "clip_seconds": 1.0, "stride_seconds": 1.0, "frames_per_clip": 4,
                "frame_size": 32, "model": "test", "checkpoint_sha256": "abc"}
    wr = H5Writer(path, settings, path.with_name("fail.jsonl"))
    rng = np.random.default_rng(0)
    for i, n in enumerate(lengths):
        f = rng.normal(size=(n, dim)).astype(np.float32)
        if i in nan_in:
            f[n // 2, 1] = np.nan if i % 2 == 0 else np.inf
        st = np.arange(n, dtype=np.float64)
        wr.add(ClipFeatures(f"v{i}", f, np.stack([st, st + 1], 1), 1.0, float(n)))
    wr.finish({f"v{i}" for i in range(len(lengths))})


def test_index_replaces_only_an_index_it_wrote(tmp_path, capsys):
    feats = tmp_path / "f.h5"
    _features(feats)
    idx = tmp_path / "idx"
    assert run_cli(["index", "--features", feats, "--out", idx, "--no-progress"], capsys).code == 0
    assert json.loads((idx / ".locvtp-manifest.json").read_text())["writer"] == "index"
    assert run_cli(["index", "--features", feats, "--out", idx, "--no-progress"], capsys).code == 0  # ours: ok
    # a folder of the user's files
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "thesis.tex").write_text("years of work")
    res = run_cli(["index", "--features", feats, "--out", docs, "--no-progress"], capsys)
    assert_one_line_error(res, 2, "docs")
    assert (docs / "thesis.tex").read_text() == "years of work"
    # a file: not moved to a hidden .NAME.old-PID and left there
    f = tmp_path / "notes"
    f.write_text("mine")
    res = run_cli(["index", "--features", feats, "--out", f, "--no-progress"], capsys)
    assert_one_line_error(res, 2, "notes")
    assert f.read_text() == "mine" and not list(tmp_path.glob(".notes*"))
    # our index with a user's file dropped into it
    (idx / "extra.txt").write_text("mine")
    res = run_cli(["index", "--features", feats, "--out", idx, "--no-progress"], capsys)
    assert_one_line_error(res, 2, "extra.txt")
    assert (idx / "extra.txt").read_text() == "mine"
    # an index written before indexes had a manifest is still ours to replace
    (idx / "extra.txt").unlink()
    (idx / ".locvtp-manifest.json").unlink()
    assert run_cli(["index", "--features", feats, "--out", idx, "--no-progress"], capsys).code == 0


def test_index_out_is_the_feature_directory(w, tmp_path, capsys):
    feats = tmp_path / "feats"
    assert run_cli(_extract(w, feats, "--format", "npy-dir"), capsys).code == 0
    before = _snapshot(feats)
    for out in (feats, feats / "idx"):
        res = run_cli(["index", "--features", feats, "--out", out, "--no-progress"], capsys)
        assert_one_line_error(res, 2, "--out", "--features")
    assert _snapshot(feats) == before


# ------------------------------------------------------------------------------------------------ case 4: locks
def test_second_writer_on_a_locked_output_stops_with_one_line(w, tmp_path, capsys):
    from locvtp.files import OutputLock

    out = tmp_path / "f.h5"
    assert run_cli(_extract(w, out), capsys).code == 0
    before = out.read_bytes()
    with OutputLock(out, "extract"):
        res = run_cli(_extract(w, out, "--overwrite"), capsys)
        assert_one_line_error(res, 1, "f.h5", "`locvtp extract`", "is writing")
        res = run_cli(["merge", "--out", out, str(tmp_path / "x.h5"), "--overwrite"], capsys)
        assert res.code != 0 and out.read_bytes() == before
    assert out.read_bytes() == before
    idx = tmp_path / "idx"
    with OutputLock(idx, "index"):
        res = run_cli(["index", "--features", out, "--out", idx, "--no-progress"], capsys)
        assert_one_line_error(res, 1, "idx", "`locvtp index`", "is writing")
        assert not idx.exists()
    m = tmp_path / "m.h5"
    with OutputLock(m, "merge"):
        res = run_cli(["merge", "--out", m, out, "--no-progress"], capsys)
        assert_one_line_error(res, 1, "m.h5", "is writing")
        assert not m.exists()
    d = tmp_path / "d"
    with OutputLock(d, "extract"):
        res = run_cli(_extract(w, d, "--format", "npz-dir"), capsys)
        assert_one_line_error(res, 1, "d", "is writing")
        assert not d.exists()


def test_directory_ranks_lock_separately(w, tmp_path, capsys, monkeypatch):
    """Under torchrun, rank 0 of a directory output is not blocked by rank 1 holding its own lock."""
    from locvtp.files import OutputLock

    d = tmp_path / "d"
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with OutputLock(d.with_name("d.rank1"), "extract"):
        res = run_cli(_extract(w, d, "--format", "npz-dir"), capsys)
        assert res.code == 0, res.err
        monkeypatch.setenv("RANK", "1")
        res = run_cli(_extract(w, d, "--format", "npz-dir"), capsys)
        assert_one_line_error(res, 1, "d.rank1", "is writing")
    assert len(list(d.glob("*.npz"))) == 1  # rank 0's half


# ------------------------------------------------------------------------------------------------ leftovers
def test_stale_temporaries_of_a_killed_run_are_removed(w, tmp_path, capsys):
    feats = tmp_path / "f.h5"
    _features(feats)
    stale_dir = tmp_path / ".idx.tmp-123"
    stale_dir.mkdir()
    (stale_dir / "embeddings.npy").write_bytes(b"\0" * 1000)
    stale_old = tmp_path / ".idx.old-77-abcd1234"
    stale_old.mkdir()
    assert run_cli(["index", "--features", feats, "--out", tmp_path / "idx", "--no-progress"], capsys).code == 0
    assert not stale_dir.exists() and not stale_old.exists()
    # extract's own output temporaries
    out = tmp_path / "e.h5"
    stale = tmp_path / ".e.h5.tmp-999-deadbeef"
    stale.write_bytes(b"half an hdf5 file")
    assert run_cli(_extract(w, out), capsys).code == 0
    assert not stale.exists()
    # merge's
    stale = tmp_path / ".m.h5.tmp-4242"
    stale.write_bytes(b"half")
    assert run_cli(["merge", "--out", tmp_path / "m.h5", out, "--no-progress"], capsys).code == 0
    assert not stale.exists()
    # a user's file that merely starts with the same name is not a temporary
    keep = tmp_path / ".idx.txt"
    keep.write_text("mine")
    assert run_cli(["index", "--features", feats, "--out", tmp_path / "idx", "--no-progress"], capsys).code == 0
    assert keep.read_text() == "mine"


# ------------------------------------------------------------------------------------------------ case 5
def test_index_skips_and_reports_non_finite_videos(tmp_path, capsys):
    """NaN/inf rows used to be indexed and then never returned (a NaN score ranks last)."""
    from locvtp.index import MomentIndex

    feats = tmp_path / "f.h5"
    _features(feats, lengths=(4, 6, 3, 5), nan_in=(1, 2))
    idx = tmp_path / "idx"
    res = run_cli(["index", "--features", feats, "--out", idx, "--no-progress"], capsys)
    assert res.code == 0, res.err
    warn = [ln for ln in res.err_lines if "warning" in ln]
    assert len(warn) == 2 and "'v1'" in warn[0] and "'v2'" in warn[1]
    assert "skipped 2 video(s)" in res.err_lines[-1]
    meta = json.loads((idx / "meta.json").read_text())
    assert [s["video_id"] for s in meta["skipped"]] == ["v1", "v2"]
    index = MomentIndex(idx)
    assert index.videos == ["v0", "v3"] and len(index) == 4 + 5 == meta["rows"]
    assert np.isfinite(np.asarray(index.embeddings)).all()
    q = np.random.default_rng(1).normal(size=(1, 8)).astype(np.float32)
    _, rows = index.search_clips(q, 100)
    assert sorted(rows[0].tolist()) == list(range(9))  # every stored row can be returned
    # --strict: fatal, nothing replaced
    before = (idx / "meta.json").read_bytes()
    res = run_cli(["index", "--features", feats, "--out", idx, "--no-progress", "--strict"], capsys)
    assert_one_line_error(res, 1, "f.h5", "'v1'", "non-finite")
    assert (idx / "meta.json").read_bytes() == before
    # every video bad: an error, not an empty index
    bad = tmp_path / "bad.h5"
    _features(bad, lengths=(3,), nan_in=(0,))
    res = run_cli(["index", "--features", bad, "--out", tmp_path / "idx2", "--no-progress"], capsys)
    assert res.code == 1 and "no clip features" in res.err_lines[-1] and not (tmp_path / "idx2").exists()
    assert "Traceback" not in res.err
