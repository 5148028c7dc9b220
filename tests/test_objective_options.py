"""Issue 15's options of the temporal / fine terms (docs/method.md "Options"), each against the loop reference.

Every option is one config key away, its default is bit-identical to the objective without it, it is
vectorised (tested against the plain loops of tests/reference_objectives.py, values and gradients in fp64) and,
where it trains, gradchecked:

* ``objective.context_in_span``  — offsets drawn only between clips inside the caption's span (draw_offsets,
  PretrainDataset.load);
* ``objective.context_stop_grad`` — the context clip is detached before g;
* ``objective.temporal_negatives=within`` — the word anchor's negatives are the other warped clips of its own video;
* ``objective.temporal_directions=both|word|clip``;
* ``objective.stopwords=none|english`` — stop words masked from the discovered positives and word anchors.
"""
from __future__ import annotations

import dataclasses
import inspect
import math
from collections import Counter

import numpy as np
import pytest
import torch

from reference_objectives import (  # noqa: E402
    _single_thread,  # noqa: F401  (module-scoped autouse fixture)
    ref_correspondences, ref_fine, ref_offset_choices, ref_temporal, ref_total,
)
from test_objectives import TERMS, make_batch, offsets_for  # noqa: E402

from locvtp.config import RULES, ConfigError, ObjectiveConfig, default_config, load_config  # noqa: E402
from locvtp.objectives import (  # noqa: E402
    ENGLISH_STOPWORDS,
    OPTION_NAMES,
    LocVTPObjective,
    content_words,
    discover_correspondences,
    draw_offsets,
    fine_loss,
    stopword_ids,
    temporal_loss,
)

# METHOD.md's objective: positives among all valid words. The objective's defaults are the config's
# (stopwords=english since issue 15), so the reference comparisons below name it.
METHOD = {"stopwords": "none"}


def content_for(word_mask, seed=0, p=0.5):
    """A random content mask ⊆ word_mask; sentence 0 has no content word at all (the fallback case)."""
    g = torch.Generator().manual_seed(seed)
    cmask = word_mask & (torch.rand(word_mask.shape, generator=g) < p)
    cmask[0] = False
    return cmask


def check_against_reference(obj, c, w, s, cm, wm, off, content=None):
    """All terms and all gradients (inputs and the objective's parameters) equal the loop reference's (fp64)."""
    out = obj(c, w, s, cm, wm, off, content_mask=content)
    ref = ref_total(obj, c, w, s, cm, wm, off, content_mask=content)
    for key in TERMS:
        assert torch.isfinite(out[key]), key
        torch.testing.assert_close(out[key], ref[key], rtol=1e-9, atol=1e-10, msg=key)
    inputs = [c, w, s] + list(obj.parameters())
    got = torch.autograd.grad(out["total"], inputs, allow_unused=True)
    want = torch.autograd.grad(ref["total"], inputs, allow_unused=True)
    for n, (a, b) in enumerate(zip(got, want)):
        a = torch.zeros_like(inputs[n]) if a is None else a
        b = torch.zeros_like(inputs[n]) if b is None else b
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10, msg=f"gradient of input #{n}")
    return out, got


SHAPES = [(3, 4, 5), (1, 3, 4), (2, 1, 3), (3, 4, 1), (1, 1, 1), (4, 6, 7)]
OPTIONS = [
    {"context_stop_grad": True},
    {"temporal_negatives": "within"},
    {"temporal_negatives": "within", "topk": 2, "intra_negatives": True, "sigma": 1.5},
    {"temporal_directions": "word"},
    {"temporal_directions": "clip", "topk": 2, "soft": True},
    {"stopwords": "english"},
    {"stopwords": "english", "topk": 3, "intra_negatives": True, "temporal_negatives": "warped"},
    {"stopwords": "english", "topk": 2, "soft": True, "temporal_negatives": "within", "context_stop_grad": True,
     "temporal_directions": "word", "max_offset": 3, "sigma": 0.7},
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}T{}L{}".format(*s))
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_options_match_the_loop_reference(shape, options):
    B, T, L = shape
    torch.manual_seed(1)
    obj = LocVTPObjective(dim=8, **{**METHOD, **options}).double()
    c, w, s, cm, wm = make_batch(B, T, L, seed=sum(shape), requires_grad=True)
    off = offsets_for(cm, obj.max_offset, seed=B)
    content = content_for(wm, seed=B + T)
    out, got = check_against_reference(obj, c, w, s, cm, wm, off, content)
    assert (got[0][~cm] == 0).all() and (got[1][~wm] == 0).all()  # padding gets no gradient


