"""The synthetic world: layout, determinism, splits, caption grammar and noise, and ground truth that agrees
with the decoded pixels (PyAV), checked against an independent plain-loop re-simulation."""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import av
import numpy as np
import pytest
from cli_helpers import assert_one_line_error, run_cli

from locvtp.errors import LocVTPError
from locvtp.world.annotations import build_annotations
from locvtp.world.generate import IN_PROGRESS, WorldExistsError, generate_world, open_world
from locvtp.world.plan import (
    ACTIONS, ACTION_WORDS, COLOURS, COLOUR_WORDS, FILLERS, FPS, GENERATOR_VERSION, GENERATOR_VERSIONS, MOVE_SPEED,
    Obj, R_MAX, R_MIN, SHAPES, SHAPE_WORDS, SIZE_RATE, SPLIT_ORDER, UNRELATED, describe, instruct, plan_world,
)
from locvtp.world.render import object_tracks, write_mp4
from locvtp.commands.synth import main as synth_main

LAYOUT = [
    "manifest.json", "ground_truth.json", "pretrain/caption.json", "pretrain/webvid.csv",
    "grounding/activitynet/train.json", "grounding/activitynet/val_1.json",
    "grounding/charades/charades_sta_train.txt", "grounding/charades/charades_sta_test.txt",
    "grounding/charades/Charades_v1_train.csv", "grounding/charades/Charades_v1_test.csv",
    "grounding/qvhighlights/highlight_train_release.jsonl", "grounding/qvhighlights/highlight_val_release.jsonl",
    "retrieval/MSRVTT_data.json", "retrieval/MSRVTT_train.9k.csv", "retrieval/MSRVTT_JSFUSION_test.csv",
    "crosstask/tasks_primary.txt", "crosstask/videos.csv", "crosstask/videos_val.csv", "coin/COIN.json",
    "epic/EPIC_100_train.csv", "epic/EPIC_100_validation.csv",
]


def _annotation_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.suffix != ".mp4" and p.name != "manifest.json"}


def _decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


# ------------------------------------------------------------------------------------------------ layout
def test_layout_and_manifest(tiny_world):
    for rel in LAYOUT:
        assert (tiny_world / rel).is_file(), rel
    m = json.loads((tiny_world / "manifest.json").read_text())
    assert (m["seed"], m["preset"], m["generator_version"]) == (0, "tiny", GENERATOR_VERSION)
    assert (m["fps"], m["frame_size"], m["clip_seconds"]) == (8, 32, 1.0)
    assert set(m["splits"]) == set(SPLIT_ORDER)
    all_ids = [v for vids in m["splits"].values() for v in vids]
    assert len(all_ids) == len(set(all_ids)) == m["counts"]["videos"]  # splits are disjoint
    on_disk = {p.stem for p in (tiny_world / "videos").glob("*.mp4")}
    assert on_disk == set(all_ids)
    assert not list(tiny_world.rglob(".*.tmp"))  # no leftovers of atomic writes
    assert set(m["vocabulary"]["actions"]) == set(ACTIONS) and len(ACTIONS) >= 6
    assert len(m["vocabulary"]["shapes"]) >= 5 and len(m["vocabulary"]["colours"]) >= 6
    for rel, digest in m["annotation_sha256"].items():
        assert hashlib.sha256((tiny_world / rel).read_bytes()).hexdigest() == digest, rel
    # the crosstask annotation files of every listed video exist
    gt = json.loads((tiny_world / "ground_truth.json").read_text())
    for vid in m["splits"]["crosstask_train"] + m["splits"]["crosstask_val"]:
        assert (tiny_world / "crosstask" / "annotations" / f"{gt[vid]['task']}_{vid}.csv").is_file()


def test_video_container_properties(tiny_world):
    gt = json.loads((tiny_world / "ground_truth.json").read_text())
    vid = next(iter(gt))
    with av.open(str(tiny_world / "videos" / f"{vid}.mp4")) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "h264" and s.codec_context.pix_fmt == "yuv420p"
        assert (s.codec_context.width, s.codec_context.height) == (32, 32)
        assert float(s.average_rate) == 8.0
        n = sum(1 for _ in c.decode(video=0))
    assert n == gt[vid]["num_frames"] == round(gt[vid]["duration"] * 8)


