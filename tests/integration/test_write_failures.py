"""Where the dump goes when its directory is gone, read-only or full: fallbacks, log lines,
and the panic's exit status whatever happens."""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..interpreters import HOST, SRC, missing

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


def writing_lines(stderr: str) -> list[str]:
    """What follows ``writing core dump to`` in each such log line."""
    return re.findall(r"CRIT   writing core dump to (.*)", stderr)


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
    assert writing_lines(result.stderr) == [f"{dump} (could not write in {gone}: No such file or directory)"], (
        result.stderr
    )


def test_gone_working_directory_is_named_in_the_log(processes, workspace_for, tmp_path):
    """A working directory that was removed is passed over, and the log line says so."""
    fallback = tmp_path / "tmp"
    fallback.mkdir()
    space = workspace_for(PYTHON)
    result = processes.run(space.command("crash.py", "gone-cwd", env={"TMPDIR": str(fallback)}))
    assert result.returncode == 1, result.stderr
    [dump] = fallback.iterdir()
    assert writing_lines(result.stderr) == [
        f"{dump} (could not write in the working directory: No such file or directory)"
    ], result.stderr


def test_missing_temporary_directory_falls_back_to_tmp(processes, workspace_for):
    """TMPDIR names a directory that does not exist: the dump goes to /tmp, which the
    temporary directory falls back to."""
    space = workspace_for(PYTHON)
    gone = space.host / "gone"
    env = {"TMPDIR": str(space.host / "no-such-tmp"), "PYPANIC_TEST_DIRECTORY": str(gone)}
    result = processes.run(space.command("crash.py", "big", env=env))
    [line] = writing_lines(result.stderr)
    dump = Path(line.split(" ")[0])
    try:
        assert result.returncode == 1
        assert dump.parent == Path("/tmp") and dump.is_file()
        assert line == f"{dump} (could not write in {gone}: No such file or directory)"
    finally:
        dump.unlink(missing_ok=True)


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
    [dump] = tmp.iterdir()
    assert writing_lines(result.stderr) == [f"{dump} (could not write in {small_tmpfs}: No space left on device)"]
    assert list(small_tmpfs.iterdir()) == [], "no partial file is left on the full disk"


def test_full_temporary_directory_falls_back_to_tmp(processes, workspace_for, small_tmpfs):
    """The asked directory, $PYPANIC_DIR and $TMPDIR all on a full disk: /tmp, the last
    resort, takes the dump, and the one log line names the failure."""
    env = {"PYPANIC_DIR": str(small_tmpfs), "TMPDIR": str(small_tmpfs), "PYPANIC_TEST_DIRECTORY": str(small_tmpfs)}
    _, result = run(processes, workspace_for, env)
    [line] = writing_lines(result.stderr)
    dump = Path(line.split(" ")[0])
    try:
        assert result.returncode == 1
        assert dump.parent == Path("/tmp") and dump.is_file()
        assert line == f"{dump} (could not write in {small_tmpfs}: No space left on device)"
        assert list(small_tmpfs.iterdir()) == []
    finally:
        dump.unlink(missing_ok=True)


def test_a_stderr_nobody_reads_does_not_block_dumps(processes, workspace_for):
    """200 dumps log far more than a pipe holds; with nobody reading, none of them hangs."""
    space = workspace_for(PYTHON)
    process = processes.start(space.command("crash.py", "dump-many"))
    assert process.wait(timeout=120) == 0
    assert len(space.dumps()) == 200


def test_file_size_limit_is_a_failure_not_a_crash(processes, workspace_for):
    """RLIMIT_FSIZE below the dump's size: every directory fails with EFBIG, one 'error
    during panic' line names each failure, and the process still exits with status 1."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (32 * 1024, 32 * 1024))

    space, result = run(processes, workspace_for, {"TMPDIR": "/nonexistent"}, preexec_fn=limit)
    assert result.returncode == 1
    errors = re.findall(r"CRIT   error during panic: (.*)", result.stderr)
    assert len(errors) == 1, result.stderr
    assert f"could not write in {space.work}: File too large" in errors[0]
    assert "could not write in /tmp: File too large" in errors[0]
    assert writing_lines(result.stderr) == [], "only a directory that took the dump gets a line"
    assert "finished writing core dump" not in result.stderr
    assert space.dumps() == []


_WRITE_HUGE = """
import sys
from pypanic import _dump
entries = [("huge", '"' + "x" * 400_000_000 + '"')]
print("writing", flush=True)
print(_dump.write(entries, sys.argv[1], 4242), flush=True)
"""


def test_a_writer_killed_midway_leaves_nothing(processes, tmp_path):
    """SIGKILL while the file is being written: the directory stays empty (the file had
    no name yet), with no temporary file to clean up."""
    target = processes.start([PYTHON.path, "-c", _WRITE_HUGE, str(tmp_path)], env={"PYTHONPATH": str(SRC)})
    assert target.stdout is not None and target.stdout.readline() == "writing\n"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(
        os.readlink(fd).endswith("(deleted)") for fd in Path(f"/proc/{target.pid}/fd").iterdir() if fd.is_symlink()
    ):
        time.sleep(0.001)
    os.kill(target.pid, signal.SIGKILL)
    target.wait()
    assert list(tmp_path.iterdir()) == []


def test_without_proc_the_file_is_written_by_name(tmp_path):
    """Where /proc is not mounted (the unnamed file cannot be linked from it), the dump is
    written under a temporary name and renamed: one complete file, nothing else left."""
    if os.geteuid() != 0:
        missing("unmounting /proc in a mount namespace of its own needs root")
    code = "import sys; from pypanic import _dump; print(_dump.write([('k', '1')], sys.argv[1], 4242))"
    shell = f'umount -l /proc && exec {PYTHON.path} -c "{code}" {tmp_path}'
    env = {"PYTHONPATH": str(SRC), "PATH": os.environ["PATH"]}
    done = subprocess.run(["unshare", "--mount", "sh", "-c", shell], env=env, capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(tmp_path / "ncore.4242")
    assert [p.name for p in tmp_path.iterdir()] == ["ncore.4242"]
    assert (tmp_path / "ncore.4242").read_text() == '{\n"k": 1\n}\n'