def _grads(obj, c, w, s, cm, wm, off, content=None):
    leaves = [t.detach().clone().requires_grad_() for t in (c, w, s)]
    out = obj(*leaves, cm, wm, off, content_mask=content)
    return out, torch.autograd.grad(out["total"], leaves + list(obj.parameters()), allow_unused=True)


@pytest.mark.parametrize("options", [
    {"context_in_span": False}, {"context_stop_grad": False}, {"temporal_directions": "both"}, {"stopwords": "none"},
], ids=lambda o: next(iter(o)))
def test_defaults_are_bit_identical(options):
    """Each option at its default value gives exactly today's terms and gradients (a content mask passed with
    stopwords=none is ignored)."""
    torch.manual_seed(0)
    base = LocVTPObjective(dim=8, stopwords="none", topk=2, intra_negatives=True).double()
    explicit = LocVTPObjective(dim=8, topk=2, intra_negatives=True, **{**METHOD, **options}).double()
    explicit.load_state_dict(base.state_dict())
    c, w, s, cm, wm = make_batch(5, 4, 6, seed=4)
    off = offsets_for(cm)
    (a, ga), (b, gb) = _grads(base, c, w, s, cm, wm, off), _grads(explicit, c, w, s, cm, wm, off, content_for(wm))
    for key in TERMS:
        assert torch.equal(a[key], b[key]), key
    assert all((x is None and y is None) or torch.equal(x, y) for x, y in zip(ga, gb))
    obj = LocVTPObjective.from_config(default_config(), dim=8)
    # the config's defaults: METHOD.md's, except the stop-word mask adopted in issue 15 (docs/method.md "Options")
    assert (obj.context_in_span, obj.context_stop_grad, obj.temporal_directions, obj.stopwords) == \
        (False, False, "both", "english")


# ------------------------------------------------------------------------------------------- context_in_span
def test_draw_offsets_without_span_is_unchanged():
    cm = torch.arange(8)[None] < torch.tensor([[8], [5], [1], [3]])
    a = draw_offsets(cm, 2, torch.Generator().manual_seed(3))
    b = draw_offsets(cm, 2, torch.Generator().manual_seed(3), span_mask=None)
    assert torch.equal(a, b)
    b = draw_offsets(cm, 2, torch.Generator().manual_seed(3), span_mask=torch.ones_like(cm))
    assert torch.equal(a, b)  # an all-true span is no restriction (and consumes the generator alike)


def test_span_offsets_stay_inside_the_span_and_cover_every_choice():
    """Every drawn δ is one of the reference's admissible offsets (reference and context valid and in the span,
    |δ| ≤ W); clips without any (outside the span, or no in-span neighbour) get 0; over many draws every
    admissible offset appears, roughly uniformly."""
    T, W = 8, 2
    cm = torch.arange(T)[None] < torch.tensor([[8], [8], [6], [8], [3]])
    span = torch.zeros(5, T, dtype=torch.bool)
    span[0, 2:6] = True  # a 4-clip event in the middle
    span[1, 0:1] = True  # a single in-span clip: nothing has an in-span neighbour
    span[2, 3:8] = True  # runs past the valid clips (padding must stay excluded)
    span[3, [1, 4]] = True  # two in-span clips 3 apart: farther than W
    span[4] = True
    choices = ref_offset_choices(cm, W, span)
    counts = {k: Counter() for k in choices}
    g = torch.Generator().manual_seed(0)
    for _ in range(400):
        off = draw_offsets(cm, W, g, span_mask=span)
        for (i, t), allowed in choices.items():
            d = int(off[i, t])
            if allowed:
                assert d in allowed, (i, t, d, allowed)
            else:
                assert d == 0, (i, t, d)
            counts[i, t][d] += 1
    for key, allowed in choices.items():
        if allowed:
            assert set(counts[key]) == set(allowed)
            assert min(counts[key].values()) > 400 / len(allowed) * 0.6
    assert not any(choices[1, t] for t in range(T)) and not any(choices[3, t] for t in range(T))


