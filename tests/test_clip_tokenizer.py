"""CLIP's byte-level BPE tokenizer from a local merges file (issue 25 item 2), without downloads.

Checked three ways: hand-worked cases on a merges file written here; a plain-Python reference written from the
published description (byte alphabet, pre-token pattern, lowest-rank-first merging) on generated text; and Hugging
Face's own CLIP tokenizer (``transformers.CLIPTokenizer``) built from the same vocabulary and merges, whose
``tokenizer.json`` our loader also reads.
"""
from __future__ import annotations

import gzip
import json
import random

import pytest
import regex
import torch

MERGES = [  # rank order; each result worked by hand below
    ("t", "h"), ("th", "e</w>"), ("c", "a"), ("a", "t</w>"), ("s", "at</w>"), ("ca", "t</w>"), ("th", "e"),
    ("i", "n"), ("in", "g</w>"), ("o", "n</w>"), ("'", "s</w>"),
]


def _write_merges(path, merges=MERGES, gz=True):
    text = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)
    path.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
    return path


@pytest.fixture()
def tok(tmp_path):
    from locvtp.data.tokenizer import Tokenizer

    return Tokenizer.load(_write_merges(tmp_path / "bpe_small.txt.gz"))


def test_byte_alphabet_by_hand():
    from locvtp.data.clip_tokenizer import byte_chars

    chars = byte_chars()
    assert sorted(chars) == list(range(256)) and len(set(chars.values())) == 256
    assert chars[ord("a")] == "a" and chars[ord("~")] == "~" and chars[0xE9] == "é"
    assert chars[0] == chr(256) and chars[ord(" ")] == chr(256 + 32) == "Ġ"  # bytes 0..32 come first of the rest
    assert chars[0x7F] == chr(256 + 33) and chars[0xAD] == chr(256 + 67)  # DEL; the soft hyphen is the last
    assert list(chars.values())[:3] == ["!", '"', "#"] and list(chars.values())[188] == chr(256)


def test_hand_worked_cases(tok):
    # ids: 0..255 bytes, 256..511 bytes + </w>, 512.. merges in order, then <|startoftext|>, <|endoftext|>
    assert tok.vocab_size == 256 * 2 + len(MERGES) + 2
    sot, eot = tok.token_to_id("<|startoftext|>"), tok.token_to_id("<|endoftext|>")
    assert (sot, eot) == (523, 524) and tok.pad_token_id == eot
    assert tok.token_to_id("!") == 0 and tok.token_to_id("!</w>") == 256 and tok.token_to_id("th") == 512
    # "The  cat's SAT-ing\n on 1 the theme 12":
    #   lower-case, whitespace runs -> one space; pre-tokens: the | cat | 's | sat | - | ing | on | 1 | the | theme | 1 | 2
    #   the: t h e</w> -> th e</w> (rank 0) -> the</w> (rank 1)
    #   cat: c a t</w> -> ca t</w> (rank 2; "a t</w>" is rank 3) -> cat</w> (rank 5)
    #   sat: s a t</w> -> s at</w> (rank 3) -> sat</w> (rank 4)
    #   theme: t h e m e</w> -> th e m e</w> -> the m e</w> (rank 6; "th e</w>" needs the last e)
    assert tok.tokens("The  cat's SAT-ing\n on 1 the theme 12") == [
        "<|startoftext|>", "the</w>", "cat</w>", "'s</w>", "sat</w>", "-</w>", "ing</w>", "on</w>", "1</w>",
        "the</w>", "the", "m", "e</w>", "1</w>", "2</w>", "<|endoftext|>"]
    # bytes beyond ASCII: é is two bytes (c3 a9) -> Ã © ; "c a" merges (rank 2); a tab only separates
    assert tok.tokens("café\tx") == ["<|startoftext|>", "ca", "f", "Ã", "©</w>", "x</w>", "<|endoftext|>"]
    assert tok.decode(tok("the cat sat", 16)["input_ids"][0].tolist()) == "the cat sat"


