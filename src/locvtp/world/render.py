"""Rendering of a planned video: per-frame object tracks, anti-aliased shapes, the H.264 MP4.

Apart from the plan because it is the only part that costs time and needs PyAV; a plan renders to the same
frames on every machine (numpy only, float32, no randomness here).
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from locvtp.world.plan import (
    BLINK_DIM, BLINK_HALF_PERIOD, COLOURS, CYCLIC, FPS, FRAME_SIZE, MOVE_SPEED, SIZE_RATE, VideoSpec, cyclic_motion,
)


# ------------------------------------------------------------------------------------------------- rendering
_GRID = (np.arange(FRAME_SIZE, dtype=np.float32) + 0.5)
_HALF = np.float32(FRAME_SIZE / 2)


def _coverage(shape: str, dx: np.ndarray, dy: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] from a distance-like function of each shape (unit-ish gradient)."""
    adx, ady = np.abs(dx), np.abs(dy)
    if shape == "circle":
        d, g = np.sqrt(dx * dx + dy * dy), 1.0
    elif shape == "square":
        d, g, r = np.maximum(adx, ady), 1.0, r * 0.88
    elif shape == "diamond":
        d, g, r = (adx + ady) * 0.7071, 1.0, r * 0.88
    elif shape == "cross":
        arm = 0.38
        d = np.minimum(np.maximum(adx, ady / arm), np.maximum(adx / arm, ady))
        g = 1.0 / arm
        r = r * 1.05
    elif shape == "triangle":  # apex up; equilateral with circumradius R = 1.25 r
        d, g, r = 2.0 * np.maximum(dy, 0.8660254 * adx - 0.5 * dy), 2.0, r * 1.25
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return np.clip((r - d) / g + 0.5, 0.0, 1.0)


def _blink(a: np.ndarray, t: np.ndarray, start: float, end: float) -> np.ndarray:
    """Intensity of a blinking object: BLINK_HALF_PERIOD frames on, then as many dimmed, during [start, end)."""
    inside = (t >= start) & (t < end)
    phase = np.floor((t - start) * FPS + 1e-6).astype(np.int64) // BLINK_HALF_PERIOD
    return np.where(inside & (phase % 2 == 1), BLINK_DIM, a)


def _cyclic_tracks(spec: VideoSpec) -> dict[str, np.ndarray]:
    """`object_tracks` of a generator-1.4 moment video: each event continues from the state the previous one left
    (the later frames of an object hold its state at rest), moving by `cyclic_motion`."""
    n, k = len(spec.objects), spec.num_frames
    t = np.arange(k, dtype=np.float64) / FPS
    x = np.repeat(np.array([o.x for o in spec.objects], dtype=np.float64)[:, None], k, axis=1)
    y = np.repeat(np.array([o.y for o in spec.objects], dtype=np.float64)[:, None], k, axis=1)
    r = np.repeat(np.array([o.r for o in spec.objects], dtype=np.float64)[:, None], k, axis=1)
    a = np.ones((n, k), dtype=np.float64)
    for e in sorted(spec.events, key=lambda e: e.start):
        i, after = e.obj, t >= e.start
        if e.action == "blink":
            a[i] = _blink(a[i], t, e.start, e.end)
            continue
        p = np.clip(t[after] - e.start, 0.0, e.end - e.start)
        x[i, after], y[i, after], r[i, after] = cyclic_motion(spec.objects[i].shape, x[i, -1], y[i, -1], r[i, -1],
                                                              e.action, p)
    return {"x": x, "y": y, "r": r, "intensity": a, "t": t}


def object_tracks(spec: VideoSpec) -> dict[str, np.ndarray]:
    """Per-frame state of every object: x, y, r, intensity, each [num_objects, num_frames]."""
    if spec.extra.get("motion") == CYCLIC:
        return _cyclic_tracks(spec)
    n, k = len(spec.objects), spec.num_frames
    t = np.arange(k, dtype=np.float64) / FPS
    x = np.array([[o.x] * k for o in spec.objects], dtype=np.float64).reshape(n, k)
    y = np.array([[o.y] * k for o in spec.objects], dtype=np.float64).reshape(n, k)
    r = np.array([[o.r] * k for o in spec.objects], dtype=np.float64).reshape(n, k)
    a = np.ones((n, k), dtype=np.float64)
    for e in spec.events:
        progress = np.clip(t - e.start, 0.0, e.end - e.start)
        if e.action == "move_left":
            x[e.obj] -= MOVE_SPEED * progress
        elif e.action == "move_right":
            x[e.obj] += MOVE_SPEED * progress
        elif e.action == "move_up":
            y[e.obj] -= MOVE_SPEED * progress
        elif e.action == "move_down":
            y[e.obj] += MOVE_SPEED * progress
        elif e.action == "grow":
            r[e.obj] += SIZE_RATE * progress
        elif e.action == "shrink":
            r[e.obj] -= SIZE_RATE * progress
        elif e.action == "blink":
            a[e.obj] = _blink(a[e.obj], t, e.start, e.end)
    return {"x": x, "y": y, "r": r, "intensity": a, "t": t}


