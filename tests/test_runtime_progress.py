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


def test_postfix_updates_wait_for_the_next_line_in_a_log():
    """Issue 26: `extract` sets its ok/failed postfix after every video, and tqdm's set_postfix redraws at once by
    default: one line per video into a pipe. Into a log the postfix now waits for the next timed line."""
    log = io.StringIO()
    bar = progress(total=500, file=log, desc="extract", mininterval=1.0, dynamic_ncols=True)
    for i in range(500):
        bar.update(1)
        bar.set_postfix(ok=i, failed=0)
        bar.set_description("extract")
    bar.close()
    lines = [ln for ln in log.getvalue().replace("\r", "\n").splitlines() if ln.strip()]
    assert len(lines) <= 3, lines  # the start, the end (and at most one timed line)
    assert "ok=499" in lines[-1], lines  # the last postfix is in the final line
    tty = _Tty()
    bar = progress(total=50, file=tty, mininterval=0.0, miniters=1)
    for i in range(50):
        bar.update(1)
        bar.set_postfix(ok=i)
    bar.close()
    assert tty.getvalue().count("\r") > 50  # a terminal still redraws on every postfix change
