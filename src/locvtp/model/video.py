"""Video encoders: clips -> per-clip backbone features ``[B, T, Dv]`` (before the projection head).

Three encoders share one contract (``forward(clips, clip_mask=None) -> [B, T, Dv]``, attribute ``out_dim``):

- ``tiny3d``: a small 3D CNN over uint8 frames ``[B, T, F, H, W, 3]``, sized so the synthetic demo trains on two
  CPU cores. Early layers have temporal kernels > 1 because the synthetic world's actions *are* motions.
- ``c3d``: the C3D architecture (Tran et al., ICCV 2015) the LocVTP authors used; 16×112×112 input at full scale,
  adaptive pooling before fc6 so smaller inputs also work (CPU tests, quick experiments).
- ``features``: a temporal encoder over pre-extracted per-clip features ``[B, T, Din]`` of any width.

Pixel encoders fold ``B·T`` into the batch so each clip is encoded independently of every other clip and
sample (GroupNorm by default: per-sample statistics, so padded clips cannot leak into real ones even in training).
An optional transformer across clips (``temporal_layers``) adds context; it uses the clip mask as a key padding
mask.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .common import Freezable
from locvtp.errors import LocVTPError

# Kinetics/ImageNet statistics in [0, 1] RGB: the usual normalization for video CNNs trained from scratch.
_RGB_MEAN = (0.43216, 0.394666, 0.37645)
_RGB_STD = (0.22803, 0.22145, 0.216989)
# C3D (Sports-1M) convention: raw 0..255 RGB minus the per-channel training mean, no scaling.
_C3D_MEAN_255 = (101.4, 97.7, 90.3)


class VideoEncoderError(LocVTPError, ValueError):
    """An encoder input or a pretrained state dict does not match what the encoder expects."""


def _check_pixels(clips: torch.Tensor) -> None:
    if clips.dim() != 6 or clips.shape[-1] != 3:
        raise VideoEncoderError(
            f"pixel video encoder expects clips [B, T, F, H, W, 3], got shape {tuple(clips.shape)}"
        )


def _normalize_pixels(clips: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, scale: float) -> torch.Tensor:
    """uint8/float [N, F, H, W, 3] -> float [N, 3, F, H, W] = (clips·scale − mean) / std.

    Why on the model side: the loader stays uint8 (4× less memory and IPC) and the normalization travels with
    the checkpoint. One fused multiply-add in the input's channels-last layout (broadcast over the last dim),
    then a single contiguous copy: ~3× cheaper than four broadcast passes over the permuted view.
    """
    gain = scale / std
    x = torch.addcmul(-mean / std, clips.to(gain.dtype), gain)
    return x.permute(0, 4, 1, 2, 3).contiguous()


def _safe_key_padding(clip_mask: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """Boolean valid-mask [B, T] -> key padding mask (True = ignore). Rows with no valid clip get no padding so
    attention never normalises over an empty set (which yields NaN); those rows' outputs are ignored anyway."""
    if clip_mask is None:
        return None
    clip_mask = clip_mask.bool()
    pad = ~clip_mask
    empty = ~clip_mask.any(dim=1, keepdim=True)
    return pad & ~empty


