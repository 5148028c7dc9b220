"""One video's clip vectors: :class:`ClipFeatures`, the one record type every part of the package passes around.

What used to be five classes for one concept -- the reader's ``FeatureRecord``, the inference ``VideoEmbedding``,
``extract``'s ``Result``, the evaluation's ``ClipSequence`` -- is this one dataclass: a video id, the per-clip
vectors ``[N, D]``, their windows ``[N, 2]`` in seconds, the source's ``fps`` and ``duration``. Optional parts
say where the vectors came from: ``embedding`` (``"joint"`` = this model's L2-normalized joint space, ``"backbone"``
= pre-projection features, ``"input"`` = a ``features`` encoder's raw input, ``None`` = unknown, e.g. a foreign
file), ``backbone`` (the pre-projection features next to joint embeddings when asked for), ``warnings`` (why the
vectors may not mean what they seem) and ``shape`` (``(N, D)`` when only the header was read, ``features=None``).

What stays distinct, because it really differs: decoded *pixels* (``locvtp.inference.DecodedClips``: uint8
``[N, F, S, S, 3]`` clips, the input of an encoder, not vectors).

The old names remain as thin constructors with their old positional signatures (:func:`FeatureRecord`,
``locvtp.downstream.common.ClipSequence``, ``locvtp.inference.VideoEmbedding``; ``Result`` *is*
this class) and the old attribute names ``clips`` / ``feats`` read ``features``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np


@dataclass
class ClipFeatures:
    """One video's clip vectors (see the module docstring)."""

    video_id: str
    features: Optional[np.ndarray]  # float32 [N, D]; None when only the shape was read
    windows: Optional[np.ndarray]  # float64 [N, 2] seconds
    fps: float = 0.0  # 0.0 when the source carries no frame rate (feature inputs)
    duration: float = 0.0
    backbone: Optional[np.ndarray] = None  # pre-projection features [N, Dv] when asked for
    warnings: list[str] = field(default_factory=list)
    embedding: Optional[str] = None  # "joint" | "backbone" | "input" | None (unknown)
    shape: Optional[tuple[int, int]] = None  # (N, D) of unloaded features
    source: Optional[str] = None  # the video file, stored where the id cannot lead back to it (locvtp.data.videoids)

    @property
    def num_clips(self) -> int:
        if self.features is not None:
            return int(self.features.shape[0])
        return int(self.shape[0]) if self.shape is not None else 0

    @property
    def dim(self) -> int:
        if self.features is not None and getattr(self.features, "ndim", 0) == 2:
            return int(self.features.shape[1])
        return int(self.shape[1]) if self.shape is not None else 0

    # The attribute names of the records this class replaced (read-only views of ``features``).
    @property
    def clips(self) -> Optional[np.ndarray]:
        """``features`` under ``VideoEmbedding``'s name."""
        return self.features

    @property
    def feats(self) -> Optional[np.ndarray]:
        """``features`` under ``ClipSequence``'s name."""
        return self.features


def FeatureRecord(video_id: str, num_clips: int, dim: int, features: Optional[np.ndarray],  # noqa: N802
                  windows: Optional[np.ndarray], fps: float, duration: float) -> ClipFeatures:
    """The reader's old positional constructor: a :class:`ClipFeatures`."""
    return ClipFeatures(video_id, features, windows, float(fps), float(duration), shape=(int(num_clips), int(dim)))


__all__ = ["ClipFeatures", "FeatureRecord"]
