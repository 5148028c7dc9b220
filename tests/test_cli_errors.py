"""The command line's error contract: one line for a user's mistake, a traceback only for a bug or --debug."""
from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest

from locvtp import cli
from locvtp.cliargs import ArgumentParser, fraction, nonnegative_int, positive_float, positive_int
from locvtp.errors import LocVTPError, UsageError

from cli_helpers import assert_one_line_error, run_cli


@pytest.fixture
def fake_command(monkeypatch):
    """Register a `locvtp fake` command that raises whatever the test puts in ``box``."""
    box: dict = {}

    def fake_main(argv):
        raise box["exc"]

    module = type(sys)("locvtp_fake_cmd")
    module.main = fake_main
    monkeypatch.setitem(sys.modules, "locvtp_fake_cmd", module)
    monkeypatch.setitem(cli.COMMANDS, "fake", ("locvtp_fake_cmd:main", "test"))
    monkeypatch.delenv("LOCVTP_DEBUG", raising=False)
    return box


@pytest.mark.parametrize("exc, code, needle", [
    (LocVTPError("feats.h5: video 'v1' is broken\nsecond line"), 1, "feats.h5: video 'v1' is broken second line"),
    (UsageError("--top-k must be >= 1"), 2, "--top-k must be >= 1"),
    (FileNotFoundError(2, "No such file or directory", "/nope/x.json"), 1, "/nope/x.json"),
    (IsADirectoryError(21, "Is a directory", "/tmp"), 1, "/tmp: is a directory, not a file (EISDIR)"),
    (PermissionError(13, "Permission denied", "/root/x"), 1, "/root/x: permission denied (EACCES)"),
    (OSError(28, "No space left on device", "/data/out.h5"), 1, "/data/out.h5: no space left on the device (ENOSPC)"),
    # issue 26: every errno in words, naming the user's path
    (OSError(errno.ELOOP, "Too many levels of symbolic links", "LOOP"), 1,
     "LOOP: a symbolic link that loops back to itself (ELOOP)"),
    (NotADirectoryError(errno.ENOTDIR, "Not a directory", "afile/x.h5"), 1,
     "afile/x.h5: a part of this path is a file, not a directory (ENOTDIR)"),
    (FileExistsError(errno.EEXIST, "File exists", "/nonexistent/zz"), 1, "/nonexistent/zz: already exists (EEXIST)"),
    (OSError(errno.EROFS, "Read-only file system", "/data/x.json"), 1, "/data/x.json: read-only file system (EROFS)"),
    (OSError(errno.EFBIG, "File too large", "/data/x.h5"), 1, "/data/x.h5: file too large"),
    # a hidden lock or temporary of an output is reported as the output the user named
    (OSError(errno.EROFS, "Read-only file system", "/data/.feats.h5.lock"), 1, "/data/feats.h5: read-only"),
    (OSError(errno.ENOSPC, "No space left on device", "/data/.feats.h5.tmp-12-ab12cd34"), 1,
     "/data/feats.h5: no space left on the device (ENOSPC)"),
    (OSError(errno.EXDEV, "Invalid cross-device link", "/a/x", None, "/b/x"), 1, "/a/x -> /b/x: not on the same"),
    # no file name (numpy / h5py writes): one line when the errno is about the machine
    (OSError(errno.ENOSPC, "No space left on device"), 1, "error: no space left on the device (ENOSPC)"),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), 1, "disk quota exceeded (EDQUOT)"),
    # a message of its own (not the C library's) is kept
    (FileNotFoundError(errno.ENOENT, "no tokenizer.json in this run", "runs/a"), 1,
     "runs/a: no tokenizer.json in this run (ENOENT)"),
])
def test_user_errors_are_one_line(fake_command, capsys, exc, code, needle):
    fake_command["exc"] = exc
    line = assert_one_line_error(run_cli(["fake"], capsys), code, needle)
    assert line.startswith("locvtp fake: error: ")


def test_bugs_keep_their_traceback(fake_command, capsys):
    fake_command["exc"] = TypeError("a bug")
    with pytest.raises(TypeError):
        cli.main(["fake"])
    fake_command["exc"] = OSError("no filename: an internal error")  # not user-caused, names nothing
    with pytest.raises(OSError):
        cli.main(["fake"])
    fake_command["exc"] = OSError(errno.EINVAL, "Invalid argument")  # an errno of a wrong call, no file: a bug
    with pytest.raises(OSError):
        cli.main(["fake"])


def test_mkdir_through_a_file_says_so(fake_command, capsys, tmp_path):
    """`--out afile/x.h5` whose parent is a file: Python's "[Errno 17] File exists: 'afile'" read as if the output
    existed; the line now says that afile is a file where a directory is needed."""
    (tmp_path / "afile").write_text("mine\n")
    with pytest.raises(FileExistsError) as e:
        (tmp_path / "afile").mkdir(parents=True, exist_ok=True)  # what `--out afile/x.h5` makes of its parent
    fake_command["exc"] = e.value
    assert_one_line_error(run_cli(["fake"], capsys), 1, f"{tmp_path / 'afile'}: is a file (or link), where a "
                          "directory is needed (EEXIST)")


