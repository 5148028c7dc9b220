"""The run directory of ``locvtp pretrain``: the checks before anything is written, resume discovery, rotation.

Layout (docs/training.md, "The run directory")::

    config.yaml  tokenizer/  metrics.jsonl  bad_samples.jsonl  video_index.json  cache/
    checkpoints/step_0000100/ ...   (the last ``train.keep_last``)      final/   (complete checkpoint)

The scan of ``checkpoints/step_*`` is :func:`locvtp.checkpoint.list_checkpoints` (one scan for the loader and
the trainer).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Optional

from locvtp.checkpoint import list_checkpoints
from locvtp.config import ConfigError
from locvtp.errors import UsageError

PROG = "locvtp pretrain"

__all__ = ["RUN_ENTRIES", "RunExistsError", "check_model_paths", "check_run_dir", "claim_run_dir",
           "clean_partial_writes", "existing_path", "find_resume", "list_checkpoints", "rotate_checkpoints"]

# What a run writes at the top of its directory (the rest of --out is never touched).
RUN_ENTRIES = ("config.yaml", "tokenizer", "metrics.jsonl", "bad_samples.jsonl", "video_index.json", "cache",
               "checkpoints", "final", "tensorboard", "val")
RUN_WRITER = "pretrain"


class RunExistsError(UsageError, FileExistsError):
    """``--out`` already holds checkpoints and no ``--resume`` was given."""


def find_resume(run: Path, resume: Optional[str], warn: bool = True) -> Optional[Path]:
    """The checkpoint to resume from: None (fresh run), the newest one of ``run`` that loads (``auto``), or the
    one ``resume`` names.

    Why ``auto`` checks what it picks: a checkpoint whose files were damaged after it was written (a truncated
    copy, a full disk) would stop every later resume. ``auto`` names it in one warning and takes the newest
    earlier checkpoint that passes :func:`locvtp.checkpoint.verify_checkpoint`; only when none does is it an
    error. An explicit path is not replaced by another: its problem is the error.
    """
    from locvtp.checkpoint import CheckpointError, resolve_checkpoint, verify_checkpoint

    if resume is None:
        if list_checkpoints(run):
            raise RunExistsError(f"{run} already holds checkpoints: pass --resume auto to continue that run, "
                                 "or choose another --out")
        return None
    if resume == "auto":
        found = list_checkpoints(run)
        failures = []
        for _, path in reversed(found):
            try:
                verify_checkpoint(path, need_trainer_state=True)
            except CheckpointError as exc:
                failures.append((path, exc))
                continue
            if warn:
                from locvtp.cliargs import warn as _warn

                for bad, exc in failures:
                    _warn(PROG, f"--resume auto: skipping the damaged checkpoint {bad} ({exc}); resuming from "
                                f"{path} instead")
            return path
        if failures:
            raise CheckpointError(f"--resume auto: no checkpoint of {run} loads; the newest, {failures[0][0]}: "
                                  f"{failures[0][1]}")
        return None
    try:
        return resolve_checkpoint(os.path.expanduser(str(resume)))
    except CheckpointError as exc:
        raise UsageError(f"--resume {resume}: {exc}") from None


def rotate_checkpoints(run: Path, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` step checkpoints (after a new one is safely in place)."""
    found = [(s, p) for s, p in list_checkpoints(run) if p.parent.name == "checkpoints"]
    for _, path in found[:-keep_last] if keep_last > 0 else found:
        shutil.rmtree(path, ignore_errors=True)


def clean_partial_writes(run: Path) -> None:
    """Remove the temporaries a killed write left behind in the run (``.step_*.tmp-*``, ``.final.tmp-*``, a config
    file's ``.config.yaml.tmp-*``): only names ``locvtp.files`` gives its temporaries."""
    from locvtp.files import remove_temporaries_in

    for parent in (run, run / "checkpoints"):
        remove_temporaries_in(parent)


def check_run_dir(run: Path, cfg: Any) -> None:
    """Mistakes found before anything is written: ``--out`` is a file, or is (or contains) the data root — a
    run writes config.yaml, tokenizer/ and logs into its directory; and data that the video encoder cannot
    take (pixels into the features encoder, or the reverse)."""
    from locvtp.files import overlaps
    from locvtp.model.video import is_pixel_encoder

    if run.exists() and not run.is_dir():
        raise UsageError(f"--out {run} is a file; the run directory must be a directory (or not exist yet)")
    _check_run_owned(run)
    root = Path(os.path.expanduser(str(cfg.data.root)))
    how = overlaps(run, root)
    if how in ("is", "contains"):
        raise UsageError(f"--out {run} {how} data.root {root}: choose a run directory apart from the data "
                         "(nothing was written)")
    pixels, name = cfg.data.kind == "videos", str(cfg.model.video.name)
    if pixels != is_pixel_encoder(name):
        need = "tiny3d or c3d" if pixels else "features"
        raise ConfigError(f"data.kind={cfg.data.kind} needs model.video.name={need}, got model.video.name={name}")


