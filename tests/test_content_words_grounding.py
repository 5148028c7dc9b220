"""Zero-shot grounding scored over content words (issue 23, item 4): ``words="content"`` in ``locvtp.localize``,
``LocVTPPredictor.ground``, ``locvtp ground --words`` and ``evaluate grounding`` (``grounding_content_*`` next to
the unchanged ``grounding_*``)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from cli_helpers import run_cli


def _reference_relevance(clips, sentence, words, content, alpha):
    """Plain loops from the formula: alpha·z(clip·sentence) + (1−alpha)·z(mean over the content words of
    clip·word), z = population standardization over the clips."""
    n = len(clips)
    kept = [w for w, c in zip(words, content) if c]

    def z(xs):
        mu = sum(xs) / n
        sd = math.sqrt(sum((x - mu) ** 2 for x in xs) / n)
        return [(x - mu) / sd for x in xs]

    sent = [sum(float(a) * float(b) for a, b in zip(c, sentence)) for c in clips]
    word = []
    for c in clips:
        total = 0.0
        for w in kept:
            total += sum(float(a) * float(b) for a, b in zip(c, w))
        word.append(total / len(kept))
    return [alpha * s + (1 - alpha) * w for s, w in zip(z(sent), z(word))]


def _query(seed=0, n=9, d=16, length=5):
    rng = np.random.default_rng(seed)
    clips = rng.normal(size=(n, d)).astype(np.float32)
    sentence = rng.normal(size=d).astype(np.float32)
    words = rng.normal(size=(length, d)).astype(np.float32)
    windows = np.stack([np.arange(n), np.arange(n) + 1.0], axis=1)
    return clips, windows, sentence, words


def test_content_scorer_matches_the_plain_loop_and_ignores_stop_word_columns():
    from locvtp.localize import ground_embeddings

    clips, windows, sentence, words = _query()
    content = np.array([True, False, True, False, True])  # e.g. "red the circle of left"
    for alpha in (0.5, 0.2):
        res = ground_embeddings(clips, windows, sentence, words, top_k=3, alpha=alpha, content=content,
                                word_set="content")
        ref = _reference_relevance(clips, sentence, words, content, alpha)
        np.testing.assert_allclose(res.clip_relevance, ref, rtol=1e-5, atol=1e-5)
        assert res.warnings == []
    # the stop words' rows may be anything: the content scorer does not move, the all-words scorer does
    other = words.copy()
    other[~content] = np.random.default_rng(7).normal(size=(int((~content).sum()), words.shape[1])) * 5
    a = ground_embeddings(clips, windows, sentence, words, content=content, word_set="content")
    b = ground_embeddings(clips, windows, sentence, other, content=content, word_set="content")
    np.testing.assert_array_equal(a.clip_relevance, b.clip_relevance)
    np.testing.assert_array_equal(a.windows, b.windows)
    all_a = ground_embeddings(clips, windows, sentence, words, content=content, word_set="all")
    all_b = ground_embeddings(clips, windows, sentence, other, content=content, word_set="all")
    assert not np.allclose(all_a.clip_relevance, all_b.clip_relevance)
    # words="all" is the scorer as it was: every word, whatever the marks say
    np.testing.assert_array_equal(all_a.clip_relevance, ground_embeddings(clips, windows, sentence, words).clip_relevance)
    np.testing.assert_allclose(all_a.clip_relevance,
                               _reference_relevance(clips, sentence, words, [True] * 5, 0.5), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("content,needle", [(np.zeros(5, bool), "no content word"),
                                            (None, "no content-word marks"),
                                            (np.zeros(0, bool), "no content-word marks")])
def test_content_scorer_falls_back_to_all_words_and_says_so(content, needle):
    from locvtp.localize import ground_embeddings, query_words

    clips, windows, sentence, words = _query(seed=1)
    res = ground_embeddings(clips, windows, sentence, words, top_k=3, content=content, word_set="content")
    base = ground_embeddings(clips, windows, sentence, words, top_k=3)
    np.testing.assert_array_equal(res.clip_relevance, base.clip_relevance)
    np.testing.assert_array_equal(res.windows, base.windows)
    assert len(res.warnings) == 1 and "words=content" in res.warnings[0] and needle in res.warnings[0]
    assert "as with words=all" in res.warnings[0]
    # no word term (alpha = 1): nothing falls back, nothing to say
    assert ground_embeddings(clips, windows, sentence, words, alpha=1.0, content=content,
                             word_set="content").warnings == []
    assert query_words(words, content, "content")[1] in ("no_content", "unknown")


def test_query_words_refuses_what_cannot_mean_anything():
    from locvtp.localize import query_words

    w = np.ones((3, 4))
    with pytest.raises(ValueError, match="words must be one of"):
        query_words(w, None, "nouns")
    with pytest.raises(ValueError, match="2 content marks for 3 words"):
        query_words(w, np.array([True, False]), "content")
    kept, why = query_words(w * np.arange(3)[:, None], np.array([False, True, True]), "content")
    assert why == "" and kept[:, 0].tolist() == [1.0, 2.0]
    assert query_words(None, None, "content") == (None, "")


def test_text_embeddings_mark_content_words_by_trainings_rule(tiny_checkpoint):
    """The marks are the Collator's ``content_mask`` (the one stop-word rule) at the valid word positions."""
    import torch

    from locvtp.data.stopwords import ENGLISH_STOPWORDS, content_words, stopword_ids
    from locvtp.predictor import LocVTPPredictor

    p = LocVTPPredictor.from_checkpoint(tiny_checkpoint, threads=1)
    texts = ["the red circle moves to the left", "here a green triangle blinks", "the"]
    emb = p.encode_text(texts)
    tok = p.tokenizer(texts, max_length=p.preprocessing.max_words)
    wm = tok["word_mask"].bool() & tok["attention_mask"].bool()
    mask = content_words(tok["input_ids"], wm, torch.tensor(stopword_ids(p.tokenizer)))
    assert len(emb.content) == 3
    for i in range(3):
        assert emb.content[i].tolist() == mask[i][wm[i]].tolist()
        assert len(emb.content[i]) == len(emb.tokens[i]) == emb.words[i].shape[0]
        for t, c in zip(emb.tokens[i], emb.content[i]):
            if t in ENGLISH_STOPWORDS:
                assert not c, (t, texts[i])
    assert emb.content[0].sum() >= 3 and not emb.content[2].any()


