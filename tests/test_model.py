"""Encoders, projection and the LocVTP module: shapes, norms, masks, gradients, batch independence, configs."""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from locvtp.config import ConfigError, default_config, load_config
from locvtp.model import LocVTP
from locvtp.model.text import TextEncoderError, TransformerTextEncoder, pool_sentence
from locvtp.model.video import (
    C3D,
    FeatureVideoEncoder,
    PixelVideoEncoder,
    Tiny3D,
    VideoEncoderError,
    build_video_encoder,
)


def _pixels(b=2, t=3, f=4, s=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, t, f, s, s, 3), generator=g, dtype=torch.uint8)


def _ids(lengths, total, vocab=50, seed=0):
    """CLS(2) w... SEP(3) then padding(0)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.zeros(len(lengths), total, dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(5, vocab, (n,), generator=g)
        ids[i, 0], ids[i, n - 1] = 2, 3
    return ids, ids != 0


def _small_cfg(**over):
    base = [
        "model.dim=32", "model.video.width=8", "model.text.width=32", "model.text.layers=1", "model.text.heads=2",
        "model.text.vocab_size=50", "model.text.max_len=16", "model.video.temporal_heads=2",
    ]
    return load_config(None, base + [f"{k}={v}" for k, v in over.items()])


def _grad_norm(module):
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


# ---------------------------------------------------------------------------------------------------- video
@pytest.mark.parametrize("temporal_layers", [0, 1])
def test_tiny3d_forward_backward(temporal_layers):
    enc = PixelVideoEncoder(Tiny3D(width=8), temporal_layers=temporal_layers, temporal_heads=2)
    clips = _pixels(2, 3)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    out = enc(clips, mask)
    assert out.shape == (2, 3, enc.out_dim) == (2, 3, 32)
    assert torch.isfinite(out).all()
    out[mask].sum().backward()
    first_conv = enc.cnn.features[0]
    assert first_conv.weight.grad is not None and first_conv.weight.grad.abs().sum() > 0


def test_tiny3d_sees_motion():
    """Temporal kernels > 1: a clip played backwards must not give the same features (pure 2D nets would)."""
    torch.manual_seed(0)
    enc = Tiny3D(width=8).eval()
    clips = _pixels(1, 1)[:, 0]  # [1, F, H, W, 3]
    with torch.no_grad():
        fwd, rev = enc(clips), enc(clips.flip(1))
    assert not torch.allclose(fwd, rev, atol=1e-4)


def test_tiny3d_rejects_bad_shape():
    with pytest.raises(VideoEncoderError, match=r"\[B, T, F, H, W, 3\]"):
        PixelVideoEncoder(Tiny3D(8))(torch.zeros(2, 3, 4, 32, 32, dtype=torch.uint8))


def test_c3d_reduced_input_forward_backward():
    torch.manual_seed(0)
    enc = PixelVideoEncoder(C3D(fc_dim=64))
    clips = _pixels(1, 2, f=4, s=32)
    out = enc(clips)
    assert out.shape == (1, 2, 64) and torch.isfinite(out).all()
    out.sum().backward()
    assert enc.cnn.conv1a.weight.grad.abs().sum() > 0
    assert enc.cnn.fc6.weight.grad.abs().sum() > 0


def test_c3d_native_geometry_is_the_paper_one():
    """At 16×112×112 pool5 gives 512×1×4×4 = 8192 = fc6 input (adaptive pool is the identity), fc7 is 4096-d."""
    with torch.device("meta"):
        net = C3D()
        x = torch.empty(2, 16, 112, 112, 3, dtype=torch.uint8)
        assert tuple(net.conv_features(x).shape) == (2, 512, 1, 4, 4)
        assert tuple(net(x).shape) == (2, 4096)
    assert net.fc6.in_features == 8192 and net.out_dim == 4096
    names = [n for n, _ in net.named_children() if n.startswith("conv")]
    assert names == ["conv1a", "conv2a", "conv3a", "conv3b", "conv4a", "conv4b", "conv5a", "conv5b"]


def test_c3d_pretrained_loading(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(1)
    src = C3D(fc_dim=16)
    # the common PyTorch port's names: conv1/conv2 and a Sports-1M classifier fc8
    state = {k.replace("conv1a.", "conv1.").replace("conv2a.", "conv2."): v for k, v in src.state_dict().items()}
    state["fc8.weight"], state["fc8.bias"] = torch.zeros(487, 16), torch.zeros(487)
    torch.save(state, tmp_path / "c3d.pt")
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(tmp_path / "c3d.safetensors"))
    for f in ("c3d.pt", "c3d.safetensors"):
        dst = C3D(pretrained=str(tmp_path / f), fc_dim=16)
        for k, v in src.state_dict().items():
            assert torch.equal(dst.state_dict()[k], v), (f, k)

    del state["conv5b.bias"]
    torch.save(state, tmp_path / "missing.pt")
    with pytest.raises(VideoEncoderError, match=r"missing\.pt.*missing keys \['conv5b\.bias'\]"):
        C3D(pretrained=str(tmp_path / "missing.pt"), fc_dim=16)
    with pytest.raises(VideoEncoderError, match="shape mismatches"):
        C3D(pretrained=str(tmp_path / "c3d.pt"), fc_dim=32)
    with pytest.raises(VideoEncoderError, match="not found"):
        C3D(pretrained=str(tmp_path / "nope.pt"))


@pytest.mark.parametrize("in_dim", [7, 48])
@pytest.mark.parametrize("temporal_layers", [0, 2])
def test_features_encoder_any_width(in_dim, temporal_layers):
    enc = FeatureVideoEncoder(in_dim, hidden=16, temporal_layers=temporal_layers, temporal_heads=2, max_clips=4)
    x = torch.randn(3, 6, in_dim, requires_grad=True)  # T=6 > max_clips: positions interpolated
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]], dtype=torch.bool)
    out = enc(x, mask)
    assert out.shape == (3, 6, 16) and torch.isfinite(out).all()  # all-masked row: still finite
    out[mask].sum().backward()
    assert enc.mlp[0].weight.grad.abs().sum() > 0
    with pytest.raises(VideoEncoderError, match=f"in_dim"):
        enc(torch.randn(1, 2, in_dim + 1))


def test_padded_clips_do_not_leak_into_valid_ones():
    """With a temporal transformer, the content of masked clips must not change the valid clips' output."""
    torch.manual_seed(0)
    enc = FeatureVideoEncoder(12, hidden=16, temporal_layers=1, temporal_heads=2).eval()
    x = torch.randn(1, 5, 12)
    mask = torch.tensor([[True, True, True, False, False]])
    y = x.clone()
    y[:, 3:] = 100.0 * torch.randn(1, 2, 12)
    with torch.no_grad():
        assert torch.allclose(enc(x, mask)[:, :3], enc(y, mask)[:, :3], atol=1e-5)


