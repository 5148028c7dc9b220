"""The grounding head under 2D-TAN's protocol (``grounding.head_variant=tan``, the default of `locvtp evaluate`).

The paper compares pre-trainings by their *video features* under a fine-tuned 2D-TAN (Zhang et al., AAAI 2020,
microsoft/VideoX/2D-TAN), whose query side is fixed GloVe word vectors and an LSTM trained with the head, the same
for every row. The ``checkpoint_text`` variant (``locvtp.downstream.grounding``) instead reads each checkpoint's own
sentence embedding, so the text side changed with every row. Here the query encoder is built once from the
dataset's text and is the same whichever checkpoint is evaluated, so the head's figures depend on the video
features only:

* **word vectors**: positive PMI (context-distribution smoothing 0.75) over word co-occurrences within
  ``cooc_window`` words inside each *training* query, then a truncated SVD (``U·√S``, signs fixed, rows
  L2-normalized) -- the count-based counterpart of GloVe (Levy, Goldberg & Dagan, TACL 2015: GloVe and SGNS
  factorize the same shifted-PMI statistics). No download, deterministic, and never from the checkpoint. Words
  outside the vocabulary are ``<unk>``, a zero vector;
* **LSTM** over the vectors (frozen, as 2D-TAN's GloVe), trained with the head; the query is its output at the
  last word (2D-TAN's ``FrameAvgPool``/``TAN`` text side);
* **the map, masked convolutions and loss** are :class:`locvtp.downstream.grounding.TAN2DHead` and
  ``scaled_iou_bce``;
* **protocol**: a validation split of the training videos (``val_fraction``, chosen by a hash of the video id, the
  same for every row) for early stopping on validation R1@0.5 (then mIoU), ``seeds`` head seeds whose figures are
  averaged, and per-query top-1 IoUs per seed in ``grounding.json`` for paired bootstrap intervals
  (``python -m locvtp.diagnostics.paired_bootstrap``).
"""
from __future__ import annotations

import copy
import hashlib
import math
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from locvtp.downstream.common import run_single_threaded, torch_generator
from locvtp.downstream.grounding import (
    GroundingOptions, HeadConfig, HeadData, TAN2DHead, TanConfig, head_data, kept_windows, moment_iou,
    prediction_lines, run_grounding, scaled_iou_bce,
)

HEAD_VARIANTS = ("tan", "checkpoint_text")
PAD, UNK = "<pad>", "<unk>"
_WORD = re.compile(r"[a-z0-9]+")
# Above this vocabulary size the SVD is a seeded randomized one (a dense SVD of V x V costs V^3).
EXACT_SVD_MAX_VOCAB = 3000
# Context-distribution smoothing of the PMI (Levy et al. 2015): rare contexts get less inflated PMI.
CDS_ALPHA = 0.75


# --------------------------------------------------------------------------------------------------- word vectors
def query_words(text: str) -> list[str]:
    """Lower-cased alphanumeric words of a query (the vocabulary's unit; punctuation dropped)."""
    return _WORD.findall(str(text).lower())


def build_vocabulary(texts: Sequence[str], min_count: int = 1, max_size: int | None = None) -> list[str]:
    """``[<pad>, <unk>, words...]``: words seen at least ``min_count`` times, most frequent first (ties by the
    word), at most ``max_size`` of them. Deterministic for a given multiset of texts."""
    counts = Counter(w for t in texts for w in query_words(t))
    words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    return [PAD, UNK, *(words[:max_size] if max_size is not None else words)]


def encode_words(texts: Sequence[str], index: dict[str, int], max_words: int) -> tuple[np.ndarray, np.ndarray]:
    """Word ids ``[n, L]`` (0-padded, L = the longest kept length) and lengths ``[n]`` (>= 1: a query without any
    word is one ``<unk>``, so the LSTM always reads something)."""
    unk = index[UNK]
    seqs = [[index.get(w, unk) for w in query_words(t)][:max_words] or [unk] for t in texts]
    width = max((len(s) for s in seqs), default=1)
    ids = np.zeros((len(seqs), width), np.int64)
    lengths = np.array([len(s) for s in seqs], np.int64)
    for k, s in enumerate(seqs):
        ids[k, :len(s)] = s
    return ids, lengths


