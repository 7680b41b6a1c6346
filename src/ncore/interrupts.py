"""The signals that ask ncore to stop (Ctrl-C, SIGTERM, SIGHUP), held until it can stop cleanly.

While dumps are taken these signals only note that ncore should stop. A session looks at
the note where stopping leaves its target as it was: before touching it, between two steps
of a method, and while it waits for the dump (a request the target has not started is
withdrawn; a dump under way is waited for). ncore then exits with 128 plus the signal's
number (130 for Ctrl-C). A second such signal quits at once, as SIGKILL would: no method
leaves a target needing ncore to get back (see each method's docstring), so that is safe,
and a private directory left behind is removed by the next ncore.

Ctrl-Z (SIGTSTP) is held too: ncore suspends itself only once the dump is done, since a
suspended ncore would keep the target stopped if it held it at that moment. SIGSTOP
cannot be held: sent to ncore during the milliseconds it holds the target stopped, it
stops both until SIGCONT.

``_signal`` is used rather than ``signal``, whose import of enum costs more than the rest
of ncore's start.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal as _signal
    from typing import Any
else:
    import _signal

HELD: tuple[int, ...] = (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP)
NAMES: dict[int, str] = {_signal.SIGINT: "SIGINT (Ctrl-C)", _signal.SIGTERM: "SIGTERM", _signal.SIGHUP: "SIGHUP"}

_noted: list[int] = []
_suspend: list[int] = []
_holding: list[Held] = []


def _note(number: int, frame: object) -> None:
    if _noted:
        os._exit(128 + _noted[0])
    _noted.append(number)


def _note_suspend(number: int, frame: object) -> None:
    _suspend[:] = [number]


class Held:
    """A context that holds HELD signals and Ctrl-Z (in the main thread; elsewhere, or
    inside another Held, it does nothing). Leaving it acts on a Ctrl-Z held meanwhile."""

    def __init__(self) -> None:
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> Held:
        if _holding:
            return self
        try:
            for number in HELD:
                self.previous[number] = _signal.signal(number, _note)
            self.previous[_signal.SIGTSTP] = _signal.signal(_signal.SIGTSTP, _note_suspend)
        except ValueError:  # not the main thread: signals are not ours to handle
            self.__exit__()
            return self
        _holding.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        for number, handler in self.previous.items():
            _signal.signal(number, handler)
        self.previous.clear()
        if self in _holding:
            _holding.remove(self)
            if _suspend:
                os.kill(os.getpid(), _suspend.pop())


def requested() -> int | None:
    """The signal that asked ncore to stop, or None."""
    return _noted[0] if _noted else None


def describe(number: int) -> str:
    return NAMES.get(number, f"signal {number}")
