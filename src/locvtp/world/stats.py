"""Moment statistics of a synthetic world (``locvtp synth --stats DIR``), from its files alone.

Why: whether the temporal term's premise holds on a world is a property of the data — how long moments are
against the context width W, and how often a pre-training sample's context clip leaves the reference clip's event
(issue 23). These figures let a world be compared with ActivityNet Captions, YouCook2 or Charades-STA, whatever
its generator version, and hold the benchmark-like presets inside their targets (tests/test_world_stats.py).

Everything is read from ``ground_truth.json`` (events, durations, splits) and ``pretrain/caption.json`` (the
narrations pre-training samples), so :func:`stats_from_files` works on a world on disk (:func:`world_stats`) or on
the annotation bytes of a plan that was never rendered (:func:`plan_stats`).

The crossing share follows the pre-training sample rule exactly: one sample per narration, a window of
``num_clips`` clips of ``clip_seconds`` around the narration's centre moved by the training jitter
(:func:`locvtp.training.sources.narration_window`), and per clip one offset δ drawn uniformly among the valid
ones in [−W, W]∖{0} (:func:`locvtp.data.offsets.draw_offsets`: the context clip inside the window; with
``objective.context_in_span`` both clips' centres inside the narration's own, unjittered span). A pair counts when
the reference clip's centre lies inside an event; it *crosses* when the context clip's centre is not inside that
same event. The share is the expectation over δ (exact: the valid offsets are enumerated) and over the jitter
(``jitter_points`` equally spaced quantiles of U(−jitter, jitter)), so it is deterministic.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

GROUNDING_SPLITS = ("pretrain", "grounding_train", "grounding_test")


def _spread(values: list[float] | np.ndarray) -> dict[str, float | None]:
    """median, p10 and p90 (linear interpolation), None for no values."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return {"median": None, "p10": None, "p90": None}
    p10, med, p90 = np.percentile(v, [10, 50, 90])
    return {"median": round(float(med), 2), "p10": round(float(p10), 2), "p90": round(float(p90), 2)}


def _split_stats(videos: list[dict[str, Any]]) -> dict[str, Any]:
    """Lengths of the videos and of their events (moments), moment/video ratios, events per video."""
    lengths = [e["end"] - e["start"] for v in videos for e in v["events"]]
    ratios = [(e["end"] - e["start"]) / v["duration"] for v in videos for e in v["events"] if v["duration"] > 0]
    counts = [len(v["events"]) for v in videos]
    pairs = [(a["object"], b["object"]) for v in videos for a, b in zip(v["events"], v["events"][1:])]
    return {"videos": len(videos), "moments": len(lengths), "video_seconds": _spread([v["duration"] for v in videos]),
            "moment_seconds": _spread(lengths), "moment_video_ratio": _spread(ratios),
            "events_per_video": {"mean": round(float(np.mean(counts)), 2) if counts else None,
                                 "min": min(counts, default=None), "max": max(counts, default=None)},
            # the continuity knob of generator 1.4: consecutive events by the same object
            "same_actor_neighbours_pct": round(100.0 * sum(a == b for a, b in pairs) / len(pairs), 1) if pairs
            else None, **repeated_actions(videos)}


def repeated_actions(videos: list[dict[str, Any]]) -> dict[str, float | None]:
    """How far the verb alone places a moment (generator 1.6's `same_action` knob), in %: the videos in which two
    events of distinct objects share their action; the moments (a grounding split's queries) whose action another
    event of the same video, by another object, also has (the queries the verb alone cannot place); and the
    expected share of moments a verb-only oracle finds: it knows every event's action, not its object, and picks
    uniformly among the video's events with the query's action (its R1 at any IoU threshold when events do not
    overlap, as in every generated world). None without videos, or when an event does not name its ``"action"``."""
    keys = ("repeated_action_videos_pct", "verb_ambiguous_moments_pct", "verb_only_oracle_pct")
    if not videos or any("action" not in e for v in videos for e in v["events"]):
        return dict.fromkeys(keys)
    hit_videos = ambiguous = found = moments = 0.0
    for v in videos:
        by_action: dict[str, list[Any]] = {}
        for e in v["events"]:
            by_action.setdefault(e["action"], []).append(e["object"])
        hit_videos += any(len(set(objs)) > 1 for objs in by_action.values())
        for e in v["events"]:
            same = by_action[e["action"]]
            ambiguous += any(o != e["object"] for o in same)
            found += 1.0 / len(same)
            moments += 1
    if not moments:
        return {**dict.fromkeys(keys), "repeated_action_videos_pct": round(100.0 * hit_videos / len(videos), 1)}
    return dict(zip(keys, (round(100.0 * hit_videos / len(videos), 1), round(100.0 * ambiguous / moments, 1),
                           round(100.0 * found / moments, 1))))