def test_determinism_same_and_different_seed(tiny_world, tmp_path):
    again = tmp_path / "again"
    generate_world(again, seed=0, preset="tiny", progress=False)
    a, b = _annotation_files(tiny_world), _annotation_files(again)
    assert a.keys() == b.keys() and a == b  # byte-identical annotation files
    # manifest identical too (it holds the annotation checksums)
    assert (tiny_world / "manifest.json").read_bytes() == (again / "manifest.json").read_bytes()
    # the MP4s as well (single-threaded x264, fixed GOP, explicit pts) on the same PyAV build
    for p in sorted((tiny_world / "videos").glob("*.mp4")):
        assert p.read_bytes() == (again / "videos" / p.name).read_bytes(), p.name
    other = plan_world(seed=1, preset="tiny")
    files1 = build_annotations(other)
    assert files1["pretrain/caption.json"] != a["pretrain/caption.json"]
    assert files1["ground_truth.json"] != a["ground_truth.json"]


def test_plan_is_order_independent():
    """A video's content depends on (seed, split, index) only, not on how many videos come before it
    (tiny and demo draw different numbers of pre-training videos, yet share their first retrieval videos)."""
    tiny, demo = plan_world(0, "tiny"), plan_world(0, "demo")
    for split in ("webvid", "retrieval_train"):
        assert tiny.splits[split]
        for a, b in zip(tiny.splits[split], demo.splits[split]):
            assert a.objects == b.objects and a.events == b.events


# ------------------------------------------------------------------------------------------ world content
def test_long_videos_have_3_to_10_events_and_unique_queries():
    plan = plan_world(0, "demo")
    for split in ("pretrain", "grounding_train", "grounding_test"):
        for v in plan.splits[split]:
            assert 3 <= len(v.events) <= 10, (v.vid, len(v.events))
            ends = [0.0] + [e.end for e in v.events]
            for prev_end, e in zip(ends, v.events):
                assert e.start >= prev_end and 2.0 <= e.end - e.start <= 5.0
            assert v.events[-1].end <= v.duration
            pairs = [(e.obj, e.action) for e in v.events]
            assert len(pairs) == len(set(pairs))  # each grounding query has one right moment
            kinds = [(o.colour, o.shape) for o in v.objects]
            assert len(kinds) == len(set(kinds))
            assert any(o.role == "distractor" for o in v.objects)
            for e in v.events:
                assert v.objects[e.obj].role == "actor"
    lengths = Counter(len(v.events) for v in plan.splits["pretrain"])
    assert min(lengths) == 3 and max(lengths) >= 9


@pytest.mark.parametrize("version", GENERATOR_VERSIONS)
def test_demo_preset_sizes(version):
    plan = plan_world(0, "demo", version)
    files = build_annotations(plan)
    cap = json.loads(files["pretrain/caption.json"])
    n_narr = sum(len(c["text"]) for c in cap.values())
    assert 1000 <= n_narr <= 3000
    assert 100 <= sum(len(v.events) for v in plan.splits["grounding_test"]) <= 250
    assert 100 <= len(plan.splits["retrieval_test"]) <= 200
    steps = sum(k is not None for v in plan.splits["crosstask_val"] for k in v.extra["steps"])
    assert 100 <= steps <= (250 if version == "1.2" else 500)  # 1.3: 7-10 steps per task (docs/world_versions.md)


def test_retrieval_test_videos_are_distinct_triples():
    plan = plan_world(0, "demo")
    triples = [(v.objects[0].colour, v.objects[0].shape, v.events[0].action) for v in plan.splits["retrieval_test"]]
    assert len(triples) == len(set(triples))
    for v in plan.splits["retrieval_test"] + plan.splits["retrieval_train"]:
        assert len(v.events) == 1 and v.events[0].end - v.events[0].start >= 3.0
        assert v.events[0].end - v.events[0].start >= 0.6 * v.duration  # one dominant event


