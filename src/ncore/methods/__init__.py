"""The ways of making a target run code, behind one small interface, and the ``auto`` choice.

A method gets a target and an Injection (the code to run, how, and by when) and either
reports how it went (an Outcome) or raises an NcoreError. It does not wait for the dump:
the session does that, through the payload's handshake.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from .. import arch
from ..errors import MethodUnavailable
from ..target import Target

MODES = ("auto", "pending", "direct")
"""How the code is run: decided by the safety rule, or forced (for tests and experts)."""


@dataclass(frozen=True)
class Injection:
    """What to run in the target: the code, as bytes and as a file the method may read."""

    code: bytes
    code_file: str
    mode: str
    deadline: float
    """time.monotonic() by which the method must have let go of the target."""


@dataclass
class Outcome:
    """How an injection went, for the result line and ``--json``."""

    method: str
    path: str
    """``pending`` (queued for the interpreter's next safe point) or ``direct``."""
    why: str
    stopped_seconds: float | None = None
    transcript: list[str] = field(default_factory=list)
    """The method's raw output, shown with ``-v``."""


class Method(Protocol):
    name: str

    def unavailable(self, target: Target) -> str | None:
        """Why this method cannot serve ``target`` here (and what to do), or None."""

    def inject(self, target: Target, injection: Injection) -> Outcome:
        """Make the target run the code; raise an NcoreError when that fails."""


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


def choose(name: str, target: Target, candidates: list[Method]) -> Method:
    """The method called ``name``, or for ``auto`` the first one that can serve the target."""
    wanted = [m for m in candidates if name in ("auto", m.name)]
    reasons = []
    for method in wanted:
        why = method.unavailable(target)
        if why is None:
            return method
        reasons.append(f"{method.name}: {why}")
    known = ", ".join(m.name for m in candidates)
    if not wanted:
        raise MethodUnavailable(f"there is no method {name!r}", f"choose one of: auto, {known}")
    raise MethodUnavailable(
        f"no injection method can serve process {target.pid}: " + "; ".join(reasons),
        "fix one of the reasons above, or pick another method with --method (" + known + ")",
    )
