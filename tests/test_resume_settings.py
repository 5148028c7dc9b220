"""Issue 26 item 6: `pretrain --out RUN --resume auto` trains with the run's own saved settings.

One tiny uninterrupted run (4 steps, a checkpoint at step 2) is the reference; each test copies it, drops its
final checkpoint and resumes from step 2 through the command line (in-process), then compares the final weights
with the reference's bit for bit. The fine and temporal terms train from step 0 (``objective.ramp_start=0``), so a
changed objective setting really changes the weights (checked in the allowed-change test).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cli_helpers import assert_one_line_error, run_cli
from locvtp.config import load_config

pytestmark = pytest.mark.usefixtures("keep_torch_threads")  # the run's train.num_threads=1

TINY = ["train.batch_size=8", "train.warmup_steps=2", "train.log_every=1", "data.num_workers=0",
        "data.frames_per_clip=2", "data.frame_size=16", "data.max_words=16", "data.vocab_size=200",
        "model.dim=32", "model.text.width=32", "model.text.layers=1", "model.video.width=8",
        "model.video.temporal_layers=0", "train.num_threads=1", "objective.ramp_start=0",
        "train.max_steps=4", "train.save_every=2", "train.keep_last=2"]


def start_args(world: Path) -> list[str]:
    return [f"data.root={world}", *TINY]


@pytest.fixture(scope="module")
def reference(tiny_world, tmp_path_factory):
    """The uninterrupted run (started as documented: --config and overrides)."""
    from locvtp.commands.pretrain import main

    run = tmp_path_factory.mktemp("reference") / "run"
    n = torch.get_num_threads()
    assert main(["--config", "pretrain_synthetic", "--out", str(run), "--quiet", *start_args(tiny_world)]) == 0
    torch.set_num_threads(n)
    assert (run / "checkpoints" / "step_0000002").is_dir() and (run / "final").is_dir()
    return run


@pytest.fixture
def killed(reference, tmp_path):
    """The reference run as a kill after step 2 leaves it: its step-2 checkpoint, no final."""
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    shutil.rmtree(run / "final")
    return run


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def changed_lines(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if "changed settings" in ln]


def resume(run: Path, capsys, *extra):
    return run_cli(["pretrain", "--out", run, "--resume", "auto", "--quiet", *extra], capsys)


def test_resume_without_config_continues_bit_identically(killed, reference, capsys):
    res = resume(killed, capsys)
    assert res.code == 0, res.err
    assert changed_lines(res.err) == [] and "[pretrain] warning" not in res.err
    assert same_weights(killed / "final", reference / "final")
    assert [json.loads(x)["step"] for x in (killed / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4]


def test_a_default_changed_in_the_code_does_not_change_the_run(killed, reference, tiny_world, capsys, monkeypatch):
    """The stop-word default flips between start and resume (as it did in issue 15): the resumed run keeps its
    own 'english', with or without the original --config and overrides; a config rebuilt from today's defaults
    (the library call) is refused by key name instead of silently switching the objective."""
    from locvtp import config as C
    from locvtp.config import find_config
    from locvtp.training.loop import pretrain

    monkeypatch.setattr(C.Config.__dataclass_fields__["objective"], "default_factory",
                        lambda: C.ObjectiveConfig(stopwords="none"))
    assert C.default_config().objective.stopwords == "none"  # the patch took
    backup = killed.parent / "backup"
    shutil.copytree(killed, backup)

    res = resume(killed, capsys)
    assert res.code == 0 and changed_lines(res.err) == [], res.err
    assert same_weights(killed / "final", reference / "final")
    assert load_config(killed / "final" / "config.yaml").objective.stopwords == "english"

    res = resume(backup, capsys, "--config", "pretrain_synthetic", *start_args(tiny_world))  # the start command
    assert res.code == 0 and changed_lines(res.err) == [], res.err
    assert same_weights(backup / "final", reference / "final")

    shutil.rmtree(backup / "final")
    rebuilt = load_config(find_config("pretrain_synthetic"), start_args(tiny_world))
    with pytest.raises(C.ConfigError, match=r"objective\.stopwords 'english' -> 'none'.*--allow-changes "
                                            r"objective\.stopwords$"):
        pretrain(rebuilt, backup, resume="auto", progress=False)
    assert not (backup / "final").exists()


def test_an_objective_change_is_refused_then_allowed_explicitly(killed, reference, capsys):
    res = resume(killed, capsys, "objective.stopwords=none")
    assert_one_line_error(res, 2, "objective.stopwords 'english' -> 'none'", "--allow-changes objective.stopwords")
    assert not (killed / "final").exists()

    res = resume(killed, capsys, "objective.stopwords=none", "--allow-changes", "objective")  # a whole section
    assert res.code == 0, res.err
    assert changed_lines(res.err) == [f"locvtp pretrain: resuming {killed} from step 2 with changed settings: "
                                      "objective.stopwords 'english' -> 'none'"]
    assert load_config(killed / "final" / "config.yaml").objective.stopwords == "none"
    assert not same_weights(killed / "final", reference / "final")  # the setting matters in this run


def test_a_harmless_change_is_named_and_applied(killed, capsys):
    """A longer run at a higher rate: one line names both changes, and step 3 uses the new rate on the new
    schedule (the optimizer state would otherwise bring back the saved rate)."""
    from locvtp.training.optim import lr_factor

    res = resume(killed, capsys, "train.max_steps=5", "train.lr=2e-3")
    assert res.code == 0, res.err
    assert changed_lines(res.err) == [f"locvtp pretrain: resuming {killed} from step 2 with changed settings: "
                                      "train.lr 0.001 -> 0.002, train.max_steps 4 -> 5"]
    rows = {r["step"]: r for r in map(json.loads, (killed / "metrics.jsonl").read_text().splitlines())}
    assert sorted(rows) == [1, 2, 3, 4, 5]
    assert rows[3]["lr"] == pytest.approx(2e-3 * lr_factor(2, 2, 5, 0.05), rel=1e-9)
    assert rows[5]["lr"] == pytest.approx(2e-3 * lr_factor(4, 2, 5, 0.05), rel=1e-9)
    assert rows[2]["lr"] == pytest.approx(1e-3 * lr_factor(1, 2, 4, 0.05), rel=1e-9)  # before: the run's own


def test_another_config_file_moving_the_data_is_refused(killed, reference, tiny_world, tmp_path, capsys):
    """--config of another file whose data.root differs: refused naming the key; a data folder that really moved
    is given with the explicit flag, and the run continues exactly."""
    other = tmp_path / "other.yaml"
    other.write_text(f"data:\n  root: {tmp_path / 'elsewhere'}\n")
    res = resume(killed, capsys, "--config", other)
    assert_one_line_error(res, 2, "data.root", str(tmp_path / "elsewhere"), "--allow-changes data.root")

    moved = tmp_path / "moved_world"
    moved.symlink_to(tiny_world, target_is_directory=True)
    res = resume(killed, capsys, f"data.root={moved}")
    assert_one_line_error(res, 2, "data.root", "--allow-changes data.root")
    res = resume(killed, capsys, f"data.root={moved}", "--allow-changes", "data.root")
    assert res.code == 0, res.err
    assert changed_lines(res.err) == [f"locvtp pretrain: resuming {killed} from step 2 with changed settings: "
                                      f"data.root '{tiny_world}' -> '{moved}'"]
    assert same_weights(killed / "final", reference / "final")


def test_a_key_added_after_the_run_started_is_named(reference, tmp_path, capsys):
    """A saved config without a key (written before it existed) takes today's default, with a warning naming it."""
    from locvtp.training.resume import check_resume_settings, saved_settings

    ck = tmp_path / "ck"
    shutil.copytree(reference / "checkpoints" / "step_0000002", ck)
    text = (ck / "config.yaml").read_text()
    assert "  context_in_span: false\n" in text
    (ck / "config.yaml").write_text(text.replace("  context_in_span: false\n", ""))
    cfg, missing = saved_settings(ck)
    assert missing == ["objective.context_in_span"] and cfg.objective.context_in_span is False
    capsys.readouterr()
    assert check_resume_settings(cfg, ck, tmp_path / "run")[1] is None  # nothing changed
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("locvtp pretrain: warning: ") and "objective.context_in_span" in err[0]