def test_batch_word_mask_and_truncation_keep_the_end_token(tok):
    sot, eot = tok.token_to_id("<|startoftext|>"), tok.token_to_id("<|endoftext|>")
    b = tok(["the cat", "sat on the theme"], max_length=5)
    ids, att, word = b["input_ids"], b["attention_mask"], b["word_mask"]
    assert ids.shape == (2, 5)
    assert ids[0].tolist() == [sot, tok.token_to_id("the</w>"), tok.token_to_id("cat</w>"), eot, eot]
    assert att[0].tolist() == [True, True, True, True, False]
    assert word[0].tolist() == [False, True, True, False, False]  # sub-word pieces are words; specials are not
    assert ids[1, -1] == eot and att[1].all() and word[1].tolist() == [False, True, True, True, False]


def test_stop_words_are_whole_word_tokens(tok):
    """objective.stopwords: 'the' is the</w>, not the 'the' that begins 'theme' (a piece of a content word)."""
    from locvtp.data.stopwords import content_words, stopword_ids

    stops = stopword_ids(tok)
    assert tok.token_to_id("the</w>") in stops and tok.token_to_id("on</w>") in stops
    assert tok.token_to_id("the") not in stops
    b = tok(["the theme on the cat"], max_length=12)
    content = content_words(b["input_ids"], b["word_mask"], stops)
    pieces = tok.tokens("the theme on the cat")
    assert [p for p, c in zip(pieces, content[0].tolist()) if c] == ["the", "m", "e</w>", "cat</w>"]


# ------------------------------------------------------------------------------------------------ references
def _reference_encode(text, merges):
    """From the description alone: clean, lower-case, split, bytes -> printable chars, merge lowest rank first."""
    alphabet = [*range(33, 127), *range(161, 173), *range(174, 256)]
    rest = [b for b in range(256) if b not in alphabet]
    char = {b: chr(b) for b in alphabet} | {b: chr(256 + n) for n, b in enumerate(rest)}
    order = [char[b] for b in alphabet] + [char[b] for b in rest]
    vocab = {t: i for i, t in enumerate(order + [c + "</w>" for c in order] + [a + b for a, b in merges])}
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = len(vocab), len(vocab) + 1
    rank = {m: i for i, m in enumerate(merges)}
    text = " ".join(text.split()).lower()
    out = [vocab["<|startoftext|>"]]
    for piece in regex.findall(r"""'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+""", text):
        word = [char[b] for b in piece.encode("utf-8")]
        word[-1] += "</w>"
        while len(word) > 1:
            pairs = [(rank.get((a, b), 1 << 30), i) for i, (a, b) in enumerate(zip(word, word[1:]))]
            best, _ = min(pairs)
            if best == 1 << 30:
                break
            a, b = merges[best]
            merged, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and word[i] == a and word[i + 1] == b:
                    merged.append(a + b)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        out += [vocab[w] for w in word]
    return out + [vocab["<|endoftext|>"]]


def _learned_merges(texts, n):
    """A merges list learned by plain BPE on ``texts`` (realistic ranks, not only hand-picked ones)."""
    words = {}
    for t in texts:
        for piece in regex.findall(r"\p{L}+", t.lower()):
            w = tuple(piece[:-1]) + (piece[-1] + "</w>",)
            words[w] = words.get(w, 0) + 1
    merges = []
    for _ in range(n):
        counts = {}
        for w, c in words.items():
            for pair in zip(w, w[1:]):
                counts[pair] = counts.get(pair, 0) + c
        if not counts:
            break
        best = max(sorted(counts), key=lambda p: counts[p])
        if best[0] + best[1] in {a + b for a, b in merges}:
            break
        merges.append(best)
        new = {}
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new[tuple(out)] = new.get(tuple(out), 0) + c
        words = new
    return merges


WORDS = ["person", "opens", "the", "door", "cutting", "onions", "slowly", "then", "stirs", "pan", "it's", "we'll",
         "café", "naïve", "2024", "x-ray", "!!", "…", "über", "dog's", "THE", "Pan"]


