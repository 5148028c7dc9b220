"""Choosing the torch device from a user's ``--device`` / ``train.device`` value.

Why one function: asking for CUDA on a machine without it must say so, not surface later as an unreadable
checkpoint or an obscure torch error; and ``auto`` picks this process's GPU under torchrun (``LOCAL_RANK``).
"""
from __future__ import annotations

import os
import re

from locvtp.errors import UsageError

_SPEC = re.compile(r"^(auto|cpu|cuda|mps)(?::(\d+))?$")


def resolve_device(spec: str, what: str = "--device") -> str:
    """``auto | cpu | cuda | cuda:N | mps`` -> a device string torch accepts, or a :class:`UsageError` that
    names ``what`` when the device does not exist here."""
    import torch

    m = _SPEC.match(str(spec).strip().lower())
    if m is None:
        raise UsageError(f"{what} {spec!r}: expected auto, cpu, cuda, cuda:N or mps")
    kind, index = m.group(1), m.group(2)
    if kind == "auto":
        if index is not None:
            raise UsageError(f"{what} {spec!r}: 'auto' takes no index")
        if torch.cuda.is_available():
            return f"cuda:{int(os.environ.get('LOCAL_RANK', 0)) % torch.cuda.device_count()}"
        return "cpu"
    if kind == "cpu":
        return "cpu"
    if kind == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
            raise UsageError(f"{what} {spec}: CUDA is not available on this machine (torch {torch.__version__}, "
                             f"{build}, {torch.cuda.device_count()} GPUs visible); use {what} cpu")
        n = torch.cuda.device_count()
        if index is not None and int(index) >= n:
            raise UsageError(f"{what} {spec}: this machine has {n} CUDA device(s) (cuda:0..cuda:{n - 1})")
        return f"cuda:{index}" if index is not None else "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is None or not mps.is_available():
        raise UsageError(f"{what} {spec}: Apple MPS is not available on this machine; use {what} cpu")
    return "mps"


__all__ = ["resolve_device"]
