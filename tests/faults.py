"""Fault injection against ncore: interrupt it at a chosen moment with a chosen signal,
and say what happened to its target.

Every interrupt is a Plan (interpreter, method, kind of target, signal, moment), printed
the same way in a failure, so that one can be replayed alone:

    .venv/bin/python -m tests.faults --replay 'pyenv-3.11 ptrace sleep SIGKILL at 87 ms'

The soak test (tests/integration/test_ncore_no_harm.py) and BENCHMARKS.md's counts run
plans through ``interrupt``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .interpreters import ALL, Interpreter, Workspace

SIGNALS = {"SIGKILL": signal.SIGKILL, "SIGTERM": signal.SIGTERM, "SIGHUP": signal.SIGHUP, "SIGINT-group": signal.SIGINT}
"""What is sent to ncore: to ncore itself, or (Ctrl-C) to its whole process group."""


def _name(number: int) -> str:
    if signal.SIGRTMIN <= number <= signal.SIGRTMAX:
        return f"SIGRTMIN+{number - signal.SIGRTMIN}"
    return signal.Signals(number).name


OTHER_SIGNALS = {_name(number): number for number in sorted(signal.valid_signals()) if number not in SIGNALS.values()}
"""Every other signal Linux can send ncore: those that end it as SIGKILL does (no handler
runs), those it ignores, and those that stop it (sent SIGCONT after STOPPED_SECONDS)."""
STOPPING = {"SIGSTOP", "SIGTSTP", "SIGTTIN", "SIGTTOU"}
IGNORED = {"SIGCHLD", "SIGCONT", "SIGURG", "SIGWINCH", "SIGPIPE", "SIGXFSZ"}
"""Ignored by default, or by Python (SIGPIPE, SIGXFSZ): ncore must finish its dump as if
nothing had come, and so must one stopped and continued."""
STOPPED_SECONDS = 0.3
KINDS = ["busy", "both-busy", "churn", "sleep", "select", "event", "accept", "main-blocked-worker-busy"]
RUNNING = {"busy", "both-busy", "churn"}
SETTLE_SECONDS = 15.0
"""How long a target gets after ncore's end to be running and untraced again (a dump
started before the interrupt finishes meanwhile, and gdb, left on its own, detaches)."""
SLOW_DUMP_SECONDS = 0.15
"""How much longer the targets' dumps take, so that interrupts land inside them too."""


class Plan:
    """One interrupt: which target, through which method, which signal, when (ms after start)."""

    def __init__(self, interpreter: Interpreter, method: str, kind: str, signal_name: str, delay_ms: int) -> None:
        self.interpreter = interpreter
        self.method = method
        self.kind = kind
        self.signal_name = signal_name
        self.delay_ms = delay_ms

    def __str__(self) -> str:
        return f"{self.interpreter.name} {self.method} {self.kind} {self.signal_name} at {self.delay_ms} ms"

    @classmethod
    def parse(cls, text: str) -> Plan:
        name, method, kind, signal_name, _, delay, _ = text.split()
        interpreter = next(i for i in ALL if i.name == name)
        return cls(interpreter, method, kind, signal_name, int(delay))


