"""Tests of locvtp.metrics: hand-computed cases for each convention, plus plain-loop references (written from the
formulas of the reference evaluation code) compared on random inputs with hypothesis."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from locvtp import metrics as M

FAST = settings(max_examples=100, deadline=None)


# ================================================================================================================
# slow references: plain loops from the formulas
# ================================================================================================================
def ref_compute_metrics(x: np.ndarray) -> dict:
    """CLIP4Clip compute_metrics: one rank per position of the sorted row equal to the diagonal value."""
    ranks = []
    for i in range(x.shape[0]):
        row = sorted((-float(v) for v in x[i]))
        for pos, v in enumerate(row):
            if v - (-float(x[i, i])) == 0:
                ranks.append(pos)
    n = len(ranks)
    srt = sorted(ranks)
    median = (srt[(n - 1) // 2] + srt[n // 2]) / 2
    return {"R1": sum(r == 0 for r in ranks) * 100 / n, "R5": sum(r < 5 for r in ranks) * 100 / n,
            "R10": sum(r < 10 for r in ranks) * 100 / n, "MedianR": median + 1, "MeanR": sum(ranks) / n + 1}


def ref_multi_t2v(sim: np.ndarray, video_of_text: np.ndarray) -> dict:
    """Double argsort (stable) as CLIP4Clip tensor_text_to_video_metrics, torch.median for the median."""
    t = torch.tensor(sim)
    first = torch.argsort(t, dim=-1, descending=True, stable=True)
    second = torch.argsort(first, dim=-1, stable=True)
    ranks = second[torch.arange(len(video_of_text)), torch.tensor(video_of_text)]
    n = len(ranks)
    return {"R1": float(torch.sum(ranks < 1).item() * 100 / n), "R5": float(torch.sum(ranks < 5).item() * 100 / n),
            "R10": float(torch.sum(ranks < 10).item() * 100 / n), "MedianR": float(torch.median(ranks + 1)),
            "MeanR": float(np.mean(ranks.numpy() + 1))}


def ref_multi_v2t(sim: np.ndarray, video_of_text: np.ndarray) -> dict:
    n_video = sim.shape[1]
    grouped = np.full((n_video, n_video), -np.inf)
    for t in range(sim.shape[0]):
        for j in range(n_video):
            grouped[video_of_text[t], j] = max(grouped[video_of_text[t], j], sim[t, j])
    return ref_compute_metrics(grouped.T)


def ref_iou(a, b) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = (a[1] - a[0]) + (b[1] - b[0]) - inter
    return 0.0 if union == 0 else inter / union


def ref_hull_iou(a, b) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    hull = max(0.0, max(a[1], b[1]) - min(a[0], b[0]))
    return 0.0 if hull == 0 else inter / hull


def ref_nms(windows, threshold, top_k=None) -> list[int]:
    """2D-TAN nms: walk the (ranked) list, keep the head, drop the rest whose IoU with it is > threshold."""
    order = list(range(len(windows)))
    keep = []
    while order:
        i = order[0]
        keep.append(i)
        if top_k is not None and len(keep) == top_k:
            break
        order = [j for j in order[1:] if ref_iou(windows[i], windows[j]) <= threshold]
    return keep


def ref_grounding(ranked, gt, recalls, ious, nms_thr) -> dict:
    res = {}
    hits = {(r, t): [] for r in recalls for t in ious}
    top1 = []
    for windows, g in zip(ranked, gt):
        windows = [list(map(float, w)) for w in windows]
        kept = [windows[i] for i in ref_nms(windows, nms_thr, max(recalls))]
        ov = [ref_hull_iou(w, g) for w in kept]
        top1.append(ov[0])
        for r in recalls:
            for t in ious:
                hits[(r, t)].append(any(o > t for o in ov[:r]))
    for r in recalls:
        for t in ious:
            res[f"R{r}@{t:g}"] = np.mean(hits[(r, t)]) * 100
    res["mIoU"] = np.mean(top1) * 100
    return res


def ref_ap_one(pred, gt, thr) -> float:
    """ActivityNet-style detection AP for one query and one threshold, loops only."""
    preds = sorted([list(map(float, p)) for p in pred], key=lambda p: -p[2])
    locked = [False] * len(gt)
    tps = []
    for p in preds:
        ious = [ref_iou(p[:2], g) for g in gt]
        order = sorted(range(len(gt)), key=lambda j: (ious[j], j), reverse=True)
        hit = False
        for j in order:
            if ious[j] < thr:
                break
            if locked[j]:
                continue
            locked[j] = True
            hit = True
            break
        tps.append(hit)
    if not preds:
        return 0.0
    prec, rec = [], []
    tp = fp = 0
    for h in tps:
        tp += h
        fp += not h
        prec.append(tp / (tp + fp))
        rec.append(tp / len(gt))
    mp = [0.0] + prec + [0.0]
    mr = [0.0] + rec + [1.0]
    for i in range(len(mp) - 2, -1, -1):
        mp[i] = max(mp[i], mp[i + 1])
    return sum((mr[i] - mr[i - 1]) * mp[i] for i in range(1, len(mr)) if mr[i] != mr[i - 1])


def ref_moment_map(preds, gts) -> dict:
    thrs = [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]
    aps = np.array([[ref_ap_one(list(p)[:10], [list(g) for g in gt], t) for t in thrs] for p, gt in zip(preds, gts)])
    per = aps.mean(0)
    r1 = {}
    for t in (0.5, 0.7):
        hits = []
        for p, gt in zip(preds, gts):
            first = list(p[0][:2])
            cross = [ref_iou(first, g) for g in gt]
            best = cross.index(max(cross))
            hits.append(ref_hull_iou(first, gt[best]) >= t)
        r1[f"R1@{t:g}"] = np.mean(hits) * 100
    return {"mAP": 100 * np.mean(per), "mAP@0.5": 100 * per[0], "mAP@0.75": 100 * per[5], **r1}


def ref_dp(cost: np.ndarray, exactly_one: bool = True, bg_cost: float = 0.0) -> np.ndarray:
    """Scalar transcription of the CrossTask dynamic program (states bg_0, step_1, bg_1, ..., step_K, bg_K)."""
    T, K = cost.shape
    KE = 2 * K + 1
    step = [0 if k % 2 == 0 else (k + 1) // 2 for k in range(KE)]
    L = [[None] * KE for _ in range(T + 1)]
    P = [[-1] * KE for _ in range(T + 1)]
    L[0][0] = 0.0
    P[0][0] = 0
    for t in range(1, T + 1):
        for k in range(KE):
            s = step[k]
            lab, val = -1, None
            cands = []
            if s == 0 or not exactly_one:
                cands.append(k)
            cands.append(k - 1)
            if s != 0:
                cands.append(k - 2)
            for j in cands:
                if j >= 0 and P[t - 1][j] != -1 and (lab == -1 or val > L[t - 1][j]):
                    lab, val = j, L[t - 1][j]
            if lab != -1:
                L[t][k] = val + (cost[t - 1][s - 1] if s else bg_cost)
            P[t][k] = lab
    if P[T][KE - 1] != -1 and L[T][KE - 1] < L[T][KE - 2]:
        k = KE - 1
    else:
        k = KE - 2
    y = np.zeros((T, K), dtype=np.uint8)
    for t in range(T, 0, -1):
        if step[k]:
            y[t - 1, step[k] - 1] = 1
        k = P[t][k]
    return y


def ref_segments(labels, bg):
    labs, starts, ends = [], [], []
    last = labels[0]
    if labels[0] not in bg:
        labs.append(labels[0])
        starts.append(0)
    for i in range(len(labels)):
        if labels[i] != last:
            if labels[i] not in bg:
                labs.append(labels[i])
                starts.append(i)
            if last not in bg:
                ends.append(i)
            last = labels[i]
    if last not in bg:
        ends.append(len(labels))
    return labs, starts, ends


def ref_levenshtein(p, y) -> float:
    D = [[0.0] * (len(y) + 1) for _ in range(len(p) + 1)]
    for i in range(len(p) + 1):
        D[i][0] = i
    for j in range(len(y) + 1):
        D[0][j] = j
    for j in range(1, len(y) + 1):
        for i in range(1, len(p) + 1):
            if y[j - 1] == p[i - 1]:
                D[i][j] = D[i - 1][j - 1]
            else:
                D[i][j] = min(D[i - 1][j] + 1, D[i][j - 1] + 1, D[i - 1][j - 1] + 1)
    return D[-1][-1]


def ref_f(pred, gt, overlap, bg):
    pl, ps, pe = ref_segments(pred, bg)
    yl, ys, ye = ref_segments(gt, bg)
    tp = fp = 0
    hits = [0] * len(yl)
    for j in range(len(pl)):
        if not yl:
            fp += 1
            continue
        ious = [(min(pe[j], ye[x]) - max(ps[j], ys[x])) / (max(pe[j], ye[x]) - min(ps[j], ys[x]))
                * (pl[j] == yl[x]) for x in range(len(yl))]
        idx = max(range(len(ious)), key=lambda x: (ious[x], -x))
        if ious[idx] >= overlap and not hits[idx]:
            tp += 1
            hits[idx] = 1
        else:
            fp += 1
    return tp, fp, len(yl) - sum(hits)


def ref_segmentation(preds, gts, bg=("background",)) -> dict:
    correct = total = 0
    edit = 0
    tp, fp, fn = [0.0] * 3, [0.0] * 3, [0.0] * 3
    for p, g in zip(preds, gts):
        for a, b in zip(g, p):
            total += 1
            correct += a == b
        P, _, _ = ref_segments(p, bg)
        Y, _, _ = ref_segments(g, bg)
        n = max(len(P), len(Y))
        edit += 100.0 if n == 0 else (1 - ref_levenshtein(P, Y) / n) * 100
        for s, o in enumerate((0.1, 0.25, 0.5)):
            a, b, c = ref_f(p, g, o, bg)
            tp[s] += a
            fp[s] += b
            fn[s] += c
    out = {"Acc": 100 * correct / total, "Edit": edit / len(gts)}
    for s, name in enumerate(("F1@10", "F1@25", "F1@50")):
        prec = tp[s] / (tp[s] + fp[s]) if tp[s] + fp[s] else float("nan")
        rec = tp[s] / (tp[s] + fn[s]) if tp[s] + fn[s] else float("nan")
        f1 = 2 * prec * rec / (prec + rec) if (prec + rec) else float("nan")
        out[name] = 0.0 if math.isnan(f1) else f1 * 100
    return out


# ================================================================================================================
# strategies
# ================================================================================================================
def int_matrix(n_rows, n_cols, lo=0, hi=3):
    return arrays(np.float64, (n_rows, n_cols), elements=st.integers(lo, hi).map(float))


@st.composite
def windows_st(draw, min_n=0, max_n=8, grid=True):
    n = draw(st.integers(min_n, max_n))
    elem = st.integers(0, 12).map(float) if grid else st.floats(0, 100, allow_nan=False)
    pts = [sorted((draw(elem), draw(elem))) for _ in range(n)]
    return np.array(pts, dtype=np.float64).reshape(n, 2)


# ================================================================================================================
# retrieval
# ================================================================================================================
class TestRetrieval:
    def test_perfect_and_hand_ranks(self):
        assert M.retrieval_metrics(np.eye(3)) == {"R1": 100.0, "R5": 100.0, "R10": 100.0, "MedianR": 1.0, "MeanR": 1.0}
        # row 0: true 0.5 beaten by 0.9 -> rank 1; row 1: rank 0; row 2: beaten by two -> rank 2.
        sim = np.array([[0.5, 0.9, 0.1], [0.0, 1.0, 0.2], [0.7, 0.8, 0.3]])
        m = M.retrieval_metrics(sim)
        assert m["R1"] == 100 / 3
        assert m["MedianR"] == 2.0 and m["MeanR"] == 2.0

    def test_median_of_even_count_averages(self):
        # ranks [1, 0] -> np.median = 0.5 -> MedianR 1.5
        m = M.retrieval_metrics(np.array([[0.0, 1.0], [0.0, 1.0]]))
        assert m["MedianR"] == 1.5 and m["R1"] == 50.0 and m["MeanR"] == 1.5

    def test_ties_expand_into_every_tied_position(self):
        # Constant matrix: each row contributes ranks 0..3 -> 16 ranks, 4 of them 0.
        m = M.retrieval_metrics(np.ones((4, 4)))
        assert m == {"R1": 25.0, "R5": 100.0, "R10": 100.0, "MedianR": 2.5, "MeanR": 2.5}
        # One row tied with one other candidate (ranks 0 and 1), one clean row (rank 0): 3 ranks in the denominator.
        m = M.retrieval_metrics(np.array([[1.0, 1.0], [0.0, 1.0]]))
        assert m["R1"] == 200 / 3

    def test_recall_at_k_boundary(self):
        n = 12
        sim = np.tile(np.arange(n, 0, -1, dtype=float), (n, 1))  # every row: column j scores n - j
        # row i's true column has rank i: R5 counts ranks 0..4, R10 counts 0..9
        m = M.retrieval_metrics(sim)
        assert m["R1"] == 100 / n and m["R5"] == 500 / n and m["R10"] == 1000 / n
        assert m["MedianR"] == 6.5  # ranks 0..11 -> median 5.5

    @FAST
    @given(st.integers(1, 7).flatmap(lambda n: int_matrix(n, n)))
    def test_matches_loop_reference(self, sim):
        got = M.retrieval_metrics(sim)
        want = ref_compute_metrics(sim)
        assert got == pytest.approx(want, rel=0, abs=1e-12)

    @FAST
    @given(st.integers(1, 6).flatmap(lambda n: arrays(np.float64, (n, n), elements=st.floats(-1, 1))))
    def test_matches_loop_reference_continuous(self, sim):
        assert M.retrieval_metrics(sim) == pytest.approx(ref_compute_metrics(sim), rel=0, abs=1e-12)

    def test_validation(self):
        with pytest.raises(ValueError, match="sim: expected a square"):
            M.retrieval_metrics(np.ones((2, 3)))
        with pytest.raises(ValueError, match="sim: non-finite value at index \\(1, 0\\)"):
            M.retrieval_metrics(np.array([[1.0, 0.0], [np.nan, 1.0]]))
        with pytest.raises(ValueError, match="sim: expected a 2-D"):
            M.retrieval_metrics(np.ones(3))


class TestMultiCaption:
    def test_hand_example(self):
        # videos 0, 1; captions 0, 1 -> video 0, caption 2 -> video 1
        sim = np.array([[0.9, 0.1],
                        [0.2, 0.8],   # caption of video 0 that prefers video 1 -> rank 1
                        [0.3, 0.7]])
        m = M.multi_caption_retrieval_metrics(sim, np.array([0, 0, 1]))
        t2v = m["text_to_video"]
        assert t2v["R1"] == 200 / 3 and t2v["MeanR"] == 4 / 3 and t2v["MedianR"] == 1.0
        # video->text: group max = [[0.9, 0.8], [0.3, 0.7]] (rows: caption group);
        # query video 0: 0.9 vs 0.3 -> rank 0; query video 1: own group 0.7 vs group 0 0.8 -> rank 1
        v2t = m["video_to_text"]
        assert v2t["R1"] == 50.0 and v2t["MedianR"] == 1.5 and v2t["MeanR"] == 1.5

    def test_text_to_video_median_is_lower_middle(self):
        # four captions with ranks 0, 1, 0, 1 -> torch.median(ranks + 1) = 1 (np.median would give 1.5)
        sim = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
        m = M.multi_caption_retrieval_metrics(sim, np.array([0, 0, 1, 1]))
        assert m["text_to_video"]["MedianR"] == 1.0
        assert m["text_to_video"]["R1"] == 50.0

    def test_text_to_video_ties_stable_by_index(self):
        sim = np.ones((3, 3))
        m = M.multi_caption_retrieval_metrics(sim, np.array([0, 1, 2]))
        # stable descending sort: caption for video j ranks j
        assert m["text_to_video"]["R1"] == 100 / 3 and m["text_to_video"]["MeanR"] == 2.0

    def test_one_caption_per_video_matches_single_caption_path(self):
        rng = np.random.default_rng(0)
        sim = rng.normal(size=(7, 7))
        m = M.multi_caption_retrieval_metrics(sim, np.arange(7))
        assert m["video_to_text"] == M.retrieval_metrics(sim.T)
        single = M.retrieval_metrics(sim)
        # odd count, no ties: same ranks and medians; MeanR differs only by the reference's order of operations
        # (mean(ranks + 1) here vs mean(ranks) + 1 in compute_metrics)
        assert {k: v for k, v in m["text_to_video"].items() if k != "MeanR"} == \
            {k: v for k, v in single.items() if k != "MeanR"}
        ranks = np.array([int((sim[i] > sim[i, i]).sum()) for i in range(7)])
        assert m["text_to_video"]["MeanR"] == float(np.mean(ranks + 1))
        assert single["MeanR"] == float(np.mean(ranks) + 1)

    @FAST
    @given(st.data())
    def test_matches_reference(self, data):
        n_video = data.draw(st.integers(1, 5))
        extra = data.draw(st.lists(st.integers(0, n_video - 1), max_size=8))
        vot = np.array(list(range(n_video)) + extra)
        vot = vot[data.draw(st.permutations(range(len(vot))))]
        sim = data.draw(int_matrix(len(vot), n_video))
        got = M.multi_caption_retrieval_metrics(sim, vot)
        assert got["text_to_video"] == pytest.approx(ref_multi_t2v(sim, vot), rel=0, abs=1e-12)
        assert got["video_to_text"] == pytest.approx(ref_multi_v2t(sim, vot), rel=0, abs=1e-12)

    def test_validation(self):
        with pytest.raises(ValueError, match=r"video_of_text: expected shape \(3,\)"):
            M.multi_caption_retrieval_metrics(np.ones((3, 2)), np.array([0, 1]))
        with pytest.raises(ValueError, match=r"video_of_text\[1\] = 5 is outside"):
            M.multi_caption_retrieval_metrics(np.ones((2, 2)), np.array([0, 5]))
        with pytest.raises(ValueError, match="videos without any caption: \\[1\\]"):
            M.multi_caption_retrieval_metrics(np.ones((2, 3)), np.array([0, 2]))
        with pytest.raises(ValueError, match="integer video indices"):
            M.multi_caption_retrieval_metrics(np.ones((2, 2)), np.array([0.0, 1.0]))


# ================================================================================================================
# IoU, NMS, score maps
# ================================================================================================================
class TestTemporalIoU:
    def test_hand_values(self):
        assert M.temporal_iou([0, 2], [1, 2]) == 0.5
        assert M.temporal_iou([0, 1], [1, 2]) == 0.0  # touching
        assert M.temporal_iou([0, 1], [3, 4]) == 0.0  # disjoint
        assert M.temporal_iou([0, 4], [1, 2]) == 0.25  # contained
        assert M.temporal_iou([0, 4], [2, 2]) == 0.0  # zero-length inside
        assert M.temporal_iou([2, 2], [2, 2]) == 0.0  # both zero-length: 0, not NaN
        assert M.temporal_iou([1, 1], [5, 5]) == 0.0

    def test_shapes(self):
        a = np.array([[0, 2], [1, 3], [5, 6]], float)
        b = np.array([[1, 2], [0, 10]], float)
        assert M.temporal_iou(a, b).shape == (3, 2)
        assert M.temporal_iou(a[0], b).shape == (2,)
        assert M.temporal_iou(a, b[0]).shape == (3,)

    @FAST
    @given(windows_st(1, 6), windows_st(1, 6))
    def test_matches_loop(self, a, b):
        got = M.temporal_iou(a, b)
        want = np.array([[ref_iou(x, y) for y in b] for x in a])
        np.testing.assert_array_equal(got, want)
        assert ((got >= 0) & (got <= 1)).all()

    def test_validation(self):
        with pytest.raises(ValueError, match="a: window at row 1 has end < start"):
            M.temporal_iou([[0, 1], [3, 2]], [[0, 1]])
        with pytest.raises(ValueError, match=r"b: expected windows of shape \[n, 2\]"):
            M.temporal_iou([[0, 1]], [[0, 1, 2]])
        with pytest.raises(ValueError, match="b: non-finite"):
            M.temporal_iou([[0, 1]], [[0, np.inf]])


class TestNMS:
    def test_duplicates_are_suppressed(self):
        w = np.array([[0, 2], [0, 2], [0, 2], [4, 6]], float)
        np.testing.assert_array_equal(M.nms(w, None, 0.5), [0, 3])

    def test_iou_exactly_at_threshold_survives(self):
        w = np.array([[0, 2], [1, 2]], float)  # IoU 0.5
        np.testing.assert_array_equal(M.nms(w, None, 0.5), [0, 1])
        np.testing.assert_array_equal(M.nms(w, None, 0.49), [0])

    def test_greedy_order(self):
        # A suppresses B; B would suppress C, but B is gone, so C is kept.
        w = np.array([[0, 10], [3, 12], [6, 14]], float)
        assert M.temporal_iou(w[0], w[1]) > 0.5 and M.temporal_iou(w[1], w[2]) > 0.5
        assert M.temporal_iou(w[0], w[2]) < 0.5
        np.testing.assert_array_equal(M.nms(w, None, 0.5), [0, 2])

    def test_scores_sort_first_ties_stable(self):
        w = np.array([[0, 1], [5, 6], [10, 11]], float)
        np.testing.assert_array_equal(M.nms(w, [0.1, 0.9, 0.9]), [1, 2, 0])

    def test_top_k_stops(self):
        w = np.array([[0, 1], [2, 3], [4, 5], [6, 7]], float)
        np.testing.assert_array_equal(M.nms(w, None, 0.5, top_k=2), [0, 1])

    def test_empty_and_zero_length(self):
        assert M.nms(np.zeros((0, 2)), None, 0.5).tolist() == []
        np.testing.assert_array_equal(M.nms([[3, 3], [3, 3]], None, 0.5), [0, 1])

    @FAST
    @given(windows_st(0, 10), st.sampled_from([0.0, 0.3, 0.5, 0.7, 1.0]), st.sampled_from([None, 1, 3]))
    def test_matches_loop(self, w, thr, top_k):
        assert M.nms(w, None, thr, top_k).tolist() == ref_nms(w.tolist(), thr, top_k)

    def test_validation(self):
        with pytest.raises(ValueError, match=r"scores: expected shape \(2,\)"):
            M.nms([[0, 1], [1, 2]], [1.0, 2.0, 3.0])
        with pytest.raises(ValueError, match="top_k"):
            M.nms([[0, 1]], None, 0.5, top_k=0)


class TestScoreMap:
    def test_upper_triangle_and_coordinates(self):
        s = np.array([[0.1, 0.9, 0.3],
                      [5.0, 0.5, 0.2],   # 5.0 is below the diagonal: not a moment
                      [7.0, 6.0, 0.4]])
        w, sc = M.score_map_to_windows(s, duration=30.0)
        np.testing.assert_array_equal(sc, [0.9, 0.5, 0.4, 0.3, 0.2, 0.1])
        np.testing.assert_allclose(w, [[0, 20], [10, 20], [20, 30], [0, 30], [10, 30], [0, 10]])

    def test_ties_later_flat_index_first(self):
        w, sc = M.score_map_to_windows(np.ones((2, 2)), duration=2.0)
        # upper-triangle entries in flat order: (0,0), (0,1), (1,1); reversed on ties
        np.testing.assert_allclose(w, [[1, 2], [0, 2], [0, 1]])

    def test_valid_mask(self):
        valid = np.array([[True, False], [False, True]])
        w, sc = M.score_map_to_windows(np.array([[1.0, 9.0], [0.0, 2.0]]), 4.0, valid=valid)
        np.testing.assert_allclose(w, [[2, 4], [0, 2]])

    def test_validation(self):
        with pytest.raises(ValueError, match="score2d: expected a square"):
            M.score_map_to_windows(np.ones((2, 3)), 1.0)
        with pytest.raises(ValueError, match="duration"):
            M.score_map_to_windows(np.ones((2, 2)), 0.0)
        with pytest.raises(ValueError, match="valid: expected shape"):
            M.score_map_to_windows(np.ones((2, 2)), 1.0, valid=np.ones((3, 3), bool))


# ================================================================================================================
# grounding recall (2D-TAN)
# ================================================================================================================
class TestGroundingRecall:
    def test_strict_threshold(self):
        m = M.grounding_recall([np.array([[0.0, 2.0]])], [[1.0, 2.0]], recalls=(1,), ious=(0.3, 0.5))
        assert m == {"R1@0.3": 100.0, "R1@0.5": 0.0, "mIoU": 50.0}  # IoU exactly 0.5 is not > 0.5

    def test_nms_before_recall_and_top1_miou(self):
        gt = [[10.0, 20.0]]
        ranked = [np.array([[0, 5], [0, 5.5], [0, 5], [10, 20]], float)]
        # Without NMS the GT window would be 4th; NMS removes the two near-duplicates, so it is 2nd.
        m = M.grounding_recall(ranked, gt, recalls=(1, 2), ious=(0.5,))
        assert m["R1@0.5"] == 0.0 and m["R2@0.5"] == 100.0
        assert m["mIoU"] == 0.0  # top-1 only

    def test_nms_cut_at_max_recall(self):
        ranked = [np.array([[0, 1], [2, 3], [4, 5], [10, 20]], float)]
        m = M.grounding_recall(ranked, [[10, 20]], recalls=(1, 3), ious=(0.5,))
        assert m["R3@0.5"] == 0.0  # the GT window is 4th after NMS

    def test_average_over_queries_and_empty_prediction(self):
        ranked = [np.array([[0, 10]], float), np.zeros((0, 2)), np.array([[0, 5]], float)]
        gt = [[0, 10], [0, 10], [0, 10]]
        m = M.grounding_recall(ranked, gt, recalls=(1,), ious=(0.3, 0.7))
        assert m["R1@0.3"] == pytest.approx(200 / 3) and m["R1@0.7"] == pytest.approx(100 / 3)
        assert m["mIoU"] == pytest.approx(50.0)  # (1 + 0 + 0.5) / 3

    def test_default_keys(self):
        m = M.grounding_recall([np.array([[0, 1]], float)], [[0, 1]])
        assert set(m) == {f"R{r}@{t}" for r in (1, 5) for t in ("0.1", "0.3", "0.5", "0.7")} | {"mIoU"}

    @FAST
    @given(st.lists(st.tuples(windows_st(1, 8), windows_st(1, 1)), min_size=1, max_size=4),
           st.sampled_from([0.3, 0.5, 0.7]))
    def test_matches_loop(self, queries, nms_thr):
        ranked = [q[0] for q in queries]
        gt = np.concatenate([q[1] for q in queries])
        got = M.grounding_recall(ranked, gt, (1, 2, 5), (0.1, 0.3, 0.5, 0.7), nms_thr)
        want = ref_grounding(ranked, gt.tolist(), (1, 2, 5), (0.1, 0.3, 0.5, 0.7), nms_thr)
        assert got == pytest.approx(want, rel=0, abs=1e-12)

    def test_validation(self):
        with pytest.raises(ValueError, match="ranked_windows: got 2 queries but gt_windows has 1"):
            M.grounding_recall([np.zeros((1, 2)), np.zeros((1, 2))], [[0, 1]])
        with pytest.raises(ValueError, match=r"ranked_windows\[0\]: expected windows of shape"):
            M.grounding_recall([np.zeros((1, 3))], [[0, 1]])
        with pytest.raises(ValueError, match="gt_windows: window at row 0 has end < start"):
            M.grounding_recall([np.zeros((1, 2))], [[2, 1]])


# ================================================================================================================
# moment retrieval (Moment-DETR)
# ================================================================================================================
class TestMomentRetrieval:
    def test_hand_map(self):
        preds = [np.array([[0, 2, 0.9], [1, 3, 0.5]])]
        gts = [np.array([[0, 2], [2, 3]])]
        m = M.moment_retrieval_map(preds, gts)
        # pred 1 hits GT 0 (IoU 1); pred 2 has IoU 0.5 with GT 1: a hit at 0.5 only (>=), a miss above.
        assert m["mAP@0.5"] == 100.0 and m["mAP@0.75"] == 50.0
        assert m["mAP"] == pytest.approx(55.0)
        assert m["R1@0.5"] == 100.0 and m["R1@0.7"] == 100.0

    def test_r1_threshold_is_inclusive_and_uses_first_row(self):
        gts = [np.array([[1.0, 2.0]])]
        m = M.moment_retrieval_map([np.array([[0.0, 2.0, 0.1], [1.0, 2.0, 0.9]])], gts)
        assert m["R1@0.5"] == 100.0 and m["R1@0.7"] == 0.0  # first row (IoU 0.5) even though row 2 scores higher
        assert m["mAP@0.75"] == 100.0  # mAP sorts by score: the exact window comes first

    def test_r1_picks_gt_of_max_iou(self):
        gts = [np.array([[10.0, 20.0], [0.0, 2.0]])]
        m = M.moment_retrieval_map([np.array([[0.0, 2.0, 1.0]])], gts)
        assert m["R1@0.7"] == 100.0

    def test_duplicate_prediction_is_false_positive(self):
        gts = [np.array([[0.0, 10.0]])]
        m = M.moment_retrieval_map([np.array([[0, 10, 0.9], [0, 10, 0.8]])], gts)
        assert m["mAP"] == 100.0  # tp then fp: precision drops after recall is already 1
        m = M.moment_retrieval_map([np.array([[50, 60, 0.9], [0, 10, 0.8]])], gts)
        assert m["mAP"] == 50.0  # fp then tp: interpolated precision at recall 1 is 1/2

    def test_locked_gt_moves_to_next_gt(self):
        gts = [np.array([[0.0, 10.0], [0.0, 9.0]])]
        # both predictions prefer GT 0; the second falls back to GT 1 (IoU 0.9): a hit up to 0.9, a miss at 0.95
        m = M.moment_retrieval_map([np.array([[0, 10, 0.9], [0, 10, 0.8]])], gts)
        assert m["mAP@0.5"] == 100.0 and m["mAP@0.75"] == 100.0
        assert m["mAP"] == pytest.approx((9 * 100 + 50) / 10)

    def test_equal_iou_gts_tried_higher_index_first(self):
        gts = [np.array([[0.0, 4.0], [4.0, 8.0]])]
        # pred 1 has IoU 0.5 with both GTs and claims GT 1, leaving GT 0 for pred 2 (IoU 1): two hits at 0.5.
        m = M.moment_retrieval_map([np.array([[0, 8, 0.9], [0, 4, 0.8]])], gts)
        assert m["mAP@0.5"] == 100.0

    def test_only_first_ten_predictions(self):
        gts = [np.array([[0.0, 1.0]])]
        preds = np.array([[50 + i, 51 + i, 0.5] for i in range(10)] + [[0, 1, 0.99]])
        assert M.moment_retrieval_map([preds], gts)["mAP"] == 0.0
        assert M.moment_retrieval_map([preds], gts, max_pred_windows=None)["mAP"] == 100.0

    def test_score_ties_keep_given_order(self):
        gts = [np.array([[0.0, 1.0]])]
        a = M.moment_retrieval_map([np.array([[0, 1, 0.5], [5, 6, 0.5]])], gts)["mAP"]
        b = M.moment_retrieval_map([np.array([[5, 6, 0.5], [0, 1, 0.5]])], gts)["mAP"]
        assert a == 100.0 and b == 50.0

    def test_empty_predictions(self):
        gts = [np.array([[0.0, 1.0]]), np.array([[0.0, 1.0]])]
        m = M.moment_retrieval_map([np.array([[0, 1, 1.0]]), np.zeros((0, 3))], gts)
        assert m["mAP"] == 50.0 and m["R1@0.5"] == 50.0

    @FAST
    @given(st.lists(st.tuples(windows_st(1, 12), st.data(), windows_st(1, 3)), min_size=1, max_size=3))
    def test_matches_loop(self, queries):
        preds, gts = [], []
        for w, data, g in queries:
            scores = data.draw(arrays(np.float64, (w.shape[0],), elements=st.integers(0, 3).map(float)))
            preds.append(np.concatenate([w, scores[:, None]], axis=1))
            gts.append(g)
        got = M.moment_retrieval_map(preds, gts)
        want = ref_moment_map(preds, gts)
        assert got == pytest.approx(want, rel=0, abs=1e-9)

    def test_validation(self):
        with pytest.raises(ValueError, match=r"predictions\[0\]: expected shape \[n, 3\]"):
            M.moment_retrieval_map([np.zeros((1, 2))], [np.array([[0, 1.0]])])
        with pytest.raises(ValueError, match=r"gt_windows\[0\]: needs at least one window"):
            M.moment_retrieval_map([np.array([[0, 1, 1.0]])], [np.zeros((0, 2))])
        with pytest.raises(ValueError, match="predictions: got 1 queries but gt_windows has 2"):
            M.moment_retrieval_map([np.array([[0, 1, 1.0]])], [np.array([[0, 1.0]])] * 2)


# ================================================================================================================
# CrossTask
# ================================================================================================================
class TestStepRecall:
    def test_hand(self):
        yt = {"A": {"v1": np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 0]]),  # step 3 never annotated
                    "v2": np.eye(2, 3, dtype=int)},  # steps 1 and 2 annotated
              "B": {"w": np.array([[1, 0], [0, 1]])}}
        yp = {"A": {"v1": np.array([[0, 0, 0], [1, 0, 0], [0, 0, 0], [0, 1, 1]]),  # step 1 hit, step 2 miss
                    "v2": np.eye(2, 3, dtype=int),  # both hit
                    "extra": np.ones((2, 3))},  # not in y_true: ignored
              "B": {"w": np.array([[0, 1], [1, 0]])}}
        r = M.step_recall(yt, yp)
        assert r["per_task"]["A"] == pytest.approx(300 / 4)  # 3 matches / (2 + 2) annotated steps
        assert r["per_task"]["B"] == 0.0
        assert r["recall"] == pytest.approx(37.5)  # macro mean over tasks

    def test_video_missing_in_prediction_is_skipped(self):
        yt = {"A": {"v1": np.eye(2), "v2": np.eye(2)}}
        yp = {"A": {"v1": np.eye(2)}}
        assert M.step_recall(yt, yp)["recall"] == 100.0

    def test_validation(self):
        with pytest.raises(ValueError, match=r"y_pred\['A'\]\['v'\]: shape \(3, 2\) does not match"):
            M.step_recall({"A": {"v": np.eye(2)}}, {"A": {"v": np.ones((3, 2))}})
        with pytest.raises(ValueError, match="task 'B' of y_true has no predictions"):
            M.step_recall({"B": {"v": np.eye(2)}}, {"A": {}})
        with pytest.raises(ValueError, match="task 'A' has no annotated step"):
            M.step_recall({"A": {"v": np.zeros((2, 2))}}, {"A": {"v": np.eye(2)}})


class TestViterbi:
    def test_hand(self):
        scores = np.array([[0.0, 0.0],
                           [5.0, 0.0],
                           [0.0, 1.0],
                           [0.0, 3.0]])
        y = M.crosstask_viterbi(scores)
        np.testing.assert_array_equal(np.argmax(y, axis=0), [1, 3])
        assert y.sum() == 2 and y.dtype == np.uint8

    def test_order_beats_greedy(self):
        # greedy would put step 2 at frame 0 (before step 1); the path must keep the order.
        scores = np.array([[0.0, 9.0], [1.0, 0.0], [0.0, 2.0]])
        np.testing.assert_array_equal(np.argmax(M.crosstask_viterbi(scores), axis=0), [1, 2])

    def test_ties_earliest_except_last_step_on_last_frame(self):
        y = M.crosstask_viterbi(np.zeros((6, 3)))
        np.testing.assert_array_equal(np.argmax(y, axis=0), [0, 1, 5])

    def test_t_equals_k_and_too_short(self):
        np.testing.assert_array_equal(M.crosstask_viterbi(np.random.default_rng(0).normal(size=(3, 3))), np.eye(3))
        with pytest.raises(ValueError, match="2 frames cannot hold 3 ordered steps"):
            M.crosstask_viterbi(np.zeros((2, 3)))

    @FAST
    @given(st.integers(1, 4).flatmap(lambda k: st.integers(k, 7).flatmap(lambda t: int_matrix(t, k, -2, 2))))
    def test_optimal_against_brute_force(self, scores):
        T, K = scores.shape
        y = M.crosstask_viterbi(scores)
        frames = np.argmax(y, axis=0)
        assert y.sum() == K and (np.diff(frames) > 0).all()
        best = max(sum(scores[f, k] for k, f in enumerate(c)) for c in itertools.combinations(range(T), K))
        assert scores[frames, np.arange(K)].sum() == best

    @FAST
    @given(st.integers(1, 4).flatmap(lambda k: st.integers(k, 8).flatmap(lambda t: int_matrix(t, k, -2, 2))),
           st.booleans(), st.sampled_from([0.0, 0.5, -1.0]))
    def test_matches_scalar_dp_including_ties(self, scores, exactly_one, bg):
        want = ref_dp(-scores, exactly_one, -bg)
        np.testing.assert_array_equal(M.crosstask_viterbi(scores, exactly_one, bg), want)
        if exactly_one:  # the per-frame pass gives the same path as the per-step fast path
            np.testing.assert_array_equal(M._viterbi_by_frame(-scores, True, -bg), want)

    @FAST
    @given(st.integers(1, 5).flatmap(lambda k: st.integers(k, 30).flatmap(
        lambda t: arrays(np.float64, (t, k), elements=st.floats(-3, 3, width=32)))))
    def test_fast_path_equals_frame_path_continuous(self, scores):
        np.testing.assert_array_equal(M.crosstask_viterbi(scores), M._viterbi_by_frame(-scores, True, -0.0))


# ================================================================================================================
# action segmentation (MS-TCN)
# ================================================================================================================
BG = "background"


class TestSegmentation:
    def test_hand(self):
        gt = ["a", "a", "a", "b", "b", BG, BG, "c"]
        pr = ["a", "a", "b", "b", "b", BG, "c", "c"]
        m = M.segmentation_metrics([pr], [gt])
        assert m["Acc"] == 75.0
        assert m["Edit"] == 100.0  # segment sequences a b c on both sides
        # IoUs: a: 2/3, b: 2/3, c: 1/2 -> all tp at 0.1/0.25/0.5 (>=); at 0.5 c is exactly 0.5
        assert m["F1@10"] == m["F1@25"] == m["F1@50"] == 100.0

    def test_edit_normalisation(self):
        m = M.segmentation_metrics([["a", "b", "c", "d"]], [["a", "a", "c", "c"]])
        # P = a b c d, Y = a c: distance 2, normalised by max(4, 2)
        assert m["Edit"] == 50.0

    def test_same_label_split_by_background_is_two_segments(self):
        gt = ["a", BG, "a"]
        pr = ["a", "a", "a"]
        m = M.segmentation_metrics([pr], [gt])
        assert m["Edit"] == 50.0  # [a] vs [a, a]
        # pred segment [0, 3) vs gt [0, 1): IoU 1/3 -> tp at 0.1 and 0.25, second gt segment unmatched
        assert m["F1@10"] == pytest.approx(100 * 2 * (1 * 0.5) / 1.5)
        assert m["F1@50"] == 0.0

    def test_gt_segment_hit_only_once(self):
        gt = ["a"] * 4
        pr = ["a", "a", "b", "a"]
        # pred segments a[0,2) IoU .5 -> tp; b -> fp; a[3,4) best is the already-hit gt -> fp
        m = M.segmentation_metrics([pr], [gt])
        assert m["F1@50"] == pytest.approx(100 * 2 * (1 / 3 * 1) / (1 / 3 + 1))

    def test_argmax_ties_take_first_gt_segment(self):
        gt = list("aaaabbaaaa")  # a[0,4) b[4,6) a[6,10)
        pr = list("xxaaaaaaxa")  # x[0,2) a[2,8) x[8,9) a[9,10)
        # a[2,8) has IoU exactly 0.25 with both a segments and takes the first, leaving a[6,10) for a[9,10)
        # (IoU 0.25): 2 tp, 2 fp (the x segments), 1 fn (b). Taking the last tied one would give 1 tp only.
        m = M.segmentation_metrics([pr], [gt])
        assert m["F1@25"] == pytest.approx(100 * 4 / 7)

    def test_single_frame_segments_and_threshold(self):
        m = M.segmentation_metrics([["x", "y"]], [["x", "y"]])
        assert m == {"Acc": 100.0, "Edit": 100.0, "F1@10": 100.0, "F1@25": 100.0, "F1@50": 100.0}
        m = M.segmentation_metrics([["x", "x"]], [["x", "y"]])  # x: IoU 1/2 -> tp at 0.5 (>=)
        assert m["F1@50"] == pytest.approx(100 * 2 * (1 * 0.5) / 1.5)

    def test_background_only(self):
        m = M.segmentation_metrics([[BG] * 3], [[BG] * 3])
        assert m == {"Acc": 100.0, "Edit": 100.0, "F1@10": 0.0, "F1@25": 0.0, "F1@50": 0.0}
        m = M.segmentation_metrics([["a", "a", BG]], [[BG] * 3])  # predicted segments, no GT segment: fp
        assert m["Edit"] == 0.0 and m["F1@10"] == 0.0 and m["Acc"] == pytest.approx(100 / 3)
        m = M.segmentation_metrics([[BG] * 3, ["a"]], [[BG] * 3, ["a"]])  # pooled counts
        assert m["F1@50"] == 100.0 and m["Edit"] == 100.0

    def test_integer_labels_and_background_options(self):
        m = M.segmentation_metrics([np.array([0, 1, 1, 0])], [np.array([0, 1, 1, 0])], background=0)
        assert m["Edit"] == 100.0 and m["F1@50"] == 100.0
        m = M.segmentation_metrics([[0, 1, 2]], [[0, 1, 1]], background={0, 2})
        assert m["Edit"] == 100.0
        m = M.segmentation_metrics([["background", "a"]], [["background", "a"]], background=None)
        assert m["F1@50"] == 100.0
        # mixed int / str labels are compared as Python objects, never cast to strings
        m = M.segmentation_metrics([[0, "a", "a"]], [[0, "a", "a"]], background=0)
        assert m["Edit"] == 100.0 and m["F1@50"] == 100.0
        assert M.segmentation_metrics([["1", 2]], [[1, 2]], background=None)["Acc"] == 50.0

    @FAST
    @given(st.lists(st.integers(1, 12).flatmap(lambda n: st.tuples(
        st.lists(st.sampled_from(["a", "b", "c", BG]), min_size=n, max_size=n),
        st.lists(st.sampled_from(["a", "b", "c", BG]), min_size=n, max_size=n))), min_size=1, max_size=4))
    def test_matches_loop(self, videos):
        preds = [v[0] for v in videos]
        gts = [v[1] for v in videos]
        got = M.segmentation_metrics(preds, gts)
        assert got == pytest.approx(ref_segmentation(preds, gts, (BG,)), rel=0, abs=1e-9)

    @FAST
    @given(st.lists(st.sampled_from("abcd"), max_size=9), st.lists(st.sampled_from("abcd"), max_size=9))
    def test_levenshtein(self, p, y):
        assert M._levenshtein(p, y) == ref_levenshtein(p, y)

    def test_validation(self):
        with pytest.raises(ValueError, match=r"pred_labels\[1\]: 2 frames but gt_labels\[1\] has 3"):
            M.segmentation_metrics([["a"], ["a", "b"]], [["a"], ["a", "b", "c"]])
        with pytest.raises(ValueError, match="pred_labels: got 1 videos but gt_labels has 2"):
            M.segmentation_metrics([["a"]], [["a"], ["b"]])
        with pytest.raises(ValueError, match=r"gt_labels\[0\]: empty"):
            M.segmentation_metrics([[]], [[]])
        with pytest.raises(ValueError, match="one label sequence per video"):
            M.segmentation_metrics("ab", "ab")


def test_docs_example_runs(capsys):
    """The example in docs/metrics.md stays runnable."""
    import pathlib
    import re

    doc = pathlib.Path(__file__).resolve().parents[1] / "docs" / "metrics.md"
    code = re.search(r"```python\n(.*?)```", doc.read_text(), re.S).group(1)
    exec(compile(code, str(doc), "exec"), {})
    out = capsys.readouterr().out
    assert "'mAP@0.5': 100.0" in out and "'R1': 66.66666666666667" in out