def test_predictor_ground_words(tiny_checkpoint, tiny_world):
    from locvtp.errors import UsageError
    from locvtp.localize import ground_embeddings
    from locvtp.predictor import LocVTPPredictor

    p = LocVTPPredictor.from_checkpoint(tiny_checkpoint, threads=1)
    video = p.encode_file(sorted((tiny_world / "videos").glob("grd_*.mp4"))[0])
    query = "the red circle moves to the left"
    res = p.ground(video, query, top_k=3, words="content")
    t = p.encode_text([query])
    ref = ground_embeddings(video.features, video.windows, t.sentence[0], t.words[0][t.content[0]], top_k=3)
    np.testing.assert_array_equal(res.clip_relevance, ref.clip_relevance)
    np.testing.assert_array_equal(res.windows, ref.windows)
    assert not np.array_equal(res.clip_relevance, p.ground(video, query, top_k=3).clip_relevance)
    only_stop = p.ground(video, "the", words="content")
    assert any("no content word" in w for w in only_stop.warnings)
    np.testing.assert_array_equal(only_stop.clip_relevance, p.ground(video, "the").clip_relevance)
    with pytest.raises(UsageError, match="words must be one of"):
        p.ground(video, query, words="nouns")


def test_cli_ground_words_flag(tiny_checkpoint, tiny_world, capsys):
    from locvtp.predictor import LocVTPPredictor

    video = sorted((tiny_world / "videos").glob("grd_*.mp4"))[0]
    query = "the red circle moves to the left"
    outs = {}
    for words in ("all", "content"):
        res = run_cli(["ground", "--checkpoint", tiny_checkpoint, video, query, "--words", words, "--curve"], capsys)
        assert res.code == 0 and res.err == "", res.err
        outs[words] = json.loads(res.out)
    default = run_cli(["ground", "--checkpoint", tiny_checkpoint, video, query, "--curve"], capsys)
    assert json.loads(default.out) == outs["all"]
    p = LocVTPPredictor.from_checkpoint(tiny_checkpoint, threads=1)
    api = p.ground(p.encode_file(video), query, words="content")
    np.testing.assert_allclose(outs["content"]["clip_relevance"], api.clip_relevance, rtol=1e-6, atol=1e-9)
    assert outs["content"]["clip_relevance"] != outs["all"]["clip_relevance"]


@pytest.fixture(scope="module")
def both(tiny_checkpoint, tiny_world, tmp_path_factory):
    from locvtp.downstream import evaluate_all
    from locvtp.downstream.evaluate import load_options

    runs = {}
    for words in ("all", "both", "content"):
        out = tmp_path_factory.mktemp(f"zs_{words}")
        opts = load_options(None, ["grounding.head=false", f"grounding.words={words}"])
        m = evaluate_all(tiny_checkpoint, tiny_world, out_dir=out, tasks=("grounding",), options=opts,
                         progress=False, seed=0, verbose=False, threads=1)
        runs[words] = (m, out)
    return runs


