"""Running ``locvtp`` in-process for the user-mistake tables: what a user sees on stderr and the exit code.

Why in-process: ``locvtp.cli.main`` is exactly what the console script calls, minus the interpreter start-up;
an exception escaping it is a traceback the user would see, so the test fails on it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return [ln for ln in self.err.splitlines() if ln.strip()]


def run_cli(argv: Sequence[str], capsys) -> CliResult:
    from locvtp.cli import main

    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse's own exit (usage errors: 2, --help: 0)
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    cap = capsys.readouterr()
    return CliResult(int(code), cap.out, cap.err)


def assert_one_line_error(res: CliResult, code: int, *needles: str) -> str:
    """Exactly one non-empty line on stderr, no traceback, the expected exit code, and the line names each of
    ``needles`` (a file, key or argument). Returns the line."""
    assert "Traceback" not in res.err, res.err
    assert res.code == code, (res.code, res.err)
    assert len(res.err_lines) == 1, res.err
    line = res.err_lines[0]
    assert "error" in line, line
    for n in needles:
        assert str(n) in line, (n, line)
    return line
