"""How the package names its temporaries: ``.NAME.tmp-PID-RAND[.ext]`` (an atomic write in progress) and
``.NAME.old-PID-RAND`` (a replaced directory on its way out), and how to tell one back from a user's file.

Why a module of its own: writing them is :mod:`locvtp.files`' job and reporting an OS error on one as the output
the user named is :mod:`locvtp.errors`' (which :mod:`locvtp.files` imports); both need the one pattern, and
neither may import the other back. Standard library only.
"""
from __future__ import annotations

import os
import re
import uuid
from pathlib import Path
from typing import Optional

TMP_TAG = ".tmp-"
OLD_TAG = ".old-"

# What temp_path and old_path name (and the ``.NAME.tmp-PID`` of earlier versions): nothing else matches, so a
# sweep never takes a user's hidden file for one of ours.
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?:tmp|old)-\d+(?:-[0-9a-f]{8})?(?:\.[A-Za-z0-9]+)?$")


def _sibling(path: str | os.PathLike, tag: str, suffix: str = "") -> Path:
    p = Path(path)
    return p.with_name(f".{p.name}{tag}{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}")


def temp_path(path: str | os.PathLike, suffix: str = "") -> Path:
    """A hidden, unique sibling of ``path`` for writing it atomically (``suffix`` keeps an extension some
    writers insist on, e.g. ``.npy``)."""
    return _sibling(path, TMP_TAG, suffix)


def old_path(path: str | os.PathLike) -> Path:
    """A hidden, unique sibling where a replaced ``path`` waits for its removal."""
    return _sibling(path, OLD_TAG)


def temporary_of(name: str) -> Optional[str]:
    """The file name whose temporary ``name`` is (``.feats.h5.tmp-12-ab12cd34`` -> ``feats.h5``), else None."""
    m = _TEMPORARY.match(name)
    return m.group("name") if m else None
