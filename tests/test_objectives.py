"""LocVTP objectives against the independent loop references (tests/reference_objectives.py).

METHOD.md "What must hold": each loss equals a loop implementation on random padded inputs for B, T, L >= 1
(no NaN), gradients reach both encoders and g and none flow through the top-k selection, and the loss is
invariant to a permutation of the batch. The objectives here are METHOD.md's (``stopwords="none"``, named: the
objective's defaults are the config's, which mask stop words since issue 15).
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from reference_objectives import (  # noqa: E402
    _single_thread,  # noqa: F401  (module-scoped autouse fixture)
    ref_coarse, ref_correspondences, ref_fine, ref_temporal, ref_total,
)

from locvtp.config import default_config  # noqa: E402
from locvtp.objectives import (  # noqa: E402
    LocVTPObjective,
    coarse_loss,
    discover_correspondences,
    draw_offsets,
    fine_loss,
    temporal_loss,
)


TERMS = ("coarse", "fine", "fine_cw", "fine_wc", "temporal", "temporal_z", "temporal_w", "total")


def make_batch(B, T, L, D=8, seed=0, dtype=torch.float64, requires_grad=False):
    """Random L2-normalised features with ragged padding: prefix clip masks, scattered word masks."""
    g = torch.Generator().manual_seed(seed)
    c = F.normalize(torch.randn(B, T, D, generator=g, dtype=dtype), dim=-1)
    w = F.normalize(torch.randn(B, L, D, generator=g, dtype=dtype), dim=-1)
    s = F.normalize(torch.randn(B, D, generator=g, dtype=dtype), dim=-1)
    n_clips = torch.randint(1, T + 1, (B,), generator=g)
    n_clips[0] = T  # at least one full video
    clip_mask = torch.arange(T)[None] < n_clips[:, None]
    word_mask = torch.rand(B, L, generator=g) < 0.7  # not a prefix: special tokens are masked in the middle
    word_mask[:, -1] = True
    # padded positions hold garbage: the objective must ignore them
    c = torch.where(clip_mask[..., None], c, 3.0 * torch.randn(B, T, D, generator=g, dtype=dtype))
    w = torch.where(word_mask[..., None], w, 3.0 * torch.randn(B, L, D, generator=g, dtype=dtype))
    if requires_grad:
        c.requires_grad_(True)
        w.requires_grad_(True)
        s.requires_grad_(True)
    return c, w, s, clip_mask, word_mask


def offsets_for(clip_mask, window=2, seed=0):
    return draw_offsets(clip_mask, window, generator=torch.Generator().manual_seed(seed))


SHAPES = [(3, 4, 5), (1, 3, 4), (2, 1, 3), (3, 4, 1), (1, 1, 1), (4, 6, 7)]
OPTIONS = [
    {},
    {"topk": 2},
    {"topk": 3, "intra_negatives": True},
    {"topk": 2, "soft": True},
    {"sigma": 1.5, "head": "linear"},
    {"topk": 3, "soft": True, "intra_negatives": True, "sigma": 0.7, "max_offset": 3},
]


def assert_matches_reference(obj, c, w, s, cm, wm, off):
    """Every term and every gradient (inputs and the objective's parameters) of ``obj`` equal the loop
    reference's, in fp64; returns (terms, gradients)."""
    out = obj(c, w, s, cm, wm, off)
    ref = ref_total(obj, c, w, s, cm, wm, off)
    for key in TERMS:
        assert torch.isfinite(out[key]), key
        torch.testing.assert_close(out[key], ref[key], rtol=1e-9, atol=1e-10, msg=key)
    inputs = [c, w, s] + [p for p in obj.parameters()]
    got = torch.autograd.grad(out["total"], inputs, allow_unused=True)
    want = torch.autograd.grad(ref["total"], inputs, allow_unused=True)
    for n, (a, b) in enumerate(zip(got, want)):
        a = torch.zeros_like(inputs[n]) if a is None else a
        b = torch.zeros_like(inputs[n]) if b is None else b
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10, msg=f"gradient of input #{n}")
    return out, got


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}T{}L{}".format(*s))
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_objective_matches_loop_reference_values_and_gradients(shape, options):
    B, T, L = shape
    torch.manual_seed(1)
    obj = LocVTPObjective(dim=8, stopwords="none", **options).double()
    c, w, s, cm, wm = make_batch(B, T, L, seed=sum(shape), requires_grad=True)
    off = offsets_for(cm, obj.max_offset, seed=B)
    out, got = assert_matches_reference(obj, c, w, s, cm, wm, off)
    # padding receives no gradient
    assert (got[0][~cm] == 0).all() and (got[1][~wm] == 0).all()


