"""The world's annotation files, as bytes, in the published formats (HowTo100M, WebVid, ActivityNet Captions,
Charades-STA, QVHighlights, MSR-VTT, CrossTask, COIN, EPIC-KITCHENS) plus ``ground_truth.json``.

A pure function of the plan (:func:`build_annotations`): the bytes are what a reusable world on disk must
match, so nothing here may depend on time, order of generation or the machine.
"""
from __future__ import annotations

import csv
import io
import json
from typing import Any

import numpy as np

from locvtp.data.formats import EPIC_HEADER
from locvtp.world.plan import (
    ACTIONS, COLOURS, FILLERS, FPS, MomentStyle, Obj, PRESETS, SHAPES, SPLIT_ORDER, UNRELATED, VideoSpec, WorldPlan,
    _pick, _rng, describe, instruct, moment_style,
)


# ----------------------------------------------------------------------------------------- annotation text
def _r2(x: float) -> float:
    return float(round(float(x), 2))


def _narration_text(rng: np.random.Generator, obj: Obj, action: str) -> str:
    """A narrated sentence about an event: a description or "now we <instruction>", sometimes after a filler."""
    text = describe(rng, obj, action) if rng.random() < 0.6 else f"now we {instruct(rng, obj, action)}"
    if rng.random() < 0.35:
        text = f"{_pick(rng, FILLERS)} {text}"
    return text


def narrations(spec: VideoSpec, rng: np.random.Generator) -> dict[str, list]:
    """HowTo100M-like noisy narration of one long video: fillers, ~15 % unrelated sentences, shifted times."""
    items: list[tuple[float, float, str]] = []
    for e in spec.events:
        text = _narration_text(rng, spec.objects[e.obj], e.action)
        shift = float(rng.uniform(-2.0, 2.0))  # misalignment of up to ±2 clips (1 s each)
        s = e.start + shift + float(rng.uniform(-0.3, 0.3))
        t = e.end + shift + float(rng.uniform(-0.3, 0.3))
        items.append((s, t, text))
    return _with_unrelated(spec, rng, items)


def moment_narrations(spec: VideoSpec, rng: np.random.Generator, style: MomentStyle) -> dict[str, list]:
    """HowTo100M-like narration of a generator-1.4 moment video: several short narrations per event (2-4 s, about
    one per ``narration_every`` s, each in its own part of the event), each moved by U(-shift, shift) s, plus
    ~15 % unrelated sentences. Why several short ones: HowTo100M narrates every few seconds, so a pre-training
    sample's span lies inside one step, and `context_in_span` keeps its context there."""
    items: list[tuple[float, float, str]] = []
    for e in spec.events:
        length_e = e.end - e.start
        n = int(np.clip(round(length_e / style.narration_every), *style.narrations_per_event))
        for j in range(n):
            length = min(float(rng.uniform(*style.narration_seconds)), length_e)
            centre = e.start + length_e * (j + float(rng.uniform(0.0, 1.0))) / n
            s = min(max(centre - 0.5 * length, e.start), e.end - length)
            shift = float(rng.uniform(-style.narration_shift, style.narration_shift))
            items.append((s + shift, s + shift + length, _narration_text(rng, spec.objects[e.obj], e.action)))
    return _with_unrelated(spec, rng, items)


def _with_unrelated(spec: VideoSpec, rng: np.random.Generator, items: list[tuple[float, float, str]]
                    ) -> dict[str, list]:
    """The narrations plus unrelated sentences, in time order, clamped to the video, as caption.json lists."""
    n_unrelated = int(rng.binomial(len(items), 0.15 / 0.85))  # expected share of all narrations: 15 %
    for _ in range(n_unrelated):
        length = float(rng.uniform(1.5, 4.0))
        s = float(rng.uniform(0.0, max(0.1, spec.duration - length)))
        items.append((s, s + length, _pick(rng, UNRELATED)))
    out: dict[str, list] = {"start": [], "end": [], "text": []}
    for s, t, text in sorted(items, key=lambda it: it[0]):
        s = min(max(0.0, s), spec.duration - 1.0)
        t = min(max(t, s + 1.0), spec.duration)
        out["start"].append(_r2(s))
        out["end"].append(_r2(t))
        out["text"].append(text)
    return out


