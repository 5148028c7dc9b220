"""The decode -> encode pipeline of ``locvtp extract`` for a pixel checkpoint (docs/usage.md, "Extraction").

Why a pipeline: one process that decodes a video, then encodes it, leaves a core idle half of the time, and a
model forward on one short video's clips is a small, slow batch. Here

* worker processes (a :class:`torch.utils.data.DataLoader` over :class:`ClipChunks`, ``num_workers`` =
  ``--workers``) probe and decode videos with PyAV while the main process encodes: clip range *k* of video *i*
  is worker ``(i + k) mod W``'s, so short videos go round the workers and one long video keeps all of them busy;
* a long video is cut into clip ranges (:func:`chunk_clips`: at most ``CHUNK_BYTES`` of decoded pixels each,
  decoded with a seek to the range), and the loader keeps ``PREFETCH`` chunks per worker in flight: memory is
  bounded whatever the video lengths;
* the main process packs the clips of consecutive chunks -- of any videos -- into batches of exactly
  ``--batch-size`` clips (:class:`_Packer`; a pinned buffer and non-blocking copies on CUDA), encodes them with
  :class:`locvtp.inference.ClipBatchEncoder` and scatters the outputs back to their videos;
* a video whose clips are all encoded is finished (the temporal layers, if any) and handed to a writer thread
  (:class:`_Writes`), so the journal's fsync of one video overlaps the encoding of the next batch.

A video that cannot be decoded arrives as a failure record (the worker catches the input's errors, as the
serial loop does); a bug in a worker is re-raised here by the loader. The features equal the per-video path
(:func:`locvtp.inference.decode_video_clips` + :func:`~locvtp.inference.encode_clip_sequence`) up to float
rounding: the decoded frames are identical (a range decode selects the same frames), only the batches differ.
"""
from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch

from locvtp.featurestore.record import ClipFeatures

CHUNK_BYTES = 32 << 20  # decoded pixels per clip range (a worker's unit of work)
PREFETCH = 2  # chunks in flight per worker (DataLoader prefetch_factor)
WRITES_AHEAD = 8  # finished videos queued for the writer thread


