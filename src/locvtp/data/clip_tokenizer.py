"""CLIP's tokenizer: byte-level BPE with end-of-word markers, built from a local merges file.

The published description (Radford et al. 2021, §2.4: "a lower-cased byte pair encoding (BPE) representation of the
text with a 49,152 vocab size … bracketed with [SOS] and [EOS] tokens"; Sennrich et al. 2016 for BPE; the layout of
openai/CLIP ``clip/simple_tokenizer.py`` and its ``bpe_simple_vocab_16e6.txt.gz``):

* text: whitespace runs become one space, ends stripped, lower-cased (and NFC-normalised);
* pre-tokens: the contractions ``'s 't 're 've 'm 'll 'd``, runs of letters, single digits, runs of other
  non-space characters; spaces separate and are dropped;
* each pre-token's UTF-8 bytes are written as printable characters (the byte-level alphabet below), its last
  character carries ``</w>``, and merges apply lowest rank first until none applies;
* ids: the 256 byte characters, the same with ``</w>``, the merged tokens in merge order, then ``<|startoftext|>``
  and ``<|endoftext|>``; a sentence is ``<|startoftext|> … <|endoftext|>``, at most 77 tokens for CLIP's towers.

The file holds a version line then one merge per line (``a b``); CLIP's vocabulary uses its first 48,894 merges
(49,152 − 256 − 2: 49,408 ids). The result is a :class:`~locvtp.data.tokenizer.Tokenizer` whose backend is a
``tokenizers`` pipeline written from this description (:meth:`~locvtp.data.tokenizer.Tokenizer.from_clip_merges`,
or ``Tokenizer.load`` of the file), so batches, truncation (the end token is kept), the corpus
words mask and the checkpoint's ``tokenizer.json`` work as for every other tokenizer. An HF CLIP ``tokenizer.json``
(e.g. of ``openai/clip-vit-base-patch32``) loads directly and gives the same ids.

Not done, as in Hugging Face's fast CLIP tokenizer: ``ftfy.fix_text`` (repairs mis-decoded text; not a dependency)
and HTML unescaping (``&amp;`` stays three tokens).
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Union

from tokenizers import Regex
from tokenizers import Tokenizer as _HFTokenizer
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors

from locvtp.errors import TokenizerError

PathLike = Union[str, os.PathLike]

SOT, EOT = "<|startoftext|>", "<|endoftext|>"
END_OF_WORD = "</w>"
CONTEXT_LENGTH = 77  # every published CLIP text tower's positional table
CLIP_MERGES = 49152 - 256 - 2  # merges of CLIP's vocabulary (openai/CLIP simple_tokenizer.py)
# The pre-token pattern of the description above (\p{L} letters, \p{N} digits).
PRETOKEN_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+"""
MERGES_HELP = ("CLIP's BPE merges bpe_simple_vocab_16e6.txt.gz from "
               "https://github.com/openai/CLIP/raw/main/clip/bpe_simple_vocab_16e6.txt.gz (openai/CLIP clip/), or the "
               "tokenizer.json of an HF CLIP model (e.g. https://huggingface.co/openai/clip-vit-base-patch32)")

__all__ = ["CLIP_MERGES", "CONTEXT_LENGTH", "END_OF_WORD", "EOT", "MERGES_HELP", "PRETOKEN_PATTERN", "SOT",
           "byte_chars", "clip_backend", "clip_vocabulary", "is_merges_file", "read_merges"]


def byte_chars() -> dict[int, str]:
    """byte -> the printable character standing for it, in vocabulary order: the bytes that are printable Latin-1
    characters (``!``..``~``, ``¡``..``¬``, ``®``..``ÿ``) stand for themselves and come first; the other 68
    (controls, space, no-break space, soft hyphen) stand for ``chr(256 + n)``, n counting them in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = sorted(set(range(256)) - set(printable))
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + n) for n, b in enumerate(others)}}


def is_merges_file(path: PathLike) -> bool:
    """A BPE merges file by its name (``*.txt.gz``, ``merges.txt``, ``bpe*.txt``): what :meth:`Tokenizer.load`
    reads as CLIP's tokenizer."""
    name = Path(path).name.lower()
    return name.endswith(".gz") or name == "merges.txt" or (name.startswith("bpe") and name.endswith(".txt"))


def read_merges(path: PathLike, limit: int = CLIP_MERGES) -> list[tuple[str, str]]:
    """The first ``limit`` merges of a merges file (gzip or plain UTF-8; a ``#version`` first line skipped)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(2, f"no such BPE merges file; download {MERGES_HELP}", str(p))
    try:
        raw = gzip.decompress(p.read_bytes()) if p.name.lower().endswith(".gz") else p.read_bytes()
        lines = raw.decode("utf-8").split("\n")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise TokenizerError(f"{p}: not a (gzipped) UTF-8 BPE merges file ({exc}); download {MERGES_HELP}") from None
    merges: list[tuple[str, str]] = []
    for n, line in enumerate(lines, 1):
        if (n == 1 and line.startswith("#version")) or not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise TokenizerError(f"{p}: line {n} is not a merge of two tokens ('a b'): {line[:60]!r}")
        merges.append((parts[0], parts[1]))
        if len(merges) == limit:
            break
    if not merges:
        raise TokenizerError(f"{p}: no merges; download {MERGES_HELP}")
    return merges


def clip_vocabulary(merges: list[tuple[str, str]]) -> dict[str, int]:
    """token -> id, in CLIP's order (bytes, bytes + ``</w>``, merged tokens, ``<|startoftext|>``, ``<|endoftext|>``).
    A merge whose result is already a token (it cannot be, in CLIP's file) would shift every later id: refused."""
    alphabet = list(byte_chars().values())
    tokens = alphabet + [c + END_OF_WORD for c in alphabet] + [a + b for a, b in merges] + [SOT, EOT]
    vocab = {t: i for i, t in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise TokenizerError("the merges repeat a token: not a CLIP BPE merges file")
    return vocab


def _backend(vocab: dict[str, int], merges: list[tuple[str, str]]) -> _HFTokenizer:
    """The ``tokenizers`` pipeline of the module docstring's steps."""
    tok = _HFTokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=EOT, end_of_word_suffix=END_OF_WORD,
                                  continuing_subword_prefix="", fuse_unk=False))
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "),
                                           normalizers.Strip(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKEN_PATTERN), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.Sequence([decoders.ByteLevel(), decoders.Replace(END_OF_WORD, " "), decoders.Strip(" ", 0, 1)])
    tok.add_special_tokens([SOT, EOT])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{SOT} $A {EOT}", pair=f"{SOT} $A {EOT} $B:1 {EOT}:1",
        special_tokens=[(SOT, vocab[SOT]), (EOT, vocab[EOT])])
    return tok


def clip_backend(path: PathLike, limit: int = CLIP_MERGES) -> tuple[_HFTokenizer, int]:
    """(the ``tokenizers`` pipeline of the merges file ``path``'s first ``limit`` merges, the padding id: CLIP's
    ``<|endoftext|>``). :meth:`locvtp.data.tokenizer.Tokenizer.from_clip_merges` wraps it."""
    merges = read_merges(path, limit)
    vocab = clip_vocabulary(merges)
    return _backend(vocab, merges), vocab[EOT]
