"""Directory checkpoints: safe to load (no pickle), atomic to write, self-describing.

Layout of a checkpoint directory::

    model.safetensors    model weights under "model.", objective weights (context head, logit scale) under "objective."
    config.yaml          the config the model was built from
    tokenizer.json       the tokenizer (when one was given)
    hf_text/config.json  architecture of an HF text encoder (weights are in model.safetensors), so a checkpoint
                         never depends on the original model directory still existing
    trainer_state.pt     optional: optimizer/scheduler/step/RNG, plain tensors, numbers, strings, lists, dicts
    meta.json            written last: format, version, step, sha256 of model.safetensors, file list

Why a directory written to a temporary sibling then ``os.replace``d: a crash mid-save leaves a hidden
``.NAME.tmp-*`` directory that ``resolve_checkpoint`` ignores, never a half-written checkpoint under the real name.
Loading uses safetensors and ``torch.load(weights_only=True)`` only: a checkpoint from the internet cannot run code.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from .config import Config, ModelConfig, read_yaml_mapping, rename_deprecated_keys, to_yaml
from locvtp.errors import LocVTPError
from locvtp.files import fsync_dir, fsync_file, swap_dir
from locvtp.tempnames import temp_path

FORMAT = "locvtp-checkpoint"
FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.yaml"
TOKENIZER_FILE = "tokenizer.json"
TRAINER_FILE = "trainer_state.pt"
META_FILE = "meta.json"
HF_TEXT_DIR = "hf_text"
_STEP_RE = re.compile(r"^step_(\d+)$")


class CheckpointError(LocVTPError, OSError):
    """A checkpoint is missing, incomplete, corrupt or inconsistent; the message names the file."""


@dataclass
class Checkpoint:
    model: nn.Module
    tokenizer: Any
    cfg: DictConfig
    path: Path
    sha256: str
    objective_state: Optional[dict[str, torch.Tensor]] = None
    meta: dict = field(default_factory=dict)

    @property
    def step(self) -> Optional[int]:
        return self.meta.get("step")


def file_sha256(path: Path) -> str:
    """sha256 of a file, read in 1 MiB chunks (the fingerprint of a checkpoint or a weights file)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# Exact types (not isinstance): numpy scalars subclass float but pickle as numpy objects, which
# weights_only refuses; likewise defaultdict subclasses dict.
_PLAIN_SCALARS = {int, float, bool, complex, str, bytes, type(None), torch.dtype, torch.device}
_PLAIN_MAPPINGS = {dict, OrderedDict}
_PLAIN_SEQUENCES = {list, tuple, set, torch.Size}


def _check_plain(obj: Any, where: str = "trainer_state") -> None:
    """Raise if ``obj`` holds anything ``torch.load(weights_only=True)`` would refuse (checked at save time, so a
    run never discovers at resume that its state cannot be read)."""
    kind = type(obj)
    if isinstance(obj, torch.Tensor) or kind in _PLAIN_SCALARS:
        return
    if kind in _PLAIN_MAPPINGS:
        for k, v in obj.items():
            if type(k) not in _PLAIN_SCALARS:
                raise CheckpointError(f"{where}: key {k!r} of type {type(k).__name__} is not allowed")
            _check_plain(v, f"{where}[{k!r}]")
        return
    if kind in _PLAIN_SEQUENCES:
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
        return
    raise CheckpointError(
        f"{where}: {kind.__module__}.{kind.__qualname__} cannot be saved in {TRAINER_FILE} "
        f"(only tensors, numbers, strings, lists, tuples, sets and dicts load with weights_only=True; "
        f"convert numpy arrays and scalars with torch.from_numpy / float() / int())"
    )


def _unwrap(module: nn.Module) -> nn.Module:
    """DDP (``.module``) and torch.compile (``._orig_mod``) wrappers would prefix every key: save the inner module."""
    while True:
        if isinstance(module, nn.parallel.DistributedDataParallel) or type(module).__name__ == "DataParallel":
            module = module.module
        elif hasattr(module, "_orig_mod") and isinstance(module._orig_mod, nn.Module):
            module = module._orig_mod
        else:
            return module


