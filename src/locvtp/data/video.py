"""Video I/O with PyAV: probe, decode, and sample ``T`` clips x ``F`` frames as uint8 arrays.

Conventions (the same for every function here, so the file path and an in-memory cache agree exactly):

* **Time.** Frame times are presentation timestamps in seconds, shifted so that the first frame shown is at
  0 (rounded to the nanosecond). Frame ``i`` is "on screen" during ``[times[i], times[i+1])``; the frame
  shown at time ``t`` is the last frame with ``times[i] <= t`` (the first frame for ``t`` before it).
  ``duration`` comes from the container (re-anchored on the first frame), so it also covers the last
  frame's display time.
* **Sampling.** A clip window ``[a, b]`` is split into ``F`` equal segments; without jitter the frame shown
  at each segment centre is taken, with jitter a uniformly random time inside each segment. Segments (not
  independent random times) keep frames in temporal order and spread over the whole window.
* **Windows.** A window that lies partially outside ``[0, duration]`` is clamped to it. A window that starts
  at or after the end of the video (or ends at or before 0) is an error (:class:`VideoError`): sampling it
  would silently repeat the last frame, which hides wrong annotations.
* **Spatial.** Frames are resized so that their *short* side equals ``size`` (aspect ratio kept), then
  cropped to ``size x size``: centre crop, or, under jitter, one random crop per call (the same offset for
  every clip and frame, so motion is not distorted). No horizontal flip: captions say "moves left".

Why streaming selection in :func:`decode_windows`: only the frames that are actually sampled are converted
to RGB, so memory is ``O(T * F)`` frames regardless of the window length or the video resolution.
"""
from __future__ import annotations

import functools
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Union

import av
import numpy as np
from locvtp.errors import LocVTPError

PathLike = Union[str, os.PathLike]

__all__ = [
    "VideoError",
    "VideoInfo",
    "probe_video",
    "decode_frames",
    "decode_clips",
    "decode_windows",
    "sample_clips",
    "sliding_windows",
    "clip_windows",
    "rate_sample_times",
    "protocol_dims",
    "iter_rate_frames",
]

# Tolerance (seconds) for comparing timestamps that went through float time-base arithmetic.
_EPS = 1e-6
# Frame and target times are rounded to the nanosecond before they are compared.
_TIME_DECIMALS = 9


class VideoError(LocVTPError, OSError):
    """A video file cannot be used: missing, corrupt, truncated, empty, unsupported, or a bad window.

    ``str(err)`` is ``"<path>: <reason>"``; ``err.filename`` and ``err.reason`` hold the parts.
    """

    def __init__(self, path: PathLike, reason: str):
        super().__init__(f"{os.fspath(path)}: {reason}")
        self.filename = os.fspath(path)
        self.reason = reason

    def __str__(self) -> str:  # OSError would print "[Errno None] None: 'path'" once filename is set
        return f"{self.filename}: {self.reason}"

    def __reduce__(self):  # picklable across DataLoader worker processes
        return (type(self), (self.filename, self.reason))


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about the first video stream (seconds, frames, pixels)."""

    fps: float
    duration: float
    num_frames: int
    width: int
    height: int


# --------------------------------------------------------------------------------------------------------
# Opening and probing
# --------------------------------------------------------------------------------------------------------


def _open(path: PathLike):
    """Open ``path`` and return ``(container, video_stream)``; every failure becomes a :class:`VideoError`."""
    p = Path(path)
    if not p.exists():
        raise VideoError(p, "no such file")
    if p.is_dir():
        raise VideoError(p, "is a directory, not a video file")
    if p.stat().st_size == 0:
        raise VideoError(p, "empty file (0 bytes)")
    try:
        container = av.open(os.fspath(p), mode="r")
    except av.error.FFmpegError as e:
        raise VideoError(p, f"cannot open as a video container (corrupt or truncated?): {_ffmsg(e)}") from e
    except (OSError, ValueError) as e:
        raise VideoError(p, f"cannot open: {e}") from e
    fmt = str(getattr(container.format, "name", "") or "")
    if fmt.endswith("_pipe") or fmt == "image2":
        # FFmpeg reads a PNG/JPEG/... as a one-frame "video"; every clip would be that one picture and every
        # window would score alike, a result that looks like an answer and means nothing.
        container.close()
        raise VideoError(p, f"is a still image ({fmt.removesuffix('_pipe')}), not a video")
    streams = [s for s in container.streams if s.type == "video"]
    if not list(container.streams):
        container.close()
        raise VideoError(p, "zero-length video: the container has no streams (no frames were written?)")
    if not streams:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        container.close()
        raise VideoError(p, f"unsupported stream: no video stream (streams: {', '.join(kinds)})")
    stream = streams[0]
    try:
        ctx = stream.codec_context
        if ctx is None or ctx.codec is None:
            raise ValueError("no decoder")
    except (av.error.FFmpegError, ValueError, AttributeError) as e:
        container.close()
        raise VideoError(p, f"unsupported stream: no decoder for the video codec ({e})") from e
    if ctx.width <= 0 or ctx.height <= 0:
        container.close()
        raise VideoError(p, f"unsupported stream: invalid frame size {ctx.width}x{ctx.height}")
    return container, stream


def _ffmsg(e: BaseException) -> str:
    """FFmpeg error text without PyAV's ``[Errno ...]`` noise and the repeated file name."""
    msg = getattr(e, "strerror", None) or str(e)
    return str(msg)


