"""`locvtp serve ARGS` as the docs test runs it (a block marked ``<!-- docs-test: serve -->``): as a user would
in a second terminal. The real server is started in its own session with ``--port 0`` (the docs' port 8000 may
be taken), waited for until it prints its address, probed once (``GET /api/health`` must answer 200), and left
running for the file's later blocks (``localhost:8000`` in them is its address); the docs test stops it with
SIGINT when the file's blocks are done. Exit 1 when the server does not come up or the probe fails.

Usage (by the sandbox's ``locvtp`` shim): ``LOCVTP_DOCS_SERVE=STATE_DIR docs_serve.py serve ARGS...``.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def main(argv: list[str]) -> int:
    state = Path(os.environ["LOCVTP_DOCS_SERVE"])
    log = state / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "locvtp.cli", *argv, "--port", "0"], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    (state / "pid").write_text(str(proc.pid))
    deadline = time.monotonic() + 120
    url = None
    while url is None and time.monotonic() < deadline and proc.poll() is None:
        m = re.search(r"http://[\w.]+:\d+/", log.read_text(errors="replace"))
        url = m.group(0) if m else None
        time.sleep(0.2)
    sys.stdout.write(log.read_text(errors="replace"))
    if url is None:
        print(f"docs_serve: the server did not print its address (exit {proc.poll()})", file=sys.stderr)
        return 1
    with urllib.request.urlopen(url + "api/health", timeout=30) as r:
        health = json.loads(r.read())
        if r.status != 200:
            print(f"docs_serve: GET /api/health answered {r.status}", file=sys.stderr)
            return 1
    (state / "url").write_text(url)
    print(f"docs_serve: {url} is up (GET /api/health: 200, checkpoint {health.get('checkpoint')!s:.60})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
