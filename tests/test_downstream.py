"""Downstream tasks: the array logic against plain-loop references, the 2D-TAN head learning, and every task end
to end on the tiny world with a randomly initialised checkpoint (JSON outputs, CLI, determinism)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from inference_helpers import make_checkpoint

from locvtp.downstream.common import overlap_pool_matrix, format_table, write_json
from locvtp.downstream.grounding import (
    HeadConfig, TAN2DHead, clip_query_score_matrix, moment_iou, moment_map_pool, predict_score_maps, rank_windows,
    scaled_iou_bce, train_tan_head, window_scores,
)
from locvtp.downstream.segmentation import ProbeConfig, clip_labels, train_probe
from locvtp.downstream.steps import assignment_matrix


# ------------------------------------------------------------------------------------------- zero-shot windows
def _window_scores_loop(s, kind):
    n = len(s)
    out = np.full((n, n), -np.inf)
    for i in range(n):
        for j in range(i, n):
            inside = s[i:j + 1]
            if kind in ("oic", "oic_t"):  # flanks of max(1, round(0.25 * length)) clips, clipped to the video
                r = max(1, int(round(0.25 * len(inside))))
                outside = np.concatenate([s[max(0, i - r):i], s[j + 1:j + 1 + r]])
            else:
                outside = np.concatenate([s[:i], s[j + 1:]])
            if len(outside) == 0:
                out[i, j] = 0.0
                continue
            d = inside.mean() - outside.mean()
            if kind in ("tstat", "oic_t"):
                d /= math.sqrt(1 / len(inside) + 1 / len(outside))
            out[i, j] = d
    return out


@pytest.mark.parametrize("kind", ["tstat", "contrast", "oic", "oic_t"])
@pytest.mark.parametrize("n", [1, 2, 7, 20])
def test_window_scores_match_loop(kind, n):
    s = np.random.default_rng(n).normal(size=n)
    got = window_scores(s, kind)
    ref = _window_scores_loop(s, kind)
    assert np.array_equal(np.isfinite(got), np.isfinite(ref))
    np.testing.assert_allclose(got[np.isfinite(got)], ref[np.isfinite(ref)], atol=1e-10)


def test_window_scores_length_limits():
    ws = window_scores(np.arange(6.0), min_len=2, max_len=3)
    lengths = np.arange(6)[None, :] - np.arange(6)[:, None] + 1
    assert np.all(np.isfinite(ws) == ((lengths >= 2) & (lengths <= 3)))


@pytest.mark.parametrize("kind", ["tstat", "contrast", "oic", "oic_t"])
def test_clear_bump_gives_the_right_window(kind):
    windows = np.stack([np.arange(30.0), np.arange(1.0, 31.0)], axis=1)  # 1-s clips
    curve = np.zeros(30)
    curve[11:17] = 1.0  # clips 11..16 -> [11 s, 17 s]
    ranked, scores = rank_windows(curve, windows, kind=kind)
    np.testing.assert_array_equal(ranked[0], [11.0, 17.0])
    assert np.all(np.diff(scores) <= 0)


def _iou(a, b):
    return max(0, min(a[1], b[1]) - max(a[0], b[0])) / (max(a[1], b[1]) - min(a[0], b[0]))


def test_noisy_bump_with_an_outlier_needs_the_t_statistic():
    """A single strong spike outscores the bump under both plain contrasts (global and local: the spike's own
    flanks are low); the t statistic's standard-error term prefers the 8-clip bump. (Trade-off of the default
    `oic`, documented in window_scores.)"""
    rng = np.random.default_rng(3)
    windows = np.stack([np.arange(40.0), np.arange(1.0, 41.0)], axis=1)
    curve = rng.normal(0, 0.3, size=40)
    curve[20:28] += 1.0
    curve[5] = 2.5  # one outlier clip
    assert _iou(rank_windows(curve, windows, kind="contrast")[0][0], (20, 28)) < 0.5
    assert _iou(rank_windows(curve, windows, kind="tstat")[0][0], (20, 28)) > 0.7


def test_rank_windows_is_deterministic_on_ties():
    windows = np.stack([np.arange(5.0), np.arange(1.0, 6.0)], axis=1)
    a = rank_windows(np.zeros(5), windows, max_candidates=None)[0]
    b = rank_windows(np.zeros(5), windows, max_candidates=None)[0]
    np.testing.assert_array_equal(a, b)
    assert len(a) == 15


def test_clip_query_score_matrix_matches_loop():
    rng = np.random.default_rng(0)
    clips = rng.normal(size=(9, 4))
    sents = rng.normal(size=(3, 4))
    words = [rng.normal(size=(2, 4)), np.zeros((0, 4)), rng.normal(size=(5, 4))]
    got = clip_query_score_matrix(clips, sents, words, alpha=0.3)
    z = lambda v: (v - v.mean()) / v.std()
    for k in range(3):
        s = z(np.array([clips[t] @ sents[k] for t in range(9)]))
        if len(words[k]):
            w = z(np.array([np.mean([clips[t] @ w for w in words[k]]) for t in range(9)]))
            ref = 0.3 * s + 0.7 * w
        else:
            ref = s
        np.testing.assert_allclose(got[:, k], ref, atol=1e-10)


# ------------------------------------------------------------------------------------------- 2D-TAN pieces
@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("n", [1, 5, 8, 13])
def test_moment_map_pool_matches_loop(mode, n):
    x = torch.randn(2, n, 3, dtype=torch.float64)
    got = moment_map_pool(x, mode)
    ref = torch.zeros(2, 3, n, n, dtype=torch.float64)
    for i in range(n):
        for j in range(i, n):
            seg = x[:, i:j + 1]
            ref[:, :, i, j] = seg.max(dim=1).values if mode == "max" else seg.mean(dim=1)
    torch.testing.assert_close(got, ref)


def test_moment_iou_matches_loop():
    gt = torch.tensor([[2.0, 7.5], [0.0, 20.0], [13.0, 14.0]])
    dur = torch.tensor([20.0, 20.0, 16.0])
    n = 8
    got = moment_iou(gt, dur, n)
    for b in range(3):
        for i in range(n):
            for j in range(n):
                if j < i:
                    assert got[b, i, j] == 0
                    continue
                s, e = i * dur[b] / n, (j + 1) * dur[b] / n
                inter = max(0.0, min(e, gt[b, 1]) - max(s, gt[b, 0]))
                union = max(e, gt[b, 1]) - min(s, gt[b, 0])
                assert abs(float(got[b, i, j]) - float(inter / union)) < 1e-5


def test_scaled_iou_bce_matches_2dtan_formula_and_grad():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 4, dtype=torch.float64, requires_grad=True)
    iou = torch.rand(2, 4, 4, dtype=torch.float64)
    mask = torch.triu(torch.ones(4, 4, dtype=torch.bool))
    got = scaled_iou_bce(logits, iou, mask, 0.5, 1.0)
    # 2D-TAN bce_rescale_loss (bias 0), element by element
    total, count = 0.0, 0
    for b in range(2):
        for i in range(4):
            for j in range(4):
                if not mask[i, j]:
                    continue
                p = 1 / (1 + math.exp(-float(logits[b, i, j].detach())))
                t = min(max((float(iou[b, i, j]) - 0.5) / 0.5, 0.0), 1.0)
                total += -(t * math.log(p) + (1 - t) * math.log(1 - p))
                count += 1
    assert abs(got.item() - total / count) < 1e-10
    assert torch.autograd.gradcheck(lambda x: scaled_iou_bce(x, iou, mask, 0.5, 1.0), (logits,))


def test_tan_head_masks_invalid_moments_and_edges():
    head = TAN2DHead(6, 5, num_clips=6, hidden=8, layers=2, kernel=3)
    out = head(torch.randn(3, 6, 6), torch.randn(3, 5))
    assert out.shape == (3, 6, 6)
    assert torch.all(out[:, ~head.mask2d] <= -1e3)
    # the edge re-weighting equals 1 / (number of valid moments in the 3x3 field) on the first layer
    w = head.conv_weights[0, 0, 0]
    assert w[0, 0] == pytest.approx(1 / 3)  # (0,0), (0,1), (1,1)
    assert w[3, 0] == 0  # far below the diagonal: nothing valid in reach
    for i in range(6):
        for j in range(6):
            count = sum(1 for a in range(i - 1, i + 2) for b in range(j - 1, j + 2)
                        if 0 <= a < 6 and 0 <= b < 6 and a <= b)
            assert float(w[i, j]) == pytest.approx(1 / count if count else 0.0)
    w2 = head.conv_weights[1, 0, 0]  # second layer: the valid set has grown by one diagonal
    assert w2[3, 0] > 0 and w2[5, 0] == 0


def _synthetic_moments(n_samples, n_bins, rng):
    """Features that make the moment obvious: channel 0 is on inside the moment, plus noise."""
    feats = rng.normal(0, 0.2, size=(n_samples, n_bins, 8)).astype(np.float32)
    gt = np.zeros((n_samples, 2))
    for k in range(n_samples):
        length = int(rng.integers(2, 7))
        start = int(rng.integers(0, n_bins - length + 1))
        feats[k, start:start + length, 0] += 2.0
        gt[k] = (start, start + length)
    queries = rng.normal(0, 0.1, size=(n_samples, 4)).astype(np.float32) + 1.0
    return feats, queries, gt, np.full(n_samples, float(n_bins))


@pytest.mark.parametrize("pooling", ["avg", "max"])
def test_tan_head_learns_an_obvious_moment(pooling):
    from locvtp.metrics import grounding_recall, score_map_to_windows

    rng = np.random.default_rng(0)
    x, q, gt, dur = _synthetic_moments(240, 12, rng)
    cfg = HeadConfig(num_clips=12, hidden=16, layers=2, kernel=3, pooling=pooling, epochs=12, lr=3e-3,
                     batch_size=16, dropout=0.0)

    def recall(head):
        maps = predict_score_maps(head, x[200:], q[200:])
        return grounding_recall([score_map_to_windows(m, d)[0] for m, d in zip(maps, dur[200:])], gt[200:])

    torch.manual_seed(0)
    untrained = recall(TAN2DHead(8, 4, 12, 16, 2, 3, pooling, 0.0))
    head, losses = train_tan_head(x[:200], q[:200], gt[:200], dur[:200], cfg, seed=0)
    assert losses[-1] < 0.7 * losses[0]
    rec = recall(head)
    assert rec["R1@0.5"] >= 75.0 and rec["R1@0.5"] >= untrained["R1@0.5"] + 40, (rec, untrained)
    assert rec["mIoU"] >= 65.0
    if pooling == "avg":  # and it is deterministic given the seed
        _, losses2 = train_tan_head(x[:200], q[:200], gt[:200], dur[:200], cfg, seed=0)
        assert losses2 == losses


def test_tan_head_epoch_callback_sees_each_epoch_and_changes_nothing():
    """The learning-curve hook (diagnostics.head_curves) must not change what is trained: dropout on, and the
    callback evaluates the head (and draws random numbers) in between epochs."""
    rng = np.random.default_rng(1)
    x, q, gt, dur = _synthetic_moments(64, 8, rng)
    cfg = HeadConfig(num_clips=8, hidden=8, layers=1, kernel=3, epochs=4, lr=3e-3, batch_size=16, dropout=0.3)
    head_a, losses_a = train_tan_head(x, q, gt, dur, cfg, seed=3)
    seen = []

    def hook(epoch, head):
        assert not head.training
        seen.append(epoch)
        torch.rand(5)  # a callback drawing random numbers must not shift the training's draws
        predict_score_maps(head, x[:4], q[:4])

    head_b, losses_b = train_tan_head(x, q, gt, dur, cfg, seed=3, on_epoch=hook)
    assert seen == [1, 2, 3, 4]
    assert losses_a == losses_b
    for pa, pb in zip(head_a.parameters(), head_b.parameters()):
        assert torch.equal(pa, pb)


def test_head_curves_oracle_features_match_a_plain_loop():
    from locvtp.diagnostics.head_curves import oracle_features

    rng = np.random.default_rng(0)
    dur = rng.uniform(5, 30, 20)
    a = rng.uniform(-1, 1.1, 20) * dur
    b = rng.uniform(0, 1.2, 20) * dur
    gt = np.stack([np.minimum(a, b), np.maximum(a, b)], 1)
    n = 7
    got = oracle_features(gt, dur, n)
    assert got.shape == (20, n, 1)
    for i in range(20):
        s, e = min(max(gt[i, 0] / dur[i], 0), 1), min(max(gt[i, 1] / dur[i], 0), 1)
        for k in range(n):
            lo, hi = k / n, (k + 1) / n
            want = max(0.0, min(e, hi) - max(s, lo)) / (hi - lo)
            assert got[i, k, 0] == pytest.approx(want, abs=1e-6)


def test_overlap_pool_matrix():
    windows = np.array([[0, 1], [1, 2], [2, 3], [3, 4]], dtype=float)
    w = overlap_pool_matrix(windows, 4.0, 2)
    np.testing.assert_allclose(w, [[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]])
    w = overlap_pool_matrix(windows, 4.0, 8)  # more bins than clips: each bin inside one clip
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    assert np.argmax(w[5]) == 2
    w = overlap_pool_matrix(windows[:2], 4.0, 4)  # clips end at 2 s: tail bins take the nearest clip
    np.testing.assert_allclose(w[3], [0, 1])


# ------------------------------------------------------------------------------------------- steps, segmentation
def test_assignment_matrix_follows_crosstask_read_assignment():
    # CrossTask: Y[floor(start):ceil(end), step-1] = 1
    y = assignment_matrix(10, 3, [(1, 0.5, 2.2), (3, 6.0, 7.0), (2, 9.5, 12.0)])
    ref = np.zeros((10, 3), np.uint8)
    ref[0:3, 0] = 1
    ref[6:7, 2] = 1
    ref[9:10, 1] = 1
    np.testing.assert_array_equal(y, ref)
    y2 = assignment_matrix(5, 1, [(1, 2.0, 4.0)], stride_seconds=2.0)  # 2-s clips: rows 1..1
    np.testing.assert_array_equal(y2[:, 0], [0, 1, 0, 0, 0])
    with pytest.raises(ValueError, match="step 4"):
        assignment_matrix(5, 3, [(4, 0.0, 1.0)])


def test_clip_labels_by_centre():
    windows = np.array([[0, 1], [1, 2], [2, 3], [3, 4], [4, 4.5]], dtype=float)
    labels = clip_labels(windows, [(1.0, 3.0, "a"), (3.4, 4.5, "b")])
    assert labels == ["background", "a", "a", "b", "b"]


@pytest.mark.parametrize("head", ["linear", "tcn"])
def test_probe_learns_separable_labels(head):
    rng = np.random.default_rng(1)
    means = {"x": np.array([2.0, 0, 0]), "y": np.array([0, 2.0, 0]), "background": np.array([0, 0, 2.0])}
    feats, labels = [], []
    for _ in range(8):
        lab = [str(l) for l in rng.choice(list(means), size=15)]
        feats.append(np.stack([means[l] + rng.normal(0, 0.3, 3) for l in lab]).astype(np.float32))
        labels.append(lab)
    probe = train_probe(feats[:6], labels[:6], ProbeConfig(head=head, epochs=150, tcn_epochs=150, kernel=1), seed=0)
    pred = [probe.predict(f) for f in feats[6:]]
    acc = np.mean([p == g for pp, gg in zip(pred, labels[6:]) for p, g in zip(pp, gg)])
    assert acc > 0.95
    with pytest.raises(ValueError, match="2 feature rows but 3 labels"):
        train_probe([np.zeros((2, 3))], [["a", "b", "c"]])


def test_format_table_and_write_json(tmp_path):
    t = format_table({"a_R1": 1.234, "b": float("nan")}, title="T")
    assert "a_R1" in t and "1.23" in t and "nan" in t
    p = write_json(tmp_path / "x" / "m.json", {"v": np.float32(1.5), "arr": np.arange(3), "bad": float("inf")})
    assert json.loads(p.read_text()) == {"v": 1.5, "arr": [0, 1, 2], "bad": None}
    assert not list((tmp_path / "x").glob("*.tmp"))


# ------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def random_ckpt(tiny_world, tmp_path_factory):
    return make_checkpoint(tiny_world, tmp_path_factory.mktemp("dsck") / "ckpt")


@pytest.fixture(scope="module")
def all_results(random_ckpt, tiny_world, tmp_path_factory):
    from locvtp.downstream import evaluate_all

    out = tmp_path_factory.mktemp("dseval")
    metrics = evaluate_all(random_ckpt, tiny_world, out_dir=out, progress=False, seed=0, verbose=False, threads=1)
    return metrics, out


EXPECTED = ["retrieval_R1", "retrieval_R5", "retrieval_R10", "retrieval_MedianR", "grounding_R1@0.5",
            "grounding_R1@0.7", "grounding_mIoU", "head_grounding_R1@0.5", "head_grounding_R1@0.7",
            "head_grounding_mIoU", "step_recall", "segmentation_acc", "segmentation_edit", "segmentation_F1@50"]


def test_evaluate_all_returns_every_metric(all_results):
    metrics, out = all_results
    for k in EXPECTED:
        assert k in metrics and math.isfinite(metrics[k]), k
        if k != "retrieval_MedianR":
            assert 0.0 <= metrics[k] <= 100.0, (k, metrics[k])
    assert metrics["retrieval_MedianR"] >= 1
    # the floors are reported next to the figures
    assert metrics["chance_retrieval_R1"] == 25.0  # 4 test videos
    for k in ("chance_grounding_R1@0.5", "chance_grounding_mIoU", "chance_step_recall", "chance_segmentation_acc"):
        assert 0.0 <= metrics[k] <= 100.0, k
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["metrics"]["step_recall"] == pytest.approx(metrics["step_recall"])


def test_task_jsons_hold_metrics_and_predictions(all_results, tiny_world):
    _, out = all_results
    gt = json.loads((tiny_world / "ground_truth.json").read_text())
    ret = json.loads((out / "retrieval.json").read_text())
    assert ret["metrics"]["retrieval_R1"] >= 0 and len(ret["predictions"]) == ret["info"]["evaluated_queries"] == 4
    assert all(p["gt_rank"] >= 1 and p["video_id"] in gt for p in ret["predictions"])
    grd = json.loads((out / "grounding.json").read_text())
    anet = json.loads((tiny_world / "grounding/activitynet/val_1.json").read_text())
    assert len(grd["predictions"]) == sum(len(v["sentences"]) for v in anet.values())
    for p in grd["predictions"]:
        zs, head = p["pred_relevant_windows"], p["head_pred_relevant_windows"]
        assert 1 <= len(zs) <= 5 and 1 <= len(head) <= 5
        for s, e, _score in zs + head:
            assert 0 <= s < e <= p["duration"] + 1e-6
        assert [w[2] for w in zs] == sorted((w[2] for w in zs), reverse=True)  # best first
    steps = json.loads((out / "steps.json").read_text())
    assert steps["info"]["evaluated_videos"] == len(steps["predictions"]) > 0
    for p in steps["predictions"]:
        assert p["predicted_clip_per_step"] == sorted(p["predicted_clip_per_step"])  # Viterbi keeps the order
    seg = json.loads((out / "segmentation.json").read_text())
    assert all(len(p["pred"]) == len(p["gt"]) for p in seg["predictions"])
    assert "background" in seg["info"]["classes"]


def test_random_model_is_not_far_above_chance_on_retrieval(all_results):
    """4 test videos: chance R1 is 25 %, MedianR 2.5; a random model must not look like a trained one."""
    metrics, _ = all_results
    assert metrics["retrieval_R1"] <= 75.0


def test_loaded_checkpoint_object_and_determinism(all_results, random_ckpt, tiny_world):
    from locvtp.checkpoint import load_checkpoint
    from locvtp.downstream import evaluate_all

    metrics, _ = all_results
    ck = load_checkpoint(random_ckpt)
    again = evaluate_all(ck, tiny_world, tasks=("grounding", "steps"), progress=False, seed=0, verbose=False, threads=1)
    for k in ("grounding_R1@0.5", "grounding_mIoU", "head_grounding_mIoU", "step_recall"):
        assert again[k] == metrics[k], k


def test_cli_single_task(random_ckpt, tiny_world, tmp_path, capsys):
    from locvtp.cli import main

    rc = main(["evaluate", "steps", "--checkpoint", str(random_ckpt), "--data", str(tiny_world),
               "--out", str(tmp_path), "--quiet", "--threads", "1"])
    assert rc == 0
    assert "step_recall" in capsys.readouterr().out
    assert json.loads((tmp_path / "steps.json").read_text())["task"] == "steps"
    rc = main(["evaluate", "grounding", "--checkpoint", str(tmp_path / "missing"), "--data", str(tiny_world)])
    assert rc == 1
    assert "missing" in capsys.readouterr().err


def test_options_reject_unknown_keys():
    from locvtp.downstream.common import DownstreamError
    from locvtp.downstream.evaluate import load_options

    opts = load_options(None, ["grounding.tan_cfg.epochs=3", "segmentation.probe.head=tcn"])
    assert opts.grounding.tan_cfg.epochs == 3 and opts.segmentation.probe.head == "tcn"
    with pytest.raises(DownstreamError, match="epoch"):
        load_options(None, ["grounding.head_cfg.epoch=3"])


def test_default_yaml_spells_out_the_defaults():
    from pathlib import Path

    from locvtp.downstream.evaluate import DownstreamOptions, load_options

    import yaml
    from omegaconf import OmegaConf

    path = Path(__file__).resolve().parents[1] / "configs" / "downstream" / "default.yaml"
    assert load_options(path) == DownstreamOptions()

    def keys(d, prefix=""):
        out = set()
        for k, v in d.items():
            out |= keys(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k}
        return out

    spelled = keys(yaml.safe_load(path.read_text()))
    assert spelled == keys(OmegaConf.to_container(OmegaConf.structured(DownstreamOptions)))


def test_retrieval_finetune_starts_at_zero_shot_and_leaves_the_model_untouched(random_ckpt, tiny_world):
    """With zero learning rates the fine-tuned model is the zero-shot one (zero-initialized adapter), and
    fine-tuning works on a copy: the caller's model is unchanged afterwards."""
    from locvtp.checkpoint import load_checkpoint
    from locvtp.downstream import evaluate_all, load_options

    ck = load_checkpoint(random_ckpt)
    before = {k: v.clone() for k, v in ck.model.state_dict().items()}
    opts = load_options(None, ["retrieval.finetune=true", "retrieval.finetune_cfg.epochs=2",
                               "retrieval.finetune_cfg.lr=0", "retrieval.finetune_cfg.adapter_lr=0"])
    m = evaluate_all(ck, tiny_world, tasks=("retrieval",), options=opts, progress=False, verbose=False, threads=1)
    for k in ("R1", "R5", "MedianR", "MeanR"):
        assert m[f"retrieval_ft_{k}"] == m[f"retrieval_{k}"], k
    opts = load_options(None, ["retrieval.finetune=true", "retrieval.finetune_cfg.epochs=2"])
    m = evaluate_all(ck, tiny_world, tasks=("retrieval",), options=opts, progress=False, verbose=False, threads=1)
    assert all(torch.equal(before[k], v) for k, v in ck.model.state_dict().items())


