"""Snapshots of large state written by a forked copy of the process (pypanic._background):
on every method's path the file is the whole dump under the process's own name, the
process runs on, and no process is left behind; small state and ``--in-place`` are written
by the process itself; a writer killed mid-dump gives a dump written in place; and faults
(ncore interrupted by every signal, the writer killed) harm no target."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest

from ..faults import LISTEN, SIGNALS, Plan, interrupt, left_running, start_target
from ..interpreters import HOST, IN_CHROOT
from .conftest import chroot_gdb, load_dump
from .test_ncore_no_harm import SEED, still_working
from .test_ncore_ptrace import ncore

ITEMS = 200_000
SOME = [HOST[0], HOST[3], HOST[-1], IN_CHROOT[1], IN_CHROOT[-1]]


def copies_of(pid: int) -> list[psutil.Process]:
    """Processes running the same command line as ``pid`` (a forked writer), ``pid`` aside."""
    cmdline = psutil.Process(pid).cmdline()
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if process.pid != pid and process.info["cmdline"] == cmdline:
            found.append(process)
    return found


def assert_nothing_left(pid: int) -> None:
    """No child of ``pid`` and no copy of it outlives the snapshot (a writer, or its parent as a zombie)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (psutil.Process(pid).children() or copies_of(pid)):
        time.sleep(0.05)
    assert psutil.Process(pid).children() == []
    assert copies_of(pid) == []


def _writers_of(pid: int, running: subprocess.Popen[str]) -> list[psutil.Process]:
    """The forked writers of ``pid`` once one appears, while ``running`` (ncore) lives; empty after 30 s."""
    deadline = time.monotonic() + 30
    while running.poll() is None and time.monotonic() < deadline:
        writers = []
        for copy in copies_of(pid):
            try:
                if copy.ppid() != pid:
                    writers.append(copy)
            except psutil.NoSuchProcess:
                continue  # a copy that ended meanwhile
        if writers:
            return writers
        time.sleep(0.005)
    return []


@pytest.mark.parametrize("kind", ["busy", "sleep"])
@pytest.mark.parametrize("interpreter", SOME, ids=lambda i: i.name)
def test_a_large_snapshot_is_written_by_a_forked_writer(start_service, interpreter, kind):
    """The writer writes the whole table into ncore.<pid>; the threads come from the
    process itself, which kept working; the writer is gone afterwards."""
    interpreter.require()
    service = start_service(interpreter, kind, env={"SERVICE_STATE_ITEMS": str(ITEMS)})
    before = service.progress()
    run = ncore("--keep-running", str(service.pid))
    assert run.returncode == 0, run.stderr
    assert isinstance(run.record["writer"], int) and run.record["writer"] not in (service.pid, 0)
    assert run.record["path"] == str(service.space.work / f"ncore.{service.pid}")
    dump = load_dump(run.record["path"])
    table = dump["service.table"]
    assert len(table) == ITEMS and table[str(ITEMS - 1)] == [ITEMS - 1, str(ITEMS - 1)]
    assert dump["init.process.pid"] == service.pid
    assert dump["dbg.cuts"]["count"] == 0
    (main,) = [t for t in dump["panic.threads"] if t["main"]]
    assert any(frame["file"].endswith("service.py") for frame in main["frames"])
    service.assert_left_running()
    if kind == "busy":
        service.wait_for_progress_after(before)
    assert_nothing_left(service.pid)
    assert "writing dump to" in (service.space.host / "stderr").read_text()


@pytest.mark.parametrize("interpreter", [HOST[3]], ids=lambda i: i.name)
def test_small_state_and_in_place_snapshots_are_written_by_the_process(start_service, interpreter):
    """No writer for the usual small state, nor with --in-place whatever the size; a panic
    refuses --in-place (exit 2), leaving the process as it was."""
    interpreter.require()
    small = start_service(interpreter, "busy")
    run = ncore("--keep-running", str(small.pid))
    assert run.returncode == 0 and run.record["writer"] is None, run.stderr
    large = start_service(interpreter, "sleep", env={"SERVICE_STATE_ITEMS": str(ITEMS)})
    run = ncore("--keep-running", "--in-place", str(large.pid))
    assert run.returncode == 0 and run.record["writer"] is None, run.stderr
    assert len(load_dump(run.record["path"])["service.table"]) == ITEMS
    refused = ncore("--in-place", str(large.pid))
    assert refused.returncode == 2 and "--keep-running" in refused.record["error"]
    large.assert_left_running()
    assert len(large.space.dumps()) == 1


