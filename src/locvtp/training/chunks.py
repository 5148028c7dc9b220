"""Per-item caches computed in chunks (:func:`chunked_array`): the prepared corpus's words mask, video probes and
feature lengths (:mod:`locvtp.training.corpus`) and the frame cache (:mod:`locvtp.training.framecache`).

Why chunks: each chunk is one atomically written part file, so a killed run resumes with the missing chunks, N
machines or ranks compute every N-th chunk at once, and worker processes compute one share's chunks in parallel.
"""
from __future__ import annotations

import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from locvtp.files import atomic_path
from locvtp.runtime import die_with_parent


def chunked_array(directory: Path, name: str, n_items: int, chunk: int, compute: Callable[[int, int], dict],
                  share: tuple[int, int] = (0, 1), workers: int = 0, progress: bool = True,
                  wait: bool = True, poll: float = 2.0, desc: Optional[str] = None) -> Optional[dict[str, np.ndarray]]:
    """A per-item cache computed in chunks: ``compute(lo, hi)`` returns a dict of arrays for items ``lo:hi``.

    Each chunk is written atomically as ``NAME.parts/NNNNNNN.npz``; the assembled ``NAME.npz`` (arrays
    concatenated) is what callers read. This process computes the missing chunks of its share (every
    ``share[1]``-th from ``share[0]``) with ``workers`` processes (``compute`` must then be picklable); with
    ``wait`` it then waits for the other shares' parts and assembles (the first to get there does). ``desc``: the
    progress bar's label (default ``name``).
    """
    final = directory / f"{name}.npz"
    if final.is_file():
        return _load_npz(final)
    parts = directory / f"{name}.parts"
    parts.mkdir(parents=True, exist_ok=True)
    n_chunks = max(1, math.ceil(n_items / chunk))
    part = [parts / f"{i:07d}.npz" for i in range(n_chunks)]
    rank, world = share
    mine = [i for i in range(rank, n_chunks, world) if not part[i].is_file()]
    bar = None
    if progress and mine:
        from locvtp.runtime import progress as tqdm

        bar = tqdm(total=len(mine), desc=desc or name, unit="chunk")
    if workers > 0 and len(mine) > 1:
        # no fork: torch / tokenizer thread pools are not fork-safe, and a forked worker inherits the file locks;
        # the workers die with this process (a killed run's idle workers otherwise wait on their queue for ever)
        ctx = get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=die_with_parent,
                                 initargs=(os.getpid(),)) as pool:
            futs = {pool.submit(_compute_part, compute, i * chunk, min(n_items, (i + 1) * chunk), part[i]): i
                    for i in mine}
            try:
                for f in futs:
                    f.result()
                    if bar is not None:
                        bar.update(1)
            except BaseException:  # the first failure stops the rest (done chunks stay for the resume)
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    else:
        for i in mine:
            _compute_part(compute, i * chunk, min(n_items, (i + 1) * chunk), part[i])
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    if not wait:
        return None
    while not all(p.is_file() for p in part):
        if final.is_file():
            return _load_npz(final)
        time.sleep(poll)  # other shares are still computing theirs
    if not final.is_file():
        arrays: dict[str, list] = {}
        for p in part:
            with np.load(p, allow_pickle=False) as z:
                for k in z.files:
                    arrays.setdefault(k, []).append(z[k])
        with atomic_path(final) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **{k: np.concatenate(v) for k, v in arrays.items()})
    return _load_npz(final)


def _compute_part(compute: Callable[[int, int], dict], lo: int, hi: int, out: Path) -> None:
    arrays = compute(lo, hi)
    with atomic_path(out) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


__all__ = ["chunked_array"]
