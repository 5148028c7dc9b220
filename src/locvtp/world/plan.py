"""The plan of the procedural video–text world: small MP4s in which nameable objects do nameable things at known
times (rendered by :mod:`locvtp.world.render`, annotated by :mod:`locvtp.world.annotations`, written by
:mod:`locvtp.world.generate`).

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

from dataclasses import dataclass, field, replace
from typing import Any, Iterable

import numpy as np


GENERATOR_VERSION = "1.3"  # the default version of tiny/demo (what `make demo` generates); 1.2 stays one flag away
# Every version this code generates. A version's worlds stay byte-identical when later versions are added: a new
# version only switches code paths on, keyed on WorldPlan.version (docs/world_versions.md).
#   1.2  EPIC-KITCHENS-format labelled action segments (epic_*); everything else as 1.1
#   1.3  harder CrossTask/COIN test sets (ProcedureStyle below); everything else as 1.2
#   1.4  the presets `long` and `charades`: benchmark-like moments (MomentStyle below); tiny/demo as 1.3
#   1.5  `long`/`charades`: the labelled EPIC set (the backbone's) is the demo world's, not moment videos; else as 1.4
#   1.6  the preset `recipe`: `long` whose events repeat actions on other actors (MomentStyle.same_action); every
#        other preset plans as at 1.5 (tiny/demo as 1.3)
GENERATOR_VERSIONS = ("1.2", "1.3", "1.4", "1.5", "1.6")
MOMENT_VERSION = "1.5"  # the default version of `long` and `charades` (the presets with MomentStyles from 1.4)
RECIPE_VERSION = "1.6"  # the default (and first) version of `recipe`
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
    # generator >= 1.4: the long videos (pre-training, grounding, EPIC) follow MOMENT_STYLES[moments] instead of
    # `events` (benchmark-like moment statistics); None = the long videos of generator <= 1.3
    moments: str | None = None
    first_version: str = "1.2"  # the first generator version that has the preset (an earlier one is refused)
    default_version: str = GENERATOR_VERSION  # the version `locvtp synth` makes unless asked for another


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
    # Generator >= 1.4. The grounding splits are sized for a head under 2D-TAN's protocol (>= 2 000 training and
    # >= 600 test queries); pre-training has about the demo's number of narrations; the short and procedure videos
    # are the demo's. The EPIC counts below are 1.4's (about the demo's seconds of labelled video, in moment videos);
    # from 1.5 the EPIC splits are the demo's (LABELLED_SET_PRESET).
    "long": Preset(
        pretrain=110, webvid=60, grounding_train=530, grounding_test=165, retrieval_train=160, retrieval_test=120,
        crosstask_tasks=6, crosstask_train_per_task=6, crosstask_val_per_task=6,
        coin_tasks=6, coin_train_per_task=6, coin_test_per_task=5,
        events=(3, 5), captions_per_retrieval_video=5, epic_train=52, epic_val=13, moments="long",
        first_version="1.4", default_version=MOMENT_VERSION,
    ),
    "charades": Preset(
        pretrain=360, webvid=60, grounding_train=1060, grounding_test=330, retrieval_train=160, retrieval_test=120,
        crosstask_tasks=6, crosstask_train_per_task=6, crosstask_val_per_task=6,
        coin_tasks=6, coin_train_per_task=6, coin_test_per_task=5,
        events=(1, 3), captions_per_retrieval_video=5, epic_train=150, epic_val=35, moments="charades",
        first_version="1.4", default_version=MOMENT_VERSION,
    ),
}
# Generator >= 1.6 (issue 23): `long`'s sizes and timing, YouCook2-like event sequences in which the same action
# recurs on other objects (MOMENT_STYLES["recipe"]); the EPIC splits are the demo's (LABELLED_SET_PRESET, hence the
# demo's counts), as are the short and procedure videos.
PRESETS["recipe"] = replace(PRESETS["long"], epic_train=PRESETS["demo"].epic_train,
                            epic_val=PRESETS["demo"].epic_val, moments="recipe", first_version=RECIPE_VERSION,
                            default_version=RECIPE_VERSION)

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
PROCEDURE_STYLES["1.4"] = PROCEDURE_STYLES["1.3"]  # 1.4 adds presets; its procedures are 1.3's
PROCEDURE_STYLES["1.5"] = PROCEDURE_STYLES["1.3"]
PROCEDURE_STYLES["1.6"] = PROCEDURE_STYLES["1.3"]


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


# ------------------------------------------------------------------------------ benchmark-like moments (1.4)
SAME_ACTION = 0.5  # `recipe`'s MomentStyle.same_action (tuned on seed 0; tests/test_world_recipe.py holds seeds 11, 12)

@dataclass(frozen=True)
class MomentStyle:
    """The long videos (pre-training, grounding, EPIC) of a benchmark-like preset (generator >= 1.4).

    Why: the temporal term relates a clip to clips within W = 2 of it, which presumes moments much longer than W
    and neighbours that say something about the reference. Generator <= 1.3 has 2-5 s moments of independent
    actors (docs/world_versions.md); these presets have the benchmarks' moment statistics instead.
    """

    video_seconds: tuple[float, float]  # a video's length, uniform
    events: tuple[int, int]  # events per video (inclusive)
    event_seconds: tuple[float, float]  # bounds of one event's length
    coverage: tuple[float, float]  # bounds of the share of the video the events cover
    # the knob: chance that an event's actor is the previous event's (one "activity" per video, as an
    # ActivityNet video or a YouCook2 recipe); 0 = actors drawn independently, as generator <= 1.3
    continuity: float
    narrations_per_event: tuple[int, int]  # HowTo100M-like narrations per event (inclusive) ...
    narration_every: float  # ... about one per this many seconds of the event
    narration_seconds: tuple[float, float] = (2.0, 4.0)
    narration_shift: float = 1.0  # misalignment: each narration moved by U(-shift, shift) s
    dirichlet: float = 3.0  # concentration of the split of the covered time among the events
    actors: tuple[int, int] = (2, 3)  # actors per video (inclusive); besides them 1-2 still distractors
    # generator >= 1.6 (`recipe`): chance that an event (not the first) repeats an action done earlier in the video,
    # on an actor that has not done it and is not the previous event's (YouCook2's "cut the onion" ... "cut the
    # tomato"): the verb alone no longer places the query. 0 = never on purpose (the presets of 1.4/1.5)
    same_action: float = 0.0


MOMENT_STYLES: dict[str, MomentStyle] = {
    # ActivityNet Captions / YouCook2: 50-120 s, 3-5 events with median >= 10 s, one actor carries the video
    "long": MomentStyle(video_seconds=(50.0, 120.0), events=(3, 5), event_seconds=(6.0, 45.0),
                        coverage=(0.65, 0.95), continuity=0.8, narrations_per_event=(2, 5), narration_every=5.0),
    # Charades-STA: ~30 s videos, 1-3 moments of 5-12 s, one person per video
    "charades": MomentStyle(video_seconds=(26.0, 34.0), events=(1, 3), event_seconds=(5.0, 12.0),
                            coverage=(0.15, 0.95), continuity=0.8, narrations_per_event=(1, 3),
                            narration_every=4.0),
    # YouCook2 (generator >= 1.6): `long`'s timing; the actor changes at every event (continuity 0) and an action
    # recurs on another object with probability `same_action` (docs/world_versions.md, generator 1.6)
    "recipe": MomentStyle(video_seconds=(50.0, 120.0), events=(3, 5), event_seconds=(6.0, 45.0),
                          coverage=(0.65, 0.95), continuity=0.0, narrations_per_event=(2, 5), narration_every=5.0,
                          same_action=SAME_ACTION),
}
# Generator >= 1.5: the EPIC splits of `long` and `charades` (the labelled set the video backbone learns from, the
# world's Kinetics step) are this preset's, byte for byte. Why: 1.4 drew them as moment videos, and 52 videos of
# 3-5 long events with one actor carrying on hold too few distinct (object, action) segments (211) for the backbone
# to generalise: held-out verb accuracy 34.3 % (90.6 % on its own training clips), against 85.7 % for a backbone
# trained on the demo world's segments and tested on the same 1.4 long clips (diagnostics.backbone_transfer,
# docs/world_versions.md). A backbone is pre-trained on a labelled set of its own (Kinetics), not on the target
# benchmark's videos.
LABELLED_SET_PRESET = "demo"
CYCLIC = "cyclic"  # VideoSpec.extra["motion"] of a generator-1.4 moment video (see cyclic_motion)
MIN_SIZE_SPAN = 2.0 * SIZE_RATE  # grow/shrink need a size range of >= 2 s of growth at the object's place


def moment_style(preset: str, version: str) -> MomentStyle | None:
    """The MomentStyle of a preset's long videos, or None for the long videos of generator <= 1.3."""
    name = PRESETS[preset].moments
    return None if name is None or version in ("1.2", "1.3") else MOMENT_STYLES[name]


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in version.split("."))


