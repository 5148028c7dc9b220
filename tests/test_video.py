"""Video I/O: probing, decoding, clip sampling and bad inputs, on MP4s made here with PyAV.

Every test video encodes the frame index as 8 black/white vertical stripes (bit b of the index = stripe b)
in its top half, so a decoded frame tells which frame it is despite lossy compression; the bottom half
holds a square moving right (to catch flips). Expected frames come from a plain-loop reference of the
sampling rule in the module docstring.
"""
from __future__ import annotations

import math
import pickle

import av
import numpy as np
import pytest

from locvtp.data.video import (
    VideoError,
    VideoInfo,
    clip_windows,
    decode_clips,
    decode_frames,
    decode_windows,
    probe_video,
    sample_clips,
    sliding_windows,
)

FPS = 8
N_FRAMES = 80  # 10 s
BITS = 8


def _frame_image(i: int, width: int, height: int) -> np.ndarray:
    img = np.zeros((height, width, 3), np.uint8)
    sw = width // BITS
    for b in range(BITS):
        if (i >> b) & 1:
            img[: height // 2, b * sw:(b + 1) * sw] = 255
    x = (i * 2) % (width - 6)  # moving square, 6 px, bottom half
    img[height // 2 + 4: height // 2 + 10, x:x + 6] = (255, 64, 0)
    return img


def _write(path, codec="libx264", n=N_FRAMES, width=32, height=32, fps=FPS, gop=10, faststart=False):
    opts = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=opts) as c:
        s = c.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        s.codec_context.gop_size = gop  # several key frames, so seeking really happens
        if codec == "libx264":
            s.options = {"crf": "10"}
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(_frame_image(i, width, height), format="rgb24")
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def _read_index(img: np.ndarray) -> int:
    """Frame index from the stripes of a decoded (possibly resized, uncropped) frame."""
    h, w = img.shape[:2]
    sw = w / BITS
    idx = 0
    for b in range(BITS):
        x0, x1 = int(round(b * sw + sw * 0.3)), int(round((b + 1) * sw - sw * 0.3))
        x1 = max(x1, x0 + 1)
        if img[1: h // 2 - 1, x0:x1].mean() > 128:
            idx |= 1 << b
    return idx


def _indices(clips: np.ndarray) -> np.ndarray:
    T, F = clips.shape[:2]
    return np.array([[_read_index(clips[t, f]) for f in range(F)] for t in range(T)])


def _reference_indices(windows, F, fps, n_frames, positions=None):
    """Plain loop: frame shown at the centre (or given position) of each of F equal segments."""
    out = []
    for t, (a, b) in enumerate(windows):
        row = []
        for f in range(F):
            pos = 0.5 if positions is None else positions[t][f]
            target = a + (f + pos) * (b - a) / F
            row.append(min(max(int(math.floor(round(target, 9) * fps)), 0), n_frames - 1))
        out.append(row)
    return np.array(out)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    v = {
        "h264": _write(d / "square_h264.mp4", "libx264"),
        "mpeg4": _write(d / "square_mpeg4.mp4", "mpeg4"),
        "wide": _write(d / "wide.mp4", "libx264", n=16, width=64, height=32),
        "faststart": _write(d / "faststart.mp4", "libx264", faststart=True),
        "mkv": _write(d / "square.mkv", "libx264", n=24),  # no frame count in the container
    }
    v["dir"] = d
    return v


# ------------------------------------------------------------------------------------------ probe / frames


@pytest.mark.parametrize("codec", ["h264", "mpeg4"])
def test_probe_reads_container(videos, codec):
    info = probe_video(videos[codec])
    assert info == VideoInfo(fps=8.0, duration=10.0, num_frames=80, width=32, height=32)


def test_probe_without_frame_count_falls_back_to_packets(videos):
    with av.open(str(videos["mkv"])) as c:
        assert c.streams.video[0].frames == 0  # the fallback is really exercised
    info = probe_video(videos["mkv"])
    assert info.num_frames == 24 and info.fps == 8.0 and info.duration == pytest.approx(3.0)


@pytest.mark.parametrize("codec", ["h264", "mpeg4"])
def test_decode_frames_content_and_times(videos, codec):
    frames, times = decode_frames(videos[codec])
    assert frames.dtype == np.uint8 and frames.shape == (80, 32, 32, 3)
    np.testing.assert_allclose(times, np.arange(80) / FPS, atol=1e-9)
    assert [_read_index(f) for f in frames] == list(range(80))


def test_decode_frames_resizes_short_side_without_crop(videos):
    frames, times = decode_frames(videos["wide"], size=16)
    assert frames.shape == (16, 16, 32, 3)
    assert [_read_index(f) for f in frames] == list(range(16))


# ------------------------------------------------------------------------------------------ clips


@pytest.mark.parametrize("codec", ["h264", "mpeg4"])
def test_decode_clips_whole_video_matches_reference(videos, codec):
    clips = decode_clips(videos[codec], num_clips=4, frames_per_clip=3, size=32)
    assert clips.dtype == np.uint8 and clips.shape == (4, 3, 32, 32, 3)
    windows = [(0, 2.5), (2.5, 5), (5, 7.5), (7.5, 10)]
    np.testing.assert_array_equal(_indices(clips), _reference_indices(windows, 3, FPS, 80))


@pytest.mark.parametrize("codec", ["h264", "mpeg4"])
@pytest.mark.parametrize("start,end", [(6.0, 9.0), (3.3, 4.1), (0.0, 1.0), (9.5, 10.0)])
def test_decode_clips_window_seeks_and_matches_reference(videos, codec, start, end):
    clips = decode_clips(videos[codec], 3, 4, 32, start=start, end=end)
    edges = np.linspace(start, end, 4)
    windows = list(zip(edges[:-1], edges[1:]))
    np.testing.assert_array_equal(_indices(clips), _reference_indices(windows, 4, FPS, 80))


def test_decode_windows_arbitrary_unsorted_overlapping(videos):
    windows = np.array([[7.0, 8.0], [1.0, 3.0], [1.5, 2.0], [0.0, 0.125]])
    clips = decode_windows(videos["h264"], windows, 2, 32)
    np.testing.assert_array_equal(_indices(clips), _reference_indices(windows, 2, FPS, 80))


def test_jitter_positions_stay_in_segments_and_are_reproducible(videos):
    path = videos["h264"]
    a = decode_clips(path, 4, 4, 32, jitter=True, rng=np.random.default_rng(3))
    b = decode_clips(path, 4, 4, 32, jitter=True, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    positions = np.random.default_rng(3).random((4, 4))  # the draws decode_clips makes, in its order
    windows = [(0, 2.5), (2.5, 5), (5, 7.5), (7.5, 10)]
    np.testing.assert_array_equal(_indices(a), _reference_indices(windows, 4, FPS, 80, positions))
    seen = {tuple(_indices(decode_clips(path, 4, 4, 32, jitter=True, rng=np.random.default_rng(s))).ravel())
            for s in range(5)}
    assert len(seen) > 1  # jitter really moves the samples


def test_no_flip_square_moves_right(videos):
    clips = decode_clips(videos["h264"], 1, 4, 32, start=0.0, end=1.0, jitter=True, rng=np.random.default_rng(0))
    xs = []
    for f in range(4):
        red = (clips[0, f, 16:, :, 0] > 150) & (clips[0, f, 16:, :, 2] < 100)
        xs.append(np.nonzero(red)[1].mean())
    assert all(b > a for a, b in zip(xs, xs[1:])), xs


def test_resize_and_centre_crop_on_wide_video(videos):
    path = videos["wide"]
    full, times = decode_frames(path, size=16)  # [16, 16, 32, 3]
    clips = decode_clips(path, 2, 2, 16)
    idx = _reference_indices([(0, 1), (1, 2)], 2, FPS, 16)
    expected = full[idx][:, :, :, 8:24]  # centre 16 of 32 columns
    np.testing.assert_array_equal(clips, expected)


def test_random_crop_varies_and_stays_inside(videos):
    path = videos["wide"]
    full, _ = decode_frames(path, size=16)
    lefts = set()
    for s in range(8):
        clips = decode_clips(path, 1, 2, 16, jitter=True, rng=np.random.default_rng(s))
        frame = clips[0, 0]
        # find the crop offset: the only left offset whose crop of some frame equals the output
        hits = {left for i in range(16) for left in range(17) if np.array_equal(full[i, :, left:left + 16], frame)}
        assert len(hits) >= 1
        lefts |= hits
    assert len(lefts) > 1


@pytest.mark.parametrize("key,size", [("h264", 32), ("mpeg4", 32), ("wide", 16)])
def test_file_path_equals_in_memory_sampler(videos, key, size):
    path = videos[key]
    info = probe_video(path)
    frames, times = decode_frames(path, size=size)
    windows = sliding_windows(info.duration, 1.0, 0.75)
    for jitter in (False, True):
        a = decode_windows(path, windows, 3, size, jitter=jitter, rng=np.random.default_rng(11))
        b = sample_clips(frames, times, windows, 3, size, jitter=jitter, rng=np.random.default_rng(11),
                         duration=info.duration)
        np.testing.assert_array_equal(a, b)


def test_sample_clips_resizes_full_resolution_frames(videos):
    frames, times = decode_frames(videos["wide"])  # 32 x 64, not resized
    clips = sample_clips(frames, times, [[0.0, 1.0]], 2, 16)
    assert clips.shape == (1, 2, 16, 16, 3)
    ref = decode_windows(videos["wide"], [[0.0, 1.0]], 2, 16)  # swscale path
    assert np.abs(clips.astype(int) - ref.astype(int)).mean() < 12  # different filters, same picture


# ------------------------------------------------------------------------------------------ windows


def test_window_partially_past_end_is_clamped(videos):
    path = videos["h264"]
    np.testing.assert_array_equal(decode_clips(path, 2, 2, 32, start=8.0, end=20.0),
                                  decode_clips(path, 2, 2, 32, start=8.0, end=10.0))
    np.testing.assert_array_equal(decode_clips(path, 2, 2, 32, start=-3.0, end=2.0),
                                  decode_clips(path, 2, 2, 32, start=0.0, end=2.0))


@pytest.mark.parametrize("start", [10.0, 12.5])
def test_window_starting_at_or_after_end_is_an_error(videos, start):
    with pytest.raises(VideoError, match=r"square_h264\.mp4.*starts at or after the end"):
        decode_clips(videos["h264"], 2, 2, 32, start=start, end=start + 1)
    with pytest.raises(VideoError, match="starts at or after the end"):
        decode_windows(videos["h264"], [[1.0, 2.0], [start, start + 1]], 2, 32)


def test_window_end_before_start_is_a_value_error(videos):
    with pytest.raises(ValueError, match="end must be > start"):
        decode_clips(videos["h264"], 2, 2, 32, start=5.0, end=4.0)
    with pytest.raises(VideoError, match="ends at or before the start"):
        decode_clips(videos["h264"], 2, 2, 32, start=-5.0, end=-1.0)


def _sliding_reference(duration, clip, stride):
    out, s = [], 0.0
    k = 0
    while True:
        s = k * stride
        if s >= duration - 1e-6:  # stride > clip: nothing left to start in
            return np.array(out)
        out.append((s, min(s + clip, duration)))
        if s + clip >= duration - 1e-6:
            return np.array(out)
        k += 1


@pytest.mark.parametrize("duration,clip,stride", [(10.0, 1.0, 1.0), (10.0, 1.0, 0.5), (10.3, 2.0, 1.5),
                                                  (0.4, 1.0, 1.0), (10.0, 3.0, 4.0), (30.0000001, 1.0, 1.0)])
def test_sliding_windows_against_loop(duration, clip, stride):
    w = sliding_windows(duration, clip, stride)
    np.testing.assert_allclose(w, _sliding_reference(duration, clip, stride))
    assert w[-1, 1] == pytest.approx(duration) and w[0, 0] == 0.0
    assert np.all(w[:, 1] > w[:, 0]) and np.all(w[:, 0] < duration)


def test_sliding_windows_with_gaps_never_start_past_the_end():
    """stride 5 > clip 1 on 24.5 s: the 6th window started at 25 s and every decode failed (issue #18)."""
    w = sliding_windows(24.5, 1.0, 5.0)
    np.testing.assert_allclose(w, [[0, 1], [5, 6], [10, 11], [15, 16], [20, 21]])
    np.testing.assert_allclose(w, _sliding_reference(24.5, 1.0, 5.0))
    for duration, clip, stride in [(10.0, 1.0, 3.0), (7.2, 0.5, 2.4), (3.0, 1.0, 3.0)]:
        w = sliding_windows(duration, clip, stride)
        assert np.all(w[:, 1] > w[:, 0]) and np.all(w[:, 0] < duration), (duration, clip, stride, w)


def test_sliding_windows_cover_video_when_stride_le_clip():
    rng = np.random.default_rng(0)
    for _ in range(200):
        duration, clip = rng.uniform(0.1, 50), rng.uniform(0.1, 5)
        stride = rng.uniform(0.05, clip)
        w = sliding_windows(duration, clip, stride)
        assert np.all(w[1:, 0] <= w[:-1, 1] + 1e-9)  # no gaps
        assert w[-1, 1] == pytest.approx(duration)
        assert np.all(w[:, 1] - w[:, 0] <= clip + 1e-9)


@pytest.mark.parametrize("args", [(0, 1, 1), (10, 0, 1), (10, 1, -1), (float("nan"), 1, 1), (10, 1, float("inf"))])
def test_sliding_windows_rejects_bad_arguments(args):
    with pytest.raises(ValueError):
        sliding_windows(*args)


def test_clip_windows_split_equally():
    np.testing.assert_allclose(clip_windows(2.0, 6.0, 4), [[2, 3], [3, 4], [4, 5], [5, 6]])


# ------------------------------------------------------------------------------------------ bad inputs


def _assert_video_error(fn, path, match):
    with pytest.raises(VideoError) as ei:
        fn(path)
    err = ei.value
    assert isinstance(err, OSError)
    assert str(path) in str(err) and err.filename == str(path)
    assert __import__("re").search(match, err.reason), err.reason
    return err


ALL_ENTRY_POINTS = [probe_video, decode_frames, lambda p: decode_clips(p, 2, 2, 32)]


@pytest.mark.parametrize("fn", ALL_ENTRY_POINTS)
def test_missing_file(videos, fn):
    _assert_video_error(fn, videos["dir"] / "nope.mp4", "no such file")


@pytest.mark.parametrize("fn", ALL_ENTRY_POINTS)
def test_empty_file(videos, fn):
    p = videos["dir"] / "empty.mp4"
    p.write_bytes(b"")
    _assert_video_error(fn, p, "empty file")


@pytest.mark.parametrize("fn", ALL_ENTRY_POINTS)
def test_garbage_bytes(videos, fn):
    p = videos["dir"] / "garbage.mp4"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    _assert_video_error(fn, p, "cannot open")


@pytest.mark.parametrize("codec", ["h264", "mpeg4"])
@pytest.mark.parametrize("fn", ALL_ENTRY_POINTS)
def test_truncated_mp4_index_at_end(videos, codec, fn):
    data = videos[codec].read_bytes()
    p = videos["dir"] / f"truncated_{codec}.mp4"
    p.write_bytes(data[: len(data) // 2])  # the moov index (written last) is lost
    _assert_video_error(fn, p, "corrupt or truncated")


def test_truncated_mp4_with_index_first(videos):
    data = videos["faststart"].read_bytes()
    p = videos["dir"] / "truncated_faststart.mp4"
    p.write_bytes(data[: len(data) * 2 // 3])  # index intact, media data cut
    assert probe_video(p).duration == 10.0  # the container still claims the full length ...
    _assert_video_error(decode_frames, p, "truncated")  # ... but decoding stops early
    _assert_video_error(lambda q: decode_clips(q, 2, 2, 32, start=8.0, end=10.0), p, "truncated")
    early = decode_clips(p, 2, 2, 32, start=0.0, end=2.0)  # the intact part stays usable
    np.testing.assert_array_equal(_indices(early), _reference_indices([(0, 1), (1, 2)], 2, FPS, 80))


@pytest.mark.parametrize("fn", ALL_ENTRY_POINTS)
def test_zero_frame_container(videos, fn):
    p = videos["dir"] / "zero.mkv"  # a video track is declared but never receives a frame
    with av.open(str(p), "w") as c:
        s = c.add_stream("libx264", rate=FPS)
        s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
        a = c.add_stream("aac", rate=8000)
        fr = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        fr.sample_rate, fr.pts = 8000, 0
        for pkt in a.encode(fr):
            c.mux(pkt)
        for pkt in a.encode():
            c.mux(pkt)
    with av.open(str(p)) as c:
        assert c.streams.video[0].frames == 0
    _assert_video_error(fn, p, "zero-length")


@pytest.mark.parametrize("fn", ALL_ENTRY_POINTS)
def test_mp4_without_any_frame(videos, fn):
    p = videos["dir"] / "zero.mp4"  # MP4 muxer drops the empty track: header only
    with av.open(str(p), "w") as c:
        s = c.add_stream("libx264", rate=FPS)
        s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
        c.start_encoding()
    _assert_video_error(fn, p, "zero-length")


@pytest.mark.parametrize("fn", ALL_ENTRY_POINTS)
def test_unsupported_stream_audio_only(videos, fn):
    p = videos["dir"] / "audio.wav"
    with av.open(str(p), "w") as c:
        s = c.add_stream("pcm_s16le", rate=8000)
        fr = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        fr.sample_rate = 8000
        for pkt in s.encode(fr):
            c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    _assert_video_error(fn, p, "unsupported stream: no video stream")


def _write_png(path, size=32):
    """A PNG (written with PyAV's image2 muxer) at ``path``, whatever its extension."""
    tmp = path.with_name(path.stem + "_src.png")
    with av.open(str(tmp), "w", format="image2") as c:
        s = c.add_stream("png")
        s.width, s.height, s.pix_fmt = size, size, "rgb24"
        fr = av.VideoFrame.from_ndarray(np.zeros((size, size, 3), np.uint8), format="rgb24")
        for pkt in [*s.encode(fr), *s.encode()]:
            c.mux(pkt)
    tmp.replace(path)
    return path


@pytest.mark.parametrize("fn", ALL_ENTRY_POINTS)
def test_still_image_renamed_mp4_is_an_error(videos, fn):
    """FFmpeg opens a PNG as a one-frame video: grounding then returned one window of score 0.0 (issue #18)."""
    p = _write_png(videos["dir"] / "picture.mp4")
    _assert_video_error(fn, p, "still image")


def test_directory_is_an_error(videos):
    _assert_video_error(probe_video, videos["dir"], "directory")


def test_video_error_pickles():
    e = VideoError("/data/x.mp4", "truncated")
    e2 = pickle.loads(pickle.dumps(e))
    assert type(e2) is VideoError and str(e2) == "/data/x.mp4: truncated" and e2.filename == "/data/x.mp4"


def test_sample_clips_input_validation():
    frames = np.zeros((4, 8, 8, 3), np.uint8)
    times = np.arange(4) / 4
    with pytest.raises(ValueError, match="uint8"):
        sample_clips(frames.astype(np.float32), times, [[0, 1]], 2, 8)
    with pytest.raises(ValueError, match="times must have shape"):
        sample_clips(frames, times[:3], [[0, 1]], 2, 8)
    with pytest.raises(ValueError, match=r"shape \[T, 2\]"):
        sample_clips(frames, times, [0, 1], 2, 8)
    with pytest.raises(VideoError, match="zero-length"):
        sample_clips(frames[:0], times[:0], [[0, 1]], 2, 8)
    with pytest.raises(VideoError, match="starts at or after"):
        sample_clips(frames, times, [[1.0, 2.0]], 2, 8)  # duration inferred as 1.0
    with pytest.raises(TypeError, match="Generator"):
        sample_clips(frames, times, [[0, 1]], 2, 8, jitter=True, rng=42)


def test_sample_clips_matches_plain_loop_on_irregular_times():
    """Variable frame rate, targets before the first frame, overlapping windows: against a per-target loop."""
    rng = np.random.default_rng(5)
    for trial in range(30):
        n = int(rng.integers(1, 40))
        times = np.sort(rng.uniform(0.0, 10.0, n))  # first frame not at 0: earlier targets take it
        frames = np.zeros((n, 4, 4, 3), np.uint8)
        frames[:, 0, 0, 0] = np.arange(n) % 256
        frames[:, 0, 0, 1] = np.arange(n) // 256
        duration = float(times[-1]) + 0.3
        T, F = int(rng.integers(1, 6)), int(rng.integers(1, 5))
        starts = rng.uniform(0.0, duration - 0.01, T)
        windows = np.stack([starts, starts + rng.uniform(0.01, 3.0, T)], 1)
        jitter = bool(trial % 2)
        out = sample_clips(frames, times, windows, F, 4, jitter=jitter, rng=np.random.default_rng(trial),
                           duration=duration)
        got = out[:, :, 0, 0, 0].astype(int) + 256 * out[:, :, 0, 0, 1].astype(int)
        pos = np.random.default_rng(trial).random((T, F)) if jitter else np.full((T, F), 0.5)
        for t in range(T):
            a, b = windows[t, 0], min(windows[t, 1], duration)
            for f in range(F):
                target = round(a + (f + pos[t, f]) * (b - a) / F, 9)
                shown = [i for i in range(n) if times[i] <= target]
                assert got[t, f] == (shown[-1] if shown else 0)


def test_synthetic_world_videos(tiny_world):
    """The generator's MP4s: rate and size from the container match the manifest; both sampling paths agree."""
    import json

    manifest = json.loads((tiny_world / "manifest.json").read_text())
    paths = sorted((tiny_world / "videos").glob("*.mp4"))
    assert paths
    for path in paths[:3]:
        info = probe_video(path)
        assert info.fps == manifest["fps"] and info.width == info.height == manifest["frame_size"]
        assert info.num_frames == pytest.approx(info.duration * info.fps)
        frames, times = decode_frames(path)
        assert frames.shape[0] == info.num_frames
        windows = sliding_windows(info.duration, 1.0, 1.0)
        a = decode_windows(path, windows, 4, 32, jitter=True, rng=np.random.default_rng(0))
        b = sample_clips(frames, times, windows, 4, 32, jitter=True, rng=np.random.default_rng(0),
                         duration=info.duration)
        np.testing.assert_array_equal(a, b)


def _decode_in_child(path):
    return decode_clips(path, 2, 2, 32).shape


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_decoding_after_fork_does_not_hang(videos):
    """Regression: a converter with a swscale thread pool, inherited by a forked DataLoader worker, deadlocked."""
    import multiprocessing as mp

    decode_clips(videos["h264"], 2, 2, 32)  # the parent has converted frames before forking
    with mp.get_context("fork").Pool(1) as pool:
        assert pool.apply_async(_decode_in_child, (videos["h264"],)).get(timeout=60) == (2, 2, 32, 32, 3)


def test_late_window_seeks_instead_of_decoding_from_start(videos, monkeypatch):
    """A window near the end decodes from the key frame before it (GOP 10 here), not from frame 0."""
    from locvtp.data import video as V

    seen = []
    real = V._iter_frames

    def counting(*args, **kwargs):
        for t, frame in real(*args, **kwargs):
            seen.append(t)
            yield t, frame

    monkeypatch.setattr(V, "_iter_frames", counting)
    clips = decode_clips(videos["h264"], 2, 2, 32, start=8.0, end=9.0)
    np.testing.assert_array_equal(_indices(clips), _reference_indices([(8, 8.5), (8.5, 9)], 2, FPS, 80))
    assert min(seen) >= 8.0 - 10 / FPS - 1e-9  # started at most one GOP before the window
    assert len(seen) <= 10 + 9  # GOP lead-in + the window's 8 frames + the one that ends the scan


def test_sample_clips_portrait_resize_and_centre_crop():
    frames = np.zeros((2, 64, 32, 3), np.uint8)
    frames[:, :16] = (255, 0, 0)  # top quarter red
    frames[:, 16:48] = (0, 255, 0)  # middle half green
    frames[:, 48:] = (0, 0, 255)  # bottom quarter blue
    out = sample_clips(frames, np.array([0.0, 0.5]), [[0.0, 1.0]], 2, 16)
    assert out.shape == (1, 2, 16, 16, 3)
    # 64x32 -> 32x16 (short side 16), centre crop keeps rows 8..24 of 32 = the green middle
    assert (out[..., 1] > 200).all() and (out[..., 0] < 50).all() and (out[..., 2] < 50).all()
    crops = {tuple(sample_clips(frames, np.array([0.0, 0.5]), [[0.0, 1.0]], 1, 16, jitter=True,
                                rng=np.random.default_rng(s))[0, 0, :, 0].mean(0).round()) for s in range(20)}
    assert len(crops) > 1  # random vertical crops reach the red or blue bands


def test_probe_memo_sees_a_rewritten_file(videos):
    p = videos["dir"] / "rewritten.mp4"
    _write(p, "libx264", n=16)
    assert probe_video(p).num_frames == 16
    _write(p, "libx264", n=24)
    assert probe_video(p).num_frames == 24
    p.write_bytes(b"")
    _assert_video_error(probe_video, p, "empty file")
