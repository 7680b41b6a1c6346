"""What ``panic.asyncio`` costs: a dump of an asyncio program with and without the key.

    .venv/bin/python bench/asyncio_tasks.py [--runs 5]

The work tree is built into a wheel and installed, bytecode compiled, into a scratch
virtual environment. A program on that venv's Python (Debian's 3.11) and on pyenv's 3.12
starts N tasks asleep (N = 10, 1,000, 100,000; besides a gather, a queue consumer and a
lock waiter), then takes ``runs`` snapshots with ``pypanic.dump`` in each of two ways,
interleaved: as shipped, and with the asyncio part switched off (``pypanic._tasks``'s
``describe`` and ``reference_maker`` replaced by functions returning None, which is what a
process without a loop gets). Measured: the median time of ``pypanic.dump`` and the
file's size.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
from pathlib import Path

from versions import ENV, install

COUNTS = (10, 1_000, 100_000)
PROGRAM = r"""
import asyncio, json, os, sys, time
import pypanic
from pypanic import _tasks

count, runs, directory = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
shipped = (_tasks.describe, _tasks.reference_maker)
off = (lambda stacks: None, lambda: None)


async def waiter(queue, lock):
    await asyncio.gather(queue.get(), lock.acquire())


async def main():
    queue, lock = asyncio.Queue(), asyncio.Lock()
    await lock.acquire()
    tasks = [asyncio.create_task(asyncio.sleep(3600)) for _ in range(count)]
    tasks.append(asyncio.create_task(waiter(queue, lock)))
    await asyncio.sleep(0.2)
    times = {"with": [], "without": []}
    sizes = {}
    for _ in range(runs):
        for way, functions in (("with", shipped), ("without", off)):
            _tasks.describe, _tasks.reference_maker = functions
            began = time.perf_counter()
            path = pypanic.dump("bench", directory=directory)
            times[way].append(time.perf_counter() - began)
            sizes[way] = os.path.getsize(path)
            os.unlink(path)
    print(json.dumps({"times": times, "sizes": sizes}))
    for task in tasks:
        task.cancel()


asyncio.run(main())
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-asyncio.") as scratch:
        venv_python = install(None, Path(scratch), "now").parent / "python"
        site = subprocess.run(
            [str(venv_python), "-c", "import pypanic, os; print(os.path.dirname(pypanic.__path__[0]))"],
            capture_output=True,
            text=True,
            check=True,
            env=ENV,
        ).stdout.strip()
        pythons = {
            "Debian 3.11 (venv)": (str(venv_python), {}),
            "pyenv 3.12": (
                str(sorted(Path.home().glob(".pyenv/versions/3.12.*/bin/python3.12"))[-1]),
                {"PYTHONPATH": site},
            ),
        }
        print("| Python | tasks | dump with panic.asyncio | without | cost | file with | without |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for name, (python, extra) in pythons.items():
            for count in COUNTS:
                done = subprocess.run(
                    [python, "-c", PROGRAM, str(count), str(args.runs), scratch],
                    env={**ENV, **extra},
                    capture_output=True,
                    text=True,
                    check=True,
                    timeout=600,
                )
                result = json.loads(done.stdout.strip().splitlines()[-1])
                with_, without = (statistics.median(result["times"][way]) * 1000 for way in ("with", "without"))
                sizes = result["sizes"]
                print(
                    f"| {name} | {count:,} | {with_:.0f} ms | {without:.0f} ms | {with_ - without:+.0f} ms "
                    f"| {sizes['with'] / 1024:.0f} KiB | {sizes['without'] / 1024:.0f} KiB |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
