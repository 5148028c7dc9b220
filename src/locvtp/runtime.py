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
import functools
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


@functools.lru_cache(maxsize=None)
def _log_bar_class() -> type:
    """``tqdm`` whose postfix and description changes wait for the next timed line. Why: ``set_postfix`` (the
    ok/failed counts ``extract`` updates after every video) redraws at once by default, which in a log file or a
    pipe is one line per item whatever ``mininterval`` says."""
    from tqdm.auto import tqdm

    class LogBar(tqdm):  # type: ignore[misc, valid-type]
        def set_postfix(self, ordered_dict=None, refresh=False, **kwargs):
            super().set_postfix(ordered_dict, refresh=False, **kwargs)

        def set_postfix_str(self, s="", refresh=False):
            super().set_postfix_str(s, refresh=False)

        def set_description(self, desc=None, refresh=False):
            super().set_description(desc, refresh=False)

        def set_description_str(self, desc=None, refresh=False):
            super().set_description_str(desc, refresh=False)

    return LogBar


def progress(*args, **kwargs):
    """A ``tqdm`` bar (same arguments) that redraws freely on a terminal but, when its stream is not a terminal
    (a log file, a pipe, CI), prints a line at most every 30 s instead of thousands of carriage-return redraws:
    postfix and description updates included (they wait for the next line)."""
    from tqdm.auto import tqdm

    stream = kwargs.get("file") or sys.stderr
    try:
        tty = bool(stream.isatty())
    except (AttributeError, ValueError):
        tty = False
    if tty:
        return tqdm(*args, **kwargs)
    kwargs["mininterval"] = max(float(kwargs.get("mininterval") or 0.0), LOG_INTERVAL_SECONDS)
    kwargs["maxinterval"] = max(float(kwargs.get("maxinterval") or 0.0), LOG_INTERVAL_SECONDS)
    kwargs["dynamic_ncols"] = False  # no terminal to measure
    return _log_bar_class()(*args, **kwargs)


__all__ = ["cpu_model", "progress", "threads"]
