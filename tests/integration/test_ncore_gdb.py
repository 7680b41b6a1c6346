"""ncore with the gdb method against real targets on every interpreter: every kind of
target, with pypanic imported, importable or neither, panics and snapshots, a target's
``__main__`` left alone; and, for both debugger methods (gdb and ptrace), signals and a
crash during the injection."""

from __future__ import annotations

import os

import pytest

from ..interpreters import ALL, HOST, IN_CHROOT, SRC, Interpreter, missing
from .conftest import Service, chroot_gdb, load_dump, run_ncore, wait_for_ready, wait_until_asleep

BLOCKED = ["sleep", "select", "event", "accept", "main-blocked-worker-busy"]
RUNNING = ["busy", "both-busy", "churn"]
MESSAGE = "core dump initiated at user request"


@pytest.mark.parametrize("kind", RUNNING + BLOCKED)
@pytest.mark.parametrize("interpreter", ALL, ids=lambda i: i.name)
def test_panic_dump_of_every_target_kind(start_service, interpreter, kind):
    """ncore PID: the target writes its dump with its registered state and exits 1."""
    service = start_service(interpreter, kind)
    run = run_ncore("--method", "gdb", str(service.pid), gdb=chroot_gdb())
    assert run.returncode == 0, run.stdout + run.stderr
    record = run.record
    assert record["status"] == "dumped" and record["method"] == "gdb"
    if kind in RUNNING and record["injection"] == "direct":
        assert "with the GIL released" in record["why"], "a busy target caught outside the GIL (writing progress)"
    else:
        assert record["injection"] == ("direct" if kind in BLOCKED else "pending"), record["why"]
    assert record["pypanic"] == "target"
    assert service.process.wait(timeout=30) == 1
    assert record["path"] == str(service.space.work / f"ncore.{service.pid}")
    data = load_dump(record["path"])
    assert data["service.kind"] == kind
    assert data["service.config"] == {"workers": 2, "tags": ["a", "b"], "limit": 1.5}
    assert data["panic.reason"] == "explicit panic"
    assert data["panic.error"].startswith(f"EXCEPTION: pypanic.Panic: {MESSAGE}\n")
    main = next(t for t in data["panic.threads"] if t["main"])
    assert main["current"], "the dump is taken on the main thread"
    functions = [f["function"] for f in main["frames"]]
    assert "main" in functions and "<ncore payload>" not in str(main["frames"])
    assert not [f for f in main["frames"] if f["file"] in ("<string>", "<ncore payload>")], "ncore's frames shown"
    if kind in ("busy", "both-busy"):
        assert "busy" in functions, functions
    if kind.endswith("worker-busy") or kind == "both-busy":
        assert "busy-worker" in [t["name"] for t in data["panic.threads"]]


@pytest.mark.parametrize("kind", ["busy", "sleep", "select", "main-blocked-worker-busy"])
@pytest.mark.parametrize("interpreter", ALL, ids=lambda i: i.name)
def test_target_without_pypanic_gets_the_carried_copy(start_service, interpreter, kind):
    """A process that never imported pypanic (and cannot) still gives a full dump."""
    service = start_service(interpreter, kind, with_pypanic=False)
    run = run_ncore("--method", "gdb", str(service.pid), gdb=chroot_gdb())
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.record["pypanic"] == "carried"
    assert service.process.wait(timeout=30) == 1
    data = load_dump(run.record["path"])
    assert "service.kind" not in data
    assert data["init.process.pid"] == service.pid
    assert any(t["main"] for t in data["panic.threads"])


@pytest.mark.parametrize("kind", ["busy", "churn", "sleep"])
@pytest.mark.parametrize("interpreter", ALL, ids=lambda i: i.name)
def test_keep_running_snapshots(start_service, interpreter, kind):
    """--keep-running: two snapshots, two files, and the target keeps working."""
    service = start_service(interpreter, kind)
    paths = []
    for _ in range(2):
        before = service.progress()
        run = run_ncore("--method", "gdb", "--keep-running", str(service.pid), gdb=chroot_gdb())
        assert run.returncode == 0, run.stdout + run.stderr
        assert run.record["target_exited"] is False
        paths.append(run.record["path"])
        assert service.process.poll() is None
        if kind != "sleep":
            service.wait_for_progress_after(before)
    assert [os.path.basename(p) for p in paths] == [f"ncore.{service.pid}", f"ncore.{service.pid}.1"]
    data = load_dump(paths[1])
    assert data["panic.reason"] == "snapshot"
    service.assert_left_running()


