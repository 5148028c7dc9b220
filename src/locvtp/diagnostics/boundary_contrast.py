"""How sharply do a model's clip embeddings and zero-shot curves mark where a sentence's moment starts and ends?

Issue 15's question: why does the temporal-aware term lower zero-shot grounding when added to the fine-grained term?
A context head that predicts a neighbour's embedding from a clip and its offset can pull the embeddings of
neighbouring clips together. If it does, the clips just outside a moment (its *flanks*) look like the clips inside,
and the zero-shot curve, which the window scorer contrasts inside against outside, loses its edges. This measures
exactly that, on the held-out grounding queries `locvtp evaluate grounding` scores, with the same curves:

- ``edge_*``: (mean curve inside the ground-truth moment − mean over the ≤ ``flank`` clips just outside it) / the
  curve's std over the video, for the combined curve (``alpha`` of the evaluation) and its sentence-only
  (alpha = 1) and word-only (alpha = 0) parts; ``far``: the same against the clips further away;
- ``cos_in`` / ``cos_cross``: mean cosine of adjacent clips both inside the moment / one inside and one outside;
  ``cos_gap`` = in − cross, the embedding's own boundary; ``cos_adj``: adjacent clips over the whole video.

    python -m locvtp.diagnostics.boundary_contrast --world W runs/plus_fine runs/plus_fine_plus_temporal --json s0.json
    python -m locvtp.diagnostics.boundary_contrast --summarize s0.json s1.json s2.json   # mean ± std over seeds

Larger edge and gap = sharper boundaries. Means over the queries (clips whose centre lies in the moment are inside).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch


def query_contrast(curve: np.ndarray, inside: np.ndarray, flank: int) -> tuple[float, float]:
    """(inside − flank) and (inside − far) means of one curve over its std; NaN when a side is empty."""
    idx = np.flatnonzero(inside)
    if len(idx) == 0 or inside.all():
        return float("nan"), float("nan")
    dist = np.abs(np.arange(len(curve))[:, None] - idx[None, :]).min(1)
    near = ~inside & (dist <= flank)
    far = ~inside & (dist > flank)
    sd = curve.std() + 1e-8
    mean_in = curve[inside].mean()
    edge = (mean_in - curve[near].mean()) / sd if near.any() else float("nan")
    return float(edge), float((mean_in - curve[far].mean()) / sd) if far.any() else float("nan")


def adjacent_cosines(feats: np.ndarray, inside: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cosines of clips t, t+1: all pairs, pairs inside the moment, pairs crossing its boundary."""
    f = feats / (np.linalg.norm(feats, axis=1, keepdims=True) + 1e-8)
    cos = (f[:-1] * f[1:]).sum(1)
    both = inside[:-1] & inside[1:]
    cross = inside[:-1] != inside[1:]
    return cos, cos[both], cos[cross]


def stopword_top1(feats: np.ndarray, words: np.ndarray, is_stop: np.ndarray, inside: np.ndarray) -> float:
    """Share of the in-moment clips whose top-1 word (by dot product) is a stop word; NaN without such clips."""
    if not inside.any() or len(words) == 0:
        return float("nan")
    top = (feats[inside] @ words.T).argmax(1)
    return float(is_stop[top].mean())


def stop_word_masks(tokenizer, texts: list[str], max_words: int) -> list[np.ndarray]:
    """Per text, which of its words (the embedding's ``word_mask`` positions) are stop words — the training's own
    rule (`locvtp.data.stopwords.content_words`), from token ids, with no second pass through the text encoder."""
    from locvtp.data.stopwords import content_words, stopword_ids

    batch = tokenizer(texts, max_length=max_words)
    ids = torch.as_tensor(batch["input_ids"]).long()
    att = torch.as_tensor(batch["attention_mask"]).bool()
    words = torch.as_tensor(batch.get("word_mask", att)).bool() & att
    stop = words & ~content_words(ids, words, stopword_ids(tokenizer))
    return [stop[i][words[i]].numpy() for i in range(len(texts))]


