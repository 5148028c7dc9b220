"""Slow, independent loop implementations of METHOD.md's objectives (test oracle and benchmark baseline).

Written straight from the formulas, the way the authors' release computes its losses: Python loops over the
batch and over clips / words, picking each anchor's positives and negatives one at a time and evaluating its
InfoNCE term. Nothing here is shared with ``locvtp.objectives`` except the context head module g, which is
applied one clip at a time. Everything is differentiable (for gradient comparisons).

Definitions (see docs/method.md):
- v[i] = normalize(mean of valid clips); L_c = ½(mean_i CE_row + mean_j CE_col) with logits scale·v·sᵀ.
- P[i,t] = top-min(k, L_i) valid words of c[i,t]·w[i]ᵀ; Q[i,l] = top-min(k, T_i) valid clips of column l.
- clip anchor: −log( Σ_P e^{x} / Σ_{P ∪ N} e^{x} ), x = c·w/τ, N = valid words of other sentences
  (+ the unselected words of the own sentence when intra_negatives); soft: −Σ_P a·x + log Σ_{P∪N} e^{x},
  a = softmax of x over P (constants).
- warped clip z[i,t] = normalize(g(c[i,t+δ], δ)) for valid t with a valid context clip; anchored like the
  reference clip (positives P[i,t], same soft weights a); word anchor l with q = top-1 clip of l: positive
  w·z[i,q], negatives = clips of the other videos (+ clips t≠q of the own video when intra_negatives);
  with temporal_negatives="warped" the negatives are instead the warped clips z[j,t] of the other videos
  (+ the warped clips z[i,t], t≠q, of the own video when intra_negatives).
- temporal terms weighted by ω(δ) = exp(−|δ|/σ), weighted means; L_t = ½(L_tz + L_tw), an empty direction = 0.

Options of issue 15 (docs/method.md "Options"), written from their definitions, not from the vectorised code:
- content words (``objective.stopwords``): a word may be a discovered positive (in P) and a word anchor (of
  L_wc and L_tw) only if it is valid and not a stop word; a sentence with no such word uses all its valid words.
  Negatives are unchanged (all valid words of the other sentences; intra: all unselected valid own words).
- context_stop_grad: g receives c[i,t+δ] detached.
- temporal_negatives="within": the word anchor's negatives are the warped clips z[i,t], t ≠ q, of its own video
  only; a word with none is skipped.
- temporal_directions: "clip" → L_t = L_tz, "word" → L_t = L_tw, "both" → ½(L_tz + L_tw).
- span-restricted offsets (``objective.context_in_span``): ``ref_offset_choices`` lists, per clip, the offsets
  the draw may pick: δ ≠ 0, |δ| ≤ W, reference and context valid and inside the span.

The release's form (METHOD.md §3b, ``objective.temporal_form=release``; ``ref_release_temporal``), one anchor at
a time: a variate u picks the ⌊u·n⌋-th of the n valid words (clips) of its own sample; g(x, Δ) = x + A_s·sign Δ +
A_d·|Δ| from the Linear(1, D) weights and biases; per clip t (inside the span, when given): m = its most similar
content word, s = the picked word, positive normalize(g_w(w[s], s − m)), negatives the K picked raw words;
per content word l (of a sample with a span clip): q = its most similar span clip, s = the picked span clip,
positive normalize(g_c(c[s], s − q)), negatives the K picked raw span clips; InfoNCE at τ over [positive,
negatives]; plain means per direction. The splice classifier (``ref_splice_batch``, ``ref_splice``): sample i
keeps its clips before k = ⌊u·min(n_i, n_{i+1})⌋ and takes sample (i+1) mod B's from there; CE of
Linear(T·D, T) over the spliced video's valid positions, mean over the samples whose partner is another.
"""
from __future__ import annotations

import math

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Tiny tensors: one thread avoids OpenMP barrier stalls on the shared 2-core machine (10x faster)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _norm(x):
    return x / x.norm().clamp_min(1e-12)


def _valid(mask_row):
    return [int(j) for j in range(mask_row.shape[0]) if bool(mask_row[j])]


def _lse(values):
    return torch.logsumexp(torch.stack(values), dim=0)


