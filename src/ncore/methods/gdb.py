"""The gdb method: attach with gdb and run ``gdb_scripts/inject.gdb`` (pyrasite-style).

gdb runs in batch mode without init files or debuginfod, with the sysroot set to the
target's root so that a gdb from another root (a container, a chroot) loads the
target's own libraries. Inputs go in as gdb convenience variables, never as script
text. gdb before 14 cannot call functions on CPUs whose extended state is larger than
it knows (AMX): the call fails and leaves the target hung with the GIL taken, so this
method refuses such a gdb before attaching. Every run of gdb, ``--version`` included,
ends by the request's deadline: a gdb still running then is killed with its process group,
unless it is attached and calling into the target (see ``Gdb._late``). gdb runs in a
session of its own and writes to a file, so that whatever happens to ncore (Ctrl-C to its
terminal, SIGKILL) gdb finishes its calls and detaches.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from .. import arch, cpu, interrupts
from ..errors import Busy, Interrupted, MethodUnavailable, NcoreError, NoSuchProcess, TimedOut
from ..private import held
from ..target import Target, attach_refused
from . import Injection, Outcome, explain

_VERSION = re.compile(r"^GNU gdb .*?(\d+)\.(\d+)", re.MULTILINE)
_VERSIONS: dict[tuple[str, ...], tuple[int, int] | None] = {}
_VERSION_SECONDS = 30.0
"""How long ``gdb --version`` may take when no deadline is given."""
_SEE_OUTPUT = "run with -v to see gdb's output"
_POLL_SECONDS = 0.002


def scripts_dir() -> Path:
    """gdb_scripts/: inside the installed package, or at the top of a source checkout."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "gdb_scripts", here.parent.parent / "gdb_scripts"):
        if (candidate / "inject.gdb").exists():
            return candidate
    raise MethodUnavailable("ncore's gdb scripts are missing", "reinstall pypanic")