def test_features_of_this_checkpoint_replace_decoding(all_results, random_ckpt, tiny_world, tmp_path):
    """`locvtp extract` output for the same checkpoint (joint space, matching sha256) is used instead of the
    videos: identical figures with an empty video directory."""
    from locvtp.cli import main
    from locvtp.downstream import evaluate_all

    metrics, _ = all_results
    h5 = tmp_path / "feats.h5"
    assert main(["extract", "--checkpoint", str(random_ckpt), "--videos", str(tiny_world / "videos"),
                 "--out", str(h5), "--threads", "1", "--no-progress"]) == 0
    empty = tmp_path / "no_videos"
    empty.mkdir()
    got = evaluate_all(random_ckpt, tiny_world, tasks=("grounding", "steps"), features=h5, video_dir=empty,
                       progress=False, verbose=False, threads=1)
    for k in ("grounding_R1@0.5", "grounding_mIoU", "head_grounding_mIoU", "step_recall"):
        assert got[k] == pytest.approx(metrics[k], abs=1e-6), k


def test_a_broken_video_is_skipped_and_reported_or_fails_in_strict_mode(random_ckpt, tiny_world, tmp_path):
    import shutil

    from locvtp.downstream import evaluate_all, load_options

    world = tmp_path / "world"
    shutil.copytree(tiny_world, world)
    anet = json.loads((world / "grounding/activitynet/val_1.json").read_text())
    bad = sorted(anet)[0]
    (world / "videos" / f"{bad}.mp4").write_bytes(b"not an mp4 at all")
    opts = load_options(None, ["grounding.head=false"])
    out = tmp_path / "out"
    m = evaluate_all(random_ckpt, world, out_dir=out, tasks=("grounding",), options=opts, progress=False,
                     verbose=False, threads=1)
    assert math.isfinite(m["grounding_R1@0.5"])
    info = json.loads((out / "grounding.json").read_text())["info"]
    assert bad in info["failed_videos"] and bad in info["missing_videos"]
    assert info["zero_shot_queries"] == info["test_queries"] - len(anet[bad]["sentences"])
    with pytest.raises(OSError, match=bad):
        evaluate_all(random_ckpt, world, tasks=("grounding",), options=opts, progress=False, verbose=False,
                     strict=True, threads=1)


