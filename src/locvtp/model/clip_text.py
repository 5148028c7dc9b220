"""CLIP's text tower as a text encoder (``model.text.name=clip``), from a local OpenAI or open_clip weights file.

Radford et al., "Learning Transferable Visual Models From Natural Language Supervision" (ICML 2021), §2.4, and
openai/CLIP ``clip/model.py`` (``CLIP.encode_text``): token embedding + learned positions, the residual attention
stack of :mod:`locvtp.model.clip_transformer` under a causal mask, ``ln_final``, then the ``text_projection``
matrix. The sentence feature is the projected state at the end-of-text token (upstream: ``argmax`` of the ids,
since ``<|endoftext|>`` has the largest id; here the last valid position, which is that token whatever the padding
id because our tokenizer keeps it when it truncates). The word features for the fine-grained loss are the
projected states of every position, so words and sentence live in the tower's own joint space before LocVTP's
projection head maps both to ``model.dim`` (one head, as for the other encoders).

Parameter names are the upstream ones (``token_embedding.weight``, ``positional_embedding``,
``transformer.resblocks.N.*``, ``ln_final.*``, ``text_projection``): the top-level entries of an OpenAI or
open_clip ``CLIP`` state dict load unchanged, and so do open_clip's ``CustomTextCLIP`` ones under ``text.``.
Width, depth, context length, vocabulary and output width are read from the weights; heads are width / 64 as in
every published CLIP. The configuration keeps them (``model.text.width`` …), so a checkpoint rebuilds the tower
without the weights file.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
from torch import nn

from .clip_transformer import ACTIVATIONS, HEAD_WIDTH, ClipTransformer, causal_mask, resblock_count
from .common import Freezable, TextEncoderError

TEXT_TOP_KEYS = ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection")
SOT, EOT = "<|startoftext|>", "<|endoftext|>"

__all__ = ["ClipTextArch", "ClipTextEncoder", "EOT", "SOT", "build_clip_text", "check_clip_tokenizer",
           "text_arch_from_state", "text_state"]


@dataclass(frozen=True)
class ClipTextArch:
    """The shape of a CLIP text tower (all of it is in the state dict but the activation)."""

    width: int
    layers: int
    context_length: int
    vocab_size: int
    out_dim: int

    @property
    def heads(self) -> int:
        return self.width // HEAD_WIDTH


def text_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The text tower's entries of a CLIP state dict: open_clip's ``text.*`` (prefix removed) when present, else the
    top-level ``token_embedding`` / ``positional_embedding`` / ``transformer`` / ``ln_final`` / ``text_projection``
    entries (the image tower's live under ``visual.``, the rest — ``logit_scale`` … — is not the tower's)."""
    if "text.token_embedding.weight" in state:
        return {k[len("text."):]: v for k, v in state.items() if k.startswith("text.")}
    return {k: v for k, v in state.items() if k.split(".", 1)[0] in TEXT_TOP_KEYS}


def text_arch_from_state(state: Mapping[str, torch.Tensor]) -> ClipTextArch:
    """The tower's shape from its :func:`text_state`, as openai/CLIP ``build_model`` infers it."""
    if "text_projection.weight" in state:
        raise TextEncoderError("text_projection is a Linear layer (an open_clip text tower with proj_type='linear' "
                               "or a Hugging Face text model): only CLIP towers whose text_projection is a matrix "
                               "are supported")
    need = ("token_embedding.weight", "positional_embedding", "ln_final.weight", "text_projection")
    absent = [k for k in need if k not in state]
    if absent:
        raise TextEncoderError(f"not a CLIP text tower: no {', '.join(absent)}")
    vocab, width = (int(n) for n in state["token_embedding.weight"].shape)
    layers = resblock_count(state)
    if not layers:
        raise TextEncoderError("not a CLIP text tower: no transformer.resblocks.N.* entries")
    return ClipTextArch(width, layers, int(state["positional_embedding"].shape[0]), vocab,
                        int(state["text_projection"].shape[1]))


