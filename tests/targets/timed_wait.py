"""Waits once, for a given time, in the way its first argument names, and says how long it took.

    python timed_wait.py KIND SECONDS [slow-dump]

KIND is sleep, select, event, read (a pipe a helper thread writes to after SECONDS) or
c-sleep (libc's sleep through ctypes: no Python-level retry hides an interrupted call,
which returns early with the seconds it did not sleep). It prints ``ready`` just before
the wait and ``waited SECONDS`` after it, then exits 0; a wait that fails prints the
error and exits 2. With ``slow-dump``, it registers state whose ``__repr__`` is slow, so that
a dump takes about a second: long enough that a wait lengthened by it is plain to see.
"""

import os
import select
import sys
import threading
import time

KIND = sys.argv[1]
SECONDS = float(sys.argv[2])
SLOW_DUMP = sys.argv[3:] == ["slow-dump"]


class Slow:
    def __repr__(self) -> str:
        # Busy, not time.sleep: a nanosleep in the borrowed thread would replace the kernel's
        # record of how to restart c-sleep's interrupted one (see ncore's ptrace method).
        started = time.monotonic()
        while time.monotonic() - started < 0.2:
            pass
        return "slow"


def wait() -> None:
    if KIND == "sleep":
        time.sleep(SECONDS)
    elif KIND == "select":
        reader, _ = os.pipe()
        select.select([reader], [], [], SECONDS)
    elif KIND == "event":
        threading.Event().wait(SECONDS)
    elif KIND == "read":
        reader, writer = os.pipe()
        threading.Timer(SECONDS, os.write, (writer, b"x")).start()
        os.read(reader, 1)
    elif KIND == "c-sleep":
        import ctypes

        unslept = ctypes.CDLL(None).sleep(int(SECONDS))
        if unslept:
            raise InterruptedError(f"libc sleep returned early, {unslept} s unslept")
    else:
        raise SystemExit(f"unknown kind {KIND!r}")


def main() -> None:
    if SLOW_DUMP:
        import pypanic

        for _ in range(5):
            pypanic.panicDbg.add("slow", Slow())
    print("ready", flush=True)
    started = time.monotonic()
    try:
        wait()
    except Exception as e:
        print(f"error {type(e).__name__}: {e}", flush=True)
        sys.exit(2)
    print(f"waited {time.monotonic() - started:.6f}", flush=True)


main()
