"""The procedural video–text world: small MP4s in which nameable objects do nameable things at known times.

Why: real datasets cannot be downloaded here, yet users (and our tests) must see the whole pipeline —
decoding, narration-noisy pre-training, grounding, retrieval, step localization, segmentation — run end to
end in minutes on a laptop. The generator writes real H.264 MP4s and annotation files in the *published*
formats (HowTo100M, WebVid, ActivityNet Captions, Charades-STA, QVHighlights, MSR-VTT, CrossTask, COIN), so
the demo goes through exactly the readers a user's real data goes through (`locvtp.data.formats`).

Everything is a pure function of ``(seed, preset)``: every video draws from its own child of one
``numpy.random.SeedSequence`` (keyed by split and index), so the content of one video never depends on how
many others were generated before it, and annotation files are byte-identical across runs.
See ``docs/data.md`` for the world's description and the file layout.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import sys
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from locvtp.data.formats import EPIC_HEADER
from locvtp.errors import LocVTPError

GENERATOR_VERSION = "1.3"  # the default version (what `make demo` generates); 1.2 stays one flag away
# Every version this code generates. A version's worlds stay byte-identical when later versions are added: a new
# version only switches code paths on, keyed on WorldPlan.version (docs/world_versions.md).
#   1.2  EPIC-KITCHENS-format labelled action segments (epic_*); everything else as 1.1
#   1.3  harder CrossTask/COIN test sets (ProcedureStyle below); everything else as 1.2
GENERATOR_VERSIONS = ("1.2", "1.3")
FPS = 8
FRAME_SIZE = 32
CLIP_SECONDS = 1.0
TIME_QUANTUM = 0.5  # event boundaries are multiples of this (exact in binary floating point, frame-aligned)

# ---------------------------------------------------------------------------------------------- vocabulary
# Saturated, well separated colours: they must survive 4:2:0 chroma subsampling at 32×32.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35),
    "green": (40, 200, 60),
    "blue": (50, 90, 245),
    "yellow": (240, 225, 40),
    "purple": (165, 60, 225),
    "cyan": (40, 215, 225),
    "white": (245, 245, 245),
}
COLOUR_WORDS: dict[str, list[str]] = {
    "red": ["red"],
    "green": ["green"],
    "blue": ["blue"],
    "yellow": ["yellow"],
    "purple": ["purple", "violet"],
    "cyan": ["cyan", "turquoise"],
    "white": ["white"],
}
SHAPES = ("circle", "square", "triangle", "cross", "diamond")
SHAPE_WORDS: dict[str, list[str]] = {
    "circle": ["circle", "ball", "disc", "dot"],
    "square": ["square", "box", "block"],
    "triangle": ["triangle", "wedge"],
    "cross": ["cross", "plus sign", "plus"],
    "diamond": ["diamond", "rhombus", "lozenge"],
}
ACTIONS = ("move_left", "move_right", "move_up", "move_down", "grow", "shrink", "blink")
# present tense (3rd person), gerund, imperative template ({o} = object phrase)
ACTION_WORDS: dict[str, dict[str, list[str]]] = {
    "move_left": {
        "present": ["moves left", "slides to the left", "goes to the left", "drifts left", "travels leftward"],
        "gerund": ["moving left", "sliding to the left", "going to the left", "drifting left"],
        "imperative": ["move {o} left", "slide {o} to the left", "push {o} to the left"],
    },
    "move_right": {
        "present": ["moves right", "slides to the right", "goes to the right", "drifts right", "travels rightward"],
        "gerund": ["moving right", "sliding to the right", "going to the right", "drifting right"],
        "imperative": ["move {o} right", "slide {o} to the right", "push {o} to the right"],
    },
    "move_up": {
        "present": ["moves up", "rises", "goes up", "climbs upward", "floats up"],
        "gerund": ["moving up", "rising", "going up", "climbing upward"],
        "imperative": ["move {o} up", "lift {o}", "raise {o}"],
    },
    "move_down": {
        "present": ["moves down", "sinks", "goes down", "drops downward", "falls"],
        "gerund": ["moving down", "sinking", "going down", "dropping downward"],
        "imperative": ["move {o} down", "lower {o}", "drop {o} down"],
    },
    "grow": {
        "present": ["grows", "gets bigger", "expands", "swells", "becomes larger"],
        "gerund": ["growing", "getting bigger", "expanding", "swelling"],
        "imperative": ["make {o} grow", "enlarge {o}", "make {o} bigger"],
    },
    "shrink": {
        "present": ["shrinks", "gets smaller", "contracts", "becomes smaller"],
        "gerund": ["shrinking", "getting smaller", "contracting"],
        "imperative": ["make {o} shrink", "shrink {o}", "make {o} smaller"],
    },
    "blink": {
        "present": ["blinks", "flashes", "flickers", "blinks on and off"],
        "gerund": ["blinking", "flashing", "flickering"],
        "imperative": ["make {o} blink", "flash {o}", "make {o} flicker"],
    },
}
FILLERS = ["so", "now", "okay so", "and then", "alright", "now we see that", "um", "and here", "so now"]
UNRELATED = [
    "thanks for watching this video",
    "don't forget to like and subscribe",
    "this part is really easy",
    "let me know in the comments below",
    "i hope this helps you",
    "it took me a while to figure this out",
    "you can find the link in the description",
    "make sure you have everything ready",
    "this is my favourite part",
    "i will show you another trick later",
    "welcome back to my channel",
    "take your time with this one",
]

# Motion parameters in pixels (frame 32×32): chosen so that every action changes the picture visibly within
# one 1-s clip (≥ 3 px displacement, ≥ 0.6 px radius, two on/off cycles).
MOVE_SPEED = 3.5  # px / s
SIZE_RATE = 0.7  # px of radius / s
R_MIN, R_MAX = 2.6, 7.5
BLINK_DIM = 0.12  # object intensity during an "off" blink frame (kept > 0: the object stays locatable)
BLINK_HALF_PERIOD = 2  # frames on, then frames off: any stride-2 frame sampling sees both states


@dataclass(frozen=True)
class Preset:
    """How many videos of each kind a world holds (and how long they are)."""

    pretrain: int
    webvid: int
    grounding_train: int
    grounding_test: int
    retrieval_train: int
    retrieval_test: int
    crosstask_tasks: int
    crosstask_train_per_task: int
    crosstask_val_per_task: int
    coin_tasks: int
    coin_train_per_task: int
    coin_test_per_task: int
    events: tuple[int, int]  # events per long video (inclusive)
    captions_per_retrieval_video: int
    # EPIC-KITCHENS-style labelled action segments (verb = action, noun = the acting object): the labelled set
    # the video backbone is trained on (`locvtp backbone --labels epic-kitchens`), the world's Kinetics step
    epic_train: int = 0
    epic_val: int = 0


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        pretrain=6, webvid=3, grounding_train=3, grounding_test=3, retrieval_train=4, retrieval_test=4,
        crosstask_tasks=2, crosstask_train_per_task=2, crosstask_val_per_task=2,
        coin_tasks=2, coin_train_per_task=2, coin_test_per_task=2,
        events=(3, 5), captions_per_retrieval_video=3, epic_train=3, epic_val=2,
    ),
    "demo": Preset(
        pretrain=220, webvid=60, grounding_train=50, grounding_test=36, retrieval_train=160, retrieval_test=120,
        crosstask_tasks=6, crosstask_train_per_task=6, crosstask_val_per_task=6,
        coin_tasks=6, coin_train_per_task=6, coin_test_per_task=5,
        events=(3, 10), captions_per_retrieval_video=5, epic_train=160, epic_val=40,
    ),
}

SPLIT_PREFIX = {
    "pretrain": "pre",
    "webvid": "wv",
    "grounding_train": "grd",
    "grounding_test": "grd",
    "retrieval_train": "ret",
    "retrieval_test": "ret",
    "crosstask_train": "ct",
    "crosstask_val": "ct",
    "coin_train": "coin",
    "coin_test": "coin",
    "epic_train": "epk",
    "epic_val": "epk",
}


# ------------------------------------------------------------------------------------------------ world model
@dataclass
class Obj:
    colour: str
    shape: str
    x: float
    y: float
    r: float
    role: str = "actor"  # "actor" (may act) | "distractor" (never moves)

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"


@dataclass
class Event:
    obj: int  # index into the video's objects
    action: str
    start: float
    end: float
    caption: str = ""  # canonical description ("the red circle moves left")


@dataclass
class VideoSpec:
    vid: str
    split: str
    duration: float
    objects: list[Obj]
    events: list[Event]
    background: tuple[int, int, int]
    texture_seed: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return int(round(self.duration * FPS))


def _extent(shape: str, r: float) -> float:
    """Half-size of the rendered shape (used to keep objects inside the frame)."""
    return r * (1.25 if shape in ("triangle", "diamond") else 1.0) + 1.0


def _clearance(obj: Obj, other: Obj, x0: float, y0: float, x1: float, y1: float, r: float) -> float:
    """Gap between `other` and `obj` sweeping from (x0, y0) to (x1, y1) at radius r (negative = overlap)."""
    dx, dy = x1 - x0, y1 - y0
    seg = dx * dx + dy * dy
    u = 0.0 if seg == 0 else min(1.0, max(0.0, ((other.x - x0) * dx + (other.y - y0) * dy) / seg))
    d = float(np.hypot(other.x - (x0 + u * dx), other.y - (y0 + u * dy)))
    return d - _extent(obj.shape, r) - _extent(other.shape, other.r) + 1.0


def _feasible(obj: Obj, action: str, dur: float, others: Iterable[Obj] = (), size: int = FRAME_SIZE) -> bool:
    """Can `obj` perform `action` for `dur` seconds without leaving the frame or the size range, and end up
    clear of the (still) `others`?"""
    if action == "blink":
        return True
    if action == "shrink":
        return obj.r - SIZE_RATE * dur >= R_MIN
    x1, y1, r1 = obj.x, obj.y, obj.r
    d = MOVE_SPEED * dur
    if action == "grow":
        r1 = obj.r + SIZE_RATE * dur
        if r1 > R_MAX:
            return False
    elif action == "move_left":
        x1 -= d
    elif action == "move_right":
        x1 += d
    elif action == "move_up":
        y1 -= d
    elif action == "move_down":
        y1 += d
    else:
        raise ValueError(f"unknown action {action!r}")
    m = _extent(obj.shape, r1)
    if not (m <= x1 <= size - m and m <= y1 <= size - m):
        return False
    # The object may pass over others on its way (the acting object is drawn on top) but must not come to
    # rest on one: otherwise a later action of either object could be hidden.
    return all(_clearance(obj, o, x1, y1, x1, y1, r1) >= 0 for o in others if o.role == "actor")


def _without(objs: list[Obj], i: int) -> list[Obj]:
    return objs[:i] + objs[i + 1:]


def _apply(obj: Obj, action: str, dur: float) -> None:
    """Advance the object's state to the end of an event."""
    d = MOVE_SPEED * dur
    if action == "move_left":
        obj.x -= d
    elif action == "move_right":
        obj.x += d
    elif action == "move_up":
        obj.y -= d
    elif action == "move_down":
        obj.y += d
    elif action == "grow":
        obj.r += SIZE_RATE * dur
    elif action == "shrink":
        obj.r -= SIZE_RATE * dur


