"""Issue #18 on the training side (`pretrain`, `backbone`, config, `demo` / `ablate` / `synth` arguments): every
user mistake is one line naming the file, key or argument, with the right exit code; pre-training on an npy-dir /
npz-dir extraction reads its own stride and hashed ids; NaN features are bad samples; a failed backbone write
leaves nothing behind.

Each row of MISTAKES is one case of the issue; rows stop before anything is trained (or at the first few
samples), so the whole table runs in seconds.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from cli_helpers import CliResult, assert_one_line_error, run_cli

REPO = Path(__file__).resolve().parents[1]
TINY = ["train.batch_size=4", "train.log_every=1", "data.num_workers=0", "data.frames_per_clip=2",
        "data.frame_size=16", "data.max_words=16", "data.vocab_size=200", "model.dim=32", "model.text.width=32",
        "model.text.layers=1", "model.video.width=8", "train.num_threads=1", "train.max_steps=2",
        "train.save_every=0", "data.cache=false"]


pytestmark = pytest.mark.usefixtures("keep_torch_threads")  # conftest: TINY sets train.num_threads=1


@pytest.fixture(scope="module")
def broken_world(tiny_world, tmp_path_factory):
    """Worlds with one mistake each: a caption.json that is not JSON, one narration after its video's end, and a
    directory with no annotation files at all."""
    root = tmp_path_factory.mktemp("broken")
    for name in ("badjson", "late"):
        w = root / name
        (w / "pretrain").mkdir(parents=True)
        (w / "videos").symlink_to(tiny_world / "videos")
    (root / "badjson" / "pretrain" / "caption.json").write_text('{"v": {"start": [1,\n  oops}\n')
    cap = json.loads((tiny_world / "pretrain" / "caption.json").read_text())
    vid = sorted(cap)[0]
    cap[vid] = {k: [*v, x] for (k, v), x in zip(cap[vid].items(), (5000.0, 5001.0, "a narration after the end"))}
    (root / "late" / "pretrain" / "caption.json").write_text(json.dumps(cap))
    (root / "empty").mkdir()
    return root


def pretrain_args(tmp_path, world, *extra):
    return ["pretrain", "--config", "pretrain_synthetic", "--out", tmp_path / "run", "--quiet",
            f"data.root={world}", *TINY, *extra]


def _cuda_row():
    return pytest.param("train.device=cuda without CUDA", lambda t, w, b: pretrain_args(t, w, "train.device=cuda"),
                        2, ["train.device", "CUDA"],
                        marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA"))


# (id, argv builder (tmp_path, tiny_world, broken_world) -> argv, exit code, what the line must name)
MISTAKES = [
    # --- unchecked ranges (config keys, checked where the config is loaded)
    ("model.dim=0", lambda t, w, b: pretrain_args(t, w, "model.dim=0"), 2, ["model.dim=0", ">= 1"]),
    ("batch size 0", lambda t, w, b: pretrain_args(t, w, "train.batch_size=0"), 2, ["train.batch_size=0"]),
    ("lr 0", lambda t, w, b: pretrain_args(t, w, "train.lr=0"), 2, ["train.lr", "> 0"]),
    ("negative loss weight", lambda t, w, b: pretrain_args(t, w, "objective.weights.fine=-1"), 2,
     ["objective.weights.fine"]),
    ("dropout above 1", lambda t, w, b: pretrain_args(t, w, "model.proj_dropout=1.5"), 2, ["model.proj_dropout"]),
    ("odd tiny3d width", lambda t, w, b: pretrain_args(t, w, "model.video.width=7"), 2, ["model.video.width"]),
    ("unknown data.kind", lambda t, w, b: pretrain_args(t, w, "data.kind=feats"), 2, ["data.kind", "features"]),
    ("log_every 0", lambda t, w, b: pretrain_args(t, w, "train.log_every=0"), 2, ["train.log_every"]),
    ("range mistake in a YAML file names the file",
     lambda t, w, b: ["pretrain", "--config", _yaml(t, "train:\n  batch_size: 0\n"), "--out", t / "run"], 2,
     ["bad.yaml", "train.batch_size=0"]),
    _cuda_row(),
    ("features encoder on pixels", lambda t, w, b: pretrain_args(t, w, "model.video.name=features"), 2,
     ["data.kind=videos", "model.video.name"]),
    # --- the run directory
    ("--out is a file", lambda t, w, b: [*pretrain_args(t, w), "--out", _file(t)], 2, ["--out", "afile"]),
    ("--out is data.root", lambda t, w, b: [*pretrain_args(t, w), "--out", w], 2, ["--out", "data.root"]),
    # --- --resume
    ("--resume a missing dir", lambda t, w, b: pretrain_args(t, w, "--resume", t / "nope"), 2,
     ["--resume", str("nope")]),
    ("--resume a dir that is not a checkpoint", lambda t, w, b: pretrain_args(t, w, "--resume", w), 2,
     ["--resume", "no complete checkpoint"]),
    # issue 26: resuming reads the run's own settings (refusals of a changed objective / data are rows of
    # tests/test_resume_settings.py, which need a run to resume)
    ("neither --config nor --resume", lambda t, w, b: ["pretrain", "--out", t / "run"], 2, ["--config", "--resume"]),
    ("--resume auto with nothing to resume and no --config",
     lambda t, w, b: ["pretrain", "--out", t / "run", "--resume", "auto"], 2, ["--resume auto", "no checkpoint",
                                                                               "--config"]),
    ("--allow-changes without --resume", lambda t, w, b: pretrain_args(t, w, "--allow-changes", "data.root"), 2,
     ["--allow-changes", "--resume"]),
    ("--allow-changes a misspelt key",
     lambda t, w, b: pretrain_args(t, w, "--resume", "auto", "--allow-changes", "data.root,objective.stopword"), 2,
     ["--allow-changes objective.stopword", "no such setting"]),
    # --- files named by the config
    ("missing model.video.pretrained",
     lambda t, w, b: pretrain_args(t, w, f"model.video.pretrained={t / 'bb.safetensors'}"), 2,
     ["model.video.pretrained", "bb.safetensors"]),
    ("missing model.text.path",
     lambda t, w, b: pretrain_args(t, w, "model.text.name=hf", f"model.text.path={t / 'distilbert'}"), 2,
     ["model.text.path", "distilbert"]),
    ("missing data.tokenizer", lambda t, w, b: pretrain_args(t, w, f"data.tokenizer={t / 'tok.json'}"), 2,
     ["data.tokenizer", "tok.json"]),
    ("data.kind=features without data.features", lambda t, w, b: pretrain_args(t, w, "data.kind=features",
                                                                                   "model.video.name=features"),
     2, ["data.features"]),
    ("missing data.split_file", lambda t, w, b: pretrain_args(t, w, "data.split_file=ids.txt"), 1,
     ["data.split_file", "ids.txt"]),
    # --- CLIP's text tower (issue 25): weights and BPE vocabulary are local files, checked before any data is read
    ("clip text without model.text.weights",
     lambda t, w, b: pretrain_args(t, w, "model.text.name=clip", f"data.tokenizer={_bpe(t)}"), 2,
     ["model.text.weights", "openaipublic"]),
    ("clip text weights missing",
     lambda t, w, b: pretrain_args(t, w, "model.text.name=clip", f"model.text.weights={t / 'ViT-B-32.pt'}",
                                   f"data.tokenizer={_bpe(t)}"), 2,
     ["model.text.weights", "ViT-B-32.pt", "openaipublic"]),
    ("clip text without data.tokenizer",
     lambda t, w, b: pretrain_args(t, w, "model.text.name=clip", f"model.text.weights={_clip_tower(t)}"), 2,
     ["data.tokenizer", "bpe_simple_vocab_16e6.txt.gz", "github.com/openai/CLIP"]),
    ("clip text BPE vocabulary missing",
     lambda t, w, b: pretrain_args(t, w, "model.text.name=clip", f"model.text.weights={_clip_tower(t)}",
                                   f"data.tokenizer={t / 'bpe_simple_vocab_16e6.txt.gz'}"), 2,
     ["data.tokenizer", "does not exist", "github.com/openai/CLIP"]),
    # --- data
    ("malformed caption JSON", lambda t, w, b: pretrain_args(t, b / "badjson"), 1,
     ["caption.json", "line 2 column"]),
    ("--strict hit", lambda t, w, b: pretrain_args(t, b / "late", "--strict"), 1,
     ["caption.json", "narration 5000.00", "--strict"]),
    ("batch larger than the data", lambda t, w, b: pretrain_args(t, w, "train.batch_size=4096"), 2,
     ["train.batch_size=4096"]),
    # --- backbone
    ("backbone without --data", lambda t, w, b: ["backbone", "--out", t / "bb.safetensors"], 2, ["--data"]),
    ("backbone --data missing", lambda t, w, b: ["backbone", "--data", t / "nowhere", "--out", t / "b.safetensors"],
     2, ["--data", "nowhere"]),
    ("backbone --data without annotations",
     lambda t, w, b: ["backbone", "--data", b / "empty", "--out", t / "b.safetensors"], 2,
     ["--data", "MSRVTT_data.json", "--msrvtt"]),
    ("backbone epic without annotations",
     lambda t, w, b: ["backbone", "--data", b / "empty", "--labels", "epic-kitchens", "--out", t / "b.safetensors"],
     2, ["EPIC_100_train.csv", "--epic-train"]),
    ("backbone --steps -1", lambda t, w, b: ["backbone", "--data", w, "--out", t / "b.safetensors", "--steps", "-1"],
     2, ["--steps"]),
    ("backbone --steps 0", lambda t, w, b: ["backbone", "--data", w, "--out", t / "b.safetensors", "--steps", "0"],
     2, ["--steps"]),
    ("backbone --batch-size 0",
     lambda t, w, b: ["backbone", "--data", w, "--out", t / "b.safetensors", "--batch-size", "0"], 2, ["--batch-size"]),
    ("backbone --width 7", lambda t, w, b: ["backbone", "--data", w, "--out", t / "b.safetensors", "--width", "7"],
     2, ["--width"]),
    ("backbone --norm typo", lambda t, w, b: ["backbone", "--data", w, "--out", t / "b.safetensors", "--norm", "grp"],
     2, ["--norm"]),
    ("backbone --out a directory", lambda t, w, b: ["backbone", "--data", w, "--out", t], 2, ["--out", str("is a dir")]),
    ("backbone --out over an input",
     lambda t, w, b: ["backbone", "--data", w, "--out", w / "retrieval" / "MSRVTT_data.json"], 2, ["--out"]),
    # --- demo / ablate / synth arguments (refused before any world is generated)
    ("demo --seed -1", lambda t, w, b: ["demo", "--out", t / "d", "--seed", "-1"], 2, ["--seed"]),
    ("demo bad override", lambda t, w, b: ["demo", "--out", t / "d", "model.dim=0"], 2, ["model.dim=0"]),
    ("ablate unknown row", lambda t, w, b: ["ablate", "--out", t / "a", "--only", "nosuchrow"], 2,
     ["--only", "nosuchrow"]),
    ("ablate bad override", lambda t, w, b: ["ablate", "--out", t / "a", "train.lr=-1"], 2, ["train.lr"]),
    ("synth --seed -1", lambda t, w, b: ["synth", "--out", t / "w", "--seed", "-1"], 2, ["--seed"]),
]


def run(argv, capsys) -> CliResult:
    """``run_cli``, plus argparse's own exit (a SystemExit with the code the console script exits with)."""
    try:
        return run_cli(argv, capsys)
    except SystemExit as exc:
        cap = capsys.readouterr()
        return CliResult(int(exc.code), cap.out, cap.err)


