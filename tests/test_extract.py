"""`locvtp extract` / `locvtp merge`: layout, resume, crash safety (SIGKILL), failures, formats, shards."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from inference_helpers import clip_args, linked_videos, make_checkpoint


@pytest.fixture(scope="module")
def ckpt(tiny_world, tmp_path_factory):
    return make_checkpoint(tiny_world, tmp_path_factory.mktemp("ext") / "ckpt")


@pytest.fixture(scope="module")
def some_videos(tiny_world, tmp_path_factory):
    """A directory with 6 of the world's videos (symlinks), to keep runs short."""
    return linked_videos(tiny_world, tmp_path_factory.mktemp("vids"), every=6, count=6)


def _run(args: list[str]) -> int:
    """`locvtp extract ARGS` as the console script runs it (errors become one line and an exit code)."""
    from locvtp.cli import main

    return main(["extract", *args, "--no-progress"])


def _h5_content(path: Path) -> dict:
    """Everything a reader sees: root attrs, and per dataset its array and attributes."""
    out = {}
    with h5py.File(path, "r") as f:
        out["/"] = {k: np.asarray(v).tolist() if isinstance(v, np.ndarray) else v for k, v in f.attrs.items()}
        for k in f.keys():
            d = f[k]
            out[k] = (d[()].copy(), {a: np.asarray(v).tolist() for a, v in d.attrs.items()})
    return out


def _assert_same_content(a: dict, b: dict, rtol: float = 0.0) -> None:
    """Same videos, attributes and arrays; ``rtol``: features computed in other batches (a resumed or sharded run
    packs other clips together) differ by float rounding only."""
    assert sorted(a) == sorted(b)
    assert a["/"] == b["/"]
    for k in a:
        if k == "/":
            continue
        if rtol:
            np.testing.assert_allclose(a[k][0], b[k][0], rtol=rtol, atol=rtol * 0.1)
            assert a[k][0].shape == b[k][0].shape and a[k][0].dtype == b[k][0].dtype
        else:
            np.testing.assert_array_equal(a[k][0], b[k][0])
        assert a[k][1] == b[k][1], k


def test_h5_layout_and_values(ckpt, some_videos, tmp_path):
    from locvtp.checkpoint import load_checkpoint
    from locvtp.data.video import sliding_windows
    from locvtp.inference import embed_video_file

    out = tmp_path / "feats.h5"
    assert _run(["--checkpoint", str(ckpt), "--videos", str(some_videos), "--out", str(out)]) == 0
    ck = load_checkpoint(ckpt)
    names = sorted(p.stem for p in some_videos.glob("*.mp4"))
    with h5py.File(out, "r") as f:
        assert sorted(f.keys()) == names
        assert f.attrs["format"] == "locvtp-features" and f.attrs["checkpoint_sha256"] == ck.sha256
        d = f[names[0]]
        assert d.dtype == np.float32 and d.shape[1] == 64
        for key in ("fps", "clip_seconds", "stride_seconds", "model", "checkpoint_sha256", "duration", "windows"):
            assert key in d.attrs, key
        np.testing.assert_allclose(d.attrs["windows"], sliding_windows(d.attrs["duration"], 1.0, 1.0))
        ref = embed_video_file(ck.model, some_videos / f"{names[0]}.mp4", **clip_args(ck))
        np.testing.assert_allclose(d[()], ref.features, atol=1e-6)
    assert not (tmp_path / "feats.failures.jsonl").exists()  # written only when something failed or was skipped
    assert not (tmp_path / "feats.h5.parts").exists()  # journal removed after a clean finish