# ------------------------------------------------------------------------------------------- oracle embeddings
def _oracle_context(world):
    """An EvalContext whose bank returns *oracle* embeddings built from the world's exact ground truth: a clip is
    the one-hot sum of (colour, shape, action) of the event under its centre (an 'idle' unit otherwise), a text
    the same code of the event it describes. A model this good must score near the top on every protocol, which
    checks the wiring (time units, GT alignment, step order, labels) independently of any training."""
    from omegaconf import OmegaConf

    from locvtp.data.video import sliding_windows
    from locvtp.downstream.common import EmbeddingBank, EvalContext, TextEmbeddings
    from locvtp.featurestore.record import ClipFeatures

    gt = json.loads((world / "ground_truth.json").read_text())
    manifest = json.loads((world / "manifest.json").read_text())
    vocab = manifest["vocabulary"]
    units = {f"c:{c}": i for i, c in enumerate(vocab["colours"])}
    units.update({f"s:{s}": len(units) + i for i, s in enumerate(vocab["shapes"])})
    units.update({f"a:{a}": len(units) + i for i, a in enumerate(vocab["actions"])})
    idle = len(units)

    def code(video, event):
        obj = video["objects"][event["object"]]
        v = np.zeros(idle + 1)
        v[[units[f"c:{obj['colour']}"], units[f"s:{obj['shape']}"], units[f"a:{event['action']}"]]] = 1
        return v / np.linalg.norm(v)

    text_code = {}
    for name in ("train.json", "val_1.json"):
        for vid, a in json.loads((world / "grounding/activitynet" / name).read_text()).items():
            for sent, ev in zip(a["sentences"], gt[vid]["events"]):
                text_code[sent] = code(gt[vid], ev)
    for sent in json.loads((world / "retrieval/MSRVTT_data.json").read_text())["sentences"]:
        vid = sent["video_id"]
        text_code[sent["caption"]] = code(gt[vid], gt[vid]["events"][0])
    for vid, video in gt.items():
        for ev in video["events"]:
            text_code.setdefault(ev["caption"], code(video, ev))  # CrossTask step texts are the captions

    def embed_video(vid):
        video = gt[vid]
        windows = sliding_windows(video["duration"], 1.0, 1.0)
        feats = np.zeros((len(windows), idle + 1))
        feats[:, idle] = 1.0
        for t, (s, e) in enumerate(windows):
            c = (s + e) / 2
            for ev in video["events"]:
                if ev["start"] <= c < ev["end"]:
                    feats[t] = code(video, ev)
        return ClipFeatures("", feats.astype(np.float32), windows, 0.0, float(video["duration"]))

    def embed_texts(texts):
        rng = np.random.default_rng(0)
        sent = np.stack([text_code.get(t, rng.normal(size=idle + 1)) for t in texts]).astype(np.float32)
        return TextEmbeddings(sent, [s[None] for s in sent])

    cfg = OmegaConf.create({"data": {"max_words": 24, "clip_seconds": 1.0}})
    bank = EmbeddingBank(embed_video, embed_texts, progress=False, strict=True)
    return EvalContext(None, None, cfg, world, bank, progress=False)


