"""ncore's gdb method against a plain pyrasite-style gdb call, side by side in one run.

    make chroot && .venv/bin/python bench/ncore_gdb.py [--runs 10] [--gdb COMMAND]

For each target kind, ``runs`` snapshots with ``ncore --keep-running --json`` and as many
with the baseline: gdb attaching and calling PyGILState_Ensure, PyRun_SimpleString (the
same pypanic.dump) and PyGILState_Release wherever the target stopped. Both use the same
gdb. Reported: median time from start to a complete dump, and median time the target was
stopped (ncore: its gdb markers; baseline: echo markers around the calls). A baseline run
that crashes or hangs its target is counted, and the target restarted.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "tests" / "targets" / "service.py"
PYTHON = sorted((Path.home() / ".pyenv" / "versions").glob("3.12.*/bin/python3.12"))[-1]
KINDS = ("busy", "sleep", "select", "event", "accept", "main-blocked-worker-busy", "both-busy", "churn")


def start(kind: str, work: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    process = subprocess.Popen(
        [str(PYTHON), str(TARGET), kind],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    return process


def ncore_once(pid: int, gdb: str) -> tuple[float, float]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "ncore", "--json", "--method", "gdb", "--keep-running", "--gdb", gdb, str(pid)],
        capture_output=True, text=True, timeout=60, check=True, env=env,
    )  # fmt: skip
    elapsed = time.perf_counter() - began
    return elapsed, json.loads(done.stdout)["stopped_seconds"]


def baseline_once(pid: int, gdb: str, work: str) -> tuple[float, float] | str:
    code = f"import sys; sys.path.insert(0, {str(ROOT / 'src')!r}); import pypanic; pypanic.dump('baseline')"
    argv = [
        *gdb.split(), "-nx", "-batch", "-iex", f"set sysroot /proc/{pid}/root", "-ex", f"attach {pid}",
        "-ex", "echo MARK attached\\n",
        "-ex", "call (int) PyGILState_Ensure()",
        "-ex", f"call (int) PyRun_SimpleString({json.dumps(code)})",
        "-ex", "call (void) PyGILState_Release($1)",
        "-ex", "detach", "-ex", "echo MARK detached\\n",
    ]  # fmt: skip
    before = len(list(Path(work).glob("ncore.*")))
    began = time.perf_counter()
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    marks: dict[str, float] = {}

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("MARK "):
                marks[line.split()[1]] = time.perf_counter()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return "hung"
    reader.join(5)
    elapsed = time.perf_counter() - began
    if len(list(Path(work).glob("ncore.*"))) == before or "detached" not in marks:
        return "failed"
    return elapsed, marks["detached"] - marks["attached"]


def measure(kind: str, runs: int, gdb: str) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="bench-ncore.") as work:
        target = start(kind, work)
        ours = [ncore_once(target.pid, gdb) for _ in range(runs)]
        theirs: list[tuple[float, float]] = []
        harmed = 0
        for _ in range(runs):
            outcome = baseline_once(target.pid, gdb, work)
            if isinstance(outcome, str) or target.poll() is not None:
                harmed += 1
                target.kill()
                target.wait()
                target = start(kind, work)
            else:
                theirs.append(outcome)
        target.kill()
        target.wait()
        if target.stdout is not None:
            target.stdout.close()

    def median(values: list[tuple[float, float]], i: int) -> str:
        return f"{statistics.median(v[i] for v in values) * 1000:.0f} ms" if values else "n/a"

    ratio = (
        f"{statistics.median(v[0] for v in ours) / statistics.median(v[0] for v in theirs):.2f}x" if theirs else "n/a"
    )
    return [kind, median(ours, 0), median(theirs, 0), ratio, median(ours, 1), median(theirs, 1), f"{harmed} of {runs}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--gdb", default=str(ROOT / "tests" / "chroot" / "gdb"))
    args = parser.parse_args()
    version = subprocess.run([*args.gdb.split(), "--version"], capture_output=True, text=True, check=True).stdout
    print(f"Target {PYTHON}; {version.splitlines()[0]}; {args.runs} runs each; {time.strftime('%Y-%m-%d')}\n")
    print("| target | ncore: to complete dump | baseline: to complete dump | ratio | ncore: target stopped "
          "| baseline: target stopped | baseline crashed or hung |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for kind in KINDS:
        print("| " + " | ".join(measure(kind, args.runs, args.gdb)) + " |", flush=True)


if __name__ == "__main__":
    main()
