"""Optimizer and learning-rate schedule of pre-training (docs/training.md, "Optimisation")."""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

__all__ = ["build_optimizer", "build_scheduler", "lr_factor", "restore_optimizer"]


_NO_DECAY_NAMES = ("embed", "pos", "logit_scale", "cls_token", "token_type")


def _backbone_param_ids(net: nn.Module) -> set[int]:
    """The parameters of the video encoder's pixel CNN (what ``model.video.pretrained`` loads)."""
    from locvtp.model.video import PixelVideoEncoder

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


def build_scheduler(optimizer: torch.optim.Optimizer, tcfg: Any) -> torch.optim.lr_scheduler.LambdaLR:
    """:func:`lr_factor` as a LambdaLR over ``train.max_steps`` optimisation steps."""
    warmup, total, floor = int(tcfg.warmup_steps), int(tcfg.max_steps), float(tcfg.min_lr_ratio)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, warmup, total, floor))


def restore_optimizer(optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LambdaLR,
                      state: dict) -> None:
    """Load a checkpoint's optimizer and schedule state, with the rates of the config they are built from.

    Why: ``load_state_dict`` brings back the saved learning rates and weight decay too, so ``train.lr=...`` given
    on resume was named but never applied, and a raised ``train.max_steps`` took one step to reach the schedule.
    The moments, step counts and schedule position are the run's; the base rates, weight decay and the schedule's
    shape are the config's. An unchanged config gives exactly the saved rates (same formula, same operands).
    """
    base = list(scheduler.base_lrs)
    decay = [g["weight_decay"] for g in optimizer.param_groups]
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scheduler.base_lrs = base
    for g, b, d, lam in zip(optimizer.param_groups, base, decay, scheduler.lr_lambdas):
        g["initial_lr"], g["weight_decay"], g["lr"] = b, d, b * lam(scheduler.last_epoch)
    scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]
