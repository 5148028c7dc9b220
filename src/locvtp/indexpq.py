"""The compressed moment index (library): faiss IVF-PQ codes in inverted lists memory-mapped from disk, re-ranked
exactly against float16 copies of the vectors (``embeddings.npy``, also memory-mapped).

Why: an exact or IVF-Flat index keeps every fp32 vector in RAM (10^8 x 256 = 102 GB). Here RAM holds only the
coarse centroids and the PQ codebooks (a few MB); per clip the disk holds ``m`` code bytes + an 8-byte id
(``ivfpq.ivfdata``, paged in by the kernel) and ``2 * dim`` bytes of fp16 vector. A query scans the ``nprobe``
closest lists' codes (approximate scores), then re-scores its ``rerank`` best candidates with exact inner products
on the fp16 vectors (:func:`locvtp.index.rescore`), so the final order is that of exact scores.

Text queries sit between the clusters of clip embeddings (the modality gap): the list closest to a query often
does not hold its best clips, which is why ``nprobe`` defaults to a larger share of the lists than for clip-to-clip
search (measured: docs/benchmarks/search_scale.md).

Build in bounded memory (:func:`train_and_fill`): train OPQ + coarse quantizer + PQ on a seeded sample of rows, then
add the rows chunk by chunk into shards of at most ``shard_rows`` codes, each written to disk, and merge the shards'
lists into one on-disk file (faiss ``OnDiskInvertedLists``). Files (in the index directory)::

    ivfpq.faiss    trained transform + quantizer + PQ and the lists' offsets (faiss format, small)
    ivfpq.ivfdata  the inverted lists: codes and row ids (memory-mapped read-only at search time)
"""
from __future__ import annotations

import contextlib
import ctypes
import math
import os
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

IVFPQ_FILE = "ivfpq.faiss"
IVFDATA_FILE = "ivfpq.ivfdata"
# `--kind auto`: exact up to this many rows. Exact faiss search is ~4 ms per 10^5 rows per query on one core and its
# RAM is 4*dim bytes a row (256 MB at 250k x 256); beyond it IVF-PQ answers in a few ms with recall@10 >= 0.9 from a
# fraction of the memory. IVF-Flat is never chosen automatically: it needs the RAM of exact search, and with text
# queries its recall is the lowest of the three (docs/benchmarks/search_scale.md).
AUTO_EXACT_MAX_ROWS = 250_000
KINDS = ("exact", "ivf", "ivfpq", "auto")
MIN_ROWS = 32  # fewer cannot train 5-bit codebooks (each needs a row per centroid); such a corpus wants exact search


@dataclass
class PQSettings:
    """What an IVF-PQ index is built and searched with (recorded in ``meta.json`` as ``ivfpq``)."""

    nlist: int
    m: int
    nbits: int
    opq: bool
    nprobe: int
    rerank: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def auto_kind(rows: int) -> str:
    """The kind ``--kind auto`` builds for ``rows`` clips (see :data:`AUTO_EXACT_MAX_ROWS`)."""
    return "exact" if int(rows) <= AUTO_EXACT_MAX_ROWS else "ivfpq"


