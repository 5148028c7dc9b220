"""Generator 1.4's benchmark-like presets (`long`, `charades`) and `locvtp synth --stats` (issue 23 item 1).

The presets are held inside their targets on seeds they were not tuned on (11, 12; tuned on 0), from the plans'
annotation files without rendering; the crossing share is checked against a plain-loop reference on a hand-made
world and against pre-training's own sampling (PretrainDataset + draw_offsets)."""
from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest

from locvtp.world.annotations import build_annotations
from locvtp.world.plan import (
    FPS, FRAME_SIZE, MOMENT_STYLES, R_MAX, R_MIN, SIZE_RATE, MOVE_SPEED, _extent, plan_world, size_range,
)
from locvtp.world.render import object_tracks, render_video
from locvtp.world.stats import crossing_share, plan_stats, stats_from_files
from cli_helpers import assert_one_line_error, run_cli

# the splits the moment statistics do not read, left out to keep the tests short
OTHERS = {k: 0 for k in ("webvid", "retrieval_train", "retrieval_test", "crosstask_tasks", "coin_tasks", "epic_train",
                         "epic_val")}
RULE = {"num_clips": 8, "clip_seconds": 1.0, "jitter_seconds": 1.0, "max_offset": 2}

# A hand-made world: events with gaps, adjacent events (gap 0), a video shorter than the window, narrations that
# straddle boundaries and one in a gap.
HAND_GT = {
    "a": {"split": "pretrain", "duration": 30.0, "events": [
        {"object": 0, "action": "grow", "start": 2.0, "end": 9.5},
        {"object": 0, "action": "blink", "start": 9.5, "end": 14.0},
        {"object": 1, "action": "grow", "start": 17.0, "end": 28.0}]},
    "b": {"split": "pretrain", "duration": 6.5, "events": [{"object": 0, "action": "grow", "start": 1.0, "end": 4.0}]},
    "c": {"split": "grounding_test", "duration": 20.0, "events": [
        {"object": 0, "action": "blink", "start": 5.0, "end": 15.0}]},
}
HAND_CAPTIONS = {
    "a": {"start": [1.5, 8.7, 12.0, 15.0, 20.3], "end": [4.0, 11.2, 15.5, 16.5, 23.0], "text": ["x"] * 5},
    "b": {"start": [0.5, 3.0], "end": [3.5, 5.0], "text": ["y"] * 2},
}


def _loop_window(s: float, e: float, duration: float, shift: float) -> list[tuple[float, float]]:
    """The clips of one sample, written from docs/training.md's rule (not from narration_window)."""
    T, cs = RULE["num_clips"], RULE["clip_seconds"]
    length = T * cs
    if duration <= length:
        n = max(1, math.floor(duration / cs + 1e-6))
        return [(duration * k / n, duration * (k + 1) / n) for k in range(n)]
    a = min(max((s + e) / 2 + shift - length / 2, 0.0), duration - length)
    return [(a + k * cs, a + (k + 1) * cs) for k in range(T)]


def _loop_share(gt: dict, captions: dict, in_span: bool, points: int = 8) -> float:
    crossing = pairs = 0.0
    for vid, cap in captions.items():
        events = gt[vid]["events"]
        for s, e in zip(cap["start"], cap["end"]):
            for m in range(points):
                shift = RULE["jitter_seconds"] * ((2 * m + 1) / points - 1)
                clips = _loop_window(s, e, gt[vid]["duration"], shift)
                centres = [(a + b) / 2 for a, b in clips]
                use = [not in_span or s <= c <= e for c in centres]
                which = [next((k for k, ev in enumerate(events) if ev["start"] <= c < ev["end"]), -1) for c in centres]
                for t in range(len(clips)):
                    ctx = [t + d for d in (-2, -1, 1, 2) if 0 <= t + d < len(clips) and use[t] and use[t + d]]
                    if which[t] < 0 or not ctx:
                        continue
                    pairs += 1
                    crossing += sum(which[c] != which[t] for c in ctx) / len(ctx)
    return 100.0 * crossing / pairs


@pytest.mark.parametrize("in_span", [False, True])
def test_crossing_share_matches_plain_loop(in_span):
    got = crossing_share(HAND_GT, HAND_CAPTIONS, **RULE)[int(in_span)]
    assert got == round(_loop_share(HAND_GT, HAND_CAPTIONS, in_span), 2)
    assert 0 < got < 100


