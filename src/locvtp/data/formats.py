"""Readers of the published video–text annotation formats, returning plain typed records.

One reader per format, all with the same contract:

* ``read_xxx(path, ..., strict=False) -> LoadResult(records, skipped)``;
* lenient by default (bulk loading must survive the odd bad row of a 100k-video dataset): every bad record is
  skipped and kept in ``skipped`` as ``BadRecord(file, location, reason)`` — nothing is dropped silently;
* ``strict=True`` raises :class:`FormatError` at the first bad record, naming the file and the line or key;
* a missing file, or a file whose overall structure is unreadable (invalid JSON document, missing CSV header),
  always raises :class:`FormatError` (a missing file also is a ``FileNotFoundError``): there is no record to
  skip.

Times are seconds everywhere (the formats below all use seconds, but for EPIC-KITCHENS' ``HH:MM:SS.ff``
timestamps, which are converted). A record is bad when: a time is not a finite number (or not a timestamp),
start < 0, start ≥ end, the end lies beyond the known duration by more than ``duration_tolerance``
(ends within the tolerance are clipped to the duration — ActivityNet and Charades-STA contain many such
rounding overshoots), the sentence is empty or not valid UTF-8, the row/record is malformed, or the video id
is not in ``known_ids`` (when given).

Formats (field names exactly as published; see ``docs/data.md`` for examples):

============================  =====================================================================
HowTo100M ``caption.json``     ``{vid: {"start": [s..], "end": [s..], "text": [..]}}``
WebVid CSV                     header ``videoid,contentUrl,duration,page_dir,name`` (duration ISO-8601)
ActivityNet Captions JSON      ``{vid: {"duration", "timestamps": [[s, e]..], "sentences": [..]}}``
Charades-STA txt               ``vid start end##sentence`` per line; durations from ``Charades_v1_*.csv``
QVHighlights JSONL             ``{"qid", "query", "duration", "vid", "relevant_windows": [[s, e]..], ...}``
MSR-VTT                        ``MSRVTT_data.json`` (``videos``, ``sentences``), ``MSRVTT_train.9k.csv``
                               (``video_id``), JSFusion ``MSRVTT_JSFUSION_test.csv`` (``key,vid_key,video_id,sentence``)
CrossTask                      ``tasks_primary.txt`` (blocks: id, name, url, n_steps, steps, blank line),
                               ``videos.csv`` (``task,vid,url``, no header), ``annotations/<task>_<vid>.csv``
                               (``step,start,end``, 1-based steps, no header)
COIN ``COIN.json``             ``{"database": {vid: {"subset", "recipe_type", "class", "duration",
                               "annotation": [{"id", "segment": [s, e], "label"}]}}}``
EPIC-KITCHENS-100 CSV          ``EPIC_100_{train,validation}.csv``: header ``narration_id,participant_id,video_id,
                               narration_timestamp,start_timestamp,stop_timestamp,start_frame,stop_frame,
                               narration,verb,verb_class,noun,noun_class,all_nouns,all_noun_classes``
                               (times ``HH:MM:SS.ff``, read as seconds)
============================  =====================================================================
"""
from __future__ import annotations

import csv
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection, Generic, Iterable, Iterator, Mapping, TypeVar
from locvtp.data.textinput import BOM, strip_bom
from locvtp.errors import LocVTPError

T = TypeVar("T")

DEFAULT_DURATION_TOLERANCE = 0.5  # seconds an end time may overshoot the duration (then clipped)


class FormatError(LocVTPError, ValueError):
    """An annotation file (or one of its records) is invalid; the message names the file and line/key."""


class MissingFileError(FormatError, FileNotFoundError):
    """An annotation file does not exist. Built as ``MissingFileError(errno, message, filename)``; its text is
    the message (not the argument tuple ValueError's ``str`` would give)."""

    def __str__(self) -> str:
        if len(self.args) >= 2 and isinstance(self.args[1], str):
            return self.args[1]
        return super().__str__()


@dataclass(frozen=True)
class BadRecord:
    file: str
    location: str  # "line 12", "key 'v_abc'", "key 'v_abc' sentence 3", ...
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {self.location}: {self.reason}"


@dataclass
class LoadResult(Generic[T]):
    """Records that were read, and the bad records that were skipped (with reasons)."""

    records: list[T] = field(default_factory=list)
    skipped: list[BadRecord] = field(default_factory=list)

    def __iter__(self) -> Iterator[T]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def reasons(self) -> Counter:
        """Skipped-record counts by reason (without the per-record detail after a colon)."""
        return Counter(b.reason.split(":")[0] for b in self.skipped)

    def summary(self) -> str:
        if not self.skipped:
            return f"loaded {len(self.records)} records, skipped 0"
        why = ", ".join(f"{n}× {r}" for r, n in self.reasons().most_common())
        return f"loaded {len(self.records)} records, skipped {len(self.skipped)} ({why})"


# ------------------------------------------------------------------------------------------------ records
@dataclass(frozen=True)
class Narration:
    """One HowTo100M-style narration (ASR sentence) with its (possibly misaligned) time span."""

    video_id: str
    start: float
    end: float
    text: str


@dataclass(frozen=True)
class WebVidVideo:
    video_id: str
    url: str
    duration: float | None  # seconds (WebVid writes ISO-8601 "PT00H00M11S")
    page_dir: str
    caption: str


