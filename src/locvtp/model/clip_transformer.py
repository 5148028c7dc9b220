"""The residual attention stack both CLIP towers share (:mod:`locvtp.model.clip_visual`, :mod:`locvtp.model.
clip_text`), with the upstream parameter names so a CLIP state dict loads unchanged.

Radford et al., "Learning Transferable Visual Models From Natural Language Supervision" (ICML 2021), §2.4 and the
reference implementation (openai/CLIP ``clip/model.py``, ``ResidualAttentionBlock`` / ``Transformer``; open_clip
``transformer.py`` keeps the names): pre-LN blocks ``x + attn(ln_1(x))`` then ``x + c_proj(act(c_fc(ln_2(x))))``
with ``attn`` a ``nn.MultiheadAttention`` (``in_proj_weight`` / ``in_proj_bias`` / ``out_proj``), the MLP 4x wide,
``width / 64`` heads. The image tower attends everywhere; the text tower passes a causal mask.

The one thing a state dict cannot say is the MLP's activation: OpenAI's weights (and open_clip's ``*-quickgelu``
models) use QuickGELU (``x·sigmoid(1.702x)``), open_clip's LAION models without that suffix exact GELU.
"""
from __future__ import annotations

import re
from typing import Mapping, Optional

import torch
from torch import nn

ACTIVATIONS = ("quick_gelu", "gelu")
HEAD_WIDTH = 64  # every published CLIP tower: heads = width / 64 (openai/CLIP build_model)


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    """Pre-LN residual block with upstream names (``ln_1``, ``attn``, ``ln_2``, ``mlp.c_fc``, ``mlp.c_proj``)."""

    def __init__(self, width: int, heads: int, activation: str):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        act = QuickGELU() if activation == "quick_gelu" else nn.GELU()
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, 4 * width))
        self.mlp.add_module("gelu", act)
        self.mlp.add_module("c_proj", nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``attn_mask``: bool ``[L, L]``, True where a position may NOT attend (the causal mask of the text)."""
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=attn_mask)[0]
        return x + self.mlp(self.ln_2(x))


class ClipTransformer(nn.Module):
    """``resblocks.N`` blocks in sequence (``transformer.resblocks.N.*`` in a CLIP state dict)."""

    def __init__(self, width: int, layers: int, heads: int, activation: str):
        super().__init__()
        self.resblocks = nn.ModuleList([ResidualAttentionBlock(width, heads, activation) for _ in range(layers)])

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x, attn_mask)
        return x


def resblock_count(state: Mapping[str, torch.Tensor], prefix: str = "transformer.") -> int:
    """How many ``{prefix}resblocks.N`` blocks a state dict holds (0: none)."""
    pat = re.compile(re.escape(prefix) + r"resblocks\.(\d+)\.")
    blocks = {int(m.group(1)) for k in state for m in [pat.match(k)] if m}
    return max(blocks) + 1 if blocks else 0


def causal_mask(length: int, device: torch.device) -> torch.Tensor:
    """bool ``[L, L]``: True above the diagonal (token i sees tokens 0..i only), as openai/CLIP
    ``build_attention_mask`` (there an additive -inf triangle)."""
    return torch.ones(length, length, dtype=torch.bool, device=device).triu(1)


__all__ = ["ACTIVATIONS", "ClipTransformer", "HEAD_WIDTH", "QuickGELU", "ResidualAttentionBlock", "causal_mask",
           "resblock_count"]