def size_range(shape: str, x: float, y: float) -> tuple[float, float]:
    """(smallest, largest) radius of an object at (x, y): R_MIN, and the largest that stays inside the frame."""
    room = min(x, FRAME_SIZE - x, y, FRAME_SIZE - y) - 1.0
    return R_MIN, min(R_MAX, room / (1.25 if shape in ("triangle", "diamond") else 1.0))


def cyclic_motion(shape: str, x: float, y: float, r: float, action: str, progress):
    """(x, y, r) after ``progress`` seconds (scalar or array) of an action of a generator-1.4 moment video.

    Why: a 10-40 s event cannot be one straight move or growth in a 32-pixel frame, yet every 1-s clip of it
    must show the action as in generator <= 1.3. So moves wrap around the frame (the object leaves on one side
    and comes back on the other; rendered in periodic coordinates) and grow/shrink restart from the other end
    of the object's size range (`size_range`). Shared by the plan (end states) and the renderer (every frame).
    """
    p = np.asarray(progress, dtype=np.float64)
    d = MOVE_SPEED * p
    x1, y1, r1 = np.full_like(p, x), np.full_like(p, y), np.full_like(p, r)
    if action in ("move_left", "move_right"):
        x1 = np.mod(x + (d if action == "move_right" else -d), FRAME_SIZE)
    elif action in ("move_up", "move_down"):
        y1 = np.mod(y + (d if action == "move_down" else -d), FRAME_SIZE)
    elif action in ("grow", "shrink"):
        lo, hi = size_range(shape, x, y)
        if action == "grow":
            v = r + SIZE_RATE * p
            r1 = np.where(v > hi, lo + np.mod(v - hi, hi - lo), v)
        else:
            v = r - SIZE_RATE * p
            r1 = np.where(v < lo, hi - np.mod(lo - v, hi - lo), v)
    elif action != "blink":
        raise ValueError(f"unknown action {action!r}")
    return x1, y1, r1


