"""The grounding head under 2D-TAN's protocol (locvtp.downstream.tan): its numerics against plain loops, the query
encoder's masking, early stopping, the paired bootstrap, and that its figures depend on the video features only."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

from locvtp.downstream import tan
from locvtp.downstream.grounding import HeadConfig, TanConfig
from locvtp.metrics import grounding_recall, grounding_top1_iou, paired_bootstrap_diff


# ------------------------------------------------------------------------------------------------ word vectors
CORPUS = ["the red circle jumps left", "a red square jumps", "the blue circle spins, then the blue circle stops",
          "a green square spins right", "the red circle stops", "zebra"]


def _reference_vectors(texts, dim, window, alpha=0.75):
    """Vocabulary, co-occurrences, PPMI, SVD and normalization written out with loops."""
    words = [[w for w in t.lower().replace(",", " ").split()] for t in texts]
    counts = {}
    for ws in words:
        for w in ws:
            counts[w] = counts.get(w, 0) + 1
    vocab = ["<pad>", "<unk>"] + sorted(counts, key=lambda w: (-counts[w], w))
    idx = {w: k for k, w in enumerate(vocab)}
    v = len(vocab)
    c = np.zeros((v, v))
    for ws in words:
        for i in range(len(ws)):
            for j in range(len(ws)):
                if i != j and abs(i - j) <= window:
                    c[idx[ws[i]], idx[ws[j]]] += 1
    total = c.sum()
    ctx_pow = [sum(c[r][col] for r in range(v)) ** alpha for col in range(v)]
    m = np.zeros((v, v))
    for i in range(v):
        row = sum(c[i])
        for j in range(v):
            if c[i, j] > 0:
                pmi = math.log((c[i, j] / total) / ((row / total) * (ctx_pow[j] / sum(ctx_pow))))
                m[i, j] = max(pmi, 0.0)
    u, s, _ = np.linalg.svd(m)
    out = np.zeros((v, dim))
    for k in range(min(dim, v)):
        col = u[:, k]
        sign = -1.0 if col[np.argmax(np.abs(col))] < 0 else 1.0
        for r in range(v):
            out[r, k] = sign * col[r] * math.sqrt(s[k])
    for r in range(v):
        n = math.sqrt(sum(x * x for x in out[r]))
        out[r] = out[r] / n if n > 1e-12 and r >= 2 else 0.0
    return vocab, out


def test_ppmi_svd_vectors_match_a_plain_loop():
    got = tan.ppmi_svd_vectors(CORPUS, dim=5, window=2)
    vocab, ref = _reference_vectors(CORPUS, 5, 2)
    assert got.vocab == vocab
    np.testing.assert_allclose(got.vectors, ref, atol=1e-5)
    assert not got.vectors[vocab.index("zebra")].any()  # no co-occurrence: no information
    assert np.allclose(np.linalg.norm(got.vectors[vocab.index("circle")]), 1.0, atol=1e-6)
    again = tan.ppmi_svd_vectors(list(CORPUS), dim=5, window=2)
    assert again.sha256() == got.sha256()  # deterministic: every row shares the same vectors
    wide = tan.ppmi_svd_vectors(CORPUS, dim=40, window=2)  # beyond the rank: zero columns
    assert wide.vectors.shape == (len(vocab), 40) and not wide.vectors[:, len(vocab):].any()


def test_min_count_and_max_vocab_make_unknown_words():
    vocab = tan.build_vocabulary(CORPUS, min_count=2)
    assert vocab[:2] == ["<pad>", "<unk>"] and "zebra" not in vocab and vocab[2] == "circle"
    # most frequent first, ties by the word ("circle" and "the" 4 times each, "red" 3)
    assert tan.build_vocabulary(CORPUS, max_size=3)[2:] == ["circle", "the", "red"]
    ids, lengths = tan.encode_words(["The RED zebra!", "", "circle " * 9], {w: k for k, w in enumerate(vocab)}, 4)
    assert ids.shape == (3, 4) and lengths.tolist() == [3, 1, 4]
    assert ids[0].tolist() == [vocab.index("the"), vocab.index("red"), 1, 0]
    assert ids[1].tolist() == [1, 0, 0, 0]  # no word: one <unk>


def test_randomized_svd_agrees_with_the_exact_one(monkeypatch):
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(60, 4))
    m = basis @ np.diag([9.0, 5.0, 3.0, 2.0]) @ basis.T + 1e-3 * rng.normal(size=(60, 60))
    exact_u, exact_s = tan.truncated_svd(m, 3)
    monkeypatch.setattr(tan, "EXACT_SVD_MAX_VOCAB", 10)
    u, s = tan.truncated_svd(m, 3)
    np.testing.assert_allclose(s, exact_s, rtol=1e-6)
    np.testing.assert_allclose(u, exact_u, atol=1e-5)  # same signs too


# ------------------------------------------------------------------------------------------------ the model
def test_query_encoder_shapes_and_masking():
    torch.manual_seed(0)
    vectors = np.random.default_rng(0).normal(size=(10, 6)).astype(np.float32)
    vectors[:2] = 0
    enc = tan.QueryEncoder(vectors, hidden=5, layers=2).eval()
    ids = torch.tensor([[3, 4, 5, 0], [6, 7, 0, 0], [8, 9, 2, 3]])
    lengths = torch.tensor([3, 2, 4])
    out = enc(ids, lengths)
    assert out.shape == (3, 5)
    garbage = ids.clone()
    garbage[0, 3], garbage[1, 2:] = 9, torch.tensor([8, 7])  # words past a query's end must not matter
    torch.testing.assert_close(enc(garbage, lengths), out)
    for b in range(3):  # each query alone, unpadded: the LSTM's output at its last word
        alone, _ = enc.lstm(enc.embed(ids[b:b + 1, :lengths[b]]))
        torch.testing.assert_close(out[b], alone[0, -1])
    assert not enc.embed.weight.requires_grad  # the word vectors are fixed, as 2D-TAN's GloVe


def _loop_masked_conv(x, conv, weight_map, mask):
    """One 2D-TAN layer with loops: ReLU(conv over the zero-padded map) times its mask weight."""
    c_out, c_in, k, _ = conv.weight.shape
    n = x.shape[-1]
    out = torch.zeros(x.shape[0], c_out, n, n)
    for b in range(x.shape[0]):
        for i in range(n):
            for j in range(n):
                acc = conv.bias.clone()
                for di in range(k):
                    for dj in range(k):
                        a, c = i + di - k // 2, j + dj - k // 2
                        if 0 <= a < n and 0 <= c < n:
                            acc = acc + conv.weight[:, :, di, dj] @ x[b, :, a, c]
                out[b, :, i, j] = torch.relu(acc) * weight_map[i, j]
    return out


def test_head_forward_matches_a_plain_loop():
    """2D map (average pooling over bins i..j), fusion with the LSTM query, masked convs with 2D-TAN's
    1/count weights, prediction layer: the model against loops over moments and kernel positions."""
    torch.manual_seed(1)
    n, d = 5, 3
    hc = HeadConfig(num_clips=n, hidden=4, layers=2, kernel=3, pooling="avg", dropout=0.0)
    tc = TanConfig(lstm_hidden=4)
    vectors = np.random.default_rng(1).normal(size=(6, 3)).astype(np.float32)
    model = tan.TANGrounding(d, vectors, hc, tc).eval()
    feats = torch.randn(2, n, d)
    ids, lengths = torch.tensor([[2, 3, 4], [5, 2, 0]]), torch.tensor([3, 2])
    with torch.no_grad():
        got = model(feats, ids, lengths)
        head = model.head
        frame = head.frame(feats)  # [B, N, H]
        query = head.query(model.query(ids, lengths))  # [B, H]
        mask = [[i <= j for j in range(n)] for i in range(n)]
        x = torch.zeros(2, 4, n, n)
        for b in range(2):
            for i in range(n):
                for j in range(i, n):
                    v = frame[b, i:j + 1].mean(0) * query[b]
                    x[b, :, i, j] = v / v.norm().clamp(min=1e-12)
        valid = [[float(mask[i][j]) for j in range(n)] for i in range(n)]
        for layer, conv in enumerate(head.convs):
            counts = [[sum(valid[a][c] for a in range(i - 1, i + 2) for c in range(j - 1, j + 2)
                           if 0 <= a < n and 0 <= c < n) for j in range(n)] for i in range(n)]
            weight_map = torch.tensor([[1 / cnt if cnt else 0.0 for cnt in row] for row in counts])
            x = _loop_masked_conv(x, conv, weight_map, mask)
            valid = [[float(cnt > 0) for cnt in row] for row in counts]
        ref = head.pred(x)[:, 0]
    for i in range(n):
        for j in range(n):
            if mask[i][j]:
                torch.testing.assert_close(got[:, i, j], ref[:, i, j], atol=1e-5, rtol=1e-5)
            else:
                assert torch.all(got[:, i, j] <= -1e3)


# ------------------------------------------------------------------------------------------------ protocol
def test_early_stopping_restores_the_best_validation_epoch():
    model = torch.nn.Linear(1, 1)
    scores = [(1.0, 0.0), (3.0, 0.0), (3.0, 5.0), (3.0, 5.0), (2.0, 9.0), (2.0, 9.0), (9.0, 9.0)]

    def run_epoch(epoch):
        with torch.no_grad():
            model.weight.fill_(float(epoch))  # the weights say which epoch they come from
        return 10.0 - epoch

    it = iter(scores)
    log = tan.fit_early_stopping(model, run_epoch, lambda: next(it), epochs=7, patience=3)
    # epoch 3 ties epoch 2 on R1 and wins on mIoU; epoch 4 only equals it; 3 epochs without better: stop at 6
    assert log.best_epoch == 3 and len(log.losses) == 6 and log.scores == scores[:6]
    assert float(model.weight.detach()) == 3.0 and not model.training
    log = tan.fit_early_stopping(model, run_epoch, None, epochs=4, patience=1)
    assert log.best_epoch == 4 and float(model.weight.detach()) == 4.0 and log.scores == []


def _toy_queries(rng, count, n_bins=8):
    """Features with the moment marked in channel 0, queries naming a colour: enough to learn something."""
    x = rng.normal(0, 0.2, size=(count, n_bins, 4)).astype(np.float32)
    gt = np.zeros((count, 2))
    texts = []
    for k in range(count):
        length = int(rng.integers(2, 5))
        start = int(rng.integers(0, n_bins - length + 1))
        x[k, start:start + length, 0] += 2.0
        gt[k] = (start, start + length)
        texts.append(f"the {['red', 'blue', 'green'][k % 3]} shape moves")
    return x, texts, gt, np.full(count, float(n_bins))


def test_train_tan_keeps_the_epoch_with_the_best_validation_score():
    from types import SimpleNamespace

    rng = np.random.default_rng(0)
    x, texts, gt, dur = _toy_queries(rng, 60)
    vectors = tan.ppmi_svd_vectors(texts, dim=4, window=2)
    qs = [SimpleNamespace(query=t) for t in texts]
    data = tan.query_set(x, qs, gt, dur, vectors, 8)
    train, val = data.subset(np.arange(40)), data.subset(np.arange(40, 60))
    hc = HeadConfig(num_clips=8, hidden=8, layers=1, kernel=3, epochs=8, lr=1e-2, batch_size=8, dropout=0.0)
    tc = TanConfig(lstm_hidden=8, patience=3)
    model, log = tan.train_tan(train, vectors, hc, tc, seed=0, val=val)
    assert 1 <= log.best_epoch <= len(log.scores) and log.scores[log.best_epoch - 1] == max(log.scores)
    assert log.scores.index(max(log.scores)) == log.best_epoch - 1  # the earliest among equals
    assert tan._validation_score(model, val) == pytest.approx(log.scores[log.best_epoch - 1])
    again, log2 = tan.train_tan(train, vectors, hc, tc, seed=0, val=val)
    assert log2.losses == log.losses  # deterministic given the seed


def test_validation_videos_are_a_property_of_the_ids():
    vids = [f"v{k}" for k in range(20)]
    held = tan.validation_videos(vids * 3, 0.15)
    assert len(held) == 3 and held == tan.validation_videos(list(reversed(vids)), 0.15)
    assert tan.validation_videos(["a", "b"], 0.9) in ({"a"}, {"b"})  # never every video
    assert tan.validation_videos(["a"], 0.5) == set() and tan.validation_videos(vids, 0.0) == set()


# ------------------------------------------------------------------------------------------------ per query, bootstrap
def test_top1_iou_gives_grounding_recall():
    rng = np.random.default_rng(3)
    gt = np.sort(rng.uniform(0, 20, size=(30, 2)), axis=1)
    ranked = [np.sort(rng.uniform(0, 20, size=(int(rng.integers(0, 6)), 2)), axis=1) for _ in range(30)]
    ranked[4] = np.array([gt[4], [0.0, 1.0]])  # an exact hit
    iou = grounding_top1_iou(ranked, gt)
    rec = grounding_recall(ranked, gt)
    assert iou[4] == 1.0
    assert rec["R1@0.5"] == pytest.approx(100 * np.mean(iou > 0.5)) and rec["mIoU"] == pytest.approx(100 * iou.mean())
    assert rec["R1@0.7"] == pytest.approx(100 * np.mean(iou > 0.7))


def _loop_bootstrap(a, b, n_boot, ci, seed, chunk, paired):
    rng = np.random.default_rng(seed)
    q, sa, sb = len(a), len(a[0]), len(b[0])
    reps = []
    for start in range(0, n_boot, chunk):
        c = min(chunk, n_boot - start)
        qi = rng.integers(0, q, size=(c, q))
        ai = rng.integers(0, sa, size=(c, sa))
        bi = ai if paired else rng.integers(0, sb, size=(c, sb))
        for r in range(c):
            total = 0.0
            for qq in qi[r]:
                ma = sum(a[qq][s] for s in ai[r]) / sa
                mb = sum(b[qq][s] for s in bi[r]) / sb
                total += ma - mb
            reps.append(total / q)
    reps.sort()
    return reps, np.quantile(reps, [(1 - ci) / 2, (1 + ci) / 2])


@pytest.mark.parametrize("sb", [3, 2])
def test_paired_bootstrap_matches_a_plain_loop(sb):
    rng = np.random.default_rng(0)
    a = 100.0 * (rng.random((12, 3)) > 0.4)
    b = 100.0 * (rng.random((12, sb)) > 0.6)
    got = paired_bootstrap_diff(a, b, n_boot=300, ci=0.9, seed=5, chunk=64)
    reps, (lo, hi) = _loop_bootstrap(a.tolist(), b.tolist(), 300, 0.9, 5, 64, paired=(sb == 3))
    assert got["paired_seeds"] == (sb == 3)
    assert got["diff"] == pytest.approx(a.mean() - b.mean())
    assert got["low"] == pytest.approx(lo) and got["high"] == pytest.approx(hi)
    assert got["se"] == pytest.approx(np.std(reps))
    same = paired_bootstrap_diff(a, a, n_boot=200)
    assert same["diff"] == same["low"] == same["high"] == 0.0  # paired seeds: no difference, no spread
    with pytest.raises(ValueError, match="same queries"):
        paired_bootstrap_diff(a, b[:5])


# ------------------------------------------------------------------------------------------------ end to end
def _head_figures(out):
    doc = json.loads((out / "grounding.json").read_text())
    return ({k: v for k, v in doc["metrics"].items() if k.startswith("head_")}, doc)


def test_head_figures_depend_only_on_the_video_features(tiny_world, tiny_checkpoint, tmp_path, capsys):
    """`locvtp evaluate grounding --features F` gives the same head figures whichever checkpoint is named: F is
    checkpoint A's own extraction (A then reads nothing else) and a foreign file for B (B's clip embeddings and
    text tower differ), and the query encoder is built from the data, not from either checkpoint."""
    from inference_helpers import make_checkpoint

    from locvtp.cli import main

    other = make_checkpoint(tiny_world, tmp_path / "other", seed=1)
    feats = tmp_path / "feats.h5"
    assert main(["extract", "--checkpoint", str(tiny_checkpoint), "--videos", str(tiny_world / "videos"),
                 "--out", str(feats), "--threads", "1", "--no-progress"]) == 0
    outs = []
    for k, ck in enumerate((tiny_checkpoint, other)):
        out = tmp_path / f"eval{k}"
        assert main(["evaluate", "grounding", "--checkpoint", str(ck), "--data", str(tiny_world), "--features",
                     str(feats), "--out", str(out), "--quiet", "--threads", "1", "--head-seeds", "2",
                     "--set", "grounding.tan_cfg.epochs=4"]) == 0
        outs.append(_head_figures(out))
    (fig_a, doc_a), (fig_b, doc_b) = outs
    assert fig_a and fig_a == fig_b
    assert doc_a["info"]["word_vectors"] == doc_b["info"]["word_vectors"]
    assert doc_a["info"]["head_variant"] == "tan" and doc_a["info"]["head_seeds"] == [0, 1]
    assert [p["head_top1_iou"] for p in doc_a["predictions"]] == [p["head_top1_iou"] for p in doc_b["predictions"]]
    # the checkpoints are different models: their zero-shot rankings differ
    assert [p["pred_relevant_windows"] for p in doc_a["predictions"]] != \
        [p["pred_relevant_windows"] for p in doc_b["predictions"]]
    # the reported figures are the mean over the head seeds of the per-query IoUs
    iou = np.array([p["head_top1_iou"] for p in doc_a["predictions"]])
    assert fig_a["head_grounding_R1@0.5"] == pytest.approx(100 * np.mean(iou > 0.5))
    assert fig_a["head_grounding_mIoU"] == pytest.approx(100 * iou.mean())
    # and the paired bootstrap of the two runs: no difference at all
    capsys.readouterr()
    from locvtp.diagnostics.paired_bootstrap import main as boot

    assert boot([str(tmp_path / "eval0" / "grounding.json"), str(tmp_path / "eval1" / "grounding.json"),
                 "--boot", "200"]) == 0
    printed = capsys.readouterr().out
    assert "R1@0.5" in printed and "+0.00  [+0.00, +0.00]" in printed


def test_checkpoint_text_variant_is_the_previous_head(tiny_world, tiny_checkpoint, tmp_path):
    """``head_variant=checkpoint_text`` trains the head of ``grounding.train_tan_head`` on the checkpoint's sentence
    embeddings, with one seed; its per-query IoUs are written too, so both variants can be compared."""
    from locvtp.downstream import evaluate_all, load_options
    from locvtp.downstream.evaluate import prepare_context
    from locvtp.downstream.grounding import head_data, predict_score_maps, train_tan_head

    opts = load_options(None, ["grounding.head_variant=checkpoint_text", "grounding.head_cfg.epochs=3"])
    out = tmp_path / "eval"
    m = evaluate_all(tiny_checkpoint, tiny_world, out_dir=out, tasks=("grounding",), options=opts, progress=False,
                     verbose=False, threads=1)
    ctx, _ = prepare_context(tiny_checkpoint, tiny_world, None, ["grounding"], opts, None, False, 0, None, False,
                             "cpu")
    data = head_data(ctx, opts.grounding)
    torch.manual_seed(0)
    head, _ = train_tan_head(data.x_train, data.q_train, data.gt_train, data.dur_train, opts.grounding.head_cfg)
    ranked, _ = tan.ranked_windows(predict_score_maps(head, data.x_test, data.q_test), data.dur_test)
    want = grounding_recall(ranked, data.gt_test)
    assert m["head_grounding_R1@0.5"] == pytest.approx(want["R1@0.5"])
    assert m["head_grounding_mIoU"] == pytest.approx(want["mIoU"])
    doc = json.loads((out / "grounding.json").read_text())
    assert doc["info"]["head_variant"] == "checkpoint_text" and "word_vectors" not in doc["info"]
    ious = [p["head_top1_iou"] for p in doc["predictions"] if "head_top1_iou" in p]
    assert len(ious) == len(data.used_test) and all(len(v) == 1 for v in ious)
    assert 100 * np.mean([v[0] for v in ious]) == pytest.approx(want["mIoU"])


def test_paired_bootstrap_refuses_files_it_cannot_pair(tmp_path, capsys):
    from locvtp.diagnostics.paired_bootstrap import main as boot

    pred = {"video_id": "v", "query": "q", "gt": [0, 1], "head_top1_iou": [0.5]}
    a, b, c = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    a.write_text(json.dumps({"predictions": [pred]}))
    b.write_text(json.dumps({"predictions": [dict(pred, query="other")]}))
    c.write_text(json.dumps({"predictions": [{k: v for k, v in pred.items() if k != "head_top1_iou"}]}))
    assert boot([str(a), str(b)]) == 1
    assert "hold different queries" in capsys.readouterr().err
    assert boot([str(a), str(c)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(c) in err and "head_top1_iou" in err
    with pytest.raises(SystemExit) as exc:
        boot([str(a), str(a), "--ci", "1.5"])
    assert exc.value.code == 2
    assert "--ci" in capsys.readouterr().err


def test_paired_bootstrap_zero_shot_scorer_and_pooled_seeds(tmp_path):
    """``--scorer zero-shot`` reads the top zero-shot window's IoU (computed here by hand); ``--also`` pools a
    second pair of files as more seed columns: the means are those of the stacked columns."""
    from locvtp.diagnostics.paired_bootstrap import compare

    rng = np.random.default_rng(3)

    def doc(shift, heads):
        preds = []
        for q in range(40):
            s = float(rng.integers(0, 20))
            preds.append({"video_id": f"v{q}", "query": f"q{q}", "gt": [s, s + 10.0],
                          "pred_relevant_windows": [[s + shift[q], s + shift[q] + 10.0, 1.0], [0.0, 1.0, 0.5]],
                          "content_pred_relevant_windows": [[s, s + 10.0, 1.0]],
                          "head_top1_iou": heads[q]})
        return {"predictions": preds}

    def by_hand(shift):  # IoU of [s+d, s+d+10] with [s, s+10]
        inter = np.maximum(0.0, 10.0 - np.abs(shift))
        return inter / (20.0 - inter)

    files = []
    for k in range(4):
        rng = np.random.default_rng(k)  # the same gt per k pair below
        shift = rng.uniform(-6, 6, 40) * (k % 2)
        heads = rng.uniform(0, 1, (40, 2)).tolist()
        rng = np.random.default_rng(100 + k // 2)
        path = tmp_path / f"g{k}.json"
        d = doc(shift, heads)
        path.write_text(json.dumps(d))
        files.append((path, shift, np.array(heads)))
    # pair (g1 vs g0) and (g3 vs g2): every file of a pair has the same queries and gt (same rng seed per pair)
    res = compare(files[1][0], files[0][0], n_boot=200, scorer="zero-shot")
    want_a, want_b = 100 * (by_hand(files[1][1]) > 0.5), 100 * (by_hand(files[0][1]) > 0.5)
    assert res["figures"]["R1@0.5"]["a"] == pytest.approx(want_a.mean())
    assert res["figures"]["R1@0.5"]["b"] == pytest.approx(want_b.mean()) == 100.0
    assert res["figures"]["mIoU"]["a"] == pytest.approx(100 * by_hand(files[1][1]).mean())
    content = compare(files[1][0], files[0][0], n_boot=200, scorer="zero-shot-content")
    assert content["figures"]["mIoU"]["diff"] == 0.0
    pooled = compare(files[1][0], files[0][0], n_boot=200, also=[(files[3][0], files[2][0])])
    assert pooled["seeds_a"] == pooled["seeds_b"] == 4
    stacked = np.concatenate([files[1][2], files[3][2]], axis=1)
    assert pooled["figures"]["mIoU"]["a"] == pytest.approx(100 * stacked.mean())


def test_the_tan_heads_recipe_is_its_own_and_a_checkpoint_text_setting_is_refused_for_it():
    """lr / epochs of the tan head live in tan_cfg (its recipe, chosen on validation in session 8); head_cfg's are
    the checkpoint_text head's, so setting them for a tan run would be silently ignored: refused, naming the key."""
    from locvtp.downstream.evaluate import OptionError, check_options, load_options

    opts = check_options(load_options(None, []))
    assert (opts.grounding.tan_cfg.lr, opts.grounding.tan_cfg.epochs, opts.grounding.tan_cfg.patience) == (3e-3, 40, 8)
    assert (opts.grounding.head_cfg.lr, opts.grounding.head_cfg.epochs) == (1e-2, 20)
    for key in ("lr=1e-3", "epochs=30"):
        with pytest.raises(OptionError, match=f"grounding.head_cfg.{key.split('=')[0]}=.*tan_cfg"):
            check_options(load_options(None, [f"grounding.head_cfg.{key}"]))
        check_options(load_options(None, ["grounding.head_variant=checkpoint_text", f"grounding.head_cfg.{key}"]))


