"""CLIP's text tower as a text encoder (issue 25 item 2): ``model.text.name=clip``.

Random towers are saved in the upstream layouts (OpenAI's whole-CLIP state dict with ``visual.*`` beside the text
entries, open_clip's ``CLIP`` file with a ``state_dict`` wrapper and ``module.`` prefixes, open_clip's
``CustomTextCLIP`` ``text.*`` entries as safetensors) and loaded back through ``model.text.weights``, the path a
user's file takes. The forward is checked against a plain reference written from the formula (per head, per
position), the sentence feature against upstream's ``argmax`` pooling.
"""
from __future__ import annotations

import math

import pytest
import torch


pytestmark = pytest.mark.usefixtures("keep_torch_threads")

SMALL = dict(width=128, layers=2, context_length=12, vocab_size=40, out_dim=24)  # 2 heads


def _arch(**kw):
    from locvtp.model.clip_text import ClipTextArch

    return ClipTextArch(**{**SMALL, **kw})


def _tower(seed=0, activation="quick_gelu", **kw):
    """A random tower with non-trivial LayerNorm and bias values (a plain-zero bias would hide a missing term)."""
    from locvtp.model.clip_text import ClipTextEncoder

    torch.manual_seed(seed)
    enc = ClipTextEncoder(_arch(**kw), activation)
    with torch.no_grad():
        for name, p in enc.named_parameters():
            if name.endswith("bias") or "ln" in name:
                p.add_(0.1 * torch.randn_like(p))
    return enc


def _layer_norm(x, w, b):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + 1e-5) * w + b


def _reference(state, ids, heads, activation="quick_gelu"):
    """encode_text from the formula, one sentence at a time, one head at a time (no nn modules)."""
    L = ids.shape[0]
    x = state["token_embedding.weight"][ids] + state["positional_embedding"][:L]
    n_blocks = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("transformer.resblocks."))
    width = x.shape[1]
    hd = width // heads
    for i in range(n_blocks):
        p = lambda name: state[f"transformer.resblocks.{i}.{name}"]  # noqa: E731
        h = _layer_norm(x, p("ln_1.weight"), p("ln_1.bias"))
        qkv = h @ p("attn.in_proj_weight").T + p("attn.in_proj_bias")
        q, k, v = qkv[:, :width], qkv[:, width:2 * width], qkv[:, 2 * width:]
        out = torch.zeros_like(h)
        for hh in range(heads):
            sl = slice(hh * hd, (hh + 1) * hd)
            for t in range(L):  # position t attends to 0..t (causal)
                scores = torch.stack([q[t, sl] @ k[s, sl] / math.sqrt(hd) for s in range(t + 1)])
                w = torch.softmax(scores, 0)
                out[t, sl] = sum(w[s] * v[s, sl] for s in range(t + 1))
        x = x + out @ p("attn.out_proj.weight").T + p("attn.out_proj.bias")
        h = _layer_norm(x, p("ln_2.weight"), p("ln_2.bias")) @ p("mlp.c_fc.weight").T + p("mlp.c_fc.bias")
        h = h * torch.sigmoid(1.702 * h) if activation == "quick_gelu" else 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))
        x = x + h @ p("mlp.c_proj.weight").T + p("mlp.c_proj.bias")
    x = _layer_norm(x, state["ln_final.weight"], state["ln_final.bias"])
    tokens = x @ state["text_projection"]
    return tokens, tokens[int(ids.argmax())]  # upstream: the end-of-text token has the largest id