def test_caption_grammar_synonyms_and_paraphrases():
    rng = np.random.default_rng(0)
    obj = Obj("red", "circle", 16, 16, 4)
    sents = {describe(rng, obj, "move_left") for _ in range(300)}
    assert len(sents) >= 20
    assert "the red circle moves left" in sents
    assert any("ball" in s for s in sents) and any("slides to the left" in s for s in sents)
    for s in sents:
        assert "red" in s and any(w in s for w in SHAPE_WORDS["circle"])
        assert any(p in s for p in ACTION_WORDS["move_left"]["present"] + ACTION_WORDS["move_left"]["gerund"])
    assert instruct(None, obj, "move_left") == "move the red circle left"
    assert instruct(None, Obj("blue", "square", 0, 0, 4), "grow") == "make the blue square grow"


def _all_phrasings(obj: Obj, action: str) -> set[str]:
    """Every sentence the grammar can say about (obj, action), enumerated from the vocabulary tables."""
    w = ACTION_WORDS[action]
    subjects = {f"{d} {c} {n}" for d in ("the", "a") for c in COLOUR_WORDS[obj.colour]
                for n in SHAPE_WORDS[obj.shape]}
    out = set()
    for subj in subjects:
        out |= {f"{subj} {p}" for p in w["present"]} | {f"here {subj} {p}" for p in w["present"]}
        out |= {f"{subj} is {g}" for g in w["gerund"]} | {f"we see {subj} {g}" for g in w["gerund"]}
        if subj.startswith("the "):
            out |= {f"now we {t.format(o=subj)}" for t in w["imperative"]}
    return out


def test_narration_noise_statistics():
    plan = plan_world(0, "demo")
    cap = json.loads(build_annotations(plan)["pretrain/caption.json"])
    unrelated = set(UNRELATED)
    n_total = n_unrel = n_filler = 0
    shifts = []
    for v in plan.splits["pretrain"]:
        c = cap[v.vid]
        assert c["start"] == sorted(c["start"])
        phrasings = [_all_phrasings(v.objects[e.obj], e.action) for e in v.events]
        matched = []
        for s, e, t in zip(c["start"], c["end"], c["text"]):
            n_total += 1
            assert 0.0 <= s < e <= v.duration
            if t in unrelated:
                n_unrel += 1
                continue
            core = t
            for f in sorted(FILLERS, key=len, reverse=True):
                if t.startswith(f + " ") and t[len(f) + 1:] and any(t[len(f) + 1:] in p for p in phrasings):
                    core, n_filler = t[len(f) + 1:], n_filler + 1
                    break
            hits = [k for k, p in enumerate(phrasings) if core in p]
            assert len(hits) == 1, (v.vid, t)  # every related narration describes exactly one event
            ev = v.events[hits[0]]
            matched.append(hits[0])
            if 0 < s and e < v.duration:  # not clipped at the video's borders
                shifts.append((s + e) / 2 - (ev.start + ev.end) / 2)
        assert sorted(matched) == list(range(len(v.events)))  # one narration per event
    frac = n_unrel / n_total
    assert 0.10 <= frac <= 0.22, frac  # ~15 % visually unrelated sentences
    assert 0.25 <= n_filler / (n_total - n_unrel) <= 0.45  # ~35 % carry a filler
    shifts = np.array(shifts)
    # misaligned by up to ±2 clips (plus ±0.3 s boundary jitter), in both directions, rarely exact
    assert np.abs(shifts).max() <= 2.31 and shifts.min() < -1.5 and shifts.max() > 1.5
    assert np.mean(np.abs(shifts) > 0.5) > 0.5


