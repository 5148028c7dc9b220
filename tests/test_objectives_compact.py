"""The fused negatives op works on valid rows / columns only (``_OffDiagonalExpSums`` compaction).

Heavy and irregular padding (half the clips and words padded, single-clip videos whose warped rows are all
invalid, a sentence with a single valid word, garbage — even NaN — in padded slots) must give the loop
reference's values and gradients, exactly zero gradient on padded positions, and the same result as the
masked (``fused=False``) path.
"""
from __future__ import annotations


import pytest
import torch
import torch.nn.functional as F

from reference_objectives import _single_thread, ref_total  # noqa: E402,F401  (autouse fixture)

from locvtp.objectives import LocVTPObjective, _temporal_valid, draw_offsets  # noqa: E402
from locvtp.objectives_kernel import OffDiagonalExpSums as _OffDiagonalExpSums  # noqa: E402

TERMS = ("coarse", "fine", "fine_cw", "fine_wc", "temporal", "temporal_z", "temporal_w", "total")




def heavy_padding_batch(B=6, T=6, L=10, D=8, seed=0, dtype=torch.float64):
    """Half of the clips and words padded on average, irregularly; sample 1 and the last sample have a single
    valid clip (no temporal context: all their warped rows are invalid), sample 2 a single valid word and
    sample 3 (if B > 3) two. B >= 3."""
    g = torch.Generator().manual_seed(seed)
    c = F.normalize(torch.randn(B, T, D, generator=g, dtype=dtype), dim=-1)
    w = F.normalize(torch.randn(B, L, D, generator=g, dtype=dtype), dim=-1)
    s = F.normalize(torch.randn(B, D, generator=g, dtype=dtype), dim=-1)
    n_clips = torch.randint(2, T + 1, (B,), generator=g)
    n_clips[1] = n_clips[-1] = 1
    clip_mask = torch.arange(T)[None] < n_clips[:, None]
    word_mask = torch.rand(B, L, generator=g) < 0.5  # scattered, not a prefix
    word_mask[:, 0] = True
    word_mask[2] = False
    word_mask[2, L // 2] = True
    if B > 3:
        word_mask[3] = False
        word_mask[3, [1, L - 1]] = True
    # garbage in the padded slots (large, so that any leak would show)
    c = torch.where(clip_mask[..., None], c, 5.0 * torch.randn(B, T, D, generator=g, dtype=dtype))
    w = torch.where(word_mask[..., None], w, 5.0 * torch.randn(B, L, D, generator=g, dtype=dtype))
    return c, w, s, clip_mask, word_mask


def brute_force_sums(anchors, words, row_ok, word_mask, alpha, segment=0):
    """Σ over other pairs' valid words (per row) / valid rows of ``segment`` (per word; 0 = clips, 1 = warped
    clips), by explicit loops. A valid word without any such row sums to 0."""
    S, B, T, _ = anchors.shape
    L = words.shape[1]
    rows = torch.ones(S, B, T, dtype=torch.float64)
    cols = torch.ones(B, L, dtype=torch.float64)
    a, w = anchors.detach().double(), words.detach().double()
    for s in range(S):
        for i in range(B):
            for t in range(T):
                if row_ok[s, i, t]:
                    rows[s, i, t] = sum(
                        torch.exp(alpha * a[s, i, t] @ w[j, l])
                        for j in range(B) if j != i for l in range(L) if word_mask[j, l]
                    )
    for j in range(B):
        for l in range(L):
            if word_mask[j, l]:
                cols[j, l] = sum(
                    (torch.exp(alpha * a[segment, i, t] @ w[j, l])
                     for i in range(B) if i != j for t in range(T) if row_ok[segment, i, t]),
                    torch.zeros((), dtype=torch.float64),
                )
    return rows, cols


@pytest.mark.parametrize(
    "options",
    [{}, {"topk": 3, "soft": True}, {"topk": 2, "intra_negatives": True, "sigma": 1.0},
     {"temporal_negatives": "warped"}, {"topk": 2, "intra_negatives": True, "temporal_negatives": "warped"}],
    ids=["default", "top3-soft", "top2-intra", "warped", "top2-intra-warped"],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_heavy_padding_matches_loop_reference_and_padding_gets_zero_gradient(options, seed):
    torch.manual_seed(seed)
    obj = LocVTPObjective(dim=8, stopwords="none", **options).double()
    c, w, s, cm, wm = heavy_padding_batch(seed=seed)
    c.requires_grad_(), w.requires_grad_(), s.requires_grad_()
    off = draw_offsets(cm, obj.window, generator=torch.Generator().manual_seed(seed))
    assert (off[1] == 0).all() and (off[-1] == 0).all()  # single-clip videos: no warped row is valid
    out = obj(c, w, s, cm, wm, off)
    ref = ref_total(obj, c, w, s, cm, wm, off)
    for key in TERMS:
        torch.testing.assert_close(out[key], ref[key], rtol=1e-9, atol=1e-10, msg=key)
    inputs = [c, w, s, *obj.parameters()]
    got = torch.autograd.grad(out["total"], inputs, allow_unused=True)
    want = torch.autograd.grad(ref["total"], inputs, allow_unused=True)
    for n, (a, b) in enumerate(zip(got, want)):
        a = torch.zeros_like(inputs[n]) if a is None else a
        b = torch.zeros_like(inputs[n]) if b is None else b
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10, msg=f"gradient of input #{n}")
    assert (got[0][~cm] == 0).all() and (got[1][~wm] == 0).all()


@pytest.mark.parametrize("negatives", ["clips", "warped"])
def test_fp32_fused_equals_masked_path_and_loop_reference(negatives):
    torch.manual_seed(0)
    fused = LocVTPObjective(dim=32, stopwords="none", temporal_negatives=negatives)
    masked = LocVTPObjective(dim=32, stopwords="none", fused=False, temporal_negatives=negatives)
    masked.load_state_dict(fused.state_dict())
    c, w, s, cm, wm = heavy_padding_batch(B=12, T=8, L=14, D=32, seed=3, dtype=torch.float32)
    off = draw_offsets(cm, 2, generator=torch.Generator().manual_seed(3))
    leaves = [t.clone().requires_grad_() for t in (c, w, s)]
    a = fused(*leaves, cm, wm, off)
    ga = torch.autograd.grad(a["total"], leaves)
    leaves_m = [t.clone().requires_grad_() for t in (c, w, s)]
    b = masked(*leaves_m, cm, wm, off)
    gb = torch.autograd.grad(b["total"], leaves_m)
    for key in TERMS:
        torch.testing.assert_close(a[key], b[key], rtol=1e-6, atol=1e-6, msg=key)
    for x, y in zip(ga, gb):
        torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-6)
    # and both equal the fp64 loop reference
    obj64 = LocVTPObjective(dim=32, stopwords="none", temporal_negatives=negatives).double()
    obj64.load_state_dict(fused.state_dict())
    ref = ref_total(obj64, c.double(), w.double(), s.double(), cm, wm, off)
    for key in TERMS:
        torch.testing.assert_close(a[key].double(), ref[key], rtol=1e-5, atol=1e-6, msg=key)


