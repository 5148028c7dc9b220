"""The prepared corpus: caption files converted once into memory-mapped columns, plus per-corpus caches.

Why: HowTo100M has 136 M narrations in one 7–8 GB ``caption.json``. Parsed whole, every narration becomes
Python objects (≈ 550 B each) on every rank: ≈ 75 GB and hours before the first step. Here the caption file is
read once, as a stream (:mod:`locvtp.data.jsonstream`, WebVid's CSV row by row), into flat binary columns that
every rank and loader worker maps without copying:

==========================  ========================================================================
``narr_video.bin``          uint32: the video index of each narration (into the video columns)
``narr_start.bin``          float64: start (s); ``narr_end.bin`` end (s; ``+inf`` for WebVid: the whole video)
``text_off.bin``/``text.bin``  uint64 byte offset of each narration's UTF-8 text (n + 1 entries), the bytes
``vid_off.bin``/``vid.bin``    the video ids, in order of first appearance
``bad_rows.jsonl``          the rows the reader skipped (file, location, reason), as ``locvtp.data.formats``
                            reports them: the readers' own per-row functions are used, so the prepared corpus
                            accepts and rejects exactly the rows the in-memory readers do
``meta.json``               counts, the caption file and format; written last: it marks the corpus complete
``tokenizer-KEY/``          the corpus's own WordPiece tokenizer (when the config names none), trained once on
                            a bounded sample of the captions (:mod:`locvtp.training.corpus_tokenizer`)
==========================  ========================================================================

One narration costs 28 bytes of columns plus its text; none of it is resident until touched.

One difference from ``json.loads``: a video id that appears twice as a key of ``caption.json`` keeps both entries'
narrations here (a stream cannot know a later duplicate is coming), where the in-memory reader keeps only the last
entry (a dict); HowTo100M has no duplicate keys.

Caches that depend on more than the caption file (which captions keep a word under a tokenizer, what each video
file's container says) are computed by :func:`chunked_array` in chunks: each chunk is one atomically written part
file, so a killed run resumes with the missing chunks; ``share=(i, N)`` computes every N-th chunk (``locvtp
prepare --shard i/N`` on N machines, or N ranks at once) and the first process that finds every part assembles
the result. ``workers`` processes compute one share's chunks in parallel.

Where: ``data.prepared_dir`` (default ``$LOCVTP_CACHE`` or ``~/.cache/locvtp``, then ``prepared/``), under a
directory named by a key of the inputs (version, format, caption file path, size and modification time, split
file): a changed caption file is a new key, so a stale corpus is never reused. Video-probe caches are keyed
likewise by the video directory's path and modification time (adding, removing or renaming a file changes it).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np

from locvtp.errors import LocVTPError
from locvtp.files import OutputLock, atomic_write_json, fsync_dir, fsync_file, remove_stale_temporaries
from locvtp.training.chunks import chunked_array

CORPUS_VERSION = 1
COMMIT_EVERY = 500_000  # narrations between two commits of a conversion (what a kill can cost)
COMMIT_SECONDS = 30.0
CHECK_CHUNK = 1 << 22  # narrations per step of a scan over the columns (bounds its temporaries: ~100 MB)


class CorpusError(LocVTPError, RuntimeError):
    """The prepared corpus cannot be built or read (the message names the directory or file)."""


# ------------------------------------------------------------------------------------------------ locations, keys
def default_prepared_root() -> Path:
    base = os.environ.get("LOCVTP_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "locvtp")
    return Path(base) / "prepared"


def _file_key(p: Optional[Path]) -> str:
    if p is None:
        return "-"
    st = p.stat()
    return f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}"


def captions_key(caption_file: Path, captions: str, split_file: Optional[Path]) -> str:
    h = hashlib.sha256(f"v{CORPUS_VERSION}|{captions}|{_file_key(caption_file)}|{_file_key(split_file)}".encode())
    return h.hexdigest()[:20]


# ------------------------------------------------------------------------------------------------ writing columns
class _Appender:
    """Append-only binary column files with a committed length (what a resume truncates back to)."""

    def __init__(self, directory: Path, names: dict[str, Any], counts: dict[str, int]):
        self.fh = {}
        self.dtypes = names
        for name, dtype in names.items():
            path = directory / f"{name}.bin"
            fh = open(path, "ab" if path.exists() else "wb")
            fh.truncate(counts.get(name, 0) * np.dtype(dtype).itemsize)  # drop what the last commit did not cover
            fh.seek(0, os.SEEK_END)
            self.fh[name] = fh
        self.counts = {n: int(counts.get(n, 0)) for n in names}

    def append(self, name: str, values: np.ndarray) -> None:
        arr = np.ascontiguousarray(values, dtype=self.dtypes[name])
        self.fh[name].write(arr.tobytes())
        self.counts[name] += int(arr.size)

    def flush(self) -> None:
        for fh in self.fh.values():
            fh.flush()
            os.fsync(fh.fileno())

    def close(self) -> None:
        for fh in self.fh.values():
            fh.close()


_WRITE_DTYPES = {"narr_video": np.uint32, "narr_start": np.float64, "narr_end": np.float64,
                 "text_off": np.uint64, "text": np.uint8, "vid_off": np.uint64, "vid": np.uint8}


def _read_captions(path: Path, captions: str, strict: bool, resume: dict[str, Any]
                   ) -> Iterator[tuple[list, list, dict[str, Any]]]:
    """``(narrations or rows, bad records, resume state)`` in small batches, read as a stream from ``resume``."""
    from locvtp.data import formats

    if captions == "howto100m":
        from locvtp.data.jsonstream import JSONStreamError, NotAnObjectError, iter_object_members

        formats._check_file(path)
        col = formats._Collector(path, strict)
        out: list = []
        try:
            for vid, entry, resume_at in iter_object_members(path, start=int(resume.get("resume_at", 0))):
                formats.howto100m_entry(vid, entry, col, out)
                yield out, col.skipped, {"resume_at": resume_at}
                out, col.skipped = [], []
        except JSONStreamError as exc:
            raise formats.malformed_json(path, exc.lineno, exc.colno, exc.msg) from None
        except NotAnObjectError:
            raise formats.FormatError(f"{path}: top level must be an object mapping video ids to captions") from None
    elif captions == "webvid":
        col, header, idx, rows = formats._open_csv(path, strict, formats.WEBVID_HEADER)
        done = int(resume.get("rows", 0))
        out = []
        for k, (line, row) in enumerate(rows, start=1):
            if k <= done:
                continue  # a resumed run re-reads, but does not re-write, what the last commit covered
            formats.webvid_row(line, row, header, idx, col, out)
            yield out, col.skipped, {"rows": k}
            out, col.skipped = [], []
    else:
        raise CorpusError(f"data.captions must be 'howto100m' or 'webvid', got {captions!r}")


def _convert(path: Path, captions: str, work: Path, strict: bool, progress: bool) -> dict[str, Any]:
    """Stream the caption file into the columns of ``work``, resuming from ``work/progress.json``: a commit
    (every ``commit_every`` narrations or ``commit_seconds``) fsyncs the columns and records their lengths and
    the reader's position; a killed run truncates the columns back to the last commit and reads on from there."""
    commit_every, commit_seconds = COMMIT_EVERY, COMMIT_SECONDS
    state_file = work / "progress.json"
    state = json.loads(state_file.read_text(encoding="utf-8")) if state_file.is_file() else {}
    app = _Appender(work, _WRITE_DTYPES, state.get("counts", {}))
    bad_file = work / "bad_rows.jsonl"
    bad_lines = int(state.get("bad_rows", 0))
    _truncate_lines(bad_file, bad_lines)
    vid_index: dict[str, int] = {}
    if app.counts["vid_off"]:  # resumed: the video ids written so far
        offs = np.fromfile(work / "vid_off.bin", dtype=np.uint64, count=app.counts["vid_off"]).astype(np.int64)
        raw = np.fromfile(work / "vid.bin", dtype=np.uint8, count=app.counts["vid"]).tobytes()
        bounds = np.append(offs, len(raw))
        for k in range(len(offs)):
            vid_index[raw[bounds[k]:bounds[k + 1]].decode("utf-8", "surrogateescape")] = k
    resume = state.get("resume", {})
    bar = _progress(progress, path, int(resume.get("resume_at", 0)))
    batch: dict[str, list] = {"vids": [], "starts": [], "ends": [], "texts": []}
    since_commit, last_commit = 0, time.monotonic()
    with open(bad_file, "a", encoding="utf-8") as bad_fh:
        try:
            for recs, bads, resume_state in _read_captions(path, captions, strict, resume):
                for b in bads:
                    bad_fh.write(json.dumps({"file": b.file, "location": b.location, "reason": b.reason},
                                            ensure_ascii=False) + "\n")
                bad_lines += len(bads)
                for r in recs:
                    k = vid_index.get(r.video_id)
                    if k is None:
                        k = vid_index[r.video_id] = len(vid_index)
                        app.append("vid_off", np.array([app.counts["vid"]]))
                        app.append("vid", np.frombuffer(r.video_id.encode("utf-8", "surrogateescape"), np.uint8))
                    batch["vids"].append(k)
                    if captions == "howto100m":
                        batch["starts"].append(r.start)
                        batch["ends"].append(r.end)
                        batch["texts"].append(r.text)
                    else:
                        batch["starts"].append(0.0)
                        batch["ends"].append(math.inf)
                        batch["texts"].append(r.caption)
                since_commit += len(recs)
                if len(batch["vids"]) >= 8192:
                    _flush_batch(app, batch)
                if since_commit >= commit_every or time.monotonic() - last_commit >= commit_seconds:
                    _flush_batch(app, batch)
                    app.flush()
                    bad_fh.flush()
                    os.fsync(bad_fh.fileno())
                    atomic_write_json(state_file, {"counts": app.counts, "bad_rows": bad_lines,
                                                   "resume": resume_state})
                    since_commit, last_commit = 0, time.monotonic()
                if bar is not None:
                    bar.update((resume_state.get("resume_at", 0) - bar.n) if captions == "howto100m" else len(recs))
            _flush_batch(app, batch)
            if bar is not None and captions == "howto100m":
                bar.update(bar.total - bar.n)
            app.append("text_off", np.array([app.counts["text"]]))  # the closing offset
            app.flush()
            bad_fh.flush()
            os.fsync(bad_fh.fileno())
        finally:
            app.close()
            if bar is not None:
                bar.close()
    return {"narrations": app.counts["narr_video"], "videos": len(vid_index), "bad_rows": bad_lines}


