"""One dump of one process from outside: prepare, inject, wait for the handshake, clean up.

ncore puts the payload, its parameters, a copy of pypanic and the code to inject into a
fresh private directory the target can see (mode 0700, owned by the target's user),
lets the chosen method make the target run it, and waits for the payload's ``result``.
The directory is removed at the end whatever happened, which also disarms a pending call
that never ran: without its files the injected code does nothing.

This is ncore's usual path, so it imports little: a complete dump is meant to take at most
three times a bare ``python -c pass`` (see BENCHMARKS.md), and json, dataclasses, tempfile,
shutil or pathlib would each cost more than the injection.
"""

from __future__ import annotations

import _thread
import os
import time

from .errors import BadUsage, DumpFailed, NcoreError, TargetExited, TimedOut
from .methods import Injection, Outcome, choose
from .payload import decode_fields, encode_fields
from .target import Target, inspect

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from .methods import Method

DEFAULT_MESSAGE = "core dump initiated at user request"
_PRIVATE_PARENTS = ("/tmp", "/var/tmp", "/dev/shm")
_HOLD_SECONDS = 5.0
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
        message: str = DEFAULT_MESSAGE,
        output_dir: str | None = None,
        timeout: float = 10.0,
        method: str = "auto",
        mode: str = "auto",
        gdb: str | None = None,
        probe: bool = False,
    ) -> None:
        self.pid = pid
        self.keep_running = keep_running
        self.message = message
        self.output_dir = output_dir
        self.timeout = timeout
        self.method = method
        self.mode = mode
        self.gdb = gdb
        self.probe = probe
        """Ask the process about itself (``ncore doctor --probe``) instead of taking a dump."""


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

    def record(self) -> dict[str, object]:
        """The result as ``--json`` prints it."""
        fields = ("pid", "path", "method", "injection", "why", "skipped", "pypanic", "target_exited",
                  "elapsed_seconds", "stopped_seconds", "python", "fell_back_from")  # fmt: skip
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


