"""``locvtp extract --runner ray``: the extraction pipeline on Ray Data (docs/usage.md, "On a Ray cluster").

The same work as :class:`locvtp.extract_pipeline.Pipeline`, spread over a Ray cluster instead of this machine's
decode processes:

1. **Probe** (Ray tasks): each video's header gives its clip windows; a video that cannot be read comes back as a
   failure record at once. The driver cuts every readable video into work items: clip ranges of the decoding's
   ``chunk`` clips (at most ``CHUNK_BYTES`` of decoded pixels each) when its ranges may be decoded apart (a
   checkpoint's :class:`~locvtp.extract_pipeline.WindowClips`), else the whole video (a standard backbone's
   :class:`~locvtp.standard_features.RateClips`: one pass, handed on ``chunk`` clips at a time).
2. **Decode** (Ray Data ``map_batches`` tasks, one CPU each): one work item -> one row per clip, decoded by the
   very object the local pipeline's workers use (the pipeline's *decoding*: ``windows(duration)``,
   ``decode(path, windows, starts)``). A work item that cannot be decoded ends with one failure row. A task whose
   process dies (OOM killer, lost node) is retried ``DECODE_RETRIES`` times; an input's error is not retried (it
   would fail again) but recorded.
3. **Batches**: a streaming repartition into blocks of exactly ``--batch-size`` clips, of any videos.
4. **Encode** (an actor pool: each actor loads the model once, a GPU each when there are GPUs: a checkpoint's
   :class:`locvtp.inference.ClipBatchEncoder` (:class:`CheckpointActor`) or a standard backbone
   (:class:`StandardActor`); a dead actor is restarted and its batch retried (``ENCODER_RESTARTS``).
5. **Driver**: the encoded clips come back in any order; a video whose clips are all in is finished (temporal
   layers) and written through the same writer thread, journal (with its group commits), failures file and
   flushes as the local run (:meth:`Pipeline._write` / :meth:`Pipeline._fail`), so outputs, resume, ``--shard``
   and ``merge`` are the local run's.

Backpressure is Ray Data's streaming executor: each stage gets a share of the object store and of the cluster's
CPUs, and a stage whose output waits is not given new tasks, so memory is bounded however many videos there are.
The features equal the local pipeline's up to float rounding (the batches hold other clips).
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch

from locvtp.errors import LocVTPError, UsageError
from locvtp.extract_pipeline import COMMIT_CHECK_SECONDS, Pipeline, _Every, _Video, _Writes, error_reason, video_header

RAY_EXTRA = "--runner ray needs the optional extra: pip install 'locvtp[ray]'"
DECODE_RETRIES = 3  # re-runs of a decode task whose worker process died (not of an input's error)
ENCODER_RESTARTS = 3  # restarts of a dead encoder actor; its batch is retried as often
MAX_BLOCKS = 20000  # work-item blocks (one clip range each, up to this many)
SOCKET_ROOM = 45  # longest temporary folder whose Ray session sockets stay within AF_UNIX's 107 bytes


def require_ray() -> Any:
    """The ``ray`` module with Ray Data, or the one-line :class:`UsageError` naming the extra to install."""
    try:
        import ray
        import ray.data  # noqa: F401 - the extra, not bare ray
    except ImportError:
        raise UsageError(RAY_EXTRA) from None
    return ray


def ray_device(spec: str) -> str:
    """``--device`` under ``--runner ray``, the encoder actors' device: ``auto`` (a GPU per actor when the cluster
    has GPUs), ``cpu`` or ``cuda``; Ray gives each GPU actor its own device, so an index (``cuda:1``) or ``mps``
    is a :class:`UsageError`."""
    s = str(spec).strip().lower()
    if s not in ("auto", "cpu", "cuda"):
        raise UsageError(f"--device {spec} with --runner ray: the encoder actors' device is auto, cpu or cuda (Ray "
                         "gives each actor a GPU of its own)")
    return s


# ------------------------------------------------------------------------------------------ remote functions
def _probe_batch(batch: dict[str, np.ndarray], decoding: Any, errors: tuple) -> dict[str, np.ndarray]:
    """Ray task: per video (``index``, ``path``) its ``total`` clips, ``fps``, ``duration``, or an ``error``."""
    rows = []
    for index, path in zip(batch["index"], batch["path"]):
        try:
            windows, fps, duration = video_header(decoding, Path(str(path)))
            rows.append((int(index), int(windows.shape[0]), fps, duration, ""))
        except errors as exc:
            rows.append((int(index), 0, 0.0, 0.0, error_reason(exc)))
    cols = list(zip(*rows))
    return {"index": np.asarray(cols[0], np.int64), "total": np.asarray(cols[1], np.int64),
            "fps": np.asarray(cols[2], np.float64), "duration": np.asarray(cols[3], np.float64),
            "error": np.asarray(cols[4], dtype=object)}


def _decode_batch(batch: dict[str, np.ndarray], plan: Any, decoding: Any, errors: tuple
                  ) -> Iterator[dict[str, np.ndarray]]:
    """Ray task: work items (``id`` = a clip range of ``plan``) -> rows, one per clip (``index``, ``pos``,
    ``clip``, ``error`` = ""), ``decoding.chunk`` clips per yielded block; a range that cannot be decoded ends with
    one failure row (``pos`` -1, a blank clip)."""
    import ray

    table = ray.get(plan) if isinstance(plan, ray.ObjectRef) else plan
    torch.set_num_threads(1)  # decoding needs no torch threads
    for rid in batch["id"]:
        index, lo, hi = (int(table[k][int(rid)]) for k in ("video", "lo", "hi"))
        path, duration = Path(str(table["path"][index])), float(table["duration"][index])
        got = lo
        try:
            windows = decoding.windows(duration)
            for start, clips in decoding.decode(path, windows, range(lo, hi, int(decoding.chunk))):
                if start != got or start + clips.shape[0] > hi:
                    raise ValueError(f"decoded clips {start}..{start + clips.shape[0]} of the range {lo}..{hi}")
                yield _rows(index, np.arange(start, start + clips.shape[0]), clips, "")
                got = start + clips.shape[0]
            if got != hi:
                raise ValueError(f"decoded {got - lo} clips of the range {lo}..{hi}")
        except errors as exc:
            blank = np.zeros((1, *decoding.clip_shape), np.uint8)
            yield _rows(index, np.full(1, -1), blank, error_reason(exc))


def _rows(index: int, pos: np.ndarray, clips: np.ndarray, error: str) -> dict[str, np.ndarray]:
    """One block of decoded rows (clips of one video at positions ``pos``)."""
    return {"index": np.full(pos.shape[0], index, np.int64), "pos": pos.astype(np.int64), "clip": clips,
            "error": np.asarray([error] * pos.shape[0], dtype=object)}


@dataclass(frozen=True)
class CheckpointActor:
    """What an encoder actor loads for a checkpoint: the driver's file, refused when its SHA-256 differs from the
    one the run started with (changed on disk, another file on this node)."""

    checkpoint: str
    sha256: str
    backbone: bool
    amp: Optional[str]

    def load(self, device: str) -> Any:
        from locvtp.inference import ClipBatchEncoder, InferenceError
        from locvtp.predictor import LocVTPPredictor

        pred = LocVTPPredictor.from_checkpoint(self.checkpoint, device=device)
        if self.sha256 and pred.sha256 != self.sha256:
            raise InferenceError(f"{self.checkpoint}: the checkpoint a Ray worker read differs from the one the run "
                                 "started with (changed on disk, or another file on this node)")
        return ClipBatchEncoder(pred.model, pred.device, self.backbone, self.amp)


@dataclass(frozen=True)
class StandardActor:
    """What an encoder actor loads for ``--backbone clip|s3d``: the driver's weights file (same SHA-256 check) and
    options, as :func:`locvtp.standard_features.load_standard_backbone` reads them."""

    name: str
    weights: str
    sha256: str
    clip_arch: Optional[str]
    clip_activation: str
    s3d_output: str
    amp: Optional[str]

    def load(self, device: str) -> Any:
        from locvtp.inference import InferenceError
        from locvtp.standard_features import load_standard_backbone

        bb = load_standard_backbone(self.name, self.weights, device=device, clip_arch=self.clip_arch,
                                    clip_activation=self.clip_activation, s3d_output=self.s3d_output)
        if self.sha256 and bb.weights_sha256 != self.sha256:
            raise InferenceError(f"--weights {self.weights}: the file a Ray worker read differs from the one the run "
                                 "started with (changed on disk, or another file on this node)")
        bb.amp = self.amp
        return bb


class _ClipEncoder:
    """Ray actor: the model loaded once (``actor``: :class:`CheckpointActor`, :class:`StandardActor`), batches of
    clips encoded with the pipeline's encoder interface (``clips(x)``); failure rows pass through with zero
    outputs."""

    def __init__(self, actor: Any, device: str, threads: int, clip_shape: tuple[int, ...]):
        if threads:
            torch.set_num_threads(int(threads))
        self.enc = actor.load(device)
        out, bb = self.enc.clips(torch.zeros((1, *clip_shape), dtype=torch.uint8))
        self.widths = (out.shape[1], None if bb is None else bb.shape[1])

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ok = np.asarray([not e for e in batch["error"]], bool)
        n = ok.shape[0]
        out = np.zeros((n, self.widths[0]), np.float32)
        bb = None if self.widths[1] is None else np.zeros((n, self.widths[1]), np.float32)
        if ok.any():
            o, b = self.enc.clips(torch.from_numpy(np.array(batch["clip"][ok])))
            out[ok] = o
            if bb is not None:
                bb[ok] = b
        res = {"index": batch["index"], "pos": batch["pos"], "error": batch["error"], "out": out}
        if bb is not None:
            res["bb"] = bb
        return res


# ------------------------------------------------------------------------------------------ the driver
@contextlib.contextmanager
def ray_session(address: Optional[str], num_cpus: int) -> Iterator[Any]:
    """Ray for one run: the instance this process is already connected to; else ``address`` (``auto``, a
    ``host:port`` or ``ray://`` address) or, without one, a local instance of ``num_cpus`` CPUs (no dashboard, the
    workers' logs kept in Ray's log files) that is shut down afterwards. Ray Data's progress bars and INFO logs are
    off for the run (the extraction's own progress bar counts videos)."""
    ray = require_ray()
    from ray.data import DataContext

    started = not ray.is_initialized()
    if started:
        _init(ray, address, num_cpus)
    ctx = DataContext.get_current()
    saved = ctx.enable_progress_bars
    log = logging.getLogger("ray.data")
    level = log.level
    ctx.enable_progress_bars = False
    log.setLevel(logging.ERROR)  # (its notes, e.g. "progress bars disabled", are not the user's business)
    try:
        yield ray
    finally:
        ctx.enable_progress_bars = saved
        log.setLevel(level)
        if started:
            ray.shutdown()


def _init(ray: Any, address: Optional[str], num_cpus: int) -> None:
    """Connect to ``address``, or start a local instance (see :func:`ray_session`); a failure is one line."""
    from locvtp.featurestore import ExtractError

    kw: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR}
    if address is None:  # the local workers import this package from where the driver does
        src = str(Path(__file__).resolve().parents[1])
        path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH", "")) if p)
        kw.update(num_cpus=num_cpus, include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": path}})
        temp = os.path.join(tempfile.gettempdir(), "ray")
        if "RAY_TMPDIR" not in os.environ and len(temp) > SOCKET_ROOM:  # Ray's sockets: AF_UNIX paths <= 107 bytes
            kw["_temp_dir"] = "/tmp/ray"
    try:
        ray.init(address=address, **kw)
    except (ConnectionError, OSError, RuntimeError, ValueError) as exc:
        what = f"--ray-address {address}: cannot connect to the Ray cluster" if address else \
            "cannot start a local Ray instance"
        raise ExtractError(f"{what} ({type(exc).__name__}: {exc})") from None


def _map_batches(ds: Any, fn: Any, retries: dict[str, int], **kw: Any) -> Any:
    """``ds.map_batches(fn, **kw)`` with bounded retries (Ray Data's own default retries a crashing task forever).
    Ray 2.5x warns that such "remote args" are deprecated: the warning is kept from the user; a Ray that no longer
    takes them gets Ray Data's default retries."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
        try:
            return ds.map_batches(fn, **kw, **retries)
        except TypeError as exc:
            if not any(k in str(exc) for k in retries):
                raise
            return ds.map_batches(fn, **kw)


def _fixed_batches(ds: Any, batch: int) -> Any:
    """Blocks of exactly ``batch`` rows (the last excepted), streaming, so every encoder call is a full batch. A Ray
    without the strict streaming repartition gets its best effort (a partial batch now and then: slower, the same
    features)."""
    for kw in ({"strict": True}, {}):
        try:
            return ds.repartition(target_num_rows_per_block=batch, **kw)
        except TypeError:
            continue
    return ds


def _locvtp_error(exc: BaseException) -> Optional[LocVTPError]:
    """The project error a Ray exception wraps (an actor that could not load the checkpoint), if any."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, LocVTPError):
            return exc
        exc = getattr(exc, "cause", None) or exc.__cause__
        seen += 1
    return None


@dataclass
class RayPipeline(Pipeline):
    """:class:`Pipeline` with the decoding and encoding on Ray (module docstring); ``run`` has the same contract.

    ``actor``: what every encoder actor loads (:class:`CheckpointActor`, :class:`StandardActor`; on a cluster, files
    every node reads at the same path); ``device``: the actors' (``auto``: a GPU per actor when the cluster has
    GPUs); ``encoders``: how many actors (default: one per GPU of the cluster, else one); ``address``: see
    :func:`ray_session`. The journal's group commit is asked for as in the local loop; the final commit (also on an
    error or Ctrl-C) is the extraction's, after :meth:`run` returns or raises, as for :class:`Pipeline`."""

    actor: Any = None
    device: str = "auto"
    threads: int = 0
    address: Optional[str] = None
    encoders: Optional[int] = None
    _written: set[int] = field(default_factory=set, init=False, repr=False)  # video indices handed to the writer

    def run(self, todo: list[Any], writer: Any, tick: Callable[[bool], None], flush_due: Callable[[], bool]) -> None:
        if not todo:
            return
        # a local instance: the decode CPUs of --workers, and room for every encoder actor (one per GPU by default)
        gpus = torch.cuda.device_count() if ray_device(self.device) != "cpu" else 0
        local_cpus = max(1, self.workers) + (self.encoders or max(1, gpus)) * max(1, int(self.threads or 1))
        writes = _Writes()
        try:
            with ray_session(self.address, local_cpus) as ray:
                try:
                    self._run(ray, todo, writer, writes, tick, flush_due)
                except LocVTPError:
                    raise
                except Exception as exc:  # an actor's checkpoint error arrives wrapped by Ray: one line
                    err = _locvtp_error(exc)
                    if err is None:
                        raise
                    raise err from None
        finally:
            writes.close()

    def _run(self, ray: Any, todo: list[Any], writer: Any, writes: _Writes, tick: Callable[[bool], None],
             flush_due: Callable[[], bool]) -> None:
        self._written = set()
        plan = self._probe(ray, todo, writer, writes, tick)
        if plan is None:
            return
        states: dict[int, _Video] = {}
        seen: dict[int, np.ndarray] = {}
        failed: set[int] = set()
        due = _Every(COMMIT_CHECK_SECONDS)
        for b in self._dataset(ray, plan).iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=2):
            if due():  # the journal's group commit, also while a long video is being encoded
                writes.submit(writer.commit_if_due)
            self._take(b, plan, todo, states, seen, failed, writer, writes, tick, flush_due)
        for idx in sorted(set(np.unique(plan["video"]).tolist()) - failed - self._written):
            self._fail(todo[idx], "OSError: decoding ended before every clip range arrived", states.get(idx),
                       writer, writes, tick)

    def _probe(self, ray: Any, todo: list[Any], writer: Any, writes: _Writes,
               tick: Callable[[bool], None]) -> Optional[dict[str, np.ndarray]]:
        """Probe every video (Ray tasks); record the unreadable ones; the work items (clip ranges) of the rest."""
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        items = [{"index": i, "path": str(it.path)} for i, it in enumerate(todo)]
        ds = ray.data.from_items(items, override_num_blocks=min(len(items), 4 * cpus))
        ds = _map_batches(ds, _probe_batch, {"max_retries": DECODE_RETRIES}, batch_size=None, batch_format="numpy",
                          fn_kwargs={"decoding": self.decoding, "errors": self.errors}, num_cpus=1)
        n = len(todo)
        total, fps, duration = np.zeros(n, np.int64), np.zeros(n), np.zeros(n)
        for b in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for i, t, f, d, e in zip(b["index"], b["total"], b["fps"], b["duration"], b["error"]):
                if e:
                    self._fail(todo[int(i)], str(e), None, writer, writes, tick)
                else:
                    total[i], fps[i], duration[i] = t, f, d
        videos = np.flatnonzero(total > 0)
        if videos.size == 0:
            return None
        # a range per `chunk` clips when ranges decode apart; else one per video (decoded in one pass)
        step = np.full(videos.size, int(self.decoding.chunk)) if self.decoding.split else total[videos]
        per = -(-total[videos] // step)  # ranges per video
        video = np.repeat(videos, per)
        lo = (np.arange(video.size) - np.repeat(np.cumsum(per) - per, per)) * np.repeat(step, per)
        hi = np.minimum(lo + np.repeat(step, per), total[video])
        return {"video": video, "lo": lo, "hi": hi, "total": total, "fps": fps, "duration": duration,
                "path": np.asarray([str(it.path) for it in todo])}

    def _dataset(self, ray: Any, plan: dict[str, np.ndarray]) -> Any:
        """Work items -> decoded clips -> blocks of ``batch`` clips -> encoded clips (lazy; streamed by iteration)."""
        n = int(plan["video"].size)
        ref = ray.put(plan)
        ds = ray.data.range(n, override_num_blocks=min(n, MAX_BLOCKS))
        ds = _map_batches(ds, _decode_batch, {"max_retries": DECODE_RETRIES}, batch_size=1, batch_format="numpy",
                          fn_kwargs={"plan": ref, "decoding": self.decoding, "errors": self.errors}, num_cpus=1)
        ds = _fixed_batches(ds, self.batch)
        count, gpus, device = self._encoder_pool(ray)
        actor_cpus = 1 if gpus else max(1, int(self.threads or 1))
        kwargs = {"actor": self.actor, "device": device, "threads": 0 if gpus else actor_cpus,
                  "clip_shape": tuple(self.decoding.clip_shape)}
        retries = {"max_restarts": ENCODER_RESTARTS, "max_task_retries": ENCODER_RESTARTS}
        return _map_batches(ds, _ClipEncoder, retries, fn_constructor_kwargs=kwargs, batch_size=self.batch,
                            batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=count),
                            num_cpus=actor_cpus, num_gpus=gpus)

    def _encoder_pool(self, ray: Any) -> tuple[int, int, str]:
        """(actors, GPUs per actor, the actors' device) from ``--device`` and the cluster's GPUs."""
        have = int(ray.cluster_resources().get("GPU", 0))
        spec = ray_device(self.device)
        wants_gpu = spec == "cuda" or (spec == "auto" and have > 0)
        if wants_gpu and have == 0:
            raise UsageError(f"--device {self.device}: the Ray cluster has no GPU; use --device cpu or auto")
        if wants_gpu:
            return int(self.encoders or have), 1, "cuda"
        return int(self.encoders or 1), 0, "cpu"

    def _take(self, b: dict[str, np.ndarray], plan: dict[str, np.ndarray], todo: list[Any],
              states: dict[int, _Video], seen: dict[int, np.ndarray], failed: set[int], writer: Any,
              writes: _Writes, tick: Callable[[bool], None], flush_due: Callable[[], bool]) -> None:
        """Scatter one block of encoded clips into their videos; write the videos it completes, fail the failed."""
        index, err = b["index"], np.asarray([bool(e) for e in b["error"]], bool)
        for idx in np.unique(index[err]).tolist():
            if idx not in failed:
                failed.add(idx)
                reason = str(b["error"][np.flatnonzero(err & (index == idx))[0]])
                self._fail(todo[idx], reason, states.pop(idx, None), writer, writes, tick)
        for idx in np.unique(index[~err]).tolist():
            if idx in failed or idx in self._written:
                continue
            rows = np.flatnonzero((index == idx) & ~err)
            v = states.get(idx)
            if v is None:
                v = states[idx] = _Video(idx, int(plan["total"][idx]), float(plan["fps"][idx]),
                                         float(plan["duration"][idx]))
                v.windows = self.decoding.windows(v.duration)
                v.out = np.empty((v.total, b["out"].shape[1]), np.float32)
                v.bb = np.empty((v.total, b["bb"].shape[1]), np.float32) if "bb" in b else None
                seen[idx] = np.zeros(v.total, bool)
            pos = b["pos"][rows]
            v.out[pos] = b["out"][rows]
            if v.bb is not None:
                v.bb[pos] = b["bb"][rows]
            seen[idx][pos] = True  # a row delivered twice (a retried task) is written once
            v.filled = int(seen[idx].sum())
            if v.filled == v.total:
                seen.pop(idx)
                self._written.add(idx)
                self._write(todo, states, v, writer, writes, tick, flush_due)


__all__ = ["CheckpointActor", "DECODE_RETRIES", "ENCODER_RESTARTS", "RAY_EXTRA", "RayPipeline", "StandardActor",
           "ray_device", "ray_session", "require_ray"]
