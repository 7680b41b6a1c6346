"""ncore's remote-exec method (PEP 768) against CPython 3.14 and 3.15 targets in the sid
chroot, driven by an ncore running on the host's Python: the default for running
targets, a fall back to ptrace for blocked ones, and its refusals."""

from __future__ import annotations

import struct

import pytest

from ncore.methods.remote_exec import COOKIE, LAYOUTS, _offsets, _Refused

from ..interpreters import HOST, IN_CHROOT
from .conftest import load_dump, run_ncore

MODERN = [i for i in IN_CHROOT if i.name in ("sid-3.14", "sid-3.15")]
RUNNING = ["busy", "both-busy", "churn"]


@pytest.mark.parametrize("with_pypanic", [True, False], ids=["pypanic", "no-pypanic"])
@pytest.mark.parametrize("kind", RUNNING)
@pytest.mark.parametrize("interpreter", MODERN, ids=lambda i: i.name)
def test_a_running_target_is_dumped_by_remote_exec(start_service, interpreter, kind, with_pypanic):
    """`ncore PID` on a running 3.14+ target: remote exec by default, nothing stopped, a full dump."""
    service = start_service(interpreter, kind, with_pypanic=with_pypanic)
    run = run_ncore(str(service.pid))
    assert run.returncode == 0, run.stdout + run.stderr
    record = run.record
    assert (record["method"], record["injection"], record["stopped_seconds"]) == ("remote-exec", "pending", 0.0)
    assert record["pypanic"] == ("target" if with_pypanic else "carried")
    assert service.process.wait(timeout=30) == 1
    data = load_dump(record["path"])
    assert data["panic.reason"] == "explicit panic"
    assert ("service.kind" in data) == with_pypanic
    main = next(t for t in data["panic.threads"] if t["main"])
    assert main["current"], "the script runs on the main thread"


@pytest.mark.parametrize("interpreter", MODERN, ids=lambda i: i.name)
def test_snapshots_leave_the_target_running(start_service, interpreter):
    service = start_service(interpreter, "churn")
    for n in range(3):
        before = service.progress()
        run = run_ncore("--method", "remote-exec", "--keep-running", str(service.pid))
        assert run.returncode == 0, run.stdout + run.stderr
        assert load_dump(run.record["path"])["panic.reason"] == "snapshot", n
        service.wait_for_progress_after(before)
    service.check_snapshots(3)
    service.assert_left_running()


@pytest.mark.parametrize("with_pypanic", [True, False], ids=["pypanic", "no-pypanic"])
@pytest.mark.parametrize("interpreter", MODERN, ids=lambda i: i.name)
def test_a_blocked_main_thread_falls_back_to_a_direct_call(start_service, interpreter, with_pypanic):
    """The main thread sleeps (no signal handler could wake it): remote exec would wait for
    the sleep to end, so auto passes it over (and says why) for the ptrace method's direct call."""
    service = start_service(interpreter, "sleep", with_pypanic=with_pypanic)
    run = run_ncore(str(service.pid))
    assert run.returncode == 0, run.stdout + run.stderr
    assert (run.record["method"], run.record["injection"]) == ("ptrace", "direct")
    assert len(run.record["skipped"]) == 1
    assert run.record["skipped"][0].startswith("remote-exec: the main thread is blocked in")
    assert service.process.wait(timeout=30) == 1


@pytest.mark.parametrize("interpreter", MODERN, ids=lambda i: i.name)
def test_remote_exec_asked_for_a_blocked_target_is_refused(start_service, interpreter):
    service = start_service(interpreter, "sleep")
    run = run_ncore("--method", "remote-exec", str(service.pid))
    assert run.returncode == 6, run.stdout + run.stderr
    assert "would run the script only when that call returns" in run.record["error"]
    service.assert_left_running()
    assert not list(service.space.work.glob("ncore.*"))


def test_a_target_with_remote_debugging_disabled(start_service):
    """PYTHON_DISABLE_REMOTE_DEBUG: remote exec says so and writes nothing; auto uses ptrace."""
    service = start_service(MODERN[0], "busy", prefix=("env", "PYTHON_DISABLE_REMOTE_DEBUG=1"))
    refused = run_ncore("--method", "remote-exec", str(service.pid))
    assert refused.returncode == 6, refused.stdout + refused.stderr
    assert "remote debugging is disabled" in refused.record["error"]
    service.assert_left_running()
    run = run_ncore(str(service.pid))
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.record["method"] == "ptrace"
    assert "remote debugging is disabled" in run.record["skipped"][0]
    assert service.process.wait(timeout=30) == 1


@pytest.mark.parametrize("interpreter", [HOST[-2], IN_CHROOT[0]], ids=lambda i: i.name)
def test_an_older_python_is_refused(start_service, interpreter):
    service = start_service(interpreter, "busy")
    run = run_ncore("--method", "remote-exec", str(service.pid))
    assert run.returncode == 6, run.stdout + run.stderr
    assert "needs CPython 3.14 or later" in run.record["error"]
    service.assert_left_running()


class _Table:
    """A _Py_DebugOffsets table in memory, as _offsets reads it."""

    def __init__(self, version: int, slots: list[int]) -> None:
        self.data = COOKIE + struct.pack(f"<{len(slots) + 2}Q", version, 0, *slots)

    def read(self, address: int, size: int) -> bytes:
        return self.data[address : address + size]


def test_an_unknown_layout_is_refused_before_any_write():
    """A version ncore has no row for (3.16), or a 3.14 table of the wrong shape."""
    with pytest.raises(_Refused, match=r"not 3\.16"):
        _offsets(_Table(0x031000F0, [0] * 120), 0)  # type: ignore[arg-type]
    with pytest.raises(_Refused, match="shape"):
        _offsets(_Table(0x030E00F0, [0] * LAYOUTS[(3, 14)]["size"]), 0)  # type: ignore[arg-type]
