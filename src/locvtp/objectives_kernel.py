"""The fused negatives kernel of LocVTP's fine-grained and temporal terms (docs/method.md, "How it is computed").

``negative_log_sums`` returns, for every anchor row (clips, warped clips) and every word column, the log-sum-exp
of its logits against the *other* pairs of the global batch. The fast path is the custom autograd op
``OffDiagonalExpSums`` (valid rows / columns only, one GEMM, exp and own-pair zeroing in place); when the
logits might overflow it falls back to ``negative_log_sums_masked`` (plain autograd, exact). ``OwnPairLogits``
is the diagonal-block product with a contiguous backward. The losses that use them are in
:mod:`locvtp.objectives`.
"""
from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

__all__ = ["NO_SHIFT_BOUND", "OffDiagonalExpSums", "OwnPairLogits", "negative_log_sums", "negative_log_sums_masked",
           "safe_lse"]

# exp(x) is safe in fp32 for x <= ~88; with L2-normalised inputs the logits are bounded by 1/τ, so below this
# bound no shift is needed at all (saves one pass over the big matrix).
NO_SHIFT_BOUND = 60.0


def safe_lse(x: torch.Tensor, mask: torch.Tensor, dim: int) -> torch.Tensor:
    """log Σ_{mask} exp(x) along ``dim``; −inf for an empty set, with finite (zero) gradients there."""
    x = x.masked_fill(~mask, float("-inf"))
    m = x.amax(dim=dim, keepdim=True).detach()
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    s = (x - m).exp().sum(dim=dim)
    ok = s > 0
    out = torch.log(torch.where(ok, s, torch.ones_like(s))) + m.squeeze(dim)
    return torch.where(ok, out, torch.full_like(out, float("-inf")))



