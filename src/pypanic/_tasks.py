"""asyncio's event loops and their tasks, as plain records: ``panic.asyncio``.

Loops are found on the threads' stacks (a frame of ``run_forever``, ``run_until_complete``
or an ``asyncio.Runner`` whose ``self`` is one), as the running loop of the dumping thread,
and through the tasks of asyncio's own registries. asyncio is never imported: a process
that did not import it has no loop.

Each task's coroutine chain is walked down ``cr_await`` (``gi_yieldfrom``, ``ag_await``) to
the innermost await, the way 3.14's ``asyncio.capture_call_graph`` walks it, with each
frame's locals. What the innermost await waits on is named from its frame (``sleep`` with
its deadline, ``Queue.get``, ``Lock.acquire``, a stream, ``TaskGroup`` children) or from
the future the task waits for (another task, ``gather``'s children). ``awaited_by`` is the
reverse of those links, with 3.14's ``_asyncio_awaited_by`` where it exists.

Nothing here calls the application's code outside ``call_guarded``: tasks and loops of
asyncio's own types are read through their attributes (C getters), others through
guarded calls. At most ``MAX_TASKS`` tasks per loop are described; the rest are counted.
"""

from __future__ import annotations

import sys
import time
import types
from _thread import get_ident

from ._serialize import call_guarded, class_attribute, class_module, defined_in, one_of, plain_text, type_name
from ._stacks import own_frame

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from ._stacks import StackReader

MAX_TASKS = 1000
"""Tasks described per loop, with their frames and locals; the others are only counted."""
MAX_CHAIN = 64
"""Coroutines followed down one task's await chain."""
MAX_OVERTIMES = 3
"""Calls of the application's code (a task's ``get_name``, a ``__repr__``) that may run out
of time in one dump before no more are made."""
MAX_LINKS = 100
"""Tasks named in one ``awaits`` or ``awaited_by`` list."""
_TRUSTED_MODULES = ("_asyncio", "uvloop", "uvloop.loop")
_C_DESCRIPTORS = (types.GetSetDescriptorType, types.MemberDescriptorType)
LOOP_FUNCTIONS = {"run_forever", "run_until_complete", "BaseEventLoop.run_forever", "BaseEventLoop.run_until_complete"}
"""The functions (names before 3.11, qualified names since) whose ``self`` is a running loop."""
RUNNER_FUNCTION = "Runner.run"
"""asyncio.Runner's (3.11+), whose ``self._loop`` is the loop: uvloop's runs in C, with no frame of its own."""
HANDLE_FUNCTIONS = ("Handle._run", "_run")
"""asyncio's ``Handle._run`` (in events.py), whose ``self`` is the callback the loop is running."""
_NO_LOOP_CALLBACK = "not known: the loop runs its callbacks in C (uvloop), with no frame to read"


def reference_maker() -> Callable[[Any], Any] | None:
    """A function giving the short record that stands for an event loop, a task, a future
    or a handle where it is a local variable (``panic.asyncio`` describes them), and None
    for anything else; None when asyncio is not loaded."""
    asyncio = sys.modules.get("asyncio")
    if asyncio is None or not hasattr(asyncio, "AbstractEventLoop"):
        return None
    kinds = [("loop", asyncio.AbstractEventLoop), ("task", asyncio.Task), ("future", asyncio.Future)]
    kinds += [("handle", asyncio.Handle)]
    known: dict[int, tuple[type, str | None]] = {}
    """By the id of the type (a dict of types would hash them: a metaclass's code), with
    the type itself, which tells a type from a later one at the same address."""

    def refer(value: Any) -> Any:
        kind = type(value)
        found = known.get(id(kind))
        if found is None or found[0] is not kind:
            found = known[id(kind)] = kind, next((name for name, base in kinds if issubclass(kind, base)), None)
        name = found[1]
        return None if name is None else {"$asyncio": name, "$type": type_name(value), "id": hex(id(value))}

    return refer


