"""The paper's four downstream tasks, one table (the library behind `locvtp evaluate`, :mod:`locvtp.commands.evaluate`).

``evaluate_all`` loads the checkpoint once, reads every task's annotations first (cheap), embeds every video
any chosen task needs exactly once (one progress bar), then runs the tasks on the shared cache. Each task is
seeded with ``seed`` on entry, so its figures do not depend on which other tasks ran before it. Every task
writes ``<out>/<task>.json`` (metrics, per-query predictions, settings, skipped inputs with reasons); ``all``
also writes ``<out>/metrics.json`` (the flat dict returned) and prints one table.

Inputs that cannot be used never turn into a figure that looks like an answer: option values out of range are
refused up front (:func:`check_options`), a feature file whose width does not fit the checkpoint is an error
naming both widths, a run in which no video can be embedded fails, and a video that cannot be used (unreadable,
NaN/inf features, ...) is left out with a ``locvtp evaluate: warning:`` line naming it, its reason in the JSON
files, and a closing line saying how many of the figures' videos were left out (``--strict`` fails instead).
"""
from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from locvtp.errors import UsageError
from locvtp.downstream.common import (
    DownstreamError, EvalContext, FeatureFile, TaskResult, VideoLocator, format_table, make_bank, seed_everything,
    write_json, write_jsonl, write_npz,
)
from locvtp.downstream.grounding import (
    GROUNDING_WORDS, GroundingOptions, HeadConfig, key_by_annotation_qid, load_grounding_queries,
)
from locvtp.downstream.tan import HEAD_VARIANTS, run_grounding_task
from locvtp.downstream.retrieval import SIMILARITY_FILES, RetrievalOptions, load_msrvtt, run_retrieval
from locvtp.downstream.segmentation import SEGMENTATION_PREDICTIONS, SegmentationOptions, load_coin, run_segmentation
from locvtp.downstream.steps import STEPS_PREDICTIONS, StepsOptions, load_crosstask, run_steps

TASKS = ("retrieval", "grounding", "steps", "segmentation")
# The headline figure of each task, shown first in the tables.
HEADLINE = ("retrieval_R1", "retrieval_R5", "retrieval_R10", "retrieval_MedianR", "grounding_R1@0.5",
            "grounding_R1@0.7", "grounding_mIoU", "grounding_content_R1@0.5", "grounding_content_R1@0.7",
            "grounding_content_mIoU", "head_grounding_R1@0.5", "head_grounding_R1@0.7",
            "head_grounding_mIoU", "step_recall", "segmentation_acc", "segmentation_edit", "segmentation_F1@50")


class OptionError(UsageError, DownstreamError):
    """A downstream option (``--config`` file, ``--set KEY=VALUE``) is unknown or out of range (exit code 2)."""


@dataclass
class DownstreamOptions:
    """Every task's settings (``configs/downstream/default.yaml`` spells out the defaults)."""

    retrieval: RetrievalOptions = field(default_factory=RetrievalOptions)
    grounding: GroundingOptions = field(default_factory=GroundingOptions)
    steps: StepsOptions = field(default_factory=StepsOptions)
    segmentation: SegmentationOptions = field(default_factory=SegmentationOptions)


def load_options(path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> DownstreamOptions:
    """Defaults ← YAML ← dotted overrides (``grounding.head_cfg.epochs=30``); unknown keys fail with their name."""
    import yaml
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    cfg = OmegaConf.structured(DownstreamOptions)
    where = "downstream options"
    try:
        if path is not None:
            where = f"{path}"
            p = Path(path)
            if not p.is_file():
                raise OptionError(f"downstream config not found: {p}")
            raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
            if not isinstance(raw, dict):
                raise OptionError(f"{p}: top level must be a mapping")
            cfg = OmegaConf.merge(cfg, OmegaConf.create(raw))
        for ov in overrides:
            where = f"--set {ov}"
            if "=" not in ov:
                raise OptionError(f"override {ov!r} is not of the form key=value")
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([ov]))
    except OmegaConfBaseException as exc:
        raise OptionError(f"{where}: {exc}") from None
    except yaml.YAMLError as exc:
        raise OptionError(f"{path}: invalid YAML: {exc}") from None
    return check_options(OmegaConf.to_object(cfg))  # type: ignore[arg-type]


