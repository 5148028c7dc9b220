"""The frame cache (locvtp.training.framecache): built by `locvtp prepare` with worker processes and shards,
resumable, equal to decoding every video with the plain decoder; pre-training on a prepared cache decodes nothing,
and without one every rank decodes its own share."""
from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from cli_helpers import assert_one_line_error, run_cli
from locvtp.training.framecache import FrameCache

SIZE = 16


def _paths(world: Path) -> dict[str, Path]:
    """The pre-training videos (the ones caption.json names)."""
    vids = json.loads((world / "pretrain" / "caption.json").read_text())
    return {v: world / "videos" / f"{v}.mp4" for v in sorted(vids)}


def _files(d: Path) -> dict[str, bytes]:
    """Every file of a complete cache that a reader reads, by relative path."""
    names = ["index.json", "times.npy", *(p for p, _ in json.loads((d / "index.json").read_text())["pieces"])]
    return {n: (d / n).read_bytes() for n in names}


def _assert_equals_plain_decoding(cache: FrameCache, paths: dict[str, Path]) -> None:
    """Reference: every video decoded on its own by the decoder the old single-process build called."""
    from locvtp.data.video import decode_frames, probe_video

    assert sorted(cache.index) == sorted(paths)
    for vid, path in paths.items():
        frames, times = decode_frames(path, size=SIZE)
        got_frames, got_times = cache.frames(vid)
        np.testing.assert_array_equal(got_frames, frames)
        np.testing.assert_array_equal(got_times, times)
        assert cache.durations[vid] == pytest.approx(probe_video(path).duration)


def _prepare(world, tmp_path, *extra, cache_dir=None):
    return ["prepare", "--config", "pretrain_synthetic", f"data.root={world}",
            f"data.prepared_dir={tmp_path / 'prep'}", f"data.cache_dir={cache_dir or tmp_path / 'frames'}",
            f"data.frame_size={SIZE}", "data.frames_per_clip=2", "--no-progress", *extra]


def _the_cache(cache_dir: Path) -> Path:
    (d,) = [p for p in cache_dir.glob("frames_*") if (p / "index.json").is_file()]
    return d


def test_prepare_with_two_workers_equals_plain_decoding(tiny_world, tmp_path, capsys):
    res = run_cli(_prepare(tiny_world, tmp_path, "--workers", "2"), capsys)
    assert res.code == 0, res.err
    assert "frame cache of 6 videos (0 unreadable)" in res.err and "warning" not in res.err
    d = _the_cache(tmp_path / "frames")
    meta = json.loads((d / "index.json").read_text())
    assert meta["format"] == 3 and len(meta["pieces"]) == 6 and not meta["bad"]  # one chunk per video: 6 tasks
    _assert_equals_plain_decoding(FrameCache(d, 2, SIZE), _paths(tiny_world))
    again = run_cli(_prepare(tiny_world, tmp_path), capsys)  # complete: reused as it is
    assert again.code == 0 and _files(d) == _files(_the_cache(tmp_path / "frames"))


def test_earlier_single_file_caches_are_still_read(tiny_world, tmp_path):
    """Format 2 (one frames.u8, written by rank 0 alone before): found under its own key and read unchanged."""
    paths = _paths(tiny_world)
    new, _ = FrameCache.build(tmp_path / "new", paths, 2, SIZE, progress=False)
    old = tmp_path / "run" / "cache" / f"frames_{SIZE}px_{FrameCache.key(paths, SIZE, layout=2)}"
    old.mkdir(parents=True)
    index, offset, first = {}, 0, 0
    with open(old / "frames.u8", "wb") as fh:
        for vid in sorted(paths):
            frames, _ = new.frames(vid)
            fh.write(np.ascontiguousarray(frames).tobytes())
            n, h, w = frames.shape[:3]
            index[vid] = [offset, first, n, new.durations[vid], h, w]
            offset, first = offset + frames.nbytes, first + n
    np.save(old / "times.npy", np.load(new.directory / "times.npy"))
    (old / "index.json").write_text(json.dumps({"size": SIZE, "total_frames": first, "total_bytes": offset,
                                                "videos": index, "bad": []}))
    found = FrameCache.find([tmp_path / "elsewhere", tmp_path / "run" / "cache"], paths, 2, SIZE)
    assert found is not None and found.directory == old and found.pieces == [["frames.u8", offset]]
    _assert_equals_plain_decoding(found, paths)