def _q(rng: np.random.Generator, lo: float, hi: float) -> float:
    """A uniform time in [lo, hi] quantized to TIME_QUANTUM (exact binary fractions, frame aligned)."""
    n_lo, n_hi = int(round(lo / TIME_QUANTUM)), int(round(hi / TIME_QUANTUM))
    return float(rng.integers(n_lo, n_hi + 1)) * TIME_QUANTUM


def _pick(rng: np.random.Generator, items: list[str] | tuple[str, ...]) -> str:
    return items[int(rng.integers(len(items)))]


def object_phrase(rng: np.random.Generator, obj: Obj, det: str | None = None) -> str:
    det = det if det is not None else _pick(rng, ["the", "the", "a"])
    return f"{det} {_pick(rng, COLOUR_WORDS[obj.colour])} {_pick(rng, SHAPE_WORDS[obj.shape])}"


def canonical_caption(obj: Obj, action: str) -> str:
    return f"the {obj.colour} {obj.shape} {ACTION_WORDS[action]['present'][0]}"


def describe(rng: np.random.Generator, obj: Obj, action: str) -> str:
    """A descriptive sentence with synonyms and paraphrases ("a red ball slides to the left")."""
    words = ACTION_WORDS[action]
    subj = object_phrase(rng, obj)
    form = int(rng.integers(4))
    if form == 0:
        return f"{subj} {_pick(rng, words['present'])}"
    if form == 1:
        return f"{subj} is {_pick(rng, words['gerund'])}"
    if form == 2:
        return f"we see {subj} {_pick(rng, words['gerund'])}"
    return f"here {subj} {_pick(rng, words['present'])}"


def instruct(rng: np.random.Generator | None, obj: Obj, action: str) -> str:
    """An imperative step text ("move the red circle left"); canonical when rng is None."""
    templates = ACTION_WORDS[action]["imperative"]
    if rng is None:
        return templates[0].format(o=f"the {obj.colour} {obj.shape}")
    return _pick(rng, templates).format(o=object_phrase(rng, obj, det="the"))


