"""Typed configuration: dataclass defaults, YAML files, dotted CLI overrides (OmegaConf).

Why structured configs: a typo in a YAML key or an override (``train.batchsize=4``) fails at once with the
key's name instead of being silently ignored, and every ablation row is one ``key=value`` away.

This module is also the one place that reads a YAML mapping (:func:`read_yaml_mapping`), finds a shipped config
by name (:func:`find_config`) and renames deprecated keys (:data:`RENAMED_KEYS`, one line on stderr each).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from omegaconf import MISSING, DictConfig, OmegaConf  # noqa: F401  (MISSING re-exported for modules)
from omegaconf.errors import OmegaConfBaseException
from locvtp.errors import UsageError


class ConfigError(UsageError):
    """A configuration file or override is invalid; the message names the file and key."""


@dataclass
class DataConfig:
    # Where the data lives. For the synthetic world this is the directory `locvtp synth` wrote.
    root: str = "world"
    # "videos": decode MP4s (pixels) ; "features": pre-extracted per-clip features (HDF5 file or .npy dir).
    kind: str = "videos"
    # Caption format: "howto100m" (caption.json) or "webvid" (CSV).
    captions: str = "howto100m"
    caption_file: str = "pretrain/caption.json"  # relative to root unless absolute
    video_dir: str = "videos"  # relative to root unless absolute
    features: Optional[str] = None  # kind=features: HDF5 file, npy-dir or npz-dir (what `locvtp extract` writes)
    split_file: Optional[str] = None  # optional list of video ids to use
    num_clips: int = 8  # T: clips per training sample
    frames_per_clip: int = 4  # F: frames sampled per clip
    frame_size: int = 32  # H = W after resize/crop
    clip_seconds: float = 1.0  # temporal extent of one clip
    max_words: int = 24  # L: token budget per sentence (incl. special tokens)
    jitter_seconds: float = 1.0  # misalignment jitter of narration windows (training)
    num_workers: int = 2
    # Samples of one video placed next to each other in the batch order, in runs of up to this many (1 = plain
    # shuffle). > 1 puts other moments of the same video in the batch as hard negatives (docs/training.md).
    group_size: int = 1
    cache: bool = True  # pre-decode videos to a memory-mapped uint8 cache (fast CPU training)
    tokenizer: Optional[str] = None  # tokenizer.json / HF tokenizer dir; None = train WordPiece on captions
    vocab_size: int = 2000  # when training a tokenizer
    # Where the pre-decoded frame cache lives (data.cache=true). None = in the prepared corpus's directory (where
    # `locvtp prepare` builds it). Point runs on other corpora of the same videos at one directory to decode once
    # (the cache is keyed by frame size and the video files).
    cache_dir: Optional[str] = None
    # Where the prepared corpus lives (docs/training.md, "At scale"): the caption file converted once into
    # memory-mapped columns, plus its per-tokenizer and per-video caches. None = $LOCVTP_CACHE/prepared, else
    # ~/.cache/locvtp/prepared. Each corpus is a subdirectory named by a key of its inputs.
    prepared_dir: Optional[str] = None
    # kind=features: seconds between consecutive feature rows when the extraction does not say (its own
    # `stride_seconds` wins: HDF5 attribute, or meta.json of an npy-dir / npz-dir); None = data.clip_seconds.
    feature_stride: Optional[float] = None


@dataclass
class VideoEncoderConfig:
    name: str = "tiny3d"  # tiny3d | c3d | features
    width: int = 32  # tiny3d base channels
    # features: input width (e.g. 512 S3D, 4096 C3D, 2048 ResNet); null = read from data.features by pretrain
    in_dim: Optional[int] = None
    hidden: int = 512  # features: MLP width
    temporal_layers: int = 0  # transformer layers across clips (features and tiny3d)
    temporal_heads: int = 4
    pretrained: Optional[str] = None  # local backbone state dict (c3d, tiny3d): .safetensors or weights-only torch file
    freeze: bool = False
    dropout: float = 0.1
    max_clips: int = 512  # learned temporal position table size (interpolated beyond; only with temporal_layers)
    norm: str = "group"  # tiny3d normalization: group (per-sample, padding-safe) | batch


@dataclass
class TextEncoderConfig:
    name: str = "transformer"  # transformer | hf | clip
    path: Optional[str] = None  # hf: local directory of a BERT-family model (e.g. DistilBERT)
    # clip: local CLIP weights (OpenAI .pt, open_clip .bin / .safetensors); its text tower's shape fills
    # vocab_size, width, layers, heads, max_len (context length) and embed_dim (values given for them are replaced)
    weights: Optional[str] = None
    activation: str = "quick_gelu"  # clip: quick_gelu (OpenAI, open_clip *-quickgelu) | gelu (open_clip LAION)
    embed_dim: Optional[int] = None  # clip: text_projection's output width (filled from the weights)
    vocab_size: int = 2000  # transformer: filled from the tokenizer by the trainer
    width: int = 128
    layers: int = 2
    heads: int = 4
    max_len: int = 64
    pooling: str = "cls"  # cls | mean
    freeze: bool = False
    dropout: float = 0.1
    allow_hub: bool = False  # hf: explicit opt-in to treat `path` as a hub name (downloads); off = local dirs only


@dataclass
class ModelConfig:
    dim: int = 256  # joint embedding space (the authors' 256-d)
    video: VideoEncoderConfig = field(default_factory=VideoEncoderConfig)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    proj_dropout: float = 0.1


@dataclass
class LossWeights:
    coarse: float = 1.0
    fine: float = 1.0
    temporal: float = 1.0
    # the release's splice classifier (METHOD.md §3b, docs/method.md "The release's form"): 0 = off (no second
    # video-encoder forward); the release used 1
    splice: float = 0.0


@dataclass
class ObjectiveConfig:
    """The objective's options: the one place each is written with its default. ``LocVTPObjective`` takes its
    options from here whether it is built from a config or in Python (``locvtp.objectives.objective_options``),
    so a key left out means the same everywhere."""

    # Which terms (METHOD.md §1-3); every ablation row of docs/method.md is a combination of these keys.
    coarse: bool = True
    fine: bool = True
    temporal: bool = True
    topk: int = 1  # k of the correspondence discovery (§2), clipped to the valid words / clips
    intra_negatives: bool = False  # also push away the unselected words / clips of the same pair
    soft: bool = False  # softmax-weighted positives over the top-k instead of the hard set
    max_offset: int = 2  # W: context offsets δ in [-W, W] \ {0} (§3, project choice); was objective.window
    sigma: float = math.inf  # ω(δ) = exp(-|δ|/σ); inf = uniform weights (project choice)
    head: str = "mlp"  # linear | mlp (context projection head)
    head_hidden: Optional[int] = None  # hidden width of the mlp head (None = dim)
    # negatives of the word-anchored temporal term (§3): "clips" = raw clips of the other videos (METHOD.md);
    # "warped" = their warped clips g(c, δ), which removes the warped-vs-raw shortcut (docs/method.md §3);
    # "within" = only the other warped clips of the same video (docs/method.md "Options"; not the release's: its
    # negatives are raw clips and words of the same sample, objective.temporal_form=release)
    temporal_negatives: str = "clips"
    # Issue 15's suspects of the temporal term, each one key away (docs/method.md "Options"; defaults = METHOD.md
    # except stopwords, adopted on the evidence there):
    # reference and context clip both inside the caption's own span (offsets drawn in the dataset)
    context_in_span: bool = False
    # detach the context clip before g: no gradient into the clip encoder through the context (g still trains)
    context_stop_grad: bool = False
    # which directions of §3 train: both = ½(L_tz + L_tw); clip = L_tz (warped clip -> words); word = L_tw
    temporal_directions: str = "both"
    # the form of the temporal term (issue 23; docs/method.md "The release's form"): "method" = METHOD.md §3 (a
    # neighbouring clip warped by g); "release" = METHOD.md §3b, the authors' release with its bugs corrected (a
    # word of the same sentence / a clip of the same video warped by Linear(1, D) offset encodings, K raw
    # same-sample negatives, no distance weighting)
    temporal_form: str = "method"
    release_negatives: int = 4  # K of temporal_form=release: raw same-sample words / clips per anchor
    # false: the temporal term sees detached words (no gradient from it into the text encoder or its projection)
    temporal_text_grad: bool = True
    # none | english: a fixed English stop-word list is masked from the discovered positives and word anchors
    stopwords: str = "english"  # project choice (issue 15; docs/method.md "Options"): METHOD.md is "none"
    tau_fine: float = 0.07  # τ_f, fixed
    logit_scale_init: float = 1.0 / 0.07  # 1/τ_c at init (learnable, CLIP)
    logit_scale_max: float = 100.0
    weights: LossWeights = field(default_factory=LossWeights)
    gather: bool = True  # under DDP, gather features (with gradients) from all ranks before any loss
    bf16_products: bool = False  # bf16 (B·T)x(B·L) products / exp matrix, fp32 sums (docs/method.md); faster on AVX512-BF16
    # Schedule of the fine-grained and temporal terms (project choice, docs/method.md "Ramp"): their weights are
    # multiplied by 0 before step ramp_start, then rise linearly to 1 over ramp_steps. Discovered positives are
    # only meaningful once the joint space is; from-scratch encoders otherwise collapse onto one word per sentence.
    ramp_start: int = 0
    ramp_steps: int = 0


@dataclass
class TrainConfig:
    batch_size: int = 32  # global batch (split across ranks under DDP)
    max_steps: int = 300
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup_steps: int = 30
    grad_clip: float = 1.0
    # learning-rate factor of the video backbone (the pixel CNN; e.g. 0.1 to fine-tune a pretrained one gently;
    # 0 keeps it fixed but still in train mode, unlike model.video.freeze)
    backbone_lr_scale: float = 1.0
    accum_steps: int = 1
    bf16: bool = False
    save_every: int = 100
    keep_last: int = 2
    log_every: int = 10
    val_every: int = 0  # 0 = no periodic validation
    tensorboard: bool = False
    strict: bool = False  # fail on the first bad sample instead of skipping it
    min_lr_ratio: float = 0.0  # cosine schedule floor, as a fraction of lr
    device: str = "auto"  # auto (cuda if available) | cpu | cuda
    num_threads: int = 0  # torch intra-op threads of each training process; 0 = torch's default
    val_data: Optional[str] = None  # downstream data dir for periodic validation; None = data.root
    val_tasks: list = field(default_factory=lambda: ["retrieval", "grounding"])


@dataclass
class Config:
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# ------------------------------------------------------------------------------------------------ YAML, names, renames
def read_yaml_mapping(path: str | Path, error: Optional[type[Exception]] = None, missing: str = "file not found") -> dict:
    """The mapping at the top of the YAML file ``path`` ({} for an empty file). Anything else — no such file,
    invalid YAML, another top-level type — raises ``error`` (default :class:`ConfigError`) naming the file."""
    import yaml  # PyYAML ships with OmegaConf

    error = error or ConfigError
    path = Path(path)
    if not path.is_file():
        raise error(f"{missing}: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise error(f"{path}: invalid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise error(f"{path}: top level must be a mapping, got {type(raw).__name__}")
    return raw


def find_config(name: str | Path) -> Path:
    """A config path as given, else a shipped config by name (``pretrain_synthetic``, ``x.yaml`` or
    ``configs/x.yaml``): the installed package's ``locvtp/configs``, then the repository's and the working
    directory's ``configs/``."""
    p = Path(os.path.expanduser(str(name)))
    if p.is_file():
        return p
    fname = p.name if p.suffix == ".yaml" else f"{p.name}.yaml"
    here = Path(__file__).resolve().parent
    for cand in (here / "configs" / fname, here.parent.parent / "configs" / fname, Path.cwd() / "configs" / fname):
        if cand.is_file():
            return cand
    raise ConfigError(f"config file not found: {name} (also looked for {fname} in the package's configs and "
                      "./configs)")


