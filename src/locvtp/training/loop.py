"""Pre-training: ``locvtp pretrain --config configs/NAME.yaml --out RUN_DIR [key=value ...]``; resumed with
``locvtp pretrain --out RUN_DIR --resume auto|PATH [key=value ...] [--allow-changes KEY,...]`` (the run's own saved
settings, plus only what is given: :mod:`locvtp.training.resume`).

This module is the command and the loop, nothing else: :func:`_pretrain` reads top to bottom as one optimisation
step after another. Everything before and after the loop (run directory, process group, resume, tokenizer,
data, model, optimizer, logging, validation) is :mod:`locvtp.training`; the fine/temporal ramp is the
objective's (``LocVTPObjective.set_step``); docs/training.md describes the run as a whole.

The same command runs under ``torchrun --nproc_per_node=N`` (DDP, env:// rendezvous, gloo on CPU, nccl on GPU):
``train.batch_size`` is the *global* batch, split across ranks; the objective gathers features from all ranks
(with gradients) itself, so every rank computes the loss of the whole global batch. A killed run resumed with
``--resume auto`` ends with the weights of an uninterrupted one (:mod:`locvtp.training.state`).
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import torch
from torch import nn

# re-exported: these lived here before the set-up moved to locvtp.training
from .config import find_config
from .distributed import setup_distributed
from .objectives import aux_ramp
from .training.log import Throughput
from .training.optim import build_optimizer, lr_factor
from .training.rundir import RunExistsError, check_model_paths, find_resume
from .training.setup import Pretrainer, TrainingDivergedError, TrainingRun, start_run, to_device

PROG = "locvtp pretrain"


def pretrain(cfg: Any, out_dir: str | Path, resume: Optional[str | Path] = None, strict: bool = False,
             progress: bool = True, allow_changes: tuple[str, ...] = ()) -> Path:
    """Pre-train LocVTP as ``cfg`` says; returns the final checkpoint directory ``out_dir/final``.

    Resuming (``resume``: ``"auto"`` or a checkpoint), ``cfg`` is checked against the run's own saved settings:
    a change of its data, objective, model, seed or batch is refused unless its key or section is in
    ``allow_changes``; other changes are named on stderr (:func:`locvtp.training.resume.check_resume_settings`).
    :func:`locvtp.training.resume.resume_config` builds ``cfg`` from the saved settings, as the command does.

    One run per run directory: rank 0 holds an advisory lock on ``out_dir`` (``.NAME.lock`` beside it) for the
    whole run, so a second ``pretrain`` into the same directory stops at once naming the first, instead of both
    writing checkpoints into it."""
    from .files import OutputLock

    lock = OutputLock(Path(out_dir), "pretrain") if int(os.environ.get("RANK", "0")) == 0 else None
    with lock if lock is not None else contextlib.nullcontext():
        return _pretrain(cfg, out_dir, resume=resume, strict=strict, progress=progress, allow_changes=allow_changes)


def _pretrain(cfg: Any, out_dir: str | Path, resume: Optional[str | Path] = None, strict: bool = False,
              progress: bool = True, allow_changes: tuple[str, ...] = ()) -> Path:
    """The loop: set-up, then ``train.max_steps`` optimisation steps, then the final checkpoint."""
    from locvtp.runtime import progress as tqdm

    r = start_run(cfg, Path(out_dir), resume, strict, progress, allow_changes)
    if isinstance(r, Path):  # resumed a run that had already finished
        return r
    tc, step = r.cfg.train, r.step
    batches = iter(r.loader)
    meter = Throughput()
    bar = tqdm(total=r.max_steps, initial=step, desc="pretrain", disable=not (progress and r.dist.is_main),
               unit="step", dynamic_ncols=True)
    r.net.train()
    while step < r.max_steps:
        r.objective.set_step(step)  # the ramp of the fine and temporal weights (docs/method.md "Ramp")
        out = _accumulate_gradients(r, batches, meter, step)
        grad_norm = nn.utils.clip_grad_norm_(r.net.parameters(), float(tc.grad_clip) if tc.grad_clip > 0 else math.inf)
        lr = r.optimizer.param_groups[0]["lr"]  # the rate this step used
        r.optimizer.step()
        r.scheduler.step()
        r.optimizer.zero_grad(set_to_none=True)
        step += 1
        meter.steps += 1
        bar.update(1)
        if step % int(tc.log_every) == 0 or step == r.max_steps:
            terms = r.log_step(step, out, grad_norm, lr, meter)
            bar.set_postfix({k: f"{terms[k]:.3f}" for k in ("total", "coarse", "fine", "temporal") if k in terms}
                            | {"samples/s": f"{terms['samples_per_s']:.0f}"}, refresh=False)
        r.maybe_checkpoint(step)  # train.save_every / train.val_every
    bar.close()
    final = r.finish(step)
    del batches  # shuts the loader workers down before the process group goes
    r.close()
    return final


def _accumulate_gradients(r: TrainingRun, batches: Iterator[dict], meter: Throughput, step: int) -> dict:
    """Forward and backward over ``train.accum_steps`` micro-batches (DDP syncs gradients on the last one only);
    returns the last micro-batch's objective output."""
    for micro in range(r.accum):
        t_wait = time.perf_counter()
        batch = next(batches)
        meter.wait += time.perf_counter() - t_wait
        r.pending_bad.extend(batch.pop("bad"))
        batch = to_device(batch, r.dist.device)
        sync = micro == r.accum - 1 or not r.dist.enabled
        with (contextlib.nullcontext() if sync else r.ddp_net.no_sync()), r.autocast:
            out = r.ddp_net(batch)
        if not torch.isfinite(out["total"]):  # every rank sees the same global loss, so all stop together
            raise r.diverged(step, out)
        (out["total"] / r.accum).backward()
    return out


