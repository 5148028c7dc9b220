"""`locvtp.predictor.LocVTPPredictor` (issue #16): it reproduces the commands' outputs (ground, extract, search),
refuses preprocessing that contradicts the checkpoint (one test per case), and applies one policy to features
made by another checkpoint."""
from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from cli_helpers import assert_one_line_error, run_cli
from inference_helpers import make_checkpoint

QUERY = "the red circle moves left"


@pytest.fixture(scope="module")
def P(tiny_world, tiny_checkpoint, tmp_path_factory):
    """A predictor on the session checkpoint, its extraction of the grounding videos (CLI), another checkpoint,
    and a features-encoder checkpoint."""
    from locvtp.cli import main
    from locvtp.predictor import LocVTPPredictor

    root = tmp_path_factory.mktemp("predictor")
    videos = sorted((tiny_world / "videos").glob("grd_*.mp4"))[:3]
    lst = root / "list.txt"
    lst.write_text("".join(f"{v}\n" for v in videos))
    feats = root / "f.h5"
    assert main(["extract", "--checkpoint", str(tiny_checkpoint), "--videos", str(lst), "--out", str(feats),
                 "--threads", "1", "--no-progress"]) == 0
    other = make_checkpoint(tiny_world, root / "other", seed=1)
    fckpt = make_checkpoint(tiny_world, root / "fckpt", video="features", in_dim=16)
    pred = LocVTPPredictor.from_checkpoint(tiny_checkpoint, threads=1)
    return dict(root=root, ckpt=tiny_checkpoint, videos=videos, list=lst, feats=feats, other=other, fckpt=fckpt,
                pred=pred, world=tiny_world)


def _ground_cli(capsys, *argv):
    res = run_cli(["ground", *map(str, argv)], capsys)
    assert res.code == 0, res.err
    out = json.loads(res.out)
    out.pop("video")
    return out, res


# ------------------------------------------------------------------------------------ same outputs as the commands
@pytest.mark.parametrize("extra,kw", [
    ((), {}),
    (("--stride-seconds", "0.5", "--clip-seconds", "2", "--max-seconds", "1", "--top-k", "3", "--nms", "0.3",
      "--window-score", "tstat", "--alpha", "0.7"),
     dict(stride_seconds=0.5, clip_seconds=2.0, max_seconds=1.0, top_k=3, nms=0.3, window_score="tstat",
          alpha=0.7)),
])
def test_ground_video_file_equals_the_command(P, capsys, extra, kw):
    video = P["videos"][0]
    cli, _ = _ground_cli(capsys, "--checkpoint", P["ckpt"], video, QUERY, "--curve", *extra)
    cut = {k: kw.pop(k) for k in ("clip_seconds", "stride_seconds") if k in kw}
    res = P["pred"].ground(P["pred"].encode_file(video, **cut), QUERY, **kw)
    assert res.to_json(curve=True) == cli and cli["vid"] == video.stem


def test_ground_features_equals_the_command(P, capsys):
    vid = P["videos"][1].stem
    cli, _ = _ground_cli(capsys, "--checkpoint", P["ckpt"], "--features", P["feats"], "--video-id", vid, QUERY,
                         "--curve")
    emb = P["pred"].encode_stored(P["feats"], vid)
    res = P["pred"].ground(emb, QUERY)
    assert res.to_json(curve=True) == cli and res.warnings == [] and cli["vid"] == vid
    # the same record as read from the store (not yet checked): embedded by encode_features first, same answer
    from locvtp.featurestore import read_features

    raw = read_features(P["feats"], vid)
    assert P["pred"].ground(raw, QUERY).to_json(curve=True) == cli


def test_ground_takes_embeddings_only(P):
    from locvtp.predictor import PredictorError

    with pytest.raises(PredictorError, match="encode_file"):
        P["pred"].ground(P["videos"][0], QUERY)


