"""locvtp.files: atomic writes, ownership manifests, input/output overlap, the output lock, stale temporaries."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from locvtp.errors import NotOwnedError, OutputBusyError, UsageError
from locvtp.files import (
    MANIFEST, OutputLock, atomic_path, atomic_write_text, check_apart, check_replaceable_dir, overlaps, read_manifest,
    remove_owned, remove_stale_temporaries, replace_dir, stale_temporaries, write_manifest,
)


def test_atomic_path_replaces_on_success_and_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
    with atomic_path(target, suffix=".txt") as tmp:
        assert tmp.name.endswith(".txt") and tmp.name.startswith(".a.txt.tmp-")
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_sigkill_during_atomic_write_leaves_old_content(tmp_path):
    target = tmp_path / "big.bin"
    target.write_bytes(b"old")
    code = textwrap.dedent(f"""
        import sys, time
        from locvtp.files import atomic_path
        with atomic_path({str(target)!r}) as tmp:
            with open(tmp, "wb") as fh:
                fh.write(b"x" * 1000)
                fh.flush()
                print("writing", flush=True)
                time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert target.read_bytes() == b"old"
    stale = stale_temporaries(target)
    assert len(stale) == 1
    assert remove_stale_temporaries(target) == stale
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.bin"]


def test_overlaps_and_check_apart(tmp_path):
    vids = tmp_path / "vids"
    (vids / "sub").mkdir(parents=True)
    assert overlaps(vids, vids) == "is"
    assert overlaps(tmp_path, vids) == "contains"
    assert overlaps(vids / "sub", vids) == "lies inside"
    assert overlaps(tmp_path / "vids2", vids) is None  # a shared prefix is not containment
    assert overlaps(vids / ".." / "vids", vids) == "is"
    for out, how in ((vids, "is"), (tmp_path, "contains"), (vids / "sub" / "f.h5", "lies inside")):
        with pytest.raises(UsageError, match=f"--out .* {how} the input --videos"):
            check_apart(out, {"--videos": vids, "--checkpoint": None})
    check_apart(tmp_path / "feats.h5", {"--videos": vids})


def test_manifest_remove_owned_keeps_user_files(tmp_path):
    d = tmp_path / "out"
    (d / "_info").mkdir(parents=True)
    for name in ("a.npy", "b.npy", "_info/a.json", "meta.json"):
        (d / name).write_text("ours")
    (d / "notes.txt").write_text("user's")
    (d / "_info" / "user.json").write_text("user's")
    write_manifest(d, "extract", ["a.npy", "_info/a.json"])
    write_manifest(d, "extract", ["b.npy", "meta.json"])  # merged with the earlier claim
    m = read_manifest(d)
    assert m is not None and m.writer == "extract"
    assert m.files == {"a.npy", "b.npy", "_info/a.json", "meta.json"}
    assert remove_owned(d, "index") == 0  # another writer's claim is not ours to act on
    assert remove_owned(d, "extract") == 4
    assert sorted(str(p.relative_to(d)) for p in d.rglob("*")) == ["_info", "_info/user.json", "notes.txt"]


def test_remove_owned_ignores_paths_outside_the_directory(tmp_path):
    d = tmp_path / "out"
    d.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    (d / MANIFEST).write_text(json.dumps({"writer": "index", "files": ["../victim.txt", str(victim)]}))
    remove_owned(d, "index")
    assert victim.read_text() == "keep"


def test_replace_dir_only_replaces_own_output(tmp_path):
    out = tmp_path / "index"

    def built(tag: str) -> Path:
        tmp = tmp_path / f".index.tmp-{tag}"
        tmp.mkdir()
        (tmp / "embeddings.npy").write_text(tag)
        write_manifest(tmp, "index", ["embeddings.npy"])
        return tmp

    replace_dir(built("1"), out, "index", "moment index")
    replace_dir(built("2"), out, "index", "moment index")
    assert (out / "embeddings.npy").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]  # no .old-/.tmp- leftovers
    (out / "mine.txt").write_text("user's")
    with pytest.raises(NotOwnedError, match="mine.txt"):
        replace_dir(built("3"), out, "index", "moment index")
    assert (out / "mine.txt").read_text() == "user's"
    user_dir = tmp_path / "photos"
    user_dir.mkdir()
    (user_dir / "x.jpg").write_text("user's")
    with pytest.raises(NotOwnedError, match="did not write"):
        check_replaceable_dir(user_dir, "index", "moment index")
    a_file = tmp_path / "file"
    a_file.write_text("user's")
    with pytest.raises(NotOwnedError, match="not a moment index"):
        check_replaceable_dir(a_file, "index", "moment index")
    (tmp_path / "empty").mkdir()
    check_replaceable_dir(tmp_path / "empty", "index", "moment index")  # an empty folder holds nothing to lose


