"""The paper's downstream tasks on top of a pre-trained checkpoint (``locvtp evaluate``).

``evaluate_all(checkpoint, data_dir, out_dir=None, tasks=(...), features=None, progress=True, seed=0)`` runs
text-to-video retrieval, temporal grounding (zero-shot and a 2D-TAN head), CrossTask step localization and COIN
segmentation and returns one flat dict of metrics. See ``docs/evaluation.md``.
"""
from __future__ import annotations

from typing import Any

__all__ = ["evaluate_all", "DownstreamOptions", "load_options", "TASKS"]


def __getattr__(name: str) -> Any:  # lazy: `import locvtp.downstream.grounding` must not load every task
    if name in __all__:
        from locvtp.downstream import evaluate

        return getattr(evaluate, name)
    raise AttributeError(f"module 'locvtp.downstream' has no attribute {name!r}")