def default_nlist(rows: int) -> int:
    """A power of two near sqrt(rows) (faiss' rule of thumb, rounded down: the coarse assignment of every row at
    build time costs rows x nlist dot products), with at least 39 training points per list."""
    rows = max(1, int(rows))
    nlist = 1 << max(0, int(math.floor(math.log2(math.sqrt(rows)))))
    return int(max(1, min(nlist, rows // 39, 65536)))


SCAN_BUDGET = 500_000  # codes a query scans by default (about 7 ms on one core of the benchmark machine)


def default_nprobe(nlist: int, rows: int) -> int:
    """Lists probed per query: as many as hold about :data:`SCAN_BUDGET` codes, at most half of them, at least 16.

    Text queries need many lists on a small corpus and fewer on a dense one: on the benchmark's clustered corpus
    recall@10 of moments at 10^6 clips (512 lists) was 0.82 / 0.87 / 0.93 with 32 / 128 / 256 lists probed, at
    10^7 clips (2048 lists) 0.95 / 0.96 / 0.96 (rerank 1000; docs/benchmarks/search_scale.md). A fixed budget of
    codes keeps the latency flat as the corpus grows; measured up to 10^7 clips."""
    per_list = max(1.0, int(rows) / max(1, int(nlist)))
    return int(min(nlist, max(16, min(nlist // 2, math.ceil(SCAN_BUDGET / per_list)))))


DEFAULT_RERANK = 1000


def default_m(dim: int) -> int:
    """PQ sub-quantizers: the largest divisor of ``dim`` at most dim/8 (32 bytes a code at dim 256)."""
    target = max(1, dim // 8)
    return max(d for d in range(1, target + 1) if dim % d == 0)


def settings_for(rows: int, dim: int, nlist: int | None, nprobe: int | None, rerank: int | None, m: int | None,
                 opq: bool, train_rows: int) -> PQSettings:
    """Complete settings for ``rows`` clips of width ``dim``; ``nbits`` shrinks below 8 only when the training
    sample has fewer than 256 rows (a tiny corpus: each codebook needs at least one row per centroid)."""
    from locvtp.errors import UsageError

    if rows < MIN_ROWS:
        raise UsageError(f"--kind ivfpq: {rows} clips are too few to train product-quantizer codebooks (at least "
                         f"{MIN_ROWS}); use --kind exact (or auto)")
    nl = int(nlist or default_nlist(rows))
    mm = int(m or default_m(dim))
    if dim % mm:
        raise UsageError(f"--pq-m {mm}: must divide the embedding width {dim}")
    nbits = int(max(1, min(8, math.floor(math.log2(max(2, train_rows))))))
    probe = int(min(nl, nprobe or default_nprobe(nl, rows)))
    return PQSettings(nlist=nl, m=mm, nbits=nbits, opq=bool(opq), nprobe=probe, rerank=int(rerank or DEFAULT_RERANK))


@contextlib.contextmanager
def quiet_native_output() -> Iterator[None]:
    """faiss' C++ code prints to the process' stdout/stderr (k-means warnings, "resizing ..."): that would corrupt
    a command's JSON on stdout. Redirect both file descriptors to a scratch file for the block; what faiss printed
    is passed on to stderr only if the block raises."""
    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        ok = False
        try:
            yield
            ok = True
        finally:
            libc.fflush(None)
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            if not ok:
                sink.seek(0)
                sys.stderr.write(sink.read().decode("utf-8", "replace")[-4000:])


def _npy_offset(path: Path) -> tuple[int, tuple[int, ...], np.dtype]:
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(f)
        return f.tell(), shape, dtype


def read_rows(path: Path, lo: int, hi: int) -> np.ndarray:
    """Rows ``lo:hi`` of a 2-D ``.npy`` as float32, by a plain read (no memory map: the pages do not stay mapped
    into the process, so its resident memory stays at one chunk)."""
    off, shape, dtype = _npy_offset(path)
    dim = shape[1]
    a = np.fromfile(path, dtype=dtype, count=(hi - lo) * dim, offset=off + lo * dim * dtype.itemsize)
    return a.reshape(hi - lo, dim).astype(np.float32)


def sample_rows(path: Path, rows: np.ndarray, window: int = 1 << 16) -> np.ndarray:
    """The sorted ``rows`` of a 2-D ``.npy`` as float32, read window by window through a memory map that is dropped
    after each window (resident memory: the sample plus one window's touched pages)."""
    out = []
    total = _npy_offset(path)[1][0]
    for lo in range(0, total, window):
        sel = rows[(rows >= lo) & (rows < lo + window)]
        if sel.size:
            mm = np.load(path, mmap_mode="r")
            out.append(np.asarray(mm[sel], dtype=np.float32))
            del mm
    return np.concatenate(out) if out else np.zeros((0, _npy_offset(path)[1][1]), np.float32)


def _trained(sample: np.ndarray, dim: int, s: PQSettings, seed: int) -> Any:
    """An empty, trained [OPQ ->] IVF-PQ (inner product) index."""
    import faiss

    quantizer = faiss.IndexFlatIP(dim)
    ivf = faiss.IndexIVFPQ(quantizer, dim, s.nlist, s.m, s.nbits, faiss.METRIC_INNER_PRODUCT)
    ivf.cp.seed = seed
    ivf.cp.niter = 10  # coarse k-means: 10 iterations (faiss' default 25 costs 2.5x for no measurable recall)
    ivf.pq.cp.seed = seed
    index: Any = ivf
    if s.opq:
        opq = faiss.OPQMatrix(dim, s.m)
        opq.niter = 20
        opq.max_train_points = min(len(sample), 65536)
        index = faiss.IndexPreTransform(opq, ivf)
    with quiet_native_output():  # (OPQ's random start comes from faiss' own fixed-seed generator: deterministic)
        index.train(sample)
    return index


def train_and_fill(folder: Path, emb_path: Path, total: int, dim: int, s: PQSettings, train_size: int, seed: int,
                   chunk_rows: int = 65536, shard_rows: int = 4 << 20) -> None:
    """Train on a seeded sample of ``emb_path``'s rows, add every row in chunks, and write :data:`IVFPQ_FILE` +
    :data:`IVFDATA_FILE` into ``folder``. Peak memory: the sample, one chunk, and one shard's codes
    (``shard_rows * (m + 8)`` bytes), whatever ``total``."""
    import faiss

    rng = np.random.default_rng(seed)
    ntrain = int(min(total, max(train_size, 39 * s.nlist)))
    sample = sample_rows(emb_path, np.sort(rng.choice(total, ntrain, replace=False)))
    index = _trained(sample, dim, s, seed)
    del sample
    shard_dir = folder / ".shards"
    shard_dir.mkdir()
    shards: list[str] = []
    for start in range(0, total, shard_rows):
        part = faiss.clone_index(index)
        for lo in range(start, min(total, start + shard_rows), chunk_rows):
            hi = min(total, start + shard_rows, lo + chunk_rows)
            part.add_with_ids(read_rows(emb_path, lo, hi), np.arange(lo, hi, dtype=np.int64))
        shards.append(str(shard_dir / f"{len(shards):05d}.faiss"))
        faiss.write_index(part, shards[-1])
        del part
    _merge_shards(index, shards, folder)
    for p in shards:
        os.unlink(p)
    shard_dir.rmdir()


def _merge_shards(index: Any, shards: list[str], folder: Path) -> None:
    """Concatenate the shards' lists into one ``OnDiskInvertedLists`` file and write the index that points to it.
    The shards are opened memory-mapped (their codes never all in RAM) and kept alive until the merge is done."""
    import faiss

    opened = [faiss.read_index(p, faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY) for p in shards]
    ivf = faiss.extract_index_ivf(index)
    lists = faiss.OnDiskInvertedLists(ivf.nlist, ivf.code_size, str(folder / IVFDATA_FILE))
    vec = faiss.InvertedListsPtrVector()
    for o in opened:
        vec.push_back(faiss.extract_index_ivf(o).invlists)
    with quiet_native_output():
        ntotal = lists.merge_from_multiple(vec.data(), vec.size(), False)
    index.ntotal = ivf.ntotal = ntotal
    ivf.replace_invlists(lists, True)
    lists.this.disown()  # the index owns it now
    del vec, opened
    faiss.write_index(index, str(folder / IVFPQ_FILE))


def open_ivfpq(folder: Path, nprobe: int) -> Any:
    """The IVF-PQ index of ``folder`` with its inverted lists memory-mapped read-only from :data:`IVFDATA_FILE`.

    The faiss file records the absolute path the lists were written to (the build's temporary directory, renamed
    since); the lists' metadata are read without their data, pointed at the file beside the index, then mapped.
    (faiss' IO_FLAG_ONDISK_SAME_DIR does the same but prints to stdout.)"""
    import faiss

    index = faiss.read_index(str(folder / IVFPQ_FILE), faiss.IO_FLAG_SKIP_IVF_DATA | faiss.IO_FLAG_READ_ONLY)
    ivf = faiss.extract_index_ivf(index)
    lists = faiss.downcast_InvertedLists(ivf.invlists)
    lists.filename = str((folder / IVFDATA_FILE).resolve())
    lists.do_mmap()
    ivf.nprobe = int(nprobe)
    return index
