"""EPIC-KITCHENS-100 action annotations (``EPIC_100_train.csv`` / ``EPIC_100_validation.csv``): timestamps,
a hand-written sample (exact values), and every bad-record kind (lenient: skipped with file and line; strict:
FormatError naming both)."""
from __future__ import annotations

from pathlib import Path

import pytest

from locvtp.data import formats as F

HEAD = ("narration_id,participant_id,video_id,narration_timestamp,start_timestamp,stop_timestamp,start_frame,"
        "stop_frame,narration,verb,verb_class,noun,noun_class,all_nouns,all_noun_classes\n")
ROW1 = "P01_01_0,P01,P01_01,00:00:01.089,00:00:00.14,00:00:03.37,8,202,open door,open,3,door,3,['door'],[3]\n"
ROW2 = ("P01_01_1,P01,P01_01,00:00:02.629,00:00:04.37,00:00:06.17,262,370,turn on light,turn-on,6,light,114,"
        "['light'],[114]\n")
# all_nouns / all_noun_classes hold commas, so csv quotes them
ROW3 = ('P02_03_12,P02,P02_03,00:01:05.2,00:01:00.5,00:01:02.25,3030,3112,put pan and lid on hob,put,1,pan,10,'
        '"[\'pan\', \'lid\', \'hob\']","[10, 40, 12]"\n')


def _write(tmp_path: Path, content: str | bytes, name: str = "EPIC_100_train.csv") -> Path:
    p = tmp_path / name
    if isinstance(content, bytes):
        p.write_bytes(content)
    else:
        p.write_text(content, encoding="utf-8")
    return p


# ------------------------------------------------------------------------------------------------ timestamps
@pytest.mark.parametrize("text,seconds", [
    ("00:00:01.089", 1.089), ("00:00:00.14", 0.14), ("00:00:03.37", 3.37), ("00:01:00.14", 60.14),
    ("01:02:03.5", 3723.5), ("00:00:07", 7.0), ("00:00:02.123456", 2.123456), ("12:00:00.0", 43200.0),
    ("125:00:00.25", 450000.25),  # hours are not bounded
    ("02:03.25", 123.25), ("59:59", 3599.0), ("0:05.1", 5.1),  # MM:SS forms
    ("7", 7.0), ("12.25", 12.25), ("0", 0.0), (".5", 0.5), (" 00:00:04.5 ", 4.5),
])
def test_parse_timestamp(text, seconds):
    got = F.parse_timestamp(text)
    assert got == seconds and isinstance(got, float)


@pytest.mark.parametrize("text,match", [
    ("00:60:00.00", "minutes field 60 is not < 60"), ("00:00:60.5", "seconds field 60 is not < 60"),
    ("61:00", "minutes field 61 is not < 60"), ("", "is not HH:MM:SS"), ("abc", "is not HH:MM:SS"),
    ("-00:00:01.0", "is not HH:MM:SS"), ("-3.5", "is not HH:MM:SS"), ("nan", "is not HH:MM:SS"),
    ("inf", "is not HH:MM:SS"), ("00:00:01.", "is not HH:MM:SS"), ("00:00:1,5", "is not HH:MM:SS"),
    ("1:2:3:4", "is not HH:MM:SS"), ("00:000:01", "is not HH:MM:SS"), ("1e3", "is not HH:MM:SS"),
])
def test_parse_timestamp_rejects(text, match):
    with pytest.raises(ValueError, match=match):
        F.parse_timestamp(text)


# ---------------------------------------------------------------------------------------------- good files
def test_epic_sample_exact_values(tmp_path):
    p = _write(tmp_path, HEAD + ROW1 + ROW2 + ROW3)
    res = F.read_epic_kitchens(p, strict=True)
    assert res.skipped == [] and res.summary() == "loaded 3 records, skipped 0"
    assert res.records == [
        F.EpicSegment("P01_01_0", "P01_01", 0.14, 3.37, "open door", "open", 3, "door", 3),
        F.EpicSegment("P01_01_1", "P01_01", 4.37, 6.17, "turn on light", "turn-on", 6, "light", 114),
        F.EpicSegment("P02_03_12", "P02_03", 60.5, 62.25, "put pan and lid on hob", "put", 1, "pan", 10),
    ]
    assert all(isinstance(r.verb_class, int) and isinstance(r.noun_class, int) for r in res)
    # the same file passes the known-ids check when every video is known
    ok = F.read_epic_kitchens(p, known_ids={"P01_01", "P02_03"}, strict=True)
    assert [r.narration_id for r in ok] == ["P01_01_0", "P01_01_1", "P02_03_12"]


