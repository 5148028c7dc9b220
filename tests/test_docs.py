"""Docs that cannot drift: every command block of README.md and docs/*.md runs here, and its printed output is
compared with what the command prints now.

* Blocks: fences ```bash, ```sh and ```console (tests/docs_blocks.py), one test case each, id ``file:line``, run in
  document order in one working directory per doc file (tests/docs_sandbox.py), on the tiny world. Real data the
  docs name is mapped to a tiny stand-in by ONE table, ``docs_sandbox.SUBSTITUTIONS`` (shipped configs get tiny
  sizes and steps, ``TINY_CONFIG``); nothing else of a command is changed.
* bash / sh blocks run as one ``bash -e -o pipefail`` script: every command must succeed. A ```text block right
  after one (only blank lines between) is its expected output.
* console blocks: each ``$ `` line (with its ``\\`` continuation lines) is a command, the lines up to the next
  ``$ `` its expected output (stdout and stderr as a terminal shows them; empty = prints nothing). All commands of
  a block run in one shell (variables, ``$?``, ``&``). A command may fail (exit != 0) only when its expected output
  shows an ``error:`` line or a traceback, and then it must fail.
* Directives, an HTML comment right before a fence (keep them rare):
  ``<!-- docs-test: skip REASON -->`` (not run; the reason is printed with ``pytest -rs``),
  ``<!-- docs-test: env NAME=VALUE ... -->`` (environment of the block),
  ``<!-- docs-test: timeout SECONDS -->`` (default 240),
  ``<!-- docs-test: serve -->`` (a ``locvtp serve`` in the block is started in the background, probed with
  ``GET /api/health`` and stopped after the file's last block: tests/docs_serve.py).
* Output comparison, after these normalisations of both sides (:func:`normalise`): the sandbox's paths are given
  back the docs' names; a decimal followed by a time or rate unit (``1.6 s``, ``3.5 ms``, ``188.0 clips/s``) is
  ``<time>``; ``(pid N)`` and a temporary's ``tmp-PID-HEX`` are ``<pid>``; ``torch X.Y.Z+tag`` is
  ``torch <version>``; a 12-hex checkpoint digest before ``…`` is ``<sha>``. Then, in the expected text, a line
  that is only ``...`` (or ``…``) stands for any number of lines and ``...`` / ``…`` inside a line for any text;
  every other character must be equal, and every number equal to 6 significant digits (float noise between
  machines; any real change of a figure fails).
"""
from __future__ import annotations

import math
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from docs_blocks import REPO, Block, command_blocks, doc_files, parse_blocks
from docs_sandbox import PREPARED, Sandbox

pytestmark = pytest.mark.slow

BLOCKS = command_blocks()
LAST_OF_FILE = {b.path: b for b in BLOCKS}
DEFAULT_TIMEOUT = 240

# The parser must keep finding these (a regression that finds no block would otherwise pass silently):
# file -> number of command blocks (bash / sh / console).
EXPECTED_COMMAND_BLOCKS = {
    "README.md": 4,
    "docs/data.md": 1,
    "docs/evaluation.md": 3,
    "docs/features.md": 2,
    "docs/method.md": 2,
    "docs/predictor.md": 3,
    "docs/results.md": 8,
    "docs/serve.md": 3,
    "docs/training.md": 10,
    "docs/usage.md": 30,
    "docs/world_versions.md": 3,
}


# ------------------------------------------------------------------------------------------------ comparing
_TIME = re.compile(r"(?<![\w.])\d+\.\d+ ?(?:ms|s|min|clips/s|samples/s|videos/s|it/s)(?![\w/])")
_NUMBER = r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?"
_NUM = re.compile(r"(?<![\w.])" + _NUMBER + r"(?![\w.])")