# Old key -> new key. A file or override that uses the old key still works, with one line on stderr.
RENAMED_KEYS: dict[str, str] = {
    "objective.window": "objective.max_offset",  # a temporal offset range, not a time window (issue 16)
}


def _deprecation(old: str, new: str, where: str) -> None:
    from locvtp.cliargs import current_prog, warn

    warn(current_prog(), f"{where + ': ' if where else ''}{old} is deprecated, use {new} (same meaning)")


def rename_deprecated_keys(raw: dict, where: str = "", quiet: bool = False) -> dict:
    """``raw`` (a nested mapping, as read from YAML) with every key of :data:`RENAMED_KEYS` moved to its new
    name (the new key wins when both are given). Prints one deprecation line per renamed key unless ``quiet``
    (checkpoints written before the rename are read quietly)."""
    for old, new in RENAMED_KEYS.items():
        *parents, leaf = old.split(".")
        node = raw
        for k in parents:
            node = node.get(k) if isinstance(node, dict) else None
        if not isinstance(node, dict) or leaf not in node:
            continue
        value = node.pop(leaf)
        node.setdefault(new.rsplit(".", 1)[1], value)
        if not quiet:
            _deprecation(old, new, where)
    return raw


def _renamed_override(ov: str) -> str:
    """A dotted override with a deprecated key renamed (``objective.window=2`` -> ``objective.max_offset=2``)."""
    key, sep, value = ov.partition("=")
    bare = key.strip().lstrip("+~")
    if sep and bare in RENAMED_KEYS:
        _deprecation(bare, RENAMED_KEYS[bare], f"override {ov!r}")
        return key.replace(bare, RENAMED_KEYS[bare]) + sep + value
    return ov