def test_individual_functions_match_references():
    c, w, s, cm, wm = make_batch(4, 5, 6, seed=3)
    scale = torch.tensor(12.0, dtype=torch.float64)
    torch.testing.assert_close(coarse_loss(c, s, cm, scale), ref_coarse(c, s, cm, scale))
    f = fine_loss(c, w, cm, wm, topk=2, tau=0.1, intra_negatives=True)
    r = ref_fine(c, w, cm, wm, topk=2, tau=0.1, intra_negatives=True)
    for key in ("fine", "fine_cw", "fine_wc"):
        torch.testing.assert_close(f[key], r[key])
    head = LocVTPObjective(dim=8, stopwords="none", max_offset=2).double().context_head
    off = offsets_for(cm)
    t = temporal_loss(c, w, cm, wm, head, off, topk=2, tau=0.1, sigma=2.0)
    r = ref_temporal(c, w, cm, wm, head, off, topk=2, tau=0.1, sigma=2.0)
    for key in ("temporal", "temporal_z", "temporal_w"):
        torch.testing.assert_close(t[key], r[key])


@pytest.mark.parametrize("topk", [1, 2, 3])
def test_discovered_correspondences_match_reference(topk):
    c, w, s, cm, wm = make_batch(3, 5, 6, seed=topk)
    corr = discover_correspondences(c, w, cm, wm, topk)
    P, Q = ref_correspondences(c, w, cm, wm, topk)
    assert not corr.clip_to_word.requires_grad and corr.clip_to_word.dtype == torch.long
    for (i, t), words in P.items():
        got = corr.clip_to_word[i, t][corr.clip_to_word_mask[i, t]].tolist()
        assert got == words  # same set, same (descending) order
    for (i, l), clips in Q.items():
        assert corr.word_to_clip[i, l][corr.word_to_clip_mask[i, l]].tolist() == clips
    # rows of padded clips / words select nothing
    assert not corr.clip_to_word_mask[~cm].any() and not corr.word_to_clip_mask[~wm].any()


def test_objective_returns_correspondences_and_terms():
    obj = LocVTPObjective(dim=8, stopwords="none", topk=2)
    c, w, s, cm, wm = make_batch(3, 4, 5, dtype=torch.float32)
    out = obj(c, w, s, cm, wm)
    assert out["clip_to_word"].shape == (3, 4, 2) and out["word_to_clip"].shape == (3, 5, 2)
    for key in TERMS:
        assert out[key].dim() == 0 and torch.isfinite(out[key])
    torch.testing.assert_close(out["logit_scale"], torch.tensor(1 / 0.07))
    assert out["offsets"].shape == (3, 4)


def test_edge_cases_have_no_nan():
    obj = LocVTPObjective(dim=8, stopwords="none", topk=3, intra_negatives=True).double()
    for B, T, L in [(1, 1, 1), (2, 1, 1), (1, 4, 1), (1, 1, 4)]:
        c, w, s, cm, wm = make_batch(B, T, L, requires_grad=True)
        out = obj(c, w, s, cm, wm)
        out["total"].backward()
        assert all(torch.isfinite(out[k]) for k in TERMS)
        assert torch.isfinite(c.grad).all() and torch.isfinite(w.grad).all() and torch.isfinite(s.grad).all()
    # B = 1 with top-1: every positive is the whole denominator -> fine and coarse are exactly 0
    c, w, s, cm, wm = make_batch(1, 3, 4)
    out = LocVTPObjective(dim=8, stopwords="none").double()(c, w, s, cm, wm)
    assert out["fine"].item() == 0.0 and out["coarse"].item() == 0.0
    # single-clip videos: no temporal context anywhere -> temporal = 0, excluded
    c, w, s, cm, wm = make_batch(3, 1, 4)
    out = LocVTPObjective(dim=8, stopwords="none").double()(c, w, s, cm, wm)
    assert out["temporal"].item() == 0.0 and (out["offsets"] == 0).all()


