"""Shared fixtures. The tiny synthetic world is generated once per test session (it is deterministic)."""
from __future__ import annotations

import os

import pytest
import torch

# Tests run on 2-core machines; keep torch from oversubscribing them and keep runs reproducible.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """A `--preset tiny` synthetic world, generated once for the whole test session."""
    from locvtp.data.synthetic import generate_world

    out = tmp_path_factory.mktemp("tiny_world")
    generate_world(out, seed=0, preset="tiny", progress=False)
    return out