def _state_for_safetensors(prefix: str, module: nn.Module) -> dict[str, torch.Tensor]:
    # clone: safetensors refuses tensors that share storage (tied weights, views); contiguous CPU copies are safe.
    return {prefix + k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}


def save_checkpoint(path: str | os.PathLike, model: nn.Module, cfg: Any, tokenizer: Any = None,
                    trainer_state: Optional[dict] = None, objective: Optional[nn.Module] = None,
                    step: Optional[int] = None) -> Path:
    """Write a complete checkpoint directory at ``path`` atomically (replacing an existing one).

    ``step`` defaults to ``trainer_state["step"]`` when present. Returns the final path.
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = _unwrap(model)
    objective = _unwrap(objective) if objective is not None else None
    if trainer_state is not None:
        _check_plain(trainer_state)
        if step is None and isinstance(trainer_state.get("step"), int):
            step = int(trainer_state["step"])
    tmp = temp_path(path)  # hidden .NAME.tmp-PID-RAND: never taken for a checkpoint, removed by the next run
    tmp.mkdir()
    try:
        tensors = _state_for_safetensors("model.", model)
        if objective is not None:
            tensors.update(_state_for_safetensors("objective.", objective))
        save_file(tensors, str(tmp / MODEL_FILE), metadata={"format": FORMAT, "version": str(FORMAT_VERSION)})
        (tmp / CONFIG_FILE).write_text(to_yaml(cfg), encoding="utf-8")
        files = [MODEL_FILE, CONFIG_FILE]
        if tokenizer is not None:
            tokenizer.save(tmp)
            if not (tmp / TOKENIZER_FILE).is_file():
                raise CheckpointError(f"{tmp}: tokenizer.save() did not write {TOKENIZER_FILE}")
            files.append(TOKENIZER_FILE)
        text_encoder = getattr(model, "text_encoder", None)
        if text_encoder is not None and hasattr(text_encoder, "hf_config"):
            text_encoder.hf_config().save_pretrained(str(tmp / HF_TEXT_DIR))
            files.append(f"{HF_TEXT_DIR}/config.json")
        if trainer_state is not None:
            torch.save(trainer_state, tmp / TRAINER_FILE)
            files.append(TRAINER_FILE)
        from . import __version__ as pkg_version

        meta = {
            "format": FORMAT, "version": FORMAT_VERSION, "locvtp_version": pkg_version, "step": step,
            "sha256": file_sha256(tmp / MODEL_FILE), "files": files, "has_objective": objective is not None,
        }
        # last: its presence marks the checkpoint complete (a plain write: the whole directory is replaced atomically)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        for f in tmp.rglob("*"):
            if f.is_file():
                fsync_file(f)
        fsync_dir(tmp)
        swap_dir(tmp, path)  # the old checkpoint moves aside under a hidden name: resolve_checkpoint never picks it
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def is_complete(path: str | os.PathLike) -> bool:
    """A directory with meta.json and model.safetensors (meta.json is written last)."""
    p = Path(path)
    return p.is_dir() and (p / META_FILE).is_file() and (p / MODEL_FILE).is_file()


def step_checkpoints(run: str | os.PathLike) -> list[tuple[int, Path]]:
    """The complete ``checkpoints/step_*`` of a run directory, oldest first, as (step, path): the one scan of a
    run's checkpoint directory (``resolve_checkpoint`` and the trainer's resume / rotation use it)."""
    ckdir = Path(run) / "checkpoints"
    out = []
    if ckdir.is_dir():
        for d in ckdir.iterdir():
            m = _STEP_RE.match(d.name)
            if m and is_complete(d):
                out.append((int(m.group(1)), d))
    return sorted(out)


def list_checkpoints(run: str | os.PathLike) -> list[tuple[int, Path]]:
    """:func:`step_checkpoints` plus a complete ``final`` (at the step its meta.json names), oldest first; at
    equal steps ``final`` comes last."""
    run = Path(run)
    out = step_checkpoints(run)
    if is_complete(run / "final"):
        try:
            step = read_meta(run / "final").get("step")
        except OSError:
            step = None
        if isinstance(step, int):
            out.append((step, run / "final"))
    return sorted(out, key=lambda sp: (sp[0], sp[1].name != "final"))


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint directory, or a run directory: its ``final/`` if complete, else the newest complete
    ``checkpoints/step_*``. Temporary (hidden) and incomplete directories are ignored."""
    p = Path(path)
    if not p.exists():
        from locvtp.errors import broken_link

        raise CheckpointError(f"checkpoint path {p}: {broken_link(p)}" if broken_link(p) else
                              f"checkpoint path does not exist: {p}")
    if is_complete(p):
        return p
    if not p.is_dir():
        raise CheckpointError(f"{p}: not a checkpoint directory")
    if is_complete(p / "final"):
        return p / "final"
    steps = step_checkpoints(p)
    ckdir = p / "checkpoints"
    if steps:
        return steps[-1][1]
    raise CheckpointError(
        f"{p}: no complete checkpoint found (looked for {META_FILE}+{MODEL_FILE} in {p}, {p / 'final'}, "
        f"{ckdir}/step_*)"
    )


