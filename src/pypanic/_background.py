"""A snapshot's slow part done by a copy of the process: a writer forked at the safe point.

The process forks once; that child forks the writer and exits at once, and the process
reaps it: the writer is nobody's child (init adopts it), so no zombie is left behind and
the process's own ``waitpid(-1)`` sees only the short-lived child. The process waits
only for the two forks (the GIL released while it waits for the second); the writer
serializes the copy-on-write image of the registered state while the process runs on.

The writer keeps standard input, output and error and the descriptors it is told to, and
closes the rest (a copy of a socket or of a lock held open would keep the process's peers
waiting on a close); it restores the default action of every signal the application
handles in Python and blocks none, asks to be the first process the kernel's OOM killer
takes, and is killed by SIGALRM when it outlives its time limit. It never returns into the caller's code.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # the C module: `signal` would import enum
import os
import select
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable


FIRST_CHILD_SECONDS = 2.0
"""How long the process waits for its short-lived first child before it kills it."""

forking = False
"""True while this process forks a writer: pypanic's at-fork handlers then leave the
child as it is (it is a copy of the dump under way, not a new process of the application)."""


def fork_writer(work: Callable[[], None], seconds: float, keep: Iterable[int] = ()) -> int | None:
    """Run ``work`` in a writer forked from this process and return at once with the
    writer's pid, or None when no fork could be made (``work`` has not run: do it in place)."""
    global forking
    read_end, write_end = os.pipe()
    forking = True
    try:
        first = os.fork()
    except OSError:
        forking = False
        os.close(read_end)
        os.close(write_end)
        return None
    if first == 0:
        _first_child(work, seconds, keep, write_end)  # never returns
    forking = False
    os.close(write_end)
    _reap(first)
    try:
        data = os.read(read_end, 32)
    finally:
        os.close(read_end)
    return int(data) if data else None  # nothing from the first child: the second fork failed


def _reap(child: int) -> None:
    """Wait for the first child to exit, at most FIRST_CHILD_SECONDS: an application's
    at-fork handler could hang in it (a lock of a thread the fork left behind); it is then
    killed. Sleeps in select (see ncore's payload: a direct call must not nanosleep)."""
    deadline = time.monotonic() + FIRST_CHILD_SECONDS
    pause = 0.0001
    try:
        while os.waitpid(child, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:
                os.kill(child, _signal.SIGKILL)
                os.waitpid(child, 0)
                return
            select.select([], [], [], pause)
            pause = min(pause * 2, 0.002)
    except ChildProcessError:
        pass  # reaped by the application's own SIGCHLD handler, or SIGCHLD is ignored


def _first_child(work: Callable[[], None], seconds: float, keep: Iterable[int], report_to: int) -> None:
    try:
        writer = os.fork()
        if writer == 0:
            os.close(report_to)
            _writer(work, seconds, keep)
        os.write(report_to, str(writer).encode())
    except BaseException:
        pass
    os._exit(0)


def _writer(work: Callable[[], None], seconds: float, keep: Iterable[int]) -> None:
    status = 1
    try:
        # A fork keeps the signal mask: ncore's direct call holds every signal off the
        # thread it borrows, SIGALRM included.
        _signal.pthread_sigmask(_signal.SIG_SETMASK, ())
        for number in range(1, _signal.NSIG):
            try:
                if callable(_signal.getsignal(number)):
                    _signal.signal(number, _signal.SIG_DFL)
            except (OSError, ValueError):
                continue
        _signal.signal(_signal.SIGALRM, _signal.SIG_DFL)
        _signal.alarm(max(1, int(seconds) + 1))
        kept = {0, 1, 2, *keep}
        for fd in _open_descriptors():
            if fd not in kept:
                try:
                    os.close(fd)
                except OSError:
                    pass  # the listing's own descriptor, closed already
        try:
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write("1000")
        except OSError:
            pass
        work()
        status = 0
    finally:
        os._exit(status)


def _open_descriptors() -> list[int]:
    try:
        return [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        return list(range(3, 1024))  # no /proc: the usual soft limit's worth
