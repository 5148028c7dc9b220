"""Directory checkpoints: round trips, atomic replacement, run-dir resolution, no unpickling, clear errors."""
from __future__ import annotations

import json
import os
from collections import OrderedDict

import pytest
import torch
from torch import nn

from locvtp.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_trainer_state,
    read_meta,
    resolve_checkpoint,
    save_checkpoint,
)
from locvtp.config import load_config
from locvtp.model import ContextProjectionHead, LocVTP

SMALL = ["model.dim=16", "model.video.width=8", "model.text.width=16", "model.text.layers=1",
         "model.text.heads=2", "model.text.vocab_size=40", "model.text.max_len=12", "train.max_steps=7"]


class _Objective(nn.Module):
    """Stands in for LocVTPObjective: a context head and a logit scale, the state the trainer must keep."""

    def __init__(self):
        super().__init__()
        self.context_head = ContextProjectionHead(16, window=2)
        self.logit_scale = nn.Parameter(torch.tensor(2.5))


def _model(cfg):
    torch.manual_seed(0)
    return LocVTP.from_config(cfg).eval()


def _inputs():
    g = torch.Generator().manual_seed(0)
    clips = torch.randint(0, 256, (2, 3, 4, 32, 32, 3), generator=g, dtype=torch.uint8)
    ids = torch.tensor([[2, 7, 9, 3, 0], [2, 11, 3, 0, 0]])
    return clips, ids, ids != 0


def _outputs(model):
    clips, ids, mask = _inputs()
    with torch.no_grad():
        return (model.encode_video(clips), *model.encode_text(ids, mask))


@pytest.fixture()
def cfg():
    return load_config(None, SMALL)


def test_round_trip(tmp_path, cfg):
    tokenizers = pytest.importorskip("locvtp.data.tokenizer")
    tok = tokenizers.train_tokenizer(["a person opens a door", "the dog jumps over a box"] * 5, vocab_size=40)
    model, objective = _model(cfg), _Objective()
    state = {"step": 7, "optimizer": {"state": {0: {"exp_avg": torch.randn(3)}}, "param_groups": [{"lr": 0.1}]},
             "rng": {"torch": torch.get_rng_state()}, "note": "x", "history": [1.0, 2.0],
             "misc": {"c": 1j, "set": {1, 2}, "size": torch.Size([2]), "dt": torch.float32, "b": b"x", "n": None,
                      "od": OrderedDict(a=1), "dev": torch.device("cpu"), "t": (1, 2.0)}}
    out = save_checkpoint(tmp_path / "ck", model, cfg, tokenizer=tok, trainer_state=state, objective=objective)
    assert out == tmp_path / "ck"
    assert {"model.safetensors", "config.yaml", "tokenizer.json", "trainer_state.pt", "meta.json"} <= set(
        os.listdir(out))
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temp dir left behind

    ck = load_checkpoint(out)
    assert ck.path == out and ck.step == 7 and len(ck.sha256) == 64
    assert ck.sha256 == json.loads((out / "meta.json").read_text())["sha256"]
    assert not ck.model.training
    for a, b in zip(_outputs(model), _outputs(ck.model)):
        assert torch.equal(a, b)
    assert ck.cfg.model.dim == 16 and ck.cfg.train.max_steps == 7
    assert ck.tokenizer == tok
    restored = _Objective()
    restored.load_state_dict(ck.objective_state)
    for k, v in objective.state_dict().items():
        assert torch.equal(restored.state_dict()[k], v)
    ts = load_trainer_state(out)
    assert ts["step"] == 7 and ts["note"] == "x" and ts["history"] == [1.0, 2.0]
    assert torch.equal(ts["optimizer"]["state"][0]["exp_avg"], state["optimizer"]["state"][0]["exp_avg"])
    assert torch.equal(ts["rng"]["torch"], state["rng"]["torch"])
    assert ts["misc"] == state["misc"]


def test_model_config_only_and_no_extras(tmp_path, cfg):
    model = _model(cfg)
    save_checkpoint(tmp_path / "ck", model, cfg.model)
    ck = load_checkpoint(tmp_path / "ck")
    assert ck.tokenizer is None and ck.objective_state is None and ck.step is None
    assert load_trainer_state(tmp_path / "ck") is None
    assert ck.cfg.dim == 16
    for a, b in zip(_outputs(model), _outputs(ck.model)):
        assert torch.equal(a, b)


def test_replace_existing_checkpoint(tmp_path, cfg):
    save_checkpoint(tmp_path / "ck", _model(cfg), cfg, step=1)
    torch.manual_seed(5)
    other = LocVTP.from_config(cfg).eval()
    save_checkpoint(tmp_path / "ck", other, cfg, step=2)
    assert os.listdir(tmp_path) == ["ck"]  # neither the temp nor the old dir is left behind
    ck = load_checkpoint(tmp_path / "ck")
    assert ck.step == 2
    for a, b in zip(_outputs(other), _outputs(ck.model)):
        assert torch.equal(a, b)


def test_resolve_run_dir(tmp_path, cfg):
    run = tmp_path / "run"
    model = _model(cfg)
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        (run / "checkpoints").mkdir(parents=True)
        resolve_checkpoint(run)
    save_checkpoint(run / "checkpoints" / "step_0000100", model, cfg, step=100)
    save_checkpoint(run / "checkpoints" / "step_0000020", model, cfg, step=20)
    # a crash mid-save: hidden temp dir with a model file but no meta; an incomplete visible dir
    half = run / "checkpoints" / ".step_0000300.tmp-123-abcd"
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"partial")
    (run / "checkpoints" / "step_0000200").mkdir()
    (run / "checkpoints" / "step_0000200" / "model.safetensors").write_bytes(b"partial")
    assert resolve_checkpoint(run) == run / "checkpoints" / "step_0000100"
    assert load_checkpoint(run).step == 100
    (run / "final").mkdir()  # incomplete final: still the newest step
    assert resolve_checkpoint(run) == run / "checkpoints" / "step_0000100"
    save_checkpoint(run / "final", model, cfg, step=150)
    assert resolve_checkpoint(run) == run / "final"
    assert read_meta(run)["step"] == 150
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve_checkpoint(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="not a checkpoint directory"):
        resolve_checkpoint(run / "checkpoints" / "step_0000200" / "model.safetensors")


