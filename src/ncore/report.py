"""Running one dump for the operator and telling how it went (several: ncore.batch).

The story goes to standard output as it happens (``attempting to attach to process 1369
... . . ok.``, a line when the dump could not go where it was asked to, then the dump's
path); errors go to standard error with their fix, and end in the error's exit code (see
ncore.errors for the table). ``--json`` prints one record on standard output instead.
``-v`` adds how the dump was taken, or how it failed, with the method's transcript (the
debugger's own output for gdb).
"""

from __future__ import annotations

import os
import sys

from . import interrupts
from .errors import NcoreError
from .session import Request, Result, take_dump


def dump(request: Request, as_json: bool = False, verbose: bool = False) -> int:
    """Take the dump ``request`` asks for, tell the story; the exit code."""
    if not as_json:
        _say(f"attempting to attach to process {request.pid} ...")

    def progress(step: str) -> None:
        if not as_json:
            _say(" .")

    with interrupts.Held():
        try:
            result = take_dump(request, progress)
        except NcoreError as e:
            return _failed(e, request.pid, as_json, verbose)
    stopped = interrupts.requested()
    if as_json:
        _print_json(result.record())
        return 0 if stopped is None else 128 + stopped
    _say(" ok.\n")
    if result.read_only is not None:
        asked = "" if request.keep_running or request.read_only else ", although a panic was asked for"
        _say(f"process {request.pid} was read from outside: {result.read_only}; it was left running{asked}\n")
    if result.fell_back_from is not None:
        where = os.path.dirname(result.path)
        _say(f"process {request.pid} could not write in {result.fell_back_from}; its dump went to {where} instead\n")
    if result.nspid is not None:
        inner = result.nspid[-1]
        _say(f"process {request.pid} is pid {inner} in its own PID namespace (a container's): the dump records both\n")
    _say(f"{result.path}\n")
    if verbose:
        details(result)
    if stopped is not None:
        _say(f"ncore: stopped by {interrupts.describe(stopped)}, once the dump under way was written\n", err=True)
        return 128 + stopped
    return 0


def _say(text: str, err: bool = False) -> None:
    out = sys.stderr if err else sys.stdout
    out.write(text)
    out.flush()


def _print_json(record: dict[str, object]) -> None:
    import json  # here: its import costs more than the rest of a dump, and the story needs none

    _say(json.dumps(record) + "\n")


def details(result: Result) -> None:
    """How the dump was taken, for ``-v``, on standard error."""
    stopped = "" if result.stopped_seconds is None else f", target stopped {result.stopped_seconds * 1000:.0f} ms"
    lines = [
        *(f"passed over {reason}" for reason in result.skipped),
        f"method {result.method}, {result.injection} call: {result.why}",
        f"pypanic: {result.pypanic}; Python {result.python}; took {result.elapsed_seconds * 1000:.0f} ms{stopped}",
        "the process exited" if result.target_exited else "the process is still running",
    ]
    _say("".join(f"{line}\n" for line in lines), err=True)
    _transcript(result.transcript)


def _transcript(lines: list[str]) -> None:
    _say("".join(f"  | {line}\n" for line in lines), err=True)


def _failed(error: NcoreError, pid: int, as_json: bool, verbose: bool) -> int:
    if as_json:
        _print_json(error.record(pid))
        return error.exit_code
    _say(" failed.\n")
    if verbose:
        _transcript(error.transcript)
    return failure(error)


def failure(error: NcoreError) -> int:
    """Tell the operator what went wrong and how to fix it, on standard error; the exit code."""
    _say(f"ncore: {error.message}\n" + (f"  fix: {error.hint}\n" if error.hint else ""), err=True)
    return error.exit_code
