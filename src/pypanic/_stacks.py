"""Every thread's stack and an exception's chain, as plain records with source lines and locals.

Threads are read from ``sys._current_frames()`` and ``threading._active`` without taking
threading's lock: the code that dumps may run as a pending call in the main thread at a
moment when that very thread holds the lock. Neither ``threading`` nor ``traceback`` is
imported (a process may never have loaded them; importing threading from another thread
would even make that thread the main one), nor ``linecache`` (see ``_source``).
"""

from __future__ import annotations

import os
import sys
import types
from _thread import get_ident, get_native_id

from . import _source
from ._serialize import Budget, Serializer, call_guarded, describe_error, exception_text, type_name

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

MAX_FRAMES = 200
"""Frames kept per stack: the outermost and innermost halves, with a marker between."""

MAX_EXCEPTIONS = 64
"""Exceptions described per dump across causes, contexts and groups."""

LOCALS_LIMITS = {"depth": 3, "items": 50, "string": 1000}
"""How much of each local variable goes into a frame record."""

REDACTED = "<redacted by pypanic>"

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_PAYLOAD = "<ncore payload>"
_PAYLOAD_MODULE = "__ncore_payload__"
_CO_OPTIMIZED = 0x1


def _function_locals() -> type:
    """What ``f_locals`` of a function's frame is: a dict, and from 3.13 a FrameLocalsProxy.
    Either is read in C, running no code of the program's (nor a guarded call's settrace)."""
    return type(sys._getframe().f_locals)


_FUNCTION_LOCALS = _function_locals()


def own_frame(frame: types.FrameType) -> bool:
    """Whether ``frame`` runs pypanic's own code or ncore's (its payload, the loader that
    compiles it, which names the payload, and the code injected to start that, which names
    the payload's module), to be left out."""
    code = frame.f_code
    consts = code.co_consts
    return (
        code.co_filename.startswith(_PACKAGE_DIR)
        or code.co_filename == _PAYLOAD
        or _PAYLOAD in consts
        or _PAYLOAD_MODULE in consts
    )