def test_crossing_share_is_what_pretraining_samples():
    """Monte Carlo through the dataset's own windows and draw_offsets (random jitter) agrees with the exact share."""
    from locvtp.training.dataset import PretrainDataset
    from locvtp.training.records import CaptionItem

    class Source:  # durations and empty clips: only the sample rule is exercised
        durations = {v: g["duration"] for v, g in HAND_GT.items()}

        def clips(self, vid, windows, train, rng):
            return np.zeros((len(windows), 1), np.float32)

    items = [CaptionItem(v, "x", float(s), float(e), "hand") for v, c in HAND_CAPTIONS.items()
             for s, e in zip(c["start"], c["end"])]
    for in_span in (False, True):
        ds = PretrainDataset(items, Source(), RULE["num_clips"], RULE["clip_seconds"], jitter_seconds=1.0,
                             train=True, max_offset=2, offset_in_span=in_span)
        crossing = pairs = 0
        for epoch in range(250):
            for i, item in enumerate(items):
                smp = ds.load(i, epoch)
                events = HAND_GT[item.vid]["events"]
                centres = smp["windows"].astype(np.float64).mean(1)
                which = np.array([next((k for k, ev in enumerate(events) if ev["start"] <= c < ev["end"]), -1)
                                  for c in centres])
                for t, d in enumerate(smp["offsets"]):
                    if d != 0 and which[t] >= 0:
                        pairs += 1
                        crossing += which[t + d] != which[t]
        exact = crossing_share(HAND_GT, HAND_CAPTIONS, **RULE, jitter_points=200)[int(in_span)]
        assert abs(100.0 * crossing / pairs - exact) < 1.5, (in_span, 100.0 * crossing / pairs, exact)


def test_stats_of_hand_made_world():
    s = stats_from_files(HAND_GT, HAND_CAPTIONS, **RULE)
    pre, test = s["splits"]["pretrain"], s["splits"]["grounding_test"]
    assert pre["videos"] == 2 and pre["moments"] == 4 and test["moments"] == 1
    assert pre["moment_seconds"]["median"] == float(np.median([7.5, 4.5, 11.0, 3.0]))
    assert pre["video_seconds"] == {"median": 18.25, "p10": 8.85, "p90": 27.65}
    assert pre["events_per_video"] == {"mean": 2.0, "min": 1, "max": 3}
    assert pre["same_actor_neighbours_pct"] == 50.0  # a: 0->0 (same), 0->1 (another)
    # a: "grow" by objects 0 and 1 (2 of its 3 moments); b's "grow" is another video's; c: one event
    assert pre["repeated_action_videos_pct"] == 50.0 and pre["verb_ambiguous_moments_pct"] == 50.0
    assert pre["verb_only_oracle_pct"] == 75.0  # a: 1/2 + 1 + 1/2, b: 1 -> 3 of 4
    assert test["repeated_action_videos_pct"] == 0.0 and test["verb_ambiguous_moments_pct"] == 0.0
    assert s["narrations"]["count"] == 7 and s["narrations"]["per_event"] == 1.75
    assert s["splits"]["grounding_train"]["moment_seconds"]["median"] is None


def _loop_repeated(videos: list[dict]) -> tuple[float, float, float]:
    """(videos with an action done by two distinct objects, moments sharing their action with another object's
    event of the same video, the verb-only oracle's hits: 1 / the events with the query's action), in %, by
    nested loops."""
    hit = amb = n = oracle = 0
    for v in videos:
        ev = v["events"]
        found = False
        for i in range(len(ev)):
            n += 1
            others = [j for j in range(len(ev)) if j != i and ev[j]["action"] == ev[i]["action"]
                      and ev[j]["object"] != ev[i]["object"]]
            amb += bool(others)
            found = found or bool(others)
            oracle += 1 / sum(ev[j]["action"] == ev[i]["action"] for j in range(len(ev)))
        hit += found
    return round(100.0 * hit / len(videos), 1), round(100.0 * amb / n, 1), round(100.0 * oracle / n, 1)


