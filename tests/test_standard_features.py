"""`locvtp extract --backbone clip|s3d --weights FILE` (issue 25 items 1 and 4), without downloads.

The architectures are built with random weights and saved in each upstream's own layout (OpenAI CLIP's
``visual.*`` keys next to its text tower, as a state dict and as a TorchScript archive; the S3D release's keys with
its ``text_module.*`` and without BatchNorm counters), then loaded back through the path a user's file takes (the
CLI). Frame sampling is checked frame by frame on synthetic videos whose frames carry their index as a grey level,
against a plain-loop model of ffmpeg's ``fps`` filter; the stored features against a direct forward of the module
on the protocol's frames; the clip grid against the protocol; and pre-training reads the store without grid flags.
"""
from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import av
import h5py
import numpy as np
import pytest
import torch

from cli_helpers import assert_one_line_error, run_cli
from inference_helpers import interrupt_writer_after, linked_videos

pytestmark = pytest.mark.usefixtures("keep_torch_threads")

SMALL_CLIP = dict(width=64, patch=32, image_size=224, layers=2, out_dim=24)


# ------------------------------------------------------------------------------------------------ helpers
def _grey_video(path: Path, n: int, fps: int, width: int = 48, height: int = 32) -> Path:
    """Frame i carries i in 8 horizontal bands (bit b set = band b white): the bands span the whole width, so the
    index survives compression, any resize and the centre crop of a landscape video."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        s.options = {"crf": "0"}
        band = height // 8
        for i in range(n):
            img = np.zeros((height, width, 3), np.uint8)
            for b in range(8):
                if (i >> b) & 1:
                    img[b * band:(b + 1) * band] = 255
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def _index(frame: np.ndarray) -> int:
    h = frame.shape[0] / 8
    bits = [frame[int(b * h + 0.3 * h):max(int(b * h + 0.7 * h), int(b * h + 0.3 * h) + 1)].mean() > 128
            for b in range(8)]
    return sum(1 << b for b, on in enumerate(bits) if on)


def _ffmpeg_fps_reference(n_frames: int, video_fps: int, out_fps: Fraction) -> list[int]:
    """Plain loop model of ffmpeg's ``fps`` filter (round=near): output n shows the last input frame whose time
    rounds (halves up) to slot n or earlier; ``round(duration·fps)`` outputs, at least one."""
    duration = Fraction(n_frames, video_fps)
    count = max(1, math.floor(duration * out_fps + Fraction(1, 2)))
    out = []
    for n in range(count):
        chosen = 0
        for i in range(n_frames):
            if math.floor(Fraction(i, video_fps) * out_fps + Fraction(1, 2)) <= n:
                chosen = i
        out.append(chosen)
    return out


def _clip_state(arch, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random CLIP in OpenAI's layout: the tower under ``visual.`` plus text-tower entries the loader skips."""
    from locvtp.model.clip_visual import ClipVisual

    torch.manual_seed(seed)
    vis = ClipVisual(arch)
    state = {f"visual.{k}": v.clone() for k, v in vis.state_dict().items()}
    state.update({"token_embedding.weight": torch.randn(10, 8), "text_projection": torch.randn(8, arch.out_dim),
                  "logit_scale": torch.tensor(4.6), "ln_final.weight": torch.ones(8)})
    return state


def _small_arch():
    from locvtp.model.clip_visual import ClipVisualArch

    return ClipVisualArch(**SMALL_CLIP)


def _extract(capsys, *argv):
    return run_cli(["extract", "--no-progress", *[str(a) for a in argv]], capsys)


@pytest.fixture(scope="module")
def videos(tiny_world, tmp_path_factory):
    """Two of the tiny world's videos (links), to keep the runs short."""
    return linked_videos(tiny_world, tmp_path_factory.mktemp("std_vids"), count=2)


@pytest.fixture(scope="module")
def clip_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("clipw") / "ViT-small.pt"
    torch.save(_clip_state(_small_arch()), path)
    return path