def _op_inputs(seed=0, B=4, T=3, L=5, D=6, dtype=torch.float64):
    c, w, _, cm, wm = heavy_padding_batch(B=B, T=T, L=L, D=D, seed=seed, dtype=dtype)
    off = draw_offsets(cm, 2, generator=torch.Generator().manual_seed(seed))
    _, ref_ok = _temporal_valid(cm, off, 2)
    z = F.normalize(torch.randn(B, T, D, generator=torch.Generator().manual_seed(seed + 9), dtype=dtype), dim=-1)
    anchors = torch.stack([c, z])
    return anchors, w, torch.stack([cm, ref_ok]), wm


@pytest.mark.parametrize("bf16", [False, True], ids=["fp64", "bf16"])
def test_op_sums_equal_brute_force_and_invalid_slots_hold_one(bf16):
    anchors, w, row_ok, wm = _op_inputs(seed=1)
    alpha = 1 / 0.07
    rows, cols = _OffDiagonalExpSums.apply(anchors, w, row_ok, wm, alpha, bf16)
    want_rows, want_cols = brute_force_sums(anchors, w, row_ok, wm, alpha)
    if bf16:  # bf16 operands (each rounded by ≤ 2^-9 relative): |Δlogit| ≤ α·|a|·|w|·2^-8 ≈ 0.056, plus
        # the roundings of each exp entry and of the sum (2^-9 each); compare log-sums
        torch.testing.assert_close(rows.log(), want_rows.log(), rtol=0, atol=0.07)
        torch.testing.assert_close(cols.log(), want_cols.log(), rtol=0, atol=0.07)
    else:
        torch.testing.assert_close(rows, want_rows, rtol=1e-12, atol=0)
        torch.testing.assert_close(cols, want_cols, rtol=1e-12, atol=0)
    assert (rows[~row_ok] == 1).all() and (cols[~wm] == 1).all()