def default_config() -> DictConfig:
    """The structured default config (typed: unknown keys and wrong types are rejected)."""
    return OmegaConf.structured(Config)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                base: Optional[DictConfig] = None) -> DictConfig:
    """Defaults <- YAML file <- dotted overrides (``train.max_steps=200``).

    ``base`` replaces the defaults: a resumed run starts from its own saved (complete) config, so only what the
    file and the overrides set can differ from it, never a default changed since (docs/training.md, "Resuming").
    Raises ConfigError naming the file or the override that is wrong.
    """
    cfg = default_config() if base is None else base.copy()
    if path is not None:
        path = Path(path)
        raw = rename_deprecated_keys(read_yaml_mapping(path, missing="config file not found"), where=str(path))
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.create(raw))
        except OmegaConfBaseException as exc:
            raise ConfigError(f"{path}: {exc}") from None
    overrides = [_renamed_override(ov) for ov in overrides]
    for ov in overrides:
        if "=" not in ov:
            raise ConfigError(f"override {ov!r} is not of the form key=value")
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([ov]))
        except OmegaConfBaseException as exc:
            raise ConfigError(f"override {ov!r}: {exc}") from None
    overridden = {ov.split("=", 1)[0].strip().lstrip("+~") for ov in overrides}
    validate_config(cfg, where=lambda key: f"{path}: " if path is not None and key not in overridden else "")
    return cfg


