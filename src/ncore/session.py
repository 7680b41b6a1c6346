"""One dump of one process from outside: prepare, inject, wait for the handshake, clean up.

ncore takes the target's lock (one ncore per process at a time), puts the payload, its
parameters, a copy of pypanic and the code to inject into a fresh private directory the
target can see (ncore.private), lets the chosen method make the target run it, and
waits for the payload's ``result``. A request the target has not taken when ncore stops
waiting (the time limit, or Ctrl-C) is withdrawn, so that it never runs; a dump under way
is waited for within the time budget it announced, and past that left to finish on its
own, with the directory it needs. Otherwise the directory is removed at the end.

This is ncore's usual path, so it imports little: a complete dump is meant to take at most
three times a bare ``python -c pass`` (see BENCHMARKS.md), and json, dataclasses, tempfile,
shutil or pathlib would each cost more than the injection.
"""

from __future__ import annotations

import _thread
import os
import sys
import time

from . import interrupts
from .errors import (
    AlreadyTraced,
    BadUsage,
    Busy,
    DumpFailed,
    Interrupted,
    NcoreError,
    PermissionDenied,
    TargetExited,
    TimedOut,
)
from .methods import Injection, Outcome, choose, forget, page_image, still_queued
from .payload import decode_fields, encode_fields
from .private import QUEUED, Place, PrivateDirectory, TargetLock, sweep
from .target import Target, already_traced, inspect

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import CodeType

    from .methods import Method

DEFAULT_MESSAGE = "core dump initiated at user request"
SIGNAL = "signal"
"""The method that asks a process listening for a dump signal (ncore.signaled); not one of
``auto``'s injection methods, which it falls back on when they are refused for permission."""
_HOLD_SECONDS = 5.0
"""How long a panicking payload waits for ncore to copy its dump out of its mount namespace."""
_ACK_SECONDS = 1.0
"""How long a payload otherwise waits for ncore's acknowledgement before it returns."""
_BUDGET_SECONDS = 12.0
"""A started dump's time budget until the payload has said it (pypanic's default and margin)."""
_MARGIN_SECONDS = 2.0
"""Waited past a dump's budget before ncore leaves it to finish on its own."""
_POLL_SECONDS = 0.0005
_CHECK_SECONDS = 0.01
"""How often a wait also looks whether the target is still alive."""
_PYPANIC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pypanic")
"""The pypanic package installed with ncore (found, not imported: ncore does not need it loaded)."""


class Request:
    """What the operator asked for."""

    def __init__(
        self,
        pid: int,
        keep_running: bool = False,
        in_place: bool = False,
        message: str = DEFAULT_MESSAGE,
        output_dir: str | None = None,
        timeout: float = 10.0,
        method: str = "auto",
        mode: str = "auto",
        gdb: str | None = None,
        probe: bool = False,
        read_only: bool = False,
        native: bool = False,
        fallback: bool = True,
    ) -> None:
        self.pid = pid
        self.keep_running = keep_running
        self.in_place = in_place
        """Write a snapshot from the process itself, not from a forked writer (pypanic._background)."""
        self.message = message
        self.output_dir = output_dir
        self.timeout = timeout
        self.method = method
        self.mode = mode
        self.gdb = gdb
        self.probe = probe
        """Ask the process about itself (``ncore doctor --probe``) instead of taking a dump."""
        self.read_only = read_only
        """Read the process from outside, running no code in it (ncore.readonly)."""
        self.native = native
        """Add the native (C) frames to a dump read from outside."""
        self.fallback = fallback
        """Read the process from outside when the injected dump has not started in time."""