@dataclass(frozen=True)
class MomentQuery:
    """A grounding query: a sentence and its ground-truth moment(s) in one video.

    ``windows`` holds every ground-truth window (QVHighlights may have several); ``start``/``end`` are the
    first one's, which is the single window of ActivityNet Captions and Charades-STA.
    """

    video_id: str
    query: str
    windows: tuple[tuple[float, float], ...]
    duration: float | None
    qid: str
    # QVHighlights' highlight labels: the listed 2-s clips and one row of annotator scores (0..4) per clip
    clip_ids: tuple[int, ...] = ()
    saliency: tuple[tuple[float, ...], ...] = ()

    @property
    def start(self) -> float:
        return self.windows[0][0]

    @property
    def end(self) -> float:
        return self.windows[0][1]


@dataclass(frozen=True)
class MsrvttVideo:
    video_id: str
    split: str  # "train" | "validate" | "test" as written in MSRVTT_data.json
    category: int | None
    start: float | None  # "start time" / "end time": the clip's span in the source video
    end: float | None
    url: str
    captions: tuple[str, ...]


@dataclass(frozen=True)
class RetrievalQuery:
    """One row of the JSFusion test csv: a test video and its query sentence."""

    key: str
    video_id: str
    sentence: str


@dataclass(frozen=True)
class CrossTaskTask:
    task_id: str
    name: str
    url: str
    steps: tuple[str, ...]

    @property
    def n_steps(self) -> int:
        return len(self.steps)


@dataclass(frozen=True)
class CrossTaskVideo:
    task_id: str
    video_id: str
    url: str


@dataclass(frozen=True)
class StepSegment:
    step: int  # 1-based index into the task's steps (as in the files)
    start: float
    end: float


@dataclass(frozen=True)
class CrossTaskAnnotation:
    task_id: str
    video_id: str
    segments: tuple[StepSegment, ...]


@dataclass(frozen=True)
class CoinSegment:
    step_id: str  # COIN's global step id (a string in COIN.json)
    start: float
    end: float
    label: str


@dataclass(frozen=True)
class CoinVideo:
    video_id: str
    subset: str  # "training" | "testing"
    recipe_type: int | None
    task: str  # COIN's "class"
    duration: float | None
    url: str
    segments: tuple[CoinSegment, ...]


@dataclass(frozen=True)
class EpicSegment:
    """One EPIC-KITCHENS-100 action segment (a row of ``EPIC_100_train.csv`` / ``EPIC_100_validation.csv``)."""

    narration_id: str
    video_id: str
    start: float  # seconds (start_timestamp)
    end: float  # seconds (stop_timestamp)
    narration: str
    verb: str
    verb_class: int
    noun: str
    noun_class: int


# ------------------------------------------------------------------------------------------------ helpers
class _Collector:
    """Lenient/strict bookkeeping shared by the readers."""

    def __init__(self, path: Path, strict: bool):
        self.file = str(path)
        self.strict = strict
        self.skipped: list[BadRecord] = []

    def bad(self, location: str, reason: str) -> None:
        rec = BadRecord(self.file, location, reason)
        if self.strict:
            raise FormatError(str(rec))
        self.skipped.append(rec)

    def result(self, records: list) -> LoadResult:
        return LoadResult(records, self.skipped)


def _check_file(path: str | Path) -> Path:
    p = Path(path)
    if not p.exists():
        raise MissingFileError(2, f"annotation file not found: {p}", str(p))
    if not p.is_file():
        raise FormatError(f"{p}: not a regular file")
    return p


def _read_text(p: Path) -> str:
    """Decode with surrogateescape: invalid UTF-8 survives as lone surrogates and is caught per record.
    A leading byte-order mark (spreadsheet exports) is dropped."""
    return strip_bom(p.read_bytes().decode("utf-8", errors="surrogateescape"))


_SURROGATE = re.compile("[\udc80-\udcff]")


class _Bad(Exception):
    """Internal: a record is bad for the given reason."""


def _text(value: Any, what: str = "sentence") -> str:
    if not isinstance(value, str):
        raise _Bad(f"{what} is not a string ({type(value).__name__})")
    if _SURROGATE.search(value):
        raise _Bad(f"{what} is not valid UTF-8")
    s = value.strip()
    if not s:
        raise _Bad(f"empty {what}")
    return s


def _num(value: Any, what: str) -> float:
    if isinstance(value, bool):
        raise _Bad(f"{what} is not a number ({value!r})")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise _Bad(f"{what} is not a number ({value!r})") from None
    if not math.isfinite(x):
        raise _Bad(f"{what} is not finite ({value!r})")
    return x


def _span(start: Any, end: Any, duration: float | None, tol: float) -> tuple[float, float]:
    s, e = _num(start, "start"), _num(end, "end")
    if s < 0:
        raise _Bad(f"start < 0: start={s}")
    if s >= e:
        raise _Bad(f"start >= end: start={s}, end={e}")
    if duration is not None:
        if s >= duration:
            raise _Bad(f"outside the duration: start={s} >= duration={duration}")
        if e > duration + tol:
            raise _Bad(f"outside the duration: end={e} > duration={duration}")
        e = min(e, duration)
    return s, e


def _duration(value: Any) -> float:
    d = _num(value, "duration")
    if d <= 0:
        raise _Bad(f"non-positive duration ({d})")
    return d


def _known(vid: str, known_ids: Collection[str] | None) -> None:
    if known_ids is not None and vid not in known_ids:
        raise _Bad(f"unknown video id {vid!r}")


def malformed_json(p: str | Path, lineno: int, colno: int, msg: str) -> FormatError:
    """The error for a JSON syntax error at ``lineno``/``colno`` of ``p`` (one wording for every reader,
    the streaming one of :mod:`locvtp.training.corpus` included)."""
    return FormatError(f"{p}: line {lineno} column {colno}: malformed JSON: {msg}")


def _load_json(p: Path) -> Any:
    try:
        return json.loads(_read_text(p))
    except json.JSONDecodeError as exc:
        raise malformed_json(p, exc.lineno, exc.colno, exc.msg) from None