def test_objective_draws_span_offsets_when_asked():
    obj = LocVTPObjective(dim=8, stopwords="none", context_in_span=True).double()
    c, w, s, cm, wm = make_batch(3, 6, 5, seed=1)
    with pytest.raises(ValueError, match="span_mask"):
        obj(c, w, s, cm, wm)
    span = torch.zeros_like(cm)
    span[:, 1:4] = True
    torch.manual_seed(0)
    out = obj(c, w, s, cm, wm, span_mask=span)
    off = out["offsets"]
    choices = ref_offset_choices(cm, obj.max_offset, span)
    for (i, t), allowed in choices.items():
        assert (int(off[i, t]) in allowed) if allowed else int(off[i, t]) == 0
    ref = ref_total(obj, c, w, s, cm, wm, off)
    torch.testing.assert_close(out["total"], ref["total"], rtol=1e-9, atol=1e-10)


class _FeatureSource:
    """A 12 s video of 12 one-second feature rows (what PretrainDataset.load needs of a source)."""

    kind = "features"
    durations = {"v": 12.0, "w": 5.0}

    def clips(self, vid, windows, jitter, rng):
        return np.zeros((len(windows), 4), dtype=np.float32)


def _dataset(in_span, items):
    from locvtp.training.dataset import PretrainDataset

    return PretrainDataset(items, _FeatureSource(), num_clips=8, clip_seconds=1.0, jitter_seconds=1.0, train=True,
                           seed=0, max_offset=2, offset_in_span=in_span)


def test_dataset_draws_offsets_inside_the_narration_span():
    from locvtp.training.records import CaptionItem

    items = [CaptionItem("v", "cut the onion", 4.0, 7.0, "x:1"), CaptionItem("v", "wash it", 5.2, 5.6, "x:2"),
             CaptionItem("w", "whole video", 0.0, math.inf, "x:3")]
    plain, in_span = _dataset(False, items), _dataset(True, items)
    for epoch in range(30):
        for k, item in enumerate(items):
            a, b = plain.load(k, epoch), in_span.load(k, epoch)
            for key in ("clips", "clip_mask", "windows"):  # nothing else about the sample changes
                assert np.array_equal(a[key], b[key]), key
            assert "span_mask" not in a
            centre = b["windows"].astype(np.float64).mean(1)
            span = b["clip_mask"] & (centre >= item.start) & (centre <= item.end)
            assert np.array_equal(b["span_mask"], span)
            choices = ref_offset_choices(torch.from_numpy(b["clip_mask"])[None], 2, torch.from_numpy(span)[None])
            for t in range(8):
                d, allowed = int(b["offsets"][t]), choices[0, t]
                assert (d in allowed) if allowed else d == 0, (item, t, d, allowed)
            if math.isinf(item.end):  # webvid-style: the span is the whole video, so the draw is today's
                assert np.array_equal(a["offsets"], b["offsets"])
            if item.end - item.start < 1:  # at most one clip centre inside: no temporal term at all
                assert not b["offsets"].any()


# ----------------------------------------------------------------------------------------- context_stop_grad
def test_context_stop_grad_removes_only_the_gradient_through_the_context():
    """Same loss; the gradient into the clips differs by exactly the part that flowed through g's input; g's
    own parameters still get gradients."""
    torch.manual_seed(0)
    a = LocVTPObjective(dim=8, stopwords="none", coarse=False, fine=False).double()
    b = LocVTPObjective(dim=8, stopwords="none", coarse=False, fine=False, context_stop_grad=True).double()
    b.load_state_dict(a.state_dict())
    c, w, s, cm, wm = make_batch(4, 5, 6, seed=3)
    off = offsets_for(cm)
    (oa, ga), (ob, gb) = _grads(a, c, w, s, cm, wm, off), _grads(b, c, w, s, cm, wm, off)
    assert torch.equal(oa["total"], ob["total"])
    assert not torch.allclose(ga[0], gb[0])
    torch.testing.assert_close(ga[1], gb[1])  # words: unchanged
    head = [n for n, _ in b.named_parameters()]
    for n, g in zip(head, gb[3:]):
        if n.startswith("context_head"):
            assert g is not None and g.abs().sum() > 0, n
    # with stop-grad, the clip gradient of the temporal term only comes from the reference clip's selection
    # (none: positives are words) -> zero unless intra negatives / "clips" word-anchored negatives use clips
    c2 = c.detach().clone().requires_grad_()
    t = temporal_loss(c2, w, cm, wm, b.context_head, off, context_stop_grad=True)
    g_stop, = torch.autograd.grad(t["temporal_z"], c2)
    assert g_stop.abs().max() == 0  # L_tz sees the clips only through g's (detached) input