def test_unnormalised_and_sharp_temperature_inputs_stay_finite_and_exact():
    # 1/τ = 100 exceeds the no-shift bound: the constant-shift path must still equal the reference
    c, w, s, cm, wm = make_batch(3, 4, 5, seed=7)
    f = fine_loss(c, w, cm, wm, tau=0.01)
    r = ref_fine(c, w, cm, wm, tau=0.01)
    torch.testing.assert_close(f["fine"], r["fine"])
    big = fine_loss(c * 20, w * 20, cm, wm, tau=0.07)
    assert torch.isfinite(big["fine"])
    torch.testing.assert_close(big["fine"], ref_fine(c * 20, w * 20, cm, wm, tau=0.07)["fine"])


def test_gradients_reach_both_encoders_and_the_context_head():
    torch.manual_seed(0)
    B, T, L, Din, D = 4, 5, 6, 12, 8
    video_enc, text_enc = torch.nn.Linear(Din, D), torch.nn.Linear(Din, D)
    obj = LocVTPObjective(dim=D, stopwords="none", topk=2)
    clips_in, words_in = torch.randn(B, T, Din), torch.randn(B, L, Din)
    cm = torch.ones(B, T, dtype=torch.bool)
    wm = torch.ones(B, L, dtype=torch.bool)
    c = F.normalize(video_enc(clips_in), dim=-1)
    w = F.normalize(text_enc(words_in), dim=-1)
    s = F.normalize(text_enc(words_in.mean(1)), dim=-1)
    obj(c, w, s, cm, wm)["total"].backward()
    for name, module in (("video", video_enc), ("text", text_enc), ("g", obj.context_head)):
        for pname, p in module.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reached {name}.{pname}"
    assert obj.logit_scale.grad is not None and obj.logit_scale.grad != 0
    # the temporal term alone also reaches both encoders (through g and the words)
    video_enc.zero_grad(), text_enc.zero_grad()
    obj_t = LocVTPObjective(dim=D, stopwords="none", coarse=False, fine=False, temporal=True)
    c = F.normalize(video_enc(clips_in), dim=-1)
    w = F.normalize(text_enc(words_in), dim=-1)
    obj_t(c, w, s.detach(), cm, wm)["total"].backward()
    assert video_enc.weight.grad.abs().sum() > 0 and text_enc.weight.grad.abs().sum() > 0


def test_no_gradient_through_selection_gradcheck():
    """Hard top-k (k=2) with intra negatives: autograd = finite differences, i.e. the selection is a constant
    index op locally (a gradient "through" the top-k would have to show up as a mismatch)."""
    torch.manual_seed(0)
    obj = LocVTPObjective(dim=6, stopwords="none", topk=2, intra_negatives=False, head="mlp", sigma=2.0).double()
    c, w, s, cm, wm = make_batch(3, 3, 4, D=6, seed=11)
    off = offsets_for(cm)
    sel = discover_correspondences(c, w, cm, wm, 2)

    def f(c_, w_, s_):
        out = obj(c_, w_, s_, cm, wm, off)
        return out["total"]

    inputs = (c.clone().requires_grad_(), w.clone().requires_grad_(), s.clone().requires_grad_())
    assert torch.autograd.gradcheck(f, inputs, fast_mode=True)
    # a small perturbation leaves the discrete selection unchanged and the loss changes smoothly
    sel2 = discover_correspondences(c + 1e-7, w, cm, wm, 2)
    assert torch.equal(sel.clip_to_word, sel2.clip_to_word) and torch.equal(sel.word_to_clip, sel2.word_to_clip)


def test_gradcheck_context_head_and_logit_scale():
    torch.manual_seed(0)
    obj = LocVTPObjective(dim=4, stopwords="none", topk=1, intra_negatives=True, head="linear").double()
    c, w, s, cm, wm = make_batch(2, 3, 3, D=4, seed=5)
    off = offsets_for(cm)
    params = list(obj.parameters())

    names = [n for n, _ in obj.named_parameters()]

    def f(*ps):
        out = torch.func.functional_call(obj, dict(zip(names, ps)), (c, w, s, cm, wm, off))
        return out["total"]

    assert torch.autograd.gradcheck(f, tuple(p.detach().clone().requires_grad_() for p in params))


