"""Pre-training: ``locvtp pretrain --config configs/NAME.yaml --out RUN_DIR [--resume auto|PATH] [key=value ...]``.

The loop is :func:`pretrain` and fits on one screen; everything it calls is a small helper above it.
The same command runs under ``torchrun --nproc_per_node=N`` (DDP, env:// rendezvous, gloo on CPU, nccl on GPU):
``train.batch_size`` is the *global* batch, split across ranks; the objective gathers features from all ranks
(with gradients) itself, so every rank computes the loss of the whole global batch.

Run directory::

    config.yaml  tokenizer/  metrics.jsonl  bad_samples.jsonl  video_index.json  cache/
    checkpoints/step_0000100/ ...   (the last ``train.keep_last``)      final/   (complete checkpoint)

Why resume is exact: the data order is a function of (seed, epoch, position) only (see
``locvtp.data.datasets.ResumableBatchSampler``), every sample draws from its own generator, and the checkpoint
holds model, objective, optimizer, scheduler, step and every rank's RNG states. A resumed CPU run therefore ends
with the weights an uninterrupted run ends with.
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import random
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from .config import ConfigError, load_config, save_config, validate_config
from .errors import LocVTPError, UsageError

_STEP_RE = re.compile(r"^step_(\d+)$")
PROG = "locvtp pretrain"


class TrainingDivergedError(LocVTPError, FloatingPointError):
    """The loss became NaN/inf (the message names the step and every loss term)."""


# ----------------------------------------------------------------------------------------------------------
# Distributed plumbing
# ----------------------------------------------------------------------------------------------------------
@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def gather_objects(self, obj: Any) -> list:
        if not self.enabled:
            return [obj]
        out: list = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj: Any) -> Any:
        if not self.enabled:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]


def setup_distributed(device: str = "auto") -> Dist:
    """Join the torchrun process group if there is one (WORLD_SIZE > 1); pick this rank's device.

    ``train.device`` is checked by :func:`locvtp.device.resolve_device`: a device this machine does not have is
    a one-line error naming the key. ``cuda`` (and ``auto`` on a GPU machine) means this rank's GPU
    (``cuda:LOCAL_RANK``); an explicit ``cuda:N`` is taken as given."""
    from .device import resolve_device

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    spec = resolve_device(str(device), what="train.device")
    use_cuda = spec.startswith("cuda")
    explicit = use_cuda and ":" in str(device)
    dev = torch.device(spec if explicit or not use_cuda else f"cuda:{local_rank}")
    if use_cuda:
        torch.cuda.set_device(dev)
    d = Dist(rank, world, local_rank, dev)
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if use_cuda else "gloo", init_method="env://")
        d.initialized_here = True
    return d


# ----------------------------------------------------------------------------------------------------------
# Seeds and RNG state (everything a checkpoint needs to continue bit-for-bit on CPU)
# ----------------------------------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"key": np_state[0], "state": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["key"], n["state"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------------------------------------
# Model + objective as one module (one DDP wrapper, one optimizer), optimizer, schedule
# ----------------------------------------------------------------------------------------------------------
class Pretrainer(nn.Module):
    """Encoders and objective in one module, so DDP sees every trainable parameter (context head, logit scale)."""

    def __init__(self, model: nn.Module, objective: nn.Module):
        super().__init__()
        self.model, self.objective = model, objective

    def forward(self, batch: dict) -> dict:
        clips = self.model.encode_video(batch["clips"], batch["clip_mask"])
        words, sentence = self.model.encode_text(batch["input_ids"], batch["attention_mask"])
        return self.objective(clips, words, sentence, batch["clip_mask"], batch["word_mask"],
                              offsets=batch.get("offsets"), content_mask=batch.get("content_mask"))


_NO_DECAY_NAMES = ("embed", "pos", "logit_scale", "cls_token", "token_type")


def _backbone_param_ids(net: nn.Module) -> set[int]:
    """The parameters of the video encoder's pixel CNN (what ``model.video.pretrained`` loads)."""
    from .model.video import PixelVideoEncoder

    return {id(p) for m in net.modules() if isinstance(m, PixelVideoEncoder) for p in m.cnn.parameters()}


