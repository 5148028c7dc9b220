"""Moment index and search: exact top-k vs a brute-force loop, faiss vs the numpy fallback, moment merging."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from inference_helpers import make_checkpoint

try:  # faiss is the optional [search] extra: only the tests that compare against it need it
    import faiss  # noqa: F401

    HAVE_FAISS = True
except ImportError:
    HAVE_FAISS = False
needs_faiss = pytest.mark.skipif(not HAVE_FAISS, reason="faiss not installed (pip install 'locvtp[search]')")


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _write_features(path: Path, lengths: list[int], dim: int = 32, seed: int = 0) -> dict[str, np.ndarray]:
    """A feature file written by the extract writer itself (random unit clip embeddings)."""
    from locvtp.featurestore import ClipFeatures, H5Writer

    rng = np.random.default_rng(seed)
    settings = {"embedding": "joint", "clip_seconds": 1.0, "stride_seconds": 1.0, "frames_per_clip": 4,
                "frame_size": 32, "model": "test", "checkpoint_sha256": "abc"}
    w = H5Writer(path, settings, path.with_name("fail.jsonl"))
    feats = {}
    for i, n in enumerate(lengths):
        vid = f"v{i:03d}"
        f = _unit(rng.normal(size=(n, dim)))
        starts = np.arange(n, dtype=np.float64)
        w.add(ClipFeatures(vid, f, np.stack([starts, starts + 1.0], 1), 8.0, float(n)))
        feats[vid] = f
    w.finish(set(feats))
    return feats


def _brute_force(emb: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference: a plain loop over rows, float64 dot products, sorted by (score desc, row asc)."""
    scored = []
    for r in range(emb.shape[0]):
        s = 0.0
        for d in range(emb.shape[1]):
            s += float(emb[r, d]) * float(q[d])
        scored.append((-s, r))
    scored.sort()
    top = scored[:k]
    return np.array([-s for s, _ in top]), np.array([r for _, r in top])


def test_numpy_topk_equals_brute_force():
    from locvtp.index import numpy_topk

    rng = np.random.default_rng(1)
    emb = _unit(rng.normal(size=(300, 8)))
    q = _unit(rng.normal(size=(3, 8)))
    scores, rows = numpy_topk(emb, q, k=7, chunk_rows=64)  # several chunks
    for i in range(3):
        ref_s, ref_r = _brute_force(emb, q[i], 7)
        np.testing.assert_array_equal(rows[i], ref_r)
        np.testing.assert_allclose(scores[i], ref_s, rtol=0, atol=1e-12)
    # k larger than the corpus: every row, then empty slots
    s, r = numpy_topk(emb[:5], q[:1], k=8)
    assert sorted(r[0, :5].tolist()) == list(range(5)) and (r[0, 5:] == -1).all() and np.isinf(s[0, 5:]).all()


@needs_faiss
def test_faiss_exact_and_numpy_fallback_identical(tmp_path):
    from locvtp.index import MomentIndex, build_index

    _write_features(tmp_path / "f.h5", [30, 1, 57, 12, 80], dim=32)
    build_index(tmp_path / "f.h5", tmp_path / "idx", progress=False)
    a = MomentIndex(tmp_path / "idx", backend="faiss")
    b = MomentIndex(tmp_path / "idx", backend="numpy")
    q = _unit(np.random.default_rng(2).normal(size=(6, 32)))
    sa, ra = a.search_clips(q, 25)
    sb, rb = b.search_clips(q, 25)
    np.testing.assert_array_equal(ra, rb)
    np.testing.assert_array_equal(sa, sb)  # same rescoring: bit-identical
    ma, mb = a.search_moments(q, top_k=5), b.search_moments(q, top_k=5)
    assert [[m.to_json() for m in x] for x in ma] == [[m.to_json() for m in x] for x in mb]
    # and both equal the brute force over the stored embeddings
    emb = np.load(tmp_path / "idx" / "embeddings.npy")
    ref_s, ref_r = _brute_force(emb, q[0], 25)
    np.testing.assert_array_equal(ra[0], ref_r)


@needs_faiss
def test_ivf_probing_every_list_is_exact(tmp_path):
    from locvtp.index import MomentIndex, build_index

    _write_features(tmp_path / "f.h5", [40] * 10, dim=16)
    meta = build_index(tmp_path / "f.h5", tmp_path / "ivf", ivf=8, progress=False)
    assert meta["kind"] == "ivf" and meta["nlist"] == 8 and (tmp_path / "ivf" / "ivf.faiss").is_file()
    build_index(tmp_path / "f.h5", tmp_path / "exact", progress=False)
    q = _unit(np.random.default_rng(3).normal(size=(4, 16)))
    exact = MomentIndex(tmp_path / "exact").search_clips(q, 10)
    full = MomentIndex(tmp_path / "ivf", nprobe=8).search_clips(q, 10)
    np.testing.assert_array_equal(exact[1], full[1])
    approx = MomentIndex(tmp_path / "ivf", nprobe=1).search_clips(q, 10)
    recall = np.mean([len(set(exact[1][i]) & set(approx[1][i])) / 10 for i in range(4)])
    assert 0.0 < recall <= 1.0
    with pytest.warns(UserWarning, match="falling back to exact"):
        fb = MomentIndex(tmp_path / "ivf", backend="numpy")
    np.testing.assert_array_equal(fb.search_clips(q, 10)[1], exact[1])


