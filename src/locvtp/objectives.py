"""LocVTP's three pre-training objectives (``../shared/METHOD.md``; our reading of it is ``docs/method.md``).

* ``coarse_loss``  — §1, symmetric InfoNCE between video and sentence embeddings (learnable CLIP logit scale);
* ``fine_loss``    — §2, clip↔word contrast with correspondences discovered by top-k on the current similarities;
* ``temporal_loss``— §3, the context projection head g warps a neighbouring clip to the reference position and
  the warped feature is contrasted like the reference clip, weighted by ω(δ) = exp(−|δ|/σ);
* ``LocVTPObjective`` — the ``nn.Module`` that owns g and the logit scale, gathers features from all ranks,
  draws the context offsets and returns every term (plus the discovered correspondences, for plots).

How it is computed (why it is fast). Both contrastive directions of §2 and the warped-clip terms of §3 need,
for every anchor, a log-sum-exp over *all valid words (clips) of the other pairs of the global batch*. Those
negatives live in the off-diagonal blocks of the (B·T)×(B·L) similarity matrix; the positives (and the
optional intra-pair negatives) live in its B diagonal T×L blocks. So we

1. compute the diagonal blocks with one small ``bmm`` (B·T·L entries, ordinary autograd through a thin
   wrapper whose backward keeps the word gradient contiguous): positives are index gathers from it, and
   correspondence discovery is a ``topk`` on it under ``no_grad``;
2. compute the off-diagonal exp-sums with one custom autograd op (``_OffDiagonalExpSums``) that works on the
   *valid* rows and columns only. Padded clips, padded / special words and warped clips without a context
   (δ = 0, context outside the video) contribute nothing to any sum, yet with realistic padding they are a
   quarter or more of each side, so the op first gathers the valid anchors ([clips; warped clips]) and the
   valid words into compact matrices (``nonzero`` indices, one ``index_select`` each). Then: a single GEMM
   (the fine and temporal terms share it, and the temporal word-anchored negatives are exactly the fine
   word-anchored ones — or, with ``temporal_negatives="warped"``, the column sums over the warped-clip rows of
   the same matrix), an in-place ``exp``, the own-pair entries zeroed in place (in compact layout they are
   variable-sized rectangles, addressed by flat indices built from the per-sample word counts; zeroed, not
   subtracted afterwards, which would cancel catastrophically next to a positive of e^14), and the row /
   column sums; the results are scattered back to [S,B,T] / [B,L] with a harmless 1 (log 0) in invalid slots,
   which the callers mask. No (B·T)×(B·L) mask is ever built and no masked copy is made. Its backward forms
   E∘(g_row ⊕ g_col) in E's own buffer (a fresh matrix of that size costs more in first-touch page faults
   than the multiply; a second backward recomputes E), runs the two GEMMs and scatters into zero full-size
   gradients, so padded positions get exactly zero gradient. With ~75 % valid clips and ~70 % valid words the three
   GEMMs and every pass over the exp matrix shrink to about half of the padded size. Inputs are
   L2-normalised, so |logit| ≤ 1/τ and the exponentials need no max-subtraction; when a Cauchy–Schwarz bound
   says they might overflow (unnormalised inputs or a tiny τ) a plain masked log-sum-exp (exact, slower) is
   used instead.

The context head g, too, runs on the valid warped clips only (the others would be discarded).

Optionally (``bf16_products=True``) the big-matrix pipeline runs in bfloat16: the three GEMMs, the exp matrix
and the backward's gradient matrix are bf16 (half the memory traffic, no conversion passes); the row / column
sums accumulate in fp32 inside the reduction kernel and are rounded to bf16 once; everything on the small
B·T·L tensors stays fp32. The loop-reference tests pass at rtol 3e-2 in that mode (``tests/test_objectives.py``);
at B=128, T=10, L=32 the loss differs from fp64 by ~1e-5 relative and the input gradients by ~5e-4.

Edge cases are defined, never NaN: B = 1 has no negatives (fine terms with k = 1 are then 0); a sample with a
single valid clip has no temporal context, so its temporal terms are excluded; a sample with no valid clip or
no valid word is a data error and raises ``ValueError`` naming the sample.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from locvtp.distributed import all_gather_nograd, all_gather_sizes, all_gather_with_grad, is_distributed
from locvtp.model.heads import ContextProjectionHead

__all__ = [
    "Correspondences",
    "LocVTPObjective",
    "coarse_loss",
    "content_words",
    "discover_correspondences",
    "draw_offsets",
    "fine_loss",
    "fine_temporal_losses",
    "stopword_ids",
    "temporal_loss",
    "video_embedding",
]

# exp(x) is safe in fp32 for x <= ~88; with L2-normalised inputs the logits are bounded by 1/τ, so below this
# bound no shift is needed at all (saves one pass over the big matrix).
_NO_SHIFT_BOUND = 60.0


# ----------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------
def _safe_lse(x: torch.Tensor, mask: torch.Tensor, dim: int) -> torch.Tensor:
    """log Σ_{mask} exp(x) along ``dim``; −inf for an empty set, with finite (zero) gradients there."""
    x = x.masked_fill(~mask, float("-inf"))
    m = x.amax(dim=dim, keepdim=True).detach()
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    s = (x - m).exp().sum(dim=dim)
    ok = s > 0
    out = torch.log(torch.where(ok, s, torch.ones_like(s))) + m.squeeze(dim)
    return torch.where(ok, out, torch.full_like(out, float("-inf")))


def _masked_mean(x: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """(Weighted) mean of x over mask; 0 (still attached to the graph) when the mask is empty."""
    w = mask.to(x.dtype) if weight is None else torch.where(mask, weight.to(x.dtype), torch.zeros_like(x))
    x = torch.where(mask, x, torch.zeros_like(x))
    return (x * w).sum() / w.sum().clamp_min(torch.finfo(x.dtype).tiny)


def _check_inputs(clips, words, clip_mask, word_mask) -> None:
    if clips.dim() != 3 or words.dim() != 3:
        raise ValueError(f"clips must be [B,T,D] and words [B,L,D]; got {tuple(clips.shape)} and {tuple(words.shape)}")
    B, T, D = clips.shape
    if words.shape[0] != B or words.shape[2] != D:
        raise ValueError(f"words {tuple(words.shape)} do not match clips {tuple(clips.shape)} (batch and dim)")
    if tuple(clip_mask.shape) != (B, T) or tuple(word_mask.shape) != (B, words.shape[1]):
        raise ValueError(
            f"clip_mask {tuple(clip_mask.shape)} / word_mask {tuple(word_mask.shape)} must be [B,T]={B, T} "
            f"and [B,L]={B, words.shape[1]}"
        )
    if clip_mask.dtype != torch.bool or word_mask.dtype != torch.bool:
        raise ValueError(f"masks must be boolean tensors, got {clip_mask.dtype} and {word_mask.dtype}")
    for name, mask in (("clip", clip_mask), ("word", word_mask)):
        empty = (~mask.any(dim=1)).nonzero().flatten()
        if empty.numel():
            raise ValueError(
                f"sample(s) {empty.tolist()[:10]} of the batch have no valid {name} (all of {name}_mask is False); "
                "every video-text pair needs at least one clip and one word"
            )


def _outside_autocast(fn):
    """Run a loss with autocast disabled (its first argument decides the device): the encoders may run under
    bf16 autocast, the losses must not."""

    @functools.wraps(fn)
    def wrapper(clips: torch.Tensor, *args, **kwargs):
        with torch.autocast(device_type=clips.device.type, enabled=False):
            return fn(clips, *args, **kwargs)

    return wrapper


def _as_float(x: torch.Tensor) -> torch.Tensor:
    """Losses run in fp32 (or fp64 for gradient checks), whatever the encoders' autocast dtype."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def video_embedding(clips: torch.Tensor, clip_mask: torch.Tensor) -> torch.Tensor:
    """v[i] = normalize(mean of the valid clips of video i)  (METHOD.md notation)."""
    m = clip_mask.to(clips.dtype).unsqueeze(-1)
    mean = (clips * m).sum(1) / m.sum(1).clamp_min(1.0)
    return F.normalize(mean, dim=-1)