# ---------------------------------------------------------------------------------------- within negatives
def test_within_negatives_standalone_and_edge_cases():
    c, w, s, cm, wm = make_batch(5, 4, 6, seed=8)
    head = LocVTPObjective(dim=8, stopwords="none", max_offset=2).double().context_head
    off = offsets_for(cm)
    t = temporal_loss(c, w, cm, wm, head, off, topk=2, tau=0.1, sigma=2.0, temporal_negatives="within")
    r = ref_temporal(c, w, cm, wm, head, off, topk=2, tau=0.1, sigma=2.0, temporal_negatives="within")
    for key in ("temporal", "temporal_z", "temporal_w"):
        torch.testing.assert_close(t[key], r[key])
    # L_tz is untouched by the negatives of L_tw
    t_clips = temporal_loss(c, w, cm, wm, head, off, topk=2, tau=0.1, sigma=2.0)
    assert torch.equal(t["temporal_z"], t_clips["temporal_z"])
    # videos with at most one warped clip (δ = 0 elsewhere): no word has a within-video negative ->
    # temporal_w = 0, no NaN
    obj = LocVTPObjective(dim=8, stopwords="none", temporal_negatives="within").double()
    for B, T, L in [(1, 1, 1), (1, 2, 3), (3, 2, 4), (2, 1, 3), (3, 4, 5)]:
        c, w, s, cm, wm = make_batch(B, T, L, seed=B + T, requires_grad=True)
        off = torch.zeros(B, T, dtype=torch.long)
        if T > 1:
            cm[:, :2] = True
            off[:, 0] = 1  # only clip 0 has a context
        out = obj(c, w, s, cm, wm, off)
        out["total"].backward()
        assert out["temporal_w"].item() == 0.0
        assert all(torch.isfinite(out[k]) for k in TERMS)
        assert torch.isfinite(c.grad).all() and torch.isfinite(w.grad).all()


def test_within_negatives_are_independent_of_the_other_videos():
    """With "within" the word-anchored term of a video does not depend on any other video of the batch."""
    torch.manual_seed(0)
    obj = LocVTPObjective(dim=8, stopwords="none", temporal_negatives="within", temporal_directions="word",
                          coarse=False, fine=False).double()
    c, w, s, cm, wm = make_batch(1, 6, 5, seed=2)
    off = offsets_for(cm)
    alone = obj(c, w, s, cm, wm, off)["temporal_w"]
    c2, w2, s2, cm2, wm2 = make_batch(3, 6, 5, seed=9)
    c2[0], w2[0], cm2[0], wm2[0] = c[0], w[0], cm[0], wm[0]
    off2 = offsets_for(cm2, seed=4)
    off2[0] = off[0]
    single = ref_temporal(c2[:1], w2[:1], cm2[:1], wm2[:1], obj.context_head, off2[:1], temporal_negatives="within")
    torch.testing.assert_close(alone, single["temporal_w"])


# ---------------------------------------------------------------------------------------------- directions
def test_directions_select_one_term_and_report_both():
    torch.manual_seed(0)
    objs = {d: LocVTPObjective(dim=8, stopwords="none", temporal_directions=d).double()
            for d in ("both", "word", "clip")}
    for o in objs.values():
        o.load_state_dict(objs["both"].state_dict())
    c, w, s, cm, wm = make_batch(4, 5, 6, seed=6)
    off = offsets_for(cm)
    out = {d: o(c, w, s, cm, wm, off) for d, o in objs.items()}
    for d in objs:
        assert torch.equal(out[d]["temporal_z"], out["both"]["temporal_z"])
        assert torch.equal(out[d]["temporal_w"], out["both"]["temporal_w"])
    assert torch.equal(out["clip"]["temporal"], out["both"]["temporal_z"])
    assert torch.equal(out["word"]["temporal"], out["both"]["temporal_w"])
    with pytest.raises(ValueError, match="temporal_directions"):
        LocVTPObjective(dim=8, temporal_directions="up")


