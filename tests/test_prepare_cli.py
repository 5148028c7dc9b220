"""`locvtp prepare`: one machine with workers, or shards on several machines then one assembling run; pretrain then
reuses what was prepared."""
from __future__ import annotations

import json

import numpy as np

from cli_helpers import assert_one_line_error, run_cli


def _args(world, cache, *extra):
    return ["prepare", "--config", "pretrain_synthetic", f"data.root={world}", f"data.prepared_dir={cache}",
            "data.cache=false", "--no-progress", *extra]


def test_prepare_in_shards_equals_one_run(tiny_world, tmp_path, capsys):
    one = run_cli(_args(tiny_world, tmp_path / "one", "--workers", "2"), capsys)
    assert one.code == 0 and "prepared in" in one.err and "27 narrations of 6 videos" in one.err
    for i in (0, 2):  # two of three machines' shares ...
        res = run_cli(_args(tiny_world, tmp_path / "sh", "--shard", f"{i}/3"), capsys)
        assert res.code == 0 and f"shard {i}/3 done" in res.err
    (probe_parts,) = list((tmp_path / "sh").glob("captions-*/probe-*.parts"))
    assert not list((tmp_path / "sh").glob("captions-*/probe-*.npz"))  # not assembled while a share is missing
    run_cli(_args(tiny_world, tmp_path / "sh", "--shard", "1/3"), capsys)
    final = run_cli(_args(tiny_world, tmp_path / "sh"), capsys)  # the last run assembles
    assert final.code == 0
    a = np.load(next((tmp_path / "one").glob("captions-*/probe-*.npz")))
    b = np.load(next((tmp_path / "sh").glob("captions-*/probe-*.npz")))
    assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files)


def test_prepare_with_a_fixed_tokenizer_builds_the_words_mask(tiny_world, tmp_path, capsys):
    from locvtp.data.tokenizer import train_tokenizer

    tok_dir = tmp_path / "tok"
    train_tokenizer(["a red box spins"], vocab_size=60).save(tok_dir)
    res = run_cli(_args(tiny_world, tmp_path / "p", f"data.tokenizer={tok_dir}"), capsys)
    assert res.code == 0 and "captions without words" in res.err
    assert list((tmp_path / "p").glob("captions-*/words-*.npz"))


def test_prepare_user_mistakes_are_one_line(tiny_world, tmp_path, capsys):
    assert_one_line_error(run_cli(_args(tiny_world, tmp_path / "p", "--shard", "2/2"), capsys), 2, "--shard")
    assert_one_line_error(run_cli(_args(tmp_path / "nowhere", tmp_path / "p"), capsys), 1, "caption.json")
    bad = tmp_path / "bad"
    (bad / "pretrain").mkdir(parents=True)
    (bad / "pretrain" / "caption.json").write_text('{"v": {"start": [0], "end": [1], "text": ["x"]},\n "w" 3}')
    assert_one_line_error(run_cli(_args(bad, tmp_path / "p"), capsys), 1, "caption.json", "line 2 column 6")
    (bad / "pretrain" / "caption.json").write_text(json.dumps({"v": {"start": [0], "end": [1], "text": [" "]}}))
    assert_one_line_error(run_cli(_args(bad, tmp_path / "p", "--strict"), capsys), 1, "caption.json", "empty sentence")
