"""Every thread's stack read from outside the process, by pystack, as pypanic's thread records.

pystack (Bloomberg's, from PyPI) reads a live process's memory, or a core file, and finds
the interpreter's threads, frames and local variables there without running any code in
the process. This module is the only one that imports it, and only when a read-only
dump is taken: its import costs more than a whole normal dump.

A frame read this way has the same fields as one pypanic writes (``file``, ``line``,
``function``, ``source``, ``locals``), but a local variable is only its repr, read from
memory: a literal the repr spells exactly (a string, a number, True, False, None) is
written as that value; anything else as ``{"$repr": "<text>"}``.
"""

from __future__ import annotations

import ast
import math
import time
from typing import TYPE_CHECKING, Any

from .errors import NcoreError, NoSuchProcess, NotPython, PermissionDenied
from .freeze import Frozen, Guardian

if TYPE_CHECKING:
    from collections.abc import Callable

    from pystack.types import NativeFrame, PyFrame, PyThread

MAX_FRAMES = 200
"""Frames kept per thread, as pypanic keeps them: the outermost and innermost halves."""
_WARMING_READS = 2
_UNBOUND = "<invalid object at 0x0>"
"""What pystack (1.7, on 3.14 and later) reads for a local not yet assigned: left out, as before 3.14."""
_LITERAL_CHARACTERS = 1000
"""A repr longer than this is kept as text, not read back as a value."""


class Reading:
    """What was read: the threads (as records, in the dump's order) and how the read went."""

    def __init__(self, threads: list[dict[str, Any]], gil_holder: int | None, seconds: float, version: str) -> None:
        self.threads = threads
        self.gil_holder = gil_holder
        """The native id of the thread that held the GIL, if one did."""
        self.seconds = seconds
        """How long a live process was stopped for the read (a core file: how long the read took)."""
        self.version = version
        """The Python version pystack found, as ``3.12``."""


def read_process(pid: int, native: bool, open_source: Callable[[str], str | None]) -> Reading:
    """Stop process ``pid`` only while reading it (ncore.freeze; pystack itself with
    ``native``), and read every thread, the main one first. ``open_source`` gives a file's
    text, the file named as the process sees it."""
    from pystack import engine

    started = time.monotonic()
    with _errors(f"process {pid}"):
        if native:  # pystack stops the process itself: the C stacks are unwound through ptrace
            with Guardian(pid):
                threads = list(engine.get_process_threads(pid, True, engine.NativeReportingMode.ALL, locals=True))
            seconds = time.monotonic() - started
        else:
            # Reads while the process runs cost it nothing, and warm what pystack reads of
            # the binaries and the process, which takes most of a first read (30 to 150 ms,
            # against 10 to 20 ms for a third): the process is stopped for the last one only.
            for _ in range(_WARMING_READS):
                try:
                    engine.get_process_threads(pid, False, engine.NativeReportingMode.OFF, locals=True)
                except Exception:
                    break  # a read racing the running process may fail: the real one will tell
            with Frozen(pid) as frozen:
                threads = list(engine.get_process_threads(pid, False, engine.NativeReportingMode.OFF, locals=True))
            seconds = frozen.seconds
    return _reading(threads, seconds, pid, pid, native, open_source)


def read_core(
    core: str, executable: str, pid: int, first: int, native: bool, open_source: Callable[[str], str | None]
) -> Reading:
    """Every thread of process ``pid`` as core file ``core`` holds it; thread ``first`` (a
    native id: the one that took the fatal signal) leads the list."""
    from pystack import engine

    mode = engine.NativeReportingMode.ALL if native else engine.NativeReportingMode.OFF
    started = time.monotonic()
    with _errors(f"core file {core}"):
        threads = list(engine.get_process_threads_for_core(core, executable, native_mode=mode, locals=True))
    return _reading(threads, time.monotonic() - started, pid, first, native, open_source)


def glance(pid: int, looks: int = 5, interval: float = 0.02) -> tuple[bool, bool, str] | None:
    """Where the main thread of ``pid`` is, looked at ``looks`` times without stopping the
    process: (it held the GIL every time, its innermost Python frame never moved, where
    that frame is); None when pystack could not read it (a read racing the process may fail)."""
    from pystack import engine

    seen = []
    try:
        for look in range(looks):
            if look:
                time.sleep(interval)
            threads = engine.get_process_threads(pid, False, engine.NativeReportingMode.OFF, locals=False)
            main = next((t for t in threads if t.tid == pid), None)
            inner = list(main.frames)[-1] if main is not None and main.frame is not None else None
            if inner is None:
                return None
            location = (inner.code.filename, inner.code.scope, tuple(inner.code.location))
            seen.append((main is not None and main.holds_the_gil > 0, location))
    except Exception:
        return None
    filename, scope, (line, *_) = seen[-1][1]
    where = f"{scope} ({'/'.join(filename.split('/')[-2:])}:{line})"
    return all(held for held, _ in seen), len({location for _, location in seen}) == 1, where