# ------------------------------------------------------------------------------------------------ value ranges
# Why one table: OmegaConf checks types, not meaning. ``model.dim=0`` used to train a 0-d model and exit 0, and
# ``train.batch_size=0`` died in a division deep in the sampler. Every key whose value has a meaningful range is
# listed here with its rule; a value outside is a ConfigError naming the key and the value, before anything runs.
# Rules: (">=", x) / (">", x) lower bounds, ("even>=", x) an even number >= x, ("in", lo, hi) a closed interval, ("choice", a, b, ...) a set of words.
_AT_LEAST_1 = (">=", 1)
_AT_LEAST_0 = (">=", 0)
_POSITIVE = (">", 0)
_PROBABILITY = ("in", 0.0, 1.0)
RULES: dict[str, tuple] = {
    "seed": _AT_LEAST_0,  # numpy's generators refuse negative seeds
    "data.kind": ("choice", "videos", "features"),
    "data.captions": ("choice", "howto100m", "webvid"),
    "data.num_clips": _AT_LEAST_1,
    "data.frames_per_clip": _AT_LEAST_1,
    "data.frame_size": _AT_LEAST_1,
    "data.clip_seconds": _POSITIVE,
    "data.max_words": (">=", 3),  # [CLS], at least one word, [SEP]
    "data.jitter_seconds": _AT_LEAST_0,
    "data.num_workers": _AT_LEAST_0,
    "data.group_size": _AT_LEAST_1,
    "data.vocab_size": _AT_LEAST_1,
    "data.feature_stride": _POSITIVE,  # or null (= data.clip_seconds)
    "model.dim": _AT_LEAST_1,
    "model.proj_dropout": _PROBABILITY,
    "model.video.name": ("choice", "tiny3d", "c3d", "features"),
    "model.video.width": ("even>=", 8),  # tiny3d halves it in its first layer
    "model.video.in_dim": _AT_LEAST_1,
    "model.video.hidden": _AT_LEAST_1,
    "model.video.temporal_layers": _AT_LEAST_0,  # 0 = no cross-clip transformer
    "model.video.temporal_heads": _AT_LEAST_1,
    "model.video.dropout": _PROBABILITY,
    "model.video.max_clips": _AT_LEAST_1,
    "model.video.norm": ("choice", "group", "batch"),
    "model.text.name": ("choice", "transformer", "hf", "clip"),
    "model.text.activation": ("choice", "quick_gelu", "gelu"),
    "model.text.embed_dim": _AT_LEAST_1,
    "model.text.vocab_size": _AT_LEAST_1,
    "model.text.width": _AT_LEAST_1,
    "model.text.layers": _AT_LEAST_1,
    "model.text.heads": _AT_LEAST_1,
    "model.text.max_len": (">=", 3),
    "model.text.pooling": ("choice", "cls", "mean"),
    "model.text.dropout": _PROBABILITY,
    "objective.topk": _AT_LEAST_1,
    "objective.max_offset": _AT_LEAST_1,
    "objective.sigma": _POSITIVE,  # inf = uniform weights
    "objective.head": ("choice", "linear", "mlp"),
    "objective.head_hidden": _AT_LEAST_1,  # or null (= model.dim)
    "objective.temporal_negatives": ("choice", "clips", "warped", "within"),
    "objective.temporal_directions": ("choice", "both", "word", "clip"),
    "objective.stopwords": ("choice", "none", "english"),
    "objective.temporal_form": ("choice", "method", "release"),
    "objective.release_negatives": _AT_LEAST_1,
    "objective.tau_fine": _POSITIVE,
    "objective.logit_scale_init": _POSITIVE,
    "objective.logit_scale_max": _POSITIVE,
    "objective.weights.coarse": _AT_LEAST_0,
    "objective.weights.fine": _AT_LEAST_0,
    "objective.weights.temporal": _AT_LEAST_0,
    "objective.weights.splice": _AT_LEAST_0,
    "objective.ramp_start": _AT_LEAST_0,
    "objective.ramp_steps": _AT_LEAST_0,
    "train.batch_size": _AT_LEAST_1,
    "train.max_steps": _AT_LEAST_1,
    "train.lr": _POSITIVE,
    "train.weight_decay": _AT_LEAST_0,
    "train.warmup_steps": _AT_LEAST_0,
    "train.grad_clip": _AT_LEAST_0,  # 0 = no clipping
    "train.backbone_lr_scale": _AT_LEAST_0,  # 0 = the backbone stays fixed
    "train.accum_steps": _AT_LEAST_1,
    "train.save_every": _AT_LEAST_0,  # 0 = only the final checkpoint
    "train.keep_last": _AT_LEAST_0,
    "train.log_every": _AT_LEAST_1,
    "train.val_every": _AT_LEAST_0,  # 0 = no periodic validation
    "train.min_lr_ratio": _PROBABILITY,
    "train.num_threads": _AT_LEAST_0,  # 0 = torch's default
}


