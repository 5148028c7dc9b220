"""The ramp of the fine-grained and temporal weights (objective.ramp_start / ramp_steps)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from locvtp.objectives import LocVTPObjective, aux_ramp


def test_aux_ramp_schedule():
    assert [aux_ramp(s, 0, 0) for s in (0, 5)] == [1.0, 1.0]  # default: the method as specified, from step 0
    assert [aux_ramp(s, 3, 0) for s in (0, 2, 3, 9)] == [0.0, 0.0, 1.0, 1.0]
    vals = [aux_ramp(s, 2, 4) for s in range(8)]
    assert vals == [0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def _inputs(seed=0, B=3, T=4, L=5, D=16):
    g = torch.Generator().manual_seed(seed)
    clips = F.normalize(torch.randn(B, T, D, generator=g), dim=-1).requires_grad_()
    words = F.normalize(torch.randn(B, L, D, generator=g), dim=-1).requires_grad_()
    sent = F.normalize(torch.randn(B, D, generator=g), dim=-1).requires_grad_()
    cm = torch.ones(B, T, dtype=torch.bool)
    wm = torch.ones(B, L, dtype=torch.bool)
    wm[0, 3:] = False
    offsets = torch.tensor([[1, -1, 1, -2]] * B)
    return clips, words, sent, cm, wm, offsets


def test_aux_scale_multiplies_only_fine_and_temporal():
    obj = LocVTPObjective(dim=16, stopwords="none", max_offset=2)
    args = _inputs()
    full = obj(*args)
    obj.aux_scale = 0.0
    off = obj(*args)
    assert torch.allclose(off["total"], full["coarse"])  # only the coarse term counts
    assert torch.allclose(off["fine"], full["fine"]) and torch.allclose(off["temporal"], full["temporal"])  # logged
    off["total"].backward()
    assert all(p.grad is None or torch.count_nonzero(p.grad) == 0 for p in obj.context_head.parameters())
    obj.aux_scale = 0.5
    half = obj(*args)
    expected = full["coarse"] + 0.5 * (full["fine"] + full["temporal"])
    assert torch.allclose(half["total"], expected)


def test_the_objective_owns_its_ramp():
    from locvtp.config import default_config

    cfg = default_config()
    cfg.objective.ramp_start, cfg.objective.ramp_steps = 2, 4
    obj = LocVTPObjective.from_config(cfg.objective, dim=16)
    assert [obj.set_step(s) for s in range(8)] == [aux_ramp(s, 2, 4) for s in range(8)]
    assert obj.aux_scale == 1.0
    assert obj.ramp_note(10) is None
    assert "objective.ramp_start=2 >= train.max_steps=2" in obj.ramp_note(2)