def _merge_reference(rows, scores, row_video, row_clip, row_window, videos, top_k, gap, tol):
    """Set-based version of merge_moments straight from its docstring (looks rows up by search, not by offset)."""
    hits = {(int(row_video[r]), int(row_clip[r])): (float(s), int(r)) for r, s in zip(rows, scores) if r >= 0}
    floor = min(s for s, _ in hits.values())
    taken: set = set()
    out = []
    for (v, c), (s, _) in sorted(hits.items(), key=lambda kv: (-kv[1][0], kv[1][1])):
        if (v, c) in taken:
            continue
        thr = floor + (1.0 - tol) * (s - floor)
        taken.add((v, c))
        edges = []
        for step in (-1, 1):
            cur = c
            while True:
                cands = [cur + step * d for d in range(1, gap + 2)
                         if (v, cur + step * d) in hits and (v, cur + step * d) not in taken
                         and hits[(v, cur + step * d)][0] >= thr]
                if not cands:
                    break
                cur = cands[0]  # the nearest qualifying clip
                taken.add((v, cur))
            edges.append(cur)
        row_of = {c2: int(np.flatnonzero((row_video == v) & (row_clip == c2))[0]) for c2 in edges}
        out.append((videos[v], float(row_window[row_of[edges[0]], 0]), float(row_window[row_of[edges[1]], 1]), s,
                    edges[0], edges[1], c))
        if len(out) == top_k:
            break
    return out


@pytest.mark.parametrize("gap,tol", [(0, 0.5), (1, 0.5), (0, 1.0), (2, 0.0)])
def test_merge_moments_matches_reference(gap, tol):
    from locvtp.index import merge_moments

    rng = np.random.default_rng(4)
    lengths = [6, 9, 4]
    row_video = np.concatenate([[i] * n for i, n in enumerate(lengths)])
    row_clip = np.concatenate([np.arange(n) for n in lengths])
    row_window = np.stack([row_clip * 0.5, row_clip * 0.5 + 1.0], 1)  # overlapping windows (stride 0.5)
    videos = ["a", "b", "c"]
    for _ in range(30):
        rows = rng.choice(len(row_video), size=10, replace=False)
        scores = rng.normal(size=10).round(1)  # ties happen
        got = merge_moments(rows, scores, row_video, row_clip, row_window, videos, top_k=4, gap=gap, tolerance=tol)
        ref = _merge_reference(rows, scores, row_video, row_clip, row_window, videos, 4, gap, tol)
        assert [(m.video_id, m.start, m.end, m.score, m.first_clip, m.last_clip, m.best_clip) for m in got] == ref
    # every clip hit ends up in exactly one moment when nothing is cut by top_k and tolerance is 1
    rows = np.arange(len(row_video))
    ms = merge_moments(rows, rng.normal(size=rows.size), row_video, row_clip, row_window, videos, top_k=100,
                       tolerance=1.0)
    assert sorted((m.video_id, m.first_clip, m.last_clip) for m in ms) == [("a", 0, 5), ("b", 0, 8), ("c", 0, 3)]


def test_search_finds_planted_moment(tmp_path):
    from locvtp.index import MomentIndex, build_index

    feats = _write_features(tmp_path / "f.h5", [50] * 8, dim=32)
    target = _unit(np.random.default_rng(9).normal(size=32))
    # plant the query in clips 20..24 of video v005 (rewrite that video's features)
    feats["v005"][20:25] = _unit(target + 0.05 * np.random.default_rng(10).normal(size=(5, 32)))
    from locvtp.featurestore import ClipFeatures, H5Writer

    settings = {"embedding": "joint", "clip_seconds": 1.0, "stride_seconds": 1.0, "frames_per_clip": 4,
                "frame_size": 32, "model": "test", "checkpoint_sha256": "abc"}
    w = H5Writer(tmp_path / "g.h5", settings, tmp_path / "g.fail.jsonl")
    for vid, f in feats.items():
        st = np.arange(len(f), dtype=np.float64)
        w.add(ClipFeatures(vid, f, np.stack([st, st + 1], 1), 8.0, float(len(f))))
    w.finish(set(feats))
    build_index(tmp_path / "g.h5", tmp_path / "idx", progress=False)
    (top, *_), = MomentIndex(tmp_path / "idx").search_moments(target, top_k=3)
    assert (top.video_id, top.start, top.end) == ("v005", 20.0, 25.0)


