"""Issue 23: the release's form of the temporal term (METHOD.md §3b), its splice classifier and the switches
that keep the temporal term out of the text encoder, each against the plain loops of
tests/reference_objectives.py (values and gradients in fp64), gradchecked, with padding and B = 1:

* ``objective.temporal_form=release`` — :func:`locvtp.objectives.release_temporal_loss` (warped words / warped
  clips through ``OffsetEncoding``, K raw same-sample negatives; ``objective.release_negatives``);
* ``objective.weights.splice`` — :func:`splice_batch` and :func:`splice_loss` (``SpliceClassifier``);
* ``objective.temporal_text_grad=false`` — the temporal term sees detached words (both forms).
The default objective is untouched: no new parameters, the same values (tests/test_objective*.py).
"""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from reference_objectives import (  # noqa: E402
    _single_thread,  # noqa: F401  (module-scoped autouse fixture)
    ref_coarse, ref_fine, ref_release_temporal, ref_splice, ref_splice_batch,
)
from test_objective_options import content_for  # noqa: E402
from test_objectives import make_batch, offsets_for  # noqa: E402

from locvtp.config import ConfigError, load_config  # noqa: E402
from locvtp.model.heads import OffsetEncoding, SpliceClassifier  # noqa: E402
from locvtp.objectives import (  # noqa: E402
    LocVTPObjective, draw_release_variates, draw_splice_variates, pick_valid, release_temporal_loss, splice_batch,
    splice_loss,
)

SHAPES = [(3, 4, 5), (1, 3, 4), (2, 1, 3), (3, 4, 1), (1, 1, 1), (4, 6, 7)]
METHOD = {"stopwords": "none"}


def heads(D, seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    return OffsetEncoding(D).to(dtype), OffsetEncoding(D).to(dtype)


def draws(B, T, L, K=4, seed=1):
    return draw_release_variates(B, T, L, K, generator=torch.Generator().manual_seed(seed))


def span_for(clip_mask, seed=2):
    """A random span ⊆ the valid clips; sample 0 keeps one, the last sample may have none (no temporal term)."""
    g = torch.Generator().manual_seed(seed)
    span = clip_mask & (torch.rand(clip_mask.shape, generator=g) < 0.6)
    span[0, 0] = True
    return span


def test_pick_valid_is_uniform_over_the_valid_positions_only():
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(5, 9, generator=g) < 0.5
    mask[0] = False  # a row without a valid position
    mask[1] = True
    u = torch.rand(5, 7, 3, generator=g)
    got = pick_valid(u, mask)
    for b in range(5):
        valid = mask[b].nonzero().flatten().tolist()
        for idx in itertools.product(range(7), range(3)):
            want = valid[min(int(torch.floor(u[b][idx] * len(valid))), len(valid) - 1)] if valid else 0
            assert int(got[b][idx]) == want
    # every valid position is reached, in proportion (10 000 draws over the 9 positions of row 1)
    counts = torch.bincount(pick_valid(torch.rand(1, 10_000, generator=g), mask[1:2]).flatten(), minlength=9)
    assert counts.min() > 900 and counts.max() < 1300


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}T{}L{}".format(*s))
@pytest.mark.parametrize("options", [{}, {"span": True}, {"content": True}, {"context_stop_grad": True},
                                     {"temporal_directions": "clip"}, {"temporal_directions": "word"},
                                     {"span": True, "content": True, "K": 1}],
                         ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "plain")
def test_release_form_matches_the_loop_reference(shape, options):
    B, T, L = shape
    c, w, _, cm, wm = make_batch(B, T, L, seed=sum(shape), requires_grad=True)
    hw, hc = heads(8)
    cd, wd = draws(B, T, L, options.get("K", 4))
    kw = {"span_mask": span_for(cm) if options.get("span") else None,
          "content_mask": content_for(wm) if options.get("content") else None,
          "context_stop_grad": options.get("context_stop_grad", False),
          "temporal_directions": options.get("temporal_directions", "both")}
    out = release_temporal_loss(c, w, cm, wm, hw, hc, cd, wd, **kw)
    ref = ref_release_temporal(c, w, cm, wm, hw, hc, cd, wd, **kw)
    params = [c, w, *hw.parameters(), *hc.parameters()]
    for key in ("temporal", "temporal_z", "temporal_w"):
        torch.testing.assert_close(out[key], ref[key], rtol=1e-10, atol=1e-12)
    got = torch.autograd.grad(out["temporal"], params, allow_unused=True, retain_graph=True)
    want = torch.autograd.grad(ref["temporal"], params, allow_unused=True, retain_graph=True)
    for a, b in zip(got, want):
        a = torch.zeros(()) if a is None else a
        b = torch.zeros(()) if b is None else b
        torch.testing.assert_close(a.expand_as(b) if a.dim() == 0 else a, b.expand_as(a) if b.dim() == 0 else b,
                                   rtol=1e-9, atol=1e-11)
        assert torch.isfinite(a).all()