def normalise(text: str) -> str:
    text = _TIME.sub("<time>", text)
    text = re.sub(r"\(pid \d+\)", "(pid <pid>)", text)
    text = re.sub(r"tmp-\d+-[0-9a-f]+", "tmp-<pid>-<hex>", text)
    text = re.sub(r"torch \d+\.\d+(?:\.\d+)?(?:\+\w+)?", "torch <version>", text)
    text = re.sub(r"\b[0-9a-f]{12}…", "<sha>…", text)
    return "\n".join(ln.rstrip() for ln in text.strip("\n").splitlines())


def _line_pattern(line: str) -> tuple[str, list[str]]:
    """An expected line as a regex: ``...``/``…`` any text, numbers captured (compared afterwards)."""
    parts, numbers = [], []
    for piece in re.split(r"(\.\.\.|…)", line):
        if piece in ("...", "…"):
            parts.append("[^\n]*?")
            continue
        pos = 0
        for m in _NUM.finditer(piece):
            parts.append(re.escape(piece[pos:m.start()]))
            parts.append(f"({_NUMBER})")
            numbers.append(m.group(0))
            pos = m.end()
        parts.append(re.escape(piece[pos:]))
    return "".join(parts), numbers


def _same_number(want: str, got: str) -> bool:
    if want == got:
        return True
    try:
        a, b = float(want), float(got)
    except ValueError:
        return False
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12)


def output_matches(expected: str, actual: str) -> str | None:
    """None when ``actual`` shows what ``expected`` says (rules in the module docstring), else the reason."""
    exp, act = normalise(expected), normalise(actual)
    pattern, numbers = [], []
    for line in exp.splitlines() if exp else []:
        if line.strip() in ("...", "…"):
            pattern.append(r"(?:[^\n]*\n)*?")
            continue
        p, n = _line_pattern(line)
        pattern.append(p + r"\n")
        numbers += n
    m = re.fullmatch("".join(pattern), act + "\n" if act else "", flags=re.S)
    if m is None:
        return "the output differs"
    for want, got in zip(numbers, m.groups()):
        if not _same_number(want, got):
            return f"figure {want} is now {got}"
    return None


# -------------------------------------------------------------------------------------------------- running
def _console_commands(text: str) -> list[tuple[str, str]]:
    """(command, expected output) pairs of a console block."""
    return [(c, o) for c, o, _ in _console_parts(text)]


def _console_parts(text: str) -> list[tuple[str, str, int]]:
    """(command, expected output, index of the command's last line) of a console block."""
    cmds: list[list] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("$ "):
            cmd = [line[2:]]
            while cmd[-1].endswith("\\") and i + 1 < len(lines):
                i += 1
                cmd.append(lines[i])
            cmds.append(["\n".join(cmd), "", i])
        elif cmds:
            cmds[-1][1] += line + "\n"
        elif line.strip():
            raise AssertionError(f"console block: output before the first `$ ` command: {line!r}")
        i += 1
    return [(c, o, end) for c, o, end in cmds]


def update_console_block(block: Block, outputs: dict[int, str]) -> None:
    """LOCVTP_DOCS_UPDATE=1: write the actual outputs of the commands in ``outputs`` (index -> text) into the doc
    in place of what it showed, for a human to review with ``git diff`` (the test still fails this time)."""
    lines = block.text.splitlines()
    parts = _console_parts(block.text)
    for i in sorted(outputs, reverse=True):
        start = parts[i][2] + 1
        stop = parts[i + 1][2] - parts[i + 1][0].count("\n") if i + 1 < len(parts) else len(lines)
        lines[start:stop] = [ln.rstrip() for ln in outputs[i].strip("\n").splitlines()]
    doc = block.path.read_text(encoding="utf-8")
    new = "\n".join(lines) + "\n"
    assert doc.count(block.text) == 1, f"{block.id}: block not found unchanged; rerun the update"
    block.path.write_text(doc.replace(block.text, new), encoding="utf-8")


_MARK = "@@docs-test-end {i} rc="


