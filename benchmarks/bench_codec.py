"""torchcodec against PyAV: the clips `locvtp extract` decodes, timed side by side, frames compared.

    nice -n 19 .venv/bin/python benchmarks/bench_codec.py [--world DIR] [--long-seconds 120] [--repeats 5]

What is decoded, per video: ``locvtp.inference.decode_video_clips`` with the default preprocessing (1-s windows,
stride 1 s, 4 frames per clip at the segment centres, short side resized to 32 px, centre crop), on two sets: the
tiny synthetic world (32x32, 8 fps, ~15 s each) and ``--long`` H.264 videos of ``--long-seconds`` at 320x240,
25 fps, written with PyAV (``bench_extract.make_long_videos``).

Paths (each pass decodes the whole set; the per-process probe memo is cleared first, as in a fresh process):

* PyAV, the project's path itself, with the codec context at 1 thread, at PyAV's default (slice threads, auto
  count: what ``extract`` runs) and with frame threads (``thread_type="AUTO"``: what PyAV offers without a new
  dependency);
* torchcodec ``VideoDecoder(dimension_order="NHWC", transforms=[Resize((h, w))])`` with ``seek_mode`` exact
  (default) or approximate and ``num_ffmpeg_threads`` 1 or 0 (FFmpeg's choice), ``get_frames_played_at`` at the
  same instants (its own metadata gives the duration and time origin), then the same centre crop.

Frame equality against the project's clips (its 1-thread row): max |difference| of the uint8 frames and how
many frames differ; and the same at full resolution (no resize: PyAV through the project's frame selection and
converter, torchcodec without transforms), which separates decoding, frame choice and colour conversion from the
resize (the project's swscale AREA when shrinking; torchcodec's ``Resize`` is always antialiased bilinear). The
tiny world's sources are already 32x32, so there nothing is resized. Timing: medians of ``--repeats`` passes
after one warm-up, wall clips/s and clips per CPU-second (all threads of this process; the machine may be
shared). torchcodec is optional: without it the script says why and times PyAV only.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_extract import cpu_model, make_long_videos  # noqa: E402  (one video generator for the benchmarks)


def load_torchcodec() -> tuple[Optional[object], str]:
    """``(VideoDecoder class or None, one line saying which torchcodec / why none)``."""
    try:
        import torchcodec
        from torchcodec.decoders import VideoDecoder
    except Exception as e:  # ImportError, or RuntimeError/OSError when its shared libraries do not load
        first = next((ln for ln in str(e).splitlines() if ln.strip()), "")
        return None, f"torchcodec: not importable here ({type(e).__name__}: {first}); PyAV only"
    return VideoDecoder, (f"torchcodec {torchcodec.__version__} (system FFmpeg "
                          f"{getattr(torchcodec, 'ffmpeg_major_version', '?')})")


@contextlib.contextmanager
def pyav_threads(mode: str) -> Iterator[None]:
    """Run the project's decoder with the codec context's threading set to ``mode`` (1 / default / frame)."""
    from locvtp.data import video as V

    if mode == "default":
        yield
        return
    original = V._open

    def opened(path):
        container, stream = original(path)
        if mode == "1":
            stream.codec_context.thread_count = 1
        else:
            stream.thread_type = "AUTO"  # frame and slice threads, FFmpeg's thread count
        return container, stream

    V._open = opened
    try:
        yield
    finally:
        V._open = original


def pyav_clips(paths: list[Path], prep) -> list[np.ndarray]:
    from locvtp.inference import decode_video_clips

    return [decode_video_clips(p, prep.clip_seconds, prep.stride_seconds, prep.frames_per_clip,
                               prep.frame_size).clips for p in paths]


def short_side_resize(size: int):
    """torchcodec's ``Resize`` to the project's short-side size, sized from the decoder's own metadata.

    Why a subclass: ``Resize`` wants ``(h, w)`` up front, which would need a second open to probe; the spec hook
    receives the stream's dimensions when the decoder opens it.
    """
    from locvtp.data import video as V
    from torchcodec.transforms import Resize

    class ShortSideResize(Resize):
        def __init__(self) -> None:
            super().__init__((size, size))

        def _make_transform_spec(self, input_dims):
            nw, nh = V._short_side_dims(int(input_dims[1]), int(input_dims[0]), size)
            self.size = (nh, nw)
            return super()._make_transform_spec(input_dims)

    return ShortSideResize()


def torchcodec_clips(VideoDecoder, paths: list[Path], prep, threads: int, seek_mode: str,
                     resize: bool = True) -> list[np.ndarray]:
    """The same clips through torchcodec: its metadata, its frame selection, its resize; the project's grid."""
    from locvtp.data import video as V

    out = []
    for p in paths:
        transforms = [short_side_resize(prep.frame_size)] if resize else None
        dec = VideoDecoder(str(p), dimension_order="NHWC", seek_mode=seek_mode, num_ffmpeg_threads=threads,
                           transforms=transforms)
        md = dec.metadata
        begin = float(md.begin_stream_seconds)
        duration = float(md.end_stream_seconds) - begin
        windows = V.sliding_windows(duration, prep.clip_seconds, prep.stride_seconds)
        t = V._target_times(windows, prep.frames_per_clip, False, None)
        frames = dec.get_frames_played_at(seconds=(t.ravel() + begin).tolist()).data.numpy()
        if resize:
            nh, nw = frames.shape[1:3]
            top, left = (nh - prep.frame_size) // 2, (nw - prep.frame_size) // 2
            frames = frames[:, top:top + prep.frame_size, left:left + prep.frame_size]
        out.append(frames.reshape(*t.shape, *frames.shape[1:]))
    return out