def _flush_batch(app: _Appender, batch: dict[str, list]) -> None:
    if not batch["vids"]:
        return
    enc = [t.encode("utf-8", "surrogateescape") for t in batch["texts"]]
    lens = np.fromiter((len(e) for e in enc), dtype=np.uint64, count=len(enc))
    offs = np.uint64(app.counts["text"]) + np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.uint64)
    app.append("text_off", offs)
    app.append("text", np.frombuffer(b"".join(enc), dtype=np.uint8))
    app.append("narr_video", np.asarray(batch["vids"]))
    app.append("narr_start", np.asarray(batch["starts"], dtype=np.float64))
    app.append("narr_end", np.asarray(batch["ends"], dtype=np.float64))
    for v in batch.values():
        v.clear()


def _truncate_lines(path: Path, n: int) -> None:
    """Keep the first ``n`` lines of a text file (what the last commit covered)."""
    if not path.is_file():
        return
    with open(path, "rb+") as fh:
        pos = 0
        for _ in range(n):
            line = fh.readline()
            if not line:
                break
            pos += len(line)
        fh.truncate(pos)


def _progress(enabled: bool, path: Path, initial: int) -> Any:
    if not enabled:
        return None
    from locvtp.runtime import progress as tqdm

    return tqdm(total=path.stat().st_size, initial=initial, unit="B", unit_scale=True, desc=f"preparing {path.name}")


