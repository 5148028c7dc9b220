"""Issue-9 acceptance figures: extract → index → search, and `ground`, on the synthetic world's held-out queries.

For a (trained) checkpoint and a synthetic world:

1. ``locvtp extract`` every video of the world;
2. ``locvtp index`` the features (exact) twice: over the **held-out split** (the videos of the query file, the
   video-corpus moment retrieval convention: TVR and ActivityNet-VCMR search the evaluation split's videos) and
   over the **whole world** (every split, 4-5x more distractors);
3. every held-out grounding query (ActivityNet-format ``grounding/activitynet/val_1.json``: test videos never
   used for pre-training) is searched over each corpus; a query is a **hit@5** when one of its top-5
   moments is in the right video and overlaps the annotated moment (IoU > 0), and a **hit@5 IoU≥0.5** when
   that overlap has IoU ≥ 0.5;
   *equivalent moments* (whole-world corpus): a query names only an object and an action ("the red ball moves left"), and the same
   object does the same action in other corpus videos too (the script prints the median number of such events
   per query: 17 in the demo world). Those moments answer the query as well as the annotated one, and no model can rank the annotated one
   first among them. So, from the world's ``ground_truth.json``, the script also counts a **content hit@5**
   (a top-5 moment overlaps an event of the same colour, shape and action, in any video) and prints the
   **strict-hit ceiling**: the mean of min(1, k / n) over queries, n = number of same-content events, i.e. what a
   perfect model would score on the strict hit with ties broken at random;
4. ``ground`` (zero-shot, on the query's own video, from the extracted features): top-1 window overlapping the
   truth (IoU > 0) and R1@IoU0.5.

Prints the rates, and one example per kind. Uses the package's public functions (the same code the commands run).

    .venv/bin/python -m locvtp.diagnostics.acceptance_search --checkpoint RUN_OR_CKPT --world WORLD_DIR [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def iou(a, b) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else 0.0


def same_content_events(world: Path) -> tuple[dict, dict] | None:
    """From the world's ``ground_truth.json``: (video, start, end) of each annotated event -> (its (colour, shape,
    action), every corpus event with that content as (video, start, end)); and video -> the (colour, shape) of
    the objects it shows. None when there is no ``ground_truth.json`` (not a synthetic world)."""
    path = world / "ground_truth.json"
    if not path.is_file():
        return None
    gt = json.loads(path.read_text())
    by_content: dict[tuple, list] = {}
    keys = []
    for vid, rec in gt.items():
        for e in rec["events"]:
            o = rec["objects"][e["object"]]
            content = (o["colour"], o["shape"], e["action"])
            by_content.setdefault(content, []).append((vid, float(e["start"]), float(e["end"])))
            keys.append(((vid, round(float(e["start"]), 2), round(float(e["end"]), 2)), content))
    shown = {vid: {(o["colour"], o["shape"]) for o in rec["objects"]} for vid, rec in gt.items()}
    return {key: (content, by_content[content]) for key, content in keys}, shown


def strict_hits(moments, video_id: str, truth) -> tuple[bool, bool]:
    """Does a moment of the query's own video overlap the truth (IoU > 0), and with IoU >= 0.5?"""
    ious = [iou((m.start, m.end), truth) for m in moments if m.video_id == video_id]
    return any(x > 0 for x in ious), any(x >= 0.5 for x in ious)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--world", required=True)
    p.add_argument("--annotations", default="grounding/activitynet/val_1.json",
                   help="held-out queries (ActivityNet Captions format), relative to --world")
    p.add_argument("--out", default=None, help="keep features/index here (default: temp dir)")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from locvtp import runtime

    with runtime.threads(args.threads):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from locvtp.checkpoint import load_checkpoint, resolve_checkpoint
    from locvtp.data.formats import read_activitynet_captions
    from locvtp.commands.extract import build_parser
    from locvtp.extraction import run_extract
    from locvtp.index import MomentIndex, build_index
    from locvtp.inference import embed_texts

    world = Path(args.world)
    queries = read_activitynet_captions(world / args.annotations).records
    same = same_content_events(world)
    if not queries:
        print(f"no queries in {world / args.annotations}", file=sys.stderr)
        return 1
    ckpt_path = resolve_checkpoint(args.checkpoint)
    ck = load_checkpoint(ckpt_path)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.out) if args.out else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        feats = work / "feats.h5"
        s = run_extract(build_parser().parse_args(["--checkpoint", str(ckpt_path), "--videos", str(world / "videos"),
                                                   "--out", str(feats), "--device", "cpu"]), progress=True)
        text = embed_texts(ck.model, ck.tokenizer, [q.query for q in queries], max_words=int(ck.cfg.data.max_words))
        split_ids = sorted({q.video_id for q in queries})
        build_index(feats, work / "index_split", progress=False, video_ids=split_ids)
        split_index = MomentIndex(work / "index_split")
        split_results = split_index.search_moments(text.sentence, top_k=args.top_k)
        build_index(feats, work / "index", progress=False)
        index = MomentIndex(work / "index")
        results = index.search_moments(text.sentence, top_k=args.top_k)
        st = _per_query(args, queries, same, split_results, results, feats, text)
    n = len(queries)
    print(f"# acceptance: checkpoint {ckpt_path} (sha {ck.sha256[:12]}), world {world}, {n} held-out queries")
    print(f"## corpus = the held-out split: {len(split_ids)} videos / {len(split_index)} clips")
    _report(args, st, n, s.extracted + s.skipped_done, len(index), same is not None)
    return 0