def build_optimizer(net: nn.Module, tcfg: Any) -> torch.optim.Optimizer:
    """AdamW; no weight decay on norms, biases, embeddings, positional tables and the logit scale.

    ``train.backbone_lr_scale`` != 1 puts the video backbone's parameters in two extra groups (after the usual
    decay / no-decay pair) whose learning rate is scaled: a pretrained backbone is fine-tuned gently, the
    freshly initialised heads and text encoder at the full rate (the schedule scales every group alike).
    """
    scale = float(getattr(tcfg, "backbone_lr_scale", 1.0))
    if scale < 0:
        raise ValueError(f"train.backbone_lr_scale must be >= 0, got {scale}")
    backbone = _backbone_param_ids(net) if scale != 1.0 else set()
    decay, no_decay, bb_decay, bb_no_decay = [], [], [], []
    for mname, module in net.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            full = f"{mname}.{pname}".lower()
            skip = (p.ndim < 2 or isinstance(module, (nn.Embedding, nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d,
                                                         nn.BatchNorm2d, nn.BatchNorm3d))
                    or any(k in full for k in _NO_DECAY_NAMES))
            if id(p) in backbone:
                (bb_no_decay if skip else bb_decay).append(p)
            else:
                (no_decay if skip else decay).append(p)
    groups = [{"params": decay, "weight_decay": float(tcfg.weight_decay)},
              {"params": no_decay, "weight_decay": 0.0}]
    if bb_decay or bb_no_decay:
        lr = float(tcfg.lr) * scale
        groups += [{"params": bb_decay, "weight_decay": float(tcfg.weight_decay), "lr": lr},
                   {"params": bb_no_decay, "weight_decay": 0.0, "lr": lr}]
    return torch.optim.AdamW(groups, lr=float(tcfg.lr), betas=(0.9, 0.98), eps=1e-6)


def lr_factor(step: int, warmup: int, total: int, min_ratio: float = 0.0) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``min_ratio`` at ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(max(step - warmup, 0) / max(total - warmup, 1), 1.0)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def aux_ramp(step: int, start: int, length: int) -> float:
    """Scale of the fine-grained and temporal weights at ``step`` (0-based): 0 before ``start``, then a linear
    rise to 1 over ``length`` steps (METHOD.md's terms start once the coarse space can discover positives)."""
    if step < start:
        return 0.0
    if length <= 0:
        return 1.0
    return min(1.0, (step - start + 1) / length)


# ----------------------------------------------------------------------------------------------------------
# Run directory: checkpoints, rotation, resume, metrics
# ----------------------------------------------------------------------------------------------------------
def list_checkpoints(run: Path) -> list[tuple[int, Path]]:
    """Complete ``checkpoints/step_*`` and ``final`` of a run, oldest first, as (step, path)."""
    from .checkpoint import is_complete, read_meta

    out = []
    ckdir = run / "checkpoints"
    if ckdir.is_dir():
        for d in ckdir.iterdir():
            m = _STEP_RE.match(d.name)
            if m and is_complete(d):
                out.append((int(m.group(1)), d))
    if is_complete(run / "final"):
        try:
            step = read_meta(run / "final").get("step")
        except OSError:
            step = None
        if isinstance(step, int):
            out.append((step, run / "final"))
    return sorted(out, key=lambda sp: (sp[0], sp[1].name != "final"))


class RunExistsError(UsageError, FileExistsError):
    """``--out`` already holds checkpoints and no ``--resume`` was given."""