def _paraphrases(rng: np.random.Generator, obj: Obj, action: str, n: int) -> list[str]:
    """n distinct descriptions when the grammar allows it (bounded attempts, then repeats are accepted)."""
    out: list[str] = []
    for _ in range(20 * n):
        s = describe(rng, obj, action)
        if s not in out:
            out.append(s)
        if len(out) == n:
            break
    while len(out) < n:
        out.append(describe(rng, obj, action))
    return out


def epic_noun(obj: Obj) -> tuple[str, int]:
    """EPIC-style noun key (``noun:modifier``, e.g. ``circle:red``) and class id (colour-major) of an object."""
    return f"{obj.shape}:{obj.colour}", list(COLOURS).index(obj.colour) * len(SHAPES) + SHAPES.index(obj.shape)


def _timestamp(seconds: float) -> str:
    """EPIC-KITCHENS ``HH:MM:SS.ff`` timestamp."""
    cs = int(round(seconds * 100))
    return f"{cs // 360000:02d}:{(cs // 6000) % 60:02d}:{(cs // 100) % 60:02d}.{cs % 100:02d}"


def _iso_duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"PT{s // 3600:02d}H{(s % 3600) // 60:02d}M{s % 60:02d}S"


def _text_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return _rng(seed, 1000 + SPLIT_ORDER.index(split), index)


def _js(obj: Any, indent: int | None = None) -> bytes:
    return (json.dumps(obj, ensure_ascii=False, indent=indent) + "\n").encode("utf-8")


def _csv_bytes(rows: list[list[Any]], header: list[str] | None = None) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    if header:
        w.writerow(header)
    w.writerows(rows)
    return buf.getvalue().encode("utf-8")


def build_annotations(plan: WorldPlan) -> dict[str, bytes]:
    """Every annotation file of the world as bytes, keyed by relative path (pure function of the plan)."""
    files: dict[str, bytes] = {}
    for part in (_pretrain_files, _grounding_files, _retrieval_files, _crosstask_files, _coin_files, _epic_files,
                 _ground_truth_file):
        part(plan, files)
    return files


def _pretrain_files(plan: WorldPlan, files: dict[str, bytes]) -> None:
    """HowTo100M caption.json (noisy narrations), WebVid csv (one clean caption per short video)."""
    seed, S = plan.seed, plan.splits
    # pre-training: HowTo100M caption.json (noisy), WebVid csv (one clean caption per short video)
    style = moment_style(plan.preset, plan.version)
    files["pretrain/caption.json"] = _js({
        v.vid: (narrations(v, _text_rng(seed, "pretrain", i)) if style is None
                else moment_narrations(v, _text_rng(seed, "pretrain", i), style))
        for i, v in enumerate(S["pretrain"])})
    wv_rows = []
    for i, v in enumerate(S["webvid"]):
        e = v.events[0]
        text = describe(_text_rng(seed, "webvid", i), v.objects[e.obj], e.action)
        wv_rows.append([v.vid, f"videos/{v.vid}.mp4", _iso_duration(v.duration), "synthetic", text])
    files["pretrain/webvid.csv"] = _csv_bytes(wv_rows, ["videoid", "contentUrl", "duration", "page_dir", "name"])