class OffDiagonalExpSums(torch.autograd.Function):
    """Row / column sums of exp(α·A·Wᵀ) over the off-diagonal (other-pair) blocks, on valid rows / columns only.

    anchors [S,B,T,D] (S = 1: clips; S = 2: clips then warped clips), words [B,L,D]; ``row_ok`` [S,B,T] marks
    the valid anchor rows (segment 0: the clip mask; segment 1: the temporal ``ref_ok``), ``word_mask`` [B,L]
    the valid words. Every sample must have at least one valid word (the losses' input check guarantees it).

    Returns rows [S,B,T] = Σ_{valid words of other pairs} e^{α a·w} and cols [B,L] = Σ_{valid clips (segment 0)
    of other pairs} e^{α a·w}, in the inputs' dtype (with ``bf16``: accumulated in fp32, rounded to bf16 once).
    With ``warped_cols`` (S = 2) a third output cols_z [B,L] = Σ_{valid warped clips (segment 1) of other
    pairs} e^{α z·w}: one more reduction of the same exp matrix (``temporal_negatives="warped"``); it is 0 for
    a valid word when no other pair has a valid warped clip (the caller takes a safe log).
    Invalid slots hold 1 (a harmless log 0; callers mask them) and padded rows / words get exactly zero
    gradient, whatever they hold. Only valid when α·|a|·|w| stays below ``NO_SHIFT_BOUND`` (no
    max-subtraction); ``negative_log_sums`` checks that.

    Layout (compact valid rows A_v [R,D] in (segment, sample, clip) order and words W_v [C,D]; own-pair
    rectangles zeroed in place, never subtracted) and the backward: docs/method.md, "How it is computed".
    """

    @staticmethod
    def forward(ctx, anchors, words, row_ok, word_mask, alpha: float, bf16: bool, warped_cols: bool = False):
        S, B, T, D = anchors.shape
        if warped_cols and S != 2:
            raise ValueError(f"warped_cols needs the warped clips as segment 1 (S = 2), got S = {S}")
        L = words.shape[1]
        dtype = anchors.dtype
        mm_dtype = torch.bfloat16 if bf16 else dtype
        r_idx = row_ok.reshape(-1).nonzero().squeeze(1)  # ascending: segment 0 rows come first
        c_idx = word_mask.reshape(-1).nonzero().squeeze(1)
        n0 = int(row_ok[0].sum())
        R, C = r_idx.numel(), c_idx.numel()
        # α·A_v (scaled before any bf16 rounding: one rounding per operand) and W_v
        A = anchors.reshape(S * B * T, D).index_select(0, r_idx).mul_(alpha).to(mm_dtype)
        W = words.reshape(B * L, D).index_select(0, c_idx).to(mm_dtype)
        # own-pair rectangles: row r (sample b) × the n_words[b] columns starting at col_start[b]. Each row
        # gets max(n_words) flat indices, the surplus ones repeating its last own column (zeroing twice is
        # harmless).
        n_words = word_mask.sum(1)
        col_start = n_words.cumsum(0) - n_words
        row_sample = torch.div(r_idx % (B * T), T, rounding_mode="floor")
        j = torch.arange(int(n_words.max()), device=A.device)
        j = torch.minimum(j[None, :], (n_words[row_sample] - 1)[:, None])
        own = (torch.arange(R, device=A.device) * C + col_start[row_sample])[:, None] + j
        if bool((n_words == 0).any()):  # a sample without words has no own rectangle (callers forbid it)
            own = own[n_words[row_sample] > 0]
        own = own.reshape(-1)
        E = OffDiagonalExpSums._exp_matrix(A, W, own)
        # bf16 E: the sums accumulate in fp32 inside the reduction kernel and are rounded to bf16 once (relative
        # 2^-8, the same order as the rounding of each exp entry); sum(dtype=float32) would first convert the
        # whole matrix (an extra pass over it)
        rows = anchors.new_ones(S * B * T).index_copy_(0, r_idx, E.sum(1).to(dtype))
        cols = anchors.new_ones(B * L).index_copy_(0, c_idx, E[:n0].sum(0).to(dtype))
        ctx.save_for_backward(A, W, r_idx, c_idx, own)
        ctx.E = E  # an intermediate, kept on ctx (not an input/output of the op); consumed by the backward
        ctx.meta = (S, B, T, L, D, n0, alpha, dtype, bool(warped_cols))
        if not warped_cols:
            return rows.view(S, B, T), cols.view(B, L)
        cols_z = anchors.new_ones(B * L).index_copy_(0, c_idx, E[n0:].sum(0).to(dtype))
        return rows.view(S, B, T), cols.view(B, L), cols_z.view(B, L)

    @staticmethod
    def _exp_matrix(A, W, own):
        """E = exp(A·Wᵀ) with the own-pair entries (flat indices ``own``) set to 0, computed in place."""
        E = torch.mm(A, W.t())  # bf16: half the memory traffic of the whole big-matrix pipeline
        E.exp_()
        E.view(-1).index_fill_(0, own, 0.0)
        return E

    @staticmethod
    @once_differentiable
    def backward(ctx, g_rows, g_cols, g_cols_z=None):
        A, W, r_idx, c_idx, own = ctx.saved_tensors
        S, B, T, L, D, n0, alpha, dtype, warped_cols = ctx.meta
        # dL/d(αa·w)[r,c] = E[r,c]·(g_rows[r] + [r in segment 0]·g_cols[c] + [r in segment 1]·g_cols_z[c])
        # =: G[r,c] (the g_cols_z part only with ``warped_cols``); d_A = α·G·W_v and d_W = Gᵀ·(α·A_v) (A holds
        # α·A_v). G is built in E's buffer: a fresh matrix of that size costs more than the multiply itself
        # (first-touch page faults), and E is not needed afterwards. A second backward through the same graph
        # (retain_graph=True, gradcheck) finds E consumed and recomputes it.
        G = ctx.E if ctx.E is not None else OffDiagonalExpSums._exp_matrix(A, W, own)
        ctx.E = None
        gr = g_rows.reshape(-1).index_select(0, r_idx).to(G.dtype)[:, None]
        gc = g_cols.reshape(-1).index_select(0, c_idx).to(G.dtype)[None, :]
        # segment 0 (clips): G *= g_r ⊕ g_c; segment 1 (warped clips): G *= g_r, or g_r ⊕ g_cz when the warped
        # clips are the word-anchored temporal negatives too. (Forming the broadcast sum in cache-sized row
        # blocks measured no faster than this, side by side.)
        G[:n0].mul_(gr[:n0] + gc)
        if warped_cols:
            G[n0:].mul_(gr[n0:] + g_cols_z.reshape(-1).index_select(0, c_idx).to(G.dtype)[None, :])
        else:
            G[n0:].mul_(gr[n0:])
        # scatter into zero full-size gradients: padded rows / words get exactly 0
        d_a = A.new_zeros(S * B * T, D, dtype=dtype).index_copy_(0, r_idx, torch.mm(G, W).to(dtype).mul_(alpha))
        d_w = W.new_zeros(B * L, D, dtype=dtype).index_copy_(0, c_idx, torch.mm(G.t(), A).to(dtype))
        return d_a.view(S, B, T, D), d_w.view(B, L, D), None, None, None, None, None


