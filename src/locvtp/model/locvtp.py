"""The LocVTP model: video and text encoders, projection heads, L2-normalized joint embeddings.

``encode_video`` gives clip embeddings ``c[i,t]`` and ``encode_text`` word embeddings ``w[i,l]`` plus the sentence
embedding ``s[i]`` of METHOD.md ("Notation"). The losses live in ``locvtp.objectives``; this module knows nothing
of them. Masked (padded) positions come out as exact zeros: finite, never NaN, and harmless in any product.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ..config import ModelConfig, as_model_config
from .heads import ProjectionHead
from .text import build_text_encoder
from .video import build_video_encoder, is_pixel_encoder


def _human(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1e6:.2f}M"
    if n >= 1_000:
        return f"{n / 1e3:.1f}K"
    return str(n)


def _to_model_config(cfg: Any) -> DictConfig:
    """Full Config / ModelConfig / plain dict -> a typed ModelConfig DictConfig (unknown keys fail by name)."""
    part = as_model_config(cfg)
    if not isinstance(part, DictConfig):
        part = OmegaConf.create(part if isinstance(part, dict) else OmegaConf.structured(part))
    return OmegaConf.merge(OmegaConf.structured(ModelConfig), part)


class LocVTP(nn.Module):
    """Two towers into a shared ``dim``-d space (default 256, as the authors)."""

    def __init__(self, video_encoder: nn.Module, text_encoder: nn.Module, dim: int = 256, proj_dropout: float = 0.1,
                 config: Optional[DictConfig] = None):
        super().__init__()
        self.video_encoder = video_encoder
        self.text_encoder = text_encoder
        self.dim = dim
        self.video_proj = ProjectionHead(video_encoder.out_dim, dim, proj_dropout)
        # One text head for words and sentence: both come from the same hidden states, so sharing keeps word
        # and sentence embeddings in one space (the fine- and coarse-grained losses then agree).
        self.text_proj = ProjectionHead(text_encoder.out_dim, dim, proj_dropout)
        self.config = config

    @classmethod
    def from_config(cls, cfg: Any, load_pretrained: bool = True) -> "LocVTP":
        """Build from a full ``Config`` or its ``model`` part. ``load_pretrained=False`` skips reading external
        weights (C3D state dict, HF weights: architecture from config.json) because a checkpoint follows."""
        mcfg = _to_model_config(cfg)
        video = build_video_encoder(mcfg.video, load_pretrained=load_pretrained)
        text = build_text_encoder(mcfg.text, load_pretrained=load_pretrained)
        return cls(video, text, dim=int(mcfg.dim), proj_dropout=float(mcfg.proj_dropout), config=mcfg)

    # -- video ---------------------------------------------------------------------------------------------------
    @property
    def video_kind(self) -> str:
        return str(self.config.video.name) if self.config is not None else type(self.video_encoder).__name__

    @property
    def takes_pixels(self) -> bool:
        """True when ``encode_video`` expects uint8 frames ``[B,T,F,H,W,3]`` (else float features ``[B,T,Din]``)."""
        return self.config is None or is_pixel_encoder(str(self.config.video.name))

    def video_backbone(self, clips: torch.Tensor, clip_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Pre-projection per-clip features ``[B, T, Dv]`` (what ``extract --backbone`` writes)."""
        return self.video_encoder(clips, clip_mask)

    def encode_video(self, clips: torch.Tensor, clip_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """clips -> L2-normalized clip embeddings ``[B, T, D]``; masked clips are zeros."""
        x = F.normalize(self.video_proj(self.video_backbone(clips, clip_mask)), dim=-1)
        if clip_mask is not None:
            x = x * clip_mask.to(device=x.device, dtype=torch.bool).unsqueeze(-1).to(x.dtype)
        return x

    # -- text ----------------------------------------------------------------------------------------------------
    def encode_text(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """ids ``[B, L]`` -> (words ``[B, L, D]``, sentence ``[B, D]``), L2-normalized; padded words are zeros.

        ``attention_mask`` defaults to ``input_ids != 0`` (pad id 0). Special tokens are *not* zeroed here:
        callers drop them with the tokenizer's ``word_mask``.
        """
        if attention_mask is None:
            attention_mask = input_ids != 0
        mask = attention_mask.bool()
        hidden, pooled = self.text_encoder(input_ids, mask)
        words = F.normalize(self.text_proj(hidden), dim=-1) * mask.unsqueeze(-1).to(hidden.dtype)
        sentence = F.normalize(self.text_proj(pooled), dim=-1)
        return words, sentence

    def forward(self, clips: torch.Tensor, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                clip_mask: Optional[torch.Tensor] = None) -> dict[str, torch.Tensor]:
        """Both towers at once (convenient for DDP wrapping): dict ``clips``, ``words``, ``sentence``."""
        words, sentence = self.encode_text(input_ids, attention_mask)
        return {"clips": self.encode_video(clips, clip_mask), "words": words, "sentence": sentence}

    # -- bookkeeping ---------------------------------------------------------------------------------------------
    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def summary(self) -> str:
        """One line for logs: parameter counts per part."""
        def count(m: nn.Module) -> int:
            return sum(p.numel() for p in m.parameters())

        vname = self.video_kind
        tname = str(self.config.text.name) if self.config is not None else type(self.text_encoder).__name__
        heads = count(self.video_proj) + count(self.text_proj)
        return (
            f"LocVTP dim={self.dim}: video {vname} {_human(count(self.video_encoder))}, "
            f"text {tname} {_human(count(self.text_encoder))}, heads {_human(heads)}; "
            f"total {_human(self.num_parameters())} params ({_human(self.num_parameters(True))} trainable)"
        )


__all__ = ["LocVTP"]