class _errors:
    """pystack's exceptions as ncore's errors, with what to do."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: object) -> None:
        if error is None or not isinstance(error, Exception) or isinstance(error, NcoreError):
            return
        from pystack import errors

        text = str(error) or type(error).__name__
        if isinstance(error, (errors.ProcessNotFound, ProcessLookupError)):
            raise NoSuchProcess(f"{self.what} exited before it could be read: {text}") from None
        if isinstance(error, PermissionError) or "Operation not permitted" in text:
            raise PermissionDenied(
                f"not allowed to read {self.what} from outside: {text}",
                "run ncore as the process's user or as root (reading needs ptrace and process_vm_readv)",
            ) from None
        if isinstance(error, (errors.InvalidPythonProcess, errors.NotEnoughInformation)):
            raise NotPython(
                f"pystack could not find a Python interpreter's state in {self.what}: {text}",
                "check that it is a CPython process (3.9 or newer) that has finished starting",
            ) from None
        raise NcoreError(f"pystack could not read {self.what}: {type(error).__name__}: {text}") from None


def _reading(
    threads: list[PyThread],
    seconds: float,
    main: int,
    first: int,
    native: bool,
    open_source: Callable[[str], str | None],
) -> Reading:
    sources = _Sources(open_source)
    ordered = sorted(threads, key=lambda t: (t.tid != first, t.tid != main, t.tid))
    records = [_thread(t, main, native, sources) for t in ordered]
    holder = next((t.tid for t in threads if t.holds_the_gil > 0), None)
    version = next((f"{t.python_version[0]}.{t.python_version[1]}" for t in threads if t.python_version), "")
    return Reading(records, holder, seconds, version)


def _thread(thread: PyThread, main: int, native: bool, sources: _Sources) -> dict[str, Any]:
    frames = [_frame(f, sources) for f in thread.frames]
    if len(frames) > MAX_FRAMES:
        half = MAX_FRAMES // 2
        cut = {"$cut": "frames", "detail": f"{len(frames) - MAX_FRAMES} of {len(frames)} frames cut"}
        frames = [*frames[:half], cut, *frames[-half:]]
    record: dict[str, Any] = {
        "name": thread.name,
        "ident": None,
        "native_id": thread.tid,
        "daemon": None,
        "main": thread.tid == main,
        "current": False,
        "holds_gil": thread.holds_the_gil > 0,
        "status": thread.status.strip("[]") or None,
        "frames": frames,
    }
    if native:
        record["native_frames"] = _native(thread)
    return record


def _frame(frame: PyFrame, sources: _Sources) -> dict[str, Any]:
    code = frame.code
    line = code.location.lineno
    values = {**frame.arguments, **frame.locals}
    return {
        "file": code.filename,
        "line": line,
        "function": code.scope,
        "source": sources.line(code.filename, line),
        "locals": {name: value_of(text) for name, text in values.items() if text != _UNBOUND},
    }


def _native(thread: PyThread) -> list[dict[str, Any]]:
    """The C stack, innermost last as the Python frames are."""
    return [_native_frame(f) for f in thread.native_frames]


def _native_frame(frame: NativeFrame) -> dict[str, Any]:
    return {
        "function": frame.symbol,
        "file": frame.path or None,
        "line": frame.linenumber or None,
        "library": frame.library,
        "address": hex(frame.address),
    }


def value_of(text: str) -> Any:
    """A local's value from its repr: the literal itself when the repr is an exact string,
    number or constant, else the repr as ``{"$repr": text}``."""
    if len(text) <= _LITERAL_CHARACTERS and text[:1] in "'\"-0123456789TFN":
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            pass
        else:
            if type(value) in (str, int, bool) or value is None:
                return value
            if type(value) is float and math.isfinite(value):
                return value
    return {"$repr": text}


def read_source(path: str) -> str | None:
    """The text of a source file (its first 4 MiB), None if it cannot be read."""
    try:
        with open(path, "rb") as f:
            return f.read(4 << 20).decode("utf-8", "replace")
    except OSError:
        return None


class _Sources:
    """Source lines of the files the frames name, each file read once."""

    def __init__(self, open_source: Callable[[str], str | None]) -> None:
        self._open = open_source
        self._lines: dict[str, list[str]] = {}

    def line(self, filename: str, number: int) -> str | None:
        if filename not in self._lines:
            text = self._open(filename) if filename.startswith("/") else None
            self._lines[filename] = text.splitlines() if text else []
        lines = self._lines[filename]
        return lines[number - 1].strip() or None if 0 < number <= len(lines) else None
