"""Shared fixtures. The tiny synthetic world is generated once per test session (it is deterministic)."""
from __future__ import annotations

import os

import pytest
import torch

# Tests run on 2-core machines; keep torch from oversubscribing them and keep runs reproducible.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True, scope="session")
def _prepared_corpus_cache(tmp_path_factory):
    """Prepared corpora (locvtp.training.corpus) go to a session directory, never to the user's ~/.cache; child
    processes (torchrun, subprocess CLIs) inherit it."""
    old = os.environ.get("LOCVTP_CACHE")
    os.environ["LOCVTP_CACHE"] = str(tmp_path_factory.mktemp("locvtp_cache"))
    yield
    if old is None:
        os.environ.pop("LOCVTP_CACHE", None)
    else:
        os.environ["LOCVTP_CACHE"] = old


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """A `--preset tiny` synthetic world, generated once for the whole test session."""
    from locvtp.world.generate import generate_world

    out = tmp_path_factory.mktemp("tiny_world")
    generate_world(out, seed=0, preset="tiny", progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_world, tmp_path_factory):
    """The default randomly initialised checkpoint of ``inference_helpers.make_checkpoint`` on the tiny world,
    made once per session. Read-only: a test that needs a changed copy copies it first (``shutil.copytree``)."""
    from inference_helpers import make_checkpoint

    return make_checkpoint(tiny_world, tmp_path_factory.mktemp("tiny_checkpoint") / "ckpt")


@pytest.fixture
def keep_torch_threads():
    """Restore torch's thread count after a test that sets it (``train.num_threads``): runs in and out of
    process then compute identically. Use with ``pytestmark = pytest.mark.usefixtures("keep_torch_threads")``."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)
