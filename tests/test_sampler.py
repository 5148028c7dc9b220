"""The compact sampler (locvtp.training.sampler) against a plain reference: DistributedSampler's order and the
grouped order written as the loops their docstrings describe."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from torch.utils.data import DistributedSampler

from locvtp.training.sampler import ResumableBatchSampler


def _reference_rank_indices(n, world, rank, seed, epoch, shuffle=True):
    ds = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=shuffle, seed=seed, drop_last=True)
    ds.set_epoch(epoch)
    return list(iter(ds))


def _reference_grouped(groups, seed, epoch, g, shuffle=True):
    rng = np.random.default_rng([seed, epoch])
    by_video: dict = {}
    for i, v in enumerate(groups):
        by_video.setdefault(v, []).append(i)
    runs = []
    for _, members in sorted(by_video.items(), key=lambda kv: str(kv[0])):
        members = np.asarray(members, dtype=np.int64)
        members = rng.permutation(members) if shuffle else members
        runs += [members[k:k + g] for k in range(0, len(members), g)]
    order = rng.permutation(len(runs)) if shuffle else np.arange(len(runs))
    return np.concatenate([runs[k] for k in order]).tolist()


@pytest.mark.parametrize("n, batch, world", [(50, 6, 1), (50, 6, 2), (101, 8, 4), (7, 7, 1)])
@pytest.mark.parametrize("shuffle", [True, False])
def test_plain_order_is_distributed_samplers(n, batch, world, shuffle):
    for rank in range(world):
        s = ResumableBatchSampler(n, batch, rank, world, seed=3, shuffle=shuffle)
        for epoch in (0, 1, 5):
            ref = _reference_rank_indices(n, world, rank, 3, epoch, shuffle)
            local = batch // world
            expected = [[(epoch, i) for i in ref[j * local:(j + 1) * local]] for j in range(n // batch)]
            assert s.epoch_batches(epoch) == expected


@pytest.mark.parametrize("g", [2, 3, 5])
def test_grouped_order_equals_the_loop(g):
    rng = np.random.default_rng(0)
    vids = [f"v{int(k)}" for k in rng.integers(0, 13, 97)] + ["v10", "v2"]  # "v10" < "v2" as strings
    s = ResumableBatchSampler(len(vids), 8, groups=vids, group_size=g, seed=4)
    for epoch in (0, 3):
        assert s.grouped_order(epoch).tolist() == _reference_grouped(vids, 4, epoch, g)
    unshuffled = ResumableBatchSampler(len(vids), 8, groups=vids, group_size=g, seed=4, shuffle=False)
    assert unshuffled.grouped_order(0).tolist() == _reference_grouped(vids, 4, 0, g, shuffle=False)


def test_integer_groups_order_like_their_keys():
    vids = ["b", "a", "c", "a", "b", "b", "c", "a"]
    ranks = np.array([1, 0, 2, 0, 1, 1, 2, 0], dtype=np.int64)
    s1 = ResumableBatchSampler(len(vids), 2, groups=vids, group_size=2, seed=1)
    s2 = ResumableBatchSampler(len(vids), 2, groups=ranks, group_size=2, seed=1)
    assert s1.grouped_order(2).tolist() == s2.grouped_order(2).tolist()


def test_resume_and_rank_union():
    full = list(itertools.islice(iter(ResumableBatchSampler(50, 6, 1, 2, seed=0)), 20))
    for start in (0, 3, 8, 11):
        part = list(itertools.islice(iter(ResumableBatchSampler(50, 6, 1, 2, seed=0, start=start)), 20 - start))
        assert part == full[start:]
    single = list(itertools.islice(iter(ResumableBatchSampler(48, 8, 0, 1, seed=2)), 12))
    ranks = [list(itertools.islice(iter(ResumableBatchSampler(48, 8, r, 4, seed=2)), 12)) for r in range(4)]
    for j in range(12):
        assert sorted(sum((rb[j] for rb in ranks), [])) == sorted(single[j])


def test_compact_per_epoch_state():
    s = ResumableBatchSampler(2_000_003, 64, 1, 4, seed=0)
    mine = s.rank_indices(0)
    assert mine.dtype == np.int32 and mine.shape == (2_000_000 // 4,)
