"""The field's standard clip features (``locvtp extract --backbone clip|s3d --weights FILE``), each under its
published protocol; docs/features.md gives the protocols with their sources.

* ``clip`` — CLIP image tower (:mod:`locvtp.model.clip_visual`) on one frame every 2 s: the protocol of
  Moment-DETR / QVHighlights (jayleicn/moment_detr ``run_on_video/run.py``: ``clip_len = 2``, ``framerate=1/2,
  size=224, centercrop=True``), whose loader is linjieli222/HERO_Video_Feature_Extractor ``clip/video_loader.py``
  (ffmpeg ``fps``, short side to 224, centre crop); pixels / 255 normalised with CLIP's mean and std; the stored
  vector is ``encode_image`` (unnormalised, as the extractor saves it; Moment-DETR L2-normalises when loading).
* ``s3d`` — S3D-G with MIL-NCE's HowTo100M weights (:mod:`locvtp.model.s3d`) on 30 fps frames cut into
  non-overlapping 30-frame chunks, one feature a second: VideoCLIP's protocol (facebookresearch/fairseq
  ``examples/MMPT/scripts/video_feature_extractor``: ``extract.py`` CONFIGS ``s3d`` = fps 30, size 224, centre
  crop; ``preprocessing.py``: pixels / 255, the tail zero-padded to 30 frames; ``l2_normalize=1``). The 512-d
  ``video_embedding`` (what VideoCLIP reads) or the 1024-d ``mixed_5c`` pool (``--s3d-output mixed_5c``).

Nothing is fetched: a missing or unusable ``--weights`` file is one line saying what to download and from where
(:data:`WEIGHTS_HELP`). Weights are read safely: ``.safetensors``, a weights-only torch file, or OpenAI's
TorchScript ``.pt`` archive, from which only the tensors are taken (``torch.jit.load(map_location="cpu")
.state_dict()``; TorchScript runs no pickled Python, but loading it does execute the archive's TorchScript code,
so prefer a plain state dict from a source you do not trust).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

import numpy as np
import torch

from locvtp.errors import UsageError
from locvtp.model.weights import WEIGHTS_HELP, load_into, read_weights  # noqa: F401  (re-exported)

BACKBONES = ("clip", "s3d")

@dataclass(frozen=True)
class Protocol:
    """How a backbone's features are cut from a video (recorded in the store as ``protocol``)."""

    name: str
    sample_fps: float  # ffmpeg `fps` filter rate
    frames_per_feature: int  # consecutive sampled frames per feature
    frame_size: int  # centre-crop side after the short side is resized to it
    l2_normalize: bool
    source: str

    @property
    def seconds_per_feature(self) -> float:
        return self.frames_per_feature / self.sample_fps

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "sample_fps": self.sample_fps, "frames_per_feature": self.frames_per_feature,
                "frame_size": self.frame_size, "l2_normalize": self.l2_normalize, "source": self.source}


def clip_protocol(image_size: int = 224) -> Protocol:
    return Protocol("moment-detr-clip", 0.5, 1, int(image_size), False,
                    "jayleicn/moment_detr run_on_video/run.py (clip_len=2); linjieli222/HERO_Video_Feature_Extractor "
                    "clip/extract.py + clip/video_loader.py")


S3D_PROTOCOL = Protocol("videoclip-s3d", 30.0, 30, 224, True,
                        "facebookresearch/fairseq examples/MMPT/scripts/video_feature_extractor/extract.py "
                        "(CONFIGS['s3d'], l2_normalize=1), preprocessing.py, videoreader.py")


def protocol_windows(duration: float, num_features: int, seconds: float) -> np.ndarray:
    """Windows ``[num_features, 2]``: feature ``k`` covers ``[k·s, (k+1)·s]`` clipped to the video."""
    starts = np.arange(num_features, dtype=np.float64) * seconds
    return np.stack([starts, np.minimum(starts + seconds, max(float(duration), 0.0))], axis=1)


