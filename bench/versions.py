"""Two builds of ncore side by side: the snapshot time and the time the target is stopped.

    .venv/bin/python bench/versions.py --before REV [--after REV] [--runs 20]

Each build (a git revision, or the work tree for ``--after`` left out) is made into a
wheel and installed into a scratch virtual environment of its own, bytecode compiled, as
users get it. For each kind of target (tests/targets/service.py on pyenv's CPython 3.11:
``busy`` takes a pending call, ``sleep`` a direct call), ``runs`` snapshots with
``ncore --keep-running --method ptrace`` from each build, interleaved, into one target.
Measured: the time from starting the command to its exit (the dump is on disk then);
the time the main thread was borrowed, as ncore reports it (``stopped_seconds``: seize
to detach, the dump itself included for a direct call); and, in a second run of each,
the time the main thread spent in a tracing stop, sampled from /proc every 0.2 ms (for a
direct call that leaves out the dump, which the thread runs itself).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ncore_methods import StopSampler

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "tests" / "targets" / "service.py"
PYTHON = sorted((Path.home() / ".pyenv" / "versions").glob("3.11.*/bin/python3.11"))[-1]
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
KINDS = ("busy", "sleep")


def install(revision: str | None, scratch: Path, name: str) -> Path:
    """The ``ncore`` command of a build of ``revision`` (None: the work tree) in a venv of its own."""
    source = scratch / f"{name}-source"
    if revision is None:
        source = ROOT
    else:
        source.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision], check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(source)], input=archive.stdout, check=True)
    wheels = scratch / f"{name}-wheel"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(source)],
                   check=True, env=ENV)  # fmt: skip
    venv = scratch / f"{name}-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    wheel = next(wheels.glob("pypanic-*.whl"))
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)], check=True, env=ENV)
    return venv / "bin" / "ncore"


def snapshot(ncore: Path, pid: int, sampled: bool) -> tuple[float, float, float]:
    """(seconds to the end of the command, stopped_seconds it reported, seconds sampled in a stop)."""
    sampler = StopSampler(pid) if sampled else None
    began = time.perf_counter()
    argv = [str(ncore), "--json", "--keep-running", "--method", "ptrace", str(pid)]
    done = subprocess.run(argv, env=ENV, capture_output=True, text=True, timeout=60, check=False)
    elapsed = time.perf_counter() - began
    stopped = sampler.finish() if sampler is not None else 0.0
    if done.returncode:
        raise SystemExit(f"{ncore} failed: {done.stdout} {done.stderr}")
    return elapsed, float(json.loads(done.stdout)["stopped_seconds"]), stopped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="a git revision")
    parser.add_argument("--after", help="a git revision (default: the work tree)")
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-versions.") as scratch:
        builds = {
            "before": install(args.before, Path(scratch), "before"),
            "after": install(args.after, Path(scratch), "after"),
        }
        rows = []
        for kind in KINDS:
            with tempfile.TemporaryDirectory(prefix="bench-versions-work.") as work:
                target = subprocess.Popen(
                    [str(PYTHON), str(TARGET), kind], cwd=work, env={**ENV, "PYTHONPATH": str(ROOT / "src")},
                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                )  # fmt: skip
                try:
                    assert target.stdout is not None and target.stdout.readline().strip() == "ready"
                    measured: dict[str, list[tuple[float, float, float]]] = {name: [] for name in builds}
                    for _ in range(args.runs):
                        for name, ncore in builds.items():
                            elapsed, reported, _ = snapshot(ncore, target.pid, sampled=False)
                            _, _, sampled = snapshot(ncore, target.pid, sampled=True)
                            measured[name].append((elapsed, reported, sampled))
                            if target.poll() is not None:
                                raise SystemExit(f"the {name} build killed the {kind} target")
                finally:
                    target.kill()
                    target.wait()
            medians = {
                name: [statistics.median(v[i] for v in values) for i in range(3)] for name, values in measured.items()
            }
            rows.append((kind, medians))
    before, after = args.before, args.after or "work tree"
    print(f"{PYTHON}; {args.runs} snapshots of each build per target, interleaved; {time.strftime('%Y-%m-%d')}")
    print(f"before: {before}; after: {after}\n")
    print("| target | to snapshot, before | after | ratio | borrowed, before | after | in a stop, before | after |")
    print("|---|---|---|---|---|---|---|---|")
    for kind, m in rows:
        b, a = m["before"], m["after"]
        print(f"| {kind} | {b[0] * 1000:.0f} ms | {a[0] * 1000:.0f} ms | {a[0] / b[0]:.2f}x | {b[1] * 1000:.1f} ms | "
              f"{a[1] * 1000:.1f} ms | {b[2] * 1000:.1f} ms | {a[2] * 1000:.1f} ms |")  # fmt: skip


if __name__ == "__main__":
    main()
