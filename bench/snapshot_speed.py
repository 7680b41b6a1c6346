"""Snapshots (``ncore --keep-running``): first and warm, the stall of another thread, a forked writer's memory.

    make chroot && .venv/bin/python bench/snapshot_speed.py [--runs 5] [--python PATH] [--large 1000000,4000000]

ncore and pypanic are the checkout's wheel installed, bytecode compiled, into a scratch
venv (bench/wheel.py): ncore is ``<venv>/bin/ncore`` of the venv of ``--python`` (default
pyenv's CPython 3.12), and a host target that imports pypanic finds it in the venv of
pyenv's 3.12 (PYTHONPATH). Chroot targets (the Debian sid chroot's python3.14, started as
tests/interpreters.py's Workspace starts them) get a copy of src/pypanic. Needs root and
``make chroot`` for the remote-exec rows (skipped, and said so, without them).

1. First and warm snapshots. tests/targets/service.py ``busy``, with ``--method ptrace``
   on pyenv's 3.12 on the host and ``--method remote-exec`` on the chroot's 3.14, "plain"
   (no pypanic on its path: the dump uses the copy ncore carries) and "with pypanic"
   (imported at start). Per run, a fresh target each: the time from starting ncore to its
   exit (it exits once the dump is on disk) for its first snapshot, then for a second and
   a third (warm). ``python -c pass`` of ncore's venv interpreter is timed just before
   each snapshot; the ratios are against the median of all those. Goals: first ≤ 3x,
   warm ≤ 2x.
2. The stall of another thread. bench/targets/ticker.py: a ticker thread sleeps 1 ms in a
   loop and logs every gap over 2 ms between its wake-ups (CLOCK_MONOTONIC, shared with
   this process) while the main thread is busy in pure Python, with small registered
   state (a few keys) and large (``--large``: a dict of N two-item lists, limits raised).
   Per run, one ``--in-place`` snapshot (before: the process writes it all) and one
   default (after: a forked writer, above 20,000 elements), alternating which goes first,
   ``--method ptrace``; measured: the longest gap overlapping ncore's run, ncore's time,
   and the time ptrace held the target stopped (``--json``'s ``stopped_seconds``). The
   longest gap over 0.5 s with no snapshot is the floor (the GIL's 5 ms switch interval,
   and whatever else the machine runs). Goal: ≤ 20 ms with the writer whatever the size.
   ``fork()`` is timed alone in a process of each size (ticker.py ``fork``): the part of
   the stall a forked writer cannot avoid.
3. What the forked writer costs in memory: large state, the main thread ``busy`` (writes
   none of it) and ``writing`` (sweeps the table, writing into every entry, over and
   over). While a snapshot runs, /proc is polled for the writer (a process with the
   target's command line whose parent is not the target), and its smaps_rollup
   (Private_Clean + Private_Dirty: the pages either process wrote since the fork, which
   each then holds a copy of, the writer's own reference counts and allocations
   included) and the target's VmRSS are read every 5 ms, or every three times as long as
   the last read took (a read walks the writer's page tables: tens of ms for a large
   one). Reported: the target's RSS, the writer's peak private memory (MB and % of that
   RSS), its lifetime (first seen to gone), ncore's time, the number of samples and what
   one read took. The pid found is checked against ``--json``'s ``writer``.

Every process started is killed by pid and reaped on the way out, failure or not, and so is
any writer left of a ticker target (its command line names this run's directory). Each
large state's first forked-writer dump is parsed back and checked whole.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SERVICE = ROOT / "tests" / "targets" / "service.py"
TICKER = ROOT / "bench" / "targets" / "ticker.py"
PYENV = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
HOST_PYTHON = str(sorted(PYENV.glob("3.12.*/bin/python3.12"))[-1])
CHROOT_PYTHON = "/usr/bin/python3.14"
SMALL_ITEMS = 0
QUIET_SECONDS = 0.5
SAMPLE_SECONDS = 0.005
SAMPLER_SHARE = 3.0
"""The sampler sleeps at least this many times as long as its last read took."""
SNAPSHOT = ("--json", "--keep-running", "--method", "ptrace")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds >= 0.0095 else f"{seconds * 1000:.1f} ms"


def items_label(items: int) -> str:
    if items == SMALL_ITEMS:
        return "small (a few keys)"
    return f"{items // 1_000_000}M items" if items % 1_000_000 == 0 else f"{items:,} items"


# -- processes ------------------------------------------------------------------------


class Target:
    """A started target: waited for until it prints ``ready``, killed by pid and reaped by ``close``."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: str, ready_seconds: float, mark: str = "") -> None:
        self.mark = mark
        """A string only this run's command lines hold: a process whose command line has it is ours to kill."""
        descriptor, self.log = tempfile.mkstemp(prefix="bench-snapshot-speed.", suffix=".stderr")
        with os.fdopen(descriptor, "wb") as log:
            self.process = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=log)
        STARTED.append(self)
        self.pid = self.process.pid
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], ready_seconds)
        line = self.process.stdout.readline() if ready else b""
        if line.strip() != b"ready":
            self.close()
            raise SystemExit(f"{shlex.join(argv)} did not get ready: {self.errors()}")
        with open(f"/proc/{self.pid}/cmdline", "rb") as f:
            self.cmdline = f.read()

    def errors(self) -> str:
        with open(self.log, "rb") as f:
            return f.read().decode(errors="replace")[-2000:]

    def alive(self) -> bool:
        return self.process.poll() is None

    def copies(self) -> list[int]:
        """Processes running this target's command line, itself aside (a forked writer)."""
        return [pid for pid in _pids() if pid != self.pid and _cmdline(pid) == self.cmdline]

    def wait_for_no_copies(self, seconds: float = 30.0) -> None:
        deadline = time.monotonic() + seconds
        while self.copies() and time.monotonic() < deadline:
            time.sleep(0.01)

    def close(self) -> None:
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
        self.process.wait()
        if self.mark and self.mark.encode() in getattr(self, "cmdline", b""):
            for pid in self.copies():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self.process.stdout is not None:
            self.process.stdout.close()
        os.unlink(self.log)
        if self in STARTED:
            STARTED.remove(self)