def test_index_errors(tmp_path):
    from locvtp.index import IndexError_, MomentIndex, build_index

    with pytest.raises(IndexError_, match="no meta.json"):
        MomentIndex(tmp_path)
    _write_features(tmp_path / "f.h5", [5, 5], dim=8)
    build_index(tmp_path / "f.h5", tmp_path / "idx", progress=False)
    (tmp_path / "idx" / "row_clip.npy").unlink()
    with pytest.raises(IndexError_, match="incomplete or corrupt"):
        MomentIndex(tmp_path / "idx")
    with pytest.raises(ValueError, match="NLIST" if HAVE_FAISS else "faiss"):
        build_index(tmp_path / "f.h5", tmp_path / "idx2", ivf=100, progress=False)
    assert not (tmp_path / "idx2").exists()  # nothing half-written


def test_cli_index_and_search_end_to_end(tiny_world, tmp_path, capsys):
    from locvtp.commands.extract import main as extract_main
    from locvtp.cli import main as cli

    ck = make_checkpoint(tiny_world, tmp_path / "ckpt")
    vids = tmp_path / "list.txt"
    vids.write_text("\n".join(str(p) for p in sorted((tiny_world / "videos").glob("grd_*.mp4"))))
    assert extract_main(["--checkpoint", str(ck), "--videos", str(vids), "--out", str(tmp_path / "f.h5"),
                         "--no-progress"]) == 0
    assert cli(["index", "--features", str(tmp_path / "f.h5"), "--out", str(tmp_path / "idx"), "--no-progress"]) == 0
    capsys.readouterr()
    assert cli(["search", "--index", str(tmp_path / "idx"), "--checkpoint", str(ck), "--top-k", "4",
                        "the red circle moves left", "a blue square grows"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    for ln in lines:
        res = json.loads(ln)
        ms = res["moments"]
        assert 1 <= len(ms) <= 4
        assert all(m["start"] < m["end"] for m in ms)
        assert [m["score"] for m in ms] == sorted((m["score"] for m in ms), reverse=True)
    # an index built from another checkpoint's features is refused
    other = make_checkpoint(tiny_world, tmp_path / "other", seed=1)
    assert cli(["search", "--index", str(tmp_path / "idx"), "--checkpoint", str(other), "query"]) == 1
    assert "embedding spaces differ" in capsys.readouterr().err


def test_index_a_subset_of_videos(tmp_path):
    """`video_ids` / `--videos`: only the listed videos are indexed (an evaluation split of a larger extraction);
    the rows equal those of an index over a file that holds just those videos."""
    from locvtp.cli import main as cli
    from locvtp.index import MomentIndex, build_index

    feats = _write_features(tmp_path / "f.h5", [4, 6, 3, 5], dim=8)
    build_index(tmp_path / "f.h5", tmp_path / "sub", progress=False, video_ids=["v003", "v001"])
    idx = MomentIndex(tmp_path / "sub")
    assert idx.videos == ["v001", "v003"] and len(idx) == 6 + 5
    np.testing.assert_allclose(idx.embeddings[:6], feats["v001"], rtol=1e-6)
    np.testing.assert_allclose(idx.embeddings[6:], feats["v003"], rtol=1e-6)
    with pytest.raises(KeyError, match=r"f\.h5: no video 'v009'"):
        build_index(tmp_path / "f.h5", tmp_path / "bad", progress=False, video_ids=["v000", "v009"])
    assert not (tmp_path / "bad").exists()
    (tmp_path / "ids.txt").write_text("# the held-out split\nv002\n\nv000\n")
    assert cli(["index", "--features", str(tmp_path / "f.h5"), "--out", str(tmp_path / "cli"), "--videos",
                       str(tmp_path / "ids.txt"), "--no-progress"]) == 0
    assert MomentIndex(tmp_path / "cli").videos == ["v000", "v002"]
    (tmp_path / "missing.txt").write_text("v001\nv042\n")
    assert cli(["index", "--features", str(tmp_path / "f.h5"), "--out", str(tmp_path / "cli3"), "--videos",
                       str(tmp_path / "missing.txt"), "--no-progress"]) == 1
    assert not (tmp_path / "cli3").exists()
    (tmp_path / "empty.txt").write_text("# nothing\n")
    assert cli(["index", "--features", str(tmp_path / "f.h5"), "--out", str(tmp_path / "cli2"), "--videos",
                       str(tmp_path / "empty.txt"), "--no-progress"]) == 2  # a usage mistake
