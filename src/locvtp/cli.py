"""`locvtp` entry point.

Each sub-command lives in its own module of :mod:`locvtp.commands` and exposes ``main(argv: list[str]) -> int``;
the table below is the only place that knows them, and modules are imported lazily so `locvtp synth` does not
import torch models and `locvtp --help` is instant.

A user's mistake is one line, never a stack trace: the package's own errors (:mod:`locvtp.errors`) and the
OS errors a user causes (a missing file, a directory where a file was expected, no permission, a file that is
not UTF-8) are printed as ``locvtp CMD: error: MESSAGE`` with exit code 2 (usage) or 1 (failure). Anything
else is a bug and keeps its traceback. ``locvtp --debug CMD ...`` (``--debug`` anywhere on the line) or
``LOCVTP_DEBUG=1`` shows the stack of every error; an unknown command is one line suggesting the nearest one.
"""
from __future__ import annotations

import importlib
import os
import sys

from locvtp.errors import LocVTPError

# OS errors that mean "the user pointed at the wrong thing"; others (ENOSPC, EIO, ...) are reported the same
# way because the message names the file, but they are failures (exit 1), not usage errors.
_USER_OS_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError, FileExistsError)

COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("locvtp.commands.demo:main", "generate the synthetic world, pre-train coarse-only vs LocVTP, evaluate, report"),
    "ablate": ("locvtp.commands.demo:ablate_main", "component ablation table on the synthetic world"),
    "synth": ("locvtp.commands.synth:main", "write the procedural video-text world (MP4s + real annotation formats)"),
    "backbone": ("locvtp.commands.backbone:main", "supervised pre-training of the tiny3d backbone on labelled action videos"),
    "prepare": ("locvtp.commands.prepare:main", "convert a pre-training corpus once (captions, probes) for pretrain at scale"),
    "pretrain": ("locvtp.commands.pretrain:main", "pre-train LocVTP (single process or torchrun DDP)"),
    "evaluate": ("locvtp.commands.evaluate:main", "retrieval | grounding | steps | segmentation | all"),
    "score": ("locvtp.commands.score:main", "metrics of a predictions file against its annotations (no model needed)"),
    "extract": ("locvtp.commands.extract:main", "clip features of videos to HDF5 / npy-dir / npz-dir"),
    "merge": ("locvtp.commands.extract:merge_main", "merge feature shards (--shard jobs, torchrun ranks)"),
    "ground": ("locvtp.commands.ground:main", "zero-shot grounding of a sentence in one video"),
    "index": ("locvtp.commands.search:index_main", "build a moment-search index over clip features"),
    "search": ("locvtp.commands.search:search_main", "search a corpus index for moments matching a query"),
    "serve": ("locvtp.commands.serve:main", "web page + JSON API: ground sentences in videos, search moments"),
}


def _usage() -> str:
    lines = ["usage: locvtp COMMAND [options] [--debug]   (locvtp COMMAND --help for details)", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "--debug (or LOCVTP_DEBUG=1): show the stack trace of an error instead of its one-line message"]
    return "\n".join(lines)


def debug_enabled() -> bool:
    return os.environ.get("LOCVTP_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def error_line(command: str, exc: BaseException) -> tuple[str, int]:
    """The one line and exit code for an error a user caused, or ("", 0) for one that is a bug.

    OS errors: one naming a file is the user's (a missing input, a read-only output, a symlink loop ...); one
    without a file name is the user's when its errno is about the machine (``ENOSPC``, ``EROFS``, ``EACCES`` ...:
    :data:`locvtp.errors.ENVIRONMENT_ERRNOS`), else a bug. The errno is said in words, with its name."""
    from locvtp.errors import ENVIRONMENT_ERRNOS, describe_os_error, os_errno

    if isinstance(exc, LocVTPError):
        msg, code = str(exc), int(getattr(exc, "exit_code", 1))
    elif isinstance(exc, UnicodeDecodeError):
        msg, code = f"a file is not valid UTF-8 text ({exc.reason} at byte {exc.start})", 1
    elif isinstance(exc, OSError) and (isinstance(exc, _USER_OS_ERRORS) or exc.filename is not None
                                       or os_errno(exc) in ENVIRONMENT_ERRNOS):
        msg, code = describe_os_error(exc), 1
    else:
        return "", 0
    msg = " ".join(msg.split()) or type(exc).__name__
    return f"locvtp {command}: error: {msg}", code


def split_debug(argv: list[str]) -> tuple[list[str], bool]:
    """``argv`` without its ``--debug`` flags (anywhere before a ``--``: ``locvtp ground ... --debug`` is as natural
    as ``locvtp --debug ground ...``), and whether there was one. No command has a ``--debug`` of its own."""
    end = argv.index("--") if "--" in argv else len(argv)
    kept = [a for a in argv[:end] if a != "--debug"]
    return kept + argv[end:], len(kept) != end


def unknown_command(name: str) -> str:
    """The one line for a command that does not exist, with the nearest one when a typo is likely."""
    import difflib

    near = difflib.get_close_matches(name, list(COMMANDS), n=1, cutoff=0.6)
    hint = f"did you mean {near[0]!r}? " if near else ""
    return f"locvtp: error: unknown command {name!r}; {hint}(commands: {', '.join(COMMANDS)}; locvtp --help)"


def main(argv: list[str] | None = None) -> int:
    argv, debug = split_debug(list(sys.argv[1:] if argv is None else argv))
    debug = debug or debug_enabled()
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from locvtp import __version__

        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(unknown_command(name), file=sys.stderr)
        return 2
    target = COMMANDS[name][0]
    module_name, func_name = target.split(":")
    from locvtp.cliargs import set_command

    previous = set_command(name)  # library warnings then read `locvtp NAME: warning: ...` (cliargs.current_prog)
    try:
        module = importlib.import_module(module_name)
        rc = getattr(module, func_name)(rest)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"locvtp {name}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001  (user errors become one line; bugs are re-raised)
        line, code = error_line(name, exc)
        if not line or debug:
            raise
        print(line, file=sys.stderr)
        return code
    finally:
        set_command(previous)
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
