"""ncore with the built-in ptrace method against real targets, with no gdb anywhere on PATH:
every interpreter and kind of target, snapshots, interrupted waits that must not be cut
short, vector state that must survive, a call that never returns, and soaks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..interpreters import ALL, HOST, IN_CHROOT, SRC, Interpreter, Workspace, missing
from .conftest import NcoreRun, Service, assert_left_running, load_dump, wait_for_ready

BLOCKED = ["sleep", "select", "event", "accept", "main-blocked-worker-busy"]
RUNNING = ["busy", "both-busy", "churn"]
WAITS = ["sleep", "select", "event", "read", "c-sleep"]
WAIT_SECONDS = 2.0
SOME = [HOST[0], HOST[3], HOST[-1], IN_CHROOT[-1]]


def without_gdb() -> dict[str, str]:
    """The environment with every directory holding a gdb taken off PATH, and no NCORE_GDB."""
    env = {k: v for k, v in os.environ.items() if k != "NCORE_GDB"}
    env["PATH"] = os.pathsep.join(d for d in env.get("PATH", "").split(os.pathsep) if not (Path(d) / "gdb").exists())
    assert shutil.which("gdb", path=env["PATH"]) is None
    return env


def ncore(*args: str, timeout: float = 120, cwd: Path | None = None) -> NcoreRun:
    """``python -m ncore --json ARGS`` with no gdb to be found."""
    argv = [sys.executable, "-m", "ncore", "--json", *args]
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, env=without_gdb(), cwd=cwd, check=False
    )
    try:
        record = json.loads(done.stdout) if done.stdout.strip() else {}
    except ValueError:
        pytest.fail(f"ncore --json printed something else: {done.stdout!r} {done.stderr!r}")
    return NcoreRun(done.returncode, record, done.stdout, done.stderr)


def start_program(processes, workspace_for, interpreter, program: str, *args: str) -> Service:
    space: Workspace = workspace_for(interpreter)
    with open(space.host / "stderr", "w") as stderr:
        process = processes.start(space.command(program, *args), stderr=stderr)
    wait_for_ready(process)
    return Service(process, space)


def expected_path(kind: str, why: str) -> str:
    """A running main thread gets a pending call, unless it was caught in a system call
    with the GIL released (writing its progress file), which the safety rule treats as blocked."""
    if kind in BLOCKED or "with the GIL released" in why:
        return "direct"
    return "pending"


def test_no_gdb_is_needed_and_auto_takes_ptrace(start_service):
    """With no gdb on PATH, ``auto`` takes the ptrace method and the dump is written."""
    service = start_service(HOST[3], "busy")
    run = ncore(str(service.pid))
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.record["method"] == "ptrace"
    assert service.process.wait(timeout=30) == 1


@pytest.mark.parametrize("kind", RUNNING + BLOCKED)
@pytest.mark.parametrize("interpreter", ALL, ids=lambda i: i.name)
def test_panic_dump_of_every_target_kind(start_service, interpreter, kind):
    """ncore --method ptrace PID: the right path, a complete dump, and the target exits 1."""
    service = start_service(interpreter, kind)
    run = ncore("--method", "ptrace", str(service.pid))
    assert run.returncode == 0, run.stdout + run.stderr
    record = run.record
    assert record["status"] == "dumped" and record["method"] == "ptrace"
    assert record["injection"] == expected_path(kind, record["why"]), record["why"]
    assert record["stopped_seconds"] > 0
    assert service.process.wait(timeout=30) == 1
    data = load_dump(record["path"])
    assert data["service.kind"] == kind
    assert data["panic.reason"] == "explicit panic"
    main = next(t for t in data["panic.threads"] if t["main"])
    assert main["current"], "the dump is taken on the main thread"
    assert "main" in [f["function"] for f in main["frames"]]


@pytest.mark.parametrize("kind", ["busy", "churn", "sleep", "accept", "main-blocked-worker-busy"])
@pytest.mark.parametrize("interpreter", SOME, ids=lambda i: i.name)
def test_keep_running_snapshots(start_service, interpreter, kind):
    """--keep-running, three times: three dumps, and the target goes on working, not traced."""
    service = start_service(interpreter, kind)
    for n in range(3):
        before = service.progress()
        run = ncore("--method", "ptrace", "--keep-running", str(service.pid))
        assert run.returncode == 0, run.stdout + run.stderr
        assert run.record["target_exited"] is False
        assert service.process.poll() is None
        if kind in RUNNING:
            service.wait_for_progress_after(before)
        assert load_dump(run.record["path"])["panic.reason"] == "snapshot", n
    service.assert_left_running()


@pytest.mark.parametrize("kind", ["busy", "sleep"])
def test_target_in_another_mount_namespace(start_service, tmp_path, kind):
    """A target in its own mount namespace (as in a container): symbols and memory are
    reached through /proc, and the panic dump is copied out before the target exits."""
    if os.geteuid() != 0:
        missing("unshare needs root")
    service = start_service(HOST[3], kind, prefix=("unshare", "--mount", "--propagation", "private"))
    private_before = set(Path("/tmp").glob("ncore.*"))
    run = ncore("--method", "ptrace", str(service.pid), cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    record = run.record
    assert record["path"] == str(tmp_path / f"ncore.{service.pid}")
    assert service.process.wait(timeout=30) == 1
    assert load_dump(record["path"])["service.kind"] == kind
    assert set(Path("/tmp").glob("ncore.*")) <= private_before, "ncore left its private directory behind"


@pytest.mark.parametrize("kind", WAITS)
@pytest.mark.parametrize("interpreter", SOME, ids=lambda i: i.name)
def test_an_interrupted_wait_lasts_as_long_as_asked(processes, workspace_for, interpreter, kind):
    """A snapshot that takes a second, taken while the main thread waits: the wait is not
    cut short (c-sleep is libc's sleep, which no Python-level retry hides), nor lengthened
    by the second (select and poll restart with the time they had left when interrupted)."""
    service = start_program(
        processes, workspace_for, interpreter, "timed_wait.py", kind, str(WAIT_SECONDS), "slow-dump"
    )
    run = ncore("--method", "ptrace", "--keep-running", str(service.pid))
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.record["injection"] == "direct", run.record["why"]
    assert run.record["stopped_seconds"] > 0.8, "the dump was meant to be slow"
    out, _ = service.process.communicate(timeout=30)
    assert service.process.returncode == 0, out
    waited = float(out.split("waited ")[1])
    assert waited >= WAIT_SECONDS - 0.05, f"the wait was cut short: {waited} s of {WAIT_SECONDS}"
    assert waited < WAIT_SECONDS + 0.5, f"the wait was lengthened by the dump: {waited} s of {WAIT_SECONDS}"
    assert "error" not in out


@pytest.mark.parametrize("signals", [False, True], ids=["quiet", "signals"])
@pytest.mark.parametrize("interpreter", [HOST[0], HOST[3], IN_CHROOT[-1]], ids=lambda i: i.name)
def test_vector_state_survives_injections(processes, workspace_for, interpreter, signals):
    """A target doing floating-point and vector work checks every result while it is
    interrupted 30 times (with a 1 ms timer signal too): no wrong result, still working."""
    args = ("signals",) if signals else ()
    service = start_program(processes, workspace_for, interpreter, "vector_check.py", *args)
    for n in range(30):
        before = service.progress()
        run = ncore("--method", "ptrace", "--keep-running", str(service.pid))
        assert run.returncode == 0, f"snapshot {n}: {run.stdout} {run.stderr}"
        assert service.process.poll() is None, f"the target failed its check after snapshot {n}"
        service.wait_for_progress_after(before)
    service.assert_left_running()


HOG_SECONDS = 4.0
HOG = """
import sys, threading, time, ctypes
hold = float(sys.argv[1])
def hog():
    time.sleep(0.2)
    ctypes.PyDLL(None).usleep(int(hold * 1e6))  # a C call that keeps the GIL
threading.Thread(target=hog, daemon=True).start()
print("ready", flush=True)
started = time.monotonic()
time.sleep(hold + 2)
print(f"slept {time.monotonic() - started:.3f}", flush=True)
time.sleep(1000)
"""


def leftovers(before: set[Path]) -> set[Path]:
    """ncore's private directories in /tmp that were not there ``before``."""
    return set(Path("/tmp").glob("ncore.*")) - before


def test_a_direct_call_that_cannot_start_is_withdrawn_and_returns_on_its_own(processes, workspace_for):
    """The main thread sleeps while another thread holds the GIL for seconds: the direct
    call waits for it. ncore gives up at --timeout, withdraws the request and lets go
    (exit 7 with --no-fallback); when the GIL comes free the borrowed call finds nothing to do, and the
    thread goes back to its sleep, which lasts as long as asked. No dump, nothing left."""
    space = workspace_for(HOST[3])
    before = set(Path("/tmp").glob("ncore.*"))
    process = processes.start([HOST[3].path, "-c", HOG, str(HOG_SECONDS)], cwd=space.work)
    wait_for_ready(process)
    time.sleep(0.5)
    run = ncore("--method", "ptrace", "--timeout", "2", "--no-fallback", str(process.pid))
    assert run.returncode == 7, run.stdout + run.stderr
    assert "did not start the dump in time" in run.record["error"]
    assert "still in the borrowed call" in run.record["error"]
    assert "withdrew the request" in run.record["error"]
    assert_left_running(process.pid)
    assert process.stdout is not None
    line = process.stdout.readline()
    assert abs(float(line.split()[1]) - (HOG_SECONDS + 2)) < 0.5, line
    assert process.poll() is None
    assert_left_running(process.pid)
    assert not list(space.work.glob("ncore.*")), "a withdrawn request wrote a dump"
    assert not leftovers(before), "the borrowed call did not remove ncore's directory"


SLOW_PAYLOAD = """
import sys, time
def hook(event, args):
    if event == "compile" and args[1] == "<ncore payload>":
        time.sleep(4)
sys.addaudithook(hook)
print("ready", flush=True)
time.sleep(1000)
"""


def test_a_direct_call_held_up_in_the_interpreter_is_let_go_and_finishes_on_its_own(processes, workspace_for):
    """The injected code itself is held up past --timeout before the dump starts (an audit
    hook stalls it): ncore withdraws the request and lets go of the thread mid-call (exit
    7 with --no-fallback, not traced); the call then ends on its own and the process lives on, undumped."""
    space = workspace_for(HOST[3])
    before = set(Path("/tmp").glob("ncore.*"))
    process = processes.start([HOST[3].path, "-c", SLOW_PAYLOAD], cwd=space.work)
    wait_for_ready(process)
    run = ncore("--method", "ptrace", "--timeout", "2", "--no-fallback", str(process.pid))
    assert run.returncode == 7, run.stdout + run.stderr
    assert "withdrew the request" in run.record["error"]
    assert_left_running(process.pid)
    deadline = time.monotonic() + 20
    while leftovers(before) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not leftovers(before), "the borrowed call did not end (its directory is still there)"
    time.sleep(0.2)
    assert process.poll() is None
    assert_left_running(process.pid)
    assert not list(space.work.glob("ncore.*"))


SOAK = """
import json, sys
from ncore.session import Request, take_dump
pid, count = int(sys.argv[1]), int(sys.argv[2])
for n in range(count):
    result = take_dump(Request(pid, keep_running=True, method="ptrace", timeout=30))
    print(json.dumps({"n": n, "injection": result.injection, "stopped": result.stopped_seconds}), flush=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "count"), [("churn", 1000), ("both-busy", 300)])
def test_soak(start_service, kind, count):
    """Hundreds of snapshots into one target, from one ncore process (take_dump in a loop,
    to spare an interpreter start per snapshot): every one complete, the target unharmed."""
    service = start_service(HOST[3], kind)
    progress = service.progress()
    driver = [sys.executable, "-c", SOAK, str(service.pid), str(count)]
    done = subprocess.run(driver, capture_output=True, text=True, timeout=count * 2, env=without_gdb(), check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(done.stdout.splitlines()) == count
    assert service.process.poll() is None
    progress = service.wait_for_progress_after(progress)
    service.check_snapshots(count)
    service.assert_left_running()


# What a first dump would otherwise import, with everything they pull in: tens of
# milliseconds with the GIL held in a process that never loaded them (BENCHMARKS.md).
NOT_IMPORTED_BY_A_DUMP = {"json", "re", "traceback", "linecache", "tokenize", "ast", "textwrap", "threading",
                          "math", "enum", "functools", "collections", "contextlib", "typing"}  # fmt: skip


@pytest.mark.parametrize("loaded", ["without pypanic", "with pypanic"])
@pytest.mark.parametrize("interpreter", SOME, ids=lambda i: i.name)
def test_a_first_dump_imports_nothing_heavy_into_the_target(processes, workspace_for, interpreter, loaded):
    """A fresh process's first dump loads pypanic's modules and a few C ones, not json, re,
    traceback or threading; the dump still holds the stack with its source lines."""
    interpreter.require()
    service = start_program(
        processes, workspace_for, interpreter, "modules.py", *(["pypanic"] if loaded == "with pypanic" else [])
    )
    run = ncore("--keep-running", str(service.pid))
    assert run.returncode == 0, run.stderr
    (service.space.work / "report").touch()
    deadline = time.monotonic() + 30
    while not (service.space.work / "modules").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    imported = set((service.space.work / "modules").read_text().split())
    assert imported & {"pypanic._dump", "_ncore_pypanic._dump"}, imported
    assert not imported & NOT_IMPORTED_BY_A_DUMP, " ".join(sorted(imported))
    dump = load_dump(run.record["path"])
    (main,) = [t for t in dump["panic.threads"] if t["main"]]
    # The pending call runs at whichever safe point of the wait loop the thread reaches.
    assert main["frames"][-1]["source"] in ('while not os.path.exists("report"):', "time.sleep(0.01)")
    assert "Traceback (most recent call last):" in dump["panic.error"]


def compiled_after(service: Service, ncore_argv: list[str] | None = None) -> list[str]:
    """Take a snapshot of a tests/targets/compiles.py target (with ``ncore_argv``, by
    default this checkout's ncore), then what it has compiled so far."""
    argv = ncore_argv or [sys.executable, "-m", "ncore"]
    done = subprocess.run([*argv, "--json", "--keep-running", str(service.pid)], capture_output=True, text=True,
                          timeout=120, env=without_gdb(), check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["pypanic"] == "carried"
    report = service.space.work / "report"
    report.touch()
    deadline = time.monotonic() + 30
    while report.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return (service.space.work / "compiled").read_text().splitlines()


def start_plain(processes, workspace_for, interpreter: Interpreter, program: str) -> Service:
    """``targets/<program>`` with no pypanic on its path: dumps use the copy ncore carries."""
    space: Workspace = workspace_for(interpreter)
    with open(space.host / "stderr", "w") as stderr:
        process = processes.start(space.command(program, with_pypanic=False), stderr=stderr)
    wait_for_ready(process)
    return Service(process, space)


@pytest.mark.parametrize("interpreter", [HOST[0], HOST[-1], IN_CHROOT[-1]], ids=lambda i: i.name)
def test_later_snapshots_compile_nothing_in_the_target(processes, workspace_for, interpreter):
    """A process that never loaded pypanic compiles ncore's payload and the pypanic ncore
    carries (in place on the host, a copy in another root) on its first dump only: a
    second and a third snapshot compile only the two lines of the injected code."""
    interpreter.require()
    service = start_plain(processes, workspace_for, interpreter, "compiles.py")
    first = compiled_after(service)
    assert first.count("<ncore payload>") == 1, first
    compiled_after(service)
    later = compiled_after(service)
    assert later[: len(first)] == first
    assert set(later[len(first) :]) == {"<string>"}, later[len(first) :]
    assert len(service.space.dumps()) == 3


def test_a_first_dump_of_ncores_python_version_runs_ncores_bytecode(processes, workspace_for, tmp_path):
    """ncore installed with bytecode (as pip installs it) gives a target of its own Python
    version the payload compiled: the first dump compiles no payload, and the payload's
    frames stay out of the dump. Once the bytecode is stale (payload.py changed after), the
    target compiles the source it is given, as a target of another version does."""
    (interpreter,) = [i for i in HOST if i.name == f"pyenv-3.{sys.version_info[1]}"]
    interpreter.require()
    shutil.copytree(SRC, tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(tmp_path / "src" / "ncore")], check=True)
    installed = ["/usr/bin/env", f"PYTHONPATH={tmp_path / 'src'}", sys.executable, "-m", "ncore"]
    service = start_plain(processes, workspace_for, interpreter, "compiles.py")
    first = compiled_after(service, installed)
    assert "<ncore payload>" not in first, first
    (dump,) = service.space.dumps()
    names = [frame["function"] for thread in load_dump(str(dump))["panic.threads"] for frame in thread["frames"]]
    assert not {"run", "_choose_pypanic", "_wait_for_ack"} & set(names), names
    fresh = start_plain(processes, workspace_for, interpreter, "compiles.py")
    payload = tmp_path / "src" / "ncore" / "payload.py"
    payload.write_bytes(payload.read_bytes() + b"\n")
    assert compiled_after(fresh, installed).count("<ncore payload>") == 1


def test_a_changed_carried_pypanic_is_loaded_anew(processes, workspace_for, tmp_path):
    """A process in another root keeps the copy of pypanic its first dump loaded, until an
    ncore carrying another (here a copy of this checkout with one module touched, as a
    reinstall does) dumps it: that one is loaded and used; the payload, the same, is not
    compiled again."""
    interpreter = IN_CHROOT[-1]
    interpreter.require()
    service = start_plain(processes, workspace_for, interpreter, "compiles.py")
    first = compiled_after(service)
    shutil.copytree(SRC, tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__"))
    touched = tmp_path / "src" / "pypanic" / "_dump.py"
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    other = ["/usr/bin/env", f"PYTHONPATH={tmp_path / 'src'}", sys.executable, "-m", "ncore"]
    second = compiled_after(service, other)
    assert "<ncore payload>" not in second[len(first) :]
    assert any(name.endswith("/pypanic/_dump.py") for name in second[len(first) :]), second
    third = compiled_after(service, other)
    assert set(third[len(second) :]) == {"<string>"}, third[len(second) :]


def test_a_kept_carried_pypanic_imports_what_a_later_dump_needs(processes, workspace_for):
    """A process in another root dumped before it loaded asyncio keeps the copy of pypanic
    that dump loaded, from a directory now gone; once it runs an event loop, the next dump
    loads that copy's asyncio module from the new directory and describes the loop."""
    interpreter = IN_CHROOT[-1]
    interpreter.require()
    service = start_plain(processes, workspace_for, interpreter, "later_asyncio.py")
    before = ncore("--keep-running", str(service.pid))
    assert before.returncode == 0, before.stderr
    assert "panic.asyncio" not in load_dump(before.record["path"])
    (service.space.work / "start").touch()
    deadline = time.monotonic() + 30
    while not (service.space.work / "started").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    after = ncore("--keep-running", str(service.pid))
    assert after.returncode == 0, after.stderr
    assert after.record["pypanic"] == "carried"
    (loop,) = load_dump(after.record["path"])["panic.asyncio"]["loops"]
    assert "waiter" in [task["name"] for task in loop["tasks"]]


@pytest.mark.parametrize("interpreter", [IN_CHROOT[0], IN_CHROOT[1]], ids=lambda i: i.name)
def test_a_target_that_writes_bytecode_for_the_carried_copy_leaves_no_directory(start_service, interpreter):
    """A target in another root gets pypanic copied into ncore's private directory; one that
    writes bytecode (as services do) compiles it into ``pypanic/__pycache__`` there. The
    directory still goes once the snapshot is taken, each time."""
    interpreter.require()
    assert interpreter.chroot is not None
    before = {p for p in (interpreter.chroot / "tmp").glob("ncore.*") if p.is_dir()}
    service = start_service(interpreter, "sleep", with_pypanic=False, env={"PYTHONDONTWRITEBYTECODE": ""})
    for _ in range(2):
        run = ncore("--keep-running", str(service.pid))
        assert run.returncode == 0, run.stderr
        assert run.record["pypanic"] == "carried"
    left = {p for p in (interpreter.chroot / "tmp").glob("ncore.*") if p.is_dir()} - before
    assert not left, [sorted(str(f) for f in p.rglob("*"))[:5] for p in left]
