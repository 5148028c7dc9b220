"""`locvtp extract`'s pipeline (decode workers, batches across videos, clip ranges), `--shard I/N` and `merge`
of every format, and a run interrupted then resumed: all against the per-video path it replaced."""
from __future__ import annotations

import json

import numpy as np
import pytest

from inference_helpers import clip_args, interrupt_writer_after, linked_videos, make_checkpoint


@pytest.fixture(scope="module")
def ckpts(tiny_world, tmp_path_factory):
    d = tmp_path_factory.mktemp("pipe")
    return {"plain": make_checkpoint(tiny_world, d / "plain"),
            "temporal": make_checkpoint(tiny_world, d / "temporal", temporal_layers=1)}


@pytest.fixture(scope="module")
def videos(tiny_world, tmp_path_factory):
    """12 of the world's videos (symlinks): several batches' worth of clips from many videos."""
    return linked_videos(tiny_world, tmp_path_factory.mktemp("pvids"), every=3, count=12)


def _run(args: list) -> int:
    from locvtp.cli import main

    return main(["extract", *map(str, args), "--no-progress"])


def _reference(ckpt, videos, backbone: bool = False) -> dict:
    """The per-video path of the serial extraction (decode one video, encode it alone), what the pipeline replaced."""
    from locvtp.checkpoint import load_checkpoint
    from locvtp.inference import decode_video_clips, encode_clip_sequence

    ck = load_checkpoint(ckpt)
    a = clip_args(ck)
    out = {}
    for p in sorted(videos.glob("*.mp4")):
        dec = decode_video_clips(p, a["clip_seconds"], a["stride_seconds"], a["frames_per_clip"], a["frame_size"])
        emb, bb = encode_clip_sequence(ck.model, dec.clips, batch_clips=64, backbone=backbone)
        out[p.stem] = (bb if backbone else emb, dec.windows, dec.fps, dec.duration)
    return out


def _store(path) -> dict:
    from locvtp.featurestore.reader import iter_features

    return {r.video_id: (r.features, r.windows, r.fps, r.duration) for r in iter_features(path)}


def _assert_close(got: dict, want: dict, rtol: float = 1e-5) -> None:
    assert sorted(got) == sorted(want)
    for vid in want:
        np.testing.assert_allclose(got[vid][0], want[vid][0], rtol=rtol, atol=rtol * 0.1, err_msg=vid)
        np.testing.assert_array_equal(got[vid][1], want[vid][1])
        assert got[vid][2:] == pytest.approx(want[vid][2:])


@pytest.mark.parametrize("kind,workers,batch,backbone", [
    ("plain", 2, 7, False),  # batches cut across videos, two decoding processes
    ("plain", 0, 64, True),  # decoding in this process; backbone features
    ("temporal", 1, 5, False),  # a transformer across clips: finished per video after its batches
])
def test_pipeline_equals_the_per_video_path(ckpts, videos, tmp_path, kind, workers, batch, backbone):
    out = tmp_path / "f.h5"
    args = ["--checkpoint", ckpts[kind], "--videos", videos, "--out", out, "--workers", workers, "--batch-size", batch]
    assert _run(args + (["--backbone"] if backbone else [])) == 0
    _assert_close(_store(out), _reference(ckpts[kind], videos, backbone))