@pytest.mark.parametrize("activation", ["quick_gelu", "gelu"])
def test_forward_matches_the_formula_and_upstream_pooling(activation):
    enc = _tower(activation=activation).eval()
    state = {k: v.double() for k, v in enc.state_dict().items()}
    enc = enc.double()
    eot = SMALL["vocab_size"] - 1  # CLIP's <|endoftext|> is the last id
    rows = [[38, 5, 9, 17, eot], [38, 3, eot]]
    ids = torch.full((2, 5), eot, dtype=torch.long)  # padded with the end token, as HF pads CLIP
    mask = torch.zeros(2, 5, dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r)
        mask[i, :len(r)] = True
    with torch.no_grad():
        tokens, sentence = enc(ids, mask)
    assert tokens.shape == (2, 5, SMALL["out_dim"]) and sentence.shape == (2, SMALL["out_dim"])
    for i, r in enumerate(rows):
        ref_tokens, ref_sentence = _reference(state, torch.tensor(r), heads=2, activation=activation)
        torch.testing.assert_close(tokens[i, :len(r)], ref_tokens, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(sentence[i], ref_sentence, rtol=1e-9, atol=1e-9)
    # causal: what follows a position (padding, other words) changes nothing at or before it
    other = ids.clone()
    other[1, 3:] = torch.tensor([7, 8])
    with torch.no_grad():
        t2, s2 = enc(other, mask)
    torch.testing.assert_close(t2[1, :3], tokens[1, :3], rtol=0, atol=0)
    torch.testing.assert_close(s2, sentence, rtol=0, atol=0)


def _openai_state(enc, visual=True):
    """A whole OpenAI CLIP state dict: text entries at the top, an image tower under visual., logit_scale."""
    state = {k: v.clone().half() for k, v in enc.state_dict().items()}  # OpenAI's release is fp16
    if visual:
        state.update({"visual.conv1.weight": torch.randn(64, 3, 32, 32), "visual.proj": torch.randn(64, 24),
                      "visual.transformer.resblocks.0.ln_1.weight": torch.ones(64)})
    state["logit_scale"] = torch.tensor(4.6052)
    return state


def _text_cfg(weights, **kw):
    from locvtp.config import load_config

    over = [f"model.text.{k}={v}" for k, v in {"name": "clip", "weights": weights, **kw}.items()]
    return load_config(None, over)


def test_openai_layout_round_trip_fills_the_config(tmp_path):
    from locvtp.model import build_text_encoder
    from locvtp.model.clip_text import TEXT_TOP_KEYS

    enc = _tower(seed=1)
    path = tmp_path / "ViT-tiny.pt"
    torch.save(_openai_state(enc), path)
    cfg = _text_cfg(path)
    got = build_text_encoder(cfg.model.text)
    # the upstream names, exactly: a user's file and our module agree key for key
    assert set(got.state_dict()) == set(enc.state_dict())
    assert all(k.split(".", 1)[0] in TEXT_TOP_KEYS for k in got.state_dict())
    for k, v in enc.state_dict().items():
        torch.testing.assert_close(got.state_dict()[k], v.half().float(), rtol=0, atol=0)
    t = cfg.model.text
    assert (t.width, t.layers, t.heads, t.max_len, t.vocab_size, t.embed_dim) == (128, 2, 2, 12, 40, 24)
    # a checkpoint rebuilds the same shape from the filled config alone (no weights file)
    path.unlink()
    again = build_text_encoder(cfg.model.text, load_pretrained=False)
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in got.state_dict().items()}


def test_open_clip_layouts_load_the_same_tower(tmp_path):
    """open_clip's CLIP (.bin: {'state_dict': ...} with DDP's module. prefix) and CustomTextCLIP (text.* keys, as
    .safetensors) give the tower saved."""
    from safetensors.torch import save_file

    from locvtp.model import build_text_encoder

    enc = _tower(seed=2)
    plain = {k: v.clone() for k, v in enc.state_dict().items()}
    ddp = tmp_path / "open_clip_pytorch_model.bin"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in {**plain, "logit_scale": torch.tensor(1.0)}
                                           .items()}}, ddp)
    custom = tmp_path / "open_clip_model.safetensors"
    save_file({**{f"text.{k}": v.contiguous() for k, v in plain.items()},
               "visual.proj": torch.randn(64, 24), "logit_scale": torch.tensor(1.0)}, str(custom))
    for path in (ddp, custom):
        got = build_text_encoder(_text_cfg(path, activation="gelu").model.text)
        assert got.activation == "gelu"
        for k, v in plain.items():
            torch.testing.assert_close(got.state_dict()[k], v, rtol=0, atol=0)


