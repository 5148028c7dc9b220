"""Flat scores are flat (issue 26, item 2): clip scores equal up to the embeddings' rounding are treated as
exactly equal wherever a window is chosen -- `locvtp ground`, `LocVTPPredictor.ground` (the API and the page) and
zero-shot evaluation -- with the documented warning, instead of standardizing the last bits into a ±z curve and
a confident top window."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cli_helpers import run_cli

FAST = settings(max_examples=150, deadline=None)
FLAT_WARNING = ("all {n} clips score the same for this query (a still or blank video?): every window scores 0 and "
                "the windows are in the tie order (earliest start first, then shortest), not ranked by the query")


def _flat_reference(scores, dim, precision, scale=None):
    """The rule written out with plain loops: spread ≤ 6·√D·eps(precision)·max_i scale_i."""
    lo = hi = float(scores[0])
    for s in scores:
        lo, hi = min(lo, float(s)), max(hi, float(s))
    ref = 0.0
    for i, s in enumerate(scores):
        ref = max(ref, abs(float(s)) if scale is None else abs(float(scale[i])))
    ref = max(ref, np.finfo(np.float64).tiny)
    return hi - lo <= 6.0 * math.sqrt(dim) * float(np.finfo(precision).eps) * ref


def standardize_naive(x: np.ndarray) -> np.ndarray:
    """What the relevance used to be: plain z-scores, which blow rounding noise up to unit scale."""
    return (x - x.mean()) / x.std()


def _ulps(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """float32 ``x`` moved by ``k`` ulps (integers, any sign) along the float32 grid."""
    x = np.asarray(x, np.float32)
    return x + np.asarray(k, np.float32) * np.spacing(np.abs(x)).astype(np.float32)


# ------------------------------------------------------------------------------------------------ the rule
def test_is_flat_matches_a_plain_loop_reference():
    from locvtp.localize import is_flat

    rng = np.random.default_rng(0)
    cases = 0
    for _ in range(300):
        n, dim = int(rng.integers(1, 12)), int(rng.integers(1, 1025))
        precision = [np.float16, np.float32, np.float64][int(rng.integers(3))]
        level = rng.normal()
        eps = float(np.finfo(precision).eps)
        spread = 6.0 * math.sqrt(dim) * eps * abs(level) * rng.choice([0.0, 0.3, 0.9, 1.1, 3.0, 1e3])
        s = level + spread * rng.uniform(-0.5, 0.5, size=n)
        scale = np.abs(rng.normal(size=n)) if rng.random() < 0.5 else None
        assert bool(is_flat(s, dim, precision, scale)) == _flat_reference(s, dim, precision, scale), (s, dim)
        cases += 1
    mat = rng.normal(size=(7, 5)) * np.array([0, 1e-12, 1e-3, 1, 0])  # columns: flat, flat, real, real, flat
    mat += 0.5
    got = is_flat(mat, 64, np.float32, axis=0)
    assert got.tolist() == [_flat_reference(mat[:, k], 64, np.float32) for k in range(5)] == [
        True, True, False, False, True]
    assert got.tolist() == is_flat(mat.T, 64, np.float32, axis=1).tolist()
    assert not is_flat(np.array([0.5, np.nan]), 64) and bool(is_flat(np.zeros(4), 64)) and cases == 300


def test_the_tolerance_follows_the_embeddings_precision_not_the_scores_dtype():
    from locvtp.localize import clip_relevance, is_flat, score_precision

    s = np.array([0.5, 0.5 + 2e-6])  # float64 scores, 17 float32 ulps apart
    assert is_flat(s, 64, np.float32) and not is_flat(s, 64, np.float64)
    assert score_precision(np.zeros(2, np.float32), np.zeros(2)) == np.float32
    assert score_precision(np.zeros(2, np.float16), np.zeros(2, np.float32)) == np.float16
    assert score_precision(np.zeros(2, np.int64)) == np.float64
    # A spread of 5e-4 is real in float32 and rounding in float16: the same curve in both precisions.
    rng = np.random.default_rng(1)
    y = rng.normal(size=64)
    y /= np.linalg.norm(y)
    base = rng.normal(size=64)
    base /= np.linalg.norm(base)
    clips = np.stack([base + t * 5e-4 * y for t in (0, 1, 0, 1)])
    assert not clip_relevance(clips.astype(np.float32), y.astype(np.float32)[None])[1][0]
    assert clip_relevance(clips.astype(np.float16), y.astype(np.float32)[None])[1][0]


@FAST
@given(dim=st.integers(2, 1024), level=st.floats(-1, 1).filter(lambda v: abs(v) > 1e-3), n=st.integers(2, 40),
       seed=st.integers(0, 2**31 - 1))
def test_a_constant_curve_with_float32_rounding_noise_is_always_flat(dim, level, n, seed):
    """Entries of a constant float32 curve moved by up to 3 ulps (≤ 4 after the move's own rounding across a
    power of two): a spread ≤ 8 ulp ≤ 8·eps·|level| ≤ 6·√D·eps·|level| for every D ≥ 2."""
    from locvtp.localize import is_flat

    rng = np.random.default_rng(seed)
    curve = _ulps(np.full(n, level, np.float32), rng.integers(-3, 4, size=n))
    assert is_flat(curve.astype(np.float64), dim, np.float32)


@FAST
@given(dim=st.integers(4, 1024), n=st.integers(2, 30), seed=st.integers(0, 2**31 - 1))
def test_identical_embeddings_with_rounding_noise_are_always_flat(dim, n, seed):
    """N copies of one unit embedding, each component moved by up to 4 float32 ulps (what a different batch
    shape or summation order does): every query finds them flat, sentence and word level, so the relevance is
    exact zeros and every window scores exactly 0. (Per-component error ≤ 5 ulp ≤ 5·eps·|x_k|, the move's own
    rounding included, gives a score spread ≤ 10·eps·Σ|x_k·y_k| ≤ 6·√D·eps·S for D ≥ 4: flat by construction.)"""
    from locvtp.localize import clip_relevance, rank_windows

    rng = np.random.default_rng(seed)
    x = rng.normal(size=dim).astype(np.float32)
    x /= np.linalg.norm(x)
    clips = _ulps(np.repeat(x[None], n, 0), rng.integers(-4, 5, size=(n, dim)))
    sentences = rng.normal(size=(2, dim)).astype(np.float32)
    words = [rng.normal(size=(3, dim)).astype(np.float32), np.zeros((0, dim), np.float32)]
    rel, flat = clip_relevance(clips, sentences, words, alpha=0.5)
    assert flat.tolist() == [True, True]
    assert np.all(rel == 0.0)
    windows = np.stack([np.arange(n), np.arange(1, n + 1)], 1).astype(np.float64)
    _, scores = rank_windows(rel[:, 0], windows, max_candidates=None)
    assert np.all(scores == 0.0)


@FAST
@given(dim=st.integers(1, 1024), level=st.floats(-1, 1), n=st.integers(3, 40), data=st.data())
def test_a_curve_with_a_real_bump_is_never_flat(dim, level, n, data):
    """A bump of 1e-4 of the scores' scale (≥ 4x the tolerance at D = 1024) is never taken for rounding."""
    from locvtp.localize import is_flat

    i = data.draw(st.integers(1, n - 1))  # clip 0 stays at the level: the bump never covers the whole video
    height = data.draw(st.floats(1e-4, 1.0)) * data.draw(st.sampled_from([1.0, -1.0]))
    curve = np.full(n, level, np.float64)
    curve[i:i + data.draw(st.integers(1, n - i))] += height
    assert not is_flat(curve, dim, np.float32, scale=1.0)
    assert not is_flat(curve.astype(np.float32).astype(np.float64), dim, np.float32, scale=1.0)


