"""Issue 26 item 1: one rule for every output of every command (``locvtp.files``).

A path that exists and was not written by locvtp is never replaced or deleted — ``--force`` / ``--overwrite``
included — and what locvtp wrote is replaced atomically. The table ROWS holds one row per (command, output
argument); :func:`test_every_output_argument_has_a_row` reads the parsers of ``locvtp.cli.COMMANDS`` so that a
new output argument without a row fails. Each row plants a user's file (for a directory: a user folder with a
file at its top and one inside a sub-folder the command writes to), runs the command with and without its force
flag, and asserts one error line, the exit code, and the user's bytes unchanged. Every refusal comes before any
work, so the table runs in seconds.
"""
from __future__ import annotations

import argparse
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import pytest

from cli_helpers import assert_one_line_error, run_cli
from inference_helpers import world_videos

GOLDEN = Path(__file__).parent / "data" / "golden" / "grounding"
TINY = ["train.batch_size=4", "data.num_workers=0", "data.frames_per_clip=2", "data.frame_size=16",
        "data.max_words=16", "data.vocab_size=200", "model.dim=32", "model.text.width=32", "model.text.layers=1",
        "model.video.width=8", "train.num_threads=1", "train.max_steps=1", "train.save_every=0", "data.cache=false"]
USER = b"the user's own bytes\n"

pytestmark = pytest.mark.usefixtures("keep_torch_threads")


@pytest.fixture(scope="module")
def ctx(tiny_world, tiny_checkpoint, tmp_path_factory):
    """The inputs the rows read: the world, a checkpoint, one video, a one-video feature file (a merge shard)."""
    from locvtp.cli import main

    root = tmp_path_factory.mktemp("rule_inputs")
    video = world_videos(tiny_world)[0]
    lst = root / "one.txt"
    lst.write_text(f"{video}\n")
    shard = root / "feats.rank0.h5"
    assert main(["extract", "--checkpoint", str(tiny_checkpoint), "--videos", str(lst), "--out", str(shard),
                 "--no-progress"]) == 0
    return SimpleNamespace(world=tiny_world, ckpt=tiny_checkpoint, video=video, list=lst, shard=shard)


@dataclass(frozen=True)
class Row:
    """``argv(ctx, target)`` runs ``command`` with its output argument ``arg`` set to ``target``. ``user``: the
    files planted (relative to the target folder for ``kind="dir"``; ``""`` is the target file itself)."""

    id: str
    command: str
    arg: str
    kind: str
    argv: Callable[[SimpleNamespace, Path], list]
    user: tuple[str, ...] = ("",)
    name: str = "mine.json"
    force: tuple[str, ...] = ()
    code: int = 2
    needles: tuple[str, ...] = field(default_factory=tuple)


def _pretrain(c, t):
    return ["pretrain", "--config", "pretrain_synthetic", "--out", t, "--quiet", f"data.root={c.world}", *TINY]


def _extract(c, t, *extra):
    return ["extract", "--checkpoint", c.ckpt, "--videos", c.list, "--out", t, "--no-progress", *extra]