# ------------------------------------------------------------------------------------------------ backbones
@dataclass
class StandardBackbone:
    """A loaded standard backbone and its protocol; the extraction pipeline's encoder (:meth:`clips`, :meth:`finish`)
    of what :meth:`decoding` decodes."""

    name: str
    module: torch.nn.Module
    protocol: Protocol
    description: str
    weights: Path
    weights_sha256: str
    output: str
    device: str = "cpu"
    extra: dict[str, Any] = field(default_factory=dict)
    amp: Optional[str] = None  # --amp bf16|fp16: the forwards under autocast (locvtp.inference.amp_context)

    @property
    def dim(self) -> int:
        return int(self.extra["dim"])

    def settings(self) -> dict[str, Any]:
        """What the store records: the clip grid (``clip_seconds`` = ``stride_seconds`` = seconds per feature,
        which pre-training and evaluation read back) and where the features come from."""
        return {
            "embedding": "backbone",
            "clip_seconds": float(self.protocol.seconds_per_feature),
            "stride_seconds": float(self.protocol.seconds_per_feature),
            "frames_per_clip": int(self.protocol.frames_per_feature),
            "frame_size": int(self.protocol.frame_size),
            "model": self.description,
            "backbone": self.name,
            "backbone_output": self.output,
            "weights": str(self.weights),
            "weights_sha256": self.weights_sha256,
            "protocol": json.dumps(self.protocol.as_dict(), sort_keys=True),
        }

    def decoding(self) -> "RateClips":
        """What the extraction pipeline's workers decode for this backbone (:mod:`locvtp.extract_pipeline`)."""
        return RateClips(self.protocol)

    @torch.inference_mode()
    def encode(self, frames: np.ndarray | torch.Tensor) -> np.ndarray:
        """uint8 frames ``[M, S, S, 3]`` (consecutive protocol samples) -> float32 ``[ceil(M / F), D]``; S3D's
        last chunk is zero-padded to ``F`` frames after scaling to [0, 1] (black), as MMPT's ``_zero_pad``."""
        from locvtp.inference import amp_context

        x = torch.as_tensor(frames).to(self.device, non_blocking=True)
        with amp_context(self.device, self.amp):
            if self.name == "clip":
                out = self.module(x)
            else:
                f = self.protocol.frames_per_feature
                x = x.to(torch.float32) / 255.0
                pad = (-x.shape[0]) % f
                if pad:
                    x = torch.cat([x, x.new_zeros(pad, *x.shape[1:])], dim=0)
                clips = x.reshape(-1, f, *x.shape[1:]).permute(0, 4, 1, 2, 3)  # [N, 3, F, S, S]
                emb, mixed = self.module(clips)
                out = emb if self.output == "embedding" else mixed
        out = out.float()
        if self.protocol.l2_normalize:
            out = torch.nn.functional.normalize(out, dim=1)
        return out.cpu().numpy().astype(np.float32, copy=False)

    def clips(self, x: torch.Tensor) -> tuple[np.ndarray, None]:
        """The pipeline's batch: uint8 clips ``[n, F, S, S, 3]`` of any videos (:class:`RateClips`) -> features
        ``[n, D]`` (a clip is one feature's frames, so no padding happens here)."""
        return self.encode(x.reshape(-1, *x.shape[2:])), None

    def finish(self, out: np.ndarray, bb: Optional[np.ndarray]) -> tuple[np.ndarray, None]:
        """A video's features are its clips' outputs: nothing runs across clips."""
        return out, None


