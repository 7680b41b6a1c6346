"""Floating-point and vector work that checks its own results, for injections to disturb.

    python vector_check.py [signals]

Loops forever over work whose results are known in advance: float sums in C (``sum`` and
``math.fsum`` keep running totals in vector registers), a dot product, float formatting,
and copies of a large buffer (memcpy moves it through vector registers). A wrong result
prints what differed and exits 3. With ``signals`` a 1 ms interval timer interrupts it as
well (SIGALRM, counted by a handler). It prints ``ready`` before the loop and writes the
number of checked rounds to the file ``progress`` in its working directory.
"""

import math
import operator
import os
import signal
import sys
import time

try:
    import pypanic
except ImportError:
    pypanic = None  # type: ignore[assignment]

HALVES = [i * 0.5 for i in range(200_000)]
HALVES_SUM = 0.5 * (200_000 * 199_999 // 2)
TENTHS = [0.1] * 100_000
TENTHS_FSUM = 10_000.0
DOT = sum(map(operator.mul, HALVES[:1000], HALVES[:1000]))
PATTERN = bytes(range(256)) * (1 << 16)
ticks = 0


def tick(signum: int, frame: object) -> None:
    global ticks
    ticks += 1


def check(name: str, got: object, expected: object) -> None:
    if got != expected:
        signal.setitimer(signal.ITIMER_REAL, 0)
        print(f"wrong {name}: {got!r} != {expected!r}", flush=True)
        sys.exit(3)


def record_progress(count: int) -> None:
    with open("progress.tmp", "w") as f:
        f.write(str(count))
    os.replace("progress.tmp", "progress")


def main() -> None:
    if pypanic is not None:
        pypanic.panicDbg.set("service.kind", "vector-check")
    if sys.argv[1:] == ["signals"]:
        signal.signal(signal.SIGALRM, tick)
        signal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)
    print("ready", flush=True)
    rounds = 0
    last = time.monotonic()
    while True:
        rounds += 1
        check("sum", sum(HALVES), HALVES_SUM)
        check("fsum", math.fsum(TENTHS), TENTHS_FSUM)
        check("dot", sum(map(operator.mul, HALVES[:1000], HALVES[:1000])), DOT)
        check("format", f"{HALVES_SUM / 3:.17g}", "3333316666.6666665")
        copy = bytearray(PATTERN)
        check("copy", copy == PATTERN, True)
        if time.monotonic() - last > 0.05:
            record_progress(rounds)
            last = time.monotonic()


main()