def test_a_backbone_rate_that_regroups_the_optimizer_is_one_line(killed, capsys):
    """train.backbone_lr_scale is a free change, except between 1 and another value: the pixel backbone's optimizer
    groups differ then, so the saved optimizer state cannot be loaded (was a second line after the change line)."""
    res = resume(killed, capsys, "train.backbone_lr_scale=1")
    assert_one_line_error(res, 2, "train.backbone_lr_scale 0.1 -> 1", "other than 1")
    res = resume(killed, capsys, "train.backbone_lr_scale=0.5", "train.max_steps=3")
    assert res.code == 0 and changed_lines(res.err) == [
        f"locvtp pretrain: resuming {killed} from step 2 with changed settings: train.backbone_lr_scale 0.1 -> 0.5, "
        "train.max_steps 4 -> 3"], res.err


def test_the_ramp_is_a_free_change_and_training_warnings_read_like_every_command(killed, capsys):
    """objective.ramp_start moves when the fine and temporal terms come in, not what they are: applied and named.
    The trainer's warning about it reads `locvtp pretrain: warning: ...` (it was `[pretrain] warning: ...`)."""
    res = resume(killed, capsys, "objective.ramp_start=10")
    assert res.code == 0, res.err
    assert changed_lines(res.err) == [f"locvtp pretrain: resuming {killed} from step 2 with changed settings: "
                                      "objective.ramp_start 0 -> 10"]
    warnings = [ln for ln in res.err.splitlines() if "ramp_start=10 >= train.max_steps=4" in ln]
    assert len(warnings) == 1 and warnings[0].startswith("locvtp pretrain: warning: "), res.err
    assert "[pretrain]" not in res.err