def test_evaluate_reports_both_scorers_and_keeps_the_default_figures(both, tiny_world):
    from locvtp.commands.score import score_grounding

    m_all, out_all = both["all"]
    m_both, out_both = both["both"]
    m_content, out_content = both["content"]
    figures = lambda m, p: {k: v for k, v in m.items() if k.startswith(p) and not k.endswith("_seconds")}  # noqa: E731
    # the default scorer: the same names and values as before words existed (measured with the code before it,
    # on this checkpoint and world: R1@0.5 1 of 9 queries, mIoU 17.0105), and the same predictions file
    assert m_both["grounding_R1@0.5"] == pytest.approx(100 / 9) and m_both["grounding_mIoU"] == pytest.approx(
        17.010463503217125, rel=1e-6)
    assert {k: v for k, v in m_both.items() if not k.startswith("grounding_content") and not k.endswith("_seconds")} \
        == {k: v for k, v in m_all.items() if not k.endswith("_seconds")}
    assert (out_both / "grounding_predictions.jsonl").read_bytes() == (out_all / "grounding_predictions.jsonl").read_bytes()
    assert not any(k.startswith("grounding_content") for k in m_all)
    assert not (out_all / "grounding_content_predictions.jsonl").exists()
    # the content scorer: reported beside it, the same figures as words=content alone, scoring its file gives them
    content = figures(m_both, "grounding_content_")
    assert set(content) == {k.replace("grounding_", "grounding_content_") for k in figures(m_all, "grounding_")}
    assert content == figures(m_content, "grounding_content_")
    assert not any(k.startswith("grounding_R") or k == "grounding_mIoU" for k in m_content)
    scored = score_grounding(out_both / "grounding_content_predictions.jsonl",
                             tiny_world / "grounding" / "activitynet" / "val_1.json")
    for k, v in scored["metrics"].items():
        assert content[k.replace("grounding_", "grounding_content_")] == pytest.approx(v), k
    info = json.loads((out_both / "grounding.json").read_text())["info"]
    assert info["settings"]["words"] == "both"
    assert info["content_words"] == {"flat_queries": [], "fallback_queries": {"no_content": [], "unknown": []}}
    preds = json.loads((out_both / "grounding.json").read_text())["predictions"]
    assert all(1 <= len(p["content_pred_relevant_windows"]) <= 5 for p in preds)
    # every tiny-world query has stop words, so the two scorers rank windows differently somewhere
    assert any(p["content_pred_relevant_windows"] != p["pred_relevant_windows"] for p in preds)


def test_evaluate_warns_when_content_words_are_unknown(tiny_world):
    """A text embedder without content marks (here an oracle-like fake): every query falls back, said once."""
    from omegaconf import OmegaConf

    from locvtp.downstream.common import EmbeddingBank, EvalContext
    from locvtp.downstream.grounding import GroundingOptions, run_grounding
    from locvtp.featurestore import ClipFeatures
    from locvtp.inference import TextEmbeddings

    rng = np.random.default_rng(0)

    def embed_video(vid):
        n = 12
        return ClipFeatures(vid, rng.normal(size=(n, 8)).astype(np.float32),
                            np.stack([np.arange(n), np.arange(n) + 1.0], 1), 0.0, float(n))

    def embed_texts(texts):
        sent = rng.normal(size=(len(texts), 8)).astype(np.float32)
        return TextEmbeddings(sent, [np.stack([s, -s]) for s in sent])

    cfg = OmegaConf.create({"data": {"max_words": 24, "clip_seconds": 1.0}})
    ctx = EvalContext(None, None, cfg, tiny_world, EmbeddingBank(embed_video, embed_texts, progress=False),
                      progress=False)
    res = run_grounding(ctx, GroundingOptions(head=False))
    n = res.info["zero_shot_queries"]
    assert res.info["content_words"]["fallback_queries"]["unknown"] == list(range(n))
    warned = [w for w in res.info["warnings"] if "words=content" in w]
    assert len(warned) == 1 and f"{n} of {n}" in warned[0] and "no content-word marks" in warned[0]
    for k in ("R1@0.5", "R1@0.7", "mIoU"):  # fallen back: the same figures as the default scorer
        assert res.metrics[f"grounding_content_{k}"] == res.metrics[f"grounding_{k}"]