# ------------------------------------------------------------------------------------------------ sampling
@pytest.mark.parametrize("video_fps,n_frames,out_fps", [
    (12, 41, Fraction(30)),      # S3D's 30 fps from a slower video: frames repeated
    (50, 75, Fraction(30)),      # from a faster one: frames dropped
    (10, 37, Fraction(1, 2)),    # CLIP's one frame every 2 s (3.7 s: 2 outputs)
    (10, 50, Fraction(1, 2)),    # 5.0 s: round(2.5) = 3 outputs
    (10, 30, Fraction(5)),       # every instant exactly between two frames: the earlier frame, as ffmpeg rounds
])
def test_rate_frames_match_ffmpeg_fps_filter_frame_by_frame(tmp_path, video_fps, n_frames, out_fps):
    from locvtp.data.video import iter_rate_frames, probe_video

    path = _grey_video(tmp_path / "grey.mp4", n_frames, video_fps)
    assert abs(probe_video(path).duration - n_frames / video_fps) < 1e-6
    chunks = list(iter_rate_frames(path, float(out_fps), 24, chunk=7))
    assert all(c.shape[1:] == (24, 24, 3) and c.dtype == np.uint8 for c in chunks)
    assert all(len(c) == 7 for c in chunks[:-1])
    got = [_index(f) for c in chunks for f in c]
    assert got == _ffmpeg_fps_reference(n_frames, video_fps, out_fps)


def test_protocol_resize_truncates_and_crops_centre(tmp_path):
    """Short side to the size, long side int(long·size/short) (the extractors' rule), centre crop at
    int((W - size) / 2): a 48×32 video at size 20 is scaled to 30×20 and cut at x = 5."""
    from locvtp.data.video import iter_rate_frames, protocol_dims

    assert protocol_dims(48, 32, 20) == (30, 20) and protocol_dims(32, 49, 20) == (20, 30)
    path = tmp_path / "bars.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=4)
        s.width, s.height, s.pix_fmt = 48, 32, "yuv420p"
        s.options = {"crf": "0"}
        img = np.zeros((32, 48, 3), np.uint8)
        img[:, 24:] = 255  # right half white: after the crop the edge is at 30/2 - 5 = 10
        for _ in range(4):
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    [frames] = list(iter_rate_frames(path, 1.0, 20))
    row = frames[0, 10].mean(axis=1)
    assert row[:8].max() < 40 and row[12:].min() > 215  # the edge sits between columns 8 and 12 (bicubic)


# ------------------------------------------------------------------------------------------------ layouts
def test_clip_vit_b32_has_openai_key_set_and_shapes():
    """The real ViT-B/32 tower's entries are exactly OpenAI's `visual.*` names and shapes (written out here)."""
    from locvtp.model.clip_visual import CLIP_ARCHS, ClipVisual, arch_from_state

    want = {"conv1.weight": (768, 3, 32, 32), "class_embedding": (768,), "positional_embedding": (50, 768),
            "ln_pre.weight": (768,), "ln_pre.bias": (768,), "ln_post.weight": (768,), "ln_post.bias": (768,),
            "proj": (768, 512)}
    for i in range(12):
        b = f"transformer.resblocks.{i}."
        want.update({b + "attn.in_proj_weight": (2304, 768), b + "attn.in_proj_bias": (2304,),
                     b + "attn.out_proj.weight": (768, 768), b + "attn.out_proj.bias": (768,),
                     b + "ln_1.weight": (768,), b + "ln_1.bias": (768,), b + "ln_2.weight": (768,),
                     b + "ln_2.bias": (768,), b + "mlp.c_fc.weight": (3072, 768), b + "mlp.c_fc.bias": (3072,),
                     b + "mlp.c_proj.weight": (768, 3072), b + "mlp.c_proj.bias": (768,)})
    state = ClipVisual(CLIP_ARCHS["ViT-B/32"]).state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == want
    assert arch_from_state(state) == CLIP_ARCHS["ViT-B/32"] and CLIP_ARCHS["ViT-B/32"].heads == 12


