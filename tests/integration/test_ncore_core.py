"""``ncore core``: the kernel's core file of a CPython process that crashed in C, and gdb's
``gcore`` of a live one, turned into dumps on every interpreter; and the stack faulthandler
prints on such a crash once ``enable_panic_on_crash()`` is on."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from pypanic._dump import PYPANIC_KEYS

from ..interpreters import ALL, HOST, IN_CHROOT, Interpreter, Workspace, missing
from .conftest import assert_left_running, load_dump, wait_for_ready


def allow_cores() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))


def core_pattern() -> str:
    pattern = Path("/proc/sys/kernel/core_pattern").read_text().strip()
    if pattern.startswith("|") or "/" in pattern:
        missing(f"kernel.core_pattern is {pattern!r}: the tests need cores written in the working directory")
    return pattern


def executable_for(interpreter: Interpreter) -> list[str]:
    """The Python to name to ``ncore core``: none for the host's (the core names it), the
    file inside the chroot for the chroot's."""
    if interpreter.chroot is None:
        return []
    return [str(interpreter.chroot / interpreter.path.lstrip("/"))]


def ncore_core(*args: str) -> tuple[int, dict]:
    done = subprocess.run(
        [sys.executable, "-m", "ncore", "core", "--json", *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    return done.returncode, json.loads(done.stdout) if done.stdout.strip() else {"stderr": done.stderr}


def crashed(processes, space: Workspace) -> tuple[Path, str]:
    """Run the segfaulting target to its death; its core file and its stderr."""
    core_pattern()
    result = processes.run(space.command("stuck.py", "segfault"), timeout=60, preexec_fn=allow_cores)
    assert result.returncode == -11, result.stderr
    cores = sorted(space.work.glob("core*"))
    assert len(cores) == 1, list(space.work.iterdir())
    return cores[0], result.stderr


@pytest.mark.parametrize("interpreter", ALL, ids=lambda i: i.name)
def test_a_segfault_in_c_becomes_a_dump(processes, workspace_for, interpreter):
    """A thread reads address 0 in C: faulthandler (enabled by enable_panic_on_crash) prints
    every thread on stderr, the kernel writes a core, and ``ncore core`` turns it into a dump
    that names SIGSEGV, puts the faulting thread first with the crashing function's locals,
    and has pypanic's keys in pypanic's order."""
    space = workspace_for(interpreter)
    core, stderr = crashed(processes, space)
    assert "Fatal Python error: Segmentation fault" in stderr
    assert 'stuck.py", line ' in stderr and "in crasher" in stderr and "in sleeper" in stderr
    code, record = ncore_core(str(core), *executable_for(interpreter), "--output-dir", str(space.work))
    assert code == 0, record
    assert record["signal"] == "SIGSEGV"
    # faulthandler raises the signal again once it has written the stacks, so the address is
    # in the core only where the fault itself ended the process
    assert record["description"].startswith("killed by SIGSEGV (Segmentation fault")
    dump = load_dump(record["path"])
    assert Path(record["path"]).name == f"ncore.{record['pid']}"
    assert [k for k in dump if k in PYPANIC_KEYS] == [k for k in PYPANIC_KEYS if k in dump]
    assert dump["init.process.pid"] == record["pid"]
    assert dump["panic.exception"]["type"] == "SIGSEGV"
    assert dump["panic.exception"]["thread"] == record["thread"]
    assert dump["panic.reason"].endswith(record["description"])
    assert dump["panic.error"].startswith(f"SIGNAL: SIGSEGV: {dump['panic.exception']['message']}, in thread ")
    threads = dump["panic.threads"]
    assert len(threads) == 3
    first = threads[0]
    assert first["native_id"] == record["thread"] != record["pid"]
    assert "crasher" in [f["function"] for f in first["frames"]]
    stuck = next(f for f in first["frames"] if f["function"] == "stuck")
    assert stuck["locals"]["marker"] == "findme"
    assert stuck["locals"]["limit"] == 7
    assert stuck["locals"]["label"] == "crash-label"
    assert stuck["locals"]["api_token"] == "<redacted by pypanic>"
    assert first["frames"][-1]["function"] == "string_at"
    assert dump["panic.exception"]["frames"] == first["frames"]
    assert [t["main"] for t in threads].count(True) == 1
    assert dump["dbg.outside"]["source"] == "core file"
    shown = subprocess.run(
        [sys.executable, "-m", "ncore", "show", record["path"]], capture_output=True, text=True, timeout=60, check=False
    )
    assert shown.returncode == 0
    assert "SIGSEGV: Segmentation fault" in shown.stdout


def test_a_core_from_another_root_needs_its_executable(processes, workspace_for):
    """A core whose executable is not where it says (a chroot, a container): exit 2, and the
    hint says to name it."""
    interpreter = IN_CHROOT[-1]
    space = workspace_for(interpreter)
    core, _ = crashed(processes, space)
    code, record = ncore_core(str(core))
    assert code == 2, record
    assert record["error"] == f"the core file names its executable {interpreter.path}, which is not here"
    assert f"ncore core {core} /path/to/python3.X" in record["hint"]


@pytest.mark.parametrize("interpreter", [HOST[3], HOST[-1], IN_CHROOT[1]], ids=lambda i: i.name)
def test_a_gcore_of_a_live_process_becomes_a_dump(processes, workspace_for, interpreter):
    """gdb's gcore of a live, stuck process: the dump says it did not crash and shows the
    stuck function with its locals; the process runs on."""
    space = workspace_for(interpreter)
    with open(space.host / "stderr", "w") as stderr:
        process = processes.start(space.command("stuck.py", "c-sleep"), stderr=stderr)
    wait_for_ready(process)
    prefix = space.work / "gcore"
    done = subprocess.run(["gcore", "-o", str(prefix), str(process.pid)], capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert_left_running(process.pid)
    code, record = ncore_core(f"{prefix}.{process.pid}", *executable_for(interpreter), "--output-dir", str(space.work))
    assert code == 0, record
    assert record["signal"] == "SIGSTOP"
    assert "it did not crash" in record["description"]
    dump = load_dump(record["path"])
    main = next(t for t in dump["panic.threads"] if t["main"])
    stuck = next(f for f in main["frames"] if f["function"] == "stuck")
    assert stuck["locals"]["marker"] == "findme"
    assert_left_running(process.pid)


def test_not_a_core_file(tmp_path):
    """A file that is no core: exit 2 saying what it is; a compressed core: how to decompress."""
    code, record = ncore_core(sys.executable)
    assert code == 2
    assert record["error"].endswith("is an ELF file but not a core file")
    squeezed = tmp_path / "core.zst"
    squeezed.write_bytes(b"\x28\xb5\x2f\xfd" + bytes(60))
    code, record = ncore_core(str(squeezed))
    assert code == 2
    assert record["error"] == f"{squeezed} is compressed (zstd), not a core file"
    assert "coredumpctl dump" in record["hint"]
    code, record = ncore_core(str(tmp_path / "missing"))
    assert code == 2
    assert "cannot read core file" in record["error"]