def test_target_in_another_mount_namespace(start_service, tmp_path):
    """A target in its own mount namespace (as in a container): the panic dump is copied
    out into ncore's directory before the target exits, and the path printed is the copy."""
    if os.geteuid() != 0:
        missing("unshare needs root")
    service = start_service(HOST[3], "busy", prefix=("unshare", "--mount", "--propagation", "private"))
    run = run_ncore("--method", "gdb", str(service.pid), gdb=chroot_gdb(), cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.record["path"] == str(tmp_path / f"ncore.{service.pid}")
    assert service.process.wait(timeout=30) == 1
    assert load_dump(run.record["path"])["service.kind"] == "busy"


@pytest.mark.parametrize("interpreter", [HOST[0], IN_CHROOT[-1]], ids=lambda i: i.name)
def test_an_importable_pypanic_is_imported_for_the_dump(processes, workspace_for, interpreter):
    """pypanic on the target's path but never imported: the payload imports it (``importable``)
    and the dump holds no registered state, since the target registered none."""
    space = workspace_for(interpreter)
    process = processes.start(space.command("timed_wait.py", "sleep", "1000"))
    wait_for_ready(process)
    run = run_ncore("--method", "gdb", str(process.pid), gdb=chroot_gdb())
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.record["pypanic"] == "importable"
    assert process.wait(timeout=30) == 1
    data = load_dump(run.record["path"])
    assert data["init.process.pid"] == process.pid
    assert [key for key in data if key.split(".")[0] not in ("init", "panic", "dbg")] == []


def start_program(
    processes, workspace_for, source: str, interpreter: Interpreter = HOST[3], flags: tuple[str, ...] = ()
) -> Service:
    """``python FLAGS -c SOURCE`` on a host interpreter in a fresh workspace, pypanic
    importable, ready; reaped at teardown."""
    space = workspace_for(interpreter)
    with open(space.host / "stderr", "w") as stderr:
        argv = [interpreter.path, *flags, "-c", source]
        process = processes.start(argv, cwd=space.work, stderr=stderr, env={"PYTHONPATH": str(SRC)})
    wait_for_ready(process)
    return Service(process, space)


WORKER = """
import os, signal, sys, threading, time

def work():
    count, last = 0, time.monotonic()
    while True:
        count += 1
        if time.monotonic() - last > 0.05:
            with open("progress.tmp", "w") as f:
                f.write(str(count))
            os.replace("progress.tmp", "progress")
            last = time.monotonic()

threading.Thread(target=work, daemon=True).start()
"""

SIGNALLED = (
    WORKER
    + """
import pypanic

def signal_often():
    while True:
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.001)

signal.signal(signal.SIGUSR1, lambda number, frame: None)
pypanic.panicDbg.set("bulk", [list(range(50)) for _ in range(2000)])  # a dump that takes a while
threading.Thread(target=signal_often, daemon=True).start()
print("ready", flush=True)
time.sleep(1000)
"""
)


@pytest.mark.parametrize("method", ["gdb", "ptrace"])
def test_signals_during_the_injection_go_on_to_the_target(processes, workspace_for, method):
    """A target that signals itself every millisecond (SIGUSR1, handled), its main thread
    asleep and a worker busy: the signals reach the target while ncore holds it and calls
    into it, no call is abandoned, the snapshots are written and the worker keeps working
    (gdb used to abandon the call, leaving the GIL taken or the target crashing)."""
    service = start_program(processes, workspace_for, SIGNALLED)
    for _ in range(3):
        before = service.progress()
        run = run_ncore("--method", method, "--keep-running", str(service.pid), gdb=chroot_gdb())
        assert run.returncode == 0, run.stdout + run.stderr
        service.wait_for_progress_after(before)
    service.check_snapshots(3)
    service.assert_left_running()


CRASHING = (
    WORKER
    + """
import ctypes

def crash_on_the_payload(event, args):
    if event == "compile" and args[1:2] == ("<ncore payload>",):
        ctypes.string_at(0)

sys.addaudithook(crash_on_the_payload)
print("ready", flush=True)
time.sleep(1000)
"""
)


@pytest.mark.parametrize("method", ["gdb", "ptrace"])
def test_a_crash_in_the_direct_call_gives_the_gil_back(processes, workspace_for, method):
    """The injected code faults (an audit hook reads address 0) inside PyRun_SimpleString,
    called directly with the GIL taken: the method abandons the call, puts the main thread
    back, gives the GIL back and says so (exit 1); the busy worker goes on working instead
    of waiting for the GIL forever."""
    service = start_program(processes, workspace_for, CRASHING)
    wait_until_asleep(service.pid)
    run = run_ncore("--method", method, "--keep-running", str(service.pid), gdb=chroot_gdb())
    assert run.returncode == 1, run.stdout + run.stderr
    assert "SIGSEGV" in run.record["error"] and "GIL" in run.record["error"]
    assert run.record["transcript"]
    service.wait_for_progress_after(service.progress())
    service.assert_left_running()
    assert not service.space.dumps()


WATCHER = """
import os, sys, time

def watch(main, before):
    count, last = 0, time.monotonic()
    while True:
        count += 1
        if time.monotonic() - last > 0.05:
            added = set(vars(main)) - before
            if added:
                with open("added", "w") as f:
                    f.write(" ".join(sorted(added)))
            with open("progress.tmp", "w") as f:
                f.write(str(count))
            os.replace("progress.tmp", "progress")
            last = time.monotonic()

print("ready", flush=True)
watch(sys.modules["__main__"], set(vars(sys.modules["__main__"])))
"""


@pytest.mark.parametrize("interpreter", [HOST[0], HOST[3], HOST[4]], ids=lambda i: i.name)
def test_nothing_is_left_in_main_even_in_development_mode(processes, workspace_for, interpreter):
    """Under -X dev, which shows every warning: after a snapshot the target's ``__main__``
    has no new name (not even ``__warningregistry__``) and no warning was printed."""
    service = start_program(processes, workspace_for, WATCHER, interpreter, ("-X", "dev"))
    space = service.space
    run = run_ncore("--method", "gdb", "--keep-running", str(service.pid), gdb=chroot_gdb())
    assert run.returncode == 0, run.stdout + run.stderr
    service.wait_for_progress_after(service.wait_for_progress_after(service.progress()))
    assert not (space.work / "added").exists(), (space.work / "added").read_text()
    assert "Warning" not in (space.host / "stderr").read_text()
    service.check_snapshots(1)