ROWS = [
    Row("demo --out", "demo", "--out", "dir", lambda c, t: ["demo", "--out", t, "--preset", "tiny", "--quiet"],
        user=("notes.txt", "results.json", "plots/training_curves.png"), needles=("results.json",)),
    Row("ablate --out", "ablate", "--out", "dir", lambda c, t: ["ablate", "--out", t, "--preset", "tiny", "--quiet"],
        user=("notes.txt", "ablation.json", "eval/notes.txt"), needles=("ablation.json",)),
    Row("synth --out", "synth", "--out", "dir", lambda c, t: ["synth", "--out", t, "--quiet"],
        user=("top.txt", "videos/my_own.mp4", "grounding/notes.txt"), force=("--force",)),
    Row("backbone --out", "backbone", "--out", "file",
        lambda c, t: ["backbone", "--data", c.world, "--out", t, "--width", "8", "--steps", "1"],
        name="mine.safetensors", needles=("--out",)),
    Row("backbone --out (its .json summary)", "backbone", "--out", "file",
        lambda c, t: ["backbone", "--data", c.world, "--out", t.with_suffix(".safetensors"), "--width", "8",
                      "--steps", "1"], name="mine.json", needles=("summary",)),
    Row("pretrain --out", "pretrain", "--out", "dir", _pretrain,
        user=("notes.txt", "config.yaml", "checkpoints/mine.txt"), needles=("config.yaml",)),
    Row("evaluate --out", "evaluate", "--out", "dir",
        lambda c, t: ["evaluate", "grounding", "--checkpoint", c.ckpt, "--data", c.world, "--out", t, "--quiet"],
        user=("notes.txt", "metrics.json", "grounding_predictions.jsonl"), needles=("not written by locvtp",)),
    Row("score --out", "score", "--out", "file",
        lambda c, t: ["score", "grounding", "--predictions", GOLDEN / "predictions.jsonl", "--annotations",
                      GOLDEN / "annotations.json", "--out", t], needles=("--out",)),
    Row("extract --out (h5)", "extract", "--out", "file", lambda c, t: _extract(c, t), name="mine.h5",
        force=("--overwrite",)),
    Row("extract --out (npy-dir)", "extract", "--out", "dir", lambda c, t: _extract(c, t, "--format", "npy-dir"),
        user=("notes.txt", "_info/mine.json"), force=("--overwrite",)),
    Row("extract --failures", "extract", "--failures", "file",
        lambda c, t: _extract(c, t.with_name("f.h5"), "--failures", t), name="mine.jsonl", force=("--overwrite",),
        needles=("--failures",)),
    Row("merge --out", "merge", "--out", "file", lambda c, t: ["merge", c.shard, "--out", t, "--no-progress"],
        name="mine.h5", force=("--overwrite",)),
    Row("merge --failures", "merge", "--failures", "file",
        lambda c, t: ["merge", c.shard, "--out", t.with_name("m.h5"), "--failures", t, "--no-progress"],
        name="mine.jsonl", needles=("--failures",)),
    Row("ground --plot", "ground", "--plot", "file",
        lambda c, t: ["ground", "--checkpoint", c.ckpt, c.video, "a red circle", "--plot", t],
        name="mine.png", needles=("--plot",)),
    Row("index --out", "index", "--out", "dir", lambda c, t: ["index", "--features", c.shard, "--out", t,
                                                              "--no-progress"],
        user=("notes.txt", "sub/mine.txt")),
]

# Output arguments with no row, and why (each is checked by the test that lists the parsers).
NO_ROW = {
    ("serve", "--work-dir"): "serve writes only content-hash names (uploads/<32 hex>.ext, media/, thumbs/, "
                             "embeddings/) and never replaces a file there; its server cannot run in-process here",
}

OUTPUT_DESTS = {"out", "plot", "work_dir", "failures", "json", "report", "save"}


def _plant(row: Row, tmp_path: Path) -> tuple[Path, dict[Path, bytes]]:
    target = tmp_path / (row.name if row.kind == "file" else "mine")
    files = {}
    for rel in row.user:
        f = target / rel if rel else target
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(USER + rel.encode())
        files[f] = f.read_bytes()
    return target, files


CASES = [pytest.param(r, f, id=f"{r.id}{' ' + ' '.join(r.force) if f else ''}") for r in ROWS
         for f in ((False, True) if r.force else (False,))]


@pytest.mark.parametrize("row,forced", CASES)
def test_a_user_file_is_never_replaced(row, forced, ctx, tmp_path, capsys):
    target, files = _plant(row, tmp_path)
    before = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    res = run_cli([*row.argv(ctx, target), *(row.force if forced else ())], capsys)
    assert_one_line_error(res, row.code, *row.needles)
    assert {f: f.read_bytes() for f in files} == files
    after = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    assert after == before, "the refusal wrote or deleted something"


