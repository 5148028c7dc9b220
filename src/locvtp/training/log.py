"""What a training run reports: ``metrics.jsonl`` (and TensorBoard), the per-step record, throughput."""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

__all__ = ["MetricsLog", "Throughput", "scalar_terms", "step_record", "truncate_jsonl"]


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
    from locvtp.files import atomic_write_text

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
                from locvtp.cliargs import warn

                warn("locvtp pretrain", "train.tensorboard=true but tensorboard is not installed: logging to "
                                        f"{self.path} only")

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


def scalar_terms(out: dict) -> dict[str, float]:
    """Every scalar tensor the objective returned (loss terms, logit scale, ...), as floats."""
    return {k: float(v.detach()) for k, v in out.items() if torch.is_tensor(v) and v.ndim == 0}


class Throughput:
    """Wall time, data-loader wait and optimisation steps since the last logged step."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.start, self.wait, self.steps = time.perf_counter(), 0.0, 0

    def rates(self, samples_per_step: int) -> dict[str, float]:
        elapsed = time.perf_counter() - self.start
        return {"samples_per_s": self.steps * samples_per_step / max(elapsed, 1e-9),
                "data_wait": self.wait / max(elapsed, 1e-9)}


def step_record(step: int, epoch: float, lr: float, terms: dict[str, float], grad_norm: float,
                rates: dict[str, float], skipped: int) -> dict:
    """One line of ``metrics.jsonl``: loss terms as ``loss/NAME`` (the logit scale under its own name)."""
    return {"step": step, "epoch": round(epoch, 4), "lr": lr,
            **{(k if k == "logit_scale" else f"loss/{k}"): v for k, v in terms.items()},
            "grad_norm": float(grad_norm), **rates, "skipped": skipped, "time": time.time()}
