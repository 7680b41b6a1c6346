"""A program whose main thread never reaches a safe point, for dumps read from outside.

    python stuck.py KIND

KIND is one of: regex (a catastrophic regular expression, in C, holding the GIL),
c-sleep (a C call that sleeps holding the GIL), busy (a Python loop), segfault (a thread
named ``crasher`` reads address 0 in C; with pypanic importable, enable_panic_on_crash()
first), segfault-main (the same in the main thread). Another thread, ``sleeper``, sleeps
all along. The stuck function ``stuck(limit, label)`` has a local ``marker`` and one
whose name marks it secret. ``ready`` is printed just before the main thread gets stuck.
"""

import ctypes
import re
import sys
import threading
import time

try:
    import pypanic
except ImportError:
    pypanic = None  # type: ignore[assignment]

KIND = sys.argv[1]


def sleeper() -> None:
    time.sleep(1000)


def stuck(limit: int, label: str = "stuck-label") -> None:
    marker = "findme"
    api_token = "hunter2"
    print("ready", flush=True)
    if KIND == "regex":
        re.match(r"(a+)+$", "a" * limit + "b")
    elif KIND == "c-sleep":
        ctypes.PyDLL(None).sleep(1000)
    elif KIND == "busy":
        count = 0
        while True:
            count += 1
    elif KIND in ("segfault", "segfault-main"):
        time.sleep(0.2)
        ctypes.string_at(0)
    del marker, api_token


def crasher() -> None:
    stuck(7, "crash-label")


if __name__ == "__main__":
    if pypanic is not None:
        pypanic.panicDbg.set("stuck.kind", KIND)
        pypanic.enable_panic_on_crash()
    threading.Thread(target=sleeper, name="sleeper", daemon=True).start()
    if KIND == "segfault":
        threading.Thread(target=crasher, name="crasher").start()
        time.sleep(1000)
    else:
        stuck(60)
