"""ncore with the gdb method against real targets on every interpreter: every kind of
target, with and without pypanic imported, panics and snapshots."""

from __future__ import annotations

import os

import pytest

from ..interpreters import ALL, HOST, missing
from .conftest import chroot_gdb, load_dump, run_ncore

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
    if kind in ("busy", "both-busy"):
        assert "busy" in functions, functions
    if kind.endswith("worker-busy") or kind == "both-busy":
        assert "busy-worker" in [t["name"] for t in data["panic.threads"]]


@pytest.mark.parametrize("kind", ["busy", "sleep"])
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
@pytest.mark.parametrize("interpreter", [HOST[0], HOST[-1], ALL[-1]], ids=lambda i: i.name)
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