def test_downstream_annotations_are_exact(tiny_world):
    gt = json.loads((tiny_world / "ground_truth.json").read_text())
    anet = json.loads((tiny_world / "grounding/activitynet/val_1.json").read_text())
    for vid, a in anet.items():
        assert a["timestamps"] == [[e["start"], e["end"]] for e in gt[vid]["events"]]
    coin = json.loads((tiny_world / "coin/COIN.json").read_text())["database"]
    for vid, c in coin.items():  # every step event; generator 1.3's distractors (step None) are background
        steps = gt[vid].get("steps") or [1] * len(gt[vid]["events"])
        assert [x["segment"] for x in c["annotation"]] == [[e["start"], e["end"]] for k, e in
                                                          zip(steps, gt[vid]["events"]) if k is not None]


def test_epic_segments_are_the_events_verb_action_noun_actor(tiny_world):
    """EPIC-KITCHENS-100 rows: one per event of the epic splits, timestamps = event times, verb = the action,
    noun "shape:colour" = the acting object (class colour-major), read back by the published-format reader."""
    from locvtp.data import formats as F

    gt = json.loads((tiny_world / "ground_truth.json").read_text())
    for split, name in (("epic_train", "EPIC_100_train.csv"), ("epic_val", "EPIC_100_validation.csv")):
        rows = F.read_epic_kitchens(tiny_world / "epic" / name, strict=True).records
        expect = []
        for vid in sorted(v for v, g in gt.items() if g["split"] == split):
            for e in gt[vid]["events"]:
                o = gt[vid]["objects"][e["object"]]
                expect.append((vid, e["start"], e["end"], ACTIONS.index(e["action"]), f"{o['shape']}:{o['colour']}",
                               list(COLOURS).index(o["colour"]) * len(SHAPES) + SHAPES.index(o["shape"])))
        got = [(r.video_id, r.start, r.end, r.verb_class, r.noun, r.noun_class) for r in rows]
        assert got == expect and len(got) > 0
        assert all(r.verb == ACTIONS[r.verb_class].replace("_", "-") for r in rows)
    # the labelled set is disjoint from every evaluation split
    epic = {v for v, g in gt.items() if g["split"].startswith("epic")}
    evaluation = {v for v, g in gt.items() if g["split"] in ("grounding_test", "retrieval_test", "crosstask_val",
                                                               "coin_test")}
    assert epic and not epic & evaluation


def test_crosstask_steps_in_order_with_skips(tiny_world):
    from locvtp.data import formats as F

    tasks = {t.task_id: t for t in F.read_crosstask_tasks(tiny_world / "crosstask/tasks_primary.txt", strict=True)}
    gt = json.loads((tiny_world / "ground_truth.json").read_text())
    plan = plan_world(0, "demo")
    for v in plan.splits["crosstask_val"]:
        steps = [k for k in v.extra["steps"] if k is not None]  # None: a 1.3 distractor action
        assert steps == sorted(steps) and len(set(steps)) == len(steps) and steps[0] >= 1
    assert any(len(v.extra["steps"]) < len(t.steps) for v in plan.splits["crosstask_val"]
               for t in plan.crosstask_tasks if t.task_id == v.extra["task"])  # some steps are skipped
    for vid, g in gt.items():
        if g["split"].startswith("crosstask"):
            texts = tasks[g["task"]].steps
            for k, e in zip(g["steps"], g["events"]):
                if k is not None:
                    assert texts[k - 1] == e["caption"]  # 1-based step ids index tasks_primary.txt


# ----------------------------------------------------------------------------- pixels agree with the labels
def _replay(g: dict, n_frames: int) -> dict[str, np.ndarray]:
    """Independent reference: per-frame object state by a plain loop over frames and events (the formula)."""
    objs = g["objects"]
    out = {k: np.zeros((len(objs), n_frames)) for k in ("x", "y", "r")}
    for k in range(n_frames):
        t = k / FPS
        for i, o in enumerate(objs):
            x, y, r = o["x"], o["y"], o["r"]
            for e in g["events"]:
                if e["object"] != i or t <= e["start"]:
                    continue
                d = min(t, e["end"]) - e["start"]
                x += {"move_left": -1, "move_right": 1}.get(e["action"], 0) * MOVE_SPEED * d
                y += {"move_up": -1, "move_down": 1}.get(e["action"], 0) * MOVE_SPEED * d
                r += {"grow": 1, "shrink": -1}.get(e["action"], 0) * SIZE_RATE * d
            out["x"][i, k], out["y"][i, k], out["r"][i, k] = x, y, r
    return out