def test_s3d_has_the_release_key_names_and_shapes():
    from locvtp.model.s3d import S3DG

    state = S3DG().state_dict()
    spot = {"conv1.conv1.weight": (64, 24, 2, 4, 4), "conv1.bn1.running_var": (64,),
            "conv_2b.conv1.weight": (64, 64, 1, 1, 1), "conv_2c.conv1.weight": (192, 64, 1, 3, 3),
            "conv_2c.conv2.weight": (192, 192, 3, 1, 1), "conv_2c.bn2.weight": (192,), "gating.fc.weight": (192, 192),
            "mixed_3b.conv_b1_b.conv2.weight": (128, 128, 3, 1, 1), "mixed_3b.gating_b3.fc.bias": (32,),
            "mixed_4f.conv_b0.conv1.weight": (256, 528, 1, 1, 1), "mixed_5c.conv_b0.conv1.weight": (384, 832, 1, 1, 1),
            "mixed_5c.conv_b2_b.conv1.weight": (128, 48, 1, 3, 3), "fc.weight": (512, 1024), "fc.bias": (512,)}
    for k, shape in spot.items():
        assert tuple(state[k].shape) == shape, k
    units = [k for k in state if k.endswith("conv1.weight")]
    assert len(units) == 3 + 9 * 6  # conv1, conv_2b, conv_2c + six conv units per inception block
    assert not [k for k in state if not k.startswith(("conv1.", "conv_2", "gating.", "mixed_", "fc."))]


def test_s3d_space_to_depth_matches_the_release_channel_order():
    """Channel ((dt·2 + dh)·2 + dw)·C + c of output (t, h, w) is input (c, 2t+dt, 2h+dh, 2w+dw): plain loops."""
    from locvtp.model.s3d import S3DG

    x = torch.randn(1, 3, 4, 6, 4)
    y = S3DG.space_to_depth(x)
    assert y.shape == (1, 24, 2, 3, 2)
    for dt in range(2):
        for dh in range(2):
            for dw in range(2):
                for c in range(3):
                    ch = ((dt * 2 + dh) * 2 + dw) * 3 + c
                    for t in range(2):
                        for h in range(3):
                            for w in range(2):
                                assert y[0, ch, t, h, w] == x[0, c, 2 * t + dt, 2 * h + dh, 2 * w + dw]


# ------------------------------------------------------------------------------------------------ extraction
def _protocol_frames(path, fps, size):
    from locvtp.data.video import iter_rate_frames

    return np.concatenate(list(iter_rate_frames(path, fps, size)))


