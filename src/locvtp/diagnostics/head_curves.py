"""Does the 2D-TAN head on frozen features saturate, under-train or overfit? Its learning curves, per checkpoint.

The demo's fine-tuned grounding head (``head_grounding_R1@0.5``) barely tells coarse from LocVTP features
(docs/results.md). This trains the same head (`train_tan_head`, the evaluation's settings unless overridden) on the
same pooled features and sentence embeddings `locvtp evaluate grounding` uses, and prints R1@0.5 / mIoU on the
*train* and *test* queries after chosen epochs, for several head seeds. Two controls bound what features can add:
``blind`` (the features zeroed: what the head learns from the sentence and moment priors alone), ``deaf`` (the
first checkpoint's features with the sentence zeroed: how far finding *an* event, not the sentence's, goes) and
``oracle`` (each bin's feature = the share of it covered by the query's own ground-truth moment, the best any
feature can tell; the query embedding is kept, so the head must still learn to read it).

    python -m locvtp.diagnostics.head_curves --world W run_coarse run_locvtp --epochs 5 10 20 40 80 --seeds 0 1 2
    python -m locvtp.diagnostics.head_curves --head tan --world W run_backbone run_coarse run_locvtp

``--head tan`` brackets the evaluation's own head (``grounding.head_variant=tan``: shared word vectors + LSTM,
``grounding.tan_cfg``'s recipe, early stopping on the validation videos, ``tan_cfg.seeds`` head seeds) instead:
test R1@0.5 per head seed for each checkpoint and, beside the first, ``blind`` and ``oracle`` (``deaf`` has no
meaning there: the query side is the head's own). What a world leaves to features is oracle − blind; a checkpoint
near the oracle saturates the head.

Reading it: train ≫ test and test falling with epochs = overfitting; both still rising at the default epoch count =
under-training; every checkpoint close to the oracle or to the blind control = saturation (or features unused).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch


def _recall(head, x: np.ndarray, q: np.ndarray, gt: np.ndarray, dur: np.ndarray) -> dict[str, float]:
    from locvtp.downstream.grounding import predict_score_maps
    from locvtp.metrics import grounding_recall, score_map_to_windows

    maps = predict_score_maps(head, x, q)
    ranked = [score_map_to_windows(m, float(d))[0] for m, d in zip(maps, dur)]
    r = grounding_recall(ranked, gt)
    return {"R1@0.5": r["R1@0.5"], "mIoU": r["mIoU"]}


def oracle_features(gt: np.ndarray, dur: np.ndarray, num_bins: int) -> np.ndarray:
    """[Q, N, 1]: the share of each of N equal bins covered by the query's ground-truth moment."""
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    s = (gt[:, :1] / dur[:, None]).clip(0, 1)
    e = (gt[:, 1:] / dur[:, None]).clip(0, 1)
    cover = (np.minimum(e, edges[None, 1:]) - np.maximum(s, edges[None, :-1])).clip(0) * num_bins
    return cover[..., None].astype(np.float32)


def curves(data, cfg, epochs: Sequence[int], seeds: Sequence[int]) -> dict[str, dict[str, list[float]]]:
    """{"train_R1@0.5": [per epoch, mean over seeds], "test_R1@0.5": ..., "train_mIoU": ..., "test_mIoU": ...,
    "loss": ...} and the per-seed test R1@0.5 at the last epoch (``"test_R1@0.5_seeds"``)."""
    from locvtp.downstream.grounding import train_tan_head

    keep = set(epochs)
    per_seed = []
    for seed in seeds:
        rows: dict[int, dict[str, float]] = {}

        def on_epoch(epoch: int, head) -> None:
            if epoch in keep:
                tr = _recall(head, data.x_train, data.q_train, data.gt_train, data.dur_train)
                te = _recall(head, data.x_test, data.q_test, data.gt_test, data.dur_test)
                rows[epoch] = {**{f"train_{k}": v for k, v in tr.items()}, **{f"test_{k}": v for k, v in te.items()}}

        _, losses = train_tan_head(data.x_train, data.q_train, data.gt_train, data.dur_train,
                                   replace(cfg, epochs=max(epochs)), seed=seed, on_epoch=on_epoch)
        for e in rows:
            rows[e]["loss"] = losses[e - 1]
        per_seed.append(rows)
    out = {k: [float(np.mean([r[e][k] for r in per_seed])) for e in epochs] for k in per_seed[0][epochs[0]]}
    out["test_R1@0.5_seeds"] = [r[max(epochs)]["test_R1@0.5"] for r in per_seed]
    return out


