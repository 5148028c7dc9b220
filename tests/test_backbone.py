"""`locvtp backbone` (supervised tiny3d pre-training) and loading its weights into the model."""
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from locvtp.backbone import build_parser, labelled_clips, train_backbone
from locvtp.config import load_config
from locvtp.model.locvtp import LocVTP
from locvtp.model.video import Tiny3D, VideoEncoderError


def test_labelled_clips_use_train_split_only_for_training(tiny_world):
    (xtr, ytr), (xte, yte), skipped = labelled_clips(tiny_world, "retrieval/MSRVTT_data.json",
                                                     "retrieval/MSRVTT_train.9k.csv", 1.0, 4, 32, progress=False)
    assert xtr.dtype.name == "uint8" and xtr.shape[1:] == (4, 32, 32, 3) and len(xtr) == len(ytr) > 0
    assert len(xte) == len(yte) > 0 and skipped == []
    meta = json.loads((tiny_world / "retrieval/MSRVTT_data.json").read_text())
    train_ids = set((tiny_world / "retrieval/MSRVTT_train.9k.csv").read_text().split()[1:])
    cats = {v["category"] for v in meta["videos"] if v["video_id"] in train_ids}
    assert set(ytr.tolist()) <= cats


def test_backbone_trains_writes_atomically_and_loads_into_the_model(tiny_world, tmp_path):
    out = tmp_path / "bb.safetensors"
    args = build_parser().parse_args(["--data", str(tiny_world), "--out", str(out), "--width", "8", "--steps", "30",
                                      "--batch-size", "16"])
    res = train_backbone(args, progress=False)
    assert out.is_file() and not list(tmp_path.glob("*.tmp*"))
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["train_clips"] == res.train_clips > 0 and 0.0 <= side["heldout_accuracy"] <= 1.0
    state = load_file(str(out))
    assert set(state) == set(Tiny3D(8).state_dict())
    cfg = load_config("configs/pretrain_synthetic.yaml", ["model.video.width=8", f"model.video.pretrained={out}",
                                                         "model.dim=32", "model.text.width=32"])
    model = LocVTP.from_config(cfg)
    loaded = model.video_encoder.cnn.state_dict()
    for k, v in state.items():
        assert torch.equal(loaded[k], v), k
    # the weights trained: they differ from a fresh initialisation with the same seed
    torch.manual_seed(0)
    fresh = Tiny3D(8).state_dict()
    assert any(not torch.equal(fresh[k], state[k]) for k in state if state[k].is_floating_point())


def test_pretrained_tiny3d_mismatch_names_file_and_keys(tmp_path):
    bad = tmp_path / "w16.safetensors"
    save_file(Tiny3D(16).state_dict(), str(bad))
    with pytest.raises(VideoEncoderError, match=r"w16\.safetensors.*shape mismatches"):
        Tiny3D(8).load_pretrained(bad)
    state = Tiny3D(8).state_dict()
    state.pop(next(iter(state)))
    save_file(state, str(tmp_path / "missing.safetensors"))
    with pytest.raises(VideoEncoderError, match="missing keys"):
        Tiny3D(8).load_pretrained(tmp_path / "missing.safetensors")
    with pytest.raises(VideoEncoderError, match="not found"):
        Tiny3D(8).load_pretrained(tmp_path / "nope.safetensors")


def test_backbone_skips_and_reports_a_corrupt_video(tiny_world, tmp_path):
    world = tmp_path / "w"
    shutil.copytree(tiny_world, world, ignore=shutil.ignore_patterns("*.mp4"))
    (world / "videos").mkdir(exist_ok=True)
    meta = json.loads((tiny_world / "retrieval/MSRVTT_data.json").read_text())
    for v in meta["videos"]:
        shutil.copy(tiny_world / v["url"], world / v["url"])
    broken = world / meta["videos"][0]["url"]
    broken.write_bytes(b"not a video")
    (xtr, _), (xte, _), skipped = labelled_clips(world, "retrieval/MSRVTT_data.json", "retrieval/MSRVTT_train.9k.csv",
                                                 1.0, 4, 32, progress=False)
    assert len(skipped) == 1 and str(broken) in skipped[0]["source"]
    with pytest.raises(SystemExit, match="unreadable video"):
        labelled_clips(world, "retrieval/MSRVTT_data.json", "retrieval/MSRVTT_train.9k.csv", 1.0, 4, 32,
                       strict=True, progress=False)
