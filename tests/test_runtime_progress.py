"""locvtp.runtime.progress: free redraws on a terminal, a line at most every 30 s in a log file."""
from __future__ import annotations

import io

from locvtp.runtime import LOG_INTERVAL_SECONDS, progress


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_log_file_gets_few_lines_and_terminal_redraws():
    log = io.StringIO()
    for _ in progress(range(2000), file=log, mininterval=0.0):
        pass
    bar = progress(range(3), file=log)
    assert bar.mininterval >= LOG_INTERVAL_SECONDS and bar.maxinterval >= LOG_INTERVAL_SECONDS
    bar.close()
    assert log.getvalue().count("\r") <= 4  # start and end, not one redraw per item
    tty = _Tty()
    for _ in progress(range(2000), file=tty, mininterval=0.0, miniters=1):
        pass
    assert tty.getvalue().count("\r") > 100