class OwnPairLogits(torch.autograd.Function):
    """α·bmm(a, wᵀ) [B,T,L] for a [B,T,D], w [B,L,D], with a backward that returns both gradients contiguous
    in the inputs' layout (autograd's bmm backward of ``w.transpose(1, 2)`` gives a transposed [B,L,D] view,
    which then makes every later pass over the word gradient — accumulation, masking — a strided one)."""

    @staticmethod
    def forward(ctx, a, w, alpha: float):
        ctx.save_for_backward(a, w)
        ctx.alpha = alpha
        return torch.bmm(a, w.transpose(1, 2)).mul_(alpha)

    @staticmethod
    def backward(ctx, g):
        a, w = ctx.saved_tensors
        g = g * ctx.alpha
        return torch.bmm(g, w), torch.bmm(g.transpose(1, 2), a), None


def negative_log_sums_masked(anchors, words, clip_mask, word_mask, alpha, warped_ok=None):
    """Plain-autograd version (explicit block mask, max-subtracted log-sum-exp): exact for any input scale.

    Used when the logits may exceed the fast path's no-shift bound (unnormalised inputs or a tiny τ).
    With ``warped_ok`` [B,T] (the valid warped rows of segment 1) it also returns the column log-sums over the
    valid warped clips of the other pairs (−inf where there are none).
    """
    S, B, T, D = anchors.shape
    L = words.shape[1]
    x = (anchors.reshape(S * B * T, D) @ words.reshape(B * L, D).t() * alpha).view(S, B, T, B, L)
    other = ~torch.eye(B, dtype=torch.bool, device=x.device)
    row_ok = (other[None, :, None, :, None] & word_mask[None, None, None]).expand(S, B, T, B, L)
    rows = safe_lse(x.reshape(S, B, T, B * L), row_ok.reshape(S, B, T, B * L), dim=-1)

    def col_lse(seg, ok):
        col_ok = other[:, None, :, None] & ok[:, :, None, None]  # [B,T,B,L]
        return safe_lse(x[seg].reshape(B * T, B, L), col_ok.expand(B, T, B, L).reshape(B * T, B, L), dim=0)

    if warped_ok is None:
        return rows, col_lse(0, clip_mask)
    return rows, col_lse(0, clip_mask), col_lse(1, warped_ok)


def negative_log_sums(anchors, words, row_ok, word_mask, tau, bf16, fused=True, warped_cols=False):
    """log Σ_{other pairs} exp(logit) per anchor row [S,B,T] and per word column [B,L] (−inf when B = 1).

    ``row_ok`` [S,B,T] marks the valid anchor rows; ``row_ok[0]`` is the clip mask (the column sums run over the
    valid clips of segment 0). Invalid rows / words hold an arbitrary finite value: callers mask them.
    ``warped_cols`` (S = 2) adds a third result: the column log-sums over the valid warped clips (segment 1,
    ``row_ok[1]``) of the other pairs, −inf (with zero gradient) where no other pair has one.
    """
    S, B, T, _ = anchors.shape
    L = words.shape[1]
    if B == 1:
        empty = (anchors.new_full((S, B, T), float("-inf")), anchors.new_full((B, L), float("-inf")))
        return empty + (anchors.new_full((B, L), float("-inf")),) if warped_cols else empty
    alpha = 1.0 / tau
    with torch.no_grad():  # Cauchy–Schwarz bound on the logits decides whether exp needs a max-subtraction
        bound = alpha * float(anchors.norm(dim=-1).max()) * float(words.norm(dim=-1).max())
    if bound > NO_SHIFT_BOUND or not fused:
        return negative_log_sums_masked(
            anchors, words, row_ok[0], word_mask, alpha, row_ok[1] if warped_cols else None
        )
    # every valid row / column has at least one other pair with a valid word / clip, and exp(x) >= e^-60:
    # sums > 0 (invalid slots hold 1)
    if not warped_cols:
        rows, cols = OffDiagonalExpSums.apply(anchors, words, row_ok, word_mask, alpha, bf16, False)
        return rows.log(), cols.log()
    rows, cols, cols_z = OffDiagonalExpSums.apply(anchors, words, row_ok, word_mask, alpha, bf16, True)
    # cols_z is 0 where no other pair has a valid warped clip: log 0 = −inf there, with zero gradient (the
    # where() keeps the 1/0 of log's backward out of the graph)
    has = cols_z > 0
    log_z = torch.where(has, cols_z, torch.ones_like(cols_z)).log()
    return rows.log(), cols.log(), torch.where(has, log_z, torch.full_like(log_z, float("-inf")))


# ----------------------------------------------------------------------------------------------------------
