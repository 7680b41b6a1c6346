"""Dumps ncore writes itself from what it read outside the process: a live process read
without running any code in it (``--read-only``, and the fallback when the injected dump
never started), or a core file (``ncore core``).

Such a dump has pypanic's keys in pypanic's order (pypanic._dump.layout) and is written by
pypanic's own writer: the same atomic 0600 file, ``ncore.<pid>``, given to the process's
user. What cannot be read from outside is still there, as ``{"$unavailable": why}``, and
``dbg.outside`` says how the dump was read and lists those keys.
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import TYPE_CHECKING, Any

from pypanic import __version__ as PYPANIC_VERSION
from pypanic import _dump, _facts, _tasks
from pypanic._config import SECRET_WORDS
from pypanic._stacks import REDACTED

if TYPE_CHECKING:
    from collections.abc import Callable

    from .stacks import Reading

NO_REGISTRY = "a dump read from outside cannot see what the process registered with panicDbg"
NO_CODE = "no code ran in the process, so nothing that only the interpreter itself can tell was asked"
_OFF = {"0", "false", "no", "off"}


class Process:
    """The facts about a process that ncore read, with the keys they fill."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.pids: list[int] = [pid]
        """Its pid in each PID namespace from ncore's down to its own (the kernel's NSpid)."""
        self.argv: list[str] | None = None
        self.cwd: str | None = None
        self.env: dict[str, str] | None = None
        self.version: str | None = None
        self.started: float | None = None
        """When the process started, in seconds since the epoch."""
        self.memusage: dict[str, Any] | None = None
        self.python: dict[str, Any] = {}
        self.process: dict[str, Any] = {}
        self.resources: dict[str, Any] | None = None
        self.uid_gid: tuple[int, int] | None = None


def is_secret_for(env: dict[str, str] | None) -> Callable[[str], bool] | None:
    """The process's own redaction rule, as far as its environment says (None: redact nothing)."""
    if env is not None and env.get("PYPANIC_REDACT", "").strip().lower() in _OFF:
        return None
    return _facts.secret_matcher(SECRET_WORDS)


def entries(
    process: Process,
    reading: Reading,
    source: str,
    reason: str,
    error: str,
    exception: Any,
    now: float | None = None,
) -> list[tuple[str, str]]:
    """The dump's entries, in pypanic's order. ``source`` says what was read (``live
    process``, ``core file``), ``reason`` and ``error`` fill ``panic.reason`` and
    ``panic.error``, ``exception`` is ``panic.exception``."""
    now = time.time() if now is None else now
    is_secret = is_secret_for(process.env)
    unknown = {"$unavailable": "not readable from outside"}

    def known(value: Any) -> Any:
        return unknown if value is None else value

    threads = _redacted(reading.threads, is_secret)
    own: dict[str, Any] = {
        "dbg.format-version": _dump.FORMAT_VERSION,
        "init.process.argv": known(process.argv),
        "init.process.pid": process.pids[-1],
        "init.process.cwd": known(process.cwd),
        "init.process.env": known(None if process.env is None else _facts.redacted_environment(process.env, is_secret)),
        "init.process.version": known(process.version or reading.version or None),
        "init.process.platform": "linux",
        "init.time": known(None if process.started is None else _facts.iso_time(process.started)),
        "init.time-ms": known(None if process.started is None else _facts.epoch_ms(process.started)),
        "panic.error": error,
        "panic.time": _facts.iso_time(now),
        "panic.time-ms": _facts.epoch_ms(now),
        "panic.memusage": known(process.memusage),
        "panic.reason": reason,
        "panic.exception": exception,
        "panic.threads": threads,
        "panic.python": {**process.python, "gil_holder": reading.gil_holder},
        "panic.process": process.process,
        "panic.resources": known(process.resources),
        "panic.gc": {"$unavailable": NO_CODE},
        "dbg.pypanic-version": PYPANIC_VERSION,
        "dbg.warnings": [],
    }
    if len(process.pids) > 1:
        own["init.process.nspid"] = process.pids
    loops = loops_seen(threads)
    if loops:
        own["panic.asyncio"] = {"loops": loops}
    missing = sorted(key for key, value in own.items() if isinstance(value, dict) and "$unavailable" in value)
    own["dbg.outside"] = {
        "source": source,
        "reader": f"pystack {_pystack_version()}",
        "read_seconds": round(reading.seconds, 6),
        "values": "local variables are their reprs, read from memory: literals as values, the rest as $repr",
        "unavailable": {"registered state": NO_REGISTRY, **{key: own[key]["$unavailable"] for key in missing}},
    }
    own["dbg.cuts"] = {"count": 0, "first": []}
    texts = {key: json.dumps(value, ensure_ascii=False, allow_nan=False) for key, value in own.items()}
    return _dump.layout(texts, [])


