"""Helpers for the tests that spawn gloo process groups with ``torch.multiprocessing.spawn``."""
from __future__ import annotations

import os
import socket
import sys


def free_port() -> int:
    """A free TCP port on the loopback interface for a gloo rendezvous."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def leave_worker() -> None:
    """End a spawned worker that succeeded without interpreter finalization.

    Why: after ``destroy_process_group`` a worker that returns normally is aborted, in about 1 run in 12 on a
    loaded 2-core machine, by ``terminate called without an active exception`` while the interpreter is torn down
    (no Python frame left; gloo/c10d threads destroyed out of order). 60 runs with this exit: 0 aborts; 85 runs
    without: 8. The test's verdict was already reached (every assertion ran), so skipping finalization loses
    nothing; a failing worker still raises and is reported by ``mp.spawn``.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
