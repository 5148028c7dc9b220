"""The head-recipe study's bookkeeping (`locvtp.diagnostics.head_stability`): what counts as a collapsed seed."""
from __future__ import annotations

import argparse

import pytest

from locvtp.diagnostics.head_stability import outcomes, parse_recipe
from locvtp.downstream.tan import EarlyStopping


def _log(losses, val):
    log = EarlyStopping(losses=list(losses), scores=[(v, 0.0) for v in val])
    log.best_epoch = 1 + max(range(len(val)), key=lambda i: (val[i], -i))
    return log


def test_a_seed_far_below_its_siblings_or_whose_loss_climbed_back_is_collapsed():
    logs = [_log([0.15, 0.10, 0.08], [30, 80, 88]),      # healthy
            _log([0.15, 0.10, 0.09], [30, 60, 67]),      # 21 points below the best: collapsed
            _log([0.15, 0.099, 0.108], [23, 85, 86]),    # loss ends 9 % above its minimum: diverged
            _log([0.15, 0.10, 0.104], [30, 75, 70])]     # 4 % above: not diverged, 18 below: kept
    res = outcomes(logs, [0, 1, 2, 3], collapse_gap=20.0)
    assert [o.collapsed for o in res] == [False, True, True, False]
    assert [o.diverged for o in res] == [False, False, True, False]
    assert [o.best_val for o in res] == [88, 67, 86, 75] and [o.best_epoch for o in res] == [3, 3, 3, 2]
    assert [o.epochs_run for o in res] == [3, 3, 3, 3]


def test_recipes_parse_and_a_malformed_one_names_itself():
    assert parse_recipe("current:") == ("current", [])
    assert parse_recipe("lr:grounding.head_cfg.lr=1e-3,grounding.head_cfg.epochs=40") == (
        "lr", ["grounding.head_cfg.lr=1e-3", "grounding.head_cfg.epochs=40"])
    with pytest.raises(argparse.ArgumentTypeError, match="recipe 'oops'"):
        parse_recipe("oops")


def test_check_reads_the_curves_an_evaluation_stored(tmp_path, capsys):
    import json

    from locvtp.diagnostics.head_stability import main

    info = {"head_seeds": [0, 1], "head_best_epochs": [3, 1], "head_losses": [[0.15, 0.1, 0.08], [0.15, 0.1, 0.12]],
            "head_val_scores": [[[30, 1], [80, 1], [88, 1]], [[40, 1], [35, 1], [30, 1]]]}
    (tmp_path / "g.json").write_text(json.dumps({"info": info}))
    (tmp_path / "old.json").write_text(json.dumps({"info": {"head_variant": "checkpoint_text"}}))
    assert main(["check", str(tmp_path / "g.json"), str(tmp_path / "old.json")]) == 0
    out = capsys.readouterr().out
    assert "val R1@0.5 [88, 40], best epochs [3, 1]/[3, 3], collapsed 1" in out
    assert "old.json: no tan head curves (head_variant='checkpoint_text'); skipped" in out
    assert "collapsed head seeds: 1 of 2" in out