def test_symlink_loop_is_an_os_error_naming_the_path(tmp_path):
    """files.overlaps on a self-looping link: OSError(ELOOP) naming the path the caller gave (Python < 3.13
    raises RuntimeError("Symlink loop") from Path.resolve, which was a 35-line traceback)."""
    from locvtp.files import check_apart, overlaps

    loop = tmp_path / "LOOP"
    loop.symlink_to(loop)
    for a, b in ((loop, tmp_path), (tmp_path / "x", loop)):
        with pytest.raises(OSError) as e:
            overlaps(a, b)
        assert e.value.errno == errno.ELOOP and e.value.filename == str(loop), e.value
    with pytest.raises(OSError, match="LOOP"):
        check_apart(tmp_path / "out.h5", {"--videos": loop})
    assert overlaps(tmp_path / "a", tmp_path / "a" / "b") == "contains"  # ordinary paths unchanged


def test_writing_names_the_users_output(tmp_path):
    """errors.writing: an OS failure without a file name (numpy), with a temporary's name, or HDF5's text with
    an errno becomes one OutputError naming the argument; anything else goes through unchanged."""
    from locvtp.errors import OutputError, writing

    out = tmp_path / "feats.h5"
    cases = [OSError(errno.ENOSPC, "No space left on device"),
             OSError(errno.EROFS, "Read-only file system", str(tmp_path / ".feats.h5.tmp-1-0123abcd")),
             RuntimeError("Can't decrement id ref count (file write failed: ..., errno = 28, error message = 'x')")]
    for exc in cases:
        with pytest.raises(OutputError) as e:
            with writing(out, "--out", note="rerun to resume"):
                raise exc
        msg = str(e.value)
        assert msg.startswith(f"--out {out}: cannot write: ") and msg.endswith("; rerun to resume"), msg
        assert "tmp-" not in msg and isinstance(e.value, OSError) and e.value.errno in (errno.ENOSPC, errno.EROFS)
        assert cli.error_line("extract", e.value) == (f"locvtp extract: error: {msg}", 1)
    for exc in (RuntimeError("a bug, no errno"), UsageError("--x: bad"), ValueError("v")):
        with pytest.raises(type(exc)):
            with writing(out, "--out"):
                raise exc


def test_unknown_command_suggests_the_nearest(capsys):
    res = run_cli(["grond", "--checkpoint", "c"], capsys)
    line = assert_one_line_error(res, 2, "unknown command 'grond'", "did you mean 'ground'?")
    assert line.startswith("locvtp: error: ")
    res = run_cli(["serch"], capsys)
    assert_one_line_error(res, 2, "did you mean 'search'?")
    res = run_cli(["zzzzzz"], capsys)
    assert "did you mean" not in assert_one_line_error(res, 2, "unknown command 'zzzzzz'", "locvtp --help")


@pytest.mark.parametrize("argv", [["--debug", "fake", "a"], ["fake", "--debug", "a"], ["fake", "a", "--debug"]])
def test_debug_in_any_position(fake_command, monkeypatch, argv):
    """`locvtp ground ... --debug` shows the stack like `locvtp --debug ground ...`, and the command never sees
    the flag (its parser would refuse it)."""
    seen = []
    module = sys.modules["locvtp_fake_cmd"]

    def fake_main(rest):
        seen.append(list(rest))
        raise UsageError("bad")

    monkeypatch.setattr(module, "main", fake_main)
    with pytest.raises(UsageError):
        cli.main(argv)
    assert seen == [["a"]]
    assert cli.split_debug(["fake", "--", "--debug"]) == (["fake", "--", "--debug"], False)  # after --: an argument


def test_command_help_still_works(capsys):
    res = run_cli(["ground", "--help"], capsys)
    assert res.code == 0 and "usage: locvtp ground" in res.out and res.err == ""
    res = run_cli(["--debug", "ground", "--help"], capsys)
    assert res.code == 0 and "usage: locvtp ground" in res.out


def test_help_states_each_default_once(capsys):
    """evaluate --help printed "(default: DATA/videos) (default: None)": a default is now added only when the
    help does not state it already and it is not None/False/[]."""
    for cmd in ("evaluate", "backbone"):
        res = run_cli([cmd, "--help"], capsys)
        assert res.code == 0, res.err
        text = " ".join(res.out.split())
        assert "(default: None)" not in text and "(default: False)" not in text and "(default: [])" not in text
        for opt in text.split(" --")[1:]:
            assert opt.lower().count("default") <= 1, opt
    res = run_cli(["evaluate", "--help"], capsys)
    text = " ".join(res.out.split())
    assert "(default: DATA/videos)" in text and "mps (default: cpu)" in text


