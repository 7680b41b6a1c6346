"""A long-running program for ncore to dump, doing the work its first argument names.

    python service.py KIND

KIND is one of: busy, sleep, select, event, accept, main-blocked-worker-busy, both-busy,
churn, gil-hog (a C call that holds the GIL for hours). It registers state when pypanic
is importable, prints ``ready`` once it is about to do its work, and, where it makes
progress, writes a counter to the file ``progress`` in its working directory, so a test
can see it still works after a snapshot. With SERVICE_SLOW_DUMP set to a number of seconds,
it also registers a value whose ``__repr__`` spins that long, so that a dump takes that
much longer (the time a test has to interrupt ncore in the middle of one). With
SERVICE_STATE_ITEMS set to a number N, it registers ``service.table``, a dict of N
two-item lists, and raises pypanic's limits so that a dump keeps it whole. With
SERVICE_BLOCKING_REPR set, it registers a value whose ``__repr__`` blocks in a C call for
an hour (no guard can cut that short). With SERVICE_HANG_IN_CHILD=before, an
``os.register_at_fork`` handler hangs in any child that forks again; with
``grandchild``, in a child's child as soon as it starts (a library's handler waiting on a
lock the fork left behind).
"""

import os
import select
import socket
import sys
import threading
import time

try:
    import pypanic
except ImportError:
    pypanic = None  # type: ignore[assignment]

KIND = sys.argv[1]
SLOW_DUMP = float(os.environ.get("SERVICE_SLOW_DUMP", "0"))
STATE_ITEMS = int(os.environ.get("SERVICE_STATE_ITEMS", "0"))
HANG_IN_CHILD = os.environ.get("SERVICE_HANG_IN_CHILD")
PID = os.getpid()


def hang_in_a_child() -> None:
    while os.getpid() != PID:
        time.sleep(1)


def hang_in_a_grandchild() -> None:
    while os.getpid() != PID and os.getppid() != PID:
        time.sleep(1)


class Slow:
    def __repr__(self) -> str:
        started = time.monotonic()
        while time.monotonic() - started < SLOW_DUMP:
            pass  # busy, not time.sleep: the dump must not replace the thread's restart record
        return "slow"


class Blocking:
    def __repr__(self) -> str:
        time.sleep(3600)
        return "blocking"


def record_progress(count: int) -> None:
    with open("progress.tmp", "w") as f:
        f.write(str(count))
    os.replace("progress.tmp", "progress")


def busy(name: str) -> None:
    count = 0
    last = time.monotonic()
    while True:
        count += 1
        if pypanic is not None:
            pypanic.panicDbg.set(f"{name}-iter", count)
        if time.monotonic() - last > 0.05:
            record_progress(count)
            last = time.monotonic()


def spin() -> None:
    count = 0
    while True:
        count += 1


def churn() -> None:
    count = 0
    last = time.monotonic()
    keep = []
    while True:
        count += 1
        keep.append({"n": count, "items": [str(i) for i in range(20)], "blob": bytes(64)})
        if len(keep) > 500:
            del keep[:250]
        if time.monotonic() - last > 0.05:
            record_progress(count)
            last = time.monotonic()


def main() -> None:
    if HANG_IN_CHILD == "before":
        os.register_at_fork(before=hang_in_a_child)
    elif HANG_IN_CHILD == "grandchild":
        os.register_at_fork(after_in_child=hang_in_a_grandchild)
    if pypanic is not None:
        pypanic.panicDbg.set("service.kind", KIND)
        pypanic.panicDbg.set("service.config", {"workers": 2, "tags": ("a", "b"), "limit": 1.5})
        if SLOW_DUMP:
            pypanic.panicDbg.set("service.slow", Slow())
        if os.environ.get("SERVICE_BLOCKING_REPR"):
            pypanic.panicDbg.set("service.blocking", Blocking())
        if STATE_ITEMS:
            pypanic.configure(
                max_items=2 * STATE_ITEMS,
                max_bytes=100 * STATE_ITEMS + 10**7,
                max_seconds=float(os.environ.get("PYPANIC_MAX_SECONDS", "60")),
            )
            pypanic.panicDbg.set("service.table", {str(i): [i, str(i)] for i in range(STATE_ITEMS)})
    if KIND in ("main-blocked-worker-busy", "both-busy"):
        threading.Thread(target=spin, name="busy-worker", daemon=True).start()
    reader, _ = os.pipe()
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    print("ready", flush=True)
    if KIND in ("busy", "both-busy"):
        busy("main")
    elif KIND in ("sleep", "main-blocked-worker-busy"):
        time.sleep(1000)
    elif KIND == "select":
        select.select([reader], [], [], 1000)
    elif KIND == "event":
        threading.Event().wait()
    elif KIND == "accept":
        server.accept()
    elif KIND == "churn":
        churn()
    elif KIND == "gil-hog":
        sum(range(10**15))
    else:
        raise SystemExit(f"unknown kind {KIND!r}")


main()