def find_resume(run: Path, resume: Optional[str], warn: bool = True) -> Optional[Path]:
    """The checkpoint to resume from: None (fresh run), the newest one of ``run`` that loads (``auto``), or the
    one ``resume`` names.

    Why ``auto`` checks what it picks: a checkpoint whose files were damaged after it was written (a truncated
    copy, a full disk) would stop every later resume. ``auto`` names it in one warning and takes the newest
    earlier checkpoint that passes :func:`locvtp.checkpoint.verify_checkpoint`; only when none does is it an
    error. An explicit path is not replaced by another: its problem is the error.
    """
    from .checkpoint import CheckpointError, resolve_checkpoint, verify_checkpoint

    if resume is None:
        if list_checkpoints(run):
            raise RunExistsError(f"{run} already holds checkpoints: pass --resume auto to continue that run, "
                                 "or choose another --out")
        return None
    if resume == "auto":
        found = list_checkpoints(run)
        failures = []
        for _, path in reversed(found):
            try:
                verify_checkpoint(path, need_trainer_state=True)
            except CheckpointError as exc:
                failures.append((path, exc))
                continue
            if warn:
                from .cliargs import warn as _warn

                for bad, exc in failures:
                    _warn(PROG, f"--resume auto: skipping the damaged checkpoint {bad} ({exc}); resuming from "
                                f"{path} instead")
            return path
        if failures:
            raise CheckpointError(f"--resume auto: no checkpoint of {run} loads; the newest, {failures[0][0]}: "
                                  f"{failures[0][1]}")
        return None
    try:
        return resolve_checkpoint(os.path.expanduser(str(resume)))
    except CheckpointError as exc:
        raise UsageError(f"--resume {resume}: {exc}") from None


