"""The IVF-PQ moment index (locvtp.indexpq): same top moment as exact search on the tiny world's queries, re-ranking
never worse than plain PQ, memory-mapped lists that open in a later process and from a moved directory, a killed
build that leaves no half index, format-1 indexes still open, and `search` / `serve` unchanged on top of it."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from inference_helpers import caption_texts

faiss = pytest.importorskip("faiss")
SRC = str(Path(__file__).resolve().parents[1] / "src")


def _clustered(n_videos: int, clips: int, dim: int, seed: int = 0):
    """records(load) factory of a clustered corpus (videos of similar clips around topic means), and its matrix."""
    from locvtp.featurestore.record import ClipFeatures

    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((20, dim))
    feats = []
    for v in range(n_videos):
        m = topics[rng.integers(20)] + 0.8 * rng.standard_normal(dim)
        x = m + 0.5 * rng.standard_normal((clips, dim))
        feats.append((x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32))

    def records(load: bool):
        for v, f in enumerate(feats):
            st = np.arange(clips, dtype=np.float64)
            yield ClipFeatures(f"v{v:04d}", f if load else None, np.stack([st, st + 1], 1) if load else None, 0.0,
                               float(clips), shape=(clips, dim))

    return records, np.concatenate(feats)


@pytest.fixture(scope="module")
def world_indexes(tiny_world, tiny_checkpoint, tmp_path_factory):
    """Features of the tiny world's videos, an exact and an ivfpq index of them (built by the CLI)."""
    from locvtp.cli import main as cli

    root = tmp_path_factory.mktemp("ivfpq_world")
    assert cli(["extract", "--checkpoint", str(tiny_checkpoint), "--videos", str(tiny_world / "videos"),
                "--out", str(root / "f.h5"), "--no-progress", "--threads", "1"]) == 0
    assert cli(["index", "--features", str(root / "f.h5"), "--out", str(root / "exact"), "--no-progress"]) == 0
    assert cli(["index", "--features", str(root / "f.h5"), "--out", str(root / "pq"), "--kind", "ivfpq",
                "--no-progress"]) == 0
    return root


def test_ivfpq_same_top_moment_as_exact_on_the_world_queries(world_indexes, tiny_world, tiny_checkpoint):
    from locvtp.index import MomentIndex
    from locvtp.predictor import LocVTPPredictor

    meta = json.loads((world_indexes / "pq" / "meta.json").read_text())
    assert meta["kind"] == "ivfpq" and meta["version"] == 2 and meta["embedding_dtype"] == "float16"
    assert set(meta["ivfpq"]) == {"nlist", "m", "nbits", "opq", "nprobe", "rerank"}
    assert meta["nprobe"] == meta["ivfpq"]["nprobe"] < meta["nlist"] or meta["nlist"] <= 16
    pred = LocVTPPredictor.from_checkpoint(tiny_checkpoint, threads=1)
    queries = sorted(set(caption_texts(tiny_world)))[:40]
    exact = pred.search_index(MomentIndex(world_indexes / "exact"), queries, top_k=1).results
    approx = pred.search_index(MomentIndex(world_indexes / "pq"), queries, top_k=1).results
    assert len(exact) == len(approx) == len(queries)
    for e, a in zip(exact, approx):
        em, am = e.moments[0], a.moments[0]
        assert (em.video_id, em.best_clip, em.start, em.end) == (am.video_id, am.best_clip, am.start, am.end)
        assert abs(em.score - am.score) < 2e-3  # re-scored on float16 copies of the vectors


def test_cli_search_and_serve_use_the_ivfpq_index(world_indexes, tiny_checkpoint, capsys, tmp_path):
    """No API change: `locvtp search` prints the same JSON fields; `/api/search` answers from the ivfpq index."""
    from locvtp.cli import main as cli
    from test_serve_api import jcall, start_server, stop_server

    q = "the red circle moves left"
    out = {}
    for name in ("exact", "pq"):
        capsys.readouterr()
        assert cli(["search", "--index", str(world_indexes / name), "--checkpoint", str(tiny_checkpoint),
                    "--top-k", "3", q]) == 0
        out[name] = json.loads(capsys.readouterr().out.strip())
    assert out["exact"].keys() == out["pq"].keys()
    assert out["pq"]["moments"][0]["video_id"] == out["exact"]["moments"][0]["video_id"]
    proc, base = start_server(["--checkpoint", str(tiny_checkpoint), "--index", str(world_indexes / "pq")],
                              tmp_path / "server.log")
    try:
        status, res = jcall(base, "POST", "/api/search", {"query": q, "top_k": 3})
    finally:
        stop_server(proc)
    assert status == 200
    got = res["results"][0]["moments"] if "results" in res else res["moments"]
    assert [m["video_id"] for m in got][:1] == [out["exact"]["moments"][0]["video_id"]]