class Result:
    """A dump that was written, and how it was taken."""

    def __init__(
        self,
        target: Target,
        path: str,
        outcome: Outcome,
        skipped: list[str],
        pypanic: str,
        exited: bool,
        started: float,
    ) -> None:
        self.pid = target.pid
        self.nspid = target.nspid
        self.path = path
        self.method = outcome.method
        self.injection = outcome.path
        self.why = outcome.why
        self.skipped = skipped
        """Why each method ``auto`` tried first could not serve the target."""
        self.pypanic = pypanic
        self.target_exited = exited
        self.elapsed_seconds = time.monotonic() - started
        self.stopped_seconds = outcome.stopped_seconds
        self.python = target.version_text
        self.transcript = outcome.transcript
        self.fell_back_from: str | None = None
        """The --output-dir the process could not write in, when its dump went elsewhere."""
        self.facts: dict[str, str] = {}
        """What a probe's answer said (``directory``, ``writable``)."""
        self.read_only: str | None = None
        """Why the dump was read from outside the process instead of written by it (None: it was not)."""
        self.passed_over = ""
        """Why a dump ncore wrote itself did not go to the directories before its own."""
        self.writer: int | None = None
        """The pid of the forked copy of the process that wrote its snapshot (None: written in place)."""

    def record(self) -> dict[str, object]:
        """The result as ``--json`` prints it."""
        fields = ("pid", "nspid", "path", "method", "injection", "why", "skipped", "pypanic", "target_exited",
                  "elapsed_seconds", "stopped_seconds", "python", "fell_back_from", "read_only", "writer")  # fmt: skip
        return {"status": "dumped", **{name: getattr(self, name) for name in fields}}


def make_method(name: str, request: Request, deadline: float | None = None) -> Method:
    """The method called ``name``, its module imported only now; its checks end by
    ``deadline`` (time.monotonic(); by default the request's timeout from now)."""
    if name == "remote-exec":
        from .methods.remote_exec import RemoteExec

        return RemoteExec()
    if name == "ptrace":
        from .methods.ptrace import Ptrace

        return Ptrace()
    if name == "gdb":
        from .methods.gdb import Gdb

        return Gdb(request.gdb, time.monotonic() + request.timeout if deadline is None else deadline)
    raise ValueError(f"no method {name!r}")


def _carried_pypanic(target: Target, private: PrivateDirectory) -> str:
    """The pypanic the payload falls back on, as the target sees it: the one installed with
    ncore when the target can read it there and nobody else can change it, else a copy in
    the private directory (another root, a mount namespace, or a home the target cannot read)."""
    inside = target.inside_path(_PYPANIC)
    if inside is not None and _safe_for(target.uid, _PYPANIC):
        return inside
    private.copy_package(_PYPANIC, "pypanic")
    return f"{private.inside}/pypanic"


def package_key(package: str) -> str:
    """What tells one pypanic from another in a target that kept the copy an earlier dump
    loaded: the names, sizes and modification times of its modules (a reinstall changes them)."""
    names = sorted(name for name in os.listdir(package) if name.endswith(".py"))
    stats = [(name, os.stat(os.path.join(package, name))) for name in names]
    return ";".join(f"{name}:{stat.st_size}:{stat.st_mtime_ns}" for name, stat in stats)


def _safe_for(uid: int, package: str) -> bool:
    """Whether user ``uid`` may read ``package`` (a directory of modules) while only root or
    ncore's own user can change it or any directory above it. Group rights are not counted."""
    directories = ["/"]
    for part in package.strip("/").split("/"):
        directories.append(os.path.join(directories[-1], part))
    modules = [os.path.join(package, name) for name in os.listdir(package) if name.endswith(".py")]
    for path in directories + modules:
        info = os.stat(path)
        shared_writable = info.st_mode & 0o022 and not info.st_mode & 0o1000  # sticky, like /tmp: fine
        if info.st_uid not in (0, os.geteuid()) or shared_writable:
            return False
        needed = 0o005 if path in directories else 0o004
        if info.st_uid != uid and info.st_mode & needed != needed:
            return False
    return True


