"""What a resumed run trains with: the run's own saved settings, plus only what the user changes, each named.

Why: a run rebuilt on resume from today's defaults + the YAML file + the overrides silently became another run when
a default changed in the code since it started (``objective.stopwords: 'none' -> 'english'`` switched its
objective with a warning), and the documented resume needed every start-up override repeated. Now the saved
config of the checkpoint resumed from (complete: every key, vocabulary size filled in) is the base; ``--config`` and
the overrides apply only the keys they set, and every difference from the run is one of three kinds
(docs/training.md, "Resuming"):

- :data:`FREE_KEYS`: how long, how fast, where and how often: applied, and named in one line on stderr;
- :data:`KEPT_KEYS`: what the checkpoint itself fixes (its vocabulary, the backbone it started from): the run's
  value is kept whatever is given;
- everything else — the data (``data.*`` but loading knobs), the objective (``objective.*`` but the ramp and the
  products' precision), the model (``model.*``), ``seed``, ``train.batch_size`` / ``train.accum_steps`` (the
  contrastive batch is the objective's negatives) — would make it another run: refused, one line naming each key,
  unless the key (or its section) is given to ``--allow-changes`` (e.g. ``data.root`` when the data folder moved).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from omegaconf import DictConfig, OmegaConf

from locvtp.config import ConfigError, default_config, find_config, load_config
from locvtp.errors import UsageError

PROG = "locvtp pretrain"

# Changes a resumed run applies (each named): budget, learning-rate schedule, precision, device and threads,
# loading, logging / checkpointing / validation cadence. None changes the data seen or the loss optimised.
FREE_KEYS = frozenset({
    "train.max_steps", "train.lr", "train.weight_decay", "train.warmup_steps", "train.min_lr_ratio",
    "train.grad_clip", "train.backbone_lr_scale", "train.bf16", "train.device", "train.num_threads",
    "train.save_every", "train.keep_last", "train.log_every", "train.val_every", "train.val_data", "train.val_tasks",
    "train.tensorboard", "train.strict",
    "data.num_workers", "data.cache", "data.cache_dir", "data.prepared_dir",
    "objective.ramp_start", "objective.ramp_steps", "objective.bf16_products",
})
# Fixed by the checkpoint: the vocabulary comes from its tokenizer, every weight from its weights (the backbone file
# the run started from is not read again, and the run keeps the record of it).
KEPT_KEYS = ("model.text.vocab_size", "model.video.pretrained")
# Filled at the run's start from its inputs when the config leaves them unset (null): the feature width read from
# data.features; with model.text.name=clip, the text tower's shape read from model.text.weights (the run's values
# are kept; the weights file is not read again).
FILLED_KEYS = ("model.video.in_dim",)
CLIP_TEXT_KEYS = ("model.text.width", "model.text.layers", "model.text.heads", "model.text.max_len",
                  "model.text.embed_dim")

__all__ = ["FREE_KEYS", "KEPT_KEYS", "allowed_names", "check_resume_settings", "flat_settings", "resume_config",
           "saved_settings"]


def flat_settings(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """``{dotted.key: value}`` of a config or a nested mapping (lists are values)."""
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        out.update(flat_settings(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def allowed_names(values: Optional[Iterable[str]]) -> tuple[str, ...]:
    """The keys and sections of ``--allow-changes`` (comma-separated, repeatable), each checked to exist."""
    names = tuple(n.strip() for v in (values or ()) for n in str(v).split(",") if n.strip())
    known = default_config()
    for n in names:
        if OmegaConf.select(known, n, default=KeyError) is KeyError:
            raise UsageError(f"--allow-changes {n}: no such setting (give keys like objective.stopwords,data.root or "
                             "a section like data)")
    return names


def saved_settings(ckpt: Path) -> tuple[DictConfig, list[str]]:
    """(the run's own config as checkpoint ``ckpt`` saved it, the keys its file does not hold: added to locvtp
    after the run wrote it, they take today's defaults)."""
    from locvtp.checkpoint import read_checkpoint_config

    cfg, raw = read_checkpoint_config(ckpt)
    if "model" not in raw or "train" not in raw:
        raise ConfigError(f"{Path(ckpt) / 'config.yaml'}: not a pre-training run's config (no model / train "
                          f"sections): {ckpt} cannot be resumed")
    return cfg, sorted(set(flat_settings(default_config())) - set(flat_settings(raw)))


def resume_config(run: Path, resume: str, config: Optional[str], overrides: Sequence[str],
                  warn: bool = True) -> tuple[DictConfig, Optional[Path]]:
    """(config, checkpoint) of ``pretrain --out RUN --resume auto|CKPT [--config FILE] [key=value ...]``: the
    checkpoint's saved config <- the keys FILE sets <- the overrides. ``--resume auto`` on a run without a
    checkpoint yet is a fresh start from ``--config`` (checkpoint None)."""
    from locvtp.training.rundir import find_resume

    ckpt = find_resume(run, resume, warn=warn)
    if ckpt is None:
        if config is None:
            raise UsageError(f"--resume auto: {run} holds no checkpoint to resume; give --config to start the run")
        return load_config(find_config(config), overrides), None
    saved, _ = saved_settings(ckpt)
    return load_config(find_config(config) if config is not None else None, overrides, base=saved), ckpt


def _show(v: Any) -> str:
    return "null" if v is None else repr(v) if isinstance(v, str) else str(v)


def _allowed(key: str, allow: Sequence[str]) -> bool:
    return any(key == a or key.startswith(a + ".") for a in allow)


def _check_optimizer_layout(saved: DictConfig, cfg: DictConfig) -> None:
    """``train.backbone_lr_scale`` 1 puts a pixel backbone's parameters in the usual two optimizer groups, any
    other value in two more: the saved optimizer state fits only the same layout."""
    from locvtp.model.video import is_pixel_encoder

    a, b = float(saved.train.backbone_lr_scale), float(cfg.train.backbone_lr_scale)
    if is_pixel_encoder(str(cfg.model.video.name)) and (a == 1.0) != (b == 1.0):
        raise ConfigError(f"train.backbone_lr_scale {a:g} -> {b:g}: between 1 and another value the optimizer's "
                          "parameter groups differ, so the run's optimizer state cannot be resumed; keep it "
                          f"{'at 1' if a == 1.0 else 'other than 1'}")


def _kept_keys(saved: DictConfig, cfg: DictConfig) -> list[str]:
    """:data:`KEPT_KEYS`, the :data:`FILLED_KEYS` ``cfg`` leaves unset and, for a CLIP text tower kept as such,
    :data:`CLIP_TEXT_KEYS`."""
    keys = list(KEPT_KEYS) + [k for k in FILLED_KEYS if OmegaConf.select(cfg, k, default=None) is None]
    if OmegaConf.select(saved, "model.text.name") == "clip" and OmegaConf.select(cfg, "model.text.name") == "clip":
        keys += CLIP_TEXT_KEYS
    return keys


def check_resume_settings(cfg: DictConfig, ckpt: Path, run: Path, allow: Sequence[str] = (),
                          announce: bool = True) -> tuple[DictConfig, Optional[str]]:
    """``cfg`` for resuming from ``ckpt``, checked against the run's own saved settings: a change that is neither
    free nor allowed is a ConfigError naming every such key. Returns ``cfg`` with the :data:`KEPT_KEYS` set to
    the run's values, and the one line naming the changes (None without any) for the caller to print once the
    checkpoint is restored (rank 0). ``announce``: warn about keys the saved config does not hold."""
    from locvtp.checkpoint import read_meta

    saved, missing = saved_settings(ckpt)
    cfg = cfg.copy()
    for key in _kept_keys(saved, cfg):
        OmegaConf.update(cfg, key, OmegaConf.select(saved, key), merge=False)
    old, new = flat_settings(saved), flat_settings(cfg)
    changes = [(k, old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    step = read_meta(ckpt).get("step")
    refused = [c for c in changes if c[0] not in FREE_KEYS and not _allowed(c[0], allow)]
    if refused:
        raise ConfigError(
            f"resuming {run} from step {step} would make it another run: "
            + ", ".join(f"{k} {_show(a)} -> {_show(b)}" for k, a, b in refused)
            + "; resume without them to keep the run's own settings (--config and overrides are optional with "
            f"--resume), or allow them explicitly with --allow-changes {','.join(k for k, _, _ in refused)}")
    _check_optimizer_layout(saved, cfg)
    if announce and missing:
        from locvtp.cliargs import warn

        warn(PROG, f"{ckpt / 'config.yaml'} does not hold {', '.join(missing)} (added to locvtp after the run "
                   "started): the current defaults apply")
    line = (f"{PROG}: resuming {run} from step {step} with changed settings: "
            + ", ".join(f"{k} {_show(a)} -> {_show(b)}" for k, a, b in changes)) if changes else None
    return cfg, line