def _load_cfg(path: Path) -> DictConfig:
    return read_checkpoint_config(path)[0]


def read_checkpoint_config(path: str | os.PathLike) -> tuple[DictConfig, dict]:
    """(the config of checkpoint directory ``path``, the mapping its config.yaml holds). A resumed run compares
    the two: a key the file does not hold was added to locvtp after the run wrote it and takes today's default."""
    f = Path(path) / CONFIG_FILE
    # written before objective.window became objective.max_offset: renamed quietly (the user cannot edit it)
    raw = rename_deprecated_keys(read_yaml_mapping(f, error=CheckpointError, missing="missing config"), quiet=True)
    schema = Config if "model" in raw else ModelConfig
    try:
        return OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.create(raw)), raw
    except Exception as exc:  # noqa: BLE001 - OmegaConf errors name the key
        raise CheckpointError(f"{f}: {exc}") from None


def _read_meta(path: Path) -> dict:
    f = path / META_FILE
    try:
        meta = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{f}: unreadable: {exc}") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{f}: not a locvtp checkpoint (format={meta.get('format')!r})")
    if int(meta.get("version", 0)) > FORMAT_VERSION:
        raise CheckpointError(f"{f}: checkpoint format version {meta['version']} is newer than this locvtp "
                              f"({FORMAT_VERSION}); upgrade locvtp")
    return meta


