"""`locvtp ground`: window scoring on planted curves, and the command on a synthetic MP4 / precomputed features."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from inference_helpers import make_checkpoint


def _iou(a, b) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    return inter / (max(a[1], b[1]) - min(a[0], b[0]))


def test_ground_embeddings_finds_planted_window():
    from locvtp.localize import ground_embeddings

    rng = np.random.default_rng(0)
    d, n = 32, 20
    sentence = rng.normal(size=d)
    sentence /= np.linalg.norm(sentence)
    clips = rng.normal(size=(n, d)) * 0.3
    clips[6:10] += 2.0 * sentence  # clips 6..9 show the query
    clips /= np.linalg.norm(clips, axis=1, keepdims=True)
    windows = np.stack([np.arange(n) * 0.5, np.arange(n) * 0.5 + 0.5], 1)
    res = ground_embeddings(clips, windows, sentence, None, query="q", top_k=4, nms_threshold=0.5)
    assert _iou(res.windows[0], (3.0, 5.0)) >= 0.75  # the planted moment (up to the scoring's boundary slack)
    for kind in ("tstat", "contrast"):  # the global contrasts recover it exactly on this clean curve
        exact = ground_embeddings(clips, windows, sentence, None, top_k=1, window_score=kind)
        assert tuple(exact.windows[0]) == (3.0, 5.0), kind
    assert len(res.windows) == 4
    assert np.all(np.diff(res.scores) <= 0)
    for i in range(len(res.windows)):  # NMS: no two kept windows overlap by more than the threshold
        for j in range(i):
            assert _iou(res.windows[i], res.windows[j]) <= 0.5
    assert np.all((res.windows[:, 0] >= 0) & (res.windows[:, 1] <= 10.0) & (res.windows[:, 0] < res.windows[:, 1]))
    one = ground_embeddings(clips, windows, sentence, None, top_k=1, max_clips=2, window_score="tstat")
    assert one.windows[0, 1] - one.windows[0, 0] <= 1.0 and 3.0 <= one.windows[0, 0] <= 4.5
    for kind in (None, "oic"):  # max_clips bounds every kind
        w = ground_embeddings(clips, windows, sentence, None, top_k=3, max_clips=2, window_score=kind).windows
        assert np.all(w[:, 1] - w[:, 0] <= 1.0 + 1e-9)


def test_ground_embeddings_rejects_bad_input():
    from locvtp.localize import ground_embeddings

    with pytest.raises(ValueError, match="clip windows"):
        ground_embeddings(np.ones((3, 4)), np.zeros((2, 2)), np.ones(4))
    with pytest.raises(ValueError, match="top_k"):
        ground_embeddings(np.ones((3, 4)), np.zeros((3, 2)), np.ones(4), top_k=0)


@pytest.fixture(scope="module")
def ckpt(tiny_world, tmp_path_factory):
    return make_checkpoint(tiny_world, tmp_path_factory.mktemp("ground") / "ckpt")


def test_cli_on_mp4_and_on_features_agree(ckpt, tiny_world, tmp_path, capsys):
    from locvtp.commands.extract import main as extract_main
    from locvtp.commands.ground import main

    ann = json.loads((tiny_world / "grounding" / "activitynet" / "val_1.json").read_text())
    vid, item = sorted(ann.items())[0]
    video = tiny_world / "videos" / f"{vid}.mp4"
    query = item["sentences"][0]
    png = tmp_path / "plot.png"
    assert main(["--checkpoint", str(ckpt), str(video), query, "--top-k", "3", "--plot", str(png), "--curve"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["query"] == query and res["duration"] == pytest.approx(item["duration"]) and res["vid"] == vid
    assert 1 <= len(res["pred_relevant_windows"]) <= 3
    for start, end, _score in res["pred_relevant_windows"]:
        assert 0.0 <= start < end <= item["duration"] + 1e-6
    assert len(res["clip_scores"]) == len(res["clip_windows"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the same through precomputed features
    feats = tmp_path / "f.h5"
    lst = tmp_path / "l.txt"
    lst.write_text(str(video))
    assert extract_main(["--checkpoint", str(ckpt), "--videos", str(lst), "--out", str(feats), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["--checkpoint", str(ckpt), "--features", str(feats), "--video-id", vid, query, "--top-k", "3"]) == 0
    res2 = json.loads(capsys.readouterr().out)
    a, b = np.array(res2["pred_relevant_windows"]), np.array(res["pred_relevant_windows"])
    assert res2["vid"] == vid and a[:, :2].tolist() == b[:, :2].tolist()
    np.testing.assert_allclose(a[:, 2], b[:, 2], atol=1e-4)
    # what ground prints is a prediction line `locvtp score` reads (found by vid and query: no qid)
    from locvtp.commands.score import score_grounding

    preds = tmp_path / "ground.jsonl"
    preds.write_text(json.dumps(res) + "\n")
    scored = score_grounding(preds, tiny_world / "grounding" / "activitynet" / "val_1.json")
    (start, end, _), (gs, ge) = res["pred_relevant_windows"][0], item["timestamps"][0]
    iou = max(0.0, min(end, ge) - max(start, gs)) / (max(end, ge) - min(start, gs))
    assert scored["queries"] == 1 and scored["metrics"]["grounding_mIoU"] == pytest.approx(100 * iou)


def test_cli_errors(ckpt, tmp_path, capsys):
    from cli_helpers import assert_one_line_error, run_cli
    from locvtp.commands.ground import main

    res = run_cli(["ground", "--checkpoint", ckpt, tmp_path / "nope.mp4", "a query"], capsys)
    assert_one_line_error(res, 1, "nope.mp4")
    with pytest.raises(SystemExit):
        main(["--checkpoint", str(ckpt), "only a query"])


def test_window_score_choices_match_the_scorer():
    from locvtp.commands.ground import build_parser
    from locvtp.localize import WINDOW_SCORES

    (action,) = [a for a in build_parser()._actions if a.dest == "window_score"]
    assert tuple(action.choices) == tuple(WINDOW_SCORES) and len(WINDOW_SCORES) > 1


def test_plot_grounding_is_atomic(tmp_path, monkeypatch):
    """A plot that fails while being written leaves no temporary file and keeps the previous plot (issue #18)."""
    import matplotlib.figure

    from locvtp.localize import ground_embeddings
    from locvtp.commands.ground import plot_grounding

    rng = np.random.default_rng(0)
    clips = rng.normal(size=(8, 4)).astype(np.float32)
    windows = np.stack([np.arange(8), np.arange(8) + 1], 1).astype(float)
    res = ground_embeddings(clips, windows, clips[3], None, top_k=2)
    out = tmp_path / "g.png"
    plot_grounding(res, out)
    good = out.read_bytes()
    assert good[:4] == b"\x89PNG"

    def fail(self, fname, **kw):
        Path(fname).write_bytes(b"half")
        raise RuntimeError("renderer died")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", fail)
    with pytest.raises(RuntimeError, match="renderer died"):
        plot_grounding(res, out)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [".locvtp-files.json", "g.png"] and out.read_bytes() == good  # the plot and its ownership record