def test_every_output_argument_has_a_row(monkeypatch):
    """Each command's parser, captured where it parses; every option that names an output has a row."""
    from locvtp.cli import COMMANDS, main

    class Captured(Exception):
        pass

    parsers = {}

    def capture(self, *a, **k):
        raise Captured(self)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", capture)
    for name in COMMANDS:
        try:
            main(["--debug", name, "--help"])
        except Captured as exc:
            parsers[name] = exc.args[0]
    assert set(parsers) == set(COMMANDS), set(COMMANDS) - set(parsers)
    found = {(name, a.option_strings[-1] if a.option_strings[-1].startswith("--out") else a.option_strings[0])
             for name, p in parsers.items() for a in p._actions
             if a.option_strings and a.dest in OUTPUT_DESTS and a.nargs != 0}  # a path, not a switch (synth --json)
    covered = {(r.command, r.arg) for r in ROWS} | set(NO_ROW)
    assert found <= covered, f"output arguments without a row in ROWS: {sorted(found - covered)}"
    assert covered <= found, f"rows for arguments the parsers no longer have: {sorted(covered - found)}"


# ------------------------------------------------------------------------------------------------ ours replaced
def test_our_own_score_and_plot_are_replaced_atomically(ctx, tmp_path, capsys):
    """A file an earlier run wrote is replaced (new inode: os.replace, never rewritten in place); once a user
    edits it, it is theirs and refused."""
    out = tmp_path / "s.json"
    argv = ROWS[[r.id for r in ROWS].index("score --out")].argv(ctx, out)
    for _ in range(2):
        ino = out.stat().st_ino if out.exists() else None
        assert run_cli(argv, capsys).code == 0
        assert json.loads(out.read_text())["metrics"] and out.stat().st_ino != ino
    out.write_text(out.read_text() + " ")
    assert_one_line_error(run_cli(argv, capsys), 2, "--out", "not written by locvtp")
    plot = tmp_path / "g.png"
    argv = ROWS[[r.id for r in ROWS].index("ground --plot")].argv(ctx, plot)
    for _ in range(2):
        ino = plot.stat().st_ino if plot.exists() else None
        res = run_cli(argv, capsys)
        assert res.code == 0, res.err
        assert plot.read_bytes()[:4] == b"\x89PNG" and plot.stat().st_ino != ino
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name or p.name.endswith(".lock")]


def test_synth_force_replaces_its_own_world_and_keeps_a_file_beside_it(tmp_path, capsys):
    out = tmp_path / "w"
    assert run_cli(["synth", "--out", out, "--quiet"], capsys).code == 0
    (out / "top.txt").write_bytes(USER)
    assert_one_line_error(run_cli(["synth", "--out", out, "--seed", "1", "--quiet"], capsys), 2, "--force")
    assert run_cli(["synth", "--out", out, "--seed", "1", "--quiet", "--force"], capsys).code == 0
    assert json.loads((out / "manifest.json").read_text())["seed"] == 1 and (out / "top.txt").read_bytes() == USER


# ------------------------------------------------------------------------------------------------ OS failures
def test_parent_of_out_is_a_file_names_the_output(ctx, tmp_path, capsys):
    """Was `[Errno 17] File exists: 'afile'` (the lock's mkdir)."""
    (tmp_path / "afile").write_bytes(USER)
    score = ROWS[[r.id for r in ROWS].index("score --out")].argv
    for argv in (_extract(ctx, tmp_path / "afile" / "f.h5"), score(ctx, tmp_path / "afile" / "s.json"),
                 ["index", "--features", ctx.shard, "--out", tmp_path / "afile" / "idx", "--no-progress"]):
        line = assert_one_line_error(run_cli(argv, capsys), *((2, "afile", "not a directory") if argv[0] == "score"
                                                               else (1, "afile: is a file, where a directory is needed")))
        assert "Errno" not in line, line
    assert (tmp_path / "afile").read_bytes() == USER