def _place_objects(rng: np.random.Generator, n_actors: int, n_distractors: int,
                   forced: list[tuple[str, str]] | None = None) -> list[Obj]:
    """Objects with distinct (colour, shape), spread over the frame (rejection sampling on distance)."""
    combos = [(c, s) for c in COLOURS for s in SHAPES]
    taken: set[tuple[str, str]] = set(forced or [])
    kinds: list[tuple[str, str]] = list(forced or [])
    while len(kinds) < n_actors + n_distractors:
        c, s = combos[int(rng.integers(len(combos)))]
        if (c, s) not in taken:
            taken.add((c, s))
            kinds.append((c, s))
    objs: list[Obj] = []
    for i, (c, s) in enumerate(kinds):
        r = float(rng.uniform(3.0, 5.6)) if i < n_actors else float(rng.uniform(2.6, 3.6))
        m = _extent(s, r) + 1
        best, best_gap = (FRAME_SIZE / 2, FRAME_SIZE / 2), -np.inf
        for _ in range(60):
            x, y = float(rng.uniform(m, FRAME_SIZE - m)), float(rng.uniform(m, FRAME_SIZE - m))
            cand = Obj(c, s, x, y, r)
            gap = min([_clearance(cand, o, x, y, x, y, r) for o in objs] or [np.inf])
            if gap > best_gap:
                best, best_gap = (x, y), gap
            if gap >= 2.0:  # apart with room to spare
                break
        objs.append(Obj(c, s, best[0], best[1], r, "actor" if i < n_actors else "distractor"))
    return objs


def _background(rng: np.random.Generator) -> tuple[tuple[int, int, int], int]:
    base = int(rng.integers(20, 45))
    tint = rng.integers(-6, 7, size=3)
    return tuple(int(np.clip(base + t, 0, 255)) for t in tint), int(rng.integers(2**31))


def _plan_long_video(rng: np.random.Generator, vid: str, split: str, n_events: int,
                     max_gap: float = 2.0) -> VideoSpec:
    """3–10 events of 2–5 s, one actor at a time, idle gaps between; (actor, action) pairs unique per video."""
    n_actors = int(rng.integers(2, 4))
    objs = _place_objects(rng, n_actors, int(rng.integers(1, 3)))
    state = [Obj(o.colour, o.shape, o.x, o.y, o.r, o.role) for o in objs]
    used: set[tuple[int, str]] = set()
    t = _q(rng, 0.0, max_gap)
    events: list[Event] = []
    for _ in range(n_events):
        dur0 = _q(rng, 2.0, 5.0)
        # Action first (uniformly among those some actor can still do), then the longest feasible duration up
        # to the drawn one, then an actor: keeps actions balanced although "blink" is always feasible and
        # moves need room.
        choice = None
        for a in (ACTIONS[j] for j in rng.permutation(len(ACTIONS))):
            dur = dur0
            while dur >= 2.0 and choice is None:
                actors = [i for i in range(n_actors)
                          if (i, a) not in used and _feasible(state[i], a, dur, _without(state, i))]
                if actors:
                    choice = (actors[int(rng.integers(len(actors)))], a, dur)
                dur -= TIME_QUANTUM
            if choice is not None:
                break
        if choice is None:
            break
        i, a, dur = choice
        used.add((i, a))
        _apply(state[i], a, dur)
        events.append(Event(i, a, t, t + dur, canonical_caption(objs[i], a)))
        t += dur + _q(rng, 0.0, max_gap)
    duration = t if events and t > events[-1].end else t + 1.0
    bg, tex = _background(rng)
    return VideoSpec(vid, split, duration, objs, events, bg, tex)


def _plan_short_video(rng: np.random.Generator, vid: str, split: str,
                      kind: tuple[str, str, str] | None = None) -> VideoSpec:
    """An MSR-VTT/WebVid-like clip: one dominant event (3–4 s) with short idle margins.

    The action is drawn first (uniformly, or forced by `kind`), then the layout is re-drawn until the action
    is feasible, so every action is equally likely (no fallback that would bias the action distribution).
    """
    forced = [(kind[0], kind[1])] if kind else None
    action = kind[2] if kind else ACTIONS[int(rng.integers(len(ACTIONS)))]
    dur = _q(rng, 3.0, 4.0)
    for _ in range(500):
        objs = _place_objects(rng, 1, int(rng.integers(1, 3)), forced=forced)
        if _feasible(objs[0], action, dur, objs[1:]):
            break
    else:  # pragma: no cover - each action is feasible for a sizeable share of layouts
        raise RuntimeError(f"{vid}: no feasible layout for {action!r} over {dur} s")
    t0 = _q(rng, 0.0, 1.0)
    t1 = t0 + dur
    duration = t1 + _q(rng, 0.5, 1.0)
    bg, tex = _background(rng)
    return VideoSpec(vid, split, duration, objs, [Event(0, action, t0, t1, canonical_caption(objs[0], action))],
                     bg, tex)


@dataclass
class Task:
    """A CrossTask/COIN-like procedure: an ordered list of steps over a fixed set of objects."""

    task_id: str
    name: str
    objects: list[Obj]
    steps: list[tuple[int, str]]  # (object index, action)
    plan_durations: list[float]  # durations for which the full sequence is known to be feasible

    def step_texts(self) -> list[str]:
        return [instruct(None, self.objects[i], a) for i, a in self.steps]


@dataclass(frozen=True)
class ProcedureStyle:
    """How the procedure (CrossTask/COIN) tasks and their videos of a generator version are drawn."""

    steps: tuple[int, int]  # steps per task (inclusive)
    step_seconds: tuple[float, float]  # duration of a performed step
    short_share: float  # share of performed steps drawn from SHORT_STEP instead of step_seconds
    gap_seconds: tuple[float, float]  # background between consecutive events
    zero_gap_share: float  # share of gaps that are 0 (an event starts where the previous one ends)
    lookalike_share: float  # chance that a step repeats an action the task already has, on another actor
    distractor_share: float  # chance of a non-step action before each performed step (labelled background)


SHORT_STEP = (1.0, 1.5)  # 1–1.5 s: at most two 1-s clips, often one; every action stays visible in each clip

PROCEDURE_STYLES: dict[str, ProcedureStyle] = {
    "1.3": ProcedureStyle(steps=(7, 10), step_seconds=(2.0, 4.0), short_share=0.5, gap_seconds=(0.0, 1.5),
                          zero_gap_share=0.4, lookalike_share=0.5, distractor_share=0.5),
}


