"""Bad input and hostile situations: each gives its message and exit code, and the target
is left as it was (still running, not stopped, no dump)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from ..interpreters import HOST, IN_CHROOT, missing
from .conftest import chroot_gdb, load_dump, run_ncore

PYTHON = HOST[0]


def assert_untouched(service) -> None:
    """Still running, not stopped by a tracer, no dump written."""
    time.sleep(0.2)
    assert service.process.poll() is None
    service.assert_left_running()
    assert not list(service.space.work.glob("ncore.*"))


def test_no_such_process():
    """A pid nobody has: exit 3 and a message naming it."""
    child = subprocess.Popen(["true"])
    child.wait()
    run = run_ncore(str(child.pid))
    assert run.returncode == 3
    assert run.record == {
        "status": "no-such-process",
        "pid": child.pid,
        "error": f"there is no process {child.pid}",
        "hint": "check the pid with `ps` or `ncore ps`; the process may have exited",
        "exit_code": 3,
    }


def test_not_a_python_process(processes):
    """A process that is not CPython is refused before anything touches it: exit 4."""
    sleeper = processes.start(["sleep", "1000"])
    time.sleep(0.1)
    run = run_ncore(str(sleeper.pid), gdb=chroot_gdb())
    assert run.returncode == 4
    assert "does not look like CPython" in run.record["error"]
    assert sleeper.poll() is None


def test_a_zombie_is_refused():
    """An exited, unreaped child: exit 4, 'zombie' named."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with open(f"/proc/{child.pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
            time.sleep(0.02)
        run = run_ncore(str(child.pid))
        assert run.returncode == 4
        assert "is a zombie" in run.record["error"]
    finally:
        child.wait()


def test_ncore_refuses_itself():
    """ncore given its own pid: exit 4."""
    code = "import os, sys; sys.argv = ['ncore', '--json', str(os.getpid())]; from ncore.cli import main; main()"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 4
    assert "that pid is ncore itself" in done.stdout


def test_another_tracer_is_refused(start_service, seized):
    """A target some other tracer holds (PTRACE_SEIZE, running on): exit 8, tracer named."""
    service = start_service(PYTHON, "busy")
    tracer = seized(service.pid)
    run = run_ncore(str(service.pid), gdb=chroot_gdb())
    assert run.returncode == 8
    assert f"already traced by process {tracer}" in run.record["error"]
    time.sleep(0.2)
    assert service.process.poll() is None
    assert not list(service.space.work.glob("ncore.*"))


def test_permission_denied_names_the_fix(start_service):
    """ncore run as another user against root's process: exit 5, with the fix."""
    if os.geteuid() != 0:
        missing("running ncore as another user needs root")
    service = start_service(PYTHON, "busy")
    run = run_ncore(str(service.pid), gdb=chroot_gdb(), user="65534")
    assert run.returncode == 5, run.stdout + run.stderr
    assert run.record["error"].startswith(f"not allowed to inspect process {service.pid}")
    assert "run ncore as the target's user (uid 0) or as root" in run.record["hint"]
    assert_untouched(service)


def test_missing_gdb_is_a_method_error(start_service):
    """--gdb pointing nowhere: exit 6, saying how to fix it."""
    service = start_service(PYTHON, "busy")
    run = run_ncore("--method", "gdb", "--gdb", "/nonexistent/gdb", str(service.pid))
    assert run.returncode == 6
    assert "/nonexistent/gdb was not found" in run.record["error"]
    assert "NCORE_GDB" in run.record["error"]
    assert_untouched(service)


def test_timeout_leaves_the_target_running(start_service):
    """A main thread in a long C call holding the GIL never runs the pending call:
    exit 7 after --timeout, target running and not stopped, no dump ever appears."""
    service = start_service(PYTHON, "gil-hog")
    started = time.monotonic()
    run = run_ncore("--method", "gdb", "--timeout", "8", str(service.pid), gdb=chroot_gdb())
    assert run.returncode == 7, run.stdout + run.stderr
    assert time.monotonic() - started < 60
    assert "did not run the dump in time" in run.record["error"]
    assert "holding the GIL" in run.record["error"]
    assert_untouched(service)


def test_output_dir_the_target_cannot_see(start_service, tmp_path):
    """A chroot target cannot write to a host directory outside its root: exit 2."""
    service = start_service(IN_CHROOT[1], "busy")
    run = run_ncore("--output-dir", str(tmp_path), str(service.pid), gdb=chroot_gdb())
    assert run.returncode == 2
    assert "cannot see" in run.record["error"]
    assert_untouched(service)


def test_message_is_data_not_code(start_service, tmp_path):
    """A --message full of quotes and newlines lands verbatim; nothing in it runs."""
    service = start_service(PYTHON, "busy")
    canary = tmp_path / "pwned"
    message = f"\"'); open({str(canary)!r}, 'w') #\n''' \\ \x00"
    run = run_ncore("--keep-running", "--message", message.replace("\x00", ""), str(service.pid), gdb=chroot_gdb())
    assert run.returncode == 0, run.stdout + run.stderr
    data = load_dump(run.record["path"])
    assert data["panic.exception"]["message"] == message.replace("\x00", "")
    assert not canary.exists()


def test_usage_errors_exit_2():
    """No pid: click's usage error, exit 2."""
    assert run_ncore().returncode == 2


def test_bad_pid_text_is_a_usage_error():
    """A pid that is not a number: exit 2."""
    done = subprocess.run([sys.executable, "-m", "ncore", "abc"], capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert "is not a valid integer" in done.stderr
