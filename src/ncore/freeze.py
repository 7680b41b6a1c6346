"""Every thread of a process held still while ncore reads it from outside, in the one way
that leaves nothing behind if ncore dies meanwhile.

Each thread is seized (PTRACE_SEIZE) and interrupted (PTRACE_INTERRUPT): it stops in a
ptrace event stop, which sends no signal. When the tracer goes away for any reason (it is
done, or it was killed), the kernel detaches and resumes such a thread, and a system call
it was blocked in restarts as after any stop. pystack's own way of stopping a process,
PTRACE_ATTACH, sends each thread a SIGSTOP that is delivered, and the process stays
stopped, if the tracer is killed before it detaches: ncore therefore stops the process
itself and lets pystack only read (``stop_process=False``). A signal that arrives for a
thread while it is being stopped is passed on to it at once, as it would have been.

C stacks (``--native``) are unwound by pystack through its own PTRACE_ATTACH, which ncore
cannot replace. For that read a Guardian stands by: a process of its own session, which
ncore's death (its pipe closing without a word) wakes; it waits for the kernel to detach
the threads and continues the process (SIGCONT) if it was left stopped.
"""

from __future__ import annotations

import os
import signal
import time
from types import TracebackType

from .errors import NoSuchProcess, PermissionDenied, TimedOut
from .methods.ptrace import PTRACE_CONT, PTRACE_DETACH, PTRACE_EVENT_STOP, PTRACE_INTERRUPT, PTRACE_SEIZE, WALL, kernel
from .target import attach_refused

_STOP_SECONDS = 2.0
"""How long the threads may take to stop (a thread in uninterruptible sleep waits for its I/O)."""


class Frozen:
    """``with Frozen(pid):`` every thread of ``pid`` is stopped inside, resumed on the way out."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.tids: list[int] = []
        self.stopped_at = 0.0
        self.seconds = 0.0
        """How long the process was held stopped."""

    def __enter__(self) -> Frozen:
        deadline = time.monotonic() + _STOP_SECONDS
        try:
            self._stop_all(deadline)
        except BaseException:
            self._release()
            raise
        self.stopped_at = time.monotonic()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._release()
        self.seconds = time.monotonic() - self.stopped_at if self.stopped_at else 0.0

    def _stop_all(self, deadline: float) -> None:
        """Seize and interrupt every thread, again until no new thread has appeared."""
        ptrace = kernel().ptrace
        while True:
            new = [tid for tid in _threads(self.pid) if tid not in self.tids]
            if not new:
                return
            for tid in new:
                try:
                    ptrace(PTRACE_SEIZE, tid, 0, 0)
                except ProcessLookupError:
                    continue  # the thread ended meanwhile
                except PermissionError:
                    raise attach_refused(self.pid, _uid(self.pid), "ncore") from None
                self.tids.append(tid)
                ptrace(PTRACE_INTERRUPT, tid)
            for tid in new:
                if tid in self.tids and not self._wait_for_stop(tid, deadline):
                    self.tids.remove(tid)

    def _wait_for_stop(self, tid: int, deadline: float) -> bool:
        """Wait until ``tid`` is in its event stop, passing on any signal met first; False
        when the thread ended."""
        while True:
            try:
                found, status = os.waitpid(tid, os.WNOHANG | WALL)
            except ChildProcessError:
                return False
            if not found:
                if time.monotonic() > deadline:
                    raise TimedOut(
                        f"thread {tid} of process {self.pid} did not stop within {_STOP_SECONDS:g} s (it may be in "
                        "uninterruptible sleep, waiting for a disk or a network file system); nothing was read",
                        "try again when its I/O has finished",
                    )
                time.sleep(0.00005)
                continue
            if not os.WIFSTOPPED(status):
                return False
            if status >> 16 == PTRACE_EVENT_STOP:
                return True
            kernel().ptrace(PTRACE_CONT, tid, 0, os.WSTOPSIG(status))

    def _release(self) -> None:
        for tid in self.tids:
            try:
                kernel().ptrace(PTRACE_DETACH, tid, 0, 0)
            except OSError:
                pass  # the thread ended while it was held
        self.tids = []


def _threads(pid: int) -> list[int]:
    try:
        return sorted(int(name) for name in os.listdir(f"/proc/{pid}/task"))
    except FileNotFoundError:
        raise NoSuchProcess(f"process {pid} exited before it could be read") from None
    except PermissionError:
        raise PermissionDenied(f"not allowed to list the threads of process {pid}") from None


def _uid(pid: int) -> int:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return -1


class Guardian:
    """``with Guardian(pid):`` if ncore dies inside, ``pid`` is continued should it be stopped."""

    _DETACH_SECONDS = 2.0
    _SETTLE_SECONDS = 0.5

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._child = 0
        self._pipe = -1

    def __enter__(self) -> Guardian:
        read_end, self._pipe = os.pipe()
        self._child = os.fork()
        if self._child == 0:  # the guardian: it never returns to ncore's code
            try:
                os.close(self._pipe)
                os.setsid()  # out of ncore's process group: a Ctrl-C or a group kill spares it
                if os.read(read_end, 1) == b"":
                    self._continue_if_left_stopped()
            finally:
                os._exit(0)
        os.close(read_end)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        os.write(self._pipe, b"done")
        os.close(self._pipe)
        os.waitpid(self._child, 0)

    def _continue_if_left_stopped(self) -> None:
        """Once the kernel has let the threads go, a SIGSTOP pystack sent may still be on its
        way (pending, or the threads entering the stop): continue the process if so."""
        deadline = time.monotonic() + self._DETACH_SECONDS
        while time.monotonic() < deadline and _traced(self.pid):
            time.sleep(0.001)
        deadline = time.monotonic() + self._SETTLE_SECONDS
        while time.monotonic() < deadline:
            if _stop_pending(self.pid) or any(state == "T" for state in _states(self.pid)):
                os.kill(self.pid, signal.SIGCONT)
                return
            time.sleep(0.001)


def _traced(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return any(line.startswith("TracerPid:") and line.split()[1] != "0" for line in f)
    except OSError:
        return False


def _stop_pending(pid: int) -> bool:
    """Whether a SIGSTOP waits to be taken by the process or one of its threads."""
    bit = 1 << (signal.SIGSTOP - 1)
    for tid in _threads(pid):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                masks = [int(line.split()[1], 16) for line in f if line.startswith(("SigPnd:", "ShdPnd:"))]
        except OSError:
            continue
        if any(mask & bit for mask in masks):
            return True
    return False


def _states(pid: int) -> list[str]:
    """The scheduler state of each thread (``T``: stopped by a signal)."""
    states = []
    for tid in _threads(pid):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                states.append(f.read().rsplit(")", 1)[1].split()[0])
        except OSError:
            continue
    return states


def seize_refused(pid: int) -> OSError | None:
    """Whether ncore may trace ``pid``, by trying: a child process seizes it (which stops
    nothing) and exits, which lets it go; the error the kernel gave, or None."""
    ptrace = kernel().ptrace  # loaded before the fork
    child = os.fork()
    if child == 0:
        try:
            ptrace(PTRACE_SEIZE, pid, 0, 0)
            code = 0
        except OSError as e:
            code = e.errno or 1
        os._exit(min(code, 255))
    _, status = os.waitpid(child, 0)
    code = os.waitstatus_to_exitcode(status)
    return None if code == 0 else OSError(code, os.strerror(code))