# ----------------------------------------------------------------------------------------------------------
# §1 coarse
# ----------------------------------------------------------------------------------------------------------
@_outside_autocast
def coarse_loss(
    clips: torch.Tensor, sentence: torch.Tensor, clip_mask: torch.Tensor, logit_scale: torch.Tensor | float
) -> torch.Tensor:
    """L_c = ½(CE(s_c·v sᵀ, I) + CE(s_c·s vᵀ, I)) over the (global) batch; ``logit_scale`` = 1/τ_c."""
    v = video_embedding(_as_float(clips), clip_mask)
    logits = logit_scale * (v @ _as_float(sentence).t())
    target = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


# ----------------------------------------------------------------------------------------------------------
# §2 correspondence discovery
# ----------------------------------------------------------------------------------------------------------
@dataclass
class Correspondences:
    """Discovered clip↔word correspondences of each pair (indices into its own clips / words).

    ``clip_to_word[i,t]`` are the top-k words of clip t (k clipped to the number of valid words: entries past
    it are masked out by ``clip_to_word_mask``); ``word_to_clip[i,l]`` the top-k clips of word l. Rows of
    padded clips / words are masked out too. Sorted by decreasing similarity.
    """

    clip_to_word: torch.Tensor  # long [B,T,k]
    clip_to_word_mask: torch.Tensor  # bool [B,T,k]
    word_to_clip: torch.Tensor  # long [B,L,k']
    word_to_clip_mask: torch.Tensor  # bool [B,L,k']


@torch.no_grad()
def discover_correspondences(
    clips: torch.Tensor | None,
    words: torch.Tensor | None,
    clip_mask: torch.Tensor,
    word_mask: torch.Tensor,
    topk: int = 1,
    sim: torch.Tensor | None = None,
    content_mask: torch.Tensor | None = None,
) -> Correspondences:
    """Top-k selection on S[i] = c[i]·w[i]ᵀ under ``no_grad`` (the selection carries no gradient).

    ``sim`` [B,T,L] may be given to reuse an already computed similarity (its values are only read).
    ``content_mask`` [B,L] (``objective.stopwords``; see :func:`content_words`): only these words can be
    discovered as a clip's positives, and only they get a word→clip row; None = every valid word.
    """
    if topk < 1:
        raise ValueError(f"fine.topk must be >= 1, got {topk}")
    if sim is None:
        sim = torch.bmm(clips, words.transpose(1, 2))
    sim = sim.detach()
    B, T, L = sim.shape
    neg_inf = torch.tensor(float("-inf"), dtype=sim.dtype, device=sim.device)
    if content_mask is not None:
        word_mask = _content_anchor_mask(content_mask, word_mask)
    n_words = word_mask.sum(1)
    n_clips = clip_mask.sum(1)
    k_w = min(topk, L)
    k_c = min(topk, T)
    # Padded words / clips get −inf, so the valid ones come first; ranks past the valid count are masked.
    c2w = torch.where(word_mask[:, None, :], sim, neg_inf).topk(k_w, dim=2).indices
    c2w_mask = (torch.arange(k_w, device=sim.device)[None, None, :] < n_words[:, None, None]) & clip_mask[:, :, None]
    w2c = torch.where(clip_mask[:, :, None], sim, neg_inf).topk(k_c, dim=1).indices.transpose(1, 2)
    w2c_mask = (torch.arange(k_c, device=sim.device)[None, None, :] < n_clips[:, None, None]) & word_mask[:, :, None]
    return Correspondences(c2w, c2w_mask, w2c.contiguous(), w2c_mask)


