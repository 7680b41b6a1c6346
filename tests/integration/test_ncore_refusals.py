"""Bad input and hostile situations: each gives its message and exit code, and the target
is left as it was (still running, not stopped, no dump)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from ncore.target import permission_hint, scheduler_state

from ..interpreters import HOST, IN_CHROOT, missing
from .conftest import NO_PTRACE, Service, assert_left_running, chroot_gdb, load_dump, run_ncore, wait_for_ready

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
        "transcript": [],
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


def wait_for_state(pid: int, states: tuple[str, ...], timeout: float = 20) -> None:
    """Until ``pid``'s main thread is in one of ``states`` (``?``: gone); fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    while scheduler_state(pid, pid) not in states:
        if time.monotonic() > deadline:
            pytest.fail(f"process {pid} is still {scheduler_state(pid, pid)}, not in {states}")
        time.sleep(0.01)


def worker_thread(pid: int) -> int:
    """The id of a thread of ``pid`` other than its main thread."""
    return next(int(tid) for tid in os.listdir(f"/proc/{pid}/task") if int(tid) != pid)


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


def test_a_tracer_on_another_thread_is_refused(start_service, seized):
    """A tracer holding a thread other than the main one: exit 8, tracer and thread named."""
    service = start_service(PYTHON, "main-blocked-worker-busy")
    thread = worker_thread(service.pid)
    tracer = seized(thread)
    run = run_ncore(str(service.pid), gdb=chroot_gdb())
    assert run.returncode == 8, run.stdout + run.stderr
    assert run.record["error"].startswith(f"thread {thread} (")
    assert f") of process {service.pid} (" in run.record["error"]
    assert f"already traced by process {tracer}" in run.record["error"]
    assert service.process.poll() is None
    assert not service.space.dumps()


def test_a_thread_id_is_refused(start_service):
    """A thread's id given as the pid: a usage error (exit 2) naming the process's pid."""
    service = start_service(PYTHON, "main-blocked-worker-busy")
    thread = worker_thread(service.pid)
    run = run_ncore(str(thread), gdb=chroot_gdb())
    assert run.returncode == 2, run.stdout + run.stderr
    assert run.record["error"].startswith(f"{thread} is a thread (")
    assert run.record["error"].endswith(f") of process {service.pid}, not a process")
    assert run.record["hint"] == f"give the process's pid: ncore {service.pid}"
    assert_untouched(service)


def test_a_stopped_target_is_refused_and_left_stopped(start_service):
    """A process stopped by SIGSTOP cannot run the dump: exit 4 with the fix (kill -CONT),
    whatever the method, and it is left stopped, as it was."""
    service = start_service(PYTHON, "busy")
    os.kill(service.pid, signal.SIGSTOP)
    wait_for_state(service.pid, ("T",))
    for method in ("auto", "gdb"):
        run = run_ncore("--method", method, str(service.pid), gdb=chroot_gdb())
        assert run.returncode == 4, run.stdout + run.stderr
        assert run.record["status"] == "stopped"
        assert run.record["hint"] == f"continue it with `kill -CONT {service.pid}` and run ncore again"
    assert scheduler_state(service.pid, service.pid) == "T"
    os.kill(service.pid, signal.SIGCONT)
    assert_untouched(service)


