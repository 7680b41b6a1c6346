"""Many snapshots into one target: no crash, no hang, and the target keeps working.

The numbers are the issue's: 300 into an allocation-churning target (where a direct call
at a random point crashed it within 5 to 29 injections), 100 into a target with two busy
threads (where it deadlocked).
"""

from __future__ import annotations

import pytest

from ..interpreters import HOST
from .conftest import chroot_gdb, run_ncore


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize(("kind", "count"), [("churn", 300), ("both-busy", 100)])
def test_snapshots_do_no_harm(start_service, kind, count):
    """``count`` snapshots with ``ncore --keep-running``, each one a complete dump."""
    service = start_service(HOST[3], kind)
    gdb = chroot_gdb()
    progress = service.progress()
    for n in range(count):
        run = run_ncore("--method", "gdb", "--keep-running", "--timeout", "30", str(service.pid), gdb=gdb)
        assert run.returncode == 0, f"snapshot {n}: {run.stdout} {run.stderr}"
        assert service.process.poll() is None, f"the target died after snapshot {n}"
        if n % 50 == 49 and kind == "churn":
            progress = service.wait_for_progress_after(progress)
    service.check_snapshots(count)
    service.assert_left_running()