def _lookalike_kinds(rng: np.random.Generator) -> list[tuple[str, str]]:
    """Four (colour, shape) kinds on a 2×2 grid of two colours × two shapes: the three task actors and a
    bystander, each sharing its colour with one and its shape with another ("the red circle", "the red square",
    "the blue circle"; bystander "the blue square")."""
    colours = [list(COLOURS)[j] for j in rng.permutation(len(COLOURS))[:2]]
    shapes = [SHAPES[j] for j in rng.permutation(len(SHAPES))[:2]]
    return [(colours[0], shapes[0]), (colours[0], shapes[1]), (colours[1], shapes[0]), (colours[1], shapes[1])]


def _make_task_v13(rng: np.random.Generator, task_id: str, style: ProcedureStyle) -> Task:
    """A task of generator 1.3: 7–10 steps over three look-alike actors, often the same action on another actor.

    Objects: three actors and a bystander on a 2×2 (colour × shape) grid (`_lookalike_kinds`), plus 1–2 static
    distractors. The bystander (index 3) never performs a step; it performs distractor actions in the videos.
    """
    for _ in range(200):
        objs = _place_objects(rng, 4, int(rng.integers(1, 3)), forced=_lookalike_kinds(rng))
        state = [Obj(o.colour, o.shape, o.x, o.y, o.r, o.role) for o in objs]
        n_steps = int(rng.integers(style.steps[0], style.steps[1] + 1))
        steps: list[tuple[int, str]] = []
        durs: list[float] = []
        for _ in range(n_steps):
            dur = 2.0
            opts = [(i, a) for i in range(3) for a in ACTIONS
                    if (i, a) not in steps and _feasible(state[i], a, dur, _without(state, i))]
            if not opts:
                break
            used = {a for _, a in steps}
            again = sorted({a for _, a in opts if a in used}, key=ACTIONS.index)
            if again and rng.random() < style.lookalike_share:
                acts = again  # a look-alike step: an action the task already has, by another actor
            else:
                acts = sorted({a for _, a in opts}, key=ACTIONS.index)
            a = acts[int(rng.integers(len(acts)))]
            actors = [i for i, b in opts if b == a]
            i = actors[int(rng.integers(len(actors)))]
            _apply(state[i], a, dur)
            steps.append((i, a))
            durs.append(dur)
        if len(steps) >= style.steps[0]:
            a, b, c = objs[0], objs[1], objs[2]
            return Task(task_id, f"routine of the {a.colour} {a.shape}, the {b.colour} {b.shape} and the "
                                 f"{c.colour} {c.shape}", objs, steps, durs)
    raise RuntimeError("could not plan a feasible task")  # pragma: no cover


