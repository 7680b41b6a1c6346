"""A target in a container, with PID and mount namespaces of its own (``unshare --pid
--mount --fork --mount-proc`` standing in for the runtime), dumped from the host as
docs/runbooks.md says: in it the process is pid 1 and writes ``ncore.1``; the dump and
ncore's record carry both pids, and a dump that leaves the container is ``ncore.<host pid>``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ..interpreters import HOST, IN_CHROOT, missing
from .conftest import assert_left_running, load_dump, run_ncore

CONTAINER = ("unshare", "--pid", "--mount", "--propagation", "private", "--fork", "--mount-proc")
INTERPRETERS = [HOST[3], IN_CHROOT[1]]


@pytest.fixture
def container(start_service):
    """``container(interpreter, kind, env=None)``: a Service running as pid 1 of its own namespaces."""
    if os.geteuid() != 0:
        missing("unshare needs root")

    def start(interpreter, kind, env=None):
        interpreter.require()
        service = start_service(interpreter, kind, prefix=CONTAINER, env=env)
        assert service.pid != service.process.pid
        with open(f"/proc/{service.pid}/status") as f:
            assert [line.split()[1:] for line in f if line.startswith("NSpid:")] == [[str(service.pid), "1"]]
        return service

    return start


@pytest.mark.parametrize("interpreter", INTERPRETERS, ids=lambda i: i.name)
def test_a_snapshot_carries_both_pids(container, interpreter):
    service = container(interpreter, "busy")
    run = run_ncore("--keep-running", str(service.pid))
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.record["pid"] == service.pid
    assert run.record["nspid"] == [service.pid, 1]
    assert Path(run.record["path"]).name == "ncore.1"
    dump = load_dump(run.record["path"])
    assert dump["init.process.pid"] == 1
    assert dump["init.process.nspid"] == [service.pid, 1]
    assert list(dump).index("init.process.nspid") == list(dump).index("init.process.pid") + 1
    service.assert_left_running()


def test_a_panic_is_copied_out_under_the_host_pid(container, tmp_path):
    service = container(HOST[3], "sleep")
    run = run_ncore(str(service.pid), cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.record["path"] == str(tmp_path / f"ncore.{service.pid}")
    assert load_dump(run.record["path"])["init.process.nspid"] == [service.pid, 1]
    assert service.process.wait(timeout=30) != 0


def test_a_read_only_dump_carries_both_pids(container, tmp_path):
    service = container(HOST[3], "busy")
    run = run_ncore("--read-only", "--output-dir", str(tmp_path), str(service.pid))
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.record["path"] == str(tmp_path / f"ncore.{service.pid}")
    assert run.record["nspid"] == [service.pid, 1]
    dump = load_dump(run.record["path"])
    assert dump["init.process.pid"] == 1
    assert dump["init.process.nspid"] == [service.pid, 1]
    service.assert_left_running()


def test_without_any_right_to_trace_a_listening_container_is_dumped(container, no_ptrace):
    """The recipe for a pod without CAP_SYS_PTRACE: PYPANIC_SIGNAL in the container's environment."""
    service = container(HOST[3], "sleep", env={"PYPANIC_SIGNAL": "SIGRTMIN+3"})
    run = no_ptrace("--keep-running", str(service.pid))
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.record["method"] == "signal"
    assert run.record["nspid"] == [service.pid, 1]
    assert load_dump(run.record["path"])["init.process.nspid"] == [service.pid, 1]
    assert_left_running(service.pid)
