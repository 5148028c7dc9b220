"""A pre-training sample's caption record and what goes wrong with samples: :class:`CaptionItem`, the
:class:`BadSample` report and its log (``bad_samples.jsonl``), and the errors a run raises for them.

The bottom of :mod:`locvtp.training`: the corpus, the clip sources and the dataset all speak these types, so
they import nothing of the package.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

from locvtp.errors import LocVTPError


class BadSampleError(LocVTPError, RuntimeError):
    """A sample could not be read (strict mode); the message names the file and the sample."""


STRICT_NOTE = " (--strict: the first bad sample stops the run; without it, it is skipped and reported)"


class NoSamplesError(LocVTPError, ValueError):
    """Nothing is left to train on (every sample bad, or none in the caption file); the message says why."""


# ----------------------------------------------------------------------------------------------------------
# Records and bad-sample accounting
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CaptionItem:
    """One pre-training pair before decoding: a caption and the time span it refers to."""

    vid: str
    text: str
    start: float  # seconds; HowTo100M: narration span, WebVid: 0
    end: float  # seconds; WebVid: +inf (= whole video)
    source: str  # "file:line" or "file:key" (for bad-sample reports)


@dataclass(frozen=True)
class BadSample:
    """One skipped sample or row, as written to ``bad_samples.jsonl``."""

    kind: str  # "row" (malformed caption row) | "video" (unreadable video) | "features" | "sample" (decode-time)
    source: str  # file (and line / key)
    reason: str
    vid: Optional[str] = None

    @property
    def key(self) -> str:
        return f"{self.kind}|{self.source}|{self.vid}"

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


class BadSampleLog:
    """Collects bad samples (deduplicated), appends them to a JSONL file, counts them.

    ``count`` is the number of distinct *training samples* lost (a corrupt video loses all of its narrations;
    each is one line), so the summary "skipped k of N samples" adds up.
    """

    def __init__(self, path: Optional[Path] = None):
        self.path = Path(path) if path is not None else None
        self._seen: set[str] = set()
        self.records: list[BadSample] = []
        if self.path is not None and self.path.is_file():  # resumed run: keep what was reported before
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    d = json.loads(line)
                    rec = BadSample(d["kind"], d["source"], d["reason"], d.get("vid"))
                except (ValueError, KeyError):
                    continue
                if rec.key not in self._seen:
                    self._seen.add(rec.key)
                    self.records.append(rec)

    @property
    def count(self) -> int:
        return len(self.records)

    def add(self, recs: Sequence[BadSample]) -> list[BadSample]:
        new = []
        for r in recs:
            if r.key not in self._seen:
                self._seen.add(r.key)
                self.records.append(r)
                new.append(r)
        if new and self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as fh:
                for r in new:
                    fh.write(json.dumps(r.to_json(), ensure_ascii=False) + "\n")
        return new


def _reason(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {msg}"[:300]
