"""Text-to-video retrieval (MSR-VTT protocol): zero-shot from the joint space, and optional fine-tuning.

Zero-shot: a video's embedding is the L2-normalized mean of its clip embeddings (the coarse objective's ``v``,
METHOD.md §1), a caption's is its sentence embedding; ``sim = texts · videosᵀ`` goes to
``locvtp.metrics.retrieval_metrics`` (CLIP4Clip conventions). On the JSFusion 1k-A split every test video has
one caption, so ground truth sits on the diagonal.

Fine-tuning (``finetune=True``): contrastive (symmetric InfoNCE) on the train split's (video, caption) pairs for
a few epochs. What is trained, and why: the text encoder and its projection, plus a zero-initialized residual
linear adapter on the (frozen, cached) video embeddings, and the temperature. The video tower itself stays
frozen: back-propagating through pixels of every training video is what a CPU budget cannot afford, and with
the adapter starting at zero the fine-tuned model starts exactly at the zero-shot one.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from locvtp.downstream.common import torch_generator


def video_embedding(clips: np.ndarray) -> np.ndarray:
    """The video-level embedding: normalize(mean over clips) ``[D]``."""
    v = np.asarray(clips, dtype=np.float64).mean(axis=0)
    return (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)


def similarity(text_emb: np.ndarray, video_emb: np.ndarray) -> np.ndarray:
    """``[n_text, n_video]`` cosine similarities (inputs are L2-normalized)."""
    return np.asarray(text_emb, np.float32) @ np.asarray(video_emb, np.float32).T


@dataclass
class FinetuneConfig:
    epochs: int = 5
    batch_size: int = 64
    lr: float = 5e-5  # text encoder
    adapter_lr: float = 1e-3
    weight_decay: float = 0.01
    temperature: float = 0.05  # initial; learned (log-parametrized)
    max_words: int = 24


class VideoAdapter(nn.Module):
    """``v ↦ normalize(v + W v + b)`` with W, b = 0 at init (identity on normalized inputs)."""

    def __init__(self, dim: int):
        super().__init__()
        self.fc = nn.Linear(dim, dim)
        nn.init.zeros_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return F.normalize(v + self.fc(v), dim=-1)


@dataclass
class FinetunedRetrieval:
    """The fine-tuned text side (a copy of the model: the caller's model is untouched) and the video adapter."""

    model: Any
    adapter: VideoAdapter
    losses: list[float]

    @torch.no_grad()
    def embed_videos(self, video_emb: np.ndarray) -> np.ndarray:
        self.adapter.eval()
        device = next(self.adapter.parameters()).device
        return self.adapter(torch.as_tensor(np.asarray(video_emb, np.float32), device=device)).cpu().numpy()

    def embed_texts(self, tokenizer: Any, texts: Sequence[str], max_words: int) -> np.ndarray:
        from locvtp.inference import embed_texts

        return embed_texts(self.model, tokenizer, list(texts), max_words=max_words).sentence


def finetune_retrieval(model: Any, tokenizer: Any, video_emb: np.ndarray, captions: Sequence[Sequence[str]],
                       cfg: FinetuneConfig = FinetuneConfig(), seed: int = 0, progress: bool = False
                       ) -> FinetunedRetrieval:
    """Contrastive fine-tuning on train pairs: ``video_emb [V, D]`` (cached, frozen) and ``captions[v]`` (≥ 1
    each). Each epoch visits every video once with one of its captions drawn at random (seeded)."""
    from locvtp.runtime import progress as tqdm

    if len(video_emb) != len(captions):
        raise ValueError(f"{len(video_emb)} videos but {len(captions)} caption lists")
    keep = [k for k, c in enumerate(captions) if len(c)]
    if len(keep) < 2:
        raise ValueError("retrieval fine-tuning needs at least 2 training videos with captions")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    ft = copy.deepcopy(model)
    ft.train()
    for p in ft.parameters():
        p.requires_grad_(False)
    text_params = list(ft.text_encoder.parameters()) + list(ft.text_proj.parameters())
    for p in text_params:
        p.requires_grad_(True)
    device = next(ft.parameters()).device
    adapter = VideoAdapter(int(video_emb.shape[1])).to(device)
    log_scale = nn.Parameter(torch.tensor(float(np.log(1.0 / cfg.temperature)), device=device))
    opt = torch.optim.AdamW([
        {"params": text_params, "lr": cfg.lr},
        {"params": list(adapter.parameters()) + [log_scale], "lr": cfg.adapter_lr},
    ], weight_decay=cfg.weight_decay)
    vids = torch.as_tensor(np.asarray(video_emb, np.float32))
    gen = torch_generator(seed)
    losses: list[float] = []
    for _ in tqdm(range(cfg.epochs), desc="retrieval fine-tune", disable=not progress, leave=False):
        order = [keep[int(k)] for k in torch.randperm(len(keep), generator=gen)]
        total, count = 0.0, 0
        for lo in range(0, len(order), cfg.batch_size):
            idx = order[lo:lo + cfg.batch_size]
            if len(idx) < 2:  # a batch of one has no negatives
                continue
            texts = [captions[k][int(rng.integers(len(captions[k])))] for k in idx]
            tok = tokenizer(texts, max_length=cfg.max_words)
            ids = torch.as_tensor(tok["input_ids"]).long().to(device)
            att = torch.as_tensor(tok["attention_mask"]).bool().to(device)
            _, s = ft.encode_text(ids, att)
            v = adapter(vids[idx].to(device))
            logits = log_scale.clamp(max=np.log(100.0)).exp() * s @ v.T
            target = torch.arange(len(idx), device=device)
            loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            count += len(idx)
        losses.append(total / max(count, 1))
    ft.eval()
    adapter.eval()
    return FinetunedRetrieval(ft, adapter, losses)


# --------------------------------------------------------------------------------------------------- the task
@dataclass
class RetrievalData:
    test: list[tuple[str, str]]  # (video id, caption), one row per test query
    train: dict[str, list[str]]  # video id -> captions (fine-tuning)
    skipped: list[dict]
    captions: dict[str, list[str]] = field(default_factory=dict)  # every video's MSRVTT_data.json captions


@dataclass
class RetrievalOptions:
    finetune: bool = False
    finetune_cfg: FinetuneConfig = field(default_factory=FinetuneConfig)
    # Also evaluate with *every* caption of the test videos (MSRVTT_data.json) as queries, the multi-caption
    # protocol (CLIP4Clip's multi-sentence path): reported as retrieval_allcap_* and retrieval_allcap_v2t_*.
    all_captions: bool = False
    top_k_saved: int = 10  # ranked video ids per query written to the JSON


def load_msrvtt(data_dir: str | Path, strict: bool = False, test_csv: str = "MSRVTT_JSFUSION_test.csv",
                train_csv: str = "MSRVTT_train.9k.csv") -> RetrievalData:
    """MSR-VTT under ``<data>/retrieval/`` via ``locvtp.data.formats``: JSFusion test queries, and the train
    split's videos with all their ``MSRVTT_data.json`` captions (only needed for fine-tuning; absent train
    files leave ``train`` empty)."""
    from locvtp.data import formats
    from locvtp.downstream.common import bad_records

    root = Path(data_dir) / "retrieval"
    test = formats.read_msrvtt_jsfusion_csv(root / test_csv, strict=strict)
    skipped = bad_records(test.skipped)
    captions: dict[str, list[str]] = {}
    if (root / "MSRVTT_data.json").is_file():
        data = formats.read_msrvtt_data(root / "MSRVTT_data.json", strict=strict)
        skipped += bad_records(data.skipped)
        captions = {v.video_id: list(v.captions) for v in data.records}
    train: dict[str, list[str]] = {}
    if (root / train_csv).is_file() and captions:
        ids = formats.read_msrvtt_split_csv(root / train_csv, strict=strict)
        skipped += bad_records(ids.skipped)
        train = {vid: captions[vid] for vid in ids.records if captions.get(vid)}
    return RetrievalData([(q.video_id, q.sentence) for q in test.records], train, skipped, captions)


def _ranked(sim: np.ndarray, vids: Sequence[str], top_k: int) -> list[dict]:
    order = np.argsort(-sim, axis=1, kind="stable")[:, :top_k]
    gt_rank = (sim > np.diag(sim)[:, None]).sum(axis=1) + 1  # rank of the diagonal (ties in its favour)
    return [{"top_videos": [vids[j] for j in row], "gt_rank": int(r)} for row, r in zip(order, gt_rank)]


# The similarity files `evaluate` writes (`locvtp score retrieval` reads them), by figure prefix.
SIMILARITY_FILES = {"retrieval": "retrieval_similarity.npz", "retrieval_allcap": "retrieval_allcap_similarity.npz",
                    "retrieval_ft": "retrieval_ft_similarity.npz"}


def similarity_arrays(sim: np.ndarray, video_ids: Sequence[str], rows: Sequence[tuple[str, str]]
                      ) -> dict[str, np.ndarray]:
    """A similarity file's arrays (:func:`locvtp.scoring.read_similarity`): the matrix as scored, its columns'
    video ids, and each row's annotated (video, sentence)."""
    return {"sim": np.asarray(sim), "video_ids": np.array(list(video_ids), dtype=str),
            "query_video_ids": np.array([v for v, _ in rows], dtype=str),
            "queries": np.array([c for _, c in rows], dtype=str)}


def run_retrieval(ctx, opts: RetrievalOptions | None = None) -> "TaskResult":
    """Zero-shot text→video (and video→text) retrieval on the test split; optionally fine-tuned as well."""
    from locvtp.downstream.common import DownstreamError, TaskResult, prefixed
    from locvtp.metrics import retrieval_metrics

    opts = opts or RetrievalOptions()
    data = load_msrvtt(ctx.data_dir, strict=ctx.strict)
    rows = [(v, c) for v, c in data.test if ctx.bank.video(v) is not None and len(ctx.bank.video(v).features)]
    missing = sorted({v for v, _ in data.test} - {v for v, _ in rows})
    if len(rows) < 2:
        raise DownstreamError(f"retrieval needs at least 2 usable test videos under {ctx.data_dir}/retrieval "
                              f"(missing: {missing[:5]})")
    vids = [v for v, _ in rows]
    video_emb = np.stack([video_embedding(ctx.bank.video(v).features) for v in vids])
    text_emb = ctx.bank.texts([c for _, c in rows]).sentence
    sim = similarity(text_emb, video_emb)
    metrics = prefixed("retrieval", retrieval_metrics(sim))
    metrics["chance_retrieval_R1"] = 100.0 / len(rows)
    metrics.update(prefixed("retrieval_v2t", retrieval_metrics(sim.T)))
    preds = [{"video_id": v, "query": c, **r} for (v, c), r in zip(rows, _ranked(sim, vids, opts.top_k_saved))]
    arrays = {SIMILARITY_FILES["retrieval"]: similarity_arrays(sim, vids, rows)}
    info: dict[str, Any] = {"test_queries": len(data.test), "evaluated_queries": len(rows), "missing_videos": missing,
                            "skipped_annotations": data.skipped}
    if opts.all_captions:
        from locvtp.metrics import multi_caption_retrieval_metrics

        caps = [(k, c) for k, v in enumerate(vids) for c in data.captions.get(v, [])]
        if not caps or len({k for k, _ in caps}) < len(vids):
            raise DownstreamError(f"retrieval.all_captions: every test video needs captions in "
                                  f"{ctx.data_dir}/retrieval/MSRVTT_data.json")
        sim_all = similarity(ctx.bank.texts([c for _, c in caps]).sentence, video_emb)
        arrays[SIMILARITY_FILES["retrieval_allcap"]] = similarity_arrays(sim_all, vids, [(vids[k], c) for k, c in caps])
        multi = multi_caption_retrieval_metrics(sim_all, np.array([k for k, _ in caps]))
        metrics.update(prefixed("retrieval_allcap", multi["text_to_video"]))
        metrics.update(prefixed("retrieval_allcap_v2t", multi["video_to_text"]))
        info["all_caption_queries"] = len(caps)
    if opts.finetune:
        train_vids = [v for v in data.train if ctx.bank.video(v) is not None and len(ctx.bank.video(v).features)]
        tr_emb = np.stack([video_embedding(ctx.bank.video(v).features) for v in train_vids])
        fcfg = replace(opts.finetune_cfg, max_words=ctx.max_words)  # the checkpoint's token budget
        ft = finetune_retrieval(ctx.model, ctx.tokenizer, tr_emb, [data.train[v] for v in train_vids],
                                fcfg, seed=ctx.seed, progress=ctx.progress)
        sim_ft = similarity(ft.embed_texts(ctx.tokenizer, [c for _, c in rows], ctx.max_words),
                            ft.embed_videos(video_emb))
        metrics.update(prefixed("retrieval_ft", retrieval_metrics(sim_ft)))
        arrays[SIMILARITY_FILES["retrieval_ft"]] = similarity_arrays(sim_ft, vids, rows)
        for p, r in zip(preds, _ranked(sim_ft, vids, opts.top_k_saved)):
            p["finetuned"] = r
        info.update(finetune_train_videos=len(train_vids), finetune_losses=[round(v, 5) for v in ft.losses],
                    finetune_config=asdict(fcfg))
    return TaskResult("retrieval", metrics, preds, info, array_files=arrays)
