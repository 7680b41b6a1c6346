"""Dumps read from outside, by pystack, on every interpreter: ``--read-only``, the fallback
when an injected dump never starts (a main thread stuck in C holding the GIL), ``ncore
doctor`` on such a thread, and what a read-only dump holds and leaves."""

from __future__ import annotations

import json
import os
import random
import signal
import stat
import subprocess
import sys
import time

import pytest

from pypanic._dump import PYPANIC_KEYS

from ..interpreters import ALL, HOST, IN_CHROOT, Workspace
from .conftest import Service, assert_left_running, load_dump, run_ncore, wait_for_ready

STUCK = ["regex", "c-sleep", "busy"]
NEVER_SAFE = ["regex", "c-sleep"]
"""Main threads no pending call reaches (3.14's remote exec does run inside the regex engine)."""


def start_stuck(processes, workspace_for, interpreter, kind: str, with_pypanic: bool = True) -> Service:
    space: Workspace = workspace_for(interpreter)
    with open(space.host / "stderr", "w") as stderr:
        process = processes.start(space.command("stuck.py", kind, with_pypanic=with_pypanic), stderr=stderr)
    wait_for_ready(process)
    time.sleep(0.1)  # from `ready` to the stuck call itself
    return Service(process, space)


def stderr_of(service: Service) -> str:
    return (service.space.work.parent / "stderr").read_text()


def frame_named(thread: dict, function: str) -> dict:
    found = [f for f in thread["frames"] if f.get("function") == function]
    assert found, [f.get("function") for f in thread["frames"]]
    return found[-1]


def check_read_only_dump(service: Service, path: str, kind: str) -> dict:
    """The dump has pypanic's keys in pypanic's order, every thread with the main one first
    holding the GIL in ``stuck`` with its locals (the secret one redacted), says what it
    lacks, and belongs to the target's user."""
    dump = load_dump(path)
    assert [k for k in dump if k in PYPANIC_KEYS] == [k for k in PYPANIC_KEYS if k in dump]
    assert list(dump)[:9] == [k for k in PYPANIC_KEYS if k != "init.process.nspid"][:9]
    assert "panic.gc" in dump and "panic.exception" in dump
    assert dump["init.process.pid"] == service.pid
    assert dump["init.process.argv"][-2:] == [f"{service.space.targets}/stuck.py", kind]
    assert dump["init.process.cwd"] == service.space.work_inside
    threads = dump["panic.threads"]
    assert len(threads) == 2
    main = threads[0]
    assert main["main"] is True and main["native_id"] == service.pid
    assert main["holds_gil"] is True
    frame = frame_named(main, "stuck")
    assert frame["locals"]["marker"] == "findme"
    assert frame["locals"]["limit"] == 60
    assert frame["locals"]["label"] == "stuck-label"
    assert frame["locals"]["api_token"] == "<redacted by pypanic>"
    assert frame["file"] == f"{service.space.targets}/stuck.py"
    assert frame["source"]
    assert "sleeper" in [f.get("function") for f in threads[1]["frames"]]
    assert dump["panic.python"]["gil_holder"] == service.pid
    assert "registered state" in dump["dbg.outside"]["unavailable"]
    assert dump["dbg.outside"]["source"] == "live process"
    assert dump["panic.gc"]["$unavailable"]
    assert dump["panic.resources"]["rlimits"]["nofile"][0] > 0
    assert dump["panic.memusage"]["rss"] > 0
    info = os.stat(path)
    assert stat.S_IMODE(info.st_mode) == 0o600
    return dump