# Checked values of the options: dotted key -> allowed choices, or (low, high, low_open, high_open).
_CHOICES = {
    "grounding.dataset": ("activitynet", "charades", "qvhighlights"),
    "grounding.window_score": ("tstat", "contrast", "oic", "oic_t"),
    "grounding.words": GROUNDING_WORDS,
    "grounding.head_cfg.pooling": ("max", "avg"),
    "grounding.head_variant": HEAD_VARIANTS,
    "steps.normalize": ("log_softmax", "none"),
    "steps.split": ("val", "train", "all"),
    "segmentation.probe.head": ("linear", "tcn"),
}
_RANGES = {
    "grounding.alpha": (0, 1, False, False), "steps.alpha": (0, 1, False, False),
    "grounding.max_candidates": (1, None, False, False), "grounding.top_k_saved": (1, None, False, False),
    "grounding.head_cfg.num_clips": (1, None, False, False), "grounding.head_cfg.hidden": (1, None, False, False),
    "grounding.head_cfg.layers": (0, None, False, False), "grounding.head_cfg.kernel": (1, None, False, False),
    "grounding.head_cfg.dropout": (0, 1, False, True), "grounding.head_cfg.epochs": (1, None, False, False),
    "grounding.head_cfg.batch_size": (1, None, False, False), "grounding.head_cfg.lr": (0, None, True, False),
    "grounding.head_cfg.weight_decay": (0, None, False, False), "grounding.head_cfg.min_iou": (0, 1, False, True),
    "grounding.head_cfg.max_iou": (0, 1, True, False),
    "grounding.tan_cfg.word_dim": (1, None, False, False), "grounding.tan_cfg.cooc_window": (1, None, False, False),
    "grounding.tan_cfg.min_count": (1, None, False, False), "grounding.tan_cfg.max_vocab": (1, None, False, False),
    "grounding.tan_cfg.lstm_hidden": (1, None, False, False), "grounding.tan_cfg.lstm_layers": (1, None, False, False),
    "grounding.tan_cfg.max_words": (1, None, False, False), "grounding.tan_cfg.val_fraction": (0, 1, False, True),
    "grounding.tan_cfg.patience": (1, None, False, False), "grounding.tan_cfg.seeds": (1, None, False, False),
    "grounding.tan_cfg.grad_clip": (0, None, False, False), "grounding.tan_cfg.lr": (0, None, True, False),
    "grounding.tan_cfg.epochs": (1, None, False, False),
    "retrieval.top_k_saved": (1, None, False, False), "retrieval.finetune_cfg.epochs": (1, None, False, False),
    "retrieval.finetune_cfg.batch_size": (1, None, False, False),
    "retrieval.finetune_cfg.lr": (0, None, False, False), "retrieval.finetune_cfg.adapter_lr": (0, None, False, False),
    "retrieval.finetune_cfg.weight_decay": (0, None, False, False),
    "retrieval.finetune_cfg.temperature": (0, None, True, False),
    "retrieval.finetune_cfg.max_words": (3, None, False, False),
    "segmentation.probe.epochs": (1, None, False, False), "segmentation.probe.tcn_epochs": (1, None, False, False),
    "segmentation.probe.lr": (0, None, True, False), "segmentation.probe.weight_decay": (0, None, False, False),
    "segmentation.probe.hidden": (1, None, False, False), "segmentation.probe.kernel": (1, None, False, False),
    "segmentation.probe.batch_size": (1, None, False, False),
}


def _option(opts: Any, key: str) -> Any:
    for part in key.split("."):
        opts = getattr(opts, part)
    return opts