def _csv_rows(p: Path) -> Iterator[tuple[int, Any]]:
    """(line number, fields) of every non-blank CSV row; unparsable rows yield a _CsvError instead of fields.

    Streams the file (WebVid's 10 M-row CSV is never held whole), decoded like :func:`_read_text`: invalid UTF-8
    survives as lone surrogates, a leading byte-order mark is dropped."""
    with open(p, encoding="utf-8", errors="surrogateescape", newline="") as fh:
        if fh.read(1) != BOM:
            fh.seek(0)
        reader = csv.reader(fh, strict=True)
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield reader.line_num, _CsvError(str(exc))
                continue
            if row and any(c.strip() for c in row):
                yield reader.line_num, row


def _header(p: Path, rows: Iterator[tuple[int, Any]], required: tuple[str, ...]) -> list[str]:
    """The stripped header row; FormatError when the file is empty or lacks a required column."""
    try:
        _, header = next(rows)
    except StopIteration:
        raise FormatError(f"{p}: empty file (expected a header with {','.join(required)})") from None
    if isinstance(header, _CsvError):
        raise FormatError(f"{p}: line 1: malformed header: {header}")
    header = [h.strip() for h in header]
    missing = [h for h in required if h not in header]
    if missing:
        raise FormatError(f"{p}: line 1: header lacks column(s) {missing} (got {header})")
    return header


def _open_csv(path: str | Path, strict: bool, required: tuple[str, ...]
              ) -> tuple[_Collector, list[str], dict[str, int], Iterator[tuple[int, Any]]]:
    """The shared start of every CSV reader: check the file, read the header (FormatError when a required column
    is missing), and return (collector, header, column index of each required name, remaining rows)."""
    p = _check_file(path)
    rows = _csv_rows(p)
    header = _header(p, rows, required)
    return _Collector(p, strict), header, {h: header.index(h) for h in required}, rows


class _CsvError(str):
    """Stands in for the fields of a row the csv module could not parse."""


def _fields(row: list[str] | _CsvError, n: int, expected: str) -> list[str]:
    if isinstance(row, _CsvError):
        raise _Bad(f"malformed row: {row}")
    if len(row) != n:
        raise _Bad(f"malformed row: {len(row)} fields, expected {n} ({expected})")
    return row


def _mapping(value: Any, where: str) -> Mapping:
    if not isinstance(value, Mapping):
        raise _Bad(f"{where} is not an object ({type(value).__name__})")
    return value


# ------------------------------------------------------------------------------------------- pre-training
def read_howto100m_captions(path: str | Path, known_ids: Collection[str] | None = None,
                            durations: Mapping[str, float] | None = None, strict: bool = False,
                            duration_tolerance: float = DEFAULT_DURATION_TOLERANCE) -> LoadResult[Narration]:
    """HowTo100M ``caption.json``: ``{vid: {"start": [..], "end": [..], "text": [..]}}`` (seconds)."""
    p = _check_file(path)
    col = _Collector(p, strict)
    data = _load_json(p)
    if not isinstance(data, dict):
        raise FormatError(f"{p}: top level must be an object mapping video ids to captions")
    out: list[Narration] = []
    for vid, entry in data.items():
        howto100m_entry(vid, entry, col, out, known_ids, durations, duration_tolerance)
    return col.result(out)


def howto100m_entry(vid: str, entry: Any, col: _Collector, out: list, known_ids: Collection[str] | None = None,
                    durations: Mapping[str, float] | None = None,
                    duration_tolerance: float = DEFAULT_DURATION_TOLERANCE) -> None:
    """One ``caption.json`` member: its good narrations are appended to ``out``, its bad ones reported to
    ``col``. Shared by :func:`read_howto100m_captions` and the streaming corpus preparation
    (:mod:`locvtp.training.corpus`), so both accept and reject exactly the same rows."""
    try:
        _known(vid, known_ids)
        entry = _mapping(entry, "entry")
        lists = [entry.get(k) for k in ("start", "end", "text")]
        if not all(isinstance(x, list) for x in lists):
            raise _Bad("'start', 'end' and 'text' must all be lists")
        if not len(lists[0]) == len(lists[1]) == len(lists[2]):
            raise _Bad(f"list lengths differ (start {len(lists[0])}, end {len(lists[1])}, text {len(lists[2])})")
    except _Bad as exc:
        col.bad(f"key {vid!r}", str(exc))
        return
    dur = durations.get(vid) if durations is not None else None
    for i, (s, e, t) in enumerate(zip(*lists)):
        try:
            text = _text(t)
            s, e = _span(s, e, dur, duration_tolerance)
        except _Bad as exc:
            col.bad(f"key {vid!r} item {i}", str(exc))
            continue
        out.append(Narration(vid, s, e, text))


_ISO = re.compile(r"^P(?:(\d+(?:\.\d+)?)D)?(?:T(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?)?$")


def parse_iso_duration(value: str) -> float:
    """Seconds of an ISO-8601 duration ("PT00H00M11S") or of a plain number ("11.5")."""
    v = value.strip()
    m = _ISO.match(v)
    if m and v not in ("P", "PT"):
        d, h, mi, s = (float(x) if x else 0.0 for x in m.groups())
        return d * 86400 + h * 3600 + mi * 60 + s
    return float(v)


WEBVID_HEADER = ("videoid", "contentUrl", "duration", "page_dir", "name")


def read_webvid_csv(path: str | Path, known_ids: Collection[str] | None = None,
                    strict: bool = False) -> LoadResult[WebVidVideo]:
    """WebVid CSV with header ``videoid,contentUrl,duration,page_dir,name`` (extra columns are ignored)."""
    col, header, idx, rows = _open_csv(path, strict, WEBVID_HEADER)
    out: list[WebVidVideo] = []
    for line, row in rows:
        webvid_row(line, row, header, idx, col, out, known_ids)
    return col.result(out)