def test_build_video_encoder_errors_and_freeze():
    cfg = default_config().model.video
    cfg.name = "resnet9000"
    with pytest.raises(VideoEncoderError, match="model.video.name"):
        build_video_encoder(cfg)
    cfg.name, cfg.freeze, cfg.width = "tiny3d", True, 8
    enc = build_video_encoder(cfg)
    assert not any(p.requires_grad for p in enc.parameters())


# ---------------------------------------------------------------------------------------------------- text
def test_pool_sentence_matches_loop_reference():
    torch.manual_seed(0)
    h = torch.randn(3, 5, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    ref = torch.stack([sum(h[i, j] for j in range(5) if mask[i, j]) / int(mask[i].sum()) for i in range(3)])
    assert torch.allclose(pool_sentence(h, mask, "mean"), ref, atol=1e-6)
    assert torch.equal(pool_sentence(h, mask, "cls"), h[:, 0])
    zero = pool_sentence(h, torch.zeros(3, 5, dtype=torch.bool), "mean")
    assert torch.equal(zero, torch.zeros(3, 4))
    with pytest.raises(TextEncoderError, match="pooling"):
        pool_sentence(h, mask, "max")


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_transformer_text_encoder(pooling):
    enc = TransformerTextEncoder(50, width=32, layers=1, heads=2, max_len=16, pooling=pooling)
    ids, mask = _ids([5, 3, 1], 7)
    words, sent = enc(ids, mask)
    assert words.shape == (3, 7, 32) and sent.shape == (3, 32)
    assert torch.isfinite(words).all() and torch.isfinite(sent).all()
    (words[mask].sum() + sent.sum()).backward()
    assert enc.tok.weight.grad.abs().sum() > 0 and enc.pos.weight.grad.abs().sum() > 0
    with pytest.raises(TextEncoderError, match="max_len=16"):
        enc(torch.ones(1, 17, dtype=torch.long))
    with pytest.raises(TextEncoderError, match="vocab_size=50"):
        enc(torch.full((1, 3), 50, dtype=torch.long))


def test_text_all_padding_row_is_finite():
    enc = TransformerTextEncoder(50, width=32, layers=1, heads=2, max_len=16)
    ids = torch.zeros(2, 4, dtype=torch.long)
    ids[0, :2] = torch.tensor([2, 3])
    words, sent = enc(ids, ids != 0)
    assert torch.isfinite(words).all() and torch.isfinite(sent).all()


@pytest.fixture(scope="module")
def tiny_distilbert(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.DistilBertConfig(
        vocab_size=60, dim=32, n_layers=1, n_heads=2, hidden_dim=64, max_position_embeddings=32
    )
    torch.manual_seed(0)
    model = transformers.DistilBertModel(cfg)
    path = tmp_path_factory.mktemp("distilbert")
    model.save_pretrained(str(path))
    return path


@pytest.mark.parametrize("freeze", [False, True])
@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_hf_text_encoder_in_locvtp(tiny_distilbert, freeze, pooling):
    cfg = _small_cfg(**{"model.text.name": "hf", "model.text.path": str(tiny_distilbert),
                        "model.text.freeze": freeze, "model.text.pooling": pooling})
    model = LocVTP.from_config(cfg)
    assert model.text_encoder.out_dim == 32
    ids, mask = _ids([6, 4], 8, vocab=60)
    words, sent = model.encode_text(ids, mask)
    assert words.shape == (2, 8, 32) and sent.shape == (2, 32)
    assert torch.allclose(words.norm(dim=-1)[mask], torch.ones(int(mask.sum())), atol=1e-5)
    assert torch.equal(words[~mask], torch.zeros_like(words[~mask]))
    (words.sum() + sent.sum()).backward()
    hf_grad = _grad_norm(model.text_encoder)
    assert (hf_grad == 0) if freeze else (hf_grad > 0)
    assert _grad_norm(model.text_proj) > 0
    model.train()
    assert model.text_encoder.model.training is (not freeze)  # frozen HF model stays in eval (no dropout)


def test_hf_text_encoder_refuses_non_directories(tmp_path):
    pytest.importorskip("transformers")
    for path in ("distilbert-base-uncased", str(tmp_path / "missing")):
        cfg = _small_cfg(**{"model.text.name": "hf", "model.text.path": path})
        with pytest.raises(TextEncoderError, match="not a local directory"):
            LocVTP.from_config(cfg)
    with pytest.raises(TextEncoderError, match="requires model.text.path"):
        LocVTP.from_config(_small_cfg(**{"model.text.name": "hf"}))
    (tmp_path / "empty").mkdir()
    with pytest.raises(TextEncoderError, match="cannot load a transformers model from .*empty"):
        LocVTP.from_config(_small_cfg(**{"model.text.name": "hf", "model.text.path": str(tmp_path / "empty")}))


# ---------------------------------------------------------------------------------------------------- LocVTP
VIDEO_VARIANTS = {
    "tiny3d": {},
    "tiny3d_temporal": {"model.video.temporal_layers": 1},
    "features": {"model.video.name": "features", "model.video.in_dim": 20, "model.video.hidden": 24},
    "features_temporal": {"model.video.name": "features", "model.video.in_dim": 20, "model.video.hidden": 24,
                          "model.video.temporal_layers": 1},
}


def _clips_for(model, b, t, seed=0):
    if model.takes_pixels:
        return _pixels(b, t, seed=seed)
    return torch.randn(b, t, model.video_encoder.in_dim, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("variant", list(VIDEO_VARIANTS))
def test_locvtp_shapes_norms_masks_gradients(variant):
    torch.manual_seed(0)
    model = LocVTP.from_config(_small_cfg(**VIDEO_VARIANTS[variant]))
    clips = _clips_for(model, 2, 3)
    clip_mask = torch.tensor([[True, True, False], [True, True, True]])
    ids, mask = _ids([5, 2], 6)
    c = model.encode_video(clips, clip_mask)
    words, sent = model.encode_text(ids, mask)
    assert c.shape == (2, 3, 32) and words.shape == (2, 6, 32) and sent.shape == (2, 32)
    for x in (c, words, sent):
        assert torch.isfinite(x).all()
    assert torch.allclose(c[clip_mask].norm(dim=-1), torch.ones(5), atol=1e-5)
    assert torch.equal(c[~clip_mask], torch.zeros(1, 32))
    assert torch.allclose(words[mask].norm(dim=-1), torch.ones(7), atol=1e-5)
    assert torch.equal(words[~mask], torch.zeros(5, 32))
    assert torch.allclose(sent.norm(dim=-1), torch.ones(2), atol=1e-5)
    # a similarity-style loss, as the objectives compute it: gradients must reach both encoders
    (c @ words.transpose(1, 2)).sum().add((c.mean(1) * sent).sum()).backward()
    assert _grad_norm(model.video_encoder) > 0 and _grad_norm(model.text_encoder) > 0
    assert _grad_norm(model.video_proj) > 0 and _grad_norm(model.text_proj) > 0
    assert model.video_backbone(clips, clip_mask).shape == (2, 3, model.video_encoder.out_dim)


@pytest.mark.parametrize("variant", list(VIDEO_VARIANTS))
def test_encoding_is_independent_of_the_batch(variant):
    """Eval mode: a sample encoded alone equals the same sample inside a padded batch of other samples."""
    torch.manual_seed(0)
    model = LocVTP.from_config(_small_cfg(**VIDEO_VARIANTS[variant])).eval()
    alone_clips = _clips_for(model, 1, 2, seed=1)
    batch_clips = _clips_for(model, 3, 4, seed=2)
    batch_clips[1, :2] = alone_clips[0]
    clip_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]], dtype=torch.bool)
    ids_alone, mask_alone = _ids([4], 4, seed=3)
    ids_batch, mask_batch = _ids([7, 4, 2], 7, seed=4)
    ids_batch[1, :4] = ids_alone[0]
    with torch.no_grad():
        c_alone = model.encode_video(alone_clips)
        c_batch = model.encode_video(batch_clips, clip_mask)
        w_alone, s_alone = model.encode_text(ids_alone, mask_alone)
        w_batch, s_batch = model.encode_text(ids_batch, mask_batch)
    assert torch.allclose(c_alone[0], c_batch[1, :2], atol=1e-5)
    assert torch.allclose(w_alone[0], w_batch[1, :4], atol=1e-5)
    assert torch.allclose(s_alone[0], s_batch[1], atol=1e-5)


