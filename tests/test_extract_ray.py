"""`locvtp extract --runner ray` (locvtp.extract_ray) against a local Ray instance: the features equal the local
pipeline's (a checkpoint's and a standard backbone's), a corrupt video is a failure like in the local run, a
resumed run does only the rest, every format.

One Ray instance for the module (its start-up takes seconds); the runs in this process connect to it. One run
starts its own instance from the command line, in a subprocess, as a user's would."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from inference_helpers import interrupt_writer_after, linked_videos, make_checkpoint

ray = pytest.importorskip("ray", reason="Ray is not installed (the optional extra: pip install 'locvtp[ray]')")
pytest.importorskip("ray.data", reason="Ray Data is not installed (the optional extra: pip install 'locvtp[ray]')")


@pytest.fixture(scope="module", autouse=True)
def ray_instance():
    t = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING",
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(
                 [str(Path(__file__).resolve().parents[1] / "src"), os.environ.get("PYTHONPATH", "")])}})
    print(f"ray.init: {time.perf_counter() - t:.1f} s")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def ckpts(tiny_world, tmp_path_factory):
    d = tmp_path_factory.mktemp("rayck")
    return {"plain": make_checkpoint(tiny_world, d / "plain"),
            "temporal": make_checkpoint(tiny_world, d / "temporal", temporal_layers=1)}


@pytest.fixture(scope="module")
def videos(tiny_world, tmp_path_factory):
    """5 of the world's videos (symlinks)."""
    return linked_videos(tiny_world, tmp_path_factory.mktemp("rayvids"), every=5, count=5)


def _run(args: list) -> int:
    from locvtp.cli import main

    return main(["extract", *map(str, args), "--no-progress"])


def _store(path) -> dict:
    from locvtp.featurestore.reader import iter_features

    return {r.video_id: (r.features, r.windows, r.fps, r.duration) for r in iter_features(path)}


def _assert_close(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want) and want
    for vid in want:
        np.testing.assert_allclose(got[vid][0], want[vid][0], rtol=1e-5, atol=1e-6, err_msg=vid)
        np.testing.assert_array_equal(got[vid][1], want[vid][1])
        assert got[vid][2:] == pytest.approx(want[vid][2:])


@pytest.fixture(scope="module")
def local(ckpts, videos, tmp_path_factory):
    """The local pipeline's stores (the reference), per checkpoint kind and backbone flag, made on demand."""
    d, made = tmp_path_factory.mktemp("rayref"), {}

    def get(kind: str, backbone: bool = False) -> dict:
        if (kind, backbone) not in made:
            out = d / f"{kind}{'-bb' if backbone else ''}.h5"
            assert _run(["--checkpoint", ckpts[kind], "--videos", videos, "--out", out, "--workers", 0]
                        + (["--backbone"] if backbone else [])) == 0
            made[kind, backbone] = _store(out)
        return made[kind, backbone]

    return get


@pytest.mark.parametrize("kind,fmt,batch,backbone", [
    ("plain", "h5", 7, False),  # batches cut across videos
    ("temporal", "npz-dir", 5, False),  # a transformer across clips: finished in the driver
    ("plain", "npy-dir", 64, True),  # backbone features; one batch holds several videos
])
def test_ray_equals_the_local_pipeline(ckpts, videos, local, tmp_path, capsys, kind, fmt, batch, backbone):
    out = tmp_path / ("f.h5" if fmt == "h5" else "f")
    args = ["--checkpoint", ckpts[kind], "--videos", videos, "--out", out, "--format", fmt, "--runner", "ray",
            "--batch-size", batch, "--workers", 1]
    assert _run(args + (["--backbone"] if backbone else [])) == 0
    assert "extracted 5 videos" in capsys.readouterr().err
    _assert_close(_store(out), local(kind, backbone))


@pytest.fixture(scope="module")
def clip_weights(tmp_path_factory):
    """A random small CLIP image tower in OpenAI's layout (what `--backbone clip --weights` reads)."""
    import torch

    from locvtp.model.clip_visual import ClipVisual, ClipVisualArch

    torch.manual_seed(0)
    vis = ClipVisual(ClipVisualArch(width=64, patch=32, image_size=224, layers=2, out_dim=24))
    path = tmp_path_factory.mktemp("rayclip") / "ViT-small.pt"
    torch.save({f"visual.{k}": v.clone() for k, v in vis.state_dict().items()}, path)
    return path