def debuggers_of(pid: int) -> list[int]:
    """The gdb processes ncore started for ``pid`` that still run (a gdb outlives an ncore
    that was killed, and attaches and injects on its own)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"attach {pid}".encode() in argv:
            found.append(int(entry.name))
    return found


def left_running(pid: int) -> str | None:
    """What is wrong with ``pid``: a thread stopped or traced; None when all run untraced."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except FileNotFoundError:
        return "it is gone"
    for task in tasks:
        try:
            state = (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
            status = (task / "status").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        tracer = next(line.split()[1] for line in status.splitlines() if line.startswith("TracerPid:"))
        if state in "tTZX" or tracer != "0":
            return f"thread {task.name} is in state {state}, traced by {tracer}"
    return None


LISTEN = {"PYPANIC_SIGNAL": "SIGRTMIN+3"}
"""What a target of the signal method has in its environment."""


def start_target(
    interpreter: Interpreter, kind: str, space: Workspace, listen: bool = False, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """A service.py target whose dump is slowed a little, ready (it printed ``ready``);
    listening for a dump signal when ``listen``; ``env`` adds to its environment."""
    env = {"SERVICE_SLOW_DUMP": str(SLOW_DUMP_SECONDS), **(LISTEN if listen else {}), **(env or {})}
    stderr = open(space.host / "stderr", "w")  # noqa: SIM115 - it lives as long as the target
    process = subprocess.Popen(
        space.command("service.py", kind, env=env), stdout=subprocess.PIPE, stderr=stderr, text=True,
        start_new_session=True,
    )  # fmt: skip
    stderr.close()
    assert process.stdout is not None
    line = process.stdout.readline()
    if line.strip() != "ready":
        process.kill()
        process.wait()
        raise RuntimeError(f"{interpreter.name} {kind}: the target did not start ({line!r})")
    return process


NCORE = (sys.executable, "-m", "ncore")


def interrupt(
    plan: Plan, target: subprocess.Popen[str], env: dict[str, str], ncore_command: tuple[str, ...] = NCORE
) -> list[str]:
    """Run ncore (``ncore_command``) on ``target``, send the plan's signal at the plan's
    moment; what went wrong (empty: nothing). ncore runs in a process group of its own, as
    from a shell."""
    argv = [*ncore_command, "--json", "--keep-running", "--method", plan.method, "--timeout", "20", str(target.pid)]
    ncore = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    time.sleep(plan.delay_ms / 1000)
    number = SIGNALS.get(plan.signal_name) or OTHER_SIGNALS[plan.signal_name]
    try:
        if plan.signal_name == "SIGINT-group":
            os.killpg(ncore.pid, number)
        else:
            os.kill(ncore.pid, number)
        if plan.signal_name in STOPPING:
            time.sleep(STOPPED_SECONDS)
            os.kill(ncore.pid, signal.SIGCONT)
    except ProcessLookupError:
        pass
    problems = []
    try:
        out, err = ncore.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        ncore.kill()
        out, err = ncore.communicate()
        problems.append(f"ncore did not end within 60 s of {plan.signal_name}")
    expected = (0,) if plan.signal_name in STOPPING | IGNORED else (0, -number, 128 + number)
    if ncore.returncode not in expected and not _interrupted_while_starting(ncore.returncode, err):
        problems.append(f"ncore ended with {ncore.returncode}: {out.strip()[-300:]} {err.strip()[-300:]}")
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        if target.poll() is not None:
            problems.append(f"the target died (status {target.returncode})")
            break
        wrong = left_running(target.pid)
        if wrong is None and not debuggers_of(target.pid):
            break
        if time.monotonic() > deadline:
            problems.append(f"the target was left stopped or traced: {wrong or 'a gdb is still at it'}")
            break
        time.sleep(0.01)
    return problems


def _interrupted_while_starting(status: int, stderr: str) -> bool:
    """Ctrl-C while Python itself starts, before any of ncore runs: a KeyboardInterrupt in
    the interpreter's own start-up code, exit 1 (nothing of the target touched yet)."""
    lines = stderr.strip().splitlines()
    return status == 1 and bool(lines) and lines[-1] == "KeyboardInterrupt" and "/ncore/" not in stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replay", required=True, help="a plan as a failure printed it")
    parser.add_argument("--times", type=int, default=1)
    args = parser.parse_args()
    plan = Plan.parse(args.replay)
    space = Workspace(plan.interpreter)
    target = start_target(plan.interpreter, plan.kind, space, listen=plan.method == "signal")
    try:
        for n in range(args.times):
            problems = interrupt(plan, target, dict(os.environ))
            print(f"{n}: {plan}: {'; '.join(problems) or 'no harm'}", flush=True)
    finally:
        target.kill()
        target.wait()
        space.remove()


if __name__ == "__main__":
    main()