def test_gradients_flow_unless_frozen(tmp_path):
    from locvtp.model import build_text_encoder

    path = tmp_path / "w.pt"
    torch.save(_openai_state(_tower()), path)
    ids = torch.tensor([[38, 4, 9, 39], [38, 5, 39, 39]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]], dtype=torch.bool)
    trained = build_text_encoder(_text_cfg(path).model.text).train()
    tokens, sentence = trained(ids, mask)
    (tokens.sum() + sentence.sum()).backward()
    for name, p in trained.named_parameters():
        assert p.requires_grad and p.grad is not None, name
    assert trained.token_embedding.weight.grad[[38, 4, 9, 5, 39]].abs().sum(1).gt(0).all()
    assert trained.token_embedding.weight.grad[10:38].abs().sum() == 0  # ids never used get nothing
    frozen = build_text_encoder(_text_cfg(path, freeze="true").model.text)
    frozen.train()
    assert not frozen.training  # frozen: eval mode whatever the caller asks
    tokens, sentence = frozen(ids, mask)
    assert not tokens.requires_grad and not sentence.requires_grad
    assert not any(p.requires_grad for p in frozen.parameters())


def test_in_locvtp_the_head_projects_to_the_joint_space(tmp_path):
    from locvtp.config import load_config
    from locvtp.model import LocVTP

    path = tmp_path / "w.pt"
    torch.save(_openai_state(_tower()), path)
    cfg = load_config(None, ["model.text.name=clip", f"model.text.weights={path}", "model.dim=16",
                             "model.video.name=features", "model.video.in_dim=8", "model.video.hidden=8"])
    model = LocVTP.from_config(cfg).eval()
    assert model.text_proj.proj.in_features == SMALL["out_dim"] and model.text_encoder.out_dim == SMALL["out_dim"]
    words, sentence = model.encode_text(torch.tensor([[38, 4, 39, 39]]), torch.tensor([[1, 1, 1, 0]], dtype=torch.bool))
    assert words.shape == (1, 4, 16) and sentence.shape == (1, 16)
    assert words[0, 3].abs().sum() == 0 and torch.allclose(words[0, :3].norm(dim=-1), torch.ones(3))


def test_shape_errors_name_the_limit(tmp_path):
    from locvtp.model.clip_text import TextEncoderError

    enc = _tower()
    with pytest.raises(TextEncoderError, match="context length 12"):
        enc(torch.zeros(1, 13, dtype=torch.long))
    with pytest.raises(TextEncoderError, match="40-token vocabulary"):
        enc(torch.tensor([[40]]))


# The pretrain command's CLIP mistakes are rows of tests/test_mistakes_train.py.


def test_weights_without_a_usable_text_tower_are_one_line(tmp_path):
    from locvtp.errors import UsageError
    from locvtp.model import build_text_encoder

    torch.save({"visual.conv1.weight": torch.zeros(64, 3, 32, 32), "visual.proj": torch.zeros(64, 8)},
               tmp_path / "visual.pt")
    state = _tower().state_dict()
    state.pop("ln_final.bias")
    torch.save(state, tmp_path / "cut.pt")
    for name, needles in (("visual.pt", ["not a CLIP text tower", "token_embedding.weight", "openaipublic"]),
                          ("cut.pt", ["missing keys", "ln_final.bias"])):
        with pytest.raises(UsageError) as exc:
            build_text_encoder(_text_cfg(tmp_path / name).model.text)
        msg = str(exc.value)
        assert "\n" not in msg and msg.startswith(f"model.text.weights {tmp_path / name}")
        assert all(n in msg for n in needles), msg