@pytest.mark.parametrize("interpreter", [HOST[3], IN_CHROOT[1]], ids=lambda i: i.name)
def test_a_killed_writer_gives_a_dump_written_in_place(start_service, interpreter):
    """SIGKILL to the writer mid-dump: ncore sees it gone, asks for the snapshot in place,
    and says so; the process runs on with one complete dump."""
    interpreter.require()
    items = 2_000_000
    service = start_service(interpreter, "busy", env={"SERVICE_STATE_ITEMS": str(items)})
    argv = [sys.executable, "-m", "ncore", "--json", "--timeout", "60", "--keep-running", str(service.pid)]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as running:
        try:
            writers = _writers_of(service.pid, running)
            assert writers, "no writer appeared"
            os.kill(writers[0].pid, signal.SIGKILL)
            out, err = running.communicate(timeout=120)
        finally:
            if running.poll() is None:
                running.kill()
    record = json.loads(out)
    assert running.returncode == 0, err
    assert record["writer"] is None
    assert any("forked writer" in line and "ended without writing" in line for line in record["skipped"])
    assert len(load_dump(record["path"])["service.table"]) == items
    assert len(service.space.dumps()) == 1
    service.assert_left_running()
    assert_nothing_left(service.pid)


FAULT_ITEMS = 300_000
"""Enough for a writer to live about a second, the window its faults land in."""


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("interpreter", [HOST[3], HOST[-1], IN_CHROOT[1]], ids=lambda i: i.name)
def test_interrupting_ncore_or_killing_its_writer_never_harms_the_target(processes, workspace_for, interpreter):
    """Snapshots written by a forked writer, on a busy and a sleeping target: ncore
    interrupted at a random moment by every signal, three times each (through ptrace, and
    remote exec where it serves), and the writer SIGKILLed at a random moment six times.
    Every target lives on untraced and works; every killed writer's snapshot is written in
    place instead; every file is a whole dump; no copy of a target and no temporary file
    is left."""
    interpreter.require()
    draw = random.Random(f"writer-{SEED}-{interpreter.name}")
    env = {**os.environ, "NCORE_GDB": chroot_gdb()}
    targets = {}
    for kind in ("busy", "sleep"):
        space = workspace_for(interpreter)
        target = start_target(interpreter, kind, space, env={"SERVICE_STATE_ITEMS": str(FAULT_ITEMS)})
        processes.started.append(target)
        targets[kind] = (target, space)
    methods = ["ptrace", "remote-exec"] if interpreter.name in ("sid-3.14", "sid-3.15") else ["ptrace"]
    harmed, count = [], 0
    for kind, (target, _) in targets.items():
        for method in methods if kind == "busy" else ["ptrace"]:
            for name in [*SIGNALS] * 3:
                plan = Plan(interpreter, method, kind, name, draw.randrange(0, 1500))
                harmed += [f"{plan}: {problem}" for problem in interrupt(plan, target, env)]
                count += 1
        for n in range(6):
            harmed += [f"{kind} writer kill {n}: {p}" for p in _kill_the_writer(target.pid, draw.uniform(0, 1.0))]
            count += 1
    harmed += still_working(interpreter, targets, gdb=env["NCORE_GDB"])
    for target, space in targets.values():
        assert_nothing_left(target.pid)
        assert not list(space.work.glob(".ncore.*")), "a temporary file was left"
    assert not harmed, f"{len(harmed)} of {count} faults harmed the target:\n" + "\n".join(harmed)


def _kill_the_writer(pid: int, after: float) -> list[str]:
    """A snapshot whose writer is SIGKILLed ``after`` seconds into its life: what went wrong."""
    argv = [sys.executable, "-m", "ncore", "--json", "--timeout", "60", "--keep-running", str(pid)]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as running:
        try:
            writers = _writers_of(pid, running)
            time.sleep(after)
            for writer in writers:
                try:
                    writer.kill()
                except psutil.NoSuchProcess:
                    pass  # it had finished
            out, err = running.communicate(timeout=120)
        finally:
            if running.poll() is None:
                running.kill()
    if running.returncode != 0:
        return [f"ncore failed: {out} {err}"]
    load_dump(json.loads(out)["path"])
    wrong = left_running(pid)
    return [wrong] if wrong else []


@pytest.mark.parametrize("interpreter", [HOST[3]], ids=lambda i: i.name)
def test_the_writer_keeps_no_connection_of_the_process_open(processes, workspace_for, interpreter):
    """The process closes a client's connection while its writer is still writing: the
    client sees the close at once, not when the writer ends (the writer closed its copy)."""
    interpreter.require()
    space = workspace_for(interpreter)
    target = processes.start(space.command("holder.py", "2000000"))
    assert target.stdout is not None
    word, port = target.stdout.readline().split()
    assert word == "ready"
    client = socket.create_connection(("127.0.0.1", int(port)))
    try:
        argv = [sys.executable, "-m", "ncore", "--json", "--timeout", "60", "--keep-running", str(target.pid)]
        with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as running:
            try:
                writers = _writers_of(target.pid, running)
                assert writers, "no writer appeared"
                (space.work / "close").touch()
                client.settimeout(30)
                assert client.recv(1) == b""
                assert writers[0].is_running() and writers[0].status() != psutil.STATUS_ZOMBIE, "the writer ended first"
                out, err = running.communicate(timeout=120)
            finally:
                if running.poll() is None:
                    running.kill()
    finally:
        client.close()
    assert running.returncode == 0, err
    assert json.loads(out)["writer"] == writers[0].pid
    assert_nothing_left(target.pid)


