"""Library benchmarks, each a ratio against its baseline measured side by side in one run.

    .venv/bin/python bench/library.py

It measures pypanic as users get it: it runs itself again on the Python of a scratch
venv that has the checkout's wheel installed, bytecode compiled (bench/wheel.py; the
interpreter is the one that started it).

Prints a Markdown table for BENCHMARKS.md: panicDbg.set against a bound dict.__setitem__,
the cost of `import pypanic`, a dump of 100 MB of JSON-native state against json.dumps of
the same data, a million-element hostile structure, a small structure of shared parts
that is astronomically large written out as a tree, and state that takes far longer than
max_seconds to write, against max_seconds and the stated margin.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import timeit

from wheel import ENV, scratch_venv

if "NCORE_BENCH_VENV" not in os.environ:
    _venv = scratch_venv(sys.executable)
    _python = str(_venv / "bin" / "python")
    os.execve(_python, [_python, __file__, *sys.argv[1:]], {**ENV, "NCORE_BENCH_VENV": str(_venv)})

import pypanic
from pypanic import _config
from pypanic._serialize import Budget, Serializer


def best_of(stmt: object, number: int, repeat: int) -> float:
    return min(timeit.repeat(stmt, number=number, repeat=repeat)) / number  # type: ignore[arg-type]


def bench_set() -> tuple[str, str, str, str]:
    """panicDbg.set(key, value) against d.__setitem__ bound beforehand, interleaved."""
    registry = pypanic.panicDbg
    plain: dict[str, int] = {}
    setitem = plain.__setitem__
    ratios, ours, theirs = [], [], []
    for _ in range(15):
        a = best_of(lambda: registry.set("func-iter", 1), 200_000, 3)
        b = best_of(lambda: setitem("func-iter", 1), 200_000, 3)
        ours.append(a)
        theirs.append(b)
        ratios.append(a / b)
    return (
        "`panicDbg.set` vs bound `dict.__setitem__`",
        f"{statistics.median(ours) * 1e9:.0f} ns vs {statistics.median(theirs) * 1e9:.0f} ns",
        f"{statistics.median(ratios):.2f}x",
        "at most 1.3x",
    )


def bench_import() -> tuple[str, str, str, str]:
    """Cumulative import time of pypanic from `python -X importtime`, median of 21 runs."""
    env = ENV
    found = []
    for _ in range(21):
        err = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", "import pypanic"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stderr
        line = next(line for line in err.splitlines() if line.rstrip().endswith("| pypanic"))
        found.append(int(re.split(r"\s*\|\s*", line)[1]))
    median = statistics.median(found) / 1000
    return (
        "`import pypanic` (cumulative, -X importtime)",
        f"{median:.2f} ms",
        f"{median / 10:.2f} of the goal",
        "at most 10 ms",
    )


def json_native_state(megabytes: int) -> dict[str, list[dict[str, object]]]:
    records = [
        {"id": i, "name": f"user-{i:08d}", "score": i * 0.5, "active": i % 2 == 0, "tags": ["alpha", "beta"]}
        for i in range(5000)
    ]
    one_key = len(json.dumps(records))
    return {f"table{n}": records for n in range(megabytes * 1_000_000 // one_key)}


def bench_native_dump() -> list[tuple[str, str, str, str]]:
    """Serializing 100 MB of registered JSON-native state, and the whole dump() to disk,
    against json.dumps of the same data (and json.dumps plus write and fsync)."""
    state = json_native_state(100)
    size = sum(len(json.dumps(v)) for v in state.values())
    settings = _config.resolve(pypanic.panicDbg)

    def ours() -> None:
        serializer = Serializer(
            Budget(settings.max_bytes, settings.max_seconds), depth=32, items=10_000, string=1 << 20
        )
        for key, value in state.items():
            serializer.encode(value, key)

    def theirs() -> None:
        for value in state.values():
            json.dumps(value, ensure_ascii=False)

    pairs = [
        (min(timeit.repeat(ours, number=1, repeat=1)), min(timeit.repeat(theirs, number=1, repeat=1))) for _ in range(5)
    ]
    serialize_ratio = statistics.median(a / b for a, b in pairs)
    ours_s = statistics.median(a for a, _ in pairs)
    theirs_s = statistics.median(b for _, b in pairs)

    for key, value in state.items():
        pypanic.panicDbg.set(key, value)
    with tempfile.TemporaryDirectory() as work:
        whole = []
        for _ in range(3):
            start = time.perf_counter()
            path = pypanic.dump("benchmark", directory=work)
            ours_dump = time.perf_counter() - start
            os.unlink(path)
            start = time.perf_counter()
            with open(os.path.join(work, "plain.json"), "w") as f:
                f.write(json.dumps(state))
                f.flush()
                os.fsync(f.fileno())
            whole.append((ours_dump, time.perf_counter() - start))
    pypanic.panicDbg.clear()
    dump_ratio = statistics.median(a / b for a, b in whole)
    return [
        (
            f"serializing {size / 1e6:.0f} MB of JSON-native state vs `json.dumps`",
            f"{ours_s:.2f} s vs {theirs_s:.2f} s",
            f"{serialize_ratio:.2f}x",
            "at most 2x",
        ),
        (
            "whole `pypanic.dump()` of it vs `json.dumps` + write + fsync",
            f"{statistics.median(a for a, _ in whole):.2f} s vs {statistics.median(b for _, b in whole):.2f} s",
            f"{dump_ratio:.2f}x",
            "at most 2x",
        ),
    ]


class Hostile:
    def __repr__(self) -> str:
        raise RuntimeError("no")


def _bounded_dump(name: str, structure: object) -> tuple[str, str, str]:
    """``structure`` registered and dumped: how long it took and how big the file is."""
    pypanic.panicDbg.set(name, structure)
    with tempfile.TemporaryDirectory() as work:
        start = time.perf_counter()
        path = pypanic.dump("benchmark", directory=work)
        elapsed = time.perf_counter() - start
        size = os.path.getsize(path)
    pypanic.panicDbg.clear()
    return f"{elapsed:.2f} s, {size / 1e6:.1f} MB file", "bounded", "bounded"


def bench_hostile() -> tuple[str, str, str, str]:
    """A million objects with raising reprs, in a cycle, registered: how long and how big."""
    structure: list[object] = [Hostile() for _ in range(1_000_000)]
    structure.append(structure)
    return ("dump with a million-element hostile list", *_bounded_dump("hostile", structure))


def bench_shared() -> tuple[str, str, str, str]:
    """Forty levels of a list holding one list twice (2**40 leaves written as a tree),
    registered: how long and how big, with the default limits."""
    structure: list[object] = [1]
    for _ in range(40):
        structure = [structure, structure]
    return ("dump with 40 levels of shared halves", *_bounded_dump("shared", structure))


def bench_over_budget() -> tuple[str, str, str, str]:
    """A 4-million-entry dict with the item limit raised, which takes minutes to write
    whole: the dump against its time budget (max_seconds and the margin for writing)."""
    from pypanic._dump import WRITE_MARGIN_SECONDS

    pypanic.configure(max_items=10_000_000)
    budget = _config.resolve(pypanic.panicDbg).max_seconds + WRITE_MARGIN_SECONDS
    try:
        took = _bounded_dump("big", {f"key-{i}": [i, str(i)] for i in range(4_000_000)})[0]
    finally:
        pypanic.reset_configuration()
    elapsed = float(took.split()[0])
    return ("dump of a 4-million-entry dict, max_items raised, vs max_seconds + 2 s", took,
            f"{elapsed / budget:.2f} of {budget:g} s", "within the budget")  # fmt: skip


def main() -> None:
    rows = [bench_set(), bench_import(), *bench_native_dump(), bench_hostile(), bench_shared(), bench_over_budget()]
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}\n")
    print("| measurement | absolute | ratio | goal |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
