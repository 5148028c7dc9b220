"""The prepared corpus's own tokenizer (locvtp.training.corpus_tokenizer): trained once on a bounded, deterministic
sample of the captions, by `locvtp prepare` or by the first run on an old corpus (once, even when two processes
race), keyed by the corpus and the vocabulary size, and reused by every later run and by a resume."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from cli_helpers import run_cli
from locvtp.data import tokenizer as tok_mod
from locvtp.data.tokenizer import Tokenizer, train_tokenizer
from locvtp.training import corpus_tokenizer as ct
from locvtp.training.corpus import prepare_captions

REPO = Path(__file__).resolve().parents[1]
_WORDS = ("cut stir pour onion pan salt water bowl knife slice heat oil garlic pepper fry boil chop whisk bake "
          "oven tray spoon flour sugar egg butter crème naïve").split()

pytestmark = pytest.mark.usefixtures("keep_torch_threads")


def _caption_json(path: Path, n: int, per_video: int = 7) -> Path:
    """A HowTo100M-format caption file of ``n`` narrations whose words differ from video to video."""
    rng = np.random.default_rng(n)
    data, left, v = {}, n, 0
    while left:
        k = min(per_video, left)
        text = [" ".join(f"{w}{v % 5}" if j % 3 else w for j, w in enumerate(rng.choice(_WORDS, 5)))
                for _ in range(k)]
        data[f"v{v:05d}"] = {"start": [float(i) for i in range(k)], "end": [i + 1.0 for i in range(k)], "text": text}
        left, v = left - k, v + 1
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def _store(tmp_path: Path, n: int, name: str = "c"):
    return prepare_captions(_caption_json(tmp_path / name / "caption.json", n), "howto100m",
                            root=tmp_path / "prep", progress=False)


@pytest.fixture
def count_training(monkeypatch):
    """Wraps train_tokenizer: returns the list of the number of captions each call was given."""
    calls: list[int] = []
    real = tok_mod.train_tokenizer

    def counting(texts, *a, **k):
        texts = list(texts)
        calls.append(len(texts))
        return real(texts, *a, **k)

    monkeypatch.setattr(tok_mod, "train_tokenizer", counting)
    return calls


# ------------------------------------------------------------------------------------------------ the sample
def test_sample_blocks_are_bounded_even_and_machine_independent():
    assert ct.sample_blocks(10, cap=100, block=4) == [(0, 4), (4, 8), (8, 10)]  # small corpus: all of it
    for n in (101, 1000, 12_345, 10**9):
        blocks = ct.sample_blocks(n, cap=100, block=10)
        assert sum(hi - lo for lo, hi in blocks) == 100 and len(blocks) == 10
        assert blocks[0][0] == 0 and all(b[1] <= n for b in blocks)
        assert all(a[1] <= b[0] for a, b in zip(blocks, blocks[1:]))  # sorted, never overlapping
        gaps = [b[0] - a[0] for a, b in zip(blocks, blocks[1:])]
        assert max(gaps) - min(gaps) <= 1 and blocks[-1][0] >= n - n // 10 - 1  # evenly spread to the end
    full = ct.sample_blocks(136_000_000)
    assert sum(hi - lo for lo, hi in full) == ct.SAMPLE_CAPTIONS == len(full) * ct.SAMPLE_BLOCK


def test_sample_reads_exactly_the_blocks_captions(tmp_path, monkeypatch):
    store = _store(tmp_path, 300)
    got = list(ct.sample_captions(store, cap=60, block=8))
    want = [store.text(i) for lo, hi in ct.sample_blocks(store.n, 60, 8) for i in range(lo, hi)]
    assert got == want and len(got) == 56  # 7 blocks of 8
    assert list(ct.sample_captions(store, cap=1000)) == list(store.texts())  # below the cap: every caption


def test_a_corpus_twice_as_large_trains_on_as_many_captions(tmp_path, monkeypatch, count_training):
    monkeypatch.setattr(ct, "SAMPLE_CAPTIONS", 100)
    monkeypatch.setattr(ct, "SAMPLE_BLOCK", 10)
    small, large = _store(tmp_path, 400, "small"), _store(tmp_path, 800, "large")
    ct.corpus_tokenizer(small, 120)
    ct.corpus_tokenizer(large, 120)
    assert count_training == [100, 100]
    meta = ct.tokenizer_provenance(ct.corpus_tokenizer_dir(large, 120))
    assert meta["sampled_captions"] == 100 and meta["narrations"] == 800 and meta["vocab_size"] == 120


def test_the_tokenizer_equals_training_on_the_sample(tmp_path, monkeypatch):
    store = _store(tmp_path, 250)
    assert ct.corpus_tokenizer(store, 150) == train_tokenizer(list(store.texts()), vocab_size=150)  # below the cap
    monkeypatch.setattr(ct, "SAMPLE_CAPTIONS", 64)
    monkeypatch.setattr(ct, "SAMPLE_BLOCK", 16)
    sample = [store.text(i) for lo, hi in ct.sample_blocks(store.n, 64, 16) for i in range(lo, hi)]
    tok = ct.corpus_tokenizer(store, 150)
    assert tok == train_tokenizer(sample, vocab_size=150)
    assert tok != train_tokenizer(list(store.texts()), vocab_size=150)  # the sample, not the whole corpus
    meta = ct.tokenizer_provenance(ct.corpus_tokenizer_dir(store, 150))
    import hashlib

    saved = ct.corpus_tokenizer_dir(store, 150) / "tokenizer.json"
    assert meta["sha256"] == hashlib.sha256(saved.read_bytes()).hexdigest()


def test_the_key_changes_with_the_vocabulary_size_and_the_corpus(tmp_path, count_training):
    a, b = _store(tmp_path, 120, "a"), _store(tmp_path, 121, "b")
    assert ct.tokenizer_key(a, 100) != ct.tokenizer_key(a, 140) and ct.tokenizer_key(a, 100) != ct.tokenizer_key(b, 100)
    t100, t140 = ct.corpus_tokenizer(a, 100), ct.corpus_tokenizer(a, 140)
    assert t100.vocab_size <= 100 < t140.vocab_size <= 140
    assert ct.corpus_tokenizer(a, 100) == t100 and len(count_training) == 2  # the second call loads


def test_two_processes_racing_build_it_once(tmp_path):
    store = _store(tmp_path, 200)
    log = tmp_path / "builds.log"
    script = textwrap.dedent(f"""
        import os, sys, time
        from locvtp.data import tokenizer as tok_mod
        from locvtp.training.corpus import CaptionStore
        from locvtp.training.corpus_tokenizer import corpus_tokenizer
        real = tok_mod.train_tokenizer
        def slow(texts, *a, **k):
            with open({str(log)!r}, "a") as fh:
                fh.write(f"{{os.getpid()}}\\n")
            time.sleep(1.5)  # the other process arrives while this one builds
            return real(texts, *a, **k)
        tok_mod.train_tokenizer = slow
        sys.stdout.write(corpus_tokenizer(CaptionStore({str(store.directory)!r}), 130).to_str())
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=env, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    assert len(log.read_text().splitlines()) == 1  # one build; the other waited for it and loaded it
    assert outs[0][0] == outs[1][0] == ct.corpus_tokenizer(store, 130).to_str()
    assert not [p for p in store.directory.iterdir() if ".tmp-" in p.name]