def _rate(stream) -> Optional[float]:
    for r in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if r is not None and float(r) > 0 and math.isfinite(float(r)):
            return float(r)
    return None


def _first_frame_time(container, stream, path) -> float:
    """Raw presentation time (s) of the first decodable frame: our time origin.

    Why not ``stream.start_time``: some containers (AVI with B-frames, files cut without re-encoding)
    declare a start that differs from the first frame actually shown; anchoring on the first frame makes
    "time 0" mean the same thing for :func:`decode_frames` and for a seek into the middle of the file.
    """
    try:
        for frame in container.decode(stream):
            if frame.pts is not None and frame.time is not None:
                return float(frame.time)
            if stream.start_time is not None and stream.time_base is not None:
                return float(stream.start_time * stream.time_base)
            return 0.0
    except av.error.FFmpegError as e:
        raise VideoError(path, f"corrupt video: the first frame cannot be decoded: {_ffmsg(e)}") from e
    raise VideoError(path, "zero-length video: the video stream has no decodable frames")


def _probe(path: PathLike) -> tuple[VideoInfo, float]:
    """``(info, origin)`` of ``path``, memoized per process while the file's size and mtime are unchanged.

    Why: training decodes the same files over and over; probing (open + decode the first frame) is ~20 % of
    a small clip's cost. Failures are not memoized.
    """
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return _probe_uncached(p)  # raises the proper VideoError
    return _probe_memo(os.path.abspath(p), st.st_size, st.st_mtime_ns, os.fspath(path))


@functools.lru_cache(maxsize=4096)
def _probe_memo(abspath: str, size: int, mtime_ns: int, shown: str) -> tuple[VideoInfo, float]:
    return _probe_uncached(shown)  # errors name the path as the caller spelled it


