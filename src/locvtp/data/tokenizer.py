"""Text tokenization with HF ``tokenizers``: train a BERT-style WordPiece vocabulary or load a local one.

Why a thin wrapper instead of ``transformers``: the package must work offline without ``transformers``,
the batch output must follow our data contract (boolean masks, a ``word_mask`` without special tokens),
and a checkpoint must carry one standard ``tokenizer.json`` that any HF user can open.

Loading never touches the network: ``Tokenizer.load`` accepts a ``tokenizer.json`` file, a directory
containing one, or a BERT/DistilBERT-style directory with only ``vocab.txt`` (+ optional
``tokenizer_config.json`` / ``special_tokens_map.json``).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

from tokenizers import Tokenizer as _HFTokenizer
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors

from locvtp.data.clip_tokenizer import clip_backend, is_merges_file
from locvtp.errors import TokenizerError

PathLike = Union[str, os.PathLike]


PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = [PAD, UNK, CLS, SEP, MASK]  # ids 0..4 in a trained vocabulary
TOKENIZER_FILE = "tokenizer.json"

__all__ = ["Tokenizer", "TokenizerError", "train_tokenizer", "SPECIAL_TOKENS", "TOKENIZER_FILE"]


class Tokenizer:
    """A ``tokenizers.Tokenizer`` plus the batch encoding of our data contract.

    ``tok(texts, max_length)`` returns ``input_ids`` (Long), ``attention_mask`` (Bool) and ``word_mask``
    (Bool: real word pieces only, no special tokens, no padding), each ``[B, L]`` padded to the longest
    sentence in the batch (``L <= max_length``). Truncation keeps the closing ``[SEP]``.
    """

    def __init__(self, backend: _HFTokenizer, source: Optional[PathLike] = None, pad_token_id: Optional[int] = None):
        # Keep the saved state canonical: truncation/padding live on a private working copy.
        self.source = None if source is None else os.fspath(source)
        self.pad_token_id = _find_pad_id(backend, pad_token_id, self.source)  # before padding is switched off
        self._backend = _HFTokenizer.from_str(backend.to_str())
        self._backend.no_truncation()
        self._backend.no_padding()
        self._work: Optional[_HFTokenizer] = None
        self._work_max: Optional[int] = None
        pp = self._backend.post_processor
        self._num_special = pp.num_special_tokens_to_add(False) if pp is not None else 0

    # ---------------------------------------------------------------- properties
    @property
    def backend(self) -> _HFTokenizer:
        """The underlying ``tokenizers.Tokenizer`` (without truncation or padding enabled)."""
        return self._backend

    @property
    def vocab_size(self) -> int:
        """Number of ids (including added/special tokens): the embedding table size."""
        return self._backend.get_vocab_size(with_added_tokens=True)

    def token_to_id(self, token: str) -> Optional[int]:
        return self._backend.token_to_id(token)

    def id_to_token(self, idx: int) -> Optional[str]:
        return self._backend.id_to_token(int(idx))

    def word_token_id(self, word: str) -> Optional[int]:
        """The id of ``word`` when it is one token of its own (WordPiece: ``the``; CLIP's BPE: ``the</w>``, not the
        ``the`` that begins ``theatre``), else None (split into pieces, or unknown)."""
        enc = _encode(self._backend, [word])[0]
        ids = [i for i, special in zip(enc.ids, enc.special_tokens_mask) if not special]
        unk = getattr(self._backend.model, "unk_token", None)
        if len(ids) != 1 or (unk is not None and ids[0] == self._backend.token_to_id(unk)):
            return None
        return int(ids[0])

    # ---------------------------------------------------------------- encoding
    def _working(self, max_length: int) -> _HFTokenizer:
        if self._work is None:
            self._work = _HFTokenizer.from_str(self._backend.to_str())
        if self._work_max != max_length:
            # The post-processor's special tokens are counted inside max_length, so [CLS]/[SEP] survive.
            self._work.enable_truncation(max_length=max_length, strategy="longest_first", direction="right")
            self._work_max = max_length
        return self._work

    def _check_max_length(self, max_length) -> int:
        if isinstance(max_length, bool) or not isinstance(max_length, int):
            raise TokenizerError(f"max_length must be an int, got {type(max_length).__name__}")
        if max_length < self._num_special + 1:
            raise TokenizerError(f"max_length={max_length} leaves no room for words "
                             f"({self._num_special} special tokens are added)")
        return max_length

    def encode_batch(self, texts: Union[str, Sequence[str]], max_length: int):
        """``tokenizers.Encoding`` objects for validated ``texts`` (truncated to ``max_length``)."""
        texts = _validate_texts(texts)
        max_length = self._check_max_length(max_length)
        return _encode(self._working(max_length), texts)

    def __call__(self, texts: Union[str, Sequence[str]], max_length: int) -> dict[str, "torch.Tensor"]:
        import torch  # lazily: training / loading a tokenizer does not need torch

        encs = self.encode_batch(texts, max_length)
        for i, enc in enumerate(encs):
            if sum(1 for s in enc.special_tokens_mask if not s) == 0:
                raise TokenizerError(f"text {i} produced no word tokens: {texts if isinstance(texts, str) else texts[i]!r}")
        B = len(encs)
        L = max(len(e.ids) for e in encs)
        ids = torch.full((B, L), self.pad_token_id, dtype=torch.long)
        attn = torch.zeros((B, L), dtype=torch.bool)
        word = torch.zeros((B, L), dtype=torch.bool)
        for i, e in enumerate(encs):  # ragged -> padded; tokenization itself ran in Rust
            n = len(e.ids)
            ids[i, :n] = torch.tensor(e.ids, dtype=torch.long)
            attn[i, :n] = True
            word[i, :n] = torch.tensor(e.special_tokens_mask, dtype=torch.long) == 0
        return {"input_ids": ids, "attention_mask": attn, "word_mask": word}

    def tokens(self, text: str, max_length: Optional[int] = None) -> list[str]:
        """Word-piece strings aligned with the positions of ``input_ids`` (special tokens included)."""
        if max_length is None:
            return list(_encode(self._backend, _validate_texts([text]))[0].tokens)
        return list(self.encode_batch([text], max_length)[0].tokens)

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        return self._backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    # ---------------------------------------------------------------- persistence
    def to_str(self) -> str:
        return self._backend.to_str(pretty=True)

    def save(self, directory: PathLike) -> Path:
        """Write ``<directory>/tokenizer.json`` atomically (:func:`locvtp.files.atomic_write_text`); returns its path."""
        from locvtp.files import atomic_write_text

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        target = d / TOKENIZER_FILE
        atomic_write_text(target, self.to_str())
        return target

    @classmethod
    def load(cls, path: PathLike) -> "Tokenizer":
        """Load a ``tokenizer.json``, a directory containing one, a ``vocab.txt``-only BERT directory, or CLIP's BPE
        merges file (``bpe_simple_vocab_16e6.txt.gz``: :mod:`locvtp.data.clip_tokenizer`).

        Local files only (never the network). Raises ``FileNotFoundError`` / ``ValueError`` naming ``path``.
        """
        p = Path(path)
        if is_merges_file(p) and not p.is_dir():  # CLIP's bpe_simple_vocab_16e6.txt.gz (a missing one: where from)
            return cls.from_clip_merges(p)
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such tokenizer file or directory")
        if p.is_file():
            if p.name == "vocab.txt":
                return _from_vocab_dir(p.parent, p)
            return _from_json(p)
        if (p / TOKENIZER_FILE).is_file():
            return _from_json(p / TOKENIZER_FILE)
        if (p / "vocab.txt").is_file():
            return _from_vocab_dir(p, p / "vocab.txt")
        present = sorted(x.name for x in p.iterdir())[:10]
        raise TokenizerError(f"{p}: not a tokenizer directory: expected {TOKENIZER_FILE} or vocab.txt "
                         f"(found: {', '.join(present) or 'nothing'})")

    @classmethod
    def from_clip_merges(cls, path: PathLike, limit: Optional[int] = None) -> "Tokenizer":
        """CLIP's tokenizer from its BPE merges file (:mod:`locvtp.data.clip_tokenizer`; ``limit``: merges read,
        default CLIP's 48,894), padded with ``<|endoftext|>`` (the attention mask excludes it), as Hugging Face
        pads CLIP."""
        backend, pad = clip_backend(path) if limit is None else clip_backend(path, limit)
        return cls(backend, source=path, pad_token_id=pad)

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, pad_token_id={self.pad_token_id}, source={self.source!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Tokenizer) and self.to_str() == other.to_str()

    def __hash__(self) -> int:  # consistent with __eq__ (usable as a dict key / in caches)
        return hash(self.to_str())

    def __getstate__(self):  # picklable for DataLoader workers (tokenizers objects are, but keep it small)
        return {"json": self._backend.to_str(), "source": self.source, "pad": self.pad_token_id}

    def __setstate__(self, state):
        self.__init__(_HFTokenizer.from_str(state["json"]), state["source"], state["pad"])


# ---------------------------------------------------------------------------------------------- helpers


def _encode(backend: _HFTokenizer, texts: list[str]):
    try:
        return backend.encode_batch(texts)
    except Exception as e:  # e.g. lone surrogates from badly decoded bytes
        for i, t in enumerate(texts):
            try:
                t.encode("utf-8")
            except UnicodeEncodeError as ue:
                raise TokenizerError(f"text {i} is not valid Unicode (bad bytes decoded?): {ue}") from e
        raise TokenizerError(f"tokenization failed: {e}") from e


def _validate_texts(texts) -> list[str]:
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, (list, tuple)):
        raise TokenizerError(f"texts must be a str or a list of str, got {type(texts).__name__}")
    if len(texts) == 0:
        raise TokenizerError("texts is empty")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TokenizerError(f"text {i} is not a str but {type(t).__name__}: {t!r:.80}")
        if not t.strip():
            raise TokenizerError(f"text {i} is empty or whitespace only")
    return list(texts)


def _find_pad_id(backend: _HFTokenizer, explicit: Optional[int], source) -> int:
    if explicit is not None:
        return int(explicit)
    if backend.padding is not None and backend.padding.get("pad_id") is not None:
        return int(backend.padding["pad_id"])
    for tok in (PAD, "<pad>", "<PAD>", "<|endoftext|>"):  # the last: CLIP's (Hugging Face pads CLIP with it)
        i = backend.token_to_id(tok)
        if i is not None:
            return int(i)
    raise TokenizerError(f"{source or 'tokenizer'}: no padding token ([PAD] or <pad>) in the vocabulary")


def _from_json(path: Path) -> Tokenizer:
    try:
        backend = _HFTokenizer.from_file(os.fspath(path))
    except Exception as e:  # tokenizers raises a plain Exception on bad JSON
        raise TokenizerError(f"{path}: not a valid tokenizers JSON file: {e}") from e
    return Tokenizer(backend, source=path)


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TokenizerError(f"{path}: invalid JSON: {e}") from e
    return data if isinstance(data, dict) else {}


def _special(cfg: dict, key: str, default: str) -> str:
    v = cfg.get(key, default)
    if isinstance(v, dict):  # AddedToken serialized as {"content": ...}
        v = v.get("content", default)
    return v if isinstance(v, str) else default


def _from_vocab_dir(directory: Path, vocab_file: Path) -> Tokenizer:
    """Rebuild a BERT WordPiece tokenizer from ``vocab.txt`` (as ``BertTokenizerFast`` would)."""
    try:
        lines = vocab_file.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise TokenizerError(f"{vocab_file}: not UTF-8: {e}") from e
    vocab: dict[str, int] = {}
    for i, line in enumerate(lines):
        tok = line.rstrip("\r\n")
        if tok and tok not in vocab:
            vocab[tok] = i
    if not vocab:
        raise TokenizerError(f"{vocab_file}: empty vocabulary")
    cfg = {**_read_json(directory / "special_tokens_map.json"), **_read_json(directory / "tokenizer_config.json")}
    names = {k: _special(cfg, f"{k}_token", d) for k, d in
             (("pad", PAD), ("unk", UNK), ("cls", CLS), ("sep", SEP), ("mask", MASK))}
    for k in ("unk", "cls", "sep", "pad"):
        if names[k] not in vocab:
            raise TokenizerError(f"{vocab_file}: special token {names[k]!r} ({k}) is not in the vocabulary")
    lower = bool(cfg.get("do_lower_case", True))
    strip_accents = cfg.get("strip_accents", None)
    backend = _bert_backend(vocab, lowercase=lower, strip_accents=strip_accents, unk=names["unk"],
                            chinese_chars=bool(cfg.get("tokenize_chinese_chars", True)))
    backend.add_special_tokens([names[k] for k in ("pad", "unk", "cls", "sep", "mask") if names[k] in vocab])
    cls_t, sep_t = names["cls"], names["sep"]
    backend.post_processor = processors.TemplateProcessing(
        single=f"{cls_t} $A {sep_t}", pair=f"{cls_t} $A {sep_t} $B:1 {sep_t}:1",
        special_tokens=[(cls_t, vocab[cls_t]), (sep_t, vocab[sep_t])])
    return Tokenizer(backend, source=directory, pad_token_id=vocab[names["pad"]])


def _bert_backend(vocab: dict[str, int], lowercase: bool = True, strip_accents=None,
                  chinese_chars: bool = True, unk: str = UNK) -> _HFTokenizer:
    backend = _HFTokenizer(models.WordPiece(vocab=vocab, unk_token=unk, continuing_subword_prefix="##",
                                            max_input_chars_per_word=_MAX_WORD_CHARS))
    backend.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=chinese_chars,
                                                    strip_accents=strip_accents, lowercase=lowercase)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##")
    return backend


_MAX_WORD_CHARS = 100  # as BERT: longer "words" become [UNK]


def _learn_wordpiece_vocab(word_counts: dict[str, int], vocab_size: int, min_frequency: int,
                           progress: Optional[bool] = False) -> list[str]:
    """Deterministic WordPiece vocabulary by greedy pair merging (what HF's WordPieceTrainer does).

    Why not ``tokenizers.trainers.WordPieceTrainer``: it breaks ties between equally frequent pairs in
    hash-map order, which changes from process to process, so the same corpus gave different vocabularies
    (and checkpoints that cannot be reproduced). Here ties go to the lexicographically smallest pair.
    Returns the tokens in id order: the full character alphabet (sorted), then merges in merge order.
    """
    import heapq

    words = sorted(word_counts)
    freqs = [word_counts[w] for w in words]
    symbols = [[w[0]] + ["##" + c for c in w[1:]] for w in words]
    alphabet = sorted({s for syms in symbols for s in syms})
    tokens = list(alphabet)
    seen = set(tokens)
    pair_count: dict[tuple[str, str], int] = {}
    where: dict[tuple[str, str], set[int]] = {}
    for i, syms in enumerate(symbols):
        for pair in zip(syms, syms[1:]):
            pair_count[pair] = pair_count.get(pair, 0) + freqs[i]
            where.setdefault(pair, set()).add(i)
    heap = [(-c, a, b) for (a, b), c in pair_count.items()]
    heapq.heapify(heap)
    threshold = max(1, min_frequency)
    from locvtp.runtime import progress as tqdm

    bar = tqdm(total=max(0, vocab_size - len(tokens)), desc="tokenizer merges", unit="tok",
               disable=None if progress is None else not progress, leave=False)
    while heap and len(tokens) < vocab_size:
        negc, a, b = heapq.heappop(heap)
        if pair_count.get((a, b), 0) != -negc:
            continue  # stale entry: the count changed and a fresh entry was pushed
        if -negc < threshold:
            break
        merged = a + (b[2:] if b.startswith("##") else b)
        if merged not in seen:
            seen.add(merged)
            tokens.append(merged)
            bar.update(1)
        changed: set[tuple[str, str]] = set()
        for i in sorted(where.pop((a, b), ())):
            syms, f = symbols[i], freqs[i]
            for pair in zip(syms, syms[1:]):
                pair_count[pair] -= f
                changed.add(pair)
            out, j = [], 0
            while j < len(syms):
                if j + 1 < len(syms) and syms[j] == a and syms[j + 1] == b:
                    out.append(merged)
                    j += 2
                else:
                    out.append(syms[j])
                    j += 1
            symbols[i] = out
            for pair in zip(out, out[1:]):
                pair_count[pair] = pair_count.get(pair, 0) + f
                where.setdefault(pair, set()).add(i)
                changed.add(pair)
        pair_count.pop((a, b), None)
        for pair in changed:
            c = pair_count.get(pair, 0)
            if c > 0:
                heapq.heappush(heap, (-c, pair[0], pair[1]))
            else:
                pair_count.pop(pair, None)
                where.pop(pair, None)
    bar.close()
    return tokens


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2000, min_frequency: int = 1,
                    progress: Optional[bool] = None) -> Tokenizer:
    """Train a BERT-style (lower-cased) WordPiece tokenizer on ``texts``; deterministic for the same corpus.

    Special tokens get ids ``[PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4``; a single sentence encodes as
    ``[CLS] ... [SEP]``. ``vocab_size`` caps the merges; the character alphabet of the corpus is always
    kept (as HF's trainer does), so a tiny ``vocab_size`` may be exceeded. Merges need at least
    ``min_frequency`` occurrences. Non-str entries raise ``ValueError`` naming their index; empty ones are
    ignored. Word order and tie-breaking do not depend on hashing, so results match across processes.
    ``progress``: tqdm bars (None: only on a terminal).
    """
    if isinstance(texts, str):
        raise TokenizerError("texts must be an iterable of sentences, not a single str")
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < len(SPECIAL_TOKENS) + 1:
        raise TokenizerError(f"vocab_size must be an int > {len(SPECIAL_TOKENS)}, got {vocab_size!r}")
    if isinstance(min_frequency, bool) or not isinstance(min_frequency, int) or min_frequency < 0:
        raise TokenizerError(f"min_frequency must be an int >= 0, got {min_frequency!r}")
    shell = _bert_backend({UNK: 0})
    norm, pre = shell.normalizer, shell.pre_tokenizer
    counts: dict[str, int] = {}
    from locvtp.runtime import progress as tqdm

    for i, t in enumerate(tqdm(texts, desc="tokenizer corpus", unit="text", leave=False,
                               disable=None if progress is None else not progress)):
        if not isinstance(t, str):
            raise TokenizerError(f"text {i} is not a str but {type(t).__name__}: {t!r:.80}")
        if not t.strip():
            continue
        try:
            words = pre.pre_tokenize_str(norm.normalize_str(t))
        except Exception as e:  # lone surrogates etc.
            raise TokenizerError(f"text {i} cannot be tokenized (invalid Unicode?): {e}") from e
        for w, _ in words:
            if len(w) <= _MAX_WORD_CHARS:
                counts[w] = counts.get(w, 0) + 1
    if not counts:
        raise TokenizerError("no non-empty text to train the tokenizer on")
    learned = _learn_wordpiece_vocab(counts, vocab_size - len(SPECIAL_TOKENS), min_frequency, progress)
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for tok in learned:
        if tok not in vocab:
            vocab[tok] = len(vocab)
    backend = _bert_backend(vocab)
    backend.add_special_tokens(SPECIAL_TOKENS)
    backend.post_processor = processors.TemplateProcessing(
        single=f"{CLS} $A {SEP}", pair=f"{CLS} $A {SEP} $B:1 {SEP}:1",
        special_tokens=[(CLS, vocab[CLS]), (SEP, vocab[SEP])])
    return Tokenizer(backend, pad_token_id=vocab[PAD])