class ClipTextEncoder(Freezable):
    """ids ``[B, L]`` (+ bool mask) -> (projected token states ``[B, L, E]``, end-of-text state ``[B, E]``)."""

    def __init__(self, arch: ClipTextArch, activation: str = "quick_gelu"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise TextEncoderError(f"model.text.activation must be one of {ACTIVATIONS}, got {activation!r}")
        if arch.width % HEAD_WIDTH:
            raise TextEncoderError(f"CLIP text width {arch.width} is not a multiple of {HEAD_WIDTH} "
                                   f"(heads = width / {HEAD_WIDTH})")
        self.arch, self.activation = arch, activation
        w = arch.width
        self.token_embedding = nn.Embedding(arch.vocab_size, w)
        self.positional_embedding = nn.Parameter(torch.empty(arch.context_length, w))
        self.transformer = ClipTransformer(w, arch.layers, arch.heads, activation)
        self.ln_final = nn.LayerNorm(w)
        self.text_projection = nn.Parameter(torch.empty(w, arch.out_dim))
        # openai/CLIP initialize_parameters: what a tower trained from scratch starts from
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        nn.init.normal_(self.text_projection, std=w ** -0.5)
        self.out_dim = arch.out_dim
        self.max_len = arch.context_length
        self.vocab_size = arch.vocab_size

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Padding after the end-of-text token changes nothing before it (causal mask); ``attention_mask`` (default:
        no padding) only says where each sentence ends."""
        mask = self._check(input_ids, attention_mask)
        length = input_ids.shape[1]
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            x = self.token_embedding(input_ids) + self.positional_embedding[:length]
            x = self.ln_final(self.transformer(x, causal_mask(length, x.device)))
            tokens = x @ self.text_projection
        last = (mask.sum(1) - 1).clamp(min=0)
        return tokens, tokens[torch.arange(tokens.shape[0], device=tokens.device), last]

    def _check(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor]) -> torch.Tensor:
        if input_ids.dim() != 2:
            raise TextEncoderError(f"text encoder expects input_ids [B, L], got shape {tuple(input_ids.shape)}")
        if input_ids.shape[1] > self.max_len:
            raise TextEncoderError(f"sequence length {input_ids.shape[1]} exceeds the CLIP text tower's context length "
                                   f"{self.max_len} (model.text.max_len, from its weights); lower data.max_words")
        if input_ids.numel() and (int(input_ids.max()) >= self.vocab_size or int(input_ids.min()) < 0):
            raise TextEncoderError(f"token id {int(input_ids.max())} outside the CLIP text tower's {self.vocab_size}-token "
                                   "vocabulary: the tokenizer (data.tokenizer) is not this tower's")
        if attention_mask is None:
            return torch.ones_like(input_ids, dtype=torch.bool)
        if attention_mask.shape != input_ids.shape:
            raise TextEncoderError(f"attention_mask shape {tuple(attention_mask.shape)} != input_ids shape "
                                   f"{tuple(input_ids.shape)}")
        return attention_mask.bool()


def _load_weights(path: str, activation: str) -> ClipTextEncoder:
    """The tower of the weights file ``path`` (``model.text.weights``); one-line errors naming the key and file."""
    from locvtp.errors import UsageError
    from .weights import WEIGHTS_HELP, load_into, read_weights

    state, _how = read_weights(path, "clip", what="model.text.weights")
    text = text_state(state)
    try:
        arch = text_arch_from_state(text)
    except TextEncoderError as exc:
        raise UsageError(f"model.text.weights {path}: {exc}; download {WEIGHTS_HELP['clip']}") from None
    enc = ClipTextEncoder(arch, activation)
    load_into(enc, text, Path(path).expanduser(), "clip", what="model.text.weights")
    return enc


def build_clip_text(tcfg: Any, load_pretrained: bool = True) -> ClipTextEncoder:
    """``model.text.name=clip``: the tower of ``model.text.weights``, whose shape is written back into ``tcfg``
    (``width``, ``layers``, ``heads``, ``max_len``, ``vocab_size``, ``embed_dim``: the checkpoint's config then
    rebuilds it); ``load_pretrained=False`` builds that shape from ``tcfg`` alone (a checkpoint's weights follow)."""
    activation = str(tcfg.get("activation") or "quick_gelu")
    if load_pretrained:
        if not tcfg.get("weights"):
            from locvtp.errors import UsageError
            from .weights import WEIGHTS_HELP

            raise UsageError(f"model.text.name=clip needs model.text.weights (a local CLIP weights file): download "
                             f"{WEIGHTS_HELP['clip']}")
        enc = _load_weights(str(tcfg.weights), activation)
        a = enc.arch
        tcfg.width, tcfg.layers, tcfg.heads, tcfg.max_len = a.width, a.layers, a.heads, a.context_length
        tcfg.vocab_size, tcfg.embed_dim = a.vocab_size, a.out_dim
    else:
        if tcfg.get("embed_dim") is None:
            raise TextEncoderError("model.text.name=clip without model.text.embed_dim: this config was not filled "
                                   "from CLIP weights (build the model with its weights first)")
        enc = ClipTextEncoder(ClipTextArch(int(tcfg.width), int(tcfg.layers), int(tcfg.max_len),
                                           int(tcfg.vocab_size), int(tcfg.embed_dim)), activation)
    if tcfg.freeze:
        enc.freeze()
    return enc


def check_clip_tokenizer(tokenizer: Any, vocab_size: int, where: str = "data.tokenizer") -> None:
    """The tokenizer must be the tower's: CLIP's special tokens, and exactly as many ids as the token embedding has
    rows (another vocabulary would feed the tower ids it never learned)."""
    from locvtp.errors import UsageError

    source = getattr(tokenizer, "source", None) or where
    if tokenizer.token_to_id(SOT) is None or tokenizer.token_to_id(EOT) is None:
        raise UsageError(f"{where} {source}: not a CLIP tokenizer (no {SOT} / {EOT}); model.text.name=clip needs "
                         "CLIP's BPE: bpe_simple_vocab_16e6.txt.gz or an HF CLIP tokenizer.json (docs/features.md)")
    if int(tokenizer.vocab_size) != int(vocab_size):
        raise UsageError(f"{where} {source}: {tokenizer.vocab_size} tokens, but the CLIP text tower "
                         f"(model.text.weights) embeds {vocab_size}: use the tokenizer of the same CLIP release")