def test_ray_standard_backbone_equals_the_local_pipeline(clip_weights, videos, tmp_path, capsys, monkeypatch):
    """`--backbone clip` on Ray: each video decoded in one pass by one task (the protocol's frames), handed on
    2 clips at a time, batches of 3 cut across videos, encoded by a StandardActor: the features, the protocol's
    grid and the run settings equal the local pipeline's."""
    import h5py

    from locvtp import extract_pipeline as P

    base = ["--backbone", "clip", "--weights", clip_weights, "--videos", videos]
    ref = tmp_path / "ref.h5"
    assert _run(base + ["--out", ref, "--workers", 0]) == 0
    monkeypatch.setattr(P, "chunk_clips", lambda frames, size: 2)  # (the driver's RateClips, shipped to the tasks)
    out = tmp_path / "f.h5"
    assert _run(base + ["--out", out, "--runner", "ray", "--workers", 1, "--batch-size", 3]) == 0
    assert "extracted 5 videos" in capsys.readouterr().err
    want = _store(ref)
    assert sum(v[0].shape[0] for v in want.values()) > 2 * len(want)  # several chunks per video
    _assert_close(_store(out), want)
    with h5py.File(ref, "r") as a, h5py.File(out, "r") as b:
        keys = ("backbone", "protocol", "weights_sha256", "clip_seconds")
        assert {k: a.attrs[k] for k in keys} == {k: b.attrs[k] for k in keys}


def test_long_videos_are_cut_into_clip_ranges(ckpts, videos, local, tmp_path, monkeypatch):
    """Clip ranges of 2 clips: a video's clips come from several decode tasks, in any order, and equal one run."""
    from locvtp import extract_pipeline as P

    want = local("plain")  # (the reference made with the default ranges)
    monkeypatch.setattr(P, "chunk_clips", lambda frames, size: 2)  # (the driver's WindowClips, shipped to the tasks)
    out = tmp_path / "f.h5"
    assert _run(["--checkpoint", ckpts["plain"], "--videos", videos, "--out", out, "--runner", "ray",
                 "--batch-size", 3]) == 0
    _assert_close(_store(out), want)


def test_corrupt_video_is_a_failure(ckpts, videos, local, tmp_path, capsys):
    vids = tmp_path / "vids"
    vids.mkdir()
    for p in sorted(videos.glob("*.mp4")):
        (vids / p.name).symlink_to(p.resolve())
    (vids / "garbage.mp4").write_bytes(b"\x00not a video" * 100)
    out = tmp_path / "f.h5"
    assert _run(["--checkpoint", ckpts["plain"], "--videos", vids, "--out", out, "--runner", "ray"]) == 0
    assert "1 failed of 6" in capsys.readouterr().err
    rows = [json.loads(ln) for ln in (tmp_path / "f.failures.jsonl").read_text().splitlines()]
    assert [r["video_id"] for r in rows] == ["garbage"] and "VideoError" in rows[0]["reason"]
    _assert_close(_store(out), local("plain"))
    assert _run(["--checkpoint", ckpts["plain"], "--videos", vids, "--out", tmp_path / "s.h5", "--runner", "ray",
                 "--strict"]) == 1
    assert "garbage.mp4" in capsys.readouterr().err


