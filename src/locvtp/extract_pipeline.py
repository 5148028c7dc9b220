"""The decode -> encode pipeline of ``locvtp extract`` (docs/usage.md, "Extraction"): a pixel checkpoint's clips and
the standard backbones' protocol frames (``--backbone clip|s3d``) alike.

Why a pipeline: one process that decodes a video, then encodes it, leaves a core idle half of the time, and a
model forward on one short video's clips is a small, slow batch. Here

* worker processes (a :class:`torch.utils.data.DataLoader` over :class:`ClipChunks`, ``num_workers`` =
  ``--workers``) probe and decode videos with PyAV while the main process encodes;
* a long video is cut into clip ranges (:func:`chunk_clips`: at most ``CHUNK_BYTES`` of decoded pixels each), and
  the loader keeps ``PREFETCH`` chunks per worker in flight: memory is bounded whatever the video lengths;
* the main process packs the clips of consecutive chunks -- of any videos -- into batches of exactly
  ``--batch-size`` clips (:class:`_Packer`; a pinned buffer and non-blocking copies on CUDA), encodes them and
  scatters the outputs back to their videos;
* a video whose clips are all encoded is finished (e.g. a checkpoint's temporal layers) and handed to a writer
  thread (:class:`_Writes`), so the journal's writes overlap the encoding of the next batch (the HDF5 journal
  commits finished videos in groups, about once a second: :mod:`locvtp.featurestore.writer`).

What differs between models is two objects given to :class:`Pipeline`:

* the *decoding* (picklable: it runs in the workers) says what a unit of decoding is: ``clip_shape`` (one clip,
  uint8 ``[F, S, S, 3]``), ``chunk`` (clips per range), ``split`` (whether the ranges of one video may go to
  different workers), ``windows(duration)`` -> the clip windows ``[N, 2]`` (a pure function of the duration;
  :func:`video_header` reads the duration) and ``decode(path, windows, starts)`` -> ``(start, clips)`` per
  range. :class:`WindowClips` is a checkpoint's (sliding windows; a range is decoded with a seek, so range *k* of
  video *i* is worker ``(i + k) mod W``'s and one long video keeps every worker busy);
  :class:`locvtp.standard_features.RateClips` a standard protocol's (ffmpeg ``fps`` frames: one pass per video,
  hence one worker per video). ``--runner ray``'s decode tasks (:mod:`locvtp.extract_ray`) decode through the
  same object;
* the *encoder* says how a batch is encoded and a video finished: ``device``, ``clips(x)`` (uint8 clips of any
  videos -> (per-clip output, backbone features or None)) and ``finish(out, bb)`` (one video's outputs, in order
  -> (features, backbone features or None)): :class:`locvtp.inference.ClipBatchEncoder` or
  :class:`locvtp.standard_features.StandardBackbone`.

A video that cannot be decoded arrives as a failure record (the worker catches the input's errors, as the
serial loop does); a bug in a worker is re-raised here by the loader. The features equal the per-video path
(one decode of the whole video, one encode of its clips) up to float rounding: the decoded frames are identical
(a range decode selects the same frames), only the batches differ.
"""
from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Optional

import numpy as np
import torch

from locvtp.featurestore.record import ClipFeatures

CHUNK_BYTES = 32 << 20  # decoded pixels per clip range (a worker's unit of work)
PREFETCH = 2  # chunks in flight per worker (DataLoader prefetch_factor)
WRITES_AHEAD = 8  # finished videos queued for the writer thread
COMMIT_CHECK_SECONDS = 0.5  # how often the loop asks the writer to commit its journal group (when due)
# What the fork server imports once, so that each decoding worker starts without importing torch and PyAV anew;
# first the hook that makes the server die with the run (locvtp.fork_server)
PRELOAD = ("locvtp.fork_server", "locvtp.extract_pipeline", "locvtp.data.video", "locvtp.standard_features")