def webvid_row(line: int, row: Any, header: list[str], idx: Mapping[str, int], col: _Collector, out: list,
               known_ids: Collection[str] | None = None) -> None:
    """One WebVid CSV row: appended to ``out`` when good, reported to ``col`` when bad (shared with the
    streaming corpus preparation, like :func:`howto100m_entry`)."""
    try:
        row = _fields(row, len(header), ",".join(header))
        vid = _text(row[idx["videoid"]], "videoid")
        _known(vid, known_ids)
        caption = _text(row[idx["name"]], "sentence")
        raw = row[idx["duration"]].strip()
        try:
            dur = parse_iso_duration(raw) if raw else None
        except ValueError:
            raise _Bad(f"duration {raw!r} is neither ISO-8601 nor a number") from None
        if dur is not None and not (math.isfinite(dur) and dur > 0):
            raise _Bad(f"non-positive duration ({raw!r})")
    except _Bad as exc:
        col.bad(f"line {line}", str(exc))
        return
    out.append(WebVidVideo(vid, row[idx["contentUrl"]].strip(), dur, row[idx["page_dir"]].strip(), caption))


# ----------------------------------------------------------------------------------------------- grounding
def read_activitynet_captions(path: str | Path, known_ids: Collection[str] | None = None, strict: bool = False,
                              duration_tolerance: float = DEFAULT_DURATION_TOLERANCE) -> LoadResult[MomentQuery]:
    """ActivityNet Captions ``train.json`` / ``val_1.json`` / ``val_2.json``: one MomentQuery per sentence."""
    p = _check_file(path)
    col = _Collector(p, strict)
    data = _load_json(p)
    if not isinstance(data, dict):
        raise FormatError(f"{p}: top level must be an object mapping video ids to annotations")
    out: list[MomentQuery] = []
    for vid, entry in data.items():
        try:
            _known(vid, known_ids)
            entry = _mapping(entry, "entry")
            if "duration" not in entry:
                raise _Bad("missing 'duration'")
            dur = _duration(entry["duration"])
            ts, sents = entry.get("timestamps"), entry.get("sentences")
            if not isinstance(ts, list) or not isinstance(sents, list):
                raise _Bad("'timestamps' and 'sentences' must be lists")
            if len(ts) != len(sents):
                raise _Bad(f"{len(ts)} timestamps but {len(sents)} sentences")
        except _Bad as exc:
            col.bad(f"key {vid!r}", str(exc))
            continue
        for i, (t, sent) in enumerate(zip(ts, sents)):
            try:
                if not isinstance(t, (list, tuple)) or len(t) != 2:
                    raise _Bad(f"timestamp is not a [start, end] pair ({t!r})")
                s, e = _span(t[0], t[1], dur, duration_tolerance)
                text = _text(sent)
            except _Bad as exc:
                col.bad(f"key {vid!r} sentence {i}", str(exc))
                continue
            out.append(MomentQuery(vid, text, ((s, e),), dur, f"{vid}#{i}"))
    return col.result(out)


def read_charades_durations(path: str | Path, strict: bool = False) -> LoadResult[tuple[str, float]]:
    """``Charades_v1_train.csv`` / ``_test.csv``: (id, length in seconds) pairs from the ``id``/``length`` columns."""
    col, header, idx, rows = _open_csv(path, strict, ("id", "length"))
    i_id, i_len = idx["id"], idx["length"]
    out: list[tuple[str, float]] = []
    for line, row in rows:
        try:
            row = _fields(row, len(header), ",".join(header))
            out.append((_text(row[i_id], "id"), _duration(row[i_len])))
        except _Bad as exc:
            col.bad(f"line {line}", str(exc))
    return col.result(out)


