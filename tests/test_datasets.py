"""Pre-training datasets: the window rule, feature pooling, the resumable distributed sampler, the MP4 and cache
paths, the collate contract, and bad-sample accounting."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

from locvtp.config import load_config
from locvtp.training.corpus import prepare_corpus
from locvtp.training.records import BadSample, BadSampleError, BadSampleLog, CaptionItem
from locvtp.training.dataset import Collator, PretrainDataset, build_pretrain_data
from locvtp.training.sources import FeatureSource, narration_window, pool_features, split_window, whole_video_window
from locvtp.training.sampler import ResumableBatchSampler
from locvtp.data.tokenizer import train_tokenizer


# ------------------------------------------------------------------------------------------------ window rule
def test_narration_window_is_centred_and_clamped():
    w, m = narration_window(10.0, 12.0, duration=60.0, num_clips=8, clip_seconds=1.0)
    assert m.all() and w.shape == (8, 2)
    assert w[0, 0] == pytest.approx(7.0) and w[-1, 1] == pytest.approx(15.0)  # centre 11 ± 4
    assert np.allclose(np.diff(w, axis=1), 1.0) and np.allclose(w[1:, 0], w[:-1, 1])  # contiguous 1-s clips
    w, m = narration_window(0.5, 1.0, duration=60.0, num_clips=8, clip_seconds=1.0)  # near the start: shifted in
    assert m.all() and w[0, 0] == 0.0 and w[-1, 1] == pytest.approx(8.0)
    w, m = narration_window(58.0, 60.0, duration=60.0, num_clips=8, clip_seconds=1.0)  # near the end
    assert w[-1, 1] == pytest.approx(60.0) and w[0, 0] == pytest.approx(52.0)


def test_short_video_gives_masked_padding():
    w, m = narration_window(0.0, 2.0, duration=3.5, num_clips=8, clip_seconds=1.0)
    assert m.tolist() == [True] * 3 + [False] * 5
    assert w[0, 0] == 0.0 and w[2, 1] == pytest.approx(3.5)  # [0, duration] in floor(3.5) = 3 equal clips
    assert np.all(w[3:] == w[2])  # padding repeats the last clip (masked)
    w, m = whole_video_window(0.4, 8, 1.0)  # shorter than one clip: still one clip
    assert m.sum() == 1 and w[0].tolist() == pytest.approx([0.0, 0.4])


def test_whole_video_window_splits_into_T_equal_clips():
    w, m = whole_video_window(20.0, 8, 1.0)
    assert m.all() and np.allclose(np.diff(w, axis=1), 2.5) and w[0, 0] == 0 and w[-1, 1] == pytest.approx(20.0)


def test_jitter_is_bounded_and_reproducible():
    starts = []
    for seed in range(200):
        w, _ = narration_window(20.0, 22.0, 60.0, 8, 1.0, jitter_seconds=1.5, rng=np.random.default_rng(seed))
        starts.append(w[0, 0])
        again, _ = narration_window(20.0, 22.0, 60.0, 8, 1.0, jitter_seconds=1.5, rng=np.random.default_rng(seed))
        assert np.array_equal(w, again)
    starts = np.array(starts)
    assert starts.min() >= 17.0 - 1.5 - 1e-9 and starts.max() <= 17.0 + 1.5 + 1e-9
    assert starts.std() > 0.5  # it does move


def test_split_window_counts():
    for length, expected in [(8.0, 8), (7.99, 7), (100.0, 8), (1.0, 1), (0.2, 1)]:
        _, m = split_window(0.0, length, 8, 1.0)
        assert m.sum() == expected


# ------------------------------------------------------------------------------------------------ features
def _pool_reference(feats, windows, stride, clip):
    out = []
    for a, b in windows:
        rows = [feats[k] for k in range(len(feats)) if a <= k * stride + clip / 2 < b]
        if not rows:
            mid = (a + b) / 2
            k = int(np.clip(np.rint((mid - clip / 2) / stride), 0, len(feats) - 1))
            rows = [feats[k]]
        out.append(np.mean(rows, axis=0))
    return np.stack(out)


@pytest.mark.parametrize("stride,clip", [(1.0, 1.0), (0.5, 1.0), (2.0, 2.0)])
def test_pool_features_matches_a_loop(stride, clip):
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(23, 5))
    windows = np.array([[0.0, 1.0], [1.0, 2.5], [2.5, 2.6], [7.0, 11.0], [20.0, 40.0]])
    expected = _pool_reference(feats, windows, stride, clip)
    np.testing.assert_allclose(pool_features(feats, windows, stride, clip), expected, rtol=1e-5, atol=1e-6)


def _feature_world(tmp_path, kind):
    """Random per-second features for 3 videos, as HDF5 (with attributes) or a .npy directory."""
    rng = np.random.default_rng(1)
    feats = {f"v{i}": rng.normal(size=(n, 6)).astype(np.float32) for i, n in enumerate([30, 12, 5])}
    if kind == "h5":
        import h5py

        path = tmp_path / "feats.h5"
        with h5py.File(path, "w") as f:
            f.attrs["clip_seconds"] = 1.0
            f.attrs["stride_seconds"] = 1.0
            for v, a in feats.items():
                f.create_dataset(v, data=a)
    else:
        path = tmp_path / "npy"
        path.mkdir()
        for v, a in feats.items():
            np.save(path / f"{v}.npy", a)
    cap = {"v0": {"start": [3.0, 20.0], "end": [5.0, 24.0], "text": ["a red ball moves left", "the box grows"]},
           "v1": {"start": [1.0], "end": [2.0], "text": ["a blue square shrinks"]},
           "v2": {"start": [0.5], "end": [1.5], "text": ["something blinks"]},
           "v9": {"start": [0.0], "end": [1.0], "text": ["no features for me"]}}
    (tmp_path / "caption.json").write_text(json.dumps(cap))
    (tmp_path / "webvid.csv").write_text("videoid,contentUrl,duration,page_dir,name\n"
                                         "v0,x,PT30S,d,a red ball\nv2,x,PT5S,d,the box\nv1,x,PT12S,d\n")
    return path, feats


@pytest.mark.parametrize("kind", ["h5", "npy"])
@pytest.mark.parametrize("captions", ["howto100m", "webvid"])
def test_feature_dataset(tmp_path, kind, captions):
    path, feats = _feature_world(tmp_path, kind)
    cfg = load_config(None, [f"data.root={tmp_path}", "data.kind=features", f"data.features={path}",
                             f"data.captions={captions}",
                             f"data.caption_file={'caption.json' if captions == 'howto100m' else 'webvid.csv'}",
                             "data.num_clips=8", "data.clip_seconds=1.0", "data.jitter_seconds=0"])
    data, _ = _prepared_data(cfg, tmp_path / "run", vocab=100)
    ds = data.dataset
    assert isinstance(ds.source, FeatureSource) and ds.source.stride == 1.0 and ds.source.dim == 6
    if captions == "howto100m":
        assert [b.vid for b in data.bad] == ["v9"] and data.bad[0].kind == "video"  # missing features
        assert data.total == 5 and len(ds) == 4
        s = ds[(0, 0)]  # v0, narration 3-5 s: window [0, 8] (shifted inside the video)
        assert s["clips"].dtype == np.float32 and s["clips"].shape == (8, 6) and s["clip_mask"].all()
        np.testing.assert_allclose(s["clips"], feats["v0"][:8], rtol=1e-6)
        s = ds[(0, 3)]  # v2 has 5 s of features: 5 clips, 3 padded
        assert s["clip_mask"].tolist() == [True] * 5 + [False] * 3
        np.testing.assert_allclose(s["clips"][:5], feats["v2"], rtol=1e-6)
        assert np.all(s["clips"][5:] == 0)
    else:
        assert len(data.bad) == 1 and data.bad[0].kind == "row" and "line 4" in data.bad[0].source
        s = ds[(0, 0)]  # v0 (30 s) split into 8 clips of 3.75 s
        np.testing.assert_allclose(s["clips"][0], feats["v0"][0:4].mean(0), rtol=1e-5)


# ------------------------------------------------------------------------------------------------ sampler
def test_distributed_sampler_global_batches_do_not_depend_on_world_size():
    n, B = 37, 8
    single = list(_take(ResumableBatchSampler(n, B, 0, 1, seed=3), 12))
    for world in (2, 4):
        ranks = [list(_take(ResumableBatchSampler(n, B, r, world, seed=3), 12)) for r in range(world)]
        for j in range(12):
            union = sorted(i for r in range(world) for i in ranks[r][j])
            assert union == sorted(single[j]), (world, j)
            assert all(len(ranks[r][j]) == B // world for r in range(world))
    # each epoch: 4 disjoint batches drawn from a permutation, a new order every epoch
    for e in range(3):
        flat = [i for b in single[4 * e:4 * e + 4] for (_, i) in b]
        assert len(set(flat)) == 32 and all(ep == e for b in single[4 * e:4 * e + 4] for ep, _ in b)
    assert single[0] != [(0, i) for _, i in single[4]]


def test_sampler_resumes_at_any_position():
    full = list(_take(ResumableBatchSampler(50, 6, 1, 2, seed=0), 20))
    for start in (0, 1, 7, 8, 13):
        part = list(_take(ResumableBatchSampler(50, 6, 1, 2, seed=0, start=start), 20 - start))
        assert part == full[start:]


def test_sampler_rejects_bad_sizes():
    with pytest.raises(ValueError, match="divisible"):
        ResumableBatchSampler(100, 7, 0, 2)
    with pytest.raises(ValueError, match="fewer than one batch"):
        ResumableBatchSampler(5, 8)


def _take(it, n):
    for _, x in zip(range(n), it):
        yield x


# ------------------------------------------------------------------------------------------------ pixels
def _num_narrations(world):
    return sum(len(d["text"]) for d in json.loads((world / "pretrain" / "caption.json").read_text()).values())


def _tiny_cfg(world, *extra):
    return load_config(None, [f"data.root={world}", "data.num_clips=8", "data.frames_per_clip=2",
                              "data.frame_size=16", "data.max_words=16", *extra])


def _build(world, run, *extra, strict=False):
    cfg = _tiny_cfg(world, *extra)
    data, tok = _prepared_data(cfg, run, strict=strict, vocab=200)
    return data, tok, cfg


def _prepared_data(cfg, run, strict=False, vocab=200):
    """What `pretrain` builds: the prepared corpus, a tokenizer trained on its captions, the dataset."""
    prepared = prepare_corpus(cfg, words=False, strict=strict, progress=False)
    tok = train_tokenizer(prepared.store.texts(), vocab)
    return build_pretrain_data(cfg, prepared, tok, run, strict=strict, progress=False), tok


def test_cache_and_mp4_decoding_give_the_same_clips(tiny_world, tmp_path):
    cached, tok, _ = _build(tiny_world, tmp_path / "a", "data.cache=true")
    files, _, _ = _build(tiny_world, tmp_path / "b", "data.cache=false")
    store_dir = files.dataset.items.store.directory
    assert cached.dataset.source.directory.parent == store_dir  # no data.cache_dir: in the prepared corpus
    assert not (tmp_path / "a" / "cache").exists()
    assert list(files.dataset.items.store.directory.glob("probe-*.npz"))  # the file path probes via the corpus
    n = _num_narrations(tiny_world)
    assert len(cached.dataset) == len(files.dataset) == n and not cached.bad
    for key in [(0, 0), (0, 5), (3, 11), (1, n - 1)]:  # training mode: jittered windows, frames and crops
        a, b = cached.dataset[key], files.dataset[key]
        assert a["clips"].shape == (8, 2, 16, 16, 3) and a["clips"].dtype == np.uint8
        np.testing.assert_array_equal(a["clips"], b["clips"])
        np.testing.assert_array_equal(a["windows"], b["windows"])
        assert a["clips"].std() > 1  # real pictures, not zeros
    assert not np.array_equal(cached.dataset[(0, 0)]["clips"], cached.dataset[(1, 0)]["clips"])  # epochs differ


def test_collate_contract(tiny_world, tmp_path):
    data, tok, _ = _build(tiny_world, tmp_path, "data.cache=true")
    batch = Collator(tok, 16)([data.dataset[(0, i)] for i in range(5)])
    assert batch["clips"].shape[:2] == (5, 8) and batch["clips"].dtype == torch.uint8
    assert batch["clip_mask"].dtype == torch.bool and batch["clip_mask"].shape == (5, 8)
    L = batch["input_ids"].shape[1]
    assert L <= 16 and batch["attention_mask"].shape == batch["word_mask"].shape == (5, L)
    assert batch["attention_mask"].dtype == batch["word_mask"].dtype == torch.bool
    assert not (batch["word_mask"] & ~batch["attention_mask"]).any()  # words are a subset of real tokens
    assert (batch["attention_mask"].sum(1) - batch["word_mask"].sum(1) == 2).all()  # [CLS] and [SEP]
    assert batch["offsets"].shape == (5, 8) and batch["offsets"].abs().max() <= 2
    assert batch["bad"] == [] and batch["index"].tolist() == [0, 1, 2, 3, 4]


# ------------------------------------------------------------------------------------------------ bad samples
def _corrupt_copy(tiny_world, tmp_path):
    world = tmp_path / "world"
    shutil.copytree(tiny_world, world)
    cap = json.loads((world / "pretrain" / "caption.json").read_text())
    first = sorted(cap)[0]
    (world / "videos" / f"{first}.mp4").write_bytes(b"\x00not an mp4 at all" * 50)  # unreadable
    cap["ghost"] = {"start": [0.0], "end": [1.0], "text": ["a video that does not exist"]}
    cap["broken"] = {"start": [1.0], "end": [2.0]}  # no text list: malformed row
    second = sorted(cap)[1]
    cap[second]["start"].append("soon")  # malformed item
    cap[second]["end"].append(3.0)
    cap[second]["text"].append("bad start time")
    (world / "pretrain" / "caption.json").write_text(json.dumps(cap))
    return world, first, len(json.loads((tiny_world / "pretrain" / "caption.json").read_text())[first]["text"])


@pytest.mark.parametrize("cache", [True, False])
def test_bad_samples_are_skipped_and_reported(tiny_world, tmp_path, cache):
    world, corrupt, n_corrupt = _corrupt_copy(tiny_world, tmp_path)
    data, _, _ = _build(world, tmp_path / "run", f"data.cache={cache}")
    kinds = sorted(b.kind for b in data.bad)
    assert kinds == sorted(["video"] * (n_corrupt + 1) + ["row", "row"])  # corrupt + ghost, broken + "soon"
    assert {b.vid for b in data.bad if b.kind == "video"} == {corrupt, "ghost"}
    n = _num_narrations(tiny_world)
    assert len(data.dataset) == n - n_corrupt and data.total == n + 1 + 2
    assert all(it.vid != corrupt for it in data.dataset.items)
    with pytest.raises(Exception, match="line|key|broken|soon"):
        _build(world, tmp_path / "strict", f"data.cache={cache}", strict=True)


def test_decode_time_failure_is_replaced_and_reported(tiny_world, tmp_path):
    """A video that probes fine but fails to decode: the sample is replaced by the next one and reported."""
    world = tmp_path / "world"  # a private copy: the session's tiny world must stay intact
    shutil.copytree(tiny_world, world)
    data, _, _ = _build(world, tmp_path / "run", "data.cache=false")
    ds = data.dataset
    victim = ds.items[0].vid
    path = ds.source.paths[victim]
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 3])  # truncated after probing
    n_victim = sum(it.vid == victim for it in ds.items)
    s = ds[(0, 0)]
    assert s["index"] == n_victim and s["vid"] != victim  # the first good sample after the victim's ones
    assert len(s["bad"]) == n_victim and all(b.kind == "sample" and b.vid == victim for b in s["bad"])
    ds.strict = True
    with pytest.raises(BadSampleError, match=victim):
        ds[(0, 0)]


def test_bad_sample_log_dedupes_and_survives_reopen(tmp_path):
    log = BadSampleLog(tmp_path / "bad.jsonl")
    a, b = BadSample("row", "f:1", "x"), BadSample("video", "f:2", "y", "v")
    assert log.add([a, b, a]) == [a, b] and log.count == 2
    assert log.add([b]) == []
    again = BadSampleLog(tmp_path / "bad.jsonl")
    assert again.count == 2 and again.add([a]) == []
    lines = [json.loads(x) for x in (tmp_path / "bad.jsonl").read_text().splitlines()]
    assert lines == [{"kind": "row", "source": "f:1", "reason": "x"},
                     {"kind": "video", "source": "f:2", "reason": "y", "vid": "v"}]


def test_dataset_is_deterministic_per_epoch_and_index():
    class Fake:
        kind = "features"
        durations = {"a": 100.0}

        def clips(self, vid, windows, jitter, rng):
            noise = rng.random((len(windows), 3), dtype=np.float32)
            return np.repeat(windows[:, :1].astype(np.float32), 3, axis=1) + noise

    items = [CaptionItem("a", f"t{i}", 10.0 * i, 10.0 * i + 2, "x") for i in range(5)]
    ds = PretrainDataset(items, Fake(), 4, 1.0, jitter_seconds=1.0, seed=7)
    np.testing.assert_array_equal(ds[(2, 3)]["clips"], ds[(2, 3)]["clips"])
    assert not np.array_equal(ds[(2, 3)]["clips"], ds[(1, 3)]["clips"])
    assert math.isclose(ds[3]["windows"][0, 0], ds[(0, 3)]["windows"][0, 0])


def test_loader_workers_do_not_change_the_batches(tiny_world, tmp_path):
    """0 or 2 loader workers: identical batches (each sample's randomness comes from (seed, epoch, index))."""
    data, tok, _ = _build(tiny_world, tmp_path, "data.cache=true")

    def first_batches(workers):
        sampler = ResumableBatchSampler(len(data.dataset), 4, seed=5, start=2)
        loader = torch.utils.data.DataLoader(data.dataset, batch_sampler=sampler, collate_fn=Collator(tok, 16),
                                             num_workers=workers)
        it = iter(loader)
        out = [next(it) for _ in range(3)]
        del it
        return out

    for a, b in zip(first_batches(0), first_batches(2)):
        for key in ("clips", "clip_mask", "input_ids", "word_mask", "offsets", "index"):
            assert torch.equal(a[key], b[key]), key


def test_webvid_captions_use_the_whole_video(tiny_world, tmp_path):
    data, _, _ = _build(tiny_world, tmp_path, "data.cache=true", "data.captions=webvid",
                        "data.caption_file=pretrain/webvid.csv")
    ds = data.dataset
    assert len(ds) > 0 and not data.bad and all(math.isinf(it.end) for it in ds.items)
    for i in range(len(ds)):
        s = ds[(0, i)]
        duration = ds.source.durations[s["vid"]]
        n = int(s["clip_mask"].sum())
        assert n == min(8, int(duration + 1e-6))  # 1-s clips: floor(duration) of them, the rest padded
        assert s["windows"][0, 0] == 0 and s["windows"][n - 1, 1] == pytest.approx(duration, abs=1e-4)
        assert np.all(s["clips"][n:] == 0)


def test_frame_cache_handles_non_square_videos(tmp_path):
    """Real videos are 16:9: the cache keeps each video's own h x w (short side = size), like file decoding."""
    import av

    from locvtp.training.sources import FrameCache, VideoFileSource
    from locvtp.data.video import probe_video

    paths = {}
    rng = np.random.default_rng(0)
    for vid, (w, h) in {"wide": (48, 32), "tall": (32, 64)}.items():
        path = tmp_path / f"{vid}.mp4"
        with av.open(str(path), "w") as out:
            stream = out.add_stream("libx264", rate=8)
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            stream.options = {"crf": "0"}
            for k in range(24):
                img = np.zeros((h, w, 3), np.uint8)
                img[:, : w // 2] = rng.integers(0, 255, 3)  # left half changes colour every frame
                img[:, w // 2:, 1] = (10 * k) % 255
                for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
        paths[vid] = path
    cache, bad = FrameCache.build(tmp_path / "cache", paths, frames_per_clip=2, size=16, progress=False)
    assert not bad
    files = VideoFileSource(paths, {v: probe_video(p) for v, p in paths.items()}, frames_per_clip=2, size=16)
    frames, _ = cache.frames("wide")
    assert frames.shape[1:] == (16, 24, 3)  # aspect ratio kept, not squashed into size x size
    assert cache.frames("tall")[0].shape[1:] == (32, 16, 3)
    windows = np.array([[0.0, 1.0], [1.0, 2.0], [2.0, 3.0]])
    for vid in paths:
        for jitter in (False, True):
            a = cache.clips(vid, windows, jitter, np.random.default_rng(7))
            b = files.clips(vid, windows, jitter, np.random.default_rng(7))
            assert a.shape == (3, 2, 16, 16, 3)
            np.testing.assert_array_equal(a, b)


def test_grouped_sampler_keeps_videos_together_and_is_a_permutation():
    # 13 videos with 1..6 samples each, interleaved in the item list
    videos = [f"v{k}" for k in range(13) for _ in range(1 + k % 6)]
    rng = np.random.default_rng(0)
    videos = [videos[i] for i in rng.permutation(len(videos))]
    n, B, k = len(videos), 8, 3
    single = list(_take(ResumableBatchSampler(n, B, 0, 1, seed=5, groups=videos, group_size=k), 2 * (n // B)))
    per_epoch = n // B
    order = ResumableBatchSampler(n, B, 0, 1, seed=5, groups=videos, group_size=k).grouped_order(0)
    assert sorted(order) == list(range(n))  # every sample exactly once per epoch
    # runs: consecutive samples of one video, at most k long, and every video's samples form ceil(c/k) runs
    runs, cur = [], [order[0]]
    for i in order[1:]:
        if videos[i] == videos[cur[-1]] and len(cur) < k:
            cur.append(i)
        else:
            runs.append(cur)
            cur = [i]
    runs.append(cur)
    counts = {v: videos.count(v) for v in set(videos)}
    assert len(runs) >= sum(-(-c // k) for c in counts.values())
    assert all(len(r) <= k for r in runs)
    # batches hold more same-video pairs than a plain shuffle would
    def pairs(batches):
        return sum(len(b) - len({videos[i] for _, i in b}) for b in batches)
    plain = list(_take(ResumableBatchSampler(n, B, 0, 1, seed=5), per_epoch))
    assert pairs(single[:per_epoch]) > pairs(plain)
    # new order each epoch, same rank-independence of global batches as the plain sampler
    assert single[0] != [(0, i) for _, i in single[per_epoch]]
    ranks = [list(_take(ResumableBatchSampler(n, B, r, 2, seed=5, groups=videos, group_size=k), 2 * per_epoch))
             for r in range(2)]
    for j in range(2 * per_epoch):
        assert sorted(i for r in range(2) for _, i in ranks[r][j]) == sorted(i for _, i in single[j])
    # resume
    part = list(_take(ResumableBatchSampler(n, B, 0, 1, seed=5, groups=videos, group_size=k, start=3), 5))
    assert part == single[3:8]


def test_grouped_sampler_rejects_bad_arguments():
    with pytest.raises(ValueError, match="group_size"):
        ResumableBatchSampler(20, 4, group_size=0)
    with pytest.raises(ValueError, match="video of every sample"):
        ResumableBatchSampler(20, 4, groups=["a"] * 19, group_size=2)


def test_checks_in_small_chunks_give_the_same_dataset(tmp_path, monkeypatch):
    """The up-front checks run over the corpus in chunks; chunk edges change nothing (bad records, order)."""
    from locvtp.training import dataset as datasets

    path, _ = _feature_world(tmp_path, "npy")
    cfg = load_config(None, [f"data.root={tmp_path}", "data.kind=features", f"data.features={path}",
                             "data.caption_file=caption.json", "data.num_clips=8", "data.clip_seconds=1.0",
                             "data.jitter_seconds=0"])
    whole, _ = _prepared_data(cfg, tmp_path / "run_a", vocab=100)
    monkeypatch.setattr(datasets, "_CHECK_CHUNK", 2)
    chunked, _ = _prepared_data(cfg, tmp_path / "run_b", vocab=100)
    assert [b.to_json() for b in chunked.bad] == [b.to_json() for b in whole.bad] and whole.bad
    assert chunked.dataset.items.indices.tolist() == whole.dataset.items.indices.tolist()


def test_feature_width_and_missing_path_are_named_up_front(tmp_path):
    from locvtp.config import ConfigError

    path, _ = _feature_world(tmp_path, "npy")
    base = [f"data.root={tmp_path}", "data.kind=features", "data.caption_file=caption.json",
            "model.video.name=features"]
    cfg = load_config(None, [*base, f"data.features={path}", "model.video.in_dim=64"])
    with pytest.raises(ConfigError, match=r"data.features: .* holds 6-d features but model.video.in_dim=64"):
        _prepared_data(cfg, tmp_path / "run", vocab=100)
    cfg = load_config(None, [*base, "data.features=nowhere"])
    with pytest.raises(FileNotFoundError, match=r"resolved under data.root.*nowhere"):
        _prepared_data(cfg, tmp_path / "run2", vocab=100)


def test_prepared_path_equals_the_in_memory_rules(tiny_world, tmp_path):
    """The prepared corpus + array checks give exactly the samples and bad records the in-memory path gave:
    reference = the readers' records filtered by a plain loop over the three rules, in order."""
    import shutil

    from locvtp.training.corpus import texts_with_words
    from locvtp.training.dataset import load_caption_items

    world = tmp_path / "w"
    shutil.copytree(tiny_world / "pretrain", world / "pretrain")
    (world / "videos").symlink_to(tiny_world / "videos")
    cap = json.loads((world / "pretrain" / "caption.json").read_text())
    vid0 = sorted(cap)[0]
    for start, end, text in ((9999.0, 10000.0, "too late"), (0.5, 1.5, "\u200b\u200b")):  # after the end; no words
        cap[vid0]["start"].append(start)
        cap[vid0]["end"].append(end)
        cap[vid0]["text"].append(text)
    cap["no_such_video"] = {"start": [0.0], "end": [1.0], "text": ["a red box"]}
    cap["broken"] = {"start": [0.0], "end": [1.0]}  # a malformed member: the reader's own record
    (world / "pretrain" / "caption.json").write_text(json.dumps(cap))
    cfg = _tiny_cfg(world, "data.cache=false")
    data, tok = _prepared_data(cfg, tmp_path / "run", vocab=200)

    items, bad_rows = load_caption_items(cfg.data)
    ok = texts_with_words(tok, [it.text for it in items], int(cfg.data.max_words))
    durations = data.dataset.source.durations
    ref_good, ref_bad = [], [(b.kind, b.source, b.vid, b.reason) for b in bad_rows]
    for it, has_words in zip(items, ok):
        if it.vid not in durations:
            ref_bad.append(("video", it.source, it.vid, None))  # the probe's reason, checked below
        elif not has_words:
            ref_bad.append(("row", it.source, it.vid, f"caption has no word tokens: {it.text!r:.80}"))
        elif it.start >= durations[it.vid]:
            ref_bad.append(("row", it.source, it.vid, f"narration [{it.start:.2f}, {it.end:.2f}] s starts after the "
                                                      f"end of the video ({durations[it.vid]:.2f} s)"))
        else:
            ref_good.append(it)
    assert [data.dataset.items[i] for i in range(len(data.dataset))] == ref_good
    assert len(ref_good) == _num_narrations(tiny_world) and len(ref_bad) == 4
    got = [(b.kind, b.source, b.vid, b.reason) for b in data.bad]
    assert [g[:3] for g in got] == [r[:3] for r in ref_bad]
    assert [g[3] for g, r in zip(got, ref_bad) if r[3] is not None] == [r[3] for r in ref_bad if r[3] is not None]
    assert "no_such_video" in next(g[3] for g in got if g[0] == "video")
    assert data.total == len(items) + len(bad_rows)