# ------------------------------------------------------------------------------------------------ prepare and pretrain
_TINY = ["train.batch_size=4", "train.warmup_steps=1", "train.log_every=1", "data.num_workers=0", "data.cache=false",
         "data.frames_per_clip=2", "data.frame_size=16", "data.max_words=16", "data.vocab_size=200", "model.dim=32",
         "model.text.width=32", "model.text.layers=1", "model.video.width=8", "model.video.temporal_layers=0",
         "train.num_threads=1", "train.val_every=0", "--quiet"]


def _pretrain(world, prep, out, capsys, *extra):
    res = run_cli(["pretrain", "--config", "pretrain_synthetic", "--out", out, f"data.root={world}",
                   f"data.prepared_dir={prep}", *_TINY, *extra], capsys)
    assert res.code == 0, res.err
    return res


def test_prepare_trains_it_once_and_every_run_and_resume_reuses_it(tiny_world, tmp_path, capsys, monkeypatch):
    prep = tmp_path / "prep"
    res = run_cli(["prepare", "--config", "pretrain_synthetic", f"data.root={tiny_world}", f"data.prepared_dir={prep}",
                   "data.cache=false", "data.vocab_size=200", "data.max_words=16", "--no-progress"], capsys)
    assert res.code == 0 and "tokenizer tokenizer-" in res.err and "trained on 27 captions" in res.err
    (tok_dir,) = prep.glob("captions-*/tokenizer-*")
    words = sorted(p.name for p in prep.glob("captions-*/words-*.npz"))
    assert len(words) == 1  # the words mask under that tokenizer is prepared too

    def refuse(*a, **k):
        raise AssertionError("train_tokenizer called at start-up")

    monkeypatch.setattr(tok_mod, "train_tokenizer", refuse)
    prepared = Tokenizer.load(tok_dir / "tokenizer.json")
    for name in ("a", "b"):
        _pretrain(tiny_world, prep, tmp_path / name, capsys, "train.max_steps=1")
        assert Tokenizer.load(tmp_path / name / "final" / "tokenizer.json") == prepared
        prov = json.loads((tmp_path / name / "tokenizer" / "provenance.json").read_text())
        assert prov["origin"] == "prepared corpus" and prov["path"] == str(tok_dir) and prov["sampled_captions"] == 27
    assert sorted(p.name for p in prep.glob("captions-*/words-*.npz")) == words  # reused, not rebuilt
    # a resume takes the checkpoint's tokenizer even when the corpus's is gone
    import shutil

    shutil.rmtree(tok_dir)
    _pretrain(tiny_world, prep, tmp_path / "a", capsys, "train.max_steps=2", "--resume", "auto")
    assert Tokenizer.load(tmp_path / "a" / "final" / "tokenizer.json") == prepared
    assert json.loads((tmp_path / "a" / "tokenizer" / "provenance.json").read_text())["origin"] == "checkpoint"


def test_an_old_prepared_corpus_gets_its_tokenizer_built_once(tiny_world, tmp_path, capsys, count_training):
    prep = tmp_path / "prep"
    store = prepare_captions(tiny_world / "pretrain" / "caption.json", "howto100m", root=prep, progress=False)
    assert not list(store.directory.glob("tokenizer-*"))  # as a corpus prepared before the tokenizer was part of it
    first = _pretrain(tiny_world, prep, tmp_path / "a", capsys, "train.max_steps=1")
    assert "training the corpus's WordPiece tokenizer once" in first.out
    second = _pretrain(tiny_world, prep, tmp_path / "b", capsys, "train.max_steps=1")
    assert "training the corpus's WordPiece tokenizer" not in second.out
    assert count_training == [27]
    (tok_dir,) = store.directory.glob("tokenizer-*")
    want = train_tokenizer(list(store.texts()), vocab_size=200)  # what a run trained before: every caption
    for name in ("a", "b"):
        assert Tokenizer.load(tmp_path / name / "final" / "tokenizer.json") == want
    assert Tokenizer.load(tok_dir) == want
