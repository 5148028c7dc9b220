"""Pre-training LocVTP on CLIP features with CLIP's text tower, end to end on the tiny world (issue 25 item 2).

One random CLIP in OpenAI's layout (an image tower under ``visual.`` and a text tower at the top, as one file) and a
merges file written here: ``locvtp extract --backbone clip`` writes the store, ``locvtp pretrain`` runs the shipped
``pretrain_howto100m_clip`` config on it (``model.video.in_dim`` read from the store, the text tower's shape from
the weights), ``locvtp evaluate`` reads the checkpoint without the weights file.
"""
from __future__ import annotations

import gzip
import json
import math

import pytest
import torch
import yaml

from cli_helpers import run_cli

pytestmark = pytest.mark.usefixtures("keep_torch_threads")

MERGES = [("t", "h"), ("th", "e</w>"), ("i", "n"), ("in", "g</w>"), ("o", "n"), ("e", "r"), ("a", "n"),
          ("an", "d</w>"), ("o", "r"), ("p", "er"), ("s", "t"), ("e", "n"), ("o", "u"), ("a", "t</w>")]
VOCAB = 512 + len(MERGES) + 2


def _clip_file(path):
    from locvtp.model.clip_text import ClipTextArch, ClipTextEncoder
    from locvtp.model.clip_visual import ClipVisual, ClipVisualArch

    torch.manual_seed(0)
    state = {f"visual.{k}": v for k, v in ClipVisual(ClipVisualArch(64, 32, 224, 1, 24)).state_dict().items()}
    state.update(ClipTextEncoder(ClipTextArch(64, 2, 32, VOCAB, 24)).state_dict())
    state["logit_scale"] = torch.tensor(4.6052)
    torch.save(state, path)
    return path


@pytest.mark.parametrize("freeze", [False, True])
def test_pretrain_on_clip_features_with_the_clip_text_tower_then_evaluate(tiny_world, tmp_path, capsys, freeze):
    weights = _clip_file(tmp_path / "ViT-tiny.pt")
    merges = tmp_path / "bpe_simple_vocab_16e6.txt.gz"
    merges.write_bytes(gzip.compress(("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in MERGES)).encode()))
    store = tmp_path / "clip.h5"
    res = run_cli(["extract", "--no-progress", "--backbone", "clip", "--weights", weights, "--videos",
                   tiny_world / "videos", "--out", store, "--batch-clips", "16"], capsys)
    assert res.code == 0, res.err
    run = tmp_path / "run"
    res = run_cli(["pretrain", "--config", "pretrain_howto100m_clip", "--out", run, "--quiet",
                   f"data.root={tiny_world}", "data.caption_file=pretrain/caption.json", f"data.features={store}",
                   f"data.tokenizer={merges}", f"model.text.weights={weights}", f"model.text.freeze={freeze}",
                   "data.num_workers=0", "data.num_clips=4", "data.max_words=16", "model.dim=16",
                   "model.video.hidden=16", "model.video.temporal_layers=1", "model.video.temporal_heads=2",
                   "train.batch_size=4", "train.max_steps=3", "train.save_every=0", "train.log_every=1",
                   "train.warmup_steps=1", "train.bf16=false", "train.tensorboard=false", "train.val_every=0",
                   "train.num_threads=1"], capsys)
    assert res.code == 0, res.err
    final = run / "final"
    cfg = yaml.safe_load((final / "config.yaml").read_text())
    assert cfg["model"]["video"]["in_dim"] == 24  # read from the store
    t = cfg["model"]["text"]
    assert (t["name"], t["width"], t["layers"], t["heads"], t["max_len"], t["vocab_size"], t["embed_dim"]) == \
        ("clip", 64, 2, 1, 32, VOCAB, 24)
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert metrics and all(math.isfinite(m["loss/total"]) for m in metrics if "loss/total" in m)
    # frozen: the tower's weights are CLIP's, bit for bit; trained: they moved
    from safetensors.torch import load_file

    saved = load_file(str(final / "model.safetensors"))
    start = torch.load(weights, weights_only=True)
    same = torch.equal(saved["model.text_encoder.token_embedding.weight"], start["token_embedding.weight"])
    same_ln = torch.equal(saved["model.text_encoder.ln_final.weight"], start["ln_final.weight"])
    assert (same and same_ln) if freeze else not same_ln
    # evaluate reads the checkpoint (tokenizer.json inside) without the weights file or the merges file
    weights.unlink()
    merges.unlink()
    out = tmp_path / "eval"
    res = run_cli(["evaluate", "grounding", "--checkpoint", run, "--data", tiny_world, "--features", store,
                   "--out", out, "--no-head", "--quiet", "--threads", "1"], capsys)
    assert res.code == 0, res.err
    grd = json.loads((out / "grounding.json").read_text())
    assert grd["predictions"] and all(math.isfinite(v) for v in _numbers(json.loads((out / "metrics.json")
                                                                                       .read_text())))


def _numbers(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _numbers(v)
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield float(obj)
