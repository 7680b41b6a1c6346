"""A pypanic dump's serializer against ``json.dumps`` for each common shape of JSON-native state.

    .venv/bin/python bench/serializer_shapes.py [--runs 5] [--python /usr/bin/python3.11]

The checkout is built into a wheel and installed, bytecode compiled, into a scratch venv
of ``--python`` (bench/wheel.py); a child process on that venv's Python does the
measuring and prints one JSON line per shape, and this script prints a Markdown table.
Each shape is built, measured and dropped before the next one, with the limits raised
(``pypanic.configure``) so that every value is kept whole. Shapes:

- a dict of 1M two-item lists (``"key-0000042": [42, "value-42"]``);
- a list of 1M small dicts of 3, 4 or 5 fields (the optional ones absent by turns);
- four strings of 25 MB each of mixed ASCII text (words, numbers, paths, quotes,
  backslashes, tabs and newlines), each registered under a key of its own;
- a config tree: dicts nested 10 deep, fan-out 4, 4**9 innermost dicts of 4 settings (1M leaves);
- BENCHMARKS.md's records: 5000 records of five fields, registered under each of
  about 196 keys (bench/library.py's ``json_native_state(100)``, 100 MB of JSON).

Per shape, ``runs`` rounds, each measuring in turn:

1. ``json.dumps(value, ensure_ascii=False)`` of each registered value (pypanic's text is
   ``ensure_ascii=False`` too, so both write the same characters);
2. ``Serializer(...).encode(value, key)`` of each, as ``pypanic._dump.build`` calls it;
3. ``json.dumps`` of all the registered keys as one object, written to a file and fsynced;
4. the whole ``pypanic.dump()`` with the values registered with ``panicDbg.set``: pypanic's
   own keys and stacks, the write, fsync and link.

The table gives the medians of each and the medians of the ratios of each round. Before
the rounds, each shape's serializer text and the dump's registered keys are parsed back
and compared with the values, so a cut cannot pass for speed.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LIMITS = {"max_items": 10_000_000, "max_depth": 64, "max_string": 64 << 20, "max_bytes": 4 << 30, "max_seconds": 600.0}
"""Far above every shape, so that the dump keeps each value whole."""


# -- the shapes (built in the child) ---------------------------------------------------


def pairs() -> dict[str, Any]:
    return {"pairs": {f"key-{i:07d}": [i, f"value-{i}"] for i in range(1_000_000)}}


def small_dicts() -> dict[str, Any]:
    def item(i: int) -> dict[str, Any]:
        found: dict[str, Any] = {"id": i, "name": f"item-{i}", "price": i * 0.25}
        if i % 3:
            found["active"] = i % 2 == 0
        if i % 3 == 2:
            found["tags"] = ["new", "sale"]
        return found

    return {"items": [item(i) for i in range(1_000_000)]}


def big_strings() -> dict[str, Any]:
    words = ["the", "request", "failed", "with", "status", "500", "after", "retrying", "3", "times", '"quoted"',
             "path=/api/v1/items?id=42", "\n", "\t", "user-agent:", "Mozilla/5.0", "{json}", "C:\\temp\\x", "0.25",
             "ok.", "ERROR", "timeout", "connection", "reset", "by", "peer"]  # fmt: skip
    rng = random.Random(42)
    size = 25_000_000
    texts = {}
    for n in range(4):
        chunk = " ".join(rng.choices(words, k=200_000))
        texts[f"text{n}"] = (chunk * (size // len(chunk) + 1))[:size]
    return texts


def config_tree() -> dict[str, Any]:
    def node(level: int) -> dict[str, Any]:
        if level == 9:
            return {"host": f"db-{level}.internal", "port": 5432, "enabled": True, "timeout": 2.5}
        return {f"section{level}-{k}": node(level + 1) for k in range(4)}

    return {"config": node(0)}


def records() -> dict[str, Any]:
    """bench/library.py's json_native_state(100), as it is registered there: a key per table."""
    table = [
        {"id": i, "name": f"user-{i:08d}", "score": i * 0.5, "active": i % 2 == 0, "tags": ["alpha", "beta"]}
        for i in range(5000)
    ]
    one_key = len(json.dumps(table))
    return {f"table{n}": table for n in range(100 * 1_000_000 // one_key)}


SHAPES: dict[str, Callable[[], dict[str, Any]]] = {
    "dict of 1M two-item lists": pairs,
    "list of 1M small dicts (3-5 fields)": small_dicts,
    "4 strings of 25 MB (ASCII text)": big_strings,
    "config tree, 10 deep, fan-out 4 (1M leaves)": config_tree,
    "BENCHMARKS.md's records (196 keys x 5000)": records,
}


# -- the child: measures in the wheel's venv --------------------------------------------


def serialize(state: dict[str, Any]) -> tuple[list[str], int]:
    """Each value's text as pypanic._dump.build makes it, and the number of cuts."""
    import pypanic
    from pypanic import _config, _dump
    from pypanic._serialize import CUTS_ROOM, Budget, Serializer

    settings = _config.resolve(pypanic.panicDbg)
    budget = Budget(settings.max_bytes - min(CUTS_ROOM, settings.max_bytes // 8), settings.max_seconds)
    serializer = Serializer(budget, depth=settings.max_depth, items=settings.max_items, string=settings.max_string)
    texts = []
    for i, (key, value) in enumerate(state.items()):
        budget.bytes_left -= len(key) + _dump._LINE_OVERHEAD
        later = len(state) - i - 1
        held_bytes = min(later * _dump.RESERVED_BYTES, max(budget.bytes_left, 0) // 2)
        seconds = budget.deadline - time.monotonic()
        budget.bytes_left -= held_bytes
        texts.append(serializer.encode(value, key, seconds=seconds - min(later * _dump.RESERVED_SECONDS, seconds / 2)))
        budget.bytes_left += held_bytes
    return texts, budget.cut_count


def json_dumps(state: dict[str, Any]) -> None:
    for value in state.values():
        json.dumps(value, ensure_ascii=False)


def json_to_file(state: dict[str, Any], path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(state, ensure_ascii=False))
        f.flush()
        os.fsync(f.fileno())


def timed(fn: Callable[[], object]) -> float:
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


def measure(name: str, state: dict[str, Any], runs: int, work: str) -> dict[str, Any]:
    import pypanic

    texts, cuts = serialize(state)
    if cuts or [json.loads(text) for text in texts] != list(state.values()):
        raise SystemExit(f"{name}: the serializer did not keep the value whole ({cuts} cuts)")
    size = sum(map(len, texts))
    del texts
    for key, value in state.items():
        pypanic.panicDbg.set(key, value)
    path = pypanic.dump("benchmark", directory=work)
    with open(path, encoding="utf-8") as f:
        written = json.load(f)
    os.unlink(path)
    # (dbg.cuts counts the cuts in local variables too, which keep their own small limits.)
    if any(written.get(key) != value for key, value in state.items()):
        raise SystemExit(f"{name}: the dump did not keep the registered values whole")
    del written
    rounds = []
    plain = os.path.join(work, "plain.json")
    for _ in range(runs):
        gc.collect()
        theirs = timed(lambda: json_dumps(state))
        ours = timed(lambda: serialize(state))
        gc.collect()
        theirs_file = timed(lambda: json_to_file(state, plain))
        os.unlink(plain)
        began = time.perf_counter()
        path = pypanic.dump("benchmark", directory=work)
        ours_dump = time.perf_counter() - began
        os.unlink(path)
        rounds.append({"json": theirs, "serializer": ours, "json_file": theirs_file, "dump": ours_dump})
    pypanic.panicDbg.clear()
    return {"shape": name, "megabytes": size / 1e6, "rounds": rounds}


def child(runs: int) -> None:
    import pypanic

    if not Path(pypanic.__file__).resolve().is_relative_to(Path(sys.prefix).resolve()):
        raise SystemExit(f"pypanic comes from {pypanic.__file__}, not from the venv {sys.prefix}")
    pypanic.configure(**LIMITS)
    with tempfile.TemporaryDirectory(prefix="bench-serializer-shapes.") as work:
        for name, build in SHAPES.items():
            state = build()
            print(json.dumps(measure(name, state, runs, work)), flush=True)
            del state
            gc.collect()


# -- the parent: builds the venv, runs the child, prints the table -----------------------


def describe(python: str) -> str:
    version = subprocess.run([python, "-c", "import sys; print(sys.version.split()[0])"],
                             capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    origin = "pyenv" if "/.pyenv/" in python else "Debian" if python.startswith("/usr/bin/") else python
    return f"{origin} {version} ({python})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--python", default="/usr/bin/python3.11", help="interpreter of the scratch venv")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.runs)
        return

    from wheel import ENV, scratch_venv

    tree = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                          capture_output=True, text=True, check=False).stdout.strip()  # fmt: skip
    venv = scratch_venv(args.python)
    executable = Path(sys.executable)
    shown = executable.relative_to(ROOT) if executable.is_relative_to(ROOT) else executable
    command = shlex.join([str(shown), "bench/serializer_shapes.py", *sys.argv[1:]])
    load_before = os.getloadavg()[0]
    results = []
    # The dumps' log lines go to a file, not a pipe nobody reads while the child runs.
    with tempfile.TemporaryFile("w+") as log:
        child_run = subprocess.Popen(
            [str(venv / "bin" / "python"), __file__, "--child", "--runs", str(args.runs)],
            env=ENV, stdout=subprocess.PIPE, stderr=log, text=True,
        )  # fmt: skip
        assert child_run.stdout is not None
        for line in child_run.stdout:
            results.append(json.loads(line))
            rounds = results[-1]["rounds"]
            spread = {
                what: ", ".join(f"{r[ours] / r[theirs]:.2f}x" for r in rounds)
                for what, ours, theirs in (("serializer", "serializer", "json"), ("dump", "dump", "json_file"))
            }
            print(f"measured: {results[-1]['shape']}: serializer {spread['serializer']}; dump {spread['dump']}",
                  file=sys.stderr)  # fmt: skip
        if child_run.wait():
            log.seek(0)
            raise SystemExit(f"the measuring child failed:\n{log.read()}")
    load_after = os.getloadavg()[0]

    print(f"{describe(args.python)}, the wheel of {tree or 'the checkout'} in {venv.name}; "
          f"{args.runs} runs per shape, interleaved, medians; "
          f"{os.cpu_count()} cores, load average {load_before:.1f} before and {load_after:.1f} after; "
          f"{time.strftime('%Y-%m-%d')}; `{command}` from the checkout's root\n")  # fmt: skip
    print("| shape | json.dumps | serializer | ratio | json.dumps + write + fsync | whole dump | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for result in results:
        rounds = result["rounds"]
        seconds = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
        serializer = statistics.median(r["serializer"] / r["json"] for r in rounds)
        dump = statistics.median(r["dump"] / r["json_file"] for r in rounds)
        print(f"| {result['shape']}, {result['megabytes']:.0f} MB | {seconds['json']:.2f} s "
              f"| {seconds['serializer']:.2f} s | {serializer:.2f}x | {seconds['json_file']:.2f} s "
              f"| {seconds['dump']:.2f} s | {dump:.2f}x |")  # fmt: skip


if __name__ == "__main__":
    main()
