"""Readers of the published annotation formats: hand-written samples (exact values), the synthetic world
(zero skipped), and every bad-input case of issue 4 that concerns annotation files (lenient + strict)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from locvtp.data import formats as F

SAMPLES = Path(__file__).parent / "data" / "formats"


# ------------------------------------------------------------------------------------ hand-written samples
def test_howto100m_sample():
    res = F.read_howto100m_captions(SAMPLES / "howto100m_caption.json", strict=True)
    assert res.skipped == []
    assert len(res) == 6
    first = res.records[0]
    assert first == F.Narration("-0Aj5LHKvHs", 0.0, 4.2, "hey guys welcome back")
    # integer seconds are accepted and become floats
    last = res.records[-1]
    assert (last.video_id, last.start, last.end, last.text) == ("zZ_3kq9w-Ho", 10.0, 16.0, "now add two eggs")
    assert isinstance(last.start, float)


def test_webvid_sample():
    res = F.read_webvid_csv(SAMPLES / "webvid.csv", strict=True)
    assert [r.video_id for r in res] == ["21179416", "5629184"]
    assert res.records[0].duration == 11.0
    assert res.records[1].duration == 65.0  # PT00H01M05S
    assert res.records[0].caption == "Aerial view of a river delta, slow motion"  # quoted comma survives
    assert res.records[0].page_dir == "006001_006050"


@pytest.mark.parametrize("text,seconds", [("PT00H00M11S", 11.0), ("PT01H02M03S", 3723.0), ("PT4.5S", 4.5),
                                          ("P1DT1S", 86401.0), ("12.25", 12.25)])
def test_iso_duration(text, seconds):
    assert F.parse_iso_duration(text) == seconds


def test_activitynet_sample():
    res = F.read_activitynet_captions(SAMPLES / "activitynet_val_1.json", strict=True)
    assert len(res) == 5
    q = res.records[1]
    assert q.video_id == "v_uqiMw7tQ1Cc"
    assert q.query.startswith("The coach helps")  # the release's leading spaces are stripped
    assert (q.start, q.end, q.duration) == (13.79, 54.32, 55.15)
    assert res.records[2].start == 0.0 and res.records[2].windows == ((0.0, 10.23),)
    assert q.qid == "v_uqiMw7tQ1Cc#1"


def test_charades_sta_sample_with_and_without_durations():
    res = F.read_charades_sta(SAMPLES / "charades_sta_test.txt", strict=True)
    assert len(res) == 3
    q = res.records[0]
    assert (q.video_id, q.start, q.end, q.query, q.duration) == ("3MSZA", 24.3, 30.4, "person turn a light on.", None)
    with_dur = F.read_charades_sta(SAMPLES / "charades_sta_test.txt", durations=SAMPLES / "Charades_v1_test.csv",
                                   strict=True)
    assert [r.duration for r in with_dur] == [35.67, 35.67, 29.88]
    durs = dict(F.read_charades_durations(SAMPLES / "Charades_v1_test.csv", strict=True).records)
    assert durs == {"3MSZA": 35.67, "YSKX3": 29.88}


def test_qvhighlights_sample_multiple_windows():
    res = F.read_qvhighlights(SAMPLES / "highlight_val_release.jsonl", strict=True)
    assert len(res) == 2
    a, b = res.records
    assert (a.qid, a.vid if hasattr(a, "vid") else a.video_id, a.duration) == ("2579", "NUsG9BgSes0_210.0_360.0", 150.0)
    assert a.windows == ((0.0, 20.0),)
    assert b.windows == ((96.0, 100.0), (110.0, 114.0)) and (b.start, b.end) == (96.0, 100.0)


def test_qvhighlights_test_split_without_windows(tmp_path):
    f = tmp_path / "highlight_test_release.jsonl"
    f.write_text(json.dumps({"qid": 1, "query": "a dog runs", "duration": 150, "vid": "x_0.0_150.0"}) + "\n")
    assert F.read_qvhighlights(f).skipped[0].reason == "missing 'relevant_windows'"
    res = F.read_qvhighlights(f, require_windows=False, strict=True)
    assert res.records[0].windows == ()


def test_msrvtt_samples():
    data = F.read_msrvtt_data(SAMPLES / "MSRVTT_data.json", strict=True)
    by_id = {v.video_id: v for v in data}
    assert set(by_id) == {"video0", "video7020"}
    v0 = by_id["video0"]
    assert (v0.split, v0.category, v0.start, v0.end) == ("train", 9, 137.72, 149.44)
    assert len(v0.captions) == 2
    train = F.read_msrvtt_split_csv(SAMPLES / "MSRVTT_train.9k.csv", known_ids=set(by_id), strict=True)
    assert train.records == ["video0"]
    test = F.read_msrvtt_jsfusion_csv(SAMPLES / "MSRVTT_JSFUSION_test.csv", known_ids=set(by_id), strict=True)
    assert test.records == [F.RetrievalQuery("ret0", "video7020", "a woman is slicing tomatoes in a kitchen")]


def test_crosstask_samples():
    tasks = F.read_crosstask_tasks(SAMPLES / "crosstask" / "tasks_primary.txt", strict=True)
    assert [t.task_id for t in tasks] == ["23521", "59684"]
    t0 = tasks.records[0]
    assert t0.name == "Make Lemonade" and t0.n_steps == 6 and t0.steps[2] == "pour water"
    tmap = {t.task_id: t for t in tasks}
    vids = F.read_crosstask_videos(SAMPLES / "crosstask" / "videos.csv", tasks=tmap, strict=True)
    assert [(v.task_id, v.video_id) for v in vids] == [("23521", "Gz_6ck-aEaM"), ("59684", "-6Uw3mNWQ7w")]
    ann = F.read_crosstask_annotations(SAMPLES / "crosstask" / "annotations", vids.records, tmap, strict=True)
    a = {x.video_id: x for x in ann}
    assert a["Gz_6ck-aEaM"].segments == (F.StepSegment(1, 4.01, 9.55), F.StepSegment(3, 10.2, 13.9),
                                         F.StepSegment(5, 20.0, 28.35))
    # without a video list, file names are split at the FIRST underscore (YouTube ids may contain '_')
    ann2 = F.read_crosstask_annotations(SAMPLES / "crosstask" / "annotations", tasks=tmap, strict=True)
    assert sorted((x.task_id, x.video_id) for x in ann2) == [("23521", "Gz_6ck-aEaM"), ("59684", "-6Uw3mNWQ7w")]


def test_coin_sample():
    res = F.read_coin(SAMPLES / "COIN.json", strict=True)
    v = {x.video_id: x for x in res}
    a = v["-0og5Y3F9Uw"]
    assert (a.subset, a.recipe_type, a.task, a.duration) == ("training", 113, "ReplaceABulb", 110.24)
    assert a.segments[1] == F.CoinSegment("4", 30.0, 52.5, "take out the old bulb")
    assert a.url.endswith("-0og5Y3F9Uw")
    test_only = F.read_coin(SAMPLES / "COIN.json", subset="testing", strict=True)
    assert [x.video_id for x in test_only] == ["sR8x2m0y7_s"]


# ------------------------------------------------------------------------------------- the synthetic world
def test_world_loads_with_zero_skipped(tiny_world):
    results = F.load_world_annotations(tiny_world, strict=True)
    manifest = json.loads((tiny_world / "manifest.json").read_text())
    for name, res in results.items():
        assert res.skipped == [], f"{name}: {res.summary()}"
        assert len(res) > 0, name
    splits = manifest["splits"]
    assert {r.video_id for r in results["howto100m"]} == set(splits["pretrain"])
    assert {r.video_id for r in results["activitynet_val"]} == set(splits["grounding_test"])
    assert {r.video_id for r in results["charades_test"]} == set(splits["grounding_test"])
    assert {r.video_id for r in results["qvhighlights_val"]} == set(splits["grounding_test"])
    assert {r.video_id for r in results["msrvtt_test"]} == set(splits["retrieval_test"])
    assert set(results["msrvtt_train"].records) == set(splits["retrieval_train"])
    assert {r.video_id for r in results["crosstask_val_annotations"]} == set(splits["crosstask_val"])
    coin_test = {r.video_id for r in results["coin"] if r.subset == "testing"}
    assert coin_test == set(splits["coin_test"])
    # the three grounding formats carry the same queries and windows
    a = sorted((q.video_id, q.query, q.start, q.end) for q in results["activitynet_val"])
    c = sorted((q.video_id, q.query, q.start, q.end) for q in results["charades_test"])
    v = sorted((q.video_id, q.query, q.start, q.end) for q in results["qvhighlights_val"])
    assert a == c == v


def test_world_grounding_matches_ground_truth(tiny_world):
    gt = json.loads((tiny_world / "ground_truth.json").read_text())
    res = F.read_activitynet_captions(tiny_world / "grounding/activitynet/val_1.json", strict=True)
    for q in res:
        i = int(q.qid.split("#")[1])
        e = gt[q.video_id]["events"][i]
        assert (q.start, q.end) == (e["start"], e["end"])
        assert q.duration == gt[q.video_id]["duration"]


# ------------------------------------------------------------------------------------------- bad inputs
def _write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    p = tmp_path / name
    p.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        p.write_bytes(content)
    else:
        p.write_text(content, encoding="utf-8")
    return p


def _check(reader, path: Path, n_good: int, reason: str, location: str, **kw):
    """Lenient: the bad record is skipped with its reason and location; strict: FormatError naming both."""
    res = reader(path, **kw)
    assert len(res) == n_good, res.summary()
    assert len(res.skipped) == 1, res.skipped
    bad = res.skipped[0]
    assert reason in bad.reason and bad.location == location and bad.file == str(path)
    assert "skipped 1" in res.summary()
    with pytest.raises(F.FormatError) as ei:
        reader(path, strict=True, **kw)
    assert str(path) in str(ei.value) and location in str(ei.value) and reason in str(ei.value)


ANET_OK = '"v_a": {"duration": 20.0, "timestamps": [[1.0, 5.0]], "sentences": ["ok one"]}'


@pytest.mark.parametrize("entry,reason,location", [
    ('"v_b": {"duration": 20.0, "timestamps": [[6.0, 6.0]], "sentences": ["zero length"]}', "start >= end",
     "key 'v_b' sentence 0"),
    ('"v_b": {"duration": 20.0, "timestamps": [[9.0, 3.0]], "sentences": ["backwards"]}', "start >= end",
     "key 'v_b' sentence 0"),
    ('"v_b": {"duration": 20.0, "timestamps": [[15.0, 31.0]], "sentences": ["too late"]}', "outside the duration",
     "key 'v_b' sentence 0"),
    ('"v_b": {"duration": 20.0, "timestamps": [[25.0, 26.0]], "sentences": ["after the end"]}',
     "outside the duration", "key 'v_b' sentence 0"),
    ('"v_b": {"duration": 20.0, "timestamps": [[1.0, 2.0]], "sentences": ["   "]}', "empty sentence",
     "key 'v_b' sentence 0"),
    ('"v_b": {"duration": 20.0, "timestamps": [[1.0, 2.0]], "sentences": [7]}', "not a string",
     "key 'v_b' sentence 0"),
    ('"v_b": {"duration": 20.0, "timestamps": [[1.0, 2.0], [3.0, 4.0]], "sentences": ["one"]}',
     "2 timestamps but 1 sentences", "key 'v_b'"),
    ('"v_b": {"timestamps": [[1.0, 2.0]], "sentences": ["no duration"]}', "missing 'duration'", "key 'v_b'"),
    ('"v_b": {"duration": 20.0, "timestamps": [["a", 2.0]], "sentences": ["bad number"]}', "not a number",
     "key 'v_b' sentence 0"),
    ('"v_b": {"duration": 0, "timestamps": [[0.0, 1.0]], "sentences": ["zero-length video"]}',
     "non-positive duration", "key 'v_b'"),
    ('"v_b": {"duration": 20.0, "timestamps": [[-1.0, 2.0]], "sentences": ["negative"]}', "start < 0",
     "key 'v_b' sentence 0"),
    ('"v_b": {"duration": 20.0, "timestamps": [[1.0, NaN]], "sentences": ["nan"]}', "not finite",
     "key 'v_b' sentence 0"),
    ('"v_b": "not an object"', "entry is not an object", "key 'v_b'"),
])
def test_activitynet_bad_records(tmp_path, entry, reason, location):
    p = _write(tmp_path, "val_1.json", "{" + ANET_OK + ", " + entry + "}")
    _check(F.read_activitynet_captions, p, 1, reason, location)


def test_activitynet_unknown_video_id(tmp_path):
    p = _write(tmp_path, "val_1.json", "{" + ANET_OK + ', "v_zz": {"duration": 9.0, "timestamps": [[1, 2]], '
               '"sentences": ["x"]}}')
    _check(F.read_activitynet_captions, p, 1, "unknown video id 'v_zz'", "key 'v_zz'", known_ids={"v_a"})


def test_end_overshoot_within_tolerance_is_clipped(tmp_path):
    p = _write(tmp_path, "val_1.json", '{"v_a": {"duration": 20.0, "timestamps": [[15.0, 20.3]], '
               '"sentences": ["ends a bit late"]}}')
    res = F.read_activitynet_captions(p, strict=True)
    assert res.records[0].end == 20.0
    assert len(F.read_activitynet_captions(p, duration_tolerance=0.1).skipped) == 1


def test_non_utf8_sentence_in_json(tmp_path):
    raw = b'{"v_a": {"duration": 20.0, "timestamps": [[1.0, 2.0], [3.0, 4.0]], "sentences": ["good", "caf\xe9 bad"]}}'
    p = _write(tmp_path, "val_1.json", raw)
    _check(F.read_activitynet_captions, p, 1, "not valid UTF-8", "key 'v_a' sentence 1")


def test_malformed_json_document_names_line(tmp_path):
    p = _write(tmp_path, "val_1.json", '{"v_a": {"duration": 20.0,\n "timestamps": [[1.0, 2.0]] "sentences": []}}')
    for strict in (False, True):
        with pytest.raises(F.FormatError, match=r"val_1\.json: line 2 column \d+: malformed JSON"):
            F.read_activitynet_captions(p, strict=strict)


@pytest.mark.parametrize("reader,name", [
    (F.read_howto100m_captions, "caption.json"), (F.read_webvid_csv, "webvid.csv"),
    (F.read_activitynet_captions, "train.json"), (F.read_charades_sta, "charades_sta_test.txt"),
    (F.read_qvhighlights, "highlight_val_release.jsonl"), (F.read_msrvtt_data, "MSRVTT_data.json"),
    (F.read_msrvtt_split_csv, "MSRVTT_train.9k.csv"), (F.read_msrvtt_jsfusion_csv, "MSRVTT_JSFUSION_test.csv"),
    (F.read_crosstask_tasks, "tasks_primary.txt"), (F.read_crosstask_videos, "videos.csv"),
    (F.read_coin, "COIN.json"), (F.read_charades_durations, "Charades_v1_test.csv"),
])
def test_missing_file_is_a_clear_error(tmp_path, reader, name):
    missing = tmp_path / "nowhere" / name
    with pytest.raises(F.MissingFileError, match="annotation file not found") as ei:
        reader(missing)
    assert str(missing) in str(ei.value)
    assert isinstance(ei.value, FileNotFoundError)


def test_missing_crosstask_annotation_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="annotation directory not found"):
        F.read_crosstask_annotations(tmp_path / "annotations")


CHARADES_GOOD = "AAAAA 1.0 4.0##person opens a door.\n"


@pytest.mark.parametrize("line,reason", [
    ("AAAAA 5.0 5.0##person sits.", "start >= end"),
    ("AAAAA 5.0 2.0##person sits.", "start >= end"),
    ("AAAAA 5.0 99.0##person sits.", "outside the duration"),
    ("AAAAA 1.0 2.0##   ", "empty sentence"),
    ("AAAAA 1.0 2.0 person sits.", "no '##' separator"),
    ("AAAAA 1.0##person sits.", "expected 'vid start end'"),
    ("AAAAA x 2.0##person sits.", "start is not a number"),
    ("ZZZZZ 1.0 2.0##person sits.", "unknown video id 'ZZZZZ'"),
])
def test_charades_bad_lines(tmp_path, line, reason):
    p = _write(tmp_path, "charades_sta_test.txt", CHARADES_GOOD + line + "\n")
    _check(F.read_charades_sta, p, 1, reason, "line 2", durations={"AAAAA": 30.0})


def test_charades_non_utf8_line(tmp_path):
    p = _write(tmp_path, "charades_sta_test.txt", CHARADES_GOOD.encode() + b"AAAAA 1.0 2.0##person \xff sits.\n")
    _check(F.read_charades_sta, p, 1, "not valid UTF-8", "line 2")


QV_GOOD = json.dumps({"qid": 1, "query": "a cat jumps", "duration": 150, "vid": "v1_0.0_150.0",
                      "relevant_windows": [[10, 20]]})


@pytest.mark.parametrize("line,reason", [
    ('{"qid": 2, "query": "oops", "duration": 150, "vid": "v1_0.0_150.0", "relevant_windows": [[10, 20]]',
     "malformed JSON"),
    (json.dumps({"qid": 2, "query": "x", "duration": 150, "vid": "v1", "relevant_windows": [[30, 30]]}),
     "start >= end"),
    (json.dumps({"qid": 2, "query": "x", "duration": 150, "vid": "v1", "relevant_windows": [[140, 160]]}),
     "outside the duration"),
    (json.dumps({"qid": 2, "query": "", "duration": 150, "vid": "v1", "relevant_windows": [[1, 2]]}),
     "empty query"),
    (json.dumps({"qid": 2, "duration": 150, "vid": "v1", "relevant_windows": [[1, 2]]}), "missing 'query'"),
    (json.dumps({"qid": 2, "query": "x", "duration": 150, "vid": "v1", "relevant_windows": [[1, 2, 3]]}),
     "not a [start, end] pair"),
    (json.dumps({"qid": 2, "query": "x", "duration": 150, "vid": "v1", "relevant_windows": []}),
     "non-empty list"),
    (json.dumps([1, 2]), "line is not an object"),
])
def test_qvhighlights_bad_lines(tmp_path, line, reason):
    p = _write(tmp_path, "highlight_val_release.jsonl", QV_GOOD + "\n" + line + "\n")
    _check(F.read_qvhighlights, p, 1, reason, "line 2")


def test_qvhighlights_unknown_video(tmp_path):
    p = _write(tmp_path, "highlight_val_release.jsonl", QV_GOOD + "\n" + QV_GOOD.replace("v1_0.0", "v9_0.0") + "\n")
    _check(F.read_qvhighlights, p, 1, "unknown video id", "line 2", known_ids={"v1_0.0_150.0"})


@pytest.mark.parametrize("value,reason,location", [
    ('{"start": [1.0], "end": [1.0], "text": ["same time"]}', "start >= end", "key 'b' item 0"),
    ('{"start": [1.0, 2.0], "end": [2.0], "text": ["x"]}', "list lengths differ", "key 'b'"),
    ('{"start": [1.0], "end": [2.0], "text": [""]}', "empty sentence", "key 'b' item 0"),
    ('{"start": [1.0], "end": [99.0], "text": ["late"]}', "outside the duration", "key 'b' item 0"),
    ('[1, 2, 3]', "entry is not an object", "key 'b'"),
])
def test_howto100m_bad_records(tmp_path, value, reason, location):
    p = _write(tmp_path, "caption.json", '{"a": {"start": [0.0], "end": [2.0], "text": ["hello"]}, "b": ' + value + "}")
    _check(F.read_howto100m_captions, p, 1, reason, location, durations={"a": 10.0, "b": 10.0})


def test_howto100m_unknown_video(tmp_path):
    p = _write(tmp_path, "caption.json", '{"a": {"start": [0], "end": [2], "text": ["hi"]}, '
               '"zz": {"start": [0], "end": [2], "text": ["ho"]}}')
    _check(F.read_howto100m_captions, p, 1, "unknown video id 'zz'", "key 'zz'", known_ids={"a"})


WEBVID_HEAD = "videoid,contentUrl,duration,page_dir,name\n1,http://x/1.mp4,PT00H00M10S,d,a good caption\n"


@pytest.mark.parametrize("row,reason", [
    ("2,http://x/2.mp4,PT00H00M10S,d", "malformed row"),
    ("2,http://x/2.mp4,PT00H00M10S,d,", "empty sentence"),
    ("2,http://x/2.mp4,ten seconds,d,caption", "neither ISO-8601 nor a number"),
    ('2,http://x/2.mp4,PT00H00M10S,d,"unterminated', "malformed row"),
])
def test_webvid_bad_rows(tmp_path, row, reason):
    p = _write(tmp_path, "webvid.csv", WEBVID_HEAD + row + "\n")
    _check(F.read_webvid_csv, p, 1, reason, "line 3")


def test_webvid_non_utf8_and_header(tmp_path):
    p = _write(tmp_path, "webvid.csv", WEBVID_HEAD.encode() + b"2,http://x/2.mp4,PT00H00M10S,d,na\xefve\n")
    _check(F.read_webvid_csv, p, 1, "not valid UTF-8", "line 3")
    q = _write(tmp_path, "nohead.csv", "1,http://x/1.mp4,PT10S,d,caption\n")
    with pytest.raises(F.FormatError, match="nohead.csv: line 1: header lacks"):
        F.read_webvid_csv(q)


def test_msrvtt_bad_records(tmp_path):
    doc = {"videos": [{"video_id": "video1", "split": "test", "category": 1},
                      {"video_id": "video2", "split": "test", "category": 2},
                      {"video_id": "video3", "split": "test", "category": "sports"}],
           "sentences": [{"caption": "fine", "video_id": "video1", "sen_id": 0},
                         {"caption": "orphan", "video_id": "video99", "sen_id": 1},
                         {"caption": "  ", "video_id": "video2", "sen_id": 2}]}
    p = _write(tmp_path, "MSRVTT_data.json", json.dumps(doc))
    res = F.read_msrvtt_data(p)
    assert [b.location for b in res.skipped] == ["videos[2]", "sentences[1]", "sentences[2]"]
    assert "category is not a number" in res.skipped[0].reason
    assert "unknown video id 'video99'" in res.skipped[1].reason and "empty caption" in res.skipped[2].reason
    with pytest.raises(F.FormatError, match=r"MSRVTT_data\.json: videos\[2\]: category is not a number"):
        F.read_msrvtt_data(p, strict=True)
    csvp = _write(tmp_path, "MSRVTT_JSFUSION_test.csv",
                  "key,vid_key,video_id,sentence\nret0,msr1,video1,a dog\nret1,msr5,video5,a cat\n")
    _check(F.read_msrvtt_jsfusion_csv, csvp, 1, "unknown video id 'video5'", "line 3", known_ids={"video1"})
    trn = _write(tmp_path, "MSRVTT_train.9k.csv", "video_id\nvideo1\nvideo77\n")
    _check(F.read_msrvtt_split_csv, trn, 1, "unknown video id 'video77'", "line 3", known_ids={"video1"})


def test_crosstask_bad_inputs(tmp_path):
    tasks = _write(tmp_path, "tasks_primary.txt",
                   "1\nTask one\nhttp://x\n2\nstep a,step b\n\n2\nTask two\nhttp://y\n3\nonly,two\n\n")
    _check(F.read_crosstask_tasks, tasks, 1, "n_steps=3 but 2 steps listed", "line 7")
    tmap = {t.task_id: t for t in F.read_crosstask_tasks(tasks)}
    vids = _write(tmp_path, "videos.csv", "1,vidA,http://a\n9,vidB,http://b\n")
    _check(F.read_crosstask_videos, vids, 1, "unknown task id '9'", "line 2", tasks=tmap)
    ann = _write(tmp_path, "annotations/1_vidA.csv", "1,0.5,2.0\n3,4.0,5.0\n")  # step 3 > n_steps=2
    res = F.read_crosstask_annotations(tmp_path / "annotations", tasks=tmap)
    assert res.records[0].segments == (F.StepSegment(1, 0.5, 2.0),)
    assert res.skipped[0].location == "line 2" and "step 3 outside 1..2" in res.skipped[0].reason
    assert res.skipped[0].file == str(ann)
    with pytest.raises(F.FormatError, match=r"1_vidA\.csv: line 2: step 3 outside"):
        F.read_crosstask_annotations(tmp_path / "annotations", tasks=tmap, strict=True)
    for row, reason in (("0,1.0,2.0", "step 0 outside"), ("1,3.0,3.0", "start >= end"), ("1,2.0", "malformed row"),
                        ("1,5.0,50.0", "outside the duration")):
        p = _write(tmp_path, "one/1_vidA.csv", "2,0.0,1.0\n" + row + "\n")
        _check(F.read_crosstask_annotation, p, 1, reason, "line 2", task_id="1", video_id="vidA", n_steps=2,
               duration=10.0)
    # a listed video without an annotation file is reported, not silently dropped
    res = F.read_crosstask_annotations(tmp_path / "annotations", [F.CrossTaskVideo("1", "vidZ", "")], tmap)
    assert res.records == [] and res.skipped[0].reason == "annotation file not found"


def test_coin_bad_segments(tmp_path):
    doc = {"database": {
        "v1": {"subset": "training", "recipe_type": 1, "class": "A", "duration": 30.0,
               "annotation": [{"id": "1", "segment": [1.0, 5.0], "label": "good"},
                              {"id": "2", "segment": [8.0, 6.0], "label": "backwards"},
                              {"id": "3", "segment": [20.0, 40.0], "label": "too long"},
                              {"id": "4", "segment": [2.0, 3.0], "label": ""}]},
        "v2": {"subset": "testing", "duration": 30.0, "annotation": "nope"}}}
    p = _write(tmp_path, "COIN.json", json.dumps(doc))
    res = F.read_coin(p)
    assert [v.video_id for v in res] == ["v1"]
    assert res.records[0].segments == (F.CoinSegment("1", 1.0, 5.0, "good"),)
    assert [(b.location, b.reason.split(":")[0]) for b in res.skipped] == [
        ("key 'v1' annotation 1", "start >= end"), ("key 'v1' annotation 2", "outside the duration"),
        ("key 'v1' annotation 3", "empty label"), ("key 'v2'", "'annotation' must be a list")]
    assert res.reasons()["start >= end"] == 1
    with pytest.raises(F.FormatError, match=r"COIN\.json: key 'v1' annotation 1: start >= end"):
        F.read_coin(p, strict=True)
    unknown = F.read_coin(p, known_ids={"v2"})
    assert any(b.reason == "unknown video id 'v1'" for b in unknown.skipped)


def test_world_with_corrupted_files_reports_not_drops(tiny_world, tmp_path):
    """Damage copies of world files; the world loader then reports each damage as a skipped record."""
    import shutil

    world = tmp_path / "world"
    shutil.copytree(tiny_world, world, ignore=shutil.ignore_patterns("*.mp4"))
    f = world / "grounding/charades/charades_sta_test.txt"
    lines = f.read_text().splitlines()
    vid = lines[0].split()[0]
    lines.append(f"{vid} 3.0 3.0##the red circle moves left")
    lines.append("not_a_video 1.0 2.0##the red circle moves left")
    f.write_text("\n".join(lines) + "\n")
    res = F.load_world_annotations(world)
    reasons = sorted(b.reason.split(":")[0] for b in res["charades_test"].skipped)
    assert reasons == ["start >= end", "unknown video id 'not_a_video'"]
    with pytest.raises(F.FormatError):
        F.load_world_annotations(world, strict=True)


# ------------------------------------------------------------------------------------------ property tests
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_sentences = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1, max_size=30).filter(
    lambda s: s.strip() != "" and s == s.strip())
_spans = st.tuples(st.integers(0, 999), st.integers(1, 500)).map(lambda p: (p[0] / 10, (p[0] + p[1]) / 10))
_videos = st.dictionaries(st.from_regex(r"v_[A-Za-z0-9_-]{4,11}", fullmatch=True),
                          st.lists(st.tuples(_spans, _sentences), min_size=1, max_size=4), min_size=1, max_size=4)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(videos=_videos)
def test_activitynet_and_charades_round_trip(tmp_path, videos):
    """Any valid annotation set written in either format reads back exactly, with nothing skipped."""
    anet, lines, expected = {}, [], []
    for vid, items in videos.items():
        duration = max(e for (_, e), _ in items) + 1.0
        anet[vid] = {"duration": duration, "timestamps": [list(sp) for sp, _ in items],
                     "sentences": [s for _, s in items]}
        for (s, e), sent in items:
            lines.append(f"{vid} {s} {e}##{sent}\n")
            expected.append((vid, sent, s, e))
    a = tmp_path / "val_1.json"
    a.write_text(json.dumps(anet, ensure_ascii=False), encoding="utf-8")
    got = F.read_activitynet_captions(a, strict=True)
    assert [(q.video_id, q.query, q.start, q.end) for q in got] == expected
    c = tmp_path / "charades_sta_test.txt"
    c.write_text("".join(lines), encoding="utf-8")
    got = F.read_charades_sta(c, strict=True)
    assert [(q.video_id, q.query, q.start, q.end) for q in got] == expected


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(start=st.floats(-5, 30, allow_nan=False), end=st.floats(-5, 30, allow_nan=False))
def test_span_rule_matches_the_documented_policy(tmp_path, start, end):
    """A span is kept iff 0 <= start < end and start < duration and end <= duration + tolerance (then clipped)."""
    dur, tol = 20.0, F.DEFAULT_DURATION_TOLERANCE
    p = tmp_path / "val_1.json"
    p.write_text(json.dumps({"v": {"duration": dur, "timestamps": [[start, end]], "sentences": ["x"]}}))
    res = F.read_activitynet_captions(p)
    keep = 0 <= start < end and start < dur and end <= dur + tol
    assert (len(res) == 1) == keep and len(res.skipped) == (0 if keep else 1)
    if keep:
        assert res.records[0].end == min(end, dur)


def test_bom_and_crlf_are_tolerated(tmp_path):
    """Spreadsheet exports: a UTF-8 byte-order mark and CRLF line endings read like the plain file."""
    p = tmp_path / "MSRVTT_JSFUSION_test.csv"
    p.write_bytes(b"\xef\xbb\xbfkey,vid_key,video_id,sentence\r\nret0,msr1,video1,a dog runs\r\n")
    assert F.read_msrvtt_jsfusion_csv(p, strict=True).records == [F.RetrievalQuery("ret0", "video1", "a dog runs")]
    q = tmp_path / "val_1.json"
    q.write_bytes(b'\xef\xbb\xbf{"v": {"duration": 5, "timestamps": [[1, 2]], "sentences": ["x"]}}')
    assert len(F.read_activitynet_captions(q, strict=True)) == 1
    c = tmp_path / "charades_sta_test.txt"
    c.write_bytes(b"AAAAA 1.0 2.0##person sits.\r\nAAAAA 2.0 3.0##person stands.\r\n")
    assert [q.query for q in F.read_charades_sta(c, strict=True)] == ["person sits.", "person stands."]
