"""The prepared corpus (locvtp.training.corpus) against the in-memory readers: same items, same bad rows, same errors;
resumable after SIGKILL; invalidated by a changed caption file."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from locvtp.training import corpus as corpus_mod
from locvtp.training.corpus import CaptionItems, prepare_captions, words_mask
from locvtp.training.dataset import load_caption_items
from locvtp.data.formats import FormatError


def _reference(caption_file: Path, captions: str, split_file: Path | None = None, strict: bool = False):
    dcfg = OmegaConf.create({"root": str(caption_file.parent), "caption_file": caption_file.name,
                             "captions": captions, "split_file": split_file.name if split_file else None})
    return load_caption_items(dcfg, strict=strict)


def _all_items(store, keep=None):
    idx = np.arange(store.n) if keep is None else np.nonzero(keep)[0]
    items = CaptionItems(store, idx)
    return [items[k] for k in range(len(items))]


def _messy_howto(path: Path) -> None:
    """HowTo100M format with every kind of bad member / row the reader reports, and non-ASCII text."""
    text = (
        '{"v1": {"start": [0, 1.5, 3], "end": [1, 2.5, 2], "text": ["cut the onion", "  ", "stir"]},\n'
        ' "v2": {"start": [0], "end": [1, 2], "text": ["x"]},\n'
        ' "v 3é": {"start": [0.25, "a"], "end": [4.5, 5], "text": ["pour the crème", "mix"]},\n'
        ' "v4": [1, 2],\n'
        ' "v5": {"start": [0, 1], "end": [1, 2], "text": [7, "bake \\ud800 bread"]},\n'
        ' "v6": {"start": [0], "end": [1], "text": "not a list"},\n'
        ' "v1b": {"start": [10, 20], "end": [12, 21], "text": ["whisk eggs", "serve"]}}\n'
    )
    path.write_bytes(text.encode("utf-8").replace(b"\\ud800", b"\xff"))


def test_tiny_world_items_equal_the_reader(tiny_world, tmp_path):
    cap = tiny_world / "pretrain" / "caption.json"
    store = prepare_captions(cap, "howto100m", root=tmp_path, progress=False)
    ref, bad = _reference(cap, "howto100m")
    assert store.n == len(ref) and store.bad_rows() == []
    assert _all_items(store) == ref
    assert sorted(store.video_ids) == sorted({it.vid for it in ref})


def test_bad_rows_and_items_equal_the_reader(tmp_path):
    cap = tmp_path / "caption.json"
    _messy_howto(cap)
    store = prepare_captions(cap, "howto100m", root=tmp_path / "prep", progress=False)
    ref, bad = _reference(cap, "howto100m")
    assert _all_items(store) == ref
    assert len(bad) >= 6
    got_bad = [f"{f}: {loc}" for f, loc, _ in store.bad_rows()]
    assert got_bad == [b.source for b in bad]
    assert [r for _, _, r in store.bad_rows()] == [b.reason for b in bad]


def test_strict_and_malformed_json_raise_the_readers_message(tmp_path):
    cap = tmp_path / "caption.json"
    _messy_howto(cap)
    with pytest.raises(FormatError) as ref:
        _reference(cap, "howto100m", strict=True)
    with pytest.raises(FormatError) as got:
        prepare_captions(cap, "howto100m", root=tmp_path / "prep", strict=True, progress=False)
    assert str(got.value) == str(ref.value)
    broken = tmp_path / "broken.json"
    broken.write_text('{"v1": {"start": [0], "end": [1], "text": ["a"]},\n  "v2": {"start": [0] "end": [1]}}')
    with pytest.raises(FormatError) as ref:
        _reference(broken, "howto100m")
    with pytest.raises(FormatError) as got:
        prepare_captions(broken, "howto100m", root=tmp_path / "prep", progress=False)
    assert str(got.value) == str(ref.value) and "line 2 column" in str(got.value)


def test_webvid_equals_the_reader(tmp_path):
    csv = tmp_path / "results.csv"
    csv.write_text("\ufeffvideoid,contentUrl,duration,page_dir,name\n"
                   "1,http://x/1.mp4,PT00H00M11S,d,a man cooks\n"
                   "2,http://x/2.mp4,-3,d,bad duration\n"
                   "3,http://x/3.mp4,PT5S,d,\n"
                   '4,http://x/4.mp4,7,d,"quoted, with a comma"\n'
                   "5,http://x/5.mp4,7,d\n"
                   "1,http://x/1.mp4,11,d,the same video again\n", encoding="utf-8")
    store = prepare_captions(csv, "webvid", root=tmp_path / "prep", progress=False)
    ref, bad = _reference(csv, "webvid")
    assert _all_items(store) == ref and len(ref) == 3
    assert [f"{f}: {loc}" for f, loc, _ in store.bad_rows()] == [b.source for b in bad] and len(bad) == 3
    assert store.num_videos == 2


def test_split_file_keeps_the_same_items(tiny_world, tmp_path):
    cap = tiny_world / "pretrain" / "caption.json"
    ref_all, _ = _reference(cap, "howto100m")
    vids = sorted({it.vid for it in ref_all})[:2]
    local = tmp_path / "c"
    local.mkdir()
    (local / "caption.json").write_bytes(cap.read_bytes())
    (local / "split.txt").write_text("\n".join(vids) + "\n")
    store = prepare_captions(local / "caption.json", "howto100m", root=tmp_path / "prep",
                             split_file=local / "split.txt", progress=False)
    ref, _ = _reference(local / "caption.json", "howto100m", split_file=local / "split.txt")
    assert _all_items(store, store.keep_mask()) == ref and 0 < len(ref) < len(ref_all)


def test_changed_caption_file_is_a_new_corpus(tmp_path):
    cap = tmp_path / "caption.json"
    cap.write_text(json.dumps({"a": {"start": [0], "end": [1], "text": ["one"]}}))
    s1 = prepare_captions(cap, "howto100m", root=tmp_path / "prep", progress=False)
    assert prepare_captions(cap, "howto100m", root=tmp_path / "prep", progress=False).directory == s1.directory
    time.sleep(0.01)
    cap.write_text(json.dumps({"a": {"start": [0, 2], "end": [1, 3], "text": ["one", "two"]}}))
    s2 = prepare_captions(cap, "howto100m", root=tmp_path / "prep", progress=False)
    assert s2.directory != s1.directory and s2.n == 2 and s1.n == 1


def _big_caption(path: Path, videos: int, per_video: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("{")
        for v in range(videos):
            starts = np.sort(rng.uniform(0, 600, per_video)).round(2)
            ends = (starts + rng.uniform(1, 8, per_video)).round(2)
            texts = [f"step {v} {k} stir the pan ü" for k in range(per_video)]
            if v % 97 == 5:
                texts[0] = " "  # a bad row now and then
            fh.write(("," if v else "") + json.dumps(f"vid{v:06d}") + ":" +
                     json.dumps({"start": starts.tolist(), "end": ends.tolist(), "text": texts}))
        fh.write("}")


def _tree_bytes(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file() and p.name != "progress.json"}


def test_sigkill_during_prepare_then_rerun_equals_uninterrupted(tmp_path):
    cap = tmp_path / "caption.json"
    _big_caption(cap, videos=3000, per_video=40)
    clean = prepare_captions(cap, "howto100m", root=tmp_path / "clean", progress=False)
    code = textwrap.dedent(f"""
        import time
        from locvtp.training import corpus
        corpus.COMMIT_EVERY = 2000
        _commit = corpus.atomic_write_json
        def slow_commit(path, obj):  # the conversion must still be running when the test kills it
            _commit(path, obj)
            time.sleep(0.05)
        corpus.atomic_write_json = slow_commit
        corpus.prepare_captions({str(cap)!r}, "howto100m", root={str(tmp_path / 'killed')!r}, progress=False)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code])
    work = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found = list((tmp_path / "killed").glob("*.partial/progress.json"))
        if found:
            state = json.loads(found[0].read_text())
            if state["counts"]["narr_video"] >= 20_000:
                work = found[0].parent
                break
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert work is not None, "the conversion finished before it could be killed: make the corpus bigger"
    assert not (work.with_name(work.name.replace(".partial", "")) / "meta.json").exists()
    again = prepare_captions(cap, "howto100m", root=tmp_path / "killed", progress=False)
    a, b = _tree_bytes(clean.directory), _tree_bytes(again.directory)
    assert a.keys() == b.keys()
    for k in a:
        if k == "meta.json":
            assert json.loads(a[k]) == json.loads(b[k])
        else:
            assert a[k] == b[k], k
    assert again.n == 3000 * 40 - len(again.bad_rows())