def _probe_uncached(path: PathLike) -> tuple[VideoInfo, float]:
    """``(info, origin)``: container metadata, completed by demuxing packets only when it is missing."""
    container, stream = _open(path)
    try:
        fps = _rate(stream)
        num_frames = int(stream.frames or 0)
        tb = stream.time_base
        start = float(stream.start_time * tb) if stream.start_time is not None and tb is not None else 0.0
        duration: Optional[float] = None
        if stream.duration is not None and tb is not None and stream.duration > 0:
            duration = float(stream.duration * tb)
        elif container.duration is not None and container.duration > 0:
            c_start = float(container.start_time) / av.time_base if container.start_time is not None else 0.0
            duration = float(container.duration) / av.time_base - max(0.0, start - c_start)
        width, height = stream.codec_context.width, stream.codec_context.height
        need_scan = fps is None or num_frames <= 0 or duration is None or duration <= 0
        if not need_scan:
            origin = _first_frame_time(container, stream, path)
    finally:
        container.close()
    if need_scan:
        # MKV/WebM and raw streams often lack a frame count or duration: count packets (cheap, no
        # decoding) and derive the rest from their timestamps.
        container, stream = _open(path)
        try:
            n, t_first, t_end, step = _scan_packets(container, stream, path)
        finally:
            container.close()
        if n == 0:
            raise VideoError(path, "zero-length video: the video stream has no frames")
        num_frames = num_frames if num_frames > 0 else n
        if fps is None:
            if step is None or step <= 0:
                raise VideoError(path, "cannot determine the frame rate (no rate in the container, <2 frames)")
            fps = 1.0 / step
        if duration is None or duration <= 0:
            duration = (t_end - t_first) if t_end is not None and t_end > t_first else num_frames / fps
        container, stream = _open(path)
        try:
            origin = _first_frame_time(container, stream, path)
        finally:
            container.close()
    # The declared duration counts from the declared start; re-anchor it on the first shown frame.
    duration = duration - max(0.0, origin - start)
    if duration <= 0:
        raise VideoError(path, f"zero-length video: duration {duration:.3f} s")
    info = VideoInfo(fps=float(fps), duration=float(duration), num_frames=int(num_frames),
                     width=int(width), height=int(height))
    return info, origin


def _scan_packets(container, stream, path):
    """Count the stream's packets; return ``(count, first_time, end_time, median_step)`` in seconds."""
    tb = stream.time_base
    count, pts = 0, []
    end = None
    try:
        for pkt in container.demux(stream):
            if pkt.size == 0:  # flush packet
                continue
            count += 1
            if pkt.pts is not None and tb is not None:
                t = float(pkt.pts * tb)
                pts.append(t)
                d = float(pkt.duration * tb) if pkt.duration else 0.0
                end = t + d if end is None else max(end, t + d)
    except av.error.FFmpegError as e:
        raise VideoError(path, f"corrupt or truncated video while reading packets: {_ffmsg(e)}") from e
    if not pts:
        return count, None, None, None
    pts.sort()
    step = float(np.median(np.diff(pts))) if len(pts) > 1 else None
    if end is not None and step is not None and end <= pts[-1]:
        end = pts[-1] + step
    return count, pts[0], end, step


def probe_video(path: PathLike) -> VideoInfo:
    """Frame rate, duration (s), frame count and size of the first video stream of ``path``.

    Read from the container's metadata (the first frame is decoded to anchor time 0); when the container
    lacks the frame count, duration or rate, packets are demuxed (not decoded) to derive them. Raises
    :class:`VideoError` for a missing, corrupt, empty or video-less file.
    """
    return _probe(path)[0]


# --------------------------------------------------------------------------------------------------------
# Pure sampling helpers (shared by the file path and the in-memory path)
# --------------------------------------------------------------------------------------------------------


def _as_rng(rng) -> np.random.Generator:
    if rng is None:
        return np.random.default_rng()
    if isinstance(rng, np.random.Generator):
        return rng
    raise TypeError(f"rng must be a numpy.random.Generator or None, got {type(rng).__name__}")


def _check_windows(windows, duration: float, source: PathLike) -> np.ndarray:
    """Validate ``[T, 2]`` windows (seconds) and clamp them to ``[0, duration]`` (see module docstring)."""
    w = np.asarray(windows, dtype=np.float64)
    if w.ndim != 2 or w.shape[1] != 2 or w.shape[0] == 0:
        raise ValueError(f"{os.fspath(source)}: windows must have shape [T, 2] with T >= 1, got {w.shape}")
    if not np.all(np.isfinite(w)):
        raise ValueError(f"{os.fspath(source)}: windows contain NaN or infinite values")
    bad = np.nonzero(w[:, 1] <= w[:, 0])[0]
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{os.fspath(source)}: window {i} has end <= start ({w[i, 0]:.3f} >= {w[i, 1]:.3f} s)")
    late = np.nonzero(w[:, 0] >= duration - _EPS)[0]
    if late.size:
        i = int(late[0])
        raise VideoError(source, f"window {i} [{w[i, 0]:.3f}, {w[i, 1]:.3f}] s starts at or after the end "
                                 f"of the video (duration {duration:.3f} s)")
    early = np.nonzero(w[:, 1] <= _EPS)[0]
    if early.size:
        i = int(early[0])
        raise VideoError(source, f"window {i} [{w[i, 0]:.3f}, {w[i, 1]:.3f}] s ends at or before the start "
                                 f"of the video")
    return np.clip(w, 0.0, duration)