def cooccurrence_counts(texts: Sequence[str], index: dict[str, int], window: int) -> np.ndarray:
    """Symmetric ``[V, V]`` counts of word pairs at distance 1..``window`` within one text (positions count every
    word, so an unknown word still separates its neighbours; ``<pad>`` / ``<unk>`` rows and columns stay 0)."""
    v = len(index)
    unk = index[UNK]
    ids = [np.array([index.get(w, unk) for w in query_words(t)], np.int64) for t in texts]
    flat = np.concatenate(ids) if ids else np.zeros(0, np.int64)
    sent = np.repeat(np.arange(len(ids)), [len(x) for x in ids])
    counts = np.zeros(v * v, np.float64)
    for d in range(1, window + 1):  # a loop over offsets only; pairs are vectorized
        same = sent[:-d] == sent[d:]
        i, j = flat[:-d][same], flat[d:][same]
        ok = (i > unk) & (j > unk)
        np.add.at(counts, i[ok] * v + j[ok], 1.0)
        np.add.at(counts, j[ok] * v + i[ok], 1.0)
    return counts.reshape(v, v)


def ppmi(counts: np.ndarray, alpha: float = CDS_ALPHA) -> np.ndarray:
    """Positive PMI ``max(0, log(P(w, c) / (P(w) · P_α(c))))`` with ``P_α(c) ∝ count(c)^α``; 0 where unseen."""
    total = counts.sum()
    if total <= 0:
        return np.zeros_like(counts)
    rows = counts.sum(axis=1, keepdims=True)
    ctx = counts.sum(axis=0, keepdims=True) ** alpha
    ctx = ctx / ctx.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        pmi = np.log((counts / total) / ((rows / total) * ctx))
    return np.where((counts > 0) & np.isfinite(pmi), np.maximum(pmi, 0.0), 0.0)