def check_options(opts: DownstreamOptions) -> DownstreamOptions:
    """``opts`` unchanged, or a :class:`DownstreamError` naming the first option whose value cannot mean
    anything (``grounding.head_cfg.epochs=-1`` trained nothing and reported the untrained head's figures;
    ``grounding.max_candidates=0`` reported R1 = 0)."""
    for key, allowed in _CHOICES.items():
        v = _option(opts, key)
        if v not in allowed:
            raise OptionError(f"option {key}={v!r}: choose one of {', '.join(allowed)}")
    for key, (lo, hi, lo_open, hi_open) in _RANGES.items():
        v = _option(opts, key)
        bad = not math.isfinite(float(v))
        bad |= lo is not None and (v <= lo if lo_open else v < lo)
        bad |= hi is not None and (v >= hi if hi_open else v > hi)
        if bad:
            rule = " and ".join(t for t in (
                None if lo is None else f"{'>' if lo_open else '>='} {lo}",
                None if hi is None else f"{'<' if hi_open else '<='} {hi}") if t)
            raise OptionError(f"option {key}={v!r}: must be {rule}")
    hc = opts.grounding.head_cfg
    if opts.grounding.head_variant == "tan":
        for key in ("lr", "epochs"):  # the tan head's are tan_cfg's: a head_cfg value would be ignored silently
            if getattr(hc, key) != getattr(HeadConfig, key):
                raise OptionError(f"option grounding.head_cfg.{key}={getattr(hc, key)!r} is the checkpoint_text "
                                  f"head's; the tan head's is grounding.tan_cfg.{key}")
    if hc.kernel % 2 != 1:
        raise OptionError(f"option grounding.head_cfg.kernel={hc.kernel}: must be odd (same padding)")
    probe = opts.segmentation.probe
    if probe.head == "tcn" and probe.kernel % 2 != 1:
        raise OptionError(f"option segmentation.probe.kernel={probe.kernel}: the tcn head needs an odd kernel")
    if not hc.min_iou < hc.max_iou:
        raise OptionError(f"options grounding.head_cfg.min_iou={hc.min_iou} and max_iou={hc.max_iou}: "
                              "min_iou must be below max_iou")
    return opts


def _load_checkpoint(checkpoint: Any, device: str = "cpu"):
    """A path (checkpoint or run dir) → loaded Checkpoint; an already loaded one is returned as is."""
    if isinstance(checkpoint, (str, os.PathLike)):
        from locvtp.checkpoint import load_checkpoint, resolve_checkpoint

        return load_checkpoint(resolve_checkpoint(checkpoint), map_location=device)
    for attr in ("model", "tokenizer", "cfg"):
        if not hasattr(checkpoint, attr):
            raise DownstreamError(f"checkpoint must be a path or a loaded Checkpoint; {type(checkpoint).__name__} "
                                  f"has no .{attr}")
    return checkpoint


def _needed_videos(data_dir: Path, tasks: Sequence[str], opts: DownstreamOptions, strict: bool
                   ) -> tuple[list[str], dict[str, float]]:
    """Every video id the chosen tasks read, in task order, and the durations the annotations give."""
    vids: list[str] = []
    durations: dict[str, float] = {}
    if "retrieval" in tasks:
        data = load_msrvtt(data_dir, strict=strict)
        vids += [v for v, _ in data.test]
        if opts.retrieval.finetune:
            vids += list(data.train)
    if "grounding" in tasks:
        splits = ("test", "train") if opts.grounding.head else ("test",)
        for split in splits:
            queries, _ = load_grounding_queries(data_dir, opts.grounding.dataset, split, strict, opts.grounding)
            for q in queries:
                vids.append(q.vid)
                if q.duration > 0:
                    durations[q.vid] = q.duration
    if "steps" in tasks:
        _, videos, _ = load_crosstask(data_dir, opts.steps.split, strict=strict)
        vids += [v.vid for v in videos]
    if "segmentation" in tasks:
        train, test, _ = load_coin(data_dir, strict=strict)
        for v in [*train, *test]:
            vids.append(v.vid)
            if v.duration > 0:
                durations[v.vid] = v.duration
    return list(dict.fromkeys(vids)), durations


