"""Fixtures for tests that run ncore against real target processes."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from ncore.target import inspect

from ..conftest import Processes
from ..interpreters import CHROOT, ROOT, Interpreter, Workspace, missing

CHROOT_GDB = ROOT / "tests" / "chroot" / "gdb"


def chroot_gdb() -> str:
    """The modern gdb the tests use (the host's gdb 13 cannot call functions on AMX CPUs)."""
    if not (CHROOT / ".provisioned").exists():
        missing("the sid chroot with its gdb is not provisioned (run `make chroot` as root)")
    return str(CHROOT_GDB)


def assert_left_running(pid: int) -> None:
    """No thread of ``pid`` is stopped, dead or traced: ncore left it as it found it.

    Running, sleeping and disk sleep ("D", e.g. in fsync or a page fault) all count as running.
    """
    for task in Path(f"/proc/{pid}/task").iterdir():
        stat = (task / "stat").read_text()
        state = stat.rsplit(")", 1)[1].split()[0]
        assert state not in "tTZX", f"thread {task.name} is in state {state}"
        status = (task / "status").read_text()
        tracer = next(line.split()[1] for line in status.splitlines() if line.startswith("TracerPid:"))
        assert tracer == "0", f"thread {task.name} is traced by {tracer}"


@dataclass
class Service:
    """A running target from tests/targets/service.py."""

    process: subprocess.Popen[str]
    space: Workspace
    forked: int | None = None
    """The target's pid when the prefix forks it (``unshare --fork``), else the process's."""

    @property
    def pid(self) -> int:
        return self.forked or self.process.pid

    def progress(self) -> int:
        path = self.space.work / "progress"
        return int(path.read_text()) if path.exists() else 0

    def assert_left_running(self) -> None:
        assert_left_running(self.pid)

    def check_snapshots(self, count: int) -> None:
        """Exactly ``count`` dumps, each complete strict JSON that records a snapshot."""
        dumps = sorted(self.space.work.glob("ncore.*"))
        assert len(dumps) == count
        for path in dumps:
            assert load_dump(str(path))["panic.reason"] == "snapshot"

    def wait_for_progress_after(self, count: int, timeout: float = 20) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = self.progress()
            if now > count:
                return now
            time.sleep(0.05)
        pytest.fail(f"process {self.pid} made no progress past {count} in {timeout} s")


def wait_until_asleep(pid: int, timeout: float = 30) -> None:
    """Wait until the main thread of ``pid`` sleeps in a system call, not waiting for the GIL
    (after printing ``ready`` it may still be taking the GIL back from a busy thread)."""
    target = inspect(pid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = target.main_thread().describe(target.runtime)
        if state.startswith("blocked in"):
            return
        time.sleep(0.01)
    pytest.fail(f"the main thread of {pid} never went to sleep")


def wait_for_ready(process: subprocess.Popen[str], timeout: float = 60) -> None:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    line = process.stdout.readline() if ready else ""
    if line.strip() != "ready":
        process.kill()
        _, err = process.communicate()
        pytest.fail(f"the target did not start (said {line!r}): {err}")


@pytest.fixture
def start_service(processes: Processes, workspace_for: Any) -> Any:
    """``start_service(interpreter, kind, with_pypanic=True, prefix=(), env=None)``: a ready
    Service, reaped at teardown; a prefix with ``--fork`` (``unshare``) runs it as its child."""

    def start(
        interpreter: Interpreter,
        kind: str,
        with_pypanic: bool = True,
        prefix: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> Service:
        space = workspace_for(interpreter)
        argv = [*prefix, *space.command("service.py", kind, env=env, with_pypanic=with_pypanic)]
        with open(space.host / "stderr", "w") as stderr:
            process = processes.start(argv, stderr=stderr)
        wait_for_ready(process)
        if "--fork" not in prefix:
            return Service(process, space)
        (child,) = psutil.Process(process.pid).children()
        return Service(process, space, child.pid)

    return start


_SEIZE = """\
import ctypes, sys, time
libc = ctypes.CDLL(None, use_errno=True)
assert libc.ptrace(0x4206, int(sys.argv[1]), 0, 0) == 0, ctypes.get_errno()  # PTRACE_SEIZE: it runs on
print('seized', flush=True)
time.sleep(1000)
"""


@pytest.fixture
def seized(processes: Processes) -> Any:
    """``seized(pid)``: another tracer holds ``pid`` (which runs on); the tracer's pid. The
    tracer is reaped at teardown, which lets the target go."""

    def seize(pid: int) -> int:
        tracer = processes.start([sys.executable, "-c", _SEIZE, str(pid)])
        assert tracer.stdout is not None and tracer.stdout.readline().strip() == "seized"
        return tracer.pid

    return seize


@dataclass
class NcoreRun:
    returncode: int
    record: dict[str, Any]
    stdout: str
    stderr: str


def run_ncore(
    *args: str, gdb: str | None = None, timeout: float = 120, user: str | None = None, cwd: Path | None = None
) -> NcoreRun:
    """Run the real ncore command (``python -m ncore --json ...``) and parse its record."""
    env = {**os.environ}
    if gdb is not None:
        env["NCORE_GDB"] = gdb
    argv = [sys.executable, "-m", "ncore", "--json", *args]
    if user is not None:
        argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *argv]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, check=False, cwd=cwd)
    try:
        record = json.loads(done.stdout) if done.stdout.strip() else {}
    except ValueError:
        pytest.fail(f"ncore --json printed something else: {done.stdout!r} {done.stderr!r}")
    return NcoreRun(done.returncode, record, done.stdout, done.stderr)


def load_dump(path: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(Path(path).read_text(), parse_constant=pytest.fail)
    return data


NO_PTRACE = """
import ctypes, os, struct, sys
# A seccomp filter failing ptrace, process_vm_readv and process_vm_writev with EPERM
# (x86_64), as some container runtimes install; then the command given runs under it.
instructions = [
    (0x20, 0, 0, 0),  # load the system call's number
    (0x15, 2, 0, 101),  # ptrace?
    (0x15, 1, 0, 310),  # process_vm_readv?
    (0x15, 0, 1, 311),  # process_vm_writev?
    (0x06, 0, 0, 0x00050000 | 1),  # then fail it with EPERM
    (0x06, 0, 0, 0x7FFF0000),  # else allow it
]
code = b"".join(struct.pack("<HBBI", *instruction) for instruction in instructions)
program = ctypes.create_string_buffer(code, len(code))
header = ctypes.create_string_buffer(struct.pack("<HxxxxxxQ", len(instructions), ctypes.addressof(program)), 16)
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)
assert libc.prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS
assert libc.prctl(22, 2, ctypes.addressof(header), 0, 0) == 0, ctypes.get_errno()  # PR_SET_SECCOMP, a filter
os.execvp(sys.argv[1], sys.argv[1:])
"""
"""A program that runs the command it is given where ptrace and process_vm_* fail (EPERM)."""


@pytest.fixture
def no_ptrace(tmp_path):
    """``no_ptrace(*args)``: run ``python -m ncore --json ARGS`` (``ncore doctor --json PID``
    for a command) where ptrace and process_vm_* fail."""
    wrapper = tmp_path / "no_ptrace.py"
    wrapper.write_text(NO_PTRACE)

    def run(*args: str, user: str | None = None) -> NcoreRun:
        command = [args[0], "--json", *args[1:]] if args[0] in ("doctor", "ps") else ["--json", *args]
        argv = [sys.executable, str(wrapper), sys.executable, "-m", "ncore", *command]
        if user is not None:
            argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *argv]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        try:
            record = json.loads(done.stdout) if done.stdout.strip() else {}
        except ValueError:
            record = {}  # several targets: a record per line
        return NcoreRun(done.returncode, record, done.stdout, done.stderr)

    return run