def test_long_videos_are_cut_into_clip_ranges(ckpts, videos, tmp_path, monkeypatch):
    """Clip ranges of 3 clips (a tiny CHUNK_BYTES): frames identical to one decode of the whole video, the features
    equal to the per-video path, whichever worker decodes which range."""
    from locvtp import extract_pipeline as P
    from locvtp.checkpoint import load_checkpoint
    from locvtp.extraction import VideoItem
    from locvtp.inference import decode_video_clips
    from locvtp.predictor import Preprocessing

    ck = load_checkpoint(ckpts["plain"])
    prep = Preprocessing.from_config(ck.cfg)
    per_clip = prep.frames_per_clip * prep.frame_size ** 2 * 3
    monkeypatch.setattr(P, "CHUNK_BYTES", 3 * per_clip)
    assert P.chunk_clips(prep.frames_per_clip, prep.frame_size) == 3
    path = sorted(videos.glob("*.mp4"))[0]
    recs = list(P.ClipChunks([VideoItem(path.stem, path)], P.WindowClips(prep), (OSError, ValueError)))
    whole = decode_video_clips(path, prep.clip_seconds, prep.stride_seconds, prep.frames_per_clip, prep.frame_size)
    assert len(recs) == -(-whole.clips.shape[0] // 3) > 1
    assert [r["start"] for r in recs] == list(range(0, whole.clips.shape[0], 3))
    np.testing.assert_array_equal(np.concatenate([r["clips"] for r in recs]), whole.clips)
    out = tmp_path / "f.h5"
    assert _run(["--checkpoint", ckpts["plain"], "--videos", videos, "--out", out, "--workers", 2,
                 "--batch-size", 4]) == 0
    _assert_close(_store(out), _reference(ckpts["plain"], videos))


def test_corrupt_videos_in_workers_are_listed(ckpts, videos, tmp_path, capsys):
    vids = tmp_path / "vids"
    vids.mkdir()
    for p in sorted(videos.glob("*.mp4"))[:4]:
        (vids / p.name).symlink_to(p.resolve())
    (vids / "garbage.mp4").write_bytes(b"\x00not a video" * 100)
    out = tmp_path / "f.h5"
    assert _run(["--checkpoint", ckpts["plain"], "--videos", vids, "--out", out, "--workers", 2]) == 0
    assert "1 failed of 5" in capsys.readouterr().err
    rows = [json.loads(ln) for ln in (tmp_path / "f.failures.jsonl").read_text().splitlines()]
    assert [r["video_id"] for r in rows] == ["garbage"] and "VideoError" in rows[0]["reason"]
    assert sorted(_store(out)) == sorted(p.stem for p in vids.glob("*.mp4") if p.stem != "garbage")
    assert _run(["--checkpoint", ckpts["plain"], "--videos", vids, "--out", tmp_path / "s.h5", "--workers", 2,
                 "--strict"]) == 1


@pytest.mark.parametrize("fmt", ["h5", "npy-dir"])
def test_interrupted_then_resumed_equals_one_run(ckpts, videos, tmp_path, monkeypatch, capsys, fmt):
    """An exception after 5 videos were written (a crash between two videos), then a plain rerun: the store
    equals an uninterrupted run's (up to float rounding: the resumed run batches other clips together)."""
    from locvtp.featurestore import writer as W

    ref = tmp_path / ("ref.h5" if fmt == "h5" else "ref")
    assert _run(["--checkpoint", ckpts["plain"], "--videos", videos, "--out", ref, "--format", fmt]) == 0
    calls = interrupt_writer_after(monkeypatch, fmt, 5)
    out = tmp_path / ("out.h5" if fmt == "h5" else "out")
    assert _run(["--checkpoint", ckpts["plain"], "--videos", videos, "--out", out, "--format", fmt, "--workers", 2,
                 "--batch-size", 8]) == 130  # `locvtp extract: interrupted`
    monkeypatch.undo()
    assert len(calls) == 5 and "interrupted" in capsys.readouterr().err
    assert len(_store(out) if fmt != "h5" else W.journal_ids(tmp_path / "out.h5")) == 5
    assert _run(["--checkpoint", ckpts["plain"], "--videos", videos, "--out", out, "--format", fmt]) == 0
    _assert_close(_store(out), _store(ref))


@pytest.mark.parametrize("fmt", ["h5", "npy-dir", "npz-dir"])
def test_shards_partition_by_id_and_merge(ckpts, videos, tmp_path, capsys, fmt):
    from locvtp.commands.extract import merge_main
    from locvtp.extraction import shard_of

    ref = tmp_path / ("ref.h5" if fmt == "h5" else "ref")
    assert _run(["--checkpoint", ckpts["plain"], "--videos", videos, "--out", ref, "--format", fmt]) == 0
    out = tmp_path / ("f.h5" if fmt == "h5" else "f")
    for i in range(3):
        assert _run(["--checkpoint", ckpts["plain"], "--videos", videos, "--out", out, "--format", fmt,
                     "--shard", f"{i}/3"]) == 0
    names = [f"f.shard{i}-of-3" + (".h5" if fmt == "h5" else "") for i in range(3)]
    assert sorted(q.name for q in tmp_path.glob("f.shard*")) == names
    ids = sorted(p.stem for p in videos.glob("*.mp4"))
    for i, name in enumerate(names):  # each shard holds exactly its ids (a hash of the id, not the list order)
        assert sorted(_store(tmp_path / name)) == [v for v in ids if shard_of(v, 3) == i]
    pattern = str(tmp_path / ("f.shard*-of-3.h5" if fmt == "h5" else "f.shard*-of-3"))
    assert merge_main([pattern, "--out", str(out), "--no-progress"]) == 0
    assert "merged 3 shards: 12 videos" in capsys.readouterr().err
    got, want = _store(out), _store(ref)
    assert sorted(got) == sorted(want)
    for vid in want:  # the same batches as the single run? no: other videos share them; rounding only
        np.testing.assert_allclose(got[vid][0], want[vid][0], rtol=1e-5, atol=1e-6)
    if fmt != "h5":  # a directory merge is an extraction's directory: its manifest, refused unless --overwrite
        from locvtp.cli import main
        from locvtp.files import read_manifest

        m = read_manifest(out)
        assert m is not None and {f"{v}{'.npy' if fmt == 'npy-dir' else '.npz'}" for v in ids} <= m.files
        assert main(["merge", pattern, "--out", str(out), "--no-progress"]) == 2
        assert "--overwrite" in capsys.readouterr().err
        assert main(["merge", pattern, "--out", str(out), "--no-progress", "--overwrite"]) == 0
        assert sorted(_store(out)) == ids

def test_shard_ids_are_stable():
    """The partition must not depend on the process (Python's str hash is salted per process)."""
    from locvtp.extraction import shard_of

    assert [shard_of(v, 8) for v in ("a", "video_0001", "été")] == [
        int.from_bytes(__import__("hashlib").sha1(v.encode()).digest()[:8], "big") % 8 for v in ("a", "video_0001", "été")]
    counts = np.bincount([shard_of(f"v{i:05d}", 8) for i in range(8000)], minlength=8)
    assert counts.min() > 850 and counts.max() < 1150  # balanced


def test_decode_workers_are_not_forked_from_the_extraction():
    """A forked worker inherits the output lock's descriptor: after a SIGKILL of `extract` its orphaned workers
    kept the output locked and the resuming run was refused (tests/test_extract.py's SIGKILL test, 2 runs in 3)."""
    from locvtp.extract_pipeline import ClipChunks, chunk_loader

    loader = chunk_loader(ClipChunks([], None, (ValueError,)), 2, False)
    assert loader.multiprocessing_context.get_start_method() in ("forkserver", "spawn")
    assert chunk_loader(ClipChunks([], None, (ValueError,)), 0, False).num_workers == 0