def test_words_mask_matches_direct_tokenization(tmp_path, tiny_world):
    from locvtp.training.corpus import texts_with_words
    from locvtp.data.tokenizer import train_tokenizer

    cap = tmp_path / "caption.json"
    texts = ["cut the onion", "???", "\u200b", "stir", "a b c d e f"]
    cap.write_text(json.dumps({"v": {"start": list(range(5)), "end": list(range(1, 6)), "text": texts}}))
    store = prepare_captions(cap, "howto100m", root=tmp_path / "prep", progress=False)
    tok = train_tokenizer(["cut the onion", "stir"], vocab_size=60)
    kept = list(store.texts())
    expected = texts_with_words(tok, kept, 8)
    got = words_mask(store, tok, 8, chunk=2, progress=False)
    assert got.tolist() == expected and not all(expected)
    # cached: a second call reads the assembled file
    assert (store.directory / [p.name for p in store.directory.glob("words-*.npz")][0]).is_file()
    assert words_mask(store, tok, 8, chunk=2, progress=False).tolist() == expected


def test_words_mask_in_worker_processes_and_shards(tmp_path):
    from locvtp.data.tokenizer import train_tokenizer

    cap = tmp_path / "caption.json"
    texts = [f"word{k % 7} more" if k % 5 else "" for k in range(40)]
    texts = [t or "!" for t in texts]
    cap.write_text(json.dumps({"v": {"start": list(range(40)), "end": list(range(1, 41)), "text": texts}}))
    store = prepare_captions(cap, "howto100m", root=tmp_path / "prep", progress=False)
    tok = train_tokenizer([f"word{k} more" for k in range(7)], vocab_size=60)
    one = words_mask(store, tok, 8, chunk=8, progress=False)
    for f in store.directory.glob("words-*"):
        if f.is_dir():
            for q in f.iterdir():
                q.unlink()
            f.rmdir()
        else:
            f.unlink()
    assert words_mask(store, tok, 8, chunk=8, share=(0, 2), progress=False, wait=False) is None
    assert words_mask(store, tok, 8, chunk=8, share=(1, 2), workers=2, progress=False).tolist() == one.tolist()


