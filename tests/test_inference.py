"""locvtp.inference: whole-video and sentence embedding, checked against direct model calls."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from inference_helpers import clip_args, make_checkpoint, world_videos


@pytest.fixture(scope="module")
def ckpt(tiny_world, tmp_path_factory):
    from locvtp.checkpoint import load_checkpoint

    return load_checkpoint(make_checkpoint(tiny_world, tmp_path_factory.mktemp("inf") / "ckpt"))


@pytest.fixture(scope="module")
def ckpt_temporal(tiny_world, tmp_path_factory):
    from locvtp.checkpoint import load_checkpoint

    return load_checkpoint(make_checkpoint(tiny_world, tmp_path_factory.mktemp("inf_t") / "ckpt", temporal_layers=1))


def _reference_clips(model, path, clip_seconds, stride, f, size):
    """Independent path: decode every frame, sample with sample_clips, one encode_video call on [1, N]."""
    from locvtp.data.video import decode_frames, probe_video, sample_clips, sliding_windows

    info = probe_video(path)
    frames, times = decode_frames(path)
    windows = sliding_windows(info.duration, clip_seconds, stride)
    clips = sample_clips(frames, times, windows, f, size, duration=info.duration)
    model.eval()
    with torch.no_grad():
        ref = model.encode_video(torch.as_tensor(clips)[None])[0].numpy()
    return ref, windows, info


def test_embed_video_file_matches_direct_model_call(ckpt, tiny_world):
    from locvtp.inference import embed_video_file

    path = world_videos(tiny_world)[0]
    model = ckpt.model
    model.train()  # the function must switch to eval and restore the flag
    emb = embed_video_file(model, path, clip_seconds=1.0, frames_per_clip=4, frame_size=32, batch_clips=3)
    assert model.training
    ref, windows, info = _reference_clips(model, path, 1.0, 1.0, 4, 32)
    assert emb.features.dtype == np.float32 and emb.features.shape == (len(windows), 64)
    np.testing.assert_allclose(emb.windows, windows)
    assert emb.fps == pytest.approx(info.fps) and emb.duration == pytest.approx(info.duration)
    np.testing.assert_allclose(emb.features, ref, atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(emb.features, axis=1), 1.0, atol=1e-5)


def test_chunk_size_and_stride(ckpt, tiny_world):
    from locvtp.data.video import sliding_windows
    from locvtp.inference import embed_video_file

    path = world_videos(tiny_world)[1]
    a = embed_video_file(ckpt.model, path, **clip_args(ckpt), batch_clips=1)
    b = embed_video_file(ckpt.model, path, **clip_args(ckpt), batch_clips=1000)
    np.testing.assert_allclose(a.features, b.features, atol=2e-5)
    c = embed_video_file(ckpt.model, path, **{**clip_args(ckpt), "clip_seconds": 2.0, "stride_seconds": 0.5})
    np.testing.assert_allclose(c.windows, sliding_windows(c.duration, 2.0, 0.5))
    assert c.features.shape[0] > a.features.shape[0]  # overlapping windows: more clips


def test_temporal_model_encodes_whole_video_as_one_sequence(ckpt_temporal, tiny_world):
    from locvtp.inference import embed_video_file, has_temporal_layers

    model = ckpt_temporal.model
    assert has_temporal_layers(model)
    path = world_videos(tiny_world)[2]
    # CNN in chunks of 2, transformer once
    emb = embed_video_file(model, path, **clip_args(ckpt_temporal), batch_clips=2, backbone=True)
    ref, _, _ = _reference_clips(model, path, 1.0, 1.0, 4, 32)
    np.testing.assert_allclose(emb.features, ref, atol=2e-5)
    assert emb.backbone.shape == (ref.shape[0], model.video_encoder.out_dim)
    # with temporal layers a clip's embedding depends on the rest of the video: encoding only the first half
    # as its own sequence changes clip 0 (so chunking the sequence would have been wrong)
    from locvtp.inference import decode_video_clips, encode_clip_sequence

    dec = decode_video_clips(path, 1.0, None, 4, 32)
    half, _ = encode_clip_sequence(model, dec.clips[: len(dec.clips) // 2])
    assert not np.allclose(half[0], emb.features[0], atol=1e-4)


def test_embed_video_frames_equals_file(ckpt, tiny_world):
    from locvtp.data.video import decode_frames, probe_video
    from locvtp.inference import embed_video_file, embed_video_frames

    path = world_videos(tiny_world)[3]
    info = probe_video(path)
    frames, times = decode_frames(path, size=32)
    a = embed_video_frames(ckpt.model, frames, times, info.duration, info.fps, **clip_args(ckpt))
    b = embed_video_file(ckpt.model, path, **clip_args(ckpt))
    np.testing.assert_allclose(a.features, b.features, atol=2e-5)
    np.testing.assert_allclose(a.windows, b.windows)


def test_unreadable_video_raises_video_error(ckpt, tmp_path):
    from locvtp.data.video import VideoError
    from locvtp.inference import embed_video_file

    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00not a video" * 50)
    with pytest.raises(VideoError, match="bad.mp4"):
        embed_video_file(ckpt.model, bad, **clip_args(ckpt))


def test_embed_texts_batched_equals_one_by_one(ckpt):
    from locvtp.inference import embed_texts

    texts = ["the red circle moves left", "a blue square grows", "yellow"]
    model, tok = ckpt.model, ckpt.tokenizer
    out = embed_texts(model, tok, texts, max_words=24, batch_size=2)
    assert out.sentence.shape == (3, 64)
    model.eval()
    for i, t in enumerate(texts):
        enc = tok([t], max_length=24)
        with torch.no_grad():
            w, s = model.encode_text(enc["input_ids"], enc["attention_mask"])
        np.testing.assert_allclose(out.sentence[i], s[0].numpy(), atol=2e-5)
        keep = enc["word_mask"][0].numpy()
        np.testing.assert_allclose(out.words[i], w[0].numpy()[keep], atol=2e-5)
        words_only = [x for x, m in zip(tok.tokens(t, max_length=24), enc["word_mask"][0].tolist()) if m]
        assert out.tokens[i] == words_only
        assert out.words[i].shape[0] == len(out.tokens[i]) > 0
    # max_words truncates (special tokens included in the budget)
    long = embed_texts(model, tok, ["the red circle moves left and then the blue square grows"], max_words=5)
    assert long.words[0].shape[0] == 5 - 2


def test_embed_features_matches_encode_video(tiny_world, tmp_path):
    from locvtp.checkpoint import load_checkpoint
    from locvtp.inference import embed_features

    ck = load_checkpoint(make_checkpoint(tiny_world, tmp_path / "fck", video="features", in_dim=16,
                                         temporal_layers=1))
    x = np.random.default_rng(0).normal(size=(11, 16)).astype(np.float32)
    emb = embed_features(ck.model, x, clip_seconds=2.0)
    with torch.no_grad():
        ref = ck.model.encode_video(torch.as_tensor(x)[None])[0].numpy()
    np.testing.assert_allclose(emb.features, ref, atol=2e-5)
    np.testing.assert_allclose(emb.windows[:, 0], np.arange(11) * 2.0)
    assert emb.duration == pytest.approx(22.0)
    with pytest.raises(ValueError, match="pixels"):
        embed_features(load_checkpoint(make_checkpoint(tiny_world, tmp_path / "pck")).model, x, clip_seconds=1.0)


def test_the_clip_cut_has_no_silent_default():
    """Issue 22: the video functions take the checkpoint's preprocessing from the caller (LocVTPPredictor's
    Preprocessing, read once from the checkpoint); a default here once let a caller cut clips the checkpoint
    was not trained on without a word."""
    import inspect

    from locvtp import inference

    for fn in (inference.decode_video_clips, inference.embed_video_file, inference.embed_video_frames,
               inference.embed_features):
        params = inspect.signature(fn).parameters
        cut = [n for n in ("clip_seconds", "frames_per_clip", "frame_size") if n in params]
        assert cut and all(params[n].default is inspect.Parameter.empty for n in cut), fn.__name__
    with pytest.raises(TypeError, match="clip_seconds"):
        inference.embed_video_file(None, "any.mp4", frames_per_clip=4, frame_size=32)


# ------------------------------------------------------------------------------------------------ query warnings
@pytest.fixture(scope="module")
def small_tok():
    from locvtp.data.tokenizer import train_tokenizer

    return train_tokenizer(["a man opens the door", "the woman cuts an onion"], vocab_size=100)


def test_text_query_warnings_quiet_for_an_ordinary_query(small_tok):
    from locvtp.inference import text_query_warnings

    assert text_query_warnings(small_tok, "a man opens the door", max_words=24) == []
    assert text_query_warnings(small_tok, "the man cuts a zebra", max_words=24) == []  # some unknown: fine


def test_text_query_warnings_names_what_a_long_query_loses(small_tok):
    """A 10 000-word query is cut to max_words - 2 word pieces; the warning says how many and what is dropped."""
    from locvtp.inference import embed_texts, text_query_warnings

    query = "the door " + " ".join(["onion"] * 10_000)
    (msg,) = text_query_warnings(small_tok, query, max_words=24)
    assert "10002 word pieces" in msg and "first 22" in msg and "max_words=24" in msg and "ignored" in msg
    assert "'onion onion" in msg  # names the ignored text (shortened)
    # exactly at the budget: nothing is cut, nothing said
    assert text_query_warnings(small_tok, " ".join(["door"] * 22), max_words=24) == []
    assert len(text_query_warnings(small_tok, " ".join(["door"] * 23), max_words=24)) == 1


def test_text_query_warnings_unknown_or_no_words(small_tok):
    from locvtp.inference import text_query_warnings

    (msg,) = text_query_warnings(small_tok, "zzqx qqqy", max_words=24)
    assert "none of the words" in msg and "[UNK]" in msg and "'zzqx qqqy'" in msg
    for empty in ("", "   ", "\x00"):
        (msg,) = text_query_warnings(small_tok, empty, max_words=24)
        assert "has no words" in msg
    # both at once: unknown and too long
    assert len(text_query_warnings(small_tok, " ".join(["zzqx"] * 30), max_words=24)) == 2


def test_text_query_warnings_refuses_undecodable_text(small_tok):
    """Command-line bytes that are not UTF-8 arrive as surrogates: a TypeError traceback before (issue #18)."""
    from locvtp.errors import UsageError
    from locvtp.inference import text_query_warnings

    bad = b"a \xff person".decode("utf-8", "surrogateescape")
    with pytest.raises(UsageError, match="not valid text"):
        text_query_warnings(small_tok, bad, max_words=24)