def test_library_warnings_name_the_command(fake_command, capsys, monkeypatch):
    """A warning from library code (a deprecated config key) reads `locvtp CMD: warning:` under a command, and
    `locvtp` alone outside one (the command is forgotten when it returns)."""
    from locvtp import cliargs
    from locvtp.config import rename_deprecated_keys

    monkeypatch.setattr(cliargs, "_COMMAND", [])

    def fake_main(rest):
        rename_deprecated_keys({"objective": {"window": 3}}, where="x.yaml")
        return 0

    monkeypatch.setattr(sys.modules["locvtp_fake_cmd"], "main", fake_main)
    res = run_cli(["fake"], capsys)
    assert res.code == 0 and res.err.startswith("locvtp fake: warning: x.yaml: objective.window"), res.err
    assert cliargs.current_prog() == "locvtp"
    rename_deprecated_keys({"objective": {"window": 3}}, where="cfg.yaml")
    assert capsys.readouterr().err.startswith("locvtp: warning: cfg.yaml: objective.window is deprecated")
    cliargs.set_command("pretrain")
    rename_deprecated_keys({"objective": {"window": 3}}, where="cfg.yaml")
    assert capsys.readouterr().err.startswith("locvtp pretrain: warning: cfg.yaml: objective.window is deprecated")


def test_debug_flag_and_env_show_the_stack(fake_command, monkeypatch):
    fake_command["exc"] = UsageError("bad")
    with pytest.raises(UsageError):
        cli.main(["--debug", "fake"])
    monkeypatch.setenv("LOCVTP_DEBUG", "1")
    with pytest.raises(UsageError):
        cli.main(["fake"])
    monkeypatch.setenv("LOCVTP_DEBUG", "0")
    assert cli.main(["fake"]) == 2


def test_keyboard_interrupt_is_one_line(fake_command, capsys):
    fake_command["exc"] = KeyboardInterrupt()
    res = run_cli(["fake"], capsys)
    assert res.code == 130 and res.err_lines == ["locvtp fake: interrupted"]


def test_every_package_error_is_a_locvtp_error():
    from locvtp.checkpoint import CheckpointError
    from locvtp.config import ConfigError
    from locvtp.training.records import BadSampleError
    from locvtp.data.formats import FormatError, MissingFileError
    from locvtp.world.generate import WorldExistsError
    from locvtp.data.video import VideoError
    from locvtp.downstream.common import DownstreamError
    from locvtp.featurestore.writer import ExtractError
    from locvtp.featurestore.reader import FeatureError
    from locvtp.model.text import TextEncoderError
    from locvtp.model.video import VideoEncoderError
    from locvtp.index import IndexError_

    for cls, builtin in [(CheckpointError, OSError), (ConfigError, ValueError), (BadSampleError, RuntimeError),
                         (FormatError, ValueError), (MissingFileError, FileNotFoundError),
                         (WorldExistsError, FileExistsError), (VideoError, OSError), (DownstreamError, ValueError),
                         (ExtractError, RuntimeError), (FeatureError, RuntimeError),
                         (TextEncoderError, ValueError), (VideoEncoderError, ValueError),
                         (IndexError_, RuntimeError)]:
        assert issubclass(cls, LocVTPError) and issubclass(cls, builtin), cls
    assert issubclass(ConfigError, UsageError)


def test_argument_parser_errors_are_one_line(capsys):
    p = ArgumentParser(prog="locvtp thing")
    p.add_argument("--k", type=positive_int)
    p.add_argument("--n", type=nonnegative_int)
    p.add_argument("--iou", type=fraction)
    p.add_argument("--sec", type=positive_float)
    assert p.parse_args(["--k", "3", "--n", "0", "--iou", "1", "--sec", "0.5"]).k == 3
    for argv, needle in [(["--k", "0"], "argument --k: must be > 0, got 0"),
                         (["--n", "-1"], "argument --n: must be >= 0, got -1"),
                         (["--iou", "5"], "argument --iou: must be >= 0 and <= 1, got 5"),
                         (["--sec", "nan"], "argument --sec: expected a finite number, got 'nan'"),
                         (["--k", "x"], "argument --k: expected an integer, got 'x'"),
                         (["--bogus"], "unrecognized arguments: --bogus")]:
        with pytest.raises(SystemExit) as e:
            p.parse_args(argv)
        assert e.value.code == 2
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert len(err) == 1 and err[0].startswith("locvtp thing: error: ") and needle in err[0], err


def test_resolve_device_without_cuda(monkeypatch):
    import torch

    from locvtp.device import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    assert resolve_device("CPU") == "cpu"
    with pytest.raises(UsageError, match="--device cuda: CUDA is not available on this machine"):
        resolve_device("cuda")
    with pytest.raises(UsageError, match="train.device cuda:1: CUDA is not available"):
        resolve_device("cuda:1", what="train.device")
    with pytest.raises(UsageError, match="expected auto, cpu, cuda"):
        resolve_device("gpu")


def test_console_script_prints_no_traceback(tmp_path):
    """The installed entry point, end to end: a missing checkpoint is one line, exit 1."""
    r = subprocess.run([sys.executable, "-m", "locvtp.cli", "ground", "--checkpoint", str(tmp_path / "nope"),
                        str(tmp_path / "v.mp4"), "a query"], capture_output=True, text=True, timeout=120)
    assert "Traceback" not in r.stderr, r.stderr
    assert r.returncode in (1, 2), r
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "nope" in lines[0], r.stderr