def prepare_captions(caption_file: str | Path, captions: str, root: str | Path | None = None,
                     split_file: str | Path | None = None, strict: bool = False, progress: bool = True
                     ) -> "CaptionStore":
    """The prepared corpus of ``caption_file`` (built, resumed or reused). Safe to call from every rank at
    once: one builds under the output lock while the others wait for it, then all map the same files."""
    path = Path(caption_file)
    if not path.is_file():
        raise FileNotFoundError(2, "caption file not found", str(path))
    split = Path(split_file) if split_file else None
    if split is not None and not split.is_file():
        raise FileNotFoundError(2, "data.split_file does not exist", str(split))
    root = Path(root) if root is not None else default_prepared_root()
    d = root / f"captions-{captions_key(path, captions, split)}"
    if (d / "meta.json").is_file():
        return CaptionStore(d)
    d.parent.mkdir(parents=True, exist_ok=True)
    lock = _wait_for_lock(d)
    try:
        if (d / "meta.json").is_file():  # another process finished it while we waited
            return CaptionStore(d)
        work = d.with_name(d.name + ".partial")
        work.mkdir(exist_ok=True)
        stats = _convert(path, captions, work, strict, progress)
        keep = None
        if split is not None:
            keep = read_split_ids(split)
        _finish_columns(work, keep)
        meta = {"version": CORPUS_VERSION, "captions": captions, "caption_file": str(path),
                "split_file": str(split) if split else None, **stats, "complete": True}
        for f in work.iterdir():
            if f.is_file():
                fsync_file(f)
        atomic_write_json(work / "meta.json", meta)
        os.replace(work, d)
        fsync_dir(d.parent)
    finally:
        lock.release()
    return CaptionStore(d)


def _wait_for_lock(d: Path, poll: float = 1.0) -> OutputLock:
    from locvtp.errors import OutputBusyError

    while True:
        try:
            lock = OutputLock(d, "prepare").acquire()
        except OutputBusyError:
            time.sleep(poll)
            continue
        remove_stale_temporaries(d)
        return lock


def _finish_columns(work: Path, keep: Optional[set[str]]) -> None:
    """With a split file, mark the narrations of the videos it keeps (``narr_keep.npy``), as ``data.split_file``
    did in the in-memory path."""
    if keep is not None:
        store = CaptionStore(work, check=False)
        kept_videos = np.fromiter((v in keep for v in store.video_ids), dtype=bool, count=store.num_videos)
        np.save(work / "narr_keep.npy", kept_videos[np.asarray(store.narr_video)])


