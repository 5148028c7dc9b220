"""The moment index (library): build, load and search an index of clip embeddings.

``locvtp index`` / ``locvtp search`` (:mod:`locvtp.commands.search`, the commands) and
:meth:`locvtp.predictor.LocVTPPredictor.search` use this module; it imports no command module.

An index is a directory (no pickle anywhere; everything is ``.npy`` or JSON, plus faiss files for IVF kinds)::

    meta.json         format, version (2; 1 still opens), dim, rows, kind (exact | ivf | ivfpq), embedding_dtype,
                      nlist, nprobe, ivfpq ({nlist, m, nbits, opq, nprobe, rerank}), checkpoint_sha256, ...,
                      video_sources ({id: file} where the id cannot lead back to its file: locvtp.data.videoids)
    videos.json       list of video ids (row_video indexes into it)
    embeddings.npy    float32 [M, D] clip embeddings (float16 for ivfpq; memory-mapped at search time)
    row_video.npy     int32 [M]     video of each row
    row_clip.npy      int32 [M]     clip index of each row inside its video
    row_window.npy    float64 [M,2] clip window in seconds
    ivf.faiss         (kind = ivf only) trained faiss IndexIVFFlat, inner-product metric
    ivfpq.faiss, ivfpq.ivfdata  (kind = ivfpq only) [OPQ +] IVF-PQ, lists on disk: :mod:`locvtp.indexpq`
    .locvtp-manifest.json  ownership manifest (writer ``index``): what `locvtp index` wrote here

Why a manifest: ``--out`` is replaced as a whole, so it must be an index this command wrote — never a folder
of the user's files, the feature directory itself, or a file (:func:`locvtp.files.replace_dir`). A build holds
the output's lock (one writer per index) and starts by removing the temporaries of a killed earlier build.
A video with NaN/inf features is skipped and listed under ``skipped`` in ``meta.json`` (``--strict``: an
error): its rows would score NaN, which ranks last, so the index could never return them.

Why the exact index stores no faiss file: ``IndexFlatIP`` *is* the matrix of embeddings, so it is rebuilt from
``embeddings.npy`` at load time (a memcpy) and the fallback reads the very same file; nothing is stored twice.

Exact search has two backends that return identical results: faiss ``IndexFlatIP`` and a chunked numpy
matrix-vector product (used when faiss is not installed). Both pick candidate rows, then re-score the chosen
rows with the same float64 dot product and sort by (score desc, row asc), so rounding differences between
BLAS kernels cannot reorder the output.

Moments: clip hits are merged into windows by :func:`merge_moments`: from the ``pool`` best clips, the best
unassigned hit seeds a moment that grows over neighbouring pool hits of the same video (at most ``gap`` missing
clips between) whose scores are close to the seed's (``tolerance``, relative to the pool's floor); a moment spans
[first clip start, last clip end] and is scored by its seed.
"""
from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from locvtp import runtime
from locvtp.errors import LocVTPError, UsageError
from locvtp.files import (
    OutputLock, atomic_path, atomic_write_text, check_apart, check_replaceable_dir, read_manifest,
    remove_stale_temporaries, replace_dir, write_manifest,
)
from locvtp.tempnames import temp_path

from locvtp.featurestore.reader import INDEX_FORMAT  # one name: the feature reader recognises an index by it
INDEX_VERSION = 2  # 2: kind ivfpq, float16 embeddings.npy ("embedding_dtype"); version-1 indexes still open
READABLE_VERSIONS = (1, 2)


class IndexError_(LocVTPError, RuntimeError):  # noqa: N801  (avoid shadowing the builtin IndexError)
    """An index directory is missing, incomplete or inconsistent; the message names the file."""


def have_faiss() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


# ----------------------------------------------------------------------------------------------------------
# exact top-k
# ----------------------------------------------------------------------------------------------------------
def _as_queries(queries: np.ndarray, dim: int) -> np.ndarray:
    q = np.asarray(queries, dtype=np.float32)
    if q.ndim == 1:
        q = q[None, :]
    if q.ndim != 2 or q.shape[1] != dim:
        raise ValueError(f"queries must be [n, {dim}], got shape {tuple(np.shape(queries))}")
    return np.ascontiguousarray(q)