def test_object_tracks_match_plain_loop_reference():
    plan = plan_world(3, "tiny")
    for v in list(plan.videos())[:8]:
        tr = object_tracks(v)
        g = {"objects": [{"x": o.x, "y": o.y, "r": o.r} for o in v.objects],
             "events": [{"object": e.obj, "action": e.action, "start": e.start, "end": e.end} for e in v.events]}
        ref = _replay(g, v.num_frames)
        for k in ("x", "y", "r"):
            np.testing.assert_allclose(tr[k], ref[k], atol=1e-9)
        assert tr["r"].min() >= R_MIN - 1e-9 and tr["r"].max() <= R_MAX + 1e-9


def test_decoded_video_changes_exactly_during_events(tiny_world):
    """Every event changes the pixels around its object within each of its 1-s clips; idle gaps stay still."""
    gt = json.loads((tiny_world / "ground_truth.json").read_text())
    checked_clips = checked_gaps = 0
    for vid, g in gt.items():
        fr = _decode(tiny_world / "videos" / f"{vid}.mp4").astype(np.float32)
        assert len(fr) == g["num_frames"]
        ref = _replay(g, len(fr))
        bounds = [0.0] + [x for e in g["events"] for x in (e["start"], e["end"])] + [g["duration"]]
        for a, b in zip(bounds[0::2], bounds[1::2]):  # idle gaps (state constant from frame round(a*fps))
            k0, k1 = round(a * FPS), round(b * FPS)
            if k1 - k0 >= 2:
                assert np.abs(fr[k0:k1] - fr[k0]).mean(axis=(1, 2, 3)).max() < 0.6, (vid, a, b)
                checked_gaps += 1
        for e in g["events"]:
            i = e["object"]
            k0, k1 = round(e["start"] * FPS), round(e["end"] * FPS)
            for c0 in range(k0, k1 - FPS + 1, FPS):  # each whole 1-s clip inside the event
                xs, ys = ref["x"][i, c0:c0 + FPS + 1], ref["y"][i, c0:c0 + FPS + 1]
                m = ref["r"][i, c0:c0 + FPS + 1].max() * 1.3 + 2
                x0, x1 = max(0, int(xs.min() - m)), min(32, int(np.ceil(xs.max() + m)))
                y0, y1 = max(0, int(ys.min() - m)), min(32, int(np.ceil(ys.max() + m)))
                box = fr[c0:c0 + FPS + 1, y0:y1, x0:x1]
                change = np.abs(box - box[0]).mean(axis=(1, 2, 3)).max()
                assert change > 1.5, (vid, e, c0, change)
                checked_clips += 1
    assert checked_clips > 50 and checked_gaps > 10


def _colour_mask(frames: np.ndarray, colour: str) -> np.ndarray:
    return np.linalg.norm(frames.astype(np.float32) - np.array(COLOURS[colour], np.float32), axis=-1) < 70


