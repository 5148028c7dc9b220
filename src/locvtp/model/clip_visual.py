"""CLIP's image tower (ViT), written here so OpenAI / open_clip weights load without torchvision or open_clip.

Why our own module: torchvision (hence ``open_clip``) does not load beside this torch, and ``locvtp extract
--backbone clip`` only needs the image tower. The layout follows Radford et al., "Learning Transferable Visual
Models From Natural Language Supervision" (ICML 2021) and the reference implementation (openai/CLIP
``clip/model.py``, ``VisionTransformer``): a patch convolution without bias, a class token, learned positions,
``ln_pre``, pre-LN residual blocks (``ln_1`` → multi-head attention, ``ln_2`` → ``c_fc`` → activation →
``c_proj``), ``ln_post`` on the class token, then the ``proj`` matrix. Parameter names are the upstream ones
(``conv1``, ``class_embedding``, ``positional_embedding``, ``ln_pre``, ``transformer.resblocks.N.attn.in_proj_
weight`` …, ``ln_post``, ``proj``), so a state dict's ``visual.*`` entries load unchanged; open_clip's
``VisionTransformer`` uses the same names for these architectures.

Everything else is read from the state dict (width, patch, resolution, depth, output width), so any depth loads
(tests use a two-layer tower); the heads are width / 64 as in every CLIP ViT. The residual blocks and the
activation choice are :mod:`locvtp.model.clip_transformer`'s, shared with the text tower
(:mod:`locvtp.model.clip_text`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import torch
from torch import nn

from .clip_transformer import ACTIVATIONS, HEAD_WIDTH, ClipTransformer, resblock_count

# openai/CLIP clip/clip.py `_transform`: Normalize(mean, std) after ToTensor (pixels in [0, 1]).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class ClipVisualArch:
    """The shape of a CLIP ViT image tower (all of it is in the state dict but the activation)."""

    width: int
    patch: int
    image_size: int
    layers: int
    out_dim: int

    @property
    def heads(self) -> int:
        return self.width // HEAD_WIDTH

    @property
    def name(self) -> str:
        """``ViT-B/32``-style name when the shape is one of :data:`CLIP_ARCHS`, else a description."""
        for k, v in CLIP_ARCHS.items():
            if v == self:
                return k
        return f"ViT(width={self.width}, patch={self.patch}, image={self.image_size}, layers={self.layers})"


# The published towers (openai/CLIP clip/model.py `build_model` reads these from the weights the same way).
CLIP_ARCHS = {
    "ViT-B/32": ClipVisualArch(768, 32, 224, 12, 512),
    "ViT-B/16": ClipVisualArch(768, 16, 224, 12, 512),
    "ViT-L/14": ClipVisualArch(1024, 14, 224, 24, 768),
    "ViT-L/14@336px": ClipVisualArch(1024, 14, 336, 24, 768),
}


class ClipArchError(ValueError):
    """The state dict is not a CLIP ViT image tower (the message says what is missing)."""


def arch_from_state(state: Mapping[str, torch.Tensor]) -> ClipVisualArch:
    """The tower's shape from its (``visual.``-stripped) state dict, as openai/CLIP ``build_model`` infers it."""
    need = ("conv1.weight", "positional_embedding", "proj", "class_embedding")
    absent = [k for k in need if k not in state]
    if absent:
        raise ClipArchError(f"not a CLIP ViT image tower: no {', '.join(absent)}")
    conv = state["conv1.weight"]
    width, patch = int(conv.shape[0]), int(conv.shape[-1])
    grid = int(round(math.sqrt(int(state["positional_embedding"].shape[0]) - 1)))
    layers = resblock_count(state)
    if not layers:
        raise ClipArchError("not a CLIP ViT image tower: no transformer.resblocks.N.* entries")
    return ClipVisualArch(width, patch, grid * patch, layers, int(state["proj"].shape[1]))


class ClipVisual(nn.Module):
    """CLIP ViT image tower: uint8 frames ``[N, S, S, 3]`` (S = ``arch.image_size``) -> ``encode_image`` ``[N, out_dim]``.

    Normalisation is the model's (:data:`CLIP_MEAN` / :data:`CLIP_STD` on pixels / 255), so callers pass the
    decoded, resized and cropped frames as they are.
    """

    def __init__(self, arch: ClipVisualArch, activation: str = "quick_gelu"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ClipArchError(f"CLIP activation must be one of {ACTIVATIONS}, got {activation!r}")
        if arch.width % HEAD_WIDTH:
            raise ClipArchError(f"CLIP ViT width {arch.width} is not a multiple of 64 (heads = width / 64)")
        self.arch, self.activation = arch, activation
        w, grid = arch.width, arch.image_size // arch.patch
        self.conv1 = nn.Conv2d(3, w, kernel_size=arch.patch, stride=arch.patch, bias=False)
        self.class_embedding = nn.Parameter(torch.randn(w) * w ** -0.5)
        self.positional_embedding = nn.Parameter(torch.randn(grid * grid + 1, w) * w ** -0.5)
        self.ln_pre = nn.LayerNorm(w)
        self.transformer = ClipTransformer(w, arch.layers, arch.heads, activation)
        self.ln_post = nn.LayerNorm(w)
        self.proj = nn.Parameter(torch.randn(w, arch.out_dim) * w ** -0.5)
        self.out_dim = arch.out_dim

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (or float 0..255) ``[N, S, S, 3]`` -> ``[N, out_dim]`` (unnormalised, as ``encode_image``)."""
        s = self.arch.image_size
        if frames.dim() != 4 or tuple(frames.shape[1:]) != (s, s, 3):
            raise ClipArchError(f"CLIP {self.arch.name} expects frames [N, {s}, {s}, 3], got {tuple(frames.shape)}")
        # constants, not buffers: a traced/scripted copy of this module then holds exactly the upstream tensors
        mean = torch.tensor(CLIP_MEAN, dtype=self.proj.dtype, device=frames.device)
        std = torch.tensor(CLIP_STD, dtype=self.proj.dtype, device=frames.device)
        x = (frames.to(self.proj.dtype) / 255.0 - mean) / std
        x = self.conv1(x.permute(0, 3, 1, 2))  # [N, w, g, g]
        x = x.flatten(2).transpose(1, 2)  # [N, g*g, w]
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.transformer(self.ln_pre(x))
        return self.ln_post(x[:, 0, :]) @ self.proj


def visual_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The image tower's entries of a full CLIP state dict (``visual.*``, prefix removed); a state dict that is
    already the tower alone (``conv1.weight`` at the top) is returned as it is."""
    vis = {k[len("visual."):]: v for k, v in state.items() if k.startswith("visual.")}
    if vis:
        return vis
    return dict(state) if "conv1.weight" in state else {}


__all__ = ["ACTIVATIONS", "CLIP_ARCHS", "CLIP_MEAN", "CLIP_STD", "ClipArchError", "ClipVisual", "ClipVisualArch",
           "arch_from_state", "visual_state"]