def _is_run_of_ours(run: Path) -> bool:
    """``run`` was made by ``pretrain``: its manifest says so, or (a run of a locvtp before manifests) it holds
    a checkpoint locvtp wrote."""
    from locvtp.files import read_manifest

    m = read_manifest(run)
    return (m is not None and m.writer == RUN_WRITER) or bool(list_checkpoints(run))


def _check_run_owned(run: Path) -> None:
    """Refuse an existing ``--out`` that is not a run directory of ours but holds a name a run writes (a user's
    ``config.yaml``, ``checkpoints/``, ...): those would be replaced or deleted. Other files there are left alone,
    so a run may go into a folder that holds, say, notes or a log."""
    from locvtp.errors import NotOwnedError

    if not run.is_dir() or _is_run_of_ours(run):
        return
    clash = [n for n in RUN_ENTRIES if (run / n).exists() or (run / n).is_symlink()]
    if clash:
        raise NotOwnedError(f"--out {run} is not a run directory of `locvtp pretrain` but holds {', '.join(clash)}, "
                            "which a run writes: refusing to replace them (nothing was written); choose another "
                            "--out or move them")


def claim_run_dir(run: Path) -> None:
    """Create the run directory (rank 0, after :func:`check_run_dir`) and record it as ``pretrain``'s, so later
    runs and resumes know its entries (RUN_ENTRIES) are ours to replace."""
    from locvtp.files import OutputLock, write_manifest

    run.mkdir(parents=True, exist_ok=True)
    with OutputLock(run / ".locvtp-manifest.json", RUN_WRITER, wait=True):
        write_manifest(run, RUN_WRITER, RUN_ENTRIES)


def existing_path(key: str, value: Any) -> Path:
    """``value`` as a path (``~`` expanded), or a ConfigError naming ``key`` when nothing is there."""
    p = Path(os.path.expanduser(str(value)))
    if not p.exists():
        raise ConfigError(f"{key}: {p} does not exist")
    return p


def _check_clip_paths(cfg: Any, resuming: bool) -> None:
    """``model.text.name=clip``: the tower's weights (not re-read when resuming) and CLIP's tokenizer (a resumed run
    has its own), each a one-line error saying what to download and from where."""
    from locvtp.data.clip_tokenizer import MERGES_HELP
    from locvtp.model.weights import WEIGHTS_HELP

    t = cfg.model.text
    if not resuming:
        if not t.weights or not Path(os.path.expanduser(str(t.weights))).is_file():
            what = f"model.text.weights: {t.weights} is not a file" if t.weights else \
                "model.text.name=clip needs model.text.weights"
            raise ConfigError(f"{what}; download {WEIGHTS_HELP['clip']}")
        tok = cfg.data.get("tokenizer")
        if not tok or not Path(os.path.expanduser(str(tok))).exists():
            what = f"data.tokenizer: {tok} does not exist" if tok else "model.text.name=clip needs data.tokenizer"
            raise ConfigError(f"{what}; download {MERGES_HELP}")


def check_model_paths(cfg: Any, resuming: bool) -> None:
    """The files the model is built from exist (before any data is read). A resumed run takes every weight from
    its checkpoint, so ``model.video.pretrained`` is not needed then; ``model.text.path`` still is (the HF
    architecture and tokenizer are read from it)."""
    v, t = cfg.model.video, cfg.model.text
    if v.pretrained and not resuming:
        p = existing_path("model.video.pretrained", v.pretrained)
        if not p.is_file():
            raise ConfigError(f"model.video.pretrained: {p} is not a file (expected a .safetensors or torch state "
                              "dict)")
    if t.name == "clip":
        _check_clip_paths(cfg, resuming)
    if t.name == "hf":
        if not t.path:
            raise ConfigError("model.text.name=hf needs model.text.path (a local directory of a BERT-family model)")
        if not t.allow_hub:
            existing_path("model.text.path", t.path)