def _target_times(windows: np.ndarray, frames_per_clip: int, jitter: bool, rng) -> np.ndarray:
    """``[T, F]`` sample times: segment centres, or uniform positions inside each segment under jitter."""
    if frames_per_clip < 1:
        raise ValueError(f"frames_per_clip must be >= 1, got {frames_per_clip}")
    T = windows.shape[0]
    pos = _as_rng(rng).random((T, frames_per_clip)) if jitter else np.full((T, frames_per_clip), 0.5)
    seg = (windows[:, 1] - windows[:, 0]) / frames_per_clip
    t = windows[:, :1] + (np.arange(frames_per_clip)[None, :] + pos) * seg[:, None]
    # Round to the nanosecond (as frame times are) so a target that lands on a frame boundary picks the
    # same frame whatever float rounding produced it.
    return np.round(t, _TIME_DECIMALS)


def _short_side_dims(width: int, height: int, size: Optional[int]) -> tuple[int, int]:
    """(width, height) after resizing the short side to ``size`` (unchanged when ``size`` is None)."""
    if size is None:
        return width, height
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    if height <= width:
        return max(size, int(round(width * size / height))), size
    return size, max(size, int(round(height * size / width)))


def _crop_offsets(height: int, width: int, size: int, jitter: bool, rng) -> tuple[int, int]:
    if jitter:
        r = _as_rng(rng)
        return int(r.integers(0, height - size + 1)), int(r.integers(0, width - size + 1))
    return (height - size) // 2, (width - size) // 2