def truncated_svd(m: np.ndarray, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` left singular vectors ``[n, k]`` and values ``[k]`` of ``m``, each vector's sign fixed so that its
    largest-magnitude entry is positive (an SVD's signs are arbitrary). Exact up to
    :data:`EXACT_SVD_MAX_VOCAB` rows, else a seeded randomized SVD (Halko et al. 2011; 4 power iterations)."""
    k = min(k, *m.shape)
    if m.shape[0] <= EXACT_SVD_MAX_VOCAB:
        u, s, _ = np.linalg.svd(m, full_matrices=False)
    else:
        rng = np.random.default_rng(seed)
        y = m @ rng.standard_normal((m.shape[1], k + 10))
        for _ in range(4):
            y, _ = np.linalg.qr(y)
            y = m @ (m.T @ y)
        qm, _ = np.linalg.qr(y)
        ub, s, _ = np.linalg.svd(qm.T @ m, full_matrices=False)
        u = qm @ ub
    u, s = u[:, :k], s[:k]
    pivot = np.abs(u).argmax(axis=0)
    return u * np.where(u[pivot, np.arange(k)] < 0, -1.0, 1.0), s


@dataclass
class WordVectors:
    """A fixed vocabulary and its vectors ``[V, dim]`` (``<pad>`` and ``<unk>`` are zero rows)."""

    vocab: list[str]
    vectors: np.ndarray
    sentences: int = 0  # texts they were built from

    @property
    def index(self) -> dict[str, int]:
        return {w: k for k, w in enumerate(self.vocab)}

    def sha256(self) -> str:
        """A fingerprint of vocabulary and vectors: equal for every row evaluated on the same data."""
        h = hashlib.sha256("\n".join(self.vocab).encode("utf-8"))
        h.update(np.ascontiguousarray(self.vectors, np.float32).tobytes())
        return h.hexdigest()


def ppmi_svd_vectors(texts: Sequence[str], dim: int = 64, window: int = 4, min_count: int = 1,
                     max_vocab: int | None = None) -> WordVectors:
    """Count-based word vectors of ``texts`` (the stand-in for GloVe, see the module docstring): PPMI over
    co-occurrences, truncated SVD ``U·√S`` to ``dim`` columns (zero columns beyond the matrix's rank), rows
    L2-normalized (unit vectors like 2D-TAN's normalized features; a word without co-occurrences stays 0)."""
    vocab = build_vocabulary(texts, min_count, max_vocab)
    m = ppmi(cooccurrence_counts(texts, {w: k for k, w in enumerate(vocab)}, window))
    u, s = truncated_svd(m, dim)
    vec = np.zeros((len(vocab), dim), np.float64)
    vec[:, :u.shape[1]] = u * np.sqrt(s)[None, :]
    norms = np.linalg.norm(vec, axis=1, keepdims=True)
    vec = np.where(norms > 1e-12, vec / np.maximum(norms, 1e-12), 0.0)
    vec[:2] = 0.0  # <pad>, <unk>
    return WordVectors(vocab, vec.astype(np.float32), sentences=len(texts))


# --------------------------------------------------------------------------------------------------- the model
class QueryEncoder(nn.Module):
    """Frozen word vectors → LSTM → the output at each query's last word: ``(ids [B, L], lengths [B]) → [B, H]``.
    Padding is packed away, so what follows a query's last word never reaches its encoding."""

    def __init__(self, vectors: np.ndarray, hidden: int = 64, layers: int = 1):
        super().__init__()
        self.embed = nn.Embedding.from_pretrained(torch.as_tensor(np.asarray(vectors, np.float32)), freeze=True,
                                                  padding_idx=0)
        self.lstm = nn.LSTM(self.embed.embedding_dim, hidden, num_layers=layers, batch_first=True)
        self.out_dim = hidden

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

        packed = pack_padded_sequence(self.embed(ids), lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=ids.shape[1])
        return out[torch.arange(len(ids), device=out.device), lengths.to(out.device) - 1]


class TANGrounding(nn.Module):
    """:class:`QueryEncoder` + :class:`TAN2DHead`: ``(feats [B, N, D], ids, lengths) → logits [B, N, N]``."""

    def __init__(self, in_dim: int, vectors: np.ndarray, hc: HeadConfig, tc: TanConfig):
        super().__init__()
        self.query = QueryEncoder(vectors, tc.lstm_hidden, tc.lstm_layers)
        self.head = TAN2DHead(in_dim, self.query.out_dim, hc.num_clips, hc.hidden, hc.layers, hc.kernel, hc.pooling,
                              hc.dropout)

    def forward(self, feats: torch.Tensor, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.head(feats, self.query(ids, lengths))


@dataclass
class QuerySet:
    """What the model reads for a set of queries: pooled features ``[Q, N, D]``, word ids and lengths, and the
    ground truth (seconds) with the durations."""

    x: np.ndarray
    ids: np.ndarray
    lengths: np.ndarray
    gt: np.ndarray
    dur: np.ndarray

    def __len__(self) -> int:
        return len(self.x)

    def subset(self, rows: np.ndarray) -> "QuerySet":
        return QuerySet(self.x[rows], self.ids[rows], self.lengths[rows], self.gt[rows], self.dur[rows])

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return (torch.as_tensor(np.asarray(self.x, np.float32)), torch.as_tensor(self.ids),
                torch.as_tensor(self.lengths))


@torch.no_grad()
def predict_maps(model: TANGrounding, data: QuerySet, batch_size: int = 256) -> np.ndarray:
    """Moment probabilities ``[Q, N, N]`` (sigmoid, 0 on invalid moments), as ``predict_score_maps``."""
    model.eval()
    x, ids, lengths = data.tensors()
    mask = model.head.mask2d
    out = [torch.sigmoid(model(x[k:k + batch_size], ids[k:k + batch_size], lengths[k:k + batch_size])) * mask
           for k in range(0, len(x), batch_size)]
    n = model.head.num_clips
    return torch.cat(out).numpy() if out else np.zeros((0, n, n), np.float32)


def ranked_windows(maps: np.ndarray, durations: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each query's windows (seconds, best first) and scores from its score map (2D-TAN's ordering)."""
    from locvtp.metrics import score_map_to_windows

    pairs = [score_map_to_windows(m, float(d)) for m, d in zip(maps, durations)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


# --------------------------------------------------------------------------------------------------- training
@dataclass
class EarlyStopping:
    """What :func:`fit_early_stopping` did: per-epoch training loss and validation score, the chosen epoch."""

    losses: list[float] = field(default_factory=list)
    scores: list[tuple[float, ...]] = field(default_factory=list)
    best_epoch: int = 0


def fit_early_stopping(model: nn.Module, run_epoch: Callable[[int], float],
                       validate: Callable[[], tuple[float, ...]] | None, epochs: int, patience: int
                       ) -> EarlyStopping:
    """Train ``epochs`` epochs at most (``run_epoch(epoch) -> mean loss``, 1-based); after each, ``validate()`` (in
    eval mode) scores the model, higher is better (tuples compare in order: a tie on the first figure goes to the
    second). Stops after ``patience`` epochs without a strictly better score and restores the weights of the best
    epoch (the earliest among equals). ``validate`` None: every epoch runs and the last one is kept."""
    log = EarlyStopping()
    best_state: dict[str, torch.Tensor] | None = None
    for epoch in range(1, epochs + 1):
        model.train()
        log.losses.append(float(run_epoch(epoch)))
        if validate is None:
            log.best_epoch = epoch
            continue
        model.eval()
        score = tuple(float(v) for v in validate())
        log.scores.append(score)
        if not log.scores[:-1] or score > max(log.scores[:-1]):
            log.best_epoch, best_state = epoch, copy.deepcopy(model.state_dict())
        elif epoch - log.best_epoch >= patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return log


def _validation_score(model: TANGrounding, val: QuerySet) -> tuple[float, float]:
    """(R1@0.5, mIoU) on the validation queries: the headline figure, its tie-breaker."""
    from locvtp.metrics import grounding_recall

    windows, _ = ranked_windows(predict_maps(model, val), val.dur)
    r = grounding_recall(windows, val.gt)
    return r["R1@0.5"], r["mIoU"]


@run_single_threaded  # tiny tensors: see common.single_threaded
def train_tan(train: QuerySet, vectors: WordVectors, hc: HeadConfig, tc: TanConfig, seed: int = 0,
              val: QuerySet | None = None, progress: bool = False, desc: str = "2D-TAN head"
              ) -> tuple[TANGrounding, EarlyStopping]:
    """Train a :class:`TANGrounding` (word vectors fixed, LSTM and head trained) with AdamW and the scaled-IoU BCE,
    early-stopped on ``val`` (None: ``tc.epochs`` epochs); the optimiser's lr and epochs are ``tc``'s, the batch
    size, weight decay and loss bounds ``hc``'s. Deterministic given ``seed``."""
    from locvtp.runtime import progress as tqdm

    if len(train) < 1 or train.x.ndim != 3 or train.x.shape[1] != hc.num_clips:
        raise ValueError(f"inconsistent training features {train.x.shape} (num_clips={hc.num_clips})")
    torch.manual_seed(seed)
    model = TANGrounding(train.x.shape[2], vectors.vectors, hc, tc)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=tc.lr,
                            weight_decay=hc.weight_decay)
    x, ids, lengths = train.tensors()
    iou = moment_iou(torch.as_tensor(train.gt, dtype=torch.float64), torch.as_tensor(train.dur, dtype=torch.float64),
                     hc.num_clips)
    gen = torch_generator(seed)
    bar = tqdm(total=tc.epochs, desc=desc, disable=not progress, leave=False)

    def run_epoch(_epoch: int) -> float:
        perm = torch.randperm(len(x), generator=gen)
        total = 0.0
        for k in range(0, len(x), hc.batch_size):
            idx = perm[k:k + hc.batch_size]
            loss = scaled_iou_bce(model(x[idx], ids[idx], lengths[idx]), iou[idx], model.head.mask2d, hc.min_iou,
                                  hc.max_iou)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if tc.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            opt.step()
            total += loss.item() * len(idx)
        bar.update(1)
        return total / len(x)

    validate = None if val is None or len(val) == 0 else (lambda: _validation_score(model, val))
    log = fit_early_stopping(model, run_epoch, validate, tc.epochs, tc.patience)
    bar.close()
    return model, log


# --------------------------------------------------------------------------------------------------- protocol
def validation_videos(vids: Sequence[str], fraction: float) -> set[str]:
    """The held-out share of the training videos: the ``ceil(fraction · n)`` ids first by SHA-256 (a property of
    the id, so the same split for every row and every run), never all of them (0 when fewer than 2 videos)."""
    unique = sorted(set(vids))
    if fraction <= 0 or len(unique) < 2:
        return set()
    n = min(len(unique) - 1, math.ceil(fraction * len(unique)))
    return set(sorted(unique, key=lambda v: hashlib.sha256(v.encode("utf-8")).hexdigest())[:n])


def query_set(x: np.ndarray, queries: Sequence[Any], gt: np.ndarray, dur: np.ndarray, vectors: WordVectors,
              max_words: int) -> QuerySet:
    ids, lengths = encode_words([q.query for q in queries], vectors.index, max_words)
    return QuerySet(np.asarray(x, np.float32), ids, lengths, np.asarray(gt, np.float64), np.asarray(dur, np.float64))


@dataclass
class TanRun:
    """The protocol's outcome: per seed, the test windows and scores, per-query top-1 IoUs, recall figures, the
    early-stopping log; the word vectors; the split sizes."""

    seeds: list[int]
    windows: list[list[np.ndarray]]
    scores: list[list[np.ndarray]]
    iou: np.ndarray  # [Q_test, seeds]
    per_seed: list[dict[str, float]]
    logs: list[EarlyStopping]
    vectors: WordVectors
    train_queries: int
    val_queries: int


def run_tan_protocol(data: HeadData, hc: HeadConfig, tc: TanConfig, seed: int = 0, progress: bool = False
                     ) -> TanRun:
    """Word vectors from the training queries, the validation split, ``tc.seeds`` heads, test predictions."""
    from locvtp.metrics import grounding_recall, grounding_top1_iou

    texts = [q.query for q in data.queries_train]
    vectors = ppmi_svd_vectors(texts, tc.word_dim, tc.cooc_window, tc.min_count, tc.max_vocab)
    full = query_set(data.x_train, data.queries_train, data.gt_train, data.dur_train, vectors, tc.max_words)
    held = validation_videos([q.vid for q in data.queries_train], tc.val_fraction)
    is_val = np.array([q.vid in held for q in data.queries_train], bool)
    train, val = full.subset(np.flatnonzero(~is_val)), full.subset(np.flatnonzero(is_val))
    test = query_set(data.x_test, data.queries_test, data.gt_test, data.dur_test, vectors, tc.max_words)
    seeds = [seed + k for k in range(tc.seeds)]
    out = TanRun(seeds, [], [], np.zeros((len(test), len(seeds))), [], [], vectors, len(train), len(val))
    for j, s in enumerate(seeds):
        model, log = train_tan(train, vectors, hc, tc, seed=s, val=val if len(val) else None, progress=progress,
                               desc=f"2D-TAN head (seed {s})")
        windows, scores = ranked_windows(predict_maps(model, test), test.dur)
        out.windows.append(windows)
        out.scores.append(scores)
        out.iou[:, j] = grounding_top1_iou(windows, test.gt)
        out.per_seed.append(grounding_recall(windows, test.gt))
        out.logs.append(log)
    return out


def run_grounding_task(ctx: Any, opts: GroundingOptions | None = None) -> Any:
    """`locvtp evaluate grounding`: :func:`locvtp.downstream.grounding.run_grounding` (zero-shot, and the
    ``checkpoint_text`` head when chosen), then the ``tan`` head when chosen; per-query top-1 IoUs of the head
    (``head_top1_iou``, one per seed) in every prediction that has them."""
    opts = opts or GroundingOptions()
    if opts.head_variant not in HEAD_VARIANTS:
        raise ValueError(f"grounding.head_variant must be one of {HEAD_VARIANTS}, got {opts.head_variant!r}")
    res = run_grounding(ctx, opts)
    res.info["head_variant"] = opts.head_variant if opts.head else None
    if opts.head and opts.head_variant == "tan":
        _add_tan_head(ctx, opts, res)
    elif opts.head:
        _add_top1_iou(res)
    return res


def _add_top1_iou(res: Any) -> None:
    """``checkpoint_text``: per-query top-1 IoU from the head's full-precision prediction lines (one seed)."""
    from locvtp.metrics import grounding_top1_iou

    for line in res.prediction_files.get("head_grounding_predictions.jsonl", []):
        p = res.predictions[line["qid"]]
        top = [w[:2] for w in line["pred_relevant_windows"][:1]]
        p["head_top1_iou"] = [float(grounding_top1_iou([np.array(top).reshape(-1, 2)], [p["gt"]])[0])]


def _add_tan_head(ctx: Any, opts: GroundingOptions, res: Any) -> None:
    """Train and test the ``tan`` head on ``ctx``'s frozen features; its figures, predictions and settings into
    ``res`` (figures: the mean over seeds; windows in the predictions and the predictions file: the first seed)."""
    from locvtp.downstream.common import prefixed

    hc, tc = opts.head_cfg, opts.tan_cfg
    data = head_data(ctx, opts, sentences=False)
    info = res.info
    info.update(train_queries=data.train_queries, head_train_queries=len(data.x_train),
                skipped_train_annotations=data.skipped_train)
    if len(data.x_train) < 2 or not data.used_test:
        info["head_skipped"] = "fewer than 2 usable training queries or no usable test query"
        return
    run = run_tan_protocol(data, hc, tc, seed=ctx.seed, progress=ctx.progress)
    mean = {k: float(np.mean([r[k] for r in run.per_seed])) for k in run.per_seed[0]}
    res.metrics.update(prefixed("head_grounding", mean))
    test = data.queries_test
    for row, k in enumerate(data.used_test):
        res.predictions[k]["head_pred_relevant_windows"] = kept_windows(run.windows[0][row], run.scores[0][row],
                                                                       opts.top_k_saved, decimals=3)
        res.predictions[k]["head_top1_iou"] = [float(v) for v in run.iou[row]]
    res.prediction_files["head_grounding_predictions.jsonl"] = [
        dict(line, qid=k) for line, k in zip(prediction_lines(test, range(len(test)), run.windows[0], run.scores[0]),
                                             data.used_test)]
    info.update(head_seeds=run.seeds, head_per_seed=run.per_seed, head_train_split=run.train_queries,
                head_val_split=run.val_queries, head_best_epochs=[log.best_epoch for log in run.logs],
                head_losses=[[round(v, 5) for v in log.losses] for log in run.logs],
                head_val_scores=[[list(s) for s in log.scores] for log in run.logs],
                head_config=asdict(hc), tan_config=asdict(tc),
                word_vectors={"vocabulary": len(run.vectors.vocab) - 2, "dim": int(run.vectors.vectors.shape[1]),
                              "sentences": run.vectors.sentences, "sha256": run.vectors.sha256()})


__all__ = [
    "HEAD_VARIANTS", "query_words", "build_vocabulary", "encode_words", "cooccurrence_counts", "ppmi",
    "truncated_svd", "WordVectors", "ppmi_svd_vectors", "QueryEncoder", "TANGrounding", "QuerySet", "predict_maps",
    "ranked_windows", "EarlyStopping", "fit_early_stopping", "train_tan", "validation_videos", "query_set",
    "TanRun", "run_tan_protocol", "run_grounding_task",
]