def test_video_probes_equal_probe_video(tiny_world, tmp_path):
    from dataclasses import asdict

    from locvtp.data.videoids import video_path
    from locvtp.data.video import probe_video

    def _probe_all(paths):  # the in-memory path's probe, written plainly
        out = {}
        for v, p in paths.items():
            try:
                info = probe_video(p)
                out[v] = asdict(info)
            except Exception as exc:  # noqa: BLE001
                out[v] = {"error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}"[:300]}
        return out


    cap = tmp_path / "caption.json"
    data = json.loads((tiny_world / "pretrain" / "caption.json").read_text())
    data["missing_video"] = {"start": [0], "end": [1], "text": ["a cat"]}
    cap.write_text(json.dumps(data))
    store = prepare_captions(cap, "howto100m", root=tmp_path / "prep", progress=False)
    probes = corpus_mod.video_probes(store, tiny_world / "videos", chunk=2, progress=False)
    ref = _probe_all({v: video_path(tiny_world / "videos", v) for v in store.video_ids})
    bad = {store.video_ids[int(k)]: str(m) for k, m in zip(probes["err_idx"], probes["err_msg"])}
    assert bad == {v: x["error"] for v, x in ref.items() if "error" in x} and list(bad) == ["missing_video"]
    for k, v in enumerate(store.video_ids):
        if v not in bad:
            assert probes["duration"][k] == ref[v]["duration"] and probes["num_frames"][k] == ref[v]["num_frames"]


def test_group_keys_order_like_the_ids(tmp_path):
    cap = tmp_path / "caption.json"
    cap.write_text(json.dumps({v: {"start": [0, 1], "end": [1, 2], "text": ["a", "b"]} for v in ["v2", "v10", "a"]}))
    store = prepare_captions(cap, "howto100m", root=tmp_path / "prep", progress=False)
    items = CaptionItems(store, np.arange(store.n))
    keys = items.group_keys()
    vids = [items[k].vid for k in range(len(items))]
    assert sorted(range(len(vids)), key=lambda k: (vids[k], k)) == sorted(range(len(vids)), key=lambda k: (keys[k], k))


