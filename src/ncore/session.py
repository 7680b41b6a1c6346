"""One dump of one process from outside: prepare, inject, wait for the handshake, clean up.

ncore puts the payload, its parameters, a copy of pypanic and the code to inject into a
fresh private directory the target can see (mode 0700, owned by the target's user),
lets the chosen method make the target run it, and waits for the payload's
``result.json``. The directory is removed at the end whatever happened, which also
disarms a pending call that never ran: without its files the injected code does nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pypanic

from .errors import BadUsage, DumpFailed, NcoreError, TargetExited, TimedOut
from .methods import Injection, Method, Outcome, choose
from .methods.gdb import Gdb
from .methods.ptrace import Ptrace
from .target import Target, inspect

DEFAULT_MESSAGE = "core dump initiated at user request"
_PRIVATE_PARENTS = ("/tmp", "/var/tmp", "/dev/shm")
_HOLD_SECONDS = 5.0
_POLL_SECONDS = 0.002


@dataclass(frozen=True)
class Request:
    """What the operator asked for."""

    pid: int
    keep_running: bool = False
    message: str = DEFAULT_MESSAGE
    output_dir: str | None = None
    timeout: float = 10.0
    method: str = "auto"
    mode: str = "auto"
    gdb: str | None = None


@dataclass
class Result:
    """A dump that was written, and how it was taken."""

    pid: int
    path: str
    method: str
    injection: str
    why: str
    pypanic: str
    target_exited: bool
    elapsed_seconds: float
    stopped_seconds: float | None
    python: str
    transcript: list[str] = field(default_factory=list)

    def record(self) -> dict[str, object]:
        record = asdict(self)
        del record["transcript"]
        return {"status": "dumped", **record}


def methods(request: Request) -> list[Method]:
    """Every method, in the order ``auto`` tries them."""
    return [Ptrace(), Gdb(request.gdb)]


class PrivateDirectory:
    """A directory only the target's user can read, visible in the target's root."""

    def __init__(self, target: Target) -> None:
        self.target = target
        failures = []
        for parent in _PRIVATE_PARENTS:
            try:
                self.host = tempfile.mkdtemp(prefix="ncore.", dir=target.host_path(parent))
            except OSError as e:
                failures.append(f"{parent}: {e.strerror}")
                continue
            self.inside = f"{parent}/{os.path.basename(self.host)}"
            break
        else:
            raise NcoreError(
                f"found no directory the target can read to put the payload in ({'; '.join(failures)})",
                "make /tmp writable in the target's root",
            )
        self._own(self.host)

    def _own(self, path: str) -> None:
        if os.geteuid() == 0:
            os.chown(path, self.target.uid, self.target.gid)

    def write(self, name: str, data: bytes) -> str:
        path = os.path.join(self.host, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        self._own(path)
        return path

    def copy_package(self, source: Path, name: str) -> None:
        target = os.path.join(self.host, name)
        os.mkdir(target, 0o700)
        self._own(target)
        for module in sorted(source.glob("*.py")):
            self.write(f"{name}/{module.name}", module.read_bytes())

    def read_result(self) -> dict[str, object] | None:
        try:
            with open(os.path.join(self.host, "result.json")) as f:
                return json.load(f)  # type: ignore[no-any-return]
        except (OSError, ValueError):
            return None

    def remove(self) -> None:
        shutil.rmtree(self.host, ignore_errors=True)


def injected_code(directory: str) -> bytes:
    """The code the target runs: execute the payload, and never let anything escape.

    It binds no name in ``__main__`` (where PyRun_SimpleString runs) and raises nothing
    (a pending call whose code raises kills the process with SystemError).
    """
    payload = f"{directory}/payload.py"
    return (
        "try:\n"
        f"    exec(compile(open({payload!r}, 'rb').read(), '<ncore payload>', 'exec'),"
        f" {{'__name__': '__ncore_payload__', '__ncore_dir__': {directory!r}}})\n"
        "except BaseException:\n"
        "    pass\n"
    ).encode()


def _output_directory(target: Target, requested: str | None) -> str | None:
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
        self.answer: dict[str, object] | None = None
        self.path: str | None = None

    def poll(self) -> bool:
        if self.answer is not None:
            return True
        answer = self.private.read_result()
        if answer is None:
            return False
        inside = answer.get("path")
        if isinstance(inside, str):
            self.path = _copy_out(self.target, inside) if self.copy_out else self.target.host_path(inside)
        self.private.write("ack", b"")
        self.answer = answer
        return True


def take_dump(request: Request, progress: Callable[[str], None] = lambda step: None) -> Result:
    """Make process ``request.pid`` write a pypanic dump; raise an NcoreError when it cannot."""
    started = time.monotonic()
    deadline = started + request.timeout
    target = inspect(request.pid)
    method = choose(request.method, target, methods(request))
    output_dir = _output_directory(target, request.output_dir)
    progress("inspected")
    private = PrivateDirectory(target)
    try:
        copy_out = not request.keep_running and not target.same_mount_namespace
        params = {"message": request.message, "keep_running": request.keep_running, "directory": output_dir,
                  "hold_seconds": _HOLD_SECONDS if copy_out else 0}  # fmt: skip
        private.write("params.json", json.dumps(params).encode())
        private.write("payload.py", (Path(__file__).parent / "payload.py").read_bytes())
        private.copy_package(Path(pypanic.__file__).parent, "pypanic")
        code = injected_code(private.inside)
        injection = Injection(code, private.write("code.py", code), request.mode, deadline)
        handshake = Handshake(target, private, copy_out)
        outcome = _run(method, target, injection, handshake)
        progress("injected")
        _wait_for_answer(target, handshake, outcome, deadline)
        progress("answered")
        return _result(request, target, handshake, outcome, started)
    finally:
        private.remove()


def _run(method: Method, target: Target, injection: Injection, handshake: Handshake) -> Outcome:
    """Run the method in a thread, so that a payload running inside the method's call (a
    direct call) can be answered meanwhile."""
    box: dict[str, object] = {}

    def work() -> None:
        try:
            box["outcome"] = method.inject(target, injection)
        except BaseException as e:
            box["error"] = e

    worker = threading.Thread(target=work, name=f"ncore-{method.name}", daemon=True)
    worker.start()
    while worker.is_alive():
        handshake.poll()
        worker.join(_POLL_SECONDS)
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["outcome"]  # type: ignore[return-value]


def _wait_for_answer(target: Target, handshake: Handshake, outcome: Outcome, deadline: float) -> None:
    while not handshake.poll():
        if not target.alive():
            if handshake.poll():
                return
            raise TargetExited(
                f"process {target.pid} exited before it reported a dump ({outcome.path} call via {outcome.method})",
                "look at the target's standard error for pypanic's log lines",
            )
        if time.monotonic() > deadline:
            state = target.main_thread().describe()
            raise TimedOut(
                f"process {target.pid} did not run the dump in time: the code was queued as a {outcome.path} call "
                f"because {outcome.why}, and the main thread is now {state}. The target was left running and the "
                "queued call disarmed",
                "a main thread stuck in a long C call that holds the GIL never reaches a safe point; try again "
                "later or with a longer --timeout",
            )
        time.sleep(_POLL_SECONDS)


def _result(request: Request, target: Target, handshake: Handshake, outcome: Outcome, started: float) -> Result:
    answer = handshake.answer or {}
    if answer.get("error") or handshake.path is None:
        raise DumpFailed(
            f"process {target.pid} could not write its dump: {answer.get('error')}",
            "check that the target's working directory (or --output-dir) is writable and has room",
        )
    exited = False if request.keep_running else _wait_for_exit(target, until=time.monotonic() + 2)
    return Result(
        pid=target.pid, path=handshake.path, method=outcome.method, injection=outcome.path, why=outcome.why,
        pypanic=str(answer.get("pypanic")), target_exited=exited, elapsed_seconds=time.monotonic() - started,
        stopped_seconds=outcome.stopped_seconds, python=target.version_text, transcript=outcome.transcript,
    )  # fmt: skip


def _copy_out(target: Target, inside: str) -> str:
    """Copy a dump out of another mount namespace before the target's exit takes it away;
    into the working directory, under a name not yet taken."""
    name = os.path.basename(inside)
    destination = os.path.abspath(name)
    n = 0
    while os.path.lexists(destination):
        n += 1
        destination = os.path.abspath(f"{name}.{n}")
    shutil.copyfile(target.host_path(inside), destination)
    return destination


def _wait_for_exit(target: Target, until: float) -> bool:
    while time.monotonic() < until:
        if not target.alive():
            return True
        time.sleep(_POLL_SECONDS)
    return False
