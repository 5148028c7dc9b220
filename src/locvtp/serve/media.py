"""Video files for the browser: is a file playable as it is, H.264 MP4 transcoding, keyframe thumbnails.

Why here and not in ``locvtp.data.video``: this is about *showing* a video (what a browser's ``<video>`` element
plays), never about what the model sees — the model's inputs always come from ``LocVTPPredictor.decode_video``
on the original file. Every writer goes through :func:`locvtp.files.atomic_path`, so a killed transcode leaves no
half MP4 behind under the cached name.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from locvtp.data.video import VideoError
from locvtp.files import atomic_path

# What every current browser (Chromium, Firefox, Safari) plays in a <video> element without plug-ins.
PLAYABLE = {
    "mp4": {"h264", "av1"},
    "mov": {"h264"},
    "webm": {"vp8", "vp9", "av1"},
}
PLAYABLE_PIX_FMTS = {"yuv420p", "yuvj420p"}


def _msg(exc: BaseException) -> str:
    """PyAV's reason without the file name (a server path must not reach a client)."""
    return str(getattr(exc, "strerror", None) or exc.__class__.__name__)


def _av():
    import av

    return av


def describe(path: str | Path) -> dict:
    """Container, codec, pixel format, size and duration of the first video stream (a :class:`VideoError`
    naming ``path`` when there is none or the container cannot be opened)."""
    av = _av()
    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise VideoError(path, "has no video stream")
            s = c.streams.video[0]
            cc = s.codec_context
            dur = float(s.duration * s.time_base) if s.duration and s.time_base else (
                float(c.duration) / 1e6 if c.duration else 0.0)
            return {"format": c.format.name, "codec": cc.name, "pix_fmt": cc.pix_fmt or "",
                    "width": int(cc.width or 0), "height": int(cc.height or 0), "duration": dur,
                    "frames": int(s.frames or 0),
                    "rate": float(s.average_rate) if s.average_rate else 0.0}
    except VideoError:
        raise
    except Exception as exc:  # noqa: BLE001 (PyAV raises many types: all mean "not a video we can open")
        raise VideoError(path, f"cannot open as a video container (corrupt or truncated?): {_msg(exc)}") from None


def is_playable(info: dict) -> bool:
    """True when a browser plays the file as it is (``info`` from :func:`describe`)."""
    formats = str(info.get("format", "")).split(",")
    for fmt, codecs in PLAYABLE.items():
        if fmt in formats and info.get("codec") in codecs and info.get("pix_fmt") in PLAYABLE_PIX_FMTS:
            return True
    return False


def transcode_h264(src: str | Path, dst: str | Path, progress: Optional[Callable[[float], None]] = None,
                   max_side: int = 1280) -> Path:
    """Re-encode the first video stream of ``src`` as H.264 (yuv420p, even size, at most ``max_side`` px) in an
    MP4 with the index up front (``+faststart``: playback starts before the download ends); audio is dropped.
    Frame times are kept (relative to the first frame), so a window's seconds mean the same in the player as in
    the grounding. ``progress(fraction)`` is called now and then."""
    av = _av()
    dst = Path(dst)
    dst.parent.mkdir(exist_ok=True)  # never its parents: a late write cannot bring back a removed work folder
    try:
        with av.open(str(src)) as inp:
            if not inp.streams.video:
                raise VideoError(src, "has no video stream")
            vs = inp.streams.video[0]
            vs.thread_type = "AUTO"
            w, h = int(vs.codec_context.width), int(vs.codec_context.height)
            scale = min(1.0, max_side / max(w, h, 1))
            ow, oh = max(2, int(round(w * scale / 2)) * 2), max(2, int(round(h * scale / 2)) * 2)
            total = float(vs.duration * vs.time_base) if vs.duration and vs.time_base else (
                float(inp.duration) / 1e6 if inp.duration else 0.0)
            rate = vs.average_rate or vs.guessed_rate or Fraction(25)
            tb = Fraction(1, 1000)
            with atomic_path(dst, suffix=".mp4") as tmp:
                with av.open(str(tmp), mode="w", format="mp4", options={"movflags": "+faststart"}) as out:
                    os_ = out.add_stream("libx264", rate=rate, options={"preset": "veryfast", "crf": "23"})
                    os_.width, os_.height, os_.pix_fmt = ow, oh, "yuv420p"
                    os_.time_base = tb
                    os_.codec_context.time_base = tb
                    t0 = None
                    last = -1
                    for i, frame in enumerate(inp.decode(vs)):
                        t = frame.time if frame.time is not None else i / float(rate)
                        t0 = t if t0 is None else t0
                        pts = int(round((t - t0) * 1000))
                        if pts <= last:
                            continue  # a duplicate or out-of-order timestamp: the encoder needs increasing pts
                        last = pts
                        f = frame.reformat(width=ow, height=oh, format="yuv420p")
                        f.pts, f.time_base = pts, tb
                        for packet in os_.encode(f):
                            out.mux(packet)
                        if progress is not None and total > 0 and i % 25 == 0:
                            progress(min(1.0, (t - t0) / total))
                    if t0 is None:
                        raise VideoError(src, "no frame could be decoded")
                    for packet in os_.encode():
                        out.mux(packet)
    except VideoError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise VideoError(src, f"cannot be transcoded for playback (corrupt or truncated?): {_msg(exc)}") from None
    if progress is not None:
        progress(1.0)
    return dst


