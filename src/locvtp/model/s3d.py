"""S3D-G with MIL-NCE's HowTo100M weights: the video tower of ``s3d_howto100m.pth``, parameter names as upstream.

Architecture: Xie et al., "Rethinking Spatiotemporal Feature Learning" (ECCV 2018), S3D-G; weights: Miech et
al., "End-to-End Learning of Visual Representations from Uncurated Instructional Videos" (CVPR 2020), released
in PyTorch as antoine77340/S3D_HowTo100M (``s3dg.py``, ``s3d_howto100m.pth``). Written here from that
description so the released state dict loads by its key names without the upstream package:

* ``conv1`` runs on a 3-D space-to-depth input (2×2×2 blocks of 3 channels -> 24 channels, the TPU trick of the
  release), kernel 2×4×4, padding (1, 2, 2), then drops the first row of each of T, H, W (TensorFlow 'SAME');
* ``conv_2b`` (1×1×1), ``conv_2c`` (separable 3×3×3: 1×3×3 then 3×1×1, each conv+BN+ReLU), self-gating
  ``gating``; max-pools with TensorFlow 'SAME' padding (zero pad, larger at the end; ceil mode);
* inception blocks ``mixed_3b`` … ``mixed_5c`` (four branches ``conv_b0``, ``conv_b1_a/b``, ``conv_b2_a/b``,
  ``maxpool_b3``+``conv_b3_b``, each gated by ``gating_bK``), spatio-temporal mean -> ``mixed_5c`` (1024), then
  ``fc`` -> the 512-d ``video_embedding`` of the joint text-video space.

Every conv/BN is ``<name>.conv1`` / ``<name>.bn1`` (and ``conv2`` / ``bn2`` when separable), as in the release; its
``text_module.*`` entries (the word-embedding text tower) are not part of the video network and are ignored.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

S3D_OUTPUTS = ("embedding", "mixed_5c")


class _Unit(nn.Module):
    """conv (+ BN + ReLU); separable: 1×k×k then k×1×1 (``conv1``/``bn1``, ``conv2``/``bn2``)."""

    def __init__(self, cin: int, cout: int, kernel: Sequence[int], stride: int = 1,
                 padding: Sequence[int] | int = 0, separable: bool = False):
        super().__init__()
        k = tuple(kernel)
        pad = (padding,) * 3 if isinstance(padding, int) else tuple(padding)
        self.separable = separable and k[0] != 1
        if self.separable:
            self.conv1 = nn.Conv3d(cin, cout, (1, k[1], k[2]), stride=(1, stride, stride),
                                   padding=(0, pad[1], pad[2]), bias=False)
            self.bn1 = nn.BatchNorm3d(cout)
            self.conv2 = nn.Conv3d(cout, cout, (k[0], 1, 1), stride=(stride, 1, 1), padding=(pad[0], 0, 0),
                                   bias=False)
            self.bn2 = nn.BatchNorm3d(cout)
        else:
            self.conv1 = nn.Conv3d(cin, cout, k, stride=stride, padding=pad, bias=False)
            self.bn1 = nn.BatchNorm3d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        if self.separable:
            x = F.relu(self.bn2(self.conv2(x)))
        return x


class _Gate(nn.Module):
    """Self-gating: channels scaled by sigmoid(fc(spatio-temporal mean))."""

    def __init__(self, dim: int):
        super().__init__()
        self.fc = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc(x.mean(dim=(2, 3, 4))))[:, :, None, None, None] * x


def _same_pool(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> torch.Tensor:
    """Max-pool with TensorFlow 'SAME' padding as the release does it: zeros, ``max(k - s, 0)`` per dim with the
    extra one at the end, then ceil mode (inputs are post-ReLU, so zero padding equals -inf padding)."""
    pads: list[int] = []
    for k, s in zip(reversed(kernel), reversed(stride)):  # F.pad wants (W, H, T) pairs
        along = max(k - s, 0)
        pads += [along // 2, along - along // 2]
    return F.max_pool3d(F.pad(x, pads), kernel, stride, ceil_mode=True)


class _Inception(nn.Module):
    def __init__(self, cin: int, b0: int, b1a: int, b1b: int, b2a: int, b2b: int, b3b: int):
        super().__init__()
        self.conv_b0 = _Unit(cin, b0, (1, 1, 1))
        self.conv_b1_a = _Unit(cin, b1a, (1, 1, 1))
        self.conv_b1_b = _Unit(b1a, b1b, (3, 3, 3), padding=1, separable=True)
        self.conv_b2_a = _Unit(cin, b2a, (1, 1, 1))
        self.conv_b2_b = _Unit(b2a, b2b, (3, 3, 3), padding=1, separable=True)
        self.conv_b3_b = _Unit(cin, b3b, (1, 1, 1))
        self.gating_b0, self.gating_b1 = _Gate(b0), _Gate(b1b)
        self.gating_b2, self.gating_b3 = _Gate(b2b), _Gate(b3b)
        self.output_dim = b0 + b1b + b2b + b3b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b0 = self.gating_b0(self.conv_b0(x))
        b1 = self.gating_b1(self.conv_b1_b(self.conv_b1_a(x)))
        b2 = self.gating_b2(self.conv_b2_b(self.conv_b2_a(x)))
        b3 = self.gating_b3(self.conv_b3_b(F.max_pool3d(x, 3, stride=1, padding=1)))
        return torch.cat((b0, b1, b2, b3), dim=1)


# (name, b0, b1a, b1b, b2a, b2b, b3b) of the inception blocks, in order (S3D-G / Inception-v1 widths).
_BLOCKS = [
    ("mixed_3b", 64, 96, 128, 16, 32, 32), ("mixed_3c", 128, 128, 192, 32, 96, 64),
    ("mixed_4b", 192, 96, 208, 16, 48, 64), ("mixed_4c", 160, 112, 224, 24, 64, 64),
    ("mixed_4d", 128, 128, 256, 24, 64, 64), ("mixed_4e", 112, 144, 288, 32, 64, 64),
    ("mixed_4f", 256, 160, 320, 32, 128, 128), ("mixed_5b", 256, 160, 320, 32, 128, 128),
    ("mixed_5c", 384, 192, 384, 48, 128, 128),
]
_POOL_BEFORE = {"mixed_3b": ((1, 3, 3), (1, 2, 2)), "mixed_4b": ((3, 3, 3), (2, 2, 2)),
                "mixed_5b": ((2, 2, 2), (2, 2, 2))}


class S3DG(nn.Module):
    """S3D-G video tower: float clips ``[N, 3, T, H, W]`` in [0, 1] (T, H, W even) -> ``(embedding [N, 512],
    mixed_5c [N, 1024])``."""

    def __init__(self, embed_dim: int = 512):
        super().__init__()
        self.conv1 = _Unit(24, 64, (2, 4, 4), padding=(1, 2, 2))
        self.conv_2b = _Unit(64, 64, (1, 1, 1))
        self.conv_2c = _Unit(64, 192, (3, 3, 3), padding=1, separable=True)
        self.gating = _Gate(192)
        cin = 192
        for name, *widths in _BLOCKS:
            block = _Inception(cin, *widths)
            setattr(self, name, block)
            cin = block.output_dim
        self.fc = nn.Linear(cin, embed_dim)
        self.out_dims = {"embedding": embed_dim, "mixed_5c": cin}

    @staticmethod
    def space_to_depth(x: torch.Tensor) -> torch.Tensor:
        """[N, C, T, H, W] -> [N, 8C, T/2, H/2, W/2]; channel = ((dt·2 + dh)·2 + dw)·C + c, as the release."""
        n, c, t, h, w = x.shape
        if t % 2 or h % 2 or w % 2:
            raise ValueError(f"S3D needs an even number of frames, height and width, got T={t}, H={h}, W={w}")
        x = x.reshape(n, c, t // 2, 2, h // 2, 2, w // 2, 2).permute(0, 3, 5, 7, 1, 2, 4, 6)
        return x.reshape(n, 8 * c, t // 2, h // 2, w // 2)

    def forward(self, clips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.conv1(self.space_to_depth(clips))[:, :, 1:, 1:, 1:]
        x = _same_pool(x, (1, 3, 3), (1, 2, 2))
        x = self.gating(self.conv_2c(self.conv_2b(x)))
        for name, *_ in _BLOCKS:
            if name in _POOL_BEFORE:
                x = _same_pool(x, *_POOL_BEFORE[name])
            x = getattr(self, name)(x)
        pooled = x.mean(dim=(2, 3, 4))
        return self.fc(pooled), pooled


def video_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The video tower's entries of the release's state dict (its ``text_module.*`` dropped)."""
    return {k: v for k, v in state.items() if not k.startswith("text_module.")}


__all__ = ["S3DG", "S3D_OUTPUTS", "video_state"]
