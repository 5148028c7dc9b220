"""`python -m locvtp.diagnostics.backbone_transfer`: each backbone is `locvtp backbone`'s, scored on every world."""
from __future__ import annotations

import json

import pytest

from locvtp.backbone import train_backbone
from locvtp.commands.backbone import build_parser
from locvtp.diagnostics import backbone_transfer


def test_a_worlds_own_column_is_locvtp_backbones_heldout_accuracy(tiny_world, tmp_path, capsys):
    res = backbone_transfer.transfer([tiny_world, tiny_world], steps=5, seed=3)
    row = res["rows"][str(tiny_world)]
    assert set(row) == {f"{tiny_world} val", "own training clips"}
    args = build_parser().parse_args(["--data", str(tiny_world), "--labels", "epic-kitchens", "--background",
                                      "--out", str(tmp_path / "b.safetensors"), "--steps", "5", "--seed", "3"])
    ref = train_backbone(args, progress=False)  # the command's own path
    for head, acc in ref.heldout_accuracy_per_head.items():
        assert row[f"{tiny_world} val"][head] == pytest.approx(round(100 * acc, 1))
    assert backbone_transfer.main([str(tiny_world), "--steps", "2", "--json", str(tmp_path / "t.json")]) == 0
    printed = capsys.readouterr().out
    assert "| trained on" in printed and json.loads((tmp_path / "t.json").read_text())["steps"] == 2
    (tmp_path / "mine.json").write_text("{}")
    assert backbone_transfer.main([str(tiny_world), "--json", str(tmp_path / "mine.json")]) == 2
    assert "mine.json" in capsys.readouterr().err