def test_rerank_recall_not_below_plain_pq_and_scores_are_exact(tmp_path):
    from locvtp.index import MomentIndex, build_index_from_records

    records, emb = _clustered(150, 40, 32)
    build_index_from_records(records, tmp_path / "pq", kind="ivfpq", ivf=32, nprobe=8, progress=False,
                             pq={"m": 4, "rerank": 200})
    idx = MomentIndex(tmp_path / "pq")
    rng = np.random.default_rng(1)
    q = rng.standard_normal((30, 32)).astype(np.float32) * 0.3 + emb[rng.choice(len(emb), 30)]
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    truth = np.argsort(-(q.astype(np.float64) @ emb.T.astype(np.float64)), axis=1, kind="stable")[:, :10]
    _, plain = idx._faiss.search(q, 10)  # the codes' own top-10, no re-ranking
    scores, reranked = idx.search_clips(q, 10)
    rec = lambda got: np.mean([len(set(g) & set(t)) / 10 for g, t in zip(got, truth)])  # noqa: E731
    assert rec(reranked) >= rec(plain)
    assert rec(reranked) >= 0.9 and rec(plain) < 0.9  # a 4-byte code alone is coarse; re-ranking recovers it
    emb16 = np.load(tmp_path / "pq" / "embeddings.npy")
    for i in range(3):  # plain-loop reference of the re-scored values on the float16 vectors
        for j in range(10):
            ref = sum(float(a) * float(b) for a, b in zip(emb16[reranked[i, j]], q[i]))
            assert scores[i, j] == pytest.approx(ref, abs=1e-9)


def test_lists_are_memory_mapped_and_open_after_the_build_process_exits(tmp_path):
    code = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {SRC!r}); sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_ivfpq import _clustered
        from locvtp.index import build_index_from_records
        build_index_from_records(_clustered(60, 30, 16)[0], {str(tmp_path / 'pq')!r}, kind="ivfpq", ivf=8,
                                 progress=False)
    """)
    subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    shutil.copytree(tmp_path / "pq", tmp_path / "moved")  # the lists are found beside the index, wherever it is
    shutil.rmtree(tmp_path / "pq")
    from locvtp.index import MomentIndex

    idx = MomentIndex(tmp_path / "moved")
    lists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(idx._faiss).invlists)
    assert isinstance(lists, faiss.OnDiskInvertedLists) and lists.read_only
    assert Path(lists.filename) == (tmp_path / "moved" / "ivfpq.ivfdata").resolve()
    assert isinstance(idx.embeddings, np.memmap) and idx.embeddings.dtype == np.float16
    emb = np.load(tmp_path / "moved" / "embeddings.npy").astype(np.float32)
    _, rows = idx.search_clips(emb[:5], 1)
    assert rows[:, 0].tolist() == [0, 1, 2, 3, 4]


def test_killed_build_leaves_no_half_index(tmp_path):
    """SIGKILL while the lists are merged: the previous index stays whole; the next build removes the leftovers."""
    from locvtp.index import MomentIndex, build_index_from_records

    records, _ = _clustered(40, 20, 16)
    build_index_from_records(records, tmp_path / "pq", progress=False)  # an exact index at first
    code = textwrap.dedent(f"""
        import os, signal, sys; sys.path.insert(0, {SRC!r}); sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_ivfpq import _clustered
        import locvtp.indexpq as pq
        from locvtp.index import build_index_from_records
        pq._merge_shards = lambda *a: os.kill(os.getpid(), signal.SIGKILL)
        build_index_from_records(_clustered(40, 20, 16)[0], {str(tmp_path / 'pq')!r}, kind="ivfpq", ivf=4,
                                 progress=False)
    """)
    proc = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == -9
    from locvtp.files import stale_temporaries

    assert MomentIndex(tmp_path / "pq").kind == "exact"
    assert len(stale_temporaries(tmp_path / "pq")) == 1  # the killed build's hidden temporary, nothing else
    build_index_from_records(records, tmp_path / "pq", kind="ivfpq", ivf=4, progress=False)
    assert MomentIndex(tmp_path / "pq").kind == "ivfpq"
    assert stale_temporaries(tmp_path / "pq") == []


def test_too_few_clips_for_codebooks_is_a_usage_error(tmp_path):
    from locvtp.errors import UsageError
    from locvtp.index import build_index_from_records

    with pytest.raises(UsageError, match="too few"):
        build_index_from_records(_clustered(3, 10, 16)[0], tmp_path / "pq", kind="ivfpq", progress=False)
    assert not (tmp_path / "pq").exists()
    build_index_from_records(_clustered(4, 10, 16)[0], tmp_path / "pq", kind="ivfpq", progress=False)  # 40: ok


def test_version_1_index_still_opens(tmp_path):
    from locvtp.index import MomentIndex, build_index_from_records

    records, emb = _clustered(20, 10, 16)
    build_index_from_records(records, tmp_path / "old", progress=False)
    meta = json.loads((tmp_path / "old" / "meta.json").read_text())
    for key in ("embedding_dtype",):  # what format 1 did not have
        meta.pop(key)
    meta["version"] = 1
    (tmp_path / "old" / "meta.json").write_text(json.dumps(meta))
    _, rows = MomentIndex(tmp_path / "old").search_clips(emb[7], 1)
    assert rows[0, 0] == 7


def test_auto_kind_and_defaults():
    from locvtp.indexpq import AUTO_EXACT_MAX_ROWS, auto_kind, default_m, default_nlist, default_nprobe

    assert auto_kind(AUTO_EXACT_MAX_ROWS) == "exact" and auto_kind(AUTO_EXACT_MAX_ROWS + 1) == "ivfpq"
    assert [default_nlist(n) for n in (1000, 10**6, 10**7, 10**8)] == [16, 512, 2048, 8192]
    assert default_m(256) == 32 and default_m(64) == 8 and 100 % default_m(100) == 0
    assert [default_nprobe(n, r) for n, r in ((8, 400), (16, 700), (512, 10**6), (2048, 10**7), (8192, 10**8))] == [
        8, 16, 256, 103, 41]