def render_video(spec: VideoSpec) -> np.ndarray:
    """uint8 [num_frames, H, W, 3] frames of a video spec (vectorized over frames)."""
    k = spec.num_frames
    tex_rng = np.random.default_rng(spec.texture_seed)
    coarse = tex_rng.normal(0.0, 4.0, size=(4, 4, 3)).astype(np.float32)
    texture = np.repeat(np.repeat(coarse, FRAME_SIZE // 4, 0), FRAME_SIZE // 4, 1)
    img = np.broadcast_to(np.asarray(spec.background, np.float32) + texture, (k, FRAME_SIZE, FRAME_SIZE, 3)).copy()
    tr = object_tracks(spec)
    periodic = spec.extra.get("motion") == CYCLIC
    layers = {}
    for i, o in enumerate(spec.objects):
        state = np.stack([tr["x"][i], tr["y"][i], tr["r"][i], tr["intensity"][i]], axis=1).astype(np.float32)
        # Objects are still most of the time: rasterize each distinct state once, then gather per frame.
        uniq, inverse = np.unique(state, axis=0, return_inverse=True)
        dx = _GRID[None, None, :] - uniq[:, 0, None, None]
        dy = _GRID[None, :, None] - uniq[:, 1, None, None]
        if periodic:  # wrapped moves: the object leaving one side shows on the other
            dx, dy = np.mod(dx + _HALF, FRAME_SIZE) - _HALF, np.mod(dy + _HALF, FRAME_SIZE) - _HALF
        cov = _coverage(o.shape, dx, dy, uniq[:, 2, None, None]) * uniq[:, 3, None, None]
        # composite only inside the box the object ever touches (most of the frame is untouched)
        rows, cols = np.flatnonzero(cov.any(axis=(0, 2))), np.flatnonzero(cov.any(axis=(0, 1)))
        if rows.size:
            y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
            layers[i] = (cov[:, y0:y1, x0:x1], inverse.reshape(-1), (y0, y1, x0, x1),
                         np.asarray(COLOURS[o.colour], np.float32))
    # Draw order: distractors, then actors, and the acting object of an event on top during that event (it may
    # pass over others; at rest actors never overlap each other, see _feasible).
    static = sorted(range(len(spec.objects)), key=lambda i: spec.objects[i].role == "actor")
    segments, cur = [], 0
    for e in sorted(spec.events, key=lambda e: e.start):
        ks, ke = min(round(e.start * FPS), k), min(round(e.end * FPS), k)
        if ks > cur:
            segments.append((cur, ks, None))
        segments.append((ks, ke, e.obj))
        cur = ke
    if cur < k:
        segments.append((cur, k, None))
    for k0, k1, acting in segments:
        order = static if acting is None else [i for i in static if i != acting] + [acting]
        for i in order:
            if i not in layers:
                continue
            cov, inverse, (y0, y1, x0, x1), colour = layers[i]
            c = cov[inverse[k0:k1]][..., None]
            box = img[k0:k1, y0:y1, x0:x1]
            box += (colour - box) * c
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def write_mp4(path: Path, frames: np.ndarray, fps: int = FPS) -> None:
    """H.264 yuv420p MP4 with a fixed single-threaded x264 configuration (reproducible bytes), atomically."""
    import av

    from locvtp.files import atomic_path

    path = Path(path)
    h, w = frames.shape[1:3]
    if h % 2 or w % 2:
        raise ValueError(f"{path}: frame size {w}x{h} must be even for yuv420p")
    with atomic_path(path, suffix=".mp4") as tmp:  # a failed or killed write leaves no half MP4 under the name
        with av.open(str(tmp), mode="w", format="mp4") as container:
            # No B-frames and a fixed 2-s GOP: cheap seeking for window decoding; explicit pts: reproducible.
            stream = container.add_stream("libx264", rate=fps, options={
                "crf": "4", "preset": "ultrafast", "threads": "1",
                "x264-params": f"bframes=0:keyint={2 * fps}:min-keyint={2 * fps}:scenecut=0"})
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            stream.codec_context.thread_count = 1
            stream.time_base = Fraction(1, fps)
            for i, arr in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")
                frame.pts, frame.time_base = i, Fraction(1, fps)
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