def test_repeated_actions_match_plain_loop():
    from locvtp.world.stats import repeated_actions

    gt = json.loads(build_annotations(plan_world(4, "demo", sizes={**OTHERS, "pretrain": 0}))["ground_truth.json"])
    for split in ("grounding_train", "grounding_test"):
        videos = [v for v in gt.values() if v["split"] == split]
        got = repeated_actions(videos)
        want = _loop_repeated(videos)
        assert (got["repeated_action_videos_pct"], got["verb_ambiguous_moments_pct"], got["verb_only_oracle_pct"]) \
            == want
        assert 0 < want[1] < 100 and 0 < want[2] < 100  # the demo's independent events repeat some actions, not all
    # an event that does not name its action: unknown, not 0
    none = {"repeated_action_videos_pct": None, "verb_ambiguous_moments_pct": None, "verb_only_oracle_pct": None}
    assert repeated_actions([{"events": [{"object": 0, "start": 0.0, "end": 1.0}]}]) == none
    assert repeated_actions([]) == none


@pytest.mark.parametrize("seed", [11, 12])
def test_long_preset_inside_targets(seed):
    plan = plan_world(seed, "long", sizes=OTHERS)
    s = plan_stats(plan)
    assert s["generator_version"] == "1.5"
    videos = [v for name in ("pretrain", "grounding_train", "grounding_test") for v in plan.splits[name]]
    assert all(50 <= v.duration <= 120 and 3 <= len(v.events) <= 5 for v in videos)
    assert all(6 <= e.end - e.start <= 45 for v in videos for e in v.events)
    for name in ("pretrain", "grounding_train", "grounding_test"):
        sp = s["splits"][name]
        assert sp["moment_seconds"]["median"] >= 10, (name, sp)  # ActivityNet 21-26 s, YouCook2 14 s
        assert 50 <= sp["video_seconds"]["p10"] and sp["video_seconds"]["p90"] <= 120
        assert sp["events_per_video"]["min"] >= 3 and sp["events_per_video"]["max"] <= 5
        assert 60 <= sp["same_actor_neighbours_pct"] <= 95  # the continuity knob (0.8)
    assert s["splits"]["grounding_test"]["moments"] >= 600 and s["splits"]["grounding_train"]["moments"] >= 2000
    assert s["narrations"]["per_event"] >= 2.5
    assert 2.0 <= s["narrations"]["seconds"]["p10"] and s["narrations"]["seconds"]["p90"] <= 4.0
    c = s["context_pairs"]
    assert c["crossing_pct"] <= 15 and c["crossing_in_span_pct"] <= 10, c


@pytest.mark.parametrize("seed", [11, 12])
def test_charades_preset_inside_targets(seed):
    plan = plan_world(seed, "charades", sizes=OTHERS)
    s = plan_stats(plan)
    for name in ("grounding_train", "grounding_test"):
        videos = plan.splits[name]
        assert all(26 <= v.duration <= 34 and 1 <= len(v.events) <= 3 for v in videos)
        assert all(5 <= e.end - e.start <= 12 for v in videos for e in v.events)
        assert 28 <= s["splits"][name]["video_seconds"]["median"] <= 32
    assert s["splits"]["grounding_test"]["moments"] >= 600 and s["splits"]["grounding_train"]["moments"] >= 2000
    assert s["context_pairs"]["crossing_pct"] <= 25  # Charades-STA-like: shorter moments than `long`


def test_long_narrations_are_short_and_about_1s_misaligned():
    plan = plan_world(11, "long", sizes={"pretrain": 30})
    cap = json.loads(build_annotations(plan)["pretrain/caption.json"])
    shift = MOMENT_STYLES["long"].narration_shift
    near = total = 0
    for v in plan.splits["pretrain"]:
        c = cap[v.vid]
        for s, e in zip(c["start"], c["end"]):
            total += 1
            near += any(ev.start - shift - 0.01 <= s and e <= ev.end + shift + 0.01 for ev in v.events)
    assert near / total > 0.8  # the rest are the ~15 % unrelated sentences, placed anywhere


def test_14_15_presets_defaults_and_tiny_unchanged():
    few = {k: 1 for k in ("pretrain", "grounding_train", "grounding_test", "epic_train", "epic_val")}
    assert plan_world(0, "long", sizes=few).version == "1.5" and plan_world(0, "charades", sizes=few).version == "1.5"
    assert plan_world(0, "tiny").version == "1.3"
    with pytest.raises(ValueError, match="needs generator version 1.4"):
        plan_world(0, "long", "1.3")
    a, b = build_annotations(plan_world(0, "tiny", "1.3")), build_annotations(plan_world(0, "tiny", "1.4"))
    diff = sorted(k for k in a if a[k] != b[k])
    assert diff == ["retrieval/MSRVTT_data.json"]  # only its "version" field
    assert a[diff[0]].replace(b'"1.3"', b'"1.4"') == b[diff[0]]
    # sizes: fewer videos, the same first videos
    small = plan_world(0, "long", sizes={**few, "grounding_test": 3})
    assert [v.events for v in small.splits["grounding_test"]] == \
        [v.events for v in plan_world(0, "long", sizes={**few, "grounding_test": 5}).splits["grounding_test"][:3]]


