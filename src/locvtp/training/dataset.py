"""Pre-training datasets: caption records -> windows of T clips -> padded, tokenized batches.

Three sources share one sample rule (see docs/training.md, "How a training sample is cut"):

* videos + HowTo100M narrations (`caption.json`): one sample per narration, a window of ``T`` clips of
  ``clip_seconds`` centred on the narration's centre (jittered by ``±jitter_seconds`` in training, because
  real narrations are misaligned), shifted to lie inside the video. The window is wider than most narrations on
  purpose: it carries the temporal context the fine-grained and temporal objectives need;
* videos + WebVid CSV captions: one sample per row, the window is the whole video;
* pre-extracted per-clip features (any layout ``locvtp extract`` writes: HDF5, npy-dir, npz-dir; stride and ids
  from the extraction itself) with either caption format: the same windows, each clip the mean of the feature
  rows whose centres fall inside it.

A window of length ``W`` holds ``n = min(T, max(1, floor(W / clip_seconds)))`` equal clips; the remaining
``T - n`` slots are padding, masked by ``clip_mask`` (only videos shorter than the window have them).

Why a per-sample random generator keyed by ``(seed, epoch, index)``: the sample a step sees then depends on
nothing but its position in the data order, so results are identical with 0, 1 or 8 loader workers, across
ranks, and after a resume.

Bad samples (unreadable video, malformed caption row, missing features) are skipped and reported, never
silently dropped: readers report malformed rows, an up-front scan reports unreadable videos, and a sample that
still fails at decode time is replaced by the next good one (so every batch keeps its size, which DDP's
gathers need) and reported. ``strict=True`` raises on the first one instead.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from locvtp.config import ConfigError
from locvtp.training.corpus import CHECK_CHUNK, DataPaths, read_split_ids
from locvtp.data.offsets import draw_offsets, draw_release_variates, draw_splice_variates
from locvtp.data.stopwords import content_words, stopword_ids
from locvtp.data.videoids import video_path
from locvtp.training.records import BadSample, BadSampleError, CaptionItem, NoSamplesError, STRICT_NOTE, _reason
from locvtp.training.framecache import corpus_frame_cache
from locvtp.training.sources import FeatureSource, VideoFileSource, narration_window, whole_video_window

_CHECK_CHUNK = CHECK_CHUNK  # narrations per step of the up-front checks (a test makes it small)


# ----------------------------------------------------------------------------------------------------------
# The dataset
# ----------------------------------------------------------------------------------------------------------
class PretrainDataset(Dataset):
    """Map-style dataset indexed by ``(epoch, index)`` (see ``ResumableBatchSampler``) or by ``index``.

    Returns a dict: ``clips`` (uint8 [T,F,S,S,3] or float32 [T,Din]), ``clip_mask`` bool [T], ``text``,
    ``index``, ``vid``, ``bad`` (samples that failed and were replaced on the way to this one).
    """

    def __init__(self, items: list[CaptionItem], source: Any, num_clips: int, clip_seconds: float,
                 jitter_seconds: float = 0.0, train: bool = True, seed: int = 0, strict: bool = False,
                 max_retries: int = 16, max_offset: int = 0, offset_in_span: bool = False,
                 release_negatives: int = 0, max_words: int = 0, splice: bool = False):
        self.items, self.source = items, source
        # objective.temporal_form=release (K = release_negatives > 0) and objective.weights.splice > 0: their
        # uniform variates, drawn here per sample like δ (locvtp.data.offsets.draw_release_variates)
        self.release_negatives, self.max_words, self.splice = int(release_negatives), int(max_words), bool(splice)
        self.max_offset = max_offset  # > 0: draw the temporal objective's offsets δ ∈ [-max_offset, max_offset] here
        # objective.context_in_span: reference and context clip both inside the narration's own span
        self.offset_in_span = bool(offset_in_span)
        self.num_clips, self.clip_seconds = num_clips, clip_seconds
        self.jitter_seconds, self.train = jitter_seconds, train
        self.seed, self.strict, self.max_retries = seed, strict, max_retries

    def __len__(self) -> int:
        return len(self.items)

    def windows(self, item: CaptionItem, rng: Optional[np.random.Generator]) -> tuple[np.ndarray, np.ndarray]:
        duration = self.source.durations[item.vid]
        if math.isinf(item.end):
            return whole_video_window(duration, self.num_clips, self.clip_seconds)
        jitter = self.jitter_seconds if self.train else 0.0
        return narration_window(item.start, item.end, duration, self.num_clips, self.clip_seconds, jitter, rng)

    def load(self, index: int, epoch: int = 0) -> dict:
        """One sample, no replacement (raises on failure)."""
        item = self.items[index]
        rng = np.random.default_rng([self.seed, epoch, index])
        windows, mask = self.windows(item, rng)
        n = int(mask.sum())
        clips = self.source.clips(item.vid, windows[:n], self.train, rng)
        if clips.shape[0] != n:
            raise OSError(f"{item.vid}: decoder returned {clips.shape[0]} clips, expected {n}")
        if n < self.num_clips:  # zero padding up to T (masked)
            pad = np.zeros((self.num_clips - n, *clips.shape[1:]), dtype=clips.dtype)
            clips = np.concatenate([clips, pad], axis=0)
        sample = {"clips": clips, "clip_mask": mask, "text": item.text, "index": index, "vid": item.vid,
                  "windows": windows.astype(np.float32)}
        if self.max_offset > 0:
            # The temporal objective's δ per clip, from this sample's own generator: a sample gets the same
            # offsets whichever rank, batch or worker it lands in (DDP == single process, exact resume).
            g = torch.Generator().manual_seed(int(rng.integers(0, 2**62)))
            span = None
            if self.offset_in_span:  # clips whose centre lies in the narration's (unjittered) [start, end]
                centre = windows.mean(axis=1)
                in_span = mask & (centre >= item.start) & (centre <= item.end)
                sample["span_mask"] = in_span
                span = torch.from_numpy(in_span)[None]
            sample["offsets"] = draw_offsets(torch.from_numpy(mask)[None], self.max_offset, g,
                                             span_mask=span)[0].numpy()
        if self.release_negatives > 0 or self.splice:  # after every other draw: the default's stay as they were
            self._release_draws(sample, torch.Generator().manual_seed(int(rng.integers(0, 2**62))))
        return sample

    def _release_draws(self, sample: dict, g: torch.Generator) -> None:
        """The release form's variates ([T,1+K] per clip, [max_words,1+K] per token slot; the Collator cuts
        them to the batch's L) and the splice variate, from the sample's own generator."""
        if self.release_negatives > 0:
            clip_draws, word_draws = draw_release_variates(1, self.num_clips, self.max_words,
                                                           self.release_negatives, g)
            sample["clip_draws"], sample["word_draws"] = clip_draws[0].numpy(), word_draws[0].numpy()
        if self.splice:
            sample["splice_draws"] = draw_splice_variates(1, g)[0].numpy()

    def __getitem__(self, key) -> dict:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        bad: list[BadSample] = []
        for attempt in range(self.max_retries):
            i = (index + attempt) % len(self.items)
            try:
                sample = self.load(i, epoch)
            except Exception as exc:  # noqa: BLE001  (decode/read failure = one bad sample)
                item = self.items[i]
                if self.strict:
                    raise BadSampleError(f"{item.source}: sample {i} (video {item.vid}) failed: {exc}"
                                         f"{STRICT_NOTE}") from exc
                bad.append(BadSample("sample", item.source, _reason(exc), item.vid))
                continue
            sample["bad"] = bad
            return sample
        raise BadSampleError(f"{self.max_retries} consecutive samples from index {index} failed; last: "
                             f"{bad[-1].source}: {bad[-1].reason}")


class Collator:
    """Stacks samples and tokenizes their texts (runs in the loader workers, so tokenization is parallel)."""

    def __init__(self, tokenizer: Any, max_words: int):
        self.tokenizer, self.max_words = tokenizer, max_words

    def __call__(self, samples: list[dict]) -> dict:
        clips = np.stack([s["clips"] for s in samples])
        batch = {
            "clips": torch.from_numpy(clips),
            "clip_mask": torch.from_numpy(np.stack([s["clip_mask"] for s in samples])),
            "index": torch.tensor([s["index"] for s in samples], dtype=torch.long),
            "vids": [s["vid"] for s in samples],
            "texts": [s["text"] for s in samples],
            "bad": [b for s in samples for b in s.get("bad", [])],
        }
        if "offsets" in samples[0]:
            batch["offsets"] = torch.from_numpy(np.stack([s["offsets"] for s in samples])).long()
        for key in ("span_mask", "clip_draws", "word_draws", "splice_draws"):  # release form / splice term
            if key in samples[0]:
                batch[key] = torch.from_numpy(np.stack([s[key] for s in samples]))
        tok = self.tokenizer([s["text"] for s in samples], max_length=self.max_words)
        batch["input_ids"] = tok["input_ids"].long()
        batch["attention_mask"] = tok["attention_mask"].bool()
        batch["word_mask"] = tok["word_mask"].bool()
        if "word_draws" in batch:  # drawn for data.max_words token slots: the batch's L
            batch["word_draws"] = batch["word_draws"][:, : batch["input_ids"].shape[1]].contiguous()
        if hasattr(self.tokenizer, "token_to_id"):  # objective.stopwords: the words that may be positives
            if getattr(self, "_stop_ids", None) is None:
                self._stop_ids = torch.tensor(stopword_ids(self.tokenizer), dtype=torch.long)
            batch["content_mask"] = content_words(batch["input_ids"], batch["word_mask"], self._stop_ids)
        return batch


# ----------------------------------------------------------------------------------------------------------
# Building a dataset from the config
# ----------------------------------------------------------------------------------------------------------
@dataclass
class PretrainData:
    dataset: PretrainDataset
    bad: list[BadSample] = field(default_factory=list)  # found while building (rows, videos, features)
    total: int = 0  # samples in the caption files, including the bad ones

    def summary(self, skipped: int, log_path: Optional[Path] = None) -> str:
        where = f": see {log_path}" if log_path is not None else ""
        return f"skipped {skipped} of {self.total} samples{where}"




def build_pretrain_data(cfg: Any, prepared: Any, tokenizer: Any, run_dir: Path, strict: bool = False,
                        progress: bool = True, share: tuple[int, int] = (0, 1)) -> PretrainData:
    """Sources, up-front checks and the dataset, from ``cfg.data`` and the prepared corpus
    (:func:`locvtp.training.corpus.prepare_corpus`).

    Nothing per narration becomes a Python object: the checks (unreadable video, caption without words under
    ``tokenizer``, narration after the end of its video) are array operations over the corpus's columns, and the
    dataset's items are made on access. Only the samples found bad get a record, worded as the in-memory path
    words it. Under DDP every rank calls this with ``share=(rank, world)``: the words mask and, when it is not
    prepared yet, the frame cache (``data.cache``, for corpora that fit on disk decoded;
    :mod:`locvtp.training.framecache`) are computed in shares by all ranks at once, each with ``data.num_workers``
    processes, and every rank then waits for the others' shares: none works while the others wait.
    """
    from locvtp.training.corpus import CaptionItems, candidates, words_mask

    d = cfg.data
    paths = prepared.paths or DataPaths.of(d)
    root = paths.root
    store = prepared.store
    cand, used = candidates(store, _CHECK_CHUNK)
    vid_names = store.video_ids
    vids = sorted(vid_names[k] for k in np.nonzero(used)[0])
    if d.kind == "features":
        source, bad_videos = _feature_source(cfg, prepared, paths, used, vids)
    elif d.kind == "videos":
        source, bad_videos = _video_source(d, prepared, paths, used, vids, run_dir, strict, progress, share)
    else:
        raise ConfigError(f"data.kind must be 'videos' or 'features', got {d.kind!r}")
    ok_words = words_mask(store, tokenizer, int(d.max_words), share=share, progress=progress)
    good, bad = _check_samples(store, cand, used, source, bad_videos, ok_words, strict)
    if not len(good):
        raise NoSamplesError(f"no usable pre-training samples under {root} ({len(bad)} bad; first: "
                             f"{bad[0].source}: {bad[0].reason})" if bad else f"no pre-training samples under {root}")
    store.release()  # unmap the columns the scan touched: training maps again only what it reads
    oc = cfg.objective
    dataset = PretrainDataset(CaptionItems(store, good), source, int(d.num_clips), float(d.clip_seconds),
                              float(d.jitter_seconds), train=True, seed=int(cfg.seed), strict=strict,
                              max_offset=int(oc.max_offset) if oc.temporal else 0,
                              offset_in_span=bool(getattr(oc, "context_in_span", False)),
                              release_negatives=int(oc.release_negatives) if oc.temporal and
                              oc.temporal_form == "release" else 0,
                              max_words=int(d.max_words), splice=float(oc.weights.splice) > 0)
    return PretrainData(dataset=dataset, bad=bad, total=len(cand) + len(store.bad_rows()))


def _feature_source(cfg: Any, prepared: Any, data_paths: DataPaths, used: np.ndarray, vids: list[str]):
    """(FeatureSource, {vid: (source, reason)} of the videos without usable features)."""
    d = cfg.data
    if d.features is None:
        raise ConfigError("data.kind=features needs data.features (an HDF5 file or a directory of <vid>.npy)")
    vid_names, rows, known = prepared.store.video_ids, prepared.feature_rows, None
    if rows is not None:  # lengths from the prepared corpus: no feature file is opened at launch
        known = {vid_names[k]: (int(rows["rows"][k]), int(rows["dim"][k])) for k in np.nonzero(used)[0]}
    source = FeatureSource(data_paths.features, float(d.clip_seconds), d.feature_stride,
                           video_ids=vids, known_lengths=known)
    if cfg.model.video.name == "features" and cfg.model.video.get("in_dim") is None:
        if not source.dim:
            raise ConfigError(f"data.features: {source.path} does not say its feature width; set model.video.in_dim")
        cfg.model.video.in_dim = int(source.dim)  # inferred from the store (its header / meta.json), kept by the run
    in_dim = int(cfg.model.video.in_dim) if cfg.model.video.name == "features" else None
    if in_dim is not None and source.dim and source.dim != in_dim:
        raise ConfigError(f"data.features: {source.path} holds {source.dim}-d features but "
                          f"model.video.in_dim={in_dim}; set model.video.in_dim={source.dim}")
    bad_videos: dict[str, tuple[str, str]] = {}
    for v in vids:
        if v not in source.lengths:
            bad_videos[v] = (str(source.path), f"no features for video {v!r} in {source.path}")
        elif source.lengths[v] == 0:
            bad_videos[v] = (str(source.path), f"empty feature array for video {v!r}")
    return source, bad_videos


def _video_source(d: Any, prepared: Any, data_paths: DataPaths, used: np.ndarray, vids: list[str], run_dir: Path,
                  strict: bool, progress: bool, share: tuple[int, int]):
    """(FrameCache or VideoFileSource, {vid: (source, reason)} of the unreadable videos)."""
    from locvtp.data.video import VideoInfo

    video_dir = data_paths.video_dir
    paths = {v: video_path(video_dir, v) for v in vids}
    bad_videos: dict[str, tuple[str, str]] = {}
    if d.cache:  # prepared by `locvtp prepare`, or decoded now in shares: this rank's, then wait for the rest
        legacy = [] if d.cache_dir else [Path(run_dir) / "cache"]  # where earlier versions put it
        source, bad = corpus_frame_cache(d, prepared.store.directory, video_dir, vids, share=share,
                                         workers=int(d.num_workers), strict=strict, progress=progress,
                                         legacy_roots=legacy)
        bad_videos.update({b.vid: (b.source, b.reason) for b in bad})
        return source, bad_videos
    probes, vid_names = prepared.probes, prepared.store.video_ids
    errors = {int(k): str(m) for k, m in zip(probes["err_idx"], probes["err_msg"])}
    infos = {}
    for k in np.nonzero(used)[0]:
        v = vid_names[k]
        if int(k) in errors:
            if strict:
                raise BadSampleError(f"{paths[v]}: unreadable video: {errors[int(k)]}{STRICT_NOTE}")
            bad_videos[v] = (str(paths[v]), errors[int(k)])
        else:
            infos[v] = VideoInfo(*(float(probes["fps"][k]), float(probes["duration"][k]),
                                   int(probes["num_frames"][k]), int(probes["width"][k]),
                                   int(probes["height"][k])))
    return VideoFileSource(paths, infos, int(d.frames_per_clip), int(d.frame_size)), bad_videos


def _check_samples(store: Any, cand: np.ndarray, used: np.ndarray, source: Any, bad_videos: dict,
                   ok_words: np.ndarray, strict: bool) -> tuple[np.ndarray, list[BadSample]]:
    """(the good narration indices, a record per bad one): unreadable video, caption without words, narration
    after the video's end — as array operations, in chunks (the temporaries stay small at any corpus size)."""
    vid_names, keep = store.video_ids, store.keep_mask()
    video_bad = np.zeros(store.num_videos, dtype=bool)
    duration = np.full(store.num_videos, np.nan)
    for k in np.nonzero(used)[0]:
        v = vid_names[k]
        if v in bad_videos:
            video_bad[k] = True
        else:
            duration[k] = source.durations[v]
    bad: list[BadSample] = [BadSample("row", f"{f}: {loc}", reason) for f, loc, reason in store.bad_rows()]
    good_parts = []
    for lo in range(0, len(cand), _CHECK_CHUNK):
        idx = cand[lo:lo + _CHECK_CHUNK]
        at = slice(int(idx[0]), int(idx[-1]) + 1) if keep is None else idx  # no split: views, not gathers
        vid_of = store.narr_video[at]
        starts, ends = np.asarray(store.starts[at]), np.asarray(store.ends[at])
        is_bad_video = video_bad[vid_of]
        no_words = ~ok_words[at] & ~is_bad_video
        with np.errstate(invalid="ignore"):
            after_end = np.isfinite(ends) & (starts >= duration[vid_of]) & ~is_bad_video & ~no_words
        bad_pos = np.nonzero(is_bad_video | no_words | after_end)[0]
        for p in bad_pos:
            i = int(idx[p])
            vid, src_i = vid_names[int(vid_of[p])], store.source(i)
            if is_bad_video[p]:
                src, reason = bad_videos[vid]
                rec = BadSample("video", src_i, f"{src}: {reason}" if src not in reason else reason, vid)
            elif no_words[p]:
                rec = BadSample("row", src_i, f"caption has no word tokens: {store.text(i)!r:.80}", vid)
            else:
                rec = BadSample("row", src_i, f"narration [{starts[p]:.2f}, {ends[p]:.2f}] s starts after the end "
                                              f"of the video ({source.durations[vid]:.2f} s)", vid)
            if strict:
                raise BadSampleError(f"{rec.source}: {rec.reason}{STRICT_NOTE}")
            bad.append(rec)
        good_parts.append(np.delete(idx, bad_pos) if len(bad_pos) else idx)
        del vid_of, starts, ends
        store.release()  # unmap this chunk's columns before the next (bounded memory at any corpus size)
    return (np.concatenate(good_parts) if good_parts else cand[:0]), bad


