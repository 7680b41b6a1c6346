"""A service with a ticker thread, for measuring how long a snapshot stalls a thread it was not taken in.

    python ticker.py ITEMS GAPS [busy|writing|fork]

The ticker thread sleeps 1 ms in a loop and appends ``START GAP`` (CLOCK_MONOTONIC
seconds, the same clock in every process on Linux) to the file GAPS for every gap between
two of its wake-ups longer than 2 ms: where the GIL kept it waiting. The main thread is
busy in a pure Python loop (``busy``, the default) or, ``writing``, sweeps the registered
table over and over, writing a new value into every entry (``table[key][0] += 1``): a
service that writes into its state while a forked writer holds a copy-on-write image of
it. ``fork`` measures instead what a forked writer's fork costs a process of this size:
it builds the state, times ``os.fork()`` (the child exits at once) five times, prints the
times in milliseconds on one line and exits.

When pypanic is importable, the program registers a few small keys and, with ITEMS above
0, ``ticker.table``, a dict of ITEMS two-item lists (``"42": [42, "42"]``, as
tests/targets/service.py's SERVICE_STATE_ITEMS), with pypanic's limits raised so that a
dump keeps it whole. It prints ``ready`` once the ticker runs and the main thread is
about to start its loop.
"""

import os
import sys
import threading
import time

try:
    import pypanic
except ImportError:
    pypanic = None  # type: ignore[assignment]

ITEMS = int(sys.argv[1])
GAPS = sys.argv[2]
MODE = sys.argv[3] if len(sys.argv) > 3 else "busy"
THRESHOLD = 0.002


def tick() -> None:
    fd = os.open(GAPS, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    last = time.monotonic()
    while True:
        time.sleep(0.001)
        now = time.monotonic()
        if now - last > THRESHOLD:
            os.write(fd, f"{last:.6f} {now - last:.6f}\n".encode())
        last = now


def busy() -> None:
    count = 0
    while True:
        count += 1


def writing(table: dict[str, list[object]]) -> None:
    entries = list(table.values())
    while True:
        for entry in entries:
            entry[0] += 1  # type: ignore[operator]


def forks() -> None:
    times = []
    for _ in range(5):
        began = time.perf_counter()
        child = os.fork()
        if child == 0:
            os._exit(0)
        times.append((time.perf_counter() - began) * 1000)
        os.waitpid(child, 0)
    print(" ".join(f"{t:.2f}" for t in times), flush=True)


def main() -> None:
    if MODE not in ("busy", "writing", "fork"):
        raise SystemExit(f"unknown mode {MODE!r}")
    table: dict[str, list[object]] = {str(i): [i, str(i)] for i in range(ITEMS)}
    if MODE == "fork":
        forks()
        return
    if pypanic is not None:
        pypanic.panicDbg.set("ticker.mode", MODE)
        pypanic.panicDbg.set("ticker.config", {"workers": 2, "tags": ("a", "b"), "limit": 1.5})
        pypanic.panicDbg.set("ticker.items", ITEMS)
        if ITEMS:
            pypanic.configure(max_items=2 * ITEMS, max_bytes=100 * ITEMS + 10**7, max_seconds=120)
            pypanic.panicDbg.set("ticker.table", table)
    threading.Thread(target=tick, name="ticker", daemon=True).start()
    print("ready", flush=True)
    if MODE == "writing":
        writing(table)
    else:
        busy()


main()
