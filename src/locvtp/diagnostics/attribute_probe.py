"""Which parts of a sentence does the joint space ground? Text→event retrieval, scored per attribute.

On a synthetic world every event is "<colour> <shape> <action>". For each event of the grounding videos (train
and test, ``grd_*``), its embedding is the mean of its clips' embeddings (from a feature file written by
``locvtp extract``, e.g. the ``--out`` directory of ``locvtp.diagnostics.acceptance_search``), and its canonical caption
("the red circle moves left") is embedded by the same checkpoint. Each caption retrieves the most similar event;
the script prints how often that event has the same action, colour, shape, object (colour and shape) and all three,
next to chance (the same rate for an event drawn at random). A factor at chance is one the model does not bind
between text and video: that is what limits corpus search on the world (docs/results.md).

    python -m locvtp.diagnostics.attribute_probe --checkpoint demo_run/runs/locvtp --world demo_run/world \\
        --features acc/feats.h5
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

FACTORS = {"action": (2,), "colour": (0,), "shape": (1,), "object": (0, 1), "all": (0, 1, 2)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--world", required=True, type=Path)
    p.add_argument("--features", required=True, help="clip features of the world's videos (`locvtp extract`)")
    p.add_argument("--prefix", default="grd_", help="video id prefix of the events to use")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from locvtp.checkpoint import load_checkpoint, resolve_checkpoint
    from locvtp.world.plan import Obj, canonical_caption
    from locvtp.featurestore.reader import read_features
    from locvtp.inference import embed_texts

    gt = json.loads((args.world / "ground_truth.json").read_text())
    events, content, captions = [], [], []
    for vid in sorted(v for v in gt if v.startswith(args.prefix)):
        rec = read_features(args.features, vid)
        f = rec.features / np.linalg.norm(rec.features, axis=1, keepdims=True)
        for e in gt[vid]["events"]:
            o = gt[vid]["objects"][e["object"]]
            inside = (rec.windows[:, 0] >= e["start"] - 1e-6) & (rec.windows[:, 1] <= e["end"] + 1e-6)
            if not inside.any():
                continue
            m = f[inside].mean(0)
            events.append(m / np.linalg.norm(m))
            content.append((o["colour"], o["shape"], e["action"]))
            captions.append(canonical_caption(Obj(o["colour"], o["shape"], 0.0, 0.0, 1.0), e["action"]))
    if not events:
        print(f"no event of a {args.prefix}* video found in {args.features}", file=sys.stderr)
        return 1
    ck = load_checkpoint(resolve_checkpoint(args.checkpoint))
    text = embed_texts(ck.model, ck.tokenizer, captions, max_words=int(ck.cfg.data.max_words)).sentence
    text = text / np.linalg.norm(text, axis=1, keepdims=True)
    best = np.argmax(text @ np.stack(events).T, axis=1)
    n = len(events)
    print(f"# {args.checkpoint}: {n} events ({len(set(content))} distinct colour/shape/action), captions "
          f"'the <colour> <shape> <action>'")
    print("| factor | top-1 event agrees | chance |")
    print("|---|---:|---:|")
    for name, idx in FACTORS.items():
        key = [tuple(c[i] for i in idx) for c in content]
        agree = np.mean([key[i] == key[best[i]] for i in range(n)])
        chance = np.mean([(sum(k == key[i] for k in key) - 1) / (n - 1) for i in range(n)])
        print(f"| {name} | {100 * agree:.1f} | {100 * chance:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