def rotate_checkpoints(run: Path, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` step checkpoints (after a new one is safely in place)."""
    found = [(s, p) for s, p in list_checkpoints(run) if p.parent.name == "checkpoints"]
    for _, path in found[:-keep_last] if keep_last > 0 else found:
        shutil.rmtree(path, ignore_errors=True)


def clean_partial_writes(run: Path) -> None:
    """Remove temporary directories a killed checkpoint write left behind (``.step_*.tmp-*``, ``.final.tmp-*``)."""
    for parent in (run, run / "checkpoints"):
        if parent.is_dir():
            for d in parent.iterdir():
                if d.name.startswith(".") and (".tmp-" in d.name or ".old-" in d.name) and d.is_dir():
                    shutil.rmtree(d, ignore_errors=True)


def truncate_jsonl(path: Path, max_step: int) -> None:
    """Drop metric lines written after the checkpoint a run resumes from (they will be written again)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", 0) <= max_step:
                keep.append(line)
        except ValueError:
            continue
    from .files import atomic_write_text

    atomic_write_text(path, "".join(k + "\n" for k in keep))


class MetricsLog:
    """``metrics.jsonl`` (one JSON object per line) and, if asked and installed, TensorBoard."""

    def __init__(self, run: Path, tensorboard: bool, enabled: bool):
        self.path = run / "metrics.jsonl"
        self.enabled = enabled
        self.tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run / "tensorboard"))
            except ImportError:
                print("[pretrain] train.tensorboard=true but tensorboard is not installed: logging to "
                      f"{self.path} only", file=sys.stderr)

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.tb.add_scalar(k, v, record["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def warn_config_changes(cfg: Any, saved: Path) -> None:
    """A resumed run should be the run it resumes: name every setting that differs (except the step budget)."""
    if not saved.is_file():
        return
    from omegaconf import OmegaConf

    from .config import load_config as _load

    try:
        old = OmegaConf.to_container(_load(saved), resolve=True)
    except ConfigError:
        return
    new = OmegaConf.to_container(cfg, resolve=True)

    def flat(d: Any, prefix: str = "") -> dict:
        out: dict = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    fo, fn = flat(old), flat(new)
    ignore = {"train.max_steps", "model.text.vocab_size", "train.val_every", "train.log_every", "train.num_threads",
              "data.num_workers"}
    changed = [k for k in sorted(set(fo) | set(fn)) if k not in ignore and fo.get(k) != fn.get(k)]
    if changed:
        print("[pretrain] warning: resuming with settings that differ from " + str(saved) + ": " + ", ".join(
            f"{k}: {fo.get(k)!r} -> {fn.get(k)!r}" for k in changed[:12]), file=sys.stderr)


_no_tokenizer = False  # prepare_corpus(tokenizer=False): the words mask is built with the run's own tokenizer


def prepare_tokenizer(cfg: Any, run: Path, store: Any, resume_from: Optional[Path], dist: Dist) -> Any:
    """The run's tokenizer: the resumed checkpoint's, ``data.tokenizer``, the HF model's, or WordPiece trained
    on the pre-training captions (by rank 0; the others load what it saved). Saved to ``RUN/tokenizer/``; sets
    ``model.text.vocab_size`` for the transformer text encoder."""
    from .data.tokenizer import Tokenizer, train_tokenizer

    tok_dir = run / "tokenizer"
    if (resume_from is None or not (resume_from / "tokenizer.json").is_file()) and cfg.data.tokenizer:
        _existing_path("data.tokenizer", cfg.data.tokenizer)
    if resume_from is not None and (resume_from / "tokenizer.json").is_file():
        tok = Tokenizer.load(resume_from / "tokenizer.json")
    elif cfg.data.tokenizer:
        tok = Tokenizer.load(os.path.expanduser(str(cfg.data.tokenizer)))
    elif cfg.model.text.name == "hf" and cfg.model.text.path:
        tok = Tokenizer.load(os.path.expanduser(str(cfg.model.text.path)))
    else:
        if dist.is_main:
            if store.n > 5_000_000:
                print(f"[pretrain] training a WordPiece tokenizer on {store.n} captions on rank 0 (it grows with the "
                      "corpus; the other ranks wait): give data.tokenizer (e.g. a BERT vocab) at this scale",
                      file=sys.stderr)
            train_tokenizer(store.texts(), vocab_size=int(cfg.data.vocab_size)).save(tok_dir)
        dist.barrier()
        tok = Tokenizer.load(tok_dir / "tokenizer.json")
    if dist.is_main:
        tok.save(tok_dir)
    if cfg.model.text.name == "transformer":
        cfg.model.text.vocab_size = int(tok.vocab_size)
    return tok


def _existing_path(key: str, value: Any) -> Path:
    """``value`` as a path (``~`` expanded), or a ConfigError naming ``key`` when nothing is there."""
    p = Path(os.path.expanduser(str(value)))
    if not p.exists():
        raise ConfigError(f"{key}: {p} does not exist")
    return p


def check_model_paths(cfg: Any, resuming: bool) -> None:
    """The files the model is built from exist (before any data is read). A resumed run takes every weight from
    its checkpoint, so ``model.video.pretrained`` is not needed then; ``model.text.path`` still is (the HF
    architecture and tokenizer are read from it)."""
    v, t = cfg.model.video, cfg.model.text
    if v.pretrained and not resuming:
        p = _existing_path("model.video.pretrained", v.pretrained)
        if not p.is_file():
            raise ConfigError(f"model.video.pretrained: {p} is not a file (expected a .safetensors or torch state "
                              "dict)")
    if t.name == "hf":
        if not t.path:
            raise ConfigError("model.text.name=hf needs model.text.path (a local directory of a BERT-family model)")
        if not t.allow_hub:
            _existing_path("model.text.path", t.path)


def check_run_dir(run: Path, cfg: Any) -> None:
    """Mistakes found before anything is written: ``--out`` is a file, or is (or contains) the data root — a
    run writes config.yaml, tokenizer/ and logs into its directory; and data that the video encoder cannot
    take (pixels into the features encoder, or the reverse)."""
    from .files import overlaps
    from .model.video import is_pixel_encoder

    if run.exists() and not run.is_dir():
        raise UsageError(f"--out {run} is a file; the run directory must be a directory (or not exist yet)")
    root = Path(os.path.expanduser(str(cfg.data.root)))
    how = overlaps(run, root)
    if how in ("is", "contains"):
        raise UsageError(f"--out {run} {how} data.root {root}: choose a run directory apart from the data "
                         "(nothing was written)")
    pixels, name = cfg.data.kind == "videos", str(cfg.model.video.name)
    if pixels != is_pixel_encoder(name):
        need = "tiny3d or c3d" if pixels else "features"
        raise ConfigError(f"data.kind={cfg.data.kind} needs model.video.name={need}, got model.video.name={name}")


def _scalar_terms(out: dict) -> dict[str, float]:
    """Every scalar tensor the objective returned (loss terms, logit scale, ...), as floats."""
    return {k: float(v.detach()) for k, v in out.items() if torch.is_tensor(v) and v.ndim == 0}


def _to_device(batch: dict, device: torch.device) -> dict:
    nb = device.type == "cuda"
    return {k: (v.to(device, non_blocking=nb) if torch.is_tensor(v) else v) for k, v in batch.items()}


def _validate(cfg: Any, ckpt: Path, run: Path, step: int) -> dict[str, float]:
    """Zero-shot validation with ``locvtp.downstream.evaluate_all`` if that module exists (else skipped)."""
    try:
        from .downstream import evaluate_all
    except ImportError:
        print("[pretrain] validation skipped: locvtp.downstream.evaluate_all is not available", file=sys.stderr)
        return {}
    data_dir = cfg.train.val_data or cfg.data.root
    device = "cuda" if torch.cuda.is_available() and cfg.train.device != "cpu" else "cpu"
    try:
        with torch.random.fork_rng(devices=[]):  # validation must not shift the training RNG streams
            res = evaluate_all(ckpt, data_dir, out_dir=run / "val" / f"step_{step:07d}",
                               tasks=tuple(cfg.train.val_tasks), progress=False, device=device, verbose=False)
    except Exception as exc:  # noqa: BLE001  (a failed validation must not cost the training run)
        print(f"[pretrain] validation at step {step} failed ({type(exc).__name__}: {exc}); training continues",
              file=sys.stderr)
        return {"val/error": str(exc)[:300]}
    headline = ("retrieval_R1", "retrieval_R5", "grounding_R1@0.5", "grounding_R1@0.7", "grounding_mIoU",
                "step_recall", "segmentation_acc")
    print(f"[pretrain] validation at step {step}: " + ", ".join(
        f"{k}={res[k]:.2f}" for k in headline if isinstance(res.get(k), (int, float))) + f" (all in {run / 'val'})")
    return {f"val/{k}": float(v) for k, v in res.items() if isinstance(v, (int, float))}


# ----------------------------------------------------------------------------------------------------------
# The training run
# ----------------------------------------------------------------------------------------------------------
def pretrain(cfg: Any, out_dir: str | Path, resume: Optional[str | Path] = None, strict: bool = False,
             progress: bool = True) -> Path:
    """Pre-train LocVTP as ``cfg`` says; returns the final checkpoint directory ``out_dir/final``.

    One run per run directory: rank 0 holds an advisory lock on ``out_dir`` (``.NAME.lock`` beside it) for the
    whole run, so a second ``pretrain`` into the same directory stops at once naming the first, instead of both
    writing checkpoints into it."""
    from .files import OutputLock

    lock = OutputLock(Path(out_dir), "pretrain") if int(os.environ.get("RANK", "0")) == 0 else None
    with lock if lock is not None else contextlib.nullcontext():
        return _pretrain(cfg, out_dir, resume=resume, strict=strict, progress=progress)


def _pretrain(cfg: Any, out_dir: str | Path, resume: Optional[str | Path] = None, strict: bool = False,
             progress: bool = True) -> Path:
    """The run :func:`pretrain` locks: set-up, data, model, the loop, the final checkpoint."""
    from tqdm import tqdm

    from .checkpoint import load_checkpoint, load_trainer_state, read_meta, save_checkpoint
    from .data.corpus import prepare_corpus
    from .data.datasets import BadSampleLog, Collator, build_pretrain_data
    from .data.sampler import ResumableBatchSampler
    from .model import LocVTP
    from .objectives import LocVTPObjective

    run = Path(out_dir)
    cfg = copy.deepcopy(cfg)  # the vocabulary size is filled in below; never mutate the caller's config
    validate_config(cfg)
    check_run_dir(run, cfg)
    dist = setup_distributed(str(cfg.train.device))
    strict = bool(strict or cfg.train.strict)
    tc = cfg.train
    B, accum, T_max = int(tc.batch_size), max(int(tc.accum_steps), 1), int(tc.max_steps)
    if dist.is_main:
        run.mkdir(parents=True, exist_ok=True)
        clean_partial_writes(run)
    dist.barrier()
    resume_from = find_resume(run, None if resume is None else str(resume), warn=dist.is_main)
    check_model_paths(cfg, resuming=resume_from is not None)
    if resume_from is not None and resume_from.name == "final" and (read_meta(resume_from).get("step") or 0) >= T_max:
        if dist.is_main:
            print(f"[pretrain] {run} already finished ({T_max} steps): {resume_from}")
        if dist.initialized_here:
            torch.distributed.destroy_process_group()
        return resume_from
    if resume_from is not None and dist.is_main:
        warn_config_changes(cfg, run / "config.yaml")

    threads_before = torch.get_num_threads()
    if int(tc.num_threads) > 0:
        torch.set_num_threads(int(tc.num_threads))  # restored at the end (pretrain may run inside a bigger program)
    seed_everything(int(cfg.seed))
    share = (dist.rank, dist.world)  # corpus-sized work is split over the ranks, never done by one while others wait
    prepared = prepare_corpus(cfg, tokenizer=_no_tokenizer, share=share, strict=strict,
                              progress=progress and dist.is_main)
    tokenizer = prepare_tokenizer(cfg, run, prepared.store, resume_from, dist)
    data = build_pretrain_data(cfg, prepared, tokenizer, run, strict=strict, progress=progress and dist.is_main,
                               is_main=dist.is_main, barrier=dist.barrier, share=share)
    if dist.is_main:
        save_config(cfg, run / "config.yaml")
        if resume_from is None:  # a fresh run starts fresh logs (a resumed one keeps and extends them)
            (run / "metrics.jsonl").unlink(missing_ok=True)
            (run / "bad_samples.jsonl").write_text("", encoding="utf-8")
    bad_log = BadSampleLog(run / "bad_samples.jsonl" if dist.is_main else None)
    bad_log.add(data.bad if dist.is_main else [])

    # --- model, objective, optimizer, schedule (identical init on every rank; DDP also broadcasts rank 0's)
    torch.manual_seed(int(cfg.seed))
    # a resumed run takes every weight from its checkpoint: external weights (backbone, C3D, HF) are not re-read
    model = LocVTP.from_config(cfg, load_pretrained=resume_from is None)
    objective = LocVTPObjective.from_config(cfg.objective, dim=int(cfg.model.dim))
    net = Pretrainer(model, objective).to(dist.device)
    torch.manual_seed(int(cfg.seed) + dist.rank)  # same init everywhere, but each rank its own dropout masks
    optimizer = build_optimizer(net, tc)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, int(tc.warmup_steps), T_max, float(tc.min_lr_ratio)))
    step = 0
    if resume_from is not None:
        ck = load_checkpoint(resume_from, verify=True)
        model.load_state_dict(ck.model.state_dict())
        if ck.objective_state:
            objective.load_state_dict(ck.objective_state)
        state = load_trainer_state(resume_from)
        if state is None:
            raise ConfigError(f"{resume_from}: has no trainer_state.pt, cannot resume training from it")
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step = int(state["step"])
        rngs = state["rng"]
        set_rng_state(rngs[dist.rank] if len(rngs) == dist.world else rngs[0])
        if dist.is_main:
            truncate_jsonl(run / "metrics.jsonl", step)
            print(f"[pretrain] resumed from {resume_from} at step {step}")
    ddp_net = net
    if dist.enabled:
        unused = not (cfg.objective.coarse and cfg.objective.fine and cfg.objective.temporal)
        ddp_net = nn.parallel.DistributedDataParallel(
            net, device_ids=[dist.device.index] if dist.device.type == "cuda" else None,
            find_unused_parameters=unused)

    sampler = ResumableBatchSampler(len(data.dataset), B, dist.rank, dist.world, int(cfg.seed), start=step * accum,
                                    groups=data.dataset.items.group_keys() if int(cfg.data.group_size) > 1 else None,
                                    group_size=int(cfg.data.group_size))
    workers = int(cfg.data.num_workers)
    loader = torch.utils.data.DataLoader(
        data.dataset, batch_sampler=sampler, collate_fn=Collator(tokenizer, int(cfg.data.max_words)),
        num_workers=workers, pin_memory=dist.device.type == "cuda", persistent_workers=False,
        prefetch_factor=4 if workers > 0 else None,
        generator=torch.Generator().manual_seed(int(cfg.seed)))  # own generator: the global RNG stays untouched
    batches = iter(loader)
    metrics = MetricsLog(run, bool(tc.tensorboard), dist.is_main)
    autocast = torch.autocast(dist.device.type, dtype=torch.bfloat16, enabled=bool(tc.bf16))
    if dist.is_main:
        print(f"[pretrain] {model.summary()}; {len(data.dataset)} samples, global batch {B} x {accum} accum, "
              f"{dist.world} rank(s) on {dist.device}, {T_max} steps -> {run}")

    def save(path: Path) -> Path:
        """Collect every rank's RNG state; rank 0 writes the checkpoint atomically; everyone waits for it."""
        rngs = dist.gather_objects(rng_state())
        if dist.is_main:
            trainer_state = {"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                             "rng": rngs, "world_size": dist.world, "samples_seen": step * accum * B}
            save_checkpoint(path, model, cfg, tokenizer, trainer_state=trainer_state, objective=objective)
            if path.parent.name == "checkpoints":
                rotate_checkpoints(run, int(tc.keep_last))
        dist.barrier()
        return path

    def sync_bad(pending: list) -> None:
        for recs in dist.gather_objects(pending):
            if dist.is_main:
                bad_log.add(recs)
        pending.clear()

    oc = cfg.objective
    if (oc.fine or oc.temporal) and int(oc.ramp_start) >= T_max and dist.is_main:
        print(f"[pretrain] warning: objective.ramp_start={oc.ramp_start} >= train.max_steps={T_max}: the fine and "
              "temporal terms are logged but never weighted in (lower objective.ramp_start)", file=sys.stderr)

    # --- the loop ------------------------------------------------------------------------------------------
    net.train()
    pending_bad: list = []
    window = {"t": time.perf_counter(), "wait": 0.0, "steps": 0}
    bar = tqdm(total=T_max, initial=step, desc="pretrain", disable=not (progress and dist.is_main), unit="step",
               dynamic_ncols=True)
    while step < T_max:
        objective.aux_scale = aux_ramp(step, int(cfg.objective.ramp_start), int(cfg.objective.ramp_steps))
        for micro in range(accum):
            t_wait = time.perf_counter()
            batch = next(batches)
            window["wait"] += time.perf_counter() - t_wait
            pending_bad.extend(batch.pop("bad"))
            batch = _to_device(batch, dist.device)
            sync = micro == accum - 1 or not dist.enabled
            with (contextlib.nullcontext() if sync else ddp_net.no_sync()), autocast:
                out = ddp_net(batch)
            if not torch.isfinite(out["total"]):  # every rank sees the same global loss, so all stop together
                raise TrainingDivergedError(f"non-finite loss at step {step + 1}: " + ", ".join(
                    f"{k}={v:.4g}" for k, v in _scalar_terms(out).items()) + "; lower train.lr or resume from "
                    "an earlier checkpoint (--resume PATH)")
            (out["total"] / accum).backward()
        grad_norm = nn.utils.clip_grad_norm_(net.parameters(), float(tc.grad_clip) if tc.grad_clip > 0 else math.inf)
        lr = optimizer.param_groups[0]["lr"]  # the rate this step used
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        window["steps"] += 1
        bar.update(1)

        if step % int(tc.log_every) == 0 or step == T_max:
            sync_bad(pending_bad)
            elapsed = time.perf_counter() - window["t"]
            terms = _scalar_terms(out)
            rec = {"step": step, "epoch": round(step * accum / sampler.per_epoch, 4), "lr": lr,
                   **{(k if k == "logit_scale" else f"loss/{k}"): v for k, v in terms.items()},
                   "grad_norm": float(grad_norm), "samples_per_s": window["steps"] * accum * B / max(elapsed, 1e-9),
                   "data_wait": window["wait"] / max(elapsed, 1e-9), "skipped": bad_log.count, "time": time.time()}
            metrics.write(rec)
            bar.set_postfix({k: f"{terms[k]:.3f}" for k in ("total", "coarse", "fine", "temporal") if k in terms}
                            | {"samples/s": f"{rec['samples_per_s']:.0f}"}, refresh=False)
            window = {"t": time.perf_counter(), "wait": 0.0, "steps": 0}
        do_val = int(tc.val_every) > 0 and step % int(tc.val_every) == 0
        if (int(tc.save_every) > 0 and step % int(tc.save_every) == 0 and step < T_max) or (do_val and step < T_max):
            ckpt = save(run / "checkpoints" / f"step_{step:07d}")
            if do_val:
                if dist.is_main:
                    metrics.write({"step": step, **_validate(cfg, ckpt, run, step)})
                dist.barrier()
    bar.close()

    sync_bad(pending_bad)
    final = save(run / "final")
    if int(tc.val_every) > 0 and dist.is_main:
        metrics.write({"step": step, **_validate(cfg, final, run, step)})
    metrics.close()
    if dist.is_main:
        print(f"[pretrain] done: {final}; " + data.summary(bad_log.count, run / "bad_samples.jsonl"))
    del batches  # shuts the loader workers down before the process group goes
    if dist.initialized_here:
        torch.distributed.destroy_process_group()
    torch.set_num_threads(threads_before)
    return final


# ----------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------
def find_config(name: str | Path) -> Path:
    """A config path as given, else a shipped config by name (``pretrain_synthetic`` or ``configs/x.yaml``)."""
    p = Path(name)
    if p.is_file():
        return p
    fname = p.name if p.suffix == ".yaml" else f"{p.name}.yaml"
    here = Path(__file__).resolve().parent
    for cand in (here / "configs" / fname, here.parent.parent / "configs" / fname):
        if cand.is_file():
            return cand
    raise ConfigError(f"config file not found: {name} (also looked for {fname} in the package's configs)")


def main(argv: Optional[list[str]] = None) -> int:
    from .cliargs import ArgumentParser

    ap = ArgumentParser(
        prog=PROG, description="Pre-train LocVTP (single process, or DDP under torchrun).",
        epilog="example: locvtp pretrain --config configs/pretrain_synthetic.yaml --out runs/a "
               "train.max_steps=200 data.root=world")
    ap.add_argument("--config", required=True, help="YAML config (a path, or the name of a shipped config)")
    ap.add_argument("--out", required=True, help="run directory (checkpoints, metrics, logs)")
    ap.add_argument("--resume", default=None, help="'auto' (newest complete checkpoint in --out) or a checkpoint dir")
    ap.add_argument("--strict", action="store_true", help="fail on the first bad sample instead of skipping it")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    ap.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. train.max_steps=200")
    args = ap.parse_intermixed_args(argv)  # overrides may come before, between or after the options
    # errors are reported by locvtp.cli (one line naming the file, key or argument; --debug shows the stack)
    cfg = load_config(find_config(args.config), args.overrides)
    final = pretrain(cfg, args.out, resume=args.resume, strict=args.strict, progress=not args.quiet)
    if int(os.environ.get("RANK", "0")) == 0:
        print(final)
    return 0


__all__ = ["pretrain", "main", "find_config", "lr_factor", "build_optimizer", "Pretrainer", "setup_distributed",
           "RunExistsError", "TrainingDivergedError", "check_model_paths", "find_resume"]

if __name__ == "__main__":  # torchrun -m locvtp.train ...: the same one-line errors as `locvtp pretrain`
    from locvtp.cli import main as _cli_main

    sys.exit(_cli_main(["pretrain", *sys.argv[1:]]))
