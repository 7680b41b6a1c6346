"""Where the dump goes when its directory is gone, read-only or full: fallbacks, log lines,
and the panic's exit status whatever happens."""

from __future__ import annotations

import os
import re
import resource
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..interpreters import HOST, missing

PYTHON = HOST[0]


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs, unmounted at teardown."""
    if os.geteuid() != 0:
        missing("mounting a tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def run(processes, workspace_for, env: dict[str, str], **kwargs):
    space = workspace_for(PYTHON)
    return space, processes.run(space.command("crash.py", "big", env=env), **kwargs)


def test_gone_directory_falls_back_to_pypanic_dir(processes, workspace_for, tmp_path):
    """A configured directory that does not exist: the dump goes to $PYPANIC_DIR, and
    the log line says where and why."""
    fallback = tmp_path / "fallback"
    fallback.mkdir()
    space = workspace_for(PYTHON)
    gone = space.host / "gone"
    result = processes.run(
        space.command("crash.py", "big", env={"PYPANIC_DIR": str(fallback), "PYPANIC_TEST_DIRECTORY": str(gone)})
    )
    assert result.returncode == 1
    [dump] = fallback.iterdir()
    assert re.search(
        rf"CRIT   writing core dump to {re.escape(str(dump))} \(could not write in {re.escape(str(gone))}: "
        r"No such file or directory\)",
        result.stderr,
    ), result.stderr


def test_full_disk_falls_back_and_says_so(processes, workspace_for, small_tmpfs, tmp_path):
    """A full file system: the log names the error, the temporary directory takes the dump."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    _, result = run(
        processes,
        workspace_for,
        {"PYPANIC_DIR": str(small_tmpfs), "TMPDIR": str(tmp), "PYPANIC_TEST_DIRECTORY": str(small_tmpfs)},
    )
    assert result.returncode == 1
    assert "No space left on device" in result.stderr
    assert len(list(tmp.iterdir())) == 1
    assert list(small_tmpfs.iterdir()) == [], "no partial file is left on the full disk"


def test_full_disk_everywhere_still_exits_with_the_panic_status(processes, workspace_for, small_tmpfs):
    """Nowhere to write: 'error during panic' names every failure, and the exit status stays."""
    _, result = run(
        processes,
        workspace_for,
        {"PYPANIC_DIR": str(small_tmpfs), "TMPDIR": str(small_tmpfs), "PYPANIC_TEST_DIRECTORY": str(small_tmpfs)},
    )
    assert result.returncode == 1
    assert re.search(r"CRIT   error during panic: .*No space left on device", result.stderr), result.stderr
    assert "finished writing core dump" not in result.stderr
    assert list(small_tmpfs.iterdir()) == []


def test_a_stderr_nobody_reads_does_not_block_dumps(processes, workspace_for):
    """200 dumps log far more than a pipe holds; with nobody reading, none of them hangs."""
    space = workspace_for(PYTHON)
    process = processes.start(space.command("crash.py", "dump-many"))
    assert process.wait(timeout=120) == 0
    assert len(space.dumps()) == 200


def test_file_size_limit_is_a_failure_not_a_crash(processes, workspace_for):
    """RLIMIT_FSIZE below the dump's size: write fails with EFBIG, the process exits 1."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (32 * 1024, 32 * 1024))

    space, result = run(processes, workspace_for, {"TMPDIR": "/nonexistent"}, preexec_fn=limit)
    assert result.returncode == 1
    assert "File too large" in result.stderr
    assert space.dumps() == []