def thumbnail_jpeg(src: str | Path, seconds: float, dst: str | Path, width: int = 192) -> Path:
    """A JPEG of the frame shown at ``seconds`` (relative to the first frame) of ``src``, ``width`` px wide."""
    av = _av()
    from PIL import Image

    dst = Path(dst)
    dst.parent.mkdir(exist_ok=True)  # never its parents: a late write cannot bring back a removed work folder
    try:
        with av.open(str(src)) as c:
            if not c.streams.video:
                raise VideoError(src, "has no video stream")
            s = c.streams.video[0]
            start = float(s.start_time * s.time_base) if s.start_time is not None and s.time_base else 0.0
            target = start + max(0.0, float(seconds))
            if s.time_base and target > start + 1.0:
                c.seek(int(target / s.time_base), stream=s, backward=True, any_frame=False)
            img = None
            for frame in c.decode(s):
                img = frame
                if frame.time is None or frame.time >= target - 1e-3:
                    break
            if img is None:
                raise VideoError(src, "no frame could be decoded")
            pil = img.to_image()
    except VideoError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise VideoError(src, f"no thumbnail: {_msg(exc)}") from None
    h = max(1, int(round(pil.height * width / max(pil.width, 1))))
    resample = Image.NEAREST if pil.width < width // 2 else Image.BILINEAR
    pil = pil.convert("RGB").resize((width, h), resample)
    with atomic_path(dst, suffix=".jpg") as tmp:
        pil.save(tmp, format="JPEG", quality=85)
    return dst


def write_test_video(path: str | Path, seconds: float = 6.0, fps: int = 10, size: int = 64,
                     codec: str = "mpeg4", fmt: str = "avi") -> Path:
    """A small moving-square video (tests and the benchmark; ``codec="mpeg4"`` in AVI is MPEG-4 Part 2, which
    browsers do not play)."""
    av = _av()
    path = Path(path)
    with av.open(str(path), mode="w", format=fmt) as c:
        s = c.add_stream(codec, rate=fps)
        s.width = s.height = size
        s.pix_fmt = "yuv420p"
        n = int(round(seconds * fps))
        for i in range(n):
            a = np.zeros((size, size, 3), np.uint8)
            a[..., 2] = 40
            x = int((size - 16) * i / max(1, n - 1))
            a[size // 2 - 8: size // 2 + 8, x: x + 16] = (230, 60, 30)
            f = av.VideoFrame.from_ndarray(a, format="rgb24")
            f.pts = i
            f.time_base = Fraction(1, fps)
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


__all__ = ["PLAYABLE", "describe", "is_playable", "thumbnail_jpeg", "transcode_h264", "write_test_video"]