# The predictions files (JSON lines, ``locvtp score``'s input) a task writes next to its ``<task>.json``.
PREDICTION_FILES = {"grounding": ("grounding_predictions.jsonl", "grounding_content_predictions.jsonl",
                                   "head_grounding_predictions.jsonl", "qvhighlights_submission.jsonl"),
                    "retrieval": tuple(SIMILARITY_FILES.values()), "steps": (STEPS_PREDICTIONS,),
                    "segmentation": (SEGMENTATION_PREDICTIONS,)}
RUNNERS = {"retrieval": run_retrieval, "grounding": run_grounding_task, "steps": run_steps,
           "segmentation": run_segmentation}


def evaluate_all(checkpoint: Any, data_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                 tasks: Sequence[str] = TASKS, features: str | os.PathLike | None = None, progress: bool = True,
                 seed: int = 0, options: DownstreamOptions | None = None, video_dir: str | os.PathLike | None = None,
                 strict: bool = False, device: str = "cpu", verbose: bool = True,
                 threads: int | None = None) -> dict[str, float]:
    """Run the chosen tasks and return one flat dict of metrics (percentages; ``retrieval_MedianR`` is a rank).

    ``checkpoint``: a checkpoint or run directory, or a loaded ``locvtp.checkpoint.Checkpoint``.
    ``data_dir``: a synthetic world or a directory with the same layout (``retrieval/``, ``grounding/``,
    ``crosstask/``, ``coin/``, videos in ``video_dir`` = ``<data_dir>/videos`` by default).
    ``features``: clip features for the supervised heads (see ``make_bank``).
    ``threads``: torch intra-op threads for the run (:func:`locvtp.runtime.threads`: restored afterwards; None
    keeps the current setting). On a busy machine 1 is much faster than 2 (measured, 2 cores at load 10:
    embedding 6 demo videos 0.49 s with 1 thread vs 1.8-3.3 s with 2), because a parallel region waits for its
    slowest, descheduled thread.
    Returns e.g. ``retrieval_R1, grounding_R1@0.5, head_grounding_R1@0.5, step_recall, segmentation_acc``, and
    ``<task>_seconds`` timings. With ``out_dir``, every task's predictions are written too (``<task>.json``; for
    grounding also ``grounding_predictions.jsonl``, the input of ``locvtp score``).
    """
    if isinstance(checkpoint, (str, os.PathLike)):
        from locvtp.device import resolve_device

        device = resolve_device(device)  # before loading: no CUDA here is not a corrupt checkpoint
    if threads is not None and threads < 1:
        raise DownstreamError(f"threads must be >= 1, got {threads}")
    from locvtp import runtime

    with runtime.threads(threads):
        return _evaluate(checkpoint, data_dir, out_dir, tasks, features, progress, seed, options, video_dir,
                         strict, device, verbose)


def _evaluate(checkpoint: Any, data_dir: Any, out_dir: Any, tasks: Sequence[str], features: Any, progress: bool,
              seed: int, options: DownstreamOptions | None, video_dir: Any, strict: bool, device: str,
              verbose: bool) -> dict[str, float]:
    """:func:`evaluate_all` after the device and thread settings: check, embed, run the tasks, report."""
    tasks = list(dict.fromkeys(tasks))
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise DownstreamError(f"unknown task(s) {unknown}; choose from {list(TASKS)}")
    opts = check_options(options or DownstreamOptions())
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        from locvtp.errors import broken_link

        raise DownstreamError(f"data directory {data_dir}: {broken_link(data_dir)}" if broken_link(data_dir) else
                              f"data directory not found: {data_dir}")
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        _check_out(out, tasks)
    t0 = time.time()
    ctx, vids = prepare_context(checkpoint, data_dir, out, tasks, opts, features, progress, seed, video_dir, strict,
                         device)
    embed_seconds = time.time() - t0
    notes: list[str] = []
    flat = _run_tasks(ctx, tasks, opts, verbose, notes)
    flat["embed_seconds"] = round(embed_seconds, 2)
    flat["total_seconds"] = round(time.time() - t0, 2)
    flat = _ordered(flat)
    bank = ctx.bank
    if out is not None:
        write_json(out / "metrics.json", {"checkpoint": ctx.checkpoint_path, "checkpoint_sha256": ctx.checkpoint_sha256,
                                          "data": str(data_dir), "tasks": tasks, "seed": seed, "metrics": flat,
                                          "videos": len(vids), "failed_videos": bank.failed,
                                          "failed_features": bank.failed_features, "warnings": notes})
    if verbose:
        shown = {k: v for k, v in flat.items() if not k.endswith("_seconds")}
        print(format_table(shown, title=f"[evaluate] {', '.join(tasks)} | checkpoint {ctx.checkpoint_path} | "
                                        f"data {data_dir} | {flat['total_seconds']:.1f} s"))
        report_skipped(bank, len(vids), out)
        from locvtp.cliargs import warn

        for note in notes:
            warn("locvtp evaluate", note)
    return flat