def test_epic_columns_found_by_name(tmp_path):
    """Columns in another order, optional ones absent, an extra one present: read the same."""
    head = "noun_class,noun,stop_timestamp,narration,extra,verb_class,start_timestamp,verb,video_id,narration_id\n"
    rows = ("3,door,00:00:03.37,open door,x,3,00:00:00.14,open,P01_01,P01_01_0\n"
            "10,pan,00:01:02.25,put pan on hob,,1,00:01:00.5,put,P02_03,P02_03_12\n")
    res = F.read_epic_kitchens(_write(tmp_path, head + rows), strict=True)
    assert res.records == [
        F.EpicSegment("P01_01_0", "P01_01", 0.14, 3.37, "open door", "open", 3, "door", 3),
        F.EpicSegment("P02_03_12", "P02_03", 60.5, 62.25, "put pan on hob", "put", 1, "pan", 10),
    ]


def test_epic_bom_crlf_and_blank_lines(tmp_path):
    raw = ("\ufeff" + HEAD + ROW1 + "\n" + ROW2).replace("\n", "\r\n").encode()
    res = F.read_epic_kitchens(_write(tmp_path, raw), strict=True)
    assert [(r.narration_id, r.start, r.end) for r in res] == [("P01_01_0", 0.14, 3.37), ("P01_01_1", 4.37, 6.17)]


def test_epic_durations_clip_and_reject(tmp_path):
    p = _write(tmp_path, HEAD + ROW1 + ROW2)
    # P01_01 lasts 6.0 s: ROW2 ends at 6.17, within the 0.5 s tolerance -> clipped to 6.0
    res = F.read_epic_kitchens(p, durations={"P01_01": 6.0}, strict=True)
    assert [(r.start, r.end) for r in res] == [(0.14, 3.37), (4.37, 6.0)]
    # a tighter tolerance makes the overshoot a bad record
    tight = F.read_epic_kitchens(p, durations={"P01_01": 6.0}, duration_tolerance=0.1)
    assert [r.narration_id for r in tight] == ["P01_01_0"]
    assert len(tight.skipped) == 1 and tight.skipped[0].location == "line 3"
    assert tight.skipped[0].reason == "outside the duration: end=6.17 > duration=6.0"
    # a video whose duration is unknown is not checked
    other = F.read_epic_kitchens(p, durations={"P99_99": 1.0}, strict=True)
    assert [r.end for r in other] == [3.37, 6.17]


# ------------------------------------------------------------------------------------------------ bad rows
def _check(path: Path, n_good: int, reason: str, location: str, **kw):
    """Lenient: the bad record is skipped with its reason, file and line; strict: FormatError naming all three."""
    res = F.read_epic_kitchens(path, **kw)
    assert len(res) == n_good, res.summary()
    assert len(res.skipped) == 1, res.skipped
    bad = res.skipped[0]
    assert reason in bad.reason, bad.reason
    assert bad.location == location and bad.file == str(path)
    assert "skipped 1" in res.summary()
    with pytest.raises(F.FormatError) as ei:
        F.read_epic_kitchens(path, strict=True, **kw)
    msg = str(ei.value)
    assert msg.startswith(f"{path}: {location}: ") and reason in msg


def _row(**over: str) -> str:
    """A valid row (narration_id P01_01_9) with some fields replaced."""
    f = {"narration_id": "P01_01_9", "participant_id": "P01", "video_id": "P01_01",
         "narration_timestamp": "00:00:10.0", "start_timestamp": "00:00:09.5", "stop_timestamp": "00:00:12.25",
         "start_frame": "570", "stop_frame": "735", "narration": "wash cup", "verb": "wash", "verb_class": "2",
         "noun": "cup", "noun_class": "13", "all_nouns": "['cup']", "all_noun_classes": "[13]"}
    f.update(over)
    return ",".join(f.values()) + "\n"


def test_row_helper_is_valid(tmp_path):
    res = F.read_epic_kitchens(_write(tmp_path, HEAD + ROW1 + _row()), strict=True)
    assert res.records[1] == F.EpicSegment("P01_01_9", "P01_01", 9.5, 12.25, "wash cup", "wash", 2, "cup", 13)


