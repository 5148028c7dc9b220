"""`locvtp score retrieval|steps|segmentation`: every user mistake is one line naming the file, line or flag,
exit 2 for usage, 1 for a file that cannot be scored. Rows: ``(id, argv builder, exit code, needles)``; the
builder gets ``W`` (the paths of small valid files) and returns the argv after ``locvtp``."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from cli_helpers import assert_one_line_error, run_cli


@pytest.fixture
def W(tmp_path) -> SimpleNamespace:
    csv = tmp_path / "MSRVTT_JSFUSION_test.csv"
    csv.write_text("key,vid_key,video_id,sentence\nr0,m0,va,cap a\nr1,m1,vb,cap b\n")
    sim = tmp_path / "sim.npz"
    np.savez(sim, sim=np.eye(2, dtype=np.float32), video_ids=np.array(["va", "vb"]),
             query_video_ids=np.array(["va", "vb"]), queries=np.array(["cap a", "cap b"]))
    ct = tmp_path / "crosstask"
    (ct / "annotations").mkdir(parents=True)
    (ct / "tasks_primary.txt").write_text("100\nmake tea\nhttp://x\n2\nboil,pour\n\n")
    (ct / "videos_val.csv").write_text("100,vidA,http://a\n")
    (ct / "annotations" / "100_vidA.csv").write_text("1,0,1\n2,2,3\n")
    coin = tmp_path / "COIN.json"
    coin.write_text(json.dumps({"database": {"c1": {"subset": "testing", "recipe_type": 0, "class": "c",
                                                    "duration": 4.0, "annotation": [
                                                        {"id": "1", "segment": [0, 2], "label": "cut"}]}}}))
    return SimpleNamespace(tmp=tmp_path, csv=csv, sim=sim, ct=ct, coin=coin)


def _npz(W, name: str, **arrays) -> Path:
    base = {"sim": np.eye(2, dtype=np.float32), "video_ids": np.array(["va", "vb"]),
            "query_video_ids": np.array(["va", "vb"]), "queries": np.array(["cap a", "cap b"])}
    base.update(arrays)
    p = W.tmp / name
    np.savez(p, **{k: v for k, v in base.items() if v is not None})
    return p


def _lines(W, name: str, *rows) -> Path:
    p = W.tmp / name
    p.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return p


STEP = {"task": "100", "video_id": "vidA", "num_clips": 4, "clip_stride": 1.0, "step_clips": [0, 2]}
SEG = {"video_id": "c1", "frame_times": [0.5, 1.5, 2.5], "pred": ["cut", "cut", "background"]}
R, S, G = ("score", "retrieval", "--predictions"), ("score", "steps", "--predictions"), \
    ("score", "segmentation", "--predictions")

ROWS = [
    ("retrieval-no-file", lambda W: [*R, W.tmp / "none.npz", "--annotations", W.csv], 2,
     ["--predictions", "no such file"]),
    ("retrieval-not-npz", lambda W: [*R, W.csv, "--annotations", W.csv], 1, ["not a .npz"]),
    ("retrieval-missing-array", lambda W: [*R, _npz(W, "a.npz", queries=None), "--annotations", W.csv], 1,
     ["a.npz", "no 'queries' array"]),
    ("retrieval-nan", lambda W: [*R, _npz(W, "b.npz", sim=np.array([[1, np.nan], [0, 1]], np.float32)),
                                 "--annotations", W.csv], 1, ["b.npz", "sim[0, 1] is NaN or inf"]),
    ("retrieval-shape", lambda W: [*R, _npz(W, "c.npz", queries=np.array(["cap a"])), "--annotations", W.csv], 1,
     ["'queries' must be 2 strings"]),
    ("retrieval-unannotated-row", lambda W: [*R, _npz(W, "d.npz", queries=np.array(["cap a", "other"])),
                                             "--annotations", W.csv], 1, ["row 1", "'other'", "not an annotated"]),
    ("retrieval-column-twice", lambda W: [*R, _npz(W, "e.npz", video_ids=np.array(["va", "va"])),
                                          "--annotations", W.csv], 1, ["video 'va' is a column twice"]),
    ("retrieval-bad-annotations", lambda W: [*R, W.sim, "--annotations", W.coin.with_suffix(".xml")], 2,
     ["--annotations", "no such file"]),
    ("retrieval-split-flag", lambda W: [*R, W.sim, "--annotations", W.csv, "--split", "val"], 2,
     ["--split: not used by the retrieval task"]),
    ("steps-not-a-dir", lambda W: [*S, _lines(W, "s.jsonl", STEP), "--annotations", W.csv], 2,
     ["--annotations", "not a directory"]),
    ("steps-unknown-video", lambda W: [*S, _lines(W, "s.jsonl", dict(STEP, video_id="x")), "--annotations", W.ct],
     1, ["s.jsonl:1", "video 'x' of task '100' is not an annotated val video"]),
    ("steps-twice", lambda W: [*S, _lines(W, "s.jsonl", STEP, STEP), "--annotations", W.ct], 1,
     ["s.jsonl:2", "predicted twice"]),
    ("steps-wrong-count", lambda W: [*S, _lines(W, "s.jsonl", dict(STEP, step_clips=[0])), "--annotations", W.ct],
     1, ["s.jsonl:1", "step_clips must be a list of 2 entries"]),
    ("steps-clip-out-of-range", lambda W: [*S, _lines(W, "s.jsonl", dict(STEP, step_clips=[0, 4])),
                                           "--annotations", W.ct], 1, ["step 2's clip 4 is not a clip index in 0..3"]),
    ("steps-bad-stride", lambda W: [*S, _lines(W, "s.jsonl", dict(STEP, clip_stride=0)), "--annotations", W.ct],
     1, ["clip_stride must be a positive number"]),
    ("steps-empty", lambda W: [*S, _lines(W, "s.jsonl"), "--annotations", W.ct], 1, ["no prediction lines"]),
    ("steps-name-flag", lambda W: [*S, _lines(W, "s.jsonl", STEP), "--annotations", W.ct, "--name", "x"], 2,
     ["--name: not used by the steps task"]),
    ("segmentation-training-video", lambda W: [*G, _lines(W, "g.jsonl", dict(SEG, video_id="zz")),
                                               "--annotations", W.coin], 1, ["g.jsonl:1", "not a testing video"]),
    ("segmentation-length", lambda W: [*G, _lines(W, "g.jsonl", dict(SEG, pred=["cut"])), "--annotations", W.coin],
     1, ["pred must be a list of 3 labels"]),
    ("segmentation-times", lambda W: [*G, _lines(W, "g.jsonl", dict(SEG, frame_times=[0, "x", 1])),
                                      "--annotations", W.coin], 1, ["frame_times holds a non-number"]),
    ("segmentation-bad-json", lambda W: [*G, _lines(W, "g.jsonl", "{oops"), "--annotations", W.coin], 1,
     ["g.jsonl:1", "not a JSON object"]),
    ("segmentation-no-video-id", lambda W: [*G, _lines(W, "g.jsonl", "{}"), "--annotations", W.coin], 1,
     ["g.jsonl:1", "no 'video_id' field"]),
    ("decimals-negative", lambda W: [*G, _lines(W, "g.jsonl", SEG), "--annotations", W.coin, "--decimals", "-1"],
     2, ["--decimals -1", "between 0 and 15"]),
]


@pytest.mark.parametrize("make, code, needles", [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_score_task_mistakes_are_one_line(W, capsys, make, code, needles):
    res = run_cli([str(a) for a in make(W)], capsys)
    assert_one_line_error(res, code, *needles)


def test_the_valid_files_score(W, capsys):
    for argv in ([*R, W.sim, "--annotations", W.csv], [*S, _lines(W, "ok.jsonl", STEP), "--annotations", W.ct],
                 [*G, _lines(W, "ok2.jsonl", SEG), "--annotations", W.coin]):
        res = run_cli([str(a) for a in argv], capsys)
        assert res.code == 0, res.err
    assert json.loads(res.out)["segmentation_acc"] == 100.0