STARTED: list[Target] = []
"""The targets running: killed and reaped on the way out."""


def _pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _cmdline(pid: int) -> bytes | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return None


def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


@dataclass
class Ncore:
    """One ncore command: its argv start, and the environment it runs with."""

    argv: list[str]
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 300.0) -> tuple[float, float, float, dict[str, Any]]:
        """(Seconds from start to exit, monotonic start, monotonic end, the --json record or {})."""
        argv = [*self.argv, *args]
        began = time.monotonic()
        done = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=timeout, check=False)
        ended = time.monotonic()
        if done.returncode:
            output = f"{done.stdout[-2000:]} {done.stderr[-2000:]}"
            raise RuntimeError(f"{shlex.join(argv)} exited {done.returncode}: {output}")
        record = json.loads(done.stdout) if "--json" in args else {}
        return ended - began, began, ended, record


def python_start(python: str, env: dict[str, str]) -> float:
    began = time.perf_counter()
    subprocess.run([python, "-c", "pass"], env=env, check=True)
    return time.perf_counter() - began


# -- 1. first and warm snapshots --------------------------------------------------------


@dataclass
class Kind:
    """One row of the first table: a method, a target, and how the target gets started."""

    method: str
    target: str
    with_pypanic: bool
    start: Any  # () -> Target
    first: list[float] = field(default_factory=list)
    warm: list[float] = field(default_factory=list)
    bare: list[float] = field(default_factory=list)


def first_and_warm(kinds: list[Kind], ncore: Ncore, bare_python: str, env: dict[str, str], runs: int) -> None:
    for _ in range(runs):
        for kind in kinds:
            target = kind.start()
            try:
                for n in range(3):
                    kind.bare.append(python_start(bare_python, env))
                    elapsed, _, _, _ = ncore.run("--keep-running", "--method", kind.method, str(target.pid), timeout=60)
                    (kind.first if n == 0 else kind.warm).append(elapsed)
                    if not target.alive():
                        raise SystemExit(f"the {kind.target} target died after a snapshot: {target.errors()}")
            finally:
                target.close()
        print(f"measured: first and warm snapshots, run {len(kinds[0].first)}", file=sys.stderr)