def measure(checkpoint: str, world: Path, flank: int = 2) -> dict[str, float]:
    from locvtp.downstream.evaluate import check_options, load_options, prepare_context
    from locvtp.downstream.grounding import load_grounding_queries
    from locvtp.localize import clip_query_scores

    opts = check_options(load_options())
    g = opts.grounding
    ctx, _ = prepare_context(checkpoint, world, None, ["grounding"], opts, None, False, 0, None, False, "cpu")
    queries, _ = load_grounding_queries(world, g.dataset, "test", False, g)
    texts = ctx.bank.texts([q.query for q in queries])
    stop_masks = stop_word_masks(ctx.tokenizer, [q.query for q in queries], ctx.cfg.data.max_words)
    rows: dict[str, list] = {k: [] for k in ("edge", "far", "edge_sentence", "edge_words", "stop_top1",
                                              "cos_sent_stop", "cos_sent_content")}
    n_stop = n_words = 0
    cos_all, cos_in, cos_cross = [], [], []
    for k, q in enumerate(queries):
        seq = ctx.bank.video(q.vid)
        if seq is None or len(seq.features) < 2:
            continue
        centres = seq.windows.mean(1)
        inside = (centres >= q.start) & (centres <= q.end)
        for key, alpha in (("edge", g.alpha), ("edge_sentence", 1.0), ("edge_words", 0.0)):
            curve = clip_query_scores(seq.features, texts.sentence[k], texts.words[k], alpha=alpha)
            edge, far = query_contrast(curve, inside, flank)
            rows[key].append(edge)
            if key == "edge":
                rows["far"].append(far)
        is_stop = stop_masks[k]
        n_stop, n_words = n_stop + int(is_stop.sum()), n_words + len(is_stop)
        rows["stop_top1"].append(stopword_top1(seq.features, texts.words[k], is_stop, inside))
        w = texts.words[k] / (np.linalg.norm(texts.words[k], axis=1, keepdims=True) + 1e-8)
        cs = w @ (texts.sentence[k] / (np.linalg.norm(texts.sentence[k]) + 1e-8))
        rows["cos_sent_stop"].append(cs[is_stop].mean() if is_stop.any() else np.nan)
        rows["cos_sent_content"].append(cs[~is_stop].mean() if (~is_stop).any() else np.nan)
        a, i, c = adjacent_cosines(seq.features, inside)
        cos_all.append(a), cos_in.append(i), cos_cross.append(c)
    out = {k: float(np.nanmean(v)) for k, v in rows.items()}
    ci, cc = float(np.concatenate(cos_in).mean()), float(np.concatenate(cos_cross).mean())
    out.update(cos_in=ci, cos_cross=cc, cos_gap=ci - cc, cos_adj=float(np.concatenate(cos_all).mean()),
               stop_words=n_stop / max(n_words, 1))
    return out


def summarize(paths: list[Path], keys: tuple[str, ...] = ("edge", "stop_top1", "cos_cross", "cos_gap", "cos_adj",
                                                          "cos_sent_stop", "cos_sent_content")) -> str:
    """Markdown table: mean ± std over several ``--json`` outputs (e.g. one per seed), one row per run directory
    name (the checkpoint path's last part)."""
    runs = [json.loads(Path(p).read_text()) for p in paths]
    names = list(dict.fromkeys(Path(ck).name for r in runs for ck in r))
    lines = ["| run | " + " | ".join(keys) + " |", "|---|" + "|".join("---:" for _ in keys) + "|"]
    for name in names:
        vals = [v for r in runs for ck, v in r.items() if Path(ck).name == name]
        cells = [f"{np.mean([v[k] for v in vals]):.2f} ± {np.std([v[k] for v in vals], ddof=1):.2f}"
                 if len(vals) > 1 else f"{vals[0][k]:.2f}" for k in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + f"\n\n({len(runs)} files)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoints", nargs="*", help="checkpoint or run directories")
    ap.add_argument("--world", type=Path)
    ap.add_argument("--summarize", nargs="+", type=Path, default=None,
                    help="instead: mean ± std over earlier --json outputs (one per seed)")
    ap.add_argument("--flank", type=int, default=2, help="clips just outside the moment that count as its flank")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    a = ap.parse_args(argv)
    from locvtp.files import check_file_output, write_owned_text

    if a.json is not None:  # before the work: a user's file there is never replaced
        check_file_output(a.json, "boundary_contrast", "--json")
    if a.summarize:
        print(summarize(a.summarize))
        return 0
    if not a.checkpoints or a.world is None:
        ap.error("give checkpoints and --world (or --summarize JSON ...)")
    torch.set_num_threads(1)
    res = {ck: measure(ck, a.world, a.flank) for ck in a.checkpoints}
    keys = list(next(iter(res.values())))
    width = max(len(c) for c in res)
    print(f"{'checkpoint':<{width}} " + " ".join(f"{k:>13}" for k in keys))
    for ck, r in res.items():
        print(f"{ck:<{width}} " + " ".join(f"{r[k]:13.3f}" for k in keys))
    if a.json:
        write_owned_text(a.json, json.dumps(res, indent=2), "boundary_contrast")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
