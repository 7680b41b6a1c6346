"""The remote-exec method: ask a CPython 3.14+ process to run a script at its next safe point (PEP 768).

This is what ``sys.remote_exec(pid, path)`` does, spoken directly: a few writes into the
target's memory through /proc/PID/mem, guided by the ``_Py_DebugOffsets`` table CPython
keeps at the start of ``_PyRuntime``. ncore speaks the protocol itself rather than
running the target's own interpreter because ``sys.remote_exec`` only talks to its own
minor version, exists only on 3.14+ (ncore runs on 3.9+), and finds the runtime through
paths in its own root, so it fails for a target in a container or chroot; /proc reaches
the target wherever it runs, and the writes take well under a millisecond. Nothing is
stopped: the interpreter notices the request at its next eval-breaker check, on the main
thread, and runs the file in a fresh namespace.

The table's values come from the target; only the positions of the few entries ncore
reads differ between minor versions (3.15 added fields), so each supported version has a
row in LAYOUTS, checked against a known shape before anything is written. A main thread
blocked in a system call never reaches a check, so that case is left to the next method
(the ptrace method's direct call), and the reason is said.
"""

from __future__ import annotations

import os
import struct
import time

from ..errors import NcoreError, NoSuchProcess, PermissionDenied
from ..memory import Memory
from ..target import Target, ThreadState, inspect, permission_hint, scheduler_state, thread_state
from . import Injection, Outcome

COOKIE = b"xdebugpy"
_SAMPLES = 5
_SAMPLE_SECONDS = 0.001
PLEASE_STOP = 1 << 5
"""_PY_EVAL_PLEASE_STOP_BIT of a thread's eval breaker: makes it handle pending work."""

LAYOUTS = {
    (3, 14): {"size": 95, "interpreters_head": 5, "finalizing": 4, "interpreter_id": 7, "threads_main": 10,
              "list_node": 87, "debugger": 89},
    (3, 15): {"size": 111, "interpreters_head": 5, "finalizing": 4, "interpreter_id": 7, "threads_main": 10,
              "list_node": 103, "debugger": 105},
}  # fmt: skip
"""Where, in 64-bit slots of _Py_DebugOffsets, each entry ncore reads is, per (major, minor).
``interpreter_id`` is followed by the next-interpreter offset; ``list_node`` holds (0, 8) in
every build (the shape check); ``debugger`` starts six entries: eval breaker,
remote-debugger support, remote-debugging-enabled, pending call, script path, path size."""


class _Refused(Exception):
    """The target cannot take a request; the message says why."""


class Offsets:
    """The entries of a target's _Py_DebugOffsets that remote exec uses."""

    def __init__(self, slots: tuple[int, ...], layout: dict[str, int]) -> None:
        self.finalizing = slots[layout["finalizing"]]
        self.interpreters_head = slots[layout["interpreters_head"]]
        self.interpreter_id = slots[layout["interpreter_id"]]
        self.interpreter_next = slots[layout["interpreter_id"] + 1]
        self.threads_main = slots[layout["threads_main"]]
        debugger = layout["debugger"]
        (self.eval_breaker, self.support, self.enabled, self.pending_call, self.script_path, self.script_path_size) = (
            slots[debugger : debugger + 6]
        )
        self.shape_ok = slots[layout["list_node"] : layout["list_node"] + 2] == (0, 8) and self.script_path_size > 0


def _offsets(memory: Memory, runtime: int) -> Offsets:
    head = memory.read(runtime, 24)
    if head[:8] != COOKIE:
        raise _Refused("its _PyRuntime does not start with CPython's debug offsets")
    version, free_threaded = struct.unpack_from("<QQ", head, 8)
    major, minor = version >> 24 & 0xFF, version >> 16 & 0xFF
    layout = LAYOUTS.get((major, minor))
    if layout is None:
        known = ", ".join(f"{a}.{b}" for a, b in LAYOUTS)
        raise _Refused(f"ncore knows the debug offsets of Python {known}, not {major}.{minor}")
    if free_threaded:
        raise _Refused("it is a free-threaded build, whose remote exec ncore does not drive yet")
    offsets = Offsets(struct.unpack(f"<{layout['size']}Q", memory.read(runtime, 8 * layout["size"])), layout)
    if not offsets.shape_ok:
        raise _Refused(f"its debug offsets do not have the shape of Python {major}.{minor}'s")
    return offsets


def _main_thread_state(memory: Memory, runtime: int, offsets: Offsets) -> int:
    """The main interpreter's main thread state; _Refused when remote exec cannot reach it."""
    if memory.word(runtime + offsets.finalizing):
        raise _Refused("its interpreter is shutting down")
    interpreter = memory.word(runtime + offsets.interpreters_head)
    while interpreter and memory.word(interpreter + offsets.interpreter_id) != 0:
        interpreter = memory.word(interpreter + offsets.interpreter_next)  # the newest comes first
    if not interpreter:
        raise _Refused("it has no main interpreter (still starting?)")
    if int.from_bytes(memory.read(interpreter + offsets.enabled, 4), "little", signed=True) != 1:
        raise _Refused(
            "remote debugging is disabled in it (PYTHON_DISABLE_REMOTE_DEBUG is set, or -X disable-remote-debug)"
        )
    thread = memory.word(interpreter + offsets.threads_main)
    if not thread:
        raise _Refused("its main thread has no thread state")
    return thread


