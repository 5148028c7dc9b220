"""`locvtp backbone` (supervised tiny3d pre-training) and loading its weights into the model."""
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from locvtp.commands.backbone import build_parser
from locvtp.backbone import epic_clips, labelled_clips, train_backbone
from locvtp.config import load_config
from locvtp.model.locvtp import LocVTP
from locvtp.model.video import Tiny3D, VideoEncoderError


def test_labelled_clips_use_train_split_only_for_training(tiny_world):
    train, held, skipped = labelled_clips(tiny_world, "retrieval/MSRVTT_data.json", "retrieval/MSRVTT_train.9k.csv",
                                          1.0, 4, 32, progress=False)
    (xtr, ytr), (xte, yte) = (train.clips, train.labels["category"]), (held.clips, held.labels["category"])
    assert xtr.dtype.name == "uint8" and xtr.shape[1:] == (4, 32, 32, 3) and len(xtr) == len(ytr) > 0
    assert len(xte) == len(yte) > 0 and skipped == []
    meta = json.loads((tiny_world / "retrieval/MSRVTT_data.json").read_text())
    train_ids = set((tiny_world / "retrieval/MSRVTT_train.9k.csv").read_text().split()[1:])
    cats = {v["category"] for v in meta["videos"] if v["video_id"] in train_ids}
    assert set(ytr.tolist()) <= cats


def test_backbone_trains_writes_atomically_and_loads_into_the_model(tiny_world, tmp_path):
    out = tmp_path / "bb.safetensors"
    args = build_parser().parse_args(["--data", str(tiny_world), "--out", str(out), "--width", "8", "--steps", "30",
                                      "--batch-size", "16"])
    res = train_backbone(args, progress=False)
    assert out.is_file() and not list(tmp_path.glob("*.tmp*"))
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["train_clips"] == res.train_clips > 0 and 0.0 <= side["heldout_accuracy"] <= 1.0
    state = load_file(str(out))
    assert set(state) == set(Tiny3D(8).state_dict())
    cfg = load_config("configs/pretrain_synthetic.yaml", ["model.video.width=8", f"model.video.pretrained={out}",
                                                         "model.dim=32", "model.text.width=32"])
    model = LocVTP.from_config(cfg)
    loaded = model.video_encoder.cnn.state_dict()
    for k, v in state.items():
        assert torch.equal(loaded[k], v), k
    # the weights trained: they differ from a fresh initialisation with the same seed
    torch.manual_seed(0)
    fresh = Tiny3D(8).state_dict()
    assert any(not torch.equal(fresh[k], state[k]) for k in state if state[k].is_floating_point())


def test_pretrained_tiny3d_mismatch_names_file_and_keys(tmp_path):
    bad = tmp_path / "w16.safetensors"
    save_file(Tiny3D(16).state_dict(), str(bad))
    with pytest.raises(VideoEncoderError, match=r"w16\.safetensors.*shape mismatches"):
        Tiny3D(8).load_pretrained(bad)
    state = Tiny3D(8).state_dict()
    state.pop(next(iter(state)))
    save_file(state, str(tmp_path / "missing.safetensors"))
    with pytest.raises(VideoEncoderError, match="missing keys"):
        Tiny3D(8).load_pretrained(tmp_path / "missing.safetensors")
    with pytest.raises(VideoEncoderError, match="not found"):
        Tiny3D(8).load_pretrained(tmp_path / "nope.safetensors")