def test_release_form_gradients_reach_the_linear_offsets_and_the_encoders_and_not_padding():
    B, T, L, D = 3, 5, 6, 8
    c, w, _, cm, wm = make_batch(B, T, L, D, seed=4, requires_grad=True)
    hw, hc = heads(D)
    out = release_temporal_loss(c, w, cm, wm, hw, hc, *draws(B, T, L))
    out["temporal"].backward()
    for head in (hw, hc):  # both pairs of Linear(1, D): the sign and the distance of Δ
        for p in head.parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0
    assert c.grad[cm].abs().sum() > 0 and w.grad[wm].abs().sum() > 0
    assert (c.grad[~cm] == 0).all() and (w.grad[~wm] == 0).all()  # padding holds garbage and gets nothing
    # each direction trains its own pair only
    c.grad = w.grad = None
    hw.zero_grad(), hc.zero_grad()
    release_temporal_loss(c, w, cm, wm, hw, hc, *draws(B, T, L), temporal_directions="clip")["temporal"].backward()
    assert hw.sign_proj.weight.grad.abs().sum() > 0 and hc.sign_proj.weight.grad is None


def test_release_form_b1_and_single_elements_are_defined():
    for B, T, L in [(1, 1, 1), (1, 2, 1), (1, 1, 3)]:
        c, w, _, cm, wm = make_batch(B, T, L, seed=9, requires_grad=True)
        hw, hc = heads(8)
        out = release_temporal_loss(c, w, cm, wm, hw, hc, *draws(B, T, L))
        out["temporal"].backward()
        assert torch.isfinite(out["temporal"]) and float(out["temporal"].detach()) > 0  # same-sample negatives exist at B = 1
        assert torch.isfinite(c.grad).all() and torch.isfinite(w.grad).all()
    # a sample whose span holds no clip has no term; a batch without any span clip gives 0, still attached
    c, w, _, cm, wm = make_batch(2, 3, 4, seed=1, requires_grad=True)
    hw, hc = heads(8)
    none = torch.zeros_like(cm)
    out = release_temporal_loss(c, w, cm, wm, hw, hc, *draws(2, 3, 4), span_mask=none)
    assert float(out["temporal"].detach()) == 0.0 and out["temporal"].requires_grad


def test_release_form_gradcheck():
    B, T, L, D = 2, 3, 4, 4
    c, w, _, cm, wm = make_batch(B, T, L, D, seed=5)
    hw, hc = heads(D)
    cd, wd = draws(B, T, L, 2)
    span = span_for(cm)

    a = hw.sign_proj.weight.detach().clone().requires_grad_()
    b = hc.dist_proj.weight.detach().clone().requires_grad_()

    def g(c, w, a, b):  # a Linear(1, D) of each pair as an input too
        hw.sign_proj.weight, hc.dist_proj.weight = a, b
        return release_temporal_loss(c, w, cm, wm, hw, hc, cd, wd, span_mask=span)["temporal"]

    del hw.sign_proj.weight, hc.dist_proj.weight  # plain tensors from here on: gradcheck differentiates them
    assert torch.autograd.gradcheck(g, (c.requires_grad_(), w.requires_grad_(), a, b), eps=1e-6, atol=1e-6)


def test_release_form_is_invariant_to_a_batch_permutation():
    B, T, L = 4, 5, 6
    c, w, _, cm, wm = make_batch(B, T, L, seed=11)
    hw, hc = heads(8)
    cd, wd = draws(B, T, L)
    span, content = span_for(cm), content_for(wm)
    perm = torch.tensor([2, 0, 3, 1])
    a = release_temporal_loss(c, w, cm, wm, hw, hc, cd, wd, span_mask=span, content_mask=content)
    b = release_temporal_loss(c[perm], w[perm], cm[perm], wm[perm], hw, hc, cd[perm], wd[perm],
                              span_mask=span[perm], content_mask=content[perm])
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-12, atol=1e-12)


def test_the_negatives_come_from_the_same_sample_only():
    """Changing another sample's features leaves a sample's terms unchanged (B = 2, one sample's anchors)."""
    B, T, L = 2, 4, 5
    c, w, _, cm, wm = make_batch(B, T, L, seed=12)
    hw, hc = heads(8)
    cd, wd = draws(B, T, L)
    only0 = torch.zeros(B, T, dtype=torch.bool)
    only0[0] = cm[0]
    a = release_temporal_loss(c, w, cm, wm, hw, hc, cd, wd, span_mask=only0)
    c2, w2 = c.clone(), w.clone()
    c2[1], w2[1] = torch.randn(T, 8, dtype=c.dtype), torch.randn(L, 8, dtype=w.dtype)
    b = release_temporal_loss(c2, w2, cm, wm, hw, hc, cd, wd, span_mask=only0)
    torch.testing.assert_close(a["temporal"], b["temporal"], rtol=0, atol=0)


