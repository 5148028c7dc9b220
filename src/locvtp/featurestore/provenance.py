"""Which model made a feature file or index, and what may be done with it: the feature-provenance policy.

It lives here, beside the settings it reads (``checkpoint_sha256`` and ``embedding``, written by
:func:`store_settings` into every store ``locvtp extract`` and ``locvtp serve``'s cache write), so every reader
applies the same rule; :meth:`locvtp.predictor.LocVTPPredictor.check_features` is the front door that calls it
with the model's fingerprint.

Why: joint-space clip embeddings are only comparable with text embedded by the SAME model. The fingerprint is
the sha256 of the checkpoint's ``model.safetensors``. :func:`feature_origin` classifies a store by it and
:func:`check_provenance` applies the rule:

* ``own`` (the fingerprint equals the model's): used as they are. (The extraction's recorded ``frames_per_clip``
  / ``frame_size`` must also be the model's: :func:`recorded_mismatches` lists those that are not; the
  predictor names them with the checkpoint's config.)
* ``foreign`` (another fingerprint): refused with :class:`ForeignFeaturesError` (exit code 1) naming both
  fingerprints, unless allowed (``ground --allow-foreign-features``, ``search --allow-foreign-features``,
  ``allow_foreign_features=True``): then used, with a warning.
* ``unknown`` (no fingerprint: a foreign tool's file, or an index built from one): used, with a warning that
  nothing can check which model made them.
* ``backbone`` (``extract --backbone``: pre-projection features): not in the joint space; refused for grounding
  and search (a ``UsageError``).

``locvtp evaluate`` decodes the videos itself and takes ``--features`` only as an optional shortcut: there a
file is used as the model's embeddings only when it is ``own``; any other file is never compared with this
model's text and only feeds the supervised heads (whose inputs may come from any model). Features that are a
``features`` encoder's *input* (raw per-clip features) are not embeddings and carry no such check.
"""
from __future__ import annotations

from typing import Any, Mapping

from locvtp.errors import LocVTPError, UsageError

# The input settings an extraction records that must equal the model's (``data.*`` of its config).
RECORDED_INPUTS = ("frames_per_clip", "frame_size")


class ForeignFeaturesError(LocVTPError, ValueError):
    """Joint-space features or an index made by another checkpoint (see the module docstring's policy).

    ``reason`` is the message without the hint; :meth:`with_flag` names how a command overrides it."""

    def __init__(self, reason: str, flag: str = "allow_foreign_features=True") -> None:
        super().__init__(f"{reason} (pass {flag} to use them anyway)")
        self.reason = reason

    def with_flag(self, flag: str) -> "ForeignFeaturesError":
        """The same error naming a command-line flag instead of the keyword argument."""
        return ForeignFeaturesError(self.reason, flag)


def feature_origin(info: Mapping[str, Any], sha256: str) -> str:
    """``"own" | "foreign" | "unknown" | "backbone"``: who made a feature file or index (its settings ``info``),
    relative to the checkpoint with fingerprint ``sha256`` (the policy of the module docstring)."""
    if str(info.get("embedding") or "") == "backbone":
        return "backbone"
    theirs = str(info.get("checkpoint_sha256") or "")
    if not theirs or not sha256:
        return "unknown"
    return "own" if theirs == sha256 else "foreign"


def check_provenance(info: Mapping[str, Any], where: str, sha256: str, allow_foreign: bool = False,
                     allow_flag: str = "allow_foreign_features=True") -> list[str]:
    """Apply the policy to a store's settings ``info`` for the model with fingerprint ``sha256``: raise, or
    return the warnings to report. ``where`` names the store; ``allow_flag`` how the caller overrides a refusal."""
    origin = feature_origin(info, sha256)
    if origin == "backbone":
        raise UsageError(f"{where}: holds backbone features (extract --backbone), not the joint-space "
                         "embeddings text is compared with (extract without --backbone)")
    if origin == "unknown":
        return [f"{where} carries no checkpoint fingerprint (checkpoint_sha256): nothing can check that "
                "it was made by this model; if not, the scores compare two different models"]
    if origin == "foreign":
        msg = (f"{where} was made with checkpoint {str(info.get('checkpoint_sha256'))[:12]}…, this model is "
               f"{sha256[:12]}…: their embedding spaces differ")
        if not allow_foreign:
            raise ForeignFeaturesError(msg, allow_flag)
        return [msg]
    return []


def recorded_mismatches(info: Mapping[str, Any], expected: Mapping[str, int]) -> list[tuple[str, int]]:
    """The recorded input settings (:data:`RECORDED_INPUTS`) of ``info`` that differ from ``expected``, as
    ``(name, recorded value)``: an ``own`` store whose extraction saw other inputs than the model's."""
    out = []
    for name in RECORDED_INPUTS:
        rec = info.get(name)
        if rec is not None and name in expected and int(rec) != int(expected[name]):
            out.append((name, int(rec)))
    return out


def store_settings(model: Any, sha256: str, checkpoint: Any, clip_seconds: float, stride_seconds: float,
                   frames_per_clip: int, frame_size: int, embedding: str = "joint") -> dict[str, Any]:
    """The settings a feature store records (``meta.json`` / the HDF5 root): how its clips were cut and which
    model made them (``checkpoint_sha256``: what :func:`feature_origin` reads back)."""
    summary = model.summary() if hasattr(model, "summary") else type(model).__name__
    return {
        "embedding": str(embedding),
        "clip_seconds": float(clip_seconds),
        "stride_seconds": float(stride_seconds),
        "frames_per_clip": int(frames_per_clip),
        "frame_size": int(frame_size),
        "model": summary,
        "checkpoint_sha256": str(sha256),
        "checkpoint": str(checkpoint),
    }


__all__ = ["ForeignFeaturesError", "RECORDED_INPUTS", "check_provenance", "feature_origin", "recorded_mismatches",
           "store_settings"]
