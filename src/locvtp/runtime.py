"""Process-wide runtime settings: the CPU thread counts (changed only for a call's duration), the CPU model,
and progress bars that behave in a log file.

:func:`threads` is the one way the package sets how many threads torch (intra-op) and faiss (OpenMP) use: for the
``with`` block only, restoring both settings afterwards even when the block raises. ``extract``, ``index``,
``search``, ``ground``, ``evaluate`` and :class:`locvtp.predictor.LocVTPPredictor` all go through it.

Why a context and never a bare ``set_num_threads``: the package is also a library; a call that silently leaves a
caller's process at one thread (or at all cores) changes the speed of everything the caller does next. Why it
matters at all: on a busy shared CPU one thread is often several times faster than two, because a parallel
region waits for its slowest, descheduled thread (measurements: ``docs/benchmarks.md``).

faiss is touched only when it is already imported, or when ``faiss=True`` (importing it costs ~0.5 s, which a
command that never searches should not pay).
"""
from __future__ import annotations

import contextlib
import sys
from typing import Iterator, Optional


def _faiss_module(want: Optional[bool]):
    if want is False:
        return None
    if want is None:
        return sys.modules.get("faiss")
    try:
        import faiss
    except ImportError:
        return None
    return faiss


@contextlib.contextmanager
def threads(n: Optional[int], *, torch: bool = True, faiss: Optional[bool] = None) -> Iterator[None]:
    """``n`` threads for torch (``torch=True``) and faiss (``faiss``: True = import it if installed, None = only if
    already imported, False = never) during the block, then the previous settings again. ``n`` None or 0: a
    no-op (the libraries' own settings); a negative ``n`` is a ``ValueError``."""
    if not n:
        yield
        return
    n = int(n)
    if n < 0:
        raise ValueError(f"threads must be >= 1 (or 0/None for the library default), got {n}")
    restore = []
    if torch:
        import torch as _torch

        before = _torch.get_num_threads()
        if before != n:
            _torch.set_num_threads(n)
            restore.append(lambda: _torch.set_num_threads(before))
    fa = _faiss_module(faiss)
    if fa is not None:
        fbefore = fa.omp_get_max_threads()
        if fbefore != n:
            fa.omp_set_num_threads(n)
            restore.append(lambda: fa.omp_set_num_threads(fbefore))
    try:
        yield
    finally:
        for undo in reversed(restore):
            undo()





def cpu_model() -> str:
    """The CPU's model name (what every benchmark prints: kernels that win on one CPU can lose on another)."""
    import platform

    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


LOG_INTERVAL_SECONDS = 30.0


def progress(*args, **kwargs):
    """A ``tqdm`` bar (same arguments) that redraws freely on a terminal but, when its stream is not a terminal
    (a log file, CI), prints a line at most every 30 s instead of thousands of carriage-return redraws."""
    from tqdm.auto import tqdm

    stream = kwargs.get("file") or sys.stderr
    try:
        tty = bool(stream.isatty())
    except (AttributeError, ValueError):
        tty = False
    if not tty:
        kwargs["mininterval"] = max(float(kwargs.get("mininterval") or 0.0), LOG_INTERVAL_SECONDS)
        kwargs["maxinterval"] = max(float(kwargs.get("maxinterval") or 0.0), LOG_INTERVAL_SECONDS)
        kwargs.setdefault("dynamic_ncols", False)
    return tqdm(*args, **kwargs)


__all__ = ["cpu_model", "progress", "threads"]