def _objective(seed=0, **options):
    torch.manual_seed(seed)
    return LocVTPObjective(dim=8, num_clips=options.pop("num_clips", None), **{**METHOD, **options}).double()


@pytest.mark.parametrize("shape", [(3, 4, 5), (1, 3, 4)], ids=lambda s: "B{}T{}L{}".format(*s))
def test_the_objective_with_the_release_form_is_coarse_fine_and_the_release_term(shape):
    B, T, L = shape
    c, w, s, cm, wm = make_batch(B, T, L, seed=3)
    obj = _objective(temporal_form="release", release_negatives=3)
    assert obj.context_head is None and not hasattr(_objective(), "release_word_head")
    cd, wd = draws(B, T, L, 3)
    out = obj(c, w, s, cm, wm, offsets_for(cm), clip_draws=cd, word_draws=wd)
    fine = ref_fine(c, w, cm, wm)
    temporal = ref_release_temporal(c, w, cm, wm, obj.release_word_head, obj.release_clip_head, cd, wd)
    torch.testing.assert_close(out["temporal"], temporal["temporal"], rtol=1e-10, atol=1e-12)
    want = ref_coarse(c, s, cm, obj.scale()) + fine["fine"] + temporal["temporal"]
    torch.testing.assert_close(out["total"], want, rtol=1e-10, atol=1e-12)
    # context_in_span: the span mask reaches the term (and is required)
    span = span_for(cm)
    obj_span = _objective(temporal_form="release", release_negatives=3, context_in_span=True)
    got = obj_span(c, w, s, cm, wm, offsets_for(cm), span_mask=span, clip_draws=cd, word_draws=wd)["temporal"]
    want = ref_release_temporal(c, w, cm, wm, obj_span.release_word_head, obj_span.release_clip_head, cd, wd,
                                span_mask=span)["temporal"]
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="span_mask"):
        obj_span(c, w, s, cm, wm, offsets_for(cm), clip_draws=cd, word_draws=wd)


def test_the_default_objective_has_no_new_parameters():
    keys = set(_objective().state_dict())
    assert keys == {"logit_scale"} | {k for k in keys if k.startswith("context_head.")}
    rel = set(_objective(temporal_form="release").state_dict())
    assert rel == {"logit_scale"} | {f"release_{s}_head.{a}_proj.{p}" for s in ("word", "clip")
                                     for a in ("sign", "dist") for p in ("weight", "bias")}


@pytest.mark.parametrize("form", ["method", "release"])
def test_temporal_text_grad_false_detaches_only_the_temporal_terms_words(form):
    """Same values; the clip gradient unchanged; the word gradient is that of coarse + fine alone."""
    B, T, L = 3, 4, 5
    c, w, s, cm, wm = make_batch(B, T, L, seed=6, requires_grad=True)
    off, (cd, wd) = offsets_for(cm), draws(B, T, L)
    grads = {}
    for text_grad in (True, False):
        obj = _objective(temporal_form=form, temporal_text_grad=text_grad)
        out = obj(c, w, s, cm, wm, off, clip_draws=cd, word_draws=wd)
        grads[text_grad] = torch.autograd.grad(out["total"], [c, w, s])
        grads[text_grad, "value"] = out["total"].detach()
        grads[text_grad, "params"] = [p.grad for p in obj.parameters()]
        if text_grad:
            no_t = _objective(temporal_form=form, temporal=False)
            grads["coarse+fine"] = torch.autograd.grad(no_t(c, w, s, cm, wm, off)["total"], [c, w, s])
    torch.testing.assert_close(grads[True, "value"], grads[False, "value"], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grads[False][0], grads[True][0], rtol=1e-10, atol=1e-12)  # clips
    torch.testing.assert_close(grads[False][1], grads["coarse+fine"][1], rtol=1e-10, atol=1e-12)  # words
    assert (grads[True][1] - grads["coarse+fine"][1]).abs().sum() > 1e-6  # the default does train the words