def controls(data, num_bins: int, deaf: bool) -> dict[str, object]:
    """The controls beside the first checkpoint: ``blind`` (features zeroed), ``oracle`` (each bin's share of the
    query's own moment) and, for a head that reads the checkpoint's sentences, ``deaf`` (sentences zeroed)."""
    out = {"blind (features zeroed)": replace(data, x_train=np.zeros_like(data.x_train),
                                              x_test=np.zeros_like(data.x_test))}
    if deaf:
        out["deaf (sentences zeroed)"] = replace(data, q_train=np.zeros_like(data.q_train),
                                                 q_test=np.zeros_like(data.q_test))
    out["oracle (ground-truth coverage)"] = replace(
        data, x_train=oracle_features(data.gt_train, data.dur_train, num_bins),
        x_test=oracle_features(data.gt_test, data.dur_test, num_bins))
    return out


def tan_bracket(data, hc, tc, seed: int = 0) -> dict[str, object]:
    """The ``tan`` protocol on ``data`` (as `locvtp evaluate grounding` runs it): mean and per-seed test R1@0.5,
    the best epochs."""
    from locvtp.downstream.tan import run_tan_protocol

    run = run_tan_protocol(data, hc, tc, seed=seed)
    per = [float(r["R1@0.5"]) for r in run.per_seed]
    return {"test_R1@0.5": float(np.mean(per)), "test_R1@0.5_seeds": per,
            "best_epochs": [log.best_epoch for log in run.logs]}


def _tan_main(a, opts, prepare_context, head_data) -> dict[str, dict]:
    g = opts.grounding
    results: dict[str, dict] = {}
    for i, ck in enumerate(a.checkpoints):
        ctx, _ = prepare_context(ck, a.world, None, ["grounding"], opts, None, False, 0, None, False, "cpu")
        data = head_data(ctx, g, sentences=False)
        runs = {ck: data, **(controls(data, g.head_cfg.num_clips, deaf=False) if i == 0 else {})}
        for name, d in runs.items():
            results[name] = r = tan_bracket(d, g.head_cfg, g.tan_cfg)
            seeds = ", ".join(f"{v:.1f}" for v in r["test_R1@0.5_seeds"])
            print(f"{name}: test R1@0.5 {r['test_R1@0.5']:.1f} (head seeds: {seeds}; best epochs "
                  f"{r['best_epochs']})")
            sys.stdout.flush()
    return results


def _print(name: str, epochs: Sequence[int], c: dict) -> None:
    print(f"\n{name}")
    print("epoch        " + " ".join(f"{e:>6d}" for e in epochs))
    for k in ("loss", "train_R1@0.5", "test_R1@0.5", "train_mIoU", "test_mIoU"):
        fmt = "{:6.3f}" if k == "loss" else "{:6.1f}"
        print(f"{k:<12} " + " ".join(fmt.format(v) for v in c[k]))
    print(f"test R1@0.5 at epoch {max(epochs)} per head seed: {c['test_R1@0.5_seeds']}")


def main(argv: list[str] | None = None) -> int:
    from locvtp.downstream.evaluate import check_options, load_options, prepare_context
    from locvtp.downstream.grounding import head_data

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoints", nargs="+", help="checkpoint or run directories")
    ap.add_argument("--world", required=True, type=Path)
    ap.add_argument("--epochs", type=int, nargs="+", default=[5, 10, 20, 40, 80])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="head seeds")
    ap.add_argument("--set", dest="overrides", nargs="*", default=[], help="downstream options (key=value)")
    ap.add_argument("--json", type=Path, default=None, help="also write every curve here")
    ap.add_argument("--head", choices=("checkpoint_text", "tan"), default="checkpoint_text",
                    help="tan: bracket the evaluation's tan head (test R1@0.5 per head seed; blind and oracle)")
    a = ap.parse_args(argv)
    from locvtp.files import check_file_output, write_owned_text

    if a.json is not None:  # before the work: a user's file there is never replaced
        check_file_output(a.json, "head_curves", "--json")
    torch.set_num_threads(1)
    epochs = sorted(set(a.epochs))
    opts = check_options(load_options(None, a.overrides))
    g = opts.grounding
    if a.head == "tan":
        results = _tan_main(a, opts, prepare_context, head_data)
        if a.json:
            write_owned_text(a.json, json.dumps({"head": "tan", "results": results}, indent=2), "head_curves")
        return 0
    results: dict[str, dict] = {}
    for i, ck in enumerate(a.checkpoints):
        ctx, _ = prepare_context(ck, a.world, None, ["grounding"], opts, None, False, 0, None, False, "cpu")
        data = head_data(ctx, g)
        runs = {ck: data, **(controls(data, g.head_cfg.num_clips, deaf=True) if i == 0 else {})}
        for name, d in runs.items():
            results[name] = curves(d, g.head_cfg, epochs, a.seeds)
            _print(name, epochs, results[name])
            sys.stdout.flush()
    if a.json:
        write_owned_text(a.json, json.dumps({"epochs": epochs, "seeds": a.seeds, "curves": results}, indent=2),
                         "head_curves")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