def describe(stacks: StackReader) -> dict[str, Any] | None:
    """``panic.asyncio``: every event loop with its tasks; None when the process has none."""
    asyncio = sys.modules.get("asyncio")
    if asyncio is None or not hasattr(asyncio, "AbstractEventLoop"):
        return None
    try:
        return _Reader(asyncio, stacks).describe()
    except Exception as e:  # a dump never fails because of asyncio
        ok, text = call_guarded(str, e)
        return {"$error": f"{type_name(e)}: {text if ok else '?'}"}


class _Reader:
    def __init__(self, asyncio: Any, stacks: StackReader) -> None:
        self.asyncio = asyncio
        self.stacks = stacks
        self.overtimes = 0
        self.frames: dict[int, types.FrameType] = {}
        """Every thread's innermost frame, by ident."""
        self.registered: list[Any] = []
        """The tasks in asyncio's Python registries."""
        self.names: dict[int, Any] = {}
        self.trusted: dict[int, tuple[type, bool]] = {}
        """Which types are trusted, by id, as ``reference_maker``'s cache."""
        self.awaited: dict[int, Any] = {}
        """The tasks awaited by those described so far, by id."""
        self.now: float | None = None
        """The time of the loop being described (``loop.time()``), for deadlines."""
        left = max(stacks.budget.deadline - time.monotonic(), 0.0)
        self.deadline = time.monotonic() + left / 2
        """Tasks are described until half the dump's time left is spent: the keys after this one need the rest."""
        self.own_types = tuple(
            t for t in (getattr(asyncio, "Task", None), getattr(asyncio.tasks, "_PyTask", None)) if isinstance(t, type)
        )
        self.future_types = tuple(
            t
            for t in (getattr(asyncio, "Future", None), getattr(asyncio.futures, "_PyFuture", None))
            if isinstance(t, type)
        )

    def describe(self) -> dict[str, Any] | None:
        self.frames = frames = sys._current_frames()
        threads = dict(getattr(sys.modules.get("threading"), "_active", {}))
        loops: dict[int, dict[str, Any]] = {}
        for ident, innermost in frames.items():
            for loop, handle in self._loops_on(innermost):
                found = loops.setdefault(id(loop), {"loop": loop, "thread": ident, "handle": None, "frame": innermost})
                found["handle"] = found["handle"] or handle
        running = getattr(self.asyncio.events, "_get_running_loop", lambda: None)()
        if running is not None:
            loops.setdefault(id(running), {"loop": running, "thread": get_ident(), "handle": None})
        self.registered = self._registered_tasks()
        for task in self.registered:
            loop = self._attribute(task, "_loop")
            if loop is not None and self._is_loop(loop):
                loops.setdefault(id(loop), {"loop": loop, "thread": None, "handle": None})
        if not loops:
            return None
        return {"loops": [self._loop(found, threads) for found in loops.values()]}

    # -- finding loops and tasks --------------------------------------------------------

    def _loops_on(self, innermost: types.FrameType | None) -> list[tuple[Any, Any]]:
        """The loops that run on this stack, each with the handle it is running (or None)."""
        found = []
        handle = None
        frame = innermost
        while frame is not None:
            code = frame.f_code
            name = getattr(code, "co_qualname", code.co_name)
            if name in HANDLE_FUNCTIONS and handle is None and code.co_filename.endswith("events.py"):
                handle = self._local(frame, "self")
            elif name in LOOP_FUNCTIONS or name == RUNNER_FUNCTION:
                owner = self._local(frame, "self")
                loop = self._attribute(owner, "_loop") if name == RUNNER_FUNCTION else owner
                if loop is not None and self._is_loop(loop):
                    found.append((loop, handle))
                    handle = None
            frame = frame.f_back
        return found

    def _registered_tasks(self) -> list[Any]:
        """The tasks asyncio's Python registries hold (all of them before 3.14; since, the
        ones not of asyncio's C type, whose registry is per thread and read by loop)."""
        module = self.asyncio.tasks
        tasks: list[Any] = []
        for name in ("_all_tasks", "_scheduled_tasks", "_eager_tasks"):
            registry = getattr(module, name, None)
            for _ in range(3):  # a WeakSet changed by another thread meanwhile raises
                try:
                    tasks.extend(list(registry) if registry is not None else [])
                    break
                except RuntimeError:
                    continue
        return tasks

    def _tasks_of(self, loop: Any) -> list[Any]:
        """The loop's pending tasks, as ``asyncio.all_tasks(loop)`` gives them: from 3.14 its
        C version, which reads the per-thread registry; before, the registries read here
        (the Python version, traced by ``call_guarded``, would take seconds for many tasks),
        with the tasks whose state could not be read."""
        everything = getattr(self.asyncio, "all_tasks", None)
        if sys.version_info >= (3, 14) and type(everything) is types.BuiltinFunctionType:
            try:
                return list(everything(loop))
            except Exception:
                pass
        mine = [t for t in self.registered if self._task_field(t, "_loop") is loop]
        return [t for t in mine if self._task_field(t, "_state") in ("PENDING", None)]

    # -- records ------------------------------------------------------------------------

    def _loop(self, found: dict[str, Any], threads: dict[int, Any]) -> dict[str, Any]:
        loop = found["loop"]
        ident = found["thread"]
        thread = threads.get(ident) if ident is not None else None
        ok, is_running = self._call(loop.is_running, loop)
        ok_closed, is_closed = self._call(loop.is_closed, loop)
        ok_time, now = self._call(loop.time, loop)
        self.now = now if ok_time and type(now) is float else None
        tasks = self._tasks_of(loop)
        ok_current, current = self._call(self.asyncio.current_task, loop, loop)
        current = current if ok_current else None
        if ident is None and current is not None:
            ident = found["thread"] = self._thread_running(current)
            thread = threads.get(ident) if ident is not None else None
        tasks = self._ordered(tasks, current)
        described = []
        records = {}
        self.awaited = {}
        for task in tasks[:MAX_TASKS]:
            if time.monotonic() > self.deadline:
                break
            described.append(task)
            records[id(task)] = self._task(task, task is current)
        finished = [t for key, t in list(self.awaited.items()) if key not in records]
        for task in finished[: max(MAX_TASKS - len(described), 0)]:
            described.append(task)
            records[id(task)] = self._task(task, False)
        self._link(described, records)
        record: dict[str, Any] = {
            "id": hex(id(loop)),
            "type": type_name(loop),
            "thread": None
            if ident is None
            else {
                "name": getattr(thread, "name", None),
                "ident": ident,
                "native_id": getattr(thread, "native_id", None),
            },
            "running": bool(is_running) if ok else None,
            "closed": bool(is_closed) if ok_closed else None,
            "running_callback": self._callback(found, ok and bool(is_running)),
            "current_task": None if current is None else hex(id(current)),
            "task_count": len(tasks),
            "tasks": list(records.values()),
        }
        if len(described) < len(tasks):
            why = "the dump's time" if len(described) < min(len(tasks), MAX_TASKS) else f"at most {MAX_TASKS}"
            cut = len(tasks) - len(described)
            record["tasks"].append({"$cut": "tasks", "detail": f"{cut} of {len(tasks)} tasks not described ({why})"})
        return record

    def _thread_running(self, task: Any) -> int | None:
        """The thread whose stack holds the running task's coroutine (a loop that runs in C,
        uvloop's, leaves no frame of its own to find it by)."""
        chain, _ = self._chain(self._attribute(task, "_coro"))
        return self._running_stack(chain[0])[0] if chain else None

    def _running_stack(self, outermost: types.FrameType) -> tuple[int | None, list[types.FrameType]]:
        """The thread running the coroutine whose frame is ``outermost``, and the frames from
        it to that thread's innermost, pypanic's own left out: a running coroutine's
        ``cr_await`` is empty, and what it calls is on the thread's stack."""
        for ident, innermost in self.frames.items():
            frames = []
            frame: types.FrameType | None = innermost
            while frame is not None:
                frames.append(frame)
                if frame is outermost:
                    inward = frames[::-1]
                    return ident, [f for f in inward if not own_frame(f)]
                frame = frame.f_back
        return None, [outermost]

    def _callback(self, found: dict[str, Any], running: bool) -> Any:
        """The callback the loop is running, and where its thread is in it, when it is in one."""
        handle = found["handle"]
        if handle is None:
            return _NO_LOOP_CALLBACK if running and not self._pure_python_loop(found["loop"]) else None
        callback = self._attribute(handle, "_callback")
        record: dict[str, Any] = {"handle": self._repr(handle), "callback": _callable_name(callback)}
        function = callback.__func__ if type(callback) is types.MethodType else callback
        if type(function) is types.FunctionType:
            record["file"], record["line"] = function.__code__.co_filename, function.__code__.co_firstlineno
        bound = (types.MethodType, types.BuiltinMethodType)
        wrapper = type_name(callback).rsplit(".", 1)[-1] in ("TaskStepMethWrapper", "TaskWakeupMethWrapper")
        if one_of(type(callback), bound) or wrapper:
            owner = getattr(callback, "__self__", None)
            if owner is not None and self._is_task(owner):
                record["task"] = hex(id(owner))
        innermost = found.get("frame")
        while innermost is not None and own_frame(innermost):
            innermost = innermost.f_back
        if innermost is not None:
            code = innermost.f_code
            record["now_in"] = {
                "file": code.co_filename,
                "line": innermost.f_lineno,
                "function": getattr(code, "co_qualname", code.co_name),
            }
        return record

    def _task(self, task: Any, running: bool) -> dict[str, Any]:
        raw = self._attribute(task, "_state")
        exception = self._attribute(task, "_exception") if raw == "FINISHED" else None
        state = ("failed" if exception is not None else "done") if raw == "FINISHED" else raw
        state = state.lower() if isinstance(state, str) else None
        record: dict[str, Any] = {"id": hex(id(task)), "name": self._name(task), "state": state}
        if exception is not None:
            ok, message = self._guarded(str, exception)
            record["exception"] = {"type": type_name(exception), "message": plain_text(message) if ok else None}
        coro = self._attribute(task, "_coro")
        record["coroutine"] = _callable_name(coro)
        record["running"] = running
        chain, leaf = self._chain(coro)
        if running and chain:
            chain = self._running_stack(chain[0])[1]
        record["frames"] = [self.stacks.frame(frame, None) for frame in chain]
        if state == "pending" and not running:
            record["awaits"] = self._awaits(chain, self._attribute(task, "_fut_waiter"), leaf)
        return record

    def _chain(self, coro: Any) -> tuple[list[types.FrameType], Any]:
        """The frames from the task's coroutine down to its innermost await, and what that
        innermost await holds (a future's iterator, another awaitable, or None)."""
        frames = []
        obj = coro
        for _ in range(MAX_CHAIN):
            kind = type(obj)
            if kind is types.CoroutineType:
                frame, obj = obj.cr_frame, obj.cr_await
            elif kind is types.GeneratorType:
                frame, obj = obj.gi_frame, obj.gi_yieldfrom
            elif kind is types.AsyncGeneratorType:
                frame, obj = obj.ag_frame, obj.ag_await
            else:
                break
            if frame is not None:
                frames.append(frame)
        return frames, obj

    def _awaits(self, chain: list[types.FrameType], waiter: Any, leaf: Any) -> dict[str, Any]:
        """What the innermost await waits on."""
        inner = chain[-1] if chain else None
        name = getattr(inner.f_code, "co_qualname", inner.f_code.co_name) if inner is not None else ""
        where = inner.f_code.co_filename if inner is not None else ""
        this = self._local(inner, "self") if inner is not None else None
        if name == "sleep" and where.endswith("tasks.py"):
            record: dict[str, Any] = {"kind": "sleep", "delay": _number(self._local(inner, "delay"))}
            timer = self._local(inner, "h")
            when = _number(self._attribute(timer, "_when"))
            if when is not None and self.now is not None:
                record["due_in_seconds"] = round(when - self.now, 6)
            return record
        if this is not None and where.endswith("queues.py"):
            items = self._attribute(this, "_queue")
            size = len(items) if type(items).__name__ in ("deque", "list") else None
            return {"kind": "queue", "call": name, "queue": type_name(this), "size": size,
                    "maxsize": _number(self._attribute(this, "_maxsize"))}  # fmt: skip
        if this is not None and where.endswith("locks.py"):
            record = {"kind": type(this).__name__.lower(), "call": name, "object": type_name(this)}
            for field in ("_locked", "_value"):
                value = self._attribute(this, field)
                if isinstance(value, (bool, int)):
                    record[field.lstrip("_")] = value
            waiters = self._attribute(this, "_waiters")
            if type(waiters).__name__ == "deque":
                record["waiters"] = len(waiters)
            return record
        if this is not None and where.endswith("taskgroups.py"):
            children = self._attribute(this, "_tasks")
            listed = list(children) if type(children) is set else []
            return {"kind": "taskgroup", "tasks": self._refer(listed[:MAX_LINKS]), "count": len(listed)}
        if this is not None and where.endswith("streams.py"):
            transport = self._attribute(this, "_transport")
            ok, peer = self._guarded(transport.get_extra_info, "peername") if transport is not None else (False, None)
            return {"kind": "stream", "call": name, "peer": self._repr(peer) if ok and peer is not None else None}
        if name.startswith(("BaseSelectorEventLoop.sock_", "sock_")) and this is not None:
            return {"kind": "socket", "call": name, "socket": self._repr(self._local(inner, "sock"))}
        target = waiter if waiter is not None else leaf
        if target is None:
            return {"kind": "nothing", "detail": "suspended with nothing to wait for (about to be resumed)"}
        if self._is_task(target):
            return {"kind": "task", "task": self._refer([target])[0], "name": self._name(target)}
        children = self._attribute(target, "_children")
        if type(children) is list:
            return {"kind": "gather", "tasks": self._refer(children[:MAX_LINKS]), "count": len(children)}
        return {"kind": "future", "future": self._repr(target)}

    def _refer(self, awaited: list[Any]) -> list[str]:
        """The ids of tasks (or futures) an await waits for, each kept to be described too:
        a finished one (done, failed, cancelled) is in no registry of pending tasks."""
        for task in awaited:
            if self._is_task(task):
                self.awaited.setdefault(id(task), task)
        return [hex(id(t)) for t in awaited]

    def _link(self, tasks: list[Any], records: dict[int, dict[str, Any]]) -> None:
        """Fill each record's ``awaited_by`` from the others' ``awaits``, and from 3.14's
        ``_asyncio_awaited_by``."""
        by_id = {hex(id(t)): t for t in tasks}
        awaited_by: dict[str, list[str]] = {}
        for record in records.values():
            awaits = record.get("awaits", {})
            children = awaits.get("tasks") or ([awaits["task"]] if "task" in awaits else [])
            for child in children:
                awaited_by.setdefault(child, []).append(record["id"])
        if sys.version_info >= (3, 14):
            for task in tasks:
                parents = self._attribute(task, "_asyncio_awaited_by")
                if type(parents) is frozenset:
                    listed = awaited_by.setdefault(hex(id(task)), [])
                    listed.extend(p for p in map(hex, map(id, parents)) if p not in listed)
        for ident, record in ((hex(id(t)), records[id(t)]) for t in by_id.values()):
            if ident in awaited_by:
                record["awaited_by"] = awaited_by[ident][:MAX_LINKS]

    # -- reading safely -----------------------------------------------------------------

    def _is_loop(self, obj: Any) -> bool:
        return issubclass(type(obj), self.asyncio.AbstractEventLoop)

    def _is_task(self, obj: Any) -> bool:
        return issubclass(type(obj), self.own_types) or issubclass(type(obj), self.asyncio.Task)

    def _task_field(self, task: Any, name: str) -> Any:
        """A field of a task: read directly from asyncio's own task types, else as any
        attribute of the application's objects is."""
        return getattr(task, name) if one_of(type(task), self.own_types) else self._attribute(task, name)

    def _pure_python_loop(self, loop: Any) -> bool:
        return issubclass(type(loop), self.asyncio.BaseEventLoop)

    def _attribute(self, obj: Any, name: str) -> Any:
        """``obj.name`` (None when missing); through a guarded call unless ``obj`` is of one
        of asyncio's own task, future or loop types, whose attributes run no Python code."""
        if obj is None:
            return None
        kind = type(obj)
        if self._trusted(kind):
            try:
                return getattr(obj, name, None)
            except Exception:
                return None
        # A subclass of asyncio's C task or future that leaves the attribute alone: read
        # it through the base type's own descriptor (a C getter), not the subclass.
        for base in (*self.own_types, *self.future_types):
            if issubclass(kind, base):
                found = class_attribute(kind, name)
                if found is not None and found is class_attribute(base, name) and one_of(type(found), _C_DESCRIPTORS):
                    try:
                        return found.__get__(obj, kind)
                    except Exception:
                        return None
                break
        ok, value = self._guarded(getattr, obj, name, None)
        return value if ok else None

    def _trusted(self, kind: type) -> bool:
        """Whether ``kind`` is asyncio's (or uvloop's) own, whose methods run no code of the application."""
        found = self.trusted.get(id(kind))
        if found is not None and found[0] is kind:
            return found[1]
        module = class_module(kind) or ""
        trusted = one_of(kind, self.own_types) or one_of(kind, self.future_types)
        if not trusted and (module.startswith("asyncio.") or module in _TRUSTED_MODULES):
            trusted = defined_in(kind, module)
        self.trusted[id(kind)] = kind, trusted
        return trusted

    def _call(self, method: Any, owner: Any, *args: Any) -> tuple[bool, Any]:
        """``method(*args)`` of ``owner``: directly when ``owner`` is trusted, else guarded."""
        if self._trusted(type(owner)):
            try:
                return True, method(*args)
            except Exception:
                return False, None
        return self._guarded(method, *args)

    def _guarded(self, fn: Any, *args: Any) -> tuple[bool, Any]:
        """``call_guarded``, until the application's code has run out of time ``MAX_OVERTIMES``
        times in this dump: then no more of it is called (a task factory's hostile method
        would otherwise cost a quarter of a second per task)."""
        if self.overtimes >= MAX_OVERTIMES:
            return False, "not called: the application's code ran out of time too often in this dump"
        ok, value = call_guarded(fn, *args)
        if not ok and isinstance(value, str) and value.startswith("gave up"):
            self.overtimes += 1
        return ok, value

    def _local(self, frame: types.FrameType | None, name: str) -> Any:
        if frame is None:
            return None
        try:  # f_locals runs no code of the application: it copies the frame's slots
            return frame.f_locals.get(name)
        except Exception:
            return None

    def _name(self, task: Any) -> Any:
        if one_of(type(task), self.own_types):
            return task.get_name()
        if id(task) in self.names:
            return self.names[id(task)]
        getter = self._attribute(task, "get_name")
        if getter is None:
            name = None
        elif one_of(type(task), self.own_types):
            name = getter()
        else:
            ok, name = self._guarded(getter)
            name = plain_text(name) if ok else None
        self.names[id(task)] = name
        return name

    def _ordered(self, tasks: list[Any], current: Any) -> list[Any]:
        """The loop's current task first, then the tasks given names of their own (a
        service's long-lived ones, mostly), then by age: ``Task-N`` names by N."""
        names = [self._name(t) for t in tasks]
        numbers = [int(n[5:]) if type(n) is str and n[5:].isdigit() and n.startswith("Task-") else -1 for n in names]
        order = sorted(range(len(tasks)), key=lambda i: (tasks[i] is not current, numbers[i] >= 0, numbers[i]))
        return [tasks[i] for i in order]

    def _repr(self, obj: Any) -> Any:
        ok, text = self._guarded(repr, obj)
        text = plain_text(text) if ok else None
        return text[:1000] if text is not None else {"$error": "its repr failed"}


def _callable_name(obj: Any) -> str | None:
    """The qualified name of a coroutine's or a callback's code, read only from the types
    that carry it (anything else is named by its type)."""
    kind = type(obj)
    if obj is None:
        return None
    if kind is types.CoroutineType:
        code = obj.cr_code
    elif kind is types.GeneratorType:
        code = obj.gi_code
    elif kind is types.AsyncGeneratorType:
        code = obj.ag_code
    elif kind is types.MethodType:
        code = obj.__func__.__code__ if type(obj.__func__) is types.FunctionType else None
    elif kind is types.FunctionType:
        code = obj.__code__
    elif kind is types.BuiltinFunctionType:  # the same type as BuiltinMethodType
        return str(obj.__qualname__)
    else:
        return type_name(obj)
    return getattr(code, "co_qualname", code.co_name) if code is not None else type_name(obj)


def _number(value: Any) -> float | int | None:
    return value if type(value) is int or type(value) is float else None