def _broken_rule(value: Any, rule: tuple) -> Optional[str]:
    """What ``value`` must be, or None when it satisfies ``rule``."""
    kind = rule[0]
    if kind == "choice":
        return None if value in rule[1:] else "one of " + ", ".join(repr(c) for c in rule[1:])
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, float) and math.isnan(value):
        return "a number (not NaN)"
    if kind == ">=":
        return None if value >= rule[1] else f">= {rule[1]}"
    if kind == "even>=":
        return None if value >= rule[1] and value % 2 == 0 else f"an even integer >= {rule[1]}"
    if kind == ">":
        return None if value > rule[1] else f"> {rule[1]}"
    lo, hi = rule[1], rule[2]
    return None if lo <= value <= hi else f"in [{lo:g}, {hi:g}]"


def validate_config(cfg: Any, where: str | Callable[[str], str] = "") -> Any:
    """Check every key of :data:`RULES` present in ``cfg``: a ConfigError names the key, its value and the
    rule. ``where`` (or ``where(key)``) prefixes the message, e.g. the config file the value came from. Unset
    optional keys (null) are not checked. Returns ``cfg``."""
    prefix = where if callable(where) else (lambda key: where)
    for key, rule in RULES.items():
        try:
            value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        except OmegaConfBaseException as exc:
            raise ConfigError(f"{prefix(key)}{key}: {exc}") from None
        if value is None:
            continue
        need = _broken_rule(value, rule)
        if need is not None:
            raise ConfigError(f"{prefix(key)}{key}={value!r}: must be {need}")
    lsi, lsm = (OmegaConf.select(cfg, k, default=None) for k in ("objective.logit_scale_init",
                                                                  "objective.logit_scale_max"))
    if lsi is not None and lsm is not None and lsi > lsm:
        raise ConfigError(f"{prefix('objective.logit_scale_init')}objective.logit_scale_init={lsi!r} is above objective.logit_scale_max={lsm!r}")
    return cfg


def to_yaml(cfg: Any) -> str:
    return OmegaConf.to_yaml(cfg)


def save_config(cfg: Any, path: str | Path) -> None:
    """Write atomically (temporary file, fsync, then os.replace)."""
    from locvtp.files import atomic_write_text

    atomic_write_text(path, to_yaml(cfg))


def as_model_config(cfg: Any) -> DictConfig:
    """Accept a full Config or a ModelConfig; return the ModelConfig part."""
    if isinstance(cfg, (dict, DictConfig)) and "model" in cfg and "dim" not in cfg:
        return cfg["model"]
    if hasattr(cfg, "model") and not hasattr(cfg, "dim"):
        return cfg.model
    return cfg