@pytest.mark.parametrize("dim", [64, 512])
def test_a_spread_of_a_few_hundred_ulps_is_not_flat(dim):
    """Near-flat but genuinely different: 300 float32 ulps around the issue's cosine (0.4781017)."""
    from locvtp.localize import is_flat

    curve = _ulps(np.full(10, 0.4781017, np.float32), np.array([0, 300, 0, 150, 0, 0, 300, 0, 0, 0]))
    assert not is_flat(curve.astype(np.float64), dim, np.float32)
    issue = np.array([0.4781017] * 8 + [0.4781016] * 2, np.float32)  # the issue's own curve: 3 ulps apart
    assert is_flat(issue.astype(np.float64), dim, np.float32)


def test_flat_components_are_zero_and_a_query_is_flat_only_if_every_used_component_is():
    """Sentence level flat, word level not: the relevance is the word level alone, and the query is not flat
    (unless alpha = 1 ignores the words)."""
    from locvtp.localize import clip_query_score_matrix, clip_relevance, standardize

    rng = np.random.default_rng(2)
    d, n = 16, 6
    y = rng.normal(size=d)
    y /= np.linalg.norm(y)
    w = rng.normal(size=d)
    w -= (w @ y) * y  # a word direction orthogonal to the sentence
    w /= np.linalg.norm(w)
    base = rng.normal(size=d)
    clips = base + np.arange(n)[:, None] * 0.1 * w  # moves along w only: clip·y is the same for every clip
    rel, flat = clip_relevance(clips, y[None], [w[None]], alpha=0.3)
    word = standardize(clips @ w)
    np.testing.assert_allclose(rel[:, 0], 0.7 * word, atol=1e-12)
    assert flat.tolist() == [False]
    rel1, flat1 = clip_relevance(clips, y[None], [w[None]], alpha=1.0)
    assert flat1.tolist() == [True] and np.all(rel1 == 0.0)
    np.testing.assert_array_equal(clip_query_score_matrix(clips, y[None], [w[None]], alpha=0.3), rel)


