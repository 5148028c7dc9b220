import math

import pytest

from locvtp import cli
from locvtp.config import ConfigError, as_model_config, load_config, save_config


def test_defaults_and_overrides(tmp_path):
    cfg = load_config(None, ["train.max_steps=7", "objective.topk=3", "objective.sigma=2.5"])
    assert cfg.train.max_steps == 7
    assert cfg.objective.topk == 3
    assert cfg.objective.sigma == 2.5
    assert math.isinf(load_config().objective.sigma)


def test_yaml_file_then_override_wins(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  max_steps: 11\n  lr: 0.001\nmodel:\n  dim: 64\n")
    cfg = load_config(p, ["train.max_steps=12"])
    assert (cfg.train.max_steps, cfg.train.lr, cfg.model.dim) == (12, 0.001, 64)
    assert as_model_config(cfg).dim == 64


@pytest.mark.parametrize("override", ["train.batchsize=3", "train.max_steps=abc", "nokeyvalue"])
def test_bad_override_names_the_key(override):
    with pytest.raises(ConfigError) as exc:
        load_config(None, [override])
    assert override.split("=")[0] in str(exc.value)


def test_bad_yaml_names_the_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("train:\n  max_stepz: 3\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(p)
    p.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(p)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_save_config_round_trip(tmp_path):
    cfg = load_config(None, ["seed=5", "model.text.layers=1"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg
    assert not list(tmp_path.glob("*.tmp"))


def test_cli_help_and_unknown(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in out
    assert cli.main(["frobnicate"]) == 2
    assert "unknown command" in capsys.readouterr().err


def test_every_cli_target_is_importable():
    import importlib

    for name, (target, _) in cli.COMMANDS.items():
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func)), name


# ------------------------------------------------------------------------------- one loader, one finder, renames
def test_old_objective_window_key_is_max_offset_with_one_deprecation_line(tmp_path, capsys):
    from omegaconf import OmegaConf

    new = tmp_path / "new.yaml"
    new.write_text("objective:\n  max_offset: 3\n")
    old = tmp_path / "old.yaml"
    old.write_text("objective:\n  window: 3\n")
    want = OmegaConf.to_container(load_config(new))
    assert capsys.readouterr().err == ""
    assert OmegaConf.to_container(load_config(old)) == want
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "objective.window is deprecated" in err[0] and "objective.max_offset" in err[0]
    assert str(old) in err[0]
    assert OmegaConf.to_container(load_config(None, ["objective.window=3"])) == want
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "objective.window=3" in err[0] and "objective.max_offset" in err[0]
    assert "window" not in OmegaConf.to_container(load_config(old))["objective"]
    with pytest.raises(ConfigError, match="objective.max_offset=0"):
        load_config(None, ["objective.window=0"])


def test_a_checkpoint_config_with_the_old_key_loads_quietly(tmp_path, capsys):
    from locvtp.checkpoint import _load_cfg

    (tmp_path / "config.yaml").write_text("objective:\n  window: 4\nmodel:\n  dim: 8\n")
    assert _load_cfg(tmp_path).objective.max_offset == 4
    assert capsys.readouterr().err == ""


def test_find_config_by_path_name_or_configs_prefix(tmp_path, monkeypatch):
    from locvtp.config import find_config

    monkeypatch.chdir(tmp_path)  # from the repository's root, configs/x.yaml is that file itself (a path as given)

    by_name = find_config("pretrain_synthetic")
    assert by_name.name == "pretrain_synthetic.yaml" and by_name.is_file()
    assert find_config("pretrain_synthetic.yaml").resolve() == by_name.resolve()
    assert find_config("configs/pretrain_synthetic.yaml").resolve() == by_name.resolve()
    mine = tmp_path / "mine.yaml"
    mine.write_text("seed: 1\n")
    assert find_config(mine) == mine
    with pytest.raises(ConfigError, match="no_such_config"):
        find_config("no_such_config")


def test_one_yaml_loader_and_one_config_finder_on_the_training_side():
    """``yaml.safe_load`` and ``def find_config`` appear only in locvtp.config among the training-side modules."""
    from pathlib import Path

    import locvtp

    src = Path(locvtp.__file__).parent
    training_side = [src / n for n in ("checkpoint.py", "backbone.py", "objectives.py", "distributed.py")]
    training_side += [src / "commands" / n for n in ("pretrain.py", "demo.py", "prepare.py", "backbone.py")]
    for folder in ("training", "data", "world"):
        training_side += sorted((src / folder).glob("*.py"))
    for path in training_side:
        text = path.read_text(encoding="utf-8")
        assert "yaml.safe_load" not in text and "def find_config" not in text, path