_LOADER = """\
import sys
with open(__ncore_dir__ + "/payload.py", "rb") as f:
    source = f.read()
kept = sys.modules.get("_ncore_payload")
if getattr(kept, "source", None) != source:
    kept = type(sys)("_ncore_payload", "ncore's payload, as the first dump of this process that ran it loaded it")
    try:
        with open(__ncore_dir__ + "/payload.pyc", "rb") as f:
            compiled = f.read()
    except OSError:
        compiled = b""
    if compiled[:4] == sys.modules["_frozen_importlib_external"].MAGIC_NUMBER:
        import marshal
        kept.code = marshal.loads(compiled[4:])
    else:
        kept.code = compile(source, "<ncore payload>", "exec")
    kept.source = source
    sys.modules["_ncore_payload"] = kept
exec(kept.code)
"""
"""Runs the payload in the namespace it is given, the file closed before the payload
starts. The payload is loaded once per process and kept in ``sys.modules`` as
``_ncore_payload`` with its source: compiling it again took 4 to 8 ms of every later
dump, with the GIL held. The first dump compiles it too only when ncore brings no
bytecode the process can run (``payload.pyc``: its magic number, then the code)."""

_PAYLOAD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "payload.py")


def payload_bytecode(source: bytes, target: Target) -> bytes | None:
    """The bytecode of the payload ``source`` for ``target``, taken from ncore's own cache
    of its compiled modules: the magic number, then the marshalled code, named as if the
    target had compiled it (``<ncore payload>``, which pypanic leaves out of stacks).
    None when there is none to give: the target runs another Python version than ncore,
    or ncore's cached bytecode is missing or not that of ``source``. It spares a target's
    first dump compiling the payload (5 ms, with the GIL held)."""
    if target.version != sys.version_info[:2]:
        return None
    cached = os.path.join(os.path.dirname(_PAYLOAD), "__pycache__", f"payload.{sys.implementation.cache_tag}.pyc")
    try:
        with open(cached, "rb") as f:
            data = f.read()
        stat = os.stat(_PAYLOAD)
    except OSError:
        return None
    import _imp
    import marshal

    magic = data[:4]
    if len(data) < 16 or magic != sys.modules["_frozen_importlib_external"].MAGIC_NUMBER:
        return None
    flags = int.from_bytes(data[4:8], "little")
    if flags & 1:  # hash-based (PEP 552): the hash of the source it was compiled from
        if data[8:16] != _imp.source_hash(int.from_bytes(magic, "little"), source):
            return None
    elif data[8:16] != _pyc_stamp(stat.st_mtime, stat.st_size):
        return None
    try:
        code = marshal.loads(data[16:])
    except (EOFError, ValueError, TypeError):
        return None  # a damaged cache: the target compiles the source
    return magic + marshal.dumps(_renamed(code, "<ncore payload>"))


def _pyc_stamp(mtime: float, size: int) -> bytes:
    """A timestamp pyc's record of its source: modification time and size, modulo 2**32."""
    return (int(mtime) & 0xFFFFFFFF).to_bytes(4, "little") + (size & 0xFFFFFFFF).to_bytes(4, "little")


def _renamed(code: CodeType, filename: str) -> CodeType:
    """``code`` and every code object in it with ``co_filename`` set to ``filename``."""
    consts = tuple(_renamed(c, filename) if type(c) is type(code) else c for c in code.co_consts)
    return code.replace(co_filename=filename, co_consts=consts)


def injected_code(directory: str) -> bytes:
    """The code the target runs: execute the payload, and never let anything escape.

    It binds no name in ``__main__`` (where PyRun_SimpleString runs), not even the
    ``__warningregistry__`` a warning raised in its frame would add: everything but the
    call happens in a namespace of its own. It raises nothing (a pending call whose code
    raises kills the process with SystemError).
    """
    namespace = {"__name__": "__ncore_payload__", "__ncore_dir__": directory}
    return f"try:\n    exec({_LOADER!r}, {namespace!r})\nexcept BaseException:\n    pass\n".encode()