class PrivateDirectory:
    """A directory only the target's user can read, visible in the target's root.

    It is worked on through file descriptors, so that it can still be removed when the
    path that reached it (``/proc/PID/root/...``) went away with the target.
    """

    def __init__(self, target: Target) -> None:
        self.target = target
        failures = []
        for parent in _PRIVATE_PARENTS:
            try:
                self.parent_fd = os.open(target.host_path(parent), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                self.name = _fresh_directory(self.parent_fd)
            except OSError as e:
                failures.append(f"{parent}: {e.strerror}")
                continue
            self.host = target.host_path(f"{parent}/{self.name}")
            self.inside = f"{parent}/{self.name}"
            break
        else:
            raise NcoreError(
                f"found no directory the target can read to put the payload in ({'; '.join(failures)})",
                "make /tmp writable in the target's root",
            )
        self.fd = os.open(self.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.parent_fd)
        self._own(self.fd)
        self.package_fd: int | None = None

    def _own(self, fd: int) -> None:
        if os.geteuid() == 0:
            os.fchown(fd, self.target.uid, self.target.gid)

    def write(self, name: str, data: bytes, directory: int | None = None) -> str:
        """Create file ``name`` (it must not exist) holding ``data``; its path for the operator."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(name, flags, 0o600, dir_fd=self.fd if directory is None else directory)
        try:
            os.write(fd, data)
            self._own(fd)
        finally:
            os.close(fd)
        return os.path.join(self.host, name)

    def copy_package(self, source: str, name: str) -> None:
        """Copy the modules of package directory ``source`` into subdirectory ``name``."""
        os.mkdir(name, 0o700, dir_fd=self.fd)
        self.package_fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.fd)
        self._own(self.package_fd)
        for module in sorted(os.listdir(source)):
            if module.endswith(".py"):
                with open(os.path.join(source, module), "rb") as f:
                    self.write(module, f.read(), self.package_fd)

    def read_result(self) -> dict[str, str] | None:
        try:
            fd = os.open("result", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.fd)
        except OSError:
            return None
        with open(fd, "rb") as f:
            return decode_fields(f.read())

    def remove(self) -> None:
        """Remove the directory and everything in it; never raises (what cannot go, stays)."""
        if self.package_fd is not None:
            _remove_entries(self.package_fd)
            os.close(self.package_fd)
        _remove_entries(self.fd)
        os.close(self.fd)
        try:
            os.rmdir(self.name, dir_fd=self.parent_fd)
        except OSError:
            pass
        os.close(self.parent_fd)


def _remove_entries(directory: int) -> None:
    for entry in os.listdir(directory):
        try:
            os.unlink(entry, dir_fd=directory)
        except IsADirectoryError:
            try:
                os.rmdir(entry, dir_fd=directory)
            except OSError:
                pass
        except OSError:
            pass


def _fresh_directory(parent_fd: int) -> str:
    """Create a directory no one else can have made (mode 0700) in ``parent_fd``; its name."""
    while True:
        name = f"ncore.{os.urandom(6).hex()}"
        try:
            os.mkdir(name, 0o700, dir_fd=parent_fd)
            return name
        except FileExistsError:
            continue


def _carried_pypanic(target: Target, private: PrivateDirectory) -> str:
    """The pypanic the payload falls back on, as the target sees it: the one installed with
    ncore when the target can read it there and nobody else can change it, else a copy in
    the private directory (another root, a mount namespace, or a home the target cannot read)."""
    inside = target.inside_path(_PYPANIC)
    if inside is not None and _safe_for(target.uid, _PYPANIC):
        return inside
    private.copy_package(_PYPANIC, "pypanic")
    return f"{private.inside}/pypanic"


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
with open(__ncore_dir__ + "/payload.py", "rb") as f:
    code = compile(f.read(), "<ncore payload>", "exec")
exec(code)
"""
"""Runs the payload in the namespace it is given, the file closed before the payload starts."""


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
        raise BadUsage(
            f"process {target.pid} cannot see {requested}: it runs in another root ({target.root})",
            f"give a directory inside {target.root}, or leave --output-dir out (the dump goes to the target's"
            " working directory)",
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
    """The payload's answer: noticed, its dump made reachable for the operator, acknowledged.

    A payload in a process that is about to exit waits for the acknowledgement when the
    dump must be copied out of the target's mount namespace first.
    """

    def __init__(self, target: Target, private: PrivateDirectory, copy_out: bool) -> None:
        self.target = target
        self.private = private
        self.copy_out = copy_out
        self.answer: dict[str, str] | None = None
        self.path: str | None = None

    def poll(self) -> bool:
        if self.answer is not None:
            return True
        answer = self.private.read_result()
        if answer is None:
            return False
        inside = answer.get("path")
        if inside is not None:
            self.path = _copy_out(self.target, inside) if self.copy_out else self.target.host_path(inside)
        self.private.write("ack", b"")
        self.answer = answer
        return True


def take_dump(request: Request, progress: Callable[[str], None] = lambda step: None) -> Result:
    """Make process ``request.pid`` write a pypanic dump; raise an NcoreError when it cannot."""
    started = time.monotonic()
    deadline = started + request.timeout
    target = inspect(request.pid)
    method, skipped = choose(request.method, target, lambda name: make_method(name, request, deadline))
    output_dir = output_directory(target, request.output_dir)
    progress("inspected")
    private = PrivateDirectory(target)
    try:
        copy_out = not request.keep_running and not target.same_mount_namespace
        params = {"message": request.message, "keep_running": "1" if request.keep_running else "0",
                  "directory": output_dir, "hold_seconds": str(_HOLD_SECONDS if copy_out else 0),
                  "probe": "1" if request.probe else None}  # fmt: skip
        params["pypanic"] = _carried_pypanic(target, private)
        private.write("params", encode_fields(params))
        with open(os.path.join(os.path.dirname(__file__), "payload.py"), "rb") as f:
            private.write("payload.py", f.read())
        code = injected_code(private.inside)
        code_file = private.write("code.py", code)
        injection = Injection(code, code_file, request.mode, deadline, script=f"{private.inside}/code.py")
        handshake = Handshake(target, private, copy_out)
        outcome = _run(method, target, injection, handshake)
        progress("injected")
        try:
            _wait_for_answer(target, handshake, outcome, deadline)
            progress("answered")
            return _result(request, target, handshake, outcome, skipped, started, output_dir, deadline)
        except NcoreError as e:
            e.transcript = e.transcript or outcome.transcript
            raise
    finally:
        private.remove()


def _run(method: Method, target: Target, injection: Injection, handshake: Handshake) -> Outcome:
    """Run the method in a thread, so that a payload running inside the method's call (a
    direct call) can be answered meanwhile."""
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

    _thread.start_new_thread(work, ())
    while not done.acquire(timeout=_POLL_SECONDS):
        handshake.poll()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["outcome"]  # type: ignore[return-value]


def _wait_for_answer(target: Target, handshake: Handshake, outcome: Outcome, deadline: float) -> None:
    next_check = 0.0
    while not handshake.poll():
        now = time.monotonic()
        if now >= next_check:
            next_check = now + _CHECK_SECONDS
            if not target.alive():
                if handshake.poll():
                    return
                raise TargetExited(
                    f"process {target.pid} exited before it reported a dump ({outcome.path} call via {outcome.method})",
                    "look at the target's standard error for pypanic's log lines",
                )
        if now > deadline:
            state = target.main_thread().describe(target.runtime)
            raise TimedOut(
                f"process {target.pid} did not run the dump in time: the code was queued as a {outcome.path} call "
                f"because {outcome.why}, and the main thread is now {state}. The target was left running and the "
                "queued call disarmed",
                "a main thread stuck in a long C call that holds the GIL never reaches a safe point; try again "
                "later or with a longer --timeout",
            )
        time.sleep(_POLL_SECONDS)


def _result(
    request: Request,
    target: Target,
    handshake: Handshake,
    outcome: Outcome,
    skipped: list[str],
    started: float,
    output_dir: str | None,
    deadline: float,
) -> Result:
    answer = handshake.answer or {}
    if request.probe:
        if answer.get("error"):
            raise NcoreError(f"process {target.pid} could not answer the probe: {answer['error']}")
        result = Result(target, "", outcome, skipped, answer.get("pypanic", "?"), False, started)
        result.facts = answer
        return result
    if answer.get("error") or handshake.path is None:
        raise DumpFailed(
            f"process {target.pid} could not write its dump: {answer.get('error')}",
            "check that the target's working directory (or --output-dir) is writable and has room",
        )
    exited = False if request.keep_running else _wait_for_exit(target, until=min(time.monotonic() + 2, deadline))
    result = Result(target, handshake.path, outcome, skipped, answer.get("pypanic", "?"), exited, started)
    if output_dir is not None and os.path.dirname(answer.get("path", "")) != output_dir:
        result.fell_back_from = request.output_dir
    return result


def _copy_out(target: Target, inside: str) -> str:
    """Copy a dump out of another mount namespace before the target's exit takes it away;
    into the working directory, under a name not yet taken."""
    import shutil  # here: a panic dump from another mount namespace is the only copy ncore makes

    name = os.path.basename(inside)
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


def _wait_for_exit(target: Target, until: float) -> bool:
    while time.monotonic() < until:
        if not target.alive():
            return True
        time.sleep(_POLL_SECONDS)
    return False