def _console_script(cmds: list[tuple[str, str]]) -> str:
    """One shell for the whole block; a marker line with the exit code after each command; ``$?`` preserved."""
    out = ["exec 2>&1", "__rc=0"]
    for i, (cmd, _) in enumerate(cmds):
        out.append("( exit $__rc )")
        out.append(cmd)
        out.append(f"__rc=$?; printf '\\n{_MARK}%d@@\\n' $__rc".replace("{i}", str(i)))
    return "\n".join(out) + "\n"


def _run_shell(script: str, cwd: Path, env: dict, timeout: float, strict: bool) -> tuple[int, str]:
    """Run ``script`` in its own process group; afterwards the group is killed (a block's ``cmd &`` jobs end with
    it; the serve directive's server has a session of its own). Exit -1 on timeout."""
    argv = ["bash", "-e", "-o", "pipefail", "-c", script] if strict else ["bash", "-c", script]
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        code = -1
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if code == -1:
        out, _ = proc.communicate()
        out += b"\n[docs-test: timed out after %d s]\n" % int(timeout)
    return code, out.decode("utf-8", errors="replace")


def _shows_error(expected: str) -> bool:
    return bool(re.search(r"^(?:locvtp[\w ]*: error:|Traceback )", expected, flags=re.M))


def run_block(sandbox: Sandbox, block: Block) -> None:
    doc = block.path.relative_to(REPO).as_posix()
    cwd = sandbox.workdir(doc)
    env = sandbox.env()
    env.update({k: sandbox.fill(v) for k, v in block.env().items()})
    if block.directive("serve"):
        env["LOCVTP_DOCS_SERVE"] = str(sandbox.serve_state(doc))
    t = block.directive("timeout")
    timeout = float(t.args) if t else DEFAULT_TIMEOUT
    if block.lang != "console":
        code, out = _run_shell(sandbox.substitute(doc, block.text), cwd, env, timeout, strict=True)
        shown = sandbox.unsubstitute(doc, out)
        assert code == 0, f"{block.id}: exit {code}\n{shown[-6000:]}"
        if block.output is not None:
            why = output_matches(block.output.text, shown)
            assert why is None, f"{block.id}: {why}\n--- expected\n{block.output.text}--- got\n{shown}"
        return
    cmds = _console_commands(block.text)
    code, out = _run_shell(_console_script([(sandbox.substitute(doc, c), o) for c, o in cmds]), cwd, env,
                           timeout, strict=False)
    chunks = re.split(r"\n?@@docs-test-end (\d+) rc=(\d+)@@\n", out)
    done = {int(chunks[k]): (int(chunks[k + 1]), chunks[k - 1]) for k in range(1, len(chunks) - 1, 3)}
    problems, updates = [], {}
    for i, (cmd, expected) in enumerate(cmds):
        if i not in done:
            problems.append(f"$ {cmd}\n  did not finish (exit {code}):\n{sandbox.unsubstitute(doc, out)[-4000:]}")
            break
        rc, got = done[i]
        got = sandbox.unsubstitute(doc, got)
        why = output_matches(expected, got)
        if why is None and rc != 0 and not _shows_error(expected):
            why = f"exit {rc}, but the docs show no error"
        if why is None and rc == 0 and _shows_error(expected):
            why = "exit 0, but the docs show an error"
        if why:
            problems.append(f"$ {cmd}\n  {why} (exit {rc})\n--- expected\n{expected}--- got\n{got}")
            updates[i] = got
    if updates and os.environ.get("LOCVTP_DOCS_UPDATE") == "1":
        update_console_block(block, updates)
    assert not problems, f"{block.id}:\n" + "\n\n".join(problems)


# ----------------------------------------------------------------------------------------------------- tests
@pytest.fixture(scope="module")
def sandbox(tiny_world, tmp_path_factory):
    box = Sandbox(tmp_path_factory.mktemp("docs_sandbox"), tiny_world).build()
    yield box
    box.stop_servers()


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_docs_block(sandbox, block):
    skip = block.directive("skip")
    try:
        if skip is not None:
            pytest.skip(f"{block.id}: {skip.args}")
        run_block(sandbox, block)
    finally:
        if LAST_OF_FILE[block.path] is block:   # a file's `serve` directive server ends with its blocks
            sandbox.stop_servers(block.path.relative_to(REPO).as_posix())


