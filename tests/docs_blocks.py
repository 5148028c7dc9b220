"""Markdown fenced blocks of README.md and docs/*.md, and the ``docs-test`` directives in front of them.

Why a parser of our own: the docs test must know every block by ``file:line`` (so a report names the line to
fix) and must see the HTML comments right before a fence; a Markdown library drops both.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMAND_LANGS = ("bash", "sh", "console")
OUTPUT_LANGS = ("text",)
_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
_DIRECTIVE = re.compile(r"^\s*<!--\s*docs-test:\s*(?P<body>.*?)\s*-->\s*$")
# the directive vocabulary (tests/test_docs.py and docs/design.md "Docs that cannot drift" say what each does)
DIRECTIVES = ("skip", "env", "timeout", "serve")


@dataclass
class Directive:
    name: str
    args: str
    line: int


@dataclass
class Block:
    path: Path
    line: int                 # 1-based line of the opening fence
    lang: str
    text: str
    directives: list[Directive] = field(default_factory=list)
    output: "Block | None" = None   # a ```text block right after a bash/sh block: its expected output

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(REPO).as_posix()}:{self.line}"

    @property
    def is_command(self) -> bool:
        return self.lang in COMMAND_LANGS

    def directive(self, name: str) -> Directive | None:
        found = [d for d in self.directives if d.name == name]
        return found[-1] if found else None

    def env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for d in self.directives:
            if d.name == "env":
                for item in shlex.split(d.args):
                    key, sep, value = item.partition("=")
                    if not sep:
                        raise ValueError(f"{self.id}: docs-test env wants NAME=VALUE, got {item!r}")
                    env[key] = value
        return env


def doc_files(repo: Path = REPO) -> list[Path]:
    return [repo / "README.md", *sorted((repo / "docs").glob("*.md"))]


def parse_blocks(path: Path) -> list[Block]:
    """Every fenced block of one file, in order; directives are the ``<!-- docs-test: ... -->`` lines right
    before the fence (blank lines between them allowed); a ```text block that follows a command block with only
    blank lines between is that block's expected output."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    pending: list[Directive] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        d = _DIRECTIVE.match(lines[i])
        if d:
            name, _, args = d.group("body").partition(" ")
            if name not in DIRECTIVES:
                raise ValueError(f"{path.name}:{i + 1}: unknown docs-test directive {name!r} "
                                 f"(known: {', '.join(DIRECTIVES)})")
            pending.append(Directive(name, args.strip(), i + 1))
            i += 1
            continue
        if not m:
            if lines[i].strip():
                if pending:
                    raise ValueError(f"{path.name}:{pending[0].line}: docs-test directive not followed by a block")
            i += 1
            continue
        fence, lang = m.group("fence"), m.group("info").strip().split(" ")[0].lower()
        start, body = i, []
        i += 1
        while i < len(lines) and not lines[i].lstrip().startswith(fence[:3] if fence[0] == "`" else fence):
            body.append(lines[i])
            i += 1
        if i >= len(lines):
            raise ValueError(f"{path.name}:{start + 1}: unclosed code fence")
        if lines[i].strip() != fence:
            raise ValueError(f"{path.name}:{i + 1}: text after a closing fence (put it on the next line)")
        block = Block(path, start + 1, lang, "\n".join(body) + "\n", pending)
        pending = []
        prev = blocks[-1] if blocks else None
        if (lang in OUTPUT_LANGS and prev is not None and prev.is_command and prev.output is None
                and all(not ln.strip() for ln in lines[_end_line(prev):start])):
            prev.output = block
        blocks.append(block)
        i += 1
    if pending:
        raise ValueError(f"{path.name}:{pending[0].line}: docs-test directive not followed by a block")
    return blocks


def _end_line(block: Block) -> int:
    """0-based index of the line after ``block``'s closing fence."""
    return block.line + block.text.count("\n") + 1


def command_blocks(repo: Path = REPO) -> list[Block]:
    return [b for p in doc_files(repo) for b in parse_blocks(p) if b.is_command]