def gdb_version(command: tuple[str, ...], timeout: float = _VERSION_SECONDS) -> tuple[int, int] | None:
    """The version ``command --version`` prints, None when it prints none or does not run;
    subprocess.TimeoutExpired when it does not answer within ``timeout`` seconds."""
    if command not in _VERSIONS:
        try:
            with subprocess.Popen(
                [*command, "--version"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL, text=True, start_new_session=True,
            ) as process:  # fmt: skip
                try:
                    out, _ = process.communicate(timeout=timeout)
                except subprocess.TimeoutExpired:
                    _kill_group(process)
                    raise
        except OSError:
            return None
        found = _VERSION.search(out)
        _VERSIONS[command] = (int(found.group(1)), int(found.group(2))) if found else None
    return _VERSIONS[command]


def call_problem(version: tuple[int, int], xsave_bytes: int | None) -> str | None:
    """Why a gdb of ``version`` cannot call functions on a CPU with that XSAVE size, or None."""
    if version >= (14, 0) or xsave_bytes is None or xsave_bytes <= cpu.GDB13_XSAVE_BYTES:
        return None
    return (
        f"gdb {version[0]}.{version[1]} cannot call functions on this CPU: its extended state (XSAVE area) is "
        f"{xsave_bytes} bytes and gdb before 14 handles at most {cpu.GDB13_XSAVE_BYTES} (a failed call leaves the "
        "target hung); install gdb 14 or later and point --gdb or NCORE_GDB at it"
    )


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Gdb:
    name = "gdb"

    def __init__(self, command: str | None = None, deadline: float | None = None) -> None:
        text = command or os.environ.get("NCORE_GDB") or "gdb"
        self.command = tuple(shlex.split(text))
        self.deadline = deadline
        """time.monotonic() by which the checks before an injection must be done (None: no limit
        but gdb's own, _VERSION_SECONDS)."""

    def unavailable(self, target: Target) -> str | None:
        return self.unavailable_here()

    def unavailable_here(self) -> str | None:
        if not self.command or shutil.which(self.command[0]) is None:
            return (
                f"{self.command[0] if self.command else 'gdb'} was not found "
                "(install gdb, or give its path with --gdb or NCORE_GDB)"
            )
        timeout = _VERSION_SECONDS if self.deadline is None else max(self.deadline - time.monotonic(), 0)
        try:
            version = gdb_version(self.command, timeout)
        except subprocess.TimeoutExpired:
            return (
                f"`{' '.join(self.command)} --version` did not answer in time (it had {timeout:.1f} s; is that gdb "
                "hung?); try another gdb with --gdb or NCORE_GDB, or a longer --timeout"
            )
        if version is None:
            return f"`{' '.join(self.command)} --version` did not print a gdb version"
        return call_problem(version, cpu.xsave_bytes())

    def argv(self, target: Target, injection: Injection, page_file: str) -> list[str]:
        """gdb's command line; ``page_file`` holds ``injection.page``, for gdb to copy into the target."""
        pid = target.pid
        low, high = target.runtime
        settings = {
            "ncore_mode": str(("auto", "pending", "direct").index(injection.mode)),
            "ncore_code_file": _quote(page_file),
            "ncore_code_size": str(len(injection.page)),
            "ncore_pending_at": str(injection.pending_at),
            "ncore_runtime_lo": str(low),
            "ncore_runtime_hi": str(high),
            "ncore_futex": str(arch.FUTEX.get(arch.machine(), -1)),
        }
        argv = [
            *self.command, "-nx", "-batch",
            "-iex", "set debuginfod enabled off",
            "-iex", f"set sysroot /proc/{pid}/root",
            "-iex", "set auto-load off",
            "-iex", "set unwindonsignal on",
            "-ex", f"file /proc/{pid}/exe",
            "-ex", f"attach {pid}",
        ]  # fmt: skip
        for name, value in settings.items():
            argv += ["-ex", f"set ${name} = {value}"]
        scripts = scripts_dir()
        return [*argv, "-x", str(scripts / "inject.gdb"), "-x", str(scripts / "finish.gdb"), "-ex", "detach"]

    def inject(self, target: Target, injection: Injection) -> Outcome:
        if held(injection.running_lock):
            raise Busy(
                f"process {target.pid} is running another ncore's pending call; nothing was done to it",
                "wait for that dump to finish and run ncore again",
            )
        lines: list[tuple[float, str]] = []
        # gdb's output goes to a file, not a pipe: a gdb that outlives ncore must not die
        # of SIGPIPE mid-call.
        with tempfile.TemporaryFile() as output:
            argv = self.argv(target, injection, injection.page_file)
            process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
            )
            log = _Log(output.fileno())
            while process.poll() is None:
                log.read(lines)
                if time.monotonic() > injection.deadline:
                    raise self._late(process, target, argv, lines)
                time.sleep(_POLL_SECONDS)
            log.read(lines)
        transcript = _transcript(argv, lines)
        try:
            return self._outcome(target, transcript, lines, injection.mode)
        except NcoreError as e:
            e.transcript = transcript
            raise

    def _late(
        self, process: subprocess.Popen[bytes], target: Target, argv: list[str], lines: list[tuple[float, str]]
    ) -> TimedOut:
        """gdb is still at work at the deadline. Between attaching and detaching it makes
        calls in the target, over breakpoints it put in: killed then, it would leave the
        target to stop on one with SIGTRAP. So it is left to finish and detach on its own;
        before it attached or once it detached, it is killed."""
        marks = {line.split(" ", 2)[1] for _, line in lines if line.startswith("ncore: ")}
        if "attached" in marks and "detached" not in marks:
            late = TimedOut(
                f"gdb did not finish within the time limit while injecting into process {target.pid}; it is in a "
                f"call into the target, so it was left to finish and detach on its own (gdb is process {process.pid})",
                "see the gdb output with -v; watch the target, and try again later or with a longer --timeout",
            )
        else:
            _stop(process, target.pid)
            late = TimedOut(
                f"gdb did not finish within the time limit while injecting into process {target.pid}; "
                "gdb was killed and the target left running",
                "see the gdb output with -v; a longer --timeout may help a slow machine",
            )
        late.transcript = _transcript(argv, lines)
        return late

    def _outcome(self, target: Target, transcript: list[str], lines: list[tuple[float, str]], mode: str) -> Outcome:
        try:
            return self._read_outcome(target, transcript, lines, mode)
        except NcoreError as e:
            number = interrupts.requested()
            if number is None or isinstance(e, Interrupted):
                raise
            # Ctrl-C to ncore's process group reaches gdb too, which then stops where it was.
            stopped = Interrupted(f"stopped by {interrupts.describe(number)} while gdb worked: {e.message}", number)
            stopped.transcript = e.transcript
            raise stopped from None

    def _read_outcome(
        self, target: Target, transcript: list[str], lines: list[tuple[float, str]], mode: str
    ) -> Outcome:
        marks = {line.split(" ", 2)[1]: (t, line) for t, line in lines if line.startswith("ncore: ")}
        text = "\n".join(line for _, line in lines)
        if "attached" not in marks:
            raise _attach_failure(target, text)
        if "path" not in marks:
            raise NcoreError(f"gdb attached but could not run the injection: {_gdb_error(text)}", _SEE_OUTPUT)
        exited = f"(process {target.pid}) exited" in text  # a panic ends the process within a direct call
        if "result" not in marks and not exited:
            released = "; the GIL the call had taken was given back" if "released" in marks else ""
            raise NcoreError(
                f"gdb's call into process {target.pid} was abandoned: {_gdb_error(text)}{released}. The process "
                "may be left inconsistent; watch it",
                _SEE_OUTPUT,
            )
        state = dict(item.split("=") for item in marks.get("state", (0, ""))[1].split()[2:] if "=" in item)
        path = marks["path"][1].split()[-1]
        why = explain(path == "direct", mode, int(state.get("syscall", "-1")), state.get("gil_waiter") == "1")
        stopped = marks["detached"][0] - marks["attached"][0] if "detached" in marks else None
        return Outcome("gdb", path, why, stopped, transcript)