class TemporalTransformer(nn.Module):
    """Pre-LN transformer across the clips of one video, with learned positional embeddings.

    The position table has ``max_clips`` rows; longer sequences linearly interpolate it (so a model trained on
    T = 8 clips can still embed a long video at inference, with a documented approximation).
    """

    def __init__(self, dim: int, layers: int, heads: int, dropout: float = 0.1, max_clips: int = 512):
        super().__init__()
        if dim % heads != 0:
            raise VideoEncoderError(f"temporal transformer width {dim} is not divisible by temporal_heads={heads}")
        self.pos = nn.Parameter(torch.zeros(max_clips, dim))
        nn.init.normal_(self.pos, std=0.02)
        layer = nn.TransformerEncoderLayer(
            dim, heads, dim_feedforward=4 * dim, dropout=dropout, activation="gelu", batch_first=True, norm_first=True
        )
        # enable_nested_tensor=False: padded positions stay dense and defined, and train/eval paths agree.
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def positions(self, t: int) -> torch.Tensor:
        if t <= self.pos.shape[0]:
            return self.pos[:t]
        return F.interpolate(self.pos.t().unsqueeze(0), size=t, mode="linear", align_corners=True)[0].t()

    def forward(self, x: torch.Tensor, clip_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = x + self.positions(x.shape[1]).unsqueeze(0)
        return self.norm(self.encoder(x, src_key_padding_mask=_safe_key_padding(clip_mask)))


def _norm3d(kind: str, channels: int) -> nn.Module:
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    if kind == "batch":
        return nn.BatchNorm3d(channels)
    raise VideoEncoderError(f"model.video.norm must be 'group' or 'batch', got {kind!r}")


def read_state_dict(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    """A local state dict from ``.safetensors`` or a weights-only torch file (never unpickles objects); a
    ``{"state_dict": ...}`` wrapper and DDP's ``module.`` prefix are accepted. Errors name the file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise VideoEncoderError(f"model.video.pretrained: {what} pretrained weights not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - re-raised with the file name
        raise VideoEncoderError(f"{path}: cannot read {what} state dict: {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise VideoEncoderError(f"{path}: expected a state dict (mapping of tensors), got {type(state).__name__}")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}


def load_matching(module: nn.Module, state: dict[str, torch.Tensor], path: str | Path, what: str) -> None:
    """``load_state_dict(strict=True)`` with one error that lists every missing, unexpected and mis-shaped key."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if tuple(state[k].shape) != tuple(own[k].shape)
    )
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing keys {missing}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected}")
        if mismatched:
            parts.append(f"shape mismatches {mismatched}")
        raise VideoEncoderError(f"{path}: {what} state dict does not match: " + "; ".join(parts))
    module.load_state_dict(state, strict=True)