def test_decoded_motion_direction_size_and_blink(tiny_world):
    """Measured from pixels: moves go the named way, grow/shrink change the area, blink toggles brightness."""
    gt = json.loads((tiny_world / "ground_truth.json").read_text())
    checked = Counter()
    for vid, g in gt.items():
        colours = Counter(o["colour"] for o in g["objects"])
        fr = None
        for e in g["events"]:
            o = g["objects"][e["object"]]
            if colours[o["colour"]] > 1:
                continue  # colour not unique in this video: the mask would mix objects
            fr = _decode(tiny_world / "videos" / f"{vid}.mp4") if fr is None else fr
            k0, k1 = round(e["start"] * FPS), min(round(e["end"] * FPS), len(fr) - 1)
            mask = _colour_mask(fr[[k0, k1]], o["colour"])
            ys, xs = np.mgrid[0:32, 0:32]
            area = mask.sum(axis=(1, 2)).astype(float)
            if area.min() == 0:
                continue
            cx = (mask * xs).sum(axis=(1, 2)) / area
            cy = (mask * ys).sum(axis=(1, 2)) / area
            dist = MOVE_SPEED * (e["end"] - e["start"])
            a = e["action"]
            if a == "move_left":
                assert cx[0] - cx[1] > 0.6 * dist, (vid, e)
            elif a == "move_right":
                assert cx[1] - cx[0] > 0.6 * dist, (vid, e)
            elif a == "move_up":
                assert cy[0] - cy[1] > 0.6 * dist, (vid, e)
            elif a == "move_down":
                assert cy[1] - cy[0] > 0.6 * dist, (vid, e)
            elif a == "grow":
                assert area[1] > 1.3 * area[0], (vid, e, area)
            elif a == "shrink":
                assert area[1] < 0.8 * area[0], (vid, e, area)
            elif a == "blink":
                seq = _colour_mask(fr[k0:k0 + 8], o["colour"]).sum(axis=(1, 2))
                on, off = seq[[0, 1, 4, 5]], seq[[2, 3, 6, 7]]
                assert on.min() > 0 and 3 * off.max() < on.min(), (vid, e, seq)
            checked[a] += 1
    assert len(checked) >= 5 and sum(checked.values()) >= 20, checked


def test_colours_survive_h264(tiny_world):
    """The centre pixel of each retrieval test object decodes close to its nominal colour."""
    gt = json.loads((tiny_world / "ground_truth.json").read_text())
    for vid, g in gt.items():
        if g["split"] != "retrieval_test":
            continue
        fr = _decode(tiny_world / "videos" / f"{vid}.mp4")
        o = g["objects"][0]
        px = fr[0, int(o["y"]), int(o["x"])].astype(float)
        nominal = np.array(COLOURS[o["colour"]], float)
        others = [np.linalg.norm(px - np.array(c, float)) for name, c in COLOURS.items() if name != o["colour"]]
        assert np.linalg.norm(px - nominal) < 45 and np.linalg.norm(px - nominal) < min(others), (vid, o, px)