@dataclass
class RateClips:
    """A protocol's decoding in the extraction pipeline: the frames of ffmpeg's ``fps`` filter
    (:func:`locvtp.data.video.iter_rate_frames`), ``frames_per_feature`` per clip, the last clip zero-padded (black,
    what :meth:`StandardBackbone.encode` pads with). Not split between workers: which frame the filter takes at an
    instant depends on the frames before it, so one worker decodes a video in one pass and hands it on
    ``chunk`` clips at a time. ``chunk``: 0 = :func:`locvtp.extract_pipeline.chunk_clips`."""

    protocol: Protocol
    chunk: int = 0
    split = False

    def __post_init__(self) -> None:
        from locvtp.extract_pipeline import chunk_clips

        self.chunk = int(self.chunk) or chunk_clips(self.protocol.frames_per_feature, self.protocol.frame_size)

    @property
    def clip_shape(self) -> tuple[int, ...]:
        p = self.protocol
        return (p.frames_per_feature, p.frame_size, p.frame_size, 3)

    def windows(self, duration: float) -> np.ndarray:
        """One window per ``frames_per_feature`` of the filter's frames, counted from the duration, as the decoding
        does (a video that stops short of it raises there): a pure function of ``duration``."""
        from locvtp.data.video import rate_sample_times

        p = self.protocol
        n = -(-rate_sample_times(duration, p.sample_fps).size // p.frames_per_feature)
        return protocol_windows(duration, n, p.seconds_per_feature)

    def decode(self, path: str | Path, windows: np.ndarray, starts: Iterable[int]
               ) -> Iterator[tuple[int, np.ndarray]]:
        """``(first clip, uint8 clips [n, F, S, S, 3])`` for the whole video, in order (``starts`` is every range's:
        this decoding is not split)."""
        from locvtp.data.video import iter_rate_frames

        p, f, lo = self.protocol, self.protocol.frames_per_feature, 0
        for frames in iter_rate_frames(path, p.sample_fps, p.frame_size, chunk=self.chunk * f):
            pad = (-frames.shape[0]) % f
            if pad:
                frames = np.concatenate([frames, np.zeros((pad, *frames.shape[1:]), frames.dtype)])
            clips = frames.reshape(-1, f, *frames.shape[1:])
            yield lo, clips
            lo += clips.shape[0]


def load_clip(weights: str | Path, arch: Optional[str] = None, activation: str = "quick_gelu",
              device: str = "cpu") -> StandardBackbone:
    """The CLIP image tower of ``weights`` (OpenAI or open_clip layout); ``arch`` (``ViT-B/32`` …), when given,
    must be what the weights are."""
    from locvtp.checkpoint import file_sha256
    from locvtp.model.clip_visual import CLIP_ARCHS, ClipArchError, ClipVisual, arch_from_state, visual_state

    state, how = read_weights(weights, "clip")
    vis = visual_state(state)
    try:
        found = arch_from_state(vis)
    except ClipArchError as exc:
        raise UsageError(f"--weights {weights}: {exc}; download {WEIGHTS_HELP['clip']}") from None
    if arch is not None:
        if arch not in CLIP_ARCHS:
            raise UsageError(f"--clip-arch {arch}: not one of {', '.join(CLIP_ARCHS)}")
        if CLIP_ARCHS[arch] != found:
            raise UsageError(f"--clip-arch {arch} but --weights {weights} holds {found.name}: give the weights of "
                             f"{arch} or leave --clip-arch out (it is read from the weights)")
    module = ClipVisual(found, activation)
    load_into(module, vis, Path(weights), "clip")
    module.eval().to(device)
    desc = f"clip {found.name} ({how}, {activation})"
    return StandardBackbone("clip", module, clip_protocol(found.image_size), desc, Path(weights),
                            file_sha256(Path(weights).expanduser()), "encode_image", device,
                            {"dim": found.out_dim, "arch": found.name})


def load_s3d(weights: str | Path, output: str = "embedding", device: str = "cpu") -> StandardBackbone:
    """S3D-G of ``s3d_howto100m.pth`` (the release's key names); ``output``: ``embedding`` (512) or
    ``mixed_5c`` (1024)."""
    from locvtp.checkpoint import file_sha256
    from locvtp.model.s3d import S3D_OUTPUTS, S3DG, video_state

    if output not in S3D_OUTPUTS:
        raise UsageError(f"--s3d-output {output}: not one of {', '.join(S3D_OUTPUTS)}")
    state, how = read_weights(weights, "s3d")
    vid = video_state(state)
    embed = int(vid["fc.weight"].shape[0]) if "fc.weight" in vid else 512
    module = S3DG(embed)
    load_into(module, vid, Path(weights), "s3d")
    module.eval().to(device)
    return StandardBackbone("s3d", module, S3D_PROTOCOL, f"s3d howto100m mil-nce ({how}, {output})", Path(weights),
                            file_sha256(Path(weights).expanduser()), output, device,
                            {"dim": module.out_dims[output]})


def load_standard_backbone(name: str, weights: str | Path, device: str = "cpu", clip_arch: Optional[str] = None,
                           clip_activation: str = "quick_gelu", s3d_output: str = "embedding") -> StandardBackbone:
    """``--backbone NAME --weights FILE``: the backbone, ready for the extraction pipeline."""
    if name == "clip":
        return load_clip(weights, clip_arch, clip_activation, device)
    if name == "s3d":
        return load_s3d(weights, s3d_output, device)
    raise UsageError(f"--backbone {name}: not one of {', '.join(BACKBONES)}")


__all__ = ["BACKBONES", "Protocol", "RateClips", "S3D_PROTOCOL", "StandardBackbone", "WEIGHTS_HELP", "clip_protocol", "load_clip",
           "load_into", "load_s3d", "load_standard_backbone", "protocol_windows", "read_weights"]
