"""ncore's methods side by side with hypno, and against a bare interpreter start.

    make chroot && .venv/bin/python bench/ncore_methods.py [--runs 10]

For a busy target (tests/targets/service.py busy, pyenv CPython 3.12), ``runs`` snapshots
each with the installed ``ncore --keep-running --method ptrace``, ``--method gdb`` (the sid chroot's
gdb) and hypno from PyPI (installed into a scratch virtual environment, running the same
``pypanic.dump``), interleaved. Measured: time from starting the command to the dump on
disk (ncore returns once it is; hypno is waited for by polling the directory), and in a
second run the time the target spent stopped by a tracer, sampled from
/proc/PID/task/PID/stat every 0.2 ms by the same sampler for every method. The time of
``python -c pass`` is measured in the same run for the goal's ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "tests" / "targets" / "service.py"
PYTHON = sorted((Path.home() / ".pyenv" / "versions").glob("3.12.*/bin/python3.12"))[-1]
GDB = ROOT / "tests" / "chroot" / "gdb"
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
NCORE = str(Path(sys.executable).parent / "ncore")
"""The installed command, as operators run it (its wrapper script included)."""


class StopSampler:
    """Adds up the time the main thread of ``pid`` spends in a tracing stop."""

    def __init__(self, pid: int) -> None:
        self.path = f"/proc/{pid}/task/{pid}/stat"
        self.stopped = 0.0
        self._running = True
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        last = time.perf_counter()
        while self._running:
            try:
                with open(self.path) as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                return
            now = time.perf_counter()
            if state in ("t", "T"):
                self.stopped += now - last
            last = now
            time.sleep(0.0002)

    def finish(self) -> float:
        self._running = False
        self._thread.join()
        return self.stopped


def hypno_command() -> list[str]:
    venv = Path(tempfile.gettempdir()) / "ncore-bench-hypno"
    if not (venv / "bin" / "hypno").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "hypno"], check=True, capture_output=True)
    return [str(venv / "bin" / "hypno")]


def timed(pid: int, work: str, run: Callable[[], None]) -> tuple[float, float]:
    """(Time to a complete dump, time the target was stopped), from two runs: the sampler
    competes for the CPU, so the timed run goes without it."""
    before = set(Path(work).glob("ncore.*"))
    began = time.perf_counter()
    run()
    while set(Path(work).glob("ncore.*")) == before:
        time.sleep(0.0005)
    elapsed = time.perf_counter() - began
    sampler = StopSampler(pid)
    run()
    return elapsed, sampler.finish()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--only", choices=["ptrace", "gdb", "hypno"], help="measure one method alone")
    args = parser.parse_args()
    hypno = hypno_command()
    code = f"import sys; sys.path.insert(0, {str(ROOT / 'src')!r}); import pypanic; pypanic.dump('hypno')"
    results: dict[str, list[tuple[float, float]]] = {"ptrace": [], "gdb": [], "hypno": []}
    bare = []
    with tempfile.TemporaryDirectory(prefix="bench-methods.") as work:
        target = subprocess.Popen(
            [str(PYTHON), str(TARGET), "busy"], cwd=work, env={**ENV, "PYTHONPATH": str(ROOT / "src")},
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        assert target.stdout is not None and target.stdout.readline().strip() == "ready"
        pid = target.pid

        def ncore(method: str) -> Callable[[], None]:
            argv = [NCORE, "--keep-running", "--method", method, "--gdb", str(GDB), str(pid)]

            def run() -> None:
                done = subprocess.run(argv, env=ENV, capture_output=True, text=True, timeout=60, check=False)
                if done.returncode:
                    raise RuntimeError(f"{argv} failed: {done.stdout} {done.stderr}")

            return run

        def run_hypno() -> None:
            subprocess.run([*hypno, str(pid), code], env=ENV, check=True, capture_output=True, timeout=60)

        runners = {"ptrace": ncore("ptrace"), "gdb": ncore("gdb"), "hypno": run_hypno}
        runners = {name: run for name, run in runners.items() if args.only in (None, name)}
        try:
            previous = "nothing"
            for _ in range(args.runs):
                began = time.perf_counter()
                subprocess.run([sys.executable, "-c", "pass"], env=ENV, check=True)
                bare.append(time.perf_counter() - began)
                for name, run in runners.items():
                    try:
                        results[name].append(timed(pid, work, run))
                    except RuntimeError as e:
                        time.sleep(0.5)
                        if target.poll() is not None:
                            raise SystemExit(
                                f"the target died (status {target.returncode}) during {name}, after {previous}"
                            ) from None
                        raise SystemExit(f"{name} failed with the target alive: {e}") from None
                    if target.poll() is not None:
                        raise SystemExit(f"{name} killed the target")
                    previous = name
        finally:
            target.kill()
            target.wait()
    python_start = statistics.median(bare)
    print(f"busy target on {PYTHON}; {args.runs} runs each, interleaved; {time.strftime('%Y-%m-%d')}")
    print(f"`python -c pass` (the same interpreter as ncore's): {python_start * 1000:.0f} ms\n")
    print("| method | to complete dump | vs `python -c pass` | target stopped |")
    print("|---|---|---|---|")
    for name, values in results.items():
        if not values:
            continue
        elapsed = statistics.median(v[0] for v in values)
        stopped = statistics.median(v[1] for v in values)
        label = f"ncore --method {name}" if name != "hypno" else "hypno (PyPI)"
        print(f"| {label} | {elapsed * 1000:.0f} ms | {elapsed / python_start:.1f}x | {stopped * 1000:.1f} ms |")


if __name__ == "__main__":
    main()