def test_encode_video_equals_extract(P):
    """The clip embeddings of a video file, and the joint features read back from a file, equal `extract`'s."""
    pred = P["pred"]
    with h5py.File(P["feats"], "r") as f:
        for v in P["videos"]:
            emb = pred.encode_file(v)
            np.testing.assert_array_equal(emb.features, f[v.stem][()])
            np.testing.assert_array_equal(emb.windows, f[v.stem].attrs["windows"])
            back = pred.encode_stored(P["feats"], v.stem)
            np.testing.assert_array_equal(back.features, emb.features)
            assert back.duration == pytest.approx(emb.duration) and back.warnings == []


def test_encode_inputs_agree(P):
    """A file, its decoded clips and its decoded frames give the same embeddings (one preprocessing)."""
    from locvtp.data import video as V

    pred = P["pred"]
    path = P["videos"][0]
    ref = pred.encode_file(path)
    assert ref.video_id == path.stem and ref.embedding == "joint"
    dec = pred.decode_video(path)
    np.testing.assert_array_equal(pred.encode_clips(dec).features, ref.features)
    np.testing.assert_array_equal(pred.encode_clips(dec.clips, dec.windows).features, ref.features)
    frames, times, info = _decode_all(V, path)
    by_frames = pred.encode_frames(frames, times, info.duration, fps=info.fps)
    np.testing.assert_allclose(by_frames.features, ref.features, atol=1e-5)
    np.testing.assert_array_equal(by_frames.windows, ref.windows)


def _decode_all(V, path):
    frames, times = V.decode_frames(path)
    return frames, times, V.probe_video(path)


def test_search_equals_the_command(P, capsys):
    root = P["root"]
    assert run_cli(["index", "--features", P["feats"], "--out", root / "idx", "--no-progress"], capsys).code == 0
    queries = [QUERY, "a blue square grows", "zzqx"]
    res = run_cli(["search", "--index", root / "idx", "--checkpoint", P["ckpt"], "--top-k", "4", *queries], capsys)
    assert res.code == 0, res.err
    cli = [json.loads(ln) for ln in res.out.strip().splitlines()]
    got = P["pred"].search(root / "idx", queries, top_k=4)
    assert [r.to_json() for r in got.results] == cli and got.warnings == []


def test_encode_text_carries_the_query_warnings(P):
    from locvtp.inference import embed_texts, text_query_warnings

    pred = P["pred"]
    long = " ".join(["red circle"] * 40)
    t = pred.encode_text([QUERY, long])
    ref = embed_texts(pred.model, pred.tokenizer, [QUERY, long], max_words=pred.preprocessing.max_words)
    np.testing.assert_array_equal(t.sentence, ref.sentence)
    assert t.warnings[0] == [] and t.warnings[1] == text_query_warnings(pred.tokenizer, long, 24)
    assert t.warnings[1]


# ------------------------------------------------------------------------------------------------- preprocessing
def test_preprocessing_is_read_from_the_checkpoint_once(P):
    from omegaconf import OmegaConf

    from locvtp.predictor import Preprocessing

    p = P["pred"].preprocessing
    assert (p.clip_seconds, p.stride_seconds, p.frames_per_clip, p.frame_size, p.max_words) == (1.0, 1.0, 4, 32, 24)
    cfg = OmegaConf.create({"data": {"clip_seconds": 2.0, "frames_per_clip": 16, "frame_size": 112,
                                     "max_words": 32}})
    assert Preprocessing.from_config(cfg) == Preprocessing(2.0, 2.0, 16, 112, 32)
    assert Preprocessing.from_config(OmegaConf.create({"model": {}})) == Preprocessing()  # the fallbacks
    assert p.with_windows(2.0) == Preprocessing(2.0, 2.0, 4, 32, 24)  # another window cut is allowed
    assert p.with_windows(None, 0.5) == Preprocessing(1.0, 0.5, 4, 32, 24)


def test_other_frames_per_clip_is_refused(P):
    from locvtp.errors import UsageError

    with pytest.raises(UsageError, match=r"frames_per_clip = 16.*data\.frames_per_clip = 4"):
        P["pred"].encode_file(P["videos"][0], frames_per_clip=16)


def test_other_frame_size_is_refused(P):
    from locvtp.errors import UsageError

    with pytest.raises(UsageError, match=r"frame_size = 112.*data\.frame_size = 32"):
        P["pred"].resolve_preprocessing(frame_size=112)


