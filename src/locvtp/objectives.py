"""LocVTP's three pre-training objectives: the loss functions and ``LocVTPObjective``.

What each term computes, and why, is written once, in ``docs/method.md`` (§1 coarse, §2 fine-grained, §3
temporal, "Ramp", "Options", "How it is computed"); the docstrings here name the section. The fused negatives
kernel the fine and temporal terms share is :mod:`locvtp.objectives_kernel`; the context offsets and the
stop-word mask are made with the data (:mod:`locvtp.data.offsets`, :mod:`locvtp.data.stopwords`) and
re-exported here.
"""
from __future__ import annotations

import functools
import math
import warnings
from dataclasses import asdict, dataclass, fields, is_dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import nn

from locvtp.config import LossWeights, ObjectiveConfig

from locvtp.data.offsets import draw_offsets, draw_release_variates, draw_splice_variates
from locvtp.data.stopwords import ENGLISH_STOPWORDS, content_words, stopword_ids
from locvtp.distributed import all_gather_nograd, all_gather_sizes, all_gather_with_grad, is_distributed
from locvtp.model.heads import ContextProjectionHead, OffsetEncoding, SpliceClassifier
from locvtp.objectives_kernel import OwnPairLogits, negative_log_sums, safe_lse

__all__ = [
    "Correspondences",
    "ENGLISH_STOPWORDS",
    "LocVTPObjective",
    "OPTION_NAMES",
    "aux_ramp",
    "coarse_loss",
    "content_words",
    "discover_correspondences",
    "draw_offsets",
    "draw_release_variates",
    "draw_splice_variates",
    "fine_loss",
    "fine_temporal_losses",
    "objective_options",
    "pick_valid",
    "release_temporal_loss",
    "splice_batch",
    "splice_loss",
    "stopword_ids",
    "temporal_loss",
    "video_embedding",
]

# ----------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------
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

def _positive_term(x_pos: torch.Tensor, pos_mask: torch.Tensor, soft: bool, weights: torch.Tensor | None = None):
    """Numerator of the (multi-positive) InfoNCE in log space.

    hard: log Σ_{P} e^{x};  soft: Σ_{P} a·x with a = softmax over the top-k of the (detached) similarities
    (``weights`` may pass the ``a`` computed elsewhere, e.g. the reference clip's for the warped clip).
    """
    if x_pos.shape[-1] == 1:  # k = 1 (default): the single positive is valid on every anchor row
        return x_pos[..., 0]
    if not soft:
        return safe_lse(x_pos, pos_mask, dim=-1)
    if weights is None:
        weights = torch.softmax(x_pos.detach().masked_fill(~pos_mask, float("-inf")), dim=-1)
        weights = torch.where(pos_mask, weights, torch.zeros_like(weights))
    return (weights * torch.where(pos_mask, x_pos, torch.zeros_like(x_pos))).sum(-1)


def _temporal_valid(clip_mask: torch.Tensor, offsets: torch.Tensor, max_offset: int):
    """(context index clamped, valid reference mask): t valid, δ≠0, t+δ a valid clip; checks |δ| ≤ max_offset."""
    B, T = clip_mask.shape
    offsets = offsets.to(device=clip_mask.device, dtype=torch.long)
    if tuple(offsets.shape) != (B, T):
        raise ValueError(f"offsets must be [B,T]={B, T}, got {tuple(offsets.shape)}")
    ctx = torch.arange(T, device=clip_mask.device)[None, :] + offsets
    ctx_c = ctx.clamp(0, T - 1)
    valid = clip_mask & (offsets != 0) & (ctx >= 0) & (ctx < T) & clip_mask.gather(1, ctx_c)
    too_far = valid & (offsets.abs() > max_offset)
    if bool(too_far.any()):
        i, t = (int(v) for v in too_far.nonzero()[0])
        raise ValueError(f"offsets[{i},{t}] = {int(offsets[i, t])} is outside the temporal window W = {max_offset} "
                         "(objective.max_offset)")
    return ctx_c, valid


TEMPORAL_NEGATIVES = ("clips", "warped", "within")
TEMPORAL_DIRECTIONS = ("both", "word", "clip")
TEMPORAL_FORMS = ("method", "release")
STOPWORDS = ("none", "english")