# ------------------------------------------------------------------------------------------------ reading
class CaptionStore:
    """Read side of a prepared corpus: columns mapped lazily, once per process (never pickled into workers)."""

    def __init__(self, directory: str | Path, check: bool = True):
        self.directory = Path(directory)
        meta_file = self.directory / "meta.json"
        if check:
            try:
                self.meta = json.loads(meta_file.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise CorpusError(f"{self.directory}: not a complete prepared corpus ({exc})") from None
        else:
            self.meta = {}
        self._maps: dict[str, np.ndarray] = {}
        self._video_ids: Optional[list[str]] = None
        self.n = int(self._col("narr_video").shape[0])

    def __getstate__(self) -> dict:
        d = dict(self.__dict__)
        d["_maps"] = {}
        return d

    def release(self) -> None:
        """Drop this process's mappings (they are made again on the next access): after a scan over whole
        columns, their pages stop counting towards this process's memory."""
        self._maps = {}

    def _col(self, name: str) -> np.ndarray:
        m = self._maps.get(name)
        if m is None:
            dt = np.dtype(_WRITE_DTYPES[name])
            f = self.directory / f"{name}.bin"
            m = np.memmap(f, dtype=dt, mode="r") if f.stat().st_size else np.zeros(0, dtype=dt)
            self._maps[name] = m
        return m

    @property
    def captions(self) -> str:
        return str(self.meta.get("captions", "howto100m"))

    @property
    def caption_file(self) -> str:
        return str(self.meta.get("caption_file", ""))

    @property
    def narr_video(self) -> np.ndarray:
        return self._col("narr_video")

    @property
    def starts(self) -> np.ndarray:
        return self._col("narr_start")

    @property
    def ends(self) -> np.ndarray:
        return self._col("narr_end")

    @property
    def num_videos(self) -> int:
        return int(self._col("vid_off").shape[0])

    @property
    def video_ids(self) -> list[str]:
        """Every video id (one Python string per video, not per narration)."""
        if self._video_ids is None:
            offs = np.asarray(self._col("vid_off"), dtype=np.int64)
            raw = self._col("vid").tobytes()
            bounds = np.append(offs, len(raw))
            self._video_ids = [raw[bounds[k]:bounds[k + 1]].decode("utf-8", "surrogateescape")
                               for k in range(len(offs))]
        return self._video_ids

    def video_rank(self) -> np.ndarray:
        """Each video's position in the sorted order of the ids (the order the grouped sampler visits them)."""
        order = sorted(range(self.num_videos), key=self.video_ids.__getitem__)
        rank = np.empty(self.num_videos, dtype=np.int64)
        rank[np.asarray(order, dtype=np.int64)] = np.arange(self.num_videos)
        return rank

    def keep_mask(self) -> Optional[np.ndarray]:
        """Narrations of the videos ``data.split_file`` keeps (None: no split file)."""
        f = self.directory / "narr_keep.npy"
        return np.load(f, mmap_mode="r") if f.is_file() else None

    def text(self, i: int) -> str:
        off = self._col("text_off")
        return self._col("text")[int(off[i]):int(off[i + 1])].tobytes().decode("utf-8", "surrogateescape")

    def texts(self, lo: int = 0, hi: Optional[int] = None) -> Iterator[str]:
        hi = self.n if hi is None else hi
        off = np.asarray(self._col("text_off")[lo:hi + 1], dtype=np.int64)
        if len(off) < 2:
            return
        raw = self._col("text")[off[0]:off[-1]].tobytes()
        base = off[0]
        for k in range(len(off) - 1):
            yield raw[off[k] - base:off[k + 1] - base].decode("utf-8", "surrogateescape")

    def source(self, i: int) -> str:
        """Where narration ``i`` comes from, worded as the in-memory path words it (bad-sample reports)."""
        vid = self.video_ids[int(self.narr_video[i])]
        if self.captions == "webvid":
            return f"{self.caption_file}: videoid {vid!r}"
        return f"{self.caption_file}: key {vid!r} narration {float(self.starts[i]):.2f}-{float(self.ends[i]):.2f} s"

    def bad_rows(self) -> list[tuple[str, str, str]]:
        """``(file, location, reason)`` of every row the reader skipped, in file order."""
        f = self.directory / "bad_rows.jsonl"
        if not f.is_file():
            return []
        out = []
        with open(f, encoding="utf-8") as fh:
            for line in fh:
                d = json.loads(line)
                out.append((d["file"], d["location"], d["reason"]))
        return out


class CaptionItems(Sequence):
    """The training samples: narrations ``indices`` of a :class:`CaptionStore`, as ``CaptionItem``s made on
    access (the dataset's ``items``; nothing per narration lives in Python)."""

    def __init__(self, store: CaptionStore, indices: np.ndarray):
        self.store = store
        self.indices = np.asarray(indices)

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def __getitem__(self, k: int):
        from locvtp.training.records import CaptionItem

        if not isinstance(k, (int, np.integer)):
            raise TypeError("CaptionItems is indexed by one integer")
        i = int(self.indices[k])
        s = self.store
        return CaptionItem(s.video_ids[int(s.narr_video[i])], s.text(i), float(s.starts[i]), float(s.ends[i]),
                           s.source(i))

    def video_index(self) -> np.ndarray:
        """The video index of every item (into ``store.video_ids``)."""
        return np.asarray(self.store.narr_video)[self.indices]

    def group_keys(self) -> np.ndarray:
        """Per item, an integer ordered like its video id (what ``ResumableBatchSampler(groups=...)`` takes)."""
        return self.store.video_rank()[self.video_index()]


def candidates(store: CaptionStore, chunk: int = CHECK_CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """(the narration indices a run checks, in order: those ``data.split_file`` keeps; which videos they use, as a
    mask over the store's videos). Pre-training's checks and ``prepare``'s frame cache both start here."""
    keep = store.keep_mask()
    idx_dtype = np.int32 if store.n < 2**31 else np.int64
    cand = (np.nonzero(keep)[0].astype(idx_dtype) if keep is not None else np.arange(store.n, dtype=idx_dtype))
    used = np.zeros(store.num_videos, dtype=bool)
    for lo in range(0, len(cand), chunk):
        narr_video = store.narr_video
        used[narr_video[cand[lo:lo + chunk]] if keep is not None else narr_video[lo:lo + chunk]] = True
        del narr_video
        store.release()  # one chunk of the column mapped at a time: its pages never pile up in this process
    return cand, used


# ------------------------------------------------------------------------------------------------ which captions have words
_ALNUM = re.compile(r"[^\W_]")  # a letter or digit
_SURROGATE = re.compile("[\ud800-\udfff]")


def _surely_worded(tokenizer: Any, max_words: int) -> Optional[Callable[[str], bool]]:
    """For a BERT-style WordPiece pipeline (BertNormalizer, BertPreTokenizer, WordPiece with an unknown token —
    the trained tokenizer and every BERT-family model), a test that is True only for captions that certainly keep
    a word piece, so the tokenizer itself runs only on the others; None for any other pipeline.

    Why it is exact: a letter or digit survives the normalizer (clean_text drops control characters, accent
    stripping drops combining marks: neither is a letter or digit), so it lies in some pre-token, which WordPiece
    turns into at least one piece (``[UNK]`` at worst) that is not a special token; truncation keeps it because
    ``max_words`` leaves room for one word. Captions that could match an added token (they contain its first
    character, e.g. ``[`` of ``[CLS]``) or are not valid Unicode go to the tokenizer. Tested against the tokenizer
    on generated text (``tests/test_corpus.py``)."""
    try:
        spec = json.loads(tokenizer.to_str())
        tokenizer._check_max_length(max_words)
    except (AttributeError, ValueError, TypeError):
        return None
    model, norm, pre = spec.get("model") or {}, spec.get("normalizer") or {}, spec.get("pre_tokenizer") or {}
    unk = model.get("unk_token")
    if (model.get("type") != "WordPiece" or not unk or unk not in (model.get("vocab") or {})
            or norm.get("type") != "BertNormalizer" or pre.get("type") != "BertPreTokenizer"):
        return None
    firsts = {c for t in spec.get("added_tokens") or [] if t.get("content") for c in
              (t["content"][0].lower(), t["content"][0].upper())}
    risky = re.compile("[" + "".join(re.escape(c) for c in sorted(firsts)) + "]") if firsts else None

    def surely(text: str) -> bool:
        return (_ALNUM.search(text) is not None and _SURROGATE.search(text) is None
                and (risky is None or risky.search(text) is None))

    return surely


def texts_with_words(tokenizer: Any, texts: list[str], max_words: int, chunk: int = 4096) -> list[bool]:
    """Which captions keep at least one word piece after tokenization (others would break a whole batch).

    The tokenizer runs only on the captions :func:`_surely_worded` cannot decide (with a BERT-style tokenizer:
    almost none), which makes the words mask of a 136 M-caption corpus minutes instead of half an hour."""
    surely = _surely_worded(tokenizer, max_words)
    if surely is None:
        return _tokenize_for_words(tokenizer, texts, max_words, chunk)
    ok = [isinstance(t, str) and surely(t) for t in texts]
    rest = [k for k, v in enumerate(ok) if not v]
    for k, v in zip(rest, _tokenize_for_words(tokenizer, [texts[k] for k in rest], max_words, chunk)):
        ok[k] = v
    return ok


def _tokenize_for_words(tokenizer: Any, texts: list[str], max_words: int, chunk: int = 4096) -> list[bool]:
    """The exact test: encode each caption and look for a non-special token."""
    def has_words(enc) -> bool:
        return any(not s for s in enc.special_tokens_mask)

    ok: list[bool] = []
    for i in range(0, len(texts), chunk):
        part = texts[i:i + chunk]
        usable = [isinstance(t, str) and bool(t.strip()) for t in part]
        try:
            encs = tokenizer.encode_batch([t if u else "." for t, u in zip(part, usable)], max_words)
            ok.extend(u and has_words(e) for u, e in zip(usable, encs))
        except ValueError:  # e.g. invalid Unicode somewhere in the chunk: find which, one by one
            for t, u in zip(part, usable):
                try:
                    ok.append(u and has_words(tokenizer.encode_batch([t], max_words)[0]))
                except ValueError:
                    ok.append(False)
    return ok


@dataclass(frozen=True)
class _WordsJob:
    """Picklable: what a worker needs to test one chunk of captions."""

    store_dir: str
    tokenizer_json: str
    pad_token_id: Optional[int]
    max_words: int

    def __call__(self, lo: int, hi: int) -> dict:
        from tokenizers import Tokenizer as _HF

        from locvtp.data.tokenizer import Tokenizer

        tok = Tokenizer(_HF.from_str(self.tokenizer_json), pad_token_id=self.pad_token_id)
        store = CaptionStore(self.store_dir, check=False)
        return {"ok": np.asarray(texts_with_words(tok, list(store.texts(lo, hi)), self.max_words), dtype=bool)}


def words_mask(store: CaptionStore, tokenizer: Any, max_words: int, share: tuple[int, int] = (0, 1),
               workers: int = 0, progress: bool = True, chunk: int = 65_536, wait: bool = True
               ) -> Optional[np.ndarray]:
    """Per narration: does its caption keep a word piece under ``tokenizer`` at ``max_words``? Cached in the
    corpus directory per tokenizer and budget."""
    tj = tokenizer.to_str()
    key = hashlib.sha256(f"{tj}|{max_words}".encode()).hexdigest()[:16]
    job = _WordsJob(str(store.directory), tj, getattr(tokenizer, "pad_token_id", None), int(max_words))
    res = chunked_array(store.directory, f"words-{key}", store.n, chunk, job, share, workers, progress, wait)
    return None if res is None else res["ok"]



# ------------------------------------------------------------------------------------------------ what each video file holds
@dataclass(frozen=True)
class _ProbeJob:
    """Picklable: probe the container of videos ``lo:hi`` (in the corpus's video order)."""

    store_dir: str
    video_dir: str

    def __call__(self, lo: int, hi: int) -> dict:
        from locvtp.training.records import _reason
        from locvtp.data.videoids import video_path
        from locvtp.data.video import probe_video

        ids = CaptionStore(self.store_dir, check=False).video_ids[lo:hi]
        n = len(ids)
        out = {"fps": np.zeros(n), "duration": np.zeros(n), "num_frames": np.zeros(n, np.int64),
               "width": np.zeros(n, np.int32), "height": np.zeros(n, np.int32)}
        err_idx, err_msg = [], []
        for k, vid in enumerate(ids):
            path = video_path(self.video_dir, vid)
            try:
                info = probe_video(path)
                if not (info.duration > 0):
                    raise OSError(f"{path}: zero duration")
            except Exception as exc:  # noqa: BLE001  (any container failure = one bad video, reported)
                err_idx.append(lo + k)
                err_msg.append(_reason(exc))
                continue
            for name in out:
                out[name][k] = getattr(info, name)
        out["err_idx"] = np.asarray(err_idx, dtype=np.int64)
        out["err_msg"] = np.asarray(err_msg, dtype="<U300")
        return out


def probe_key(video_dir: Path) -> str:
    st = video_dir.stat()
    return hashlib.sha256(f"v{CORPUS_VERSION}|{video_dir.resolve()}|{st.st_mtime_ns}".encode()).hexdigest()[:16]


def video_probes(store: CaptionStore, video_dir: str | Path, share: tuple[int, int] = (0, 1), workers: int = 0,
                 progress: bool = True, chunk: int = 2048, wait: bool = True) -> Optional[dict[str, np.ndarray]]:
    """What the container of every video of the corpus says (fps, duration, frames, size) and, for the ones that
    cannot be read, why (``err_idx``/``err_msg``). Cached per video directory; computed in chunks by ``workers``
    processes and ``share``s (machines or ranks), so 1.2 M files take minutes on many cores, not hours on one."""
    vd = Path(video_dir)
    if not vd.is_dir():
        raise FileNotFoundError(2, "data.video_dir: no such directory", str(vd))
    job = _ProbeJob(str(store.directory), str(vd))
    return chunked_array(store.directory, f"probe-{probe_key(vd)}", store.num_videos, chunk, job, share, workers,
                         progress, wait)



# ------------------------------------------------------------------------------------------------ feature lengths
@dataclass(frozen=True)
class _FeatureLengthJob:
    """Picklable: the row count and width of the features of videos ``lo:hi`` (-1: no features for it)."""

    store_dir: str
    features: str

    def __call__(self, lo: int, hi: int) -> dict:
        from locvtp.training.sources import FeatureSource

        ids = CaptionStore(self.store_dir, check=False).video_ids[lo:hi]
        src = FeatureSource(Path(self.features), 1.0, None, video_ids=ids)
        rows = np.asarray([src.lengths.get(v, -1) for v in ids], dtype=np.int64)
        return {"rows": rows, "dim": np.full(len(ids), src.dim, dtype=np.int64)}


def feature_key(features: Path) -> str:
    st = features.stat()
    return hashlib.sha256(f"v{CORPUS_VERSION}|{features.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()
                          ).hexdigest()[:16]


def feature_lengths(store: CaptionStore, features: str | Path, share: tuple[int, int] = (0, 1), workers: int = 0,
                    progress: bool = True, chunk: int = 4096, wait: bool = True) -> Optional[dict[str, np.ndarray]]:
    """Per video of the corpus: how many feature rows ``data.features`` holds for it (-1: none) and their width,
    read from the files' headers once and cached (keyed by the feature file / directory's path, size and
    modification time), so a launch does not open every feature file on every rank."""
    f = Path(features)
    if not f.exists():
        raise FileNotFoundError(2, "data.features: no such feature file or directory (a relative path is resolved "
                                   "under data.root)", str(f))
    job = _FeatureLengthJob(str(store.directory), str(f))
    return chunked_array(store.directory, f"featlen-{feature_key(f)}", store.num_videos, chunk, job, share, workers,
                         progress, wait)


# ------------------------------------------------------------------------------------------------ one call per config
def resolve_data_path(root: str | Path, p: str | Path | None) -> Optional[Path]:
    """A ``data.*`` path: absolute as given, else relative to ``data.root`` (``~`` expanded)."""
    if p is None:
        return None
    q = Path(os.path.expanduser(str(p)))
    return q if q.is_absolute() else Path(os.path.expanduser(str(root))) / q


@dataclass(frozen=True)
class DataPaths:
    """The files a config's ``data`` section names, resolved once (:meth:`of`) and passed down: the corpus, the
    clip sources and the caption reader all read these, so a rule for a relative path lives in one place."""

    root: Path  # data.root, ``~`` expanded
    caption_file: Optional[Path]
    split_file: Optional[Path]
    video_dir: Optional[Path]
    features: Optional[Path]

    @classmethod
    def of(cls, d: Any) -> "DataPaths":
        root = Path(os.path.expanduser(str(d.root)))
        return cls(root, *(resolve_data_path(root, d.get(k)) for k in ("caption_file", "split_file", "video_dir",
                                                                       "features")))


@dataclass
class PreparedCorpus:
    """Everything pre-training reads that grows with the corpus, for one config."""

    store: CaptionStore
    paths: Optional[DataPaths] = None  # the config's data paths, as the corpus was prepared from them
    words: Optional[np.ndarray] = None  # per narration (None: not asked for; pretrain builds it with its tokenizer)
    tokenizer_dir: Optional[Path] = None  # the corpus's own tokenizer, when the config names none
    probes: Optional[dict[str, np.ndarray]] = None  # per video (data.kind=videos without the frame cache)
    feature_rows: Optional[dict[str, np.ndarray]] = None  # per video (data.kind=features): rows, dim
    frame_cache: Any = None  # the FrameCache (data.kind=videos, data.cache=true; None: not asked, or shares missing)
    frame_cache_bad: list = field(default_factory=list)  # its unreadable videos (BadSample)

    def summary(self) -> str:
        parts = [f"{self.store.n} narrations of {self.store.num_videos} videos",
                 f"{len(self.store.bad_rows())} bad rows"]
        if self.tokenizer_dir is not None:
            from locvtp.training.corpus_tokenizer import tokenizer_provenance

            meta = tokenizer_provenance(self.tokenizer_dir)
            parts.append(f"tokenizer {self.tokenizer_dir.name} ({meta.get('tokenizer_vocab_size')} ids, trained on "
                         f"{meta.get('sampled_captions')} captions)")
        if self.words is not None:
            parts.append(f"{int((~self.words).sum())} captions without words")
        if self.probes is not None:
            parts.append(f"{len(self.probes['err_idx'])} unreadable videos")
        if self.frame_cache is not None:
            parts.append(f"frame cache of {len(self.frame_cache.index)} videos ({len(self.frame_cache_bad)} "
                         f"unreadable) in {self.frame_cache.directory}")
        return ", ".join(parts) + f" -> {self.store.directory}"


def read_split_ids(split: Path) -> set[str]:
    """The video ids of a ``data.split_file`` (one per line; byte-order marks dropped: :mod:`locvtp.data.textinput`)."""
    from locvtp.data.textinput import strip_bom

    try:
        return {strip_bom(ln).strip() for ln in split.read_text(encoding="utf-8").splitlines()} - {""}
    except UnicodeDecodeError as exc:
        from locvtp.config import ConfigError

        raise ConfigError(f"data.split_file: {split} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def fixed_tokenizer(cfg: Any) -> Any:
    """The tokenizer a config names (``data.tokenizer`` or the HF text model's), or None when pre-training
    trains one on the captions."""
    from locvtp.data.tokenizer import Tokenizer

    if cfg.data.get("tokenizer"):
        return Tokenizer.load(os.path.expanduser(str(cfg.data.tokenizer)))
    if cfg.model.text.name == "hf" and cfg.model.text.get("path"):
        return Tokenizer.load(os.path.expanduser(str(cfg.model.text.path)))
    if cfg.model.text.name == "clip":  # CLIP's tower reads CLIP's BPE ids only: no corpus WordPiece
        from locvtp.config import ConfigError
        from locvtp.data.clip_tokenizer import MERGES_HELP

        raise ConfigError(f"model.text.name=clip needs data.tokenizer; download {MERGES_HELP}")
    return None


def prepare_corpus(cfg: Any, words: bool = True, share: tuple[int, int] = (0, 1), workers: int = 0,
                   strict: bool = False, progress: bool = True, wait: bool = True, frames: bool = False
                   ) -> PreparedCorpus:
    """Prepare (or reuse) what ``cfg.data`` needs: the caption columns, with ``words`` the words mask under the
    config's fixed tokenizer (``data.tokenizer`` or the HF model's) or else the corpus's own, trained once on a
    bounded sample (:mod:`locvtp.training.corpus_tokenizer`; pre-training passes False and builds the mask with
    its run's tokenizer, which is that same one unless resuming), and, for ``data.kind=videos`` without the frame
    cache, the video probes; with it and ``frames`` (``locvtp prepare``), the frame cache
    (:mod:`locvtp.training.framecache`; pre-training looks for it, or decodes it in shares, itself).
    ``share``/``workers``/``wait`` as in :func:`chunked_array` (``locvtp prepare --shard``)."""
    d = cfg.data
    paths = DataPaths.of(d)
    caption = paths.caption_file
    if caption is None or not caption.is_file():
        raise FileNotFoundError(2, f"data.caption_file does not exist (data.root={d.root})", str(caption))
    root = Path(os.path.expanduser(str(d.prepared_dir))) if d.get("prepared_dir") else default_prepared_root()
    store = prepare_captions(caption, str(d.captions), root=root, split_file=paths.split_file,
                             strict=strict, progress=progress)
    if strict and store.bad_rows():  # a corpus prepared leniently earlier: strict still stops at the first
        from locvtp.data.formats import BadRecord, FormatError

        raise FormatError(str(BadRecord(*store.bad_rows()[0])))
    out = PreparedCorpus(store, paths)
    if words:
        tok = fixed_tokenizer(cfg)
        if tok is None:  # the corpus's own WordPiece vocabulary (trained once, on a bounded sample)
            from locvtp.training.corpus_tokenizer import corpus_tokenizer, corpus_tokenizer_dir

            tok = corpus_tokenizer(store, int(d.vocab_size), progress=progress)
            out.tokenizer_dir = corpus_tokenizer_dir(store, int(d.vocab_size))
        out.words = words_mask(store, tok, int(d.max_words), share, workers, progress, wait=wait)
    if d.kind == "features" and d.get("features"):
        out.feature_rows = feature_lengths(store, paths.features, share, workers, progress,
                                           wait=wait)
    if d.kind == "videos" and not d.cache:
        out.probes = video_probes(store, paths.video_dir, share, workers, progress,
                                  wait=wait)
    if d.kind == "videos" and d.cache and frames:
        from locvtp.training.framecache import corpus_frame_cache

        used = candidates(store)[1]
        vids = sorted(store.video_ids[k] for k in np.nonzero(used)[0])
        out.frame_cache, out.frame_cache_bad = corpus_frame_cache(d, store.directory, paths.video_dir, vids, share,
                                                                  workers, strict, progress, wait)
        if strict and out.frame_cache_bad:  # a cache built leniently earlier: strict still stops at the first
            from locvtp.training.records import STRICT_NOTE, BadSampleError

            b = out.frame_cache_bad[0]
            raise BadSampleError(f"{b.source}: unreadable video: {b.reason}{STRICT_NOTE}")
    return out


__all__ = ["CaptionItems", "CaptionStore", "CorpusError", "DataPaths", "PreparedCorpus", "candidates", "chunked_array", "default_prepared_root",
           "feature_lengths", "fixed_tokenizer", "prepare_captions", "prepare_corpus", "resolve_data_path", "texts_with_words",
           "video_probes", "words_mask"]
