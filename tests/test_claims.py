"""`python -m locvtp.diagnostics.claims`: issue 23's criteria applied to ablation directories (fake evaluations
whose answers are known: a row that grounds every query, a row that grounds none, rows that tie)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from locvtp.commands.demo import row_dir_name
from locvtp.diagnostics import claims

ROWS = ("coarse", "+fine", "+fine+temporal", "temporal_form=release", "backbone")
Q = 60


def _write(seed_dir: Path, row: str, hit_share: float, rng: np.random.Generator) -> None:
    """A grounding.json whose head (5 seeds) and zero-shot top-1 windows hit (IoU 1) about ``hit_share`` of the
    queries and miss (IoU 0) the rest."""
    preds = []
    for q in range(Q):
        gt = [10.0, 20.0]
        hits = rng.random(5) < hit_share
        zs = gt if rng.random() < hit_share else [30.0, 40.0]
        preds.append({"video_id": f"v{q}", "query": f"q{q}", "gt": gt, "duration": 60.0,
                      "pred_relevant_windows": [[*zs, 1.0]], "content_pred_relevant_windows": [[*zs, 1.0]],
                      "head_top1_iou": [float(h) for h in hits]})
    path = seed_dir / "eval" / row_dir_name(row) / "grounding.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"predictions": preds}))


def _seeds(tmp_path: Path, shares: dict[str, float]) -> list[Path]:
    dirs = []
    for s in range(3):
        d = tmp_path / f"s{s}"
        rng = np.random.default_rng(s)
        for row in ROWS:
            _write(d, row, shares[row], rng)
        dirs.append(d)
    return dirs


def test_a_clear_ladder_satisfies_every_criterion(tmp_path):
    dirs = _seeds(tmp_path, {"backbone": 0.05, "coarse": 0.2, "+fine": 0.5, "+fine+temporal": 0.8,
                             "temporal_form=release": 0.8})
    out = claims.run(dirs, n_boot=300)
    assert out["verdicts"]["claim 1"] == "holds"
    assert out["verdicts"]["claim 2 (METHOD.md's form)"] == out["verdicts"]["claim 2 (release's form)"] == "holds"
    assert out["verdicts"]["claim 3"] == "reproduced"
    # a per-seed difference is the difference of the two files' own figures (computed here from the files)
    c1 = out["comparisons"]["claim 1: + fine term"]["head"]
    for d, s in zip(dirs, c1["seeds"]):
        mean = {}
        for row in ("+fine", "coarse"):
            doc = json.loads((d / "eval" / row_dir_name(row) / "grounding.json").read_text())
            mean[row] = np.mean([p["head_top1_iou"] for p in doc["predictions"]])
        assert s["diff"] == pytest.approx(100 * (mean["+fine"] - mean["coarse"]))
    assert c1["pooled"]["diff"] == pytest.approx(np.mean([s["diff"] for s in c1["seeds"]]))
    # rows absent from the directories are left out, not invented
    assert out["comparisons"]["text side of the temporal term detached"]["head"] is None
    report = claims.format_report(out)
    assert "claim 3: **reproduced**" in report and "text side" not in report


def test_tied_rows_refute_and_a_missing_row_is_said(tmp_path, capsys):
    dirs = _seeds(tmp_path, {row: 0.5 for row in ROWS})
    # the same files for every row: every difference is exactly 0 with a [0, 0] interval
    for d in dirs:
        ref = (d / "eval" / "coarse" / "grounding.json").read_text()
        for row in ROWS:
            (d / "eval" / row_dir_name(row) / "grounding.json").write_text(ref)
    out = claims.run(dirs, n_boot=200)
    assert out["verdicts"]["claim 1"] == "not shown"
    assert out["verdicts"]["claim 2"] == "refuted"
    assert out["verdicts"]["claim 3"] == "refuted in this setting"
    (dirs[1] / "eval" / "plus_fine" / "grounding.json").unlink()
    assert claims.run(dirs, n_boot=50)["verdicts"]["claim 1"] == "missing rows"
    assert claims.main([str(tmp_path / "none")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "none" in err