def pyav_full_resolution(paths: list[Path], prep) -> list[np.ndarray]:
    """The project's frame selection and converter at the source size (no resize, no crop)."""
    from locvtp.data import video as V

    out = []
    for p in paths:
        info, origin = V._probe(p)
        windows = V.sliding_windows(info.duration, prep.clip_seconds, prep.stride_seconds)
        t = V._target_times(windows, prep.frames_per_clip, False, None)
        flat = t.ravel()
        order = np.argsort(flat, kind="stable")
        picked, assign = V._select_streaming(p, info, origin, flat[order], float(windows[0, 0]),
                                             float(windows[-1, 1]), info.width, info.height, 0.0)
        slots = np.empty_like(assign)
        slots[order] = assign
        out.append(np.stack(picked)[slots].reshape(*t.shape, info.height, info.width, 3))
    return out


def compare(a: list[np.ndarray], b: list[np.ndarray]) -> str:
    """``max |a-b|`` over all uint8 frames and the number of frames that differ (or why they cannot be compared)."""
    shapes = [(x.shape, y.shape) for x, y in zip(a, b) if x.shape != y.shape]
    if shapes:
        return f"shapes differ ({len(shapes)} videos, e.g. {shapes[0][0]} vs {shapes[0][1]})"
    fa = np.concatenate([x.reshape(-1, *x.shape[-3:]) for x in a]).astype(np.int16)
    fb = np.concatenate([y.reshape(-1, *y.shape[-3:]) for y in b]).astype(np.int16)
    diff = np.abs(fa - fb)
    per_frame = diff.reshape(diff.shape[0], -1).max(axis=1)
    return (f"max abs diff {int(diff.max())}, {int((per_frame > 0).sum())}/{len(per_frame)} frames differ, "
            f"mean abs diff {float(diff.mean()):.3f}")


def timed(fn: Callable[[], list[np.ndarray]], repeats: int) -> tuple[list[np.ndarray], list[float], list[float]]:
    """``(output, wall seconds per pass, CPU seconds per pass)``; one warm-up pass first (page cache, imports)."""
    from locvtp.data import video as V

    V._probe_memo.cache_clear()
    out = fn()
    walls, cpus = [], []
    for _ in range(repeats):
        V._probe_memo.cache_clear()  # each pass probes like a fresh `extract` process
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return out, walls, cpus