# ------------------------------------------------------------------------------------------------------ CLI
def test_cli_reuse_refuse_and_force(tmp_path, capsys):
    out = tmp_path / "w"
    assert synth_main(["--out", str(out), "--seed", "2", "--preset", "tiny", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "wrote" in text and "caption.json" in text and "MSR-VTT" in text
    before = (out / "manifest.json").stat().st_mtime_ns
    assert synth_main(["--out", str(out), "--seed", "2", "--preset", "tiny", "--quiet"]) == 0
    assert "reusing" in capsys.readouterr().out
    assert (out / "manifest.json").stat().st_mtime_ns == before
    # a different world in the same directory needs --force
    res = run_cli(["synth", "--out", out, "--seed", "3", "--preset", "tiny", "--quiet"], capsys)
    assert_one_line_error(res, 2, "--force")  # usage error, raised and printed by locvtp.cli like every command's
    # an incomplete world (a deleted video) is regenerated, not reused
    victim = next((out / "videos").glob("*.mp4"))
    victim.unlink()
    assert synth_main(["--out", str(out), "--seed", "2", "--preset", "tiny", "--quiet"]) == 0
    assert "wrote" in capsys.readouterr().out and victim.is_file()
    assert synth_main(["--out", str(out), "--seed", "3", "--preset", "tiny", "--quiet", "--force"]) == 0
    assert json.loads((out / "manifest.json").read_text())["seed"] == 3


def test_refuses_foreign_directory(tmp_path):
    (tmp_path / "thesis.tex").write_text("precious")
    with pytest.raises(WorldExistsError, match="not a synthetic world"):
        generate_world(tmp_path, seed=0, preset="tiny", progress=False)
    assert (tmp_path / "thesis.tex").read_text() == "precious"
    with pytest.raises(ValueError, match="unknown preset"):
        generate_world(tmp_path / "x", preset="huge", progress=False)


def test_cli_dispatch(tmp_path):
    from locvtp.cli import main

    assert main(["synth", "--out", str(tmp_path / "w"), "--preset", "tiny", "--quiet"]) == 0
    assert (tmp_path / "w" / "manifest.json").is_file()


def test_interrupted_and_outdated_worlds_are_regenerated(tmp_path):
    import hashlib

    out = tmp_path / "w"
    generate_world(out, seed=0, preset="tiny", progress=False)
    assert not (out / IN_PROGRESS).exists()
    # outdated: an annotation file (as its manifest records it) differs from what this generator writes ->
    # cleaned and regenerated
    m = json.loads((out / "manifest.json").read_text())
    (out / "coin" / "COIN.json").write_text("{}")
    m["annotation_sha256"]["coin/COIN.json"] = hashlib.sha256(b"{}").hexdigest()
    (out / "manifest.json").write_text(json.dumps(m))
    m2 = generate_world(out, seed=0, preset="tiny", progress=False)
    assert not m2.get("reused")
    assert json.loads((out / "coin" / "COIN.json").read_text())["database"]
    # interrupted: no manifest, but our in-progress marker (naming the request) -> regenerated without --force
    (out / "manifest.json").unlink()
    (out / IN_PROGRESS).write_text(json.dumps({"seed": 0, "preset": "tiny",
                                                 "generator_version": m2["generator_version"]}))
    assert not generate_world(out, seed=0, preset="tiny", progress=False).get("reused")
    assert generate_world(out, seed=0, preset="tiny", progress=False)["reused"]


def test_regeneration_never_deletes_files_the_world_does_not_list(tmp_path):
    """Issue 26: `synth --force` deleted a user's videos/my_own.mp4 and grounding/notes.txt with the old world.
    Files inside the world's folders that its manifest does not list (or an annotation file edited since) are
    refused, naming them, with or without force; a file beside the world is kept."""
    out = tmp_path / "w"
    generate_world(out, seed=0, preset="tiny", progress=False)
    mine = {"videos/my_own.mp4": b"my video", "grounding/notes.txt": b"notes", "top.txt": b"top"}
    for rel, data in mine.items():
        (out / rel).write_bytes(data)
    for force in (False, True):
        with pytest.raises(LocVTPError, match="videos/my_own.mp4" if force else "use --force"):
            generate_world(out, seed=1, preset="tiny", progress=False, force=force)
        assert all((out / rel).read_bytes() == data for rel, data in mine.items())
    assert open_world(out)["seed"] == 0  # the old world is untouched too
    (out / "videos" / "my_own.mp4").unlink()
    (out / "grounding" / "notes.txt").unlink()
    edited = out / "grounding" / "activitynet" / "val_1.json"
    edited.write_text("[] ")
    with pytest.raises(LocVTPError, match="val_1.json"):
        generate_world(out, seed=1, preset="tiny", progress=False, force=True)
    assert edited.read_text() == "[] "
    edited.unlink()
    assert generate_world(out, seed=1, preset="tiny", progress=False, force=True)["seed"] == 1
    assert (out / "top.txt").read_bytes() == b"top"


def test_never_deletes_a_directory_of_real_videos(tmp_path):
    """A data directory holding only `videos/` (names the world also uses) is not a world: refused."""
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "my_video.mp4").write_bytes(b"precious")
    with pytest.raises(WorldExistsError, match="not a synthetic world"):
        generate_world(tmp_path, seed=0, preset="tiny", progress=False)
    assert (tmp_path / "videos" / "my_video.mp4").read_bytes() == b"precious"


def test_write_mp4_rejects_odd_sizes_and_leaves_no_temp_file(tmp_path):
    frames = np.zeros((4, 31, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="must be even"):
        write_mp4(tmp_path / "odd.mp4", frames)
    assert list(tmp_path.iterdir()) == []
    write_mp4(tmp_path / "ok.mp4", np.zeros((4, 32, 32, 3), np.uint8))
    assert [p.name for p in tmp_path.iterdir()] == ["ok.mp4"] and len(_decode(tmp_path / "ok.mp4")) == 4
