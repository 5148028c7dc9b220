"""Action segmentation (COIN protocol): per-clip labels from frozen clip features.

The paper's segmentation protocol (as ActBERT/VideoCLIP on COIN) evaluates how linearly separable the frozen
features are: a linear classifier over every clip (= every second, with 1-s clips) predicts the step label or
``background``; frame accuracy is the headline, Edit and F1@{10,25,50} (``locvtp.metrics.segmentation_metrics``,
MS-TCN conventions) tell over-segmentation apart. An optional small temporal conv head (two 1-D convs over the
clip sequence) shows what a little temporal context adds on top of the same frozen features.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from locvtp.downstream.common import run_single_threaded, torch_generator

from locvtp.scoring import BACKGROUND, SegVideo, frame_labels, read_coin_splits, segmentation_figures  # noqa: F401

# The per-frame predictions `evaluate` writes: {"video_id", "frame_times" (clip centres, s), "pred" (labels)}.
SEGMENTATION_PREDICTIONS = "segmentation_predictions.jsonl"


def clip_labels(windows: np.ndarray, segments: Sequence[tuple[float, float, str]],
                background: str = BACKGROUND) -> list[str]:
    """The label of each clip: the segment containing the clip's centre (``start <= c < end``), else background
    (:func:`locvtp.scoring.frame_labels` at :func:`clip_centres`)."""
    return frame_labels(clip_centres(windows), segments, background)


def clip_centres(windows: np.ndarray) -> np.ndarray:
    """``[T]`` centres (seconds) of ``[T, 2]`` clip windows: the times a clip's label is read at."""
    return np.asarray(windows, dtype=np.float64).reshape(-1, 2).mean(axis=1)


@dataclass
class ProbeConfig:
    head: str = "linear"  # linear | tcn
    epochs: int = 300  # linear: full-batch steps
    tcn_epochs: int = 60  # tcn: epochs over the training videos
    lr: float = 1e-2
    weight_decay: float = 1e-4
    hidden: int = 64  # tcn width
    kernel: int = 5  # tcn kernel (clips)
    batch_size: int = 16  # tcn: videos per step