def test_soft_positive_weights_carry_no_gradient():
    """soft: the weights a are part of the (no-grad) selection: the gradient equals the reference's, which
    treats a as constants, and differs from the gradient one would get by differentiating through a."""
    c, w, s, cm, wm = make_batch(2, 4, 5, seed=2, requires_grad=True)
    got = torch.autograd.grad(fine_loss(c, w, cm, wm, topk=3, soft=True)["fine"], (c, w))
    want = torch.autograd.grad(ref_fine(c, w, cm, wm, topk=3, soft=True)["fine"], (c, w))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("options", [
    {},
    {"topk": 2, "intra_negatives": True, "soft": True, "sigma": 1.0},
    {"temporal_negatives": "warped"},
    {"topk": 2, "intra_negatives": True, "sigma": 1.0, "temporal_negatives": "warped"},
])
def test_batch_permutation_invariance(options):
    obj = LocVTPObjective(dim=8, stopwords="none", **options).double()
    c, w, s, cm, wm = make_batch(5, 4, 6, seed=9)
    off = offsets_for(cm)
    perm = torch.tensor([3, 0, 4, 1, 2])
    a = obj(c, w, s, cm, wm, off)
    b = obj(c[perm], w[perm], s[perm], cm[perm], wm[perm], off[perm])
    for key in TERMS:
        torch.testing.assert_close(a[key], b[key], rtol=1e-12, atol=1e-12, msg=key)
    torch.testing.assert_close(a["clip_to_word"][perm], b["clip_to_word"])


def test_overfit_tiny_batch():
    """Learnable embeddings on a fixed tiny batch: the total loss falls well below its start in 40 steps."""
    torch.manual_seed(0)
    B, T, L, D = 4, 5, 6, 16
    raw_c = torch.nn.Parameter(torch.randn(B, T, D))
    raw_w = torch.nn.Parameter(torch.randn(B, L, D))
    raw_s = torch.nn.Parameter(torch.randn(B, D))
    obj = LocVTPObjective(dim=D, stopwords="none", topk=1)
    cm = torch.ones(B, T, dtype=torch.bool)
    cm[1, 3:] = False
    wm = torch.ones(B, L, dtype=torch.bool)
    wm[2, 4:] = False
    off = offsets_for(cm)
    opt = torch.optim.Adam([raw_c, raw_w, raw_s, *obj.parameters()], lr=0.05)
    losses = []
    for _ in range(40):
        out = obj(F.normalize(raw_c, dim=-1), F.normalize(raw_w, dim=-1), F.normalize(raw_s, dim=-1), cm, wm, off)
        opt.zero_grad()
        out["total"].backward()
        opt.step()
        losses.append(out["total"].item())
    assert losses[-1] < 0.3 * losses[0], losses
    assert all(math.isfinite(v) for v in losses)


@pytest.mark.parametrize("negatives", ["clips", "warped"])
def test_bf16_products_match_reference_at_stated_tolerance(negatives):
    obj32 = LocVTPObjective(dim=32, stopwords="none", topk=2, temporal_negatives=negatives).double()
    obj16 = LocVTPObjective(dim=32, stopwords="none", topk=2, bf16_products=True, temporal_negatives=negatives).double()
    obj16.load_state_dict(obj32.state_dict())
    c, w, s, cm, wm = make_batch(6, 5, 8, D=32, seed=4, requires_grad=True)
    off = offsets_for(cm)
    ref = ref_total(obj32, c, w, s, cm, wm, off)
    out = obj16(c, w, s, cm, wm, off)
    for key in TERMS:
        torch.testing.assert_close(out[key], ref[key], rtol=3e-2, atol=1e-3, msg=key)
    g16 = torch.autograd.grad(out["total"], (c, w))
    g64 = torch.autograd.grad(ref["total"], (c, w))
    for a, b in zip(g16, g64):
        assert (a - b).norm() / b.norm() < 3e-2