def _cyclic_reference(v) -> dict[str, np.ndarray]:
    """Per-frame states of a 1.4 video from the rule written out frame by frame (plain loops)."""
    k = v.num_frames
    out = {q: np.zeros((len(v.objects), k)) for q in ("x", "y", "r")}
    for i, o in enumerate(v.objects):
        x, y, r = o.x, o.y, o.r
        evs = sorted((e for e in v.events if e.obj == i), key=lambda e: e.start)
        rest = (x, y, r)
        for f in range(k):
            t = f / FPS
            x, y, r = rest
            for e in evs:
                if t < e.start:
                    break
                p = min(t - e.start, e.end - e.start)
                x0, y0, r0 = x, y, r
                lo, hi = size_range(o.shape, x0, y0)
                d = MOVE_SPEED * p
                if e.action in ("move_left", "move_right"):
                    x = x0 + (d if e.action == "move_right" else -d)
                    while not 0 <= x < FRAME_SIZE:  # wrap around the frame
                        x += FRAME_SIZE if x < 0 else -FRAME_SIZE
                elif e.action in ("move_up", "move_down"):
                    y = y0 + (d if e.action == "move_down" else -d)
                    while not 0 <= y < FRAME_SIZE:
                        y += FRAME_SIZE if y < 0 else -FRAME_SIZE
                elif e.action == "grow":
                    r = r0 + SIZE_RATE * p
                    while r > hi:  # restart from the smallest size
                        r -= hi - lo
                elif e.action == "shrink":
                    r = r0 - SIZE_RATE * p
                    while r < lo:  # restart from the largest size
                        r += hi - lo
            out["x"][i, f], out["y"][i, f], out["r"][i, f] = x, y, r
    return out


def test_cyclic_tracks_match_plain_loop_and_rest_inside_the_frame():
    plan = plan_world(12, "long", sizes={"pretrain": 0, "grounding_train": 2, "grounding_test": 0})
    for v in plan.splits["grounding_train"]:
        tr, ref = object_tracks(v), _cyclic_reference(v)
        for q in ("x", "y", "r"):
            err = np.abs(tr[q] - ref[q])
            err = np.minimum(err, FRAME_SIZE - err) if q != "r" else err  # positions are periodic
            assert err.max() < 1e-9, (q, err.max())
        assert tr["r"].min() >= R_MIN - 1e-9 and tr["r"].max() <= R_MAX + 1e-9
        busy = np.zeros(v.num_frames, bool)
        for e in v.events:
            busy[round(e.start * FPS):round(e.end * FPS)] = True
        for i, o in enumerate(v.objects):  # at rest: inside the frame
            m = _extent(o.shape, tr["r"][i, ~busy]) - 1e-6
            assert (tr["x"][i, ~busy] >= m).all() and (tr["x"][i, ~busy] <= FRAME_SIZE - m).all()


@pytest.mark.parametrize("preset", ["long", "recipe"])
def test_every_clip_of_a_long_event_shows_its_action(preset):
    plan = plan_world(11, preset, sizes={"pretrain": 0, "grounding_train": 0, "grounding_test": 3})
    clips = 0
    for v in plan.splits["grounding_test"]:
        fr = render_video(v).astype(np.float32)
        for e in v.events:
            k0, k1 = round(e.start * FPS), round(e.end * FPS)
            for c0 in range(k0, k1 - FPS + 1, FPS):
                change = np.abs(fr[c0:c0 + FPS + 1] - fr[c0]).mean(axis=(1, 2, 3)).max()
                assert change > 0.3, (v.vid, e, c0, change)
                clips += 1
        gaps = [(a.end, b.start) for a, b in zip(v.events, v.events[1:]) if b.start - a.end >= 0.5]
        for a, b in gaps:  # idle: still
            k0, k1 = round(a * FPS), round(b * FPS)
            assert np.abs(fr[k0:k1] - fr[k0]).max() == 0
    assert clips > 100


