"""Under DDP (gloo, 2 CPU processes) the objective equals the single-process run on the same global batch.

Each rank encodes its own slice of a fixed global batch with tiny linear "encoders"; the objective gathers the
features (with gradients) from both ranks. Checked on every rank: the loss terms equal the single-process
values; after DDP's gradient averaging the encoder and objective parameter gradients equal the single-process
ones; the gradient reaching a rank's local features is world_size × the single-process gradient of that slice
(the all_gather backward sums over ranks; see locvtp.distributed). The ranks hold different batch sizes and
different word paddings, so the padding / uneven-gather path is exercised too.
"""
from __future__ import annotations

import os
import sys
import traceback

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from ddp_helpers import free_port, leave_worker

WORLD = 2
B, T, L, DIN, D = 5, 4, 6, 10, 8
SPLIT = [3, 2]  # uneven on purpose


class _Model(torch.nn.Module):
    """Two linear 'encoders' + the objective, so DDP averages every parameter as in training."""

    def __init__(self):
        super().__init__()
        from locvtp.objectives import LocVTPObjective

        self.video = torch.nn.Linear(DIN, D)
        self.text = torch.nn.Linear(DIN, D)
        self.objective = LocVTPObjective(dim=D, stopwords="none", topk=2, sigma=2.0, intra_negatives=True)

    def features(self, clips_in, words_in):
        c = F.normalize(self.video(clips_in), dim=-1)
        w = F.normalize(self.text(words_in), dim=-1)
        s = F.normalize(self.text(words_in[:, :4].mean(1)), dim=-1)  # positions every rank keeps
        return c, w, s

    def forward(self, clips_in, words_in, clip_mask, word_mask, offsets, keep=None):
        c, w, s = self.features(clips_in, words_in)
        if keep is not None:  # let the test read the gradient reaching the local features
            c.retain_grad()
            keep.append(c)
        return self.objective(c, w, s, clip_mask, word_mask, offsets)


def _global_batch():
    g = torch.Generator().manual_seed(0)
    clips_in = torch.randn(B, T, DIN, generator=g)
    words_in = torch.randn(B, L, DIN, generator=g)
    clip_mask = torch.arange(T)[None] < torch.tensor([4, 2, 3, 1, 4])[:, None]
    word_mask = torch.ones(B, L, dtype=torch.bool)
    word_mask[:, 0] = False  # a [CLS]-like token
    word_mask[3:, 4:] = False  # rank 1's sentences are shorter: it trims its padding to L=4 below
    from locvtp.objectives import draw_offsets

    offsets = draw_offsets(clip_mask, 2, generator=torch.Generator().manual_seed(1))
    return clips_in, words_in, clip_mask, word_mask, offsets


def _worker(rank: int, port: int, result_dir: str) -> None:
    try:
        torch.set_num_threads(1)
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
        from torch.nn.parallel import DistributedDataParallel as DDP

        from locvtp.distributed import world_info

        assert world_info() == (rank, WORLD)
        clips_in, words_in, clip_mask, word_mask, offsets = _global_batch()

        # single-process reference on the global batch (same initial weights on every rank)
        torch.manual_seed(0)
        ref_model = _Model()
        ref_model.objective.gather = False  # this copy sees the whole global batch itself
        keep_ref: list = []
        ref_out = ref_model(clips_in, words_in, clip_mask, word_mask, offsets, keep_ref)
        ref_out["total"].backward()
        ref_grads = {n: p.grad.clone() for n, p in ref_model.named_parameters()}

        # the same computation split over the ranks
        torch.manual_seed(0)
        model = DDP(_Model())
        lo = sum(SPLIT[:rank])
        sl = slice(lo, lo + SPLIT[rank])
        Lr = L if rank == 0 else 4
        keep: list = []
        out = model(clips_in[sl], words_in[sl, :Lr], clip_mask[sl], word_mask[sl, :Lr], offsets[sl], keep)
        out["total"].backward()

        for key in ("coarse", "fine", "fine_cw", "fine_wc", "temporal", "temporal_z", "temporal_w", "total"):
            torch.testing.assert_close(out[key], ref_out[key], rtol=1e-5, atol=1e-6, msg=lambda m: f"rank {rank}: {key}: {m}")
        assert torch.equal(out["offsets"], offsets)
        assert torch.equal(out["clip_to_word"][:, :, :], ref_out["clip_to_word"])
        for n, p in model.module.named_parameters():
            torch.testing.assert_close(p.grad, ref_grads[n], rtol=1e-4, atol=1e-6, msg=lambda m: f"rank {rank}: grad of {n}: {m}")
        torch.testing.assert_close(keep[0].grad, WORLD * keep_ref[0].grad[sl], rtol=1e-4, atol=1e-6)

        # offsets drawn inside (None): drawn per rank, gathered, so both ranks compute the same loss
        torch.manual_seed(100 + rank)
        out2 = model.module(clips_in[sl], words_in[sl, :Lr], clip_mask[sl], word_mask[sl, :Lr], None)
        both = [torch.zeros(()) for _ in range(WORLD)]
        dist.all_gather(both, out2["total"].detach().contiguous())
        assert float(both[0]) == float(both[1]), both
        ctx = torch.arange(T)[None] + out2["offsets"]
        valid = out2["offsets"] != 0
        assert valid.any() and ((ctx >= 0) & (ctx < T))[valid].all()
        dist.barrier()  # nobody tears gloo down while a peer is still in its last collective
        dist.destroy_process_group()
    except Exception:  # surface the worker's traceback in the test failure
        with open(os.path.join(result_dir, f"rank{rank}.err"), "w") as fh:
            fh.write(traceback.format_exc())
        raise
    leave_worker()


@pytest.mark.ddp
def test_ddp_two_gloo_processes_match_single_process(tmp_path):
    if not dist.is_available():
        pytest.skip("torch.distributed is not available in this build")
    port = free_port()
    try:
        mp.spawn(_worker, args=(port, str(tmp_path)), nprocs=WORLD, join=True)
    except Exception as exc:  # pragma: no cover - failure path
        errs = "\n".join(p.read_text() for p in sorted(tmp_path.glob("rank*.err")))
        pytest.fail(f"DDP worker failed: {exc}\n{errs}")


def test_helpers_are_noops_in_a_single_process():
    from locvtp.distributed import all_gather_nograd, all_gather_with_grad, world_info

    x = torch.randn(3, 2, requires_grad=True)
    assert world_info() == (0, 1)
    assert all_gather_with_grad(x) is x
    assert all_gather_nograd(x) is x


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
