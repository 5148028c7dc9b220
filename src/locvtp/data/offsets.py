"""The temporal objective's context offsets δ, drawn with the data (docs/method.md §3).

Why here and not in the objective: training draws them per sample, in the dataset, from the sample's own
generator, so a sample gets the same offsets whichever rank, batch or loader worker it lands in (DDP equals a
single process; a resumed run equals an uninterrupted one). The objective only draws them itself when called
without them (tests, notebooks) and re-exports :func:`draw_offsets` from :mod:`locvtp.objectives`.
"""
from __future__ import annotations

import torch

__all__ = ["draw_offsets", "draw_release_variates", "draw_splice_variates"]


def draw_offsets(clip_mask: torch.Tensor, max_offset: int, generator: torch.Generator | None = None,
                 span_mask: torch.Tensor | None = None) -> torch.Tensor:
    """δ [B,T] uniform over the offsets in [−W, W]∖{0} whose context clip t+δ is a valid clip; 0 = no context.

    With the usual prefix masks (valid clips [0, n)), this is "uniform in [−W,W]∖{0}, kept inside [0, n)";
    a video with a single valid clip gets δ = 0 everywhere (its temporal terms are excluded).

    ``span_mask`` [B,T] (``objective.context_in_span``): the clips inside the caption's own span. Then both the
    reference clip and its context clip must lie in the span: a clip outside it, or one without an in-span
    neighbour within W (``max_offset``), gets δ = 0 (no temporal term). None = today's rule (bit-identical draws).
    """
    if max_offset < 1:
        raise ValueError(f"objective.max_offset must be >= 1, got {max_offset}")
    if span_mask is not None:
        if tuple(span_mask.shape) != tuple(clip_mask.shape) or span_mask.dtype != torch.bool:
            raise ValueError(f"span_mask must be a boolean [B,T]={tuple(clip_mask.shape)} tensor, got "
                             f"{span_mask.dtype} {tuple(span_mask.shape)}")
        clip_mask = clip_mask & span_mask.to(clip_mask.device)
    B, T = clip_mask.shape
    dev = clip_mask.device
    cand = torch.cat([torch.arange(-max_offset, 0, device=dev), torch.arange(1, max_offset + 1, device=dev)])  # [2W]
    ctx = torch.arange(T, device=dev)[:, None] + cand[None, :]  # [T,2W]
    inside = (ctx >= 0) & (ctx < T)
    ok = inside[None] & clip_mask[:, ctx.clamp(0, T - 1)] & clip_mask[:, :, None]  # [B,T,2W]
    score = torch.rand(ok.shape, generator=generator, device=dev if generator is None else generator.device)
    score = score.to(dev).masked_fill(~ok, -1.0)
    pick = score.argmax(dim=-1)
    delta = cand[pick]
    return torch.where(ok.any(-1), delta, torch.zeros_like(delta))


def draw_release_variates(batch: int, num_clips: int, num_words: int, negatives: int,
                          generator: torch.Generator | None = None, device: torch.device | str | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """The random choices of the release's temporal term (``objective.temporal_form=release``), as uniform
    variates in [0, 1): ``clip_draws`` [B,T,1+K] (per clip anchor: the warped word s, then K negative words) and
    ``word_draws`` [B,L,1+K] (per word anchor: the warped clip s, then K negative clips).

    Why variates and not indices: they are drawn with the data (per sample, from its own generator, like δ),
    before the sentence is tokenized and the batch padded; the objective turns each into the ⌊u·n⌋-th valid
    word or clip of its sample (:func:`locvtp.objectives.pick_valid`), so a draw never lands on padding."""
    if negatives < 1:
        raise ValueError(f"objective.release_negatives must be >= 1, got {negatives}")
    dev = device if generator is None else generator.device
    clip_draws = torch.rand((batch, num_clips, 1 + negatives), generator=generator, device=dev)
    word_draws = torch.rand((batch, num_words, 1 + negatives), generator=generator, device=dev)
    return clip_draws, word_draws


def draw_splice_variates(batch: int, generator: torch.Generator | None = None,
                         device: torch.device | str | None = None) -> torch.Tensor:
    """[B] uniform variates in [0, 1): where each sample is spliced (``objective.weights.splice``; the index
    k = ⌊u·n⌋ is taken by :func:`locvtp.objectives.splice_batch` once the partner is known)."""
    return torch.rand((batch,), generator=generator, device=device if generator is None else generator.device)
