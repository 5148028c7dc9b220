"""QVHighlights' scorers (issue 25 items 3-4): highlight detection and moment retrieval under Moment-DETR's
``standalone_eval`` names, each against a plain-loop reference and figures worked out by hand (ties, all-equal
saliency, a query without relevant clips, empty length buckets); `locvtp score qvhighlights` on hand-made files,
its one-line errors; and `locvtp evaluate` writing a submission that `locvtp score qvhighlights` reads."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from cli_helpers import assert_one_line_error, run_cli
from locvtp import metrics as M


# ------------------------------------------------------------------------------------- plain-loop references
def _loop_ap(labels: list[int], scores: list[float]) -> float:
    """Moment-DETR's ``get_ap`` spelled out: one operating point per distinct score (from the highest), the
    precision at each point made the max over the points at or below it, then the plain mean of that precision
    over the points where recall grows."""
    if all(v == 0 for v in labels):
        return 0.0
    if all(v == 1 for v in labels):
        return 1.0
    positives = sum(labels)
    points = []  # (precision, recall) from the highest threshold down
    for thr in sorted(set(scores), reverse=True):
        tp = sum(1 for y, s in zip(labels, scores) if s >= thr and y == 1)
        seen = sum(1 for s in scores if s >= thr)
        points.append((tp / seen, tp / positives))
    total, count, previous_recall = 0.0, 0, 0.0
    for i, (_, recall) in enumerate(points):
        if recall != previous_recall:
            total += max(p for p, _ in points[i:])
            count += 1
        previous_recall = recall
    return total / count


def _loop_highlight(preds: list[list[float]], gts: list[list[list[float]]]) -> dict[str, float]:
    out = {}
    for name, least in (("Fair", 2), ("Good", 3), ("VeryGood", 4)):
        aps, hits = [], []
        for p, g in zip(preds, gts):
            n = len(g)
            fitted = [p[i] if i < len(p) else 0.0 for i in range(n)]
            for a in range(len(g[0]) if n else 3):
                aps.append(_loop_ap([1 if row[a] >= least else 0 for row in g], fitted) if n else 0.0)
            best = max(range(len(p)), key=lambda i: (p[i], -i)) if p else None
            hits.append(1.0 if best is not None and best < n and any(v >= least for v in g[best]) else 0.0)
        out[f"HL-min-{name}-mAP"] = 100 * sum(aps) / len(aps)
        out[f"HL-min-{name}-Hit1"] = 100 * sum(hits) / len(hits)
    return out


def test_saliency_ap_by_hand_with_ties_and_one_class():
    # scores .9 .8 .7 .1, labels 1 0 1 0: recall 0.5 first at .9 (precision 1), recall 1 at .7 (2/3) -> 5/6
    assert M._saliency_ap(np.array([[1.], [0], [1], [0]]), np.array([.9, .8, .7, .1]))[0] == pytest.approx(5 / 6)
    # a tie enters together: .5 holds one positive and one negative (precision 1/2, interpolated to 2/3), the
    # last positive at .1 (2/3) -> mean(2/3, 2/3); a loop that split the tie positive-first would give 5/6
    assert M._saliency_ap(np.array([[1.], [0], [1]]), np.array([.5, .5, .1]))[0] == pytest.approx(2 / 3)
    # the mean is over recall levels, not weighted by the recall step: 3 positives, the first alone, two tied
    ap = M._saliency_ap(np.array([[1.], [0], [1], [1]]), np.array([.9, .8, .5, .5]))[0]
    assert ap == pytest.approx((1 + 0.75) / 2)  # weighted by recall steps it would be 1/3 + 2/3 * 0.75 = 0.833
    # one class only: no positive -> 0, only positives -> 1, whatever the scores; all scores equal -> P / n
    both = M._saliency_ap(np.array([[0., 1.], [0, 1]]), np.array([.2, .9]))
    assert both.tolist() == [0.0, 1.0]
    assert M._saliency_ap(np.array([[1.], [0], [0], [0]]), np.zeros(4))[0] == pytest.approx(0.25)


def test_highlight_detection_by_hand():
    g = M.highlight_labels(8, [1, 2], [[4, 2, 0], [1, 3, 4]])  # 4 clips, clips 0 and 3 unlisted (0)
    assert g.tolist() == [[0, 0, 0], [4, 2, 0], [1, 3, 4], [0, 0, 0]]
    m = M.highlight_detection([[0.1, 0.9, 0.3, 0.2]], [g])
    # Fair (>= 2): annotators {1}, {1, 2}, {2}; ranking 1, 2, 3, 0 -> AP 1, 1, 1/2
    assert m["HL-min-Fair-mAP"] == pytest.approx(100 * 2.5 / 3)
    # Good (>= 3): {1}, {2}, {2} -> 1, 1/2, 1/2; VeryGood (>= 4): {1}, {}, {2} -> 1, 0, 1/2
    assert m["HL-min-Good-mAP"] == pytest.approx(100 * 2 / 3)
    assert m["HL-min-VeryGood-mAP"] == pytest.approx(50.0)
    # the top clip (1) is labelled 4 by the first annotator: a hit at every threshold
    assert m["HL-min-Fair-Hit1"] == m["HL-min-Good-Hit1"] == m["HL-min-VeryGood-Hit1"] == 100.0
    assert list(m) == [f"HL-min-{n}-{k}" for n in ("Fair", "Good", "VeryGood") for k in ("mAP", "Hit1")]


def test_highlight_hit_ties_empty_and_unlabelled_queries():
    g = M.highlight_labels(6, [1], [[4, 4, 4]])
    # equal scores: np.argmax takes the first clip (0, unlabelled): a miss although clip 1 is as high
    assert M.highlight_detection([[0.5, 0.5, 0.1]], [g])["HL-min-Fair-Hit1"] == 0.0
    # the top clip past the video's labels (index 5 of a 3-clip video) is a miss; the AP cuts it off
    far = M.highlight_detection([[0.0, 0.3, 0.1, 0.0, 0.0, 0.9]], [g])
    assert far["HL-min-Fair-Hit1"] == 0.0 and far["HL-min-Fair-mAP"] == 100.0
    # a query without relevant clips: AP 0 and no hit; averaged with a perfect query -> 50
    none = M.highlight_labels(6, [], [])
    assert none.shape == (3, 3) and not none.any()
    both = M.highlight_detection([[0, 1, 0], [0, 1, 0]], [g, none])
    assert both["HL-min-Fair-mAP"] == 50.0 and both["HL-min-Fair-Hit1"] == 50.0
    # a shorter prediction is zero-padded (clip 2 gets 0, below clip 1's 0.2 and tied with nothing)
    assert M.highlight_detection([[0.1, 0.2]], [g])["HL-min-Fair-mAP"] == 100.0
    # a clip listed past int(duration / 2) extends the video instead of failing
    assert M.highlight_labels(5.9, [2], [[3, 3, 3]]).shape == (3, 3)


def test_highlight_detection_matches_the_plain_loop_on_random_ties():
    rng = np.random.default_rng(7)
    preds, gts = [], []
    for q in range(40):
        n = int(rng.integers(1, 12))
        listed = sorted(rng.choice(n, size=int(rng.integers(0, n + 1)), replace=False).tolist())
        labels = rng.integers(0, 5, size=(len(listed), 3)).tolist()
        gts.append(M.highlight_labels(2 * n, listed, labels if listed else []))
        length = int(rng.integers(0, n + 3))
        preds.append(rng.integers(0, 4, size=length).astype(float).tolist())  # few values: many ties
    got = M.highlight_detection(preds, gts)
    want = _loop_highlight(preds, [g.tolist() for g in gts])
    assert got.keys() == want.keys()
    for k in want:
        assert got[k] == pytest.approx(want[k], abs=1e-9), k


# ------------------------------------------------------------------------------------------ moment retrieval
def test_moment_retrieval_buckets_by_hand():
    preds = [np.array([[0, 2, 0.9], [1, 3, 0.5]]), np.array([[10, 40, 0.9]])]
    gts = [np.array([[0, 2], [2, 3]]), np.array([[10, 45]])]
    m = M.moment_retrieval_metrics(preds, gts)
    # query 1 (short windows): AP 1 up to IoU 0.5 for the 2nd GT ... = moment_retrieval_map's 55;
    # query 2 (35 s, long): IoU 30/35 = 0.857 hits thresholds 0.5..0.85 (8 of 10) -> 80; no middle window
    assert m["MR-short-mAP"] == pytest.approx(55.0) and m["MR-long-mAP"] == pytest.approx(80.0)
    assert "MR-middle-mAP" not in m
    assert m["MR-full-mAP"] == pytest.approx(67.5)
    assert m["MR-full-R1@0.5"] == 100.0 and m["MR-full-R1@0.7"] == 100.0
    assert set(m) == {"MR-full-mAP", "MR-full-mAP@0.5", "MR-full-mAP@0.75", "MR-full-R1@0.5", "MR-full-R1@0.7",
                      "MR-short-mAP", "MR-long-mAP"}


def test_moment_retrieval_r1_counts_iou_equal_to_the_threshold():
    # IoU exactly 0.5 ([0, 1] vs [0, 2]): standalone_eval's R1 is >= (2D-TAN's grounding recall is >)
    m = M.moment_retrieval_metrics([np.array([[0.0, 1.0, 1.0]])], [np.array([[0.0, 2.0]])])
    assert m["MR-full-R1@0.5"] == 100.0 and m["MR-full-R1@0.7"] == 0.0
    assert M.grounding_recall([np.array([[0.0, 1.0]])], np.array([[0.0, 2.0]]))["R1@0.5"] == 0.0


def test_moment_retrieval_buckets_match_a_plain_loop_filter():
    rng = np.random.default_rng(3)
    preds, gts = [], []
    for _ in range(30):
        starts = rng.uniform(0, 100, size=int(rng.integers(1, 4)))
        gts.append(np.stack([starts, starts + rng.choice([5.0, 10.0, 20.0, 30.0, 45.0], size=len(starts))], 1))
        s = rng.uniform(0, 120, size=5)
        preds.append(np.stack([s, s + rng.uniform(1, 40, size=5), rng.random(5)], 1))
    got = M.moment_retrieval_metrics(preds, gts)
    for name, lo, hi in (("short", 0, 10), ("middle", 10, 30), ("long", 30, 150)):
        keep_p, keep_g = [], []
        for p, g in zip(preds, gts):
            rows = [w for w in g.tolist() if lo < w[1] - w[0] <= hi]  # boundaries: 10 is short, 30 middle
            if rows:
                keep_p.append(p)
                keep_g.append(np.array(rows))
        assert got[f"MR-{name}-mAP"] == M.moment_retrieval_map(keep_p, keep_g)["mAP"], name
    full = M.moment_retrieval_map(preds, gts)
    assert got["MR-full-mAP"] == full["mAP"] and got["MR-full-R1@0.7"] == full["R1@0.7"]


# ------------------------------------------------------------------------------------------------ the command
ANNOTATIONS = [  # three queries: 5 s, 20 s and 40 s windows; 20-s videos except the last
    {"qid": 11, "query": "a cat jumps", "duration": 20, "vid": "v1", "relevant_windows": [[2, 6], [10, 11]],
     "relevant_clip_ids": [1, 2, 5], "saliency_scores": [[4, 3, 2], [2, 2, 2], [0, 1, 4]]},
    {"qid": 12, "query": "a dog barks", "duration": 20, "vid": "v2", "relevant_windows": [[0, 20]],
     "relevant_clip_ids": [0, 1], "saliency_scores": [[1, 1, 1], [3, 3, 3]]},
    {"qid": 13, "query": "rain falls", "duration": 60, "vid": "v3", "relevant_windows": [[10, 50]],
     "relevant_clip_ids": [], "saliency_scores": []},
]
SUBMISSION = [
    {"qid": 11, "query": "a cat jumps", "vid": "v1", "pred_relevant_windows": [[2, 6, 0.9], [10, 12, 0.5]],
     "pred_saliency_scores": [0.1, 0.8, 0.3, 0, 0, 0.2, 0, 0, 0, 0]},
    {"qid": 12, "vid": "v2", "pred_relevant_windows": [[0, 10, 0.7]], "pred_saliency_scores": [0.5, 0.5]},
    {"qid": 13, "vid": "v3", "pred_relevant_windows": [[10, 50, 0.1]], "pred_saliency_scores": [1, 2, 3]},
]


def _files(tmp_path: Path, sub: list, ann: list = ANNOTATIONS) -> tuple[Path, Path]:
    a, p = tmp_path / "highlight_val_release.jsonl", tmp_path / "submission.jsonl"
    a.write_text("".join(json.dumps(x) + "\n" for x in ann))
    p.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in sub))
    return p, a


def test_score_qvhighlights_by_hand(tmp_path, capsys):
    p, a = _files(tmp_path, SUBMISSION)
    res = run_cli(["score", "qvhighlights", "--predictions", p, "--annotations", a, "--out", tmp_path / "m.json"],
                  capsys)
    assert res.code == 0, res.err
    m = json.loads(res.out)
    # MR: q11 perfect top window (R1 hit); q12 [0, 10] vs [0, 20] = 0.5 (R1@0.5 hit, @0.7 miss); q13 perfect
    assert m["MR-full-R1@0.5"] == 100.0 and m["MR-full-R1@0.7"] == pytest.approx(200 / 3)
    # q11 AP: 2 GTs; [2, 6] hits [2, 6] at every threshold, [10, 12] vs [10, 11] IoU 0.5 hits at 0.5 only:
    # AP@0.5 = 1, above: recall 1/2 at precision 1 -> 0.5. q12: AP@0.5 = 1, else 0. q13: 1 everywhere.
    assert m["MR-full-mAP@0.5"] == pytest.approx(100.0)
    assert m["MR-full-mAP"] == pytest.approx(100 * (0.55 + 0.1 + 1.0) / 3)
    assert m["MR-short-mAP"] == pytest.approx(55.0)  # q11's [2, 6] (4 s) and [10, 11] (1 s): both short
    assert m["MR-middle-mAP"] == pytest.approx(10.0)  # q12 (20 s)
    assert m["MR-long-mAP"] == pytest.approx(100.0)  # q13 (40 s)
    # HD, Fair (>= 2): q11 annotators {1, 2}, {1, 2}, {1, 2, 5}; ranking 1 (.8), 2 (.3), 5 (.2), 0 (.1), rest 0
    # -> AP 1, 1, 1; q12 annotators {1} each, both clips tied at .5 -> precision 1/2 -> 0.5 x 3; q13 no
    # relevant clip -> 0 x 3. Hit1: q11 clip 1 labelled (4, 3, 2) hit; q12 argmax = clip 0 (1, 1, 1) miss; q13 miss
    assert m["HL-min-Fair-mAP"] == pytest.approx(100 * (3 + 1.5) / 9)
    assert m["HL-min-Fair-Hit1"] == pytest.approx(100 / 3)
    # VeryGood (>= 4): q11 annotator 1 {1}, annotator 2 {}, annotator 3 {5} (rank 3: 1/3) -> (1 + 0 + 1/3)
    assert m["HL-min-VeryGood-mAP"] == pytest.approx(100 * (1 + 1 / 3) / 9)
    keys = list(m)
    assert keys[:8] == sorted(keys[:8]) and all(k.startswith("MR-") for k in keys[:8])
    assert "1 scored queries have no highlight labels (the first: qid 13)" in res.err
    saved = json.loads((tmp_path / "m.json").read_text())
    assert saved["metrics"] == m and saved["queries"] == 3 and saved["unpredicted"] == 0


def test_score_qvhighlights_windows_only_and_missing_queries(tmp_path, capsys):
    sub = [{k: v for k, v in SUBMISSION[0].items() if k != "pred_saliency_scores"}]
    p, a = _files(tmp_path, sub)
    res = run_cli(["score", "qvhighlights", "--predictions", p, "--annotations", a], capsys)
    assert res.code == 0, res.err
    m = json.loads(res.out)
    assert not any(k.startswith("HL-") for k in m) and m["MR-full-mAP"] == pytest.approx(55.0)
    assert "MR-middle-mAP left out" in res.err and "2 annotated queries have no prediction" in res.err
    res = run_cli(["score", "qvhighlights", "--predictions", p, "--annotations", a, "--require-all"], capsys)
    assert_one_line_error(res, 1, "2 of the 3 annotated queries have no prediction (the first: qid 12")


@pytest.mark.parametrize("line, message", [
    ("{oops", "not a JSON object"),
    ('{"vid": "v2", "pred_relevant_windows": []}', "no 'qid' field"),
    ('{"qid": 99, "pred_relevant_windows": []}', "qid 99 is not annotated"),
    ('{"qid": 12, "vid": "v9", "pred_relevant_windows": [], "pred_saliency_scores": []}', "qid 12 is video 'v2'"),
    ('{"qid": 11, "pred_relevant_windows": [], "pred_saliency_scores": []}', "qid 11 is predicted twice"),
    ('{"qid": 12}', "no 'pred_relevant_windows' or 'pred_saliency_scores' field"),
    ('{"qid": 12, "pred_relevant_windows": []}', "no 'pred_saliency_scores' field, which the earlier lines have"),
    ('{"qid": 12, "pred_relevant_windows": [[1, 2]], "pred_saliency_scores": []}', "[start, end, score]"),
    ('{"qid": 12, "pred_relevant_windows": [[3, 2, 1]], "pred_saliency_scores": []}', "ends before it starts"),
    ('{"qid": 12, "pred_relevant_windows": [], "pred_saliency_scores": [1, "x"]}', "holds a non-number"),
    ('{"qid": 12, "pred_relevant_windows": [], "pred_saliency_scores": 3}', "must be a list of numbers"),
])
def test_a_bad_submission_line_is_one_error_naming_file_and_line(tmp_path, capsys, line, message):
    p, a = _files(tmp_path, [SUBMISSION[0], line])
    res = run_cli(["score", "qvhighlights", "--predictions", p, "--annotations", a], capsys)
    assert_one_line_error(res, 1, f"{p}:2:", message)
    assert res.out == ""


def test_bad_annotations_and_options_are_one_line(tmp_path, capsys):
    bad = [dict(ANNOTATIONS[0], relevant_clip_ids=[1, 1], saliency_scores=[[1, 1, 1], [2, 2, 2]])]
    p, a = _files(tmp_path, SUBMISSION[:1], bad)
    res = run_cli(["score", "qvhighlights", "--predictions", p, "--annotations", a], capsys)
    assert_one_line_error(res, 1, str(a), "line 1", "lists a clip twice")
    no_labels = [{k: v for k, v in ANNOTATIONS[0].items() if k not in ("relevant_clip_ids", "saliency_scores")}]
    p, a = _files(tmp_path, SUBMISSION[:1], no_labels)
    res = run_cli(["score", "qvhighlights", "--predictions", p, "--annotations", a], capsys)
    assert_one_line_error(res, 1, str(a), "highlight detection cannot be scored")
    res = run_cli(["score", "qvhighlights", "--predictions", p, "--annotations", a, "--name", "x"], capsys)
    assert_one_line_error(res, 2, "--name")


def test_evaluate_writes_a_qvhighlights_submission_that_score_reads(tiny_world, tiny_checkpoint, tmp_path, capsys):
    from locvtp.downstream import evaluate_all, load_options

    out = tmp_path / "eval"
    opts = load_options(None, ["grounding.dataset=qvhighlights", "grounding.head=false"])
    metrics = evaluate_all(tiny_checkpoint, tiny_world, out_dir=out, tasks=("grounding",), options=opts,
                           progress=False, verbose=False, threads=1)
    ann = Path(tiny_world) / "grounding" / "qvhighlights" / "highlight_val_release.jsonl"
    truth = {str(r["qid"]): r for r in map(json.loads, ann.read_text().splitlines())}
    lines = [json.loads(x) for x in (out / "qvhighlights_submission.jsonl").read_text().splitlines()]
    assert lines and metrics["grounding_R1@0.5"] >= 0
    for line in lines:
        gt = truth[str(line["qid"])]  # the annotation's own qid, not a position
        assert line["vid"] == gt["vid"] and line["query"] == gt["query"]
        assert len(line["pred_saliency_scores"]) == math.ceil(gt["duration"] / 2 - 1e-9)
        assert all(-1.0 <= s <= 1.0 for s in line["pred_saliency_scores"])  # cosines
        assert 1 <= len(line["pred_relevant_windows"]) <= 10
        assert all(len(w) == 3 for w in line["pred_relevant_windows"])
    res = run_cli(["score", "qvhighlights", "--predictions", out / "qvhighlights_submission.jsonl",
                   "--annotations", ann], capsys)
    assert res.code == 0, res.err
    m = json.loads(res.out)
    assert {"MR-full-mAP", "MR-full-R1@0.5", "HL-min-Fair-mAP", "HL-min-VeryGood-Hit1"} <= set(m)
    assert all(0.0 <= v <= 100.0 for v in m.values())
    # the submission's top windows are the grounding file's: its R1@0.7 (>=) is at least grounding's (>)
    assert m["MR-full-R1@0.7"] >= metrics["grounding_R1@0.7"] - 1e-9
