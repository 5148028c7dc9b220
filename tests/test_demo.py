"""`locvtp demo --preset tiny`: the whole pipeline (world → two pre-trainings → evaluation → report), smoke-sized."""
from __future__ import annotations

import json
import math

import pytest

from locvtp.commands import demo
from locvtp.world.plan import GENERATOR_VERSION

KEYS = ["retrieval_R1", "retrieval_R5", "grounding_R1@0.5", "grounding_R1@0.7", "grounding_mIoU",
        "head_grounding_R1@0.5", "step_recall", "segmentation_acc"]


@pytest.mark.slow
def test_tiny_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    summary = demo.run_demo(out, preset="tiny", seed=0, progress=False)
    printed = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert set(["random", "backbone", "coarse", "locvtp"]) <= set(results)
    # both pre-trainings started from the backbone the demo trained first (the Kinetics step)
    bb = sorted((out / "backbone").glob("tiny3d_*.safetensors"))
    assert len(bb) == 1
    for name in ("coarse", "locvtp"):
        assert f"pretrained: {bb[0]}" in (out / "runs" / name / "config.yaml").read_text()
    # trained on the world's EPIC-format segments: verb and noun heads, plus the background class
    side = json.loads(bb[0].with_suffix(".json").read_text())
    assert side["labels"] == "epic-kitchens" and side["args"]["background"] is True
    assert set(side["classes"]) == {"verb", "noun"}
    for name in ("random", "backbone", "coarse", "locvtp"):
        # every figure of the table comes from that model's own evaluation output (nothing hard-coded)
        evaluated = json.loads((out / "eval" / name / "metrics.json").read_text())
        evaluated = evaluated.get("metrics", evaluated)
        for key in KEYS:
            v = results[name][key]
            assert math.isfinite(v) and 0.0 <= v <= 100.0, (name, key, v)
            assert v == pytest.approx(float(evaluated[key])), (name, key)
            assert f"{v:.1f}" in printed
    # the paired comparisons (the paper's: LocVTP vs coarse vs the backbone alone) are differences of the rows'
    # own figures, per scorer, with an interval around them
    metric = {"head": "head_grounding_R1@0.5", "zero-shot": "grounding_R1@0.5",
              "zero-shot-content": "grounding_content_R1@0.5"}
    assert {(r["a"], r["b"]) for r in results["paired"]} == set(demo.PAIRS)
    for r in results["paired"]:
        assert r["diff"] == pytest.approx(results[r["a"]][metric[r["scorer"]]] - results[r["b"]][metric[r["scorer"]]])
        assert r["low"] <= r["diff"] <= r["high"]
        assert f"| {r['a']} − {r['b']} | {r['label']} | {r['diff']:+.1f} |" in printed
    assert results["wall_seconds"] > 0 and results["peak_rss"]["self_mb"] > 0
    assert summary["checkpoints"]["locvtp"].endswith("final")
    # coarse-only really ran without the fine and temporal terms, LocVTP with them
    coarse_rows = [json.loads(l) for l in (out / "runs" / "coarse" / "metrics.jsonl").read_text().splitlines()]
    full_rows = [json.loads(l) for l in (out / "runs" / "locvtp" / "metrics.jsonl").read_text().splitlines()]
    assert all(r.get("loss/fine", 0.0) == 0.0 for r in coarse_rows if "step" in r)
    assert any(r.get("loss/fine", 0.0) > 0.0 for r in full_rows if "step" in r)
    assert full_rows[-1]["loss/aux_scale"] == 1.0  # the fine and temporal terms were ramped fully in
    report = (out / "report.md").read_text()
    assert "| random |" in report and "locvtp pretrain --config" in report
    for png in ("training_curves", "similarity_heatmap", "grounding_timeline"):
        data = (out / "plots" / f"{png}.png").read_bytes()
        assert data[:4] == b"\x89PNG", png
    # a second call reuses the finished runs instead of training again
    again = demo.run_demo(out, preset="tiny", seed=0, progress=False, plots=False)
    assert {k: again["locvtp"][k] for k in KEYS} == {k: results["locvtp"][k] for k in KEYS}


def test_format_table_marks_missing_values():
    table = demo.format_table({"a": {"retrieval_R1": 12.345}, "b": {}})
    lines = table.splitlines()
    assert lines[0].startswith("| model | Ret R@1")
    assert "| a | 12.3 |" in lines[2] and "–" in lines[3]


def test_unknown_preset_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown preset"):
        demo.run_demo(tmp_path, preset="huge")


@pytest.mark.slow
def test_tiny_ablation_rows_share_the_backbone_and_differ_by_their_override(tmp_path, tiny_world):
    out = tmp_path / "abl"
    results = demo.run_ablation(out, preset="tiny", seed=0, only=["coarse", "topk=2", "+temporal"], progress=False,
                                world=tiny_world)
    assert set(results) == {"coarse", "topk=2", "+temporal"}
    assert not (out / "world").exists()  # the given world was used, not a new one
    saved = json.loads((out / "ablation.json").read_text())
    bb = sorted((out / "backbone").glob("tiny3d_*.safetensors"))
    assert len(bb) == 1
    for name, run in (("coarse", "coarse"), ("topk=2", "topk_2")):
        cfg = (out / "runs" / run / "config.yaml").read_text()
        assert f"pretrained: {bb[0]}" in cfg
        evaluated = json.loads((out / "eval" / run / "metrics.json").read_text())
        evaluated = evaluated.get("metrics", evaluated)
        for key in KEYS:
            assert saved[name][key] == pytest.approx(float(evaluated[key])), (name, key)
    assert "topk: 2" in (out / "runs" / "topk_2" / "config.yaml").read_text()
    assert "fine: false" in (out / "runs" / "coarse" / "config.yaml").read_text()
    temporal_only = (out / "runs" / "plus_temporal" / "config.yaml").read_text()
    assert "fine: false" in temporal_only and "temporal: true" in temporal_only
    with pytest.raises(ValueError, match="unknown ablation rows"):
        demo.run_ablation(out, preset="tiny", only=["nope"], progress=False)


