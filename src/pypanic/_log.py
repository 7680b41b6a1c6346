"""The log lines a dump writes on standard error, in node-panic's form.

Lines go straight to file descriptor 2 with os.write: no logging handlers, no locks,
nothing that another thread could be holding when the process is about to die. A
standard error nobody reads (a full pipe) never stops a dump: once a piece of a line
cannot be written within a second, the rest of that dump's lines are dropped, and for a
minute later dumps do not wait at all.
"""

from __future__ import annotations

import os
import select
import time

WRITE_SECONDS = 1.0
STUCK_SECONDS = 60.0
_stuck_until = 0.0
_CHUNK = 512
"""Bytes per write: at most PIPE_BUF, so a pipe that polls writable takes them at once."""


def log_line(level: str, message: str, now: float | None = None) -> str:
    """``[2011-09-12 22:37:36.410 UTC] CRIT   <message>``."""
    t = time.time() if now is None else now
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}"
    return f"[{stamp} UTC] {level:<6} {message}\n"


class StderrLog:
    """The log of one dump; gives up for good when standard error stops taking data."""

    def __init__(self) -> None:
        self.stuck = False

    def __call__(self, level: str, message: str) -> None:
        """Write one log line to fd 2; a closed, broken or stuck stderr is ignored."""
        global _stuck_until
        data = memoryview(log_line(level, message).encode("utf-8", "backslashreplace"))
        wait = 0 if time.monotonic() < _stuck_until else WRITE_SECONDS * 1000
        try:
            poller = select.poll()
            poller.register(2, select.POLLOUT)
            while data and not self.stuck:
                if not poller.poll(wait):
                    self.stuck = True
                    _stuck_until = time.monotonic() + STUCK_SECONDS
                    return
                data = data[os.write(2, data[:_CHUNK]) :]
        except OSError:
            pass
