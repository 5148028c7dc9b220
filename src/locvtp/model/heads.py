"""Projection heads into the joint space, and LocVTP's context projection head g(x, δ).

The projection head follows the authors' release: Linear → GELU → Linear → Dropout, a residual from the first
Linear, then LayerNorm. The context head warps a neighbouring clip's embedding by its temporal offset δ so it
can be contrasted as if it were the reference clip (METHOD.md §3).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ProjectionHead(nn.Module):
    """x [..., in_dim] -> [..., dim] (not normalized; callers L2-normalize)."""

    def __init__(self, in_dim: int, dim: int = 256, dropout: float = 0.1):
        super().__init__()
        self.proj = nn.Linear(in_dim, dim)
        self.fc = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        projected = self.proj(x)
        h = self.dropout(self.fc(F.gelu(projected)))
        return self.norm(h + projected)


class ContextProjectionHead(nn.Module):
    """g(x, δ) = head(x + e_sign(sign δ) + e_dist(|δ|)).

    ``kind="mlp"``: residual two-layer MLP (project choice); ``kind="linear"``: one Linear (the paper's head
    ablation). The offset embeddings are initialised small so g starts close to the identity plus a
    learnable shift, which keeps the temporal loss well-behaved from step 0.
    Offsets may be any integers with |δ| <= window; δ = 0 is allowed (no warp) and maps to its own distance
    embedding. Output is *not* normalized (the objective normalizes).
    """

    def __init__(self, dim: int = 256, window: int = 2, kind: str = "mlp", hidden: int | None = None):
        super().__init__()
        if kind not in ("mlp", "linear"):
            raise ValueError(f"context head kind must be 'mlp' or 'linear', got {kind!r}")
        if window < 1:
            raise ValueError(f"temporal window must be >= 1, got {window}")
        self.kind = kind
        self.window = window
        self.sign_embed = nn.Embedding(2, dim)  # 0: context before reference (δ < 0), 1: after (δ >= 0)
        self.dist_embed = nn.Embedding(window + 1, dim)
        nn.init.normal_(self.sign_embed.weight, std=0.02)
        nn.init.normal_(self.dist_embed.weight, std=0.02)
        if kind == "mlp":
            hidden = hidden or dim
            self.fc1 = nn.Linear(dim, hidden)
            self.fc2 = nn.Linear(hidden, dim)
            self.norm = nn.LayerNorm(dim)
        else:
            self.fc = nn.Linear(dim, dim)
            with torch.no_grad():  # start at the identity: an unwarped neighbour is a fine first guess
                self.fc.weight.copy_(torch.eye(dim))
                self.fc.bias.zero_()

    def forward(self, x: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """x [..., dim], offsets integer [...] (same leading shape) -> [..., dim]."""
        offsets = offsets.long()
        dist = offsets.abs().clamp(max=self.window)
        sign = (offsets >= 0).long()
        h = x + self.sign_embed(sign) + self.dist_embed(dist)
        if self.kind == "linear":
            return self.fc(h)
        return self.norm(h + self.fc2(F.gelu(self.fc1(h))))


class OffsetEncoding(nn.Module):
    """The release's warp g(x, Δ) = x + A_sign·sign(Δ) + A_dist·|Δ| (METHOD.md §3b), ``A_sign, A_dist``
    learned ``Linear(1, D)`` of the scalar offset (with their biases, as in the release); no MLP, no
    non-linearity. The release keeps one for warped words and one for warped clips
    (``objective.temporal_form=release``). Output is *not* normalized (the objective normalizes)."""

    def __init__(self, dim: int = 256):
        super().__init__()
        self.sign_proj = nn.Linear(1, dim)
        self.dist_proj = nn.Linear(1, dim)

    def forward(self, x: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """x [..., dim], integer offsets Δ [...] (any range; Δ = 0 adds the biases only) -> [..., dim]."""
        d = offsets.to(x.dtype).unsqueeze(-1)
        return x + self.sign_proj(torch.sign(d)) + self.dist_proj(d.abs())


class SpliceClassifier(nn.Module):
    """The release's splice classifier: ``Linear(T·D, T)`` over the concatenated clip embeddings of a spliced
    video, one logit per clip position k (where the second video starts). Needs a fixed T (``data.num_clips``)."""

    def __init__(self, dim: int, num_clips: int):
        super().__init__()
        if num_clips < 1:
            raise ValueError(f"the splice classifier needs num_clips >= 1, got {num_clips}")
        self.dim, self.num_clips = dim, num_clips
        self.fc = nn.Linear(num_clips * dim, num_clips)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        """clips [B,T,D] (padded clips zero) -> logits [B,T]."""
        B, T, D = clips.shape
        if (T, D) != (self.num_clips, self.dim):
            raise ValueError(f"the splice classifier was built for [T,D]={self.num_clips, self.dim} "
                             f"(data.num_clips, model.dim), got {T, D}")
        return self.fc(clips.reshape(B, T * D))
