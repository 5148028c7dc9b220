"""World generator versions (issue 15 item 3): 1.2 stays byte-identical, 1.3 has harder CrossTask/COIN test sets
that stay exact and solvable, and the version is part of what `locvtp synth` is asked for."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import world_difficulty as W  # noqa: E402

from locvtp.data import formats as F
from locvtp.world.annotations import build_annotations
from locvtp.world.generate import generate_world, open_world
from locvtp.world.plan import SPLIT_ORDER, plan_world
from locvtp.world.render import render_video
from locvtp.commands.synth import main as synth_main
from cli_helpers import assert_one_line_error, run_cli

# sha256 of the files `locvtp synth --preset tiny --seed N` wrote with generator 1.2 before version 1.3 existed
# (commit 3a412d7): manifest.json itself, and the sha256 of the JSON of {annotation path: sha256 of the file}.
V12_TINY = {
    0: ("4e90a4f1fe355bcb1952dc84cf180828c7a041961ea0d579a3674bc12aabab3c",
        "3d703b8672f7c15f6894e693975f9b8d009dd12bb02e4abeb4b39cff4ddcbdc7"),
    1: ("15a1f53b7822939d8ac5549d509a69d2b6df0b3309640018c9d20de2ad234bd6",
        "d0af2c1c7e83285e59e89a2d8203142cc265f3545feab6e73b2168b8eadc9f1c"),
}
# the rendered frames of every tiny seed-0 video (before encoding: MP4 bytes depend on the x264 build)
V12_TINY0_FRAMES = "c41c8221349cfe4a3fa1f7897cd8f1aa9a9b3a27ced7a7efac7312e044f57a4c"
# demo seed 0: the annotation bytes build_annotations returns (= the files generate_world writes, checked on tiny)
V12_DEMO0_ANNOTATIONS = "554fa397c34086f57b128ef1bb2984f1961abaf4783ed73709cbcb6c21a9fbb9"


def _tree_hash(files: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


def _disk_annotations(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file() and p.suffix != ".mp4" and p.name != "manifest.json"}


@pytest.mark.parametrize("seed", [0, 1])
def test_generator_12_is_byte_identical_to_before_13(tmp_path, seed):
    manifest_sha, ann_sha = V12_TINY[seed]
    out = tmp_path / "w"  # generator 1.2, asked for by name (the default is 1.3 since issue 15)
    m = generate_world(out, seed=seed, preset="tiny", progress=False, version="1.2")
    assert m["generator_version"] == "1.2"
    assert hashlib.sha256((out / "manifest.json").read_bytes()).hexdigest() == manifest_sha
    disk = _disk_annotations(out)
    assert disk == m["annotation_sha256"] and _tree_hash(disk) == ann_sha


def test_generator_12_frames_and_demo_annotations_unchanged():
    plan = plan_world(0, "tiny", "1.2")
    h = hashlib.sha256()
    for v in plan.videos():
        h.update(render_video(v).tobytes())
    assert h.hexdigest() == V12_TINY0_FRAMES
    files = build_annotations(plan_world(0, "demo", "1.2"))
    assert _tree_hash({k: hashlib.sha256(v).hexdigest() for k, v in sorted(files.items())}) == V12_DEMO0_ANNOTATIONS


def test_13_changes_only_the_procedure_videos():
    a, b = plan_world(0, "demo", "1.2"), plan_world(0, "demo", "1.3")
    for split in SPLIT_ORDER:
        same = [(v.vid, v.duration, [(e.obj, e.action, e.start, e.end) for e in v.events]) for v in a.splits[split]]
        new = [(v.vid, v.duration, [(e.obj, e.action, e.start, e.end) for e in v.events]) for v in b.splits[split]]
        assert (same == new) == (not split.startswith(("crosstask", "coin"))), split


def test_13_procedures_are_harder_and_exact():
    plan = plan_world(0, "demo", "1.3")
    for task in plan.crosstask_tasks + plan.coin_tasks:
        assert 7 <= len(task.steps) <= 10 and len(set(task.steps)) == len(task.steps)
        kinds = {(o.colour, o.shape) for o in task.objects[:4]}
        assert len({c for c, _ in kinds}) == 2 and len({s for _, s in kinds}) == 2  # the 2x2 look-alike grid
        assert all(i < 3 for i, _ in task.steps)  # the bystander (index 3) never performs a step
    tasks = {t.task_id: t for t in plan.crosstask_tasks + plan.coin_tasks}
    n_distractors = n_short = 0
    for v in (v for s in ("crosstask_train", "crosstask_val", "coin_train", "coin_test") for v in plan.splits[s]):
        task = tasks[v.extra["task"]]
        assert len(v.extra["steps"]) == len(v.events)
        done = [k for k in v.extra["steps"] if k is not None]
        assert done == sorted(done) and len(set(done)) == len(done)
        starts = [e.start for e in v.events]
        assert starts == sorted(starts) and all(x.end <= y.start for x, y in zip(v.events, v.events[1:]))
        for k, e in zip(v.extra["steps"], v.events):
            assert e.end - e.start >= 1.0  # every action visible in each clip it covers
            if k is None:  # a distractor: no step of the task, so its clips are background
                assert (e.obj, e.action) not in task.steps
                n_distractors += 1
            else:
                assert task.steps[k - 1] == (e.obj, e.action)
                n_short += e.end - e.start < 2.0
    assert n_distractors > 100 and n_short > 200


def test_13_world_reads_in_the_published_formats_and_refuses_to_replace_12(tmp_path, capsys):
    out = tmp_path / "w13"
    assert synth_main(["--out", str(out), "--preset", "tiny", "--generator-version", "1.3", "--quiet"]) == 0
    assert "generator 1.3" in capsys.readouterr().out
    m = json.loads((out / "manifest.json").read_text())
    assert m["generator_version"] == "1.3" and open_world(out)["generator_version"] == "1.3"
    tasks = F.read_crosstask_tasks(out / "crosstask/tasks_primary.txt", strict=True).records
    videos = F.read_crosstask_videos(out / "crosstask/videos_val.csv", {t.task_id: t for t in tasks}, strict=True)
    ann = F.read_crosstask_annotations(out / "crosstask/annotations", videos.records, {t.task_id: t for t in tasks},
                                       strict=True).records
    gt = json.loads((out / "ground_truth.json").read_text())
    assert sum(len(a.segments) for a in ann) == m["counts"]["crosstask_val_steps"]
    for a in ann:  # annotations are the step events only, distractors left out
        g = gt[a.video_id]
        steps = [(k, e) for k, e in zip(g["steps"], g["events"]) if k is not None]
        assert [(s.step, s.start, s.end) for s in a.segments] == [(k, e["start"], e["end"]) for k, e in steps]
    coin = F.read_coin(out / "coin/COIN.json", strict=True).records
    assert coin and all(len(v.segments) == sum(k is not None for k in gt[v.video_id]["steps"]) for v in coin)
    # 1.2 and 1.3 are different worlds: neither replaces the other without --force
    res = run_cli(["synth", "--out", out, "--preset", "tiny", "--generator-version", "1.2", "--quiet"], capsys)
    assert_one_line_error(res, 2, "generator 1.3; use --force")  # a world in the way: a usage error
    assert synth_main(["--out", str(out), "--preset", "tiny", "--generator-version", "1.3", "--quiet"]) == 0
    assert "reusing" in capsys.readouterr().out
    with pytest.raises(ValueError, match="unknown generator version"):
        plan_world(0, "tiny", "9.9")
    # the demo's world stage takes it as it is
    from locvtp.commands import demo

    assert demo.prepare_world(out, tmp_path / "d", "tiny", progress=False)[1]["generator_version"] == "1.3"


def test_13_is_harder_than_12_yet_solvable():
    """The figures of docs/world_versions.md, on the tiny preset (the doc's are the demo preset's)."""
    old, new = W.measure(0, "tiny", "1.2"), W.measure(0, "tiny", "1.3")
    assert new["steps_per_task"] > old["steps_per_task"]
    assert new["steps_shorter_than_2_clips_pct"] > 50 > old["steps_shorter_than_2_clips_pct"]
    assert new["lookalike_step_pairs_per_task"] > old["lookalike_step_pairs_per_task"]
    assert new["distractor_actions_per_video"] > 1 and old["distractor_actions_per_video"] == 0
    assert new["chance_step_recall"] < old["chance_step_recall"]
    assert new["random_label_segmentation_acc"] < old["random_label_segmentation_acc"]
    # solvable: exact knowledge of who does what finds the steps; partial knowledge no longer suffices
    assert new["oracle_exact_step_recall"] >= 95
    assert new["oracle_action_step_recall"] < old["oracle_action_step_recall"]
    assert new["oracle_exact_segmentation_acc"] > new["chance_segmentation_acc"] + 10
