"""Video files and their ids: the one rule ``extract``, ``index``, ``search``, ``serve``, ``evaluate`` and
pre-training share, so that any id a command prints leads back to its file.

The rule
--------
* **Path -> id** (:func:`video_id`): the video's path relative to the video folder, without its extension, with
  every folder separator written ``__``: ``clip 3.mp4`` -> ``clip 3``; under ``extract --recursive``
  ``sub dir/clip 3.mp4`` -> ``sub dir__clip 3``. Spaces and any Unicode are kept as they are.
* **Id -> path** (:func:`find_video`): in the folder, ``<id><ext>``, else ``<id with __ read as />/<ext>``, for
  the first extension of :data:`VIDEO_EXTENSIONS` (as written, then upper case: EPIC-KITCHENS' ``.MP4``), then any
  other case of them (``.Mp4``). ``..`` and absolute paths are never produced.
* **Ids the rule cannot reverse** (a folder whose name ends with ``_``, a name holding ``__`` inside a subfolder,
  an id given in a list file): ``extract`` records the file's path in the feature store (``source``, relative to
  ``--videos`` or to the list file), ``index`` copies it into the index (``video_sources`` in ``meta.json``), and
  ``serve`` looks it up there first (:func:`find_video` with ``sources``).
* **Files sharing an id** (``clip.avi`` and ``clip.mkv``; ``a/b.mp4`` and ``a__b.mp4`` under ``--recursive``):
  the file :func:`find_video` returns is the video with that id, everywhere; ``extract`` lists the others in
  ``failures.jsonl`` (:func:`scan_videos`).

:data:`VIDEO_EXTENSIONS` is the one list of video extensions: what ``extract`` lists, what evaluation and
pre-training look up, what ``serve`` shows.
"""
from __future__ import annotations

import functools
import os
import stat
from pathlib import Path, PurePath
from typing import Mapping, Optional

from locvtp.errors import broken_link

VIDEO_EXTENSIONS = (
    ".mp4", ".m4v", ".mkv", ".webm", ".avi", ".mov", ".mpg", ".mpeg", ".flv", ".ts", ".wmv", ".3gp", ".ogv",
)
ID_SEPARATOR = "__"  # a folder separator inside an id


def is_video_name(name: str) -> bool:
    """A visible file name with a video extension (any case)."""
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS


def video_id(relpath: str | PurePath) -> str:
    """The id of the video at ``relpath`` (relative to the video folder): see the module docstring."""
    parts = list(PurePath(relpath).parts)
    parts[-1] = os.path.splitext(parts[-1])[0] if os.path.splitext(parts[-1])[1] else parts[-1]
    return ID_SEPARATOR.join(parts)


def id_to_relpaths(vid: str) -> list[str]:
    """The relative paths without extension :func:`find_video` tries for ``vid``, in order (never ``..``, an
    absolute path or an empty component)."""
    out = []
    for rel in dict.fromkeys([vid, vid.replace(ID_SEPARATOR, "/")]):
        parts = rel.split("/")
        if all(p not in ("", ".", "..") for p in parts) and "\\" not in rel and "\x00" not in rel:
            out.append(rel)
    return out


@functools.lru_cache(maxsize=64)
def _odd_case(directory: str, mtime_ns: int) -> dict[str, str]:
    """``{name without extension: file name}`` of the videos in ``directory`` whose extension is in neither lower
    nor upper case (``clip.Mp4``); the listing is cached per directory version (``mtime_ns``)."""
    exact = set(VIDEO_EXTENSIONS) | {e.upper() for e in VIDEO_EXTENSIONS}
    found: dict[str, str] = {}
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return found
    for name in names:
        stem, ext = os.path.splitext(name)
        if is_video_name(name) and ext not in exact:
            found.setdefault(stem, name)
    return found


def find_video(root: str | os.PathLike, vid: str, sources: Optional[Mapping[str, str]] = None) -> Optional[Path]:
    """The file of video ``vid`` under ``root`` by the rule of the module docstring, or None.

    ``sources``: ``{id: path}`` recorded where the rule cannot reverse an id (a feature store's or an index's
    ``video_sources``); a relative path there is relative to ``root``."""
    root = Path(root)
    if sources and sources.get(vid):
        p = Path(sources[vid])
        p = p if p.is_absolute() else root / p
        return p if p.is_file() else None
    for rel in id_to_relpaths(vid):
        base = root / rel
        for ext in VIDEO_EXTENSIONS:
            for e in (ext, ext.upper()):
                q = base.parent / (base.name + e)
                if q.is_file():
                    return q
        try:
            mtime = base.parent.stat().st_mtime_ns
        except OSError:
            continue
        odd = _odd_case(str(base.parent), mtime).get(base.name)
        if odd is not None and (base.parent / odd).is_file():
            return base.parent / odd
    return None