NO_TASKS = (
    "a suspended task is on no thread's stack, so a read from outside cannot see it; a dump the process "
    "takes itself (ncore without --read-only) has every task"
)


def loops_seen(threads: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``panic.asyncio``'s loops as far as the threads' stacks show them: which thread runs
    one, and the callback it is in (asyncio's ``Handle._run``, with where the thread is
    now); the tasks are unavailable."""
    loops = []
    for thread in threads:
        frames = thread.get("frames") or []
        loop_functions = (*_tasks.LOOP_FUNCTIONS, _tasks.RUNNER_FUNCTION)
        runs = [f for f in frames if f.get("function") in loop_functions and "asyncio" in str(f.get("file"))]
        if not runs:
            continue
        handles = [
            f
            for f in frames
            if f.get("function") in _tasks.HANDLE_FUNCTIONS and str(f.get("file")).endswith("events.py")
        ]
        loop: dict[str, Any] = {
            "id": None,
            "type": next(
                (
                    (f.get("locals") or {}).get("self")
                    for f in reversed(runs)
                    if f.get("function") in _tasks.LOOP_FUNCTIONS
                ),
                None,
            ),
            "thread": {"name": thread.get("name"), "ident": None, "native_id": thread.get("native_id")},
            "running": True,
            "closed": False,
            "running_callback": None,
            "current_task": None,
            "task_count": {"$unavailable": NO_TASKS},
            "tasks": {"$unavailable": NO_TASKS},
        }
        if handles:
            inner = frames[-1]
            loop["running_callback"] = {
                "handle": (handles[-1].get("locals") or {}).get("self"),
                "now_in": {"file": inner.get("file"), "line": inner.get("line"), "function": inner.get("function")},
            }
        loops.append(loop)
    return loops


def _redacted(threads: list[dict[str, Any]], is_secret: Callable[[str], bool] | None) -> list[dict[str, Any]]:
    if is_secret is None:
        return threads
    for thread in threads:
        for frame in thread["frames"]:
            local = frame.get("locals")
            if local:
                frame["locals"] = {name: REDACTED if is_secret(name) else value for name, value in local.items()}
    return threads


def _pystack_version() -> str:
    from pystack import __version__

    return str(__version__)


def traceback_text(headline: str, thread: dict[str, Any] | None) -> str:
    """``panic.error`` for a dump read from outside: a headline, then the thread's stack as
    Python prints a traceback."""
    if thread is None or not thread["frames"]:
        return headline
    lines = [headline, "Traceback (most recent call last):"]
    for frame in thread["frames"]:
        if "$cut" in frame:
            lines.append(f"  [... {frame['detail']} ...]")
            continue
        lines.append(f'  File "{frame["file"]}", line {frame["line"]}, in {frame["function"]}')
        if frame.get("source"):
            lines.append(f"    {frame['source']}")
    return "\n".join(lines)


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def write(
    dump: list[tuple[str, str]],
    pid: int,
    candidates: list[tuple[str, Callable[[], str | None]]],
    owner: tuple[int, int] | None,
) -> tuple[str, str]:
    """Write with pypanic's writer into the first candidate directory that takes it: the path,
    and why the directories before it were passed over."""
    try:
        return _dump.write_anywhere(dump, candidates, pid, owner)
    except _dump.DumpFailed as e:
        from .errors import DumpFailed

        raise DumpFailed(
            f"ncore could not write the dump of process {pid}: {e}",
            "give --output-dir a directory ncore can write in",
        ) from None


def directory(path: str) -> Callable[[], str | None]:
    """A candidate that is ``path`` if it is a directory."""

    def find() -> str | None:
        if not os.path.isdir(path):
            raise NotADirectoryError(20, "not a directory")
        return path

    return find