def _event_index(centres: np.ndarray, events: list[dict[str, Any]]) -> np.ndarray:
    """Per clip centre, the index of the event whose [start, end) holds it, −1 for none (background)."""
    idx = np.full(centres.shape, -1, dtype=np.int64)
    for k, e in enumerate(events):
        idx[(centres >= e["start"]) & (centres < e["end"])] = k
    return idx


def crossing_counts(start: float, end: float, duration: float, events: list[dict[str, Any]], *, num_clips: int,
                    clip_seconds: float, max_offset: int, shift: float = 0.0) -> np.ndarray:
    """[[expected crossing pairs, pairs], the same with context_in_span] of one sample: a narration [start, end]
    whose window centre is moved by ``shift`` seconds; a pair per in-event reference clip with a valid offset."""
    from locvtp.training.sources import narration_window

    windows, mask = narration_window(start + shift, end + shift, duration, num_clips, clip_seconds)
    centres = windows.mean(axis=1)
    ev = _event_index(centres, events)
    cand = np.concatenate([np.arange(-max_offset, 0), np.arange(1, max_offset + 1)])  # [2W]
    ctx = np.arange(num_clips)[:, None] + cand[None, :]  # [T, 2W]
    inside = (ctx >= 0) & (ctx < num_clips)
    ctx = ctx.clip(0, num_clips - 1)
    cross = ev[ctx] != ev[:, None]
    out = np.zeros((2, 2))
    for row, usable in enumerate((mask, mask & (centres >= start) & (centres <= end))):
        ok = inside & usable[ctx] & usable[:, None]  # the offsets draw_offsets chooses among
        ref = ok.any(axis=1) & (ev >= 0)
        out[row] = ((cross & ok)[ref].sum(axis=1) / ok[ref].sum(axis=1)).sum(), ref.sum()
    return out


def crossing_share(ground_truth: dict[str, Any], captions: dict[str, Any], *, num_clips: int,
                   clip_seconds: float, jitter_seconds: float, max_offset: int,
                   jitter_points: int = 8) -> tuple[float | None, float | None]:
    """Shares (in %) of the pre-training context pairs whose context clip leaves the reference clip's event, without
    and with ``context_in_span`` (module docstring); None when no pair has its reference inside an event."""
    shifts = jitter_seconds * ((2 * np.arange(jitter_points) + 1) / jitter_points - 1) if jitter_seconds > 0 else [0.0]
    total = np.zeros((2, 2))
    for vid, cap in captions.items():
        video = ground_truth.get(vid)
        if video is None:
            continue
        for s, t in zip(cap["start"], cap["end"]):
            for shift in shifts:
                total += crossing_counts(float(s), float(t), float(video["duration"]), video["events"],
                                         num_clips=num_clips, clip_seconds=clip_seconds, max_offset=max_offset,
                                         shift=float(shift))
    shares = [round(float(100.0 * c / n), 2) if n else None for c, n in total]
    return shares[0], shares[1]


def _sample_rule() -> dict[str, Any]:
    """The defaults of pre-training's sample rule (data.num_clips, data.clip_seconds, data.jitter_seconds,
    objective.max_offset): the one place they are written is locvtp.config."""
    from locvtp.config import DataConfig, ObjectiveConfig

    d, o = DataConfig(), ObjectiveConfig()
    return {"num_clips": d.num_clips, "clip_seconds": d.clip_seconds, "jitter_seconds": d.jitter_seconds,
            "max_offset": o.max_offset}


def stats_from_files(ground_truth: dict[str, Any], captions: dict[str, Any], **rule: Any) -> dict[str, Any]:
    """The statistics of a world given its ground_truth.json and pretrain/caption.json (parsed). ``rule``
    overrides the pre-training sample rule (`_sample_rule`: num_clips, clip_seconds, jitter_seconds, max_offset)."""
    rule = {**_sample_rule(), **rule}
    by_split: dict[str, list[dict[str, Any]]] = {}
    for v in ground_truth.values():
        by_split.setdefault(v.get("split", ""), []).append(v)
    pre = [ground_truth[vid] for vid in captions if vid in ground_truth]
    narr = [(s, t) for cap in captions.values() for s, t in zip(cap["start"], cap["end"])]
    n_events = sum(len(v["events"]) for v in pre)
    out: dict[str, Any] = {"splits": {name: _split_stats(by_split.get(name, [])) for name in GROUNDING_SPLITS}}
    out["narrations"] = {"count": len(narr), "per_event": round(len(narr) / n_events, 2) if n_events else None,
                         "seconds": _spread([t - s for s, t in narr])}
    crossing, in_span = crossing_share(ground_truth, captions, **rule)
    out["context_pairs"] = {**rule, "crossing_pct": crossing, "crossing_in_span_pct": in_span}
    return out