class StackReader:
    """Describes frames, threads and exceptions, spending from one Budget."""

    def __init__(self, budget: Budget, *, with_locals: bool, is_secret: Callable[[str], bool]) -> None:
        self._locals = Serializer(budget, **LOCALS_LIMITS) if with_locals else None
        self._is_secret = is_secret
        self.budget = budget
        self.refer: Callable[[Any], Any] = lambda value: None
        """A short record for a local that is described elsewhere in the dump (an event loop,
        a task), or None to serialize it."""
        self._described: dict[tuple[int, int | None], tuple[types.FrameType, dict[str, Any]]] = {}
        """The frames described so far, by id and line (the frame kept, so that its id is not
        reused): a snapshot's exception is raised where the dump began, so its traceback is
        the same frames as the dumping thread's stack, and each is read once."""

    # -- frames -------------------------------------------------------------------------

    def frame(self, frame: types.FrameType, lineno: int | None) -> dict[str, Any]:
        code = frame.f_code
        line = lineno if lineno is not None else frame.f_lineno
        described = self._described.get((id(frame), line))
        if described is not None:
            return described[1]
        record: dict[str, Any] = {
            "file": code.co_filename,
            "line": line,
            "function": getattr(code, "co_qualname", code.co_name),
            "source": _source.line(code.co_filename, line) if line else None,
        }
        if self._locals is not None:
            record["locals"] = self._frame_locals(frame, record["function"])
        self._described[id(frame), line] = (frame, record)
        return record

    def _frame_locals(self, frame: types.FrameType, where: str) -> dict[str, Any]:
        assert self._locals is not None
        try:
            mapping = frame.f_locals
        except Exception as e:  # out of memory for the copy a frame's locals are read into
            return {"$error": describe_error(e)}
        if type(mapping) is dict or type(mapping) is _FUNCTION_LOCALS:
            names = list(mapping.items())
        else:  # a class body's namespace from a metaclass's __prepare__, exec's own mapping
            ok, names = call_guarded(lambda: list(mapping.items()))
            if not ok:
                return {"$error": names}
        in_function = bool(frame.f_code.co_flags & _CO_OPTIMIZED)
        out: dict[str, Any] = {}
        for name, value in names[: LOCALS_LIMITS["items"]]:
            if not isinstance(name, str):
                continue
            if not in_function and (name.startswith("__") or _is_definition(value)):
                continue
            if self._is_secret(name):
                out[name] = REDACTED
                continue
            reference = self.refer(value)
            out[name] = reference if reference is not None else self._locals.to_data(value, f"{where}.{name}")
        return out

    def stack(self, innermost: types.FrameType | None, skip_own: bool = False) -> list[Any]:
        """The frames from the outermost call to ``innermost``, most recent last."""
        frames = []
        frame = innermost
        while frame is not None:
            frames.append(frame)
            frame = frame.f_back
        if skip_own:
            while frames and own_frame(frames[0]):
                frames.pop(0)
        frames.reverse()
        return self._bounded([(f, None) for f in frames])

    def _bounded(self, frames: list[tuple[types.FrameType, int | None]]) -> list[Any]:
        half = MAX_FRAMES // 2
        if len(frames) <= MAX_FRAMES:
            return [self.frame(f, line) for f, line in frames]
        head = [self.frame(f, line) for f, line in frames[:half]]
        tail = [self.frame(f, line) for f, line in frames[-half:]]
        cut = {"$cut": "frames", "detail": f"{len(frames) - MAX_FRAMES} of {len(frames)} frames cut"}
        return [*head, cut, *tail]

    # -- threads ------------------------------------------------------------------------

    def threads(self) -> list[dict[str, Any]]:
        """Every thread of the interpreter: this one first, then the main thread, then the rest."""
        current = get_ident()
        main = main_thread_ident()
        threading = sys.modules.get("threading")
        known = dict(getattr(threading, "_active", {}))
        frames = sys._current_frames()
        order = sorted(frames, key=lambda ident: (ident != current, ident != main, ident))
        records = []
        for ident in order:
            thread = known.get(ident)
            records.append(
                {
                    "name": thread.name if thread is not None else None,
                    "ident": ident,
                    # threading keeps the parent's value after a fork (before 3.13): ask the kernel
                    "native_id": get_native_id() if ident == current else getattr(thread, "native_id", None),
                    "daemon": thread.daemon if thread is not None else None,
                    "main": ident == main,
                    "current": ident == current,
                    "frames": self.stack(frames[ident], skip_own=ident == current),
                }
            )
        return records

    # -- exceptions ---------------------------------------------------------------------

    def exception(self, exc: BaseException) -> dict[str, Any]:
        """``exc`` with its frames and locals, notes, cause, context and group members."""
        return self._exception(exc, set())

    def _exception(self, exc: BaseException, seen: set[int]) -> dict[str, Any]:
        seen.add(id(exc))
        ok, message = exception_text(exc)
        record: dict[str, Any] = {"type": type_name(exc), "message": message if ok else {"$error": message}}
        tb_frames: list[tuple[types.FrameType, int | None]] = []
        tb = exc.__traceback__
        while tb is not None:
            tb_frames.append((tb.tb_frame, tb.tb_lineno))
            tb = tb.tb_next
        record["frames"] = self._bounded(tb_frames)
        notes = getattr(exc, "__notes__", None)
        if isinstance(notes, list):
            record["notes"] = [n if isinstance(n, str) else repr(type(n)) for n in notes]
        linked = [("cause", exc.__cause__), ("context", exc.__context__)]
        members = getattr(exc, "exceptions", None)
        if _is_group(exc) and isinstance(members, (list, tuple)):
            linked.extend(("exceptions", m) for m in members)
        for relation, other in linked:
            if not isinstance(other, BaseException):
                continue
            if id(other) in seen:
                described: dict[str, Any] = {"$seen": type_name(other), "detail": "described above"}
            elif len(seen) >= MAX_EXCEPTIONS:
                described = {"$cut": "exceptions", "type": type_name(other)}
            else:
                described = self._exception(other, seen)
            if relation == "exceptions":
                record.setdefault("exceptions", []).append(described)
            else:
                record[relation] = described
        if "context" in record:
            record["suppress_context"] = bool(exc.__suppress_context__)
        return record


