"""Issue #18 for `locvtp ground` and `locvtp evaluate`: every user mistake is one line naming the file or
argument with the right exit code, and a result that cannot mean what it seems says so.

Each row of the tables is one case of the issue: ``(id, argv builder, exit code, needles)``; the builder gets the
module's fixtures (``W``: paths) and returns the argv after ``locvtp``.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest
import torch

from cli_helpers import assert_one_line_error, run_cli
from inference_helpers import make_checkpoint

QUERY = "a person"


def _write_one_frame_mp4(path: Path) -> Path:
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
        fr = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 90, np.uint8), format="rgb24")
        for pkt in [*s.encode(fr), *s.encode()]:
            c.mux(pkt)
    return path


def _write_png(path: Path) -> Path:
    tmp = path.with_name("src.png")
    with av.open(str(tmp), "w", format="image2") as c:
        s = c.add_stream("png")
        s.width, s.height, s.pix_fmt = 32, 32, "rgb24"
        fr = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
        for pkt in [*s.encode(fr), *s.encode()]:
            c.mux(pkt)
    tmp.replace(path)
    return path


def _rewrite_h5(src: Path, dst: Path, vid: str, fn) -> Path:
    """A copy of feature file ``src`` whose ``vid`` rows are replaced by ``fn(rows)`` (attributes kept)."""
    import h5py

    shutil.copy(src, dst)
    with h5py.File(dst, "a") as f:
        attrs = dict(f[vid].attrs)
        rows = fn(f[vid][()])
        del f[vid]
        d = f.create_dataset(vid, data=rows)
        for k, v in attrs.items():
            d.attrs[k] = v
    return dst


@pytest.fixture(scope="module")
def W(tiny_world, tiny_checkpoint, tmp_path_factory):
    """Paths shared by every row: a checkpoint, one without tokenizer.json, a features checkpoint, extracted
    features (good, with an inf, too wide), a PNG named .mp4, a 1-frame video."""
    from locvtp.cli import main

    root = tmp_path_factory.mktemp("mistakes_ge")
    ckpt = tiny_checkpoint
    notok = root / "notok"
    shutil.copytree(ckpt, notok)
    (notok / "tokenizer.json").unlink()
    fckpt = make_checkpoint(tiny_world, root / "fckpt", video="features", in_dim=16)
    anet = json.loads((tiny_world / "grounding" / "activitynet" / "val_1.json").read_text())
    gvid = sorted(anet)[0]  # a grounding test video
    feats = root / "all.h5"
    assert main(["extract", "--checkpoint", str(ckpt), "--videos", str(tiny_world / "videos"), "--out", str(feats),
                 "--threads", "1", "--no-progress"]) == 0
    nan = _rewrite_h5(feats, root / "nan.h5", gvid, lambda a: np.where(np.arange(a.size).reshape(a.shape) == 7,
                                                                       np.inf, a).astype(np.float32))
    one_video_h5 = root / "one_video.h5"  # features of a single, non-grounding video
    lst = root / "one.txt"
    lst.write_text(str(sorted((tiny_world / "videos").glob("coin_*.mp4"))[0]) + "\n")
    assert main(["extract", "--checkpoint", str(ckpt), "--videos", str(lst), "--out", str(one_video_h5),
                 "--threads", "1", "--no-progress"]) == 0
    wide = _rewrite_h5(feats, root / "wide.h5", gvid, lambda a: np.concatenate([a, a], axis=1))
    novideos = root / "novideos"
    novideos.mkdir()
    (root / "a_file.txt").write_text("not a directory\n")
    foreign_out = root / "foreign_out"  # a user's directory with their own metrics.json
    foreign_out.mkdir()
    (foreign_out / "metrics.json").write_text('{"accuracy": 0.93}\n')
    loop = root / "LOOP"  # a link to itself
    loop.symlink_to(loop)
    othertok = root / "othertok"  # the tokenizer of another run (a different vocabulary size)
    shutil.copytree(ckpt, othertok)
    from locvtp.data.tokenizer import train_tokenizer

    train_tokenizer([f"w{i} x{i % 7} y{i % 13}" for i in range(400)], vocab_size=600).save(othertok)
    return SimpleNamespace(
        root=root, world=tiny_world, ckpt=ckpt, notok=notok, fckpt=fckpt, feats=feats, nan=nan, wide=wide,
        gvid=gvid, n_queries_gvid=len(anet[gvid]["sentences"]), video=tiny_world / "videos" / f"{gvid}.mp4",
        png=_write_png(root / "picture.mp4"), one=_write_one_frame_mp4(root / "one_frame.mp4"),
        novideos=novideos, a_file=root / "a_file.txt", othertok=othertok, one_video_h5=one_video_h5,
        foreign_out=foreign_out, black=_write_black_mp4(root / "black.mp4"), loop=loop,
    )


def _write_black_mp4(path: Path) -> Path:
    """A 10-s all-black video of the synthetic world's size (issue 26: its clip scores differ in their last bits)."""
    from locvtp.world.plan import FPS, FRAME_SIZE
    from locvtp.world.render import write_mp4

    write_mp4(path, np.zeros((10 * FPS, FRAME_SIZE, FRAME_SIZE, 3), np.uint8))
    return path