@pytest.mark.parametrize("row,reason", [
    # malformed rows / wrong field count
    ("P01_01_9,P01,P01_01,00:00:10.0,00:00:09.5,00:00:12.25,570,735,wash cup,wash,2,cup,13,['cup']\n",
     "malformed row: 14 fields, expected 15"),
    (_row().rstrip("\n") + ",extra\n", "malformed row: 16 fields, expected 15"),
    # the unquoted list splits into extra fields, exactly what happens when a writer forgets to quote
    (_row(all_nouns="['cup', 'tap']"), "malformed row: 16 fields, expected 15"),
    (_row(narration='"wash cup'), "malformed row"),
    # timestamps
    (_row(start_timestamp="00:00:xx"), "unparsable start_timestamp: timestamp '00:00:xx'"),
    (_row(stop_timestamp="12.25s"), "unparsable stop_timestamp: timestamp '12.25s'"),
    (_row(stop_timestamp="00:00:75.0"), "unparsable stop_timestamp: timestamp '00:00:75.0': seconds field 75"),
    (_row(start_timestamp=""), "unparsable start_timestamp"),
    (_row(start_timestamp="-00:00:01.00"), "unparsable start_timestamp"),
    (_row(start_timestamp="-1.5"), "unparsable start_timestamp"),
    # spans
    (_row(start_timestamp="00:00:12.25"), "start >= end: start=12.25, end=12.25"),
    (_row(start_timestamp="00:00:13.00"), "start >= end: start=13.0, end=12.25"),
    # classes
    (_row(verb_class="open"), "verb_class is not a non-negative integer ('open')"),
    (_row(verb_class="-1"), "verb_class is not a non-negative integer ('-1')"),
    (_row(verb_class="2.5"), "verb_class is not a non-negative integer ('2.5')"),
    (_row(verb_class=""), "verb_class is not a non-negative integer ('')"),
    (_row(noun_class="x13"), "noun_class is not a non-negative integer ('x13')"),
    (_row(noun_class="-4"), "noun_class is not a non-negative integer ('-4')"),
    # empty texts and ids
    (_row(narration="  "), "empty narration"),
    (_row(verb=""), "empty verb"),
    (_row(noun=""), "empty noun"),
    (_row(narration_id=""), "empty narration_id"),
    (_row(video_id=""), "empty video_id"),
    # duplicate narration id (ROW1's)
    (_row(narration_id="P01_01_0"), "duplicate narration_id 'P01_01_0'"),
])
def test_epic_bad_rows(tmp_path, row, reason):
    _check(_write(tmp_path, HEAD + ROW1 + row), 1, reason, "line 3")


def test_epic_bad_row_in_the_middle_names_its_line(tmp_path):
    p = _write(tmp_path, HEAD + ROW1 + _row(verb_class="x") + ROW2 + ROW3)
    _check(p, 3, "verb_class is not a non-negative integer", "line 3")
    assert [r.narration_id for r in F.read_epic_kitchens(p)] == ["P01_01_0", "P01_01_1", "P02_03_12"]


def test_epic_quoted_newline_counts_lines(tmp_path):
    """A quoted field spanning two physical lines: the next bad row is named by its own (physical) line."""
    p = _write(tmp_path, HEAD + ROW1.replace("open door", '"open\ndoor"') + _row(noun=""))
    _check(p, 1, "empty noun", "line 4")
    assert F.read_epic_kitchens(p).records[0].narration == "open\ndoor"


def test_epic_unknown_video_id(tmp_path):
    p = _write(tmp_path, HEAD + ROW1 + ROW3)
    _check(p, 1, "unknown video id 'P02_03'", "line 3", known_ids={"P01_01"})


def test_epic_outside_duration(tmp_path):
    p = _write(tmp_path, HEAD + ROW1 + ROW2)
    # ROW2 starts at 4.37, after the end of a 4-second video
    _check(p, 1, "outside the duration: start=4.37 >= duration=4.0", "line 3", durations={"P01_01": 4.0})
    # ends more than the tolerance beyond the duration
    _check(p, 1, "outside the duration: end=6.17 > duration=5.5", "line 3", durations={"P01_01": 5.5})


def test_epic_non_utf8_narration(tmp_path):
    p = _write(tmp_path, (HEAD + ROW1).encode() + _row(narration="caf\udce9").encode("utf-8", "surrogateescape"))
    _check(p, 1, "narration is not valid UTF-8", "line 3")


def test_epic_duplicate_of_a_skipped_row_is_kept(tmp_path):
    """Only accepted rows claim their narration_id: a later valid row with the id of a bad one is read."""
    p = _write(tmp_path, HEAD + _row(verb="") + _row())
    res = F.read_epic_kitchens(p)
    assert [r.narration_id for r in res] == ["P01_01_9"]
    assert [(b.location, b.reason) for b in res.skipped] == [("line 2", "empty verb")]


def test_epic_several_bad_rows_all_reported(tmp_path):
    p = _write(tmp_path, HEAD + ROW1 + _row(noun_class="n") + _row(start_timestamp="?") + ROW2
               + _row(narration_id="P01_01_1"))
    res = F.read_epic_kitchens(p)
    assert [r.narration_id for r in res] == ["P01_01_0", "P01_01_1"]
    assert [b.location for b in res.skipped] == ["line 3", "line 4", "line 6"]
    assert res.reasons() == {"noun_class is not a non-negative integer ('n')": 1,
                             "unparsable start_timestamp": 1, "duplicate narration_id 'P01_01_1'": 1}
    with pytest.raises(F.FormatError, match=r"EPIC_100_train\.csv: line 3: noun_class"):
        F.read_epic_kitchens(p, strict=True)