def test_output_lock_excludes_a_second_holder_and_names_the_first(tmp_path):
    out = tmp_path / "feats.h5"
    with OutputLock(out, "extract"):
        with pytest.raises(OutputBusyError, match=rf"`locvtp extract` \(pid {os.getpid()}\) is writing"):
            OutputLock(out, "index").acquire()
    assert not (tmp_path / ".feats.h5.lock").exists()  # removed on release
    with OutputLock(out, "index"):
        pass


def test_output_lock_across_processes(tmp_path):
    out = tmp_path / "dir"
    code = textwrap.dedent(f"""
        import time
        from locvtp.files import OutputLock
        with OutputLock({str(out)!r}, "index"):
            print("locked", flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(OutputBusyError, match=rf"`locvtp index` \(pid {proc.pid}\)"):
            OutputLock(out, "index").acquire()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    # a killed holder's lock is released by the kernel: the next run takes it (its stale lock file is reused)
    deadline = time.monotonic() + 10
    while True:
        try:
            lock = OutputLock(out, "index").acquire()
            break
        except OutputBusyError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    lock.release()


def test_atomic_write_text(tmp_path):
    p = tmp_path / "x.json"
    atomic_write_text(p, "hello")
    assert p.read_text() == "hello"
    assert os.listdir(tmp_path) == ["x.json"]


def test_remove_owned_keeps_an_empty_folder_of_the_user(tmp_path):
    d = tmp_path / "out"
    (d / "_info").mkdir(parents=True)
    (d / "mine_empty").mkdir()
    (d / "_info" / "a.json").write_text("ours")
    (d / "a.npy").write_text("ours")
    write_manifest(d, "extract", ["a.npy", "_info/a.json"])
    assert remove_owned(d, "extract") == 2
    assert sorted(p.name for p in d.iterdir()) == ["mine_empty"]


def test_only_our_temporary_names_count_as_temporaries(tmp_path):
    from locvtp.files import temporaries_in
    from locvtp.tempnames import temp_path, temporary_of

    ours = [temp_path(tmp_path / "feats.h5").name, temp_path(tmp_path / "a.npy", suffix=".npy").name,
            ".idx.tmp-123", ".idx.old-9-0123abcd", ".step_0000010.tmp-77-89abcdef"]
    theirs = [".my.tmp-notes", ".config.tmp-backup", ".x.tmp-12-NOTHEX99", ".bashrc", "feats.h5.tmp-3"]
    for n in ours + theirs:
        (tmp_path / n).write_text("x")
    assert [temporary_of(n) for n in ours] == ["feats.h5", "a.npy", "idx", "idx", "step_0000010"]
    assert all(temporary_of(n) is None for n in theirs)
    assert sorted(q.name for q in temporaries_in(tmp_path)) == sorted(ours)
    assert [q.name for q in stale_temporaries(tmp_path / "idx")] == sorted([".idx.old-9-0123abcd", ".idx.tmp-123"])


def test_remove_temporaries_in_takes_our_files_and_folders_and_nothing_else(tmp_path):
    from locvtp.files import remove_temporaries_in
    from locvtp.tempnames import temp_path

    ours_file = temp_path(tmp_path / "feats.h5")
    ours_dir = tmp_path / ".step_0000010.tmp-77-89abcdef"
    (ours_dir / "inner").mkdir(parents=True)
    (ours_dir / "inner" / "model.safetensors").write_text("x")
    ours_file.write_text("x")
    nested = tmp_path / "sub" / ".a.npy.tmp-5"
    nested.parent.mkdir()
    nested.write_text("x")
    theirs = [".my.tmp-notes", ".x.tmp-12-NOTHEX99", "feats.h5.tmp-3", "feats.h5"]
    for n in theirs:
        (tmp_path / n).write_text("user's")
    removed = remove_temporaries_in(tmp_path)
    assert sorted(q.name for q in removed) == sorted([ours_file.name, ours_dir.name])
    assert not ours_file.exists() and not ours_dir.exists() and nested.exists()  # not recursive by default
    assert remove_temporaries_in(tmp_path, recursive=True) == [nested] and not nested.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*theirs, "sub"])
    assert remove_temporaries_in(tmp_path / "missing") == []


def test_a_user_file_inside_a_claimed_folder_is_foreign(tmp_path):
    from locvtp.files import foreign_entries

    d = tmp_path / "out"
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "ours.json").write_text("x")
    write_manifest(d, "index", ["sub/ours.json"])
    assert foreign_entries(d, "index") == []
    (d / "sub" / "mine.txt").write_text("user's")
    assert foreign_entries(d, "index") == ["sub"]
    with pytest.raises(NotOwnedError, match="sub"):
        check_replaceable_dir(d, "index", "moment index")