def _resize_uint8(frames: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize ``uint8 [..., H, W, 3]`` with antialiased bilinear interpolation (torch, CPU)."""
    import torch
    import torch.nn.functional as F_

    lead = frames.shape[:-3]
    x = torch.from_numpy(np.ascontiguousarray(frames.reshape(-1, *frames.shape[-3:])))
    x = x.permute(0, 3, 1, 2).float()
    y = F_.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    y = y.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
    return y.reshape(*lead, height, width, 3)


def sample_clips(
    frames: np.ndarray,
    times: np.ndarray,
    windows,
    frames_per_clip: int,
    size: int,
    jitter: bool = False,
    rng: Optional[np.random.Generator] = None,
    *,
    duration: Optional[float] = None,
    source: PathLike = "<frames>",
) -> np.ndarray:
    """Sample ``uint8 [T, F, size, size, 3]`` from already-decoded frames (the in-memory / cache path).

    ``frames`` is ``uint8 [N, H, W, 3]`` with presentation ``times [N]`` (seconds, increasing), ``windows``
    is ``[T, 2]`` seconds. ``duration`` defaults to ``times[-1]`` plus one median frame interval. The
    random draws (positions, then crop) are made in the same order as :func:`decode_windows`, so both give
    identical clips for the same ``rng`` state.
    """
    frames = np.asarray(frames)
    times = np.asarray(times, dtype=np.float64)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"{os.fspath(source)}: frames must be uint8 [N, H, W, 3], got {frames.dtype} {frames.shape}")
    if times.shape != (frames.shape[0],):
        raise ValueError(f"{os.fspath(source)}: times must have shape [{frames.shape[0]}], got {times.shape}")
    if frames.shape[0] == 0:
        raise VideoError(source, "zero-length video: no frames")
    if times.size > 1 and np.any(np.diff(times) < 0):
        raise ValueError(f"{os.fspath(source)}: times must be non-decreasing")
    if duration is None:
        step = float(np.median(np.diff(times))) if times.size > 1 else 0.0
        duration = float(times[-1]) + step if step > 0 else float(times[-1]) + 1.0
    rng = _as_rng(rng) if jitter else None
    w = _check_windows(windows, float(duration), source)
    targets = _target_times(w, frames_per_clip, jitter, rng)
    idx = np.clip(np.searchsorted(times, targets, side="right") - 1, 0, frames.shape[0] - 1)
    uniq, inv = np.unique(idx, return_inverse=True)
    picked = frames[uniq]
    H, W = picked.shape[1:3]
    nw, nh = _short_side_dims(W, H, size)
    if (nh, nw) != (H, W):
        picked = _resize_uint8(picked, nw, nh)
    top, left = _crop_offsets(nh, nw, size, jitter, rng)
    picked = picked[:, top:top + size, left:left + size]
    return np.ascontiguousarray(picked[inv.reshape(idx.shape)])


def sliding_windows(duration: float, clip_seconds: float, stride_seconds: float) -> np.ndarray:
    """Windows ``float64 [N, 2]`` (seconds) that cover ``[0, duration]``, for embedding a whole video.

    Window ``k`` starts at ``k * stride_seconds`` and lasts ``clip_seconds``; windows are added until one
    reaches the end. The last window is *clipped* to end at ``duration`` (it may be shorter), so the grid
    stays regular (clip ``k`` always starts at ``k * stride``); a video shorter than one clip gives one
    window ``[0, duration]``. A remainder below 1 microsecond does not create an extra window. With
    ``stride_seconds > clip_seconds`` the windows leave gaps, and no window starts at or after the end (the
    video's tail after the last window is then not covered).
    """
    for name, v in (("duration", duration), ("clip_seconds", clip_seconds), ("stride_seconds", stride_seconds)):
        if not (isinstance(v, (int, float, np.floating, np.integer)) and math.isfinite(float(v)) and v > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
    duration, clip, stride = float(duration), float(clip_seconds), float(stride_seconds)
    if clip >= duration - _EPS:
        return np.array([[0.0, duration]])
    n = int(math.ceil((duration - clip - _EPS) / stride)) + 1
    starts = np.arange(n, dtype=np.float64) * stride
    starts = starts[starts < duration - _EPS]  # stride > clip: the last start may fall past the end
    return np.stack([starts, np.minimum(starts + clip, duration)], axis=1)


def clip_windows(start: float, end: float, num_clips: int) -> np.ndarray:
    """``[num_clips, 2]`` equal consecutive windows splitting ``[start, end]``."""
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    edges = np.linspace(float(start), float(end), num_clips + 1)
    return np.stack([edges[:-1], edges[1:]], axis=1)


# --------------------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------------------


def _iter_frames(container, stream, path, info: VideoInfo, origin: float,
                 seek_to: float = 0.0) -> Iterator[tuple[float, "av.VideoFrame"]]:
    """Yield ``(time_s, frame)`` in presentation order, from the key frame at or before ``seek_to``."""
    offset = origin
    if seek_to > 0 and stream.time_base is not None:
        try:
            container.seek(int((seek_to + offset) / stream.time_base), stream=stream, backward=True, any_frame=False)
        except av.error.FFmpegError as e:
            raise _SeekMissed() from e
    prev_t = None
    step = 1.0 / info.fps
    try:
        for frame in container.decode(stream):
            if frame.pts is not None and frame.time is not None:
                t = round(float(frame.time) - offset, _TIME_DECIMALS)
            else:  # no timestamp: assume constant frame rate after the previous frame
                t = (prev_t + step) if prev_t is not None else 0.0
            prev_t = t
            yield t, frame
    except av.error.FFmpegError as e:
        raise VideoError(path, f"corrupt or truncated video: decoding failed after "
                               f"{'%.3f s' % prev_t if prev_t is not None else 'no frames'}: {_ffmsg(e)}") from e


_local = threading.local()


def _to_rgb(frame, width: int, height: int, interp: Optional[str] = None) -> np.ndarray:
    """RGB ``uint8 [height, width, 3]`` via swscale (resize and colour conversion in one pass).

    Why a reused, single-threaded reformatter: ``frame.to_ndarray(format=...)`` builds a new swscale context
    (with its own thread pool) per frame, which costs more than decoding a small frame. One context per
    thread and process halves the CPU per clip. It is keyed by PID and never threaded because a swscale
    thread pool does not survive ``fork`` (DataLoader workers would wait forever on its dead threads).
    """
    fmt = getattr(_local, "reformatter", None)
    if fmt is None or _local.pid != os.getpid():
        from av.video.reformatter import VideoReformatter

        fmt = _local.reformatter = VideoReformatter()
        _local.pid = os.getpid()
    interp = interp or ("AREA" if width < frame.width else "BILINEAR")
    try:
        out = fmt.reformat(frame, width=width, height=height, format="rgb24", interpolation=interp, threads=1)
    except TypeError:  # PyAV < 14 has no `threads` argument (and no threaded swscale)
        out = fmt.reformat(frame, width=width, height=height, format="rgb24", interpolation=interp)
    return out.to_ndarray()


def _frame_seconds(frame, info: VideoInfo) -> float:
    """How long ``frame`` stays on screen: its own duration when the container has one (VFR), else 1/fps."""
    d, tb = getattr(frame, "duration", None), getattr(frame, "time_base", None)
    if d and tb is not None and d > 0:
        return float(d * tb)
    return 1.0 / info.fps


def _check_complete(path, info: VideoInfo, last: Optional[tuple[float, float]], needed_until: float,
                    from_t: float = 0.0) -> None:
    """Raise when decoding hit the end of the data clearly before ``needed_until`` (truncated file).

    ``last`` is ``(time, on-screen duration)`` of the last decoded frame; one extra frame interval of slack
    absorbs rounding in declared durations.
    """
    if last is None:
        raise VideoError(path, f"truncated or corrupt video: no frame could be decoded from {from_t:.3f} s on "
                               f"(the container declares {info.duration:.3f} s)")
    end = last[0] + last[1]
    if end < needed_until - 1.0 / info.fps - _EPS:
        raise VideoError(path, f"truncated or corrupt video: frames end at {end:.3f} s but the "
                               f"container declares {info.duration:.3f} s")


def decode_frames(path: PathLike, size: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
    """Decode every frame: ``(uint8 [N, H, W, 3], float64 times [N])`` (times in seconds from 0).

    With ``size``, frames are resized so their short side is ``size`` (aspect kept, **not cropped**), which
    is what an in-memory cache stores so that :func:`sample_clips` can still crop randomly.
    """
    info, origin = _probe(path)
    container, stream = _open(path)
    try:
        w, h = _short_side_dims(info.width, info.height, size)
        frames, times, last = [], [], None
        for t, frame in _iter_frames(container, stream, path, info, origin):
            times.append(t)
            frames.append(_to_rgb(frame, w, h))
            last = (t, _frame_seconds(frame, info))
        _check_complete(path, info, last, info.duration)
    finally:
        container.close()
    if len(times) > 1 and np.any(np.diff(times) < 0):  # defensive: decoders emit presentation order
        order = np.argsort(times, kind="stable")
        frames = [frames[i] for i in order]
        times = [times[i] for i in order]
    return np.stack(frames), np.asarray(times, dtype=np.float64)


def decode_windows(
    path: PathLike,
    windows,
    frames_per_clip: int,
    size: int,
    jitter: bool = False,
    rng: Optional[np.random.Generator] = None,
) -> np.ndarray:
    """Decode ``uint8 [T, F, size, size, 3]`` for arbitrary ``windows [T, 2]`` (seconds) of one file.

    Seeks to the key frame before the earliest window and stops after the latest, converting only the
    sampled frames. Gives exactly what :func:`sample_clips` gives on :func:`decode_frames` output (same
    selection rule, same order of random draws).
    """
    return _decode_windows(path, windows, frames_per_clip, size, jitter, rng, _probe(path))


def _decode_windows(path, windows, frames_per_clip, size, jitter, rng, probed) -> np.ndarray:
    info, origin = probed
    rng = _as_rng(rng) if jitter else None
    w = _check_windows(windows, info.duration, path)
    targets = _target_times(w, frames_per_clip, jitter, rng)
    flat = targets.ravel()
    order = np.argsort(flat, kind="stable")
    nw, nh = _short_side_dims(info.width, info.height, size)
    lo, hi = float(w[:, 0].min()), float(w[:, 1].max())
    seek = lo if lo > 2.0 / info.fps else 0.0
    try:
        picked, assign = _select_streaming(path, info, origin, flat[order], lo, hi, nw, nh, seek)
    except _SeekMissed:
        picked, assign = _select_streaming(path, info, origin, flat[order], lo, hi, nw, nh, 0.0)
    slots = np.empty_like(assign)
    slots[order] = assign  # back from sorted order to [T*F]
    frames = np.stack(picked)
    top, left = _crop_offsets(nh, nw, size, jitter, rng)
    frames = frames[:, top:top + size, left:left + size]
    return np.ascontiguousarray(frames[slots.reshape(targets.shape)])


class _SeekMissed(Exception):
    """The seek landed after the window start (imprecise index): decode from the beginning instead."""


def _select_streaming(path, info: VideoInfo, origin: float, sorted_t: np.ndarray, lo: float, hi: float, nw: int, nh: int,
                      seek: float) -> tuple[list, np.ndarray]:
    """Assign each (sorted) target time to the frame shown then, converting only assigned frames to RGB.

    Returns ``(picked RGB frames, slot of each sorted target)``. Same rule as ``searchsorted(times, t,
    side="right") - 1`` clipped to the first frame, evaluated while decoding.
    """
    n = sorted_t.size
    assign = np.empty(n, dtype=np.int64)
    picked: list[np.ndarray] = []

    def take(entry: list) -> int:
        if entry[2] is None:
            picked.append(_to_rgb(entry[1], nw, nh))
            entry[2] = len(picked) - 1
        return entry[2]

    container, stream = _open(path)
    try:
        k, prev = 0, None
        for t, frame in _iter_frames(container, stream, path, info, origin, seek_to=seek):
            if prev is None and seek > 0 and t > lo + _EPS:
                raise _SeekMissed()
            entry = [t, frame, None]
            src = entry if prev is None else prev  # targets before the first frame map to the first frame
            while k < n and sorted_t[k] < t:
                assign[k] = take(src)
                k += 1
            prev = entry
            if k >= n or t >= hi:
                break
        if k < n:
            last = None if prev is None else (prev[0], _frame_seconds(prev[1], info))
            _check_complete(path, info, last, min(hi, info.duration), seek)
            while k < n:
                assign[k] = take(prev)
                k += 1
    finally:
        container.close()
    return picked, assign


def decode_clips(
    path: PathLike,
    num_clips: int,
    frames_per_clip: int,
    size: int,
    start: Optional[float] = None,
    end: Optional[float] = None,
    jitter: bool = False,
    rng: Optional[np.random.Generator] = None,
) -> np.ndarray:
    """Decode ``uint8 [T, F, size, size, 3]``: the window ``[start, end]`` split into ``T`` equal clips.

    ``start`` / ``end`` default to the whole video; the window is clamped to the video (a start at or
    after the end raises :class:`VideoError`). See the module docstring for the sampling rule.
    """
    probed = _probe(path)
    info = probed[0]
    s = 0.0 if start is None else float(start)
    e = info.duration if end is None else float(end)
    if not (math.isfinite(s) and math.isfinite(e)):
        raise ValueError(f"{os.fspath(path)}: start/end must be finite, got {start!r}, {end!r}")
    if e <= s:
        raise ValueError(f"{os.fspath(path)}: end must be > start, got [{s:.3f}, {e:.3f}] s")
    if s >= info.duration - _EPS:
        raise VideoError(path, f"window [{s:.3f}, {e:.3f}] s starts at or after the end of the video "
                               f"(duration {info.duration:.3f} s)")
    if e <= _EPS:
        raise VideoError(path, f"window [{s:.3f}, {e:.3f}] s ends at or before the start of the video")
    s, e = max(s, 0.0), min(e, info.duration)
    return _decode_windows(path, clip_windows(s, e, num_clips), frames_per_clip, size, jitter, rng, probed)


# --------------------------------------------------------------------------------------------------------
# Fixed-rate sampling (the feature-extraction protocols of the field: ffmpeg `fps`, `scale`, `crop` filters)
# --------------------------------------------------------------------------------------------------------


def rate_sample_times(duration: float, fps: float) -> np.ndarray:
    """Times (s) at which ffmpeg's ``fps=FPS`` filter takes its frames: output frame ``n`` (of
    ``max(1, round(duration·fps))``, halves rounded up) is the last input frame whose time rounds to ``n`` or
    earlier in units of 1/FPS, i.e. the frame shown just before ``(n + 0.5) / fps``.

    Why this rule: the extractors behind the published CLIP (HERO_Video_Feature_Extractor, 0.5 fps) and S3D
    (fairseq MMPT, 30 fps) features resample with that filter (default ``round=near``); sampling the same
    instants gives the same frames. A frame exactly at ``(n + 0.5) / fps`` rounds up to ``n + 1``, hence "before"
    (:func:`iter_rate_frames` compares strictly)."""
    if not (math.isfinite(float(fps)) and fps > 0):
        raise ValueError(f"fps must be a finite number > 0, got {fps!r}")
    n = max(1, int(math.floor(float(duration) * float(fps) + 0.5)))
    return np.round((np.arange(n, dtype=np.float64) + 0.5) / float(fps), _TIME_DECIMALS)


def protocol_dims(width: int, height: int, size: int) -> tuple[int, int]:
    """(width, height) after the extractors' resize: short side ``size``, long side ``int(long·size/short)``
    (truncated, as their ``_get_output_dim`` computes it; :func:`_short_side_dims` rounds instead)."""
    if height >= width:
        return size, int(height * size / width)
    return int(width * size / height), size


def iter_rate_frames(path: PathLike, fps: float, size: int, chunk: int = 256) -> Iterator[np.ndarray]:
    """The frames of ``ffmpeg -vf fps=FPS,scale=W:H,crop=size:size`` (centre crop at ``int((W-size)/2)``) as
    ``uint8 [<=chunk, size, size, 3]`` arrays, in order, in one decoding pass (memory: one chunk).

    Sampling instants: :func:`rate_sample_times` of the container's duration; scaling: swscale bicubic (the
    ``scale`` filter's default) to :func:`protocol_dims`. Only the selected frames are converted to RGB.
    A file whose frames stop clearly before its declared duration raises :class:`VideoError` (truncated)."""
    info, origin = _probe(path)
    targets = rate_sample_times(info.duration, fps)
    nw, nh = protocol_dims(info.width, info.height, size)
    top, left = (nh - size) // 2, (nw - size) // 2
    def convert(entry: list) -> np.ndarray:
        if entry[2] is None:
            # a copy: the reused reformatter may hand out a view of its own buffer, which the next frame overwrites
            entry[2] = _to_rgb(entry[1], nw, nh, interp="BICUBIC")[top:top + size, left:left + size].copy()
        return entry[2]

    out: list[np.ndarray] = []
    n, k, prev = targets.size, 0, None
    container, stream = _open(path)
    try:
        for t, frame in _iter_frames(container, stream, path, info, origin):
            entry = [t, frame, None]
            src = entry if prev is None else prev  # instants before the first frame take the first frame
            while k < n and targets[k] <= t:  # strict: a frame exactly at the instant belongs to the next one
                out.append(convert(src))
                k += 1
                if len(out) == chunk:
                    yield np.stack(out)
                    out = []
            prev = entry
            if k >= n:
                break
        if k < n:
            last = None if prev is None else (prev[0], _frame_seconds(prev[1], info))
            _check_complete(path, info, last, info.duration)
            while k < n:
                out.append(convert(prev))
                k += 1
                if len(out) == chunk:
                    yield np.stack(out)
                    out = []
    finally:
        container.close()
    if out:
        yield np.stack(out)