# ----------------------------------------------------------------------------------------------- stopwords
def test_stopword_mask_keeps_stop_words_out_of_positives_and_anchors():
    c, w, s, cm, wm = make_batch(4, 5, 7, seed=5)
    content = content_for(wm, seed=2)
    for k in (1, 2, 3):
        corr = discover_correspondences(c, w, cm, wm, k, content_mask=content)
        P, Q = ref_correspondences(c, w, cm, wm, k, content)
        for (i, t), words in P.items():
            assert corr.clip_to_word[i, t][corr.clip_to_word_mask[i, t]].tolist() == words
        for (i, l), clips in Q.items():
            assert corr.word_to_clip[i, l][corr.word_to_clip_mask[i, l]].tolist() == clips
        anchors = content | (wm & ~content.any(1, keepdim=True))  # sentence 0: no content word -> all its words
        assert not corr.word_to_clip_mask[~anchors].any()
        chosen = corr.clip_to_word[corr.clip_to_word_mask]
        rows = torch.nonzero(corr.clip_to_word_mask)[:, 0]
        assert anchors[rows, chosen].all()
    f = fine_loss(c, w, cm, wm, topk=2, content_mask=content)
    r = ref_fine(c, w, cm, wm, topk=2, content_mask=content)
    for key in ("fine", "fine_cw", "fine_wc"):
        torch.testing.assert_close(f[key], r[key])
    assert not torch.allclose(f["fine"], fine_loss(c, w, cm, wm, topk=2)["fine"])  # the mask does something


def test_stopwords_need_the_content_mask():
    obj = LocVTPObjective(dim=8, stopwords="english")
    c, w, s, cm, wm = make_batch(2, 3, 4, dtype=torch.float32)
    with pytest.raises(ValueError, match="content_mask"):
        obj(c, w, s, cm, wm)
    with pytest.raises(ValueError, match="content_mask must be a boolean"):
        obj(c, w, s, cm, wm, content_mask=torch.ones(2, 3, dtype=torch.bool))


def test_content_words_from_a_tokenizer_and_the_collator():
    from locvtp.training.dataset import Collator
    from locvtp.data.tokenizer import train_tokenizer

    texts = ["the man cuts the onion", "she washes a pan in the sink", "then he puts it on the plate"]
    tok = train_tokenizer(texts * 5, vocab_size=200)
    ids = stopword_ids(tok)
    assert ids and all(tok.id_to_token(i) in ENGLISH_STOPWORDS for i in ids)
    batch = Collator(tok, 12)([{"clips": np.zeros((2, 3), np.float32), "clip_mask": np.ones(2, bool), "index": k,
                                "vid": "v", "text": t} for k, t in enumerate(texts)])
    cmask, wmask = batch["content_mask"], batch["word_mask"]
    assert cmask.dtype == torch.bool and (cmask <= wmask).all()
    for k in range(len(texts)):
        kept = [tok.id_to_token(int(i)) for i, m in zip(batch["input_ids"][k], cmask[k]) if m]
        dropped = [tok.id_to_token(int(i)) for i, m, v in zip(batch["input_ids"][k], cmask[k], wmask[k]) if v and not m]
        assert all(x in ENGLISH_STOPWORDS for x in dropped) and not any(x in ENGLISH_STOPWORDS for x in kept)
        assert "the" in dropped or "a" in dropped or "it" in dropped
    assert torch.equal(content_words(batch["input_ids"], wmask, ids), cmask)