def output_directory(target: Target, requested: str | None) -> str | None:
    """--output-dir as the target sees it; refused when the target could not write there
    (pypanic would quietly write elsewhere)."""
    if requested is None:
        return None
    if not os.path.isdir(requested):
        raise BadUsage(f"--output-dir {requested} is not a directory", "create it first, or give another one")
    inside = target.inside_path(requested)
    if inside is None:
        where = f"another root ({target.root})" if target.same_mount_namespace else "another mount namespace"
        raise BadUsage(
            f"process {target.pid} cannot see {requested}: it runs in {where}, as in a container",
            "leave --output-dir out (the dump goes to the target's working directory, and a panic's dump is "
            "copied out to yours), or add --read-only (ncore writes that dump itself, anywhere)",
        )
    why = target.cannot_write(requested)
    if why is not None:
        raise DumpFailed(
            f"process {target.pid} ({target.comm}) could not write its dump in {requested}: {why}",
            f"give --output-dir a directory uid {target.uid} can write, or leave it out (the dump goes to the "
            "target's working directory)",
        )
    return inside


class Handshake:
    """The request and the payload's answer, as ncore sees them in the private directory.

    The request is ``params`` until the payload claims it (renamed ``taken``) or ncore
    withdraws it (renamed ``withdrawn``): only one rename succeeds, so a request is never
    both run and withdrawn. Once it has claimed the request, the payload writes ``started``
    with the time its dump may take (pypanic's budget), then ``result``, its answer, and
    waits for ``ack`` before it returns (or exits, for a panic).
    """

    def __init__(self, target: Target, private: PrivateDirectory, copy_out: bool, deadline: float) -> None:
        self.target = target
        self.private = private
        self.copy_out = copy_out
        self.deadline = deadline
        self.answer: dict[str, str] | None = None
        self.path: str | None = None
        self.claimed_at: float | None = None
        self.budget: float | None = None
        """How long the dump may take once started, as the payload said."""
        self.gave_up: str | None = None
        """Why ncore stopped waiting: ``late`` or ``interrupted`` (the request was withdrawn
        before the target took it) or ``overdue`` (the dump outlived its budget)."""
        self.acknowledged = False
        self.writer_lost: str | None = None
        """Why a snapshot's forked writer ended without answering (killed, out of memory)."""
        self._writer: int | None = None

    def poll(self) -> bool:
        """Whether the payload has answered; notes that it has claimed the request."""
        if self.answer is not None:
            return True
        if self.claimed_at is None and self.private.exists("taken"):
            self.claimed_at = time.monotonic()
        if self.claimed_at is not None and self.budget is None:
            started = self.private.read("started")
            if started:
                self.budget = float(decode_fields(started).get("seconds", _BUDGET_SECONDS))
        data = self.private.read("result")
        if data is None:
            return False
        answer = decode_fields(data)
        inside = answer.get("path")
        if inside is not None:
            self.path = _copy_out(self.target, inside) if self.copy_out else self.target.host_path(inside)
        self.answer = answer
        return True

    def writer(self) -> int | None:
        """The pid of the snapshot's forked writer, as the payload named it (None: written in place)."""
        if self._writer is None:
            data = self.private.read("writer")
            pid = int(decode_fields(data).get("pid", "0")) if data else 0
            self._writer = pid if pid > 0 else None
        return self._writer

    def check_writer(self) -> None:
        """Note, as the answer, that the forked writer has ended without answering; never
        when it is in another PID namespace, whose pids ncore cannot look up (the dump's
        budget bounds that wait)."""
        pid = self.writer()
        if pid is None or self.target.nspid:
            return
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
                    return
        except OSError:
            pass
        if not self.poll():
            self.writer_lost = f"its snapshot's writer (process {pid}, a fork of it) ended without writing the dump"
            self.answer = {"error": self.writer_lost}

    def acknowledge(self) -> None:
        if not self.acknowledged:
            try:
                self.private.write("ack", b"")
            except FileExistsError:
                pass
            self.acknowledged = True

    def decide(self, now: float) -> None:
        """Stop waiting when it is time: the request is withdrawn if the target has not
        taken it by the deadline or ncore was asked to stop; a dump under way is waited
        for until its budget (and a margin) runs out."""
        if self.answer is not None or self.gave_up is not None:
            return
        stop = interrupts.requested()
        if self.claimed_at is None and (stop is not None or now > self.deadline):
            if self.private.rename("params", "withdrawn"):
                self.gave_up = "late" if stop is None else "interrupted"
            else:
                self.claimed_at = now  # the payload took it just now
            return
        if self.claimed_at is not None:
            due = self.claimed_at + (self.budget if self.budget is not None else _BUDGET_SECONDS) + _MARGIN_SECONDS
            if now > max(due, self.deadline):
                self.gave_up = "overdue"


