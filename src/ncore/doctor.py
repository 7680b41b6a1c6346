"""``ncore doctor``: what would stop a dump here, and how to fix each thing.

Each check is a Finding: fine, a problem that stops a dump (with its fix), or a note
worth knowing. Without a PID the checks are about this machine and ncore's rights; with
one they are about that process too: whether it can be dumped, by which method, what
its main thread does, whether pypanic is loaded in it, and where its dump would go.
Nothing here stops the process or runs code in it, except ``probe``, which asks the
process itself through the method a dump would use, and takes no dump.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from . import arch
from .errors import NcoreError
from .methods import NAMES, unavailable
from .session import Request, make_method, output_directory, take_dump
from .target import (
    Target,
    inspect,
    listening_signal,
    may_trace_anyone,
    permission_hint,
    pypanic_mark,
    status,
    yama_scope,
)

if TYPE_CHECKING:
    from rich.console import Console

_YAMA = {
    0: "0: a process may trace any process of its user",
    1: "1: only a process's ancestors, or a tracer with CAP_SYS_PTRACE, may trace it",
    2: "2: only a tracer with CAP_SYS_PTRACE may trace",
    3: "3: no process may be traced until the next reboot",
}
_LOW_SPACE = 64 * 1024 * 1024


class Finding:
    """One check: ``ok`` True (fine), False (stops a dump) or None (a note)."""

    def __init__(self, topic: str, ok: bool | None, detail: str, fix: str = "") -> None:
        self.topic = topic
        self.ok = ok
        self.detail = detail
        self.fix = fix

    def record(self) -> dict[str, object]:
        return dict(vars(self))


def examine(pid: int | None, request: Request, probe: bool = False) -> list[Finding]:
    """Every check for this machine, and for process ``pid`` when given; ``probe`` also
    asks the process itself (``request`` says how: method, gdb, timeout)."""
    findings = _rights()
    if pid is None:
        findings += _methods_here(request)
        return findings
    try:
        target = inspect(pid)
    except NcoreError as e:
        return [*findings, Finding("process", False, e.message, e.hint)]
    findings += _process(target)
    access = _memory_access(target)
    methods, chosen = _methods_for(target, request, traceable=all(f.ok for f in access))
    if chosen == "signal":
        for finding in access:  # no longer in the way: the signal method traces nothing
            if finding.ok is False:
                finding.ok, finding.detail = None, f"{finding.detail}; the dump goes by signal instead"
    findings += access + methods
    findings.append(_main_thread(target))
    findings.append(_pypanic(target))
    findings += _dump_directory(target, request.output_dir)
    if probe and dump_would_work(findings):
        findings += _probe(request)
    return findings


def dump_would_work(findings: list[Finding]) -> bool:
    return all(f.ok is not False for f in findings)


def _rights() -> list[Finding]:
    capable = may_trace_anyone()
    uid = os.geteuid()
    who = "root" if uid == 0 else f"uid {uid}"
    findings = [
        Finding(
            "ncore's rights",
            True if capable else None,
            f"ncore runs as {who}, {'with' if capable else 'without'} CAP_SYS_PTRACE"
            + ("" if capable else ": it can dump only processes of its own user"),
            "" if capable else "run ncore as root (sudo ncore ...) to dump other users' processes",
        )
    ]
    scope = yama_scope()
    if scope is not None:
        blocked = scope == 3 or (scope == 2 and not capable) or (scope == 1 and not capable)
        findings.append(
            Finding(
                "yama ptrace_scope",
                not blocked,
                _YAMA.get(scope, str(scope)),
                "" if not blocked else permission_hint(uid),
            )
        )
    container = _container()
    if container:
        findings.append(
            Finding(
                "container",
                None,
                f"ncore runs in a container ({container})",
                ""
                if capable
                else "add CAP_SYS_PTRACE to the container (docker run --cap-add=SYS_PTRACE; in Kubernetes "
                "securityContext.capabilities.add: [SYS_PTRACE]) and share the target's pid namespace",
            )
        )
    if status(os.getpid()).get("Seccomp", "0") == "2":
        findings.append(
            Finding(
                "seccomp",
                None,
                "ncore runs under a seccomp filter, which may forbid ptrace or process_vm_writev",
                "if attaching fails with 'Operation not permitted', run ncore outside the filter "
                "(docker: --security-opt seccomp=unconfined)",
            )
        )
    return findings


def _methods_here(request: Request) -> list[Finding]:
    findings = []
    for name in NAMES:
        why = make_method(name, request).unavailable_here()
        detail = {
            "remote-exec": "remote exec (PEP 768) for CPython 3.14+ targets, spoken by ncore itself",
            "ptrace": f"ncore's own ptrace injector, for {arch.machine()}",
            "gdb": "gdb is there and can call functions in a process on this CPU",
        }[name]
        findings.append(Finding(f"method {name}", None if why else True, why or detail))
    if all(f.ok is None for f in findings):
        findings.append(
            Finding("methods", False, "no method can get into a process on this machine", "install gdb 14 or later")
        )
    return findings


def _process(target: Target) -> list[Finding]:
    binary = target.python_binary
    build = "libpython" if "libpython" in os.path.basename(binary) else "the interpreter's executable"
    return [
        Finding(
            "process",
            True,
            f"process {target.pid} ({target.comm}, uid {target.uid}) runs CPython {target.version_text}; "
            f"the Py* API comes from {build} {binary}"
            + ("" if target.same_mount_namespace else ", in another mount namespace")
            + ("" if target.root == "/" else f", in root {target.root}"),
        )
    ]


def _memory_access(target: Target) -> list[Finding]:
    try:
        with open(f"/proc/{target.pid}/mem", "rb", buffering=0):
            pass
    except PermissionError:
        return [
            Finding(
                "access",
                False,
                f"ncore may not trace process {target.pid} (opening /proc/{target.pid}/mem was refused)",
                permission_hint(target.uid),
            )
        ]
    except FileNotFoundError:
        return [Finding("access", False, f"process {target.pid} exited")]
    from .freeze import seize_refused

    refused = seize_refused(target.pid)
    if refused is not None:
        return [
            Finding(
                "access",
                False,
                f"ncore may not trace process {target.pid}: PTRACE_SEIZE was refused ({refused.strerror})",
                permission_hint(target.uid),
            )
        ]
    return [Finding("access", True, f"ncore may trace process {target.pid} (it seized it and let go)")]


def _methods_for(target: Target, request: Request, traceable: bool) -> tuple[list[Finding], str | None]:
    """A finding per method, and the one a dump would use (None: none can serve)."""
    findings = []
    chosen = None
    for name in NAMES:
        if request.method not in ("auto", name):
            continue
        if name in ("ptrace", "gdb") and not traceable:
            why: str | None = "it traces the process, which is refused here (see access)"
        else:
            _, why = unavailable(name, target, lambda name: make_method(name, request))
        if why is None and chosen is None:
            chosen = name
        findings.append(Finding(f"method {name}", None if why else True, why or "can serve this process"))
    if request.method in ("auto", "signal"):
        from .signaled import unavailable as signal_unavailable

        why = signal_unavailable(target)
        if why is None and (chosen is None or request.method == "signal"):
            chosen = "signal"
        findings.append(Finding("method signal", None if why else True, why or "can serve this process"))
    if chosen is None:
        findings.append(
            Finding(
                "method",
                False,
                f"no method ({request.method}) can serve process {target.pid}",
                "fix one of the methods' reasons above, or pick another with --method",
            )
        )
    else:
        findings.append(Finding("method", True, f"a dump would use {chosen}"))
    return findings, chosen


def _main_thread(target: Target) -> Finding:
    state = target.main_thread()
    text = state.describe(target.runtime)
    if state.running:
        effect = _running_main_thread(target)
    elif state.waits_for_gil(target.runtime):
        effect = "a dump runs once the thread has the GIL"
    elif state.syscall is not None:
        effect = "a dump interrupts the call to run directly (ptrace or gdb); the call then goes on"
    else:
        effect = "a dump runs when the thread next runs Python code"
    return Finding("main thread", True, f"{text}: {effect}")


def _running_main_thread(target: Target) -> str:
    """What a running main thread means for a dump, from a few looks at it (not stopped)."""
    from . import stacks

    seen = stacks.glance(target.pid)
    if seen is None:
        return "a dump runs at its next safe point, between two bytecodes"
    held, stayed, where = seen
    if held and stayed:
        return (
            f"it holds the GIL in {where} and stayed on that line in 5 looks over 0.1 s: probably in C code (a "
            "regular expression, a C extension) that does not return to the interpreter, where no injected dump "
            "can start; ncore reads it from outside after --timeout instead (or at once, with --read-only)"
        )
    return f"it runs Python code, now in {where}: a dump runs at its next safe point, between two bytecodes"


def _pypanic(target: Target) -> Finding:
    mark = pypanic_mark(target.pid, target.maps)
    if mark is None:
        return Finding(
            "pypanic",
            None,
            "not loaded (no pypanic mark in its memory map): ncore brings its own copy, so the dump has the "
            "process's facts and every thread's stack, but no registered state",
            "import pypanic in the application and register state with panicDbg.set",
        )
    lines = mark.splitlines() if mark else []
    described = " from ".join(lines[:2]) if lines else "loaded"
    signal = listening_signal(mark)
    listens = "" if signal is None else f"; it listens for a dump signal, {signal[1]} (ncore --method signal)"
    return Finding("pypanic", True, f"{described}: its registered state will be in the dump{listens}")


def _dump_directory(target: Target, requested: str | None) -> list[Finding]:
    """Whether the dump's directory takes it: --output-dir (where a dump refuses it, a
    problem) or the working directory (where pypanic falls back elsewhere, a note)."""
    if requested:
        try:
            output_directory(target, requested)  # the dump's own check
        except NcoreError as e:
            return [Finding("dump directory", False, f"a dump would be refused: {e.message}", e.hint)]
        where = path = requested
    else:
        cwd = target.cwd
        if cwd is None:
            return [Finding("dump directory", None, f"the working directory of process {target.pid} cannot be read")]
        where, path = cwd, cwd if target.same_mount_namespace else target.host_path(cwd)
        why = target.cannot_write(path)
        if why is not None:
            fallback = "pypanic falls back to $PYPANIC_DIR, the temporary directory, then /tmp"
            fix = "give a writable directory with --output-dir, or set PYPANIC_DIR in the service"
            return [Finding("dump directory", None, f"{why}: {fallback}", fix)]
    findings = [Finding("dump directory", True, f"{where} is writable by uid {target.uid}")]
    try:
        space = os.statvfs(path)
    except OSError:
        return findings
    free = space.f_bavail * space.f_frsize
    if free < _LOW_SPACE:
        findings.append(
            Finding(
                "disk space",
                None,
                f"{free // 1024} KiB free under {where}",
                "free some space, or give another directory with --output-dir",
            )
        )
    return findings


def _probe(request: Request) -> list[Finding]:
    probe = Request(request.pid, keep_running=True, timeout=request.timeout, method=request.method,
                    mode=request.mode, gdb=request.gdb, output_dir=request.output_dir, probe=True)  # fmt: skip
    try:
        result = take_dump(probe)
    except NcoreError as e:
        return [Finding("probe", False, f"asking the process failed: {e.message}", e.hint)]
    facts = result.facts
    found = {
        "target": "imported",
        "importable": "importable from its path",
        "carried": "neither imported nor importable",
    }
    writable = facts.get("writable") == "1"
    return [
        Finding(
            "probe",
            True,
            f"the process answered through {result.method} ({result.injection} call) in "
            f"{result.elapsed_seconds * 1000:.0f} ms; pypanic is {found.get(result.pypanic, result.pypanic)} there",
        ),
        Finding(
            "dump directory (asked)",
            writable,
            f"{facts.get('directory', '?')} is {'writable' if writable else 'not writable'} for the process",
            "" if writable else "give a writable directory with --output-dir",
        ),
    ]


def _container() -> str:
    """What container ncore runs in (``docker``...), or ``""`` for none that shows."""
    if os.path.exists("/.dockerenv"):
        return "docker"
    if os.path.exists("/run/.containerenv"):
        return "podman"
    try:
        with open("/proc/1/cgroup") as f:
            cgroups = f.read()
    except OSError:
        return ""
    for name in ("kubepods", "docker", "containerd", "lxc"):
        if name in cgroups:
            return name
    return ""


def render(findings: list[Finding], console: Console) -> None:
    """One line per finding, marked ok, FAIL or note, with its fix below."""
    from rich.text import Text

    marks = {True: ("ok  ", "green"), False: ("FAIL", "bold red"), None: ("note", "yellow")}
    for finding in findings:
        console.print(Text.assemble(marks[finding.ok], " ", (finding.topic, "bold"), ": ", finding.detail))
        if finding.fix and finding.ok is not True:
            console.print(Text(f"      fix: {finding.fix}"))