_UNPICKLED = []


def _side_effect(*args):
    _UNPICKLED.append(args)
    return "pwned"


class _Evil:
    def __reduce__(self):
        return (_side_effect, ("ran",))


def test_trainer_state_never_unpickles_objects(tmp_path, cfg):
    with pytest.raises(CheckpointError, match=r"trainer_state\['extra'\]\[0\].*_Evil"):
        save_checkpoint(tmp_path / "ck", _model(cfg), cfg, trainer_state={"step": 1, "extra": [_Evil()]})
    assert not (tmp_path / "ck").exists() and os.listdir(tmp_path) == []
    import numpy as np

    with pytest.raises(CheckpointError, match="numpy"):
        save_checkpoint(tmp_path / "ck", _model(cfg), cfg, trainer_state={"rng": np.zeros(3)})
    with pytest.raises(CheckpointError, match=r"\['loss'\].*numpy"):  # a float subclass that pickles as numpy
        save_checkpoint(tmp_path / "ck", _model(cfg), cfg, trainer_state={"loss": np.float64(1.0)})

    save_checkpoint(tmp_path / "ck", _model(cfg), cfg, trainer_state={"step": 1})
    torch.save({"step": 1, "extra": _Evil()}, tmp_path / "ck" / "trainer_state.pt")  # a tampered file
    with pytest.raises(CheckpointError, match="trainer_state.pt.*weights_only"):
        load_trainer_state(tmp_path / "ck")
    assert _UNPICKLED == []
    # sanity: the same file *would* run code under plain pickle semantics
    assert torch.load(tmp_path / "ck" / "trainer_state.pt", weights_only=False)["extra"] == "pwned"
    assert _UNPICKLED == [("ran",)]
    _UNPICKLED.clear()


def test_corrupt_model_file_names_the_file(tmp_path, cfg):
    save_checkpoint(tmp_path / "ck", _model(cfg), cfg)
    f = tmp_path / "ck" / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[:8] = b"\xff" * 8  # header length garbage
    f.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*sha256"):
        load_checkpoint(tmp_path / "ck")
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*corrupt"):
        load_checkpoint(tmp_path / "ck", verify=False)


def test_weights_config_mismatch_is_explained(tmp_path, cfg):
    save_checkpoint(tmp_path / "ck", _model(cfg), cfg)
    text = (tmp_path / "ck" / "config.yaml").read_text().replace("temporal_layers: 0", "temporal_layers: 1")
    (tmp_path / "ck" / "config.yaml").write_text(text)
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*missing.*temporal"):
        load_checkpoint(tmp_path / "ck")


def test_tokenizer_that_writes_nothing_is_rejected(tmp_path, cfg):
    class Broken:
        def save(self, directory):
            return None

    with pytest.raises(CheckpointError, match="tokenizer.json"):
        save_checkpoint(tmp_path / "ck", _model(cfg), cfg, tokenizer=Broken())
    assert os.listdir(tmp_path) == []


def test_hf_checkpoint_is_self_contained(tmp_path, cfg):
    transformers = pytest.importorskip("transformers")
    import shutil

    hf_dir = tmp_path / "distil"
    torch.manual_seed(0)
    transformers.DistilBertModel(transformers.DistilBertConfig(
        vocab_size=40, dim=16, n_layers=1, n_heads=2, hidden_dim=32, max_position_embeddings=16)
    ).save_pretrained(str(hf_dir))
    hcfg = load_config(None, SMALL + ["model.text.name=hf", f"model.text.path={hf_dir}"])
    model = _model(hcfg)
    save_checkpoint(tmp_path / "ck", model, hcfg)
    shutil.rmtree(hf_dir)  # the original model directory is gone: the checkpoint must still load
    ck = load_checkpoint(tmp_path / "ck")
    for a, b in zip(_outputs(model), _outputs(ck.model)):
        assert torch.equal(a, b)
    assert ck.cfg.model.text.path == str(hf_dir)  # the user's config is returned unchanged


def test_wrapped_models_are_saved_unwrapped(tmp_path, cfg):
    """A compiled/DDP-style wrapper must not leak its prefix into the saved keys."""
    model = _model(cfg)

    class Wrapper(nn.Module):  # what torch.compile returns: the inner module under _orig_mod
        def __init__(self, inner):
            super().__init__()
            self._orig_mod = inner

    save_checkpoint(tmp_path / "ck", Wrapper(model), cfg)
    ck = load_checkpoint(tmp_path / "ck")
    for a, b in zip(_outputs(model), _outputs(ck.model)):
        assert torch.equal(a, b)


def test_failed_replace_keeps_the_old_checkpoint(tmp_path, cfg, monkeypatch):
    save_checkpoint(tmp_path / "ck", _model(cfg), cfg, step=1)
    real_replace = os.replace

    def failing_replace(src, dst):
        if ".tmp-" in os.fspath(src):
            raise OSError("disk full")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path / "ck", _model(cfg), cfg, step=2)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["ck"]  # old checkpoint restored, temp dir removed
    assert load_checkpoint(tmp_path / "ck").step == 1