@pytest.mark.parametrize("interpreter", [HOST[0], HOST[-1], IN_CHROOT[-1]], ids=lambda i: i.name)
def test_by_signal_a_large_snapshot_is_written_by_a_writer_and_a_killed_one_is_redone(start_service, interpreter):
    """ncore --method signal: a large snapshot goes to a forked writer as by the other
    methods; with the writer SIGKILLed, ncore frees the mark the writer held and asks for
    the snapshot again in place; a third request finds the mark free."""
    interpreter.require()
    service = start_service(interpreter, "sleep", env={"SERVICE_STATE_ITEMS": str(ITEMS), **LISTEN})
    run = ncore("--keep-running", "--method", "signal", str(service.pid))
    assert run.returncode == 0, run.stderr
    assert run.record["writer"] not in (None, service.pid)
    assert len(load_dump(run.record["path"])["service.table"]) == ITEMS
    argv = [sys.executable, "-m", "ncore", "--json", "--method", "signal", "--keep-running", str(service.pid)]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as running:
        try:
            writers = _writers_of(service.pid, running)
            assert writers, "no writer appeared"
            writers[0].kill()
            out, err = running.communicate(timeout=120)
        finally:
            if running.poll() is None:
                running.kill()
    assert running.returncode == 0, err
    record = json.loads(out)
    assert record["writer"] is None
    assert any("forked writer" in line for line in record["skipped"])
    again = ncore("--keep-running", "--method", "signal", str(service.pid))
    assert again.returncode == 0, again.stderr
    assert len(service.space.dumps()) == 3
    service.assert_left_running()
    assert_nothing_left(service.pid)


@pytest.mark.parametrize("interpreter", [HOST[3], IN_CHROOT[1]], ids=lambda i: i.name)
def test_an_at_fork_handler_that_hangs_in_the_child_costs_a_bounded_wait(start_service, interpreter):
    """The application's at-fork handler hangs in the first child (as one waiting on a lock
    of a thread the fork left behind would): the process waits for that child at most
    FIRST_CHILD_SECONDS, kills it, and writes the snapshot in place; nothing is left."""
    interpreter.require()
    env = {"SERVICE_STATE_ITEMS": str(ITEMS), "SERVICE_HANG_IN_CHILD": "before"}
    service = start_service(interpreter, "busy", env=env)
    before = service.progress()
    run = ncore("--keep-running", str(service.pid))
    assert run.returncode == 0, run.stderr
    assert run.record["writer"] is None
    assert len(load_dump(run.record["path"])["service.table"]) == ITEMS
    service.assert_left_running()
    service.wait_for_progress_after(before)
    assert_nothing_left(service.pid)


@pytest.mark.parametrize("interpreter", [HOST[3]], ids=lambda i: i.name)
def test_a_writer_that_hangs_before_its_time_limit_is_set_is_killed_by_ncore(start_service, interpreter):
    """The application's at-fork handler hangs in the writer itself, before the writer can
    set its alarm: once the dump's budget is over ncore kills the writer and says so (exit
    7); the process runs on and nothing is left."""
    interpreter.require()
    env = {"SERVICE_STATE_ITEMS": str(ITEMS), "SERVICE_HANG_IN_CHILD": "grandchild", "PYPANIC_MAX_SECONDS": "1"}
    service = start_service(interpreter, "busy", env=env)
    run = ncore("--keep-running", "--timeout", "2", str(service.pid))
    assert run.returncode == 7, run.stdout + run.stderr
    assert "ncore killed the writer" in run.record["error"]
    assert "--in-place" in run.record["hint"]
    service.assert_left_running()
    assert_nothing_left(service.pid)
    again = ncore("--keep-running", "--in-place", str(service.pid))
    assert again.returncode == 0, again.stderr


@pytest.mark.parametrize("kind", ["sleep", "busy"])
@pytest.mark.parametrize("interpreter", [HOST[3]], ids=lambda i: i.name)
def test_a_writer_stuck_in_a_c_call_ends_at_its_time_limit_without_ncore(start_service, interpreter, kind):
    """A registered value's ``__repr__`` blocks in C for an hour, and ncore is killed once
    the writer runs: the writer's alarm still ends it within the budget, on the direct
    call's path (a thread blocked in a sleep: ncore's borrowed call holds every signal
    off it, and the writer inherits that mask) as on the pending call's."""
    interpreter.require()
    env = {"SERVICE_STATE_ITEMS": str(ITEMS), "SERVICE_BLOCKING_REPR": "1", "PYPANIC_MAX_SECONDS": "1"}
    service = start_service(interpreter, kind, env=env)
    argv = [sys.executable, "-m", "ncore", "--json", "--keep-running", str(service.pid)]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as running:
        try:
            writers = _writers_of(service.pid, running)
            assert writers, "no writer appeared"
        finally:
            running.kill()
    psutil.wait_procs(writers, timeout=1 + 2 + 1 + 10)  # max_seconds, the write margin, the alarm's rounding
    assert not [w for w in writers if w.is_running() and w.status() != psutil.STATUS_ZOMBIE]
    service.assert_left_running()
    assert_nothing_left(service.pid)