def test_train_mode_group_norm_is_batch_independent_too():
    """GroupNorm (default) uses per-sample statistics: even in training, padding cannot shift real clips."""
    torch.manual_seed(0)
    model = LocVTP.from_config(_small_cfg(**{"model.video.dropout": 0.0, "model.proj_dropout": 0.0})).train()
    clips = _pixels(2, 3)
    with torch.no_grad():
        a = model.encode_video(clips[:1])
        b = model.encode_video(clips)
    assert torch.allclose(a[0], b[0], atol=1e-5)


def test_from_config_full_model_part_and_overrides():
    cfg = load_config(None, ["model.dim=48", "model.video.name=features", "model.video.in_dim=10",
                             "model.video.hidden=16", "model.text.width=16", "model.text.heads=2",
                             "model.text.layers=1"])
    for source in (cfg, cfg.model, OmegaConf.to_container(cfg.model)):
        model = LocVTP.from_config(source)
        assert model.dim == 48 and model.video_encoder.in_dim == 10 and model.text_encoder.out_dim == 16
        assert model.config.video.name == "features"
    with pytest.raises(ConfigError, match="model.video.widht"):
        load_config(None, ["model.video.widht=3"])
    with pytest.raises(Exception, match="widht"):
        LocVTP.from_config({"dim": 8, "video": {"widht": 3}})