# ------------------------------------------------------------------------------------------------ gradchecks
@pytest.mark.parametrize("options", [
    {"context_stop_grad": True, "temporal_negatives": "within", "intra_negatives": True},
    {"temporal_negatives": "within", "intra_negatives": True, "topk": 2},
    {"stopwords": "english", "topk": 2, "temporal_directions": "word"},
    {"stopwords": "english", "temporal_directions": "clip", "context_stop_grad": True},
], ids=["stopgrad+within", "within", "stopwords+word", "stopwords+clip+stopgrad"])
def test_options_gradcheck_through_the_objective(options):
    torch.manual_seed(0)
    obj = LocVTPObjective(dim=6, sigma=2.0, **{**METHOD, **options}).double()
    c, w, s, cm, wm = make_batch(3, 4, 4, D=6, seed=11)
    cm[:, :3] = True
    off = offsets_for(cm)
    content = content_for(wm, seed=3, p=0.6)
    names = [n for n, _ in obj.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_() for _, p in obj.named_parameters())
    if obj.context_stop_grad:
        # the stop-gradient is *meant* to differ from finite differences in the clips (the path through the
        # context clip); words and every parameter (g, logit scale) must still match them
        def f(w_, *ps):
            return torch.func.functional_call(obj, dict(zip(names, ps)), (c, w_, s, cm, wm, off),
                                              {"content_mask": content})["total"]

        assert torch.autograd.gradcheck(f, (w.clone().requires_grad_(), *params), fast_mode=True)
        return

    def f(c_, w_, *ps):
        return torch.func.functional_call(obj, dict(zip(names, ps)), (c_, w_, s, cm, wm, off),
                                          {"content_mask": content})["total"]

    assert torch.autograd.gradcheck(f, (c.clone().requires_grad_(), w.clone().requires_grad_(), *params),
                                    fast_mode=True)


# ---------------------------------------------------------------------------------------------------- config
def test_config_keys_reach_the_objective_and_are_validated():
    cfg = load_config(overrides=["objective.context_in_span=true", "objective.context_stop_grad=true",
                                 "objective.temporal_negatives=within", "objective.temporal_directions=word",
                                 "objective.stopwords=english", "objective.sigma=1"])
    obj = LocVTPObjective.from_config(cfg, dim=8)
    assert (obj.context_in_span, obj.context_stop_grad, obj.temporal_negatives, obj.temporal_directions,
            obj.stopwords, obj.sigma) == (True, True, "within", "word", "english", 1.0)
    assert "stopwords='english'" in repr(obj)
    for bad in ("objective.temporal_directions=up", "objective.stopwords=french",
                "objective.temporal_negatives=nearby"):
        with pytest.raises(ConfigError, match=bad.split("=")[0].replace(".", r"\.")):
            load_config(overrides=[bad])