def _cyclic_end(obj: Obj, action: str, dur: float) -> Obj:
    x, y, r = cyclic_motion(obj.shape, obj.x, obj.y, obj.r, action, dur)
    return Obj(obj.colour, obj.shape, float(x), float(y), float(r), obj.role)


def _cyclic_feasible(obj: Obj, action: str, dur: float, others: Iterable[Obj] = ()) -> bool:
    """Can `obj` perform `action` (cyclically) for `dur` s and come to rest inside the frame, clear of `others`?"""
    if action == "blink":
        return True
    if action in ("grow", "shrink"):
        lo, hi = size_range(obj.shape, obj.x, obj.y)
        if hi - lo < MIN_SIZE_SPAN or not lo <= obj.r <= hi:
            return False
    end = _cyclic_end(obj, action, dur)
    m = _extent(end.shape, end.r)
    if not (m <= end.x <= FRAME_SIZE - m and m <= end.y <= FRAME_SIZE - m):
        return False
    return all(_clearance(end, o, end.x, end.y, end.x, end.y, end.r) >= 0 for o in others if o.role == "actor")


def _moment_lengths(rng: np.random.Generator, style: MomentStyle) -> tuple[float, list[float], np.ndarray]:
    """(video length, event lengths, shares of the free time per gap): covered time split among the events
    (Dirichlet), redrawn until every event is within ``event_seconds`` and the coverage within bounds."""
    n = int(rng.integers(style.events[0], style.events[1] + 1))
    total = _q(rng, *style.video_seconds)
    lo, hi = style.event_seconds
    lengths = [lo] * n
    for _ in range(500):
        cover = float(rng.uniform(*style.coverage)) * total
        cand = [max(TIME_QUANTUM, round(float(v) / TIME_QUANTUM) * TIME_QUANTUM)
                for v in rng.dirichlet(np.full(n, style.dirichlet)) * cover]
        if all(lo <= v <= hi for v in cand):
            lengths = cand
            break
    return total, lengths, rng.dirichlet(np.ones(n + 1))