def test_a_range_that_cannot_be_decoded_becomes_one_failure_row(ckpts, videos, monkeypatch):
    """The decode task (called here in-process): a range whose decode raises an input's error is one failure row
    (position -1, the reason as the failures file words it); the other ranges' clips are the local decode's (the
    same decoding object, whole video)."""
    from locvtp import extract_ray as R
    from locvtp.checkpoint import load_checkpoint
    from locvtp.extract_pipeline import WindowClips, video_header
    from locvtp.predictor import Preprocessing

    dec = WindowClips(Preprocessing.from_config(load_checkpoint(ckpts["plain"]).cfg), chunk=2)
    path = sorted(videos.glob("*.mp4"))[0]
    windows, fps, duration = video_header(dec, path)
    assert windows.shape[0] >= 4
    whole = np.concatenate([c for _, c in WindowClips(dec.prep, chunk=windows.shape[0]).decode(path, windows, [0])])
    real = WindowClips.decode

    def decode(self, p, w, starts):
        starts = list(starts)
        if starts == [2]:
            raise OSError("truncated")
        yield from real(self, p, w, starts)

    monkeypatch.setattr(WindowClips, "decode", decode)
    plan = {"video": np.array([0, 0]), "lo": np.array([0, 2]), "hi": np.array([2, 4]), "duration": np.array([duration]),
            "path": np.array([str(path)])}
    blocks = list(R._decode_batch({"id": np.array([0, 1])}, plan, dec, (OSError, ValueError)))
    rows = {k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]}
    assert rows["index"].tolist() == [0, 0, 0] and rows["pos"].tolist() == [0, 1, -1]
    assert rows["error"].tolist() == ["", "", "OSError: truncated"]
    np.testing.assert_array_equal(rows["clip"][:2], whole[:2])
    assert rows["clip"].shape[1:] == dec.clip_shape and not rows["clip"][2].any()


def test_a_video_decoded_in_one_pass_arrives_in_chunks(videos):
    """A decoding that is not split (a standard protocol's): one work item for the whole video, handed on in
    blocks of ``chunk`` clips whose positions run on; a video that stops short of the clips its work item expects
    ends with one failure row after the clips it gave."""
    from locvtp import extract_ray as R
    from locvtp.extract_pipeline import video_header
    from locvtp.standard_features import RateClips, clip_protocol

    dec = RateClips(clip_protocol(32), chunk=2)
    path = sorted(videos.glob("*.mp4"))[0]
    windows, fps, duration = video_header(dec, path)
    n = windows.shape[0]
    assert n >= 3 and not dec.split
    whole = np.concatenate([c for _, c in dec.decode(path, windows, range(0, n, 2))])
    plan = {"video": np.array([0]), "lo": np.array([0]), "hi": np.array([n]), "duration": np.array([duration]),
            "path": np.array([str(path)])}
    blocks = list(R._decode_batch({"id": np.array([0])}, plan, dec, (OSError, ValueError)))
    assert [b["pos"].tolist() for b in blocks] == [list(range(lo, min(lo + 2, n))) for lo in range(0, n, 2)]
    assert all(e == "" for b in blocks for e in b["error"])
    np.testing.assert_array_equal(np.concatenate([b["clip"] for b in blocks]), whole)
    plan["hi"] = np.array([n + 1])  # the header promised one clip more than the video gives
    blocks = list(R._decode_batch({"id": np.array([0])}, plan, dec, (OSError, ValueError)))
    assert sum(b["pos"].size for b in blocks[:-1]) == n and blocks[-1]["pos"].tolist() == [-1]
    assert blocks[-1]["error"].tolist() == [f"ValueError: decoded {n} clips of the range 0..{n + 1}"]


class _Writer:
    def __init__(self):
        self.added, self.failed = [], []

    def add(self, rec, source=None):
        self.added.append(rec)

    def fail(self, item, reason):
        self.failed.append((item.video_id, reason))