def prepare_context(checkpoint: Any, data_dir: Path, out: Path | None, tasks: Sequence[str], opts: DownstreamOptions,
             features: Any, progress: bool, seed: int, video_dir: Any, strict: bool, device: str
             ) -> tuple[EvalContext, list[str]]:
    """Load the checkpoint, read the annotations, embed every needed video once: the tasks' context (and the
    videos embedded). Public for diagnostics that run a task's pieces on the same context as `evaluate`."""
    ck = _load_checkpoint(checkpoint, device)
    if any(t != "segmentation" for t in tasks):  # every other task embeds sentences
        from locvtp.inference import require_tokenizer

        require_tokenizer(ck, "locvtp evaluate " + "/".join(t for t in tasks if t != "segmentation"))
    sha = str(getattr(ck, "sha256", "") or "")
    vids, durations = _needed_videos(data_dir, tasks, opts, strict)
    feat = FeatureFile.open(features) if features is not None else None
    if feat is not None:
        _check_feature_width(feat, ck, sha)
    from locvtp.predictor import LocVTPPredictor

    pred = LocVTPPredictor.from_loaded(ck)  # the checkpoint's preprocessing, read once
    bank = make_bank(ck.model, ck.tokenizer, ck.cfg, VideoLocator(video_dir or data_dir / "videos"), feat,
                     durations, progress=progress, checkpoint_sha256=sha, strict=strict, predictor=pred)
    bank.prefetch(vids, desc="embed videos")
    if vids and len(bank.failed) == len(vids):
        vid, why = next(iter(bank.failed.items()))
        raise DownstreamError(f"none of the {len(vids)} videos the task(s) need could be embedded, so there is "
                              f"nothing to measure; the first, {vid!r}: {why}")
    ctx = EvalContext(ck.model, ck.tokenizer, ck.cfg, data_dir, bank, out, seed, progress, strict,
                      str(getattr(ck, "path", "")), sha, durations, preprocessing=pred.preprocessing)
    return ctx, vids


def _run_tasks(ctx: EvalContext, tasks: Sequence[str], opts: DownstreamOptions, verbose: bool,
               notes: list[str] | None = None) -> dict[str, float]:
    """Each task on the shared context, seeded on entry; its JSON (and predictions file) written to ``ctx.out_dir``;
    the tasks' warnings (``info["warnings"]``, e.g. grounding's flat queries) appended to ``notes``."""
    flat: dict[str, float] = {}
    bank, out = ctx.bank, ctx.out_dir
    for task in tasks:
        seed_everything(ctx.seed)
        ts = time.time()
        res: TaskResult = RUNNERS[task](ctx, getattr(opts, task))
        res.info["seconds"] = round(time.time() - ts, 2)
        res.info["checkpoint"] = ctx.checkpoint_path
        res.info["checkpoint_sha256"] = ctx.checkpoint_sha256
        res.info["seed"] = ctx.seed
        res.info["failed_videos"] = dict(bank.failed)
        if bank.failed_features:
            res.info["failed_features"] = dict(bank.failed_features)
        if task == "grounding":
            key_by_annotation_qid(res)  # QVHighlights lines keyed as its annotation keys them
        flat.update(res.metrics)
        flat[f"{task}_seconds"] = res.info["seconds"]
        if notes is not None:
            notes.extend(res.info.get("warnings", []))
        if out is not None:
            write_json(out / f"{task}.json", res.to_json())
            for name, lines in res.prediction_files.items():
                write_jsonl(out / name, lines)
            for name, arrays in res.array_files.items():
                write_npz(out / name, arrays)
        if verbose and len(tasks) > 1:  # `all` prints one table at the end
            print(f"[evaluate] {task}: done in {res.info['seconds']:.1f} s", file=sys.stderr)
    return flat