def read_charades_sta(path: str | Path, durations: Mapping[str, float] | str | Path | None = None,
                      known_ids: Collection[str] | None = None, strict: bool = False,
                      duration_tolerance: float = DEFAULT_DURATION_TOLERANCE) -> LoadResult[MomentQuery]:
    """Charades-STA ``charades_sta_{train,test}.txt``: ``vid start end##sentence`` (seconds) per line.

    ``durations`` (a mapping, or the path of a ``Charades_v1_*.csv``) enables the outside-the-duration check
    and fills ``MomentQuery.duration``; without it the duration is unknown (None).
    """
    p = _check_file(path)
    if durations is not None and not isinstance(durations, Mapping):
        durations = dict(read_charades_durations(durations, strict=strict).records)
    col = _Collector(p, strict)
    out: list[MomentQuery] = []
    for line_no, line in enumerate(_read_text(p).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            if "##" not in line:
                raise _Bad("malformed row: no '##' separator")
            head, sent = line.split("##", 1)
            parts = head.split()
            if len(parts) != 3:
                raise _Bad(f"malformed row: expected 'vid start end' before '##', got {head.strip()!r}")
            vid = parts[0]
            if _SURROGATE.search(vid):
                raise _Bad("video id is not valid UTF-8")
            _known(vid, known_ids)
            dur = None
            if durations is not None:
                if vid not in durations:
                    raise _Bad(f"unknown video id {vid!r} (no duration)")
                dur = float(durations[vid])
            s, e = _span(parts[1], parts[2], dur, duration_tolerance)
            text = _text(sent)
        except _Bad as exc:
            col.bad(f"line {line_no}", str(exc))
            continue
        out.append(MomentQuery(vid, text, ((s, e),), dur, f"{p.name}:{line_no}"))
    return col.result(out)


def read_qvhighlights(path: str | Path, known_ids: Collection[str] | None = None, strict: bool = False,
                      require_windows: bool = True,
                      duration_tolerance: float = DEFAULT_DURATION_TOLERANCE) -> LoadResult[MomentQuery]:
    """QVHighlights / Moment-DETR JSONL: ``{"qid", "query", "duration", "vid", "relevant_windows": [[s, e]..]}``.

    ``relevant_clip_ids`` and ``saliency_scores`` (highlight labels), when present, are kept as ``clip_ids`` and
    ``saliency`` (one row of annotator scores per listed clip). The official test split has no
    ``relevant_windows``: pass ``require_windows=False`` to read its queries (windows empty).
    """
    p = _check_file(path)
    col = _Collector(p, strict)
    out: list[MomentQuery] = []
    for line_no, line in enumerate(_read_text(p).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise _Bad(f"malformed JSON: {exc.msg} (column {exc.colno})") from None
            obj = _mapping(obj, "line")
            for k in ("qid", "query", "vid", "duration"):
                if k not in obj:
                    raise _Bad(f"missing {k!r}")
            vid = _text(obj["vid"], "vid")
            _known(vid, known_ids)
            dur = _duration(obj["duration"])
            query = _text(obj["query"], "query")
            wins = obj.get("relevant_windows")
            if wins is None:
                if require_windows:
                    raise _Bad("missing 'relevant_windows'")
                wins = []
            if not isinstance(wins, list) or (require_windows and not wins):
                raise _Bad("'relevant_windows' must be a non-empty list of [start, end]")
            windows = []
            for w in wins:
                if not isinstance(w, (list, tuple)) or len(w) != 2:
                    raise _Bad(f"window is not a [start, end] pair ({w!r})")
                windows.append(_span(w[0], w[1], dur, duration_tolerance))
            clip_ids, saliency = _highlight_labels(obj)
        except _Bad as exc:
            col.bad(f"line {line_no}", str(exc))
            continue
        out.append(MomentQuery(vid, query, tuple(windows), dur, str(obj["qid"]), clip_ids, saliency))
    return col.result(out)


def _highlight_labels(obj: Mapping) -> tuple[tuple[int, ...], tuple[tuple[float, ...], ...]]:
    """A QVHighlights line's ``relevant_clip_ids`` and ``saliency_scores`` (both or neither), checked."""
    ids, sal = obj.get("relevant_clip_ids"), obj.get("saliency_scores")
    if ids is None and sal is None:
        return (), ()
    if not isinstance(ids, list) or not isinstance(sal, list) or len(ids) != len(sal):
        raise _Bad("'relevant_clip_ids' and 'saliency_scores' must be lists of the same length")
    if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in ids):
        raise _Bad("'relevant_clip_ids' must hold non-negative integers")
    if len(set(ids)) != len(ids):
        raise _Bad("'relevant_clip_ids' lists a clip twice")
    rows = []
    for row in sal:
        if not isinstance(row, list) or not row or (rows and len(row) != len(rows[0])):
            raise _Bad("'saliency_scores' must hold one non-empty list of annotator scores per clip, all of "
                       "one length")
        rows.append(tuple(_num(v, "saliency score") for v in row))
    return tuple(ids), tuple(rows)


# ----------------------------------------------------------------------------------------------- retrieval
def read_msrvtt_data(path: str | Path, known_ids: Collection[str] | None = None,
                     strict: bool = False) -> LoadResult[MsrvttVideo]:
    """``MSRVTT_data.json``: ``{"videos": [{video_id, split, category, url, "start time", "end time", id}],
    "sentences": [{caption, video_id, sen_id}]}`` → one MsrvttVideo (with all its captions) per video."""
    p = _check_file(path)
    col = _Collector(p, strict)
    data = _load_json(p)
    if not isinstance(data, dict) or not isinstance(data.get("videos"), list) \
            or not isinstance(data.get("sentences"), list):
        raise FormatError(f"{p}: expected an object with 'videos' and 'sentences' lists")
    videos: dict[str, dict[str, Any]] = {}
    for i, v in enumerate(data["videos"]):
        try:
            v = _mapping(v, "video")
            vid = _text(v.get("video_id"), "video_id")
            _known(vid, known_ids)
            if vid in videos:
                raise _Bad(f"duplicate video_id {vid!r}")
            cat = v.get("category")
            if cat is not None:
                cat_f = _num(cat, "category")
                if cat_f != int(cat_f):
                    raise _Bad(f"category is not an integer ({cat!r})")
                cat = int(cat_f)
            s, e = v.get("start time"), v.get("end time")
            videos[vid] = {"split": str(v.get("split", "")), "category": cat,
                           "start": _num(s, "start time") if s is not None else None,
                           "end": _num(e, "end time") if e is not None else None,
                           "url": str(v.get("url", "")), "captions": []}
        except _Bad as exc:
            col.bad(f"videos[{i}]", str(exc))
    for i, s in enumerate(data["sentences"]):
        try:
            s = _mapping(s, "sentence")
            vid = s.get("video_id")
            if vid not in videos:
                raise _Bad(f"unknown video id {vid!r}")
            videos[vid]["captions"].append(_text(s.get("caption"), "caption"))
        except _Bad as exc:
            col.bad(f"sentences[{i}]", str(exc))
    out = [MsrvttVideo(vid, v["split"], v["category"], v["start"], v["end"], v["url"], tuple(v["captions"]))
           for vid, v in videos.items()]
    return col.result(out)


def read_msrvtt_split_csv(path: str | Path, known_ids: Collection[str] | None = None,
                          strict: bool = False) -> LoadResult[str]:
    """``MSRVTT_train.9k.csv`` / ``MSRVTT_train.7k.csv``: a ``video_id`` column → the video ids."""
    col, header, idx, rows = _open_csv(path, strict, ("video_id",))
    k = idx["video_id"]
    out: list[str] = []
    for line, row in rows:
        try:
            row = _fields(row, len(header), ",".join(header))
            vid = _text(row[k], "video_id")
            _known(vid, known_ids)
        except _Bad as exc:
            col.bad(f"line {line}", str(exc))
            continue
        out.append(vid)
    return col.result(out)


JSFUSION_HEADER = ("key", "vid_key", "video_id", "sentence")


def read_msrvtt_jsfusion_csv(path: str | Path, known_ids: Collection[str] | None = None,
                             strict: bool = False) -> LoadResult[RetrievalQuery]:
    """JSFusion 1k-A test csv ``key,vid_key,video_id,sentence`` (one query per test video)."""
    col, header, idx, rows = _open_csv(path, strict, JSFUSION_HEADER)
    out: list[RetrievalQuery] = []
    for line, row in rows:
        try:
            row = _fields(row, len(header), ",".join(header))
            vid = _text(row[idx["video_id"]], "video_id")
            _known(vid, known_ids)
            out.append(RetrievalQuery(row[idx["key"]].strip(), vid, _text(row[idx["sentence"]])))
        except _Bad as exc:
            col.bad(f"line {line}", str(exc))
    return col.result(out)


# ----------------------------------------------------------------------------------------------- CrossTask
def read_crosstask_tasks(path: str | Path, strict: bool = False) -> LoadResult[CrossTaskTask]:
    """``tasks_primary.txt`` / ``tasks_related.txt``: blocks of task id, name, url, n_steps, comma-separated
    steps, blank line. A block whose step count disagrees with n_steps is bad."""
    p = _check_file(path)
    col = _Collector(p, strict)
    lines = _read_text(p).splitlines()
    out: list[CrossTaskTask] = []
    seen: set[str] = set()
    i = 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        start = i
        block = []
        while i < len(lines) and lines[i].strip():
            block.append(lines[i].strip())
            i += 1
        try:
            if len(block) != 5:
                raise _Bad(f"malformed task block: {len(block)} lines, expected 5 "
                           f"(id, name, url, n_steps, steps)")
            task_id = _text(block[0], "task id")
            name = _text(block[1], "task name")
            try:
                n = int(block[3])
            except ValueError:
                raise _Bad(f"n_steps is not an integer ({block[3]!r})") from None
            steps = tuple(_text(s, "step") for s in block[4].split(","))
            if len(steps) != n:
                raise _Bad(f"n_steps={n} but {len(steps)} steps listed")
            if task_id in seen:
                raise _Bad(f"duplicate task id {task_id!r}")
        except _Bad as exc:
            col.bad(f"line {start + 1}", str(exc))
            continue
        seen.add(task_id)
        out.append(CrossTaskTask(task_id, name, block[2], steps))
    return col.result(out)


def read_crosstask_videos(path: str | Path, tasks: Collection[str] | None = None,
                          strict: bool = False) -> LoadResult[CrossTaskVideo]:
    """``videos.csv`` / ``videos_val.csv``: ``task,vid,url`` rows without a header."""
    p = _check_file(path)
    col = _Collector(p, strict)
    out: list[CrossTaskVideo] = []
    for line, row in _csv_rows(p):
        try:
            row = _fields(row, 3, "task,vid,url")
            task, vid = _text(row[0], "task id"), _text(row[1], "video id")
            if tasks is not None and task not in tasks:
                raise _Bad(f"unknown task id {task!r}")
        except _Bad as exc:
            col.bad(f"line {line}", str(exc))
            continue
        out.append(CrossTaskVideo(task, vid, row[2].strip()))
    return col.result(out)


def read_crosstask_annotation(path: str | Path, task_id: str, video_id: str, n_steps: int | None = None,
                              duration: float | None = None, strict: bool = False,
                              duration_tolerance: float = DEFAULT_DURATION_TOLERANCE,
                              ) -> LoadResult[StepSegment]:
    """One ``annotations/<task>_<vid>.csv``: ``step,start,end`` rows, 1-based steps, seconds, no header."""
    p = _check_file(path)
    col = _Collector(p, strict)
    out: list[StepSegment] = []
    for line, row in _csv_rows(p):
        try:
            row = _fields(row, 3, "step,start,end")
            try:
                step = int(row[0])
            except ValueError:
                raise _Bad(f"step is not an integer ({row[0]!r})") from None
            if step < 1 or (n_steps is not None and step > n_steps):
                raise _Bad(f"step {step} outside 1..{n_steps if n_steps is not None else 'n_steps'} (1-based)")
            s, e = _span(row[1], row[2], duration, duration_tolerance)
        except _Bad as exc:
            col.bad(f"line {line}", str(exc))
            continue
        out.append(StepSegment(step, s, e))
    return col.result(out)


def read_crosstask_annotations(annotation_dir: str | Path,
                               videos: Iterable[CrossTaskVideo] | None = None,
                               tasks: Mapping[str, CrossTaskTask] | None = None,
                               durations: Mapping[str, float] | None = None, strict: bool = False,
                               duration_tolerance: float = DEFAULT_DURATION_TOLERANCE,
                               ) -> LoadResult[CrossTaskAnnotation]:
    """Every ``<task>_<vid>.csv`` of `annotation_dir` (or only those of `videos`).

    Task ids are numeric in CrossTask while YouTube ids may contain ``_``, so a file name is split at its
    first underscore. A video listed in `videos` without an annotation file is a bad record.
    """
    d = Path(annotation_dir)
    if not d.is_dir():
        raise MissingFileError(2, f"annotation directory not found: {d}", str(d))
    col = _Collector(d, strict)
    if videos is None:
        pairs = []
        for f in sorted(d.glob("*.csv")):
            if "_" not in f.stem:
                col.bad(f"file {f.name!r}", "file name is not <task>_<vid>.csv")
                continue
            task, vid = f.stem.split("_", 1)
            pairs.append((task, vid))
    else:
        pairs = [(v.task_id, v.video_id) for v in videos]
    out: list[CrossTaskAnnotation] = []
    for task, vid in pairs:
        f = d / f"{task}_{vid}.csv"
        if tasks is not None and task not in tasks:
            col.bad(f"file {f.name!r}", f"unknown task id {task!r}")
            continue
        if not f.is_file():
            col.bad(f"file {f.name!r}", "annotation file not found")
            continue
        res = read_crosstask_annotation(f, task, vid, tasks[task].n_steps if tasks is not None else None,
                                        durations.get(vid) if durations is not None else None, strict,
                                        duration_tolerance)
        col.skipped.extend(res.skipped)
        out.append(CrossTaskAnnotation(task, vid, tuple(res.records)))
    return col.result(out)


# ---------------------------------------------------------------------------------------------------- COIN
def read_coin(path: str | Path, known_ids: Collection[str] | None = None, subset: str | None = None,
              strict: bool = False,
              duration_tolerance: float = DEFAULT_DURATION_TOLERANCE) -> LoadResult[CoinVideo]:
    """``COIN.json``: ``{"database": {vid: {...}}}``; `subset` ("training"/"testing") filters videos.

    A bad segment is skipped on its own (the rest of the video stays usable: its span becomes background).
    """
    p = _check_file(path)
    col = _Collector(p, strict)
    data = _load_json(p)
    if not isinstance(data, dict) or not isinstance(data.get("database"), dict):
        raise FormatError(f"{p}: expected an object with a 'database' object")
    out: list[CoinVideo] = []
    for vid, entry in data["database"].items():
        try:
            entry = _mapping(entry, "entry")
            if subset is not None and entry.get("subset") != subset:
                continue
            _known(vid, known_ids)
            if "subset" not in entry:
                raise _Bad("missing 'subset'")
            dur = _duration(entry["duration"]) if entry.get("duration") is not None else None
            ann = entry.get("annotation")
            if not isinstance(ann, list):
                raise _Bad("'annotation' must be a list")
            rt = entry.get("recipe_type")
            recipe = int(rt) if rt is not None else None
        except (_Bad, TypeError, ValueError) as exc:
            col.bad(f"key {vid!r}", str(exc))
            continue
        segs = []
        for i, a in enumerate(ann):
            try:
                a = _mapping(a, "annotation")
                seg = a.get("segment")
                if not isinstance(seg, (list, tuple)) or len(seg) != 2:
                    raise _Bad(f"segment is not a [start, end] pair ({seg!r})")
                s, e = _span(seg[0], seg[1], dur, duration_tolerance)
                label = _text(a.get("label"), "label")
                if a.get("id") is None:
                    raise _Bad("missing step 'id'")
            except _Bad as exc:
                col.bad(f"key {vid!r} annotation {i}", str(exc))
                continue
            segs.append(CoinSegment(str(a["id"]), s, e, label))
        out.append(CoinVideo(vid, str(entry["subset"]), recipe, str(entry.get("class", "")), dur,
                             str(entry.get("video_url", entry.get("url", ""))), tuple(segs)))
    return col.result(out)


# ------------------------------------------------------------------------------------------ EPIC-KITCHENS
_HMS = re.compile(r"^(?:(\d+):)?(\d{1,2}):(\d{1,2})(?:\.(\d+))?$")
_SECONDS = re.compile(r"^(?:\d+(?:\.\d*)?|\.\d+)$")


def parse_timestamp(value: str) -> float:
    """Seconds of an EPIC-KITCHENS timestamp: ``HH:MM:SS.ff`` or ``MM:SS.ff`` (the fraction may have any number
    of digits, or be absent; minutes and seconds must be < 60), or a plain non-negative number of seconds."""
    if not isinstance(value, str):
        raise ValueError(f"timestamp is not a string ({type(value).__name__})")
    v = value.strip()
    m = _HMS.match(v)
    if m:
        h, mi, sec, frac = m.groups()
        if int(mi) >= 60:
            raise ValueError(f"timestamp {value!r}: minutes field {mi} is not < 60")
        if int(sec) >= 60:
            raise ValueError(f"timestamp {value!r}: seconds field {sec} is not < 60")
        whole = int(h or 0) * 3600 + int(mi) * 60 + int(sec)
        # one decimal conversion, so "00:01:00.14" is exactly the float 60.14
        return float(f"{whole}.{frac}") if frac else float(whole)
    if _SECONDS.match(v):
        return float(v)
    raise ValueError(f"timestamp {value!r} is not HH:MM:SS.ff, MM:SS.ff or a non-negative number of seconds")


EPIC_HEADER = ("narration_id", "participant_id", "video_id", "narration_timestamp", "start_timestamp",
               "stop_timestamp", "start_frame", "stop_frame", "narration", "verb", "verb_class", "noun",
               "noun_class", "all_nouns", "all_noun_classes")
EPIC_REQUIRED = ("narration_id", "video_id", "start_timestamp", "stop_timestamp", "narration", "verb",
                 "verb_class", "noun", "noun_class")
_CLASS = re.compile(r"^[0-9]+$")


def _timestamp(value: str, column: str) -> float:
    try:
        return parse_timestamp(value)
    except ValueError as exc:
        raise _Bad(f"unparsable {column}: {exc}") from None


def _class_id(value: str, column: str) -> int:
    v = value.strip()
    if not _CLASS.match(v):
        raise _Bad(f"{column} is not a non-negative integer ({value!r})")
    return int(v)


def read_epic_kitchens(path: str | Path, known_ids: Collection[str] | None = None,
                       durations: Mapping[str, float] | None = None, strict: bool = False,
                       duration_tolerance: float = DEFAULT_DURATION_TOLERANCE) -> LoadResult[EpicSegment]:
    """EPIC-KITCHENS-100 ``EPIC_100_train.csv`` / ``EPIC_100_validation.csv``: one EpicSegment per row.

    Columns are found by header name; only those of ``EPIC_REQUIRED`` must be present (frames, participant,
    ``all_nouns``... are ignored). The span is ``start_timestamp``–``stop_timestamp`` in seconds, checked
    against ``durations[video_id]`` when known. A repeated ``narration_id`` is a bad record.
    """
    col, header, idx, rows = _open_csv(path, strict, EPIC_REQUIRED)
    out: list[EpicSegment] = []
    seen: set[str] = set()
    for line, row in rows:
        try:
            row = _fields(row, len(header), ",".join(header))
            nid = _text(row[idx["narration_id"]], "narration_id")
            vid = _text(row[idx["video_id"]], "video_id")
            _known(vid, known_ids)
            s = _timestamp(row[idx["start_timestamp"]], "start_timestamp")
            e = _timestamp(row[idx["stop_timestamp"]], "stop_timestamp")
            dur = durations.get(vid) if durations is not None else None
            s, e = _span(s, e, dur, duration_tolerance)
            narration = _text(row[idx["narration"]], "narration")
            verb = _text(row[idx["verb"]], "verb")
            verb_class = _class_id(row[idx["verb_class"]], "verb_class")
            noun = _text(row[idx["noun"]], "noun")
            noun_class = _class_id(row[idx["noun_class"]], "noun_class")
            if nid in seen:
                raise _Bad(f"duplicate narration_id {nid!r}")
        except _Bad as exc:
            col.bad(f"line {line}", str(exc))
            continue
        seen.add(nid)
        out.append(EpicSegment(nid, vid, s, e, narration, verb, verb_class, noun, noun_class))
    return col.result(out)


# ------------------------------------------------------------------------------------------ whole worlds
def load_world_annotations(root: str | Path, strict: bool = False) -> dict[str, LoadResult]:
    """Read every annotation file of a synthetic world (or a directory laid out the same way).

    Video ids are checked against ``manifest.json`` (when present) and durations against it too, so this is
    also the world's self-check: a freshly generated world loads with zero skipped records.
    """
    root = Path(root)
    known: set[str] | None = None
    durations: dict[str, float] | None = None
    if (root / "manifest.json").is_file():
        m = _load_json(root / "manifest.json")
        known = {v for vids in m.get("splits", {}).values() for v in vids}
    if (root / "ground_truth.json").is_file():
        gt = _load_json(root / "ground_truth.json")
        durations = {k: float(v["duration"]) for k, v in gt.items()}
    r: dict[str, LoadResult] = {}
    r["howto100m"] = read_howto100m_captions(root / "pretrain/caption.json", known, durations, strict)
    r["webvid"] = read_webvid_csv(root / "pretrain/webvid.csv", known, strict)
    r["activitynet_train"] = read_activitynet_captions(root / "grounding/activitynet/train.json", known, strict)
    r["activitynet_val"] = read_activitynet_captions(root / "grounding/activitynet/val_1.json", known, strict)
    for split in ("train", "test"):
        cd = root / f"grounding/charades/Charades_v1_{split}.csv"
        r[f"charades_{split}"] = read_charades_sta(root / f"grounding/charades/charades_sta_{split}.txt",
                                                   cd if cd.is_file() else None, known, strict)
    r["qvhighlights_train"] = read_qvhighlights(root / "grounding/qvhighlights/highlight_train_release.jsonl",
                                                known, strict)
    r["qvhighlights_val"] = read_qvhighlights(root / "grounding/qvhighlights/highlight_val_release.jsonl",
                                              known, strict)
    r["msrvtt_data"] = read_msrvtt_data(root / "retrieval/MSRVTT_data.json", known, strict)
    r["msrvtt_train"] = read_msrvtt_split_csv(root / "retrieval/MSRVTT_train.9k.csv", known, strict)
    r["msrvtt_test"] = read_msrvtt_jsfusion_csv(root / "retrieval/MSRVTT_JSFUSION_test.csv", known, strict)
    tasks = read_crosstask_tasks(root / "crosstask/tasks_primary.txt", strict)
    r["crosstask_tasks"] = tasks
    task_map = {t.task_id: t for t in tasks}
    for name, f in (("crosstask_train", "videos.csv"), ("crosstask_val", "videos_val.csv")):
        vids = read_crosstask_videos(root / "crosstask" / f, task_map, strict)
        if known is not None:
            bad = [v for v in vids.records if v.video_id not in known]
            for v in bad:
                rec = BadRecord(str(root / "crosstask" / f), f"video {v.video_id!r}", f"unknown video id {v.video_id!r}")
                if strict:
                    raise FormatError(str(rec))
                vids.skipped.append(rec)
            vids.records = [v for v in vids.records if v.video_id in known]
        r[f"{name}_videos"] = vids
        r[f"{name}_annotations"] = read_crosstask_annotations(root / "crosstask/annotations", vids.records,
                                                              task_map, durations, strict)
    r["coin"] = read_coin(root / "coin/COIN.json", known, strict=strict)
    for name, f in (("epic_train", "EPIC_100_train.csv"), ("epic_val", "EPIC_100_validation.csv")):
        if (root / "epic" / f).is_file():  # worlds generated before EPIC-KITCHENS was added have none
            r[name] = read_epic_kitchens(root / "epic" / f, known, durations, strict)
    return r