def test_op_gradcheck_on_padded_input():
    """fp64 gradcheck of the compact op itself (padded rows hold garbage: their numerical gradient is 0)."""
    anchors, w, row_ok, wm = _op_inputs(seed=2, B=3, T=3, L=4, D=4)
    a, w = anchors.clone().requires_grad_(), w.clone().requires_grad_()

    def f(a_, w_):
        rows, cols = _OffDiagonalExpSums.apply(a_, w_, row_ok, wm, 2.0, False)
        return rows.log(), cols.log()

    assert torch.autograd.gradcheck(f, (a, w))
    rows, cols = f(a, w)
    ga, gw = torch.autograd.grad((rows.sum() + cols.sum()), (a, w))
    assert (ga[~row_ok] == 0).all() and (gw[~wm] == 0).all()
    assert (ga[row_ok] != 0).any() and (gw[wm] != 0).any()


def test_op_ignores_non_finite_padding_and_handles_edge_layouts():
    anchors, w, row_ok, wm = _op_inputs(seed=4)
    clean = _OffDiagonalExpSums.apply(anchors, w, row_ok, wm, 3.0, False)
    a_nan = torch.where(row_ok[..., None], anchors, torch.full_like(anchors, float("nan"))).requires_grad_()
    w_inf = torch.where(wm[..., None], w, torch.full_like(w, float("inf"))).requires_grad_()
    rows, cols = _OffDiagonalExpSums.apply(a_nan, w_inf, row_ok, wm, 3.0, False)
    torch.testing.assert_close(rows, clean[0], rtol=0, atol=0)
    torch.testing.assert_close(cols, clean[1], rtol=0, atol=0)
    ga, gw = torch.autograd.grad(rows.log().sum() + cols.log().sum(), (a_nan, w_inf))
    assert torch.isfinite(ga).all() and torch.isfinite(gw).all()
    # no valid warped row at all (segment 1 empty): segment-1 sums are all 1, segment 0 unchanged
    no_z = row_ok.clone()
    no_z[1] = False
    r1, c1 = _OffDiagonalExpSums.apply(anchors, w, no_z, wm, 3.0, False)
    assert (r1[1] == 1).all()
    torch.testing.assert_close(r1[0], clean[0][0], rtol=1e-12, atol=0)
    torch.testing.assert_close(c1, clean[1], rtol=1e-12, atol=0)
    # a sample without any valid word (forbidden by the objective, tolerated by the op): it has no own block
    wm0 = wm.clone()
    wm0[0] = False
    r0, c0 = _OffDiagonalExpSums.apply(anchors, w, row_ok, wm0, 3.0, False)
    want_r, want_c = brute_force_sums(anchors, w, row_ok, wm0, 3.0)
    torch.testing.assert_close(r0, want_r, rtol=1e-12, atol=0)
    torch.testing.assert_close(c0, want_c, rtol=1e-12, atol=0)


@pytest.mark.parametrize("bf16", [False, True], ids=["fp64", "bf16"])
def test_op_second_backward_recomputes_the_consumed_exp_matrix(bf16):
    """The backward builds its gradient matrix in the exp matrix's buffer; a second backward through the same
    graph (retain_graph=True) must recompute it and give the same gradients."""
    anchors, w, row_ok, wm = _op_inputs(seed=5)
    a, w = anchors.clone().requires_grad_(), w.clone().requires_grad_()
    rows, cols = _OffDiagonalExpSums.apply(a, w, row_ok, wm, 1 / 0.07, bf16)
    weights = torch.linspace(0.5, 2.0, cols.numel(), dtype=cols.dtype).view_as(cols)
    loss = rows.log().sum() + (cols.log() * weights).sum()
    first = torch.autograd.grad(loss, (a, w), retain_graph=True)
    second = torch.autograd.grad(loss, (a, w))
    for x, y in zip(first, second):
        assert torch.isfinite(x).all()
        torch.testing.assert_close(x, y, rtol=1e-12, atol=0)