def ref_coarse(clips, sentence, clip_mask, scale):
    B = clips.shape[0]
    v = []
    for i in range(B):
        ts = _valid(clip_mask[i])
        mean = sum(clips[i, t] for t in ts) / len(ts)
        v.append(_norm(mean))
    total = 0.0
    for i in range(B):  # video -> sentence
        logits = [scale * torch.dot(v[i], sentence[j]) for j in range(B)]
        total = total + (_lse(logits) - logits[i]) / B * 0.5
    for j in range(B):  # sentence -> video
        logits = [scale * torch.dot(sentence[j], v[i]) for i in range(B)]
        total = total + (_lse(logits) - logits[j]) / B * 0.5
    return total


def _topk(scores, idx, k):
    """Indices (from idx) of the k largest scores."""
    order = sorted(range(len(idx)), key=lambda n: -float(scores[n]))
    return [idx[n] for n in order[: min(k, len(idx))]]


def _content(word_mask, content_mask, i):
    """Positive-eligible words of sentence i: valid content words, or all valid words if it has none."""
    ls = _valid(word_mask[i])
    if content_mask is None:
        return ls
    kept = [l for l in ls if bool(content_mask[i, l])]
    return kept if kept else ls


def ref_offset_choices(clip_mask, window, span_mask=None):
    """{(i, t): sorted list of the offsets the draw may pick} (empty list = δ must be 0)."""
    B, T = clip_mask.shape
    ok = [[bool(clip_mask[i, t]) and (span_mask is None or bool(span_mask[i, t])) for t in range(T)]
          for i in range(B)]
    return {(i, t): [d for d in range(-window, window + 1) if d != 0 and ok[i][t] and 0 <= t + d < T and ok[i][t + d]]
            for i in range(B) for t in range(T)}


def ref_correspondences(clips, words, clip_mask, word_mask, topk, content_mask=None):
    B = clips.shape[0]
    P, Q = {}, {}
    with torch.no_grad():
        for i in range(B):
            ts, ls = _valid(clip_mask[i]), _content(word_mask, content_mask, i)
            for t in ts:
                P[i, t] = _topk([torch.dot(clips[i, t], words[i, l]) for l in ls], ls, topk)
            for l in ls:
                Q[i, l] = _topk([torch.dot(clips[i, t], words[i, l]) for t in ts], ts, topk)
    return P, Q


def _anchor_term(anchor, positives, negatives, tau, soft, soft_logits=None):
    """InfoNCE of one anchor vector against lists of positive / negative vectors."""
    pos = [torch.dot(anchor, p) / tau for p in positives]
    neg = [torch.dot(anchor, n) / tau for n in negatives]
    den = _lse(pos + neg)
    if not soft:
        return den - _lse(pos)
    ref = soft_logits if soft_logits is not None else [p.detach() for p in pos]
    a = torch.softmax(torch.stack([r.detach() for r in ref]), dim=0)
    return den - sum(a[n] * pos[n] for n in range(len(pos)))


def ref_fine(clips, words, clip_mask, word_mask, topk=1, tau=0.07, intra_negatives=False, soft=False,
             content_mask=None):
    B = clips.shape[0]
    P, Q = ref_correspondences(clips, words, clip_mask, word_mask, topk, content_mask)
    cw, wc = [], []
    for i in range(B):
        ts, ls = _valid(clip_mask[i]), _valid(word_mask[i])
        anchors = _content(word_mask, content_mask, i)
        other_words = [words[j, m] for j in range(B) if j != i for m in _valid(word_mask[j])]
        other_clips = [clips[j, t] for j in range(B) if j != i for t in _valid(clip_mask[j])]
        for t in ts:
            pos = [words[i, l] for l in P[i, t]]
            neg = list(other_words)
            if intra_negatives:
                neg += [words[i, l] for l in ls if l not in P[i, t]]
            cw.append(_anchor_term(clips[i, t], pos, neg, tau, soft))
        for l in anchors:
            pos = [clips[i, t] for t in Q[i, l]]
            neg = list(other_clips)
            if intra_negatives:
                neg += [clips[i, t] for t in ts if t not in Q[i, l]]
            wc.append(_anchor_term(words[i, l], pos, neg, tau, soft))
    l_cw = sum(cw) / len(cw)
    l_wc = sum(wc) / len(wc)
    return {"fine": 0.5 * (l_cw + l_wc), "fine_cw": l_cw, "fine_wc": l_wc}