def chunk_clips(frames_per_clip: int, frame_size: int) -> int:
    """Clips per range: as many as fit in ``CHUNK_BYTES`` of uint8 pixels, never fewer than one."""
    per_clip = frames_per_clip * frame_size * frame_size * 3
    return max(1, CHUNK_BYTES // per_clip)


@dataclass
class WindowClips:
    """A checkpoint's decoding (its :class:`locvtp.predictor.Preprocessing`): sliding windows of
    ``clip_seconds``, ``frames_per_clip`` frames each; a clip range is decoded with a seek to it, so the ranges of
    one video are split between the workers. ``chunk``: clips per range (0: :func:`chunk_clips`)."""

    prep: Any
    chunk: int = 0
    split = True

    def __post_init__(self) -> None:
        self.chunk = int(self.chunk) or chunk_clips(self.prep.frames_per_clip, self.prep.frame_size)

    @property
    def clip_shape(self) -> tuple[int, ...]:
        return (self.prep.frames_per_clip, self.prep.frame_size, self.prep.frame_size, 3)

    def windows(self, duration: float) -> np.ndarray:
        """The clip windows ``[N, 2]`` (seconds) of a video of ``duration``: a pure function of it, so a decode task
        on another machine (``--runner ray``) recomputes a range's windows instead of receiving them."""
        from locvtp.data import video as V

        p = self.prep
        return np.asarray(V.sliding_windows(float(duration), p.clip_seconds, p.stride_seconds),
                          np.float64).reshape(-1, 2)

    def decode(self, path: Any, windows: np.ndarray, starts: Iterable[int]) -> Iterator[tuple[int, np.ndarray]]:
        from locvtp.data import video as V

        p = self.prep
        for lo in starts:
            w = windows[lo:lo + self.chunk]
            yield lo, np.asarray(V.decode_windows(path, w, p.frames_per_clip, p.frame_size, jitter=False, rng=None))


class ClipChunks(torch.utils.data.IterableDataset):
    """Videos -> records of at most ``decoding.chunk`` consecutive decoded clips (run in the loader's workers).

    A record is a dict: ``index`` (of the video in ``items``), ``start`` (its first clip), ``total`` (the
    video's clips), ``clips`` uint8 ``[n, *clip_shape]`` (numpy), ``windows`` ``[n, 2]``, ``fps``, ``duration``; or,
    for a video that cannot be read, ``index`` and ``error`` (the reason, as the failures file writes it). After a
    failure record no further chunk of that video follows."""

    def __init__(self, items: list[Any], decoding: Any, errors: tuple[type[BaseException], ...]):
        super().__init__()
        self.items, self.decoding, self.errors = items, decoding, errors

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        for index in range(len(self.items)):
            if self.decoding.split or index % nw == wid:
                yield from self._video(index, wid, nw)

    def _video(self, index: int, wid: int, nw: int) -> Iterator[dict[str, Any]]:
        """The ranges of one video this worker decodes: all of them when the decoding is not split, else range k
        of video i is worker (i + k) mod W's (each worker probes every video: a header read, cheap next to
        decoding)."""
        d, path, first = self.decoding, self.items[index].path, index % nw == wid
        try:
            windows, fps, duration = video_header(d, path)
        except self.errors as exc:
            if first:  # the worker of range 0 reports a video that cannot be read
                yield {"index": index, "error": error_reason(exc)}
            return
        total, chunk = int(windows.shape[0]), int(d.chunk)
        starts = range((wid - index) % nw * chunk, total, chunk * nw) if d.split else range(0, total, chunk)
        try:
            for lo, clips in d.decode(path, windows, starts):
                yield {"index": index, "start": lo, "total": total, "clips": clips,
                       "windows": windows[lo:lo + clips.shape[0]], "fps": fps, "duration": duration}
        except self.errors as exc:
            yield {"index": index, "error": error_reason(exc)}


def error_reason(exc: BaseException) -> str:
    """How the failures file words a video's error (one rule for every runner)."""
    return f"{type(exc).__name__}: {exc}"


def video_header(decoding: Any, path: Any) -> tuple[np.ndarray, float, float]:
    """(windows, fps, duration) of the video at ``path``: a header read, then ``decoding.windows(duration)``; a
    video without a clip raises ``ValueError``, so it becomes a failure record like an unreadable one (every
    runner probes through this)."""
    from locvtp.data.video import probe_video

    info = probe_video(path)
    duration = float(info.duration)
    windows = decoding.windows(duration)
    if windows.shape[0] == 0:
        raise ValueError("no clips: the video has no decodable frames")
    return windows, float(info.fps), duration


def _worker_init(_: int) -> None:
    """Decoding needs no torch threads: leave the cores to PyAV and to the encoder. The worker dies with its
    parent -- the fork server (which dies with the run: :func:`start_worker_server`), or the run itself where
    workers are spawned -- so no worker outlives a killed run (:func:`locvtp.runtime.die_with_parent`)."""
    from locvtp.runtime import die_with_parent, fork_server_pid

    torch.set_num_threads(1)
    die_with_parent(fork_server_pid())


def chunk_loader(dataset: ClipChunks, workers: int, pin: bool) -> torch.utils.data.DataLoader:
    """The loader of ``dataset`` (records one by one, not collated); ``workers`` = 0 decodes in this process.

    The records hold numpy arrays, not tensors, on purpose: they travel pickled through the workers' pipes
    instead of torch's shared-memory files, so a small ``/dev/shm`` (Docker's 64 MB default) or a file-size
    limit cannot lose a record in the queue's feeder thread -- which leaves the loader waiting forever.

    The workers are started by a fork server (spawn where there is none), never forked from this process: a
    forked worker inherits the output's lock (an ``flock`` lives as long as any copy of its descriptor), so after
    a SIGKILL of the extraction its orphaned workers kept the output locked and the resuming run was refused; a
    fork also copies the writer thread's and the encoder's state mid-flight (and CUDA cannot be forked)."""
    kw: dict[str, Any] = {}
    if workers > 0:
        kw = {"prefetch_factor": PREFETCH, "worker_init_fn": _worker_init, "persistent_workers": False,
              "multiprocessing_context": worker_context()}
    return torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers, pin_memory=False,
                                       collate_fn=_keep, **kw)


