"""Builds a dump (the original's keys, the registered state, pypanic's own keys) and
writes it atomically as ``ncore.<pid>``.

The file is written as a temporary file created exclusively (mode 0600, links not
followed) in the target directory, synced, then linked to its final name, which is
never overwritten: ``ncore.<pid>.<n>`` when ``ncore.<pid>`` is taken. A partial file
never carries the final name.
"""

from __future__ import annotations

import json
import os

from . import _facts
from ._config import Settings
from ._serialize import Budget, Serializer, describe_error, key_text
from ._stacks import StackReader

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

    from ._registry import Registry

FORMAT_VERSION = "0.2"
"""``dbg.format-version``: node-panic's 0.1 plus pypanic's keys (see the README)."""

PYPANIC_KEYS = (
    "dbg.format-version",
    "init.process.argv",
    "init.process.pid",
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
    "panic.python",
    "panic.process",
    "panic.resources",
    "panic.gc",
    "dbg.pypanic-version",
    "dbg.warnings",
    "dbg.cuts",
)
"""Every key pypanic writes itself; a registered key with one of these names is written
as ``registered:<key>`` instead."""


class DumpFailed(OSError):
    """No directory would take the dump; the message says what each one answered."""


def build(
    registry: Registry,
    settings: Settings,
    reason: str,
    exc: BaseException,
    error: str,
    now: float,
    version: str,
) -> list[tuple[str, str]]:
    """The dump as ``(key, JSON text)`` pairs, in the order they are written."""
    budget = Budget(settings.max_bytes, settings.max_seconds)
    is_secret = _facts.secret_matcher(settings.secret_words) if settings.redact else None
    stacks = StackReader(budget, with_locals=settings.locals, is_secret=is_secret or (lambda name: False))
    state = Serializer(budget, depth=settings.max_depth, items=settings.max_items, string=settings.max_string)
    facts = Serializer(budget, depth=settings.max_depth, items=settings.max_items, string=settings.max_string)
    init = registry.init

    def fact(key: str, compute: Any) -> tuple[str, str]:
        try:
            value = compute() if callable(compute) else compute
        except Exception as e:
            value = {"$error": describe_error(e)}
        return key, facts.encode(value, key)

    # Stacks first: they are what the operator needs most, and they must not be starved
    # of time or bytes by a huge registered value.
    extended = [
        fact("panic.reason", reason),
        fact("panic.exception", lambda: stacks.exception(exc)),
        fact("panic.threads", stacks.threads),
    ]
    registered = []
    for key, value in registry.snapshot().items():
        name = key_text(key)
        if name in PYPANIC_KEYS:
            name = f"registered:{name}"
        registered.append((name, state.encode(value, name)))
    extended += [
        fact("panic.python", _facts.interpreter),
        fact("panic.process", lambda: _facts.process(init.cwd)),
        fact("panic.resources", _facts.resources),
        fact("panic.gc", _facts.garbage_collector),
        fact("dbg.pypanic-version", version),
        fact("dbg.warnings", settings.warnings),
    ]
    head = [
        fact("dbg.format-version", FORMAT_VERSION),
        fact("init.process.argv", init.argv),
        fact("init.process.pid", os.getpid),
        fact("init.process.cwd", init.cwd),
        fact("init.process.env", lambda: _facts.redacted_environment(init.env, is_secret)),
        fact("init.process.version", init.version),
        fact("init.process.platform", init.platform),
        fact("init.time", _facts.iso_time(init.time)),
        fact("init.time-ms", _facts.epoch_ms(init.time)),
    ]
    tail = [
        fact("panic.error", error),
        fact("panic.time", _facts.iso_time(now)),
        fact("panic.time-ms", _facts.epoch_ms(now)),
        fact("panic.memusage", _facts.memory_usage),
    ]
    cuts = [fact("dbg.cuts", {"count": budget.cut_count, "first": budget.cuts})]
    return head + registered + tail + extended + cuts


def _chunks(entries: list[tuple[str, str]]) -> Iterator[bytes]:
    yield b"{\n"
    last = len(entries) - 1
    for i, (key, text) in enumerate(entries):
        line = f"{json.dumps(key, ensure_ascii=False)}: {text}{'' if i == last else ','}\n"
        yield line.encode("utf-8", "backslashreplace")
    yield b"}\n"


def candidate_directories(settings: Settings, requested: str | None) -> list[str]:
    """Where to try to write, in order: the directory asked for (else the configured one,
    else the working directory), then ``$PYPANIC_DIR``, then the temporary directory."""
    first = requested or settings.directory
    if first is None:
        try:
            first = os.getcwd()
        except OSError:
            first = None
    found = []
    for directory in (first, os.environ.get("PYPANIC_DIR"), os.environ.get("TMPDIR") or "/tmp"):
        if directory:
            path = os.path.abspath(directory)
            if path not in found:
                found.append(path)
    return found


def final_path(directory: str, pid: int) -> str:
    """The first free name among ``ncore.<pid>``, ``ncore.<pid>.1``, ... in ``directory``."""
    n = 0
    while True:
        name = f"ncore.{pid}" if n == 0 else f"ncore.{pid}.{n}"
        path = os.path.join(directory, name)
        if not os.path.lexists(path):
            return path
        n += 1


def write(entries: list[tuple[str, str]], directory: str, pid: int) -> str:
    """Write the dump into ``directory`` atomically and return its final path."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    temporary = f".ncore.{pid}.{os.urandom(6).hex()}.tmp"
    try:
        fd = os.open(temporary, flags, 0o600, dir_fd=dir_fd)
        try:
            for chunk in _chunks(entries):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        path = _publish(temporary, directory, dir_fd, pid)
        os.fsync(dir_fd)
        return path
    finally:
        try:
            os.unlink(temporary, dir_fd=dir_fd)
        except OSError:
            pass
        os.close(dir_fd)


def _publish(temporary: str, directory: str, dir_fd: int, pid: int) -> str:
    """Give the written file its final name without ever replacing an existing file."""
    for _ in range(1000):
        path = final_path(directory, pid)
        name = os.path.basename(path)
        try:
            os.link(temporary, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            return path
        except FileExistsError:
            continue
        except PermissionError:
            # File systems without hard links (vfat, some FUSE): rename, after the check
            # final_path just made.
            os.rename(temporary, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            return path
    raise FileExistsError(f"no free ncore.{pid}.<n> name in {directory}")


def write_anywhere(entries: list[tuple[str, str]], directories: list[str], pid: int, announce: Any) -> str:
    """Try each directory in turn; ``announce(path, why_not_earlier)`` is called before
    each attempt. Raises DumpFailed listing every directory's error."""
    failures: list[str] = []
    for directory in directories:
        announce(final_path(directory, pid), "; ".join(failures))
        try:
            return write(entries, directory, pid)
        except OSError as e:
            failures.append(f"could not write in {directory}: {e.strerror or e}")
    raise DumpFailed("; ".join(failures))