def _file(tmp_path: Path) -> Path:
    (tmp_path / "afile").write_text("mine")
    return tmp_path / "afile"


def _bpe(tmp_path: Path) -> Path:
    """A one-merge BPE vocabulary file: enough for the checks that run before any data is read."""
    p = tmp_path / "bpe.txt"
    p.write_text("#version: 0.2\nt h\n")
    return p


def _clip_tower(tmp_path: Path) -> Path:
    """A small random CLIP text tower saved in OpenAI's layout (the names ``model.text.weights`` reads)."""
    from locvtp.model.clip_text import ClipTextArch, ClipTextEncoder

    arch = ClipTextArch(width=64, layers=1, context_length=12, vocab_size=40, out_dim=16)
    p = tmp_path / "cut.pt"
    torch.save(ClipTextEncoder(arch, "quick_gelu").state_dict(), p)
    return p


def _yaml(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    return p


def _row_id(row) -> str:
    return row.values[0] if hasattr(row, "values") else row[0]


@pytest.mark.parametrize("name, argv, code, needles", MISTAKES, ids=[_row_id(r) for r in MISTAKES])
def test_user_mistake_is_one_line(name, argv, code, needles, tmp_path, tiny_world, broken_world, capsys,
                                  monkeypatch):
    monkeypatch.delenv("LOCVTP_DEBUG", raising=False)
    res = run(argv(tmp_path, tiny_world, broken_world), capsys)
    assert_one_line_error(res, code, *needles)
    if name.startswith(("demo", "ablate", "synth")):
        assert not any((tmp_path / d).exists() for d in ("d", "a", "w"))  # refused before anything was written


def test_diverging_loss_is_one_line(tmp_path, tiny_world, capsys):
    """A learning rate that blows the loss up stops with one line naming the step and the cure (was a
    FloatingPointError traceback)."""
    res = run_cli(pretrain_args(tmp_path, tiny_world, "train.lr=1e30", "train.warmup_steps=0", "objective.ramp_start=0",
                                "train.max_steps=20"), capsys)
    line = assert_one_line_error(res, 1, "non-finite loss", "train.lr")
    assert "at step" in line


# ------------------------------------------------------------------------------------------------ features
def _write_extraction(out: Path, layout: str, videos: dict[str, np.ndarray], stride: float, clip: float) -> None:
    """The layout `locvtp extract` writes (locvtp.featurestore): meta.json with the run settings, one file per video
    under its safe name, the id in _info/ (npy-dir) or in the npz."""
    from locvtp.featurestore.reader import safe_name

    out.mkdir(parents=True)
    (out / "meta.json").write_text(json.dumps({"layout": layout, "clip_seconds": clip, "stride_seconds": stride}))
    if layout == "npy-dir":
        (out / "_info").mkdir()
    for vid, feats in videos.items():
        n = len(feats)
        windows = np.stack([np.arange(n) * stride, np.arange(n) * stride + clip], 1)
        name = safe_name(vid)
        if layout == "npy-dir":
            np.save(out / f"{name}.npy", feats)
            (out / "_info" / f"{name}.json").write_text(json.dumps(
                {"video_id": vid, "fps": 10.0, "duration": n * stride + clip - stride, "windows": windows.tolist()}))
        else:
            np.savez(out / f"{name}.npz", features=feats, windows=windows, fps=np.array(10.0),
                     duration=np.array(n * stride + clip - stride), video_id=np.array(vid))


def _timed_features(n: int, stride: float, clip: float, dim: int = 4) -> np.ndarray:
    """Row k = the centre time of the window it covers, in every column: a pooled clip then says which rows
    (which seconds of the video) it was made of."""
    centres = np.arange(n) * stride + 0.5 * clip
    return np.repeat(centres[:, None], dim, axis=1).astype(np.float32)


@pytest.mark.parametrize("layout", ["npy-dir", "npz-dir"])
def test_features_extraction_stride_and_hashed_ids(tmp_path, layout):
    """Issue #18 case 6: a 0.5 s-stride extraction was read as 1 s (captions misaligned) and an id with a space or
    an accent (stored under a hashed name) was never found. Both are now read from the extraction itself."""
    from locvtp.training.records import CaptionItem
    from locvtp.training.sources import FeatureSource
    from locvtp.training.dataset import PretrainDataset

    stride, clip = 0.5, 1.0
    ids = ["plain_video", "vidéo avec espaces"]
    _write_extraction(tmp_path / "feats", layout, {v: _timed_features(40, stride, clip) for v in ids}, stride, clip)
    source = FeatureSource(tmp_path / "feats", clip_seconds=1.0, stride=None, video_ids=[*ids, "absent"])
    assert set(source.lengths) == set(ids) and source.stride == stride and source.clip_seconds == clip
    assert source.durations[ids[1]] == pytest.approx(40 * stride + clip - stride)  # 20.5 s, not 40 s
    items = [CaptionItem(v, "a shape moves", 10.0, 11.0, f"caption.json: key {v!r}") for v in ids]
    ds = PretrainDataset(items, source, num_clips=4, clip_seconds=1.0, jitter_seconds=0.0, train=False)
    for i in range(len(items)):
        s = ds.load(i)
        # narration centre 10.5 s -> clips [8.5, 9.5), ..., [11.5, 12.5); rows whose centre lies in a clip are
        # the 0.5 s-stride rows at centres a and a + 0.5: their mean is a + 0.25
        np.testing.assert_allclose(s["windows"][:, 0], [8.5, 9.5, 10.5, 11.5])
        np.testing.assert_allclose(s["clips"][:, 0], [8.75, 9.75, 10.75, 11.75], atol=1e-5)
    # the same ids found when the whole directory is scanned (no id list)
    assert set(FeatureSource(tmp_path / "feats", 1.0).lengths) == set(ids)


def test_feature_stride_from_meta_wins_over_config(tmp_path):
    """Like an HDF5 file's stride_seconds attribute, the extraction's meta.json wins over data.feature_stride."""
    from locvtp.training.sources import FeatureSource

    _write_extraction(tmp_path / "f", "npy-dir", {"v": _timed_features(10, 0.5, 1.0)}, 0.5, 1.0)
    assert FeatureSource(tmp_path / "f", 1.0, stride=2.0, video_ids=["v"]).stride == 0.5


def test_non_finite_features_are_bad_samples(tmp_path):
    """A video whose features hold NaN/inf: its samples are reported (file and video named) and replaced, never
    trained on; with --strict the first one stops the run."""
    from locvtp.training.records import BadSampleError, CaptionItem
    from locvtp.training.sources import FeatureSource
    from locvtp.training.dataset import PretrainDataset

    good, bad = _timed_features(40, 0.5, 1.0), _timed_features(40, 0.5, 1.0)
    bad[20, 1] = np.nan
    _write_extraction(tmp_path / "feats", "npy-dir", {"good": good, "bad vidéo": bad}, 0.5, 1.0)
    source = FeatureSource(tmp_path / "feats", 1.0, video_ids=["bad vidéo", "good"])
    items = [CaptionItem("bad vidéo", "a shape moves", 10.0, 11.0, "caption.json: key 'bad vidéo'"),
             CaptionItem("good", "a shape moves", 10.0, 11.0, "caption.json: key 'good'")]
    ds = PretrainDataset(items, source, 4, 1.0, train=False)
    sample = ds[(0, 0)]
    assert sample["vid"] == "good" and np.isfinite(sample["clips"]).all()
    [rec] = sample["bad"]
    assert rec.kind == "sample" and rec.vid == "bad vidéo" and "NaN" in rec.reason
    assert "_id-" in rec.reason and ".npy" in rec.reason  # the file
    strict = PretrainDataset(items, source, 4, 1.0, train=False, strict=True)
    with pytest.raises(BadSampleError, match="bad vidéo"):
        strict[(0, 0)]


def test_pretrain_on_an_npy_dir_extraction_end_to_end(tmp_path):
    """`data.kind=features` on an npy-dir with hashed ids trains (every sample found: nothing reported)."""
    from locvtp.config import load_config
    from locvtp.config import find_config
    from locvtp.training.loop import pretrain

    rng = np.random.default_rng(0)
    ids = [f"vidéo {i}" for i in range(8)]
    _write_extraction(tmp_path / "feats", "npy-dir",
                      {v: rng.normal(size=(30, 16)).astype(np.float32) for v in ids}, 0.5, 1.0)
    cap = {v: {"start": [2.0, 6.0], "end": [4.0, 8.0], "text": ["a red circle moves", "a blue square lifts"]}
           for v in ids}
    (tmp_path / "caption.json").write_text(json.dumps(cap))
    cfg = load_config(find_config("pretrain_synthetic"), [
        f"data.root={tmp_path}", *TINY, "data.kind=features", "data.features=feats", "data.caption_file=caption.json",
        "model.video.name=features", "model.video.in_dim=16", "model.video.hidden=32", "train.batch_size=8",
        "objective.ramp_start=0"])
    final = pretrain(cfg, tmp_path / "run", progress=False)
    assert (final / "model.safetensors").is_file()
    assert (tmp_path / "run" / "bad_samples.jsonl").read_text() == ""
    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["skipped"] == 0 and math.isfinite(last["loss/total"])


# ------------------------------------------------------------------------------------------------ backbone
def test_failed_backbone_write_leaves_nothing(tiny_world, tmp_path, monkeypatch):
    """The weights are written to a hidden temporary and moved into place: a write that fails half-way (disk
    full) leaves neither a partial file under the name nor the temporary."""
    import safetensors.torch as st

    from locvtp.commands.backbone import build_parser
    from locvtp.backbone import train_backbone

    def half_then_fail(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\0" * 100)
        raise OSError(28, "No space left on device", filename)

    monkeypatch.setattr(st, "save_file", half_then_fail)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    args = build_parser().parse_args(["--data", str(tiny_world), "--out", str(out_dir / "bb.safetensors"),
                                      "--width", "8", "--steps", "1", "--batch-size", "4", "--quiet"])
    with pytest.raises(OSError, match="(?i)no space left"):
        train_backbone(args, progress=False)
    assert list(out_dir.iterdir()) == []