def chunk_clips(frames_per_clip: int, frame_size: int) -> int:
    """Clips per range: as many as fit in ``CHUNK_BYTES`` of uint8 pixels, never fewer than one."""
    per_clip = frames_per_clip * frame_size * frame_size * 3
    return max(1, CHUNK_BYTES // per_clip)


class ClipChunks(torch.utils.data.IterableDataset):
    """Videos -> records of at most ``chunk`` consecutive decoded clips (run in the loader's workers).

    A record is a dict: ``index`` (of the video in ``items``), ``start`` (its first clip), ``total`` (the
    video's clips), ``clips`` uint8 ``[n, F, S, S, 3]`` (numpy), ``windows`` ``[n, 2]``, ``fps``, ``duration``; or, for a
    video that cannot be read, ``index`` and ``error`` (the reason, as the failures file writes it). After a
    failure record no further chunk of that video follows."""

    def __init__(self, items: list[Any], prep: Any, chunk: int, errors: tuple[type[BaseException], ...]):
        super().__init__()
        self.items, self.prep, self.chunk, self.errors = items, prep, int(chunk), errors

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        for index in range(len(self.items)):
            yield from self._video(index, wid, nw)

    def _video(self, index: int, wid: int, nw: int) -> Iterator[dict[str, Any]]:
        """The ranges of one video this worker decodes: range k of video i is worker (i + k) mod W's, so one long
        video keeps every worker busy (each worker probes every video: a header read, cheap next to decoding)."""
        p, path, first = self.prep, self.items[index].path, index % nw == wid
        try:
            windows, fps, duration = probe_clip_windows(path, p)
        except self.errors as exc:
            if first:  # the worker of range 0 reports a video that cannot be read
                yield {"index": index, "error": error_reason(exc)}
            return
        total = int(windows.shape[0])
        for lo in range((wid - index) % nw * self.chunk, total, self.chunk * nw):
            w = windows[lo:lo + self.chunk]
            try:
                clips = decode_clip_range(path, w, p)
            except self.errors as exc:
                yield {"index": index, "error": error_reason(exc)}
                return
            yield {"index": index, "start": lo, "total": total, "clips": clips, "windows": w, "fps": fps,
                   "duration": duration}


def error_reason(exc: BaseException) -> str:
    """How the failures file words a video's error (one rule for every runner)."""
    return f"{type(exc).__name__}: {exc}"


def clip_windows(duration: float, prep: Any) -> np.ndarray:
    """The clip windows ``[N, 2]`` (seconds) of a video of ``duration`` under ``prep``: a pure function of the
    duration, so a decode task on another machine recomputes a range's windows from it instead of receiving them."""
    from locvtp.data import video as V

    return np.asarray(V.sliding_windows(float(duration), prep.clip_seconds, prep.stride_seconds),
                      np.float64).reshape(-1, 2)


def probe_clip_windows(path: Any, prep: Any) -> tuple[np.ndarray, float, float]:
    """(windows, fps, duration) of the video at ``path`` (a header read); a video without a clip raises
    ``ValueError``, so it becomes a failure record like an unreadable one."""
    from locvtp.data import video as V

    info = V.probe_video(path)
    windows = clip_windows(float(info.duration), prep)
    if windows.shape[0] == 0:
        raise ValueError("no clips: the video has no decodable frames")
    return windows, float(info.fps), float(info.duration)


def decode_clip_range(path: Any, windows: np.ndarray, prep: Any) -> np.ndarray:
    """The uint8 clips ``[n, F, S, S, 3]`` of ``windows`` (consecutive clips of one video, decoded with a seek to
    the range): the same frames as a decode of the whole video."""
    from locvtp.data import video as V

    return np.asarray(V.decode_windows(path, windows, prep.frames_per_clip, prep.frame_size, jitter=False, rng=None))


def _worker_init(_: int) -> None:
    """Decoding needs no torch threads: leave the cores to PyAV and to the encoder."""
    torch.set_num_threads(1)


def chunk_loader(dataset: ClipChunks, workers: int, pin: bool) -> torch.utils.data.DataLoader:
    """The loader of ``dataset`` (records one by one, not collated); ``workers`` = 0 decodes in this process.

    The records hold numpy arrays, not tensors, on purpose: they travel pickled through the workers' pipes
    instead of torch's shared-memory files, so a small ``/dev/shm`` (Docker's 64 MB default) or a file-size
    limit cannot lose a record in the queue's feeder thread -- which leaves the loader waiting forever.

    The workers are started by a fork server (spawn where there is none), never forked from this process: a
    forked worker inherits the output's lock (an ``flock`` lives as long as any copy of its descriptor), so after
    a SIGKILL of the extraction its orphaned workers kept the output locked and the resuming run was refused; a
    fork also copies the writer thread's and the encoder's state mid-flight (and CUDA cannot be forked)."""
    import multiprocessing as mp

    kw: dict[str, Any] = {}
    if workers > 0:
        method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
        kw = {"prefetch_factor": PREFETCH, "worker_init_fn": _worker_init, "persistent_workers": False,
              "multiprocessing_context": mp.get_context(method)}
    return torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers, pin_memory=False,
                                       collate_fn=_keep, **kw)


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
    sample: torch.Tensor  # one clip, for the buffer's shape
    pin: bool
    buf: torch.Tensor = field(init=False)
    pending: list[tuple[_Video, int, int]] = field(default_factory=list)  # (video, its first clip, count)
    n: int = 0

    def __post_init__(self) -> None:
        self.buf = torch.empty((self.batch, *self.sample.shape), dtype=self.sample.dtype)
        if self.pin:
            self.buf = self.buf.pin_memory()

    def add(self, video: _Video, start: int, clips: torch.Tensor) -> Iterator[_Video]:
        """Queue ``clips`` (of ``video``, from its clip ``start``); yields the videos a full batch completes."""
        at = 0
        while at < clips.shape[0]:
            take = min(self.batch - self.n, clips.shape[0] - at)
            self.buf[self.n:self.n + take].copy_(clips[at:at + take])
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

    encoder: Any  # locvtp.inference.ClipBatchEncoder
    prep: Any  # locvtp.predictor.Preprocessing
    batch: int
    workers: int
    backbone: bool
    strict: bool
    errors: tuple[type[BaseException], ...]
    extracted: int = 0
    failed: int = 0
    clips: int = 0

    def run(self, todo: list[Any], writer: Any, tick: Callable[[bool], None], flush_due: Callable[[], bool]) -> None:
        p = self.prep
        pin = self.encoder.device.type == "cuda"
        dataset = ClipChunks(todo, p, chunk_clips(p.frames_per_clip, p.frame_size), self.errors)
        it = iter(chunk_loader(dataset, self.workers, pin))  # (workers forked before any thread of ours starts)
        writes = _Writes()
        states: dict[int, _Video] = {}
        sample = torch.empty((p.frames_per_clip, p.frame_size, p.frame_size, 3), dtype=torch.uint8)
        packer = _Packer(self.encoder, self.batch, sample, pin)
        failed: set[int] = set()  # a video is failed once, whichever worker's range failed first
        try:
            for rec in it:
                idx = int(rec["index"])
                if idx in failed:
                    continue
                if "error" in rec:
                    failed.add(idx)
                    self._fail(todo[idx], str(rec["error"]), states.pop(idx, None), writer, writes, tick)
                    continue
                clips = torch.from_numpy(rec["clips"])
                for video in packer.add(video_state(rec, states), int(rec["start"]), clips):
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


__all__ = ["CHUNK_BYTES", "ClipChunks", "PREFETCH", "Pipeline", "chunk_clips", "chunk_loader", "clip_windows",
           "decode_clip_range", "error_reason", "finish_video", "probe_clip_windows", "video_state"]