def _transcript(argv: list[str], lines: list[tuple[float, str]]) -> list[str]:
    return [shlex.join(argv)] + [line for _, line in lines]


def _attach_failure(target: Target, text: str) -> NcoreError:
    """Why gdb's ``attach`` failed, from what gdb said (``ptrace: Operation not permitted.``)."""
    said = next((line for line in text.splitlines() if line.startswith("ptrace: ")), "")
    if "Operation not permitted" in said:
        return attach_refused(target.pid, target.uid, "gdb")
    if "No such process" in said:
        return NoSuchProcess(f"process {target.pid} exited before gdb could attach")
    return NcoreError(f"gdb could not attach to process {target.pid}: {said or _gdb_error(text)}", _SEE_OUTPUT)


def _gdb_error(text: str) -> str:
    """gdb's error message: the line after the first ``Error in sourced command file:``,
    else the last line that is not a marker."""
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("ncore:")]
    for before, after in zip(lines, lines[1:]):
        if before.endswith("Error in sourced command file:"):
            return after
    return lines[-1] if lines else "gdb printed nothing"


class _Log:
    """gdb's output file, read as it grows: each complete line with the time it was seen."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.offset = 0
        self.partial = b""

    def read(self, lines: list[tuple[float, str]]) -> None:
        data = os.pread(self.fd, 1 << 20, self.offset)
        while data:
            self.offset += len(data)
            *complete, self.partial = (self.partial + data).split(b"\n")
            now = time.monotonic()
            lines.extend((now, line.decode(errors="replace")) for line in complete)
            data = os.pread(self.fd, 1 << 20, self.offset)


def _kill_group(process: subprocess.Popen[str] | subprocess.Popen[bytes]) -> None:
    """Kill ``process`` and everything it started (it leads its own session), and reap it."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def _stop(process: subprocess.Popen[bytes], pid: int) -> None:
    """Kill gdb (never the target) and make sure the target is not left stopped."""
    _kill_group(process)
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        if state in ("T", "t"):
            os.kill(pid, signal.SIGCONT)
    except (OSError, IndexError):
        pass
