"""The signal method: a dump of a process that listens for a dump signal (pypanic's
setting ``signal``, ``PYPANIC_SIGNAL``), with nothing but what a process of the same user
may do where nothing may be traced: open the process's files through /proc/PID/fd and
send it a signal.

ncore writes its request (snapshot or panic, message, directory) into pypanic's mark,
which the process keeps open for that (pypanic._beacon has the layout), sends the
signal, and reads the answer from the mark: the dump's start with its time budget, then
its path or why it failed; then it acknowledges. Only data crosses, never code. A request
the handler has not claimed when ncore stops waiting (the time limit, Ctrl-C) is
withdrawn under the mark's flock: the handler, when it runs, then does nothing.
"""

from __future__ import annotations

import fcntl
import json
import os
import time

from . import interrupts
from .errors import BadUsage, Busy, DumpFailed, Interrupted, MethodUnavailable, NcoreError, TargetExited, TimedOut
from .methods import Outcome
from .target import Target, listening_signal, mark_file, pypanic_mark

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .session import Request, Result

REQUEST_AT, ANSWER_AT, ACK_AT, WRITER_AT, WRITER_BYTES = 1024, 2048, 3072, 3136, 16
"""The mark's layout, as pypanic._beacon defines it."""
EMPTY, ASKED, TAKEN, WITHDRAWN = 0, 1, 2, 3
_MARGIN_SECONDS = 2.0
_POLL_SECONDS = 0.0005
_HOLD_SECONDS = 1.0
"""How long a panicking handler waits for ncore to read its answer before the process exits."""
_WAIT_SECONDS = 0.01


def listener(target: Target) -> tuple[int, str] | None:
    """The signal ``target`` listens on for a dump (number, name), if it does."""
    return listening_signal(pypanic_mark(target.pid, target.maps))


def unavailable(target: Target) -> str | None:
    """Why the signal method cannot serve ``target``, with the fix; None when it can."""
    if listener(target) is None or mark_file(target.pid) is None:
        return (
            f"process {target.pid} does not listen for a dump signal: start it with PYPANIC_SIGNAL=SIGRTMIN+3 "
            "in its environment (with pypanic imported), or call pypanic.configure(signal='SIGRTMIN+3')"
        )
    return None


def dump(request: Request, target: Target, started: float, output_dir: str | None, skipped: list[str]) -> Result:
    """Ask ``target`` for its dump by signal and wait for it; an NcoreError when it cannot.
    A snapshot whose forked writer ends without writing it is asked for again, in place."""
    why = unavailable(target)
    path = mark_file(target.pid)
    signal = listener(target)
    if why is not None or path is None or signal is None:
        raise MethodUnavailable(why or f"process {target.pid} no longer listens for a dump signal")
    try:
        return _dump(request, target, started, output_dir, skipped, path, signal, in_place=request.in_place)
    except _WriterLost as e:
        result = _dump(request, target, started, output_dir, skipped, path, signal, in_place=True)
        result.skipped.append(f"forked writer: {e}")
        return result


class _WriterLost(Exception):
    """The snapshot's forked writer ended without writing the dump."""


def _dump(
    request: Request,
    target: Target,
    started: float,
    output_dir: str | None,
    skipped: list[str],
    path: str,
    signal: tuple[int, str],
    in_place: bool,
) -> Result:
    from .session import Result, wait_for_exit

    number, name = signal
    ident = os.urandom(8).hex()
    asked = {"id": ident, "keep_running": request.keep_running, "in_place": in_place, "message": request.message,
             "directory": output_dir, "hold_seconds": 0 if request.keep_running else _HOLD_SECONDS,
             "by": os.getpid(),
             "pids": target.nspid,
             "expires": time.time() + max(started + request.timeout - time.monotonic(), 0)}  # fmt: skip
    data = json.dumps(asked).encode()
    if len(data) > ANSWER_AT - REQUEST_AT - 9:
        raise BadUsage(
            f"the request is {len(data)} bytes, more than the signal method carries ({ANSWER_AT - REQUEST_AT - 9})",
            "give a shorter --message or --output-dir",
        )
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except PermissionError:
        raise NcoreError(
            f"not allowed to open process {target.pid}'s pypanic mark ({path})",
            f"run ncore as the process's user (uid {target.uid}) or as root",
        ) from None
    posted = False
    try:
        _post(fd, data, target, started + request.timeout)
        posted = True
        os.kill(target.pid, number)
        answer = _wait(fd, target, request, started, ident, name)
    finally:
        if posted:  # read, or given up on: the next ncore need not wait for this one
            os.pwrite(fd, b"\1", ACK_AT)
        os.close(fd)
    if answer.get("error") or not answer.get("path"):
        raise DumpFailed(
            f"process {target.pid} could not write its dump: {answer.get('error')}",
            "check that the target's working directory (or --output-dir) is writable and has room",
        )
    exited = False if request.keep_running else wait_for_exit(target, time.monotonic() + 2)
    how = (
        f"pypanic in the process listens on {name}; its handler runs in the main thread at the next bytecode "
        "(a blocked system call is interrupted and resumes afterwards)"
    )
    outcome = Outcome("signal", "handler", how, stopped_seconds=0.0)
    result = Result(target, target.host_path(str(answer["path"])), outcome, skipped, "target", exited, started)
    writer = answer.get("writer")
    result.writer = writer if isinstance(writer, int) else None
    return result


