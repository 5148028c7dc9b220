"""The data order of pre-training: resumable, identical across rank counts, compact at any corpus size.

Why not ``DistributedSampler`` as it is: it turns each epoch's permutation into a Python list (``tolist()``)
— at 136 M samples that is ≈ 5 GB of Python integers on every rank. This sampler draws the *same* permutation
(``torch.randperm`` seeded with ``seed + epoch``, as ``DistributedSampler`` does; drawn as int32 when the
samples fit, which torch guarantees gives the same order) and keeps it as one integer array per epoch: 4 bytes a
sample. Batches are sliced from it lazily; nothing per sample is a Python object until its batch is yielded.
"""
from __future__ import annotations

from typing import Any, Iterator, Optional, Sequence

import numpy as np


class ResumableBatchSampler:
    """An endless stream of this rank's micro-batches of ``(epoch, index)``, starting at any global position.

    Each epoch is ``torch.utils.data.DistributedSampler``'s order (a permutation seeded by ``seed + epoch``,
    rank r taking every world-th element, the tail dropped), cut into local batches of ``batch_size // world``;
    local batch j of every rank together form global batch j = the j-th ``batch_size`` slice of the
    permutation, whatever the number of ranks. ``start`` = the number of global micro-batches already consumed,
    which is the whole data-order state a checkpoint needs.

    ``groups`` (one key per sample: a video id, or an integer whose order is the order of the ids) with
    ``group_size > 1`` puts samples of one video next to each other, in runs of up to ``group_size``
    (:meth:`grouped_order`).
    """

    def __init__(self, num_samples: int, batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0,
                 start: int = 0, shuffle: bool = True, groups: Optional[Sequence[Any]] = None,
                 group_size: int = 1):
        from locvtp.config import ConfigError

        if group_size < 1:
            raise ConfigError(f"data.group_size must be >= 1, got {group_size}")
        if group_size > 1 and (groups is None or len(groups) != num_samples):
            raise ValueError("data.group_size > 1 needs the video of every sample (groups of length num_samples)")
        if batch_size < 1:
            raise ConfigError(f"train.batch_size={batch_size}: must be >= 1")
        if batch_size % world_size:
            raise ConfigError(f"train.batch_size={batch_size} is not divisible by the {world_size} ranks")
        self.local = batch_size // world_size
        self.per_epoch = num_samples // batch_size
        if self.per_epoch < 1:
            raise ConfigError(f"the dataset has {num_samples} samples, fewer than one batch "
                              f"(train.batch_size={batch_size}); lower train.batch_size")
        self.n, self.rank, self.world, self.seed = num_samples, rank, world_size, seed
        self.start, self.shuffle = start, shuffle
        self.group_size = int(group_size)
        self._group_rank: Optional[np.ndarray] = None
        if self.group_size > 1:
            self._group_rank = _ranks(groups)
        self._epoch: Optional[int] = None
        self._mine: Optional[np.ndarray] = None

    # ------------------------------------------------------------------ one epoch's order
    def _permutation(self, epoch: int) -> np.ndarray:
        import torch

        if not self.shuffle:
            return np.arange(self.n, dtype=np.int64)
        g = torch.Generator()
        g.manual_seed(self.seed + epoch)
        dtype = torch.int32 if self.n < 2**31 else torch.int64
        return torch.randperm(self.n, generator=g, dtype=dtype).numpy()

    def grouped_order(self, epoch: int) -> np.ndarray:
        """One epoch's permutation with the samples of one video next to each other, in runs of up to
        ``group_size``: each video's samples (in index order) are shuffled and cut into runs, then the runs are
        shuffled. Global batches are contiguous slices of this order, so most runs land whole in one batch and
        the batch holds hard negatives: other moments of the same videos (the same objects, a different event).

        One generator call per video and one for the runs, in the order of the video ids — the loop is over
        videos, never over samples."""
        rng = np.random.default_rng([self.seed, epoch])
        ranks = self._group_rank
        members = np.argsort(ranks, kind="stable")  # samples grouped by video, in index order within a video
        counts = np.bincount(ranks)
        counts = counts[counts > 0]
        bounds = np.concatenate([[0], np.cumsum(counts)])
        if self.shuffle:
            for v in range(len(counts)):
                a, b = bounds[v], bounds[v + 1]
                members[a:b] = rng.permutation(members[a:b])
        g = self.group_size
        runs_per_video = -(-counts // g)
        run_video = np.repeat(np.arange(len(counts)), runs_per_video)
        run_k = np.arange(len(run_video)) - np.repeat(np.cumsum(runs_per_video) - runs_per_video, runs_per_video)
        run_start = bounds[run_video] + run_k * g
        run_len = np.minimum(g, bounds[run_video + 1] - run_start)
        order = rng.permutation(len(run_start)) if self.shuffle else np.arange(len(run_start))
        lens = run_len[order]
        offsets = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens)
        return members[np.repeat(run_start[order], lens) + offsets]

    def rank_indices(self, epoch: int) -> np.ndarray:
        """This rank's samples of one epoch, in order (``DistributedSampler`` with ``drop_last=True``)."""
        if self._epoch != epoch:
            perm = self.grouped_order(epoch) if self._group_rank is not None else self._permutation(epoch)
            total = (self.n // self.world) * self.world
            self._mine = np.ascontiguousarray(perm[self.rank:total:self.world])
            self._epoch = epoch
        return self._mine

    def batch(self, epoch: int, j: int) -> list[tuple[int, int]]:
        idx = self.rank_indices(epoch)[j * self.local:(j + 1) * self.local]
        return [(epoch, int(i)) for i in idx]

    def epoch_batches(self, epoch: int) -> list[list[tuple[int, int]]]:
        """Every local batch of one epoch (tests and small corpora; training iterates lazily)."""
        return [self.batch(epoch, j) for j in range(self.per_epoch)]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, j = divmod(self.start, self.per_epoch)
        while True:
            while j < self.per_epoch:
                yield self.batch(epoch, j)
                j += 1
            epoch, j = epoch + 1, 0

    def __len__(self) -> int:  # one epoch (the stream itself is endless)
        return self.per_epoch


def _ranks(groups: Sequence[Any]) -> np.ndarray:
    """Each sample's group as a dense integer whose order is the order of the keys as strings (the order the
    groups are visited in, whatever type the keys have)."""
    arr = np.asarray(groups)
    if arr.dtype.kind in "iu":
        # integer keys stand for ids whose order they already carry (e.g. CaptionItems' video ranks)
        _, inv = np.unique(arr, return_inverse=True)
        return inv.astype(np.int64).reshape(-1)
    keys = np.asarray([str(g) for g in groups]) if arr.dtype.kind not in "U" else arr
    _, inv = np.unique(keys, return_inverse=True)  # np.unique sorts by code point, as sorted(str) does
    return inv.astype(np.int64).reshape(-1)


__all__ = ["ResumableBatchSampler"]
