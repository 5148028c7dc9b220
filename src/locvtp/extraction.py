"""`locvtp extract` / `locvtp merge`: clip features of a video collection, resumable and crash-safe.

Output formats
--------------
* ``h5`` (default): one HDF5 file, one float32 dataset ``[num_clips, D]`` per video id at the root (the
  layout 2D-TAN/ActivityNet feature readers use). Dataset attributes: ``fps``, ``duration``, ``clip_seconds``,
  ``stride_seconds``, ``frames_per_clip``, ``frame_size``, ``model``, ``checkpoint_sha256``, ``embedding``
  (``joint`` = L2-normalized joint-space embeddings, ``backbone`` = pre-projection features) and ``windows``
  (float64 ``[num_clips, 2]`` seconds). The root carries the same run settings plus ``format``/``version``.
* ``npy-dir``: ``DIR/<vid>.npy`` per video (the layout Charades I3D feature users expect) and
  ``DIR/_info/<vid>.json`` (fps, duration, windows); ``DIR/meta.json`` holds the run settings.
* ``npz-dir``: ``DIR/<vid>.npz`` with a ``features`` array (what Moment-DETR-style code reads) plus
  ``windows``, ``fps``, ``duration``; ``DIR/meta.json`` holds the run settings.

Crash safety, resuming and ownership are the feature store's (:mod:`locvtp.featurestore.writer`): finished
videos are journalled atomically and the HDF5 file is reassembled into a temporary file and ``os.replace``d every
``--flush-every`` videos / ``--flush-seconds`` seconds and at the end (assembly copies the existing file, hence
the periodic flush is time-based by default: a full copy every 10 minutes, not every video). This module is only
the command: arguments, the input list, the model (a checkpoint through :class:`locvtp.predictor.LocVTPPredictor`,
or a standard backbone), the loop -- the decode/encode pipeline of :mod:`locvtp.extract_pipeline` for videos, a
per-video loop for a features encoder's feature files -- and what is printed.

Failures
--------
A video that cannot be decoded or encoded never stops the run (unless ``--strict``): it is written to the
failures file (``<out stem>.failures.jsonl`` for ``h5``, ``DIR/failures.jsonl`` for directories; one JSON
object per line: ``video_id``, ``path``, ``reason``) and retried on the next run.

Ownership, one writer, inputs apart (why these rules)
----------------------------------------------------
``extract`` and ``merge`` only ever delete or replace what they wrote themselves. Before anything is written,
an ``--out`` that is, contains or lies inside an input (``--videos`` — the directory, or the list file itself —
and ``--checkpoint``) is refused. ``--overwrite`` of an ``h5`` output removes the file only when its root
attributes carry the ``locvtp-features`` marker (anything else: :class:`~locvtp.errors.NotOwnedError`) and its
``.parts`` journal only when it holds nothing but journal entries. A directory output records what it wrote in
an ownership manifest (:func:`locvtp.files.write_manifest`, writer ``extract``); ``--overwrite`` removes exactly
those files (:func:`locvtp.files.remove_owned`), so a user's file next to the outputs survives.

The claims log of a directory output: see :mod:`locvtp.featurestore.writer`.

Every run holds :class:`locvtp.files.OutputLock` on its output for the whole run (``h5``: the rank's own file;
directories: the directory, or ``DIR.rank<r>`` under torchrun so ranks do not block each other), so a second
run on the same output stops at once with one line naming the holder instead of racing the first; holding the
lock, a run removes the temporaries a killed run left (:func:`locvtp.files.remove_stale_temporaries`).

Sharding
--------
Under ``torchrun`` (``RANK``/``WORLD_SIZE`` set) rank r takes every WORLD_SIZE-th video of the sorted list and
writes ``<stem>.rank<r>.h5`` (directories: the same directory, per-rank failures/journal files); ``locvtp
merge --out feats.h5 feats.rank*.h5`` joins the shards. No process group is needed: ranks never communicate.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from locvtp.data.textinput import read_text_input
from locvtp.data.videoids import VIDEO_EXTENSIONS, scan_videos, source_of, video_id
from locvtp.errors import UsageError, writing
from locvtp.featurestore import (
    ClipFeatures, DirWriter, ExtractError, H5Writer, discard_dir_output, discard_h5_output, iter_features,
    read_features,
)
from locvtp.files import OutputLock, check_apart, check_file_output, overlaps

FEATURE_EXTENSIONS = (".h5", ".hdf5", ".hdf", ".npy", ".npz")
# What a bad *input* raises: unreadable/corrupt files (VideoError and PyAV errors are OSErrors), bad values,
# out-of-memory on a huge video. Anything else (TypeError, AttributeError ...) is a bug and stops the run.
RECORDED_ERRORS = (OSError, ValueError, RuntimeError, MemoryError, EOFError, KeyError)


# ------------------------------------------------------------------------------------------------ sharding
def world_info() -> tuple[int, int]:
    """(rank, world_size) from the torchrun environment; (0, 1) in a single process."""
    try:
        from locvtp.distributed import world_info as dist_world_info  # type: ignore

        rank, world = dist_world_info()
        if world > 1:
            return int(rank), int(world)
    except Exception:  # noqa: BLE001 - module absent or no process group: fall back to the environment
        pass
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def rank_path(out: Path, fmt: str, rank: int, world: int) -> Path:
    """Per-rank output file (``feats.h5`` -> ``feats.rank3.h5``); directories are shared by all ranks."""
    if world <= 1 or fmt != "h5":
        return out
    return out.with_name(f"{out.stem}.rank{rank}{out.suffix or '.h5'}")


def shard_of(video_id: str, count: int) -> int:
    """The shard (of ``count``) a video belongs to: a hash of its id, so every job of an array agrees without
    talking to the others, whatever order or machine lists the videos (not Python's salted ``hash``)."""
    return int.from_bytes(hashlib.sha1(video_id.encode("utf-8")).digest()[:8], "big") % count


def shard_path(out: Path, fmt: str, shard: Optional[tuple[int, int]]) -> Path:
    """``--shard I/N``'s own store: ``feats.h5`` -> ``feats.shard3-of-8.h5``, ``DIR`` -> ``DIR.shard3-of-8``."""
    if shard is None:
        return out
    tag = f"shard{shard[0]}-of-{shard[1]}"
    if fmt == "h5":
        return out.with_name(f"{out.stem}.{tag}{out.suffix or '.h5'}")
    return out.with_name(f"{out.name}.{tag}")


def _lists_skipped(args: argparse.Namespace, rank: int) -> bool:
    """The inputs skipped while listing are every shard's and rank's: the first one's failures file lists them."""
    shard = getattr(args, "shard", None)
    return rank == 0 and (shard is None or shard[0] == 0)


def default_failures_path(out: Path, fmt: str, rank: int = 0, world: int = 1) -> Path:
    if fmt == "h5":
        return out.with_name(f"{out.stem}.failures.jsonl")
    return out / ("failures.jsonl" if world <= 1 else f"failures.rank{rank}.jsonl")


# ------------------------------------------------------------------------------------------------ inputs
@dataclass(frozen=True)
class VideoItem:
    video_id: str
    path: Path
    root: Optional[Path] = None  # the folder the id is relative to (--videos, or the list file's folder)

    @property
    def source(self) -> Optional[str]:
        """What the store records for this video: None when the id rule finds ``path`` again from the id under
        ``root`` (:func:`locvtp.data.videoids.source_of`); computed when the video is written, not per listing."""
        return None if self.root is None else source_of(self.root, self.video_id, self.path)


def _valid_id(vid: str) -> Optional[str]:
    """Reason why ``vid`` cannot name an HDF5 dataset / file, or None."""
    if not vid or vid in (".", ".."):
        return "empty video id"
    if "/" in vid or "\\" in vid or "\x00" in vid:
        return f"video id {vid!r} contains a path separator"
    return None


def list_videos(spec: str | Path, recursive: bool = False, strict: bool = False
                ) -> tuple[list[VideoItem], list[dict[str, str]]]:
    """Videos to extract from a directory or a list file, sorted by id.

    Directory: every file with a video extension, id by the one rule of :mod:`locvtp.data.videoids` (file name
    without extension; ``recursive``: relative path without extension, ``/`` written ``__``). List file: one
    ``path`` or ``id<TAB>path`` per line, ``#`` comments, byte-order marks dropped; relative paths are relative
    to the list file. Returns (items, skipped): one ``{"video_id", "path", "reason", "location"}`` per input not
    extracted (a dangling or looping link, a file sharing its id, a bad list line), which ``extract`` writes to
    ``failures.jsonl``; ``strict`` raises ``ExtractError`` at the first instead.
    """
    spec = Path(spec)
    if spec.is_dir():
        found, skipped = scan_videos(spec, recursive=recursive)
        items = [VideoItem(vid, path, spec) for vid, path in found]
        for row in skipped:
            row["location"] = row["path"]
    elif spec.is_file():
        items, skipped = _list_file_videos(spec)
    else:
        raise ExtractError(f"--videos {spec}: no such directory or list file")
    if strict and skipped:
        raise ExtractError(f"{skipped[0]['location']}: {skipped[0]['reason']}")
    return items, skipped


def _list_file_videos(spec: Path) -> tuple[list[VideoItem], list[dict[str, str]]]:
    """(items sorted by id, skipped rows) of a ``--videos`` list file (see :func:`list_videos`)."""
    if spec.suffix.lower() in VIDEO_EXTENSIONS:
        raise UsageError(f"--videos {spec} is a video file: give the directory that holds the videos, or a "
                         "list file (one `path` or `id<TAB>path` per line)")
    if spec.suffix.lower() in FEATURE_EXTENSIONS:
        raise UsageError(f"--videos {spec} is a feature file, but this checkpoint's video encoder reads "
                         "pixels: give a directory of videos or a list file (feature files are the input of a "
                         "`features` video encoder)")
    text = read_text_input(spec, "--videos", "one `path` or `id<TAB>path` per line (or give a directory of videos)")
    items: list[VideoItem] = []
    skipped: list[dict[str, str]] = []
    seen: dict[str, VideoItem] = {}
    for lineno, raw in enumerate(text.split("\n"), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        vid, _, p = line.partition("\t") if "\t" in line else ("", "", line)
        vid, p = vid.strip(), p.strip()
        path = Path(p) if os.path.isabs(p) else spec.parent / p
        vid = vid or video_id(Path(p).name)
        where = f"{spec}:{lineno}"
        reason = _valid_id(vid)
        if reason is None and vid in seen:
            reason = f"duplicate video id {vid!r} (also {seen[vid].path})"
        if reason:
            skipped.append({"video_id": vid, "path": str(path), "reason": f"{where}: {reason}", "location": where})
            continue
        seen[vid] = VideoItem(vid, path, spec.parent)
        items.append(seen[vid])
    items.sort(key=lambda it: it.video_id)
    return items, skipped


def no_videos_error(spec: str | Path, skipped: list[dict[str, str]]) -> UsageError:
    """An empty input set is a mistake (an empty store with exit 0 hid it): the one line that says so."""
    what = ("holds no video file (extensions " + " ".join(VIDEO_EXTENSIONS) + ")" if Path(spec).is_dir()
            else "lists no video")
    note = (f"; {len(skipped)} input(s) skipped, the first: {skipped[0]['location']}: {skipped[0]['reason']}"
            if skipped else "")
    return UsageError(f"--videos {spec} {what}{note}")


# ------------------------------------------------------------------------------------------------ the run
@dataclass
class ExtractSummary:
    out: Path
    failures_path: Path
    total: int
    skipped_done: int
    extracted: int
    failed: int
    clips: int
    seconds: float  # whole run, model loading included
    list_problems: list[dict[str, str]]
    loop_seconds: float = 0.0  # decode + encode + journal + final assembly (what clips/s is measured on)


def _settings(ckpt: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The run settings written with the features (``ckpt``: the ``LocVTPPredictor`` or a loaded checkpoint)."""
    from locvtp.featurestore.provenance import store_settings

    return store_settings(ckpt.model, ckpt.sha256, ckpt.path, args.clip_seconds, args.stride_seconds,
                          args.frames_per_clip, args.frame_size, "backbone" if args.backbone is True else "joint")


def check_model_args(args: argparse.Namespace) -> None:
    """Exactly one model: ``--checkpoint`` (this package's model; bare ``--backbone`` = its pre-projection
    features), or ``--backbone clip|s3d`` with ``--weights`` (a standard backbone). Every other mix is one line."""
    standard = isinstance(args.backbone, str)
    weights = getattr(args, "weights", None)
    if standard and args.checkpoint:
        raise UsageError(f"--backbone {args.backbone} extracts with --weights, not a checkpoint: give one of "
                         "--checkpoint (this package's model) and --backbone NAME --weights FILE")
    if standard and not weights:
        from locvtp.standard_features import WEIGHTS_HELP

        hint = WEIGHTS_HELP.get(args.backbone, "")
        raise UsageError(f"--backbone {args.backbone} needs --weights FILE (nothing is downloaded){'; ' + hint if hint else ''}")
    if not standard and weights:
        raise UsageError("--weights is for --backbone clip|s3d (a standard backbone); with --checkpoint leave it out")
    if not standard and not args.checkpoint:
        raise UsageError("give --checkpoint (a checkpoint or run directory) or --backbone clip|s3d --weights FILE")
    if not standard:
        extra = [f for f, v in (("--clip-arch", getattr(args, "clip_arch", None)),
                                ("--s3d-output", getattr(args, "s3d_output", None))) if v is not None]
        if extra:
            raise UsageError(f"{extra[0]} is for --backbone clip|s3d, not a --checkpoint extraction")


def check_runner(args: argparse.Namespace, world: int) -> None:
    """``--runner ray`` runs the decode/encode pipeline (a pixel checkpoint, ``--backbone clip|s3d``) on Ray
    (:mod:`locvtp.extract_ray`): refused with one line for what it cannot run, or when Ray is not installed, before
    anything is loaded or written."""
    ray_flags = [f for f, v in (("--ray-address", getattr(args, "ray_address", None)),
                                ("--ray-encoders", getattr(args, "ray_encoders", None))) if v is not None]
    if getattr(args, "runner", "local") != "ray":
        if ray_flags:
            raise UsageError(f"{ray_flags[0]} is an option of --runner ray")
        return
    if world > 1:
        raise UsageError("--runner ray under torchrun: Ray spreads the work itself; run one `locvtp extract "
                         "--runner ray` (or one per --shard I/N)")
    from locvtp.extract_ray import ray_device, require_ray

    ray_device(args.device)
    require_ray()


def run_extract(args: argparse.Namespace, progress: bool = True) -> ExtractSummary:
    """The body of ``locvtp extract`` (arguments as parsed by :func:`build_parser`)."""
    from locvtp.device import resolve_device

    check_model_args(args)
    rank, world = world_info()
    check_runner(args, world)
    t_start = time.perf_counter()
    if getattr(args, "runner", "local") == "ray":  # --device is the encoder actors'; the driver only finishes
        device = "cpu" if args.device.strip().lower() == "cpu" else resolve_device("auto")
    else:
        device = resolve_device(args.device)
    # -- outputs: apart from the inputs, locked for the whole run (nothing is written before both hold) ------
    out = rank_path(shard_path(Path(args.out), args.format, getattr(args, "shard", None)), args.format, rank, world)
    # h5: next to this rank's file (feats.rank3.failures.jsonl, which `merge` picks up); dirs: per-rank name inside
    failures_path = Path(args.failures) if args.failures else default_failures_path(out, args.format, rank, world)
    if args.failures and world > 1:
        failures_path = failures_path.with_name(f"{failures_path.stem}.rank{rank}{failures_path.suffix}")
    inputs = {"--videos": args.videos, "--checkpoint": args.checkpoint, "--weights": getattr(args, "weights", None)}
    check_apart(Path(args.out), inputs)
    check_apart(out, inputs)
    check_apart(failures_path, inputs, out_flag="--failures")
    if overlaps(failures_path, out) == "is":
        raise UsageError(f"--failures {failures_path} is the --out file: choose another failures file")
    if args.overwrite and args.format != "h5" and world > 1:
        raise UsageError("--overwrite with a directory format under torchrun would race between ranks: "
                         f"run `locvtp extract --overwrite` once without torchrun, or delete {out} yourself")
    lock_target = out if args.format == "h5" or world <= 1 else out.with_name(f"{out.name}.rank{rank}")
    lock = OutputLock(lock_target, "extract")
    with writing(out, "--out"):  # a read-only or missing place fails here: named as --out, not as the lock file
        lock.acquire()
    try:
        check_file_output(failures_path, "extract", "--failures" if args.failures else "--out's failures file",
                          make_parent=True)  # a user's file by that name is never replaced
        return _run_locked(args, out, failures_path, rank, world, device, t_start, progress)
    finally:
        lock.release()


@dataclass
class _Steps:
    """What differs between extractions: the run settings, the inputs, the thread limit, and either the pipeline
    (a pixel checkpoint, a standard backbone: :mod:`locvtp.extract_pipeline`) or, for a checkpoint whose encoder
    reads feature files, how one video is loaded (``load``, run ahead in threads) and encoded (``encode``)."""

    settings: dict[str, Any]
    items: list[VideoItem]
    problems: list[dict[str, str]]
    limit: Any
    pipeline: Any = None  # locvtp.extract_pipeline.Pipeline (else the per-video loop of a features encoder)
    load: Optional[Callable[[VideoItem], Any]] = None
    encode: Optional[Callable[[VideoItem, Any], ClipFeatures]] = None


def _run_locked(args: argparse.Namespace, out: Path, failures_path: Path, rank: int, world: int, device: str,
                t_start: float, progress: bool) -> "ExtractSummary":
    """Load the model, list the inputs, open the writer (the caller holds the output's lock)."""
    local = getattr(args, "runner", "local") != "ray"  # (Ray decodes in its own processes)
    if local and Path(args.videos).suffix.lower() not in FEATURE_EXTENSIONS:  # videos to decode: start the server
        from locvtp.extract_pipeline import start_worker_server

        start_worker_server(decode_workers(args))  # (its imports overlap the model's loading)
    steps = (_standard_steps(args, device) if isinstance(args.backbone, str) else _predictor_steps(args, device))
    items = steps.items
    if not items:  # before any output exists: an empty store with exit 0 would hide the mistake
        raise no_videos_error(args.videos, steps.problems)
    shard = getattr(args, "shard", None)
    if shard is not None:
        items = [it for it in items if shard_of(it.video_id, shard[1]) == shard[0]]
    if world > 1:
        items = items[rank::world]

    # -- outputs (this run holds the output's lock: see run_extract) ----------------------------------------
    if args.overwrite:  # only what an extraction wrote itself (see the module docstring)
        if args.format == "h5":
            discard_h5_output(out)
        else:
            discard_dir_output(out)
    # An OS failure of a write (no space, read-only, ...) is one line naming --out; what was finished is kept.
    kept = out.with_name(out.name + ".parts") if args.format == "h5" else out
    with writing(out, "--out", note=f"the videos finished so far are kept in {kept}: rerun to resume"):
        if args.format == "h5":
            out.parent.mkdir(parents=True, exist_ok=True)
            writer: Any = H5Writer(out, steps.settings, failures_path)
        else:
            writer = DirWriter(out, args.format, steps.settings, failures_path, rank=rank, single_process=world <= 1,
                               emptied=bool(args.overwrite))
    try:
        with steps.limit, writing(out, "--out", note=f"the videos finished so far are kept in {kept}: "
                                  "rerun to resume"):  # (inputs' OS errors are recorded in the loop)
            loop = _pipeline_loop if steps.pipeline is not None else _extract_loop
            return loop(args, writer, items, steps.problems, out, failures_path, rank, world, steps, t_start,
                        progress)
    finally:
        try:  # stopped by an error or Ctrl-C: what is finished is journalled, not lost (a full disk: as it can)
            writer.commit()
        except OSError:
            pass  # the error that stopped the run is the one to report
        if isinstance(writer, DirWriter):
            writer.close()


def _predictor_steps(args: argparse.Namespace, device: str) -> _Steps:
    """A checkpoint's extraction (``--checkpoint``): its preprocessing, its encoder (pixels or feature files)."""
    from locvtp.predictor import LocVTPPredictor

    pred = LocVTPPredictor.from_checkpoint(args.checkpoint, device=device, threads=args.threads or None)
    # The checkpoint's preprocessing (the predictor reads it once); another window cut is allowed, frames per
    # clip or a frame size other than the checkpoint's are a UsageError naming both values.
    prep = pred.resolve_preprocessing(args.clip_seconds, args.stride_seconds, args.frames_per_clip, args.frame_size,
                                      flags={"frames_per_clip": "--frames-per-clip", "frame_size": "--frame-size"})
    args.clip_seconds, args.stride_seconds = prep.clip_seconds, prep.stride_seconds
    args.frames_per_clip, args.frame_size = prep.frames_per_clip, prep.frame_size
    batch, backbone = args.batch_clips or 64, bool(args.backbone)
    settings, limit = _settings(pred, args), pred.thread_limit()
    if pred.takes_pixels:
        from locvtp.extract_pipeline import WindowClips
        from locvtp.inference import ClipBatchEncoder

        amp = getattr(args, "amp", None)

        def actor() -> Any:  # what a Ray encoder actor loads: this checkpoint file
            from locvtp.extract_ray import CheckpointActor

            return CheckpointActor(str(Path(pred.path).resolve()), pred.sha256, backbone, amp)

        items, problems = list_videos(args.videos, recursive=args.recursive, strict=args.strict)
        pipe = _pipeline(args, ClipBatchEncoder(pred.model, pred.device, backbone, amp), WindowClips(prep), batch,
                         backbone, actor)
        return _Steps(settings, items, problems, limit, pipe)
    # a features encoder: inputs are per-clip feature files (any format iter_features reads)
    if getattr(args, "runner", "local") == "ray":
        raise UsageError(f"--runner ray: the checkpoint {pred.path} encodes feature files (a `features` video "
                         "encoder), which extract one file at a time in this process: leave --runner out")
    recs = list(iter_features(args.videos, load=False))
    want = pred.input_width
    wrong = [r for r in recs if want is not None and r.dim != int(want)]
    if wrong:
        raise UsageError(f"--videos {args.videos}: video {wrong[0].video_id!r} has features of width "
                         f"{wrong[0].dim} ({len(wrong)} of {len(recs)} videos differ), the checkpoint's features "
                         f"encoder reads width {want} (model.video.in_dim)")

    def load(it: VideoItem) -> Any:
        return read_features(it.path, it.video_id)

    def encode(it: VideoItem, data: Any) -> ClipFeatures:
        e = pred.encode_features(data, features_are="input", batch_clips=batch, backbone=backbone)
        return ClipFeatures(it.video_id, e.backbone if backbone else e.features, e.windows, data.fps,
                            data.duration)

    items = [VideoItem(r.video_id, Path(args.videos)) for r in recs]
    return _Steps(settings, items, [], limit, load=load, encode=encode)


def _pipeline(args: argparse.Namespace, encoder: Any, decoding: Any, batch: int, backbone: bool,
              actor: Callable[[], Any]) -> Any:
    """The decode/encode pipeline of ``encoder`` and ``decoding`` (:mod:`locvtp.extract_pipeline`): this machine's
    decoding processes, or Ray's (``--runner ray``; ``actor()``: what each Ray encoder actor loads)."""
    from locvtp.extract_pipeline import Pipeline

    common = (encoder, decoding, batch, decode_workers(args), backbone, bool(args.strict), RECORDED_ERRORS)
    if getattr(args, "runner", "local") != "ray":
        return Pipeline(*common)
    from locvtp.extract_ray import RayPipeline

    return RayPipeline(*common, actor=actor(), device=args.device, threads=int(args.threads or 0),
                       address=getattr(args, "ray_address", None), encoders=getattr(args, "ray_encoders", None))


def decode_workers(args: argparse.Namespace) -> int:
    """``--workers`` (``--decode-workers``, its former name, wins when given)."""
    old = getattr(args, "decode_workers", None)
    return int(old if old is not None else getattr(args, "workers", 1))


# S3D forwards 30 frames of 224² per feature: a smaller default batch keeps a CPU run's memory near 1 GB.
_STANDARD_BATCH = {"clip": 64, "s3d": 8}


def _standard_steps(args: argparse.Namespace, device: str) -> _Steps:
    """``--backbone clip|s3d --weights FILE``: the field's features under their protocols
    (:mod:`locvtp.standard_features`). The protocol fixes the clip grid and the frames, so the flags that
    change them are refused (one line) instead of silently ignored."""
    from locvtp import runtime
    from locvtp.standard_features import load_standard_backbone

    given = [f for f, v in (("--clip-seconds", args.clip_seconds), ("--stride-seconds", args.stride_seconds),
                            ("--frames-per-clip", args.frames_per_clip), ("--frame-size", args.frame_size))
             if v is not None]
    if given:
        raise UsageError(f"{given[0]} with --backbone {args.backbone}: the {args.backbone} protocol fixes the clip "
                         "grid and the frames (docs/features.md); leave it out")
    other = {"clip": [("--s3d-output", args.s3d_output)],
             "s3d": [("--clip-arch", args.clip_arch), ("--clip-activation", args.clip_activation)]}
    wrong = [f for f, v in other.get(args.backbone, []) if v is not None]
    if wrong:
        raise UsageError(f"{wrong[0]} is not an option of --backbone {args.backbone}")
    bb = load_standard_backbone(args.backbone, args.weights, device=device, clip_arch=args.clip_arch,
                                clip_activation=args.clip_activation or "quick_gelu",
                                s3d_output=args.s3d_output or "embedding")
    bb.amp = getattr(args, "amp", None)
    batch = args.batch_clips or _STANDARD_BATCH[bb.name]
    items, problems = list_videos(args.videos, recursive=args.recursive, strict=args.strict)

    def actor() -> Any:  # what a Ray encoder actor loads: these weights, these options
        from locvtp.extract_ray import StandardActor

        return StandardActor(bb.name, str(Path(args.weights).expanduser().resolve()), bb.weights_sha256,
                             args.clip_arch, args.clip_activation or "quick_gelu", args.s3d_output or "embedding",
                             bb.amp)

    pipe = _pipeline(args, bb, bb.decoding(), batch, False, actor)
    return _Steps(bb.settings(), items, problems, runtime.threads(args.threads or None), pipe)


def _extract_loop(args: argparse.Namespace, writer: Any, items: list[VideoItem], problems: list[dict[str, str]],
                  out: Path, failures_path: Path, rank: int, world: int, steps: _Steps,
                  t_start: float, progress: bool) -> "ExtractSummary":
    """Load ahead, encode, write, flush: the per-video loop of a checkpoint whose video encoder reads feature files
    (``steps.load`` / ``steps.encode``, :func:`_predictor_steps`); a temporal encoder needs each video whole, so
    there are no clips to batch across videos."""
    load, encode = steps.load, steps.encode
    done = writer.done_ids({it.video_id for it in items})
    todo = [it for it in items if it.video_id not in done]
    skipped_done = len(items) - len(todo)

    extracted = failed = clips = 0
    t_loop = time.perf_counter()
    last_flush = time.monotonic()
    from locvtp.runtime import progress as tqdm

    bar = tqdm(total=len(todo), desc=f"extract{f' rank {rank}' if world > 1 else ''}", unit="video",
               disable=not progress, dynamic_ncols=True, mininterval=1.0)
    workers = max(1, decode_workers(args))
    prefetch = workers + 1
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        futures: list[tuple[VideoItem, Future]] = []
        nxt = 0
        while nxt < len(todo) or futures:
            while nxt < len(todo) and len(futures) < prefetch:
                futures.append((todo[nxt], pool.submit(load, todo[nxt])))
                nxt += 1
            it, fut = futures.pop(0)
            try:
                res = encode(it, fut.result())
                if not np.all(np.isfinite(res.features)):
                    raise ValueError("non-finite values in the features")
            except RECORDED_ERRORS as exc:  # lenient by design: record, continue (bugs still raise)
                if args.strict:
                    raise ExtractError(f"{it.path}: {type(exc).__name__}: {exc}") from exc
                writer.fail(it, f"{type(exc).__name__}: {exc}")
                failed += 1
            else:
                writer.add(res, source=it.source)
                extracted += 1
                clips += res.features.shape[0]
            bar.update(1)
            bar.set_postfix(ok=extracted, failed=failed, clips=clips)
            due_n = args.flush_every and writer.pending >= args.flush_every
            due_t = args.flush_seconds and time.monotonic() - last_flush >= args.flush_seconds and writer.pending
            if due_n or due_t:
                writer.assemble()
                last_flush = time.monotonic()
    bar.close()
    attempted = {it.video_id for it in items}
    recs = writer.finish(attempted, skipped=problems if _lists_skipped(args, rank) else [])
    t_end = time.perf_counter()
    return ExtractSummary(out, failures_path, len(items), skipped_done, extracted, len(recs), clips,
                          t_end - t_start, problems, t_end - t_loop)


def _pipeline_loop(args: argparse.Namespace, writer: Any, items: list[VideoItem], problems: list[dict[str, str]],
                   out: Path, failures_path: Path, rank: int, world: int, steps: _Steps,
                   t_start: float, progress: bool) -> "ExtractSummary":
    """A pixel checkpoint's extraction: decode in worker processes, encode batches across videos, write in a
    thread (:mod:`locvtp.extract_pipeline`); flushes, progress and the summary as :func:`_extract_loop`."""
    from locvtp.runtime import progress as tqdm

    done = writer.done_ids({it.video_id for it in items})
    todo = [it for it in items if it.video_id not in done]
    t_loop = time.perf_counter()
    last_flush = [time.monotonic()]
    pipe = steps.pipeline
    bar = tqdm(total=len(todo), desc=f"extract{f' rank {rank}' if world > 1 else ''}", unit="video",
               disable=not progress, dynamic_ncols=True, mininterval=1.0)

    def tick(ok: bool) -> None:
        bar.update(1)
        bar.set_postfix(ok=pipe.extracted, failed=pipe.failed, clips=pipe.clips)

    def flush_due() -> bool:
        due_n = args.flush_every and writer.pending >= args.flush_every
        due_t = args.flush_seconds and time.monotonic() - last_flush[0] >= args.flush_seconds and writer.pending
        if due_n or due_t:
            last_flush[0] = time.monotonic()
            return True
        return False

    pipe.run(todo, writer, tick, flush_due)
    bar.close()
    recs = writer.finish({it.video_id for it in items}, skipped=problems if _lists_skipped(args, rank) else [])
    t_end = time.perf_counter()
    return ExtractSummary(out, failures_path, len(items), len(items) - len(todo), pipe.extracted, len(recs),
                          pipe.clips, t_end - t_start, problems, t_end - t_loop)