def test_clip_extract_grid_values_and_provenance(videos, clip_weights, tmp_path, capsys):
    from locvtp.data.video import probe_video
    from locvtp.model.clip_visual import ClipVisual, visual_state

    out = tmp_path / "clip.h5"
    res = _extract(capsys, "--backbone", "clip", "--weights", clip_weights, "--videos", videos, "--out", out)
    assert res.code == 0, res.err
    module = ClipVisual(_small_arch()).eval()
    module.load_state_dict(visual_state(torch.load(clip_weights, weights_only=True)))
    with h5py.File(out, "r") as f:
        assert f.attrs["clip_seconds"] == 2.0 and f.attrs["stride_seconds"] == 2.0
        assert f.attrs["frames_per_clip"] == 1 and f.attrs["frame_size"] == 224
        assert f.attrs["embedding"] == "backbone" and f.attrs["backbone"] == "clip"
        assert json.loads(f.attrs["protocol"])["sample_fps"] == 0.5
        import hashlib

        assert f.attrs["weights_sha256"] == hashlib.sha256(clip_weights.read_bytes()).hexdigest()
        for v in sorted(videos.iterdir()):
            d = f[v.stem]
            dur = probe_video(v).duration
            n = max(1, math.floor(dur / 2 + 0.5))
            assert d.shape == (n, SMALL_CLIP["out_dim"])
            want_w = np.array([[2.0 * k, min(2.0 * k + 2, dur)] for k in range(n)])
            np.testing.assert_allclose(d.attrs["windows"], want_w)
            frames = _protocol_frames(v, 0.5, 224)
            assert len(frames) == n
            with torch.no_grad():
                ref = module(torch.from_numpy(frames)).numpy()
            np.testing.assert_allclose(d[()], ref, rtol=1e-4, atol=1e-5)
    # rerun: resumes (nothing to do); other weights: refused by the store's settings
    assert _extract(capsys, "--backbone", "clip", "--weights", clip_weights, "--videos", videos, "--out", out).code == 0
    other = tmp_path / "other.pt"
    torch.save(_clip_state(_small_arch(), seed=1), other)
    res = _extract(capsys, "--backbone", "clip", "--weights", other, "--videos", videos, "--out", out)
    assert_one_line_error(res, 1, "weights_sha256")


def test_clip_torchscript_archive_and_arch_check(videos, clip_weights, tmp_path, capsys):
    """OpenAI's .pt is a TorchScript archive: its tensors are read (the same features as the plain state dict)."""
    from locvtp.model.clip_visual import ClipVisual, visual_state

    class Wrapper(torch.nn.Module):  # the archive's top level holds `visual` like OpenAI's CLIP
        def __init__(self):
            super().__init__()
            self.visual = ClipVisual(_small_arch())

        def forward(self, x):
            return self.visual(x)

    m = Wrapper().eval()
    m.visual.load_state_dict(visual_state(torch.load(clip_weights, weights_only=True)))
    jit_path = tmp_path / "ViT-small-jit.pt"
    torch.jit.trace(m, torch.zeros(1, 224, 224, 3, dtype=torch.uint8), check_trace=False).save(str(jit_path))
    a, b = tmp_path / "a", tmp_path / "b"
    one = tmp_path / "one"
    one.mkdir()
    first = sorted(videos.iterdir())[0]
    (one / first.name).symlink_to(first)
    assert _extract(capsys, "--backbone", "clip", "--weights", jit_path, "--videos", one, "--out", a,
                    "--format", "npz-dir").code == 0
    assert _extract(capsys, "--backbone", "clip", "--weights", clip_weights, "--videos", one, "--out", b,
                    "--format", "npz-dir").code == 0
    za, zb = np.load(a / f"{first.stem}.npz"), np.load(b / f"{first.stem}.npz")
    np.testing.assert_allclose(za["features"], zb["features"], rtol=1e-5, atol=1e-6)
    assert json.loads((a / "meta.json").read_text())["model"].startswith("clip ")
    res = _extract(capsys, "--backbone", "clip", "--weights", clip_weights, "--clip-arch", "ViT-B/32", "--videos",
                   one, "--out", tmp_path / "c.h5")
    assert_one_line_error(res, 2, "--clip-arch ViT-B/32", "ViT(width=64")


def _s3d_release_file(path: Path) -> Path:
    """A random S3D in the release's layout: text_module entries, no BatchNorm batch counters."""
    from locvtp.model.s3d import S3DG

    torch.manual_seed(0)
    state = {k: v for k, v in S3DG().state_dict().items() if not k.endswith("num_batches_tracked")}
    state.update({"text_module.word_embd.weight": torch.randn(20, 300), "text_module.fc1.weight": torch.randn(8, 300)})
    torch.save(state, path)
    return path