# ------------------------------------------------------------------------------------- --world (issue 15 item 5)
def _snapshot(root):
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def seed1_world(tmp_path_factory):
    """`locvtp synth --preset tiny --seed 1`: a world of another seed than the one the demo generates."""
    from locvtp.commands.synth import main as synth

    out = tmp_path_factory.mktemp("seed1") / "world"
    assert synth(["--out", str(out), "--preset", "tiny", "--seed", "1", "--quiet"]) == 0
    return out


def test_world_stage_uses_a_world_of_another_seed_as_it_is(seed1_world, tmp_path, capsys):
    before = _snapshot(seed1_world)
    path, manifest = demo.prepare_world(seed1_world, tmp_path / "out", "tiny", progress=False)
    assert path == seed1_world and manifest["seed"] == 1 and manifest["preset"] == "tiny"
    assert f"as it is (seed=1, preset=tiny, generator {GENERATOR_VERSION})" in capsys.readouterr().out
    assert _snapshot(seed1_world) == before  # nothing regenerated, rewritten or deleted
    # the demo preset does not matter either: the world's own preset is used
    assert demo.prepare_world(seed1_world, tmp_path / "out", "demo", progress=False)[1]["preset"] == "tiny"
    assert _snapshot(seed1_world) == before
    assert demo._world_record(path, manifest) == {"path": str(seed1_world), "seed": 1, "preset": "tiny",
                                                  "generator_version": GENERATOR_VERSION}


def test_world_stage_generates_only_into_a_directory_without_a_world(tmp_path):
    for target in (tmp_path / "missing", tmp_path / "empty"):
        if target.name == "empty":
            target.mkdir()
        path, manifest = demo.prepare_world(target, tmp_path / "out", "tiny", progress=False)
        assert path == target and manifest["seed"] == 0 and (target / "manifest.json").is_file()
    # no --world: the run's own out/world, as before
    path, manifest = demo.prepare_world(None, tmp_path / "out", "tiny", progress=False)
    assert path == tmp_path / "out" / "world" and manifest["seed"] == 0


def _broken_worlds(src, root):
    """Directories that hold something, but not a complete world: (name, directory, words of the message)."""
    import shutil

    from locvtp.world.generate import IN_PROGRESS

    cases = []
    foreign = root / "foreign"
    (foreign / "videos").mkdir(parents=True)
    (foreign / "videos" / "mine.mp4").write_bytes(b"precious")
    cases.append(("foreign", foreign, "not a synthetic world"))
    interrupted = root / "interrupted"
    shutil.copytree(src, interrupted)
    (interrupted / "manifest.json").unlink()
    (interrupted / IN_PROGRESS).write_text("{}")
    cases.append(("interrupted", interrupted, "interrupted world generation"))
    no_video = root / "no_video"
    shutil.copytree(src, no_video)
    victim = sorted((no_video / "videos").glob("*.mp4"))[0]
    victim.unlink()
    cases.append(("no_video", no_video, f"incomplete world (seed=1, preset='tiny', generator {GENERATOR_VERSION}): videos/{victim.name} is missing"))
    changed = root / "changed"
    shutil.copytree(src, changed)
    (changed / "coin" / "COIN.json").write_text("{}")
    cases.append(("changed", changed, "coin/COIN.json differs from its sha256"))
    alien = root / "alien"
    alien.mkdir()
    (alien / "manifest.json").write_text(json.dumps({"name": "my dataset"}))
    cases.append(("alien", alien, "not the manifest of a locvtp synthetic world"))
    garbled = root / "garbled"
    garbled.mkdir()
    (garbled / "manifest.json").write_text("{not json")
    cases.append(("garbled", garbled, "unreadable manifest"))
    afile = root / "afile"
    afile.write_text("x")
    cases.append(("afile", afile, "not a directory"))
    return cases


def test_world_stage_refuses_what_is_not_a_complete_world(seed1_world, tmp_path):
    from locvtp.world.generate import NotAWorldError

    for name, path, words in _broken_worlds(seed1_world, tmp_path):
        before = _snapshot(path) if path.is_dir() else path.read_bytes()
        with pytest.raises(NotAWorldError) as info:
            demo.prepare_world(path, tmp_path / "out", "tiny", progress=False)
        msg = str(info.value)
        assert str(path) in msg and words in msg and "\n" not in msg, (name, msg)
        assert (_snapshot(path) if path.is_dir() else path.read_bytes()) == before, name  # left as it was


def test_demo_and_ablate_cli_refuse_a_broken_world_in_one_line_before_training(seed1_world, tmp_path, capsys):
    from cli_helpers import assert_one_line_error, run_cli

    (_, path, words), = [c for c in _broken_worlds(seed1_world, tmp_path) if c[0] == "no_video"]
    for cmd in ("demo", "ablate"):
        out = tmp_path / f"{cmd}_out"
        res = run_cli([cmd, "--out", out, "--preset", "tiny", "--world", path, "--quiet"], capsys)
        assert_one_line_error(res, 2, str(path), "is missing")
        assert not (out / "runs").exists() and not (out / "backbone").exists()