class TemporalConvHead(nn.Module):
    """Two 1-D convolutions over the clip axis: ``[B, T, D] -> [B, T, C]`` (padding 'same')."""

    def __init__(self, in_dim: int, num_classes: int, hidden: int = 64, kernel: int = 5):
        super().__init__()
        if kernel % 2 != 1:
            raise ValueError(f"tcn kernel must be odd, got {kernel}")
        self.conv1 = nn.Conv1d(in_dim, hidden, kernel, padding=kernel // 2)
        self.conv2 = nn.Conv1d(hidden, num_classes, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h = x.transpose(1, 2)
        if mask is not None:
            h = h * mask[:, None, :].to(h.dtype)  # padding contributes nothing to its neighbours
        h = F.relu(self.conv1(h))
        if mask is not None:
            h = h * mask[:, None, :].to(h.dtype)
        return self.conv2(h).transpose(1, 2)


@dataclass
class FittedProbe:
    """A trained per-clip classifier with the feature standardization fitted on the training clips."""

    model: nn.Module
    mean: np.ndarray
    std: np.ndarray
    classes: list[str]
    kind: str
    losses: list[float]

    @torch.no_grad()
    @run_single_threaded
    def predict(self, feats: np.ndarray) -> list[str]:
        """Labels of one video's clips ``[T, D]``."""
        x = torch.as_tensor((np.asarray(feats, np.float32) - self.mean) / self.std)
        self.model.eval()
        logits = self.model(x) if self.kind == "linear" else self.model(x[None])[0]
        return [self.classes[int(k)] for k in logits.argmax(dim=-1)]


@run_single_threaded  # tiny tensors: see common.single_threaded
def train_probe(feats: Sequence[np.ndarray], labels: Sequence[Sequence[str]], cfg: ProbeConfig = ProbeConfig(),
                seed: int = 0, progress: bool = False) -> FittedProbe:
    """Fit a linear probe (``cfg.head="linear"``) or a temporal conv head (``"tcn"``) on training videos.

    ``feats[v] [T_v, D]`` frozen features, ``labels[v]`` the T_v clip labels. The linear probe is trained
    full-batch (softmax regression with AdamW: the optimum is unique up to the weight decay, so the result
    hardly depends on the optimizer); the conv head in mini-batches of padded videos. Deterministic by seed.
    """
    from locvtp.runtime import progress as tqdm

    if len(feats) != len(labels) or not feats:
        raise ValueError(f"need matching non-empty feature/label lists, got {len(feats)} and {len(labels)}")
    for k, (f, y) in enumerate(zip(feats, labels)):
        if len(f) != len(y):
            raise ValueError(f"training video {k}: {len(f)} feature rows but {len(y)} labels")
    if cfg.head not in ("linear", "tcn"):
        raise ValueError(f"segmentation head must be 'linear' or 'tcn', got {cfg.head!r}")
    torch.manual_seed(seed)
    classes = sorted({lab for y in labels for lab in y})
    index = {c: i for i, c in enumerate(classes)}
    allx = np.concatenate([np.asarray(f, np.float32) for f in feats])
    mean = allx.mean(axis=0)
    std = np.maximum(allx.std(axis=0), 1e-6).astype(np.float32)
    dim = allx.shape[1]
    losses: list[float] = []
    if cfg.head == "linear":
        model: nn.Module = nn.Linear(dim, len(classes))
        x = torch.as_tensor((allx - mean) / std)
        y = torch.as_tensor([index[lab] for seq in labels for lab in seq], dtype=torch.long)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        for _ in tqdm(range(cfg.epochs), desc="linear probe", disable=not progress, leave=False):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    else:
        model = TemporalConvHead(dim, len(classes), cfg.hidden, cfg.kernel)
        t_max = max(len(f) for f in feats)
        xs = torch.zeros(len(feats), t_max, dim)
        ys = torch.full((len(feats), t_max), -100, dtype=torch.long)  # ignore_index on padding
        mask = torch.zeros(len(feats), t_max, dtype=torch.bool)
        for v, (f, lab) in enumerate(zip(feats, labels)):  # building the padded batch, not a forward
            xs[v, :len(f)] = torch.as_tensor((np.asarray(f, np.float32) - mean) / std)
            ys[v, :len(f)] = torch.as_tensor([index[c] for c in lab])
            mask[v, :len(f)] = True
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        gen = torch_generator(seed)
        for _ in tqdm(range(cfg.tcn_epochs), desc="temporal conv head", disable=not progress, leave=False):
            perm = torch.randperm(len(feats), generator=gen)
            total = 0.0
            for k in range(0, len(feats), cfg.batch_size):
                idx = perm[k:k + cfg.batch_size]
                logits = model(xs[idx], mask[idx])
                loss = F.cross_entropy(logits.reshape(-1, len(classes)), ys[idx].reshape(-1), ignore_index=-100)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
            losses.append(total / len(feats))
    model.eval()
    return FittedProbe(model, mean.astype(np.float32), std, classes, cfg.head, losses)


@dataclass
class SegmentationOptions:
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    background: str = BACKGROUND


def run_segmentation(ctx, opts: SegmentationOptions | None = None) -> "TaskResult":
    """Train the probe on COIN's ``training`` subset (frozen features), evaluate on ``testing``."""
    from locvtp.downstream.common import DownstreamError, TaskResult
    from locvtp.metrics import segmentation_metrics

    opts = opts or SegmentationOptions()
    train, test, skipped = load_coin(ctx.data_dir, strict=ctx.strict)
    if not train or not test:
        raise DownstreamError(f"COIN needs training and testing videos; found {len(train)} and {len(test)} "
                              f"under {ctx.data_dir}")

    def gather(videos: Sequence[SegVideo]) -> tuple[list[np.ndarray], list[list[str]], list[str], list[str],
                                                    list[np.ndarray]]:
        feats, labels, used, missing, times = [], [], [], [], []
        for v in videos:
            seq = ctx.bank.features(v.vid)
            if seq is None or len(seq.features) == 0:
                missing.append(v.vid)
                continue
            feats.append(seq.features)
            labels.append(clip_labels(seq.windows, v.segments, opts.background))
            used.append(v.vid)
            times.append(clip_centres(seq.windows))
        return feats, labels, used, missing, times

    x_tr, y_tr, _, miss_tr, _ = gather(train)
    x_te, y_te, used_te, miss_te, t_te = gather(test)
    if not x_tr or not x_te:
        raise DownstreamError(f"segmentation: no usable training or testing video (missing: {miss_tr + miss_te})")
    probe = train_probe(x_tr, y_tr, opts.probe, seed=ctx.seed, progress=ctx.progress)
    pred = [probe.predict(x) for x in x_te]
    m = segmentation_metrics(pred, y_te, background=opts.background)
    metrics = segmentation_figures(m)
    preds = [{"video_id": vid, "pred": p, "gt": g} for vid, p, g in zip(used_te, pred, y_te)]
    lines = [{"video_id": vid, "frame_times": t.tolist(), "pred": p} for vid, t, p in zip(used_te, t_te, pred)]
    unseen = sorted({lab for y in y_te for lab in y} - set(probe.classes))
    # The floor a probe must beat: always predicting the most frequent training label (usually background).
    counts: dict[str, int] = {}
    for y in y_tr:
        for lab in y:
            counts[lab] = counts.get(lab, 0) + 1
    majority = max(sorted(counts), key=counts.__getitem__)
    majority_acc = 100.0 * sum(lab == majority for y in y_te for lab in y) / max(1, sum(len(y) for y in y_te))
    metrics["chance_segmentation_acc"] = majority_acc
    info = {"train_videos": len(x_tr), "test_videos": len(x_te), "missing_videos": miss_tr + miss_te,
            "skipped_annotations": skipped, "classes": probe.classes, "test_labels_unseen_in_training": unseen,
            "probe": asdict(opts.probe), "final_train_loss": probe.losses[-1] if probe.losses else None,
            "majority_label": majority, "majority_acc": majority_acc}
    return TaskResult("segmentation", metrics, preds, info,
                      prediction_files={SEGMENTATION_PREDICTIONS: lines})  # `locvtp score segmentation` reads it


def load_coin(data_dir: str | Path, strict: bool = False, file: str = "COIN.json"
              ) -> tuple[list[SegVideo], list[SegVideo], list[dict]]:
    """COIN under ``<data>/coin/``: :func:`locvtp.scoring.read_coin_splits` (training, testing, skipped)."""
    return read_coin_splits(Path(data_dir) / "coin" / file, strict)
