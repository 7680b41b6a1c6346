"""A dump of a live process read from outside, without running any code in it.

``ncore --read-only PID`` asks for one; ncore also takes one when the injected dump has
not started by ``--timeout`` (a main thread stuck in C code that holds the GIL never
reaches a safe point), unless ``--no-fallback``. pystack stops the process for the read
only (ncore.stacks), /proc gives the rest (ncore.procfacts), and ncore writes the file
itself (ncore.outside), where the process's own dump would have gone: ``--output-dir``,
else its working directory, else its ``$PYPANIC_DIR``, else /tmp, each only if the
process could write there, the file given to the process's user. The process always
keeps running: a read-only dump never ends it, even when a panic was asked for.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from . import outside, procfacts, stacks
from .methods import Outcome
from .session import Request, Result
from .target import Target

if TYPE_CHECKING:
    from collections.abc import Callable

ASKED = "--read-only was asked for"


def dump(request: Request, target: Target, started: float, why: str, skipped: list[str] | None = None) -> Result:
    """Read process ``target`` from outside and write its dump; ``why`` says why it was
    read from outside (``ASKED``, or why the injected dump never started)."""
    reading = stacks.read_process(target.pid, request.native, lambda name: stacks.read_source(target.host_path(name)))
    where = main_thread_at(reading)
    if where is not None:
        why = f"{why}; {where}"
    process = procfacts.read(target)
    if process.cwd is not None:
        process.cwd = target.inside_path(process.cwd) or process.cwd
    main = reading.threads[0] if reading.threads and reading.threads[0]["main"] else None
    headline = "READ FROM OUTSIDE: no exception; the main thread's stack"
    exception = {"$unavailable": "no exception: the process was read from outside while it ran"}
    entries = outside.entries(
        process,
        reading,
        "live process",
        f"read from outside by ncore: {why}; the process was left running",
        outside.traceback_text(headline, main),
        exception,
    )
    owner = process.uid_gid if os.geteuid() == 0 else None
    path, passed_over = outside.write(entries, target.pid, _candidates(request, target, process.env or {}), owner)
    outcome = Outcome("read-only", "none", why, stopped_seconds=reading.seconds)
    result = Result(target, path, outcome, skipped or [], "none", False, started)
    result.read_only = why
    if passed_over and request.output_dir is not None:
        result.fell_back_from = request.output_dir
    result.passed_over = passed_over
    return result


def main_thread_at(reading: stacks.Reading) -> str | None:
    """Where the main thread was, as ``the main thread holds the GIL in match (re/__init__.py:167)``."""
    main = next((t for t in reading.threads if t["main"]), None)
    if main is None:
        return None
    frames = [f for f in main["frames"] if "$cut" not in f]
    holds = "holds the GIL" if main["holds_gil"] else "does not hold the GIL"
    if not frames:
        return f"the main thread {holds} and runs no Python code"
    inner = frames[-1]
    place = "/".join(str(inner["file"]).split("/")[-2:])
    return f"the main thread {holds} in {inner['function']} ({place}:{inner['line']})"


def _candidates(request: Request, target: Target, env: dict[str, str]) -> list[tuple[str, Callable[[], str | None]]]:
    """Where the process's own dump would go, as ncore sees each directory, each taken only
    if the process could write there (or, for --output-dir and /tmp, ncore can)."""

    def theirs(inside: str | None) -> Callable[[], str | None]:
        def find() -> str | None:
            if not inside:
                return None
            host = target.host_path(inside)
            why = target.cannot_write(host)
            if why is not None:
                raise PermissionError(13, why)
            return host

        return find

    cwd = _cwd(target)
    candidates: list[tuple[str, Callable[[], str | None]]] = []
    if request.output_dir is not None:
        candidates.append((request.output_dir, outside.directory(request.output_dir)))
    candidates += [
        ("the process's working directory", theirs(cwd)),
        ("its $PYPANIC_DIR", theirs(env.get("PYPANIC_DIR"))),
        ("/tmp", outside.directory("/tmp")),
    ]
    return candidates


def _cwd(target: Target) -> str | None:
    """The process's working directory as it sees it."""
    if target.cwd is None or not target.same_mount_namespace:
        return target.cwd
    return target.inside_path(target.cwd)
