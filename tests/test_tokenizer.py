"""Tokenizer: training (deterministic, checked against a naive merge loop), batch masks, truncation,
save/load round trips, BERT ``vocab.txt`` directories (checked against ``transformers``), bad input."""
from __future__ import annotations

import json
import os
import pickle
import random
import subprocess
import sys

import pytest
import torch

from locvtp.data.tokenizer import SPECIAL_TOKENS, Tokenizer, _learn_wordpiece_vocab, train_tokenizer

CORPUS = [
    "The red circle moves left.",
    "A red ball slides to the left",
    "the blue square grows bigger",
    "um so the green triangle flashes now",
    "A yellow star shrinks, then it moves up!",
    "the purple square moves down slowly",
    "okay so now the orange circle flashes twice",
] * 20


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(CORPUS, vocab_size=150)


# ------------------------------------------------------------------------------------------ training


def test_special_token_ids(tok):
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    assert tok.pad_token_id == 0
    assert tok.vocab_size == len(tok.backend.get_vocab()) <= 150
    assert max(tok.backend.get_vocab().values()) == tok.vocab_size - 1


def test_training_is_deterministic_in_process(tok):
    again = train_tokenizer(list(CORPUS), vocab_size=150)
    assert again.to_str() == tok.to_str()
    assert train_tokenizer(CORPUS, vocab_size=60).to_str() != tok.to_str()


_CROSS_PROCESS = """
import hashlib, random, sys
from locvtp.data.tokenizer import train_tokenizer
r = random.Random(0)
words = "the a red blue green circle square triangle moves slides left right grows shrinks flashes um so".split()
texts = [" ".join(r.choice(words) for _ in range(r.randint(3, 12))) for _ in range(500)]
sys.stdout.write(train_tokenizer(texts, vocab_size=90).to_str())
"""


