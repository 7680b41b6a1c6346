"""Where nothing may trace: a process that listens for a dump signal (PYPANIC_SIGNAL) is
dumped by ncore running under a seccomp filter that refuses ptrace and process_vm_*, on
every interpreter; one that does not listen is refused with the way out; ncore as another
non-root user; a bare ``kill``; a handler that never gets to run; and a soak."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from ..interpreters import ALL, HOST
from .conftest import assert_left_running, load_dump, wait_for_ready

LISTEN = {"PYPANIC_SIGNAL": "SIGRTMIN+3"}
KINDS = ["busy", "sleep", "accept", "both-busy"]
REMOTE_EXEC = ("sid-3.14", "sid-3.15")
"""Remote exec writes through /proc/PID/mem, which the filter leaves alone: it serves the
running targets there before the signal method is needed."""


@pytest.mark.parametrize("keep_running", [True, False], ids=["snapshot", "panic"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("interpreter", ALL, ids=lambda i: i.name)
def test_a_listening_process_is_dumped_where_nothing_may_trace(start_service, no_ptrace, interpreter, kind,
                                                              keep_running):  # fmt: skip
    """ptrace refused, ncore falls back on the signal: the dump is whole, with the
    registered state; a snapshot leaves the target working (a blocked call resumed), a
    panic ends it."""
    interpreter.require()
    service = start_service(interpreter, kind, env=LISTEN)
    progress = service.progress()
    run = no_ptrace(*(["--keep-running"] if keep_running else []), str(service.pid))
    assert run.returncode == 0, run.stdout + run.stderr
    expected = "remote-exec" if interpreter.name in REMOTE_EXEC and kind in ("busy", "both-busy") else "signal"
    assert run.record["method"] == expected, run.record
    dump = load_dump(run.record["path"])
    assert dump["service.kind"] == kind
    main = next(t for t in dump["panic.threads"] if t["main"])
    assert main["native_id"] == service.pid
    if keep_running:
        assert dump["panic.reason"] == "snapshot"
        service.assert_left_running()
        if kind in ("busy", "both-busy"):
            service.wait_for_progress_after(progress)
        assert service.process.poll() is None
    else:
        assert run.record["target_exited"] is True
        assert service.process.wait(timeout=10) == 1


@pytest.mark.parametrize("interpreter", [HOST[0], HOST[2], HOST[-1]], ids=lambda i: i.name)
def test_a_process_that_does_not_listen_is_refused_naming_pypanic_signal(start_service, no_ptrace, interpreter):
    """No right to trace and no dump signal: exit 5, the hint names PYPANIC_SIGNAL, nothing done."""
    service = start_service(interpreter, "sleep")
    run = no_ptrace("--keep-running", str(service.pid))
    assert run.returncode == 5, run.stdout + run.stderr
    assert "PYPANIC_SIGNAL=SIGRTMIN+3" in run.record["hint"]
    assert service.space.dumps() == []
    run = no_ptrace("--method", "signal", str(service.pid))
    assert run.returncode == 6
    assert run.record["error"].startswith(f"process {service.pid} does not listen for a dump signal")
    service.assert_left_running()


def test_doctor_sends_a_listening_process_by_signal_where_nothing_may_trace(start_service, no_ptrace):
    """ncore doctor under the filter: tracing is refused, so ptrace and gdb cannot serve, and
    the dump would go by signal (exit 0); a process that does not listen has no way (exit 6)."""
    listening = start_service(HOST[3], "sleep", env=LISTEN)
    run = no_ptrace("doctor", str(listening.pid))
    findings = {f["topic"]: f for f in run.record["findings"]} if "findings" in run.record else {}
    assert run.returncode == 0, run.stdout + run.stderr
    assert findings["access"]["ok"] is None and "the dump goes by signal instead" in findings["access"]["detail"]
    assert findings["method ptrace"]["ok"] is None
    assert findings["method"]["detail"] == "a dump would use signal"
    silent = start_service(HOST[3], "sleep")
    run = no_ptrace("doctor", str(silent.pid))
    assert run.returncode == 6, run.stdout + run.stderr
    assert listening.space.dumps() == [] and silent.space.dumps() == []


def test_as_another_non_root_user(processes, workspace_for):
    """Target and ncore both run as uid 65534 (no capability): the signal method dumps it."""
    interpreter = HOST[-1]  # /usr/bin/python3.11: pyenv's live under /root, closed to others
    space = workspace_for(interpreter)
    os.chmod(space.host, 0o755)
    os.chmod(space.work, 0o777)
    command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
               *space.command("service.py", "sleep", env=LISTEN)]  # fmt: skip
    with open(space.host / "stderr", "w") as stderr:
        process = processes.start(command, stderr=stderr)
    wait_for_ready(process)
    argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m", "ncore", "--json",
            "--method", "signal", "--keep-running", str(process.pid)]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False, cwd="/")
    assert done.returncode == 0, done.stdout + done.stderr
    record = json.loads(done.stdout)
    assert record["path"] == str(space.work / f"ncore.{process.pid}")
    assert os.stat(record["path"]).st_uid == 65534
    assert_left_running(process.pid)


def test_a_bare_signal_takes_a_snapshot(start_service):
    """``kill -SIGRTMIN+3 PID`` with no request: a snapshot, and the process runs on."""
    service = start_service(HOST[3], "sleep", env=LISTEN)
    os.kill(service.pid, signal.SIGRTMIN + 3)
    deadline = time.monotonic() + 10
    while not service.space.dumps() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    (path,) = service.space.dumps()
    dump = load_dump(str(path))
    assert dump["panic.error"].startswith("EXCEPTION: pypanic.Panic: dump initiated by signal SIGRTMIN+3")
    service.assert_left_running()


def test_a_handler_that_never_runs_is_withdrawn(start_service):
    """A main thread in a C call holding the GIL (the handler waits for it): exit 7 at
    --timeout, saying why, and the request withdrawn."""
    service = start_service(HOST[3], "gil-hog", env=LISTEN)
    done = subprocess.run(
        [sys.executable, "-m", "ncore", "--json", "--method", "signal", "--timeout", "1", str(service.pid)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 7, done.stdout + done.stderr
    record = json.loads(done.stdout)
    assert "its handler did not run within 1 s" in record["error"] and "withdrew the request" in record["error"]
    assert service.space.dumps() == []
    service.assert_left_running()


def test_a_signal_already_handled_or_refused_is_a_warning(tmp_path):
    """A signal the application handles, or one pypanic refuses: a warning on stderr and in
    dbg.warnings, never an exception."""
    program = (
        "import signal, sys, pypanic\n"
        "signal.signal(signal.SIGUSR2, lambda *a: None)\n"
        "pypanic.configure(signal='SIGUSR2')\n"
        "print(pypanic.dump('x', directory=sys.argv[1]))\n"
    )
    env = {"PYTHONPATH": os.environ.get("PYTHONPATH", ""), "PYPANIC_SIGNAL": "SIGTERM"}
    from ..interpreters import SRC

    env["PYTHONPATH"] = str(SRC)
    done = subprocess.run([sys.executable, "-c", program, str(tmp_path)], capture_output=True, text=True,
                          timeout=60, env=env, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    warnings = load_dump(done.stdout.strip())["dbg.warnings"]
    assert any(w.startswith("ignored PYPANIC_SIGNAL='SIGTERM': pypanic does not listen on 'SIGTERM'") for w in warnings)
    assert "not listening on SIGUSR2: the application already handles it" in warnings
    assert "pypanic: not listening on SIGUSR2: the application already handles it" in done.stderr


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_signal_snapshots_soak(start_service):
    """300 signal-triggered snapshots of the churn target: each one a whole dump, nothing
    lost, the target unharmed and still working."""
    service = start_service(HOST[3], "churn", env=LISTEN)
    progress = service.progress()
    for n in range(300):
        done = subprocess.run(
            [sys.executable, "-m", "ncore", "--method", "signal", "--keep-running", str(service.pid)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, f"snapshot {n}: {done.stdout} {done.stderr}"
        if n % 50 == 49:
            progress = service.wait_for_progress_after(progress)
    service.check_snapshots(300)
    service.assert_left_running()