def test_resume_skips_done_and_refuses_other_settings(ckpt, some_videos, tmp_path, capsys):
    out = tmp_path / "feats.h5"
    assert _run(["--checkpoint", str(ckpt), "--videos", str(some_videos), "--out", str(out)]) == 0
    before = _h5_content(out)
    capsys.readouterr()
    assert _run(["--checkpoint", str(ckpt), "--videos", str(some_videos), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "extracted 0 videos" in err and "6 already done" in err
    _assert_same_content(before, _h5_content(out))
    assert _run(["--checkpoint", str(ckpt), "--videos", str(some_videos), "--out", str(out),
                 "--clip-seconds", "2"]) == 1
    assert "clip_seconds" in capsys.readouterr().err
    assert _run(["--checkpoint", str(ckpt), "--videos", str(some_videos), "--out", str(out),
                 "--clip-seconds", "2", "--overwrite"]) == 0
    with h5py.File(out, "r") as f:
        assert float(f.attrs["clip_seconds"]) == 2.0


@pytest.mark.slow
def test_sigkill_midrun_then_rerun_gives_same_file(ckpt, some_videos, tmp_path):
    """Kill `extract` mid-run (several times, at different moments), rerun: same content as one clean run."""
    ref = tmp_path / "ref" / "feats.h5"
    assert _run(["--checkpoint", str(ckpt), "--videos", str(some_videos), "--out", str(ref)]) == 0
    out = tmp_path / "killed" / "feats.h5"
    cmd = [sys.executable, "-m", "locvtp.cli", "extract", "--checkpoint", str(ckpt), "--videos", str(some_videos),
           "--out", str(out), "--no-progress", "--flush-every", "1", "--threads", "1"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    parts = out.with_name(out.name + ".parts") / "done"
    kills = 0
    for want in (1, 3):  # kill once after ~1 finished video, once after ~3 (relative to what exists)
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        start_n = _n_done(out, parts)
        while time.monotonic() < deadline and proc.poll() is None:
            if _n_done(out, parts) >= start_n + want:
                break
            time.sleep(0.01)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
        if out.exists():  # whatever a kill leaves behind is a complete, readable file
            with h5py.File(out, "r") as f:
                for k in f.keys():
                    assert f[k].shape[0] == len(f[k].attrs["windows"])
    assert kills >= 1, "extraction finished before it could be killed"
    assert _run(["--checkpoint", str(ckpt), "--videos", str(some_videos), "--out", str(out)]) == 0
    ref_content, got = _h5_content(ref), _h5_content(out)
    ref_content["/"].pop("checkpoint"), got["/"].pop("checkpoint")
    _assert_same_content(ref_content, got, rtol=1e-5)
    assert not list(out.parent.glob(".*tmp*")), "temporary files left behind"


def _features(vid: str, n: int, seed: int):
    from locvtp.featurestore.record import ClipFeatures

    rng = np.random.default_rng(seed)
    windows = np.stack([np.arange(n), np.arange(n) + 1.0], axis=1)
    return ClipFeatures(vid, rng.standard_normal((n, 8)).astype(np.float32), windows, 8.0, float(n))


def test_journal_group_commit(tmp_path, monkeypatch):
    """Finished videos wait in memory and are journalled together: none is listed before its part is written
    (a kill then loses them, never a file), a commit writes one part for all, a rerun resumes from it, and the
    assembled file holds what was added; a part of the one-video layout of earlier versions is still read."""
    from locvtp.featurestore import writer as W
    from locvtp.featurestore.reader import iter_features
    from locvtp.featurestore.writer import _npz_bytes

    monkeypatch.setattr(W, "GROUP_SECONDS", 3600.0)
    out, settings, fails = tmp_path / "f.h5", {"embedding": "joint", "model": "m"}, tmp_path / "f.failures.jsonl"
    w = W.H5Writer(out, settings, fails)
    recs = [_features(f"v{i}", 3 + i, i) for i in range(3)]
    for r in recs:
        w.add(r)
    assert W.journal_ids(out) == [] and w.done_ids() == {"v0", "v1", "v2"}  # buffered: not durable, not listed
    assert W.H5Writer(out, settings, fails).done_ids() == set()  # what a rerun after a kill now would see
    w.commit()
    assert W.journal_ids(out) == ["v0", "v1", "v2"] and len(list((tmp_path / "f.h5.parts" / "done").glob("*"))) == 1
    rerun = W.H5Writer(out, settings, fails)
    assert rerun.done_ids() == {"v0", "v1", "v2"}
    old = recs[0].__class__("old", recs[0].features, recs[0].windows, 5.0, 3.0)  # an earlier version's part
    (tmp_path / "f.h5.parts" / "done" / "old.npz").write_bytes(_npz_bytes(
        video_id=np.array("old"), features=old.features, windows=old.windows, fps=np.array(5.0),
        duration=np.array(3.0), source=np.array("/videos/old.mp4")))
    monkeypatch.setattr(W, "GROUP_VIDEOS", 1)  # now each add is its own part
    rerun.add(_features("v3", 2, 3), source="/elsewhere/v3.mp4")
    assert W.journal_ids(out) == ["old", "v0", "v1", "v2", "v3"]
    assert rerun.assemble() == 5 and W.journal_ids(out) == []
    got = {r.video_id: r for r in iter_features(out)}
    for r in [*recs, old, _features("v3", 2, 3)]:
        np.testing.assert_array_equal(got[r.video_id].features, r.features)
        np.testing.assert_array_equal(got[r.video_id].windows, r.windows)
        assert (got[r.video_id].fps, got[r.video_id].duration) == (r.fps, r.duration)
    with h5py.File(out, "r") as f:
        assert f["v3"].attrs["source"] == "/elsewhere/v3.mp4" and f["old"].attrs["source"] == "/videos/old.mp4"
        assert "source" not in f["v0"].attrs


def _n_done(out: Path, parts: Path) -> int:
    n = len(list(parts.glob("*.npz"))) if parts.is_dir() else 0
    try:
        with h5py.File(out, "r") as f:
            n += len(f.keys())
    except (OSError, FileNotFoundError):
        pass
    return n


def test_corrupt_videos_go_to_failures(ckpt, some_videos, tmp_path, capsys):
    vids = tmp_path / "vids"
    vids.mkdir()
    for p in some_videos.glob("*.mp4"):
        (vids / p.name).symlink_to(p.resolve())
    good = sorted(vids.glob("*.mp4"))[0].resolve().read_bytes()
    (vids / "truncated.mp4").write_bytes(good[: len(good) // 3])
    (vids / "garbage.mp4").write_bytes(os.urandom(4096))
    (vids / "empty.mp4").write_bytes(b"")
    out = tmp_path / "feats.h5"
    assert _run(["--checkpoint", str(ckpt), "--videos", str(vids), "--out", str(out)]) == 0
    assert "3 failed of 9" in capsys.readouterr().err
    recs = [json.loads(ln) for ln in (tmp_path / "feats.failures.jsonl").read_text().splitlines()]
    assert [r["video_id"] for r in recs] == ["empty", "garbage", "truncated"]
    assert all(r["reason"] and r["path"].endswith(".mp4") for r in recs)
    with h5py.File(out, "r") as f:
        assert sorted(f.keys()) == sorted(p.stem for p in some_videos.glob("*.mp4"))
    # rerun: failures are retried (and fail again), nothing else redone
    assert _run(["--checkpoint", str(ckpt), "--videos", str(vids), "--out", str(out)]) == 0
    assert "6 already done, 3 failed" in capsys.readouterr().err
    # --strict stops at the first bad video
    assert _run(["--checkpoint", str(ckpt), "--videos", str(vids), "--out", str(tmp_path / "s.h5"),
                 "--strict"]) == 1


@pytest.mark.parametrize("fmt", ["npy-dir", "npz-dir"])
def test_dir_formats_match_h5(ckpt, some_videos, tmp_path, fmt):
    from locvtp.featurestore.reader import iter_features

    assert _run(["--checkpoint", str(ckpt), "--videos", str(some_videos), "--out", str(tmp_path / "f.h5")]) == 0
    d = tmp_path / fmt
    assert _run(["--checkpoint", str(ckpt), "--videos", str(some_videos), "--out", str(d), "--format", fmt]) == 0
    ext = ".npy" if fmt == "npy-dir" else ".npz"
    files = sorted(d.glob(f"*{ext}"))
    assert [f.stem for f in files] == sorted(p.stem for p in some_videos.glob("*.mp4"))
    if fmt == "npz-dir":
        with np.load(files[0]) as z:
            assert z["features"].ndim == 2  # the Moment-DETR key
    else:
        assert np.load(files[0]).ndim == 2
    a = list(iter_features(tmp_path / "f.h5"))
    b = list(iter_features(d))
    assert [r.video_id for r in a] == [r.video_id for r in b]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.features, y.features)
        np.testing.assert_allclose(x.windows, y.windows)
        assert (x.fps, x.duration) == (y.fps, y.duration)
    # resumable too: a rerun extracts nothing
    assert _run(["--checkpoint", str(ckpt), "--videos", str(some_videos), "--out", str(d), "--format", fmt]) == 0


def test_shards_and_merge_equal_single_run(ckpt, some_videos, tmp_path, monkeypatch):
    from locvtp.commands.extract import merge_main

    single = tmp_path / "single.h5"
    assert _run(["--checkpoint", str(ckpt), "--videos", str(some_videos), "--out", str(single)]) == 0
    out = tmp_path / "feats.h5"
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        assert _run(["--checkpoint", str(ckpt), "--videos", str(some_videos), "--out", str(out)]) == 0
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    shards = sorted(tmp_path.glob("feats.rank*.h5"))
    assert [s.name for s in shards] == ["feats.rank0.h5", "feats.rank1.h5"]
    with h5py.File(shards[0]) as a, h5py.File(shards[1]) as b:
        assert not set(a.keys()) & set(b.keys()) and len(a.keys()) + len(b.keys()) == 6
    assert not list(tmp_path.glob("feats.rank*.failures.jsonl"))  # nothing failed: no failures files
    # a failure recorded by rank 1 is carried into the merged failures file
    (tmp_path / "feats.rank1.failures.jsonl").write_text(json.dumps(
        {"video_id": "lost", "path": "/x/lost.mp4", "reason": "VideoError: corrupt"}) + "\n")
    assert merge_main([str(tmp_path / "feats.rank*.h5"), "--out", str(out), "--no-progress"]) == 0
    _assert_same_content(_h5_content(single), _h5_content(out), rtol=1e-5)
    merged = [json.loads(ln) for ln in (tmp_path / "feats.failures.jsonl").read_text().splitlines()]
    assert [r["video_id"] for r in merged] == ["lost"]


def test_list_file_with_ids_and_bad_lines(ckpt, some_videos, tmp_path, capsys):
    vids = sorted(some_videos.glob("*.mp4"))
    lst = tmp_path / "videos.txt"
    lst.write_text(f"# my videos\nalpha\t{vids[0]}\n{vids[1]}\nbad/id\t{vids[2]}\nmissing\t/nonexistent/x.mp4\n")
    out = tmp_path / "f.h5"
    assert _run(["--checkpoint", str(ckpt), "--videos", str(lst), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "videos.txt:4" in err and "path separator" in err
    with h5py.File(out, "r") as f:
        assert sorted(f.keys()) == sorted(["alpha", vids[1].stem])
    recs = [json.loads(ln) for ln in (tmp_path / "f.failures.jsonl").read_text().splitlines()]
    assert [r["video_id"] for r in recs] == ["bad/id", "missing"]  # the skipped line is listed too
    assert recs[0]["skipped"] is True and "videos.txt:4" in recs[0]["reason"] and "skipped" not in recs[1]


def test_backbone_features(ckpt, some_videos, tmp_path):
    from locvtp.checkpoint import load_checkpoint
    from locvtp.index import build_index

    out = tmp_path / "bb.h5"
    assert _run(["--checkpoint", str(ckpt), "--videos", str(some_videos), "--out", str(out), "--backbone"]) == 0
    dv = load_checkpoint(ckpt).model.video_encoder.out_dim
    with h5py.File(out, "r") as f:
        assert f.attrs["embedding"] == "backbone"
        assert all(f[k].shape[1] == dv for k in f.keys())
    with pytest.raises(ValueError, match="backbone"):
        build_index(out, tmp_path / "idx", progress=False)


def test_features_encoder_model_extracts_from_feature_files(tiny_world, tmp_path):
    """A `features` video encoder reads per-clip feature files (any readable format) instead of videos."""
    import torch

    from locvtp.checkpoint import load_checkpoint
    from locvtp.featurestore.reader import iter_features

    ck = make_checkpoint(tiny_world, tmp_path / "fck", video="features", in_dim=12)
    raw = tmp_path / "raw"
    raw.mkdir()
    rng = np.random.default_rng(0)
    inputs = {f"vid{i}": rng.normal(size=(n, 12)).astype(np.float32) for i, n in enumerate([5, 9, 1])}
    for vid, x in inputs.items():
        np.save(raw / f"{vid}.npy", x)  # a bare Charades-style npy dir: no metadata at all
    out = tmp_path / "f.h5"
    assert _run(["--checkpoint", str(ck), "--videos", str(raw), "--out", str(out)]) == 0
    model = load_checkpoint(ck).model
    got = {r.video_id: r for r in iter_features(out)}
    assert sorted(got) == sorted(inputs)
    for vid, x in inputs.items():
        with torch.no_grad():
            ref = model.encode_video(torch.as_tensor(x)[None])[0].numpy()
        np.testing.assert_allclose(got[vid].features, ref, atol=1e-5)
        np.testing.assert_allclose(got[vid].windows[:, 0], np.arange(len(x)) * 1.0)
