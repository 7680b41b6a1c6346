"""Builds a dump (the original's keys, the registered state, pypanic's own keys) and
writes it atomically as ``ncore.<pid>``.

The file is written unnamed (O_TMPFILE, mode 0600) in the target directory, or where
that cannot be as a temporary file created exclusively (links not followed), synced,
then linked to its final name, which is never overwritten: ``ncore.<pid>.<n>`` when
``ncore.<pid>`` is taken. A partial file never carries the final name.
"""

from __future__ import annotations

import os
import sys
import time

from . import _facts
from ._config import Settings
from ._serialize import CUTS_ROOM, Budget, Serializer, describe_error, json_text, key_text
from ._stacks import StackReader

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from types import ModuleType
    from typing import Any

    from ._registry import Registry

FORMAT_VERSION = "0.2"
"""``dbg.format-version``: node-panic's 0.1 plus pypanic's keys (see the README)."""

PYPANIC_KEYS = (
    "dbg.format-version",
    "init.process.argv",
    "init.process.pid",
    "init.process.nspid",
    "init.process.cwd",
    "init.process.env",
    "init.process.version",
    "init.process.platform",
    "init.time",
    "init.time-ms",
    "panic.error",
    "panic.time",
    "panic.time-ms",
    "panic.memusage",
    "panic.reason",
    "panic.exception",
    "panic.threads",
    "panic.asyncio",
    "panic.python",
    "panic.process",
    "panic.resources",
    "panic.gc",
    "dbg.pypanic-version",
    "dbg.warnings",
    "dbg.outside",
    "dbg.cuts",
)
"""Every key pypanic writes itself, in the order of the file (``dbg.outside`` only in a dump
ncore read from outside the process); a registered key with one of these names is
written as ``registered:<key>`` instead."""

_REGISTERED_AFTER = PYPANIC_KEYS.index("init.time-ms") + 1
"""Registered keys sit between ``init.time-ms`` and ``panic.error``, as in node-panic."""


WRITE_MARGIN_SECONDS = 2.0
"""How long after ``max_seconds`` a dump may still take to encode and write what it read
in time (the README's figure; BENCHMARKS.md measures it)."""

RESERVED_BYTES, RESERVED_SECONDS = 4096, 0.01
"""What each registered value keeps back for every registered value after it."""

_LINE_OVERHEAD = 6
"""What a line of the file adds to a key and its value: quotes, colon, space, comma, newline."""


class DumpFailed(OSError):
    """No directory would take the dump; the message says what each one answered."""