# ------------------------------------------------------------------------------------------------ the splice
def test_splice_batch_matches_the_loop_and_keeps_pixels_intact():
    g = torch.Generator().manual_seed(0)
    B, T = 4, 5
    cm = torch.arange(T)[None] < torch.tensor([5, 2, 4, 1])[:, None]
    pixels = torch.randint(0, 255, (B, T, 2, 3, 3, 3), generator=g, dtype=torch.uint8)
    u = draw_splice_variates(B, torch.Generator().manual_seed(3))
    got = splice_batch(pixels, cm, u)
    want = ref_splice_batch(pixels, cm, u)
    for a, b in zip(got, want):
        assert torch.equal(a, b)
    assert got[0].dtype == torch.uint8
    # k is uniform over [0, min(n_i, n_partner)): every position, never past the shorter video
    ks = torch.stack([splice_batch(pixels, cm, torch.rand(B, generator=g))[2] for _ in range(400)])
    assert set(ks[:, 0].tolist()) == {0, 1} and set(ks[:, 2].tolist()) == {0} and set(ks[:, 3].tolist()) == {0}
    assert set(ks[:, 1].tolist()) == {0, 1}
    _, _, _, ok = splice_batch(pixels[:1], cm[:1], u[:1])
    assert not bool(ok[0])  # B = 1: its own partner, no splice


def test_splice_loss_matches_the_loop_gradchecks_and_trains_the_classifier():
    B, T, D = 3, 4, 5
    c, _, _, cm, _ = make_batch(B, T, 2, D, seed=8)
    spliced, mask, k, ok = splice_batch(c, cm, draw_splice_variates(B, torch.Generator().manual_seed(1)))
    torch.manual_seed(0)
    clf = SpliceClassifier(D, T).double()
    x = spliced.detach().clone().requires_grad_()
    got, want = splice_loss(x, mask, k, ok, clf), ref_splice(x, mask, k, ok, clf)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    ga = torch.autograd.grad(got, [x, *clf.parameters()])
    gb = torch.autograd.grad(want, [x, *clf.parameters()])
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)
    assert ga[1].abs().sum() > 0 and x.grad is None
    assert torch.autograd.gradcheck(lambda x: splice_loss(x, mask, k, ok, clf), (x,), eps=1e-6, atol=1e-6)
    zero = splice_loss(x[:1], mask[:1], k[:1], torch.zeros(1, dtype=torch.bool), clf)
    assert float(zero.detach()) == 0.0 and zero.requires_grad
    with pytest.raises(ValueError, match="data.num_clips"):
        clf(x[:, :3])


def test_the_objective_adds_the_splice_term_with_its_weight():
    B, T, L = 3, 4, 5
    c, w, s, cm, wm = make_batch(B, T, L, seed=2)
    off = offsets_for(cm)
    spliced = splice_batch(c, cm, draw_splice_variates(B, torch.Generator().manual_seed(4)))
    plain = _objective()(c, w, s, cm, wm, off)
    obj = _objective(weights={"splice": 0.5}, num_clips=T)
    out = obj(c, w, s, cm, wm, off, splice=spliced)
    want = ref_splice(*spliced, obj.splice_classifier)
    torch.testing.assert_close(out["splice"], want, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out["total"], plain["total"] + 0.5 * want, rtol=1e-10, atol=1e-12)
    assert "splice" not in plain
    with pytest.raises(ValueError, match="splice_batch"):
        obj(c, w, s, cm, wm, off)
    with pytest.raises(ValueError, match="num_clips"):
        LocVTPObjective(dim=8, weights={"splice": 1.0})


def test_release_options_are_validated():
    with pytest.raises(ValueError, match="temporal_form=release"):
        LocVTPObjective(dim=8, temporal_form="release", sigma=1.0)
    with pytest.raises(ValueError, match="temporal_form=release"):
        LocVTPObjective(dim=8, temporal_form="release", temporal_negatives="warped")
    with pytest.raises(ValueError, match="objective.temporal_form"):
        LocVTPObjective(dim=8, temporal_form="paper")
    for bad, msg in [("objective.temporal_form=paper", "temporal_form"), ("objective.release_negatives=0", ">= 1"),
                     ("objective.weights.splice=-1", ">= 0")]:
        with pytest.raises(ConfigError, match=msg):
            load_config(overrides=[bad])
    c, w, s, cm, wm = make_batch(2, 3, 4, seed=0)
    hw, hc = heads(8)
    with pytest.raises(ValueError, match="word_draws"):
        release_temporal_loss(c, w, cm, wm, hw, hc, *draws(2, 3, 4)[:1], torch.rand(2, 3, 5))


def test_draws_are_reproducible_from_a_generator():
    a = draw_release_variates(2, 3, 4, 4, torch.Generator().manual_seed(7))
    b = draw_release_variates(2, 3, 4, 4, torch.Generator().manual_seed(7))
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and a[0].shape == (2, 3, 5) and a[1].shape == (2, 4, 5)
    assert ((a[0] >= 0) & (a[0] < 1)).all()
