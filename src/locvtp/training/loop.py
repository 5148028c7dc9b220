"""The pre-training loop (``locvtp pretrain``, :mod:`locvtp.commands.pretrain`; resumed runs take their own saved
settings, plus only what is given: :mod:`locvtp.training.resume`).

This module is the loop, nothing else: :func:`_pretrain` reads top to bottom as one optimisation
step after another. Everything before and after the loop (run directory, process group, resume, tokenizer,
data, model, optimizer, logging, validation) is :mod:`locvtp.training`; the fine/temporal ramp is the
objective's (``LocVTPObjective.set_step``); docs/training.md describes the run as a whole.

The same loop runs under ``torchrun --nproc_per_node=N -m locvtp.cli pretrain`` (DDP, env:// rendezvous, gloo on CPU, nccl on GPU):
``train.batch_size`` is the *global* batch, split across ranks; the objective gathers features from all ranks
(with gradients) itself, so every rank computes the loss of the whole global batch. A killed run resumed with
``--resume auto`` ends with the weights of an uninterrupted one (:mod:`locvtp.training.state`).
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import torch
from torch import nn

from locvtp.training.log import Throughput
from locvtp.training.setup import TrainingRun, start_run, to_device


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
    from locvtp.files import OutputLock

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