def world_stats(path: str | Path, **rule: Any) -> dict[str, Any]:
    """:func:`stats_from_files` of the complete world in ``path`` (any generator version), with its seed, preset
    and version. NotAWorldError (one line) when ``path`` holds no complete world."""
    from locvtp.world.generate import NotAWorldError, open_world

    manifest = open_world(path)
    if manifest is None:
        raise NotAWorldError(f"{path}: no synthetic world here (missing or empty directory)")
    root = Path(path)
    gt = json.loads((root / "ground_truth.json").read_text(encoding="utf-8"))
    captions = json.loads((root / "pretrain" / "caption.json").read_text(encoding="utf-8"))
    return {"world": str(path), "seed": manifest["seed"], "preset": manifest["preset"],
            "generator_version": manifest["generator_version"], **stats_from_files(gt, captions, **rule)}


def plan_stats(plan: Any, **rule: Any) -> dict[str, Any]:
    """:func:`stats_from_files` of a plan's annotation files (the bytes the world would hold), without rendering."""
    from locvtp.world.annotations import build_annotations

    files = build_annotations(plan)
    return {"seed": plan.seed, "preset": plan.preset, "generator_version": plan.version,
            **stats_from_files(json.loads(files["ground_truth.json"]), json.loads(files["pretrain/caption.json"]),
                               **rule)}


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:g} %"


def _fmt(s: dict[str, Any]) -> str:
    if s["median"] is None:
        return "-"
    return f"{s['median']:g} ({s['p10']:g}-{s['p90']:g})"


def format_stats(stats: dict[str, Any]) -> str:
    """The table `locvtp synth --stats` prints (Markdown: medians with p10-p90)."""
    rows = [("videos", lambda s: str(s["videos"])), ("moments (queries)", lambda s: str(s["moments"])),
            ("video length, s", lambda s: _fmt(s["video_seconds"])),
            ("moment length, s", lambda s: _fmt(s["moment_seconds"])),
            ("moment / video", lambda s: _fmt(s["moment_video_ratio"])),
            ("events per video, mean (min-max)", lambda s: "-" if s["events_per_video"]["mean"] is None else
             f"{s['events_per_video']['mean']:g} ({s['events_per_video']['min']}-{s['events_per_video']['max']})"),
            ("consecutive events by the same actor", lambda s: _pct(s["same_actor_neighbours_pct"])),
            ("videos repeating an action on another actor", lambda s: _pct(s["repeated_action_videos_pct"])),
            ("moments whose action another event has", lambda s: _pct(s["verb_ambiguous_moments_pct"])),
            ("moments a verb-only oracle finds", lambda s: _pct(s["verb_only_oracle_pct"]))]
    head = f"world {stats.get('world', '(plan)')}: seed {stats['seed']}, preset {stats['preset']}, " \
           f"generator {stats['generator_version']}"
    lines = [head, "", "| median (p10-p90) | " + " | ".join(GROUNDING_SPLITS) + " |",
             "|---|" + "---:|" * len(GROUNDING_SPLITS)]
    for name, cell in rows:
        lines.append(f"| {name} | " + " | ".join(cell(stats["splits"][sp]) for sp in GROUNDING_SPLITS) + " |")
    n, c, test = stats["narrations"], stats["context_pairs"], stats["splits"]["grounding_test"]
    pct = (lambda x: "-" if x is None else f"{x:.1f} %")
    lines += ["", f"grounding test: {_pct(test['verb_ambiguous_moments_pct'])} of the queries the verb alone cannot "
              f"place (their action is another event's too, by another object), in "
              f"{_pct(test['repeated_action_videos_pct'])} of the videos; a verb-only oracle finds "
              f"{_pct(test['verb_only_oracle_pct'])}",
              "", f"narrations: {n['count']}, {n['per_event']} per pre-training event, length {_fmt(n['seconds'])} s",
              f"context pairs crossing an event boundary (W={c['max_offset']}, T={c['num_clips']} clips of "
              f"{c['clip_seconds']:g} s, jitter ±{c['jitter_seconds']:g} s): {pct(c['crossing_pct'])}; "
              f"with context_in_span: {pct(c['crossing_in_span_pct'])}"]
    return "\n".join(lines)
