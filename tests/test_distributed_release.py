"""Issue 23's options under DDP (gloo, 2 processes, uneven batch and word padding): the release form's draws
and span mask and the spliced clips are gathered with the features, so every rank computes the single-process
loss of the global batch (the splice pairs themselves are made per rank in training; here both runs get the
same spliced embeddings), and the gradients of the release form's offset encodings agree."""
from __future__ import annotations

import os
import traceback

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from ddp_helpers import free_port, leave_worker

WORLD, B, T, L, D = 2, 5, 4, 6, 8
SPLIT = [3, 2]
OPTIONS = dict(stopwords="none", temporal_form="release", context_in_span=True, release_negatives=3,
               temporal_text_grad=False, weights={"splice": 0.7})


def _global_batch():
    from locvtp.objectives import draw_offsets, draw_release_variates, draw_splice_variates, splice_batch

    g = torch.Generator().manual_seed(0)
    c = F.normalize(torch.randn(B, T, D, generator=g, dtype=torch.float64), dim=-1)
    w = F.normalize(torch.randn(B, L, D, generator=g, dtype=torch.float64), dim=-1)
    s = F.normalize(torch.randn(B, D, generator=g, dtype=torch.float64), dim=-1)
    clip_mask = torch.arange(T)[None] < torch.tensor([4, 2, 3, 3, 4])[:, None]
    word_mask = torch.ones(B, L, dtype=torch.bool)
    word_mask[:, 0] = False
    word_mask[3:, 4:] = False  # rank 1 trims its padding to L = 4: its word draws are cut too
    span = clip_mask & (torch.rand(B, T, generator=g) < 0.7)
    span[:, 0] = True
    off = draw_offsets(clip_mask, 2, generator=torch.Generator().manual_seed(1), span_mask=span)
    cd, wd = draw_release_variates(B, T, L, 3, torch.Generator().manual_seed(2))
    splice = splice_batch(c, clip_mask, draw_splice_variates(B, torch.Generator().manual_seed(3)))
    return c, w, s, clip_mask, word_mask, span, off, cd, wd, splice


def _objective():
    from locvtp.objectives import LocVTPObjective

    torch.manual_seed(0)
    return LocVTPObjective(dim=D, num_clips=T, **OPTIONS).double()


def _run(obj, sl, Lr):
    c, w, s, cm, wm, span, off, cd, wd, splice = _global_batch()
    out = obj(c[sl], w[sl, :Lr], s[sl], cm[sl], wm[sl, :Lr], off[sl], span_mask=span[sl], clip_draws=cd[sl],
              word_draws=wd[sl, :Lr], splice=tuple(x[sl] for x in splice))
    out["total"].backward()
    return out


def _worker(rank: int, port: int, result_dir: str) -> None:
    try:
        torch.set_num_threads(1)
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
        lo = sum(SPLIT[:rank])
        obj = _objective()
        out = _run(obj, slice(lo, lo + SPLIT[rank]), L if rank == 0 else 4)
        saved = {k: out[k].detach() for k in ("total", "temporal", "temporal_z", "temporal_w", "splice")}
        saved["grad"] = obj.release_clip_head.dist_proj.weight.grad
        torch.save(saved, os.path.join(result_dir, f"rank{rank}.pt"))
        dist.barrier()
        dist.destroy_process_group()
    except Exception:  # noqa: BLE001  (reported by the test)
        with open(os.path.join(result_dir, f"rank{rank}.err"), "w") as fh:
            fh.write(traceback.format_exc())
        raise
    leave_worker()


@pytest.mark.ddp
def test_release_form_and_splice_under_ddp_equal_single_process(tmp_path):
    obj = _objective()
    single = _run(obj, slice(0, B), L)
    port = free_port()
    try:
        mp.spawn(_worker, args=(port, str(tmp_path)), nprocs=WORLD, join=True)
    except Exception:
        errs = [p.read_text() for p in tmp_path.glob("rank*.err")]
        raise AssertionError("\n".join(errs) or "worker failed")
    for rank in range(WORLD):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        for key, value in got.items():
            want = obj.release_clip_head.dist_proj.weight.grad if key == "grad" else single[key].detach()
            torch.testing.assert_close(value, want, rtol=1e-10, atol=1e-12, msg=f"rank {rank} {key}")
    assert float(single["splice"].detach()) > 0 and float(single["temporal_w"].detach()) > 0
