"""diagnostics.demo_seeds: mean ± std over seeds, and paired per-seed differences to a reference row."""
import json

import pytest

from locvtp.diagnostics.demo_seeds import aggregate, paired


def _files(tmp_path, per_seed):
    paths = []
    for k, rows in enumerate(per_seed):
        p = tmp_path / f"s{k}.json"
        p.write_text(json.dumps(rows))
        paths.append(str(p))
    return paths


def test_mean_std_and_paired_differences(tmp_path):
    per_seed = [{"ref": {"grounding_R1@0.5": 50.0}, "a": {"grounding_R1@0.5": 53.0}},
                {"ref": {"grounding_R1@0.5": 40.0}, "a": {"grounding_R1@0.5": 41.0}},
                {"ref": {"grounding_R1@0.5": 45.0}, "a": {"grounding_R1@0.5": 44.0}}]
    paths = _files(tmp_path, per_seed)
    table = aggregate(paths)
    assert "| ref | – | – | 45.0 ± 5.0 |" in table and "| a | – | – | 46.0 ± 6.2 |" in table
    # differences 3, 1, -1: mean 1.0, sample std 2.0, above zero in 2 of 3 seeds
    assert "| a | – | – | +1.0 ± 2.0 (2/3) |" in paired(paths, "ref")
    with pytest.raises(SystemExit, match="no such row"):
        paired(paths, "missing")


def test_paired_skips_seeds_missing_a_row(tmp_path):
    paths = _files(tmp_path, [{"ref": {"step_recall": 10.0}, "a": {"step_recall": 12.5}},
                              {"ref": {"step_recall": 11.0}}])
    assert "| a | – | – | – | – | – | – | – | – | +2.5 (1/1) | – |" in paired(paths, "ref")


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(SystemExit, match="nope.json: cannot read results"):
        aggregate([str(tmp_path / "nope.json")])
