"""``panic`` and ``dump``: write a dump, log it in node-panic's form, and (for a panic) exit.

Only one thread panics: a second one waits until the process is gone. Code that runs
while a dump is being written (a hostile ``__repr__``, say) and calls ``panic`` or
``dump`` again gets an exception instead of a second dump, which the serializer turns
into a marker.
"""

from __future__ import annotations

import os
import sys
import time
from _thread import get_ident

from . import _background, _config, _dump
from ._log import StderrLog
from ._registry import Registry, shared
from ._serialize import call_guarded, describe_error, larger_than, plain_text
from ._stacks import error_text, traceback_of_caller

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import NoReturn

    Report = Callable[[str | None, str | None], None]

VERSION = "0.1.0"

NCORE_PROTOCOL = 3
"""The interface ncore's payload relies on: ``panic`` and ``dump`` take ``report`` and
``pids``, and ``time_budget`` says how long a dump may take. ``dump_in_background``, when
a pypanic has it, takes a snapshot the same way."""


IN_PLACE_ITEMS = 20_000
"""Registered state of at most this many elements is written in place even when a forked
writer is asked for: it takes a few milliseconds, less than the forks would."""


class Panic(Exception):
    """The exception a dump records when it was asked for without one (an explicit panic,
    a snapshot, ``ncore``); its traceback is the stack of the caller."""


class NestedPanic(RuntimeError):
    """``panic`` or ``dump`` was called by code running inside a dump."""


Panic.__module__ = NestedPanic.__module__ = "pypanic"


def _as_exception(message: str, err: object) -> BaseException:
    # The real type first: isinstance alone would ask any other object for its __class__.
    if issubclass(type(err), BaseException) and isinstance(err, BaseException):
        if err.__traceback__ is None:
            err.__traceback__ = traceback_of_caller(sys._getframe(1))
        return err
    if err is None:
        text = message
    else:
        ok, described = call_guarded(repr, err)
        text = f"{message}: {plain_text(described) if ok else '<' + described + '>'}"
    exc = Panic(text)
    exc.__traceback__ = traceback_of_caller(sys._getframe(1))
    return exc


def _begin(
    registry: Registry,
    settings: _config.Settings,
    label: str,
    headline: str,
    reason: str,
    exc: BaseException,
    pids: list[int] | None,
) -> _dump.Started:
    """Log a dump's first line and compute its own keys; ``headline`` goes into the log
    line (in node-panic's words), ``reason`` into ``panic.reason``."""
    error = error_text(exc)
    StderrLog()(_LEVELS[label], f"{label}: {headline}: {error}")
    return _dump.begin(registry, settings, reason, exc, error, time.time(), VERSION, pids)


def _finish(started: _dump.Started, settings: _config.Settings, label: str, directory: str | None, pid: int) -> str:
    """Write the dump of process ``pid`` (this one, or the one a writer was forked from)."""
    level, noun = _LEVELS[label], "core dump" if label == "PANIC" else "dump"
    entries = started.finish()
    path, passed_over = _dump.write_anywhere(entries, _dump.candidate_directories(settings, directory), pid)
    log = StderrLog()
    log(level, f"writing {noun} to {path}" + (f" ({passed_over})" if passed_over else ""))
    log(level, f"finished writing {noun}")
    return path


_LEVELS = {"PANIC": "CRIT", "DUMP": "INFO"}


def time_budget() -> float:
    """How long a dump started now may take, in seconds: its time limit (``max_seconds``)
    and the margin for writing out what was read within it."""
    return _config.resolve(shared()).max_seconds + _dump.WRITE_MARGIN_SECONDS


def _enter(what: str) -> tuple[Registry, int]:
    """The registry and this thread's ident; NestedPanic when this thread is already dumping."""
    registry = shared()
    me = get_ident()
    if registry.guard.owner == me or me in registry.guard.dumping:
        raise NestedPanic(f"{what}() was called while this thread was writing a dump")
    return registry, me


def panic(
    message: str,
    err: object = None,
    *,
    directory: str | None = None,
    report: Report | None = None,
    reason: str | None = None,
    pids: list[int] | None = None,
) -> NoReturn:
    """Write a dump and end the process (see ``pypanic.panic``).

    ``report(path, error)`` is called once the file is complete (or could not be
    written), before the exit: ncore's handshake. ``reason`` is the dump's
    ``panic.reason`` when it says more than the log line (which thread, which asyncio
    error); by default both say ``message`` (``explicit panic`` without ``err``). ``pids``:
    the process's pids from ncore's PID namespace down to its own, when ncore asks.
    """
    registry, me = _enter("panic")
    exc = _as_exception(message, err)
    headline = "explicit panic" if err is None else message
    registry.guard.lock.acquire()
    registry.guard.owner = me
    status, abort = 1, False
    try:
        settings = _config.resolve(registry)
        status, abort = settings.exit_status, settings.abort
        started = _begin(registry, settings, "PANIC", headline, reason or headline, exc, pids)
        path = _finish(started, settings, "PANIC", directory, os.getpid())
        if report is not None:
            report(path, None)
    except BaseException as e:
        StderrLog()("CRIT", f"error during panic: {describe_error(e)}")
        if report is not None:
            report(None, describe_error(e))
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        if abort:
            os.abort()
        os._exit(status)


def dump(
    message: str,
    err: object = None,
    *,
    directory: str | None = None,
    report: Report | None = None,
    pids: list[int] | None = None,
) -> str:
    """Write a dump, keep running, and return the dump's path (see ``pypanic.dump``)."""
    registry, me = _enter("dump")
    exc = _as_exception(message, err)
    reason = "snapshot" if err is None else message
    registry.guard.dumping.add(me)
    try:
        settings = _config.resolve(registry)
        started = _begin(registry, settings, "DUMP", reason, reason, exc, pids)
        path = _finish(started, settings, "DUMP", directory, os.getpid())
    except BaseException as e:
        if report is not None:
            report(None, describe_error(e))
        raise
    finally:
        registry.guard.dumping.discard(me)
    if report is not None:
        report(path, None)
    return path


def dump_in_background(
    message: str,
    *,
    directory: str | None = None,
    report: Report,
    pids: list[int] | None = None,
    keep: tuple[int, ...] = (),
) -> int | None:
    """A snapshot whose registered values are written by a forked writer (``_background``):
    this thread computes pypanic's own keys (the stacks, with their locals), forks, and
    returns the writer's pid; the writer writes the file and calls
    ``report``, keeping the descriptors in ``keep`` open for it. None when no writer could
    be forked (a limit on processes, say) or the registered state is small enough to write
    at once (IN_PLACE_ITEMS): the dump was then written in place. The process's other
    threads wait only while the own keys are computed and the process forks (BENCHMARKS.md)."""
    registry, me = _enter("dump")
    exc = _as_exception(message, None)
    registry.guard.dumping.add(me)
    try:
        settings = _config.resolve(registry)
        started = _begin(registry, settings, "DUMP", "snapshot", "snapshot", exc, pids)
        pid = os.getpid()

        def write() -> None:
            try:
                path = _finish(started, settings, "DUMP", directory, pid)
            except BaseException as e:
                report(None, describe_error(e))
                raise
            report(path, None)

        seconds = settings.max_seconds + _dump.WRITE_MARGIN_SECONDS
        if not larger_than((value for _, value in started.values), IN_PLACE_ITEMS):
            write()
            return None
        writer = _background.fork_writer(write, seconds, keep)
        if writer is None:
            write()
        return writer
    finally:
        registry.guard.dumping.discard(me)