def _length_tries(dur: float) -> list[float]:
    """The drawn length first, then moved by up to 2 s (an event that would end with its object at rest outside
    the frame or on another actor is lengthened or shortened a little)."""
    return [dur + k * TIME_QUANTUM for k in (0, 1, -1, 2, -2, 3, -3, 4, -4)]


def _repeat_action(rng: np.random.Generator, state: list[Obj], n_actors: int, used: set[tuple[int, str]],
                   prev: int | None, dur: float, style: MomentStyle) -> tuple[int, str, float] | None:
    """(actor, action, length) of an event that repeats an action done earlier in the video (drawn uniformly
    among them) on another actor, neither the previous event's nor one that has done it; None if none can."""
    done = sorted({a for _, a in used}, key=ACTIONS.index)
    lo, hi = style.event_seconds
    for a in (done[int(j)] for j in rng.permutation(len(done))):
        for i in (int(j) for j in rng.permutation(n_actors)):
            if i == prev or (i, a) in used:
                continue
            for d in _length_tries(dur):
                if lo <= d <= hi and _cyclic_feasible(state[i], a, d, _without(state, i)):
                    return i, a, d
    return None


def _moment_actor(rng: np.random.Generator, state: list[Obj], n_actors: int, used: set[tuple[int, str]],
                  prev: int | None, dur: float, style: MomentStyle) -> tuple[int, str, float] | None:
    """(actor, action, length) of the next event: with probability ``same_action`` an earlier action on another
    actor (`_repeat_action`); otherwise the previous actor again with probability ``continuity`` (else another
    one), an action it has not done in this video, the length moved by <= 2 s if the drawn one would leave the
    object at rest outside the frame or on another actor. A style with same_action 0 draws nothing for it (the
    worlds of 1.4/1.5 are unchanged)."""
    if style.same_action > 0 and used and rng.random() < style.same_action:
        pick = _repeat_action(rng, state, n_actors, used, prev, dur, style)
        if pick is not None:
            return pick
    stay = prev is not None and rng.random() < style.continuity
    first = [prev] if stay else [i for i in rng.permutation(n_actors) if i != prev]
    order = first + [i for i in rng.permutation(n_actors) if i not in first]
    lo, hi = style.event_seconds
    tries = _length_tries(dur)
    for i in (int(j) for j in order):
        acts = [a for a in (ACTIONS[j] for j in rng.permutation(len(ACTIONS))) if (i, a) not in used]
        for a in acts:
            for d in tries:
                if lo <= d <= hi and _cyclic_feasible(state[i], a, d, _without(state, i)):
                    return i, a, d
    return None