def main(argv: Optional[list[str]] = None) -> int:
    from .cliargs import ArgumentParser
    from .config import load_config
    from .training.resume import allowed_names, resume_config

    ap = ArgumentParser(
        prog=PROG, description="Pre-train LocVTP (single process, or DDP under torchrun).",
        epilog="example: locvtp pretrain --config configs/pretrain_synthetic.yaml --out runs/a "
               "train.max_steps=200 data.root=world; resumed: locvtp pretrain --out runs/a --resume auto "
               "train.max_steps=400")
    ap.add_argument("--config", default=None, help="YAML config (a path, or the name of a shipped config); "
                    "optional with --resume, which starts from the run's own saved settings")
    ap.add_argument("--out", required=True, help="run directory (checkpoints, metrics, logs)")
    ap.add_argument("--resume", default=None, help="'auto' (newest complete checkpoint in --out) or a checkpoint dir")
    ap.add_argument("--allow-changes", action="append", metavar="KEY[,KEY...]",
                    help="with --resume: let these keys or sections (data.root, objective) of the run change")
    ap.add_argument("--strict", action="store_true", help="fail on the first bad sample instead of skipping it")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    ap.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. train.max_steps=200")
    args = ap.parse_intermixed_args(argv)  # overrides may come before, between or after the options
    # errors are reported by locvtp.cli (one line naming the file, key or argument; --debug shows the stack)
    allow = allowed_names(args.allow_changes)
    if args.resume is None:
        if args.config is None:
            ap.error("the following arguments are required: --config (or --resume to continue a run)")
        if allow:
            ap.error("argument --allow-changes: only with --resume (a new run has no settings to change)")
        cfg, resume = load_config(find_config(args.config), args.overrides), None
    else:
        cfg, resume = resume_config(Path(args.out), args.resume, args.config, args.overrides,
                                    warn=int(os.environ.get("RANK", "0")) == 0)
    final = pretrain(cfg, args.out, resume=resume, strict=args.strict, progress=not args.quiet, allow_changes=allow)
    if int(os.environ.get("RANK", "0")) == 0:
        print(final)
    return 0


__all__ = ["pretrain", "main", "find_config", "lr_factor", "build_optimizer", "Pretrainer", "setup_distributed",
           "RunExistsError", "TrainingDivergedError", "check_model_paths", "find_resume", "aux_ramp"]

if __name__ == "__main__":  # torchrun -m locvtp.train ...: the same one-line errors as `locvtp pretrain`
    from locvtp.cli import main as _cli_main

    sys.exit(_cli_main(["pretrain", *sys.argv[1:]]))