class Started:
    """A dump whose own keys are computed; ``finish`` adds the registered values, which
    need nothing but the objects themselves (a forked writer can do it)."""

    def __init__(self, own: list[tuple[str, str]], values: list[tuple[Any, Any]], budget: Budget, state: Serializer):
        self.own = own
        self.values = values
        self.budget = budget
        self.state = state

    def finish(self) -> list[tuple[str, str]]:
        """Every entry of the dump. Each registered value may take what is left but a little
        for each value still to come (at most half), so that a huge one does not leave the
        rest as bare markers; one that fails becomes a marker and the rest are written."""
        budget, registered = self.budget, []
        for i, (key, value) in enumerate(self.values):
            name = key_text(key)
            if name in PYPANIC_KEYS:
                name = f"registered:{name}"
            budget.bytes_left -= len(name) + _LINE_OVERHEAD
            later = len(self.values) - i - 1
            held_bytes = min(later * RESERVED_BYTES, max(budget.bytes_left, 0) // 2)
            seconds = budget.deadline - time.monotonic()
            budget.bytes_left -= held_bytes
            text = self.state.encode(value, name, seconds=seconds - min(later * RESERVED_SECONDS, seconds / 2))
            budget.bytes_left += held_bytes
            registered.append((name, text))
        cuts = ("dbg.cuts", json_text({"count": budget.cut_count, "first": budget.cuts}))
        return layout(dict([*self.own, cuts]), registered)


def begin(
    registry: Registry,
    settings: Settings,
    reason: str,
    exc: BaseException,
    error: str,
    now: float,
    version: str,
    pids: list[int] | None = None,
) -> Started:
    """pypanic's own keys, and the registered values as they are now (not yet written).

    The own keys are computed first: they are small and they are what the operator needs
    most, so no registered value may starve them of bytes or time; room for the list of
    cuts is kept from the start. ``pids`` (from ncore) are the process's pids from ncore's
    PID namespace down to its own.
    """
    budget = Budget(settings.max_bytes - min(CUTS_ROOM, settings.max_bytes // 8), settings.max_seconds)
    is_secret = _facts.secret_matcher(settings.secret_words) if settings.redact else None
    stacks = StackReader(budget, with_locals=settings.locals, is_secret=is_secret or (lambda name: False))
    tasks = _asyncio_tasks()
    stacks.refer = (tasks.reference_maker() if tasks is not None else None) or stacks.refer
    limits = {"depth": settings.max_depth, "items": settings.max_items, "string": settings.max_string}
    facts = Serializer(budget, **limits)
    init = registry.init

    def fact(key: str, compute: Any) -> tuple[str, str]:
        before = budget.bytes_left
        try:
            value = compute() if callable(compute) else compute
        except Exception as e:
            value = {"$error": describe_error(e)}
        text = facts.encode(value, key)
        # The text holds whatever computing the value spent (local variables): count it once.
        budget.bytes_left = before - len(text) - len(key) - _LINE_OVERHEAD
        return key, text

    own = [
        fact("dbg.format-version", FORMAT_VERSION),
        fact("init.process.argv", init.argv),
        fact("init.process.pid", os.getpid),
        *([fact("init.process.nspid", pids)] if pids and len(pids) > 1 else []),
        fact("init.process.cwd", init.cwd),
        fact("init.process.env", lambda: _facts.redacted_environment(init.env, is_secret)),
        fact("init.process.version", init.version),
        fact("init.process.platform", init.platform),
        fact("init.time", _facts.iso_time(init.time)),
        fact("init.time-ms", _facts.epoch_ms(init.time)),
        fact("panic.error", error),
        fact("panic.time", _facts.iso_time(now)),
        fact("panic.time-ms", _facts.epoch_ms(now)),
        fact("panic.memusage", _facts.memory_usage),
        fact("panic.reason", reason),
        fact("panic.exception", lambda: stacks.exception(exc)),
        fact("panic.threads", stacks.threads),
        *(
            [fact("panic.asyncio", loops)]
            if tasks is not None and (loops := tasks.describe(stacks)) is not None
            else []
        ),
        fact("panic.python", _facts.interpreter),
        fact("panic.process", lambda: _facts.process(init.cwd)),
        fact("panic.resources", _facts.resources),
        fact("panic.gc", _facts.garbage_collector),
        fact("dbg.pypanic-version", version),
        fact("dbg.warnings", settings.warnings),
    ]
    return Started(own, list(registry.snapshot().items()), budget, Serializer(budget, **limits))


def _asyncio_tasks() -> ModuleType | None:
    """pypanic._tasks in a process that has loaded asyncio, else None: one without asyncio
    has no event loop, and its first dump need not load that module (nor compile it, 7 ms
    of a first dump with the copy of pypanic ncore brings)."""
    if "asyncio" not in sys.modules:
        return None
    from . import _tasks

    return _tasks


def layout(own: dict[str, str], registered: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Every dump's entries in the file's one order: pypanic's keys in PYPANIC_KEYS order
    (those missing from ``own`` left out), with the registered ones after ``init.time-ms``."""
    ordered = [(key, own[key]) for key in PYPANIC_KEYS if key in own]
    split = sum(1 for key in PYPANIC_KEYS[:_REGISTERED_AFTER] if key in own)
    return [*ordered[:split], *registered, *ordered[split:]]


def _chunks(entries: list[tuple[str, str]]) -> Iterator[bytes]:
    yield b"{\n"
    last = len(entries) - 1
    for i, (key, text) in enumerate(entries):
        line = f"{json_text(key)}: {text}{'' if i == last else ','}\n"
        yield line.encode("utf-8", "backslashreplace")
    yield b"}\n"


def _temporary_directory() -> str:
    import tempfile  # only here: it is needed only when two directories have failed

    return tempfile.gettempdir()


def candidate_directories(settings: Settings, requested: str | None) -> list[tuple[str, Callable[[], str | None]]]:
    """Where to try to write, in order, as ``(name, find)``: ``find()`` gives the
    directory (None: not set) or raises OSError. The directory asked for (else the
    configured one, else the working directory), ``$PYPANIC_DIR``, the temporary
    directory, ``/tmp``."""
    first = requested or settings.directory
    return [
        (first or "the working directory", lambda: first or os.getcwd()),
        ("$PYPANIC_DIR", lambda: os.environ.get("PYPANIC_DIR")),
        ("the temporary directory", _temporary_directory),
        ("/tmp", lambda: "/tmp"),
    ]


def final_path(directory: str, pid: int) -> str:
    """The first free name among ``ncore.<pid>``, ``ncore.<pid>.1``, ... in ``directory``."""
    n = 0
    while True:
        name = f"ncore.{pid}" if n == 0 else f"ncore.{pid}.{n}"
        path = os.path.join(directory, name)
        if not os.path.lexists(path):
            return path
        n += 1


def write(entries: list[tuple[str, str]], directory: str, pid: int, owner: tuple[int, int] | None = None) -> str:
    """Write the dump into ``directory`` atomically and return its final path; ``owner``
    (uid, gid) gives the file to the process it describes when someone else writes it.

    The file is written unnamed (O_TMPFILE) and linked to its name once complete, so that a
    writer killed midway leaves nothing behind; where the file system or a missing /proc
    does not allow that, it is written under a temporary name, removed afterwards."""
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        unnamed = _unnamed_file(dir_fd)
        if unnamed is not None:
            try:
                _fill(unnamed, entries, owner)
                source = f"/proc/self/fd/{unnamed}"
                path = _publish(lambda name: os.link(source, name, dst_dir_fd=dir_fd), None, directory, pid)
                os.fsync(dir_fd)
                return path
            except (FileNotFoundError, PermissionError):
                pass  # no /proc to link it from, or no hard links here: write it again by name
            finally:
                os.close(unnamed)
        return _write_named(entries, directory, dir_fd, pid, owner)
    finally:
        os.close(dir_fd)


def _unnamed_file(dir_fd: int) -> int | None:
    flags = getattr(os, "O_TMPFILE", 0)
    if not flags:
        return None
    try:
        return os.open(".", flags | os.O_WRONLY | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
    except OSError:
        return None  # the file system cannot (EOPNOTSUPP), or an old kernel (EISDIR)


def _fill(fd: int, entries: list[tuple[str, str]], owner: tuple[int, int] | None) -> None:
    if owner is not None and owner != (os.geteuid(), os.getegid()):
        os.fchown(fd, *owner)
    for chunk in _chunks(entries):
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view) :]
    os.fsync(fd)


def _write_named(
    entries: list[tuple[str, str]], directory: str, dir_fd: int, pid: int, owner: tuple[int, int] | None
) -> str:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    temporary = f".ncore.{pid}.{os.urandom(6).hex()}.tmp"
    try:
        fd = os.open(temporary, flags, 0o600, dir_fd=dir_fd)
        try:
            _fill(fd, entries, owner)
        finally:
            os.close(fd)
        path = _publish(
            lambda name: os.link(temporary, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd),
            # File systems without hard links (vfat, some FUSE): rename, after the check
            # final_path just made.
            lambda name: os.rename(temporary, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd),
            directory,
            pid,
        )
        os.fsync(dir_fd)
        return path
    finally:
        try:
            os.unlink(temporary, dir_fd=dir_fd)
        except OSError:
            pass


def _publish(link: Callable[[str], None], rename: Callable[[str], None] | None, directory: str, pid: int) -> str:
    """Give the written file its final name without ever replacing an existing file:
    ``link(name)``, or where hard links are refused ``rename(name)`` (None: refuse too)."""
    for _ in range(1000):
        path = final_path(directory, pid)
        name = os.path.basename(path)
        try:
            link(name)
            return path
        except FileExistsError:
            continue
        except PermissionError:
            if rename is None:
                raise
            rename(name)
            return path
    raise FileExistsError(f"no free ncore.{pid}.<n> name in {directory}")


def write_anywhere(
    entries: list[tuple[str, str]],
    candidates: list[tuple[str, Callable[[], str | None]]],
    pid: int,
    owner: tuple[int, int] | None = None,
) -> tuple[str, str]:
    """Write into the first of the ``candidates`` (see candidate_directories) that takes the
    dump, trying each directory once. Returns the path and why the directories before it
    were passed over (empty when none was); raises DumpFailed naming every directory's error."""
    failures: list[str] = []
    tried: set[str] = set()
    for name, find in candidates:
        try:
            directory = find()
            if not directory:
                continue
            directory = os.path.abspath(directory)
        except OSError as e:
            failures.append(f"could not write in {name}: {e.strerror or e}")
            continue
        if directory in tried:
            continue
        tried.add(directory)
        try:
            return write(entries, directory, pid, owner), "; ".join(failures)
        except OSError as e:
            failures.append(f"could not write in {directory}: {e.strerror or e}")
    raise DumpFailed("; ".join(failures))