@pytest.mark.parametrize("layout", ["h5", "npy-dir"])
def test_feature_lengths_equal_a_scan_and_follow_the_features(tmp_path, layout):
    import h5py

    from locvtp.training.sources import FeatureSource

    cap = tmp_path / "caption.json"
    vids = ["a", "b c", "d"]  # "b c" is stored under a hashed name; "d" has no features
    cap.write_text(json.dumps({v: {"start": [0], "end": [1], "text": ["x"]} for v in vids}))
    store = prepare_captions(cap, "howto100m", root=tmp_path / "prep", progress=False)
    rng = np.random.default_rng(0)
    feats = {"a": rng.standard_normal((7, 4)).astype(np.float32), "b c": rng.standard_normal((3, 4)).astype(np.float32)}
    if layout == "h5":
        path = tmp_path / "f.h5"
        with h5py.File(path, "w") as f:
            for v, x in feats.items():
                f[v] = x
    else:
        from locvtp.featurestore.reader import safe_name

        path = tmp_path / "feats"
        (path / "_info").mkdir(parents=True)
        for v, x in feats.items():
            np.save(path / f"{safe_name(v)}.npy", x)
            (path / "_info" / f"{safe_name(v)}.json").write_text(json.dumps({"video_id": v}))
    got = corpus_mod.feature_lengths(store, path, chunk=2, progress=False)
    scan = FeatureSource(path, 1.0, None, video_ids=store.video_ids)
    assert got["rows"].tolist() == [scan.lengths.get(v, -1) for v in store.video_ids] == [7, 3, -1]
    src = FeatureSource(path, 1.0, None, known_lengths={v: (int(r), int(d)) for v, r, d in
                                                         zip(store.video_ids, got["rows"], got["dim"])})
    assert src.lengths == scan.lengths and src.dim == 4
    np.testing.assert_array_equal(src.rows("b c", 0, 3), feats["b c"])
    if src._h5 is not None:
        src._h5.close()
    before = {p.name for p in store.directory.glob("featlen-*.npz")}
    time.sleep(0.01)
    if layout == "h5":
        with h5py.File(path, "a") as f:
            f["d"] = np.zeros((2, 4), np.float32)
    else:
        np.save(path / "d.npy", np.zeros((2, 4), np.float32))
    again = corpus_mod.feature_lengths(store, path, chunk=2, progress=False)
    assert again["rows"].tolist() == [7, 3, 2]  # a changed feature store is a new cache, never a stale one
    assert len({p.name for p in store.directory.glob("featlen-*.npz")} - before) == 1


def test_video_directory_change_invalidates_the_probes(tiny_world, tmp_path):
    import shutil

    vd = tmp_path / "videos"
    shutil.copytree(tiny_world / "videos", vd)
    store = prepare_captions(tiny_world / "pretrain" / "caption.json", "howto100m", root=tmp_path / "prep",
                             progress=False)
    first = corpus_mod.video_probes(store, vd, progress=False)
    assert len(first["err_idx"]) == 0
    time.sleep(0.01)
    victim = vd / f"{store.video_ids[0]}.mp4"
    victim.unlink()
    second = corpus_mod.video_probes(store, vd, progress=False)
    assert [store.video_ids[int(k)] for k in second["err_idx"]] == [victim.stem]


_TRICKY = ["cut the onion", "???", "", "   ", "\u200b\u200b", "[CLS]", "[cls] stir", "a [SEP]", "[MASK]", "\x00\x01",
           "e\u0301", "\u0301\u0301", "²", "_", "___", "caf\u00e9", "中文", "ok \udcff bad", "\udcff", "x" * 300,
           "\t\n", "[", "[UNK]", "[unk]", "Ⅻ", "٣", "\ufffd", "a", "-- !! --", "[pad]"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(_TRICKY), st.text(max_size=20)), min_size=1, max_size=12))
def test_fast_words_test_equals_the_tokenizer(texts):
    """With a BERT-style tokenizer most captions are decided without tokenizing; the answers must be the
    tokenizer's own, for any text (letters, marks, control characters, special-token literals, bad Unicode)."""
    from locvtp.training.corpus import _surely_worded, _tokenize_for_words, texts_with_words

    tok = _words_tokenizer()
    assert _surely_worded(tok, 8) is not None
    assert texts_with_words(tok, texts, 8) == _tokenize_for_words(tok, texts, 8)


_TOK = []


def _words_tokenizer():
    from locvtp.data.tokenizer import train_tokenizer

    if not _TOK:
        _TOK.append(train_tokenizer(["cut the onion", "stir the pan", "café"], vocab_size=40))
    return _TOK[0]


def test_fast_words_test_only_for_bert_style_pipelines():
    from tokenizers import Tokenizer as HF, models, pre_tokenizers

    from locvtp.training.corpus import _surely_worded
    from locvtp.data.tokenizer import Tokenizer

    tok = _words_tokenizer()
    assert _surely_worded(tok, 8) is not None
    assert _surely_worded(tok, 2) is None  # no room for a word: only the tokenizer can say
    other = HF(models.WordLevel(vocab={"[UNK]": 0, "[PAD]": 1, "a": 2}, unk_token="[UNK]"))
    other.pre_tokenizer = pre_tokenizers.Whitespace()
    assert _surely_worded(Tokenizer(other, pad_token_id=1), 8) is None
