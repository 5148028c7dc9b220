"""Process-wide runtime settings: the CPU thread counts (changed only for a call's duration), the CPU model,
and progress bars that behave in a log file.

:func:`threads` is the one way the package sets how many threads torch (intra-op) and faiss (OpenMP) use: for the
``with`` block only, restoring both settings afterwards even when the block raises. ``extract``, ``index``,
``search``, ``ground``, ``evaluate`` and :class:`locvtp.predictor.LocVTPPredictor` all go through it.

:func:`die_with_parent` is the one way a helper process (a decoding worker of ``extract``, its fork server, a worker
of ``prepare --workers``) is tied to the process it works for: it ends when that process ends, by any signal.

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
import os
import signal
import sys
import threading
import time
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


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
PARENT_POLL_SECONDS = 0.5  # where there is no prctl: how often a helper process checks that its parent lives
FORK_SERVER_OWNER_ENV = "LOCVTP_FORK_SERVER_OWNER"  # the pid a fork server started in fork_server_owner() dies with
_fork_server_pid: Optional[int] = None  # set in a fork server bound by bind_fork_server (inherited by its forks)


def die_with_parent(parent: Optional[int] = None, sig: int = signal.SIGKILL) -> None:
    """End this process (with ``sig``) as soon as its parent process ``parent`` (default: the current parent) ends,
    whatever ends it, SIGKILL included. Why: an orphaned helper process (a decoding worker, a pool worker, a fork
    server) stays blocked on its pipes for hours, holding memory -- once the output's lock -- on a shared node.

    Linux: ``prctl(PR_SET_PDEATHSIG)``, the kernel sends ``sig`` at the parent's death (strictly, at the exit of the
    parent's *thread* that created this process: create helpers from a thread that outlives them, e.g. the main
    one). Elsewhere (macOS) a daemon thread checks ``os.getppid()`` every ``PARENT_POLL_SECONDS``. A parent already
    gone when this is called (it died between the fork and this call) ends this process at once."""
    parent = os.getppid() if parent is None else int(parent)
    if not _set_pdeathsig(sig):
        threading.Thread(target=_watch_parent, args=(parent, sig), name="locvtp-parent-watch", daemon=True).start()
    if os.getppid() != parent:
        os.kill(os.getpid(), sig)


def _set_pdeathsig(sig: int) -> bool:
    """``prctl(PR_SET_PDEATHSIG, sig)``; False where there is none (not Linux, no libc symbol, refused)."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return False
    ul = ctypes.c_ulong
    return prctl(ctypes.c_int(PR_SET_PDEATHSIG), ul(int(sig)), ul(0), ul(0), ul(0)) == 0


def _watch_parent(parent: int, sig: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_SECONDS)
    os.kill(os.getpid(), sig)


@contextlib.contextmanager
def fork_server_owner() -> Iterator[None]:
    """Around the start of a fork server whose preload imports :mod:`locvtp.fork_server`: the server is started
    with this process's pid in its environment (``FORK_SERVER_OWNER_ENV``), so it dies with this process
    (:func:`bind_fork_server`). Why it is needed: Python's fork server exits only when no process holds its
    "alive" pipe, and its workers do -- while torch's worker loop waits for its parent, the server: after a SIGKILL
    of the run, the server and its workers kept each other alive for hours."""
    before = os.environ.get(FORK_SERVER_OWNER_ENV)
    os.environ[FORK_SERVER_OWNER_ENV] = str(os.getpid())
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(FORK_SERVER_OWNER_ENV, None)
        else:
            os.environ[FORK_SERVER_OWNER_ENV] = before


def bind_fork_server() -> None:
    """In a fork server started in :func:`fork_server_owner` (its preload): die with the owner, and remember this
    server's pid for the processes it forks (:func:`fork_server_pid`). Anywhere else (no owner in the environment)
    a no-op. The mark is removed from the environment, so nothing the server forks inherits it."""
    global _fork_server_pid
    owner = os.environ.pop(FORK_SERVER_OWNER_ENV, None)
    if owner is None:
        return
    die_with_parent(int(owner))
    _fork_server_pid = os.getpid()


def fork_server_pid() -> Optional[int]:
    """In a process forked by a fork server bound by :func:`bind_fork_server`: that server's pid (its parent, known
    even if the server already died); None elsewhere."""
    return _fork_server_pid


__all__ = ["bind_fork_server", "cpu_model", "die_with_parent", "fork_server_owner", "fork_server_pid", "progress",
           "threads"]