def ref_temporal(
    clips, words, clip_mask, word_mask, head, offsets, topk=1, tau=0.07, sigma=math.inf,
    intra_negatives=False, soft=False, temporal_negatives="clips", context_stop_grad=False,
    temporal_directions="both", content_mask=None,
):
    assert temporal_negatives in ("clips", "warped", "within")
    assert temporal_directions in ("both", "word", "clip")
    B, T, _ = clips.shape
    P, Q = ref_correspondences(clips, words, clip_mask, word_mask, topk, content_mask)
    z = {}
    for i in range(B):
        ts = _valid(clip_mask[i])
        for t in ts:
            d = int(offsets[i, t])
            if d != 0 and 0 <= t + d < T and bool(clip_mask[i, t + d]):
                context = clips[i, t + d].detach() if context_stop_grad else clips[i, t + d]
                z[i, t] = _norm(head(context, torch.tensor(d)))

    def omega(d):
        return math.exp(-abs(d) / sigma)

    num_z, den_z, num_w, den_w = 0.0, 0.0, 0.0, 0.0
    for i in range(B):
        ts, ls = _valid(clip_mask[i]), _valid(word_mask[i])
        other_words = [words[j, m] for j in range(B) if j != i for m in _valid(word_mask[j])]
        other_clips = [clips[j, t] for j in range(B) if j != i for t in _valid(clip_mask[j])]
        other_warped = [z[j, t] for j in range(B) if j != i for t in range(T) if (j, t) in z]
        for t in ts:
            if (i, t) not in z:
                continue
            pos = [words[i, l] for l in P[i, t]]
            neg = list(other_words)
            if intra_negatives:
                neg += [words[i, l] for l in ls if l not in P[i, t]]
            soft_logits = [torch.dot(clips[i, t], words[i, l]) / tau for l in P[i, t]]
            term = _anchor_term(z[i, t], pos, neg, tau, soft, soft_logits)
            w = omega(int(offsets[i, t]))
            num_z, den_z = num_z + w * term, den_z + w
        for l in _content(word_mask, content_mask, i):
            q = Q[i, l][0]
            if (i, q) not in z:
                continue
            if temporal_negatives == "within":
                neg = [z[i, t] for t in ts if t != q and (i, t) in z]
                if not neg:
                    continue
            elif temporal_negatives == "warped":
                neg = list(other_warped)
                if intra_negatives:
                    neg += [z[i, t] for t in ts if t != q and (i, t) in z]
            else:
                neg = list(other_clips)
                if intra_negatives:
                    neg += [clips[i, t] for t in ts if t != q]
            term = _anchor_term(words[i, l], [z[i, q]], neg, tau, False)
            w = omega(int(offsets[i, q]))
            num_w, den_w = num_w + w * term, den_w + w
    zero = clips.new_zeros(())
    l_z = num_z / den_z if den_z else zero
    l_w = num_w / den_w if den_w else zero
    total = {"both": 0.5 * (l_z + l_w), "clip": l_z, "word": l_w}[temporal_directions]
    return {"temporal": total, "temporal_z": l_z, "temporal_w": l_w}


def ref_total(objective, clips, words, sentence, clip_mask, word_mask, offsets, content_mask=None):
    """The whole LocVTPObjective, from the loop references (uses the objective's g, scale and options).

    ``content_mask`` is used only when the objective's ``stopwords`` is not "none" (as the objective does)."""
    o = objective
    if getattr(o, "stopwords", "none") == "none":
        content_mask = None
    out = {}
    zero = clips.new_zeros(())
    out["coarse"] = ref_coarse(clips, sentence, clip_mask, o.scale()) if o.use_coarse else zero
    out.update(
        ref_fine(clips, words, clip_mask, word_mask, o.topk, o.tau_fine, o.intra_negatives, o.soft, content_mask)
        if o.use_fine else {"fine": zero, "fine_cw": zero, "fine_wc": zero}
    )
    out.update(
        ref_temporal(clips, words, clip_mask, word_mask, o.context_head, offsets, o.topk, o.tau_fine, o.sigma,
                     o.intra_negatives, o.soft, getattr(o, "temporal_negatives", "clips"),
                     getattr(o, "context_stop_grad", False), getattr(o, "temporal_directions", "both"), content_mask)
        if o.use_temporal else {"temporal": zero, "temporal_z": zero, "temporal_w": zero}
    )
    total = zero
    for key, on in (("coarse", o.use_coarse), ("fine", o.use_fine), ("temporal", o.use_temporal)):
        if on:
            total = total + o.weights[key] * out[key]
    out["total"] = total
    return out