def test_decoded_clips_of_another_shape_are_refused(P):
    from locvtp.errors import UsageError

    pred = P["pred"]
    dec = pred.decode_video(P["videos"][0])
    with pytest.raises(UsageError, match=r"frames_per_clip = 2 \(decoded clips\).*= 4"):
        pred.encode_clips(dec.clips[:, :2], dec.windows)
    with pytest.raises(UsageError, match=r"frame_size = 16x16 \(decoded clips\).*= 32"):
        pred.encode_clips(dec.clips[:, :, ::2, ::2], dec.windows)


@pytest.mark.parametrize("flag,value,key,want", [("--frames-per-clip", "8", "data.frames_per_clip", "4"),
                                                 ("--frame-size", "64", "data.frame_size", "32")])
def test_extract_refuses_other_frames_naming_both_values(P, capsys, tmp_path, flag, value, key, want):
    res = run_cli(["extract", "--checkpoint", P["ckpt"], "--videos", P["list"], "--out", tmp_path / "x.h5",
                   "--no-progress", flag, value], capsys)
    assert_one_line_error(res, 2, f"{flag} {value}", f"{key} = {want}")
    assert not (tmp_path / "x.h5").exists()
    # the checkpoint's own values are accepted
    res = run_cli(["extract", "--checkpoint", P["ckpt"], "--videos", P["list"], "--out", tmp_path / "y.h5",
                   "--no-progress", "--threads", "1", flag, want], capsys)
    assert res.code == 0, res.err


def test_input_features_of_another_width_are_refused(P):
    from locvtp.errors import UsageError
    from locvtp.predictor import LocVTPPredictor

    fp = LocVTPPredictor.from_checkpoint(P["fckpt"])
    assert fp.input_width == 16 and not fp.takes_pixels
    ok = fp.encode_features(np.ones((5, 16), np.float32))
    assert ok.features.shape == (5, fp.dim)
    with pytest.raises(UsageError, match=r"width 24.*width 16 \(model\.video\.in_dim\)"):
        fp.encode_features(np.ones((5, 24), np.float32))
    with pytest.raises(UsageError, match="pre-extracted features"):
        fp.encode_file(P["videos"][0])


def test_features_recorded_with_other_frames_are_refused(P, tmp_path):
    """This checkpoint's own features, but the extraction recorded another frame size (an older extract that
    allowed --frame-size): a UsageError naming both values, for ground and for evaluate's shortcut."""
    from locvtp.errors import UsageError

    bad = tmp_path / "f.h5"
    shutil.copy(P["feats"], bad)
    with h5py.File(bad, "a") as f:
        f.attrs["frame_size"] = 64
    with pytest.raises(UsageError, match=r"frame_size = 64 \(recorded by the extraction .*f\.h5\).*= 32"):
        P["pred"].encode_stored(bad, P["videos"][0].stem)


# ------------------------------------------------------------------------------------------------ feature policy
def test_feature_origin():
    from locvtp.featurestore.provenance import feature_origin

    assert feature_origin({"embedding": "joint", "checkpoint_sha256": "a"}, "a") == "own"
    assert feature_origin({"embedding": "joint", "checkpoint_sha256": "b"}, "a") == "foreign"
    assert feature_origin({"embedding": "joint"}, "a") == "unknown"
    assert feature_origin({}, "a") == "unknown"
    assert feature_origin({"embedding": "backbone", "checkpoint_sha256": "a"}, "a") == "backbone"


