"""`locvtp score retrieval|steps|segmentation` (issue 25 item 3): figures worked out by hand on small files,
each scorer against a plain-loop reference, `locvtp evaluate` -> `locvtp score` reproducing evaluate's figures
exactly; `score grounding` matching QVHighlights lines by the annotation's qid (shuffled, duplicated, missing);
and a QVHighlights moment-retrieval pair worked out by hand with score ties and zero-length windows."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from cli_helpers import assert_one_line_error, run_cli
from locvtp import metrics as M
from locvtp import scoring


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _score(capsys, *argv) -> tuple[dict, str]:
    res = run_cli(["score", *map(str, argv)], capsys)
    assert res.code == 0, res.err
    return json.loads(res.out), res.err


# ------------------------------------------------------------------------------------------------- retrieval
JSFUSION = "key,vid_key,video_id,sentence\nret0,msra,va,cap a\nret1,msrb,vb,cap b\nret2,msrc,vc,cap c\n" \
           "ret3,msrd,vd,cap d\n"


def _sim_file(path: Path, sim, cols, rows) -> Path:
    np.savez(path, sim=np.asarray(sim, np.float32), video_ids=np.array(cols), query_video_ids=np.array(
        [v for v, _ in rows]), queries=np.array([c for _, c in rows]))
    return path


def test_score_retrieval_by_hand_rows_and_columns_in_any_order(tmp_path, capsys):
    ann = tmp_path / "MSRVTT_JSFUSION_test.csv"
    ann.write_text(JSFUSION)
    rows = [("vb", "cap b"), ("va", "cap a"), ("vc", "cap c")]  # vd: annotated, not predicted
    sim = [[0.1, 0.9, 0.5],  # columns va vb vc; vb's caption: 0.9 highest -> rank 0
           [0.5, 0.7, 0.5],  # va's caption: 0.7 above, tied with vc -> CLIP4Clip's ranks 1 and 2
           [0.2, 0.3, 0.1]]  # vc's caption: two above -> rank 2
    p = _sim_file(tmp_path / "sim.npz", sim, ["va", "vb", "vc"], rows)
    m, err = _score(capsys, "retrieval", "--predictions", p, "--annotations", ann)
    # text->video ranks 0, 1, 2, 2 (the tie expands into two positions)
    assert m["retrieval_R1"] == 25.0 and m["retrieval_R5"] == 100.0 and m["retrieval_R10"] == 100.0
    assert m["retrieval_MedianR"] == 2.5 and m["retrieval_MeanR"] == 2.25
    # video->text: vb's row [0.9, 0.7, 0.3] rank 0; va's [0.1, 0.5, 0.2] rank 0; vc's [0.5, 0.5, 0.1] rank 2
    assert m["retrieval_v2t_R1"] == pytest.approx(200 / 3) and m["retrieval_v2t_MedianR"] == 1.0
    assert m["retrieval_v2t_MeanR"] == pytest.approx(5 / 3)
    assert "scored 3 of 4 queries; 1 annotated queries have no prediction" in err
    # --name, and the same figures as metrics.retrieval_metrics on the diagonal-ordered matrix
    m2, _ = _score(capsys, "retrieval", "--predictions", p, "--annotations", ann, "--name", "retrieval_ft")
    want = M.retrieval_metrics(np.asarray(sim, np.float32)[:, [1, 0, 2]])
    assert {k: m2[f"retrieval_ft_{k}"] for k in want} == want
    res = run_cli(["score", "retrieval", "--predictions", p, "--annotations", ann, "--require-all"], capsys)
    assert_one_line_error(res, 1, "1 of the 4 annotated queries have no row")


def _loop_ranks(sim: np.ndarray, truth: list[int]) -> list[int]:
    """CLIP4Clip's ``compute_metrics`` rank extraction, one query at a time: the positions of the true candidate's
    score in the descending sort (every tied position)."""
    out = []
    for i, j in enumerate(truth):
        ordered = sorted(sim[i].tolist(), reverse=True)
        out += [r for r, v in enumerate(ordered) if v == sim[i, j]]
    return out


@pytest.mark.parametrize("seed", range(4))
def test_score_retrieval_matches_a_plain_loop_with_shuffled_columns(tmp_path, capsys, seed):
    rng = np.random.default_rng(seed)
    n = 12
    vids = [f"v{k}" for k in range(n)]
    ann = tmp_path / "MSRVTT_JSFUSION_test.csv"
    ann.write_text("key,vid_key,video_id,sentence\n" + "".join(f"r{k},m{k},{v},cap {k}\n" for k, v in enumerate(vids)))
    cols = list(rng.permutation(vids))
    rows = [(v, f"cap {v[1:]}") for v in rng.permutation(vids)]
    sim = rng.integers(0, 4, size=(n, n)).astype(np.float32)  # many ties
    m, _ = _score(capsys, "retrieval", "--predictions", _sim_file(tmp_path / "s.npz", sim, cols, rows),
                  "--annotations", ann)
    truth = [cols.index(v) for v, _ in rows]
    ranks = _loop_ranks(sim, truth)
    assert m["retrieval_R1"] == 100 * sum(r < 1 for r in ranks) / len(ranks)
    assert m["retrieval_R5"] == 100 * sum(r < 5 for r in ranks) / len(ranks)
    assert m["retrieval_MedianR"] == float(np.median(ranks)) + 1
    assert m["retrieval_MeanR"] == pytest.approx(sum(ranks) / len(ranks) + 1)
    # video->text: query = column video, candidates = the rows (captions)
    row_of = {v: i for i, (v, _) in enumerate(rows)}
    v2t = _loop_ranks(sim.T.copy(), [row_of[v] for v in cols])
    assert m["retrieval_v2t_R1"] == 100 * sum(r < 1 for r in v2t) / len(v2t)
    assert m["retrieval_v2t_MedianR"] == float(np.median(v2t)) + 1


def test_score_retrieval_several_captions_per_video(tmp_path, capsys):
    ann = tmp_path / "MSRVTT_data.json"
    ann.write_text(json.dumps({"videos": [{"video_id": v, "split": "test", "category": 0, "url": "", "id": k,
                                           "start time": 0, "end time": 10} for k, v in enumerate(["va", "vb"])],
                               "sentences": [{"caption": c, "video_id": v, "sen_id": k} for k, (v, c) in
                                             enumerate([("va", "a1"), ("va", "a2"), ("vb", "b1")])]}))
    rows = [("va", "a1"), ("vb", "b1"), ("va", "a2")]
    sim = [[0.9, 0.1], [0.8, 0.2], [0.5, 0.5]]  # a1 rank 0; b1 rank 1; a2 tied, va is column 0 -> rank 0 (stable)
    m, _ = _score(capsys, "retrieval", "--predictions", _sim_file(tmp_path / "s.npz", sim, ["va", "vb"], rows),
                  "--annotations", ann, "--name", "retrieval_allcap")
    assert m["retrieval_allcap_R1"] == pytest.approx(200 / 3)
    assert m["retrieval_allcap_MedianR"] == 1.0  # ranks 1, 2, 1 (+1): the middle one
    # video->text: max over each video's captions: va [max(0.9, 0.5), 0.8] -> rank 0; vb [max(0.1, 0.5), 0.2]
    assert m["retrieval_allcap_v2t_R1"] == 50.0


# ------------------------------------------------------------------------------------------------------- steps
TASKS = "100\nmake tea\nhttp://x\n3\nboil water,add tea,pour\n\n200\njump\nhttp://y\n2\nrun,jump\n\n"


@pytest.fixture
def crosstask(tmp_path) -> Path:
    root = tmp_path / "crosstask"
    (root / "annotations").mkdir(parents=True)
    (root / "tasks_primary.txt").write_text(TASKS)
    (root / "videos_val.csv").write_text("100,vidA,http://a\n100,vidB,http://b\n200,vidC,http://c\n"
                                         "200,vidD,http://d\n")
    (root / "videos.csv").write_text("")
    for name, rows in {"100_vidA": "1,0.5,2.2\n2,4.0,6.0\n3,8.0,9.0\n", "100_vidB": "1,0,1\n3,2,4\n",
                       "200_vidC": "1,0,2\n2,2,4\n", "200_vidD": "1,0,1\n"}.items():
        (root / "annotations" / f"{name}.csv").write_text(rows)
    return root


def test_score_steps_by_hand(tmp_path, capsys, crosstask):
    lines = [  # lines in any order; vidD not predicted
        {"task": "200", "video_id": "vidC", "num_clips": 3, "clip_stride": 2.0, "step_clips": [0, 2]},
        {"task": "100", "video_id": "vidA", "num_clips": 10, "clip_stride": 1.0, "step_clips": [1, 6, 8]},
        {"task": "100", "video_id": "vidB", "num_clips": 5, "clip_stride": 1, "step_clips": [0, [1, 2], None]},
    ]
    m, err = _score(capsys, "steps", "--predictions", _jsonl(tmp_path / "p.jsonl", lines), "--annotations",
                    crosstask)
    # vidA rows: step 1 on 0..2 (floor 0.5, ceil 2.2), step 2 on 4..5, step 3 on 8: clips 1, 6, 8 -> 2 of 3.
    # vidB: step 1 on 0 (hit), step 2 not annotated, step 3 on 2..3 not predicted -> 1 of 2 annotated.
    # task 100: 3 / 5. vidC on 2-s clips: step 1 rows 0..0, step 2 rows 1..1: clips 0, 2 -> 1 of 2.
    assert m == {"step_recall": pytest.approx(100 * (0.6 + 0.5) / 2)}
    assert "scored 3 of 4 videos; 1 annotated videos have no prediction" in err


def _loop_step_recall(y_true: dict, y_pred: dict) -> float:
    per_task = []
    for task, videos in y_true.items():
        hit = total = 0
        for vid, t in videos.items():
            if vid not in y_pred.get(task, {}):
                continue
            p = y_pred[task][vid]
            for k in range(t.shape[1]):
                if any(t[c][k] for c in range(t.shape[0])):
                    total += 1
                for c in range(t.shape[0]):
                    hit += int(t[c][k]) * int(p[c][k])
        per_task.append(hit / total)
    return 100 * sum(per_task) / len(per_task)


def _loop_assignment(n: int, k: int, segments, stride: float) -> np.ndarray:
    y = np.zeros((n, k), np.uint8)
    for row in range(n):
        for step, start, end in segments:
            # row r is on when floor(start / stride) <= r < ceil(end / stride)
            if np.floor(start / stride) <= row < np.ceil(end / stride):
                y[row, step - 1] = 1
    return y


@pytest.mark.parametrize("seed", range(5))
def test_step_recall_and_assignment_match_plain_loops(seed):
    rng = np.random.default_rng(seed)
    y_true, y_pred = {}, {}
    for task in ("a", "b", "c"):
        k = int(rng.integers(2, 5))
        for v in range(int(rng.integers(1, 4))):
            n, stride = int(rng.integers(k, 12)), float(rng.choice([0.5, 1.0, 2.0]))
            segs = [(s, float(a), float(a + rng.uniform(0.1, 4))) for s in range(1, k + 1)
                    for a in [rng.uniform(0, n * stride)]]
            t = scoring.assignment_matrix(n, k, segs, stride)
            assert (t == _loop_assignment(n, k, segs, stride)).all()
            if t.any():
                y_true.setdefault(task, {})[f"v{v}"] = t
                y_pred.setdefault(task, {})[f"v{v}"] = M.crosstask_viterbi(rng.normal(size=(n, k)))
    y_true = {t: v for t, v in y_true.items() if any(x.any() for x in v.values())}
    assert M.step_recall(y_true, y_pred)["recall"] == pytest.approx(_loop_step_recall(y_true, y_pred), abs=1e-12)


# ------------------------------------------------------------------------------------------------ segmentation
def _coin(tmp_path: Path) -> Path:
    def video(subset, duration, segs):
        return {"recipe_type": 0, "class": "c", "subset": subset, "video_url": "", "start": 0.0, "end": duration,
                "duration": duration, "annotation": [{"id": str(i), "segment": [a, b], "label": lab}
                                                     for i, (a, b, lab) in enumerate(segs)]}
    db = {"c1": video("testing", 6.0, [(1, 3, "cut"), (3, 5, "fry")]), "c2": video("testing", 5.0, [(0, 2, "cut")]),
          "c3": video("testing", 4.0, [(0, 4, "cut")]), "t1": video("training", 4.0, [(0, 2, "cut")])}
    p = tmp_path / "COIN.json"
    p.write_text(json.dumps({"database": db}))
    return p


def test_score_segmentation_by_hand(tmp_path, capsys):
    half = [0.5, 1.5, 2.5, 3.5, 4.5]
    lines = [{"video_id": "c2", "frame_times": half, "pred": ["cut", "cut", "fry", "cut", "cut"]},
             {"video_id": "c1", "frame_times": half + [5.5],
              "pred": ["background", "cut", "fry", "fry", "fry", "background"]}]
    m, err = _score(capsys, "segmentation", "--predictions", _jsonl(tmp_path / "p.jsonl", lines),
                    "--annotations", _coin(tmp_path))
    # truth at the frame times: c1 bg cut cut fry fry bg (5 of 6 right), c2 cut cut bg bg bg (2 of 5 right)
    assert m["segmentation_acc"] == pytest.approx(100 * 7 / 11)
    # c1 segments (cut, fry) = truth's: edit 100; c2 (cut, fry, cut) vs (cut): 2 edits over 3 -> 33.3
    assert m["segmentation_edit"] == pytest.approx((100 + 100 / 3) / 2)
    # c1: cut [1, 2) vs [1, 3) IoU 1/2, fry [2, 5) vs [3, 5) 2/3: 2 tp at 10/25/50 (>=). c2: cut [0, 2) tp;
    # fry wrong label and cut [3, 5) (its GT already hit) fp -> tp 3, fp 2, fn 0: P 3/5, R 1, F1 0.75
    assert m["segmentation_F1@10"] == m["segmentation_F1@25"] == m["segmentation_F1@50"] == pytest.approx(75.0)
    assert "scored 2 of 3 videos" in err
    # another background label: unannotated frames are 'none' in the truth, the predicted 'background' is wrong
    m2, _ = _score(capsys, "segmentation", "--predictions", tmp_path / "p.jsonl", "--annotations",
                   tmp_path / "COIN.json", "--background", "none")
    assert m2["segmentation_acc"] == pytest.approx(100 * (3 + 2) / 11)


@pytest.mark.parametrize("seed", range(3))
def test_frame_labels_match_a_plain_loop(seed):
    rng = np.random.default_rng(seed)
    segs = [(float(a), float(a + rng.uniform(0, 5)), f"s{i}") for i, a in enumerate(rng.uniform(0, 20, 6))]
    times = np.concatenate([rng.uniform(-1, 30, 40), [s for s, _, _ in segs], [e for _, e, _ in segs]])
    want = []
    for t in times:
        lab = "background"
        for a, b, name in segs:  # the last listed segment containing t
            if a <= t < b:
                lab = name
        want.append(lab)
    assert scoring.frame_labels(times, segs) == want


# ------------------------------------------------------------------------- evaluate -> score, figures equal
def test_score_reproduces_what_evaluate_printed(tiny_world, tiny_checkpoint, tmp_path, capsys):
    from locvtp.downstream import evaluate_all, load_options

    out = tmp_path / "eval"
    opts = load_options(None, ["retrieval.all_captions=true", "retrieval.finetune=true",
                               "retrieval.finetune_cfg.epochs=1", "segmentation.probe.epochs=30"])
    metrics = evaluate_all(tiny_checkpoint, tiny_world, out_dir=out, tasks=("retrieval", "steps", "segmentation"),
                           options=opts, progress=False, verbose=False, threads=1)
    w = Path(tiny_world)
    ranks = ("R1", "R5", "R10", "MedianR", "MeanR")
    for name, ann in (("retrieval", "MSRVTT_JSFUSION_test.csv"), ("retrieval_allcap", "MSRVTT_data.json"),
                      ("retrieval_ft", "MSRVTT_JSFUSION_test.csv")):
        got, _ = _score(capsys, "retrieval", "--predictions", out / f"{name}_similarity.npz", "--annotations",
                        w / "retrieval" / ann, "--name", name)
        want = {f"{name}_{v}{r}": metrics[f"{name}_{v}{r}"] for v in ("", "v2t_") for r in ranks
                if f"{name}_{v}{r}" in metrics}
        assert len(want) >= 5 and {k: got[k] for k in want} == want, name  # exactly
    got, _ = _score(capsys, "steps", "--predictions", out / "steps_predictions.jsonl", "--annotations",
                    w / "crosstask")
    assert got == {"step_recall": metrics["step_recall"]}
    got, _ = _score(capsys, "segmentation", "--predictions", out / "segmentation_predictions.jsonl",
                    "--annotations", w / "coin" / "COIN.json", "--require-all")
    want = {k: v for k, v in metrics.items() if k.startswith("segmentation_") and not k.endswith("_seconds")}
    assert len(want) == 5 and got == want


# -------------------------------------------------------------- score grounding on QVHighlights: keyed by qid
QV = [{"qid": 7, "query": "a cat", "duration": 30, "vid": "v1", "relevant_windows": [[2, 6]]},
      {"qid": 3, "query": "a dog", "duration": 30, "vid": "v2", "relevant_windows": [[10, 20], [22, 24]]},
      {"qid": 11, "query": "rain", "duration": 30, "vid": "v3", "relevant_windows": [[0, 8]]},
      {"qid": 5, "query": "sun", "duration": 30, "vid": "v4", "relevant_windows": [[4, 5]]}]
QV_PRED = [{"qid": 7, "vid": "v1", "pred_relevant_windows": [[2, 6, 0.9]]},
           {"qid": 3, "vid": "v2", "pred_relevant_windows": [[10, 14, 0.8], [10, 20, 0.5]]},
           {"qid": 11, "vid": "v3", "pred_relevant_windows": [[0, 2, 0.3]]}]


def test_score_grounding_matches_qvhighlights_lines_by_qid(tmp_path, capsys):
    ann = _jsonl(tmp_path / "highlight_val_release.jsonl", QV)
    m, err = _score(capsys, "grounding", "--predictions", _jsonl(tmp_path / "p.jsonl", QV_PRED), "--annotations", ann)
    # the first window of each query is 2D-TAN's truth: q7 IoU 1; q3 [10, 14] vs [10, 20] 0.4 (R5: 1); q11 0.25
    assert m["grounding_R1@0.3"] == pytest.approx(200 / 3) and m["grounding_R1@0.5"] == pytest.approx(100 / 3)
    assert m["grounding_R5@0.5"] == pytest.approx(200 / 3)
    assert m["grounding_mIoU"] == pytest.approx(100 * (1 + 0.4 + 0.25) / 3)
    assert "scored 3 of 4 queries; 1 annotated queries have no prediction" in err
    for seed in range(3):  # any line order scores the same
        lines = QV_PRED[:]
        random.Random(seed).shuffle(lines)
        assert _score(capsys, "grounding", "--predictions", _jsonl(tmp_path / "s.jsonl", lines),
                      "--annotations", ann)[0] == m
    cases = [([*QV_PRED, QV_PRED[1]], "bad.jsonl:4: qid 3 is predicted twice"),
             ([{"qid": 1, "pred_relevant_windows": []}], "qid 1 is not an annotated query"),
             ([{"qid": 0, "pred_relevant_windows": []}], "qid 0 is not an annotated query"),  # not a position
             ([dict(QV_PRED[0], vid="v2")], "qid 7 is video 'v1' in the annotations")]
    for lines, needle in cases:
        res = run_cli(["score", "grounding", "--predictions", _jsonl(tmp_path / "bad.jsonl", lines),
                       "--annotations", ann], capsys)
        assert_one_line_error(res, 1, str(tmp_path / "bad.jsonl"), needle)
    res = run_cli(["score", "grounding", "--predictions", tmp_path / "p.jsonl", "--annotations", ann,
                   "--require-all"], capsys)
    assert_one_line_error(res, 1, "1 of the 4 annotated queries have no prediction (the first: qid 5")
    twice = _jsonl(tmp_path / "twice.jsonl", [*QV, dict(QV[0], vid="v9")])
    res = run_cli(["score", "grounding", "--predictions", tmp_path / "p.jsonl", "--annotations", twice], capsys)
    assert_one_line_error(res, 1, str(twice), "qid 7 is annotated twice")


def test_evaluate_on_qvhighlights_writes_lines_keyed_by_qid_that_score_reproduces(tiny_world, tiny_checkpoint,
                                                                                  tmp_path, capsys):
    from locvtp.downstream import evaluate_all, load_options

    out = tmp_path / "eval"
    opts = load_options(None, ["grounding.dataset=qvhighlights", "grounding.head=false", "grounding.words=all"])
    metrics = evaluate_all(tiny_checkpoint, tiny_world, out_dir=out, tasks=("grounding",), options=opts,
                           progress=False, verbose=False, threads=1)
    ann = Path(tiny_world) / "grounding" / "qvhighlights" / "highlight_val_release.jsonl"
    lines = (out / "grounding_predictions.jsonl").read_text().splitlines()
    qids = {json.loads(x)["qid"] for x in ann.read_text().splitlines()}
    assert lines and all(json.loads(x)["qid"] in qids for x in lines)
    lines.reverse()  # order does not matter any more
    p = _jsonl(tmp_path / "reversed.jsonl", lines)
    got, _ = _score(capsys, "grounding", "--predictions", p, "--annotations", ann)
    want = {k: v for k, v in metrics.items() if k.startswith("grounding_") and not k.endswith("_seconds")}
    assert got == want


# --------------------------------------------------- QVHighlights moment retrieval: a pair worked out by hand
QV_MR = [{"qid": 1, "query": "q1", "duration": 20, "vid": "a", "relevant_windows": [[0, 10]]},
         {"qid": 2, "query": "q2", "duration": 150, "vid": "b", "relevant_windows": [[20, 40], [50, 54]]},
         {"qid": 3, "query": "q3", "duration": 60, "vid": "c", "relevant_windows": [[0, 40]]}]
QV_MR_PRED = [  # score ties (kept in the given order) and zero-length windows (IoU 0 with everything)
    {"qid": 3, "pred_relevant_windows": [[0, 20, 0.3], [0, 40, 0.3]]},
    {"qid": 1, "pred_relevant_windows": [[0, 10, 0.5], [0, 5, 0.5], [5, 5, 0.9]]},
    {"qid": 2, "pred_relevant_windows": [[30, 30, 1.0], [20, 40, 0.2]]}]


def test_qvhighlights_moment_retrieval_worked_out_by_hand(tmp_path, capsys):
    ann = _jsonl(tmp_path / "gt.jsonl", QV_MR)
    m, _ = _score(capsys, "qvhighlights", "--predictions", _jsonl(tmp_path / "p.jsonl", QV_MR_PRED),
                  "--annotations", ann)
    # AP, predictions by score (ties in the given order):
    # q1: [5, 5] .9 fp (IoU 0), [0, 10] tp (IoU 1), [0, 5] fp (its GT taken): precision 0, 1/2, 1/3 at recall
    #     0, 1, 1 -> AP 1/2 at every threshold (had the tie been broken the other way: 1/3 above 0.5).
    # q2: [30, 30] fp, [20, 40] tp of 2 GTs: recall 1/2 at precision 1/2 -> AP 1/4 at every threshold.
    # q3: [0, 20] IoU 1/2: tp at 0.5 only, then [0, 40] tp (at 0.5: its GT is taken -> fp): AP 1 at 0.5,
    #     1/2 above.
    assert m["MR-full-mAP@0.5"] == pytest.approx(100 * (0.5 + 0.25 + 1) / 3)
    assert m["MR-full-mAP@0.75"] == pytest.approx(100 * (0.5 + 0.25 + 0.5) / 3)
    assert m["MR-full-mAP"] == pytest.approx(100 * (1.75 + 9 * 1.25) / 30)
    # R1: the first window as given: q3 [0, 20] IoU 0.5 (>= 0.5 hit, 0.7 miss), q1 hit, q2 [30, 30] miss
    assert m["MR-full-R1@0.5"] == pytest.approx(200 / 3) and m["MR-full-R1@0.7"] == pytest.approx(100 / 3)
    # buckets by GT length, lo < length <= hi: short = q1 (10 s) and q2's [50, 54]; middle = q2's [20, 40];
    # long = q3. short: q1 1/2, q2 (only [50, 54]: both predictions miss) 0; middle: q2 fp then tp -> 1/2
    assert m["MR-short-mAP"] == pytest.approx(25.0)
    assert m["MR-middle-mAP"] == pytest.approx(50.0)
    assert m["MR-long-mAP"] == pytest.approx(55.0)  # (1 + 9 x 1/2) / 10
    # rounded as standalone_eval prints: 2 decimals
    assert {k: round(v, 2) for k, v in m.items()} == {
        "MR-full-R1@0.5": 66.67, "MR-full-R1@0.7": 33.33, "MR-full-mAP": 43.33, "MR-full-mAP@0.5": 58.33,
        "MR-full-mAP@0.75": 41.67, "MR-long-mAP": 55.0, "MR-middle-mAP": 50.0, "MR-short-mAP": 25.0}
    printed, _ = _score(capsys, "qvhighlights", "--predictions", tmp_path / "p.jsonl", "--annotations", ann,
                        "--decimals", "2")
    assert printed == {"MR-full-R1@0.5": 66.67, "MR-full-R1@0.7": 33.33, "MR-full-mAP": 43.33,
                       "MR-full-mAP@0.5": 58.33, "MR-full-mAP@0.75": 41.67, "MR-long-mAP": 55.0,
                       "MR-middle-mAP": 50.0, "MR-short-mAP": 25.0}


def test_qvhighlights_empty_window_list_is_ap_0_and_an_r1_miss(tmp_path, capsys):
    """standalone_eval leaves a query without windows out of the mAP and crashes in R1; here it counts 0."""
    ann = _jsonl(tmp_path / "gt.jsonl", QV_MR)
    lines = [*QV_MR_PRED[:2], {"qid": 2, "pred_relevant_windows": []}]
    m, _ = _score(capsys, "qvhighlights", "--predictions", _jsonl(tmp_path / "p.jsonl", lines), "--annotations", ann)
    assert m["MR-full-mAP@0.5"] == pytest.approx(100 * (0.5 + 0 + 1) / 3)
    assert m["MR-full-R1@0.5"] == pytest.approx(200 / 3)
