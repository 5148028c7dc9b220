"""Encoders, projection heads and the LocVTP two-tower model (see docs/design.md, ``locvtp.model``)."""
from .heads import ContextProjectionHead, OffsetEncoding, ProjectionHead, SpliceClassifier
from .locvtp import LocVTP
from .text import HFTextEncoder, TextEncoderError, TransformerTextEncoder, build_text_encoder
from .video import C3D, FeatureVideoEncoder, PixelVideoEncoder, Tiny3D, VideoEncoderError, build_video_encoder

__all__ = [
    "C3D", "ContextProjectionHead", "FeatureVideoEncoder", "HFTextEncoder", "LocVTP", "OffsetEncoding", "PixelVideoEncoder",
    "ProjectionHead", "SpliceClassifier", "TextEncoderError", "Tiny3D", "TransformerTextEncoder", "VideoEncoderError",
    "build_text_encoder", "build_video_encoder",
]