def _post(fd: int, data: bytes, target: Target, deadline: float) -> None:
    """Write the request once the mark is free, waiting (until ``deadline``) while another
    ncore's request is pending or served, or its answer not yet read: one at a time, and
    the process's main thread never waits for any ncore (a panic's aside)."""
    while True:
        with _locked(fd):
            busy = _busy(fd, bool(target.nspid))
            if busy is None:
                os.pwrite(fd, bytes(ACK_AT + 1 - ANSWER_AT), ANSWER_AT)
                os.pwrite(fd, bytes([ASKED]) + bytes(7) + data + b"\0", REQUEST_AT)
                return
        stop = interrupts.requested()
        if stop is not None:
            raise Interrupted(
                f"stopped by {interrupts.describe(stop)} while process {target.pid} {busy}; nothing was asked of it",
                stop,
            )
        if time.monotonic() > deadline:
            raise Busy(f"process {target.pid} {busy}", "try again later, or with a longer --timeout")
        time.sleep(_WAIT_SECONDS)


def _busy(fd: int, nested: bool = False) -> str | None:
    """What keeps the mark from taking a request now; None when it is free. A request or an
    answer whose ncore is gone (killed before it withdrew or read it) frees it, and so does
    a snapshot whose forked writer is gone, unless the process is ``nested`` in a PID
    namespace below ncore's, where the writer's pid means nothing here."""
    state = os.pread(fd, 1, REQUEST_AT)[0]
    if state == TAKEN:
        writer = None if nested else _writer(fd)
        if writer is not None and not _alive(writer):
            return None  # its forked writer ended without freeing the mark: killed
        return "is taking a dump it was asked for by signal"
    try:
        before: dict[str, object] = json.loads(os.pread(fd, ANSWER_AT - REQUEST_AT - 8, REQUEST_AT + 8).split(b"\0")[0])
    except ValueError:
        return None
    by = before.get("by")
    if not isinstance(by, int) or by == os.getpid() or not _alive(by):
        return None
    if state == ASKED and time.time() < float(before.get("expires", 0)):  # type: ignore[arg-type]
        return f"has a dump request of ncore (pid {by}) pending"
    if state == EMPTY and os.pread(fd, 1, ACK_AT) == b"\0" and os.pread(fd, 1, ANSWER_AT) != b"\0":
        return f"has an answer ncore (pid {by}) has not read yet"
    return None


def _writer(fd: int) -> int | None:
    """The pid of the forked writer of the snapshot under way, when there is one."""
    text = os.pread(fd, WRITER_BYTES, WRITER_AT).split(b"\0", 1)[0]
    return int(text) if text.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


class _locked:
    """The mark's flock, which the handler takes too to change the request's state."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __enter__(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)


def _read_answer(fd: int, ident: str) -> dict[str, object] | None:
    text = os.pread(fd, ACK_AT - ANSWER_AT, ANSWER_AT).split(b"\0", 1)[0]
    if not text:
        return None
    try:
        answer: dict[str, object] = json.loads(text)
    except ValueError:
        return None  # being written
    return answer if answer.get("id") == ident else None


def _wait(fd: int, target: Target, request: Request, started: float, ident: str, name: str) -> dict[str, object]:
    """The handler's final answer; withdraws the request when it is not claimed in time."""
    deadline = started + request.timeout
    claimed_at: float | None = None
    budget = 12.0
    next_check = 0.0
    while True:
        answer = _read_answer(fd, ident)
        now = time.monotonic()
        if answer is not None and answer.get("state") == "done":
            return answer
        if answer is not None and claimed_at is None:
            claimed_at, budget = now, float(answer.get("seconds") or budget)  # type: ignore[arg-type]
        if now >= next_check:
            next_check = now + 0.01
            writer = _writer(fd) if claimed_at is not None and not target.nspid else None
            if writer is not None and not _alive(writer) and _read_answer(fd, ident) == answer:
                raise _WriterLost(f"its snapshot's writer (process {writer}, a fork of it) ended without writing")
            if not target.alive():
                answer = _read_answer(fd, ident)
                if answer is not None and answer.get("state") == "done":
                    return answer
                raise TargetExited(f"process {target.pid} exited before it reported a dump (asked by {name})")
        stop = interrupts.requested()
        if claimed_at is None and (stop is not None or now > deadline):
            with _locked(fd):
                if os.pread(fd, 1, REQUEST_AT) == bytes([ASKED]):
                    os.pwrite(fd, bytes([WITHDRAWN]), REQUEST_AT)
                    raise _given_up(target, request, name, stop)
            claimed_at = now  # the handler took it just now
        if claimed_at is not None and now > max(claimed_at + budget + _MARGIN_SECONDS, deadline):
            raise TimedOut(
                f"process {target.pid} started its dump but did not finish it within its time budget ({budget:g} s "
                f"and a {_MARGIN_SECONDS:g} s margin); it was left to finish on its own",
                "a dump that needs longer needs a larger max_seconds (PYPANIC_MAX_SECONDS)",
            )
        time.sleep(_POLL_SECONDS)


def _given_up(target: Target, request: Request, name: str, stop: int | None) -> NcoreError:
    if stop is not None:
        return Interrupted(
            f"stopped by {interrupts.describe(stop)} before process {target.pid} started its dump; ncore withdrew "
            "the request: the target was left running and will not dump",
            stop,
        )
    return TimedOut(
        f"process {target.pid} did not start the dump in time: {name} was sent, but its handler did not run within "
        f"{request.timeout:g} s (the main thread runs it at its next bytecode: a C call holding the GIL delays it); "
        "ncore withdrew the request",
        "try again with a longer --timeout",
    )
