"""The end of a diagnostic with a ``--json`` option: refuse an output that is not ours before the work, print the
report, write the figures. One place, so every diagnostic treats the user's file and its errors alike."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable, Optional

from locvtp.errors import LocVTPError


def run_report(prog: str, writer: str, json_path: Optional[str], compute: Callable[[], Any],
               report: Callable[[Any], str]) -> int:
    """``compute()`` then print ``report(result)`` and, with ``json_path``, write the result there (ledger writer
    ``writer``). A :class:`LocVTPError` (an unusable input, or a ``--json`` file the user owns) is one line on
    stderr with its exit code."""
    from locvtp.files import check_file_output, write_owned_text

    try:
        if json_path is not None:
            check_file_output(Path(json_path), writer, "--json")
        res = compute()
    except LocVTPError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return int(getattr(exc, "exit_code", 1))
    print(report(res))
    if json_path is not None:
        write_owned_text(Path(json_path), json.dumps(res, indent=1) + "\n", writer)
    return 0