def _check_out(out: Path, tasks: Sequence[str]) -> None:
    """``--out`` must be a directory (or not exist yet), and every file this run will write there must be absent
    or an earlier locvtp output unchanged since (:func:`locvtp.files.check_file_output`): a user's own
    ``metrics.json`` in that directory is not overwritten, and the check comes before any work."""
    from locvtp.files import check_file_output

    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: is a file; give a directory for <task>.json and metrics.json")
    names = [f"{t}.json" for t in tasks] + ["metrics.json"]
    names += [name for t in tasks for name in PREDICTION_FILES.get(t, ())]
    for name in names:
        check_file_output(out / name, "evaluate", "--out", make_parent=True)


def report_skipped(bank: Any, total: int, out: Path | None = None, limit: int = 20) -> None:
    """One warning line per video left out of the figures (the first ``limit``), then how many and where the
    full list is. Why: a video with NaN features or an unreadable file silently lowered or raised a recall."""
    from locvtp.cliargs import warn

    skipped = {**{v: f"features: {r}" for v, r in bank.failed_features.items()}, **bank.failed}
    if not skipped:
        return
    for vid, why in list(skipped.items())[:limit]:
        warn("locvtp evaluate", f"video {vid!r} skipped: {why}")
    more = f" (+{len(skipped) - limit} more)" if len(skipped) > limit else ""
    where = f"; all of them in {out / 'metrics.json'}" if out is not None else ""
    warn("locvtp evaluate", f"the figures above leave out {len(skipped)} of {total} videos: "
                            f"{', '.join(list(skipped)[:limit])}{more}{where} (--strict fails instead)")


def _check_feature_width(feat: FeatureFile, ck: Any, sha: str) -> None:
    """A :class:`DownstreamError` naming the feature file and both widths when its rows cannot feed this
    checkpoint: a features model reads ``model.video.in_dim`` columns, this checkpoint's own joint embeddings
    have ``model.dim``, and the supervised heads need one width for every video."""
    from locvtp.featurestore.reader import iter_features

    model = ck.model
    if not bool(getattr(model, "takes_pixels", True)):
        want = int(getattr(model.video_encoder, "in_dim", 0) or ck.cfg.model.video.in_dim)
        what = "this checkpoint's video encoder (model.video.in_dim) reads"
    elif feat.is_joint_embedding_of(sha):
        want, what = int(model.dim), "this checkpoint's joint space (model.dim) has"
    else:
        want, what = None, ""
    first: tuple[str, int] | None = None
    for rec in iter_features(feat.path, load=False):
        if want is not None and rec.dim != want:
            raise DownstreamError(f"{feat.path}: video {rec.video_id!r} has {rec.dim}-dim features, but {what} "
                                  f"{want}-dim ones (checkpoint {getattr(ck, 'path', '')})")
        if first is None:
            first = (rec.video_id, rec.dim)
        elif rec.dim != first[1]:
            raise DownstreamError(f"{feat.path}: videos have features of different widths ({first[0]!r}: "
                                  f"{first[1]}, {rec.video_id!r}: {rec.dim}); one run's features only")
        if want is not None:
            break  # the width is fixed by the checkpoint: the encoder checks every row anyway


def _ordered(metrics: dict[str, float]) -> dict[str, float]:
    """Headline figures first, then the other figures, then the chance floors, then timings."""
    def rank(k: str) -> tuple[int, int]:
        if k in HEADLINE:
            return 0, HEADLINE.index(k)
        return (3 if k.endswith("_seconds") else 2 if k.startswith("chance_") else 1), 0

    return {k: metrics[k] for k in sorted(metrics, key=rank)}  # sorted is stable: task order kept within a group
