"""diagnostics.boundary_contrast's per-query figures against plain loops written from their definitions."""
import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from locvtp.diagnostics.boundary_contrast import adjacent_cosines, query_contrast


def _slow_contrast(curve, inside, flank):
    n = len(curve)
    ins = [t for t in range(n) if inside[t]]
    if not ins or len(ins) == n:
        return math.nan, math.nan
    near, far = [], []
    for t in range(n):
        if inside[t]:
            continue
        d = min(abs(t - i) for i in ins)
        (near if d <= flank else far).append(curve[t])
    mean = sum(curve) / n
    sd = math.sqrt(sum((c - mean) ** 2 for c in curve) / n) + 1e-8
    m_in = sum(curve[t] for t in ins) / len(ins)
    edge = (m_in - sum(near) / len(near)) / sd if near else math.nan
    return edge, ((m_in - sum(far) / len(far)) / sd if far else math.nan)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(-3, 3), st.booleans()), min_size=2, max_size=20), st.integers(1, 3))
def test_query_contrast_matches_a_plain_loop(pairs, flank):
    curve = np.array([p[0] for p in pairs])
    inside = np.array([p[1] for p in pairs])
    got = query_contrast(curve, inside, flank)
    want = _slow_contrast(list(curve), list(inside), flank)
    for g, w in zip(got, want):
        assert (math.isnan(g) and math.isnan(w)) or abs(g - w) <= 1e-6 * max(1.0, abs(w))


def test_adjacent_cosines_match_a_plain_loop():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(9, 4))
    inside = np.array([0, 0, 1, 1, 1, 0, 0, 1, 0], bool)
    all_, both, cross = adjacent_cosines(f, inside)
    cos = [float(f[t] @ f[t + 1] / np.linalg.norm(f[t]) / np.linalg.norm(f[t + 1])) for t in range(8)]
    np.testing.assert_allclose(all_, cos, atol=1e-6)
    np.testing.assert_allclose(both, [cos[2], cos[3]], atol=1e-6)
    np.testing.assert_allclose(cross, [cos[1], cos[4], cos[6], cos[7]], atol=1e-6)


def test_stopword_top1_matches_a_plain_loop():
    from locvtp.diagnostics.boundary_contrast import stopword_top1

    rng = np.random.default_rng(2)
    feats, words = rng.normal(size=(7, 5)), rng.normal(size=(4, 5))
    is_stop = np.array([True, False, False, True])
    inside = np.array([0, 1, 1, 1, 0, 1, 0], bool)
    picks = [max(range(4), key=lambda w: float(feats[t] @ words[w])) for t in range(7) if inside[t]]
    assert stopword_top1(feats, words, is_stop, inside) == sum(is_stop[w] for w in picks) / len(picks)
    assert math.isnan(stopword_top1(feats, words, is_stop, np.zeros(7, bool)))


def test_summarize_means_over_files_by_run_name(tmp_path):
    from locvtp.diagnostics.boundary_contrast import summarize

    keys = ("edge", "stop_top1")
    (tmp_path / "a.json").write_text('{"s0/runs/x": {"edge": 1.0, "stop_top1": 0.0}}')
    (tmp_path / "b.json").write_text('{"s1/runs/x": {"edge": 3.0, "stop_top1": 1.0}}')
    table = summarize([tmp_path / "a.json", tmp_path / "b.json"], keys)
    assert "| x | 2.00 ± 1.41 | 0.50 ± 0.71 |" in table


def test_stop_word_masks_follow_the_embedded_words():
    """One flag per embedded word (word_mask positions, in order), set exactly for the stop words."""
    from locvtp.data.stopwords import ENGLISH_STOPWORDS
    from locvtp.data.tokenizer import train_tokenizer
    from locvtp.diagnostics.boundary_contrast import stop_word_masks

    texts = ["the man cuts the onion", "she washes a pan in the sink", "onion"]
    tok = train_tokenizer(texts * 5, vocab_size=200)
    masks = stop_word_masks(tok, texts, 12)
    for text, m in zip(texts, masks):
        words = text.split()
        assert len(m) == len(words) and list(m) == [w in ENGLISH_STOPWORDS for w in words]