def test_parameter_count_and_summary():
    cfg = _small_cfg(**{"model.text.freeze": True})
    model = LocVTP.from_config(cfg)
    total = sum(p.numel() for p in model.parameters())
    frozen = sum(p.numel() for p in model.text_encoder.parameters())
    assert model.num_parameters() == total
    assert model.num_parameters(trainable_only=True) == total - frozen
    line = model.summary()
    assert "\n" not in line and "tiny3d" in line and "transformer" in line and "dim=32" in line


def test_pixel_normalization_matches_formula():
    from locvtp.model.video import _RGB_MEAN, _RGB_STD, _normalize_pixels

    clips = _pixels(2, 1, f=1, s=4)[:, 0]  # [N=2, F=1, 4, 4, 3]
    mean, std = torch.tensor(_RGB_MEAN), torch.tensor(_RGB_STD)
    got = _normalize_pixels(clips, mean, std, 1 / 255)
    assert got.shape == (2, 3, 1, 4, 4) and got.is_contiguous()
    for n in range(2):
        for c in range(3):
            for y in range(4):
                for x in range(4):
                    ref = (float(clips[n, 0, y, x, c]) / 255 - _RGB_MEAN[c]) / _RGB_STD[c]
                    assert abs(float(got[n, c, 0, y, x]) - ref) < 1e-5