def main_thread_ident() -> int | None:
    """The main thread's ident; None when threading is not loaded and this is another thread."""
    threading = sys.modules.get("threading")
    if threading is not None:
        ident: int | None = threading.main_thread().ident
        return ident
    return get_ident() if get_native_id() == os.getpid() else None


_CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"
_REPEATS_SHOWN = 3


def error_text(exc: BaseException) -> str:
    """The ``panic.error`` text: ``EXCEPTION: <Type>: <message>``, then the whole traceback,
    as ``traceback.format_exception`` writes it without its ``^^^`` marks (they need ``ast``).
    An exception group is formatted by ``traceback`` itself."""
    ok, message = exception_text(exc)
    head = f"EXCEPTION: {type_name(exc)}: {message if ok else '<' + message + '>'}"
    chain: list[tuple[BaseException, str]] = []
    link, seen = exc, set()
    while link is not None and id(link) not in seen and len(chain) < MAX_EXCEPTIONS:
        seen.add(id(link))
        cause, context = link.__cause__, link.__context__
        if isinstance(cause, BaseException):
            chain.append((link, _CAUSE))
            link = cause
        elif isinstance(context, BaseException) and not link.__suppress_context__:
            chain.append((link, _CONTEXT))
            link = context
        else:
            chain.append((link, ""))
            break
    if any(_is_group(e) for e, _ in chain):
        import traceback

        ok, lines = call_guarded(traceback.format_exception, type(exc), exc, exc.__traceback__)
        if not ok:
            return f"{head}\n(the traceback could not be formatted: {lines})"
        return f"{head}\n{''.join(lines).rstrip()}"
    parts: list[str] = []
    for i in range(len(chain) - 1, -1, -1):
        parts.extend(_traceback_lines(chain[i][0]))
        if i:
            parts.append(chain[i - 1][1])
    return f"{head}\n{''.join(parts).rstrip()}"


def _traceback_lines(exc: BaseException) -> list[str]:
    """One exception's part of a traceback: its frames, its own line, its notes."""
    lines = []
    tb = exc.__traceback__
    if tb is not None:
        lines.append("Traceback (most recent call last):\n")
    last, repeats = None, 0
    while tb is not None:
        where = _where(tb)
        repeats = repeats + 1 if where == last else 0
        last = where
        if repeats < _REPEATS_SHOWN:
            lines.append(f'  File "{where[0]}", line {where[1]}, in {where[2]}\n')
            source = _source.line(where[0], where[1])
            if source:
                lines.append(f"    {source}\n")
        tb = tb.tb_next
        if repeats >= _REPEATS_SHOWN and (tb is None or _where(tb) != last):
            lines.append(f"  [Previous line repeated {repeats - _REPEATS_SHOWN + 1} more times]\n")
    ok, message = exception_text(exc)
    message = message if ok else f"<exception str() failed: {message}>"
    name = type_name(exc)
    lines.append(f"{name}: {message}\n" if message else f"{name}\n")
    notes = getattr(exc, "__notes__", None)
    if isinstance(notes, list):
        lines.extend(f"{note}\n" for note in notes if isinstance(note, str))
    return lines


def _where(tb: types.TracebackType) -> tuple[str, int, str]:
    code = tb.tb_frame.f_code
    return code.co_filename, tb.tb_lineno, code.co_name


def traceback_of_caller(frame: types.FrameType | None) -> types.TracebackType | None:
    """A traceback through ``frame`` and its callers, leaving out pypanic's own frames."""
    while frame is not None and own_frame(frame):
        frame = frame.f_back
    tb = None
    while frame is not None:
        tb = types.TracebackType(tb, frame, frame.f_lasti, frame.f_lineno or 0)
        frame = frame.f_back
    return tb


def _is_group(exc: BaseException) -> bool:
    group = getattr(sys.modules["builtins"], "BaseExceptionGroup", None)
    return group is not None and isinstance(exc, group)


def _is_definition(value: Any) -> bool:
    # type(), not isinstance: isinstance asks the object for its __class__, which may run its code
    return issubclass(type(value), (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType))
