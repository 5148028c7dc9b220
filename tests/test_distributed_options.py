"""Issue 15's objective options under DDP (gloo, 2 processes): the content mask of ``objective.stopwords`` is
gathered with the features (uneven batch sizes and word paddings), so every rank computes the single-process
loss of the global batch, with ``temporal_negatives=within`` and ``context_stop_grad`` on as well."""
from __future__ import annotations

import os
import traceback

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from ddp_helpers import free_port, leave_worker
import torch.nn.functional as F

WORLD, B, T, L, D = 2, 5, 4, 6, 8
SPLIT = [3, 2]
OPTIONS = dict(topk=2, stopwords="english", temporal_negatives="within", context_stop_grad=True,
               temporal_directions="both", intra_negatives=True)


def _global_batch():
    from locvtp.objectives import draw_offsets

    g = torch.Generator().manual_seed(0)
    c = F.normalize(torch.randn(B, T, D, generator=g, dtype=torch.float64), dim=-1)
    w = F.normalize(torch.randn(B, L, D, generator=g, dtype=torch.float64), dim=-1)
    s = F.normalize(torch.randn(B, D, generator=g, dtype=torch.float64), dim=-1)
    clip_mask = torch.arange(T)[None] < torch.tensor([4, 2, 3, 3, 4])[:, None]
    word_mask = torch.ones(B, L, dtype=torch.bool)
    word_mask[:, 0] = False
    word_mask[3:, 4:] = False  # rank 1 trims its padding to L = 4: the content mask must be padded too
    content = word_mask & (torch.rand(B, L, generator=g) < 0.5)
    content[1] = False  # a sentence of stop words only: falls back to all its words
    offsets = draw_offsets(clip_mask, 2, generator=torch.Generator().manual_seed(1))
    return c, w, s, clip_mask, word_mask, content, offsets


def _objective():
    from locvtp.objectives import LocVTPObjective

    torch.manual_seed(0)
    return LocVTPObjective(dim=D, **OPTIONS).double()


def _worker(rank: int, port: int, result_dir: str) -> None:
    try:
        torch.set_num_threads(1)
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
        c, w, s, cm, wm, content, off = _global_batch()
        lo = sum(SPLIT[:rank])
        sl = slice(lo, lo + SPLIT[rank])
        Lr = L if rank == 0 else 4
        out = _objective()(c[sl], w[sl, :Lr], s[sl], cm[sl], wm[sl, :Lr], off[sl], content_mask=content[sl, :Lr])
        torch.save({k: out[k].detach() for k in ("total", "fine", "temporal", "temporal_w")},
                   os.path.join(result_dir, f"rank{rank}.pt"))
        dist.barrier()  # nobody tears gloo down while a peer is still in its last collective
        dist.destroy_process_group()
    except Exception:  # noqa: BLE001  (reported by the test)
        with open(os.path.join(result_dir, f"rank{rank}.err"), "w") as fh:
            fh.write(traceback.format_exc())
        raise
    leave_worker()


@pytest.mark.ddp
def test_options_under_ddp_equal_single_process(tmp_path):
    c, w, s, cm, wm, content, off = _global_batch()
    single = _objective()(c, w, s, cm, wm, off, content_mask=content)
    port = free_port()
    try:
        mp.spawn(_worker, args=(port, str(tmp_path)), nprocs=WORLD, join=True)
    except Exception:
        errs = [p.read_text() for p in tmp_path.glob("rank*.err")]
        raise AssertionError("\n".join(errs) or "worker failed")
    for rank in range(WORLD):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        for key, value in got.items():
            torch.testing.assert_close(value, single[key].detach(), rtol=1e-10, atol=1e-12, msg=f"rank {rank} {key}")
    # not vacuous: the stop-word mask changes the loss of this batch
    plain = _objective()
    plain.stopwords = "none"
    assert not torch.allclose(plain(c, w, s, cm, wm, off)["fine"], single["fine"])
