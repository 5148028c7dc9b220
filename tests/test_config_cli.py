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
