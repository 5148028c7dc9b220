"""The world on disk: :func:`generate_world` writes it (reusing a complete one, cleaning only its own files),
:func:`open_world` / :func:`read_manifest` read it back.

The manifest is written last and lists every file with its checksum, so its presence marks a complete world
and regeneration can delete exactly what an older world wrote, never a user's file.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from locvtp.errors import LocVTPError
from locvtp.world.plan import (
    ACTIONS, CLIP_SECONDS, COLOURS, COLOUR_WORDS, FPS, FRAME_SIZE, GENERATOR_VERSIONS, SHAPES, SHAPE_WORDS,
    WorldPlan, _check_version, check_request, plan_world,
)
from locvtp.world.render import render_video, write_mp4
from locvtp.world.annotations import _r2, build_annotations


# ------------------------------------------------------------------------------------------------- writing
IN_PROGRESS = ".synth-in-progress"
LAYOUT_ENTRIES = ("manifest.json", "ground_truth.json", "videos", "pretrain", "grounding", "retrieval",
                  "crosstask", "coin", "epic", IN_PROGRESS)


def _atomic_write(path: Path, data: bytes) -> None:
    from locvtp.files import atomic_write_bytes

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _manifest(plan: WorldPlan, files: dict[str, bytes]) -> dict[str, Any]:
    splits = {name: [v.vid for v in vids] for name, vids in plan.splits.items()}
    n_narr = len(json.loads(files["pretrain/caption.json"]))  # videos with narrations
    cap = json.loads(files["pretrain/caption.json"])
    counts = {
        "videos": sum(len(v) for v in splits.values()),
        "seconds": _r2(sum(v.duration for v in plan.videos())),
        "frames": int(sum(v.num_frames for v in plan.videos())),
        "pretrain_videos": n_narr,
        "pretrain_narrations": int(sum(len(c["text"]) for c in cap.values())),
        "events": int(sum(len(v.events) for v in plan.videos())),
        "grounding_test_queries": int(sum(len(v.events) for v in plan.splits["grounding_test"])),
        "retrieval_test_queries": len(plan.splits["retrieval_test"]),
        "crosstask_tasks": len(plan.crosstask_tasks),
        "crosstask_val_steps": int(sum(k is not None for v in plan.splits["crosstask_val"]
                                       for k in v.extra["steps"])),
        "coin_tasks": len(plan.coin_tasks),
        **{f"split_{k}": len(v) for k, v in splits.items()},
    }
    return {
        "generator": "locvtp.data.synthetic",
        "generator_version": plan.version,
        "seed": plan.seed,
        "preset": plan.preset,
        "fps": FPS,
        "frame_size": FRAME_SIZE,
        "clip_seconds": CLIP_SECONDS,
        "counts": counts,
        "splits": splits,
        "vocabulary": {"colours": list(COLOURS), "shapes": list(SHAPES), "actions": list(ACTIONS),
                       "colour_words": COLOUR_WORDS, "shape_words": SHAPE_WORDS},
        "annotation_sha256": {k: _sha256(v) for k, v in sorted(files.items())},
    }


def _is_complete(out: Path, manifest: dict[str, Any]) -> bool:
    for rel, digest in manifest.get("annotation_sha256", {}).items():
        f = out / rel
        if not f.is_file() or _sha256(f.read_bytes()) != digest:
            return False
    return all((out / "videos" / f"{vid}.mp4").is_file()
               for vids in manifest.get("splits", {}).values() for vid in vids)


class WorldExistsError(LocVTPError, FileExistsError):
    """The output directory holds something else (another world or foreign files); use force=True. A choice
    of paths, so a usage error (exit 2) like every refused output."""

    exit_code = 2


class NotAWorldError(LocVTPError, ValueError):
    """A directory given as a world holds something that is not a complete synthetic world (exit code 2)."""

    exit_code = 2


def _first_incomplete(out: Path, manifest: dict[str, Any]) -> str | None:
    """What keeps the world in `out` from being complete (a missing or changed file), or None."""
    for rel, digest in sorted(manifest.get("annotation_sha256", {}).items()):
        f = out / rel
        if not f.is_file():
            return f"{rel} is missing"
        if _sha256(f.read_bytes()) != digest:
            return f"{rel} differs from its sha256 in manifest.json"
    for vids in manifest.get("splits", {}).values():
        for vid in vids:
            if not (out / "videos" / f"{vid}.mp4").is_file():
                return f"videos/{vid}.mp4 is missing"
    return None


def open_world(path: str | Path) -> dict[str, Any] | None:
    """The manifest of the complete world in `path`, whatever its seed, preset and generator version; None when
    `path` holds no world at all (it does not exist, or is an empty directory).

    Anything else raises NotAWorldError with one line naming `path` and what is wrong: not a directory, files but
    no manifest.json (not a world, or an interrupted generation), a manifest that is not ours, or a world that is
    incomplete (a missing video, an annotation file whose bytes differ from its recorded sha256). Nothing is
    written or deleted: a world is used as it is, never regenerated.
    """
    out = Path(path)
    if not out.exists():
        return None
    if not out.is_dir():
        raise NotAWorldError(f"{out}: not a directory, so not a synthetic world")
    entries = sorted(p.name for p in out.iterdir())
    if not entries:
        return None
    mpath = out / "manifest.json"
    if not mpath.is_file():
        if IN_PROGRESS in entries:
            raise NotAWorldError(f"{out}: an interrupted world generation (no manifest.json, {IN_PROGRESS} "
                                 f"present); rerun `locvtp synth --out {out}` with its seed and preset, or delete it")
        raise NotAWorldError(f"{out}: not a synthetic world (no manifest.json; found {entries[:5]})")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise NotAWorldError(f"{mpath}: unreadable manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("generator") != "locvtp.data.synthetic":
        raise NotAWorldError(f"{mpath}: not the manifest of a locvtp synthetic world (no \"generator\": "
                             f"\"locvtp.data.synthetic\")")
    missing = [k for k in ("seed", "preset", "generator_version", "splits", "annotation_sha256") if k not in manifest]
    if missing:
        raise NotAWorldError(f"{mpath}: manifest lacks {missing}")
    problem = _first_incomplete(out, manifest)
    if problem is not None:
        raise NotAWorldError(f"{out}: incomplete world (seed={manifest['seed']}, preset={manifest['preset']!r}, "
                             f"generator {manifest['generator_version']}): {problem}")
    return manifest


def read_manifest(out_dir: str | Path) -> dict[str, Any] | None:
    path = Path(out_dir) / "manifest.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise WorldExistsError(f"{path}: unreadable manifest ({exc}); use --force to regenerate") from None


def _world_files(out: Path, manifest: dict[str, Any] | None) -> tuple[set[str], dict[str, str]]:
    """(every file the world in ``out`` wrote, relative; sha256 of its annotation files) from its manifest, or
    for an interrupted generation from the request recorded in ``IN_PROGRESS`` (nothing else is ours)."""
    if manifest is None:
        try:
            req = json.loads((out / IN_PROGRESS).read_text(encoding="utf-8"))
            plan = plan_world(int(req["seed"]), str(req["preset"]), _check_version(str(req["generator_version"])))
        except (OSError, ValueError, KeyError, TypeError):
            return {IN_PROGRESS}, {}
        manifest = _manifest(plan, build_annotations(plan))
    sha = {str(k): str(v) for k, v in manifest.get("annotation_sha256", {}).items()}
    videos = {f"videos/{v}.mp4" for vids in manifest.get("splits", {}).values() for v in vids}
    return {*sha, *videos, "manifest.json", IN_PROGRESS}, sha


def _remove_world_files(out: Path, manifest: dict[str, Any] | None) -> None:
    """Delete the files of the world in ``out`` (its manifest's, or an interrupted run's) and the folders they
    leave empty. Anything else inside the world's folders — a user's video in ``videos/``, notes in
    ``grounding/``, an annotation file edited since — is never deleted: it is refused first (NotOwnedError,
    naming the files), with or without ``force``."""
    from locvtp.errors import NotOwnedError
    from locvtp.files import some_names
    from locvtp.tempnames import temporary_of

    owned, sha = _world_files(out, manifest)
    mine: list[Path] = []
    foreign: list[str] = []
    for name in LAYOUT_ENTRIES:
        p = out / name
        if p.is_dir() and not p.is_symlink():
            inside = sorted(p.rglob("*"))
        else:
            inside = [p] if p.is_symlink() or p.exists() else []
        for q in inside:
            if q.is_dir() and not q.is_symlink():
                continue
            rel = q.relative_to(out).as_posix()
            if temporary_of(q.name) is not None and q.is_file() and not q.is_symlink():
                mine.append(q)  # a killed write's temporary (.NAME.tmp-PID-RAND): ours by its name
            elif rel not in owned or q.is_symlink() or (rel in sha and _sha256(q.read_bytes()) != sha[rel]):
                foreign.append(rel)
            else:
                mine.append(q)
    if foreign:
        shown = some_names(foreign)
        raise NotOwnedError(f"{out} holds files its synthetic world does not list ({shown}): refusing to delete or "
                            "replace them, with or without --force (nothing was deleted); move them or choose "
                            "another --out")
    for q in mine:
        q.unlink(missing_ok=True)
    for name in LAYOUT_ENTRIES:
        p = out / name
        if p.is_dir() and not p.is_symlink():
            for sub in sorted((d for d in p.rglob("*") if d.is_dir()), key=lambda d: -len(d.parts)):
                sub.rmdir()
            p.rmdir()


def generate_world(out_dir: str | Path, seed: int = 0, preset: str = "tiny", progress: bool = True,
                   force: bool = False, version: str | None = None) -> dict[str, Any]:
    """Write the synthetic world under `out_dir` and return its manifest.

    A directory that already holds the complete, up-to-date world of the same (seed, preset) — same generator
    version and the same annotation bytes — is reused as is (the returned manifest has ``"reused": True``).
    An outdated, incomplete or interrupted world of the same request is cleaned and regenerated. A directory
    holding a different world, or anything that is not a world of ours, raises WorldExistsError unless
    `force`; regeneration deletes only the files the old world's manifest lists (:func:`_remove_world_files`),
    and a file inside the world's folders that it does not list is refused (NotOwnedError) even with `force`.
    The manifest is written last, so its presence marks a complete world.

    ``version`` (GENERATOR_VERSIONS; None = the preset's `default_version`: 1.3 for tiny/demo, 1.5 for long and
    charades, 1.6 for recipe) is part of the request: a world of another version this code can still generate is a
    different world (WorldExistsError unless `force`); one of a version it no longer generates is outdated and
    regenerated.
    """
    out = Path(out_dir)
    version = check_request(preset, version)
    plan = plan_world(seed, preset, version)
    files = build_annotations(plan)  # cheap; also what a reusable world on disk must match byte for byte
    if out.exists():
        if not out.is_dir():
            raise WorldExistsError(f"{out} exists and is not a directory")
        existing = None
        try:
            existing = read_manifest(out)
        except WorldExistsError:
            if not force:
                raise
        if existing is not None and not force:
            old_version = existing.get("generator_version")
            same_request = (existing.get("seed") == seed and existing.get("preset") == preset
                            and (old_version == version or old_version not in GENERATOR_VERSIONS))
            if not same_request:
                raise WorldExistsError(
                    f"{out} holds a world with seed={existing.get('seed')} preset={existing.get('preset')!r} "
                    f"generator {old_version}; use --force to overwrite it")
            up_to_date = (old_version == version
                          and existing.get("annotation_sha256") == {k: _sha256(v) for k, v in sorted(files.items())})
            if up_to_date and _is_complete(out, existing):
                existing["reused"] = True
                return existing
            # else: an outdated or incomplete world of the same request, regenerated below
        entries = sorted(p.name for p in out.iterdir())
        foreign = [n for n in entries if n not in LAYOUT_ENTRIES]
        ours = existing is not None or (out / IN_PROGRESS).exists()
        if entries and not force and (foreign or not ours):
            # e.g. a directory of real videos/: never delete what we did not write
            raise WorldExistsError(f"{out} is not empty and not a synthetic world (found {entries[:5]}); "
                                   f"choose another directory or use --force")
        # Remove the world's own files (never anything else): no stale file of an older world may survive.
        _remove_world_files(out, existing)
    out.mkdir(parents=True, exist_ok=True)
    # marks an interrupted run as ours, so that re-running the same command may clean it up and regenerate
    _atomic_write(out / IN_PROGRESS, json.dumps({"seed": seed, "preset": preset,
                                                 "generator_version": version}).encode("utf-8"))

    video_dir = out / "videos"
    video_dir.mkdir(exist_ok=True)
    specs = list(plan.videos())
    bar = specs
    if progress:
        from locvtp.runtime import progress as tqdm

        bar = tqdm(specs, desc=f"synth {preset} seed={seed} v{version}", unit="video", file=sys.stderr)
    for spec in bar:
        write_mp4(video_dir / f"{spec.vid}.mp4", render_video(spec))
    for rel, data in files.items():
        _atomic_write(out / rel, data)
    manifest = _manifest(plan, files)
    _atomic_write(out / "manifest.json", (json.dumps(manifest, indent=1) + "\n").encode("utf-8"))
    (out / IN_PROGRESS).unlink()
    return manifest