@pytest.mark.parametrize("norm", ["group", "batch"])
def test_padded_pixel_clips_are_skipped(norm):
    """Padded clips never reach the CNN: their content (and BatchNorm statistics) cannot affect valid clips,
    even in training mode; a video with no valid clip gives finite zeros."""
    torch.manual_seed(0)
    enc = PixelVideoEncoder(Tiny3D(width=8, norm=norm, dropout=0.0)).train()
    clips = _pixels(2, 3)
    mask = torch.tensor([[True, False, True], [False, False, False]])
    other = clips.clone()
    other[~mask] = 255 - other[~mask]
    a, b = enc(clips, mask), enc(other, mask)
    assert torch.allclose(a, b, atol=1e-6)
    assert torch.equal(a[~mask], torch.zeros(4, 8 * 4))
    a[mask].sum().backward()
    assert enc.cnn.features[0].weight.grad.abs().sum() > 0
    out = enc(clips, torch.zeros(2, 3, dtype=torch.bool))
    assert torch.equal(out, torch.zeros(2, 3, 32))
    with pytest.raises(VideoEncoderError, match="clip_mask shape"):
        enc(clips, torch.ones(2, 2, dtype=torch.bool))


@pytest.mark.parametrize("part", ["video", "text"])
def test_frozen_encoders_stay_in_eval_and_build_no_graph(part):
    cfg = _small_cfg(**{f"model.{part}.freeze": True, "model.video.norm": "batch"})
    model = LocVTP.from_config(cfg).train()
    enc = model.video_encoder if part == "video" else model.text_encoder
    assert model.training and not enc.training and enc.frozen
    assert not any(p.requires_grad for p in enc.parameters())
    clips = _pixels(2, 2)
    ids, mask = _ids([4, 3], 5)
    feats = model.video_backbone(clips) if part == "video" else model.text_encoder(ids, mask)[0]
    assert not feats.requires_grad  # no autograd graph through a frozen backbone (memory)
    c = model.encode_video(clips)
    w, s = model.encode_text(ids, mask)
    (c.sum() + w.sum() + s.sum()).backward()
    assert _grad_norm(model.video_proj if part == "video" else model.text_proj) > 0  # heads still train
    if part == "video":  # BatchNorm running statistics must not move while frozen
        bn = model.video_encoder.cnn.features[1]
        assert torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))


def test_mean_pooling_gradcheck():
    h = torch.randn(2, 4, 3, dtype=torch.double, requires_grad=True)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    assert torch.autograd.gradcheck(lambda x: pool_sentence(x, mask, "mean"), (h,))


def test_default_attention_mask_is_nonzero_ids():
    torch.manual_seed(0)
    model = LocVTP.from_config(_small_cfg()).eval()
    ids, mask = _ids([4, 2], 5)
    with torch.no_grad():
        a = model.encode_text(ids)
        b = model.encode_text(ids, mask)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("frames,size", [(1, 16), (8, 48)])
def test_tiny3d_other_clip_geometries(frames, size):
    enc = PixelVideoEncoder(Tiny3D(width=8))
    out = enc(_pixels(1, 2, f=frames, s=size))
    assert out.shape == (1, 2, 32) and torch.isfinite(out).all()