def measure_set(name: str, paths: list[Path], prep, VideoDecoder, repeats: int) -> list[str]:
    rows: list[tuple[str, list[np.ndarray], list[float], list[float]]] = []
    for mode, label in (("1", "PyAV (project), 1 thread"), ("default", "PyAV (project), default threads"),
                        ("frame", "PyAV (project), frame threads")):
        with pyav_threads(mode):
            rows.append((label, *timed(lambda: pyav_clips(paths, prep), repeats)))
    if VideoDecoder is not None:
        for threads, seek in ((1, "exact"), (0, "exact"), (1, "approximate")):
            label = f"torchcodec, {'1 thread' if threads == 1 else 'default threads (0)'}, {seek}"
            rows.append((label, *timed(lambda: torchcodec_clips(VideoDecoder, paths, prep, threads, seek),
                                       repeats)))
    ref = rows[0][1]
    n = sum(c.shape[0] for c in ref)
    lines = [f"### {name}: {len(paths)} videos, {n} clips ({n * prep.frames_per_clip} frames)", "",
             "| path | clips/s (median, wall) | clips per CPU-second | wall s per pass (all) | frames vs project |",
             "|---|---:|---:|---|---|"]
    for i, (label, out, walls, cpus) in enumerate(rows):
        lines.append(f"| {label} | {n / statistics.median(walls):,.0f} | {n / statistics.median(cpus):,.0f} | "
                     f"{', '.join(f'{w:.3f}' for w in walls)} | {'(reference)' if i == 0 else compare(ref, out)} |")
    if VideoDecoder is not None:
        full = compare(pyav_full_resolution(paths, prep), torchcodec_clips(VideoDecoder, paths, prep, 1, "exact",
                                                                           resize=False))
        lines += ["", f"Full resolution (no resize), torchcodec vs the project's selection and converter: {full}."]
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", default=None, help="tiny synthetic world dir (default: generate one, seed 0)")
    ap.add_argument("--long", type=int, default=1, help="long 320x240 videos to generate (0: none)")
    ap.add_argument("--long-seconds", type=float, default=120.0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--max-videos", type=int, default=0, help="use only the first N world videos (0: all)")
    args = ap.parse_args(argv)

    import av
    import torch

    from locvtp.predictor import Preprocessing
    from locvtp.world.generate import generate_world

    torch.set_num_threads(1)
    VideoDecoder, codec_line = load_torchcodec()
    prep = Preprocessing()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        world = Path(args.world) if args.world else tmp / "world"
        if not args.world:
            generate_world(world, seed=0, preset="tiny", progress=False)
        tiny = sorted((world / "videos").glob("*.mp4"))
        tiny = tiny[:args.max_videos] if args.max_videos > 0 else tiny
        long_ = make_long_videos(tmp / "long", args.long, args.long_seconds) if args.long > 0 else []
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"# bench_codec: CPU {cpu_model()} x {os.cpu_count()}, Python {platform.python_version()}, "
              f"torch {torch.__version__}, PyAV {av.__version__} (bundled FFmpeg libavcodec "
              f"{'.'.join(map(str, av.library_versions['libavcodec']))}), load average {load:.1f} at start")
        print(f"# {codec_line}")
        print(f"# clips: {prep.clip_seconds:g}-s windows, stride {prep.stride_seconds:g} s, "
              f"{prep.frames_per_clip} frames x {prep.frame_size}px; median of {args.repeats} passes after a warm-up")
        sets = [("tiny world (32x32, 8 fps)", tiny)]
        if long_:
            sets.append((f"long ({len(long_)} x {args.long_seconds:g} s, 320x240, 25 fps H.264)", long_))
        for name, paths in sets:
            print()
            print("\n".join(measure_set(name, paths, prep, VideoDecoder, args.repeats)))
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"\n# load average {load:.1f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
