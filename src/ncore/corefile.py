"""``ncore core COREFILE [EXECUTABLE]``: the core file of a CPython process (the kernel's,
on a crash, or gdb's ``gcore`` of a live one) turned into an ncore dump.

pystack reads the threads, frames and locals from the core (ncore.stacks); the core's own
notes say which thread took the fatal signal (the kernel writes its status first), and
pystack's analyzer gives the signal, the process's ids and its command line (the kernel
keeps its first 80 characters). The dump is ``ncore.<pid>`` of the dead process, written
with pypanic's writer (ncore.outside), the fatal signal as ``panic.exception`` and the
faulting thread first.
"""

from __future__ import annotations

import os
import signal
import struct
import time
from typing import Any

from . import outside, stacks
from .elf import NT_PRSTATUS, NotElf, core_notes
from .errors import BadUsage, NotPython

_COMPRESSED = {b"\x28\xb5\x2f\xfd": "zstd", b"\x1f\x8b": "gzip", b"\x04\x22\x4d\x18": "lz4", b"\xfd7zXZ": "xz"}
_SI_KERNEL = 0x80
_SIGNAL_SENT = 0
"""si_code SI_USER: a signal another process sent with kill()."""


class Converted:
    """A core file turned into a dump: where the dump went and what the core said."""

    def __init__(self, path: str, pid: int, signal_name: str, description: str, thread: int, seconds: float) -> None:
        self.path = path
        self.pid = pid
        self.signal = signal_name
        self.description = description
        """How the process ended, in words."""
        self.thread = thread
        self.seconds = seconds

    def record(self) -> dict[str, object]:
        return {"status": "converted", "pid": self.pid, "path": self.path, "signal": self.signal,
                "description": self.description, "thread": self.thread, "elapsed_seconds": self.seconds}  # fmt: skip


def convert(core: str, executable: str | None, output_dir: str | None, native: bool) -> Converted:
    """Read ``core`` and write its dump into ``output_dir`` (default: the working directory)."""
    started = time.monotonic()
    _check_readable(core)
    faulting = _faulting_thread(core)
    from pystack.engine import CoreFileAnalyzer

    try:
        analyzer = CoreFileAnalyzer(core, executable)
        found = str(executable or analyzer.extract_executable())
        failure: dict[str, Any] = analyzer.extract_failure_info()
        ps: dict[str, Any] = analyzer.extract_ps_info()
        pid = int(analyzer.extract_pid())
    except RuntimeError as e:
        raise NotPython(f"pystack could not read core file {core}: {e}") from None
    if not os.path.isfile(found):
        raise BadUsage(
            f"the core file names its executable {found}, which is not here",
            f"give the Python the process ran, as ncore sees it: ncore core {core} /path/to/python3.X (for a "
            "container's core, the file inside its root)",
        )
    reading = stacks.read_core(core, found, pid, faulting or pid, native, stacks.read_source)
    process = _process(pid, ps, found, reading)
    number = int(failure.get("si_signo") or 0)
    name, meaning, description = _ending(number, failure)
    first = reading.threads[0] if reading.threads else None
    thread = first["native_id"] if first else faulting or pid
    exception = {
        "type": name,
        "message": meaning,
        "signal": number,
        "code": failure.get("si_code"),
        "address": hex(int(failure.get("failed_addr") or 0)),
        "sender_pid": failure.get("sender_pid") or None,
        "thread": thread,
        "frames": first["frames"] if first else [],
    }
    entries = outside.entries(
        process,
        reading,
        "core file",
        f"read from core file {os.path.abspath(core)}: {description}",
        outside.traceback_text(f"SIGNAL: {name}: {meaning}, in thread {thread}", first),
        exception,
    )
    directory = output_dir or os.getcwd()
    path, _ = outside.write(entries, pid, [(directory, outside.directory(directory))], None)
    return Converted(path, pid, name, description, thread, time.monotonic() - started)


def _check_readable(core: str) -> None:
    try:
        with open(core, "rb") as f:
            magic = f.read(6)
    except OSError as e:
        raise BadUsage(f"cannot read core file {core}: {e.strerror}", "give the path of a core file") from None
    for prefix, kind in _COMPRESSED.items():
        if magic.startswith(prefix):
            raise BadUsage(
                f"{core} is compressed ({kind}), not a core file",
                f"decompress it first (`coredumpctl dump PID --output=core`, or `{kind} -d`), then run ncore core",
            )


def _faulting_thread(core: str) -> int | None:
    """The thread whose status the kernel wrote first: the one that took the signal."""
    try:
        notes = core_notes(core)
    except NotElf as e:
        raise BadUsage(f"{core} is not a core file: {e}", "give the path of a core file") from None
    status = next((data for kind, name, data in notes if kind == NT_PRSTATUS and name == b"CORE"), None)
    return struct.unpack_from("<i", status, 32)[0] if status and len(status) >= 36 else None


def _ending(number: int, failure: dict[str, Any]) -> tuple[str, str, str]:
    """The signal's name, what it meant, and how the process ended, in words."""
    if number == 0:
        return "none", "no signal", "the core was taken on demand (the process did not crash)"
    name = outside.signal_name(number)
    if number == signal.SIGSTOP:
        return name, "stopped", "the core was taken from the live process (gcore, or a debugger): it did not crash"
    meaning = signal.strsignal(number) or name
    code = failure.get("si_code")
    if number in (signal.SIGSEGV, signal.SIGBUS) and code is not None and 0 < int(code) < _SI_KERNEL:
        meaning = f"{meaning} at address {int(failure.get('failed_addr') or 0):#x}"
    elif code == _SIGNAL_SENT and failure.get("sender_pid"):
        meaning = f"{meaning}, sent by process {failure['sender_pid']} (uid {failure.get('sender_uid')})"
    return name, meaning, f"killed by {name} ({meaning})"


def _process(pid: int, ps: dict[str, Any], executable: str, reading: stacks.Reading) -> outside.Process:
    process = outside.Process(pid)
    arguments = str(ps.get("psargs") or "").strip()
    process.argv = arguments.split() if arguments else None
    process.version = reading.version or None
    process.python = {
        "version": reading.version,
        "implementation": "cpython",
        "executable": executable,
        "command_line": {"text": arguments, "note": "the kernel keeps its first 80 characters"},
    }
    process.process = {name: ps.get(name) for name in ("pid", "ppid", "uid", "gid", "pgrp", "sid", "nice")}
    process.process["name"] = ps.get("fname")
    return process