def worker_context() -> Any:
    """The decoding workers' multiprocessing context: a fork server (spawn where there is none; see
    :func:`chunk_loader` for why never a fork of this process)."""
    import multiprocessing as mp

    return mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")


def start_worker_server(workers: int) -> None:
    """Start the fork server now, importing torch and PyAV in it (:data:`PRELOAD`) while this process loads the
    model: each decoding worker is then forked from it ready to decode. Without this, every worker imported torch
    itself when the loop began (about 1 s before the first clip, measured: docs/benchmarks.md, "Extraction").
    The server is a fresh interpreter holding only its own pipes (not this process's files, not the output's lock);
    it dies with this process, by whatever signal (:func:`locvtp.runtime.fork_server_owner`; on its own it outlived
    a SIGKILL of the run for hours, with its workers), and its workers die with it (:func:`_worker_init`). A no-op
    without workers or fork server, or when the server already runs."""
    ctx = worker_context()
    if workers <= 0 or ctx.get_start_method() != "forkserver":
        return
    from multiprocessing import forkserver

    from locvtp.runtime import fork_server_owner

    ctx.set_forkserver_preload(list(PRELOAD))
    with fork_server_owner():
        forkserver.ensure_running()


def _keep(record: dict[str, Any]) -> dict[str, Any]:
    return record


@dataclass
class _Video:
    """One video's outputs being filled in, clip range by clip range."""

    index: int
    total: int
    fps: float
    duration: float
    out: Optional[np.ndarray] = None
    bb: Optional[np.ndarray] = None
    windows: Optional[np.ndarray] = None
    filled: int = 0
    failed: bool = False