def test_oracle_embeddings_score_near_the_top_on_every_protocol(tiny_world):
    from locvtp.downstream.grounding import GroundingOptions, run_grounding
    from locvtp.downstream.retrieval import run_retrieval
    from locvtp.downstream.segmentation import run_segmentation
    from locvtp.downstream.steps import run_steps

    ctx = _oracle_context(tiny_world)
    ret = run_retrieval(ctx).metrics
    assert ret["retrieval_R1"] == 100.0 and ret["retrieval_MedianR"] == 1.0
    grd = run_grounding(ctx, GroundingOptions(head=False)).metrics
    assert grd["grounding_R1@0.5"] >= 70.0 and grd["grounding_mIoU"] >= 65.0, grd
    assert grd["grounding_R1@0.5"] > grd["chance_grounding_R1@0.5"] + 40
    steps = run_steps(ctx).metrics
    assert steps["step_recall"] >= 90.0 and steps["step_recall"] > steps["chance_step_recall"] + 30, steps
    seg = run_segmentation(ctx).metrics
    assert seg["segmentation_acc"] >= 85.0 and seg["segmentation_acc"] > seg["chance_segmentation_acc"] + 20, seg


def test_all_captions_protocol_with_oracle_embeddings(tiny_world):
    """Every caption of every test video as a query (multi-caption protocol): the oracle retrieves them all."""
    from locvtp.downstream.retrieval import RetrievalOptions, run_retrieval

    ctx = _oracle_context(tiny_world)
    data = json.loads((tiny_world / "retrieval/MSRVTT_data.json").read_text())
    gt = json.loads((tiny_world / "ground_truth.json").read_text())
    res = run_retrieval(ctx, RetrievalOptions(all_captions=True))
    n_caps = sum(1 for s in data["sentences"] if gt[s["video_id"]]["split"] == "retrieval_test")
    assert res.info["all_caption_queries"] == n_caps > res.info["evaluated_queries"]
    assert res.metrics["retrieval_allcap_R1"] == 100.0 and res.metrics["retrieval_allcap_v2t_R1"] == 100.0


def test_log_softmax_steps_matches_formula():
    from locvtp.downstream.steps import log_softmax_steps

    s = np.random.default_rng(0).normal(size=(6, 4)) * 10
    ref = np.array([[s[t, k] - math.log(sum(math.exp(x) for x in s[t])) for k in range(4)] for t in range(6)])
    np.testing.assert_allclose(log_softmax_steps(s), ref, atol=1e-9)