def test_backbone_skips_and_reports_a_corrupt_video(tiny_world, tmp_path):
    world = tmp_path / "w"
    shutil.copytree(tiny_world, world, ignore=shutil.ignore_patterns("*.mp4"))
    (world / "videos").mkdir(exist_ok=True)
    meta = json.loads((tiny_world / "retrieval/MSRVTT_data.json").read_text())
    for v in meta["videos"]:
        shutil.copy(tiny_world / v["url"], world / v["url"])
    broken = world / meta["videos"][0]["url"]
    broken.write_bytes(b"not a video")
    _, _, skipped = labelled_clips(world, "retrieval/MSRVTT_data.json", "retrieval/MSRVTT_train.9k.csv",
                                   1.0, 4, 32, progress=False)
    assert len(skipped) == 1 and str(broken) in skipped[0]["source"]
    from locvtp.training.records import BadSampleError

    with pytest.raises(BadSampleError, match="unreadable video"):
        labelled_clips(world, "retrieval/MSRVTT_data.json", "retrieval/MSRVTT_train.9k.csv", 1.0, 4, 32,
                       strict=True, progress=False)


def test_epic_clips_carry_the_segment_verb_and_noun(tiny_world):
    """Every clip inside an EPIC segment is labelled with that segment's verb (the world's action) and noun (the
    acting object); the clip count per segment is floor(length / clip_seconds), validation segments are held out."""
    import math

    from locvtp.world.plan import ACTIONS, COLOURS, SHAPES

    train, held, skipped = epic_clips(tiny_world, "epic/EPIC_100_train.csv", "epic/EPIC_100_validation.csv",
                                      1.0, 4, 32, progress=False)
    assert skipped == [] and set(train.labels) == {"verb", "noun"}
    gt = json.loads((tiny_world / "ground_truth.json").read_text())
    expect = {"train": ([], []), "validation": ([], [])}
    for vid in sorted(gt):
        g = gt[vid]
        if g["split"] not in ("epic_train", "epic_val"):
            continue
        part = "train" if g["split"] == "epic_train" else "validation"
        for e in g["events"]:
            o = g["objects"][e["object"]]
            n = max(1, math.floor(e["end"] - e["start"] + 1e-6))
            expect[part][0].extend([ACTIONS.index(e["action"])] * n)
            expect[part][1].extend([list(COLOURS).index(o["colour"]) * len(SHAPES) + SHAPES.index(o["shape"])] * n)
    for got, part in ((train, "train"), (held, "validation")):
        assert got.labels["verb"].tolist() == expect[part][0]
        assert got.labels["noun"].tolist() == expect[part][1]
        assert got.clips.shape == (len(expect[part][0]), 4, 32, 32, 3) and got.clips.dtype.name == "uint8"


def test_backbone_epic_labels_train_two_heads(tiny_world, tmp_path, capsys):
    from locvtp.commands.backbone import main

    out = tmp_path / "epic.safetensors"
    assert main(["--data", str(tiny_world), "--labels", "epic-kitchens", "--out", str(out), "--width", "8",
                 "--steps", "10", "--batch-size", "8", "--quiet"]) == 0
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["labels"] == "epic-kitchens" and set(side["classes"]) == {"verb", "noun"}
    assert side["classes"]["verb"] <= 7 and side["classes"]["noun"] <= 35
    assert set(side["heldout_accuracy_per_head"]) == {"verb", "noun"}
    # "every head right" can never exceed either head's accuracy
    assert side["heldout_accuracy"] <= min(side["heldout_accuracy_per_head"].values())
    assert set(load_file(str(out))) == set(Tiny3D(8).state_dict())
    printed = capsys.readouterr().out
    assert "epic-kitchens clips" in printed and "verb" in printed and "noun" in printed


def test_epic_backbone_reports_a_bad_row_and_a_missing_video(tiny_world, tmp_path):
    world = tmp_path / "w"
    shutil.copytree(tiny_world, world)
    csv_path = world / "epic" / "EPIC_100_train.csv"
    lines = csv_path.read_text().splitlines()
    gone = lines[1].split(",")[2]
    (world / "videos" / f"{gone}.mp4").unlink()
    lines.append(lines[-1].replace(lines[-1].split(",")[0], "broken_row").replace(",P00,", ",P00,nosuchvid,", 1))
    csv_path.write_text("\n".join(lines) + "\n")
    train, _, skipped = epic_clips(world, "epic/EPIC_100_train.csv", "", 1.0, 4, 32, progress=False)
    assert len(train) > 0
    reasons = " | ".join(f"{s['source']}: {s['reason']}" for s in skipped)
    assert f"{gone}.mp4" in reasons and "EPIC_100_train.csv: line" in reasons
    with pytest.raises(Exception, match="EPIC_100_train.csv"):
        epic_clips(world, "epic/EPIC_100_train.csv", "", 1.0, 4, 32, strict=True, progress=False)