@dataclass
class _Packer:
    """Clips of consecutive chunks packed into fixed-size batches; :meth:`flush` encodes one and scatters it."""

    encoder: Any
    batch: int
    clip_shape: tuple[int, ...]  # one uint8 clip
    pin: bool
    buf: torch.Tensor = field(init=False)
    view: np.ndarray = field(init=False)  # the buffer's memory as numpy
    pending: list[tuple[_Video, int, int]] = field(default_factory=list)  # (video, its first clip, count)
    n: int = 0

    def __post_init__(self) -> None:
        self.buf = torch.empty((self.batch, *self.clip_shape), dtype=torch.uint8)
        if self.pin:
            self.buf = self.buf.pin_memory()
        self.view = self.buf.numpy()

    def add(self, video: _Video, start: int, clips: np.ndarray) -> Iterator[_Video]:
        """Queue ``clips`` (of ``video``, from its clip ``start``); yields the videos a full batch completes.

        The copy is numpy's: torch's ``copy_`` of a small uint8 block went through its thread pool and cost
        ~8 ms per call on a busy machine (numpy: microseconds)."""
        at = 0
        while at < clips.shape[0]:
            take = min(self.batch - self.n, clips.shape[0] - at)
            self.view[self.n:self.n + take] = clips[at:at + take]
            self.pending.append((video, start + at, take))
            self.n += take
            at += take
            if self.n == self.batch:
                yield from self.flush()

    def flush(self) -> list[_Video]:
        """Encode the queued clips; returns the videos whose last clip was in this batch (in order)."""
        if self.n == 0:
            return []
        out, bb = self.encoder.clips(self.buf[:self.n])
        done, at = [], 0
        for video, start, count in self.pending:
            if video.out is None:
                video.out = np.empty((video.total, out.shape[1]), np.float32)
                video.bb = np.empty((video.total, bb.shape[1]), np.float32) if bb is not None else None
            video.out[start:start + count] = out[at:at + count]
            if bb is not None:
                video.bb[start:start + count] = bb[at:at + count]
            at += count
            video.filled += count
            if video.filled == video.total and not video.failed:
                done.append(video)
        self.pending, self.n = [], 0
        return done