def _ground(W, *extra, video=True):
    return ["ground", "--checkpoint", W.ckpt, *([W.video] if video else []), QUERY, *extra]


def _feat(W, path, vid=None):
    return ["ground", "--checkpoint", W.ckpt, "--features", path, "--video-id", vid or W.gvid, QUERY]


def _evaluate(W, *extra, ckpt=None):
    return ["evaluate", "grounding", "--checkpoint", ckpt or W.ckpt, "--data", W.world, "--quiet", "--threads", "1",
            "--set", "grounding.head=false", *extra]


NO_CUDA = not torch.cuda.is_available()

# (id, argv builder, exit code, needles)
GROUND_MISTAKES = [
    ("nms-above-1", lambda W: _ground(W, "--nms", "5"), 2, ["--nms", "5"]),
    ("nms-negative", lambda W: _ground(W, "--nms", "-0.1"), 2, ["--nms"]),
    ("max-seconds-negative", lambda W: _ground(W, "--max-seconds", "-1"), 2, ["--max-seconds", "-1"]),
    ("clip-seconds-zero", lambda W: _ground(W, "--clip-seconds", "0"), 2, ["--clip-seconds", "0"]),
    ("stride-seconds-negative", lambda W: _ground(W, "--stride-seconds", "-1"), 2, ["--stride-seconds"]),
    ("top-k-zero", lambda W: _ground(W, "--top-k", "0"), 2, ["--top-k"]),
    ("alpha-above-1", lambda W: _ground(W, "--alpha", "3"), 2, ["--alpha"]),
    ("alpha-nan", lambda W: _ground(W, "--alpha", "nan"), 2, ["--alpha"]),
    ("window-score-unknown", lambda W: _ground(W, "--window-score", "foo"), 2, ["--window-score", "foo"]),
    ("words-unknown", lambda W: _ground(W, "--words", "nouns"), 2, ["--words", "nouns"]),
    pytest.param("device-cuda-without-cuda", lambda W: _ground(W, "--device", "cuda"), 2, ["--device", "CUDA"],
                 marks=pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")),
    ("query-not-utf8", lambda W: ["ground", "--checkpoint", W.ckpt, W.video,
                                  b"a \xff person".decode("utf-8", "surrogateescape")], 2, ["query", "not valid text"]),
    ("empty-query", lambda W: ["ground", "--checkpoint", W.ckpt, W.video, "  "], 2, ["query"]),
    ("plot-into-a-directory", lambda W: _ground(W, "--plot", W.root), 2, ["--plot", lambda W: str(W.root), "directory"]),
    ("plot-into-a-missing-directory", lambda W: _ground(W, "--plot", W.root / "nope" / "p.png"), 2,
     ["--plot", lambda W: str(W.root / "nope")]),
    ("plot-unknown-extension", lambda W: _ground(W, "--plot", W.root / "p.foo"), 2, ["--plot", "p.foo"]),
    ("checkpoint-without-tokenizer", lambda W: ["ground", "--checkpoint", W.notok, W.video, QUERY], 1,
     [lambda W: str(W.notok), "tokenizer.json"]),
    ("tokenizer-of-another-run", lambda W: ["ground", "--checkpoint", W.othertok, W.video, QUERY], 1,
     [lambda W: str(W.othertok / "tokenizer.json"), "model.text.vocab_size"]),
    ("png-renamed-mp4", lambda W: ["ground", "--checkpoint", W.ckpt, W.png, QUERY], 1,
     [lambda W: str(W.png), "still image"]),
    ("missing-video", lambda W: ["ground", "--checkpoint", W.ckpt, W.root / "nope.mp4", QUERY], 1, ["nope.mp4"]),
    ("features-with-inf", lambda W: _feat(W, W.nan), 1, [lambda W: str(W.nan), lambda W: W.gvid, "non-finite"]),
    ("features-of-the-wrong-width", lambda W: _feat(W, W.wide), 1, [lambda W: str(W.wide), "128", "64"]),
    ("features-without-the-video-id", lambda W: _feat(W, W.feats, "no_such_video"), 2,
     ["--video-id", "no_such_video", lambda W: str(W.feats)]),
    ("features-with-clip-seconds", lambda W: [*_feat(W, W.feats), "--clip-seconds", "3"], 2,
     ["--clip-seconds", "--features"]),
    ("features-and-a-video", lambda W:
     ["ground", "--checkpoint", W.ckpt, W.video, QUERY, "--features", W.feats, "--video-id", W.gvid], 2,
     ["VIDEO", "--features"]),
    ("features-file-missing", lambda W: _feat(W, W.root / "nope.h5"), 1, ["nope.h5"]),
    ("features-checkpoint-without-features", lambda W: ["ground", "--checkpoint", W.fckpt, W.video, QUERY], 2,
     ["--checkpoint", "--features"]),
    # issue 26: the argument that looks misplaced is named; OS errors in words
    ("query-and-video-swapped", lambda W: ["ground", "--checkpoint", W.ckpt, QUERY, W.video], 2,
     ["VIDEO 'a person' is not a file", "looks like a video", "the order is VIDEO then QUERY"]),
    ("query-forgotten", lambda W: ["ground", "--checkpoint", W.ckpt, W.video], 2,
     ["argument QUERY is missing", lambda W: f"{W.video} is the VIDEO"]),
    ("query-forgotten-option-after", lambda W: ["ground", "--checkpoint", W.ckpt, W.video, "--top-k", "1"], 2,
     ["argument QUERY is missing"]),
    ("query-not-quoted", lambda W: ["ground", "--checkpoint", W.ckpt, W.video, "a", "red", "ball"], 2,
     ["unrecognized arguments: red ball", 'goes in quotes ("a red ball")']),
    ("unknown-option", lambda W: _ground(W, "--topk", "3"), 2, ["unrecognized arguments: --topk 3"]),
    ("features-symlink-loop", lambda W: _feat(W, W.loop), 1, ["LOOP", "loops back to itself"]),
    ("checkpoint-symlink-loop", lambda W: ["ground", "--checkpoint", W.loop, W.video, QUERY], 1,
     ["LOOP", "loops back to itself"]),
]

EVALUATE_MISTAKES = [
    ("threads-zero", lambda W: _evaluate(W, "--threads", "0"), 2, ["--threads"]),
    ("seed-negative", lambda W: _evaluate(W, "--seed", "-1"), 2, ["--seed"]),
    pytest.param("device-cuda-without-cuda", lambda W: _evaluate(W, "--device", "cuda"), 2, ["--device", "CUDA"],
                 marks=pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")),
    ("head-epochs-negative", lambda W: _evaluate(W, "--set", "grounding.head_cfg.epochs=-1"), 2,
     ["grounding.head_cfg.epochs", "-1"]),
    ("head-num-clips-zero", lambda W: _evaluate(W, "--set", "grounding.head_cfg.num_clips=0"), 2,
     ["grounding.head_cfg.num_clips"]),
    ("head-variant-unknown", lambda W: _evaluate(W, "--set", "grounding.head_variant=glove"), 2,
     ["grounding.head_variant", "glove", "tan", "checkpoint_text"]),
    ("head-flag-unknown", lambda W: _evaluate(W, "--head", "glove"), 2, ["--head", "glove"]),
    ("head-seeds-zero", lambda W: _evaluate(W, "--head-seeds", "0"), 2, ["--head-seeds"]),
    ("tan-val-fraction-one", lambda W: _evaluate(W, "--set", "grounding.tan_cfg.val_fraction=1"), 2,
     ["grounding.tan_cfg.val_fraction"]),
    ("max-candidates-zero", lambda W: _evaluate(W, "--set", "grounding.max_candidates=0"), 2,
     ["grounding.max_candidates"]),
    ("alpha-above-1", lambda W: _evaluate(W, "--set", "grounding.alpha=5"), 2, ["grounding.alpha"]),
    ("words-unknown", lambda W: _evaluate(W, "--set", "grounding.words=nouns"), 2,
     ["grounding.words", "nouns", "both"]),
    ("tcn-kernel-even", lambda W: ["evaluate", "segmentation", "--checkpoint", W.ckpt, "--data", W.world, "--quiet",
                                   "--seg-head", "tcn", "--set", "segmentation.probe.kernel=2"], 2,
     ["segmentation.probe.kernel"]),
    ("config-not-options", lambda W: _evaluate(W, "--config", W.world / "manifest.json"), 2, ["manifest.json"]),
    ("checkpoint-without-tokenizer", lambda W: _evaluate(W, ckpt=W.notok), 1,
     [lambda W: str(W.notok), "tokenizer.json"]),
    ("features-of-the-wrong-width", lambda W: _evaluate(W, "--features", W.feats, ckpt=W.fckpt), 1,
     [lambda W: str(W.feats), "64", "16"]),
    ("out-is-a-file", lambda W: _evaluate(W, "--out", W.a_file), 2, ["--out", lambda W: str(W.a_file)]),
    ("out-holds-a-foreign-metrics-json", lambda W: _evaluate(W, "--out", W.foreign_out), 2,
     [lambda W: str(W.foreign_out / "metrics.json"), "not written by"]),
    ("no-video-can-be-embedded", lambda W: _evaluate(W, "--video-dir", W.novideos), 1, ["none of the"]),
    ("data-symlink-loop", lambda W: ["evaluate", "grounding", "--checkpoint", W.ckpt, "--data", W.loop, "--quiet"], 1,
     ["data directory", "LOOP", "loops back to itself"]),
    ("features-symlink-loop", lambda W: _evaluate(W, "--features", W.loop), 1, ["LOOP", "loops back to itself"]),
    ("features-missing-a-video-strict", lambda W: _evaluate(W, "--features", W.one_video_h5, "--strict"), 1,
     [lambda W: str(W.one_video_h5), lambda W: W.gvid]),
    ("features-with-inf-strict", lambda W: _evaluate(W, "--features", W.nan, "--video-dir", W.novideos,
                                                     "--strict"), 1, [lambda W: str(W.nan), lambda W: W.gvid]),
]


def _needles(W, needles):
    return [n(W) if callable(n) else n for n in needles]


def _rows(rows, prefix=""):
    """Table rows as pytest params named by their id (a ``pytest.param`` row keeps its marks)."""
    out = []
    for r in rows:
        values, marks = (r.values, r.marks) if hasattr(r, "values") else (r, ())
        out.append(pytest.param(*values, id=prefix + values[0], marks=marks))
    return out


@pytest.mark.parametrize("case,argv,code,needles", _rows(GROUND_MISTAKES, "ground-") +
                         _rows(EVALUATE_MISTAKES, "evaluate-"))
def test_user_mistake_is_one_line(W, capsys, case, argv, code, needles):
    res = run_cli(argv(W), capsys)
    assert_one_line_error(res, code, *_needles(W, needles))
    assert res.out == "", res.out  # no half result on stdout


def test_foreign_metrics_json_survives(W, capsys):
    run_cli(_evaluate(W, "--out", W.foreign_out), capsys)
    assert (W.foreign_out / "metrics.json").read_text() == '{"accuracy": 0.93}\n'
    assert sorted(p.name for p in W.foreign_out.iterdir()) == ["metrics.json"]


def test_evaluate_twice_into_the_same_out_replaces_its_own_files(W, capsys, tmp_path):
    for _ in range(2):
        res = run_cli(_evaluate(W, "--features", W.feats, "--out", tmp_path), capsys)
        assert res.code == 0, res.err
    names = sorted(p.name for p in tmp_path.iterdir())
    # (+ the head's predictions when the 2D-TAN head ran: `locvtp score` reads them all)
    assert [n for n in names if n != "head_grounding_predictions.jsonl"] == [
        ".locvtp-files.json", "grounding.json", "grounding_content_predictions.jsonl",
        "grounding_predictions.jsonl", "metrics.json"]


def test_plot_mistakes_leave_nothing_behind(W, capsys):
    before = sorted(p.name for p in W.root.iterdir())
    run_cli(_ground(W, "--plot", W.root), capsys)
    run_cli(_ground(W, "--plot", W.root / "p.foo"), capsys)
    assert sorted(p.name for p in W.root.iterdir()) == before
    assert not (W.root / "nope").exists()  # a missing --plot directory is not created


# --------------------------------------------------------------------------------------- results with a warning
def _ground_json(W, capsys, argv):
    res = run_cli(argv, capsys)
    assert res.code == 0 and "Traceback" not in res.err, res.err
    out = json.loads(res.out)
    warned = [ln for ln in res.err_lines if "locvtp ground: warning:" in ln]
    assert len(warned) == len(out["warnings"]), res.err  # one stderr line per JSON warning
    return out, res


def test_ground_without_warnings_on_an_ordinary_query(W, capsys):
    out, res = _ground_json(W, capsys, _feat(W, W.feats))
    assert out["warnings"] == [] and "warning" not in res.err and len(out["pred_relevant_windows"]) == 5


@pytest.mark.parametrize("case,argv,needles", [
    ("unknown-words", lambda W: ["ground", "--checkpoint", W.ckpt, "--features", W.feats, "--video-id", W.gvid,
                                 "zzqx qqqy"], ["none of the words", "[UNK]"]),
    ("10000-word-query", lambda W: ["ground", "--checkpoint", W.ckpt, "--features", W.feats, "--video-id", W.gvid,
                                    " ".join(["circle"] * 10_000)], ["word pieces", "max_words=", "ignored"]),
    ("one-frame-video", lambda W: ["ground", "--checkpoint", W.ckpt, W.one, QUERY], ["single clip", "whole video"]),
    ("clip-longer-than-video", lambda W: _ground(W, "--clip-seconds", "1000"), ["single clip", "--clip-seconds"]),
    ("fewer-windows-than-asked", lambda W: _ground(W, "--clip-seconds", "8", "--top-k", "20"),
     ["window(s) of the 20 asked"]),
    ("stride-longer-than-clip", lambda W: _ground(W, "--stride-seconds", "5", "--clip-seconds", "1"),
     ["--stride-seconds", "unseen"]),
    ("max-seconds-below-one-clip", lambda W: _ground(W, "--max-seconds", "0.25"), ["--max-seconds", "single clip"]),
    ("content-words-of-a-stop-word-query", lambda W: ["ground", "--checkpoint", W.ckpt, "--features", W.feats,
                                                      "--video-id", W.gvid, "the", "--words", "content"],
     ["words=content", "no content word", "as with words=all"]),
    ("all-black-video", lambda W: ["ground", "--checkpoint", W.ckpt, W.black, QUERY],
     ["all 10 clips score the same", "every window scores 0", "tie order"]),
])
def test_ground_result_that_cannot_mean_much_is_flagged(W, capsys, case, argv, needles):
    out, _ = _ground_json(W, capsys, argv(W))
    assert out["warnings"], out
    text = " ".join(out["warnings"])
    for n in needles:
        assert n in text, (n, text)


def test_evaluate_skips_and_names_a_video_with_nan_features(W, capsys, tmp_path):
    """With this checkpoint's features (no decoding), one grounding video holding an inf: it is named on stderr,
    left out (the figures are over the other videos' queries), counted, and listed in the JSON."""
    res = run_cli(_evaluate(W, "--features", W.nan, "--video-dir", W.novideos, "--out", tmp_path), capsys)
    assert res.code == 0, res.err
    warned = [ln for ln in res.err_lines if "warning" in ln]
    assert any(W.gvid in ln and "non-finite" in ln and str(W.nan) in ln for ln in warned), res.err
    assert any("leave out 1 of" in ln and W.gvid in ln for ln in warned), res.err
    info = json.loads((tmp_path / "grounding.json").read_text())["info"]
    assert W.gvid in info["failed_videos"] and W.gvid in info["missing_videos"]
    assert info["zero_shot_queries"] == info["test_queries"] - W.n_queries_gvid
    assert W.gvid in json.loads((tmp_path / "metrics.json").read_text())["failed_videos"]
    assert "grounding_R1@0.5" in res.out


def test_a_foreign_predictions_file_in_out_survives(W, capsys, tmp_path):
    (tmp_path / "grounding_predictions.jsonl").write_text("my own notes\n")
    res = run_cli(_evaluate(W, "--features", W.feats, "--out", tmp_path), capsys)
    assert res.code == 2 and "grounding_predictions.jsonl exists and was not written by locvtp" in res.err
    assert (tmp_path / "grounding_predictions.jsonl").read_text() == "my own notes\n"


# --------------------------------------------------------------------------------------- argument order, --plot
@pytest.mark.parametrize("order", [
    lambda W: ["ground", "--checkpoint", W.ckpt, W.video, "--top-k", "1", "the red circle moves left"],
    lambda W: ["ground", W.video, "--top-k", "1", "the red circle moves left", "--checkpoint", W.ckpt],
    lambda W: ["ground", "--top-k", "1", W.video, "--checkpoint", W.ckpt, "the red circle moves left", "--debug"],
])
def test_ground_accepts_options_anywhere(W, capsys, order):
    """`VIDEO --top-k 1 QUERY` was "unrecognized arguments: the red circle moves left"; `--debug` after the
    command was unrecognized too."""
    out, _ = _ground_json(W, capsys, order(W))
    assert out["query"] == "the red circle moves left" and len(out["pred_relevant_windows"]) == 1 and out["video"] == str(W.video)


def _read_only_savefig(monkeypatch):
    """matplotlib's write refused as a read-only file system refuses it (tests run as root: chmod stops nothing)."""
    import matplotlib.figure

    def refuse(self, fname, *a, **k):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(fname))

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", refuse)


def test_ground_plot_refused_still_prints_the_result(W, capsys, monkeypatch, tmp_path):
    """The grounding was computed: its JSON is printed, then one line names --plot (not the hidden temporary),
    exit 1, and nothing is left in the directory."""
    _read_only_savefig(monkeypatch)
    plot = tmp_path / "g.png"
    res = run_cli([*_feat(W, W.feats), "--plot", plot], capsys)
    line = assert_one_line_error(res, 1, f"--plot {plot}: cannot write: read-only file system (EROFS)",
                                 "printed on stdout")
    assert "tmp-" not in line
    out = json.loads(res.out)
    assert len(out["pred_relevant_windows"]) == 5 and "plot" not in out and out["query"] == QUERY
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.path.isdir("/sys/kernel") is False, reason="no sysfs")
def test_ground_plot_into_sysfs_is_permission_denied(W, capsys):
    """A real refusal (sysfs creates no files, even for root): the same contract."""
    res = run_cli([*_feat(W, W.feats), "--plot", "/sys/locvtp-g.png"], capsys)
    if res.code == 0:
        os.unlink("/sys/locvtp-g.png")
        pytest.skip("/sys accepted a file here")
    assert_one_line_error(res, 1, "--plot /sys/locvtp-g.png: cannot write: permission denied (EACCES)")
    assert len(json.loads(res.out)["pred_relevant_windows"]) == 5