def load_caption_items(dcfg: Any, strict: bool = False) -> tuple[list[CaptionItem], list[BadSample]]:
    """Caption records of ``data.captions`` (howto100m | webvid) via ``locvtp.data.formats``, as CaptionItems.

    Malformed rows come back as ``BadSample("row", ...)`` (strict: the reader raises ``FormatError``).
    An optional ``data.split_file`` (one video id per line) restricts the videos used.
    """
    from locvtp.data import formats

    paths = DataPaths.of(dcfg)
    root, path = paths.root, paths.caption_file
    if not path.is_file():
        raise FileNotFoundError(f"data.caption_file: {path} does not exist (data.root={root})")
    if dcfg.captions == "howto100m":
        res = formats.read_howto100m_captions(path, strict=strict)
        items = [CaptionItem(r.video_id, r.text, float(r.start), float(r.end),
                             f"{path}: key {r.video_id!r} narration {r.start:.2f}-{r.end:.2f} s")
                 for r in res.records]
    elif dcfg.captions == "webvid":  # videos are found by id under data.video_dir (contentUrl is often a URL)
        res = formats.read_webvid_csv(path, strict=strict)
        items = [CaptionItem(r.video_id, r.caption, 0.0, math.inf, f"{path}: videoid {r.video_id!r}")
                 for r in res.records]
    else:
        raise ConfigError(f"data.captions must be 'howto100m' or 'webvid', got {dcfg.captions!r}")
    bad = [BadSample("row", f"{b.file}: {b.location}", b.reason) for b in res.skipped]
    if dcfg.split_file:
        split = paths.split_file
        if not split.is_file():
            raise FileNotFoundError(f"data.split_file: {split} does not exist (data.root={root})")
        keep = read_split_ids(split)
        items = [it for it in items if it.vid in keep]
    return items, bad