def test_training_is_deterministic_across_processes():
    """HF's own WordPieceTrainer breaks ties in hash order and differs between processes; ours must not."""
    procs = [subprocess.Popen([sys.executable, "-c", _CROSS_PROCESS], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONHASHSEED": seed}) for seed in ("1", "2")]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outs[0] == outs[1] and '"[PAD]": 0' in outs[0]


def _naive_learner(word_counts, vocab_size, min_frequency):
    """Slow reference: recount every pair after each merge; ties -> smallest (a, b)."""
    words = {w: [w[0]] + ["##" + c for c in w[1:]] for w in word_counts}
    tokens = sorted({s for syms in words.values() for s in syms})
    while len(tokens) < vocab_size:
        counts = {}
        for w, syms in words.items():
            for pair in zip(syms, syms[1:]):
                counts[pair] = counts.get(pair, 0) + word_counts[w]
        if not counts:
            break
        best = max(counts.values())
        if best < max(1, min_frequency):
            break
        a, b = min(p for p, c in counts.items() if c == best)
        merged = a + (b[2:] if b.startswith("##") else b)
        if merged not in tokens:
            tokens.append(merged)
        for w, syms in words.items():
            out, j = [], 0
            while j < len(syms):
                if j + 1 < len(syms) and (syms[j], syms[j + 1]) == (a, b):
                    out.append(merged)
                    j += 2
                else:
                    out.append(syms[j])
                    j += 1
            words[w] = out
    return tokens


@pytest.mark.parametrize("seed", range(6))
def test_merge_learner_matches_naive_reference(seed):
    r = random.Random(seed)
    letters = "abcde"[: 3 + seed % 3]
    counts = {"".join(r.choice(letters) for _ in range(r.randint(1, 7))): r.randint(1, 5) for _ in range(40)}
    for vocab_size, min_freq in ((10, 1), (30, 1), (60, 3), (500, 1)):
        assert _learn_wordpiece_vocab(counts, vocab_size, min_freq) == _naive_learner(counts, vocab_size, min_freq)


def test_training_rejects_bad_corpora():
    with pytest.raises(ValueError, match="text 1 is not a str"):
        train_tokenizer(["ok", None, "fine"])
    with pytest.raises(ValueError, match="no non-empty text"):
        train_tokenizer(["", "   "])
    with pytest.raises(ValueError, match="not a single str"):
        train_tokenizer("a sentence")
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(CORPUS, vocab_size=3)


def test_training_ignores_empty_lines(tok):
    assert train_tokenizer(CORPUS + ["", "  "], vocab_size=150).to_str() == tok.to_str()


# ------------------------------------------------------------------------------------------ encoding


def test_batch_shapes_and_masks(tok):
    texts = ["the red circle moves left", "a ball", "the purple square moves down slowly"]
    out = tok(texts, max_length=32)
    ids, attn, word = out["input_ids"], out["attention_mask"], out["word_mask"]
    assert ids.dtype == torch.long and attn.dtype == torch.bool and word.dtype == torch.bool
    lengths = [len(tok.tokens(t)) for t in texts]
    assert ids.shape == (3, max(lengths))  # padded to the longest, not to max_length
    for i, n in enumerate(lengths):
        assert attn[i].tolist() == [True] * n + [False] * (ids.shape[1] - n)
        assert ids[i, 0] == tok.token_to_id("[CLS]") and ids[i, n - 1] == tok.token_to_id("[SEP]")
        assert (ids[i, n:] == tok.pad_token_id).all()
        assert word[i].tolist() == [False] + [True] * (n - 2) + [False] * (ids.shape[1] - n + 1)
        assert ids[i, :n].tolist() == [tok.token_to_id(t) for t in tok.tokens(texts[i])]


def test_tokens_align_with_ids_and_decode(tok):
    text = "The Red circle moves LEFT."
    toks = tok.tokens(text)
    ids = tok([text], 64)["input_ids"][0].tolist()
    assert toks[0] == "[CLS]" and toks[-1] == "[SEP]" and len(toks) == len(ids)
    assert toks == [tok.id_to_token(i) for i in ids]
    assert tok.decode(ids) == "the red circle moves left."


def test_unknown_characters_become_unk(tok):
    toks = tok.tokens("the red zebra")  # 'z' never occurs in the corpus
    assert "[UNK]" in toks and toks[:3] == ["[CLS]", "the", "red"]


def test_truncation_keeps_sep(tok):
    text = "the red circle moves left then the blue square grows bigger and bigger"
    out = tok([text, "a ball"], max_length=6)
    ids = out["input_ids"]
    assert ids.shape == (2, 6)
    assert ids[0, 0] == tok.token_to_id("[CLS]") and ids[0, -1] == tok.token_to_id("[SEP]")
    assert ids[0, 1:5].tolist() == [tok.token_to_id(t) for t in tok.tokens(text)[1:5]]
    assert out["word_mask"][0].sum() == 4
    assert tok.tokens(text, max_length=6)[-1] == "[SEP]" and len(tok.tokens(text, max_length=6)) == 6


def test_single_string_is_a_batch_of_one(tok):
    a, b = tok("the red circle", 16), tok(["the red circle"], 16)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("bad,match", [
    ([""], "text 0 is empty"),
    (["ok", "   "], "text 1 is empty"),
    (["ok", None], "text 1 is not a str"),
    ([b"bytes"], "text 0 is not a str"),
    ([3], "text 0 is not a str"),
    ([], "texts is empty"),
    (None, "must be a str or a list"),
    (["bad \udcff surrogate"], "text 0 is not valid Unicode"),
])
def test_bad_texts_raise_value_error(tok, bad, match):
    with pytest.raises(ValueError, match=match):
        tok(bad, 16)
    if isinstance(bad, list) and len(bad) == 1:
        with pytest.raises(ValueError, match=match):
            tok.tokens(bad[0])


def test_text_without_word_tokens_is_an_error(tok):
    with pytest.raises(ValueError, match="no word tokens"):
        tok(["ok", "\u200b"], 16)  # zero-width space: normalized away


@pytest.mark.parametrize("max_length", [2, 0, "8", 4.0])
def test_bad_max_length(tok, max_length):
    with pytest.raises(ValueError, match="max_length"):
        tok(["the red circle"], max_length)


# ------------------------------------------------------------------------------------------ save / load


def test_save_load_round_trip(tok, tmp_path):
    path = tok.save(tmp_path / "ckpt")
    assert path == tmp_path / "ckpt" / "tokenizer.json"
    assert path.stat().st_mode & 0o044 == 0o044  # readable by others, not owner-only like a temp file
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["tokenizer.json"]  # no temp file left behind
    json.loads(path.read_text())  # a standard JSON file
    texts = ["the red circle moves left", "um so the green triangle flashes now"]
    for src in (path, tmp_path / "ckpt"):
        loaded = Tokenizer.load(src)
        assert loaded == tok and loaded.pad_token_id == 0
        a, b = loaded(texts, 12), tok(texts, 12)
        assert all(torch.equal(a[k], b[k]) for k in a)
    # saving after use: truncation state must not leak into the file
    tok(texts, 5)
    assert tok.save(tmp_path / "again").read_text() == path.read_text()
    # the standard HF classes read it too
    from tokenizers import Tokenizer as HF

    assert HF.from_file(str(path)).encode("the red circle").ids == tok(["the red circle"], 16)["input_ids"][0].tolist()


def test_save_overwrites_atomically(tok, tmp_path):
    (tmp_path / "tokenizer.json").write_text("old")
    tok.save(tmp_path)
    assert Tokenizer.load(tmp_path) == tok


def test_pickle_round_trip(tok):
    clone = pickle.loads(pickle.dumps(tok))
    assert clone == tok and torch.equal(clone("a red ball", 8)["input_ids"], tok("a red ball", 8)["input_ids"])


BERT_VOCAB = ["[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "!", ",", ".", "a", "the", "red", "blue",
              "circle", "square", "moves", "move", "left", "right", "##s", "##ing", "slide", "ball", "é", "##é",
              "Red", "The", "caf", "##e"]


def _vocab_dir(tmp_path, name, config=None):
    d = tmp_path / name
    d.mkdir()
    (d / "vocab.txt").write_text("\n".join(BERT_VOCAB) + "\n", encoding="utf-8")
    if config is not None:
        (d / "tokenizer_config.json").write_text(json.dumps(config))
    return d


SENTENCES = ["The red circle moves left!", "a blue square sliding right, the ball", "zebra café moves",
             "Red circles"]


@pytest.mark.parametrize("lower", [True, False])
def test_vocab_txt_directory_matches_transformers(tmp_path, lower):
    transformers = pytest.importorskip("transformers")
    d = _vocab_dir(tmp_path, f"bert_{lower}", {"do_lower_case": lower})
    ours = Tokenizer.load(d)
    ref = transformers.BertTokenizerFast.from_pretrained(str(d))  # what a user would do, offline
    for s in SENTENCES:
        assert ours(s, 32)["input_ids"][0].tolist() == ref(s)["input_ids"], s
    assert ours.pad_token_id == 0 and ours.vocab_size == len(BERT_VOCAB)
    out = ours(SENTENCES, 32)
    assert (out["word_mask"] == (out["attention_mask"] & (out["input_ids"] != 3) & (out["input_ids"] != 4))).all()


def test_vocab_txt_file_path_and_resave(tmp_path):
    d = _vocab_dir(tmp_path, "bert")
    from_file = Tokenizer.load(d / "vocab.txt")
    assert from_file == Tokenizer.load(d)
    from_file.save(tmp_path / "saved")
    assert Tokenizer.load(tmp_path / "saved") == from_file


def test_vocab_txt_missing_special_token(tmp_path):
    d = tmp_path / "nocls"
    d.mkdir()
    (d / "vocab.txt").write_text("[PAD]\n[UNK]\n[SEP]\nthe\n")
    with pytest.raises(ValueError, match=r"nocls.*vocab\.txt.*'\[CLS\]'"):
        Tokenizer.load(d)


def test_load_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing_here"):
        Tokenizer.load(tmp_path / "nothing_here")
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    with pytest.raises(ValueError, match=r"empty_dir: not a tokenizer directory.*config\.json"):
        Tokenizer.load(empty)
    bad = tmp_path / "broken.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="broken.json: not a valid tokenizers JSON"):
        Tokenizer.load(bad)


def test_directory_saved_by_transformers(tmp_path):
    """A local HF tokenizer directory (tokenizer.json + friends, padding/truncation settings inside)."""
    transformers = pytest.importorskip("transformers")
    src = _vocab_dir(tmp_path, "src")
    ref = transformers.BertTokenizerFast.from_pretrained(str(src))
    ref.save_pretrained(str(tmp_path / "hf"))
    assert (tmp_path / "hf" / "tokenizer.json").is_file()
    from tokenizers import Tokenizer as HF

    raw = HF.from_file(str(tmp_path / "hf" / "tokenizer.json"))
    raw.enable_padding(pad_id=0, pad_token="[PAD]", length=40)
    raw.enable_truncation(max_length=7)
    raw.save(str(tmp_path / "hf" / "tokenizer.json"))  # settings baked in, as some exports have them
    ours = Tokenizer.load(tmp_path / "hf")
    assert ours.pad_token_id == 0
    for s in SENTENCES:
        assert ours(s, 32)["input_ids"][0].tolist() == ref(s)["input_ids"], s  # no baked-in truncation/padding
    saved = json.loads(ours.to_str())
    assert saved["truncation"] is None and saved["padding"] is None


def test_pad_token_from_padding_settings(tmp_path):
    from tokenizers import Tokenizer as HF
    from tokenizers import models as M

    raw = HF(M.WordLevel({"<unk>": 0, "hello": 1, "<blank>": 2}, unk_token="<unk>"))
    raw.pre_tokenizer = __import__("tokenizers").pre_tokenizers.Whitespace()
    raw.enable_padding(pad_id=2, pad_token="<blank>")
    raw.save(str(tmp_path / "tokenizer.json"))
    tok = Tokenizer.load(tmp_path)
    assert tok.pad_token_id == 2
    out = tok(["hello", "hello hello"], 8)
    assert out["input_ids"].tolist() == [[1, 2], [1, 1]] and out["word_mask"].tolist() == [[True, False], [True, True]]
    raw.no_padding()
    raw.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(ValueError, match=r"tokenizer\.json: no padding token"):
        Tokenizer.load(tmp_path)