def take_dump(request: Request, progress: Callable[[str], None] = lambda step: None) -> Result:
    """Make process ``request.pid`` write a pypanic dump; raise an NcoreError when it cannot."""
    started = time.monotonic()
    deadline = started + request.timeout
    _stop_if_asked(request.pid, "before ncore looked at it")
    # Another tracer is refused only under the target's lock: until then it may be an ncore
    # that holds the lock, and this one waits for it.
    target = inspect(request.pid, refuse_traced=False)
    output_dir = None if request.read_only else output_directory(target, request.output_dir)
    place = Place(target)
    lock = TargetLock(place, target)
    try:
        lock.acquire(deadline, lambda: _stop_if_asked(request.pid, "while another ncore was dumping it"))
        _wait_for_earlier_dumps(place, target, deadline)
        traced = already_traced(target.pid)
        if traced is not None:
            raise traced
        if request.read_only:
            return _read_only(request, target, started, None, [])
        if request.method == SIGNAL:
            return _by_signal(request, target, started, output_dir, [])
        # Chosen only now: how the main thread is found decides, and another ncore's dump changes it.
        try:
            method, skipped = choose(request.method, target, lambda name: make_method(name, request, deadline))
        except NcoreError:
            # A Ctrl-C to ncore's process group also reaches a check's child (gdb --version)
            # before it leaves the group, and fails that check: say what the operator did.
            _stop_if_asked(request.pid, "before ncore touched it")
            raise
        progress("inspected")
        _stop_if_asked(request.pid, "before ncore touched it")
        try:
            try:
                return _dump(request, target, place, method, skipped, output_dir, started, progress)
            except WriterLost as e:
                progress("in place")
                request.in_place = True
                result = _dump(request, target, place, method, skipped, output_dir, started, progress)
                result.skipped.append(f"forked writer: {e.message}")
                return result
        except PermissionDenied as e:
            from . import signaled

            if request.method != "auto" or signaled.unavailable(target) is not None:
                e.hint += (
                    "; or, with no right to trace, start the process with PYPANIC_SIGNAL=SIGRTMIN+3 (pypanic "
                    "imported): ncore then asks it for its dump by signal"
                )
                raise
            progress("by signal")
            return _by_signal(request, target, started, output_dir, [*skipped, f"{method.name}: {e.message}"])
        except NeverStarted as e:
            if not request.fallback or interrupts.requested() is not None:
                raise
            progress("read from outside")
            return _read_only(request, target, started, e, skipped)
    finally:
        lock.release()
        place.close()


def _by_signal(request: Request, target: Target, started: float, output_dir: str | None, skipped: list[str]) -> Result:
    """A dump the process takes on its dump signal (ncore.signaled)."""
    from . import signaled

    return signaled.dump(request, target, started, output_dir, skipped)