def _per_query(args: argparse.Namespace, queries: list, same: Any, split_results: list, results: list,
               feats: Path, text: Any) -> dict[str, Any]:
    """Per held-out query: strict and content hits of search, and ground's top-1 on the query's own video."""
    from locvtp.featurestore import read_features
    from locvtp.localize import ground_embeddings

    st: dict[str, Any] = {k: [] for k in ("split_hit", "split_hit5", "hit", "hit5", "g_overlap", "g_r05", "c_hit",
                                          "c_hit5", "ceiling", "n_equivalent")}
    st.update(shows_object=0, moments=0, examples={})  # top-k moments in a video that shows the query's object
    for i, q in enumerate(queries):
        gt = (q.start, q.end) if hasattr(q, "start") else q.windows[0]
        for key, found in (("split_hit", split_results[i]), ("hit", results[i])):
            overlap, at05 = strict_hits(found, q.video_id, gt)
            st[key].append(overlap)
            st[key + "5"].append(at05)
        if same is not None:
            content, events = same[0].get((q.video_id, round(gt[0], 2), round(gt[1], 2)), (None, []))
            if content is not None:
                st["shows_object"] += sum(content[:2] in same[1].get(m.video_id, ()) for m in results[i])
                st["moments"] += len(results[i])
            st["n_equivalent"].append(len(events))
            st["ceiling"].append(min(1.0, args.top_k / max(1, len(events))))
            c_ious = [max((iou((m.start, m.end), (s0, s1)) for v, s0, s1 in events if v == m.video_id),
                          default=-1.0) for m in results[i]]
            st["c_hit"].append(any(x > 0 for x in c_ious))
            st["c_hit5"].append(any(x >= 0.5 for x in c_ious))
        rec = read_features(feats, q.video_id)
        g = ground_embeddings(rec.features, rec.windows, text.sentence[i], text.words[i], query=q.query,
                              duration=rec.duration, top_k=1)
        gi = iou(tuple(g.windows[0]), gt)
        st["g_overlap"].append(gi > 0)
        st["g_r05"].append(gi >= 0.5)
        if gi > 0 and "ground" not in st["examples"]:
            st["examples"]["ground"] = {"video": q.video_id, "query": q.query, "truth": list(gt),
                                        "top1": [float(x) for x in g.windows[0]], "iou": round(gi, 3)}
        if st["hit"][-1] and "search" not in st["examples"]:
            st["examples"]["search"] = {"query": q.query, "truth": [q.video_id, *gt],
                                        "results": [m.to_json() for m in results[i]]}
    return st


def _report(args: argparse.Namespace, st: dict[str, Any], n: int, videos: int, clips: int, content: bool) -> None:
    k = args.top_k
    print(f"search top-{k} hit (right video, overlaps truth): {np.mean(st['split_hit']):.3f}  "
          f"({sum(st['split_hit'])}/{n})")
    print(f"search top-{k} hit (right video, IoU >= 0.5):      {np.mean(st['split_hit5']):.3f}  "
          f"({sum(st['split_hit5'])}/{n})")
    print(f"## corpus = the whole world: {videos} videos / {clips} clips")
    print(f"search top-{k} hit (right video, overlaps truth): {np.mean(st['hit']):.3f}  ({sum(st['hit'])}/{n})")
    print(f"search top-{k} hit (right video, IoU >= 0.5):      {np.mean(st['hit5']):.3f}  ({sum(st['hit5'])}/{n})")
    if content:
        print(f"search top-{k} content hit (an equivalent moment, any video, overlaps): "
              f"{np.mean(st['c_hit']):.3f}  ({sum(st['c_hit'])}/{n})")
        print(f"search top-{k} content hit (equivalent moment, IoU >= 0.5):            "
              f"{np.mean(st['c_hit5']):.3f}  ({sum(st['c_hit5'])}/{n})")
        print(f"strict-hit ceiling (perfect model, ties among equivalent moments broken at random): "
              f"{np.mean(st['ceiling']):.3f}  (median {np.median(st['n_equivalent']):.0f} equivalent events per query)")
        print(f"top-{k} moments in a video that shows the query's object: "
              f"{st['shows_object'] / max(1, st['moments']):.3f}  ({st['shows_object']}/{st['moments']})")
    print("## ground, on the query's own video")
    print(f"ground top-1 overlaps truth:                      {np.mean(st['g_overlap']):.3f}  "
          f"({sum(st['g_overlap'])}/{n})")
    print(f"ground R1@IoU0.5:                                 {np.mean(st['g_r05']):.3f}  ({sum(st['g_r05'])}/{n})")
    print(json.dumps(st["examples"], indent=1))


if __name__ == "__main__":
    sys.exit(main())
