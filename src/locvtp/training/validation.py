"""Periodic zero-shot validation during pre-training (``train.val_every``; docs/training.md)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from locvtp.cliargs import warn

PROG = "locvtp pretrain"

__all__ = ["validate"]


def validate(cfg: Any, ckpt: Path, run: Path, step: int) -> dict[str, float]:
    """Zero-shot validation with ``locvtp.downstream.evaluate_all`` if that module exists (else skipped)."""
    try:
        from locvtp.downstream import evaluate_all
    except ImportError:
        warn(PROG, "validation skipped: locvtp.downstream.evaluate_all is not available")
        return {}
    data_dir = cfg.train.val_data or cfg.data.root
    device = "cuda" if torch.cuda.is_available() and cfg.train.device != "cpu" else "cpu"
    try:
        with torch.random.fork_rng(devices=[]):  # validation must not shift the training RNG streams
            res = evaluate_all(ckpt, data_dir, out_dir=run / "val" / f"step_{step:07d}",
                               tasks=tuple(cfg.train.val_tasks), progress=False, device=device, verbose=False)
    except Exception as exc:  # noqa: BLE001  (a failed validation must not cost the training run)
        warn(PROG, f"validation at step {step} failed ({type(exc).__name__}: {exc}); training continues")
        return {"val/error": str(exc)[:300]}
    headline = ("retrieval_R1", "retrieval_R5", "grounding_R1@0.5", "grounding_R1@0.7", "grounding_mIoU",
                "step_recall", "segmentation_acc")
    print(f"[pretrain] validation at step {step}: " + ", ".join(
        f"{k}={res[k]:.2f}" for k in headline if isinstance(res.get(k), (int, float))) + f" (all in {run / 'val'})")
    return {f"val/{k}": float(v) for k, v in res.items() if isinstance(v, (int, float))}
