"""The pre-training engine: schedule, optimizer groups, a full tiny run, kill-and-resume equality, a kill during a
checkpoint write, bad-sample accounting end to end, and weights_only loading."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from locvtp.checkpoint import CheckpointError, load_checkpoint, load_trainer_state
from locvtp.config import load_config
from locvtp.training.optim import build_optimizer, lr_factor
from locvtp.config import find_config
from locvtp.commands.pretrain import main
from locvtp.training.loop import pretrain

REPO = Path(__file__).resolve().parents[1]
# A tiny model and a few steps: every run below takes seconds.
TINY = ["train.batch_size=8", "train.warmup_steps=2", "train.log_every=1", "data.num_workers=0",
        "data.frames_per_clip=2", "data.frame_size=16", "data.max_words=16", "data.vocab_size=200",
        "model.dim=32", "model.text.width=32", "model.text.layers=1", "model.video.width=8",
        "model.video.temporal_layers=0", "train.num_threads=1"]


pytestmark = pytest.mark.usefixtures("keep_torch_threads")  # conftest: TINY sets train.num_threads=1


def tiny_cfg(world, *extra):
    return load_config(find_config("pretrain_synthetic"), [f"data.root={world}", *TINY, *extra])


def weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return load_file(str(ckpt / "model.safetensors"))


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=0, msg=k)


# ------------------------------------------------------------------------------------------------ pieces
def test_lr_schedule_warmup_then_cosine():
    f = [lr_factor(s, 10, 110, 0.1) for s in range(111)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)  # linear warm-up reaches 1 at step 10
    assert all(a < b for a, b in zip(f[:9], f[1:10]))
    assert f[10] == pytest.approx(1.0) and f[60] == pytest.approx(0.55) and f[110] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(f[10:], f[11:]))
    assert lr_factor(500, 10, 110, 0.1) == pytest.approx(0.1)  # beyond the end: stays at the floor


def test_no_weight_decay_on_norms_biases_embeddings_and_logit_scale():
    from locvtp.model import LocVTP
    from locvtp.objectives import LocVTPObjective
    from locvtp.training.setup import Pretrainer

    cfg = load_config(None, TINY + ["model.text.vocab_size=50"])
    net = Pretrainer(LocVTP.from_config(cfg), LocVTPObjective.from_config(cfg.objective, dim=32))
    opt = build_optimizer(net, cfg.train)
    decay = {id(p) for p in opt.param_groups[0]["params"]}
    no_decay = {id(p) for p in opt.param_groups[1]["params"]}
    assert opt.param_groups[0]["weight_decay"] == cfg.train.weight_decay and opt.param_groups[1]["weight_decay"] == 0
    names = dict(net.named_parameters())
    assert id(names["objective.logit_scale"]) in no_decay
    for name, p in names.items():
        assert (id(p) in decay) != (id(p) in no_decay), name  # every parameter in exactly one group
        if name.endswith(".bias") or p.ndim < 2 or "embed" in name:
            assert id(p) in no_decay, name
    lin = [n for n, m in net.named_modules() if isinstance(m, torch.nn.Linear)]
    assert lin and all(id(names[f"{n}.weight"]) in decay for n in lin if "embed" not in n)


# ------------------------------------------------------------------------------------------------ a whole run
def test_tiny_run_writes_a_complete_run_dir(tiny_world, tmp_path):
    run = tmp_path / "run"
    final = pretrain(tiny_cfg(tiny_world, "train.max_steps=6", "train.save_every=2", "train.keep_last=2"),
                     run, progress=False)
    assert final == run / "final"
    ck = load_checkpoint(final)
    assert ck.step == 6 and ck.tokenizer is not None and ck.objective_state and "logit_scale" in ck.objective_state
    assert ck.cfg.model.text.vocab_size == ck.tokenizer.vocab_size  # filled from the trained WordPiece
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_0000002", "step_0000004"]  # keep_last
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    for key in ("loss/total", "loss/coarse", "loss/fine", "loss/temporal", "lr", "logit_scale", "grad_norm",
                "samples_per_s", "data_wait", "skipped"):
        assert all(key in r for r in rows), key
    assert rows[0]["lr"] < rows[1]["lr"]  # warm-up
    assert 0 <= rows[-1]["data_wait"] <= 1 and rows[-1]["skipped"] == 0
    assert (run / "tokenizer" / "tokenizer.json").is_file() and (run / "config.yaml").is_file()
    state = load_trainer_state(final)
    assert state["step"] == 6 and len(state["rng"]) == 1
    # a finished run resumed again returns at once; a new run into the same dir is refused
    assert pretrain(tiny_cfg(tiny_world, "train.max_steps=6"), run, resume="auto", progress=False) == final
    with pytest.raises(FileExistsError, match="--resume auto"):
        pretrain(tiny_cfg(tiny_world, "train.max_steps=6"), run, progress=False)


def test_cli_main(tiny_world, tmp_path, capsys):
    from cli_helpers import assert_one_line_error, run_cli

    run = tmp_path / "cli"
    args = ["--config", str(REPO / "configs" / "pretrain_synthetic.yaml"), "--out", str(run), "--quiet",
            f"data.root={tiny_world}", *TINY, "train.max_steps=2", "train.save_every=0"]
    assert main(args) == 0
    assert capsys.readouterr().out.strip().endswith(str(run / "final"))
    assert_one_line_error(run_cli(["pretrain", *args], capsys), 2, "--resume auto")
    assert_one_line_error(run_cli(["pretrain", "--config", "nope.yaml", "--out", str(run)], capsys), 2, "nope.yaml")
    assert_one_line_error(run_cli(["pretrain", "--config", "pretrain_synthetic", "--out", str(tmp_path / "x"),
                                   "train.max_stepz=3"], capsys), 2, "max_stepz")


def test_grad_accumulation_and_features_path(tmp_path):
    """kind=features + webvid captions + accum_steps=2 trains end to end on pre-extracted features."""
    import h5py
    import numpy as np

    rng = np.random.default_rng(0)
    with h5py.File(tmp_path / "f.h5", "w") as f:
        f.attrs["clip_seconds"], f.attrs["stride_seconds"] = 1.0, 1.0
        for i in range(12):
            f.create_dataset(f"v{i}", data=rng.normal(size=(10 + i, 16)).astype(np.float32))
    rows = "".join(f"v{i},u,PT{10 + i}S,d,the shape number {i} moves\n" for i in range(12))
    (tmp_path / "w.csv").write_text("videoid,contentUrl,duration,page_dir,name\n" + rows)
    cfg = tiny_cfg(tmp_path, "data.kind=features", "data.features=f.h5", "data.captions=webvid",
                   "data.caption_file=w.csv", "model.video.name=features", "model.video.in_dim=16",
                   "model.video.hidden=32", "train.accum_steps=2", "train.max_steps=3", "train.save_every=0")
    final = pretrain(cfg, tmp_path / "run", progress=False)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 3 and rows[-1]["epoch"] == 6  # 12 samples / 8 -> 1 batch per epoch, 2 per step
    assert load_checkpoint(final).model.video_kind == "features"


# ------------------------------------------------------------------------------------------------ kill + resume
DRIVER = textwrap.dedent("""
    import os, signal, sys
    import torch
    mode, at = os.environ.get("KILL_MODE", ""), int(os.environ.get("KILL_AT", "0"))
    if mode == "step":  # SIGKILL ourselves at the start of the at-th optimizer step
        orig, n = torch.optim.AdamW.step, [0]
        def step(self, *a, **k):
            n[0] += 1
            if n[0] == at:
                os.kill(os.getpid(), signal.SIGKILL)
            return orig(self, *a, **k)
        torch.optim.AdamW.step = step
    elif mode == "save":  # SIGKILL ourselves half-way through writing the at-th checkpoint's weights
        import safetensors.torch as st
        orig, n = st.save_file, [0]
        def save_file(tensors, filename, metadata=None):
            n[0] += 1
            if n[0] == at:
                orig(tensors, filename, metadata)
                data = open(filename, "rb").read()
                open(filename, "wb").write(data[: len(data) // 2])
                os.kill(os.getpid(), signal.SIGKILL)
            return orig(tensors, filename, metadata)
        st.save_file = save_file
    from locvtp.commands.pretrain import main
    sys.exit(main(sys.argv[1:]))
""")


def run_driver(tmp_path, run, world, extra, kill_mode="", kill_at=0, resume=False):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    env = {**os.environ, "KILL_MODE": kill_mode, "KILL_AT": str(kill_at), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(script), "--config", str(REPO / "configs" / "pretrain_synthetic.yaml"),
           "--out", str(run), "--quiet", f"data.root={world}", *TINY, *extra]
    if resume:
        cmd += ["--resume", "auto"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


RESUME_RUN = ["train.max_steps=8", "train.save_every=3", "train.keep_last=2"]


@pytest.fixture(scope="module")
def uninterrupted(tiny_world, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("uninterrupted")
    n = torch.get_num_threads()
    pretrain(tiny_cfg(tiny_world, *RESUME_RUN), tmp / "run", progress=False)
    torch.set_num_threads(n)
    return tmp / "run"


def resume_in_process(world, run):
    return pretrain(tiny_cfg(world, *RESUME_RUN), run, resume="auto", progress=False)


@pytest.mark.slow
def test_sigkill_then_resume_auto_equals_uninterrupted(tiny_world, tmp_path, uninterrupted, capsys):
    run = tmp_path / "run"
    res = run_driver(tmp_path, run, tiny_world, RESUME_RUN, kill_mode="step", kill_at=5)
    assert res.returncode == -9, res.stderr[-2000:]  # SIGKILL mid-run (after the step-3 checkpoint, before step 6)
    assert not (run / "final").exists() and (run / "checkpoints" / "step_0000003").is_dir()
    resume_in_process(tiny_world, run)
    assert "resumed from" in capsys.readouterr().out
    assert_same_weights(run / "final", uninterrupted / "final")
    # and the metrics log reads like one run (the lines of the lost step 4 are not duplicated)
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))


@pytest.mark.slow
def test_kill_during_checkpoint_write_leaves_previous_checkpoint(tiny_world, tmp_path, uninterrupted):
    run = tmp_path / "run"
    res = run_driver(tmp_path, run, tiny_world, RESUME_RUN, kill_mode="save", kill_at=2)  # during step_6's write
    assert res.returncode == -9, res.stderr[-2000:]
    ckdir = run / "checkpoints"
    assert sorted(p.name for p in ckdir.iterdir() if not p.name.startswith(".")) == ["step_0000003"]
    assert any(p.name.startswith(".step_0000006.tmp") for p in ckdir.iterdir())  # the half-written one, hidden
    ck = load_checkpoint(ckdir / "step_0000003")  # the previous checkpoint is intact and verifies (sha256)
    assert ck.step == 3 and load_trainer_state(ckdir / "step_0000003")["step"] == 3
    resume_in_process(tiny_world, run)
    assert not any(p.name.startswith(".") for p in ckdir.iterdir())  # leftovers cleaned
    assert_same_weights(run / "final", uninterrupted / "final")


def test_resume_auto_skips_a_damaged_newest_checkpoint(tiny_world, tmp_path, uninterrupted, capsys):
    """Issue #18: a truncated model.safetensors in the newest checkpoint used to stop every `--resume auto`. Now
    one warning names it and why, the newest checkpoint that loads is used, and the run still ends exactly where
    an uninterrupted one does."""
    run = tmp_path / "run"
    shutil.copytree(uninterrupted, run)
    shutil.rmtree(run / "final")  # newest: step_6, then step_3
    model = run / "checkpoints" / "step_0000006" / "model.safetensors"
    model.write_bytes(model.read_bytes()[:1000])
    capsys.readouterr()
    resume_in_process(tiny_world, run)
    cap = capsys.readouterr()
    warnings = [ln for ln in cap.err.splitlines() if "warning" in ln and "damaged" in ln]
    assert len(warnings) == 1 and str(model) in warnings[0] and "sha256" in warnings[0], cap.err
    assert "step_0000003" in warnings[0] and "resumed from" in cap.out and "step_0000003" in cap.out
    assert_same_weights(run / "final", uninterrupted / "final")


def test_trainer_state_is_loaded_with_weights_only(tiny_world, tmp_path, uninterrupted):
    """A trainer_state.pt that would run code when unpickled is refused, and the code never runs."""
    run = tmp_path / "run"
    shutil.copytree(uninterrupted, run)
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.py"
    evil.write_text(textwrap.dedent(f"""
        import os, torch
        class Evil:
            def __reduce__(self):
                return (os.system, ("touch {marker}",))
        torch.save({{"step": 7, "optimizer": Evil()}}, "{run / 'checkpoints' / 'step_0000006' / 'trainer_state.pt'}")
    """))
    subprocess.run([sys.executable, str(evil)], check=True)
    shutil.rmtree(run / "final")
    cfg = tiny_cfg(tiny_world, *RESUME_RUN)
    with pytest.raises(CheckpointError, match="weights_only"):  # named explicitly: refused
        pretrain(cfg, run, resume=run / "checkpoints" / "step_0000006", progress=False)
    assert not marker.exists()
    # --resume auto names the refused checkpoint and falls back to the previous one (never running its code)
    shutil.rmtree(run / "checkpoints" / "step_0000003")
    with pytest.raises(CheckpointError, match=r"no checkpoint .* loads.*step_0000006.*weights_only"):
        pretrain(cfg, run, resume="auto", progress=False)
    assert not marker.exists()
    # the uninterrupted run's real states load fine with weights_only=True (plain tensors, numbers, containers)
    state = torch.load(uninterrupted / "final" / "trainer_state.pt", weights_only=True)
    assert {"step", "optimizer", "scheduler", "rng"} <= set(state)


# ------------------------------------------------------------------------------------------------ bad samples
def test_corrupt_videos_and_malformed_rows_train_to_the_end_and_are_reported(tiny_world, tmp_path, capsys):
    """10 % of the videos unreadable plus malformed caption rows: training finishes, and bad_samples.jsonl lists
    exactly the lost samples."""
    world = tmp_path / "world"
    shutil.copytree(tiny_world, world)
    cap = json.loads((world / "pretrain" / "caption.json").read_text())
    # grow the set to 20 videos (copies under new ids), then corrupt 2 of them (10 %)
    for vid in sorted(cap):
        for k in range(1, 4):
            new = f"{vid}_c{k}"
            if len(cap) < 20:
                shutil.copy(world / "videos" / f"{vid}.mp4", world / "videos" / f"{new}.mp4")
                cap[new] = cap[vid]
    assert len(cap) == 20
    corrupt = sorted(cap)[3:5]
    (world / "videos" / f"{corrupt[0]}.mp4").write_bytes(b"garbage" * 100)
    data = (world / "videos" / f"{corrupt[1]}.mp4").read_bytes()
    (world / "videos" / f"{corrupt[1]}.mp4").write_bytes(data[:200])  # truncated to its first 200 bytes
    lost_to_videos = sum(len(cap[v]["text"]) for v in corrupt)
    good_vid = sorted(cap)[0]
    cap[good_vid] = {k: list(v) for k, v in cap[good_vid].items()}
    cap[good_vid]["start"].append(-5.0)  # negative span
    cap[good_vid]["end"].append(-1.0)
    cap[good_vid]["text"].append("a narration before the video starts")
    cap["no_lists"] = {"start": 1.0, "end": 2.0, "text": "not lists"}
    (world / "pretrain" / "caption.json").write_text(json.dumps(cap))
    total = sum(len(v["text"]) for v in cap.values() if isinstance(v["text"], list)) + 1

    run = tmp_path / "run"
    final = pretrain(tiny_cfg(world, "train.max_steps=4", "train.save_every=0"), run, progress=False)
    assert (final / "model.safetensors").is_file()
    lines = [json.loads(x) for x in (run / "bad_samples.jsonl").read_text().splitlines()]
    videos = [x for x in lines if x["kind"] == "video"]
    rows = [x for x in lines if x["kind"] == "row"]
    assert len(videos) == lost_to_videos and {x["vid"] for x in videos} == set(corrupt)
    assert len(rows) == 2 and any("no_lists" in x["source"] for x in rows)
    assert any(good_vid in x["source"] for x in rows)
    assert len(lines) == lost_to_videos + 2
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["skipped"] == len(lines)
    assert f"skipped {len(lines)} of {total} samples: see {run / 'bad_samples.jsonl'}" in capsys.readouterr().out
    from locvtp.training.records import BadSampleError

    with pytest.raises((BadSampleError, ValueError)):  # --strict: the first bad row/video stops the run
        pretrain(tiny_cfg(world, "train.max_steps=1"), tmp_path / "strict", strict=True, progress=False)


def test_backbone_lr_scale_puts_the_pixel_cnn_in_scaled_groups():
    from locvtp.model import LocVTP
    from locvtp.objectives import LocVTPObjective
    from locvtp.training.setup import Pretrainer
    from locvtp.training.optim import lr_factor

    cfg = load_config(None, TINY + ["model.text.vocab_size=50", "train.backbone_lr_scale=0.1"])
    net = Pretrainer(LocVTP.from_config(cfg), LocVTPObjective.from_config(cfg.objective, dim=32))
    opt = build_optimizer(net, cfg.train)
    assert len(opt.param_groups) == 4
    cnn = {id(p) for n, p in net.named_parameters() if n.startswith("model.video_encoder.cnn.")}
    scaled = {id(p) for g in opt.param_groups[2:] for p in g["params"]}
    assert cnn and scaled == cnn
    assert all(g["lr"] == pytest.approx(cfg.train.lr * 0.1) for g in opt.param_groups[2:])
    assert all(g["lr"] == pytest.approx(cfg.train.lr) for g in opt.param_groups[:2])
    assert opt.param_groups[2]["weight_decay"] == cfg.train.weight_decay and opt.param_groups[3]["weight_decay"] == 0
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, 2, 10))
    for _ in range(3):
        opt.step()
        sched.step()
    assert opt.param_groups[2]["lr"] == pytest.approx(0.1 * opt.param_groups[0]["lr"])
    with pytest.raises(ValueError, match="backbone_lr_scale"):
        build_optimizer(net, load_config(None, TINY + ["train.backbone_lr_scale=-1"]).train)


def test_resume_does_not_need_the_backbone_file_again(tiny_world, tmp_path):
    """Pre-training from a backbone, then resuming after the backbone file is gone: every weight comes from the
    checkpoint, so the run continues; and the backbone really was the start (with lr scale 0 the checkpoint's CNN
    is exactly the file's)."""
    from locvtp.model.video import Tiny3D

    torch.manual_seed(123)
    bb = tmp_path / "bb.safetensors"
    save_file(Tiny3D(8).state_dict(), str(bb))
    run = tmp_path / "run"
    cfg = [f"model.video.pretrained={bb}", "train.backbone_lr_scale=0"]
    pretrain(tiny_cfg(tiny_world, "train.max_steps=2", "train.save_every=2", *cfg), run, progress=False)
    prefix = "model.video_encoder.cnn."
    cnn = {k[len(prefix):]: v for k, v in weights(run / "final").items() if k.startswith(prefix)}
    ref = load_file(str(bb))
    assert cnn.keys() == ref.keys()
    for k in ref:  # lr scale 0: the backbone is exactly the file's
        torch.testing.assert_close(cnn[k], ref[k], rtol=0, atol=0, msg=k)
    bb.unlink()
    pretrain(tiny_cfg(tiny_world, "train.max_steps=3", "train.save_every=2", *cfg), run, resume="auto",
             progress=False)
    assert (run / "final").is_dir() and json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 3


def test_a_second_pretrain_into_a_locked_run_dir_stops_at_once(tmp_path, capsys):
    from cli_helpers import assert_one_line_error, run_cli

    from locvtp.files import OutputLock

    run = tmp_path / "run"
    with OutputLock(run, "pretrain"):
        res = run_cli(["pretrain", "--config", "pretrain_synthetic", "--out", str(run), "data.root=nowhere"], capsys)
    assert_one_line_error(res, 1, str(run), "`locvtp pretrain`", "is writing this output")
    assert not run.exists()
