"""`locvtp score`: a predictions file in, the metrics out (issue 16 item 5), checked against committed golden
files and against what `locvtp evaluate` itself reports for the predictions it wrote."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "data" / "golden" / "grounding"


def _score(capsys, *argv: str) -> tuple[int, str, str]:
    from locvtp.cli import main

    rc = main(["score", *argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_golden_predictions_score_to_the_golden_metrics(capsys, tmp_path):
    rc, out, err = _score(capsys, "grounding", "--predictions", str(GOLDEN / "predictions.jsonl"),
                          "--annotations", str(GOLDEN / "annotations.json"), "--out", str(tmp_path / "m.json"))
    assert rc == 0, err
    golden = json.loads((GOLDEN / "metrics.json").read_text())
    assert json.loads(out) == golden["metrics"]
    assert json.loads((tmp_path / "m.json").read_text()) == golden
    # the golden figures by hand: top-1 IoUs 1, 0, 0.8 (hull denominator); every query has a hit in its top 5
    m = golden["metrics"]
    assert m["grounding_R1@0.7"] == pytest.approx(200 / 3) and m["grounding_R5@0.7"] == 100.0
    assert m["grounding_mIoU"] == pytest.approx(60.0)
    assert "scored 3 of 3 queries" in err


def _bad(tmp_path: Path, lines: list[str]) -> Path:
    p = tmp_path / "preds.jsonl"
    p.write_text("\n".join(lines) + "\n")
    return p


GOOD = '{"qid": 0, "vid": "v_one", "pred_relevant_windows": [[2.0, 6.0, 0.9]]}'


@pytest.mark.parametrize("line, message", [
    ("{not json", "not a JSON object"),
    ('[1, 2]', "expected a JSON object"),
    ('{"vid": "v_one", "pred_relevant_windows": []}', "no 'qid' field"),
    ('{"qid": 7, "pred_relevant_windows": []}', "qid 7 is not one of the annotation's 3 queries"),
    ('{"qid": 1, "vid": "v_two", "pred_relevant_windows": []}', "qid 1 is video 'v_one'"),
    ('{"qid": 1, "pred_relevant_windows": [[5, 1]]}', "ends before it starts"),
    ('{"qid": 1, "pred_relevant_windows": [["a", 1]]}', "non-number"),
    ('{"qid": 1, "pred_relevant_windows": [[1]]}', "must be [start, end]"),
    ('{"qid": 0, "pred_relevant_windows": [[1, 2]]}', "qid 0 is predicted twice"),
])
def test_a_bad_line_is_one_error_naming_file_and_line(capsys, tmp_path, line, message):
    p = _bad(tmp_path, [GOOD, line])
    rc, out, err = _score(capsys, "grounding", "--predictions", str(p), "--annotations",
                          str(GOLDEN / "annotations.json"))
    assert rc == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith("locvtp score: error: ")
    assert f"{p}:2:" in err and message in err, err


def test_lines_without_qid_are_found_by_video_and_query(capsys, tmp_path):
    """`locvtp ground` prints no qid: its line is placed by (vid, query) and scores as the golden qid line does;
    other fields (video, duration, warnings) are ignored."""
    golden = [json.loads(x) for x in (GOLDEN / "predictions.jsonl").read_text().splitlines()]
    ground_like = [json.dumps({"video": f"/v/{g['vid']}.mp4", "query": g["query"], "vid": g["vid"],
                               "duration": 1.0, "pred_relevant_windows": g["pred_relevant_windows"],
                               "warnings": []}) for g in golden]
    p = _bad(tmp_path, ground_like[::-1])  # any order
    rc, out, err = _score(capsys, "grounding", "--predictions", str(p), "--annotations",
                          str(GOLDEN / "annotations.json"))
    assert rc == 0, err
    assert json.loads(out) == json.loads((GOLDEN / "metrics.json").read_text())["metrics"]


@pytest.mark.parametrize("line, message", [
    ('{"vid": "v_one", "query": "a purple dog", "pred_relevant_windows": []}', "no annotated query 'a purple dog'"),
    ('{"vid": "v_one", "query": "a red ball rolls", "pred_relevant_windows": []}',
     "predicted more often than it is annotated (1)"),
])
def test_a_line_without_qid_that_matches_nothing_is_an_error(capsys, tmp_path, line, message):
    p = _bad(tmp_path, [GOOD.replace('"qid": 0, ', '"query": "a red ball rolls", '), line])
    rc, out, err = _score(capsys, "grounding", "--predictions", str(p), "--annotations",
                          str(GOLDEN / "annotations.json"))
    assert rc == 1 and out == "" and f"{p}:2:" in err and message in err, err


def test_missing_predictions_are_counted_or_refused(capsys, tmp_path):
    p = _bad(tmp_path, [GOOD])
    rc, out, err = _score(capsys, "grounding", "--predictions", str(p), "--annotations",
                          str(GOLDEN / "annotations.json"))
    assert rc == 0 and "2 annotated queries have no prediction" in err
    assert json.loads(out)["grounding_R1@0.7"] == 100.0
    rc, _, err = _score(capsys, "grounding", "--predictions", str(p), "--annotations",
                        str(GOLDEN / "annotations.json"), "--require-all")
    assert rc == 1 and "2 of the 3 annotated queries have no prediction (the first: qid 1" in err


def test_unknown_annotation_format_and_missing_file_are_usage_errors(capsys, tmp_path):
    weird = tmp_path / "ann.xml"
    weird.write_text("<x/>")
    rc, _, err = _score(capsys, "grounding", "--predictions", str(GOLDEN / "predictions.jsonl"),
                        "--annotations", str(weird))
    assert rc == 2 and "unknown annotation format '.xml'" in err
    rc, _, err = _score(capsys, "grounding", "--predictions", str(tmp_path / "none.jsonl"),
                        "--annotations", str(GOLDEN / "annotations.json"))
    assert rc == 2 and "--predictions" in err and "no such file" in err


def test_score_on_what_evaluate_wrote_reproduces_its_metrics_exactly(tiny_world, tiny_checkpoint, tmp_path,
                                                                     capsys):
    from locvtp.downstream import evaluate_all, load_options

    out = tmp_path / "eval"
    # one head seed: the head's predictions file holds the first seed's windows, its figures the seeds' mean
    opts = load_options(None, ["grounding.tan_cfg.epochs=2", "grounding.tan_cfg.seeds=1"])
    metrics = evaluate_all(tiny_checkpoint, tiny_world, out_dir=out, tasks=("grounding",), options=opts,
                           progress=False, verbose=False, threads=1)
    ann = str(Path(tiny_world) / "grounding" / "activitynet" / "val_1.json")
    names = ("grounding", "grounding_content", "head_grounding")
    for name in names:
        rc, printed, err = _score(capsys, "grounding", "--predictions", str(out / f"{name}_predictions.jsonl"),
                                  "--annotations", ann, "--name", name)
        assert rc == 0, err
        got = json.loads(printed)
        longer = [f"{n}_" for n in names if n != name and n.startswith(name)]  # grounding_ vs grounding_content_
        want = {k: v for k, v in metrics.items() if k.startswith(f"{name}_") and not k.endswith("_seconds")
                and not any(k.startswith(x) for x in longer)}
        assert got and got == want  # exactly: same windows at full precision, same metric code
    # the task JSON still holds the rounded, human-readable predictions
    assert json.loads((out / "grounding.json").read_text())["predictions"]