def test_synth_stats_cli(tiny_world, tmp_path, capsys):
    res = run_cli(["synth", "--stats", tiny_world], capsys)
    assert res.code == 0 and "crossing an event boundary" in res.out and "generator 1.3" in res.out
    assert "of the queries the verb alone cannot place" in res.out
    assert "moments whose action another event has" in res.out
    res = run_cli(["synth", "--stats", tiny_world, "--json"], capsys)
    s = json.loads(res.out)
    gt = json.loads((tiny_world / "ground_truth.json").read_text())
    assert s["splits"]["grounding_test"]["moments"] == sum(len(g["events"]) for g in gt.values()
                                                          if g["split"] == "grounding_test")
    assert 0 <= s["context_pairs"]["crossing_in_span_pct"] <= 100
    assert {k: v for k, v in s.items() if k != "world"} == plan_stats(plan_world(0, "tiny"))  # disk == plan
    assert_one_line_error(run_cli(["synth", "--stats", tiny_world, "--preset", "long"], capsys), 2, "--preset")
    assert_one_line_error(run_cli(["synth", "--stats", tiny_world, "--out", tmp_path / "o"], capsys), 2, "--out")
    assert_one_line_error(run_cli(["synth", "--stats", tmp_path / "none"], capsys), 2, "none")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.txt").write_text("x")
    assert_one_line_error(run_cli(["synth", "--stats", tmp_path / "junk"], capsys), 2, "junk", "not a synthetic world")
    assert_one_line_error(run_cli(["synth", "--out", tmp_path / "o", "--json"], capsys), 2, "--json")
    assert_one_line_error(run_cli(["synth", "--out", tmp_path / "o", "--preset", "charades", "--generator-version",
                                   "1.2"], capsys), 2, "charades", "1.4")
    assert not (tmp_path / "o").exists()


# sha256 of the JSON of {annotation path: sha256} of `plan_world(0, PRESET, "1.4")`'s annotations, taken before
# generator 1.5 existed: 1.4 stays generatable byte for byte.
V14_SEED0_ANNOTATIONS = {"long": "752222d7fa49b1a671feb191505de6cc3161239e53e1eff489cada356b830350",
                         "charades": "b55f91825de96c1bf46350fa98789cb7bb00e8907517388d1253353d890f9d32"}


@pytest.mark.parametrize("preset", ["long", "charades"])
def test_15_changes_only_the_labelled_set_to_the_demo_worlds(preset):
    """1.4 is unchanged; 1.5 differs from it only in the EPIC splits, which are the demo world's of the same seed
    (its verbs and nouns, its videos byte for byte), so a backbone trained on either world is the same."""
    def tree(files):
        return hashlib.sha256(json.dumps({k: hashlib.sha256(v).hexdigest() for k, v in sorted(files.items())},
                                         sort_keys=True).encode()).hexdigest()

    v14 = plan_world(0, preset, "1.4")
    assert tree(build_annotations(v14)) == V14_SEED0_ANNOTATIONS[preset]
    few = {"pretrain": 2, "grounding_train": 2, "grounding_test": 2, "epic_train": 6, "epic_val": 3}
    a, b = plan_world(3, preset, "1.4", sizes=few), plan_world(3, preset, "1.5", sizes=few)
    demo = plan_world(3, "demo", sizes={"epic_train": 6, "epic_val": 3})
    for split in a.splits:
        if split.startswith("epic"):
            assert [(v.vid, v.duration, v.events, v.objects) for v in b.splits[split]] == \
                [(v.vid, v.duration, v.events, v.objects) for v in demo.splits[split]], split
            assert all(v.extra.get("motion") is None for v in b.splits[split])
            assert render_video(b.splits[split][0]).tobytes() == render_video(demo.splits[split][0]).tobytes()
        else:
            assert [v.events for v in a.splits[split]] == [v.events for v in b.splits[split]], split
    files_a, files_b = build_annotations(a), build_annotations(b)
    assert sorted(k for k in files_a if files_a[k] != files_b[k]) == [
        "epic/EPIC_100_train.csv", "epic/EPIC_100_validation.csv", "ground_truth.json",
        "retrieval/MSRVTT_data.json"]  # the EPIC rows, their videos' ground truth, the version field