def read_meta(path: str | os.PathLike) -> dict:
    """meta.json of a checkpoint (or of the checkpoint a run dir resolves to)."""
    return _read_meta(resolve_checkpoint(path))


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                    verify: bool = True) -> Checkpoint:
    """Load model (eval mode), tokenizer, config and objective state. ``verify`` checks the sha256 in meta.json."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .model import LocVTP

    ck = resolve_checkpoint(path)
    meta = _read_meta(ck)
    mfile = ck / MODEL_FILE
    sha = file_sha256(mfile)
    if verify and meta.get("sha256") and meta["sha256"] != sha:
        raise CheckpointError(f"{mfile}: sha256 {sha[:12]}… does not match meta.json ({meta['sha256'][:12]}…): "
                              "the file is corrupt or was replaced")
    try:
        tensors = load_file(str(mfile), device=str(map_location))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{mfile}: corrupt or not a safetensors file: {exc}") from None
    cfg = _load_cfg(ck)
    build_cfg = cfg.copy()
    mcfg = build_cfg.model if "model" in build_cfg else build_cfg
    if mcfg.text.name == "hf":
        hf_dir = ck / HF_TEXT_DIR
        if not (hf_dir / "config.json").is_file():
            raise CheckpointError(f"{hf_dir / 'config.json'}: missing (needed to rebuild the HF text encoder)")
        mcfg.text.path = str(hf_dir)
    try:
        model = LocVTP.from_config(build_cfg, load_pretrained=False)
    except Exception as exc:  # noqa: BLE001 - name the checkpoint
        raise CheckpointError(f"{ck / CONFIG_FILE}: cannot build the model: {exc}") from exc
    model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    objective_state = {k[len("objective."):]: v for k, v in tensors.items() if k.startswith("objective.")}
    own = model.state_dict()
    missing = sorted(set(own) - set(model_state))
    unexpected = sorted(set(model_state) - set(own))
    if missing or unexpected:
        raise CheckpointError(f"{mfile}: weights do not match {CONFIG_FILE}: missing {missing[:8]}"
                              f"{'…' if len(missing) > 8 else ''}, unexpected {unexpected[:8]}"
                              f"{'…' if len(unexpected) > 8 else ''}")
    try:
        model.load_state_dict(model_state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{mfile}: {exc}") from None
    model.to(map_location).eval()
    tokenizer = None
    if (ck / TOKENIZER_FILE).is_file():
        from .data.tokenizer import Tokenizer

        tokenizer = Tokenizer.load(ck / TOKENIZER_FILE)
    return Checkpoint(model=model, tokenizer=tokenizer, cfg=cfg, path=ck, sha256=sha,
                      objective_state=objective_state or None, meta=meta)


def verify_checkpoint(path: str | os.PathLike, need_trainer_state: bool = False) -> Path:
    """Check that a checkpoint directory loads, without building the model: meta.json is ours, the weights
    match its sha256 and their safetensors header reads, config.yaml parses, and trainer_state.pt (required
    with ``need_trainer_state``) loads with ``weights_only=True``. Returns the directory, or raises
    :class:`CheckpointError` naming the file and what is wrong (what ``--resume auto`` reports before it
    falls back to an earlier checkpoint)."""
    from safetensors import SafetensorError, safe_open

    ck = Path(path)
    if not is_complete(ck):
        raise CheckpointError(f"{ck}: incomplete checkpoint (no {META_FILE} or {MODEL_FILE})")
    meta = _read_meta(ck)
    mfile = ck / MODEL_FILE
    if meta.get("sha256") and meta["sha256"] != file_sha256(mfile):
        raise CheckpointError(f"{mfile}: does not match the sha256 in {META_FILE}: the file is corrupt or was "
                              "replaced")
    try:
        with safe_open(str(mfile), framework="pt") as fh:
            fh.keys()
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{mfile}: corrupt or not a safetensors file: {exc}") from None
    _load_cfg(ck)
    if need_trainer_state and not (ck / TRAINER_FILE).is_file():
        raise CheckpointError(f"{ck / TRAINER_FILE}: missing (a model-only checkpoint cannot resume training)")
    if (ck / TRAINER_FILE).is_file():
        load_trainer_state(ck)
    return ck


def load_trainer_state(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Optional[dict]:
    """The trainer state of a checkpoint (``None`` if it has none), loaded with ``weights_only=True``."""
    ck = resolve_checkpoint(path)
    f = ck / TRAINER_FILE
    if not f.is_file():
        return None
    try:
        return torch.load(f, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - UnpicklingError and friends; re-raised with the file name
        raise CheckpointError(f"{f}: cannot load with weights_only=True (corrupt, or contains objects other than "
                              f"tensors/numbers/strings/containers): {exc}") from None


__all__ = [
    "Checkpoint", "CheckpointError", "is_complete", "list_checkpoints", "load_checkpoint", "load_trainer_state",
    "read_checkpoint_config", "read_meta", "resolve_checkpoint", "save_checkpoint", "step_checkpoints",
    "verify_checkpoint",
]
