"""No helper process outlives its run: after a SIGKILL of `locvtp extract --workers 2`, of a `chunked_array` pool
(`prepare --workers`, the frame cache) or of any parent of a process that called `runtime.die_with_parent`, every
descendant (decode workers, their fork server, pool workers, the resource tracker) is gone within seconds.

Each test records the descendants before the kill, waits for them (polling, with a generous deadline: the machine
may be loaded) and kills any survivor itself, so a failure never leaks processes."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

import locvtp
from inference_helpers import world_videos

SRC = str(Path(locvtp.__file__).resolve().parents[1])
GONE_WITHIN = 20.0  # seconds (prompt is ~0.2 s; the margin is for a loaded machine)
START_WITHIN = 240.0  # seconds for the helpers to appear


def _env() -> dict:
    """This source tree first on the path of the run *and* of its fork server (which ignores the run's sys.path)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH", "")) if p),
            "PYTHONUNBUFFERED": "1"}


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE  # an unreaped zombie holds nothing
    except psutil.NoSuchProcess:
        return False


def _kill_and_check(proc: subprocess.Popen, ready) -> list[str]:
    """Wait until ``ready(descendants)``, SIGKILL ``proc``, then return the descendants still alive after
    ``GONE_WITHIN`` seconds (described); survivors and ``proc`` are killed in any case."""
    kids: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + START_WITHIN
        while time.monotonic() < deadline and proc.poll() is None:
            kids = psutil.Process(proc.pid).children(recursive=True)
            if ready(kids):
                break
            time.sleep(0.1)
        assert proc.poll() is None and ready(kids), f"the helpers never ran (exit {proc.poll()}, {len(kids)} seen)"
        kids = psutil.Process(proc.pid).children(recursive=True)  # the latest set, just before the kill
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + GONE_WITHIN
        while time.monotonic() < deadline and any(_alive(k) for k in kids):
            time.sleep(0.1)
        return [f"{k.pid}: {' '.join(k.cmdline())[:80]}" for k in kids if _alive(k)]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for k in kids:
            if _alive(k):
                try:
                    k.kill()
                except psutil.NoSuchProcess:
                    pass


def _fork_server_and_workers(kids: list[psutil.Process]) -> bool:
    """The fork server and 2 decode workers forked from it exist."""
    try:
        fs = [k for k in kids if "multiprocessing.forkserver" in " ".join(k.cmdline())]
        return len(fs) >= 3 and any(k.ppid() in {f.pid for f in fs} for k in fs)
    except psutil.NoSuchProcess:
        return False


def test_extract_workers_and_fork_server_die_with_a_killed_run(tiny_checkpoint, tiny_world, tmp_path):
    """Before the fix the fork server and its workers kept each other alive for hours (the workers hold the
    server's "alive" pipe; torch's worker loop waits for its parent, the server)."""
    vids = tmp_path / "videos"
    vids.mkdir()
    src = world_videos(tiny_world)
    for i in range(400):  # enough decoding that the workers are busy when the run is killed
        (vids / f"v{i:04d}.mp4").symlink_to(src[i % len(src)])
    cmd = [sys.executable, "-m", "locvtp.cli", "extract", "--checkpoint", str(tiny_checkpoint), "--videos",
           str(vids), "--out", str(tmp_path / "f.h5"), "--workers", "2", "--threads", "1", "--no-progress"]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert _kill_and_check(proc, _fork_server_and_workers) == []


POOL_RUN = """
import sys, time
from locvtp.training.chunks import chunked_array

def slow(lo, hi):
    time.sleep(0.5)
    import numpy as np
    return {"x": np.arange(lo, hi)}

if __name__ == "__main__":
    chunked_array(__import__("pathlib").Path(sys.argv[1]), "x", 200, 1, slow, workers=2, progress=False)
"""


def test_chunked_array_pool_workers_die_with_a_killed_run(tmp_path):
    """``prepare --workers`` / the frame cache: the spawned pool's idle workers waited on their queue for ever."""
    script = tmp_path / "pool_run.py"
    script.write_text(POOL_RUN)
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "cache")], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = tmp_path / "cache" / "x.parts"
    assert _kill_and_check(proc, lambda kids: len(kids) >= 3 and parts.is_dir() and any(parts.glob("*.npz"))) == []


CHILD = """
import os, sys, time
import locvtp.runtime as R
if sys.argv[1] == "fallback":
    R._set_pdeathsig = lambda sig: False  # as where there is no prctl (macOS): the watchdog thread
R.die_with_parent()
print("ready", flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("how", ["prctl", "fallback"])
def test_die_with_parent_after_a_sigkill_of_the_parent(how, tmp_path):
    parent = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', sys.argv[1], sys.argv[2]]); "
              "time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", parent, textwrap.dedent(CHILD), how], env=_env(),
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
    finally:
        survivors = _kill_and_check(proc, lambda kids: len(kids) == 1)
        proc.stdout.close()
    assert survivors == []


def test_die_with_parent_whose_parent_is_already_gone():
    """A process whose parent died before it asked (the window between its fork and the call) ends at once."""
    code = "import os; from locvtp.runtime import die_with_parent; die_with_parent(os.getpid()); print('survived')"
    res = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=120)
    assert res.returncode == -signal.SIGKILL and "survived" not in res.stdout


def test_the_fork_server_hook_does_nothing_outside_a_fork_server():
    """Importing the hook in an ordinary process (no owner marked) neither ties it to its parent nor marks it."""
    code = ("import os; os.environ.pop('LOCVTP_FORK_SERVER_OWNER', None); import locvtp.fork_server; "
            "from locvtp.runtime import fork_server_pid; print(fork_server_pid())")
    res = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "None"
