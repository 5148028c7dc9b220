"""Issue 26, items 4 and 5: one rule from a video file to its id (and back) shared by extract, index, search, serve,
evaluation and pre-training; every input extract skips is a row of failures.jsonl; BOMs never reach an id."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import h5py
import pytest

from cli_helpers import assert_one_line_error, run_cli
from inference_helpers import world_videos


def _cli(argv) -> int:
    from locvtp.cli import main

    return main([str(a) for a in argv])


def _failures(path: Path) -> list[dict]:
    return [json.loads(ln) for ln in path.read_text(encoding="utf-8").splitlines()]


# ------------------------------------------------------------------------------------------- the rule itself
def test_video_id_and_back_plain_loop_reference(tmp_path):
    """Path -> id -> path for names with spaces, Unicode, dots and underscores, against the documented rule written
    out by hand."""
    from locvtp.data.videoids import find_video, video_id

    cases = {"clip.mp4": "clip", "sub dir/clip 3.mp4": "sub dir__clip 3", "vidéo ü/ünï.mkv": "vidéo ü__ünï",
             "a.b.c.webm": "a.b.c", "x/y/z.MPG": "x__y__z", "v__abc.mp4": "v__abc"}
    for rel, vid in cases.items():
        assert video_id(rel) == vid, rel
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    for rel, vid in cases.items():
        assert find_video(tmp_path, vid) == tmp_path / rel, rel
    assert find_video(tmp_path, "..__etc__passwd") is None and find_video(tmp_path, "nope") is None


def test_one_extension_list_for_extract_evaluate_pretrain_and_serve(tmp_path):
    """An .mpg, .mkv, .MP4 or .Mp4 video is found alike by extraction's listing, evaluation's VideoLocator,
    pre-training's find_video and serve's library: one list, one lookup."""
    from locvtp.data import videoids
    from locvtp.data.videoids import video_path as pretrain_find
    from locvtp.downstream.common import VideoLocator
    from locvtp.extraction import list_videos
    from locvtp.serve.library import VIDEO_SUFFIXES, Library

    assert VIDEO_SUFFIXES is videoids.VIDEO_EXTENSIONS
    vids = tmp_path / "videos"
    vids.mkdir()
    names = {"a": "a.mpg", "b": "b.mkv", "c": "c.MP4", "d": "d.Mp4", "e": "e.3gp", "f": "f.ogv"}
    for n in names.values():
        (vids / n).write_bytes(b"")
    items, skipped = list_videos(vids)
    assert {it.video_id: it.path.name for it in items} == names and skipped == []
    locate = VideoLocator(vids)
    lib = Library(None, tmp_path / "work", videos_dir=vids)
    for vid, name in names.items():
        assert pretrain_find(vids, vid) == vids / name
        assert locate(vid) == vids / name
        assert lib.for_index_video(vid) == name
    assert pretrain_find(vids, "zz") == vids / "zz.mp4"  # missing: the path probing reports
    with pytest.raises(FileNotFoundError, match=".mpg"):
        locate("zz")


def test_shared_ids_pick_the_file_find_video_picks(tmp_path):
    """clip.avi + clip.mkv (+ clip.MP4): the file every lookup returns is the one extracted; the others are skipped
    with a reason naming it."""
    from locvtp.data.videoids import VIDEO_EXTENSIONS, find_video, scan_videos

    for n in ("clip.avi", "clip.mkv", "clip.MP4"):
        (tmp_path / n).write_bytes(b"")
    items, skipped = scan_videos(tmp_path)
    first = next(ext for ext in VIDEO_EXTENSIONS if ext in (".avi", ".mkv", ".mp4"))  # the list decides
    want = tmp_path / ("clip.MP4" if first == ".mp4" else f"clip{first}")
    assert items == [("clip", want)] and find_video(tmp_path, "clip") == want
    assert sorted(Path(r["path"]).name for r in skipped) == sorted({"clip.avi", "clip.mkv", "clip.MP4"} - {want.name})
    assert all(want.name in r["reason"] and r["video_id"] == "clip" for r in skipped)


# ------------------------------------------------------------------------------------------- extract -> serve
@pytest.fixture(scope="module")
def tree(tiny_world, tiny_checkpoint, tmp_path_factory):
    """A --videos tree with subfolders, spaces, Unicode, an id the rule cannot reverse (``a_/b``), two files sharing
    an id, a dangling and a looping link; extracted with --recursive and indexed."""
    root = tmp_path_factory.mktemp("ids")
    src = world_videos(tiny_world)
    vids = root / "videos"
    files = {"top.mp4": src[0], "sub dir/clip 3.mp4": src[1], "a_/b.mp4": src[2], "vidéo ü/ünï.mkv": src[3],
             "shared.mp4": src[4], "shared.avi": src[5]}
    for rel, s in files.items():
        (vids / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(s, vids / rel)
    (vids / "dangling.mp4").symlink_to(root / "nowhere.mp4")
    (vids / "loop.mp4").symlink_to("loop.mp4")
    feats = root / "f.h5"
    assert _cli(["extract", "--checkpoint", tiny_checkpoint, "--videos", vids, "--out", feats, "--recursive",
                 "--no-progress"]) == 0
    idx = root / "idx"
    assert _cli(["index", "--features", feats, "--out", idx, "--no-progress"]) == 0
    return root, vids, feats, idx, tiny_checkpoint


EXPECTED = {"top": "top.mp4", "sub dir__clip 3": "sub dir/clip 3.mp4", "a___b": "a_/b.mp4",
            "vidéo ü__ünï": "vidéo ü/ünï.mkv", "shared": "shared.mp4"}


def test_recursive_ids_round_trip_to_their_files(tree, capsys, tmp_path):
    """extract --recursive -> index -> search -> serve's library: every result maps back to its own file (the id
    the rule cannot reverse through the source recorded in the store and the index)."""
    from locvtp.data.videoids import find_video
    from locvtp.featurestore.reader import iter_features
    from locvtp.index import MomentIndex
    from locvtp.serve.library import Library

    root, vids, feats, idx, ckpt = tree
    recs = {r.video_id: r.source for r in iter_features(feats, load=False)}
    assert recs == {vid: ("a_/b.mp4" if vid == "a___b" else None) for vid in EXPECTED}
    index = MomentIndex(idx)
    assert sorted(index.videos) == sorted(EXPECTED) and index.sources == {"a___b": "a_/b.mp4"}
    for vid, rel in EXPECTED.items():
        assert find_video(vids, vid, index.sources) == vids / rel
    res = run_cli(["search", "--index", idx, "--checkpoint", ckpt, "--top-k", "1000", "a red circle"], capsys)
    assert res.code == 0, res.err
    found = {m["video_id"] for m in json.loads(res.out.splitlines()[0])["moments"]}
    assert found == set(EXPECTED)  # every video appears with a top-k this large
    lib = Library(None, tmp_path / "work", videos_dir=vids, index_dir=idx)
    assert {vid: lib.for_index_video(vid) for vid in found} == {vid: EXPECTED[vid] for vid in found}
    assert lib.for_index_video("not_a_video") is None


def test_skipped_inputs_are_rows_of_failures_jsonl(tree):
    """The dangling and looping links and the file sharing an id are listed (reason stated) and nothing else."""
    root, vids, feats, idx, ckpt = tree
    rows = _failures(root / "f.failures.jsonl")
    by_name = {Path(r["path"]).name: r for r in rows}
    assert sorted(by_name) == ["dangling.mp4", "loop.mp4", "shared.avi"]
    assert all(r["skipped"] is True for r in rows)
    assert "dangling symbolic link" in by_name["dangling.mp4"]["reason"]
    assert "loop" in by_name["loop.mp4"]["reason"]
    assert "shared.mp4" in by_name["shared.avi"]["reason"] and by_name["shared.avi"]["video_id"] == "shared"


def test_summary_counts_skipped_inputs_and_clean_run_writes_no_failures(tree, capsys, tmp_path):
    root, vids, feats, idx, ckpt = tree
    out = tmp_path / "again.h5"
    res = run_cli(["extract", "--checkpoint", ckpt, "--videos", vids, "--out", out, "--recursive", "--no-progress"],
                  capsys)
    assert res.code == 0 and "3 inputs skipped" in res.err and "failures.jsonl" in res.err, res.err
    clean = tmp_path / "clean"
    clean.mkdir()
    shutil.copy(vids / "top.mp4", clean / "top.mp4")
    # the failures file of the run above is ours (the ledger says so): a clean run on the same output removes it
    ours = tmp_path / "again.failures.jsonl"
    assert ours.is_file()
    res = run_cli(["extract", "--checkpoint", ckpt, "--videos", clean, "--out", out, "--overwrite", "--no-progress"],
                  capsys)
    assert res.code == 0 and "inputs skipped" not in res.err and "see " not in res.err, res.err
    assert not ours.exists()
    # a file locvtp did not write (a user's notes, or an empty file of a version before the ledger) is never
    # replaced nor removed: refused before any work, with one line naming it
    stale = tmp_path / "c.failures.jsonl"
    stale.write_text("")
    mine = tmp_path / "mine.jsonl"
    mine.write_text("my own notes\n")
    for argv, kept in (([], stale), (["--failures", mine], mine)):
        before = kept.read_bytes()
        res = run_cli(["extract", "--checkpoint", ckpt, "--videos", clean, "--out", tmp_path / "c.h5", "--overwrite",
                       "--no-progress", *argv], capsys)
        assert_one_line_error(res, 2, kept.name, "not written by locvtp")
        assert kept.read_bytes() == before
    d = tmp_path / "cdir"
    assert _cli(["extract", "--checkpoint", ckpt, "--videos", clean, "--out", d, "--format", "npz-dir",
                 "--no-progress"]) == 0
    assert not (d / "failures.jsonl").exists()


def test_npy_dir_names_for_ids_with_spaces_and_unicode(tree, tmp_path):
    """docs/usage.md's rule: ``DIR/<id>.npy`` for a plain id, ``DIR/_id-<first 20 hex of sha1(id)>.npy`` otherwise;
    the id itself (and the recorded source) in ``DIR/_info/<name>.json``."""
    from locvtp.featurestore.reader import iter_features

    root, vids, feats, idx, ckpt = tree
    out = tmp_path / "npy"
    assert _cli(["extract", "--checkpoint", ckpt, "--videos", vids, "--out", out, "--format", "npy-dir",
                 "--recursive", "--no-progress"]) == 0

    def name(vid):
        plain = all(c.isascii() and (c.isalnum() or c in "_.-") for c in vid) and vid[0] not in ".-"
        return vid if plain else "_id-" + hashlib.sha1(vid.encode("utf-8")).hexdigest()[:20]

    assert sorted(p.name for p in out.glob("*.npy")) == sorted(f"{name(v)}.npy" for v in EXPECTED)
    info = json.loads((out / "_info" / f"{name('a___b')}.json").read_text(encoding="utf-8"))
    assert info["video_id"] == "a___b" and info["source"] == "a_/b.mp4"
    assert {r.video_id: r.source for r in iter_features(out, load=False)}["a___b"] == "a_/b.mp4"
    with h5py.File(feats, "r") as f:
        assert f["a___b"].attrs["source"] == "a_/b.mp4" and "source" not in f["top"].attrs


# ------------------------------------------------------------------------------------------- BOMs
def test_bom_in_list_file_keeps_the_first_video(tree, tmp_path, capsys):
    root, vids, feats, idx, ckpt = tree
    lst = tmp_path / "list.txt"
    lst.write_bytes(("\ufeff" + f"{vids / 'top.mp4'}\n" + f"named\t{vids / 'shared.mp4'}\n").encode("utf-8"))
    out = tmp_path / "l.h5"
    res = run_cli(["extract", "--checkpoint", ckpt, "--videos", lst, "--out", out, "--no-progress"], capsys)
    assert res.code == 0 and "skipped" not in res.err, res.err
    with h5py.File(out, "r") as f:
        assert sorted(f.keys()) == ["named", "top"]
        assert f["named"].attrs["source"] == str(vids / "shared.mp4")  # an id a list gives: recorded
    assert not (tmp_path / "l.failures.jsonl").exists()


def test_strip_bom_one_helper():
    from locvtp.data.textinput import strip_bom

    assert strip_bom("\ufeffa red circle") == "a red circle" and strip_bom("a\ufeffb") == "a\ufeffb"