# ------------------------------------------------------------------------------------------ ground, the API
def test_ground_embeddings_on_rounding_noise_ranks_in_the_tie_order_with_the_warning():
    from locvtp.localize import ground_embeddings, rank_windows, top_windows

    rng = np.random.default_rng(3)
    d, n = 64, 10
    x = rng.normal(size=d).astype(np.float32)
    x /= np.linalg.norm(x)
    clips = _ulps(np.repeat(x[None], n, 0), np.zeros((n, d), int))
    clips[8:] = _ulps(clips[8:], rng.integers(-1, 2, size=(2, d)))  # the last two clips ±1 ulp (as in the issue)
    sentence = rng.normal(size=d).astype(np.float32)
    sentence /= np.linalg.norm(sentence)
    windows = np.stack([np.arange(n), np.arange(1, n + 1)], 1).astype(np.float64)
    cos = clips.astype(np.float64) @ sentence
    assert 0 < np.ptp(cos) < 1e-6  # the cosines differ in their last bits only
    assert np.abs(np.diff(standardize_naive(cos))).max() > 1  # what plain z-scores made of them: a ±z step
    res = ground_embeddings(clips, windows, sentence, None, query="q", top_k=5)
    assert res.flat and np.all(res.clip_relevance == 0.0) and np.all(res.scores == 0.0)
    tie = top_windows(rank_windows(np.zeros(n), windows)[0], 5)
    np.testing.assert_array_equal(res.windows, tie)
    np.testing.assert_array_equal(res.windows[:2], [[0, 1], [0, 2]])  # earliest start first, then shortest
    assert res.warnings == [FLAT_WARNING.format(n=n)]
    real = ground_embeddings(clips + 0.05 * sentence * (np.arange(n) == 4)[:, None], windows, sentence, None)
    assert not real.flat and real.warnings == [] and tuple(real.windows[0]) == (4.0, 5.0)


@pytest.fixture(scope="module")
def black_mp4(tmp_path_factory):
    from locvtp.world.plan import FPS, FRAME_SIZE
    from locvtp.world.render import write_mp4

    path = tmp_path_factory.mktemp("black") / "black.mp4"
    write_mp4(path, np.zeros((10 * FPS, FRAME_SIZE, FRAME_SIZE, 3), np.uint8))
    return path