def test_s3d_extract_one_feature_a_second(tmp_path, capsys):
    """On a 2.6 s synthetic video: 78 frames at 30 fps -> 3 features (the last 18 frames + 12 black), L2-normalised,
    equal to a direct forward of the module on the protocol's frames; mixed_5c as an option."""
    from locvtp.model.s3d import S3DG, video_state

    weights = _s3d_release_file(tmp_path / "s3d_howto100m.pth")
    vids = tmp_path / "v"
    vids.mkdir()
    video = _grey_video(vids / "g.mp4", 26, 10, width=40, height=32)
    out = tmp_path / "s3d.h5"
    res = _extract(capsys, "--backbone", "s3d", "--weights", weights, "--videos", vids, "--out", out,
                   "--batch-clips", "2")
    assert res.code == 0, res.err
    frames = _protocol_frames(video, 30.0, 224)
    assert [_index(f) for f in frames] == _ffmpeg_fps_reference(26, 10, Fraction(30)) and len(frames) == 78
    module = S3DG().eval()
    module.load_state_dict(video_state(torch.load(weights, weights_only=True)), strict=False)
    x = torch.from_numpy(np.concatenate([frames, np.zeros((12, 224, 224, 3), np.uint8)])).float() / 255
    with torch.no_grad():
        emb, mixed = module(x.reshape(3, 30, 224, 224, 3).permute(0, 4, 1, 2, 3))
    with h5py.File(out, "r") as f:
        d = f["g"]
        assert f.attrs["clip_seconds"] == 1.0 and f.attrs["frames_per_clip"] == 30 and d.shape == (3, 512)
        np.testing.assert_allclose(d.attrs["windows"], [[0, 1], [1, 2], [2, 2.6]], atol=1e-9)
        np.testing.assert_allclose(d[()], torch.nn.functional.normalize(emb, dim=1).numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(d[()], axis=1), 1.0, atol=1e-5)
    out5 = tmp_path / "mixed"
    assert _extract(capsys, "--backbone", "s3d", "--weights", weights, "--s3d-output", "mixed_5c", "--videos", vids,
                    "--out", out5, "--format", "npy-dir", "--batch-clips", "3").code == 0
    np.testing.assert_allclose(np.load(out5 / "g.npy"), torch.nn.functional.normalize(mixed, dim=1).numpy(),
                               rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------------ consumers
def test_pretrain_reads_the_clip_grid_from_the_store(tiny_world, clip_weights, tmp_path, capsys):
    """Pre-training on the store needs no grid flag: FeatureSource takes clip/stride seconds (2 s) from it."""
    from locvtp.config import find_config, load_config
    from locvtp.training.loop import pretrain
    from locvtp.training.sources import FeatureSource

    out = tmp_path / "pre.h5"
    res = _extract(capsys, "--backbone", "clip", "--weights", clip_weights, "--videos", tiny_world / "videos",
                   "--out", out, "--batch-clips", "16")
    assert res.code == 0, res.err
    src = FeatureSource(out, clip_seconds=1.0)
    assert src.clip_seconds == 2.0 and src.stride == 2.0 and src.dim == SMALL_CLIP["out_dim"]
    cfg = load_config(find_config("pretrain_synthetic"), [
        f"data.root={tiny_world}", "data.kind=features", f"data.features={out}", "model.video.name=features",
        f"model.video.in_dim={SMALL_CLIP['out_dim']}", "model.video.hidden=16", "model.dim=16",
        "model.text.width=16", "model.text.layers=1", "train.batch_size=4", "train.max_steps=2",
        "train.log_every=1", "train.save_every=0", "train.num_threads=1", "data.num_workers=0",
        "data.max_words=16", "data.vocab_size=200", "objective.ramp_start=0"])
    final = pretrain(cfg, tmp_path / "run", progress=False)
    assert (final / "model.safetensors").is_file()
    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert math.isfinite(last["loss/total"])


# ------------------------------------------------------------------------------------------------ mistakes
MISTAKES = [  # (id, argv after `extract`, exit code, needles)
    ("missing-weights-clip", lambda p: ["--backbone", "clip", "--weights", p / "ViT-B-32.pt"], 2,
     ["--weights", "ViT-B-32.pt", "no such file", "openaipublic.azureedge.net"]),
    ("missing-weights-s3d", lambda p: ["--backbone", "s3d", "--weights", p / "s3d_howto100m.pth"], 2,
     ["--weights", "no such file", "s3d_howto100m.pth", "rocq.inria.fr"]),
    ("no-weights-flag", lambda p: ["--backbone", "s3d"], 2, ["--backbone s3d needs --weights", "rocq.inria.fr"]),
    ("weights-not-a-state-dict", lambda p: ["--backbone", "clip", "--weights", p / "junk.pt"], 2,
     ["--weights", "junk.pt", "openaipublic"]),
    ("s3d-weights-for-clip", lambda p: ["--backbone", "clip", "--weights", p / "s3d.pth"], 2,
     ["--weights", "s3d.pth", "not a CLIP ViT image tower"]),
    ("clip-weights-for-s3d", lambda p: ["--backbone", "s3d", "--weights", p / "clip.pt"], 2,
     ["--weights", "clip.pt", "missing keys", "s3d_howto100m.pth"]),
    ("backbone-and-checkpoint", lambda p: ["--backbone", "clip", "--weights", p / "clip.pt", "--checkpoint", p], 2,
     ["--backbone clip", "--checkpoint"]),
    ("weights-without-backbone", lambda p: ["--checkpoint", p, "--weights", p / "clip.pt"], 2, ["--weights"]),
    ("neither-model", lambda p: [], 2, ["--checkpoint", "--backbone"]),
    ("grid-flag-with-backbone", lambda p: ["--backbone", "clip", "--weights", p / "clip.pt", "--clip-seconds", "1"],
     2, ["--clip-seconds", "protocol"]),
    ("s3d-option-for-clip", lambda p: ["--backbone", "clip", "--weights", p / "clip.pt", "--s3d-output",
                                       "mixed_5c"], 2, ["--s3d-output", "--backbone clip"]),
    ("unknown-backbone", lambda p: ["--backbone", "i3d", "--weights", p / "clip.pt"], 2, ["--backbone", "i3d"]),
]


@pytest.mark.parametrize("case", MISTAKES, ids=[c[0] for c in MISTAKES])
def test_backbone_mistakes_are_one_line(case, videos, clip_weights, tmp_path, capsys):
    _, argv, code, needles = case
    (tmp_path / "junk.pt").write_bytes(b"not a torch file at all")
    (tmp_path / "clip.pt").symlink_to(clip_weights)
    torch.save({"conv1.conv1.weight": torch.zeros(64, 24, 2, 4, 4), "fc.weight": torch.zeros(512, 1024)},
               tmp_path / "s3d.pth")
    out = tmp_path / "out.h5"
    res = _extract(capsys, *argv(tmp_path), "--videos", videos, "--out", out)
    assert_one_line_error(res, code, *needles)
    assert not out.exists()


# ------------------------------------------------------------------------------------------------ the pipeline
@pytest.fixture(scope="module")
def grey_videos(tmp_path_factory):
    """Short videos of 1 to 5 features under either protocol (10 fps; 1.5 s to 5.0 s)."""
    d = tmp_path_factory.mktemp("grey")
    for name, n in (("a", 26), ("b", 15), ("c", 50), ("d", 37)):
        _grey_video(d / f"{name}.mp4", n, 10, width=40, height=32)
    return d


def _per_video_reference(bb, vids: Path) -> dict:
    """The per-video path the pipeline replaced: every protocol frame of one video, then one encode of them all."""
    from locvtp.data.video import probe_video
    from locvtp.standard_features import protocol_windows

    p, out = bb.protocol, {}
    for v in sorted(vids.glob("*.mp4")):
        feats = bb.encode(_protocol_frames(v, p.sample_fps, p.frame_size))
        dur = probe_video(v).duration
        out[v.stem] = (feats, protocol_windows(dur, feats.shape[0], p.seconds_per_feature))
    return out


def _stored(path: Path) -> dict:
    from locvtp.featurestore.reader import iter_features

    return {r.video_id: (r.features, r.windows) for r in iter_features(path)}


def _assert_same_features(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    for vid, (feats, windows) in want.items():
        np.testing.assert_allclose(got[vid][0], feats, rtol=1e-5, atol=1e-6, err_msg=vid)
        np.testing.assert_array_equal(got[vid][1], windows)


@pytest.mark.parametrize("name,batch", [("clip", 3), ("s3d", 3)])
def test_pipeline_equals_the_per_video_path(grey_videos, clip_weights, tmp_path, capsys, monkeypatch, name, batch):
    """Two decoding processes, clip ranges of 2 features (a tiny CHUNK_BYTES), batches of 3 cut across videos:
    the features equal one encode of each whole video's protocol frames, the grid is the protocol's, and the ranges
    a worker hands on are exactly the one-pass frames (S3D's tail padded black)."""
    from locvtp import extract_pipeline as P
    from locvtp.extraction import RECORDED_ERRORS, VideoItem
    from locvtp.standard_features import load_standard_backbone

    weights = clip_weights if name == "clip" else _s3d_release_file(tmp_path / "s3d_howto100m.pth")
    bb = load_standard_backbone(name, weights)
    f, s = bb.protocol.frames_per_feature, bb.protocol.frame_size
    monkeypatch.setattr(P, "CHUNK_BYTES", 2 * f * s * s * 3)
    dec = bb.decoding()
    assert dec.chunk == 2 and not dec.split
    video = grey_videos / "c.mp4"  # 5.0 s: 3 CLIP features, 5 S3D features
    recs = list(P.ClipChunks([VideoItem("c", video)], dec, RECORDED_ERRORS))
    frames = _protocol_frames(video, bb.protocol.sample_fps, s)
    total = -(-len(frames) // f)
    assert [r["start"] for r in recs] == list(range(0, total, 2)) and recs[0]["total"] == total
    clips = np.concatenate([r["clips"] for r in recs])
    assert clips.shape == (total, f, s, s, 3)
    np.testing.assert_array_equal(clips.reshape(-1, s, s, 3)[:len(frames)], frames)
    assert not clips.reshape(-1, s, s, 3)[len(frames):].any()
    out = tmp_path / "f.h5"
    res = _extract(capsys, "--backbone", name, "--weights", weights, "--videos", grey_videos, "--out", out,
                   "--workers", 2, "--batch-size", batch)
    assert res.code == 0, res.err
    _assert_same_features(_stored(out), _per_video_reference(bb, grey_videos))


@pytest.mark.parametrize("fmt", ["h5", "npz-dir"])
def test_standard_extraction_interrupted_then_resumed_equals_one_run(grey_videos, clip_weights, tmp_path, capsys,
                                                                      monkeypatch, fmt):
    """A crash after 2 videos were written, then a plain rerun: the store equals an uninterrupted run's."""
    base = ["--backbone", "clip", "--weights", clip_weights, "--videos", grey_videos, "--format", fmt]
    ref = tmp_path / ("ref.h5" if fmt == "h5" else "ref")
    assert _extract(capsys, *base, "--out", ref).code == 0
    calls = interrupt_writer_after(monkeypatch, fmt, 2)
    out = tmp_path / ("out.h5" if fmt == "h5" else "out")
    res = _extract(capsys, *base, "--out", out, "--workers", 2, "--batch-size", 2)
    assert res.code == 130 and "interrupted" in res.err
    monkeypatch.undo()
    res = _extract(capsys, *base, "--out", out)
    assert res.code == 0 and "2 already done" in res.err, res.err
    got, want = _stored(out), _stored(ref)
    _assert_same_features(got, want)