# ----------------------------------------------------------------------------------------------------------
# the fused negatives op
# ----------------------------------------------------------------------------------------------------------
class _OffDiagonalExpSums(torch.autograd.Function):
    """Row / column sums of exp(α·A·Wᵀ) over the off-diagonal (other-pair) blocks, on valid rows / columns only.

    anchors [S,B,T,D] (S = 1: clips; S = 2: clips then warped clips), words [B,L,D]; ``row_ok`` [S,B,T] marks
    the valid anchor rows (segment 0: the clip mask; segment 1: the temporal ``ref_ok``), ``word_mask`` [B,L]
    the valid words. Every sample must have at least one valid word (``_check_inputs`` guarantees it).

    Returns rows [S,B,T] = Σ_{valid words of other pairs} e^{α a·w} and cols [B,L] = Σ_{valid clips (segment 0)
    of other pairs} e^{α a·w}, in the inputs' dtype (with ``bf16``: accumulated in fp32, rounded to bf16 once).
    With ``warped_cols`` (S = 2) a third output cols_z [B,L] = Σ_{valid warped clips (segment 1) of other
    pairs} e^{α z·w}: one more reduction of the same exp matrix (``temporal_negatives="warped"``); it is 0 for
    a valid word when no other pair has a valid warped clip (the caller takes a safe log).
    Invalid slots hold 1 (a harmless log 0; callers mask them) and padded rows / words get exactly zero
    gradient, whatever they hold. Only valid when α·|a|·|w| stays below ``_NO_SHIFT_BOUND`` (no
    max-subtraction); ``_negative_log_sums`` checks that.

    Layout: the valid rows and words are gathered (``index_select`` by ``nonzero`` indices) into compact
    matrices A_v [R,D] and W_v [C,D]; row order is (segment, sample, clip), so segment 0 is the prefix
    A_v[:n0] and each sample's words are one contiguous column range of W_v. The own-pair entries then form
    variable-sized rectangles, which are zeroed in place through flat indices built from the per-sample
    word counts (they are zeroed, not subtracted afterwards: a positive e^{14} next to negatives ~e^{0} would
    cancel catastrophically).
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
        E = _OffDiagonalExpSums._exp_matrix(A, W, own)
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
        G = ctx.E if ctx.E is not None else _OffDiagonalExpSums._exp_matrix(A, W, own)
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


class _OwnPairLogits(torch.autograd.Function):
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


def _negative_log_sums_masked(anchors, words, clip_mask, word_mask, alpha, warped_ok=None):
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
    rows = _safe_lse(x.reshape(S, B, T, B * L), row_ok.reshape(S, B, T, B * L), dim=-1)

    def col_lse(seg, ok):
        col_ok = other[:, None, :, None] & ok[:, :, None, None]  # [B,T,B,L]
        return _safe_lse(x[seg].reshape(B * T, B, L), col_ok.expand(B, T, B, L).reshape(B * T, B, L), dim=0)

    if warped_ok is None:
        return rows, col_lse(0, clip_mask)
    return rows, col_lse(0, clip_mask), col_lse(1, warped_ok)


def _negative_log_sums(anchors, words, row_ok, word_mask, tau, bf16, fused=True, warped_cols=False):
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
    if bound > _NO_SHIFT_BOUND or not fused:
        return _negative_log_sums_masked(
            anchors, words, row_ok[0], word_mask, alpha, row_ok[1] if warped_cols else None
        )
    # every valid row / column has at least one other pair with a valid word / clip, and exp(x) >= e^-60:
    # sums > 0 (invalid slots hold 1)
    if not warped_cols:
        rows, cols = _OffDiagonalExpSums.apply(anchors, words, row_ok, word_mask, alpha, bf16, False)
        return rows.log(), cols.log()
    rows, cols, cols_z = _OffDiagonalExpSums.apply(anchors, words, row_ok, word_mask, alpha, bf16, True)
    # cols_z is 0 where no other pair has a valid warped clip: log 0 = −inf there, with zero gradient (the
    # where() keeps the 1/0 of log's backward out of the graph)
    has = cols_z > 0
    log_z = torch.where(has, cols_z, torch.ones_like(cols_z)).log()
    return rows.log(), cols.log(), torch.where(has, log_z, torch.full_like(log_z, float("-inf")))


# ----------------------------------------------------------------------------------------------------------
# §2 + §3: fine-grained and temporal-aware contrast (one shared pass)
# ----------------------------------------------------------------------------------------------------------
def _positive_term(x_pos: torch.Tensor, pos_mask: torch.Tensor, soft: bool, weights: torch.Tensor | None = None):
    """Numerator of the (multi-positive) InfoNCE in log space.

    hard: log Σ_{P} e^{x};  soft: Σ_{P} a·x with a = softmax over the top-k of the (detached) similarities
    (``weights`` may pass the ``a`` computed elsewhere, e.g. the reference clip's for the warped clip).
    """
    if x_pos.shape[-1] == 1:  # k = 1 (default): the single positive is valid on every anchor row
        return x_pos[..., 0]
    if not soft:
        return _safe_lse(x_pos, pos_mask, dim=-1)
    if weights is None:
        weights = torch.softmax(x_pos.detach().masked_fill(~pos_mask, float("-inf")), dim=-1)
        weights = torch.where(pos_mask, weights, torch.zeros_like(weights))
    return (weights * torch.where(pos_mask, x_pos, torch.zeros_like(x_pos))).sum(-1)


def draw_offsets(clip_mask: torch.Tensor, window: int, generator: torch.Generator | None = None,
                 span_mask: torch.Tensor | None = None) -> torch.Tensor:
    """δ [B,T] uniform over the offsets in [−W, W]∖{0} whose context clip t+δ is a valid clip; 0 = no context.

    With the usual prefix masks (valid clips [0, n)), this is "uniform in [−W,W]∖{0}, kept inside [0, n)";
    a video with a single valid clip gets δ = 0 everywhere (its temporal terms are excluded).

    ``span_mask`` [B,T] (``objective.context_in_span``): the clips inside the caption's own span. Then both the
    reference clip and its context clip must lie in the span: a clip outside it, or one without an in-span
    neighbour within W, gets δ = 0 (no temporal term). None = today's rule (bit-identical draws).
    """
    if window < 1:
        raise ValueError(f"temporal.window must be >= 1, got {window}")
    if span_mask is not None:
        if tuple(span_mask.shape) != tuple(clip_mask.shape) or span_mask.dtype != torch.bool:
            raise ValueError(f"span_mask must be a boolean [B,T]={tuple(clip_mask.shape)} tensor, got "
                             f"{span_mask.dtype} {tuple(span_mask.shape)}")
        clip_mask = clip_mask & span_mask.to(clip_mask.device)
    B, T = clip_mask.shape
    dev = clip_mask.device
    cand = torch.cat([torch.arange(-window, 0, device=dev), torch.arange(1, window + 1, device=dev)])  # [2W]
    ctx = torch.arange(T, device=dev)[:, None] + cand[None, :]  # [T,2W]
    inside = (ctx >= 0) & (ctx < T)
    ok = inside[None] & clip_mask[:, ctx.clamp(0, T - 1)] & clip_mask[:, :, None]  # [B,T,2W]
    score = torch.rand(ok.shape, generator=generator, device=dev if generator is None else generator.device)
    score = score.to(dev).masked_fill(~ok, -1.0)
    pick = score.argmax(dim=-1)
    delta = cand[pick]
    return torch.where(ok.any(-1), delta, torch.zeros_like(delta))


def _temporal_valid(clip_mask: torch.Tensor, offsets: torch.Tensor, window: int):
    """(context index clamped, valid reference mask): t valid, δ≠0, t+δ a valid clip; checks |δ| ≤ W."""
    B, T = clip_mask.shape
    offsets = offsets.to(device=clip_mask.device, dtype=torch.long)
    if tuple(offsets.shape) != (B, T):
        raise ValueError(f"offsets must be [B,T]={B, T}, got {tuple(offsets.shape)}")
    ctx = torch.arange(T, device=clip_mask.device)[None, :] + offsets
    ctx_c = ctx.clamp(0, T - 1)
    valid = clip_mask & (offsets != 0) & (ctx >= 0) & (ctx < T) & clip_mask.gather(1, ctx_c)
    too_far = valid & (offsets.abs() > window)
    if bool(too_far.any()):
        i, t = (int(v) for v in too_far.nonzero()[0])
        raise ValueError(f"offsets[{i},{t}] = {int(offsets[i, t])} is outside the temporal window W = {window}")
    return ctx_c, valid


TEMPORAL_NEGATIVES = ("clips", "warped", "within")
TEMPORAL_DIRECTIONS = ("both", "word", "clip")
STOPWORDS = ("none", "english")

# objective.stopwords=english: a fixed, small list of English function words (articles, pronouns, auxiliaries,
# prepositions, conjunctions) that have no visual counterpart. Masked from the *positives* only: they stay valid
# words everywhere else (negatives of other pairs, intra-pair negatives, the sentence encoder). Documented in
# docs/method_options.md; changing it changes the ablation row, so keep it fixed.
ENGLISH_STOPWORDS: tuple[str, ...] = (
    "a", "an", "the", "and", "or", "but", "so", "then", "of", "to", "in", "on", "at", "for", "with", "from",
    "by", "into", "onto", "up", "out", "off", "over", "as", "is", "are", "was", "were", "be", "been", "it",
    "its", "this", "that", "these", "those", "there", "here", "i", "you", "he", "she", "we", "they", "me",
    "him", "her", "us", "them", "my", "your", "his", "our", "their", "some", "now", "just", "will", "can",
)


def _check_choice(key: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"objective.{key} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def _check_temporal_negatives(value: Any) -> None:
    _check_choice("temporal_negatives", value, TEMPORAL_NEGATIVES)


def stopword_ids(tokenizer: Any, words: tuple[str, ...] = ENGLISH_STOPWORDS) -> list[int]:
    """Token ids of the stop words that are whole tokens of ``tokenizer`` (sorted; words it splits or lacks are
    skipped: their pieces are not stop words). ``tokenizer.token_to_id(str) -> int | None``."""
    ids = {tokenizer.token_to_id(w) for w in words}
    return sorted(int(i) for i in ids if i is not None)


def content_words(input_ids: torch.Tensor, word_mask: torch.Tensor, stop_ids: torch.Tensor | list[int]) -> torch.Tensor:
    """content_mask [B,L] = the valid words (``word_mask``) whose token id is not a stop-word id."""
    stop = torch.as_tensor(stop_ids, dtype=input_ids.dtype, device=input_ids.device)
    return word_mask.bool() & ~torch.isin(input_ids, stop)


def _content_anchor_mask(content_mask: torch.Tensor, word_mask: torch.Tensor) -> torch.Tensor:
    """The words that may be discovered positives / word anchors: content ∧ valid, and every valid word of a
    sentence that has no content word at all (so every pair keeps its positives)."""
    if tuple(content_mask.shape) != tuple(word_mask.shape) or content_mask.dtype != torch.bool:
        raise ValueError(f"content_mask must be a boolean [B,L]={tuple(word_mask.shape)} tensor, got "
                         f"{content_mask.dtype} {tuple(content_mask.shape)}")
    content = content_mask.to(word_mask.device) & word_mask
    return torch.where(content.any(1, keepdim=True), content, word_mask)


@_outside_autocast
def fine_temporal_losses(
    clips: torch.Tensor,
    words: torch.Tensor,
    clip_mask: torch.Tensor,
    word_mask: torch.Tensor,
    *,
    fine: bool = True,
    temporal: bool = True,
    head: nn.Module | None = None,
    offsets: torch.Tensor | None = None,
    topk: int = 1,
    tau: float = 0.07,
    window: int = 2,
    sigma: float = math.inf,
    intra_negatives: bool = False,
    soft: bool = False,
    bf16_products: bool = False,
    fused: bool = True,
    temporal_negatives: str = "clips",
    context_stop_grad: bool = False,
    temporal_directions: str = "both",
    content_mask: torch.Tensor | None = None,
) -> tuple[dict[str, torch.Tensor], Correspondences]:
    """Fine-grained (§2) and temporal-aware (§3) terms sharing one similarity product.

    Returns ({"fine", "fine_cw", "fine_wc", "temporal", "temporal_z", "temporal_w"} (disabled terms absent),
    correspondences). ``head`` (g) and ``offsets`` δ [B,T] are required when ``temporal``; g is called on the
    valid context clips only, as g(x [N,D], δ [N]), so it must act row by row (``ContextProjectionHead``
    does). ``fused=False`` computes the negatives with the plain masked log-sum-exp instead of the fused op
    (same values; kept as a fallback and as the benchmark's "straightforward vectorised" baseline). Always
    runs in fp32 (fp64 if given), outside any autocast region: the encoders may run under bf16 autocast, the
    losses must not.

    ``temporal_negatives`` chooses the negatives of the word-anchored temporal term ``temporal_w``: ``"clips"``
    (METHOD.md §3) = the valid raw clips of the other videos; ``"warped"`` = the valid *warped* clips z of the
    other videos (and, with ``intra_negatives``, the other valid warped clips of the own video), so that the
    positive z and its negatives come from the same head (docs/method.md §3: removes a shortcut); ``"within"``
    = only the other valid warped clips z[i,t], t ≠ q, of the *same* video (the authors' release): a word whose
    video has no other warped clip has no negative and is left out of ``temporal_w``.

    Further options (docs/method_options.md): ``context_stop_grad`` detaches the context clip before g (no
    gradient reaches the clip encoder through it; g still trains). ``temporal_directions``: "both" (L_t =
    ½(L_tz + L_tw)), "clip" (L_t = L_tz, anchored at the warped clip) or "word" (L_t = L_tw, anchored at the
    word); the other direction is still returned for logging. ``content_mask`` [B,L] (``objective.stopwords``):
    only these words can be discovered positives or word anchors (fine and temporal); all valid words stay
    negatives. A sentence without any content word falls back to all its valid words.
    """
    clips, words = _as_float(clips), _as_float(words)
    _check_inputs(clips, words, clip_mask, word_mask)
    if tau <= 0:
        raise ValueError(f"tau_fine must be > 0, got {tau}")
    if not (sigma > 0):
        raise ValueError(f"temporal.sigma must be > 0 (math.inf for uniform weights), got {sigma}")
    _check_temporal_negatives(temporal_negatives)
    _check_choice("temporal_directions", temporal_directions, TEMPORAL_DIRECTIONS)
    B, T, D = clips.shape
    L = words.shape[1]
    zero = clips.new_zeros(())
    # the words that may be positives / word anchors (all valid words unless a stop-word mask is given)
    anchor_words = word_mask if content_mask is None else _content_anchor_mask(content_mask, word_mask)
    cm = torch.where(clip_mask[..., None], clips, zero)  # padded rows = 0 (and no gradient to them)
    wm = torch.where(word_mask[..., None], words, zero)

    if not (fine or temporal):
        return {}, discover_correspondences(cm, wm, clip_mask, word_mask, topk, content_mask=content_mask)
    # own-pair logit blocks x[i] = c[i]·w[i]ᵀ/τ: positives, intra negatives, discovery (the selection only
    # compares values, so it runs on x as well as on the similarities)
    x = _OwnPairLogits.apply(cm, wm, 1.0 / tau)  # [B,T,L]
    corr = discover_correspondences(None, None, clip_mask, word_mask, topk, sim=x, content_mask=content_mask)
    out: dict[str, torch.Tensor] = {}

    if temporal:
        if head is None or offsets is None:
            raise ValueError("the temporal term needs the context head g and the offsets δ")
        ctx_idx, ref_ok = _temporal_valid(clip_mask, offsets, window)
        offsets = offsets.to(device=clips.device, dtype=torch.long)
        # g runs on the valid references only (flat row b·T + t, context row b·T + t + δ); the other rows of z
        # are 0 (and get no gradient)
        z_rows = ref_ok.reshape(-1).nonzero().squeeze(1)
        ctx_rows = z_rows - z_rows % T + ctx_idx.reshape(-1)[z_rows]
        ctx_in = cm.reshape(B * T, D)[ctx_rows]
        if context_stop_grad:  # no gradient into the clip encoder through the context clip (g still trains)
            ctx_in = ctx_in.detach()
        z = F.normalize(head(ctx_in, offsets.reshape(-1)[z_rows]), dim=-1)
        z = cm.new_zeros(B * T, D).index_copy(0, z_rows, z).view(B, T, D)  # z[i,t←t+δ]
        anchors = torch.stack([cm, z])
        row_ok = torch.stack([clip_mask, ref_ok])
    else:
        anchors = cm[None]
        row_ok = clip_mask[None]
    warped_negs = temporal and temporal_negatives == "warped"
    neg_rows, neg_cols, *neg_cols_z = _negative_log_sums(
        anchors, wm, row_ok, word_mask, tau, bf16_products, fused, warped_cols=warped_negs
    )

    # clip-anchored positives P[i,t] and word-anchored positives Q[i,l]
    p_idx, p_mask = corr.clip_to_word, corr.clip_to_word_mask
    q_idx, q_mask = corr.word_to_clip, corr.word_to_clip_mask
    x_cw = x.gather(2, p_idx)  # [B,T,k]
    x_wc = x.transpose(1, 2).gather(2, q_idx)  # [B,L,k']
    soft_cw = None
    if soft:
        soft_cw = torch.softmax(x_cw.detach().masked_fill(~p_mask, float("-inf")), dim=-1)
        soft_cw = torch.where(p_mask, soft_cw, torch.zeros_like(soft_cw))
    # valid anchor rows: (any valid positive); rows without one (padding) use a harmless finite fill
    cw_rows, wc_rows = clip_mask, anchor_words

    if fine:
        pos_cw = _positive_term(x_cw, p_mask | ~cw_rows[..., None], soft, soft_cw)
        pos_wc = _positive_term(x_wc, q_mask | ~wc_rows[..., None], soft)
        if intra_negatives:  # every valid word (clip) of the own pair is in the denominator
            own_cw = _safe_lse(x, word_mask[:, None, :].expand(B, T, L), dim=2)
            own_wc = _safe_lse(x.transpose(1, 2), clip_mask[:, None, :].expand(B, L, T), dim=2)
        elif soft:
            own_cw = _safe_lse(x_cw, p_mask | ~cw_rows[..., None], dim=-1)
            own_wc = _safe_lse(x_wc, q_mask | ~wc_rows[..., None], dim=-1)
        else:  # hard positives: the own-pair part of the denominator is the positive set itself
            own_cw, own_wc = pos_cw, pos_wc
        l_cw = torch.logaddexp(own_cw, neg_rows[0]) - pos_cw
        l_wc = torch.logaddexp(own_wc, neg_cols) - pos_wc
        out["fine_cw"] = _masked_mean(l_cw, cw_rows)
        out["fine_wc"] = _masked_mean(l_wc, wc_rows)
        out["fine"] = 0.5 * (out["fine_cw"] + out["fine_wc"])

    if temporal:
        omega = torch.exp(-offsets.abs().to(clips.dtype) / sigma)  # ω(δ); σ = inf -> 1
        xz = _OwnPairLogits.apply(z, wm, 1.0 / tau)  # [B,T,L] warped-clip logits of the own pair
        # anchored at the warped clip z[i,t]: positives = words discovered for the reference clip t
        xz_pos = xz.gather(2, p_idx)
        zmask = p_mask | ~ref_ok[..., None]
        pos_z = _positive_term(xz_pos, zmask, soft, soft_cw)
        if intra_negatives:
            own_z = _safe_lse(xz, word_mask[:, None, :].expand(B, T, L), dim=2)
        elif soft:
            own_z = _safe_lse(xz_pos, zmask, dim=-1)
        else:
            own_z = pos_z
        l_z = torch.logaddexp(own_z, neg_rows[1]) - pos_z
        # anchored at word l with its top-1 clip q: positive z[i,q←q+δ], negatives = the clips of the other
        # videos ("clips", METHOD.md) or their warped clips ("warped": the same head on both sides)
        q1 = q_idx[..., 0]  # [B,L]
        w_ok = anchor_words & ref_ok.gather(1, q1)
        x_wz = xz.gather(1, q1[:, None, :]).squeeze(1)  # [B,L]
        if temporal_negatives == "within":  # only the other warped clips of the same video (authors' release)
            not_q = torch.arange(T, device=clips.device)[None, None, :] != q1[..., None]
            within = ref_ok[:, None, :] & not_q  # [B,L,T]
            den_w = torch.logaddexp(x_wz, _safe_lse(xz.transpose(1, 2), within, dim=2))
            w_ok = w_ok & within.any(-1)  # a word without any negative carries no signal: left out
        else:
            den_w = torch.logaddexp(x_wz, neg_cols_z[0] if warped_negs else neg_cols)
        if intra_negatives and temporal_negatives != "within":  # the other (warped) clips of the same video
            not_q = torch.arange(T, device=clips.device)[None, None, :] != q1[..., None]
            if warped_negs:
                intra = _safe_lse(xz.transpose(1, 2), ref_ok[:, None, :] & not_q, dim=2)
            else:
                intra = _safe_lse(x.transpose(1, 2), clip_mask[:, None, :] & not_q, dim=2)
            den_w = torch.logaddexp(den_w, intra)
        l_w = den_w - x_wz
        out["temporal_z"] = _masked_mean(l_z, ref_ok, omega)
        out["temporal_w"] = _masked_mean(l_w, w_ok, omega.gather(1, q1))
        if temporal_directions == "both":
            out["temporal"] = 0.5 * (out["temporal_z"] + out["temporal_w"])
        else:
            out["temporal"] = out["temporal_z" if temporal_directions == "clip" else "temporal_w"]
    return out, corr


def fine_loss(
    clips: torch.Tensor,
    words: torch.Tensor,
    clip_mask: torch.Tensor,
    word_mask: torch.Tensor,
    *,
    topk: int = 1,
    tau: float = 0.07,
    intra_negatives: bool = False,
    soft: bool = False,
    bf16_products: bool = False,
    content_mask: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """§2 alone: {"fine", "fine_cw", "fine_wc"} (L_f = ½(L_cw + L_wc)); ``content_mask``: see
    ``fine_temporal_losses``."""
    out, _ = fine_temporal_losses(
        clips, words, clip_mask, word_mask, fine=True, temporal=False, topk=topk, tau=tau,
        intra_negatives=intra_negatives, soft=soft, bf16_products=bf16_products, content_mask=content_mask,
    )
    return out


def temporal_loss(
    clips: torch.Tensor,
    words: torch.Tensor,
    clip_mask: torch.Tensor,
    word_mask: torch.Tensor,
    head: nn.Module,
    offsets: torch.Tensor,
    *,
    topk: int = 1,
    tau: float = 0.07,
    window: int = 2,
    sigma: float = math.inf,
    intra_negatives: bool = False,
    soft: bool = False,
    bf16_products: bool = False,
    temporal_negatives: str = "clips",
    context_stop_grad: bool = False,
    temporal_directions: str = "both",
    content_mask: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """§3 alone: {"temporal", "temporal_z", "temporal_w"} (L_t = ½(L_tz + L_tw), each ω-weighted).

    ``temporal_negatives``: "clips" (METHOD.md), "warped" or "within"; ``context_stop_grad``,
    ``temporal_directions``, ``content_mask``: see ``fine_temporal_losses``."""
    out, _ = fine_temporal_losses(
        clips, words, clip_mask, word_mask, fine=False, temporal=True, head=head, offsets=offsets, topk=topk,
        tau=tau, window=window, sigma=sigma, intra_negatives=intra_negatives, soft=soft,
        bf16_products=bf16_products, temporal_negatives=temporal_negatives, context_stop_grad=context_stop_grad,
        temporal_directions=temporal_directions, content_mask=content_mask,
    )
    return out


# ----------------------------------------------------------------------------------------------------------
# the module
# ----------------------------------------------------------------------------------------------------------
def _pad_to(x: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    if x.shape[dim] == size:
        return x
    shape = list(x.shape)
    shape[dim] = size - x.shape[dim]
    return torch.cat([x, x.new_zeros(shape)], dim=dim)


class LocVTPObjective(nn.Module):
    """L = λ_c L_c + λ_f L_f + λ_t L_t over the global batch; owns g (context head) and the logit scale.

    ``forward(clips, words, sentence, clip_mask, word_mask, offsets=None)`` takes the *local* L2-normalised
    features (and boolean masks); under torch.distributed with ``gather=True`` it first gathers them — with
    gradients — and the offsets from all ranks (see ``locvtp.distributed`` for the gradient factor). Offsets
    are drawn locally (``draw_offsets``) when not given, so every rank computes the same global loss.
    """

    def __init__(
        self,
        dim: int = 256,
        topk: int = 1,
        window: int = 2,
        sigma: float = math.inf,
        weights: Mapping[str, float] | Any = None,
        coarse: bool = True,
        fine: bool = True,
        temporal: bool = True,
        intra_negatives: bool = False,
        soft: bool = False,
        head: str = "mlp",
        tau_fine: float = 0.07,
        logit_scale_init: float = 1.0 / 0.07,
        logit_scale_max: float = 100.0,
        gather: bool = True,
        bf16_products: bool = False,
        head_hidden: int | None = None,
        fused: bool = True,
        temporal_negatives: str = "clips",
        context_in_span: bool = False,
        context_stop_grad: bool = False,
        temporal_directions: str = "both",
        stopwords: str = "none",
    ):
        super().__init__()
        _check_temporal_negatives(temporal_negatives)
        _check_choice("temporal_directions", temporal_directions, TEMPORAL_DIRECTIONS)
        _check_choice("stopwords", stopwords, STOPWORDS)
        if topk < 1:
            raise ValueError(f"objective.topk must be >= 1, got {topk}")
        if tau_fine <= 0:
            raise ValueError(f"objective.tau_fine must be > 0, got {tau_fine}")
        if not (sigma > 0):
            raise ValueError(f"objective.sigma must be > 0 (inf = uniform), got {sigma}")
        if not (0 < logit_scale_init <= logit_scale_max):
            raise ValueError(
                f"objective.logit_scale_init ({logit_scale_init}) must be in (0, logit_scale_max={logit_scale_max}]"
            )
        if not (coarse or fine or temporal):
            raise ValueError("at least one of objective.coarse / fine / temporal must be enabled")
        w = {"coarse": 1.0, "fine": 1.0, "temporal": 1.0}
        if weights is not None:
            items = weights.items() if hasattr(weights, "items") else vars(weights).items()
            for key, value in items:
                if key not in w:
                    raise ValueError(f"objective.weights.{key}: unknown loss term (expected coarse, fine, temporal)")
                w[key] = float(value)
        self.weights = w
        # multiplies the fine and temporal weights; the trainer sets it each step from objective.ramp_* (§ Ramp)
        self.aux_scale = 1.0
        self.dim, self.topk, self.window, self.sigma = dim, int(topk), int(window), float(sigma)
        self.use_coarse, self.use_fine, self.use_temporal = bool(coarse), bool(fine), bool(temporal)
        self.intra_negatives, self.soft = bool(intra_negatives), bool(soft)
        self.tau_fine = float(tau_fine)
        self.logit_scale_max = float(logit_scale_max)
        self.gather = bool(gather)
        self.bf16_products = bool(bf16_products)
        self.fused = bool(fused)
        self.temporal_negatives = str(temporal_negatives)
        self.context_in_span, self.context_stop_grad = bool(context_in_span), bool(context_stop_grad)
        self.temporal_directions, self.stopwords = str(temporal_directions), str(stopwords)
        self.context_head = ContextProjectionHead(dim, window=window, kind=head, hidden=head_hidden)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(logit_scale_init)))

    @classmethod
    def from_config(cls, objective_cfg: Any, dim: int = 256) -> "LocVTPObjective":
        """Build from ``cfg.objective`` (an ObjectiveConfig / DictConfig / dict); a full Config is accepted."""
        cfg = objective_cfg
        if hasattr(cfg, "objective") and not hasattr(cfg, "topk"):
            cfg = cfg.objective
        get = cfg.get if hasattr(cfg, "get") else (lambda k, d=None: getattr(cfg, k, d))
        return cls(
            dim=dim,
            topk=get("topk", 1),
            window=get("window", 2),
            sigma=get("sigma", math.inf),
            weights=get("weights", None),
            coarse=get("coarse", True),
            fine=get("fine", True),
            temporal=get("temporal", True),
            intra_negatives=get("intra_negatives", False),
            soft=get("soft", False),
            head=get("head", "mlp"),
            tau_fine=get("tau_fine", 0.07),
            logit_scale_init=get("logit_scale_init", 1.0 / 0.07),
            logit_scale_max=get("logit_scale_max", 100.0),
            gather=get("gather", True),
            bf16_products=get("bf16_products", False),
            head_hidden=get("head_hidden", None),
            temporal_negatives=get("temporal_negatives", "clips"),
            context_in_span=get("context_in_span", False),
            context_stop_grad=get("context_stop_grad", False),
            temporal_directions=get("temporal_directions", "both"),
            stopwords=get("stopwords", "none"),
        )

    def scale(self) -> torch.Tensor:
        """1/τ_c = exp(logit_scale), clamped at ``logit_scale_max`` (CLIP)."""
        return self.logit_scale.exp().clamp(max=self.logit_scale_max)

    def _gather(self, clips, words, sentence, clip_mask, word_mask, offsets, content_mask=None):
        """Global batch from all ranks (features with gradients); pads T and L to the largest rank's."""
        sizes = all_gather_sizes(clips.shape[0], clips.device)
        dims = all_gather_nograd(torch.tensor([[clips.shape[1], words.shape[1]]], device=clips.device), sizes=[1] * len(sizes))
        T, L = (int(v) for v in dims.max(dim=0).values)
        clips, clip_mask, offsets = _pad_to(clips, T, 1), _pad_to(clip_mask, T, 1), _pad_to(offsets, T, 1)
        words, word_mask = _pad_to(words, L, 1), _pad_to(word_mask, L, 1)
        gathered = (
            all_gather_with_grad(clips, sizes),
            all_gather_with_grad(words, sizes),
            all_gather_with_grad(sentence, sizes),
            all_gather_nograd(clip_mask, sizes),
            all_gather_nograd(word_mask, sizes),
            all_gather_nograd(offsets, sizes),
        )
        if content_mask is None:
            return gathered
        return gathered + (all_gather_nograd(_pad_to(content_mask, L, 1), sizes),)

    def forward(
        self,
        clips: torch.Tensor,
        words: torch.Tensor,
        sentence: torch.Tensor,
        clip_mask: torch.Tensor,
        word_mask: torch.Tensor,
        offsets: torch.Tensor | None = None,
        content_mask: torch.Tensor | None = None,
        span_mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """``content_mask`` [B,L] (the Collator's, from :func:`content_words`) is used only with
        ``stopwords="english"`` and required then; ``span_mask`` [B,T] (clips inside the caption's span) only
        when the offsets are drawn here with ``context_in_span`` (training draws them in the dataset)."""
        clip_mask, word_mask = clip_mask.bool(), word_mask.bool()
        if self.stopwords == "none":
            content_mask = None  # default: every valid word may be a positive (bit-identical to before)
        elif content_mask is None:
            raise ValueError(
                f"objective.stopwords={self.stopwords!r} needs the batch's content_mask (made by the Collator: "
                "locvtp.objectives.content_words); pass content_mask= to the objective"
            )
        else:
            content_mask = content_mask.to(device=clips.device).bool()
        if offsets is None:
            if self.context_in_span and span_mask is None:
                raise ValueError("objective.context_in_span draws offsets inside the caption's span: pass "
                                 "span_mask= (or offsets drawn by the dataset)")
            offsets = draw_offsets(clip_mask, self.window,
                                   span_mask=span_mask.bool() if self.context_in_span else None)
        offsets = offsets.to(device=clips.device, dtype=torch.long)
        if self.gather and is_distributed():
            clips, words, sentence, clip_mask, word_mask, offsets, *rest = self._gather(
                clips, words, sentence, clip_mask, word_mask, offsets, content_mask
            )
            content_mask = rest[0] if rest else None
        clips, words, sentence = _as_float(clips), _as_float(words), _as_float(sentence)
        zero = clips.new_zeros(())
        scale = self.scale()
        out: dict[str, torch.Tensor] = {}
        out["coarse"] = coarse_loss(clips, sentence, clip_mask, scale) if self.use_coarse else zero
        terms, corr = fine_temporal_losses(
            clips, words, clip_mask, word_mask,
            fine=self.use_fine, temporal=self.use_temporal, head=self.context_head, offsets=offsets,
            topk=self.topk, tau=self.tau_fine, window=self.window, sigma=self.sigma,
            intra_negatives=self.intra_negatives, soft=self.soft, bf16_products=self.bf16_products,
            fused=self.fused, temporal_negatives=self.temporal_negatives,
            context_stop_grad=self.context_stop_grad, temporal_directions=self.temporal_directions,
            content_mask=content_mask,
        )
        out["fine"] = terms.get("fine", zero)
        out["temporal"] = terms.get("temporal", zero)
        for key in ("fine_cw", "fine_wc", "temporal_z", "temporal_w"):
            out[key] = terms.get(key, zero)
        total = zero
        for key, on in (("coarse", self.use_coarse), ("fine", self.use_fine), ("temporal", self.use_temporal)):
            if on:
                ramp = 1.0 if key == "coarse" else self.aux_scale
                # a zero ramp still keeps the term in the graph: DDP then sees every parameter used
                total = total + (self.weights[key] * ramp) * out[key]
        out["total"] = total
        out["aux_scale"] = torch.tensor(float(self.aux_scale))
        out["logit_scale"] = scale.detach()
        out["clip_to_word"] = corr.clip_to_word
        out["word_to_clip"] = corr.word_to_clip
        out["clip_to_word_mask"] = corr.clip_to_word_mask
        out["word_to_clip_mask"] = corr.word_to_clip_mask
        out["offsets"] = offsets
        return out

    def extra_repr(self) -> str:
        return (
            f"coarse={self.use_coarse}, fine={self.use_fine}, temporal={self.use_temporal}, topk={self.topk}, "
            f"window={self.window}, sigma={self.sigma}, weights={self.weights}, intra_negatives={self.intra_negatives}, "
            f"soft={self.soft}, tau_fine={self.tau_fine}, gather={self.gather}, bf16_products={self.bf16_products}, "
            f"temporal_negatives={self.temporal_negatives!r}, context_in_span={self.context_in_span}, "
            f"context_stop_grad={self.context_stop_grad}, temporal_directions={self.temporal_directions!r}, "
            f"stopwords={self.stopwords!r}"
        )