# ------------------------------------------------------------------------------------------------ METHOD.md §3b
def _pick(u, valid):
    """The ⌊u·n⌋-th of the n valid positions (u a 0-d tensor: floor in its own dtype, as the objective)."""
    n = len(valid)
    return valid[min(int(torch.floor(u * n)), n - 1)]


def _offset_warp(head, x, delta):
    """g(x, Δ) = x + A_sign·sign(Δ) + A_dist·|Δ|, written out from the two Linear(1, D) layers of ``head``."""
    sign = float((delta > 0) - (delta < 0))
    a_s, a_d = head.sign_proj, head.dist_proj
    return x + a_s.weight[:, 0] * sign + a_s.bias + a_d.weight[:, 0] * abs(delta) + a_d.bias


def ref_release_temporal(clips, words, clip_mask, word_mask, word_head, clip_head, clip_draws, word_draws, tau=0.07,
                         content_mask=None, span_mask=None, context_stop_grad=False, temporal_directions="both"):
    B, T, _ = clips.shape
    l_z, l_w = [], []
    for i in range(B):
        ws = _valid(word_mask[i])
        cs = [t for t in _valid(clip_mask[i]) if span_mask is None or bool(span_mask[i, t])]
        content = _content(word_mask, content_mask, i)
        for t in cs:
            m = max(content, key=lambda l: float(torch.dot(clips[i, t], words[i, l]).detach()))
            s = _pick(clip_draws[i, t, 0], ws)
            pos = _norm(_offset_warp(word_head, words[i, s], s - m))
            negs = [words[i, _pick(u, ws)] for u in clip_draws[i, t, 1:]]
            l_z.append(_anchor_term(clips[i, t], [pos], negs, tau, False))
        if not cs:
            continue
        for l in content:
            q = max(cs, key=lambda t: float(torch.dot(clips[i, t], words[i, l]).detach()))
            s = _pick(word_draws[i, l, 0], cs)
            src = clips[i, s].detach() if context_stop_grad else clips[i, s]
            pos = _norm(_offset_warp(clip_head, src, s - q))
            negs = [clips[i, _pick(u, cs)] for u in word_draws[i, l, 1:]]
            l_w.append(_anchor_term(words[i, l], [pos], negs, tau, False))
    zero = clips.new_zeros(())
    lz = sum(l_z) / len(l_z) if l_z else zero
    lw = sum(l_w) / len(l_w) if l_w else zero
    total = {"both": 0.5 * (lz + lw), "clip": lz, "word": lw}[temporal_directions]
    return {"temporal": total, "temporal_z": lz, "temporal_w": lw}


def ref_splice_batch(clips, clip_mask, draws):
    """(spliced clips, mask, k, ok) one sample at a time."""
    B, T = clip_mask.shape
    out, masks, ks, oks = [], [], [], []
    for i in range(B):
        p = (i + 1) % B
        n = max(1, min(len(_valid(clip_mask[i])), len(_valid(clip_mask[p]))))
        k = min(int(torch.floor(draws[i] * n)), n - 1)
        out.append(torch.stack([clips[i, t] if t < k else clips[p, t] for t in range(T)]))
        masks.append(clip_mask[p].clone())
        ks.append(k)
        oks.append(p != i)
    return torch.stack(out), torch.stack(masks), torch.tensor(ks), torch.tensor(oks)


def ref_splice(clips, clip_mask, k, ok, classifier):
    terms = []
    W, b = classifier.fc.weight, classifier.fc.bias
    B, T, D = clips.shape
    for i in range(B):
        if not bool(ok[i]):
            continue
        flat = torch.cat([clips[i, t] if bool(clip_mask[i, t]) else clips.new_zeros(D) for t in range(T)])
        logits = [torch.dot(W[c], flat) + b[c] for c in _valid(clip_mask[i])]
        pos = _valid(clip_mask[i]).index(int(k[i]))
        terms.append(_lse(logits) - logits[pos])
    return sum(terms) / len(terms) if terms else clips.new_zeros(())