def test_gdb_refused_by_the_kernel_is_a_permission_error_with_its_output(start_service, tmp_path):
    """gdb under a seccomp filter that forbids ptrace (as in a container): its `attach`
    fails, which is a permission error (exit 5) with the fix, not an injection that could
    not run; --json carries gdb's output, and -v prints it."""
    service = start_service(PYTHON, "busy")
    (tmp_path / "no_ptrace.py").write_text(NO_PTRACE)
    gdb = f"{sys.executable} {tmp_path / 'no_ptrace.py'} {chroot_gdb()}"
    run = run_ncore("--method", "gdb", "--gdb", gdb, str(service.pid))
    assert run.returncode == 5, run.stdout + run.stderr
    assert run.record["error"] == f"gdb was not allowed to attach to process {service.pid}"
    assert run.record["hint"].startswith(permission_hint(os.geteuid()))
    assert "PYPANIC_SIGNAL=SIGRTMIN+3" in run.record["hint"]
    assert "ptrace: Operation not permitted." in run.record["transcript"]
    told = subprocess.run(
        [sys.executable, "-m", "ncore", "-v", "--method", "gdb", "--gdb", gdb, str(service.pid)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert told.returncode == 5
    assert "  | ptrace: Operation not permitted.\n" in told.stderr
    assert told.stderr.endswith(
        f"ncore: gdb was not allowed to attach to process {service.pid}\n  fix: {run.record['hint']}\n"
    )
    assert_untouched(service)


def test_doctor_tries_the_attach_it_vouches_for(start_service, tmp_path):
    """``ncore doctor`` under a seccomp filter that forbids ptrace: opening /proc/PID/mem
    works, but it tries PTRACE_SEIZE too, says access is refused with the fix, and exits 6;
    without the filter it says it seized the process and let go, and nothing was stopped."""
    service = start_service(PYTHON, "busy")
    (tmp_path / "no_ptrace.py").write_text(NO_PTRACE)
    doctor = [sys.executable, "-m", "ncore", "doctor", "--json", str(service.pid)]
    refused = subprocess.run([sys.executable, str(tmp_path / "no_ptrace.py"), *doctor],
                             capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert refused.returncode == 6, refused.stderr
    access = next(f for f in json.loads(refused.stdout)["findings"] if f["topic"] == "access")
    assert access["ok"] is False
    assert access["detail"] == (
        f"ncore may not trace process {service.pid}: PTRACE_SEIZE was refused (Operation not permitted)"
    )
    assert "seccomp" in access["fix"]
    allowed = subprocess.run(doctor, capture_output=True, text=True, timeout=120, check=False)
    access = next(f for f in json.loads(allowed.stdout)["findings"] if f["topic"] == "access")
    assert access["ok"] is True and "seized it and let go" in access["detail"]
    assert_untouched(service)


def test_a_hung_gdb_is_given_up_at_the_time_limit(start_service, tmp_path):
    """A gdb that never answers `--version`: exit 6 within --timeout, saying so, and the
    gdb and what it started are killed."""
    service = start_service(PYTHON, "busy")
    hung = tmp_path / "gdb"
    hung.write_text(f"#!/bin/sh\nsleep 1000 &\necho $! > {tmp_path}/sleeper\nwait\n")
    hung.chmod(0o755)
    run = run_ncore("--method", "gdb", "--gdb", str(hung), "--timeout", "2", str(service.pid), timeout=60)
    assert run.returncode == 6, run.stdout + run.stderr
    assert f"`{hung} --version` did not answer in time" in run.record["error"]
    sleeper = int((tmp_path / "sleeper").read_text())
    wait_for_state(sleeper, ("?", "Z"))
    assert_untouched(service)


def test_ctrl_c_that_fails_a_check_is_reported_as_ctrl_c(start_service, tmp_path):
    """Ctrl-C to ncore's group can reach `gdb --version` before that child leaves the
    group, and the check then fails: ncore exits 130 for the Ctrl-C (not 6, "no method
    can serve"), the target untouched and never dumped. Here the gdb sends ncore the
    SIGINT itself and prints nothing."""
    service = start_service(PYTHON, "sleep")
    gdb = tmp_path / "gdb"
    gdb.write_text('#!/bin/sh\nkill -INT "$PPID"\n')
    gdb.chmod(0o755)
    run = run_ncore("--keep-running", "--method", "gdb", "--gdb", str(gdb), str(service.pid))
    assert run.returncode == 130, run.stdout + run.stderr
    assert run.record["status"] == "interrupted"
    assert run.record["error"] == (
        f"stopped by SIGINT (Ctrl-C) before ncore touched it: process {service.pid} was left as it was"
    )
    assert_untouched(service)


def test_an_output_dir_the_target_cannot_write_is_refused(processes):
    """A process running as nobody and a directory only root may write: exit 9 before
    anything touches the process (pypanic would have written elsewhere, quietly)."""
    if os.geteuid() != 0:
        missing("running the target as another user needs root")
    HOST[-1].require()
    code = "import time; print('ready', flush=True); time.sleep(1000)"
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    process = processes.start([*as_nobody, HOST[-1].path, "-c", code], cwd="/")
    wait_for_ready(process)
    with tempfile.TemporaryDirectory(dir="/tmp") as name:
        Path(name).chmod(0o755)
        run = run_ncore("--keep-running", "--output-dir", name, str(process.pid), gdb=chroot_gdb())
        assert run.returncode == 9, run.stdout + run.stderr
        assert run.record["error"] == (
            f"process {process.pid} (python3.11) could not write its dump in {name}: uid 65534 may not create "
            f"files in {name} (drwxr-xr-x, owner uid 0, group 0)"
        )
        assert "uid 65534 can write" in run.record["hint"]
        assert not os.listdir(name)
    time.sleep(0.2)
    assert process.poll() is None
    assert_left_running(process.pid)


def test_an_output_dir_on_a_read_only_mount_is_refused(processes, tmp_path):
    """Even for root, a read-only mount cannot take the dump: exit 9 before touching the
    process. The process and ncore share a mount namespace where the directory is mounted
    read-only."""
    if os.geteuid() != 0:
        missing("mounting needs root")
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    code = "import time; print('ready', flush=True); time.sleep(1000)"
    mount_then_run = 'mount --bind -o ro "$1" "$1" && shift && exec "$@"'
    argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", mount_then_run, "sh", str(dumps)]
    process = processes.start([*argv, PYTHON.path, "-c", code])
    wait_for_ready(process)
    inside = ["nsenter", f"--target={process.pid}", "--mount", "--"]
    ncore = [sys.executable, "-m", "ncore", "--json", "--keep-running", "--output-dir", str(dumps), str(process.pid)]
    done = subprocess.run([*inside, *ncore], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 9, done.stdout + done.stderr
    assert json.loads(done.stdout)["error"].endswith(
        f"could not write its dump in {dumps}: {dumps} is on a read-only mount"
    )
    time.sleep(0.2)
    assert process.poll() is None
    assert_left_running(process.pid)


def test_a_working_directory_the_process_cannot_write_is_named(processes, workspace_for):
    """A process (uid 65534) whose working directory it may not write in: pypanic writes to
    the temporary directory, and ncore names the working directory in ``fell_back_from``
    and in the story, as for an --output-dir."""
    interpreter = HOST[-1]  # /usr/bin/python3.11: pyenv's live under /root, closed to others
    space = workspace_for(interpreter)
    os.chmod(space.host, 0o755)
    os.chmod(space.work, 0o755)
    temporary = space.host / "tmp"
    temporary.mkdir()
    os.chmod(temporary, 0o777)
    command = space.command("service.py", "sleep", env={"TMPDIR": str(temporary)})
    with open(space.host / "stderr", "w") as stderr:
        process = processes.start(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command],
                                  stderr=stderr)  # fmt: skip
    wait_for_ready(process)
    run = run_ncore("--keep-running", str(process.pid), gdb=chroot_gdb())
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.record["fell_back_from"] == str(space.work)
    assert run.record["path"] == str(temporary / f"ncore.{process.pid}")
    told = subprocess.run([sys.executable, "-m", "ncore", "--keep-running", str(process.pid)],
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert told.returncode == 0, told.stderr
    assert told.stdout.splitlines()[1] == (
        f"process {process.pid} could not write in {space.work}; its dump went to {temporary} instead"
    )
    assert_left_running(process.pid)


def test_a_dump_that_went_elsewhere_says_where_it_was_asked_to_go(processes, workspace_for):
    """An --output-dir whose modes let the process write but which refuses it anyway (made
    immutable, chattr +i): pypanic writes to the temporary directory instead, and ncore says
    so: ``fell_back_from`` in --json, a line before the path in the story."""
    if os.geteuid() != 0:
        missing("chattr +i needs root")
    space = workspace_for(PYTHON)
    temporary, locked = space.host / "tmp", space.host / "locked"
    temporary.mkdir()
    locked.mkdir()
    with open(space.host / "stderr", "w") as stderr:
        process = processes.start(space.command("service.py", "busy", env={"TMPDIR": str(temporary)}), stderr=stderr)
    wait_for_ready(process)
    if subprocess.run(["chattr", "+i", str(locked)], capture_output=True, check=False).returncode:
        missing(f"chattr +i does not work on {locked}'s file system")
    try:
        run = run_ncore("--keep-running", "--output-dir", str(locked), str(process.pid), gdb=chroot_gdb())
        assert run.returncode == 0, run.stdout + run.stderr
        assert run.record["fell_back_from"] == str(locked)
        assert run.record["path"] == str(temporary / f"ncore.{process.pid}")
        argv = [sys.executable, "-m", "ncore", "--keep-running", "--output-dir", str(locked), str(process.pid)]
        told = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        assert told.returncode == 0, told.stderr
        assert told.stdout.splitlines()[1:] == [
            f"process {process.pid} could not write in {locked}; its dump went to {temporary} instead",
            str(temporary / f"ncore.{process.pid}.1"),
        ]
    finally:
        subprocess.run(["chattr", "-i", str(locked)], check=False)
    Service(process, space).assert_left_running()


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
    """A main thread in a long C call holding the GIL never runs the pending call: with
    --no-fallback, exit 7 after --timeout, the request withdrawn, target running and not stopped, no
    dump ever appears."""
    service = start_service(PYTHON, "gil-hog")
    started = time.monotonic()
    run = run_ncore("--method", "gdb", "--timeout", "8", "--no-fallback", str(service.pid), gdb=chroot_gdb())
    assert run.returncode == 7, run.stdout + run.stderr
    assert time.monotonic() - started < 60
    assert "did not start the dump in time" in run.record["error"]
    assert "holding the GIL" in run.record["error"] and "withdrew the request" in run.record["error"]
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


def test_a_pid_that_cannot_be_a_process_is_a_usage_error():
    """Zero or negative, whether the quick reading or click reads the line: exit 2."""
    for argv in (["--inject", "-5"], ["--", "-5"], ["0"]):
        run = run_ncore(*argv)
        assert run.returncode == 2, argv
        assert run.record["error"].endswith("is not a process id")


def test_bad_pid_text_is_a_usage_error():
    """A pid that is not a number: exit 2."""
    done = subprocess.run([sys.executable, "-m", "ncore", "abc"], capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert "is not a valid integer" in done.stderr
