"""Dumps read from outside: ``ncore --read-only`` beside the stack readers operators know.

    .venv/bin/python bench/read_only.py [--runs 10]

The work tree is built into a wheel and installed, bytecode compiled, into a scratch
virtual environment with py-spy from PyPI (pystack comes with ncore). Targets are
tests/targets/stuck.py, ``regex`` (a main thread in the regular expression engine,
holding the GIL) and ``c-sleep`` (a C call sleeping with the GIL), on pyenv's CPython
3.12 and Debian's 3.11. For each, ``runs`` rounds, interleaved, of:

- ``ncore --read-only PID``: a complete dump on disk, every thread with locals;
- ``pystack remote --locals PID`` and ``py-spy dump --locals --pid PID``: the stacks with
  locals printed;
- ``python -c pass`` with the venv's Python, the yardstick of the other goals.

Measured: the median time from starting each command to its exit, and the median time
the main thread spent stopped (a tracing stop, sampled from /proc every 0.2 ms); ncore's
own ``stopped_seconds`` is given too.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from ncore_methods import StopSampler
from versions import ENV, ROOT, install

TARGET = ROOT / "tests" / "targets" / "stuck.py"
PYTHONS = {
    "pyenv 3.12": sorted((Path.home() / ".pyenv" / "versions").glob("3.12.*/bin/python3.12"))[-1],
    "Debian 3.11": Path("/usr/bin/python3.11"),
}
KINDS = ("regex", "c-sleep")


def timed(argv: list[str], pid: int | None) -> tuple[float, float, str]:
    """(seconds to the command's exit, seconds the main thread of ``pid`` was stopped, stdout)."""
    sampler = StopSampler(pid) if pid is not None else None
    began = time.perf_counter()
    done = subprocess.run(argv, env=ENV, capture_output=True, text=True, timeout=120, check=False)
    elapsed = time.perf_counter() - began
    stopped = sampler.finish() if sampler is not None else 0.0
    if done.returncode:
        raise SystemExit(f"{argv} failed: {done.stdout} {done.stderr}")
    return elapsed, stopped, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-read-only.") as scratch:
        ncore = install(None, Path(scratch), "now")
        bin_dir = ncore.parent
        subprocess.run([str(bin_dir / "pip"), "install", "-q", "py-spy"], check=True, env=ENV)
        for label, python in PYTHONS.items():
            for kind in KINDS:
                with tempfile.TemporaryDirectory(prefix="bench-read-only-work.") as work:
                    target = subprocess.Popen(
                        [str(python), str(TARGET), kind], cwd=work, env=ENV,
                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                    )  # fmt: skip
                    try:
                        assert target.stdout is not None and target.stdout.readline().strip() == "ready"
                        time.sleep(0.2)
                        pid = target.pid
                        commands = {
                            "ncore --read-only": [str(ncore), "--json", "--read-only", str(pid)],
                            "pystack remote --locals": [str(bin_dir / "pystack"), "remote", "--locals", str(pid)],
                            "py-spy dump --locals": [str(bin_dir / "py-spy"), "dump", "--locals", "--pid", str(pid)],
                        }
                        measured: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
                        reported, baseline = [], []
                        for _ in range(args.runs):
                            baseline.append(timed([str(bin_dir / "python"), "-c", "pass"], None)[0])
                            for name, argv in commands.items():
                                elapsed, stopped, out = timed(argv, pid)
                                measured[name].append((elapsed, stopped))
                                if name.startswith("ncore"):
                                    record = json.loads(out)
                                    reported.append(record["stopped_seconds"])
                                    assert "marker" in Path(record["path"]).read_text()
                                elif "marker" not in out:
                                    raise SystemExit(f"{name} did not show the stuck frame's locals: {out}")
                            if target.poll() is not None:
                                raise SystemExit(f"the {label} {kind} target died")
                    finally:
                        target.kill()
                        target.wait()
                rows.append((label, kind, statistics.median(baseline), measured, statistics.median(reported)))
    print(f"{args.runs} rounds of each command per target, interleaved; {time.strftime('%Y-%m-%d')}\n")
    print("| target | command | to its exit | vs `python -c pass` | main thread stopped | ncore's own count |")
    print("|---|---|---|---|---|---|")
    for label, kind, base, measured, reported in rows:
        for name, values in measured.items():
            elapsed = statistics.median(v[0] for v in values)
            stopped = statistics.median(v[1] for v in values)
            own = f"{reported * 1000:.1f} ms" if name.startswith("ncore") else ""
            print(f"| {label} {kind} | `{name}` | {elapsed * 1000:.0f} ms | {elapsed / base:.1f}x | "
                  f"{stopped * 1000:.1f} ms | {own} |")  # fmt: skip
        print(f"| {label} {kind} | `python -c pass` | {base * 1000:.0f} ms | 1.0x | | |")


if __name__ == "__main__":
    main()
