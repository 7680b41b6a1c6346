"""The ways of making a target run code, behind one small interface, and the ``auto`` choice.

A method gets a target and an Injection (the code to run, how, and by when) and either
reports how it went (an Outcome) or raises an NcoreError. It does not wait for the dump:
the session does that, through the payload's handshake. Each method lives in the module
of its name and is imported only when it is tried: ``ncore PID`` on its usual path loads
the ptrace method alone (the gdb method's imports cost more than a whole dump).
"""

from __future__ import annotations

import os

from .. import arch
from ..errors import MethodUnavailable

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Protocol

    from ..target import Target

    class Method(Protocol):
        name: str

        def unavailable_here(self) -> str | None:
            """Why this method cannot work on this machine at all (and what to do), or None."""

        def unavailable(self, target: Target) -> str | None:
            """Why this method cannot serve ``target`` here (and what to do), or None."""

        def inject(self, target: Target, injection: Injection) -> Outcome:
            """Make the target run the code; raise an NcoreError when that fails."""


NAMES = ("remote-exec", "ptrace", "gdb")
"""Every method, in the order ``auto`` tries them."""
MODES = ("auto", "pending", "direct")
"""How the code is run: decided by the safety rule, or forced (for tests and experts)."""


class Injection:
    """What to run in the target: the code, as bytes and as a file the method may read, and
    the session's side of a method that waits with the dump (a direct call)."""

    def __init__(
        self,
        code: bytes,
        code_file: str,
        mode: str,
        deadline: float,
        script: str = "",
        page: bytes = b"",
        pending_at: int = 0,
        running_lock: str | None = None,
        page_file: str = "",
    ) -> None:
        self.code = code
        self.code_file = code_file
        """The code's file, as ncore sees it."""
        self.page = page or code + b"\0"
        """What goes into the page mapped in the target: the code, NUL-ended, then at
        ``pending_at`` (when not 0) the function a pending call runs (see ``page_image``)."""
        self.pending_at = pending_at
        self.page_file = page_file
        """A file holding ``page``, as ncore sees it (in the private directory)."""
        self.running_lock = running_lock
        """The process's running lock, as ncore sees it: locked while a pending call of
        ncore's runs there (a method checks it before queueing another)."""
        self.mode = mode
        self.deadline = deadline
        """time.monotonic() by which the method must have set the call up."""
        self.script = script
        """The code's file, as the target sees it."""
        self.answered: Callable[[], bool] = lambda: False
        """Whether the payload has answered (its dump is written, or failed) or handed the
        dump to a forked writer: either way it no longer needs the thread."""
        self.wanted: Callable[[], bool] = lambda: True
        """Whether the session still waits for the dump (it gave up, or withdrew the request)."""
        self.acknowledge: Callable[[], None] = lambda: None
        """Let the payload return: it waits for this after answering."""
        self.acknowledged_by_method = False
        """Set by a method that acknowledges itself (it must catch the thread on its way back)."""


class Outcome:
    """How an injection went, for the result line and ``--json``."""

    def __init__(
        self,
        method: str,
        path: str,
        why: str,
        stopped_seconds: float | None = None,
        transcript: list[str] | None = None,
    ) -> None:
        self.method = method
        self.path = path
        """``pending`` (queued for the interpreter's next safe point) or ``direct``."""
        self.why = why
        self.stopped_seconds = stopped_seconds
        self.transcript = transcript or []
        """The method's raw output, shown with ``-v``."""


def explain(direct: bool, mode: str, syscall: int, gil_waiter: bool) -> str:
    """Why the code runs the way it does: the safety rule's reading of the main thread."""
    where = "running" if syscall < 0 else f"blocked in {arch.syscall_name(syscall)}"
    if mode != "auto":
        return f"--mode {mode} asked for a {'direct' if direct else 'pending'} call; the main thread was {where}"
    if direct:
        return f"the main thread was {where} with the GIL released, so a pending call would never run"
    if gil_waiter:
        return "the main thread was waiting for the GIL; it runs the pending call once it has it"
    if syscall < 0:
        return (
            "the main thread was running (Python code, or a C call holding the GIL); it runs the pending call "
            "at its next safe point"
        )
    return f"the main thread was {where} holding the GIL; it runs the pending call when that call returns"


def page_image(code: bytes, target: Target, running_lock: str) -> tuple[bytes, int]:
    """The page a method maps in the target: ``code`` NUL-ended, then (on x86_64) the
    function the pending call runs, which holds ``running_lock`` (a path as the target
    sees it) while the code runs; and where that function starts (0: none, the pending
    call runs PyRun_SimpleString itself)."""
    head = code + b"\0"
    if arch.machine() != "x86_64" or "PyRun_SimpleString" not in target.functions:
        return head, 0
    from .frame import pending_call

    at = (len(head) + 15) & -16
    trampoline = pending_call(os.fsencode(running_lock), target.functions["PyRun_SimpleString"])
    return head + bytes(at - len(head)) + trampoline, at


NEWEST_ONLY = {"remote-exec": (3, 14)}
"""Methods for targets of this CPython or later: an older target passes them over without
their module being imported (remote exec's import alone costs a tenth of a dump)."""


def unavailable(name: str, target: Target, make: Callable[[str], Method]) -> tuple[Method | None, str | None]:
    """The method called ``name`` (None when the target is too old for it, before it is
    built) and why it cannot serve ``target``, or None when it can."""
    oldest = NEWEST_ONLY.get(name)
    if oldest is not None and (target.version is None or target.version < oldest):
        needs = f"CPython {oldest[0]}.{oldest[1]}"
        return None, f"needs {needs} or later; process {target.pid} runs {target.version_text}"
    method = make(name)
    return method, method.unavailable(target)


def choose(name: str, target: Target, make: Callable[[str], Method]) -> tuple[Method, list[str]]:
    """The method called ``name``, or for ``auto`` the first one that can serve the target,
    with why each method before it could not; ``make`` builds a method from its name."""
    wanted = [n for n in NAMES if name in ("auto", n)]
    reasons: list[str] = []
    for candidate in wanted:
        method, why = unavailable(candidate, target, make)
        if method is not None and why is None:
            return method, reasons
        reasons.append(f"{candidate}: {why}")
    known = ", ".join(NAMES)
    if not wanted:
        raise MethodUnavailable(f"there is no method {name!r}", f"choose one of: auto, {known}")
    raise MethodUnavailable(
        f"no injection method can serve process {target.pid}: " + "; ".join(reasons),
        "fix one of the reasons above, or pick another method with --method (" + known + ")",
    )


def still_queued(pid: int, method: str, script: str) -> bool:
    """Whether process ``pid`` may still open ``script`` (a path as it sees it) for a request
    ``method`` sent: only a remote exec request reads its code from a file when it runs."""
    if method != "remote-exec":
        return False
    from .remote_exec import still_pending

    return still_pending(pid, script)


def forget(pid: int, method: str, script: str) -> bool:
    """Make sure process ``pid`` will not open ``script`` for a request it has not taken;
    True when it will not (the directory holding the script may then go)."""
    if method != "remote-exec":
        return True
    from .remote_exec import withdraw

    return withdraw(pid, script)