def test_draw_offsets_stay_in_window_and_inside_valid_clips():
    cm = torch.zeros(64, 7, dtype=torch.bool)
    n = torch.randint(1, 8, (64,), generator=torch.Generator().manual_seed(0))
    cm = torch.arange(7)[None] < n[:, None]
    off = draw_offsets(cm, 3, generator=torch.Generator().manual_seed(1))
    t = torch.arange(7)[None].expand_as(off)
    has_ctx = cm & (n[:, None] > 1)
    assert ((off != 0) == has_ctx).all()
    assert (off.abs() <= 3).all()
    ctx = t + off
    assert ((ctx >= 0) & (ctx < n[:, None]))[has_ctx].all()
    # uniform over the admissible offsets: the middle clip of 7 valid clips sees all of ±1..±3
    full = torch.ones(4000, 7, dtype=torch.bool)
    mid = draw_offsets(full, 3, generator=torch.Generator().manual_seed(2))[:, 3]
    counts = torch.stack([(mid == d).sum() for d in (-3, -2, -1, 1, 2, 3)]).double()
    assert (counts / counts.sum() - 1 / 6).abs().max() < 0.03


def test_disabled_terms_are_zero_and_excluded_from_total():
    c, w, s, cm, wm = make_batch(3, 4, 5, seed=1)
    off = offsets_for(cm)
    full = LocVTPObjective(dim=8, stopwords="none", weights={"coarse": 2.0, "fine": 0.5, "temporal": 3.0}).double()
    out = full(c, w, s, cm, wm, off)
    torch.testing.assert_close(out["total"], 2.0 * out["coarse"] + 0.5 * out["fine"] + 3.0 * out["temporal"])
    only = LocVTPObjective(dim=8, stopwords="none", fine=False, temporal=False).double()
    only.load_state_dict(full.state_dict())
    o = only(c, w, s, cm, wm, off)
    assert float(o["fine"]) == 0.0 and float(o["temporal"]) == 0.0
    torch.testing.assert_close(o["total"], o["coarse"])
    torch.testing.assert_close(o["coarse"], out["coarse"])
    assert o["clip_to_word"].shape == (3, 4, 1)  # correspondences are still reported for plots
    with pytest.raises(ValueError, match="at least one"):
        LocVTPObjective(coarse=False, fine=False, temporal=False)


def test_from_config_uses_every_field():
    cfg = default_config().objective
    cfg.topk, cfg.max_offset, cfg.sigma, cfg.head, cfg.intra_negatives, cfg.soft = 3, 4, 2.5, "linear", True, True
    cfg.weights.fine = 7.0
    cfg.fine = False
    obj = LocVTPObjective.from_config(cfg, dim=16)
    assert (obj.topk, obj.max_offset, obj.sigma, obj.intra_negatives, obj.soft) == (3, 4, 2.5, True, True)
    assert obj.context_head.kind == "linear" and obj.context_head.window == 4
    assert obj.weights["fine"] == 7.0 and not obj.use_fine
    assert obj.dim == 16
    full = LocVTPObjective.from_config(default_config(), dim=8)
    assert full.use_fine and full.sigma == math.inf and full.gather


def test_invalid_inputs_are_named():
    obj = LocVTPObjective(dim=8, stopwords="none")
    c, w, s, cm, wm = make_batch(3, 4, 5, dtype=torch.float32)
    bad = wm.clone()
    bad[1] = False
    with pytest.raises(ValueError, match=r"sample\(s\) \[1\].*no valid word"):
        obj(c, w, s, cm, bad)
    with pytest.raises(ValueError, match="boolean"):
        fine_loss(c, w, cm.float(), wm)
    off = torch.zeros(3, 4, dtype=torch.long)
    off[0, 0] = 3
    with pytest.raises(ValueError, match=r"offsets\[0,0\] = 3 is outside the temporal window"):
        obj(c, w, s, cm, wm, off)
    with pytest.raises(ValueError, match="topk"):
        LocVTPObjective(topk=0)