def _read_only(
    request: Request, target: Target, started: float, timed_out: NeverStarted | None, skipped: list[str]
) -> Result:
    """A dump read from outside (ncore.readonly): asked for, or instead of one that never started."""
    from . import readonly

    if timed_out is None:
        return readonly.dump(request, target, started, readonly.ASKED)
    why = f"the injected dump had not started after {request.timeout:g} s (the main thread was {timed_out.state})"
    try:
        result = readonly.dump(request, target, started, why, skipped)
    except NcoreError as e:
        timed_out.message += f"; reading it from outside instead failed too: {e.message}"
        raise timed_out from None
    result.transcript = timed_out.transcript
    return result


def _dump(
    request: Request,
    target: Target,
    place: Place,
    method: Method,
    skipped: list[str],
    output_dir: str | None,
    started: float,
    progress: Callable[[str], None],
) -> Result:
    """The dump, once ncore holds the target's lock: the private directory, the injection,
    the wait for the answer, and the directory released (kept while the target may use it)."""
    deadline = started + request.timeout
    private = PrivateDirectory(place, target, method.name)
    handshake: Handshake | None = None
    try:
        copy_out = not request.keep_running and not target.same_mount_namespace
        params = {"message": request.message, "keep_running": "1" if request.keep_running else "0",
                  "background": "1" if request.keep_running and not request.in_place else "0",
                  "directory": output_dir, "hold_seconds": str(_HOLD_SECONDS if copy_out else _ACK_SECONDS),
                  "probe": "1" if request.probe else None,
                  "pids": ",".join(map(str, target.nspid)) if target.nspid else None}  # fmt: skip
        params["pypanic"] = _carried_pypanic(target, private)
        params["pypanic_key"] = package_key(_PYPANIC)
        private.write("params", encode_fields(params))
        with open(_PAYLOAD, "rb") as f:
            source = f.read()
        private.write("payload.py", source)
        bytecode = payload_bytecode(source, target)
        if bytecode is not None:
            private.write("payload.pyc", bytecode)
        code = injected_code(private.inside)
        code_file = private.write("code.py", code)
        running_lock, running_inside = place.running_lock(target)
        page, pending_at = page_image(code, target, running_inside)
        page_file = private.write("page", page)
        injection = Injection(code, code_file, request.mode, deadline, f"{private.inside}/code.py",
                              page, pending_at, running_lock, page_file)  # fmt: skip
        handshake = Handshake(target, private, copy_out, deadline)
        outcome = _inject(method, target, injection, handshake)
        private.write(QUEUED, b"")
        progress("injected")
        try:
            _wait_for_answer(target, handshake, outcome)
            progress("answered")
            return _result(request, target, handshake, outcome, skipped, started, output_dir)
        except NcoreError as e:
            e.transcript = e.transcript or outcome.transcript
            raise
    finally:
        private.release(remove=not _still_needed(handshake, private, target, method))


def _still_needed(handshake: Handshake | None, private: PrivateDirectory, target: Target, method: Method) -> bool:
    """Whether the target may still use the private directory: a dump under way, or a
    request it may still open the code of (ncore.methods.forget)."""
    if handshake is None:
        return False
    if handshake.claimed_at is not None or private.exists("taken"):
        return handshake.answer is None and target.alive()
    return not forget(target.pid, method.name, f"{private.inside}/code.py")


def _stop_if_asked(pid: int, when: str) -> None:
    number = interrupts.requested()
    if number is not None:
        raise Interrupted(f"stopped by {interrupts.describe(number)} {when}: process {pid} was left as it was", number)


def _wait_for_earlier_dumps(place: Place, target: Target, deadline: float) -> None:
    """Sweep what ncores that are gone left behind, and wait while a dump of ``target`` one
    of them started is still being written."""
    while sweep(place, target, still_queued):
        _stop_if_asked(target.pid, "while it waited for an earlier dump of it")
        if time.monotonic() > deadline:
            raise AlreadyTraced(
                f"process {target.pid} is still writing a dump another ncore (now gone) asked for",
                "wait for it to finish (its dump appears in the target's directory) and run ncore again",
            )
        time.sleep(_CHECK_SECONDS)