def video_path(root: str | os.PathLike, vid: str) -> Path:
    """The file of ``vid`` under ``root`` (:func:`find_video`), or ``root/<vid>.mp4`` when there is none: the path
    a "file not found" then names (pre-training's probes, the backbone's decoder)."""
    return find_video(root, vid) or Path(root) / f"{vid}.mp4"


def unusable_reason(path: Path) -> Optional[str]:
    """Why ``path`` (named like a video) cannot be read as a file, or None: a dangling or looping symbolic link,
    a folder, a special file."""
    link = broken_link(path)  # one wording for a dangling or looping link, whichever command meets it
    if link:
        return link
    try:
        st = path.stat()
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    if stat.S_ISDIR(st.st_mode):
        return "a folder named like a video (not a video file)"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    return None


def _walk(root: Path, recursive: bool, unlisted: list[OSError]) -> list[tuple[Path, bool]]:
    """(path, is a folder link) of every visible entry :func:`scan_videos` considers, sorted; folders starting with
    ``.`` are not entered, links to folders not followed (``serve`` does not follow them either); subfolders that
    cannot be listed are appended to ``unlisted``."""
    out: list[tuple[Path, bool]] = []
    if not recursive:
        return [(root / n, False) for n in sorted(os.listdir(root)) if not n.startswith(".")]
    os.listdir(root)  # the folder itself unreadable: the caller's error, not a skipped input
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False, onerror=unlisted.append):
        links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in links)
        out += [(Path(dirpath) / d, True) for d in links if not d.startswith(".")]
        out += [(Path(dirpath) / f, False) for f in filenames if not f.startswith(".")]
    return sorted(out)


def scan_videos(root: str | os.PathLike, recursive: bool = False
                ) -> tuple[list[tuple[str, Path]], list[dict[str, str]]]:
    """The videos of folder ``root``: ``([(id, path)] sorted by id, skipped)``, ``skipped`` holding one
    ``{"video_id", "path", "reason"}`` per file named like a video that is not one of them (a dangling or looping
    link, a file sharing its id with the file :func:`find_video` picks; under ``recursive`` a link to a folder,
    which is not followed)."""
    root = Path(root)
    by_id: dict[str, list[Path]] = {}
    skipped: list[dict[str, str]] = []
    unlisted: list[OSError] = []
    for path, folder_link in _walk(root, recursive, unlisted):
        vid = video_id(path.relative_to(root))
        if folder_link:
            skipped.append({"video_id": vid, "path": str(path), "reason": "symbolic link to a folder: not followed "
                            "(pass the folder itself as --videos, or link the videos one by one)"})
            continue
        if not is_video_name(path.name):
            continue
        reason = unusable_reason(path)
        if reason is not None:
            skipped.append({"video_id": vid, "path": str(path), "reason": reason})
            continue
        by_id.setdefault(vid, []).append(path)
    for exc in unlisted:
        where = Path(exc.filename or root)
        skipped.append({"video_id": video_id(where.relative_to(root)) if where != root else "", "path": str(where),
                        "reason": f"folder cannot be listed: {exc.strerror or exc}"})
    items = []
    for vid, paths in sorted(by_id.items()):
        chosen = find_video(root, vid) if len(paths) > 1 else paths[0]
        chosen = chosen if chosen in paths else paths[0]
        for other in paths:
            if other != chosen:
                skipped.append({"video_id": vid, "path": str(other), "reason": (
                    f"shares the video id {vid!r} with {chosen.relative_to(root)}, which is the video of that id "
                    "(an id is the path without its extension): rename one of them to extract both")})
        items.append((vid, chosen))
    skipped.sort(key=lambda r: (r["video_id"], r["path"]))
    return items, skipped


def source_of(root: str | os.PathLike, vid: str, path: Path) -> Optional[str]:
    """What a feature store records for video ``vid`` at ``path``: None when :func:`find_video` finds ``path`` from
    the id alone, else ``path`` relative to ``root`` (absolute when it lies outside)."""
    root = Path(root)
    found = find_video(root, vid)
    if found is not None and os.path.normcase(os.path.abspath(found)) == os.path.normcase(os.path.abspath(path)):
        return None
    try:
        return Path(os.path.abspath(path)).relative_to(os.path.abspath(root)).as_posix()
    except ValueError:
        return os.path.abspath(path)


__all__ = ["ID_SEPARATOR", "VIDEO_EXTENSIONS", "find_video", "id_to_relpaths", "is_video_name", "scan_videos",
           "source_of", "unusable_reason", "video_id"]
