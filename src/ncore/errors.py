"""The ways ncore can fail, each an exception type with its exit code and a hint.

Only the CLI prints them. Every message says what happened and why; the hint says how to
fix it. Exit codes (documented in the README):

    0  the dump was written          6  no injection method can serve this target
    1  unexpected failure            7  timed out; the target was left running
    2  usage error (bad option)      8  another debugger, or another ncore, is at the target
    3  no such process               9  the target could not write the dump
    4  not a live CPython process   10  the target exited without writing a dump
    5  permission denied            11  ncore show: the file is not a readable dump
                                   12  ncore show: a key asked for is not in the dump
  128+N  stopped by signal N (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP): the target was left as
         it was, or the dump it had started was finished first

A pid that cannot name a process (zero or negative, or the id of a thread rather than of
its process) is a usage error, 2: the operator must give another number. A process
stopped by a signal (SIGSTOP, Ctrl-Z) is 4, not live: it cannot run the dump until it is
continued, and the hint says how.
"""

from __future__ import annotations


class NcoreError(Exception):
    """A failure to report to the operator: message, hint and exit code."""

    exit_code = 1
    kind = "error"

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.transcript: list[str] = []
        """What the method did and its debugger said before the failure, shown with ``-v``."""

    def record(self, pid: int | None) -> dict[str, object]:
        """The failure as ``--json`` prints it, for process ``pid`` (None: no one process)."""
        return {"status": self.kind, "pid": pid, "error": self.message, "hint": self.hint,
                "exit_code": self.exit_code, "transcript": self.transcript}  # fmt: skip


class BadUsage(NcoreError):
    exit_code = 2
    kind = "usage"


class NoSuchProcess(NcoreError):
    exit_code = 3
    kind = "no-such-process"


class NotPython(NcoreError):
    exit_code = 4
    kind = "not-python"


class Stopped(NcoreError):
    exit_code = 4
    kind = "stopped"


class PermissionDenied(NcoreError):
    exit_code = 5
    kind = "permission-denied"


class MethodUnavailable(NcoreError):
    exit_code = 6
    kind = "method-unavailable"


class TimedOut(NcoreError):
    exit_code = 7
    kind = "timed-out"


class AlreadyTraced(NcoreError):
    exit_code = 8
    kind = "already-traced"


class Interrupted(NcoreError):
    """ncore was asked to stop by a signal (ncore.interrupts); its exit code is 128 + the signal."""

    kind = "interrupted"

    def __init__(self, message: str, signal_number: int, hint: str = "") -> None:
        super().__init__(message, hint)
        self.exit_code = 128 + signal_number


class Busy(AlreadyTraced):
    """A pending call of ncore's runs in the target now: another may be queued only after it
    (a session waits and tries again until its time is up)."""


class DumpFailed(NcoreError):
    exit_code = 9
    kind = "dump-failed"


class TargetExited(NcoreError):
    exit_code = 10
    kind = "target-exited"


class NotADump(NcoreError):
    exit_code = 11
    kind = "not-a-dump"


class NoSuchKey(NcoreError):
    exit_code = 12
    kind = "no-such-key"