# ------------------------------------------------------------------------------------------ file structure
@pytest.mark.parametrize("missing", F.EPIC_REQUIRED)
def test_epic_missing_required_column(tmp_path, missing):
    cols = HEAD.strip().split(",")
    keep = [i for i, c in enumerate(cols) if c != missing]
    head = ",".join(cols[i] for i in keep) + "\n"
    row = ",".join(ROW1.strip().split(",")[i] for i in keep) + "\n"
    p = _write(tmp_path, head + row)
    for strict in (False, True):
        with pytest.raises(F.FormatError, match=rf"EPIC_100_train\.csv: line 1: header lacks column\(s\) "
                                                rf"\['{missing}'\]"):
            F.read_epic_kitchens(p, strict=strict)


def test_epic_optional_columns_may_be_absent(tmp_path):
    head = ",".join(F.EPIC_REQUIRED) + "\n"
    p = _write(tmp_path, head + "P01_01_0,P01_01,00:00:00.14,00:00:03.37,open door,open,3,door,3\n")
    assert F.read_epic_kitchens(p, strict=True).records == [
        F.EpicSegment("P01_01_0", "P01_01", 0.14, 3.37, "open door", "open", 3, "door", 3)]


def test_epic_empty_and_headerless_files(tmp_path):
    with pytest.raises(F.FormatError, match="empty file"):
        F.read_epic_kitchens(_write(tmp_path, ""))
    with pytest.raises(F.FormatError, match="line 1: header lacks"):
        F.read_epic_kitchens(_write(tmp_path, ROW1 + ROW2, "EPIC_100_validation.csv"))


def test_epic_missing_file(tmp_path):
    missing = tmp_path / "nowhere" / "EPIC_100_validation.csv"
    with pytest.raises(F.MissingFileError, match="annotation file not found") as ei:
        F.read_epic_kitchens(missing)
    assert str(missing) in str(ei.value) and isinstance(ei.value, FileNotFoundError)
    with pytest.raises(F.FormatError, match="not a regular file"):
        F.read_epic_kitchens(tmp_path)


# ---------------------------------------------------------------------------------------------- the world
def test_world_without_epic_files_has_no_epic_results(tiny_world):
    """Worlds generated before EPIC-KITCHENS was added have no epic/ files: no epic results, no error."""
    results = F.load_world_annotations(tiny_world, strict=True)
    assert ("epic_train" in results) == (tiny_world / "epic/EPIC_100_train.csv").is_file()
    assert ("epic_val" in results) == (tiny_world / "epic/EPIC_100_validation.csv").is_file()


def test_world_reads_epic_files_when_present(tiny_world, tmp_path):
    """The world loader reads epic/EPIC_100_*.csv with the manifest's ids and ground-truth durations."""
    import json
    import shutil

    world = tmp_path / "world"
    shutil.copytree(tiny_world, world, ignore=shutil.ignore_patterns("*.mp4"))
    gt = json.loads((world / "ground_truth.json").read_text())
    vid, info = next(iter(gt.items()))
    dur = float(info["duration"])
    (world / "epic").mkdir(exist_ok=True)
    over = f"{dur + 0.25:.2f}"  # overshoots by 0.25 s: clipped
    (world / "epic/EPIC_100_train.csv").write_text(
        HEAD + f"{vid}_0,P01,{vid},00:00:00.5,00:00:00.00,{over},0,10,open door,open,3,door,3,['door'],[3]\n"
        + f"{vid}_1,P01,{vid},00:00:00.5,00:00:00.00,00:00:01.00,0,10,close door,close,4,door,3,['door'],[3]\n"
        + "x_0,P01,not_a_video,00:00:00.5,00:00:00.00,00:00:01.00,0,10,close door,close,4,door,3,['door'],[3]\n")
    (world / "epic/EPIC_100_validation.csv").write_text(
        HEAD + f"{vid}_2,P01,{vid},00:00:00.5,00:00:00.50,00:00:01.50,0,10,take cup,take,0,cup,13,['cup'],[13]\n")
    res = F.load_world_annotations(world)
    train, val = res["epic_train"], res["epic_val"]
    assert [(r.narration_id, r.start, r.end) for r in train] == [(f"{vid}_0", 0.0, dur), (f"{vid}_1", 0.0, 1.0)]
    assert [(b.location, b.reason) for b in train.skipped] == [("line 4", "unknown video id 'not_a_video'")]
    assert val.records == [F.EpicSegment(f"{vid}_2", vid, 0.5, 1.5, "take cup", "take", 0, "cup", 13)]
    with pytest.raises(F.FormatError, match=r"EPIC_100_train\.csv: line 4: unknown video id"):
        F.load_world_annotations(world, strict=True)
