"""Shared by the inference / extract / ground / search tests: a small randomly initialised checkpoint."""
from __future__ import annotations

import json
from pathlib import Path

import torch


def caption_texts(world: Path) -> list[str]:
    cap = json.loads((Path(world) / "pretrain" / "caption.json").read_text(encoding="utf-8"))
    return [t for v in cap.values() for t in v["text"]]


def make_checkpoint(world: Path, out: Path, temporal_layers: int = 0, video: str = "tiny3d", in_dim: int = 16,
                    seed: int = 0) -> Path:
    """A randomly initialised model with a tokenizer trained on the world's narrations, saved with
    ``locvtp.checkpoint.save_checkpoint`` (what every command loads)."""
    from locvtp.checkpoint import save_checkpoint
    from locvtp.config import default_config
    from locvtp.data.tokenizer import train_tokenizer
    from locvtp.model import LocVTP

    tok = train_tokenizer(caption_texts(world), vocab_size=300)
    cfg = default_config()
    cfg.data.root = str(world)
    cfg.model.dim = 64
    cfg.model.text.vocab_size = tok.vocab_size
    cfg.model.text.width = 64
    cfg.model.text.layers = 1
    cfg.model.video.name = video
    cfg.model.video.width = 16
    cfg.model.video.in_dim = in_dim
    cfg.model.video.hidden = 32
    cfg.model.video.temporal_layers = temporal_layers
    torch.manual_seed(seed)
    model = LocVTP.from_config(cfg)
    return save_checkpoint(out, model, cfg, tok)


def world_videos(world: Path) -> list[Path]:
    return sorted((Path(world) / "videos").glob("*.mp4"))


def linked_videos(world: Path, dest: Path, every: int = 1, count: int | None = None) -> Path:
    """``dest`` (created) holding symlinks to every ``every``-th of the world's videos, at most ``count``: a
    short extraction input."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for p in world_videos(world)[::every][:count]:
        (dest / p.name).symlink_to(p)
    return dest


def clip_args(ck) -> dict:
    """The clip cut of a loaded checkpoint (``locvtp.predictor.Preprocessing``, read from its config), as the
    keywords of ``locvtp.inference``'s video functions: they have no defaults of their own."""
    from locvtp.predictor import Preprocessing

    p = Preprocessing.from_config(ck.cfg)
    return {"clip_seconds": p.clip_seconds, "stride_seconds": p.stride_seconds,
            "frames_per_clip": p.frames_per_clip, "frame_size": p.frame_size}


def interrupt_writer_after(monkeypatch, fmt: str, n: int) -> list[str]:
    """Make the store writer of ``fmt`` (h5, else a directory format) raise KeyboardInterrupt -- a kill between two
    videos -- once ``n`` videos were written; returns the list the written video ids are appended to."""
    from locvtp.featurestore import writer as W

    cls = W.H5Writer if fmt == "h5" else W.DirWriter
    real_add, calls = cls.add, []

    def add(self, rec, source=None):
        if len(calls) == n:
            raise KeyboardInterrupt("simulated kill")
        calls.append(rec.video_id)
        real_add(self, rec, source=source)

    monkeypatch.setattr(cls, "add", add)
    return calls