def _check_choice(key: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"objective.{key} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def _check_temporal_negatives(value: Any) -> None:
    _check_choice("temporal_negatives", value, TEMPORAL_NEGATIVES)



def _content_anchor_mask(content_mask: torch.Tensor, word_mask: torch.Tensor) -> torch.Tensor:
    """The words that may be discovered positives / word anchors: content ∧ valid, and every valid word of a
    sentence that has no content word at all (so every pair keeps its positives)."""
    if tuple(content_mask.shape) != tuple(word_mask.shape) or content_mask.dtype != torch.bool:
        raise ValueError(f"content_mask must be a boolean [B,L]={tuple(word_mask.shape)} tensor, got "
                         f"{content_mask.dtype} {tuple(content_mask.shape)}")
    content = content_mask.to(word_mask.device) & word_mask
    return torch.where(content.any(1, keepdim=True), content, word_mask)


# ----------------------------------------------------------------------------------------------------------
# §2 + §3: fine-grained and temporal-aware contrast (one shared pass; docs/method.md "How it is computed")
# ----------------------------------------------------------------------------------------------------------
def _check_loss_options(tau: float, sigma: float, temporal_negatives: str, temporal_directions: str) -> None:
    if tau <= 0:
        raise ValueError(f"tau_fine must be > 0, got {tau}")
    if not (sigma > 0):
        raise ValueError(f"temporal.sigma must be > 0 (math.inf for uniform weights), got {sigma}")
    _check_temporal_negatives(temporal_negatives)
    _check_choice("temporal_directions", temporal_directions, TEMPORAL_DIRECTIONS)


def _warp_contexts(cm, clip_mask, head, offsets, max_offset: int, context_stop_grad: bool):
    """(z [B,T,D] the warped clips g(c[i,t+δ], δ), normalised; ref_ok [B,T] the references that have one).

    g runs on the valid references only (flat row b·T + t, context row b·T + t + δ); the other rows of z are 0
    (and get no gradient). ``context_stop_grad``: no gradient into the clip encoder through the context clip."""
    if head is None or offsets is None:
        raise ValueError("the temporal term needs the context head g and the offsets δ")
    B, T, D = cm.shape
    ctx_idx, ref_ok = _temporal_valid(clip_mask, offsets, max_offset)
    offsets = offsets.to(device=cm.device, dtype=torch.long)
    z_rows = ref_ok.reshape(-1).nonzero().squeeze(1)
    ctx_rows = z_rows - z_rows % T + ctx_idx.reshape(-1)[z_rows]
    ctx_in = cm.reshape(B * T, D)[ctx_rows]
    if context_stop_grad:
        ctx_in = ctx_in.detach()
    z = F.normalize(head(ctx_in, offsets.reshape(-1)[z_rows]), dim=-1)
    return cm.new_zeros(B * T, D).index_copy(0, z_rows, z).view(B, T, D), ref_ok  # z[i,t←t+δ]


@dataclass
class _Positives:
    """The discovered positives of one batch, as logits: clip-anchored P[i,t] and word-anchored Q[i,l]."""

    x: torch.Tensor  # [B,T,L] own-pair logits
    p_idx: torch.Tensor
    p_mask: torch.Tensor
    q_idx: torch.Tensor
    q_mask: torch.Tensor
    x_cw: torch.Tensor  # [B,T,k]
    x_wc: torch.Tensor  # [B,L,k']
    soft_cw: torch.Tensor | None  # soft=True: the clip-anchored positives' weights (reused by the warped clip)

    @classmethod
    def of(cls, x: torch.Tensor, corr: Correspondences, soft: bool) -> "_Positives":
        p_idx, p_mask = corr.clip_to_word, corr.clip_to_word_mask
        x_cw = x.gather(2, p_idx)
        soft_cw = None
        if soft:
            soft_cw = torch.softmax(x_cw.detach().masked_fill(~p_mask, float("-inf")), dim=-1)
            soft_cw = torch.where(p_mask, soft_cw, torch.zeros_like(soft_cw))
        return cls(x, p_idx, p_mask, corr.word_to_clip, corr.word_to_clip_mask, x_cw,
                   x.transpose(1, 2).gather(2, corr.word_to_clip), soft_cw)


def _fine_terms(pos: _Positives, clip_mask, word_mask, anchor_words, neg_row, neg_cols, soft: bool,
                intra_negatives: bool) -> dict[str, torch.Tensor]:
    """§2: L_f = ½(L_cw + L_wc) from the positives and the other pairs' log-sums (rows of clips, word columns)."""
    B, T, L = pos.x.shape
    # valid anchor rows: (any valid positive); rows without one (padding) use a harmless finite fill
    cw_rows, wc_rows = clip_mask, anchor_words
    pos_cw = _positive_term(pos.x_cw, pos.p_mask | ~cw_rows[..., None], soft, pos.soft_cw)
    pos_wc = _positive_term(pos.x_wc, pos.q_mask | ~wc_rows[..., None], soft)
    if intra_negatives:  # every valid word (clip) of the own pair is in the denominator
        own_cw = safe_lse(pos.x, word_mask[:, None, :].expand(B, T, L), dim=2)
        own_wc = safe_lse(pos.x.transpose(1, 2), clip_mask[:, None, :].expand(B, L, T), dim=2)
    elif soft:
        own_cw = safe_lse(pos.x_cw, pos.p_mask | ~cw_rows[..., None], dim=-1)
        own_wc = safe_lse(pos.x_wc, pos.q_mask | ~wc_rows[..., None], dim=-1)
    else:  # hard positives: the own-pair part of the denominator is the positive set itself
        own_cw, own_wc = pos_cw, pos_wc
    l_cw = torch.logaddexp(own_cw, neg_row) - pos_cw
    l_wc = torch.logaddexp(own_wc, neg_cols) - pos_wc
    out = {"fine_cw": _masked_mean(l_cw, cw_rows), "fine_wc": _masked_mean(l_wc, wc_rows)}
    out["fine"] = 0.5 * (out["fine_cw"] + out["fine_wc"])
    return out


def _warped_clip_term(pos: _Positives, xz, ref_ok, word_mask, neg_row, soft: bool, intra_negatives: bool):
    """L_tz per reference: anchored at the warped clip z[i,t], positives = the words discovered for clip t."""
    B, T, L = xz.shape
    xz_pos = xz.gather(2, pos.p_idx)
    zmask = pos.p_mask | ~ref_ok[..., None]
    pos_z = _positive_term(xz_pos, zmask, soft, pos.soft_cw)
    if intra_negatives:
        own_z = safe_lse(xz, word_mask[:, None, :].expand(B, T, L), dim=2)
    elif soft:
        own_z = safe_lse(xz_pos, zmask, dim=-1)
    else:
        own_z = pos_z
    return torch.logaddexp(own_z, neg_row) - pos_z


def _word_anchored_term(pos: _Positives, xz, ref_ok, clip_mask, anchor_words, neg_cols, neg_cols_z,
                        temporal_negatives: str, intra_negatives: bool):
    """(L_tw per word, its valid words, the top-1 clip q): positive z[i,q←q+δ]; negatives per
    ``temporal_negatives`` (docs/method.md §3 and "Options")."""
    T = xz.shape[1]
    warped_negs = temporal_negatives == "warped"
    q1 = pos.q_idx[..., 0]  # [B,L]
    w_ok = anchor_words & ref_ok.gather(1, q1)
    x_wz = xz.gather(1, q1[:, None, :]).squeeze(1)  # [B,L]
    if temporal_negatives == "within":  # only the other warped clips of the same video (authors' release)
        not_q = torch.arange(T, device=xz.device)[None, None, :] != q1[..., None]
        within = ref_ok[:, None, :] & not_q  # [B,L,T]
        den_w = torch.logaddexp(x_wz, safe_lse(xz.transpose(1, 2), within, dim=2))
        w_ok = w_ok & within.any(-1)  # a word without any negative carries no signal: left out
    else:
        den_w = torch.logaddexp(x_wz, neg_cols_z if warped_negs else neg_cols)
    if intra_negatives and temporal_negatives != "within":  # the other (warped) clips of the same video
        not_q = torch.arange(T, device=xz.device)[None, None, :] != q1[..., None]
        if warped_negs:
            intra = safe_lse(xz.transpose(1, 2), ref_ok[:, None, :] & not_q, dim=2)
        else:
            intra = safe_lse(pos.x.transpose(1, 2), clip_mask[:, None, :] & not_q, dim=2)
        den_w = torch.logaddexp(den_w, intra)
    return den_w - x_wz, w_ok, q1


def _temporal_terms(pos: _Positives, z, wm, ref_ok, clip_mask, word_mask, anchor_words, offsets, negs, *, tau,
                    sigma, soft, intra_negatives, temporal_negatives, temporal_directions):
    """§3: L_t from the warped clips z; ``negs`` = (rows [S,B,T], cols [B,L], optional warped cols [B,L])."""
    neg_rows, neg_cols, *neg_cols_z = negs
    offsets = offsets.to(device=z.device, dtype=torch.long)
    omega = torch.exp(-offsets.abs().to(z.dtype) / sigma)  # ω(δ); σ = inf -> 1
    xz = OwnPairLogits.apply(z, wm, 1.0 / tau)  # [B,T,L] warped-clip logits of the own pair
    l_z = _warped_clip_term(pos, xz, ref_ok, word_mask, neg_rows[1], soft, intra_negatives)
    l_w, w_ok, q1 = _word_anchored_term(pos, xz, ref_ok, clip_mask, anchor_words, neg_cols,
                                        neg_cols_z[0] if neg_cols_z else None, temporal_negatives, intra_negatives)
    out = {"temporal_z": _masked_mean(l_z, ref_ok, omega), "temporal_w": _masked_mean(l_w, w_ok, omega.gather(1, q1))}
    if temporal_directions == "both":
        out["temporal"] = 0.5 * (out["temporal_z"] + out["temporal_w"])
    else:
        out["temporal"] = out["temporal_z" if temporal_directions == "clip" else "temporal_w"]
    return out


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
    max_offset: int = 2,
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
    """§2 and §3 of docs/method.md sharing one similarity product; returns ({"fine", "fine_cw", "fine_wc",
    "temporal", "temporal_z", "temporal_w"} (disabled terms absent), correspondences).

    ``head`` (g, called row by row as g(x [N,D], δ [N])) and ``offsets`` δ [B,T] are required when ``temporal``.
    ``fused=False`` uses the plain masked log-sum-exp (same values). The options are those of docs/method.md
    ("Options"). Runs in fp32 (fp64 if given), outside any autocast region."""
    clips, words = _as_float(clips), _as_float(words)
    _check_inputs(clips, words, clip_mask, word_mask)
    _check_loss_options(tau, sigma, temporal_negatives, temporal_directions)
    zero = clips.new_zeros(())
    # the words that may be positives / word anchors (all valid words unless a stop-word mask is given)
    anchor_words = word_mask if content_mask is None else _content_anchor_mask(content_mask, word_mask)
    cm = torch.where(clip_mask[..., None], clips, zero)  # padded rows = 0 (and no gradient to them)
    wm = torch.where(word_mask[..., None], words, zero)
    if not (fine or temporal):
        return {}, discover_correspondences(cm, wm, clip_mask, word_mask, topk, content_mask=content_mask)
    # own-pair logit blocks x[i] = c[i]·w[i]ᵀ/τ: positives, intra negatives, discovery (on x as well as on S)
    x = OwnPairLogits.apply(cm, wm, 1.0 / tau)  # [B,T,L]
    corr = discover_correspondences(None, None, clip_mask, word_mask, topk, sim=x, content_mask=content_mask)
    z = ref_ok = None
    if temporal:
        z, ref_ok = _warp_contexts(cm, clip_mask, head, offsets, max_offset, context_stop_grad)
    anchors = torch.stack([cm, z]) if temporal else cm[None]
    row_ok = torch.stack([clip_mask, ref_ok]) if temporal else clip_mask[None]
    negs = negative_log_sums(anchors, wm, row_ok, word_mask, tau, bf16_products, fused,
                             warped_cols=temporal and temporal_negatives == "warped")
    pos = _Positives.of(x, corr, soft)
    out: dict[str, torch.Tensor] = {}
    if fine:
        out.update(_fine_terms(pos, clip_mask, word_mask, anchor_words, negs[0][0], negs[1], soft, intra_negatives))
    if temporal:
        out.update(_temporal_terms(pos, z, wm, ref_ok, clip_mask, word_mask, anchor_words, offsets, negs, tau=tau,
                                   sigma=sigma, soft=soft, intra_negatives=intra_negatives,
                                   temporal_negatives=temporal_negatives, temporal_directions=temporal_directions))
    return out, corr


# ----------------------------------------------------------------------------------------------------------
# §3b: the release's form of the temporal term, and its splice classifier (docs/method.md "The release's form")
# ----------------------------------------------------------------------------------------------------------
def pick_valid(draws: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Indices [B, ...] of the ⌊u·n_b⌋-th valid position of ``mask`` [B,M] for each variate u of ``draws``
    [B, ...] in [0, 1) (n_b = the valid count of row b): a uniform draw over the valid positions only. Rows
    without a valid position get index 0 (callers mask them out)."""
    B, M = mask.shape
    n = mask.sum(1).view(B, *[1] * (draws.dim() - 1))
    rank = (draws * n).floor().long().clamp_max(n - 1).clamp_min(0)  # u < 1, but rounding: stay in range
    ends = mask.long().cumsum(1)  # the r-th valid position is the first where cumsum reaches r + 1
    idx = torch.searchsorted(ends, (rank + 1).reshape(B, -1)).view_as(rank)
    return torch.where(n > 0, idx.clamp_max(M - 1), torch.zeros_like(idx))


def _release_direction(anchors, source, pool, draws, matched, head, tau, detach_source):
    """One direction of §3b, per anchor a: InfoNCE at τ over [g(x[s], s − m), K raw negatives of ``pool``]; s and
    the negatives are the positions ``draws`` [B,N,1+K] already picked (over the valid ones), m = ``matched``."""
    B, N, K1 = draws.shape
    D = anchors.shape[-1]
    rows = source.gather(1, draws[..., 0:1].expand(B, N, D))  # x[s], the element to warp
    if detach_source:
        rows = rows.detach()
    pos = F.normalize(head(rows, draws[..., 0] - matched), dim=-1)
    negs = pool.gather(1, draws[..., 1:].reshape(B, -1, 1).expand(B, N * (K1 - 1), D)).view(B, N, K1 - 1, D)
    logits = torch.cat([(anchors * pos).sum(-1, keepdim=True), torch.einsum("bnd,bnkd->bnk", anchors, negs)], -1)
    logits = logits / tau
    return torch.logsumexp(logits, dim=-1) - logits[..., 0]


def _check_release_draws(clip_draws, word_draws, B, T, L):
    for name, d, n in (("clip_draws", clip_draws, T), ("word_draws", word_draws, L)):
        if d is None or d.dim() != 3 or tuple(d.shape[:2]) != (B, n) or d.shape[2] < 2:
            raise ValueError(f"temporal_form=release needs {name} [B,{'T' if n == T else 'L'},1+K]={B, n} x (1+K), "
                             f"K >= 1 (locvtp.data.offsets.draw_release_variates); got "
                             f"{None if d is None else tuple(d.shape)}")


@_outside_autocast
def release_temporal_loss(
    clips: torch.Tensor,
    words: torch.Tensor,
    clip_mask: torch.Tensor,
    word_mask: torch.Tensor,
    word_head: nn.Module,
    clip_head: nn.Module,
    clip_draws: torch.Tensor,
    word_draws: torch.Tensor,
    *,
    tau: float = 0.07,
    content_mask: torch.Tensor | None = None,
    span_mask: torch.Tensor | None = None,
    context_stop_grad: bool = False,
    temporal_directions: str = "both",
) -> dict[str, torch.Tensor]:
    """§3b (METHOD.md; docs/method.md "The release's form"): {"temporal", "temporal_z", "temporal_w"}.

    ``temporal_z``, clip-anchored: clip t, its matched word m = argmax_l S[t,l], a word s of the same sentence
    (over its valid words), positive g_w(w[s], s − m) (``word_head``); ``temporal_w``, word-anchored: word l,
    its matched clip q = argmax_t S[t,l], a clip s of the same video, positive g_c(c[s], s − q) (``clip_head``),
    each word its own Δ. Negatives: K raw words / clips of the same sample; InfoNCE at τ; plain means, no ω.
    ``span_mask`` [B,T] (``context_in_span``): clips outside the caption's span are neither anchors, matches,
    warped clips nor negatives (a sample without one has no term). ``content_mask`` (``stopwords``) restricts
    the matched words and the word anchors as in §2. ``context_stop_grad`` detaches the clip that is warped."""
    clips, words = _as_float(clips), _as_float(words)
    _check_inputs(clips, words, clip_mask, word_mask)
    _check_choice("temporal_directions", temporal_directions, TEMPORAL_DIRECTIONS)
    if tau <= 0:
        raise ValueError(f"tau_fine must be > 0, got {tau}")
    B, T, _ = clips.shape
    L = words.shape[1]
    _check_release_draws(clip_draws, word_draws, B, T, L)
    zero = clips.new_zeros(())
    anchor_words = word_mask if content_mask is None else _content_anchor_mask(content_mask, word_mask)
    tclip = clip_mask if span_mask is None else clip_mask & span_mask.to(clip_mask.device).bool()
    cm = torch.where(clip_mask[..., None], clips, zero)
    wm = torch.where(word_mask[..., None], words, zero)
    with torch.no_grad():
        sim = torch.bmm(cm, wm.transpose(1, 2))
        neg_inf = torch.tensor(float("-inf"), dtype=sim.dtype, device=sim.device)
        m = torch.where(anchor_words[:, None, :], sim, neg_inf).argmax(2)  # [B,T]
        q = torch.where(tclip[:, :, None], sim, neg_inf).argmax(1)  # [B,L]
    picked_w = pick_valid(clip_draws.to(clips.device), word_mask)  # [B,T,1+K] word positions
    picked_c = pick_valid(word_draws.to(clips.device), tclip)  # [B,L,1+K] clip positions
    l_z = _release_direction(cm, wm, wm, picked_w, m, word_head, tau, False)
    l_w = _release_direction(wm, cm, cm, picked_c, q, clip_head, tau, context_stop_grad)
    out = {"temporal_z": _masked_mean(l_z, tclip),
           "temporal_w": _masked_mean(l_w, anchor_words & tclip.any(1, keepdim=True))}
    if temporal_directions == "both":
        out["temporal"] = 0.5 * (out["temporal_z"] + out["temporal_w"])
    else:
        out["temporal"] = out["temporal_z" if temporal_directions == "clip" else "temporal_w"]
    return out


def splice_batch(clips: torch.Tensor, clip_mask: torch.Tensor, draws: torch.Tensor):
    """The release's spliced videos: (clips [B,T,...], clip_mask [B,T], k [B], ok [B]). Sample i keeps its clips
    before k_i and takes its partner's (sample (i+1) mod B of this batch) from k_i on; k_i = ⌊u_i·n⌋ over
    [0, n), n = min of the two valid lengths, so both contribute and the spliced video's length (its partner's)
    says nothing of k. ``clips`` are the encoder's inputs (pixels or features); ``ok`` is False where the
    partner is the sample itself (B = 1). Runs on the rank's local batch, as the release's per-GPU randperm."""
    B, T = clip_mask.shape
    clip_mask = clip_mask.bool()
    if tuple(draws.shape) != (B,):
        raise ValueError(f"splice draws must be [B]={B}, got {tuple(draws.shape)}")
    partner = (torch.arange(B, device=clip_mask.device) + 1) % B
    n = clip_mask.sum(1)
    n_pair = torch.minimum(n, n[partner]).clamp_min(1)
    k = (draws.to(clip_mask.device) * n_pair).floor().long().clamp(0, None)
    k = torch.minimum(k, n_pair - 1)
    own = torch.arange(T, device=clip_mask.device)[None, :] < k[:, None]
    own = own.view(B, T, *[1] * (clips.dim() - 2)).to(clips.device)
    spliced = torch.where(own, clips, clips[partner.to(clips.device)])
    return spliced, clip_mask[partner], k, partner != torch.arange(B, device=clip_mask.device)


@_outside_autocast
def splice_loss(clips: torch.Tensor, clip_mask: torch.Tensor, k: torch.Tensor, ok: torch.Tensor,
                classifier: nn.Module) -> torch.Tensor:
    """L_s = mean over the spliced videos (``ok``) of CE(classifier(clips), k), the classes being the spliced
    video's valid clip positions; 0 (attached) when no video was spliced."""
    clips = _as_float(clips)
    clip_mask = clip_mask.bool()
    logits = classifier(torch.where(clip_mask[..., None], clips, clips.new_zeros(())))
    logits = logits.masked_fill(~clip_mask, float("-inf"))
    k = k.to(device=logits.device, dtype=torch.long)
    ce = torch.logsumexp(logits, dim=1) - logits.gather(1, k[:, None]).squeeze(1)
    return _masked_mean(ce, ok.to(logits.device).bool() & clip_mask.any(1))


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
    """§2 alone: {"fine", "fine_cw", "fine_wc"} (L_f = ½(L_cw + L_wc)); see ``fine_temporal_losses``."""
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
    max_offset: int = 2,
    sigma: float = math.inf,
    intra_negatives: bool = False,
    soft: bool = False,
    bf16_products: bool = False,
    temporal_negatives: str = "clips",
    context_stop_grad: bool = False,
    temporal_directions: str = "both",
    content_mask: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """§3 alone: {"temporal", "temporal_z", "temporal_w"} (L_t = ½(L_tz + L_tw), each ω-weighted); see
    ``fine_temporal_losses``."""
    out, _ = fine_temporal_losses(
        clips, words, clip_mask, word_mask, fine=False, temporal=True, head=head, offsets=offsets, topk=topk,
        tau=tau, max_offset=max_offset, sigma=sigma, intra_negatives=intra_negatives, soft=soft,
        bf16_products=bf16_products, temporal_negatives=temporal_negatives, context_stop_grad=context_stop_grad,
        temporal_directions=temporal_directions, content_mask=content_mask,
    )
    return out


def aux_ramp(step: int, start: int, length: int) -> float:
    """Scale of the fine-grained and temporal weights at ``step`` (0-based): 0 before ``start``, then a linear
    rise to 1 over ``length`` steps (docs/method.md, "Ramp")."""
    if step < start:
        return 0.0
    if length <= 0:
        return 1.0
    return min(1.0, (step - start + 1) / length)


# ----------------------------------------------------------------------------------------------------------
# the options
# ----------------------------------------------------------------------------------------------------------
OPTION_NAMES: tuple[str, ...] = tuple(f.name for f in fields(ObjectiveConfig))
_RENAMED_OPTIONS = {"window": "max_offset"}  # old name -> new name (the old one still works, with a warning)


def _plain(options: Any, what: str) -> dict:
    """``options`` as a plain dict: an ObjectiveConfig (or any dataclass), a DictConfig or a mapping."""
    if options is None:
        return {}
    if isinstance(options, DictConfig):
        return OmegaConf.to_container(options, resolve=True)
    if is_dataclass(options) and not isinstance(options, type):
        return asdict(options)
    if isinstance(options, Mapping):
        return dict(options)
    raise TypeError(f"{what} must be an ObjectiveConfig, a DictConfig or a mapping, got {type(options).__name__}")


def _loss_weights(weights: Any) -> dict:
    """``objective.weights`` as a complete dict (a term left out keeps LossWeights' default)."""
    given = _plain(weights, "objective.weights")
    unknown = sorted(set(given) - {f.name for f in fields(LossWeights)})
    if unknown:
        raise ValueError(f"objective.weights.{unknown[0]}: unknown loss term (expected coarse, fine, temporal, "
                         "splice)")
    return {**asdict(LossWeights()), **given}


def objective_options(options: Any = None, **overrides: Any) -> ObjectiveConfig:
    """The objective's options as one :class:`locvtp.config.ObjectiveConfig`, the only place an option and its
    default are written: a Python caller and a config silent on a key train the same objective.

    ``options``: an ObjectiveConfig, the ``objective`` node of a config (DictConfig or mapping) or a whole
    config; ``overrides`` (option names as keywords) go on top. A name that is not an option is a ValueError
    naming it; a value of the wrong type too (checked and converted as the config does)."""
    given = _plain(options, "options")
    if "objective" in given:  # a whole Config
        given = _plain(given["objective"], "options.objective")
    given.update(overrides)
    for old, new in _RENAMED_OPTIONS.items():
        if old in given:
            warnings.warn(f"objective option {old}= is deprecated: use {new}=", DeprecationWarning, stacklevel=3)
            value = given.pop(old)
            given.setdefault(new, value)
    unknown = sorted(set(given) - set(OPTION_NAMES))
    if unknown:
        raise ValueError(f"objective.{unknown[0]}: not an option of the objective (locvtp.config.ObjectiveConfig: "
                         f"{', '.join(OPTION_NAMES)})")
    if given.get("weights") is not None:
        given["weights"] = _loss_weights(given["weights"])
    else:
        given.pop("weights", None)
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ObjectiveConfig), given))
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "options"
        raise ValueError(f"objective.{key}: {str(getattr(exc, 'msg', exc)).splitlines()[0]}") from None