def test_the_driver_assembles_videos_from_rows_in_any_order():
    """The driver's side without Ray: rows of two videos out of order, a failure row of one of them between its
    good rows, a row delivered twice. The failed video is failed once and never written; the other is written
    once, its clips in their places."""
    from locvtp.extract_pipeline import WindowClips, _Writes
    from locvtp.extract_ray import RayPipeline
    from locvtp.extraction import VideoItem
    from locvtp.predictor import Preprocessing

    dec = WindowClips(Preprocessing())
    duration = 4 * dec.prep.clip_seconds
    n = dec.windows(duration).shape[0]
    enc = type("Enc", (), {"finish": lambda self, out, bb: (out, bb)})()
    pipe = RayPipeline(enc, dec, 4, 1, False, False, (OSError,))
    pipe._written = set()
    todo = [VideoItem("a", Path("a.mp4")), VideoItem("b", Path("b.mp4"))]
    plan = {"total": np.array([n, n]), "fps": np.array([25.0, 30.0]), "duration": np.array([duration, duration])}
    feats = np.arange(2 * n * 3, dtype=np.float32).reshape(2, n, 3)

    def block(rows):  # (video, pos, error)
        idx = np.array([r[0] for r in rows])
        pos = np.array([r[1] for r in rows])
        return {"index": idx, "pos": pos, "error": np.array([r[2] for r in rows], dtype=object),
                "out": np.where(pos[:, None] >= 0, feats[idx, np.maximum(pos, 0)], 0)}

    writer, writes, ticks = _Writer(), _Writes(), []
    states, seen, failed = {}, {}, set()
    first = [(1, p, "") for p in range(n - 1, 0, -1)] + [(0, 0, ""), (0, -1, "OSError: truncated")]
    last = [(0, p, "") for p in range(1, n)] + [(1, 0, ""), (1, 1, "")]
    for rows in (first, last, [(1, 0, "")]):
        pipe._take(block(rows), plan, todo, states, seen, failed, writer, writes, ticks.append, lambda: False)
    writes.close()
    assert writer.failed == [("a", "OSError: truncated")]
    assert [r.video_id for r in writer.added] == ["b"] and ticks == [False, True]
    np.testing.assert_array_equal(writer.added[0].features, feats[1])
    np.testing.assert_array_equal(writer.added[0].windows, dec.windows(duration))
    assert (writer.added[0].fps, pipe.extracted, pipe.failed, pipe.clips) == (30.0, 1, 1, n)


@pytest.mark.parametrize("fmt", ["npy-dir", "h5"])
def test_resume_does_only_the_rest(ckpts, videos, local, tmp_path, monkeypatch, capsys, fmt):
    """A run killed after 2 videos were handed to the writer (an exception in it), then a rerun: only the other 3
    are extracted and the store equals an uninterrupted run's. HDF5: the 2 videos were still in the journal's open
    group; the interrupted run committed them (one journal part) before it exited, as a local run does."""
    from locvtp.featurestore import writer as W

    calls = interrupt_writer_after(monkeypatch, fmt, 2)
    out = tmp_path / ("out.h5" if fmt == "h5" else "out")
    args = ["--checkpoint", ckpts["plain"], "--videos", videos, "--out", out, "--format", fmt,
            "--runner", "ray", "--batch-size", 4]
    assert _run(args) == 130
    monkeypatch.undo()
    if fmt == "h5":
        assert W.journal_ids(out) == sorted(calls) and not out.exists()
    else:
        assert sorted(_store(out)) == sorted(calls)
    capsys.readouterr()
    assert _run(args) == 0
    err = capsys.readouterr().err
    assert "extracted 3 videos" in err and "2 already done" in err
    _assert_close(_store(out), local("plain"))
    if fmt == "h5":
        assert W.journal_ids(out) == []  # assembled into the file


def test_command_line_starts_its_own_instance(ckpts, videos, local, tmp_path):
    """`locvtp extract --runner ray` in a fresh process: a local Ray instance of its own (workers importing this
    source tree), the summary line last and none of Ray Data's notes (Ray's C++ core may still log a line of its
    own), the features of the local run."""
    out = tmp_path / "f.h5"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    env.pop("RAY_ADDRESS", None)
    res = subprocess.run([sys.executable, "-m", "locvtp.cli", "extract", "--checkpoint", str(ckpts["plain"]),
                          "--videos", str(videos), "--out", str(out), "--runner", "ray", "--workers", "1",
                          "--no-progress"], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    lines = res.stderr.strip().splitlines()
    assert "Traceback" not in res.stderr and "locvtp extract: warning" not in res.stderr, res.stderr
    assert not [ln for ln in lines if "ray.data" in ln or "WARNING" in ln], res.stderr  # Ray Data's notes: off
    assert lines[-1].startswith(f"extracted 5 videos ({_clips(local('plain'))} clips, ") and lines[-1].endswith(
        f"0 already done, 0 failed of 5 -> {out}"), lines[-1]
    _assert_close(_store(out), local("plain"))


def _clips(store: dict) -> int:
    return sum(v[0].shape[0] for v in store.values())