def _texts(seed, n=60):
    rng = random.Random(seed)
    return [rng.choice(["", " ", "\t"]) + (rng.choice(["  ", " ", "\n", " \t "])).join(
        rng.choice(WORDS) for _ in range(rng.randint(1, 8))) for _ in range(n)]


def test_matches_a_plain_reference_on_generated_text(tmp_path):
    from locvtp.data.tokenizer import Tokenizer

    texts = _texts(0)
    merges = _learned_merges(texts, 60)
    assert len(merges) >= 40
    tok = Tokenizer.from_clip_merges(_write_merges(tmp_path / "m.txt", merges, gz=False))
    for t in texts + ["naïve café x-ray 2024 it's"]:
        enc = tok.encode_batch([t], max_length=200)[0]
        assert enc.ids == _reference_encode(t, merges), t


def test_matches_hugging_faces_clip_tokenizer_and_reads_its_tokenizer_json(tmp_path):
    transformers = pytest.importorskip("transformers")
    from locvtp.data.clip_tokenizer import clip_vocabulary
    from locvtp.data.tokenizer import Tokenizer

    texts = _texts(1)
    merges = _learned_merges(texts, 60)
    ours = Tokenizer.from_clip_merges(_write_merges(tmp_path / "bpe.txt.gz", merges))
    hf = transformers.CLIPTokenizer(vocab=clip_vocabulary(merges), merges=list(merges))
    for t in texts:
        assert ours.encode_batch([t], 200)[0].ids == hf(t)["input_ids"], t
    # HF's tokenizer.json (what an HF CLIP model directory ships) loads as it is and gives the same batches
    hf.backend_tokenizer.save(str(tmp_path / "tokenizer.json"))
    loaded = Tokenizer.load(tmp_path / "tokenizer.json")
    assert loaded.pad_token_id == ours.pad_token_id == ours.token_to_id("<|endoftext|>")
    a, b = ours(texts[:8], max_length=9), loaded(texts[:8], max_length=9)
    for k in ("input_ids", "attention_mask", "word_mask"):
        assert torch.equal(a[k], b[k]), k


def test_saved_tokenizer_reloads_identically(tok, tmp_path):
    from locvtp.data.tokenizer import Tokenizer

    path = tok.save(tmp_path / "ck")
    again = Tokenizer.load(path)
    assert again == tok and again.pad_token_id == tok.pad_token_id
    spec = json.loads(path.read_text())
    assert spec["model"]["type"] == "BPE" and spec["model"]["end_of_word_suffix"] == "</w>"


def test_upstream_merge_count_is_the_cap(tmp_path):
    """CLIP's file holds more merges than its vocabulary uses: only the first 48,894 count (49,408 ids)."""
    from locvtp.data.clip_tokenizer import CLIP_MERGES, read_merges

    assert CLIP_MERGES == 48894
    merges = [(f"a{i}", f"b{i}") for i in range(30)]
    assert read_merges(_write_merges(tmp_path / "m.txt.gz", merges), limit=20) == merges[:20]


@pytest.mark.parametrize("content,needles", [
    (None, ["no such BPE merges file", "bpe_simple_vocab_16e6.txt.gz", "github.com/openai/CLIP"]),
    (b"#version: 0.2\nt h x\n", ["line 2", "two tokens"]),
    (b"\x1f\x8b\x08broken", ["not a (gzipped) UTF-8 BPE merges file", "github.com/openai/CLIP"]),
    (b"#version: 0.2\n", ["no merges"]),
])
def test_bad_merges_files_are_one_line(tmp_path, content, needles):
    from locvtp.data.tokenizer import Tokenizer

    path = tmp_path / "bpe_simple_vocab_16e6.txt.gz"
    if content is not None:
        path.write_bytes(content if content.startswith(b"\x1f") else gzip.compress(content))
    with pytest.raises((OSError, ValueError)) as exc:
        Tokenizer.load(path)
    msg = str(exc.value)
    assert "\n" not in msg and all(n in msg for n in needles), msg