def _check_options(o: ObjectiveConfig) -> None:
    """The values the config's RULES also refuse, for an objective built without a config."""
    _check_temporal_negatives(o.temporal_negatives)
    _check_choice("temporal_directions", o.temporal_directions, TEMPORAL_DIRECTIONS)
    _check_choice("stopwords", o.stopwords, STOPWORDS)
    _check_choice("temporal_form", o.temporal_form, TEMPORAL_FORMS)
    if o.release_negatives < 1:
        raise ValueError(f"objective.release_negatives must be >= 1, got {o.release_negatives}")
    if o.temporal_form == "release" and (o.temporal_negatives != "clips" or not math.isinf(o.sigma)):
        raise ValueError("objective.temporal_form=release has its own negatives (K raw same-sample words / clips) "
                         "and no distance weighting: leave objective.temporal_negatives=clips and objective.sigma=inf")
    if o.weights.splice < 0:
        raise ValueError(f"objective.weights.splice must be >= 0, got {o.weights.splice}")
    if o.topk < 1:
        raise ValueError(f"objective.topk must be >= 1, got {o.topk}")
    if o.tau_fine <= 0:
        raise ValueError(f"objective.tau_fine must be > 0, got {o.tau_fine}")
    if not (o.sigma > 0):
        raise ValueError(f"objective.sigma must be > 0 (inf = uniform), got {o.sigma}")
    if not (0 < o.logit_scale_init <= o.logit_scale_max):
        raise ValueError(f"objective.logit_scale_init ({o.logit_scale_init}) must be in (0, logit_scale_max="
                         f"{o.logit_scale_max}]")
    if not (o.coarse or o.fine or o.temporal):
        raise ValueError("at least one of objective.coarse / fine / temporal must be enabled")


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
    """L = λ_c L_c + r(step)·(λ_f L_f + λ_t L_t) over the global batch (docs/method.md "Total" and "Ramp");
    owns g (context head), the logit scale and the ramp r (``set_step``).

    Built from one options object (:func:`objective_options`): ``LocVTPObjective(cfg.objective, dim=256)``,
    ``LocVTPObjective(dim=256, topk=2)`` or both; every option left out is ``ObjectiveConfig``'s default, and
    ``.options`` holds them all. ``dim`` (the joint space, ``model.dim``) and ``fused`` (the fused negatives
    kernel; False = the masked reference path, for tests and benchmarks) are not objective options.

    ``forward(clips, words, sentence, clip_mask, word_mask, offsets=None)`` takes the *local* L2-normalised
    features (and boolean masks); under torch.distributed with ``gather=True`` it first gathers them — with
    gradients — and the offsets from all ranks (docs/method.md, "Distributed training"). Offsets are drawn
    here (``draw_offsets``) only when not given; training draws them with the data.
    ``window`` is the deprecated name of ``max_offset``.

    ``temporal_form="release"`` (METHOD.md §3b) replaces g by two :class:`OffsetEncoding` (``release_word_head``,
    ``release_clip_head``); ``weights.splice > 0`` adds the splice classifier, which needs ``num_clips`` (T,
    ``data.num_clips``) and the encoded spliced batch (``splice=``, see :func:`splice_batch`).
    """

    def __init__(self, options: ObjectiveConfig | Mapping[str, Any] | None = None, *, dim: int = 256,
                 fused: bool = True, num_clips: int | None = None, **overrides: Any):
        super().__init__()
        o = self.options = objective_options(options, **overrides)
        _check_options(o)
        self.weights = {k: float(v) for k, v in asdict(o.weights).items()}
        # multiplies the fine and temporal weights; set_step(step) sets it from the ramp (docs/method.md "Ramp")
        self.aux_scale = 1.0
        self.ramp_start, self.ramp_steps = int(o.ramp_start), int(o.ramp_steps)
        self.dim, self.topk, self.max_offset, self.sigma = dim, int(o.topk), int(o.max_offset), float(o.sigma)
        self.use_coarse, self.use_fine, self.use_temporal = bool(o.coarse), bool(o.fine), bool(o.temporal)
        self.intra_negatives, self.soft = bool(o.intra_negatives), bool(o.soft)
        self.tau_fine = float(o.tau_fine)
        self.logit_scale_max = float(o.logit_scale_max)
        self.gather = bool(o.gather)
        self.bf16_products = bool(o.bf16_products)
        self.fused = bool(fused)
        self.temporal_negatives = str(o.temporal_negatives)
        self.context_in_span, self.context_stop_grad = bool(o.context_in_span), bool(o.context_stop_grad)
        self.temporal_directions, self.stopwords = str(o.temporal_directions), str(o.stopwords)
        self.temporal_form, self.release_negatives = str(o.temporal_form), int(o.release_negatives)
        self.temporal_text_grad = bool(o.temporal_text_grad)
        self.splice_weight = self.weights["splice"]
        if self.temporal_form == "method":
            self.context_head = ContextProjectionHead(dim, window=self.max_offset, kind=o.head, hidden=o.head_hidden)
        else:  # §3b: one offset encoding for warped words, another for warped clips; no g (nothing unused for DDP)
            self.context_head = None
            self.release_word_head, self.release_clip_head = OffsetEncoding(dim), OffsetEncoding(dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(o.logit_scale_init)))
        if self.splice_weight > 0:
            if num_clips is None:
                raise ValueError("objective.weights.splice > 0 needs num_clips= (data.num_clips): the splice "
                                 "classifier reads the T concatenated clip embeddings")
            self.splice_classifier = SpliceClassifier(dim, int(num_clips))

    @classmethod
    def from_config(cls, objective_cfg: Any, dim: int = 256, num_clips: int | None = None) -> "LocVTPObjective":
        """``cls(objective_cfg, dim=dim, num_clips=num_clips)``: ``cfg.objective`` (ObjectiveConfig, DictConfig
        or mapping; a whole Config too)."""
        return cls(objective_cfg, dim=dim, num_clips=num_clips)

    @property
    def window(self) -> int:
        """Deprecated name of :attr:`max_offset`."""
        return self.max_offset

    def set_step(self, step: int) -> float:
        """Set the ramp of the fine and temporal weights for optimisation step ``step`` (0-based); returns it."""
        self.aux_scale = aux_ramp(step, self.ramp_start, self.ramp_steps)
        return self.aux_scale

    def ramp_note(self, max_steps: int) -> str | None:
        """A warning when the ramp never starts within ``max_steps`` (the aux terms would only be logged)."""
        if (self.use_fine or self.use_temporal) and self.ramp_start >= max_steps:
            return (f"objective.ramp_start={self.ramp_start} >= train.max_steps={max_steps}: the fine and temporal "
                    "terms are logged but never weighted in (lower objective.ramp_start)")
        return None

    def scale(self) -> torch.Tensor:
        """1/τ_c = exp(logit_scale), clamped at ``logit_scale_max`` (CLIP)."""
        return self.logit_scale.exp().clamp(max=self.logit_scale_max)

    def _gather(self, clips, words, sentence, clip_mask, word_mask, offsets, content_mask=None, extras=None):
        """Global batch from all ranks (features with gradients); pads T and L to the largest rank's.
        ``extras`` (the release's draws, span mask, spliced clips; None entries stay None) are gathered too and
        returned as the last element."""
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
        if content_mask is not None:
            gathered = gathered + (all_gather_nograd(_pad_to(content_mask, L, 1), sizes),)
        if extras is None:
            return gathered
        return gathered + (self._gather_extras(extras, sizes, T, L),)

    @staticmethod
    def _gather_extras(extras: dict, sizes, T: int, L: int) -> dict:
        """The release form's draws and span mask (no gradient) and the spliced clips (with gradient)."""
        out = dict(extras)
        for key, size in (("span_mask", T), ("clip_draws", T), ("word_draws", L)):
            if extras.get(key) is not None:
                out[key] = all_gather_nograd(_pad_to(extras[key], size, 1), sizes)
        if extras.get("splice") is not None:
            emb, mask, k, ok = extras["splice"]
            out["splice"] = (all_gather_with_grad(_pad_to(emb, T, 1), sizes),
                             all_gather_nograd(_pad_to(mask.bool(), T, 1), sizes),
                             all_gather_nograd(k, sizes), all_gather_nograd(ok.bool(), sizes))
        return out

    def _prepare_extras(self, clip_mask, word_mask, span_mask, clip_draws, word_draws, splice) -> dict:
        """What the release form and the splice term read besides the features (drawn here when not given)."""
        B, T = clip_mask.shape
        extras: dict[str, Any] = {"span_mask": None, "clip_draws": None, "word_draws": None, "splice": None}
        if self.use_temporal and self.temporal_form == "release":
            if clip_draws is None or word_draws is None:
                clip_draws, word_draws = draw_release_variates(B, T, word_mask.shape[1], self.release_negatives,
                                                               device=clip_mask.device)
            extras["clip_draws"], extras["word_draws"] = clip_draws, word_draws
            if self.context_in_span:
                if span_mask is None:
                    raise ValueError("objective.context_in_span with temporal_form=release keeps the clips inside "
                                     "the caption's span: pass span_mask= (the dataset's)")
                extras["span_mask"] = span_mask.to(clip_mask.device).bool()
        if self.splice_weight > 0:
            if splice is None:
                raise ValueError("objective.weights.splice > 0 needs splice=(clip embeddings of the spliced batch, "
                                 "their clip mask, k, ok): locvtp.objectives.splice_batch, then encode_video")
            extras["splice"] = splice
        return extras

    def _fine_temporal(self, clips, words, clip_mask, word_mask, offsets, content_mask, extras):
        """(terms, correspondences) of §2 and §3 (METHOD.md's form, or §3b's with ``temporal_form=release``);
        ``temporal_text_grad=False`` gives the temporal term detached words (a separate pass for METHOD.md's)."""
        method_t = self.use_temporal and self.temporal_form == "method"
        kw = dict(head=self.context_head, offsets=offsets, topk=self.topk, tau=self.tau_fine,
                  max_offset=self.max_offset, sigma=self.sigma, intra_negatives=self.intra_negatives, soft=self.soft,
                  bf16_products=self.bf16_products, fused=self.fused, temporal_negatives=self.temporal_negatives,
                  context_stop_grad=self.context_stop_grad, temporal_directions=self.temporal_directions,
                  content_mask=content_mask)
        if method_t and not self.temporal_text_grad:
            terms, corr = fine_temporal_losses(clips, words, clip_mask, word_mask, fine=self.use_fine,
                                               temporal=False, **kw)
            t_terms, t_corr = fine_temporal_losses(clips, words.detach(), clip_mask, word_mask, fine=False,
                                                   temporal=True, **kw)
            terms.update(t_terms)
            corr = corr if self.use_fine else t_corr
        else:
            terms, corr = fine_temporal_losses(clips, words, clip_mask, word_mask, fine=self.use_fine,
                                               temporal=method_t, **kw)
        if self.use_temporal and self.temporal_form == "release":
            terms.update(release_temporal_loss(
                clips, words if self.temporal_text_grad else words.detach(), clip_mask, word_mask,
                self.release_word_head, self.release_clip_head, extras["clip_draws"], extras["word_draws"],
                tau=self.tau_fine, content_mask=content_mask, span_mask=extras["span_mask"],
                context_stop_grad=self.context_stop_grad, temporal_directions=self.temporal_directions))
        return terms, corr

    def _content_mask(self, content_mask, device):
        if self.stopwords == "none":
            return None  # default: every valid word may be a positive (bit-identical to before)
        if content_mask is None:
            raise ValueError(
                f"objective.stopwords={self.stopwords!r} needs the batch's content_mask (made by the Collator: "
                "locvtp.data.stopwords.content_words); pass content_mask= to the objective"
            )
        return content_mask.to(device=device).bool()

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
        clip_draws: torch.Tensor | None = None,
        word_draws: torch.Tensor | None = None,
        splice: tuple | None = None,
    ) -> dict[str, torch.Tensor]:
        """``content_mask`` [B,L] (the Collator's, from :func:`content_words`) is used only with
        ``stopwords="english"`` and required then; ``span_mask`` [B,T] (clips inside the caption's span) when
        the offsets are drawn here with ``context_in_span``, and with ``temporal_form=release`` and
        ``context_in_span``. ``clip_draws`` / ``word_draws``: the release form's variates
        (:func:`draw_release_variates`; drawn here when not given, training draws them with the data).
        ``splice``: (clip embeddings [B,T,D] of the spliced batch, its clip mask, k, ok) when
        ``weights.splice > 0`` (:func:`splice_batch`)."""
        clip_mask, word_mask = clip_mask.bool(), word_mask.bool()
        content_mask = self._content_mask(content_mask, clips.device)
        if offsets is None:
            if self.context_in_span and span_mask is None:
                raise ValueError("objective.context_in_span draws offsets inside the caption's span: pass "
                                 "span_mask= (or offsets drawn by the dataset)")
            offsets = draw_offsets(clip_mask, self.max_offset,
                                   span_mask=span_mask.bool() if self.context_in_span else None)
        offsets = offsets.to(device=clips.device, dtype=torch.long)
        extras = self._prepare_extras(clip_mask, word_mask, span_mask, clip_draws, word_draws, splice)
        if self.gather and is_distributed():
            clips, words, sentence, clip_mask, word_mask, offsets, *rest = self._gather(
                clips, words, sentence, clip_mask, word_mask, offsets, content_mask, extras
            )
            extras = rest[-1]
            content_mask = rest[0] if len(rest) > 1 else None
        clips, words, sentence = _as_float(clips), _as_float(words), _as_float(sentence)
        zero = clips.new_zeros(())
        scale = self.scale()
        out: dict[str, torch.Tensor] = {}
        out["coarse"] = coarse_loss(clips, sentence, clip_mask, scale) if self.use_coarse else zero
        terms, corr = self._fine_temporal(clips, words, clip_mask, word_mask, offsets, content_mask, extras)
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
        if self.splice_weight > 0:  # not ramped: it needs no discovered correspondences
            out["splice"] = splice_loss(*extras["splice"], self.splice_classifier)
            total = total + self.splice_weight * out["splice"]
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
        return f"dim={self.dim}, fused={self.fused}, " + ", ".join(
            f"{k}={v!r}" for k, v in asdict(self.options).items())
