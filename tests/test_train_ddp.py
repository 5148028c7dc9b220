"""DDP under torchrun (2 processes, gloo on CPU) trains exactly like one process on the same global batches."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from locvtp.config import load_config
from locvtp.config import find_config
from locvtp.training.loop import pretrain

REPO = Path(__file__).resolve().parents[1]
# No dropout: each rank draws its own dropout masks, which a single process cannot reproduce. Everything else
# (data order, jitter, temporal offsets) is a function of the sample, so it matches exactly.
ARGS = ["train.batch_size=8", "train.max_steps=4", "train.warmup_steps=1", "train.log_every=1", "train.save_every=2",
        "train.num_threads=1", "data.num_workers=0", "data.frames_per_clip=2", "data.frame_size=16",
        "data.max_words=16", "data.vocab_size=200", "model.dim=32", "model.text.width=32", "model.text.layers=1",
        "model.video.width=8", "model.video.temporal_layers=1", "model.proj_dropout=0", "model.video.dropout=0",
        "model.text.dropout=0",
        # all three terms weighted in from step 1: the config's ramp (objective.ramp_start=400) would make the fine
        # and temporal weights 0 during these 4 steps, and the test would prove the coarse term only (issue 15.6)
        "objective.ramp_start=0", "objective.ramp_steps=0"]


def _metrics(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.ddp
@pytest.mark.slow
def test_two_rank_ddp_equals_single_process(tiny_world, tmp_path):
    n = torch.get_num_threads()
    single = pretrain(load_config(find_config("pretrain_synthetic"), [f"data.root={tiny_world}", *ARGS]),
                      tmp_path / "single", progress=False)
    torch.set_num_threads(n)

    ddp_run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "locvtp.cli", "pretrain", "--config", str(REPO / "configs" / "pretrain_synthetic.yaml"), "--out", str(ddp_run),
           "--quiet", f"data.root={tiny_world}", *ARGS]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "2 rank(s)" in res.stdout

    a, b = load_file(str(single / "model.safetensors")), load_file(str(ddp_run / "final" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=2e-5, msg=k)
    init = load_file(str(ddp_run / "checkpoints" / "step_0000002" / "model.safetensors"))
    moved = max((a[k] - init[k]).abs().max().item() for k in a)
    assert moved > 1e-3  # the comparison is not vacuous: training changed the weights

    ms, md = _metrics(tmp_path / "single"), _metrics(ddp_run)
    assert [r["step"] for r in md] == [1, 2, 3, 4]  # rank 0 logs, once per step
    for r in ms + md:  # every term trains at every step: full weight, non-zero value, part of the total
        assert r["loss/aux_scale"] == 1.0, r["step"]
        for key in ("loss/coarse", "loss/fine", "loss/temporal"):
            assert r[key] > 0, (r["step"], key)
        assert r["loss/total"] == pytest.approx(r["loss/coarse"] + r["loss/fine"] + r["loss/temporal"], rel=1e-5)
    for rs, rd in zip(ms, md):
        for key in ("loss/total", "loss/coarse", "loss/fine", "loss/temporal", "grad_norm"):
            assert rd[key] == pytest.approx(rs[key], rel=1e-4, abs=1e-5), (rs["step"], key)
    state = torch.load(ddp_run / "final" / "trainer_state.pt", weights_only=True)
    assert state["world_size"] == 2 and len(state["rng"]) == 2  # every rank's RNG state is kept for resume