def test_provenance_policy_lives_in_the_feature_store():
    """The rule itself, without a model: own -> nothing to say; unknown -> a warning; foreign -> refused unless
    allowed (then a warning); backbone -> refused; recorded input settings compared with the model's."""
    from locvtp.errors import UsageError
    from locvtp.featurestore.provenance import ForeignFeaturesError, check_provenance, recorded_mismatches

    assert check_provenance({"embedding": "joint", "checkpoint_sha256": "a" * 64}, "f.h5", "a" * 64) == []
    (w,) = check_provenance({}, "f.h5", "a" * 64)
    assert w.startswith("f.h5 carries no checkpoint fingerprint")
    foreign = {"embedding": "joint", "checkpoint_sha256": "b" * 64}
    with pytest.raises(ForeignFeaturesError, match=r"bbbbbbbbbbbb….*aaaaaaaaaaaa….*pass --allow-x"):
        check_provenance(foreign, "f.h5", "a" * 64, allow_flag="--allow-x")
    (w,) = check_provenance(foreign, "f.h5", "a" * 64, allow_foreign=True)
    assert "embedding spaces differ" in w
    with pytest.raises(UsageError, match="backbone features"):
        check_provenance({"embedding": "backbone"}, "f.h5", "a" * 64)
    info = {"frames_per_clip": 4, "frame_size": 64}
    assert recorded_mismatches(info, {"frames_per_clip": 4, "frame_size": 32}) == [("frame_size", 64)]
    assert recorded_mismatches({}, {"frames_per_clip": 4, "frame_size": 32}) == []


def test_foreign_features_are_refused_unless_allowed(P, capsys):
    from locvtp.featurestore.provenance import ForeignFeaturesError
    from locvtp.predictor import LocVTPPredictor

    other = LocVTPPredictor.from_checkpoint(P["other"])
    vid = P["videos"][0].stem
    with pytest.raises(ForeignFeaturesError, match="embedding spaces differ.*allow_foreign_features=True"):
        other.encode_stored(P["feats"], vid)
    res = other.ground(other.encode_stored(P["feats"], vid, allow_foreign_features=True), QUERY)
    assert any("embedding spaces differ" in w for w in res.warnings)
    # the command: exit 1 naming both fingerprints; --allow-foreign-features: the result with the warning
    cli = run_cli(["ground", "--checkpoint", P["other"], "--features", P["feats"], "--video-id", vid, QUERY], capsys)
    assert_one_line_error(cli, 1, str(P["feats"]), other.sha256[:12], P["pred"].sha256[:12],
                          "--allow-foreign-features")
    out, _ = _ground_cli(capsys, "--checkpoint", P["other"], "--features", P["feats"], "--video-id", vid, QUERY,
                         "--allow-foreign-features")
    assert out["warnings"] == res.warnings and out["pred_relevant_windows"] == res.to_json()["pred_relevant_windows"]


def test_foreign_index_is_refused_unless_allowed(P, capsys):
    from locvtp.featurestore.provenance import ForeignFeaturesError
    from locvtp.predictor import LocVTPPredictor

    root = P["root"]
    if not (root / "idx").exists():
        assert run_cli(["index", "--features", P["feats"], "--out", root / "idx", "--no-progress"], capsys).code == 0
    other = LocVTPPredictor.from_checkpoint(P["other"])
    with pytest.raises(ForeignFeaturesError, match="embedding spaces differ"):
        other.search(root / "idx", QUERY)
    got = other.search(root / "idx", QUERY, allow_foreign_features=True)
    assert got.warnings and "embedding spaces differ" in got.warnings[0] and got.results[0].moments
    res = run_cli(["search", "--index", root / "idx", "--checkpoint", P["other"], QUERY], capsys)
    assert_one_line_error(res, 1, "embedding spaces differ", "--allow-foreign-features")
    # the flag has one name in ground, serve and search; search's former name still works
    for flag in ("--allow-foreign-features", "--allow-checkpoint-mismatch"):
        res = run_cli(["search", "--index", root / "idx", "--checkpoint", P["other"], flag, QUERY], capsys)
        assert res.code == 0, res.err
        assert "embedding spaces differ" in res.err and json.loads(res.out.splitlines()[0])["moments"]


def test_features_without_fingerprint_are_used_with_a_warning(P, tmp_path):
    vid = P["videos"][0].stem
    plain = tmp_path / "plain.h5"  # a foreign tool's file: the same rows, no run settings
    with h5py.File(P["feats"], "r") as src, h5py.File(plain, "w") as dst:
        dst[vid] = src[vid][()]
        dst[vid].attrs["windows"] = src[vid].attrs["windows"]
    res = P["pred"].ground(P["pred"].encode_stored(plain, vid), QUERY)
    assert res.warnings and "no checkpoint fingerprint" in res.warnings[0]
    ref = P["pred"].ground(P["pred"].encode_stored(P["feats"], vid), QUERY)
    np.testing.assert_array_equal(res.windows, ref.windows)