def test_epic_background_clips_get_one_extra_class_per_head(tiny_world):
    """`--background`: every 1-s grid clip of an annotated video whose centre lies in no segment is added with the
    last class of each head (max class + 1); segment clips keep their labels."""
    import math

    plain, plain_held, _ = epic_clips(tiny_world, "epic/EPIC_100_train.csv", "epic/EPIC_100_validation.csv",
                                      1.0, 4, 32, progress=False)
    train, held, skipped = epic_clips(tiny_world, "epic/EPIC_100_train.csv", "epic/EPIC_100_validation.csv",
                                      1.0, 4, 32, progress=False, background=True)
    assert skipped == []
    gt = json.loads((tiny_world / "ground_truth.json").read_text())
    rows = [ln.split(",") for ln in (tiny_world / "epic/EPIC_100_train.csv").read_text().splitlines()[1:]]
    rows += [ln.split(",") for ln in (tiny_world / "epic/EPIC_100_validation.csv").read_text().splitlines()[1:]]
    bg_verb = max(int(r[10]) for r in rows) + 1
    bg_noun = max(int(r[12]) for r in rows) + 1
    for got, base, split in ((train, plain, "epic_train"), (held, plain_held, "epic_val")):
        n_bg = 0
        for vid, g in gt.items():
            if g["split"] != split:
                continue
            from locvtp.data.video import decode_frames

            _, times = decode_frames(tiny_world / "videos" / f"{vid}.mp4", size=32)
            n = math.floor(float(times[-1]) + 1e-3 + 1e-6)
            n_bg += sum(not any(e["start"] <= k + 0.5 < e["end"] for e in g["events"]) for k in range(n))
        assert n_bg > 0 and len(got) == len(base) + n_bg
        assert int((got.labels["verb"] == bg_verb).sum()) == int((got.labels["noun"] == bg_noun).sum()) == n_bg
        # segment clips come first per video, in the same order as without background
        keep = got.labels["verb"] != bg_verb
        assert got.labels["verb"][keep].tolist() == base.labels["verb"].tolist()
        assert got.labels["noun"][keep].tolist() == base.labels["noun"].tolist()


def test_a_video_that_fails_midway_adds_no_clip(tiny_world, monkeypatch):
    """All of a video's clips, or none: a failure on a later segment must not leave the earlier ones behind
    (labels and clips would still line up, but half a video would be trained on while reported as skipped)."""
    import locvtp.data.video as V

    real = V.sample_clips
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the second segment of the first video
            raise OSError("simulated decode failure")
        return real(*args, **kwargs)

    full, _, _ = epic_clips(tiny_world, "epic/EPIC_100_train.csv", "", 1.0, 4, 32, progress=False)
    monkeypatch.setattr(V, "sample_clips", flaky)
    part, _, skipped = epic_clips(tiny_world, "epic/EPIC_100_train.csv", "", 1.0, 4, 32, progress=False)
    assert len(skipped) == 1 and "simulated decode failure" in skipped[0]["reason"]
    first_video = skipped[0]["source"]
    gt = json.loads((tiny_world / "ground_truth.json").read_text())
    vid = first_video.rsplit("/", 1)[-1].removesuffix(".mp4")
    import math
    lost = sum(max(1, math.floor(e["end"] - e["start"] + 1e-6)) for e in gt[vid]["events"])
    assert len(part) == len(full) - lost
    assert part.labels["verb"].tolist() == full.labels["verb"][lost:].tolist()
