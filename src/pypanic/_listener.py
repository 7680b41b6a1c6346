"""A dump on a signal, when asked for (the setting ``signal``, ``PYPANIC_SIGNAL``): for
processes that nothing may trace (Yama's ptrace_scope 1, a container without
CAP_SYS_PTRACE), where ncore can still send a signal and open the process's files.

The handler runs in the main thread between two bytecodes, as any Python signal handler:
a main thread blocked in a system call is interrupted and the call resumes afterwards
(PEP 475); a C call that holds the GIL delays it until it returns. It takes the request
ncore left in pypanic's mark (pypanic._beacon): a snapshot or a panic, the message and
the directory; a bare ``kill -SIG PID`` takes a snapshot. Only data crosses: no code
ncore sends ever runs here. The answer (the dump's path, or why it failed) goes back into
the mark, where ncore reads it.

Signals a server already uses are refused by the setting (see the README's table), and
a handler that cannot be installed (not the main thread, a signal the application already
handles) becomes a line in ``dbg.warnings`` and on stderr, never an exception.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # the C module: `signal` would import enum (5 ms)
import json
import os
import time

from . import _background, _beacon
from ._log import StderrLog
from ._registry import shared

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ._beacon import Beacon

ALLOWED = ("SIGUSR1", "SIGUSR2", "SIGQUIT", "SIGPWR", "SIGWINCH")
"""Signals pypanic may listen on, besides SIGRTMIN to SIGRTMAX (the safest: no server uses them)."""
SNAPSHOT_MESSAGE = "dump initiated by signal {name}"
_ACK_POLL = 0.001


def parse(text: str | int) -> int:
    """The number of signal ``text`` (``SIGRTMIN+3``, ``RTMIN+3``, ``SIGUSR2``, ``USR2``,
    ``34``); ValueError for one pypanic does not listen on."""
    if isinstance(text, int) and not isinstance(text, bool):
        number = text
    else:
        name = str(text).strip().upper()
        name = name if name.startswith("SIG") or name.isdigit() else f"SIG{name}"
        if name.isdigit():
            number = int(name)
        elif name.startswith("SIGRTMIN") or name.startswith("SIGRTMAX"):
            base, _, offset = name.partition("+") if "+" in name else name.partition("-")
            if base not in ("SIGRTMIN", "SIGRTMAX") or (offset and not offset.isdigit()):
                raise ValueError(f"{text!r} is not a signal name (SIGRTMIN+3, SIGUSR2, or a number)")
            shift = int(offset or 0) * (-1 if "-" in name else 1)
            number = getattr(_signal, base) + shift
        elif name in ALLOWED:
            number = getattr(_signal, name)
        else:
            raise ValueError(
                f"pypanic does not listen on {text!r}: choose SIGRTMIN to SIGRTMAX (SIGRTMIN+3, say) or one of "
                f"{', '.join(ALLOWED)}"
            )
    realtime = _signal.SIGRTMIN <= number <= _signal.SIGRTMAX
    if not realtime and number not in [getattr(_signal, n) for n in ALLOWED]:
        raise ValueError(f"pypanic does not listen on signal {number}: choose one of SIGRTMIN..SIGRTMAX or {ALLOWED}")
    return number


def name_of(number: int) -> str:
    """``SIGRTMIN+3``, ``SIGUSR2``..."""
    if _signal.SIGRTMIN <= number <= _signal.SIGRTMAX:
        return "SIGRTMIN" if number == _signal.SIGRTMIN else f"SIGRTMIN+{number - _signal.SIGRTMIN}"
    return next((n for n in ALLOWED if getattr(_signal, n) == number), f"signal {number}")


def listen(number: int, version: str) -> str | None:
    """Install the handler for ``number`` and mark the process as listening; why it could
    not be done (also logged on stderr and kept for ``dbg.warnings``), or None."""
    registry = shared()
    try:
        before = _signal.getsignal(number)
        if before not in (_signal.SIG_DFL, _signal.SIG_IGN, None, _on_signal):
            why = f"not listening on {name_of(number)}: the application already handles it"
        else:
            _signal.signal(number, _on_signal)
            why = None
    except ValueError as e:  # signal only works in main thread of the main interpreter
        why = f"not listening on {name_of(number)}: {e}"
    if why is not None:
        registry.notes.append(why)
        StderrLog()("WARN", f"pypanic: {why}")
        return why
    global _listening
    _relight((number, name_of(number)), version)
    if _listening is None:
        os.register_at_fork(after_in_child=_relight_in_child)
    _listening = (number, version)
    return None


_listening: tuple[int, str] | None = None
"""The signal listened on and pypanic's version, for a forked child's own mark."""


def _relight(signal: tuple[int, str] | None, version: str) -> None:
    registry = shared()
    old: Beacon | None = registry.beacon  # type: ignore[assignment]
    beacon = _beacon.light(version, signal)
    if beacon is None:
        return
    registry.beacon = beacon
    if old is not None:
        old.page.close()
        if old.fd is not None:
            os.close(old.fd)


def _relight_in_child() -> None:
    # The inherited page is the parent's (a shared mapping) and flock cannot tell a parent
    # from its child (they share the open file): requests to either would meet in it. A
    # snapshot's writer answers in the parent's page.
    if _listening is not None and not _background.forking and getattr(shared().beacon, "fd", None) is not None:
        number, version = _listening
        _relight((number, name_of(number)), version)


def verify() -> str | None:
    """Check that the handler is still pypanic's: a server started since may have taken the
    signal. When it has, the mark stops naming it (ncore would wait in vain) and why is
    returned, logged and kept for ``dbg.warnings``; None when nothing changed."""
    global _listening
    if _listening is None or _signal.getsignal(_listening[0]) is _on_signal:
        return None
    number, version = _listening
    _listening = None
    why = f"stopped listening on {name_of(number)}: the application installed its own handler for it"
    shared().notes.append(why)
    StderrLog()("WARN", f"pypanic: {why}")
    _relight(None, version)
    return why


def _on_signal(number: int, frame: Any) -> None:
    beacon: Beacon | None = shared().beacon  # type: ignore[assignment]
    if beacon is None or beacon.fd is None:
        return
    try:
        request = _claim(beacon)
    except Exception:
        return
    if request is None:
        return
    _serve(beacon, request, number)


def _claim(beacon: Beacon) -> dict[str, Any] | None:
    """The request ncore left, now claimed; a bare signal's snapshot when there is none;
    None when ncore withdrew it."""
    import fcntl

    assert beacon.fd is not None
    page = beacon.page
    fcntl.flock(beacon.fd, fcntl.LOCK_EX)
    try:
        state = page[_beacon.REQUEST_AT]
        if state == _beacon.WITHDRAWN:
            page[_beacon.REQUEST_AT] = _beacon.EMPTY
            return None
        if state != _beacon.ASKED:
            return {}
        text = page[_beacon.REQUEST_AT + 8 : _beacon.ANSWER_AT].split(b"\0", 1)[0]
        page[_beacon.REQUEST_AT] = _beacon.TAKEN
        page[_beacon.WRITER_AT : _beacon.WRITER_AT + _beacon.WRITER_BYTES] = bytes(_beacon.WRITER_BYTES)
    finally:
        fcntl.flock(beacon.fd, fcntl.LOCK_UN)
    request: dict[str, Any] = json.loads(text)
    if time.time() > float(request.get("expires", float("inf"))):
        return {}  # left by an ncore that died before it could withdraw it: a bare signal's snapshot
    return request


def _answer(beacon: Beacon, answer: dict[str, Any]) -> None:
    data = json.dumps(answer).encode()[: _beacon.ACK_AT - _beacon.ANSWER_AT - 1] + b"\0"
    beacon.page[_beacon.ANSWER_AT : _beacon.ANSWER_AT + len(data)] = data


def _serve(beacon: Beacon, request: dict[str, Any], number: int) -> None:
    """Take the dump asked for and answer; never raises."""
    from . import _panic

    ident = request.get("id")
    hold = float(request.get("hold_seconds", 0))

    served_by = os.getpid()

    def report(path: str | None, error: str | None) -> None:
        writer = os.getpid() if os.getpid() != served_by else None
        _answer(beacon, {"id": ident, "state": "done", "path": path, "error": error, "writer": writer})
        deadline = time.monotonic() + hold
        while ident is not None and time.monotonic() < deadline and beacon.page[_beacon.ACK_AT] == 0:
            time.sleep(_ACK_POLL)
        beacon.page[_beacon.REQUEST_AT] = _beacon.EMPTY  # a forked writer's call frees the mark

    writer = None
    try:
        beacon.page[_beacon.ACK_AT] = 0
        _answer(beacon, {"id": ident, "state": "started", "seconds": _panic.time_budget()})
        message = str(request.get("message") or SNAPSHOT_MESSAGE.format(name=name_of(number)))
        pids = request.get("pids") if isinstance(request.get("pids"), list) else None
        directory = request.get("directory")
        if request.get("keep_running") is False:
            _panic.panic(message, None, directory=directory, report=report, pids=pids)
        elif request.get("in_place") or ident is None:  # a bare signal's snapshot is written in place
            _panic.dump(message, None, directory=directory, report=report, pids=pids)
        else:
            assert beacon.fd is not None
            writer = _panic.dump_in_background(message, directory=directory, report=report, pids=pids,
                                               keep=(beacon.fd,))  # fmt: skip
            if writer:
                beacon.page[_beacon.WRITER_AT : _beacon.WRITER_AT + _beacon.WRITER_BYTES] = (
                    str(writer).encode().ljust(_beacon.WRITER_BYTES, b"\0")
                )
    except BaseException as e:  # a handler's exception would surface in whatever code was interrupted
        _answer(beacon, {"id": ident, "state": "done", "path": None, "error": f"{type(e).__name__}: {e}"})
    finally:
        if writer is None:
            beacon.page[_beacon.REQUEST_AT] = _beacon.EMPTY


def from_environment(version: str) -> None:
    """At the first import: listen on ``$PYPANIC_SIGNAL``, if it is set (a bad value is a warning)."""
    text = os.environ.get("PYPANIC_SIGNAL", "").strip()
    if not text:
        return
    try:
        number = parse(text)
    except ValueError as e:
        why = f"ignored PYPANIC_SIGNAL={text!r}: {e}"
        shared().notes.append(why)
        StderrLog()("WARN", f"pypanic: {why}")
        return
    listen(number, version)