# ----------------------------------------------------------------------------------------------------------
# warped_cols (temporal_negatives="warped"): column sums over the segment-1 rows of the same exp matrix
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bf16", [False, True], ids=["fp64", "bf16"])
def test_op_warped_column_sums_equal_brute_force(bf16):
    anchors, w, row_ok, wm = _op_inputs(seed=1)
    alpha = 1 / 0.07
    rows, cols, cols_z = _OffDiagonalExpSums.apply(anchors, w, row_ok, wm, alpha, bf16, True)
    plain_rows, plain_cols = _OffDiagonalExpSums.apply(anchors, w, row_ok, wm, alpha, bf16, False)
    assert torch.equal(rows, plain_rows) and torch.equal(cols, plain_cols)  # the option only adds an output
    _, want = brute_force_sums(anchors, w, row_ok, wm, alpha, segment=1)
    assert (want[wm] > 0).all()  # the input has warped rows in several samples
    if bf16:
        torch.testing.assert_close(cols_z.log(), want.log(), rtol=0, atol=0.07)
    else:
        torch.testing.assert_close(cols_z, want, rtol=1e-12, atol=0)
    assert (cols_z[~wm] == 1).all()


def test_op_gradcheck_with_warped_columns_on_padded_input():
    anchors, w, row_ok, wm = _op_inputs(seed=2, B=4, T=3, L=4, D=4)
    assert row_ok[1].sum(1).gt(0).sum() >= 2  # warped rows in at least two samples: non-empty cols_z
    a, w = anchors.clone().requires_grad_(), w.clone().requires_grad_()

    def f(a_, w_):
        rows, cols, cols_z = _OffDiagonalExpSums.apply(a_, w_, row_ok, wm, 2.0, False, True)
        return rows.log(), cols.log(), cols_z.log()

    assert torch.autograd.gradcheck(f, (a, w))
    rows, cols, cols_z = f(a, w)
    ga, gw = torch.autograd.grad(cols_z.sum(), (a, w))  # cols_z alone: gradient reaches segment 1 only
    assert (ga[~row_ok] == 0).all() and (gw[~wm] == 0).all()
    assert (ga[0] == 0).all() and (ga[1][row_ok[1]] != 0).any()


@pytest.mark.parametrize("bf16", [False, True], ids=["fp64", "bf16"])
def test_op_warped_columns_second_backward(bf16):
    anchors, w, row_ok, wm = _op_inputs(seed=5)
    a, w = anchors.clone().requires_grad_(), w.clone().requires_grad_()
    rows, cols, cols_z = _OffDiagonalExpSums.apply(a, w, row_ok, wm, 1 / 0.07, bf16, True)
    weights = torch.linspace(0.5, 2.0, cols.numel(), dtype=cols.dtype).view_as(cols)
    loss = rows.log().sum() + (cols.log() * weights).sum() + (cols_z.log() * weights.flip(0)).sum()
    first = torch.autograd.grad(loss, (a, w), retain_graph=True)
    second = torch.autograd.grad(loss, (a, w))
    for x, y in zip(first, second):
        assert torch.isfinite(x).all()
        torch.testing.assert_close(x, y, rtol=1e-12, atol=0)


def test_op_warped_columns_without_other_warped_rows_are_zero():
    """Only one sample has valid warped rows: its own words see none (sum 0), the others see its rows."""
    anchors, w, row_ok, wm = _op_inputs(seed=4)
    only = row_ok.clone()
    keep = int(row_ok[1].sum(1).argmax())
    only[1] = False
    only[1, keep] = row_ok[1, keep]
    _, _, cols_z = _OffDiagonalExpSums.apply(anchors, w, only, wm, 3.0, False, True)
    _, want = brute_force_sums(anchors, w, only, wm, 3.0, segment=1)
    torch.testing.assert_close(cols_z, want, rtol=1e-12, atol=0)
    assert (cols_z[keep][wm[keep]] == 0).all()