def test_every_block_is_found_and_accounted_for():
    """The parser finds the known number of command blocks per file; every block runs or says why not; no
    unlabelled fence holds commands (it would escape the test)."""
    found: dict[str, int] = {}
    for path in doc_files():
        rel = path.relative_to(REPO).as_posix()
        for b in parse_blocks(path):
            if b.is_command:
                found[rel] = found.get(rel, 0) + 1
                skip = b.directive("skip")
                assert skip is None or len(skip.args.split()) >= 3, f"{b.id}: a skip needs a reason"
            elif b.lang in ("", "text"):
                first = b.text.lstrip().split("\n")[0]
                assert not re.match(r"(\$ |locvtp |python |torchrun )", first), \
                    f"{b.id}: a command in an unlabelled block (fence it as ```bash or ```console)"
    assert found == EXPECTED_COMMAND_BLOCKS
    assert set(PREPARED) <= set(found)
    skipped = [(b.id, b.directive("skip").args) for b in BLOCKS if b.directive("skip")]
    print("\nskipped doc blocks:\n" + "\n".join(f"  {i}: {r}" for i, r in skipped))
    assert len(skipped) <= len(BLOCKS) // 3, "most documented commands must run"


def test_parser_reads_directives_outputs_and_refuses_what_it_cannot_place(tmp_path):
    md = tmp_path / "x.md"
    md.write_text("text\n\n<!-- docs-test: env A=1 B='two words' -->\n<!-- docs-test: timeout 9 -->\n```bash\n"
                  "echo hi\n```\n\n```text\nhi\n```\n```console\n$ true\n```\n```\nplain\n```\n")
    blocks = parse_blocks(md)
    assert [(b.line, b.lang) for b in blocks] == [(5, "bash"), (9, "text"), (12, "console"), (15, "")]
    assert blocks[0].env() == {"A": "1", "B": "two words"} and blocks[0].directive("timeout").args == "9"
    assert blocks[0].output is blocks[1] and blocks[2].output is None and not blocks[2].directives
    for bad, why in [("```bash\nx\n``` trailing\n", "text after a closing fence"),
                     ("<!-- docs-test: skipp r -->\n```bash\nx\n```\n", "unknown docs-test directive"),
                     ("<!-- docs-test: skip r -->\nprose\n", "not followed by a block"),
                     ("```bash\nx\n", "unclosed code fence")]:
        md.write_text(bad)
        with pytest.raises(ValueError, match=why):
            parse_blocks(md)


def test_console_commands_keep_continuations_and_outputs():
    cmds = _console_commands("$ a \\\n   b\nout1\nout2\n$ c\n$ d\nerr\n")
    assert cmds == [("a \\\n   b", "out1\nout2\n"), ("c", ""), ("d", "err\n")]


@pytest.mark.parametrize("expected, actual, ok", [
    ("extracted 2 videos (25 clips, 188.0 clips/s)", "extracted 2 videos (25 clips, 12.5 clips/s)", True),
    ("extracted 2 videos (25 clips, 188.0 clips/s)", "extracted 3 videos (25 clips, 12.5 clips/s)", False),
    ('{"score": 2.4880419349772254}', '{"score": 2.4880419349772250}', True),
    ('{"score": 2.4880419349772254}', '{"score": 2.4881}', False),
    ("Traceback (most recent call last):\n  ...\nValueError: x", "Traceback (most recent call last):\n  a\n  b\n"
     "ValueError: x", True),
    ("a ... c", "a anything at all c", True),
    ("", "something", False),
    ("indexed 682 clips", "indexed 713 clips", False),
    ("(pid 19548) is writing", "(pid 7) is writing", True),
    ("grd_00001 has 1 value", "grd_00002 has 1 value", False),
])
def test_output_comparison_rules(expected, actual, ok):
    assert (output_matches(expected, actual) is None) == ok