def _inject(method: Method, target: Target, injection: Injection, handshake: Handshake) -> Outcome:
    """Run the method in a thread, so that a payload running inside the method's call (a
    direct call) can be answered, acknowledged or given up on meanwhile."""
    injection.answered = lambda: handshake.answer is not None or handshake.private.exists("writer")
    injection.wanted = lambda: handshake.gave_up is None
    injection.acknowledge = handshake.acknowledge
    box: dict[str, object] = {}
    done = _thread.allocate_lock()
    done.acquire()

    def work() -> None:
        try:
            box["outcome"] = method.inject(target, injection)
        except BaseException as e:
            box["error"] = e
        finally:
            done.release()

    while True:
        _thread.start_new_thread(work, ())
        while not done.acquire(timeout=_POLL_SECONDS):
            if handshake.poll() and not injection.acknowledged_by_method:
                handshake.acknowledge()
            handshake.decide(time.monotonic())
        error = box.pop("error", None)
        if not isinstance(error, Busy) or time.monotonic() > injection.deadline:
            break
        _stop_if_asked(target.pid, "while it waited for another ncore's pending call to end")
        time.sleep(_CHECK_SECONDS)
    if isinstance(error, BaseException):
        raise error
    return box["outcome"]  # type: ignore[return-value]


def _wait_for_answer(target: Target, handshake: Handshake, outcome: Outcome) -> None:
    next_check = 0.0
    while not handshake.poll():
        now = time.monotonic()
        if now >= next_check:
            next_check = now + _CHECK_SECONDS
            handshake.check_writer()
            if handshake.answer is not None:
                break
            if not target.alive():
                if handshake.poll():
                    break
                raise TargetExited(
                    f"process {target.pid} exited before it reported a dump ({outcome.path} call via {outcome.method})",
                    "look at the target's standard error for pypanic's log lines",
                )
        handshake.decide(now)
        if handshake.gave_up is not None:
            raise _given_up(target, handshake, outcome)
        time.sleep(_POLL_SECONDS)
    handshake.acknowledge()


def _given_up(target: Target, handshake: Handshake, outcome: Outcome) -> NcoreError:
    """Why ncore stopped waiting, and what it left."""
    pid = target.pid
    if handshake.gave_up == "overdue":
        budget = handshake.budget if handshake.budget is not None else _BUDGET_SECONDS
        writer = handshake.writer()
        if writer is not None and not target.nspid:
            # A copy of the process that outlived its own time limit (it hung before it could
            # set it, in an at-fork handler): it serves no one, and holds memory.
            import signal

            try:
                os.kill(writer, signal.SIGKILL)
            except OSError:
                pass
            return TimedOut(
                f"process {pid}'s snapshot writer (process {writer}, a fork of it) did not finish within the "
                f"dump's time budget ({budget:g} s and a {_MARGIN_SECONDS:g} s margin); ncore killed the writer, "
                "and the process runs on without a snapshot",
                "run ncore again with --in-place",
            )
        return TimedOut(
            f"process {pid} started its dump but did not finish it within its time budget ({budget:g} s and a "
            f"{_MARGIN_SECONDS:g} s margin); it was left to finish on its own, and its dump appears in its "
            "directory when done",
            "look at the target's standard error for pypanic's log lines; a dump that needs longer needs a larger "
            "max_seconds (PYPANIC_MAX_SECONDS)",
        )
    queued = f"the code was queued as a {outcome.path} call because {outcome.why}"
    if handshake.gave_up == "interrupted":
        number = interrupts.requested() or 2
        return Interrupted(
            f"stopped by {interrupts.describe(number)} before process {pid} started its dump ({queued}); ncore "
            "withdrew the request: the target was left running and will not dump",
            number,
        )
    state = target.main_thread().describe(target.runtime)
    if outcome.path == "direct":
        state = f"still in the borrowed call, which has not reached the dump ({state}); it returns on its own"
    return NeverStarted(
        state,
        f"process {pid} did not start the dump in time: {queued}, and the main thread is now {state}. ncore "
        "withdrew the request: the target was left running and will not dump",
        "a main thread stuck in a long C call that holds the GIL never reaches a safe point; read it from "
        "outside instead (leave out --no-fallback, or use --read-only), or try again with a longer --timeout",
    )