class Tiny3D(nn.Module):
    """A small 3D CNN for CPU-scale pre-training.

    Layout for the default 4×32×32 clips and ``width`` w (output ``4w`` channels):

    ====== ================================ ===========
    block  conv (kernel t×h×w, stride)      output
    ====== ================================ ===========
    stem   3×5×5, stride 1×2×2, w/2 ch      4×16×16
    1      3×3×3, stride 1×2×2, w ch        4×8×8
    2      3×3×3, stride 2×2×2, 2w ch       2×4×4
    3      3×3×3, stride 2×1×1, 4w ch       1×4×4
    ====== ================================ ===========

    then global average pooling. Temporal kernels of 3 from the first layer let the net see motion directly.
    """

    def __init__(self, width: int = 32, norm: str = "group", dropout: float = 0.1):
        super().__init__()
        if width < 8 or width % 2:
            raise VideoEncoderError(f"tiny3d width must be an even integer >= 8, got {width}")
        w = width
        spec = [  # (in, out, kernel, stride)
            (3, w // 2, (3, 5, 5), (1, 2, 2)),
            (w // 2, w, (3, 3, 3), (1, 2, 2)),
            (w, 2 * w, (3, 3, 3), (2, 2, 2)),
            (2 * w, 4 * w, (3, 3, 3), (2, 1, 1)),
        ]
        blocks = []
        for cin, cout, k, s in spec:
            pad = tuple(kk // 2 for kk in k)
            blocks += [nn.Conv3d(cin, cout, k, stride=s, padding=pad, bias=False), _norm3d(norm, cout), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(dropout)
        self.out_dim = 4 * w
        self.register_buffer("mean", torch.tensor(_RGB_MEAN), persistent=False)
        self.register_buffer("std", torch.tensor(_RGB_STD), persistent=False)

    def load_pretrained(self, path: str | Path) -> None:
        """Backbone weights from ``locvtp backbone`` (or any state dict with these keys and widths)."""
        load_matching(self, read_state_dict(path, "tiny3d"), path, "tiny3d")

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        """clips uint8 [N, F, H, W, 3] -> [N, out_dim]."""
        x = _normalize_pixels(clips, self.mean, self.std, 1.0 / 255.0)
        x = self.features(x)
        return self.dropout(x.mean(dim=(2, 3, 4)))


def _pool(x: torch.Tensor, kernel: tuple[int, int, int], padding: tuple[int, int, int] = (0, 0, 0)) -> torch.Tensor:
    """Max-pool whose kernel shrinks to the input where the input is smaller (reduced-size C3D inputs)."""
    k = tuple(min(kk, s + 2 * p) for kk, s, p in zip(kernel, x.shape[2:], padding))
    pad = tuple(min(p, kk // 2) for p, kk in zip(padding, k))
    return F.max_pool3d(x, kernel_size=k, stride=k, padding=pad)


class C3D(nn.Module):
    """C3D (Tran et al. 2015): eight 3×3×3 convolutions, five max-pools, fc6/fc7 of 4096 units (dropout after
    each, 0.5 in the paper; ``model.video.dropout`` here).

    Layer names follow the paper (``conv1a`` … ``conv5b``, ``fc6``, ``fc7``). A state dict from the widespread
    PyTorch port (``conv1``, ``conv2``, ``fc8`` …) is accepted: ``conv1``/``conv2`` are renamed and the
    classifier ``fc8`` is dropped. At the native 16×112×112 input the adaptive pool before fc6 is the identity
    (pool5 gives 512×1×4×4 = 8192), so pretrained fc6 weights apply unchanged.
    """

    _CONVS = [
        ("conv1a", 3, 64), ("conv2a", 64, 128), ("conv3a", 128, 256), ("conv3b", 256, 256),
        ("conv4a", 256, 512), ("conv4b", 512, 512), ("conv5a", 512, 512), ("conv5b", 512, 512),
    ]
    _RENAME = {"conv1.": "conv1a.", "conv2.": "conv2a."}

    def __init__(self, pretrained: Optional[str] = None, dropout: float = 0.5, fc_dim: int = 4096):
        super().__init__()
        for name, cin, cout in self._CONVS:
            setattr(self, name, nn.Conv3d(cin, cout, kernel_size=3, padding=1))
        self.fc6 = nn.Linear(512 * 4 * 4, fc_dim)
        self.fc7 = nn.Linear(fc_dim, fc_dim)
        self.dropout = nn.Dropout(dropout)
        self.out_dim = fc_dim
        self.register_buffer("mean", torch.tensor(_C3D_MEAN_255), persistent=False)
        self.register_buffer("std", torch.ones(3), persistent=False)
        if pretrained:
            self.load_pretrained(pretrained)

    def load_pretrained(self, path: str | Path) -> None:
        """Load a local state dict (``.safetensors`` or a weights-only torch file). Never unpickles objects."""
        state = read_state_dict(path, "C3D")
        renamed = {}
        for key, value in state.items():
            for old, new in self._RENAME.items():
                if key.startswith(old):
                    key = new + key[len(old):]
            if key.startswith("fc8."):
                continue  # Sports-1M classifier: not part of the backbone
            renamed[key] = value
        load_matching(self, renamed, path, "C3D")

    def conv_features(self, clips: torch.Tensor) -> torch.Tensor:
        """clips uint8 [N, F, H, W, 3] -> pool5 maps [N, 512, t, h, w] (1×4×4 at the native 16×112×112)."""
        x = _normalize_pixels(clips, self.mean, self.std, 1.0)
        x = _pool(F.relu(self.conv1a(x)), (1, 2, 2))
        x = _pool(F.relu(self.conv2a(x)), (2, 2, 2))
        x = _pool(F.relu(self.conv3b(F.relu(self.conv3a(x)))), (2, 2, 2))
        x = _pool(F.relu(self.conv4b(F.relu(self.conv4a(x)))), (2, 2, 2))
        return _pool(F.relu(self.conv5b(F.relu(self.conv5a(x)))), (2, 2, 2), padding=(0, 1, 1))

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        """clips uint8 [N, F, H, W, 3] -> fc7 features [N, fc_dim]."""
        x = F.adaptive_avg_pool3d(self.conv_features(clips), (1, 4, 4)).flatten(1)
        x = self.dropout(F.relu(self.fc6(x)))
        return self.dropout(F.relu(self.fc7(x)))


class PixelVideoEncoder(Freezable):
    """Wrap a per-clip CNN: fold ``[B, T]`` into the batch, then optionally a transformer across clips."""

    def __init__(self, cnn: nn.Module, temporal_layers: int = 0, temporal_heads: int = 4, dropout: float = 0.1,
                 max_clips: int = 512):
        super().__init__()
        self.cnn = cnn
        self.out_dim = cnn.out_dim
        self.temporal = (
            TemporalTransformer(self.out_dim, temporal_layers, temporal_heads, dropout, max_clips)
            if temporal_layers > 0 else None
        )

    def forward(self, clips: torch.Tensor, clip_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        _check_pixels(clips)
        b, t = clips.shape[:2]
        flat = clips.reshape(b * t, *clips.shape[2:])
        if clip_mask is not None and clip_mask.shape != (b, t):
            raise VideoEncoderError(f"clip_mask shape {tuple(clip_mask.shape)} != clips [B, T] = {(b, t)}")
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            return self._forward(flat, clip_mask, b, t)

    def _forward(self, flat: torch.Tensor, clip_mask: Optional[torch.Tensor], b: int, t: int) -> torch.Tensor:
        if clip_mask is None or bool(clip_mask.all()):
            feats = self.cnn(flat).reshape(b, t, -1)
        else:
            # Only valid clips go through the CNN (padding costs nothing and never enters BatchNorm statistics);
            # padded slots are zeros.
            idx = clip_mask.reshape(-1).nonzero().squeeze(1).to(flat.device)
            out = self.cnn(flat.index_select(0, idx)) if idx.numel() else None
            feats = torch.zeros(b * t, self.out_dim, device=flat.device,
                                dtype=out.dtype if out is not None else torch.float32)
            if out is not None:
                feats = feats.index_copy(0, idx, out)
            feats = feats.reshape(b, t, -1)
        if self.temporal is not None:
            feats = self.temporal(feats, clip_mask)
        return feats


class FeatureVideoEncoder(Freezable):
    """Temporal encoder over pre-extracted per-clip features ``[B, T, Din]`` (S3D 512, C3D 4096, ResNet 2048 …).

    LayerNorm (feature files differ wildly in scale) → 2-layer MLP → optional transformer across clips with
    learned positions. Without temporal layers each clip is encoded on its own (sliding-window inference is then
    exactly shift-invariant), so positions are only added when there is a transformer to use them.
    """

    def __init__(self, in_dim: int, hidden: int = 512, temporal_layers: int = 0, temporal_heads: int = 4,
                 dropout: float = 0.1, max_clips: int = 512):
        super().__init__()
        if in_dim < 1 or hidden < 1:
            raise VideoEncoderError(f"features encoder needs in_dim >= 1 and hidden >= 1, got {in_dim}, {hidden}")
        self.in_dim = in_dim
        self.out_dim = hidden
        self.norm = nn.LayerNorm(in_dim)
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, hidden)
        )
        self.temporal = (
            TemporalTransformer(hidden, temporal_layers, temporal_heads, dropout, max_clips)
            if temporal_layers > 0 else None
        )

    def forward(self, clips: torch.Tensor, clip_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        if clips.dim() != 3 or clips.shape[-1] != self.in_dim:
            raise VideoEncoderError(
                f"features encoder expects float clips [B, T, {self.in_dim}] (model.video.in_dim), "
                f"got shape {tuple(clips.shape)}"
            )
        if clip_mask is not None and clip_mask.shape != clips.shape[:2]:
            raise VideoEncoderError(f"clip_mask shape {tuple(clip_mask.shape)} != clips [B, T] = {tuple(clips.shape[:2])}")
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            x = self.mlp(self.norm(clips.float()))
            if self.temporal is not None:
                x = self.temporal(x, clip_mask)
        return x


VIDEO_ENCODERS = ("tiny3d", "c3d", "features")


def build_video_encoder(vcfg: Any, load_pretrained: bool = True) -> nn.Module:
    """Build from ``cfg.model.video``. ``load_pretrained=False`` skips reading ``pretrained`` weights (used when a
    checkpoint is about to overwrite every parameter anyway)."""
    name = vcfg.name
    common = dict(temporal_layers=int(vcfg.temporal_layers), temporal_heads=int(vcfg.temporal_heads),
                  dropout=float(vcfg.dropout), max_clips=int(vcfg.max_clips))
    if name in ("tiny3d", "c3d"):
        cnn = (Tiny3D(int(vcfg.width), str(vcfg.norm), float(vcfg.dropout)) if name == "tiny3d"
               else C3D(dropout=float(vcfg.dropout)))
        if vcfg.pretrained and load_pretrained:  # both CNNs take a local state dict (load_pretrained)
            cnn.load_pretrained(vcfg.pretrained)
        enc: nn.Module = PixelVideoEncoder(cnn, **common)
    elif name == "features":
        if vcfg.get("in_dim") is None:
            raise VideoEncoderError("model.video.name=features needs model.video.in_dim (the feature width; "
                                    "`locvtp pretrain` reads it from data.features when it is not given)")
        enc = FeatureVideoEncoder(int(vcfg.in_dim), int(vcfg.hidden), **common)
    else:
        raise VideoEncoderError(f"model.video.name must be one of {VIDEO_ENCODERS}, got {name!r}")
    if vcfg.freeze:
        enc.freeze()
    return enc


def is_pixel_encoder(name: str) -> bool:
    return name in ("tiny3d", "c3d")


__all__ = [
    "C3D", "FeatureVideoEncoder", "PixelVideoEncoder", "TemporalTransformer", "Tiny3D", "VideoEncoderError",
    "VIDEO_ENCODERS", "build_video_encoder", "is_pixel_encoder",
]