def _plan_moment_video(rng: np.random.Generator, vid: str, split: str, style: MomentStyle) -> VideoSpec:
    """A generator-1.4 long video: a few long events, one actor usually carrying on from one event to the next
    (``continuity``) or, from 1.6, actions recurring on other actors (``same_action``), (actor, action) pairs
    unique per video, idle gaps (possibly 0) between them, the same
    scene throughout. Moves and size changes are cyclic (`cyclic_motion`)."""
    n_actors = int(rng.integers(style.actors[0], style.actors[1] + 1))
    objs = _place_objects(rng, n_actors, int(rng.integers(1, 3)))
    state = [Obj(o.colour, o.shape, o.x, o.y, o.r, o.role) for o in objs]
    total, lengths, gap_share = _moment_lengths(rng, style)
    used: set[tuple[int, str]] = set()
    chosen: list[tuple[int, str, float]] = []
    prev = None
    for dur in lengths:
        pick = _moment_actor(rng, state, n_actors, used, prev, dur, style)
        if pick is None:  # pragma: no cover - blink is always feasible for an actor that has not blinked
            break
        i, a, d = pick
        used.add((i, a))
        state[i] = _cyclic_end(state[i], a, d)
        chosen.append(pick)
        prev = i
    busy = sum(d for _, _, d in chosen)
    free = max(0.0, total - busy)
    gaps = [float(np.floor(g * free / TIME_QUANTUM)) * TIME_QUANTUM for g in gap_share[:len(chosen)]]
    t = gaps[0] if gaps else 0.0
    events: list[Event] = []
    for k, (i, a, d) in enumerate(chosen):
        events.append(Event(i, a, t, t + d, canonical_caption(objs[i], a)))
        t += d + (gaps[k + 1] if k + 1 < len(gaps) else 0.0)
    duration = max(total, t) if events else total
    bg, tex = _background(rng)
    return VideoSpec(vid, split, duration, objs, events, bg, tex, extra={"motion": CYCLIC})


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


def default_version(preset: str) -> str:
    """The generator version a preset is made with unless one is asked for (`Preset.default_version`): 1.5 for
    `long` and `charades`, 1.6 for `recipe`, GENERATOR_VERSION (1.3) for tiny and demo."""
    return PRESETS[preset].default_version if preset in PRESETS else GENERATOR_VERSION


def check_request(preset: str, version: str | None) -> str:
    """The version of a (preset, version) request (None = `default_version`); ValueError naming what is wrong."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    version = _check_version(default_version(preset) if version is None else version)
    first = PRESETS[preset].first_version
    if _version_key(version) < _version_key(first):
        raise ValueError(f"preset {preset!r} needs generator version {first} or later (asked for {version})")
    return version


def plan_world(seed: int = 0, preset: str = "tiny", version: str | None = None,
               sizes: dict[str, int] | None = None) -> WorldPlan:
    """Every video's objects, events and captions, without rendering anything (cheap, deterministic).

    ``version`` selects the generator version (GENERATOR_VERSIONS; None = `default_version` of the preset); each
    version's plan is fixed forever. ``sizes`` overrides a preset's counts (``{"pretrain": 20, ...}``, fields of
    Preset) for tests and statistics of reduced worlds; a video's content does not depend on how many are drawn.
    """
    version = check_request(preset, version)
    style = PROCEDURE_STYLES.get(version)  # None: the procedures of generator <= 1.2
    p = PRESETS[preset]
    if sizes:
        p = replace(p, **sizes)
    moments = moment_style(preset, version)
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
            if moments is not None:
                splits[split].append(_plan_moment_video(rng, next_vid(split), split, moments))
                continue
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
    if moments is not None and version != "1.4":  # 1.5: the demo world's labelled set (LABELLED_SET_PRESET)
        epic_sizes = {k: v for k, v in (sizes or {}).items() if k in ("epic_train", "epic_val")}
        moments, p = None, replace(PRESETS[LABELLED_SET_PRESET], **epic_sizes)
    long_videos("epic_train", 8, p.epic_train)
    long_videos("epic_val", 9, p.epic_val)
    return WorldPlan(seed, preset, splits, ct, coin, version)