class NeverStarted(TimedOut):
    """The injected dump had not started by the time limit, and its request was withdrawn:
    the process was left as it was (the fallback reads it from outside)."""

    def __init__(self, state: str, message: str, hint: str) -> None:
        super().__init__(message, hint)
        self.state = state
        """What the main thread was doing, as ``ThreadState.describe`` says."""


class WriterLost(DumpFailed):
    """A snapshot's forked writer ended without writing the dump (killed by an operator, by
    the OOM killer, or at its time limit): take_dump then asks for one written in place."""


def _result(
    request: Request,
    target: Target,
    handshake: Handshake,
    outcome: Outcome,
    skipped: list[str],
    started: float,
    output_dir: str | None,
) -> Result:
    answer = handshake.answer or {}
    if request.probe:
        if answer.get("error"):
            raise NcoreError(f"process {target.pid} could not answer the probe: {answer['error']}")
        result = Result(target, "", outcome, skipped, answer.get("pypanic", "?"), False, started)
        result.facts = answer
        return result
    error = answer.get("error")
    if handshake.writer_lost is not None:
        raise WriterLost(f"process {target.pid}: {handshake.writer_lost}", "ncore takes the snapshot in place instead")
    if error is not None and error.startswith("NestedPanic"):
        raise DumpFailed(
            f"process {target.pid} was already writing a dump on its main thread, and the one asked for came "
            f"inside it: {error}",
            "run ncore again once that dump is written",
        )
    if error or handshake.path is None:
        raise DumpFailed(
            f"process {target.pid} could not write its dump: {error}",
            "check that the target's working directory (or --output-dir) is writable and has room",
        )
    exited = False if request.keep_running else wait_for_exit(target, until=time.monotonic() + 2)
    result = Result(target, handshake.path, outcome, skipped, answer.get("pypanic", "?"), exited, started)
    result.writer = handshake.writer()
    if output_dir is not None and os.path.dirname(answer.get("path", "")) != output_dir:
        result.fell_back_from = request.output_dir
    elif output_dir is None:
        result.fell_back_from = _working_directory_refused(target, handshake.path)
    return result


def _working_directory_refused(target: Target, path: str) -> str | None:
    """The process's working directory, when it could not write its dump there and the dump
    went elsewhere (pypanic's fallback); None otherwise."""
    cwd = target.cwd
    if not target.same_mount_namespace or cwd is None:
        return None
    if os.path.dirname(path) == cwd or target.cannot_write(cwd) is None:
        return None
    return cwd


def _copy_out(target: Target, inside: str) -> str:
    """Copy a dump out of another mount namespace before the target's exit takes it away;
    into the working directory, as ``ncore.<pid ncore was given>`` or the next free name."""
    import shutil  # here: a panic dump from another mount namespace is the only copy ncore makes

    name = f"ncore.{target.pid}"  # inside its PID namespace the process may be ncore.1
    n = 0
    while True:
        destination = os.path.abspath(name if n == 0 else f"{name}.{n}")
        try:  # O_EXCL: never over another dump, even one another ncore wrote meanwhile
            fd = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            n += 1
            continue
        with open(fd, "wb") as copy, open(target.host_path(inside), "rb") as dump:
            shutil.copyfileobj(dump, copy)
        return destination


def wait_for_exit(target: Target, until: float) -> bool:
    """Whether ``target`` exits before ``until`` (time.monotonic())."""
    while time.monotonic() < until:
        if not target.alive():
            return True
        time.sleep(_POLL_SECONDS)
    return False