def first_table(kinds: list[Kind]) -> None:
    print("| method | target | pypanic in the target | first snapshot | vs `python -c pass` "
          "| warm snapshot | vs `python -c pass` | goals: first ≤ 3x, warm ≤ 2x |")  # fmt: skip
    print("|---|---|---|---:|---:|---:|---:|---|")
    bare = statistics.median(b for kind in kinds for b in kind.bare)
    for kind in kinds:
        first, warm = statistics.median(kind.first), statistics.median(kind.warm)
        goals = f"{'met' if first / bare <= 3 else 'missed'}, {'met' if warm / bare <= 2 else 'missed'}"
        pypanic = "imported at start" if kind.with_pypanic else "no (ncore's copy)"
        print(f"| `--method {kind.method}` | {kind.target} | {pypanic} | {ms(first)} | {first / bare:.1f}x "
              f"| {ms(warm)} | {warm / bare:.1f}x | {goals} |")  # fmt: skip


# -- 2. the stall of another thread -------------------------------------------------------


class Gaps:
    """The ticker's gap log: ``START GAP`` lines, read as they come."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: list[tuple[float, float]] = []
        self._offset = 0

    def _read(self) -> None:
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            data = f.read()
        complete = data[: data.rfind(b"\n") + 1]
        self._offset += len(complete)
        for line in complete.decode().splitlines():
            start, gap = line.split()
            self.entries.append((float(start), float(gap)))

    def longest(self, began: float, ended: float, target: Target) -> float:
        """The longest gap overlapping [began, ended] (2 ms, the threshold, if none is logged);
        waits for the ticker to log past ``ended`` (a gap is logged when it ends)."""
        deadline = time.monotonic() + 5
        while True:
            self._read()
            if (self.entries and self.entries[-1][0] > ended) or time.monotonic() > deadline or not target.alive():
                break
            time.sleep(0.01)
        overlapping = [gap for start, gap in self.entries if start < ended and start + gap > began]
        return max(overlapping, default=0.002)


@dataclass
class Stall:
    gaps: list[float] = field(default_factory=list)
    elapsed: list[float] = field(default_factory=list)
    stopped: list[float] = field(default_factory=list)
    writers: set[bool] = field(default_factory=set)


@dataclass
class Setup:
    """What parts 2 and 3 run with: ncore, the targets' interpreter and environment, their
    directory (its name is in their command lines), and the number of runs."""

    ncore: Ncore
    python: str
    env: dict[str, str]
    work: Path
    runs: int


def ticker(on: Setup, items: int, mode: str) -> tuple[Target, Gaps]:
    gaps = on.work / f"gaps.{items}.{mode}"
    gaps.touch()
    # A 4M-item state takes some seconds to build (more on a loaded machine).
    argv = [on.python, str(TICKER), str(items), str(gaps), mode]
    target = Target(argv, on.env, str(on.work), 60 + items / 20_000, mark=on.work.name)
    return target, Gaps(gaps)


def check_whole(path: str, items: int) -> None:
    """The registered table is all in the dump (the cuts the dump lists are of the stacks' locals)."""
    with open(path) as f:
        dump = json.load(f)
    table = dump.get("ticker.table", {})
    cuts = [cut for cut in dump.get("dbg.cuts", {}).get("first", []) if cut["path"].startswith("ticker.table")]
    last = str(items - 1)
    if len(table) != items or table.get(last) != [items - 1, last] or table.get("0") != [0, "0"] or cuts:
        raise SystemExit(f"{path}: the table was not dumped whole ({len(table)} of {items} entries, cuts {cuts})")


def stalls(sizes: list[int], on: Setup) -> dict[tuple[int, str], Stall]:
    ncore, runs = on.ncore, on.runs
    results: dict[tuple[int, str], Stall] = {}
    for items in sizes:
        target, gaps = ticker(on, items, "busy")
        try:
            time.sleep(0.3)
            quiet = results.setdefault((items, "none"), Stall())
            for run in range(runs):
                began = time.monotonic()
                time.sleep(QUIET_SECONDS)
                quiet.gaps.append(gaps.longest(began, time.monotonic(), target))
                order = ["in-place", "writer"] if run % 2 == 0 else ["writer", "in-place"]
                for how in order:
                    flags = ["--in-place"] if how == "in-place" else []
                    elapsed, began, ended, record = ncore.run(*SNAPSHOT, *flags, str(target.pid))
                    stall = results.setdefault((items, how), Stall())
                    stall.elapsed.append(elapsed)
                    stall.stopped.append(record["stopped_seconds"])
                    stall.gaps.append(gaps.longest(began, ended, target))
                    stall.writers.add(record["writer"] is not None)
                    if not target.alive():
                        raise SystemExit(f"the ticker target died after a snapshot: {target.errors()}")
                    target.wait_for_no_copies()
                    if run == 0 and how == "writer" and items:
                        check_whole(record["path"], items)
                    os.unlink(record["path"])
                print(f"measured: stall, {items_label(items)}, run {run + 1}", file=sys.stderr)
        finally:
            target.close()
    return results


def fork_costs(sizes: list[int], on: Setup) -> dict[int, list[float]]:
    """Milliseconds of ``os.fork()`` in a process holding each size of state (ticker.py ``fork``)."""
    costs = {}
    for items in sizes:
        done = subprocess.run([on.python, str(TICKER), str(items), os.devnull, "fork"], env=on.env, cwd=on.work,
                              capture_output=True, text=True, timeout=600, check=True)  # fmt: skip
        costs[items] = [float(t) for t in done.stdout.split()]
    return costs


def stall_table(results: dict[tuple[int, str], Stall], forks: dict[int, list[float]]) -> None:
    print("| registered state | snapshot | written by | longest gap of the ticker: median | max "
          "| ncore's time | target stopped by ptrace | `fork()` alone | goal: ≤ 20 ms with the writer |")  # fmt: skip
    print("|---|---|---|---:|---:|---:|---:|---:|---|")
    labels = {"none": "none (0.5 s without one)", "in-place": "`--in-place` (before)", "writer": "default (after)"}
    for (items, how), stall in results.items():
        written = ("a forked writer" if stall.writers == {True} else "the process" if stall.writers == {False}
                   else "both (by turns)") if how != "none" else ""  # fmt: skip
        elapsed = ms(statistics.median(stall.elapsed)) if stall.elapsed else ""
        stopped = ms(statistics.median(stall.stopped)) if stall.stopped else ""
        fork = ms(statistics.median(forks[items]) / 1000) if how == "writer" and items in forks else ""
        goal = ("met" if max(stall.gaps) <= 0.020 else "missed") if how == "writer" else ""
        print(f"| {items_label(items)} | {labels[how]} | {written} | {ms(statistics.median(stall.gaps))} "
              f"| {ms(max(stall.gaps))} | {elapsed} | {stopped} | {fork} | {goal} |")  # fmt: skip


# -- 3. the forked writer's memory --------------------------------------------------------


class WriterWatch:
    """Finds the forked writer of ``target`` as it appears and samples its memory until it is gone."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.writer: int | None = None
        self.first_seen = self.last_seen = 0.0
        self.samples: list[tuple[int, int, int]] = []
        """(writer's private kB, writer's Rss kB, target's VmRSS kB)."""
        self.reads: list[float] = []
        """Seconds each sample took to read (smaps_rollup walks the writer's page tables)."""
        self._seen = set(_pids())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _find(self) -> int | None:
        for pid in _pids():
            if pid in self._seen:
                continue
            self._seen.add(pid)
            if _cmdline(pid) == self.target.cmdline and _ppid(pid) not in (self.target.pid, None):
                return pid
        return None

    def _run(self) -> None:
        while self.writer is None and not self._stop.is_set():
            self.writer = self._find()
            if self.writer is None:
                time.sleep(0.001)
        if self.writer is None:
            return
        self.first_seen = time.monotonic()
        while True:
            read_began = time.perf_counter()
            sample = self._sample(self.writer)
            if sample is None:
                break
            read = time.perf_counter() - read_began
            self.reads.append(read)
            self.samples.append(sample)
            self.last_seen = time.monotonic()
            # A large writer's smaps_rollup takes tens of ms to read: the sampler keeps to a
            # quarter of a core, not to compete with the writer on a small machine.
            time.sleep(max(SAMPLE_SECONDS, SAMPLER_SHARE * read))
        self.last_seen = time.monotonic()

    def _sample(self, writer: int) -> tuple[int, int, int] | None:
        fields: dict[str, int] = {}
        try:
            with open(f"/proc/{writer}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                    return None
            with open(f"/proc/{writer}/smaps_rollup") as f:
                for line in f:
                    name, _, rest = line.partition(":")
                    if rest.strip().endswith("kB"):
                        fields[name] = int(rest.split()[0])
            with open(f"/proc/{self.target.pid}/status") as f:
                target_rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            return None
        if "Rss" not in fields:
            return None  # the writer has already released its memory
        return fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0), fields["Rss"], target_rss

    def finish(self) -> None:
        self._stop.set()
        self._thread.join(timeout=120)


@dataclass
class Memory:
    target_rss: list[float] = field(default_factory=list)
    private: list[float] = field(default_factory=list)
    share: list[float] = field(default_factory=list)
    lifetime: list[float] = field(default_factory=list)
    elapsed: list[float] = field(default_factory=list)
    samples: list[int] = field(default_factory=list)
    reads: list[float] = field(default_factory=list)


def memory(sizes: list[int], on: Setup) -> dict[tuple[int, str], Memory]:
    ncore, runs = on.ncore, on.runs
    results: dict[tuple[int, str], Memory] = {}
    for items in sizes:
        for mode in ("busy", "writing"):
            target, _ = ticker(on, items, mode)
            result = results.setdefault((items, mode), Memory())
            try:
                time.sleep(0.3)
                for run in range(runs):
                    watch = WriterWatch(target)
                    try:
                        elapsed, _, _, record = ncore.run(*SNAPSHOT, str(target.pid))
                    finally:
                        watch.finish()
                    if record["writer"] is None or watch.writer != record["writer"] or not watch.samples:
                        raise SystemExit(f"ncore's writer {record['writer']}, found {watch.writer} "
                                         f"with {len(watch.samples)} samples")  # fmt: skip
                    rss = watch.samples[0][2] / 1024
                    private = max(s[0] for s in watch.samples) / 1024
                    result.target_rss.append(rss)
                    result.private.append(private)
                    result.share.append(private / rss)
                    result.lifetime.append(watch.last_seen - watch.first_seen)
                    result.elapsed.append(elapsed)
                    result.samples.append(len(watch.samples))
                    result.reads.extend(watch.reads)
                    if not target.alive():
                        raise SystemExit(f"the ticker target died after a snapshot: {target.errors()}")
                    target.wait_for_no_copies()
                    os.unlink(record["path"])
                    print(f"measured: memory, {items_label(items)}, {mode}, run {run + 1}", file=sys.stderr)
            finally:
                target.close()
    return results


def memory_table(results: dict[tuple[int, str], Memory]) -> None:
    print("| registered state | the service's main thread | target RSS | writer's peak private memory "
          "| of the target's RSS | max | writer's lifetime | ncore's time | samples per run "
          "| one sample's read |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    modes = {"busy": "busy (writes none of it)", "writing": "writing into every entry"}
    for (items, mode), m in results.items():
        print(f"| {items_label(items)} | {modes[mode]} | {statistics.median(m.target_rss):.0f} MB "
              f"| {statistics.median(m.private):.0f} MB | {statistics.median(m.share) * 100:.0f}% "
              f"| {max(m.share) * 100:.0f}% | {ms(statistics.median(m.lifetime))} "
              f"| {ms(statistics.median(m.elapsed))} | {statistics.median(m.samples):.0f} "
              f"| {ms(statistics.median(m.reads))} |")  # fmt: skip


# -- the run ------------------------------------------------------------------------------


def describe(python: str) -> str:
    done = subprocess.run([python, "-c", "import platform; print(platform.python_version())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return f"CPython {done.stdout.strip()} ({python})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--python", default=HOST_PYTHON, help="the interpreter of ncore's venv")
    parser.add_argument("--large", default="1000000,4000000", help="large states' numbers of items, comma-separated")
    parser.add_argument("--only", choices=["first", "stall", "memory"], action="append", help="measure only this part")
    args = parser.parse_args()
    parts = args.only or ["first", "stall", "memory"]
    large = [int(n) for n in args.large.split(",") if n]

    sys.path.insert(0, str(ROOT))
    from tests.interpreters import CHROOT, Interpreter, Workspace
    from wheel import ENV, scratch_venv

    env = {k: v for k, v in ENV.items() if k != "PYTHONPATH"}
    venv = scratch_venv(args.python)
    target_venv = venv if Path(args.python).resolve() == Path(HOST_PYTHON).resolve() else scratch_venv(HOST_PYTHON)
    (site,) = (target_venv / "lib").glob("python3.12/site-packages")
    ncore = Ncore([str(venv / "bin" / "ncore")], env)
    with_site = {**env, "PYTHONPATH": str(site)}
    chroot = Interpreter("sid-3.14", CHROOT_PYTHON, CHROOT)
    skipped = chroot.available()
    executable = Path(sys.executable)
    shown = executable.relative_to(ROOT) if executable.is_relative_to(ROOT) else executable
    command = shlex.join([str(shown), "bench/snapshot_speed.py", *sys.argv[1:]])
    load_before = os.getloadavg()[0]
    began = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="bench-snapshot-speed."))
    space = None
    try:
        if "first" in parts:
            kinds = []
            for with_pypanic in (False, True):
                host_env = with_site if with_pypanic else env

                def host(host_env: dict[str, str] = host_env) -> Target:
                    return Target([HOST_PYTHON, str(SERVICE), "busy"], host_env, str(work), 60)

                kinds.append(Kind("ptrace", "pyenv 3.12, host", with_pypanic, host))
            if skipped is None:
                space = Workspace(chroot)
                for with_pypanic in (False, True):

                    def inside(with_pypanic: bool = with_pypanic) -> Target:
                        assert space is not None
                        argv = space.command("service.py", "busy", with_pypanic=with_pypanic)
                        return Target(argv, env, str(work), 60)

                    kinds.append(Kind("remote-exec", "sid 3.14, chroot", with_pypanic, inside))
            first_and_warm(kinds, ncore, str(venv / "bin" / "python"), env, args.runs)
        on = Setup(ncore, HOST_PYTHON, with_site, work, args.runs)
        if "stall" in parts:
            stall_results = stalls([SMALL_ITEMS, *large], on)
            forks = fork_costs(large, on)
        if "memory" in parts:
            memory_results = memory(large, on)
    finally:
        for target in list(STARTED):
            target.close()
        if space is not None:
            space.remove()
        shutil.rmtree(work, ignore_errors=True)
    minutes = (time.monotonic() - began) / 60
    tree = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                          capture_output=True, text=True, check=False).stdout.strip()  # fmt: skip
    chroot_text = f"sid chroot's CPython 3.14 ({CHROOT_PYTHON})" if skipped is None else f"no chroot ({skipped})"
    print(f"ncore on {describe(str(venv / 'bin' / 'python'))}, the wheel of {tree or 'the checkout'} in {venv.name}; "
          f"targets on {describe(HOST_PYTHON)} and the {chroot_text}; {args.runs} runs, interleaved, medians; "
          f"{os.cpu_count()} cores, load average {load_before:.1f} before and {os.getloadavg()[0]:.1f} after; "
          f"{minutes:.1f} min; {time.strftime('%Y-%m-%d')}; `{command}` from the checkout's root\n")  # fmt: skip
    if "first" in parts:
        bare = statistics.median(b for kind in kinds for b in kind.bare)
        print(f"`python -c pass` of ncore's venv interpreter: {ms(bare)}\n")
        first_table(kinds)
        print()
    if "stall" in parts:
        stall_table(stall_results, forks)
        print()
    if "memory" in parts:
        memory_table(memory_results)


if __name__ == "__main__":
    main()