def test_output_lock_errors_name_the_output_not_the_lock(tmp_path):
    from locvtp.errors import OutputError
    from locvtp.files import OutputLock

    (tmp_path / "afile").write_bytes(USER)
    with pytest.raises(OutputError) as err:
        OutputLock(tmp_path / "afile" / "out.h5", "extract").acquire()
    msg = str(err.value)
    assert "afile/out.h5" in msg and "afile: is a file, where a directory is needed" in msg and ".lock" not in msg


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder_names_the_output(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        res = run_cli(["score", "grounding", "--predictions", GOLDEN / "predictions.jsonl", "--annotations",
                       GOLDEN / "annotations.json", "--out", ro / "s.json"], capsys)
        line = assert_one_line_error(res, 1, "--out", str(ro / "s.json"))
        assert ".lock" not in line
    finally:
        ro.chmod(0o755)


# ------------------------------------------------------------------------------------------------ the ledger
def _write(path: Path, text: str, command: str = "score") -> Path:
    from locvtp.files import write_owned_text

    return write_owned_text(path, text, command)


def test_ledger_ours_is_replaced_a_changed_file_is_not(tmp_path):
    from locvtp.errors import NotOwnedError
    from locvtp.files import check_file_output, file_writer, read_ledger

    f = _write(tmp_path / "a.json", "1")
    assert file_writer(f) == "score" and check_file_output(f, "score", "--out") == f
    assert set(read_ledger(tmp_path)) == {"a.json"}
    _write(f, "22", "ground")  # any locvtp command may replace a file locvtp wrote
    assert f.read_text() == "22" and file_writer(f) == "ground"
    for change in (lambda: f.write_text("33"),                          # edited in place (size, mtime)
                   lambda: os.utime(f, ns=(1, 1)),                      # touched
                   lambda: (f.unlink(), f.write_text("22"))):           # replaced by the user's own file (inode)
        _write(f, "22")
        change()
        assert file_writer(f) is None
        with pytest.raises(NotOwnedError, match="--out .*a.json exists and was not written by locvtp"):
            check_file_output(f, "score", "--out")
        with pytest.raises(NotOwnedError):
            _write(f, "new")
        assert f.read_text() in ("33", "22")
        f.unlink()


def test_ledger_unreadable_claims_nothing(tmp_path):
    from locvtp.errors import NotOwnedError
    from locvtp.files import LEDGER, file_writer

    f = _write(tmp_path / "a.json", "1")
    for bad in ("not json", "[]", '{"files": []}', '{"files": {"a.json": 3}}'):
        (tmp_path / LEDGER).write_text(bad)
        assert file_writer(f) is None
        with pytest.raises(NotOwnedError):
            _write(f, "2")
        assert f.read_text() == "1"


def test_a_link_a_directory_and_a_missing_parent_are_refused(tmp_path):
    from locvtp.errors import NotOwnedError, UsageError
    from locvtp.files import check_file_output

    real = _write(tmp_path / "real.json", "1")
    (tmp_path / "link.json").symlink_to(real)
    (tmp_path / "d").mkdir()
    with pytest.raises(NotOwnedError, match="link.json"):
        check_file_output(tmp_path / "link.json", "score", "--out")
    with pytest.raises(NotOwnedError, match="is a directory"):
        check_file_output(tmp_path / "d", "score", "--out")
    with pytest.raises(UsageError, match="does not exist"):
        check_file_output(tmp_path / "nowhere" / "x.json", "score", "--out")
    assert check_file_output(tmp_path / "nowhere" / "x.json", "score", "--out", make_parent=True)


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing(tmp_path):
    from locvtp.files import LEDGER, owned_file

    f = _write(tmp_path / "a.json", "old")
    with pytest.raises(RuntimeError):
        with owned_file(f, "score") as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert f.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == [LEDGER, "a.json"]


def test_concurrent_writers_into_one_folder_lose_no_ledger_entry(tmp_path):
    """The ledger is read, merged and replaced under its lock: 8 threads × 5 files, every one recorded."""
    from locvtp.files import LEDGER, file_writer, read_ledger

    def work(i):
        for j in range(5):
            _write(tmp_path / f"t{i}_{j}.json", f"{i} {j}")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(read_ledger(tmp_path)) == 40
    assert all(file_writer(p) == "score" for p in tmp_path.glob("t*.json"))
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == [LEDGER]  # no lock left


def test_no_lock_file_stays_behind_an_extraction(ctx, tmp_path, capsys):
    """Issue 26: hidden `.locvtp-manifest.json.lock` files stayed in npy-dir / npz-dir outputs."""
    out = tmp_path / "feats"
    for extra in ((), ("--overwrite",)):
        res = run_cli(_extract(ctx, out, "--format", "npz-dir", *extra), capsys)
        assert res.code == 0, res.err
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".lock")]
    assert len(list(out.glob("*.npz"))) == 1