def test_backbone_features_are_refused(P, capsys, tmp_path):
    from locvtp.errors import UsageError

    bb = tmp_path / "bb.h5"
    assert run_cli(["extract", "--checkpoint", P["ckpt"], "--videos", P["list"], "--out", bb, "--backbone",
                    "--threads", "1", "--no-progress"], capsys).code == 0
    with pytest.raises(UsageError, match="backbone"):
        P["pred"].encode_stored(bb, P["videos"][0].stem)


def test_evaluate_uses_only_own_features_as_embeddings(P, tmp_path):
    from locvtp.downstream.common import FeatureFile

    own = FeatureFile.open(P["feats"])
    assert own.is_joint_embedding_of(P["pred"].sha256)
    from locvtp.predictor import LocVTPPredictor

    assert not own.is_joint_embedding_of(LocVTPPredictor.from_checkpoint(P["other"]).sha256)


# --------------------------------------------------------------------------------------------------- module layout
COMMANDS = {"locvtp.cli", "locvtp.commands"}


@pytest.mark.parametrize("module", ["predictor", "localize", "inference", "featurestore/reader", "downstream/common",
                                    "downstream/grounding", "downstream/steps", "downstream/retrieval",
                                    "downstream/segmentation"])
def test_library_modules_do_not_import_commands(module):
    import locvtp

    src = Path(locvtp.__file__).parent / f"{module}.py"
    tree = ast.parse(src.read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported.update(a.name for a in node.names)
    bad = {m for m in imported if m in COMMANDS or m.startswith("locvtp.commands.")}
    assert not bad, (module, bad)


# ------------------------------------------------------------------------------------ issue 26: what the API says too
def test_search_api_says_when_fewer_moments_exist(P, capsys):
    """The shortfall warning is the predictor's (so `search`, the API and the page say it alike), not the CLI's."""
    root = P["root"]
    idx = root / "idx_short"
    assert run_cli(["index", "--features", P["feats"], "--out", idx, "--no-progress"], capsys).code == 0
    many = P["pred"].search(idx, [QUERY], top_k=1000).results[0]
    assert 1 <= len(many.moments) < 1000
    assert [w for w in many.warnings if w.startswith(f"asked for 1000 moments, only {len(many.moments)} exist")]
    one = P["pred"].search(idx, [QUERY], top_k=1).results[0]
    assert not [w for w in one.warnings if w.startswith("asked for")]


def test_ground_query_with_a_byte_order_mark_is_the_query(P, capsys):
    """A query pasted with a BOM grounds exactly like the same query without it (issue 26)."""
    plain, _ = _ground_cli(capsys, "--checkpoint", P["ckpt"], P["videos"][0], QUERY, "--curve")
    bom, _ = _ground_cli(capsys, "--checkpoint", P["ckpt"], P["videos"][0], "\ufeff" + QUERY, "--curve")
    assert bom == plain


def test_serve_search_names_moments_without_a_video(P, capsys, tmp_path):
    """An index over videos that --videos does not hold: results stay, and a warning says they cannot be played
    (they used to come back without a video or thumbnail, silently)."""
    pytest.importorskip("fastapi")
    from locvtp.serve.app import ServeConfig, Server, check_query

    idx = tmp_path / "idx"
    assert run_cli(["index", "--features", P["feats"], "--out", idx, "--no-progress"], capsys).code == 0
    other = tmp_path / "other_videos"
    other.mkdir()
    srv = Server(ServeConfig(checkpoint=P["ckpt"], videos=other, index=idx, work_dir=tmp_path / "work"),
                 predictor=P["pred"])
    try:
        res = srv.search({"query": QUERY, "top_k": 3})
    finally:
        srv.work.close()
    assert res["moments"] and all(m["video"] is None and m["thumbnail"] is None for m in res["moments"])
    said = [w for w in res["warnings"] if "not found under --videos" in w]
    assert len(said) == 1 and said[0].startswith(f"{len(res['moments'])} moment(s)")
    assert check_query("\ufeff" + QUERY, 32) == QUERY