@pytest.mark.parametrize("kind", STUCK)
@pytest.mark.parametrize("interpreter", ALL, ids=lambda i: i.name)
def test_read_only_dump_of_a_stuck_process(processes, workspace_for, interpreter, kind):
    """``--read-only`` gives a dump with the stuck function, its locals and every thread;
    the target runs on, printed nothing, and was stopped only for the read."""
    interpreter.require()
    service = start_stuck(processes, workspace_for, interpreter, kind)
    run = run_ncore("--read-only", str(service.pid))
    assert run.returncode == 0, run.stdout + run.stderr
    record = run.record
    assert record["method"] == "read-only" and record["read_only"].startswith("--read-only was asked for")
    assert "the main thread holds the GIL in " in record["read_only"]
    assert 0 < record["stopped_seconds"] < record["elapsed_seconds"]
    assert record["target_exited"] is False
    assert os.path.dirname(record["path"]) == str(service.space.work)
    check_read_only_dump(service, record["path"], kind)
    assert_left_running(service.pid)
    assert stderr_of(service) == ""


@pytest.mark.parametrize("interpreter", ALL, ids=lambda i: i.name)
def test_a_dump_that_never_starts_is_read_from_outside(processes, workspace_for, interpreter):
    """A main thread in a C call that holds the GIL: the injected dump never starts, ncore
    withdraws it at --timeout and reads the process instead. Exit 0, the record and the
    printed line say why and that the process was left running though a panic was asked."""
    interpreter.require()
    service = start_stuck(processes, workspace_for, interpreter, "c-sleep")
    run = run_ncore("--timeout", "1", str(service.pid))
    assert run.returncode == 0, run.stdout + run.stderr
    why = run.record["read_only"]
    assert why.startswith("the injected dump had not started after 1 s"), why
    assert "the main thread holds the GIL in stuck (targets/stuck.py:" in why
    dump = check_read_only_dump(service, run.record["path"], "c-sleep")
    assert dump["panic.reason"] == f"read from outside by ncore: {why}; the process was left running"
    assert_left_running(service.pid)
    assert stderr_of(service) == ""
    told = subprocess.run(
        [sys.executable, "-m", "ncore", "--timeout", "0.5", str(service.pid)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert told.returncode == 0, told.stderr
    lines = told.stdout.splitlines()
    assert lines[1].startswith(f"process {service.pid} was read from outside: the injected dump had not started")
    assert lines[1].endswith("it was left running, although a panic was asked for")
    assert lines[2] == str(service.space.work / f"ncore.{service.pid}.1")
    assert_left_running(service.pid)


@pytest.mark.parametrize("interpreter", [HOST[0], HOST[2], IN_CHROOT[-1]], ids=lambda i: i.name)
def test_no_fallback_keeps_the_timeout(processes, workspace_for, interpreter):
    """``--no-fallback``: exit 7 as before, no dump, the target left as it was; the hint
    names the way to a dump."""
    interpreter.require()
    service = start_stuck(processes, workspace_for, interpreter, "c-sleep")
    run = run_ncore("--timeout", "1", "--no-fallback", str(service.pid))
    assert run.returncode == 7, run.stdout + run.stderr
    assert "did not start the dump in time" in run.record["error"]
    assert "--read-only" in run.record["hint"]
    assert service.space.dumps() == []
    assert_left_running(service.pid)


BEFORE_REMOTE_EXEC = [i for i in ALL if i.name not in ("sid-3.14", "sid-3.15")]


@pytest.mark.parametrize("interpreter", BEFORE_REMOTE_EXEC, ids=lambda i: i.name)
def test_doctor_says_a_regex_holds_the_gil_in_c(processes, workspace_for, interpreter):
    """``ncore doctor`` does not promise a safe point to a main thread stuck in C: it names
    the function and the way out (remote exec on 3.14+ does reach the regex engine)."""
    interpreter.require()
    service = start_stuck(processes, workspace_for, interpreter, "regex")
    done = subprocess.run(
        [sys.executable, "-m", "ncore", "doctor", "--json", str(service.pid)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    findings = {f["topic"]: f for f in json.loads(done.stdout)["findings"]}
    detail = findings["main thread"]["detail"]
    assert "it holds the GIL in match (" in detail or "it holds the GIL in prefixmatch (" in detail, detail
    assert "probably in C code" in detail and "--read-only" in detail
    assert "next safe point" not in detail
    assert_left_running(service.pid)


def test_native_frames(processes, workspace_for):
    """``--native`` adds each thread's C frames, innermost last: the C sleep shows."""
    service = start_stuck(processes, workspace_for, HOST[3], "c-sleep")
    run = run_ncore("--read-only", "--native", str(service.pid))
    assert run.returncode == 0, run.stdout + run.stderr
    main = load_dump(run.record["path"])["panic.threads"][0]
    symbols = [f["function"] for f in main["native_frames"]]
    assert any("sleep" in s for s in symbols[-4:]), symbols
    assert_left_running(service.pid)


def test_read_only_refuses_a_method(processes, workspace_for):
    service = start_stuck(processes, workspace_for, HOST[3], "busy")
    run = run_ncore("--read-only", "--method", "gdb", str(service.pid))
    assert run.returncode == 2
    assert "--read-only runs no code in the process" in run.record["error"]
    assert service.space.dumps() == []


def test_read_only_of_a_process_ncore_may_not_trace(processes, workspace_for):
    """A user who may not trace the target: exit 5 with the fix, nothing written or stopped."""
    service = start_stuck(processes, workspace_for, HOST[3], "busy")
    run = run_ncore("--read-only", str(service.pid), user="65534")
    assert run.returncode == 5, run.stdout + run.stderr
    assert run.record["hint"]
    assert service.space.dumps() == []
    assert_left_running(service.pid)


def test_killing_ncore_mid_read_never_leaves_the_target_stopped(processes, workspace_for):
    """SIGKILL, SIGINT or SIGTERM to a ``--read-only`` ncore (with and without ``--native``,
    where pystack stops the process itself) at random moments of its read: the target is
    never left stopped or traced, and every dump there is is whole."""
    service = start_stuck(processes, workspace_for, HOST[3], "busy")
    chance = random.Random(11)
    harmed = []
    for round_number in range(60):
        native = ["--native"] if round_number % 2 else []
        ncore = subprocess.Popen(
            [sys.executable, "-m", "ncore", "--read-only", *native, str(service.pid)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        while tracer_of(service.pid) == 0 and ncore.poll() is None:
            time.sleep(0.0002)  # until the read begins
        time.sleep(chance.uniform(0, 0.03))
        number = chance.choice([signal.SIGKILL, signal.SIGINT, signal.SIGTERM])
        ncore.send_signal(number)
        ncore.wait(timeout=30)
        harm = left_alone_within(service.pid, 2.0)
        if harm is not None:
            harmed.append((round_number, native, signal.Signals(number).name, harm))
            os.kill(service.pid, signal.SIGCONT)
    assert harmed == []
    for path in service.space.dumps():
        load_dump(str(path))


def left_alone_within(pid: int, seconds: float) -> str | None:
    """None once no thread of ``pid`` is stopped or traced (a guardian may take a moment to
    continue it); else what is still wrong after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            assert_left_running(pid)
            return None
        except AssertionError as e:
            if time.monotonic() > deadline:
                return str(e)
        time.sleep(0.01)


def tracer_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line.split()[1] for line in f if line.startswith("TracerPid:")))


def test_several_processes_read_only_at_once(processes, workspace_for):
    """``ncore --read-only PID PID``: a line each, saying it was read from outside; both run on."""
    services = [start_stuck(processes, workspace_for, HOST[3], kind) for kind in ("regex", "busy")]
    done = subprocess.run(
        [sys.executable, "-m", "ncore", "--read-only", *(str(s.pid) for s in services)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = sorted(done.stdout.splitlines())
    for service, line in zip(sorted(services, key=lambda s: str(s.pid)), lines):
        assert line.startswith(f"{service.pid}: {service.space.work}/ncore.{service.pid} (read from outside: ")
        assert_left_running(service.pid)
