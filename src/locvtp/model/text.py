"""Text encoders: token ids -> (word features ``[B, L, Dt]``, sentence feature ``[B, Dt]``) before projection.

- ``transformer``: a small pre-LN transformer trained from scratch with the project's WordPiece tokenizer
  (pad id 0, CLS first).
- ``hf``: any BERT-family model from a **local directory** (DistilBERT as the authors used), under the ``[hf]``
  extra. Hub names are refused unless ``allow_hub`` is set: a typo in a path must not silently download.
- ``clip``: CLIP's text tower from a local OpenAI / open_clip weights file (:mod:`locvtp.model.clip_text`), with
  CLIP's BPE tokenizer (``data.tokenizer``, :mod:`locvtp.data.clip_tokenizer`).

Word features are the last hidden states; the sentence feature is the CLS state or the masked mean
(``pooling``). Masks are boolean internally and cast at the HF boundary.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from .clip_text import build_clip_text
from .common import Freezable, TextEncoderError


POOLINGS = ("cls", "mean")


def pool_sentence(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """[B, L, D], bool [B, L] -> [B, D]. ``mean`` averages valid tokens only; an all-padding row gives zeros."""
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "mean":
        m = attention_mask.to(hidden.dtype).unsqueeze(-1)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
    raise TextEncoderError(f"model.text.pooling must be one of {POOLINGS}, got {pooling!r}")


def _check_ids(input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor]) -> torch.Tensor:
    if input_ids.dim() != 2:
        raise TextEncoderError(f"text encoder expects input_ids [B, L], got shape {tuple(input_ids.shape)}")
    if attention_mask is None:
        return input_ids != 0
    if attention_mask.shape != input_ids.shape:
        raise TextEncoderError(
            f"attention_mask shape {tuple(attention_mask.shape)} != input_ids shape {tuple(input_ids.shape)}"
        )
    return attention_mask.bool()


class TransformerTextEncoder(Freezable):
    """Token + learned position embeddings → pre-LN TransformerEncoder (key padding mask) → LayerNorm."""

    pad_token_id = 0

    def __init__(self, vocab_size: int, width: int = 128, layers: int = 2, heads: int = 4, max_len: int = 64,
                 pooling: str = "cls", dropout: float = 0.1):
        super().__init__()
        if vocab_size < 2:
            raise TextEncoderError(f"model.text.vocab_size must be >= 2, got {vocab_size}")
        if width % heads != 0:
            raise TextEncoderError(f"model.text.width={width} is not divisible by model.text.heads={heads}")
        if pooling not in POOLINGS:
            raise TextEncoderError(f"model.text.pooling must be one of {POOLINGS}, got {pooling!r}")
        self.vocab_size = vocab_size
        self.max_len = max_len
        self.pooling = pooling
        self.out_dim = width
        self.tok = nn.Embedding(vocab_size, width, padding_idx=self.pad_token_id)
        self.pos = nn.Embedding(max_len, width)
        nn.init.normal_(self.tok.weight, std=0.02)
        nn.init.normal_(self.pos.weight, std=0.02)
        with torch.no_grad():
            self.tok.weight[self.pad_token_id].zero_()
        self.drop = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(
            width, heads, dim_feedforward=4 * width, dropout=dropout, activation="gelu", batch_first=True,
            norm_first=True,
        )
        # enable_nested_tensor=False: padded positions stay dense (defined, finite) in eval as in training.
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        mask = _check_ids(input_ids, attention_mask)
        b, length = input_ids.shape
        if length > self.max_len:
            raise TextEncoderError(
                f"sequence length {length} exceeds model.text.max_len={self.max_len}; "
                f"lower data.max_words or raise model.text.max_len"
            )
        if input_ids.numel() and (int(input_ids.max()) >= self.vocab_size or int(input_ids.min()) < 0):
            raise TextEncoderError(
                f"token id {int(input_ids.max())} outside the vocabulary (model.text.vocab_size={self.vocab_size}); "
                "the tokenizer and model.text.vocab_size disagree"
            )
        pos = torch.arange(length, device=input_ids.device)
        # A row without any valid token would make every attention row empty (NaN): give it no padding instead.
        pad = ~mask & mask.any(dim=1, keepdim=True)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            x = self.drop(self.tok(input_ids) + self.pos(pos).unsqueeze(0))
            h = self.norm(self.encoder(x, src_key_padding_mask=pad))
        return h, pool_sentence(h, mask, self.pooling)


class HFTextEncoder(Freezable):
    """A BERT-family ``transformers`` model from a local directory, frozen or trainable.

    ``from_config_only=True`` builds the architecture from the directory's ``config.json`` with random weights
    (checkpoint loading: the weights come from ``model.safetensors`` right after).
    """

    def __init__(self, path: str, pooling: str = "cls", freeze: bool = False, allow_hub: bool = False,
                 from_config_only: bool = False):
        super().__init__()
        try:
            import transformers
        except ImportError as exc:
            raise TextEncoderError(
                "model.text.name='hf' needs the optional dependency 'transformers': pip install 'locvtp[hf]'"
            ) from exc
        if pooling not in POOLINGS:
            raise TextEncoderError(f"model.text.pooling must be one of {POOLINGS}, got {pooling!r}")
        if not path:
            raise TextEncoderError("model.text.name='hf' requires model.text.path (a local model directory)")
        local = Path(path).is_dir()
        if not local and not allow_hub:
            raise TextEncoderError(
                f"model.text.path={path!r} is not a local directory. Download the model once (e.g. "
                f"`huggingface-cli download distilbert-base-uncased --local-dir DIR`) and point to DIR, or set "
                f"model.text.allow_hub=true to let transformers fetch a hub name"
            )
        try:
            if from_config_only:
                config = transformers.AutoConfig.from_pretrained(path, local_files_only=local or not allow_hub)
                self.model = transformers.AutoModel.from_config(config)
            else:
                self.model = transformers.AutoModel.from_pretrained(path, local_files_only=local or not allow_hub)
        except (OSError, ValueError) as exc:  # no config.json / weights, unknown model_type
            raise TextEncoderError(f"cannot load a transformers model from {path!r}: {exc}") from exc
        cfg = self.model.config
        self.out_dim = int(getattr(cfg, "hidden_size", None) or getattr(cfg, "dim"))
        self.max_len = int(getattr(cfg, "max_position_embeddings", 512))
        self.pooling = pooling
        if freeze:
            self.freeze()

    def hf_config(self) -> Any:
        return self.model.config

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        mask = _check_ids(input_ids, attention_mask)
        if input_ids.shape[1] > self.max_len:
            raise TextEncoderError(
                f"sequence length {input_ids.shape[1]} exceeds the HF model's max_position_embeddings={self.max_len}"
            )
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            out = self.model(input_ids=input_ids, attention_mask=mask.long())
        h = out.last_hidden_state
        return h, pool_sentence(h, mask, self.pooling)


TEXT_ENCODERS = ("transformer", "hf", "clip")


def build_text_encoder(tcfg: Any, load_pretrained: bool = True) -> nn.Module:
    """Build from ``cfg.model.text``. ``load_pretrained=False`` builds the HF architecture from its config only, and
    the CLIP tower from the shape the config recorded when its weights were read (which fills ``cfg.model.text``)."""
    name = tcfg.name
    if name == "transformer":
        enc: nn.Module = TransformerTextEncoder(
            int(tcfg.vocab_size), int(tcfg.width), int(tcfg.layers), int(tcfg.heads), int(tcfg.max_len),
            str(tcfg.pooling), float(tcfg.dropout),
        )
        if tcfg.freeze:
            enc.freeze()
        return enc
    if name == "hf":
        return HFTextEncoder(
            tcfg.path, str(tcfg.pooling), bool(tcfg.freeze), bool(tcfg.allow_hub), from_config_only=not load_pretrained
        )
    if name == "clip":
        return build_clip_text(tcfg, load_pretrained)
    raise TextEncoderError(f"model.text.name must be one of {TEXT_ENCODERS}, got {name!r}")


__all__ = [
    "HFTextEncoder", "TEXT_ENCODERS", "TextEncoderError", "TransformerTextEncoder", "build_text_encoder",
    "pool_sentence",
]