def _grounding_files(plan: WorldPlan, files: dict[str, bytes]) -> None:
    """The same grounding videos and queries as ActivityNet Captions, Charades-STA and QVHighlights."""
    seed, S = plan.seed, plan.splits
    # grounding: the same videos and queries in three formats
    queries: dict[str, dict[str, list[str]]] = {}
    for split in ("grounding_train", "grounding_test"):
        queries[split] = {}
        for i, v in enumerate(S[split]):
            rng = _text_rng(seed, split, i)
            queries[split][v.vid] = [describe(rng, v.objects[e.obj], e.action) for e in v.events]
    qid = 0
    for split, anet_name, cha_name, qv_name in (
            ("grounding_train", "train.json", "charades_sta_train.txt", "highlight_train_release.jsonl"),
            ("grounding_test", "val_1.json", "charades_sta_test.txt", "highlight_val_release.jsonl")):
        anet, cha_lines, qv_lines, cha_meta = {}, [], [], []
        for v in S[split]:
            sents = queries[split][v.vid]
            anet[v.vid] = {"duration": _r2(v.duration), "timestamps": [[_r2(e.start), _r2(e.end)] for e in v.events],
                           "sentences": sents}
            cha_meta.append([v.vid, "", "", "", "", "", "", "", "", "", f"{v.duration:.2f}"])
            for e, q in zip(v.events, sents):
                cha_lines.append(f"{v.vid} {e.start:.1f} {e.end:.1f}##{q}\n")
                clip_ids = list(range(int(e.start // 2), int(np.ceil(e.end / 2))))
                sal = [[4, 4, 4] if (2 * c >= e.start and 2 * c + 2 <= e.end) else [2, 2, 2] for c in clip_ids]
                qv_lines.append(json.dumps({"qid": qid, "query": q, "duration": _r2(v.duration), "vid": v.vid,
                                            "relevant_clip_ids": clip_ids, "saliency_scores": sal,
                                            "relevant_windows": [[_r2(e.start), _r2(e.end)]]}) + "\n")
                qid += 1
        files[f"grounding/activitynet/{anet_name}"] = _js(anet)
        files[f"grounding/charades/{cha_name}"] = "".join(cha_lines).encode("utf-8")
        files[f"grounding/charades/Charades_v1_{'train' if split.endswith('train') else 'test'}.csv"] = _csv_bytes(
            cha_meta, ["id", "subject", "scene", "quality", "relevance", "verified", "script", "objects",
                       "descriptions", "actions", "length"])
        files[f"grounding/qvhighlights/{qv_name}"] = "".join(qv_lines).encode("utf-8")


def _retrieval_files(plan: WorldPlan, files: dict[str, bytes]) -> None:
    """MSR-VTT json (several captions per video), the train id csv, the JSFusion-style test csv."""
    seed, S = plan.seed, plan.splits
    # retrieval: MSR-VTT json (several captions per video), train id csv, JSFusion-style test csv
    videos, sentences, test_rows, sen_id = [], [], [], 0
    p = PRESETS[plan.preset]
    for split in ("retrieval_train", "retrieval_test"):
        for i, v in enumerate(S[split]):
            e = v.events[0]
            caps = _paraphrases(_text_rng(seed, split, i), v.objects[e.obj], e.action, p.captions_per_retrieval_video)
            videos.append({"category": ACTIONS.index(e.action), "url": f"videos/{v.vid}.mp4", "video_id": v.vid,
                           "start time": 0.0, "end time": _r2(v.duration),
                           "split": "train" if split == "retrieval_train" else "test", "id": len(videos)})
            for c in caps:
                sentences.append({"caption": c, "video_id": v.vid, "sen_id": sen_id})
                sen_id += 1
            if split == "retrieval_test":
                test_rows.append([f"ret{len(test_rows)}", f"msr{v.vid}", v.vid, caps[0]])
    files["retrieval/MSRVTT_data.json"] = _js({"info": {"contributor": "locvtp synthetic world",
                                                       "version": plan.version},
                                              "videos": videos, "sentences": sentences})
    files["retrieval/MSRVTT_train.9k.csv"] = _csv_bytes([[v.vid] for v in S["retrieval_train"]], ["video_id"])
    files["retrieval/MSRVTT_JSFUSION_test.csv"] = _csv_bytes(test_rows, ["key", "vid_key", "video_id", "sentence"])


def _crosstask_files(plan: WorldPlan, files: dict[str, bytes]) -> None:
    """CrossTask: primary tasks, video lists, per-video step annotations."""
    S = plan.splits
    # step localization: CrossTask
    blocks = []
    for task in plan.crosstask_tasks:
        steps = task.step_texts()
        blocks.append(f"{task.task_id}\n{task.name}\nsynthetic://crosstask/{task.task_id}\n{len(steps)}\n"
                      f"{','.join(steps)}\n\n")
    files["crosstask/tasks_primary.txt"] = "".join(blocks).encode("utf-8")
    for split, name in (("crosstask_train", "videos.csv"), ("crosstask_val", "videos_val.csv")):
        files[f"crosstask/{name}"] = _csv_bytes([[v.extra["task"], v.vid, f"videos/{v.vid}.mp4"] for v in S[split]])
        for v in S[split]:
            rows = [[k, f"{e.start:.2f}", f"{e.end:.2f}"] for k, e in zip(v.extra["steps"], v.events)
                    if k is not None]  # distractor actions (generator >= 1.3) are background
            files[f"crosstask/annotations/{v.extra['task']}_{v.vid}.csv"] = _csv_bytes(rows)


def _coin_files(plan: WorldPlan, files: dict[str, bytes]) -> None:
    """COIN.json: step segments of the segmentation videos."""
    S = plan.splits
    # segmentation: COIN
    database: dict[str, Any] = {}
    step_base, base = {}, 0
    for task in plan.coin_tasks:
        step_base[task.task_id] = base
        base += len(task.steps)
    task_by_id = {t.task_id: t for t in plan.coin_tasks}
    for split in ("coin_train", "coin_test"):
        for v in S[split]:
            task = task_by_id[v.extra["task"]]
            texts = task.step_texts()
            database[v.vid] = {
                "recipe_type": int(task.task_id) - 1, "class": task.name,
                "subset": "training" if split == "coin_train" else "testing",
                "video_url": f"videos/{v.vid}.mp4", "start": 0.0, "end": _r2(v.duration), "duration": _r2(v.duration),
                "annotation": [{"id": str(step_base[task.task_id] + k), "segment": [_r2(e.start), _r2(e.end)],
                                "label": texts[k - 1]} for k, e in zip(v.extra["steps"], v.events)
                               if k is not None],
            }
    files["coin/COIN.json"] = _js({"database": database})


def _epic_files(plan: WorldPlan, files: dict[str, bytes]) -> None:
    """EPIC-KITCHENS-100 csv: labelled action segments (verb = action, noun = the acting object)."""
    seed, S = plan.seed, plan.splits
    # labelled action segments: EPIC-KITCHENS-100 csv (verb = action, noun "shape:colour" = the acting object)
    for split, name in (("epic_train", "EPIC_100_train.csv"), ("epic_val", "EPIC_100_validation.csv")):
        rows = []
        for i, v in enumerate(S[split]):
            rng = _text_rng(seed, split, i)
            for k, e in enumerate(v.events):
                obj = v.objects[e.obj]
                noun, noun_class = epic_noun(obj)
                rows.append([f"{v.vid}_{k}", "P00", v.vid, _timestamp(e.start), _timestamp(e.start),
                             _timestamp(e.end), int(round(e.start * FPS)), int(round(e.end * FPS)),
                             instruct(rng, obj, e.action), e.action.replace("_", "-"), ACTIONS.index(e.action),
                             noun, noun_class, str([noun]), str([noun_class])])
        files[f"epic/{name}"] = _csv_bytes(rows, list(EPIC_HEADER))


def _ground_truth_file(plan: WorldPlan, files: dict[str, bytes]) -> None:
    """The exact ground truth of every video (objects, events, canonical captions): for tests, viz and debugging."""
    # exact ground truth of every video (objects, events, canonical captions): for tests, viz and debugging
    gt = {}
    for v in plan.videos():
        gt[v.vid] = {"split": v.split, "duration": _r2(v.duration), "num_frames": v.num_frames,
                     "objects": [{"colour": o.colour, "shape": o.shape, "role": o.role, "x": _r2(o.x),
                                  "y": _r2(o.y), "r": _r2(o.r)} for o in v.objects],
                     "events": [{"object": e.obj, "action": e.action, "start": _r2(e.start), "end": _r2(e.end),
                                 "caption": e.caption} for e in v.events],
                     **({"task": v.extra["task"], "steps": v.extra["steps"]} if "task" in v.extra else {}),
                     **({"motion": v.extra["motion"]} if "motion" in v.extra else {})}
    files["ground_truth.json"] = _js(gt)
