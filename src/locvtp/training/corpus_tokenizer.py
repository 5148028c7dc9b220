"""The prepared corpus's own tokenizer: a WordPiece vocabulary trained once, on a bounded sample of the captions.

Why: without ``data.tokenizer`` every pre-training run used to train WordPiece over *all* captions on rank 0
while the other ranks waited: 19 s at 1 M narrations, 70 s at 4 M, ≈ 45 min at HowTo100M's 136 M, before every
fresh run. The vocabulary belongs to the corpus, not to the run: :func:`corpus_tokenizer` trains it once (by
``locvtp prepare``, or by the first run on a corpus prepared before this existed), stores it in the prepared
directory and every later run loads it (with it the words mask, cached under the tokenizer's own key).

The sample (:func:`sample_blocks`): a corpus of at most :data:`SAMPLE_CAPTIONS` narrations is used whole (the
vocabulary is then the one training on every caption gives); a larger one contributes :data:`SAMPLE_CAPTIONS`
captions in blocks of :data:`SAMPLE_BLOCK` consecutive narrations, evenly spaced over the whole file (integer
arithmetic only: the same narrations on every machine). Blocks, not single narrations at a stride: each block is
two small ``pread``\\ s, so reading the sample costs the same for 4 M or 136 M narrations, where a stride would
fault in every page of the text column; 15 625 blocks spread over the file still see every part of it (HowTo100M's
``caption.json`` is ordered by video id).

Why a million captions suffice for a WordPiece vocabulary of ``data.vocab_size`` (≤ 30 k, BERT's size): WordPiece
keeps pieces by frequency, and a narration has ≈ 10 words, so the sample holds ≈ 10 M words. In English text the
30 000th most frequent word has a frequency of ≈ 3 × 10⁻⁶ (Zipf), i.e. it occurs ≈ 30 times in the sample, and
the sub-word pieces merged before it are more frequent still; what a sample ranks differently from the whole
corpus are the pieces at the cut-off, which tokenize into their (kept) smaller pieces either way. The cost is
bounded too: ≈ 20 s once, in ``prepare``.

Layout inside ``captions-KEY/``: ``tokenizer-TKEY/tokenizer.json`` and ``tokenizer-TKEY/meta.json`` (the
provenance: corpus, narrations, sampled captions and rule, vocabulary size, sha256 of ``tokenizer.json``),
``TKEY`` = sha256 over (the corpus directory's key, its narration count, ``vocab_size``, the trainer's settings
and the sampling rule). Written to a temporary directory and renamed into place under an :class:`OutputLock`, so
two runs or ranks building it at once build it once.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from locvtp.files import OutputLock, atomic_write_json, fsync_dir, fsync_file, remove_stale_temporaries
from locvtp.tempnames import temp_path

SAMPLE_CAPTIONS = 1_000_000  # captions a corpus tokenizer is trained on, at most (a multiple of SAMPLE_BLOCK)
SAMPLE_BLOCK = 64  # consecutive narrations per block of the sample
TOKENIZER_VERSION = 1  # the trainer and the sampling rule: a change here is a new key
MIN_FREQUENCY = 1  # train_tokenizer's default: a merge needs one occurrence

__all__ = ["SAMPLE_BLOCK", "SAMPLE_CAPTIONS", "corpus_tokenizer", "corpus_tokenizer_dir", "sample_blocks",
           "sample_captions", "tokenizer_key", "tokenizer_provenance"]


def sample_blocks(n: int, cap: int | None = None, block: int | None = None) -> list[tuple[int, int]]:
    """The ``(lo, hi)`` narration ranges of the tokenizer sample of a corpus of ``n``: all of it when
    ``n <= cap``, else ``cap // block`` blocks of ``block`` narrations, block ``k`` starting at ``k * n // blocks``
    (evenly spaced, never overlapping). Depends on ``n`` alone, never on the machine."""
    cap = SAMPLE_CAPTIONS if cap is None else int(cap)
    block = SAMPLE_BLOCK if block is None else int(block)
    if n <= cap:
        return [(lo, min(n, lo + block)) for lo in range(0, n, block)]
    blocks = max(1, cap // block)
    return [(k * n // blocks, k * n // blocks + block) for k in range(blocks)]


def sample_captions(store: Any, cap: int | None = None, block: int | None = None) -> Iterator[str]:
    """The captions of :func:`sample_blocks`, read block by block with ``pread`` (no page of the text column
    outside the sample is touched, however large the corpus)."""
    d = Path(store.directory)
    with open(d / "text_off.bin", "rb") as off_fh, open(d / "text.bin", "rb") as text_fh:
        for lo, hi in sample_blocks(int(store.n), cap, block):
            off = np.frombuffer(os.pread(off_fh.fileno(), (hi - lo + 1) * 8, lo * 8), dtype=np.uint64)
            off = off.astype(np.int64)
            raw = os.pread(text_fh.fileno(), int(off[-1] - off[0]), int(off[0]))
            rel = off - off[0]
            for k in range(hi - lo):
                yield raw[rel[k]:rel[k + 1]].decode("utf-8", "surrogateescape")


def tokenizer_key(store: Any, vocab_size: int) -> str:
    """The key of a corpus tokenizer: the corpus (its directory's key and narration count), the vocabulary
    size, the trainer's settings and the sampling rule."""
    spec = (f"v{TOKENIZER_VERSION}|{Path(store.directory).name}|n={int(store.n)}|vocab={int(vocab_size)}|"
            f"min_frequency={MIN_FREQUENCY}|bert-wordpiece-lowercase|sample={SAMPLE_CAPTIONS}x{SAMPLE_BLOCK}")
    return hashlib.sha256(spec.encode()).hexdigest()[:16]


def corpus_tokenizer_dir(store: Any, vocab_size: int) -> Path:
    return Path(store.directory) / f"tokenizer-{tokenizer_key(store, vocab_size)}"


def tokenizer_provenance(directory: str | os.PathLike) -> dict:
    """The ``meta.json`` of a corpus tokenizer directory ({} if unreadable)."""
    try:
        return json.loads((Path(directory) / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def corpus_tokenizer(store: Any, vocab_size: int, progress: bool = False) -> Any:
    """The WordPiece tokenizer of ``data.vocab_size`` that belongs to the prepared corpus ``store``: loaded when
    present, else trained on :func:`sample_captions` and stored (once, under a lock: a concurrent caller waits
    for it and loads it)."""
    from locvtp.data.tokenizer import Tokenizer

    final = corpus_tokenizer_dir(store, vocab_size)
    if (final / "meta.json").is_file():
        return Tokenizer.load(final / "tokenizer.json")
    with OutputLock(final, "prepare", wait=True):
        if not (final / "meta.json").is_file():  # else another process built it while we waited
            remove_stale_temporaries(final)
            _build(store, int(vocab_size), final, progress)
    return Tokenizer.load(final / "tokenizer.json")


def _build(store: Any, vocab_size: int, final: Path, progress: bool) -> None:
    from locvtp import __version__
    from locvtp.data.tokenizer import train_tokenizer

    counted = [0]

    def texts() -> Iterator[str]:
        for t in sample_captions(store):
            counted[0] += 1
            yield t

    tok = train_tokenizer(texts(), vocab_size=vocab_size, min_frequency=MIN_FREQUENCY, progress=progress)
    tmp = temp_path(final)
    tmp.mkdir()
    try:
        tok_file = tok.save(tmp)
        meta = {"corpus": Path(store.directory).name, "caption_file": store.meta.get("caption_file"),
                "narrations": int(store.n), "sampled_captions": counted[0], "vocab_size": vocab_size,
                "tokenizer_vocab_size": int(tok.vocab_size), "min_frequency": MIN_FREQUENCY,
                "sample_rule": f"all narrations up to {SAMPLE_CAPTIONS}, else {SAMPLE_CAPTIONS // SAMPLE_BLOCK} "
                               f"evenly spaced blocks of {SAMPLE_BLOCK} consecutive narrations",
                "key": final.name.split("-", 1)[1], "sha256": hashlib.sha256(tok_file.read_bytes()).hexdigest(),
                "version": TOKENIZER_VERSION, "locvtp_version": __version__}
        atomic_write_json(tmp / "meta.json", meta)  # last: it marks the directory complete
        fsync_file(tok_file)
        fsync_dir(tmp)
        try:
            os.replace(tmp, final)
        except OSError:
            if not (final / "meta.json").is_file():
                raise
            shutil.rmtree(tmp)  # built meanwhile where the lock does not reach (another machine): the same file
        fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
