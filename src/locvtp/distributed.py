"""Minimal torch.distributed helpers for contrastive losses over the global batch.

Why our own gather: contrastive negatives must come from every rank, and gradients must flow back to the rank
that produced each feature (open_clip's ``gather_with_grad``). ``torch.distributed.nn.functional.all_gather``
does this but is deprecated and requires equal shapes on every rank; ours also accepts a different number of
rows per rank (the last, smaller batch of an epoch when ``drop_last=False``).

Gradient convention (same as torch.distributed.nn.functional.all_gather): the backward of
``all_gather_with_grad`` *sums* over ranks the gradient that each rank's loss sends to this rank's slice. When
every rank computes the same global loss L, the gradient reaching rank k's local features is therefore
``world_size * dL/dx_k``; DDP then *averages* parameter gradients over ranks (divides by ``world_size``), so the
encoder gradients equal the single-process gradients of L on the global batch. Parameters that only act on
gathered features (the objective's context head and logit scale) get the full ``dL/dθ`` on every rank, and the
average of identical values leaves them unchanged. ``tests/test_distributed_objectives.py`` checks both.

Every helper is a no-op (returns its input) when torch.distributed is unavailable or not initialised.

The process-group set-up of a training run is here too: :func:`setup_distributed` joins torchrun's group (if
any) and picks the rank's device; :class:`Dist` carries rank, world, device and the object collectives the
trainer needs (barrier, gather / broadcast of Python objects).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["world_info", "is_distributed", "all_gather_with_grad", "all_gather_nograd", "all_gather_sizes", "Dist",
           "setup_distributed"]


def is_distributed() -> bool:
    """True when a process group is initialised with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_info() -> tuple[int, int]:
    """(rank, world_size); (0, 1) outside torch.distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_gather_sizes(n: int, device: torch.device | str = "cpu") -> list[int]:
    """Every rank's value of the integer ``n`` (e.g. its local batch size), in rank order."""
    if not is_distributed():
        return [int(n)]
    local = torch.tensor([int(n)], dtype=torch.long, device=device)
    out = [torch.zeros_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(out, local)
    return [int(t.item()) for t in out]


def _gather_padded(x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """all_gather along dim 0 with per-rank row counts ``sizes`` (pads to the max, then trims)."""
    x = x.contiguous()
    biggest = max(sizes)
    if x.shape[0] < biggest:
        pad = x.new_zeros((biggest - x.shape[0],) + tuple(x.shape[1:]))
        x = torch.cat([x, pad], dim=0)
    parts = [torch.empty_like(x) for _ in sizes]
    dist.all_gather(parts, x)
    return torch.cat([p[:n] for p, n in zip(parts, sizes)], dim=0)


class _AllGatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, sizes: tuple[int, ...]):
        ctx.sizes = sizes
        ctx.rank = dist.get_rank()
        return _gather_padded(x, list(sizes))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        # Sum over ranks of the gradient each rank's loss sends to every slice, then keep our slice
        # (reduce-scatter semantics; all_reduce is used because gloo lacks reduce_scatter and the gathered
        # features are small).
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]], None


def all_gather_with_grad(x: torch.Tensor, sizes: list[int] | None = None) -> torch.Tensor:
    """Concatenate ``x`` from all ranks along dim 0, differentiably (see the module docstring).

    ``sizes`` (every rank's ``x.shape[0]``) may be passed to save one collective; other dims must match.
    """
    if not is_distributed():
        return x
    if sizes is None:
        sizes = all_gather_sizes(x.shape[0], x.device)
    return _AllGatherWithGrad.apply(x, tuple(int(s) for s in sizes))


def all_gather_nograd(x: torch.Tensor, sizes: list[int] | None = None) -> torch.Tensor:
    """Concatenate ``x`` from all ranks along dim 0 without autograd (masks, offsets, indices)."""
    if not is_distributed():
        return x
    if sizes is None:
        sizes = all_gather_sizes(x.shape[0], x.device)
    with torch.no_grad():
        if x.dtype == torch.bool:  # gloo does not reduce/gather bool on every version
            return _gather_padded(x.to(torch.uint8), list(sizes)).bool()
        return _gather_padded(x.detach(), list(sizes))


# ----------------------------------------------------------------------------------------------------------
# Process group and device of a training run
# ----------------------------------------------------------------------------------------------------------
@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def gather_objects(self, obj: Any) -> list:
        if not self.enabled:
            return [obj]
        out: list = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        """Leave the process group if :func:`setup_distributed` created it — after a barrier: a rank that tears
        gloo down while a peer's last collective is still in flight can abort that peer (SIGABRT, "terminate called
        without an active exception")."""
        if self.initialized_here:
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()


def setup_distributed(device: str = "auto") -> Dist:
    """Join the torchrun process group if there is one (WORLD_SIZE > 1); pick this rank's device.

    ``train.device`` is checked by :func:`locvtp.device.resolve_device`: a device this machine does not have is
    a one-line error naming the key. ``cuda`` (and ``auto`` on a GPU machine) means this rank's GPU
    (``cuda:LOCAL_RANK``); an explicit ``cuda:N`` is taken as given."""
    from locvtp.device import resolve_device

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    spec = resolve_device(str(device), what="train.device")
    use_cuda = spec.startswith("cuda")
    explicit = use_cuda and ":" in str(device)
    dev = torch.device(spec if explicit or not use_cuda else f"cuda:{local_rank}")
    if use_cuda:
        torch.cuda.set_device(dev)
    d = Dist(rank, world, local_rank, dev)
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if use_cuda else "gloo", init_method="env://")
        d.initialized_here = True
    return d