def _plan_task_video_v13(rng: np.random.Generator, vid: str, split: str, task: Task,
                         style: ProcedureStyle) -> VideoSpec:
    """Generator 1.3: the task's steps in order (some skipped) with short and uneven durations, gaps that are
    often 0, and distractor actions between them — an (object, action) pair that is no step of the task,
    performed by a task actor or the look-alike bystander — annotated as background.

    ``extra["steps"]`` is aligned with ``events``: the 1-based step of each event, None for a distractor.
    """
    n = len(task.steps)
    step_set = set(task.steps)
    non_steps = [(i, a) for i in range(len(task.objects)) if task.objects[i].role == "actor" for a in ACTIONS
                 if (i, a) not in step_set]

    def duration() -> float:
        if rng.random() < style.short_share:
            return _q(rng, *SHORT_STEP)
        return _q(rng, *style.step_seconds)

    plan: list[tuple[int, str, float, int | None]] | None = None
    for _ in range(30):
        keep = [k for k in range(n) if rng.random() > 0.2]
        if len(keep) < max(2, n // 2):
            continue
        state = [Obj(o.colour, o.shape, o.x, o.y, o.r, o.role) for o in task.objects]
        seq: list[tuple[int, str, float, int | None]] = []
        used: set[tuple[int, str]] = set()
        ok = True
        for k in keep:
            if rng.random() < style.distractor_share:
                d = duration()
                cands = [(i, a) for i, a in non_steps
                         if (i, a) not in used and _feasible(state[i], a, d, _without(state, i))]
                if cands:
                    i, a = cands[int(rng.integers(len(cands)))]
                    used.add((i, a))
                    _apply(state[i], a, d)
                    seq.append((i, a, d, None))
            i, a = task.steps[k]
            d = duration()
            if not _feasible(state[i], a, d, _without(state, i)):
                ok = False
                break
            _apply(state[i], a, d)
            seq.append((i, a, d, k + 1))
        if ok:
            plan = seq
            break
    if plan is None:  # the task's own plan is feasible by construction
        plan = [(i, a, d, k + 1) for k, ((i, a), d) in enumerate(zip(task.steps, task.plan_durations))]
    objs = [Obj(o.colour, o.shape, o.x, o.y, o.r, o.role) for o in task.objects]
    t = _q(rng, 0.5, 2.0)
    events, steps = [], []
    for i, a, d, k in plan:
        events.append(Event(i, a, t, t + d, instruct(None, objs[i], a)))
        steps.append(k)
        t += d + (0.0 if rng.random() < style.zero_gap_share else _q(rng, *style.gap_seconds))
    duration_s = t + 1.0
    bg, tex = _background(rng)
    return VideoSpec(vid, split, duration_s, objs, events, bg, tex, extra={"task": task.task_id, "steps": steps})


def _make_task(rng: np.random.Generator, task_id: str) -> Task:
    for _ in range(200):
        objs = _place_objects(rng, 2, int(rng.integers(1, 3)))
        state = [Obj(o.colour, o.shape, o.x, o.y, o.r, o.role) for o in objs]
        n_steps = int(rng.integers(4, 7))
        steps: list[tuple[int, str]] = []
        durs: list[float] = []
        for _ in range(n_steps):
            dur = 3.0
            opts = [(i, a) for i in range(2) for a in ACTIONS
                    if (i, a) not in steps and _feasible(state[i], a, dur, _without(state, i))]
            if not opts:
                break
            acts = sorted({a for _, a in opts}, key=ACTIONS.index)  # action first: balanced actions
            a = acts[int(rng.integers(len(acts)))]
            actors = [i for i, b in opts if b == a]
            i = actors[int(rng.integers(len(actors)))]
            _apply(state[i], a, dur)
            steps.append((i, a))
            durs.append(dur)
        if len(steps) >= 4:
            a, b = objs[0], objs[1]
            return Task(task_id, f"routine of the {a.colour} {a.shape} and the {b.colour} {b.shape}", objs, steps, durs)
    raise RuntimeError("could not plan a feasible task")  # pragma: no cover


def _plan_task_video(rng: np.random.Generator, vid: str, split: str, task: Task) -> VideoSpec:
    """Perform the task's steps in order, some skipped, with background gaps; durations vary per video."""
    n = len(task.steps)
    chosen: list[int] | None = None
    durs: list[float] = []
    for _ in range(30):
        keep = [k for k in range(n) if rng.random() > 0.2]
        if len(keep) < max(2, n // 2):
            continue
        durs = [_q(rng, 2.0, 4.0) for _ in keep]
        state = [Obj(o.colour, o.shape, o.x, o.y, o.r, o.role) for o in task.objects]
        ok = True
        for k, d in zip(keep, durs):
            i, a = task.steps[k]
            if not _feasible(state[i], a, d, _without(state, i)):
                ok = False
                break
            _apply(state[i], a, d)
        if ok:
            chosen = keep
            break
    if chosen is None:  # the plan itself is feasible by construction
        chosen, durs = list(range(n)), list(task.plan_durations)
    objs = [Obj(o.colour, o.shape, o.x, o.y, o.r, o.role) for o in task.objects]
    t = _q(rng, 0.5, 3.0)
    events = []
    for k, d in zip(chosen, durs):
        i, a = task.steps[k]
        events.append(Event(i, a, t, t + d, instruct(None, objs[i], a)))
        t += d + _q(rng, 0.0, 3.0)
    duration = t + 1.0
    bg, tex = _background(rng)
    return VideoSpec(vid, split, duration, objs, events, bg, tex,
                     extra={"task": task.task_id, "steps": [k + 1 for k in chosen]})


# ------------------------------------------------------------------------------------------------- rendering
_GRID = (np.arange(FRAME_SIZE, dtype=np.float32) + 0.5)


def _coverage(shape: str, dx: np.ndarray, dy: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] from a distance-like function of each shape (unit-ish gradient)."""
    adx, ady = np.abs(dx), np.abs(dy)
    if shape == "circle":
        d, g = np.sqrt(dx * dx + dy * dy), 1.0
    elif shape == "square":
        d, g, r = np.maximum(adx, ady), 1.0, r * 0.88
    elif shape == "diamond":
        d, g, r = (adx + ady) * 0.7071, 1.0, r * 0.88
    elif shape == "cross":
        arm = 0.38
        d = np.minimum(np.maximum(adx, ady / arm), np.maximum(adx / arm, ady))
        g = 1.0 / arm
        r = r * 1.05
    elif shape == "triangle":  # apex up; equilateral with circumradius R = 1.25 r
        d, g, r = 2.0 * np.maximum(dy, 0.8660254 * adx - 0.5 * dy), 2.0, r * 1.25
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return np.clip((r - d) / g + 0.5, 0.0, 1.0)


def object_tracks(spec: VideoSpec) -> dict[str, np.ndarray]:
    """Per-frame state of every object: x, y, r, intensity, each [num_objects, num_frames]."""
    n, k = len(spec.objects), spec.num_frames
    t = np.arange(k, dtype=np.float64) / FPS
    x = np.array([[o.x] * k for o in spec.objects], dtype=np.float64).reshape(n, k)
    y = np.array([[o.y] * k for o in spec.objects], dtype=np.float64).reshape(n, k)
    r = np.array([[o.r] * k for o in spec.objects], dtype=np.float64).reshape(n, k)
    a = np.ones((n, k), dtype=np.float64)
    for e in spec.events:
        progress = np.clip(t - e.start, 0.0, e.end - e.start)
        if e.action == "move_left":
            x[e.obj] -= MOVE_SPEED * progress
        elif e.action == "move_right":
            x[e.obj] += MOVE_SPEED * progress
        elif e.action == "move_up":
            y[e.obj] -= MOVE_SPEED * progress
        elif e.action == "move_down":
            y[e.obj] += MOVE_SPEED * progress
        elif e.action == "grow":
            r[e.obj] += SIZE_RATE * progress
        elif e.action == "shrink":
            r[e.obj] -= SIZE_RATE * progress
        elif e.action == "blink":
            inside = (t >= e.start) & (t < e.end)
            phase = np.floor((t - e.start) * FPS + 1e-6).astype(np.int64) // BLINK_HALF_PERIOD
            a[e.obj] = np.where(inside & (phase % 2 == 1), BLINK_DIM, a[e.obj])
    return {"x": x, "y": y, "r": r, "intensity": a, "t": t}


def render_video(spec: VideoSpec) -> np.ndarray:
    """uint8 [num_frames, H, W, 3] frames of a video spec (vectorized over frames)."""
    k = spec.num_frames
    tex_rng = np.random.default_rng(spec.texture_seed)
    coarse = tex_rng.normal(0.0, 4.0, size=(4, 4, 3)).astype(np.float32)
    texture = np.repeat(np.repeat(coarse, FRAME_SIZE // 4, 0), FRAME_SIZE // 4, 1)
    img = np.broadcast_to(np.asarray(spec.background, np.float32) + texture, (k, FRAME_SIZE, FRAME_SIZE, 3)).copy()
    tr = object_tracks(spec)
    layers = {}
    for i, o in enumerate(spec.objects):
        state = np.stack([tr["x"][i], tr["y"][i], tr["r"][i], tr["intensity"][i]], axis=1).astype(np.float32)
        # Objects are still most of the time: rasterize each distinct state once, then gather per frame.
        uniq, inverse = np.unique(state, axis=0, return_inverse=True)
        dx = _GRID[None, None, :] - uniq[:, 0, None, None]
        dy = _GRID[None, :, None] - uniq[:, 1, None, None]
        cov = _coverage(o.shape, dx, dy, uniq[:, 2, None, None]) * uniq[:, 3, None, None]
        # composite only inside the box the object ever touches (most of the frame is untouched)
        rows, cols = np.flatnonzero(cov.any(axis=(0, 2))), np.flatnonzero(cov.any(axis=(0, 1)))
        if rows.size:
            y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
            layers[i] = (cov[:, y0:y1, x0:x1], inverse.reshape(-1), (y0, y1, x0, x1),
                         np.asarray(COLOURS[o.colour], np.float32))
    # Draw order: distractors, then actors, and the acting object of an event on top during that event (it may
    # pass over others; at rest actors never overlap each other, see _feasible).
    static = sorted(range(len(spec.objects)), key=lambda i: spec.objects[i].role == "actor")
    segments, cur = [], 0
    for e in sorted(spec.events, key=lambda e: e.start):
        ks, ke = min(round(e.start * FPS), k), min(round(e.end * FPS), k)
        if ks > cur:
            segments.append((cur, ks, None))
        segments.append((ks, ke, e.obj))
        cur = ke
    if cur < k:
        segments.append((cur, k, None))
    for k0, k1, acting in segments:
        order = static if acting is None else [i for i in static if i != acting] + [acting]
        for i in order:
            if i not in layers:
                continue
            cov, inverse, (y0, y1, x0, x1), colour = layers[i]
            c = cov[inverse[k0:k1]][..., None]
            box = img[k0:k1, y0:y1, x0:x1]
            box += (colour - box) * c
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def write_mp4(path: Path, frames: np.ndarray, fps: int = FPS) -> None:
    """H.264 yuv420p MP4 with a fixed single-threaded x264 configuration (reproducible bytes), atomically."""
    import av

    from locvtp.files import atomic_path

    path = Path(path)
    h, w = frames.shape[1:3]
    if h % 2 or w % 2:
        raise ValueError(f"{path}: frame size {w}x{h} must be even for yuv420p")
    with atomic_path(path, suffix=".mp4") as tmp:  # a failed or killed write leaves no half MP4 under the name
        with av.open(str(tmp), mode="w", format="mp4") as container:
            # No B-frames and a fixed 2-s GOP: cheap seeking for window decoding; explicit pts: reproducible.
            stream = container.add_stream("libx264", rate=fps, options={
                "crf": "4", "preset": "ultrafast", "threads": "1",
                "x264-params": f"bframes=0:keyint={2 * fps}:min-keyint={2 * fps}:scenecut=0"})
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            stream.codec_context.thread_count = 1
            stream.time_base = Fraction(1, fps)
            for i, arr in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")
                frame.pts, frame.time_base = i, Fraction(1, fps)
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)


# ---------------------------------------------------------------------------------------------- world plan
SPLIT_ORDER = ("pretrain", "webvid", "grounding_train", "grounding_test", "retrieval_train", "retrieval_test",
               "crosstask_train", "crosstask_val", "coin_train", "coin_test", "epic_train", "epic_val")


def _rng(seed: int, *key: int) -> np.random.Generator:
    """An independent generator per (seed, key): one video's content never depends on another's."""
    return np.random.default_rng(np.random.SeedSequence(entropy=int(seed), spawn_key=tuple(int(k) for k in key)))


@dataclass
class WorldPlan:
    seed: int
    preset: str
    splits: dict[str, list[VideoSpec]]
    crosstask_tasks: list[Task]
    coin_tasks: list[Task]
    version: str = GENERATOR_VERSION

    def videos(self) -> Iterable[VideoSpec]:
        for name in SPLIT_ORDER:
            yield from self.splits[name]


def _check_version(version: str) -> str:
    if version not in GENERATOR_VERSIONS:
        raise ValueError(f"unknown generator version {version!r}; choose one of {list(GENERATOR_VERSIONS)}")
    return version


def plan_world(seed: int = 0, preset: str = "tiny", version: str = GENERATOR_VERSION) -> WorldPlan:
    """Every video's objects, events and captions, without rendering anything (cheap, deterministic).

    ``version`` selects the generator version (GENERATOR_VERSIONS); each version's plan is fixed forever.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    _check_version(version)
    style = PROCEDURE_STYLES.get(version)  # None: the procedures of generator <= 1.2
    p = PRESETS[preset]
    splits: dict[str, list[VideoSpec]] = {name: [] for name in SPLIT_ORDER}
    counters: dict[str, int] = {}

    def next_vid(split: str) -> str:
        prefix = SPLIT_PREFIX[split]
        n = counters.get(prefix, 0)
        counters[prefix] = n + 1
        return f"{prefix}_{n:05d}"

    def long_videos(split: str, key: int, count: int) -> None:
        for i in range(count):
            rng = _rng(seed, key, i)
            n_events = int(rng.integers(p.events[0], p.events[1] + 1))
            splits[split].append(_plan_long_video(rng, next_vid(split), split, n_events))

    long_videos("pretrain", 0, p.pretrain)
    for i in range(p.webvid):
        splits["webvid"].append(_plan_short_video(_rng(seed, 1, i), next_vid("webvid"), "webvid"))
    long_videos("grounding_train", 2, p.grounding_train)
    long_videos("grounding_test", 3, p.grounding_test)
    for i in range(p.retrieval_train):
        splits["retrieval_train"].append(
            _plan_short_video(_rng(seed, 4, i), next_vid("retrieval_train"), "retrieval_train"))
    # Test videos get distinct (colour, shape, action) triples, so every test caption has one right answer.
    combos = [(c, s, a) for c in COLOURS for s in SHAPES for a in ACTIONS]
    if p.retrieval_test > len(combos):
        raise ValueError(f"preset {preset!r}: retrieval_test={p.retrieval_test} > {len(combos)} distinct triples")
    order = _rng(seed, 5, 0).permutation(len(combos))
    for i in range(p.retrieval_test):
        splits["retrieval_test"].append(_plan_short_video(
            _rng(seed, 5, i + 1), next_vid("retrieval_test"), "retrieval_test", kind=combos[int(order[i])]))

    def procedures(key: int, n_tasks: int, first_id: int, train: tuple[str, int], test: tuple[str, int]) -> list[Task]:
        if style is None:
            tasks = [_make_task(_rng(seed, key, t), str(first_id + t)) for t in range(n_tasks)]
        else:
            tasks = [_make_task_v13(_rng(seed, key, t), str(first_id + t), style) for t in range(n_tasks)]
        for split, per_task, sub in (train + (0,), test + (1,)):
            for t, task in enumerate(tasks):
                for i in range(per_task):
                    rng = _rng(seed, key, t, sub, i)
                    if style is None:
                        splits[split].append(_plan_task_video(rng, next_vid(split), split, task))
                    else:
                        splits[split].append(_plan_task_video_v13(rng, next_vid(split), split, task, style))
        return tasks

    ct = procedures(6, p.crosstask_tasks, 90001, ("crosstask_train", p.crosstask_train_per_task),
                    ("crosstask_val", p.crosstask_val_per_task))
    coin = procedures(7, p.coin_tasks, 1, ("coin_train", p.coin_train_per_task),
                      ("coin_test", p.coin_test_per_task))
    long_videos("epic_train", 8, p.epic_train)
    long_videos("epic_val", 9, p.epic_val)
    return WorldPlan(seed, preset, splits, ct, coin, version)


# ----------------------------------------------------------------------------------------- annotation text
def _r2(x: float) -> float:
    return float(round(float(x), 2))


def narrations(spec: VideoSpec, rng: np.random.Generator) -> dict[str, list]:
    """HowTo100M-like noisy narration of one long video: fillers, ~15 % unrelated sentences, shifted times."""
    items: list[tuple[float, float, str]] = []
    for e in spec.events:
        obj = spec.objects[e.obj]
        text = describe(rng, obj, e.action) if rng.random() < 0.6 else f"now we {instruct(rng, obj, e.action)}"
        if rng.random() < 0.35:
            text = f"{_pick(rng, FILLERS)} {text}"
        shift = float(rng.uniform(-2.0, 2.0))  # misalignment of up to ±2 clips (1 s each)
        s = e.start + shift + float(rng.uniform(-0.3, 0.3))
        t = e.end + shift + float(rng.uniform(-0.3, 0.3))
        items.append((s, t, text))
    n_unrelated = int(rng.binomial(len(spec.events), 0.15 / 0.85))  # expected share of all narrations: 15 %
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
    files["pretrain/caption.json"] = _js({v.vid: narrations(v, _text_rng(seed, "pretrain", i))
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
                     **({"task": v.extra["task"], "steps": v.extra["steps"]} if "task" in v.extra else {})}
    files["ground_truth.json"] = _js(gt)


# ------------------------------------------------------------------------------------------------- writing
IN_PROGRESS = ".synth-in-progress"
LAYOUT_ENTRIES = ("manifest.json", "ground_truth.json", "videos", "pretrain", "grounding", "retrieval",
                  "crosstask", "coin", "epic", IN_PROGRESS)


def _atomic_write(path: Path, data: bytes) -> None:
    from locvtp.files import atomic_write_bytes

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _manifest(plan: WorldPlan, files: dict[str, bytes]) -> dict[str, Any]:
    splits = {name: [v.vid for v in vids] for name, vids in plan.splits.items()}
    n_narr = len(json.loads(files["pretrain/caption.json"]))  # videos with narrations
    cap = json.loads(files["pretrain/caption.json"])
    counts = {
        "videos": sum(len(v) for v in splits.values()),
        "seconds": _r2(sum(v.duration for v in plan.videos())),
        "frames": int(sum(v.num_frames for v in plan.videos())),
        "pretrain_videos": n_narr,
        "pretrain_narrations": int(sum(len(c["text"]) for c in cap.values())),
        "events": int(sum(len(v.events) for v in plan.videos())),
        "grounding_test_queries": int(sum(len(v.events) for v in plan.splits["grounding_test"])),
        "retrieval_test_queries": len(plan.splits["retrieval_test"]),
        "crosstask_tasks": len(plan.crosstask_tasks),
        "crosstask_val_steps": int(sum(k is not None for v in plan.splits["crosstask_val"]
                                       for k in v.extra["steps"])),
        "coin_tasks": len(plan.coin_tasks),
        **{f"split_{k}": len(v) for k, v in splits.items()},
    }
    return {
        "generator": "locvtp.data.synthetic",
        "generator_version": plan.version,
        "seed": plan.seed,
        "preset": plan.preset,
        "fps": FPS,
        "frame_size": FRAME_SIZE,
        "clip_seconds": CLIP_SECONDS,
        "counts": counts,
        "splits": splits,
        "vocabulary": {"colours": list(COLOURS), "shapes": list(SHAPES), "actions": list(ACTIONS),
                       "colour_words": COLOUR_WORDS, "shape_words": SHAPE_WORDS},
        "annotation_sha256": {k: _sha256(v) for k, v in sorted(files.items())},
    }


def _is_complete(out: Path, manifest: dict[str, Any]) -> bool:
    for rel, digest in manifest.get("annotation_sha256", {}).items():
        f = out / rel
        if not f.is_file() or _sha256(f.read_bytes()) != digest:
            return False
    return all((out / "videos" / f"{vid}.mp4").is_file()
               for vids in manifest.get("splits", {}).values() for vid in vids)


class WorldExistsError(LocVTPError, FileExistsError):
    """The output directory holds something else (another world or foreign files); use force=True. A choice
    of paths, so a usage error (exit 2) like every refused output."""

    exit_code = 2


class NotAWorldError(LocVTPError, ValueError):
    """A directory given as a world holds something that is not a complete synthetic world (exit code 2)."""

    exit_code = 2


def _first_incomplete(out: Path, manifest: dict[str, Any]) -> str | None:
    """What keeps the world in `out` from being complete (a missing or changed file), or None."""
    for rel, digest in sorted(manifest.get("annotation_sha256", {}).items()):
        f = out / rel
        if not f.is_file():
            return f"{rel} is missing"
        if _sha256(f.read_bytes()) != digest:
            return f"{rel} differs from its sha256 in manifest.json"
    for vids in manifest.get("splits", {}).values():
        for vid in vids:
            if not (out / "videos" / f"{vid}.mp4").is_file():
                return f"videos/{vid}.mp4 is missing"
    return None


def open_world(path: str | Path) -> dict[str, Any] | None:
    """The manifest of the complete world in `path`, whatever its seed, preset and generator version; None when
    `path` holds no world at all (it does not exist, or is an empty directory).

    Anything else raises NotAWorldError with one line naming `path` and what is wrong: not a directory, files but
    no manifest.json (not a world, or an interrupted generation), a manifest that is not ours, or a world that is
    incomplete (a missing video, an annotation file whose bytes differ from its recorded sha256). Nothing is
    written or deleted: a world is used as it is, never regenerated.
    """
    out = Path(path)
    if not out.exists():
        return None
    if not out.is_dir():
        raise NotAWorldError(f"{out}: not a directory, so not a synthetic world")
    entries = sorted(p.name for p in out.iterdir())
    if not entries:
        return None
    mpath = out / "manifest.json"
    if not mpath.is_file():
        if IN_PROGRESS in entries:
            raise NotAWorldError(f"{out}: an interrupted world generation (no manifest.json, {IN_PROGRESS} "
                                 f"present); rerun `locvtp synth --out {out}` with its seed and preset, or delete it")
        raise NotAWorldError(f"{out}: not a synthetic world (no manifest.json; found {entries[:5]})")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise NotAWorldError(f"{mpath}: unreadable manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("generator") != "locvtp.data.synthetic":
        raise NotAWorldError(f"{mpath}: not the manifest of a locvtp synthetic world (no \"generator\": "
                             f"\"locvtp.data.synthetic\")")
    missing = [k for k in ("seed", "preset", "generator_version", "splits", "annotation_sha256") if k not in manifest]
    if missing:
        raise NotAWorldError(f"{mpath}: manifest lacks {missing}")
    problem = _first_incomplete(out, manifest)
    if problem is not None:
        raise NotAWorldError(f"{out}: incomplete world (seed={manifest['seed']}, preset={manifest['preset']!r}, "
                             f"generator {manifest['generator_version']}): {problem}")
    return manifest


def read_manifest(out_dir: str | Path) -> dict[str, Any] | None:
    path = Path(out_dir) / "manifest.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise WorldExistsError(f"{path}: unreadable manifest ({exc}); use --force to regenerate") from None


def _world_files(out: Path, manifest: dict[str, Any] | None) -> tuple[set[str], dict[str, str]]:
    """(every file the world in ``out`` wrote, relative; sha256 of its annotation files) from its manifest, or
    for an interrupted generation from the request recorded in ``IN_PROGRESS`` (nothing else is ours)."""
    if manifest is None:
        try:
            req = json.loads((out / IN_PROGRESS).read_text(encoding="utf-8"))
            plan = plan_world(int(req["seed"]), str(req["preset"]), _check_version(str(req["generator_version"])))
        except (OSError, ValueError, KeyError, TypeError):
            return {IN_PROGRESS}, {}
        manifest = _manifest(plan, build_annotations(plan))
    sha = {str(k): str(v) for k, v in manifest.get("annotation_sha256", {}).items()}
    videos = {f"videos/{v}.mp4" for vids in manifest.get("splits", {}).values() for v in vids}
    return {*sha, *videos, "manifest.json", IN_PROGRESS}, sha


def _remove_world_files(out: Path, manifest: dict[str, Any] | None) -> None:
    """Delete the files of the world in ``out`` (its manifest's, or an interrupted run's) and the folders they
    leave empty. Anything else inside the world's folders — a user's video in ``videos/``, notes in
    ``grounding/``, an annotation file edited since — is never deleted: it is refused first (NotOwnedError,
    naming the files), with or without ``force``."""
    from locvtp.errors import NotOwnedError
    from locvtp.files import temporary_of

    owned, sha = _world_files(out, manifest)
    mine: list[Path] = []
    foreign: list[str] = []
    for name in LAYOUT_ENTRIES:
        p = out / name
        if p.is_dir() and not p.is_symlink():
            inside = sorted(p.rglob("*"))
        else:
            inside = [p] if p.is_symlink() or p.exists() else []
        for q in inside:
            if q.is_dir() and not q.is_symlink():
                continue
            rel = q.relative_to(out).as_posix()
            if temporary_of(q.name) is not None and q.is_file() and not q.is_symlink():
                mine.append(q)  # a killed write's temporary (.NAME.tmp-PID-RAND): ours by its name
            elif rel not in owned or q.is_symlink() or (rel in sha and _sha256(q.read_bytes()) != sha[rel]):
                foreign.append(rel)
            else:
                mine.append(q)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise NotOwnedError(f"{out} holds files its synthetic world does not list ({shown}): refusing to delete or "
                            "replace them, with or without --force (nothing was deleted); move them or choose "
                            "another --out")
    for q in mine:
        q.unlink(missing_ok=True)
    for name in LAYOUT_ENTRIES:
        p = out / name
        if p.is_dir() and not p.is_symlink():
            for sub in sorted((d for d in p.rglob("*") if d.is_dir()), key=lambda d: -len(d.parts)):
                sub.rmdir()
            p.rmdir()


def generate_world(out_dir: str | Path, seed: int = 0, preset: str = "tiny", progress: bool = True,
                   force: bool = False, version: str = GENERATOR_VERSION) -> dict[str, Any]:
    """Write the synthetic world under `out_dir` and return its manifest.

    A directory that already holds the complete, up-to-date world of the same (seed, preset) — same generator
    version and the same annotation bytes — is reused as is (the returned manifest has ``"reused": True``).
    An outdated, incomplete or interrupted world of the same request is cleaned and regenerated. A directory
    holding a different world, or anything that is not a world of ours, raises WorldExistsError unless
    `force`; regeneration deletes only the files the old world's manifest lists (:func:`_remove_world_files`),
    and a file inside the world's folders that it does not list is refused (NotOwnedError) even with `force`.
    The manifest is written last, so its presence marks a complete world.

    ``version`` (GENERATOR_VERSIONS) is part of the request: a world of another version this code can still
    generate is a different world (WorldExistsError unless `force`); one of a version it no longer generates is
    outdated and regenerated.
    """
    out = Path(out_dir)
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    plan = plan_world(seed, preset, _check_version(version))
    files = build_annotations(plan)  # cheap; also what a reusable world on disk must match byte for byte
    if out.exists():
        if not out.is_dir():
            raise WorldExistsError(f"{out} exists and is not a directory")
        existing = None
        try:
            existing = read_manifest(out)
        except WorldExistsError:
            if not force:
                raise
        if existing is not None and not force:
            old_version = existing.get("generator_version")
            same_request = (existing.get("seed") == seed and existing.get("preset") == preset
                            and (old_version == version or old_version not in GENERATOR_VERSIONS))
            if not same_request:
                raise WorldExistsError(
                    f"{out} holds a world with seed={existing.get('seed')} preset={existing.get('preset')!r} "
                    f"generator {old_version}; use --force to overwrite it")
            up_to_date = (old_version == version
                          and existing.get("annotation_sha256") == {k: _sha256(v) for k, v in sorted(files.items())})
            if up_to_date and _is_complete(out, existing):
                existing["reused"] = True
                return existing
            # else: an outdated or incomplete world of the same request, regenerated below
        entries = sorted(p.name for p in out.iterdir())
        foreign = [n for n in entries if n not in LAYOUT_ENTRIES]
        ours = existing is not None or (out / IN_PROGRESS).exists()
        if entries and not force and (foreign or not ours):
            # e.g. a directory of real videos/: never delete what we did not write
            raise WorldExistsError(f"{out} is not empty and not a synthetic world (found {entries[:5]}); "
                                   f"choose another directory or use --force")
        # Remove the world's own files (never anything else): no stale file of an older world may survive.
        _remove_world_files(out, existing)
    out.mkdir(parents=True, exist_ok=True)
    # marks an interrupted run as ours, so that re-running the same command may clean it up and regenerate
    _atomic_write(out / IN_PROGRESS, json.dumps({"seed": seed, "preset": preset,
                                                 "generator_version": version}).encode("utf-8"))

    video_dir = out / "videos"
    video_dir.mkdir(exist_ok=True)
    specs = list(plan.videos())
    bar = specs
    if progress:
        from locvtp.runtime import progress as tqdm

        bar = tqdm(specs, desc=f"synth {preset} seed={seed} v{version}", unit="video", file=sys.stderr)
    for spec in bar:
        write_mp4(video_dir / f"{spec.vid}.mp4", render_video(spec))
    for rel, data in files.items():
        _atomic_write(out / rel, data)
    manifest = _manifest(plan, files)
    _atomic_write(out / "manifest.json", (json.dumps(manifest, indent=1) + "\n").encode("utf-8"))
    (out / IN_PROGRESS).unlink()
    return manifest
