"""The log lines a panic writes on standard error, in node-panic's form.

Lines go straight to file descriptor 2 with os.write: no logging handlers, no locks,
nothing that another thread could be holding when the process is about to die.
"""

from __future__ import annotations

import os
import time


def log_line(level: str, message: str, now: float | None = None) -> str:
    """``[2011-09-12 22:37:36.410 UTC] CRIT   <message>``."""
    t = time.time() if now is None else now
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}"
    return f"[{stamp} UTC] {level:<6} {message}\n"


def log(level: str, message: str) -> None:
    """Write one log line to fd 2; a closed or broken stderr is ignored."""
    data = log_line(level, message).encode("utf-8", "backslashreplace")
    try:
        while data:
            data = data[os.write(2, data) :]
    except OSError:
        pass