def _blocked_main_thread(target: Target) -> ThreadState | None:
    """The main thread's state if it sleeps in a system call (not a wait for the GIL) in every
    one of a few samples; None when it works. One sample would catch a busy thread in a short
    call, and a call held up by the disk ("D", as a rename under load) is work, not a wait."""
    for _ in range(_SAMPLES):
        main = thread_state(target.pid, target.pid)
        if main.running or main.syscall is None or scheduler_state(target.pid, target.pid) != "S":
            return None
        if main.waits_for_gil(target.runtime):
            return None
        time.sleep(_SAMPLE_SECONDS)
    return main


class RemoteExec:
    name = "remote-exec"

    def unavailable_here(self) -> str | None:
        return None  # ncore speaks the protocol itself, through /proc/PID/mem

    def unavailable(self, target: Target) -> str | None:
        """Why remote exec cannot serve ``target``, a CPython 3.14 or later (methods.NEWEST_ONLY)."""
        main = _blocked_main_thread(target)
        if main is not None:
            return (
                f"the main thread is {main.describe()}, and would run the script only when that call returns "
                "(the ptrace method calls it directly)"
            )
        try:
            memory = Memory(target.pid)
        except PermissionError:
            return f"not allowed to open /proc/{target.pid}/mem: {permission_hint(target.uid)}"
        except FileNotFoundError:
            return f"process {target.pid} exited"
        try:
            _main_thread_state(memory, target.runtime[0], _offsets(memory, target.runtime[0]))
        except (_Refused, OSError) as e:
            return f"process {target.pid} cannot take a remote exec request: {e}"
        finally:
            memory.close()
        return None

    def inject(self, target: Target, injection: Injection) -> Outcome:
        path = os.fsencode(injection.script)
        try:
            memory = Memory(target.pid)
        except PermissionError:
            raise PermissionDenied(
                f"not allowed to write process {target.pid}'s memory", permission_hint(target.uid)
            ) from None
        except FileNotFoundError:
            raise NoSuchProcess(f"process {target.pid} exited before ncore could reach it") from None
        try:
            runtime = target.runtime[0]
            offsets = _offsets(memory, runtime)
            if len(path) >= offsets.script_path_size:
                raise _Refused(f"the script's path is longer than the {offsets.script_path_size - 1} bytes it takes")
            support = _main_thread_state(memory, runtime, offsets) + offsets.support
            thread = support - offsets.support
            # CPython's order: the target reads the path only once it sees the pending flag.
            memory.write(support + offsets.script_path, path + b"\0")
            memory.write(support + offsets.pending_call, (1).to_bytes(4, "little"))
            # Only the low byte, which holds the event bits: the bytes above carry the
            # instrumentation version, which the target may change meanwhile.
            breaker = thread + offsets.eval_breaker
            memory.write(breaker, bytes([memory.read(breaker, 1)[0] | PLEASE_STOP]))
        except (_Refused, OSError) as e:
            raise NcoreError(
                f"process {target.pid} did not take the remote exec request: {e}",
                "try --method ptrace",
            ) from None
        finally:
            memory.close()
        return Outcome(
            self.name,
            "pending",
            "CPython 3.14+ runs the script at the main thread's next safe point (PEP 768); nothing was stopped",
            0.0,
            [f"wrote {injection.script!r} and the pending flag into thread state {thread:#x}; set its eval breaker"],
        )


def _request_fields(pid: int) -> tuple[Memory, int, Offsets] | None:
    """The target's memory (open) and where its main thread's remote-debugger request
    lies; None when it has none that ncore can read."""
    try:
        target = inspect(pid)
        memory = Memory(pid)
    except (NcoreError, OSError):
        return None
    try:
        offsets = _offsets(memory, target.runtime[0])
        support = _main_thread_state(memory, target.runtime[0], offsets) + offsets.support
    except (_Refused, OSError):
        memory.close()
        return None
    return memory, support, offsets


def _request_for(pid: int, script: str) -> tuple[Memory, int, int] | None:
    """Process ``pid``'s memory (open) and where its remote exec request's pending flag and
    path are, when that path is ``script``'s; None when it holds no request for it."""
    found = _request_fields(pid)
    if found is None:
        return None
    memory, support, offsets = found
    wanted = os.fsencode(script) + b"\0"
    try:
        if memory.read(support + offsets.script_path, len(wanted)) == wanted:
            return memory, support + offsets.pending_call, support + offsets.script_path
    except OSError:
        pass
    memory.close()
    return None


def still_pending(pid: int, script: str) -> bool:
    """Whether process ``pid`` still has a request to run ``script`` that it has not taken."""
    found = _request_for(pid, script)
    if found is None:
        return False
    memory, pending, _ = found
    with memory:
        return memory.read(pending, 4) != bytes(4)


def withdraw(pid: int, script: str) -> bool:
    """Take back a request to run ``script`` that process ``pid`` has not taken: blank its
    path, which the target then takes for no request. True when the target will not open
    ``script`` (it had not taken the request, or holds none for it); False when it took
    the request, and may be about to open the file."""
    found = _request_for(pid, script)
    if found is None:
        return True
    memory, pending, path = found
    with memory:
        memory.write(path, b"\0")
        # Read after the write: a request still pending now reads an empty path when taken.
        return memory.read(pending, 4) != bytes(4)