def test_shards_together_give_the_same_cache(tiny_world, tmp_path, capsys):
    paths = _paths(tiny_world)
    one, _ = FrameCache.build(tmp_path / "one", paths, 2, SIZE, progress=False)
    first = run_cli(_prepare(tiny_world, tmp_path, "--shard", "0/2"), capsys)
    assert first.code == 0 and "shard 0/2 done" in first.err and "frame cache" not in first.err
    (work,) = (tmp_path / "frames").glob("frames_*")
    assert not (work / "index.json").exists()  # not complete while a share is missing
    assert sorted(p.name for p in (work / "videos.parts").iterdir()) == ["0000000.npz", "0000002.npz", "0000004.npz"]
    second = run_cli(_prepare(tiny_world, tmp_path, "--shard", "1/2"), capsys)  # the last share assembles
    assert second.code == 0 and "frame cache of 6 videos" in second.err
    assert _files(_the_cache(tmp_path / "frames")) == _files(one.directory)


def test_ranks_decode_their_shares_at_once_and_wait_for_each_other(tiny_world, tmp_path, monkeypatch):
    """What every pretrain rank does (share = rank/world, wait): each decodes only its own videos, none returns
    before every share is there, and all get the cache one process would build."""
    import locvtp.data.video as video

    paths = _paths(tiny_world)
    one, _ = FrameCache.build(tmp_path / "one", paths, 2, SIZE, progress=False)
    decoded: dict[int, list[str]] = {0: [], 1: []}
    real = video.decode_frames

    def counting(path, size=None):
        decoded[int(threading.current_thread().name)].append(Path(path).stem)
        return real(path, size=size)

    monkeypatch.setattr(video, "decode_frames", counting)
    out: dict[int, FrameCache] = {}

    def rank(r):
        out[r] = FrameCache.build(tmp_path / "shared", paths, 2, SIZE, progress=False, share=(r, 2))[0]

    threads = [threading.Thread(target=rank, args=(r,), name=str(r)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    vids = sorted(paths)
    assert decoded == {0: vids[0::2], 1: vids[1::2]}  # each video decoded once, by its own rank
    assert out[0].directory == out[1].directory and _files(out[0].directory) == _files(one.directory)


class _Killed(BaseException):
    """Stands for SIGKILL: not an Exception, so no per-video handler catches it."""


def test_killed_build_resumes_to_the_uninterrupted_cache(tiny_world, tmp_path, monkeypatch):
    import locvtp.data.video as video

    paths = _paths(tiny_world)
    one, _ = FrameCache.build(tmp_path / "one", paths, 2, SIZE, progress=False, chunk=2)
    real, calls = video.decode_frames, []

    def dies_at_the_fourth(path, size=None):
        calls.append(Path(path).stem)
        if len(calls) == 4:  # mid-chunk: chunk 0 (2 videos) is done, chunk 1 half decoded
            raise _Killed()
        return real(path, size=size)

    monkeypatch.setattr(video, "decode_frames", dies_at_the_fourth)
    with pytest.raises(_Killed):
        FrameCache.build(tmp_path / "c", paths, 2, SIZE, progress=False, chunk=2)
    (work,) = (tmp_path / "c").glob("frames_*")
    assert not (work / "index.json").exists() and FrameCache.find([tmp_path / "c"], paths, 2, SIZE) is None
    assert sorted(p.name for p in (work / "videos.parts").iterdir()) == ["0000000.npz"]
    assert sorted(p.name for p in (work / "pieces").iterdir()) == ["0000000.u8"]  # the half piece is gone
    calls.clear()
    monkeypatch.setattr(video, "decode_frames", lambda path, size=None: (calls.append(Path(path).stem),
                                                                         real(path, size=size))[1])
    resumed, _ = FrameCache.build(tmp_path / "c", paths, 2, SIZE, progress=False, chunk=2)
    assert calls == sorted(paths)[2:]  # only what the killed run had not finished
    assert _files(resumed.directory) == _files(one.directory)


def _corrupt_world(tiny_world, tmp_path) -> tuple[Path, str]:
    world = tmp_path / "world"
    shutil.copytree(tiny_world, world)
    victim = sorted(_paths(world))[1]
    (world / "videos" / f"{victim}.mp4").write_bytes(b"\x00not an mp4 at all" * 50)
    return world, victim


def test_a_corrupt_video_is_listed_and_skipped(tiny_world, tmp_path, capsys):
    world, victim = _corrupt_world(tiny_world, tmp_path)
    res = run_cli(_prepare(world, tmp_path, "--workers", "2"), capsys)
    assert res.code == 0 and "frame cache of 5 videos (1 unreadable)" in res.err
    warnings = [ln for ln in res.err.splitlines() if "warning" in ln]
    assert len(warnings) == 1 and warnings[0].startswith("locvtp prepare: warning: unreadable video skipped: ")
    assert f"{victim}.mp4" in warnings[0]
    cache = FrameCache(_the_cache(tmp_path / "frames"), 2, SIZE)
    assert victim not in cache.index and [b.vid for b in cache.bad] == [victim]
    good = {v: p for v, p in _paths(world).items() if v != victim}
    _assert_equals_plain_decoding(cache, good)
    strict = run_cli(_prepare(world, tmp_path / "s", "--strict"), capsys)  # decoding from scratch: first bad fails
    assert_one_line_error(strict, 1, f"{victim}.mp4", "unreadable video", "--strict")
    again = run_cli(_prepare(world, tmp_path, "--strict"), capsys)  # the lenient cache exists: still refused
    assert_one_line_error(again, 1, f"{victim}.mp4", "--strict")


_TINY = ["train.batch_size=4", "train.warmup_steps=1", "train.log_every=1", "data.num_workers=0",
         "data.frames_per_clip=2", f"data.frame_size={SIZE}", "data.max_words=16", "data.vocab_size=200",
         "model.dim=32", "model.text.width=32", "model.text.layers=1", "model.video.width=8",
         "model.video.temporal_layers=0", "train.num_threads=1", "train.val_every=0", "train.max_steps=1", "--quiet"]


def test_pretrain_on_a_prepared_cache_decodes_nothing(tiny_world, tmp_path, capsys, monkeypatch):
    import locvtp.data.video as video

    prep = ["prepare", "--config", "pretrain_synthetic", f"data.root={tiny_world}",
            f"data.prepared_dir={tmp_path / 'prep'}", f"data.frame_size={SIZE}", "data.vocab_size=200",
            "data.max_words=16", "--no-progress"]
    assert run_cli(prep, capsys).code == 0  # no data.cache_dir: the cache lives in the prepared corpus
    (corpus,) = (tmp_path / "prep").glob("captions-*")
    d = _the_cache(corpus)

    def refuse(*a, **k):
        raise AssertionError("a video was decoded at start-up")

    for name in ("decode_frames", "decode_windows", "probe_video"):
        monkeypatch.setattr(video, name, refuse)
    res = run_cli(["pretrain", "--config", "pretrain_synthetic", "--out", tmp_path / "run", f"data.root={tiny_world}",
                   f"data.prepared_dir={tmp_path / 'prep'}", *_TINY], capsys)
    assert res.code == 0, res.err
    assert json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])["step"] == 1
    assert not (tmp_path / "run" / "cache").exists() and _the_cache(corpus) == d  # used where prepare put it