def rescore(embeddings: np.ndarray, queries: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact float64 scores of candidate ``rows`` [n, c] (-1 = none), sorted by (score desc, row asc).

    The shared last step of every backend: the final order never depends on a BLAS kernel's rounding.
    Returns (scores float64 [n, c], rows int64 [n, c]); empty slots hold (-inf, -1) at the end.
    """
    rows = np.asarray(rows, dtype=np.int64)
    n, c = rows.shape
    scores = np.full((n, c), -np.inf)
    q64 = np.asarray(queries, dtype=np.float64)
    valid = rows >= 0
    if valid.any():
        safe = np.where(valid, rows, 0)
        # Read each candidate row once (sorted unique rows: cheap on a memory map); c is small.
        uniq = np.unique(safe)
        cand = np.asarray(embeddings[uniq], dtype=np.float64)
        s = np.einsum("ncd,nd->nc", cand[np.searchsorted(uniq, safe)], q64)
        scores = np.where(valid, s, -np.inf)
    # lexsort: the last key is primary -> score descending, then row ascending; empty slots (-1) go last.
    row_key = np.where(valid, rows, np.iinfo(np.int64).max)
    order = np.lexsort((row_key, -scores), axis=-1)
    scores = np.take_along_axis(scores, order, axis=1)
    rows = np.take_along_axis(np.where(valid, rows, -1), order, axis=1)
    return scores, rows


def numpy_topk(
    embeddings: np.ndarray, queries: np.ndarray, k: int, chunk_rows: int = 131072
) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k by chunked matrix products (the no-faiss fallback).

    Memory stays at ``chunk_rows x n`` scores whatever the corpus size, and ``embeddings`` may be a
    read-only memory map. Returns (scores float64 [n, k], rows int64 [n, k]) sorted as :func:`rescore`.
    """
    m, d = embeddings.shape
    q = _as_queries(queries, d)
    n = q.shape[0]
    k = int(k)
    if k <= 0:
        raise ValueError(f"k must be >= 1, got {k}")
    best_s = np.full((n, 0), -np.inf, dtype=np.float32)
    best_r = np.zeros((n, 0), dtype=np.int64)
    qt = q.T.copy()
    for lo in range(0, m, chunk_rows):
        block = np.asarray(embeddings[lo : lo + chunk_rows], dtype=np.float32)
        s = block @ qt  # [rows, n]
        s = s.T  # [n, rows]
        kk = min(k, s.shape[1])
        idx = np.argpartition(-s, kk - 1, axis=1)[:, :kk] if kk < s.shape[1] else np.broadcast_to(
            np.arange(s.shape[1]), (n, s.shape[1])
        )
        cand_s = np.concatenate([best_s, np.take_along_axis(s, idx, axis=1)], axis=1)
        cand_r = np.concatenate([best_r, idx.astype(np.int64) + lo], axis=1)
        kk = min(k, cand_s.shape[1])
        keep = np.argpartition(-cand_s, kk - 1, axis=1)[:, :kk] if kk < cand_s.shape[1] else np.broadcast_to(
            np.arange(cand_s.shape[1]), (n, cand_s.shape[1])
        )
        best_s = np.take_along_axis(cand_s, keep, axis=1)
        best_r = np.take_along_axis(cand_r, keep, axis=1)
    if best_r.shape[1] < k:  # corpus smaller than k: pad with empty slots
        pad = k - best_r.shape[1]
        best_r = np.concatenate([best_r, np.full((n, pad), -1, dtype=np.int64)], axis=1)
    return rescore(embeddings, q, best_r)


# ----------------------------------------------------------------------------------------------------------
# moments
# ----------------------------------------------------------------------------------------------------------
@dataclass
class Moment:
    """One search result: a window of one video, scored by its best clip."""

    video_id: str
    start: float
    end: float
    score: float
    first_clip: int
    last_clip: int
    best_clip: int

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["start"] = round(float(d["start"]), 4)
        d["end"] = round(float(d["end"]), 4)
        d["score"] = float(d["score"])
        return d


def merge_moments(
    rows: np.ndarray,
    scores: np.ndarray,
    row_video: np.ndarray,
    row_clip: np.ndarray,
    row_window: np.ndarray,
    videos: Sequence[str],
    top_k: int,
    gap: int = 0,
    tolerance: float = 0.5,
) -> list[Moment]:
    """Merge the clip hits of one query (the candidate pool: ``rows``/``scores``, -1 rows ignored) into moments.

    Greedy, best hit first: an unassigned hit with score ``s`` seeds a moment, which grows to the left and to the
    right over pool hits of the same video at most ``gap + 1`` clips away whose score is at least
    ``floor + (1 - tolerance) * (s - floor)`` (``floor`` = the pool's lowest score; ``tolerance`` 0 keeps single clips, 1
    chains every adjacent pool hit). The moment spans [first clip's start, last clip's end] and scores ``s``.
    Why relative to the pool: cosine scales differ between models, while "clearly above the pool's floor" does
    not; an unrelated clip that merely made the pool next to a true moment is not swallowed by it.
    Returns up to ``top_k`` moments, best first (ties by row order).
    """
    _check_merge_args(gap, tolerance)
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    ok = rows >= 0
    rows, scores = rows[ok], scores[ok]
    if rows.size == 0 or top_k < 1:
        return []
    order = np.lexsort((rows, -scores))
    rows, scores = rows[order], scores[order]
    vid = np.asarray(row_video)[rows].astype(np.int64)
    clip = np.asarray(row_clip)[rows].astype(np.int64)
    pos = {(int(v), int(c)): i for i, (v, c) in enumerate(zip(vid, clip))}
    floor = float(scores[-1])
    win = np.asarray(row_window, dtype=np.float64)
    assigned = np.zeros(rows.size, dtype=bool)
    out: list[Moment] = []
    for i in range(rows.size):  # the pool is small (hundreds): a plain greedy pass over hits
        if assigned[i]:
            continue
        s, v = float(scores[i]), int(vid[i])
        thr = floor + (1.0 - tolerance) * (s - floor)  # (this form is exact at tolerance 0 and 1)
        assigned[i] = True
        ends = []
        for step in (-1, 1):
            edge = int(clip[i])
            while True:
                for d in range(1, gap + 2):
                    j = pos.get((v, edge + step * d))
                    if j is not None and not assigned[j] and scores[j] >= thr:
                        assigned[j] = True
                        edge += step * d
                        break
                else:
                    break
            ends.append(edge)
        first, last = ends
        first_row = int(rows[i]) - (int(clip[i]) - first)  # rows of one video are contiguous, in clip order
        last_row = int(rows[i]) + (last - int(clip[i]))
        out.append(Moment(str(videos[v]), float(win[first_row, 0]), float(win[last_row, 1]), s, first, last,
                          int(clip[i])))
        if len(out) >= top_k:
            break
    return out


def _check_merge_args(gap: int, tolerance: float) -> None:
    """A negative gap would silently merge nothing; a tolerance outside [0, 1] has no meaning."""
    if int(gap) < 0:
        raise UsageError(f"gap must be >= 0 (clips allowed between merged hits), got {gap}")
    if not 0.0 <= float(tolerance) <= 1.0:
        raise UsageError(f"tolerance must be in [0, 1], got {tolerance}")


# ----------------------------------------------------------------------------------------------------------
# the index
# ----------------------------------------------------------------------------------------------------------
INDEX_WRITER = "index"
_INDEX_FILES = frozenset({"meta.json", "videos.json", "embeddings.npy", "row_video.npy", "row_clip.npy",
                          "row_window.npy", "ivf.faiss", "ivfpq.faiss", "ivfpq.ivfdata"})


class IndexInputError(LocVTPError, ValueError):
    """The features cannot be indexed (no clips, widths that disagree, ...); the message names the file."""


from locvtp.featurestore import MissingVideoError  # noqa: E402  (re-exported: raised by iter_features)


def _adopt_legacy_index(out: Path) -> None:
    """An index written before indexes carried an ownership manifest: its ``meta.json`` names the index format
    and it holds only index files. Give it the manifest it would have had, so it can be replaced like any
    index of ours (anything else stays refused by :func:`locvtp.files.check_replaceable_dir`)."""
    if not out.is_dir() or out.is_symlink() or read_manifest(out) is not None:
        return
    try:
        meta = json.loads((out / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    names = {q.name for q in out.iterdir()}
    if isinstance(meta, dict) and meta.get("format") == INDEX_FORMAT and names <= _INDEX_FILES:
        write_manifest(out, INDEX_WRITER, names)


def build_index(
    features: str | Path,
    out_dir: str | Path,
    ivf: int | None = None,
    nprobe: int | None = None,
    train_size: int = 100_000,
    seed: int = 0,
    progress: bool = True,
    allow_backbone: bool = False,
    video_ids: Sequence[str] | None = None,
    strict: bool = False,
    on_skip: Callable[[str, str], None] | None = None,
    kind: str | None = None,
    pq: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build a moment index from a feature file/dir written by ``locvtp extract``.

    ``video_ids``: index only these videos (e.g. one evaluation split of a larger extraction); an id that the
    features do not hold is a ``KeyError`` (:class:`MissingVideoError`) that names it (raised by the first,
    shapes-only pass: nothing written).

    A video with NaN/inf features is skipped — its rows could never be returned, since a NaN score ranks last —
    reported to ``on_skip(video_id, message)`` and listed under ``skipped`` in ``meta.json``; ``strict`` makes it
    a :class:`~locvtp.errors.NonFiniteFeaturesError` instead.

    ``kind``: "exact", "ivf" (faiss IVF-Flat), "ivfpq" (:mod:`locvtp.indexpq`: compressed, on disk, re-ranked)
    or "auto" (by corpus size: :func:`locvtp.indexpq.auto_kind`); None keeps the former meaning of ``ivf``:
    ``ivf=None`` exact, ``ivf=NLIST`` IVF-Flat. ``ivf`` is the number of lists of either IVF kind (default
    :func:`locvtp.indexpq.default_nlist`), trained on up to ``train_size`` rows (seeded by ``seed``); ``pq``: the
    IVF-PQ options ``m``, ``opq``, ``rerank``. Returns the index's ``meta.json`` content.
    """
    from locvtp.featurestore import feature_info, iter_features

    check_apart(out_dir, {"--features": features})
    info = feature_info(features)
    if info.get("embedding") == "backbone" and not allow_backbone:
        raise UsageError(
            f"{features}: holds pre-projection backbone features (extract --backbone); text queries live in the "
            "joint space, so index the joint embeddings instead (extract without --backbone)"
        )
    extra = {k: info.get(k) for k in ("checkpoint_sha256", "model", "clip_seconds", "stride_seconds", "embedding")}
    extra["source"] = str(Path(features).resolve())
    ids = sorted(set(video_ids)) if video_ids is not None else None  # index rows ordered by id, as without

    def on_bad(video_id: str, message: str) -> None:
        if on_skip is not None:
            on_skip(video_id, message)

    def records(load: bool) -> Any:
        try:
            yield from iter_features(features, load=load, video_ids=ids, on_bad=None if strict else on_bad)
        except KeyError as exc:  # iter_features: an id of `video_ids` the features do not hold
            raise MissingVideoError(exc.args[0] if exc.args else str(exc)) from None

    return build_index_from_records(records, out_dir, extra, ivf=ivf, nprobe=nprobe, train_size=train_size, seed=seed,
                                    progress=progress, where=str(features), kind=kind, pq=pq)


def build_index_from_records(
    records: Any,
    out_dir: str | Path,
    extra_meta: dict[str, Any] | None = None,
    ivf: int | None = None,
    nprobe: int | None = None,
    train_size: int = 100_000,
    seed: int = 0,
    progress: bool = True,
    where: str = "features",
    kind: str | None = None,
    pq: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build an index from ``records(load: bool) -> iterator of ClipFeatures`` (called twice: sizes, then data).

    Two passes so the files are streamed to disk without holding the corpus in memory (``kind``, ``ivf``, ``pq``:
    see :func:`build_index`). Killed mid-build, nothing replaces ``out_dir``: the build happens in a temporary. A video
    the second pass leaves out (non-finite features: see :func:`build_index`) is listed in ``meta["skipped"]``.

    ``out_dir`` is written under its :class:`~locvtp.files.OutputLock`, into a hidden temporary that replaces it
    at the end — only when it is absent, empty or an index this command wrote (its manifest), never a folder of
    other files or a file. Temporaries of a killed earlier run are removed first.
    """
    out_dir = Path(out_dir)
    if (ivf is not None or kind in ("ivf", "ivfpq")) and not have_faiss():
        flag = f"--kind {kind}" if kind else "--ivf"
        raise UsageError(f"{flag} needs faiss: pip install 'locvtp[search]' (or faiss-cpu)")
    with OutputLock(out_dir, "index"):
        remove_stale_temporaries(out_dir)
        _adopt_legacy_index(out_dir)
        check_replaceable_dir(out_dir, INDEX_WRITER, "moment index")  # before the work, not only at the end
        tmp = temp_path(out_dir)
        tmp.mkdir(parents=True)
        try:
            meta = _build_into(tmp, records, extra_meta, ivf, nprobe, train_size, seed, progress, where, kind, pq)
            write_manifest(tmp, INDEX_WRITER, [q.name for q in tmp.iterdir()])
            replace_dir(tmp, out_dir, INDEX_WRITER, "moment index")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return meta


def _scan_shapes(records: Any, where: str) -> tuple[int, int, list[str]]:
    """Pass 1 (shapes only): (embedding width, total clips, ids of the videos with clips), or
    :class:`IndexInputError` when widths disagree or there is nothing to index."""
    seen: list[str] = []
    total = 0
    dim = None
    for rec in records(False):
        if rec.num_clips == 0:
            continue
        if dim is None:
            dim = rec.dim
        elif rec.dim != dim:
            raise IndexInputError(f"{where}: video {rec.video_id!r} has features of width {rec.dim}, the videos "
                                  f"before it {dim}: one index holds one embedding width")
        total += rec.num_clips
        seen.append(rec.video_id)
    if dim is None or total == 0:
        raise IndexInputError(f"{where}: no clip features to index")
    return int(dim), total, seen


class _NpyStream:
    """A ``.npy`` file of a known shape written front to back by plain writes (no memory map: written pages do not
    stay mapped into the process, so a 10^8-row build's resident memory stays at one video's rows)."""

    def __init__(self, path: Path, dtype: Any, shape: tuple[int, ...]):
        self.f = open(path, "wb")
        self.dtype = np.dtype(dtype)
        np.lib.format.write_array_header_1_0(self.f, {"descr": np.lib.format.dtype_to_descr(self.dtype),
                                                      "fortran_order": False, "shape": shape})

    def write(self, arr: np.ndarray) -> None:
        self.f.write(np.ascontiguousarray(arr, dtype=self.dtype).tobytes())

    def close(self) -> None:
        self.f.close()


def _fill_rows(tmp: Path, records: Any, total: int, dim: int, progress: bool, where: str, emb_dtype: Any = np.float32
               ) -> tuple[list[str], int, dict[str, str]]:
    """Pass 2: the embeddings (``emb_dtype``) into ``tmp/embeddings.npy`` and per row its video, clip and window into
    ``tmp/row_*.npy``, streamed. Returns (videos, rows written, the videos' recorded files ``{id: source}``); when
    fewer rows than ``total`` were written the files still have ``total`` rows (the caller shrinks them)."""
    videos: list[str] = []
    sources: dict[str, str] = {}
    streams = {"embeddings": _NpyStream(tmp / "embeddings.npy", emb_dtype, (total, dim)),
               "row_video": _NpyStream(tmp / "row_video.npy", np.int32, (total,)),
               "row_clip": _NpyStream(tmp / "row_clip.npy", np.int32, (total,)),
               "row_window": _NpyStream(tmp / "row_window.npy", np.float64, (total, 2))}
    limit = float(np.finfo(emb_dtype).max)
    pos = 0
    it = records(True)
    if progress:
        from locvtp.runtime import progress as tqdm

        it = tqdm(it, desc="index", unit="video", leave=False)
    try:
        for rec in it:
            n = rec.num_clips
            if n == 0:
                continue
            if pos + n > total:
                raise IndexInputError(f"{where}: changed while being indexed")
            feats = np.asarray(rec.features)
            if limit < 1e38 and np.abs(feats).max() > limit:
                raise IndexInputError(f"{where}: video {rec.video_id!r} has feature values beyond the float16 "
                                      "range of an ivfpq index: index L2-normalised embeddings, or use --kind exact")
            streams["embeddings"].write(feats)
            streams["row_video"].write(np.full(n, len(videos), dtype=np.int32))
            streams["row_clip"].write(np.arange(n, dtype=np.int32))
            streams["row_window"].write(rec.windows)
            videos.append(rec.video_id)
            if getattr(rec, "source", None):
                sources[rec.video_id] = str(rec.source)
            pos += n
        if pos < total:  # pad to the header's shape; the caller shrinks the files to `pos` rows
            for name, st in streams.items():
                shape = (total - pos, dim) if name == "embeddings" else (total - pos, 2) if name == "row_window" else (
                    total - pos,)
                st.write(np.zeros(shape, dtype=st.dtype))
    finally:
        for st in streams.values():
            st.close()
    return videos, pos, sources


def _train_ivf(tmp: Path, total: int, dim: int, nlist: int, nprobe: int | None, train_size: int, seed: int
               ) -> tuple[int, int]:
    """A faiss IVF index over ``tmp/embeddings.npy`` written to ``tmp/ivf.faiss``; returns (nlist, nprobe)."""
    import faiss

    data = np.load(tmp / "embeddings.npy", mmap_mode="r")
    rng = np.random.default_rng(seed)
    ntrain = min(total, max(train_size, 39 * nlist))  # faiss warns below 39 points per centroid
    sample = np.ascontiguousarray(data[np.sort(rng.choice(total, ntrain, replace=False))], dtype=np.float32)
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    index.train(sample)
    for lo in range(0, total, 262144):
        index.add(np.ascontiguousarray(data[lo : lo + 262144], dtype=np.float32))
    faiss.write_index(index, str(tmp / "ivf.faiss"))
    return nlist, int(nprobe or max(1, nlist // 16))


def _resolve_kind(kind: str | None, ivf: int | None, total: int) -> str:
    """``kind`` None keeps the former flags' meaning (``--ivf N``: IVF-Flat, else exact); ``auto`` picks by size."""
    from locvtp.indexpq import KINDS, auto_kind

    if kind is None:
        return "ivf" if ivf is not None else "exact"
    if kind not in KINDS:
        raise UsageError(f"--kind {kind!r}: choose one of {', '.join(KINDS)}")
    return auto_kind(total) if kind == "auto" else kind


def _build_into(tmp: Path, records: Any, extra_meta: dict[str, Any] | None, ivf: int | None, nprobe: int | None,
                train_size: int, seed: int, progress: bool, where: str, kind: str | None = None,
                pq: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write every file of an index into the (new, empty) directory ``tmp``; returns its ``meta.json`` content.
    ``pq``: IVF-PQ options (``m``, ``opq``, ``rerank``) for kind ivfpq."""
    dim, total, seen = _scan_shapes(records, where)
    kind = _resolve_kind(kind, ivf, total)
    if kind in ("ivf", "ivfpq") and not have_faiss():
        raise UsageError(f"--kind {kind} needs faiss: pip install 'locvtp[search]' (or faiss-cpu)")
    if ivf is not None and kind != "exact" and not 1 <= int(ivf) <= total:
        raise UsageError(f"--ivf {ivf}: need 1 <= NLIST <= number of clips ({total})")
    emb_dtype = np.float16 if kind == "ivfpq" else np.float32
    videos, pos, sources = _fill_rows(tmp, records, total, dim, progress, where, emb_dtype)
    kept = set(videos)
    skipped = [v for v in seen if v not in kept]  # left out by the data pass (non-finite features)
    if pos == 0:
        raise IndexInputError(f"{where}: no clip features to index ({len(skipped)} video(s) skipped: non-finite "
                              "features)")
    if pos < total:  # rare: shrink the files to the rows written, chunk by chunk
        for name in ("embeddings", "row_video", "row_clip", "row_window"):
            _shrink_npy(tmp / f"{name}.npy", pos)
        if ivf is not None and kind != "exact" and int(ivf) > pos:
            raise UsageError(f"--ivf {ivf}: need 1 <= NLIST <= number of clips ({pos} after skipping "
                             f"{len(skipped)} video(s))")
    total = pos
    atomic_write_text(tmp / "videos.json", json.dumps(videos))
    meta: dict[str, Any] = {
        "format": INDEX_FORMAT,
        "version": INDEX_VERSION,
        "metric": "inner_product",
        "kind": kind,
        "dim": int(dim),
        "rows": int(total),
        "videos": len(videos),
        "embedding_dtype": np.dtype(emb_dtype).name,
        "nlist": None,
        "nprobe": None,
        **(extra_meta or {}),
        "skipped": [{"video_id": v, "reason": "non-finite features (NaN/inf)"} for v in skipped],
        "video_sources": sources,
    }
    if kind == "ivf":
        meta["nlist"], meta["nprobe"] = _train_ivf(tmp, total, dim, int(ivf or _default_nlist(total)), nprobe,
                                                   train_size, seed)
    elif kind == "ivfpq":
        meta["ivfpq"] = _train_ivfpq(tmp, total, dim, ivf, nprobe, train_size, seed, pq or {})
        meta["nlist"], meta["nprobe"] = meta["ivfpq"]["nlist"], meta["ivfpq"]["nprobe"]
    atomic_write_text(tmp / "meta.json", json.dumps(meta, indent=2))
    return meta


def _default_nlist(total: int) -> int:
    from locvtp.indexpq import default_nlist

    return default_nlist(total)


def _train_ivfpq(tmp: Path, total: int, dim: int, nlist: int | None, nprobe: int | None, train_size: int, seed: int,
                 pq: dict[str, Any]) -> dict[str, Any]:
    """The IVF-PQ files of :mod:`locvtp.indexpq` over ``tmp/embeddings.npy`` (float16); returns its settings."""
    from locvtp.indexpq import settings_for, train_and_fill

    ntrain = int(min(total, max(train_size, 39 * int(nlist or _default_nlist(total)))))
    s = settings_for(total, dim, nlist, nprobe, pq.get("rerank"), pq.get("m"), pq.get("opq", False), ntrain)
    train_and_fill(tmp, tmp / "embeddings.npy", total, dim, s, train_size, seed)
    return s.to_json()


def _shrink_npy(path: Path, rows: int, chunk: int = 262144) -> None:
    """Keep the first ``rows`` rows of a ``.npy`` file (copied in chunks: memory stays bounded)."""
    src = np.load(path, mmap_mode="r")
    with atomic_path(path, suffix=".npy") as tmp:
        dst = np.lib.format.open_memmap(tmp, mode="w+", dtype=src.dtype, shape=(rows, *src.shape[1:]))
        for lo in range(0, rows, chunk):
            dst[lo : lo + chunk] = src[lo : min(rows, lo + chunk)]
        dst.flush()
        del dst
    del src


class MomentIndex:
    """A loaded index. ``backend``: "auto" (faiss if installed), "faiss" or "numpy".

    ``single_query_threads``: OpenMP threads faiss may use for a *single* query (default 1). Measured on a shared
    2-core machine, one thread answered an exact 1e6-clip query in 45-71 ms and two threads in 208-304 ms (the
    parallel single-query path pays for thread synchronisation, badly so when the cores are busy); batches of
    queries use faiss' configured thread count. ``None`` leaves faiss' setting alone.
    """

    def __init__(self, path: str | Path, backend: str = "auto", nprobe: int | None = None,
                 single_query_threads: int | None = 1, rerank: int | None = None):
        self.path = Path(path)
        self.single_query_threads = single_query_threads
        meta_path = self.path / "meta.json"
        if not meta_path.is_file():
            raise IndexError_(f"{self.path}: not a moment index (no meta.json); build one with `locvtp index`")
        try:
            self.meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise IndexError_(f"{meta_path}: invalid JSON: {exc}") from None
        if not isinstance(self.meta, dict):
            raise IndexError_(f"{meta_path}: not a moment index meta.json (expected a JSON object)")
        if self.meta.get("format") != INDEX_FORMAT or self.meta.get("version") not in READABLE_VERSIONS:
            raise IndexError_(f"{meta_path}: unknown index format {self.meta.get('format')!r} v{self.meta.get('version')}")
        absent = [k for k in ("rows", "kind") if k not in self.meta]
        if absent:
            raise IndexError_(f"{meta_path}: incomplete index meta.json (no {', '.join(absent)})")
        try:
            self.embeddings = np.load(self.path / "embeddings.npy", mmap_mode="r", allow_pickle=False)
            # memory-mapped too: 24 bytes a row would be 2.4 GB of RAM at 10^8 rows; a search reads a pool's rows
            self.row_video = np.load(self.path / "row_video.npy", mmap_mode="r", allow_pickle=False)
            self.row_clip = np.load(self.path / "row_clip.npy", mmap_mode="r", allow_pickle=False)
            self.row_window = np.load(self.path / "row_window.npy", mmap_mode="r", allow_pickle=False)
            self.videos = json.loads((self.path / "videos.json").read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            raise IndexError_(f"{self.path}: incomplete or corrupt index: {exc}") from None
        if getattr(self.embeddings, "ndim", 0) != 2:
            raise IndexError_(f"{self.path / 'embeddings.npy'}: expected a [rows, dim] matrix, got shape "
                              f"{tuple(self.embeddings.shape)}")
        m = self.embeddings.shape[0]
        if not (len(self.row_video) == len(self.row_clip) == len(self.row_window) == m == self.meta["rows"]):
            raise IndexError_(f"{self.path}: row files disagree with embeddings.npy ({m} rows)")
        self.dim = int(self.embeddings.shape[1])
        if backend not in ("auto", "faiss", "numpy"):
            raise UsageError(f"backend must be auto|faiss|numpy, got {backend!r}")
        if backend == "auto":
            backend = "faiss" if have_faiss() else "numpy"
        if backend == "faiss" and not have_faiss():
            raise UsageError("--backend faiss: faiss is not installed (pip install faiss-cpu), use --backend numpy")
        if nprobe is not None and int(nprobe) < 1:
            raise UsageError(f"nprobe must be >= 1, got {nprobe}")
        if rerank is not None and int(rerank) < 1:
            raise UsageError(f"rerank must be >= 1, got {rerank}")
        self.kind = self.meta["kind"]
        src = self.meta.get("video_sources")
        self.sources: dict[str, str] = {str(k): str(v) for k, v in src.items()} if isinstance(src, dict) else {}
        if self.kind in ("ivf", "ivfpq") and backend == "numpy":
            warnings.warn(f"{self.path}: {self.kind.upper()} index searched without faiss: falling back to exact "
                          "numpy search")
        self.backend = backend
        self._faiss = None
        pq = self.meta.get("ivfpq") if isinstance(self.meta.get("ivfpq"), dict) else {}
        # IVF-PQ: the candidates fetched from the codes and re-scored exactly on the fp16 vectors
        self.rerank = int(rerank or pq.get("rerank") or 0)
        if backend == "faiss":
            import faiss

            if self.kind == "ivfpq":
                from locvtp.indexpq import open_ivfpq

                try:
                    self._faiss = open_ivfpq(self.path, int(nprobe or self.meta.get("nprobe") or 1))
                except RuntimeError as exc:
                    raise IndexError_(f"{self.path / 'ivfpq.faiss'}: incomplete or corrupt index: "
                                      f"{str(exc).strip().splitlines()[-1] if str(exc).strip() else exc}") from None
            elif self.kind == "ivf":
                self._faiss = faiss.read_index(str(self.path / "ivf.faiss"))
                self._faiss.nprobe = int(nprobe or self.meta.get("nprobe") or 1)
            else:
                self._faiss = faiss.IndexFlatIP(self.dim)
                for lo in range(0, m, 262144):
                    self._faiss.add(np.ascontiguousarray(self.embeddings[lo : lo + 262144], dtype=np.float32))

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    def search_clips(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Best ``k`` clip rows per query: (scores float64 [n, k'], rows int64 [n, k'], -1 = none), where
        ``k' = min(k, len(self))``: asking for more rows than the index holds cannot allocate more than it holds
        (a ``k`` of 10 million on a 52-clip index used to try to allocate 95 GiB)."""
        q = _as_queries(queries, self.dim)
        k = int(k)
        if k < 1:
            raise UsageError(f"k must be >= 1, got {k}")
        k = min(k, len(self))
        if self._faiss is None:
            return numpy_topk(self.embeddings, q, k)
        fetch = min(max(k, self.rerank), len(self))  # IVF-PQ: the codes' best `rerank`, re-scored exactly
        with runtime.threads(self.single_query_threads if q.shape[0] == 1 else None, torch=False, faiss=True):
            _, rows = self._faiss.search(q, fetch)
        if rows.shape[1] < k:
            rows = np.concatenate([rows, np.full((rows.shape[0], k - rows.shape[1]), -1)], axis=1)
        scores, rows = rescore(self.embeddings, q, rows)
        return scores[:, :k], rows[:, :k]

    def effective_pool(self, top_k: int, pool: int | None = None) -> tuple[int, int]:
        """(top_k, pool) as :meth:`search_moments` uses them: capped at the index size, pool by default
        max(50, 10*top_k)."""
        top_k = min(int(top_k), len(self))
        return top_k, min(int(pool or max(50, 10 * top_k)), len(self))

    def shortfall_warning(self, top_k: int, found: int, pool: int | None = None, pool_flag: str = "pool"
                          ) -> str | None:
        """Why a query got ``found`` < ``top_k`` moments (None when it got them all): the index holds fewer, or
        the pool of best clips merged into fewer (a larger ``pool`` may find more)."""
        if found >= int(top_k):
            return None
        _, used = self.effective_pool(top_k, pool)
        if used >= len(self):
            return (f"asked for {int(top_k)} moments, only {found} exist: the index holds {len(self)} clips of "
                    f"{len(self.videos)} videos, and adjacent matching clips merge into one moment")
        return (f"asked for {int(top_k)} moments, only {found} were merged from the {used} best clips "
                f"({pool_flag}): a larger {pool_flag} may find more")

    def search_moments(
        self, queries: np.ndarray, top_k: int = 10, pool: int | None = None, gap: int = 0, tolerance: float = 0.5
    ) -> list[list[Moment]]:
        """Top ``top_k`` moments per query, merged (:func:`merge_moments`) from the ``pool`` best clips
        (default max(50, 10*top_k)); ``top_k`` and ``pool`` are capped at the index size."""
        if int(top_k) < 1:
            raise UsageError(f"top_k must be >= 1, got {top_k}")
        if pool is not None and int(pool) < 1:
            raise UsageError(f"pool must be >= 1, got {pool}")
        _check_merge_args(gap, tolerance)
        top_k, pool = self.effective_pool(top_k, pool)
        scores, rows = self.search_clips(queries, pool)
        return [
            merge_moments(rows[i], scores[i], self.row_video, self.row_clip, self.row_window, self.videos, top_k,
                          gap, tolerance)
            for i in range(rows.shape[0])
        ]