class _Writes:
    """The store's writes (journal fsyncs, npy files) on one background thread, in submission order; at most
    ``WRITES_AHEAD`` queued. An error of a write (a full disk) is raised in the caller at the next call."""

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="extract-write")
        self.futures: deque[Future] = deque()

    def submit(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> None:
        self.futures.append(self.pool.submit(fn, *args, **kw))
        while len(self.futures) > WRITES_AHEAD or (self.futures and self.futures[0].done()):
            self.futures.popleft().result()

    def drain(self) -> None:
        while self.futures:
            self.futures.popleft().result()

    def close(self) -> None:
        try:
            self.drain()
        finally:
            self.pool.shutdown(wait=True)


class _Every:
    """A callable that is true at most once every ``seconds``."""

    def __init__(self, seconds: float):
        import time

        self.seconds, self.clock = seconds, time.monotonic
        self.last = self.clock()

    def __call__(self) -> bool:
        now = self.clock()
        if now - self.last < self.seconds:
            return False
        self.last = now
        return True


def finish_video(encoder: Any, video: _Video, video_id: str, backbone: bool) -> ClipFeatures:
    """A video whose clips are all encoded -> its store record (the temporal layers run here, if any)."""
    emb, bb = encoder.finish(video.out, video.bb)
    feats = bb if backbone else emb
    if not np.all(np.isfinite(feats)):
        raise ValueError("non-finite values in the features")
    return ClipFeatures(video_id, feats, video.windows, video.fps, video.duration)


def video_state(record: dict[str, Any], states: dict[int, _Video]) -> _Video:
    """The state of ``record``'s video (created at its first chunk); its windows are filled in as they come."""
    idx = int(record["index"])
    v = states.get(idx)
    if v is None:
        v = states[idx] = _Video(idx, int(record["total"]), float(record["fps"]), float(record["duration"]))
        v.windows = np.empty((v.total, 2), np.float64)
    start = int(record["start"])
    w = np.asarray(record["windows"], np.float64)
    v.windows[start:start + w.shape[0]] = w
    return v


@dataclass
class Pipeline:
    """One run of the pipeline over ``todo`` into ``writer`` (an ``H5Writer`` / ``DirWriter``).

    ``tick(ok)``: called once per video written (``ok``) or failed; ``flush_due()``: whether to reassemble the
    store now (the writes are drained first). ``strict``: a failed video raises ``ExtractError`` instead."""

    encoder: Any  # locvtp.inference.ClipBatchEncoder, locvtp.standard_features.StandardBackbone
    decoding: Any  # WindowClips, locvtp.standard_features.RateClips
    batch: int
    workers: int
    backbone: bool
    strict: bool
    errors: tuple[type[BaseException], ...]
    extracted: int = 0
    failed: int = 0
    clips: int = 0

    def run(self, todo: list[Any], writer: Any, tick: Callable[[bool], None], flush_due: Callable[[], bool]) -> None:
        pin = torch.device(self.encoder.device).type == "cuda"
        dataset = ClipChunks(todo, self.decoding, self.errors)
        start_worker_server(self.workers)  # (a no-op when the command already started it)
        it = iter(chunk_loader(dataset, self.workers, pin))  # (workers started before any thread of ours)
        writes = _Writes()
        states: dict[int, _Video] = {}
        packer = _Packer(self.encoder, self.batch, tuple(self.decoding.clip_shape), pin)
        failed: set[int] = set()  # a video is failed once, whichever worker's range failed first
        due = _Every(COMMIT_CHECK_SECONDS)
        try:
            for rec in it:
                if due():  # the journal's group commit, also while a long video is being encoded
                    writes.submit(writer.commit_if_due)
                idx = int(rec["index"])
                if idx in failed:
                    continue
                if "error" in rec:
                    failed.add(idx)
                    self._fail(todo[idx], str(rec["error"]), states.pop(idx, None), writer, writes, tick)
                    continue
                for video in packer.add(video_state(rec, states), int(rec["start"]), rec["clips"]):
                    self._write(todo, states, video, writer, writes, tick, flush_due)
            for video in packer.flush():
                self._write(todo, states, video, writer, writes, tick, flush_due)
            for idx, video in sorted(states.items()):  # cannot happen unless a worker's probe disagreed
                self._fail(todo[idx], "OSError: decoding ended before every clip range arrived", video, writer,
                           writes, tick)
        finally:
            shutdown = getattr(it, "_shutdown_workers", None)
            if shutdown is not None:  # now, not when a traceback releases the iterator
                shutdown()
            writes.close()

    def _write(self, todo: list[Any], states: dict[int, _Video], video: _Video, writer: Any, writes: _Writes,
               tick: Callable[[bool], None], flush_due: Callable[[], bool]) -> None:
        states.pop(video.index, None)
        item = todo[video.index]
        try:
            rec = finish_video(self.encoder, video, item.video_id, self.backbone)
        except self.errors as exc:
            self._fail(item, error_reason(exc), None, writer, writes, tick)
            return
        writes.submit(writer.add, rec, source=item.source)
        self.extracted += 1
        self.clips += rec.features.shape[0]
        tick(True)
        if flush_due():
            writes.drain()
            writer.assemble()

    def _fail(self, item: Any, reason: str, video: Optional[_Video], writer: Any, writes: _Writes,
              tick: Callable[[bool], None]) -> None:
        if video is not None:
            video.failed = True  # its clips still queued in a batch are encoded and dropped
        if self.strict:
            from locvtp.featurestore import ExtractError

            raise ExtractError(f"{item.path}: {reason}")
        writes.submit(writer.fail, item, reason)
        self.failed += 1
        tick(False)


__all__ = ["CHUNK_BYTES", "ClipChunks", "PREFETCH", "PRELOAD", "Pipeline", "WindowClips", "chunk_clips", "chunk_loader",
           "error_reason", "finish_video", "start_worker_server", "video_header", "video_state", "worker_context"]