def test_locvtp_ground_on_an_all_black_video_says_flat_and_scores_every_window_zero(
        tiny_checkpoint, black_mp4, tmp_path, capsys):
    from locvtp.localize import is_flat

    res = run_cli(["ground", "--checkpoint", tiny_checkpoint, black_mp4, "the red circle moves left", "--curve",
                   "--plot", tmp_path / "flat.png"], capsys)
    assert res.code == 0, res.err
    out = json.loads(res.out)
    text = FLAT_WARNING.format(n=10)
    assert out["warnings"] == [text]
    assert res.err_lines == [f"locvtp ground: warning: {text}"]
    assert out["duration"] == 10.0 and len(out["clip_scores"]) == 10
    wins = out["pred_relevant_windows"]
    assert len(wins) == 5 and all(score == 0.0 for _, _, score in wins)  # no ±z artefact
    assert out["clip_relevance"] == [0.0] * 10
    assert [(s, e) for s, e, _ in wins] == [(0, 1), (0, 2), (0, 4), (0, 8), (1, 2)]
    # The cosines are equal up to rounding (they differ in their last bits on the machine this was written on).
    assert is_flat(np.array(out["clip_scores"]), 64, np.float32, scale=1.0)
    assert (tmp_path / "flat.png").stat().st_size > 0


def test_the_api_ground_is_flat_too(tiny_checkpoint, black_mp4):
    """`LocVTPPredictor.ground` (what `serve`'s /api/ground and its page show) gives the same answer."""
    from locvtp.predictor import LocVTPPredictor

    p = LocVTPPredictor.from_checkpoint(tiny_checkpoint)
    for alpha in (0.0, 0.5, 1.0):
        res = p.ground(p.encode_file(black_mp4), "a blue square grows", alpha=alpha, top_k=3)
        assert res.flat and np.all(res.scores == 0.0), alpha
        assert res.warnings[-1] == FLAT_WARNING.format(n=10)
        assert res.to_json()["pred_relevant_windows"][0] == [0.0, 1.0, 0.0]


# ------------------------------------------------------------------------------------------------ evaluation
def test_evaluation_counts_flat_queries_and_gives_them_the_tie_order(tiny_checkpoint, tiny_world, black_mp4,
                                                                     tmp_path, capsys):
    """A test video replaced by an all-black one: its queries are flat, listed in grounding.json, warned about
    on stderr and in metrics.json, and their windows are the tie order (as `locvtp ground` gives them), not
    whatever the rounding noise of its clips would have ranked first."""
    import shutil

    from locvtp.localize import rank_windows, top_windows

    world = tmp_path / "world"
    shutil.copytree(tiny_world, world)
    anet = json.loads((world / "grounding/activitynet/val_1.json").read_text())
    black = sorted(anet)[0]
    shutil.copyfile(black_mp4, world / "videos" / f"{black}.mp4")
    out = tmp_path / "eval"
    res = run_cli(["evaluate", "grounding", "--checkpoint", tiny_checkpoint, "--data", world, "--out", out,
                   "--quiet", "--threads", "1", "--set", "grounding.head=false"], capsys)
    assert res.code == 0, res.err
    grd = json.loads((out / "grounding.json").read_text())
    n_black = len(anet[black]["sentences"])
    flat = grd["info"]["flat_queries"]
    assert len(flat) == n_black and {grd["predictions"][k]["video_id"] for k in flat} == {black}
    assert [p.get("flat") for p in grd["predictions"]].count(True) == n_black
    text = (f"{n_black} of {grd['info']['zero_shot_queries']} zero-shot grounding queries score the same on every "
            f"clip (videos: {black}; a still or blank video, or collapsed clip embeddings?): every window scores 0 "
            "and their windows are the tie order (earliest start first, then shortest), not the model's choice; "
            "they are in the figures as such and listed under info.flat_queries in grounding.json")
    assert grd["info"]["warnings"] == [text]
    assert json.loads((out / "metrics.json").read_text())["warnings"] == [text]
    assert f"locvtp evaluate: warning: {text}" in res.err_lines
    lines = [json.loads(x) for x in (out / "grounding_predictions.jsonl").read_text().splitlines()]
    windows = np.stack([np.arange(10.0), np.arange(1.0, 11.0)], 1)
    tie = top_windows(rank_windows(np.zeros(10), windows)[0], 5).tolist()
    for line in lines:
        if line["vid"] == black:
            assert [w[:2] for w in line["pred_relevant_windows"]] == tie
            assert all(w[2] == 0.0 for w in line["pred_relevant_windows"])
        else:
            assert any(w[2] != 0.0 for w in line["pred_relevant_windows"]), line