def test_runs_in_fp32_under_bf16_autocast():
    """Encoders may run under bf16 autocast; the objective computes in fp32 regardless (same values)."""
    obj = LocVTPObjective(dim=8, stopwords="none")
    c, w, s, cm, wm = make_batch(3, 4, 5, dtype=torch.float32)
    off = offsets_for(cm)
    plain = obj(c, w, s, cm, wm, off)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = obj(c.bfloat16(), w.bfloat16(), s.bfloat16(), cm, wm, off)
    assert auto["total"].dtype == torch.float32
    ref = obj(c.bfloat16().float(), w.bfloat16().float(), s.bfloat16().float(), cm, wm, off)
    torch.testing.assert_close(auto["total"], ref["total"])
    assert abs(plain["total"].item() - auto["total"].item()) < 0.1


# ----------------------------------------------------------------------------------------------------------
# temporal_negatives="warped": the word-anchored temporal term contrasts against warped clips of other videos
# ----------------------------------------------------------------------------------------------------------
WARPED_SHAPES = [(3, 4, 5), (1, 3, 4), (2, 1, 3), (3, 4, 1), (1, 1, 1), (5, 4, 6)]
WARPED_OPTIONS = [
    {},
    {"intra_negatives": True},
    {"topk": 2, "soft": True},
    {"topk": 2, "soft": True, "intra_negatives": True, "sigma": 1.5},
    {"topk": 2},
]


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "masked"])
@pytest.mark.parametrize("shape", WARPED_SHAPES, ids=lambda s: "B{}T{}L{}".format(*s))
@pytest.mark.parametrize("options", WARPED_OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_warped_temporal_negatives_match_loop_reference(shape, options, fused):
    B, T, L = shape
    torch.manual_seed(1)
    obj = LocVTPObjective(dim=8, stopwords="none", temporal_negatives="warped", fused=fused, **options).double()
    c, w, s, cm, wm = make_batch(B, T, L, seed=sum(shape), requires_grad=True)
    if B > 3:  # enough videos with a temporal context that the warped negatives are not trivial
        cm[:, :3] = True
    off = offsets_for(cm, obj.max_offset, seed=B)
    out, got = assert_matches_reference(obj, c, w, s, cm, wm, off)
    assert (got[0][~cm] == 0).all() and (got[1][~wm] == 0).all()
    if B > 3:  # the option changes exactly the word-anchored temporal term
        clips_obj = LocVTPObjective(dim=8, stopwords="none", fused=fused, **options).double()
        clips_obj.load_state_dict(obj.state_dict())
        base = clips_obj(c, w, s, cm, wm, off)
        for key in ("coarse", "fine", "fine_cw", "fine_wc", "temporal_z"):
            torch.testing.assert_close(out[key], base[key], rtol=0, atol=0, msg=key)
        assert abs(out["temporal_w"].item() - base["temporal_w"].item()) > 1e-3


def test_warped_option_of_the_standalone_temporal_loss():
    c, w, s, cm, wm = make_batch(5, 4, 6, seed=8)
    head = LocVTPObjective(dim=8, stopwords="none", max_offset=2).double().context_head
    off = offsets_for(cm)
    t = temporal_loss(c, w, cm, wm, head, off, topk=2, tau=0.1, sigma=2.0, temporal_negatives="warped")
    r = ref_temporal(c, w, cm, wm, head, off, topk=2, tau=0.1, sigma=2.0, temporal_negatives="warped")
    for key in ("temporal", "temporal_z", "temporal_w"):
        torch.testing.assert_close(t[key], r[key])
    with pytest.raises(ValueError, match="temporal_negatives"):
        temporal_loss(c, w, cm, wm, head, off, temporal_negatives="raw")


def test_clips_negatives_are_the_default_and_bit_identical():
    """temporal_negatives="clips" is exactly the behaviour without the option (METHOD.md §3)."""
    torch.manual_seed(0)
    default = LocVTPObjective(dim=8, stopwords="none", topk=2, intra_negatives=True).double()
    explicit = LocVTPObjective(dim=8, stopwords="none", topk=2, intra_negatives=True,
                               temporal_negatives="clips").double()
    explicit.load_state_dict(default.state_dict())
    assert default.temporal_negatives == "clips" and "temporal_negatives='clips'" in repr(default)
    assert LocVTPObjective.from_config(default_config(), dim=8).temporal_negatives == "clips"
    c, w, s, cm, wm = make_batch(5, 4, 6, seed=4)
    off = offsets_for(cm)
    results = []
    for obj in (default, explicit):
        leaves = [t.clone().requires_grad_() for t in (c, w, s)]
        out = obj(*leaves, cm, wm, off)
        results.append((out, torch.autograd.grad(out["total"], leaves + list(obj.parameters()))))
    (a, ga), (b, gb) = results
    for key in TERMS:
        assert torch.equal(a[key], b[key]), key
    assert all(torch.equal(x, y) for x, y in zip(ga, gb))


def test_temporal_negatives_config_key_is_validated():
    from locvtp.config import load_config

    cfg = load_config(overrides=["objective.temporal_negatives=warped"])
    obj = LocVTPObjective.from_config(cfg, dim=8)
    assert obj.temporal_negatives == "warped" and "temporal_negatives='warped'" in repr(obj)
    with pytest.raises(ValueError, match=r"objective\.temporal_negatives='bogus'.*'clips', 'warped'"):
        load_config(overrides=["objective.temporal_negatives=bogus"])  # refused where the config is loaded
    bad = load_config()
    bad.objective.temporal_negatives = "bogus"  # a config edited in code is still checked by the objective
    with pytest.raises(ValueError, match=r"objective\.temporal_negatives.*'clips', 'warped'.*'bogus'"):
        LocVTPObjective.from_config(bad, dim=8)
    with pytest.raises(ValueError, match=r"objective\.temporal_negatives"):
        LocVTPObjective(dim=8, temporal_negatives="raw")


def test_warped_negatives_edge_cases_have_no_nan():
    """B = 1 (no negatives), single-clip videos, and batches where only one video has a temporal context (no
    warped negative at all for any word): defined values, finite gradients."""
    obj = LocVTPObjective(dim=8, stopwords="none", topk=3, intra_negatives=True, temporal_negatives="warped").double()
    plain = LocVTPObjective(dim=8, stopwords="none", temporal_negatives="warped").double()
    for B, T, L in [(1, 1, 1), (2, 1, 1), (1, 4, 1), (1, 1, 4), (1, 3, 4)]:
        for o in (obj, plain):
            c, w, s, cm, wm = make_batch(B, T, L, requires_grad=True)
            out = o(c, w, s, cm, wm)
            out["total"].backward()
            assert all(torch.isfinite(out[k]) for k in TERMS)
            assert torch.isfinite(c.grad).all() and torch.isfinite(w.grad).all()
    # B = 1, top-1, no intra negatives: the positive is the whole denominator
    c, w, s, cm, wm = make_batch(1, 3, 4)
    assert plain(c, w, s, cm, wm)["temporal_w"].item() == 0.0
    # only sample 0 has context clips: the other-video warped negatives are empty (−inf), still no NaN
    for fused in (True, False):
        o = LocVTPObjective(dim=8, stopwords="none", temporal_negatives="warped", fused=fused).double()
        c, w, s, cm, wm = make_batch(3, 4, 5, seed=2, requires_grad=True)
        cm[1:, 1:] = False
        out = o(c, w, s, cm, wm)
        assert out["temporal_w"].item() == 0.0
        out["total"].backward()
        assert torch.isfinite(c.grad).all() and torch.isfinite(w.grad).all()
        assert all(torch.isfinite(p.grad).all() for p in o.parameters() if p.grad is not None)


def test_warped_negatives_gradcheck_through_the_objective():
    torch.manual_seed(0)
    obj = LocVTPObjective(dim=6, stopwords="none", topk=2, intra_negatives=True, temporal_negatives="warped",
                          sigma=2.0).double()
    c, w, s, cm, wm = make_batch(4, 3, 4, D=6, seed=11)
    cm[:, :2] = True
    off = offsets_for(cm)
    names = [n for n, _ in obj.named_parameters()]

    def f(c_, w_, *ps):
        return torch.func.functional_call(obj, dict(zip(names, ps)), (c_, w_, s, cm, wm, off))["total"]

    inputs = (c.clone().requires_grad_(), w.clone().requires_grad_(),
              *(p.detach().clone().requires_grad_() for _, p in obj.named_parameters()))
    assert torch.autograd.gradcheck(f, inputs, fast_mode=True)
