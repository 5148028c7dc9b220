"""The command line's error contract: one line for a user's mistake, a traceback only for a bug or --debug."""
from __future__ import annotations

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
    (IsADirectoryError(21, "Is a directory", "/tmp"), 1, "Is a directory: '/tmp'"),
    (PermissionError(13, "Permission denied", "/root/x"), 1, "/root/x"),
    (OSError(28, "No space left on device", "/data/out.h5"), 1, "/data/out.h5"),
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
    from locvtp.data.datasets import BadSampleError
    from locvtp.data.formats import FormatError, MissingFileError
    from locvtp.data.synthetic import WorldExistsError
    from locvtp.data.video import VideoError
    from locvtp.downstream.common import DownstreamError
    from locvtp.extract import ExtractError
    from locvtp.features import FeatureError
    from locvtp.model.text import TextEncoderError
    from locvtp.model.video import VideoEncoderError
    from locvtp.search import IndexError_

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