def test_head_curves_tan_bracket_reproduces_evaluate(tiny_world, tiny_checkpoint, tmp_path, capsys):
    """``head_curves --head tan`` runs the evaluation's own protocol: its checkpoint row equals `locvtp evaluate`'s
    head figure under the same options, and the blind and oracle controls run beside the first checkpoint."""
    from locvtp.diagnostics.head_curves import main as curves
    from locvtp.downstream import evaluate_all, load_options

    over = ["grounding.tan_cfg.epochs=3", "grounding.tan_cfg.seeds=2"]
    m = evaluate_all(tiny_checkpoint, tiny_world, out_dir=tmp_path / "eval", tasks=("grounding",),
                     options=load_options(None, over), progress=False, verbose=False, threads=1)
    assert curves(["--head", "tan", "--world", str(tiny_world), str(tiny_checkpoint), "--json",
                   str(tmp_path / "b.json"), "--set", *over]) == 0
    res = json.loads((tmp_path / "b.json").read_text())["results"]
    assert set(res) == {str(tiny_checkpoint), "blind (features zeroed)", "oracle (ground-truth coverage)"}
    row = res[str(tiny_checkpoint)]
    assert row["test_R1@0.5"] == pytest.approx(m["head_grounding_R1@0.5"])
    assert len(row["test_R1@0.5_seeds"]) == 2 and row["test_R1@0.5"] == pytest.approx(np.mean(row["test_R1@0.5_seeds"]))
    assert "oracle (ground-truth coverage): test R1@0.5" in capsys.readouterr().out