# ------------------------------------------------------------------------------ one options object (issue 22)
def _same_objective(a, b):
    """Every option, every attribute the forward reads, and every parameter and buffer are equal."""
    assert a.options == b.options
    assert vars(a.options).keys() == {f.name for f in dataclasses.fields(ObjectiveConfig)}
    plain = {k: v for k, v in vars(a).items() if not k.startswith("_") and k != "training"}
    assert plain == {k: v for k, v in vars(b).items() if not k.startswith("_") and k != "training"}
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and len(sa) > 0
    assert all(torch.equal(sa[k], sb[k]) for k in sa), [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert [n for n, _ in a.named_buffers()] == [n for n, _ in b.named_buffers()]
    assert repr(a) == repr(b)


@pytest.mark.parametrize("given", ["empty mapping", "nothing", "ObjectiveConfig()", "a whole config"])
def test_an_objective_built_from_no_options_is_the_config_default(given):
    """Issue 22: the Python default can never differ from the config's (it once did: stopwords none vs english),
    so a mapping without a key trains the objective a config without it trains."""
    options = {"empty mapping": {}, "nothing": None, "ObjectiveConfig()": ObjectiveConfig(),
               "a whole config": default_config()}[given]
    torch.manual_seed(3)
    built = LocVTPObjective(options, dim=8)
    torch.manual_seed(3)
    reference = LocVTPObjective.from_config(default_config().objective, dim=8)
    _same_objective(built, reference)
    assert built.stopwords == "english" and built.options == ObjectiveConfig()
    torch.manual_seed(3)
    partial = LocVTPObjective.from_config({"topk": 2}, dim=8)  # a mapping silent on the other keys
    torch.manual_seed(3)
    _same_objective(partial, LocVTPObjective(ObjectiveConfig(topk=2), dim=8))


def _other_value(name, default):
    """A valid value of option ``name`` that is not its default (choices from the config's RULES)."""
    rule = RULES.get(f"objective.{name}")
    if rule is not None and rule[0] == "choice":
        return next(c for c in rule[1:] if c != default)
    if isinstance(default, bool):
        return not default
    if isinstance(default, int):
        return default + 1
    if isinstance(default, float):
        return 1.0 if math.isinf(default) else default / 2
    if name == "head_hidden":
        return 12
    if name == "weights":
        return {"coarse": 2.0, "fine": 3.0, "temporal": 4.0, "splice": 0.0}  # splice > 0 needs num_clips
    raise AssertionError(f"objective.{name}: no test value for a default of type {type(default).__name__}")


@pytest.mark.parametrize("name", [f.name for f in dataclasses.fields(ObjectiveConfig)])
def test_every_config_option_is_accepted_by_the_objective_and_reaches_it(name):
    """Each ObjectiveConfig field is a keyword of LocVTPObjective and of a config mapping, the two agree, and a
    non-default value changes the module (or, for the DDP gather and the products' precision, its attribute)."""
    default = getattr(ObjectiveConfig(), name)
    value = _other_value(name, default)
    torch.manual_seed(0)
    by_keyword = LocVTPObjective(dim=8, **{name: value})
    torch.manual_seed(0)
    by_config = LocVTPObjective.from_config(load_config(overrides=[
        f"objective.{name}.{k}={v}" for k, v in value.items()] if isinstance(value, dict) else
        [f"objective.{name}={value}"]), dim=8)
    _same_objective(by_keyword, by_config)
    got = getattr(by_keyword.options, name)
    assert (dataclasses.asdict(got) if name == "weights" else got) == value
    torch.manual_seed(0)
    plain = LocVTPObjective(dim=8)
    assert repr(by_keyword) != repr(plain)
    reached = {"head": lambda o: o.context_head.kind, "head_hidden": lambda o: o.context_head.fc1.out_features,
               "logit_scale_init": lambda o: float(o.logit_scale.detach()), "coarse": lambda o: o.use_coarse,
               "fine": lambda o: o.use_fine, "temporal": lambda o: o.use_temporal,
               "weights": lambda o: o.weights}.get(name, lambda o: getattr(o, name))
    assert reached(by_keyword) != reached(plain), name


def test_the_objective_takes_no_option_the_config_lacks():
    """Vice versa: besides the options object and the ObjectiveConfig names, the constructor takes only ``dim``
    (model.dim), ``fused`` (the kernel) and ``num_clips`` (data.num_clips, for the splice classifier); any other
    keyword, or a config mapping with an unknown key, is refused by name."""
    params = inspect.signature(LocVTPObjective.__init__).parameters
    assert list(params) == ["self", "options", "dim", "fused", "num_clips", "overrides"]
    assert params["overrides"].kind is inspect.Parameter.VAR_KEYWORD
    assert OPTION_NAMES == tuple(f.name for f in dataclasses.fields(ObjectiveConfig))
    assert {k.split(".")[1] for k in RULES if k.startswith("objective.")} <= set(OPTION_NAMES)
    with pytest.raises(ValueError, match=r"objective\.tau_coarse: not an option"):
        LocVTPObjective(dim=8, tau_coarse=0.1)
    with pytest.raises(ValueError, match=r"objective\.bogus: not an option"):
        LocVTPObjective({"topk": 2, "bogus": 1}, dim=8)
    with pytest.raises(ValueError, match=r"objective\.weights\.speed: unknown loss term"):
        LocVTPObjective(dim=8, weights={"speed": 1.0})
    with pytest.raises(ValueError, match=r"objective\.topk: .*Integer"):
        LocVTPObjective(dim=8, topk="two")
    with pytest.warns(DeprecationWarning, match="window= is deprecated"):
        assert LocVTPObjective(dim=8, window=3).options.max_offset == 3


def test_the_defaults_in_docs_method_md_are_the_config_defaults():
    """docs/method.md's option tables show each option's default as ``objective.KEY=VALUE``; a default is written
    once, in ObjectiveConfig, so every such value shown in a "config key" column must be it."""
    import re
    from pathlib import Path

    doc = Path(__file__).resolve().parents[1] / "docs" / "method.md"
    shown, column = [], None
    for line in doc.read_text(encoding="utf-8").splitlines():
        if not line.startswith("|"):
            column = None
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if column is None:
            column = next((i for i, c in enumerate(cells) if c.startswith("config key")), -1)
        elif column >= 0 and not set(cells[column]) <= set("-: "):
            shown += re.findall(r"`(objective\.[a-z_.]+=[^`\s]+)`", cells[column])
    assert len(shown) >= 10, shown  # both tables were found
    for ov in shown:
        assert load_config(overrides=[ov]) == default_config(), f"docs/method.md shows {ov}, not the default"
