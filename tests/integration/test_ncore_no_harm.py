"""ncore never harms its target, whatever happens to ncore: killed or interrupted at any
moment by any signal, run twice at once on one process, or waiting on a dump that takes
longer than its own time limit. Each test counts what happened to real targets.

The soaks are marked slow (CI runs them): every interpreter, every kind of target and
every method, each interrupt named by its plan (tests/faults.py) so that it can be replayed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ncore.private import HALF_MADE_SECONDS

from ..faults import KINDS, NCORE, OTHER_SIGNALS, RUNNING, SIGNALS, Plan, interrupt, left_running, start_target
from ..interpreters import ALL, HOST, IN_CHROOT, Interpreter
from .conftest import chroot_gdb, load_dump, run_ncore

SEED = 10
"""Changing it draws other moments; a failure prints the plan it drew, to replay."""
PAIRS = 50


def private_directories(interpreter: Interpreter) -> set[Path]:
    """ncore's private directories and target locks in the /tmp the target sees."""
    tmp = (interpreter.chroot / "tmp") if interpreter.chroot else Path("/tmp")
    return {*(p for p in tmp.glob("ncore.*") if p.is_dir()), *tmp.glob(".ncore-lock.*")}  # not dumps written there


def still_working(interpreter: Interpreter, targets: dict, *args: str, gdb: str | None = None) -> list[str]:
    """What is wrong with each target after the interrupts: a later snapshot (``ncore
    --keep-running ARGS``) fails, a running target makes no progress, or a dump is not
    complete strict JSON."""
    wrong = []
    for kind, (target, space) in targets.items():
        progress = int((space.work / "progress").read_text()) if kind in RUNNING else 0
        run = run_ncore("--keep-running", *args, "--timeout", "30", str(target.pid), gdb=gdb)
        if run.returncode != 0:
            wrong.append(f"{interpreter.name} {kind}: a dump after the interrupts failed: {run.stdout} {run.stderr}")
        if kind in RUNNING:
            time.sleep(0.3)
            if int((space.work / "progress").read_text()) <= progress:
                wrong.append(f"{interpreter.name} {kind}: the target made no progress after the interrupts")
        for dump in space.dumps():
            load_dump(str(dump))
    return wrong


def plans_for(interpreter: Interpreter) -> list[Plan]:
    """Every signal through ptrace for every kind of target, one through gdb, and every
    signal through remote exec where it serves (CPython 3.14+, a main thread at work)."""
    draw = random.Random(f"{SEED}-{interpreter.name}")
    remote_exec = interpreter.name in ("sid-3.14", "sid-3.15")
    plans = []
    for kind in KINDS:
        plans += [Plan(interpreter, "ptrace", kind, name, draw.randrange(0, 350)) for name in SIGNALS]
        plans.append(Plan(interpreter, "gdb", kind, draw.choice(list(SIGNALS)), draw.randrange(0, 1600)))
        if remote_exec and kind in RUNNING:
            plans += [Plan(interpreter, "remote-exec", kind, name, draw.randrange(0, 300)) for name in SIGNALS]
    return plans


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("interpreter", ALL, ids=lambda i: i.name)
def test_interrupting_ncore_never_harms_the_target(processes, workspace_for, interpreter):
    """ncore interrupted at a random moment by SIGKILL, SIGTERM, SIGHUP, or SIGINT to its
    process group, on every kind of target and through every method: every target lives
    on, is neither stopped nor traced, still works, and a later ncore dumps it and leaves
    no private directory behind. Over the whole matrix that is 384 interrupts."""
    interpreter.require()
    env = {**os.environ, "NCORE_GDB": chroot_gdb()}
    before = private_directories(interpreter)
    targets = {}
    for kind in KINDS:
        space = workspace_for(interpreter)
        targets[kind] = (start_target(interpreter, kind, space), space)
        processes.started.append(targets[kind][0])
    harmed = []
    plans = plans_for(interpreter)
    for plan in plans:
        harmed += [f"{plan}: {problem}" for problem in interrupt(plan, targets[plan.kind][0], env)]
    harmed += still_working(interpreter, targets, gdb=env["NCORE_GDB"])
    assert not harmed, f"{len(harmed)} of {len(plans)} interrupts harmed the target:\n" + "\n".join(harmed)
    if not private_directories(interpreter) <= before:
        # One an ncore killed while making it is swept only once it is surely abandoned.
        time.sleep(HALF_MADE_SECONDS + 1)
        run_ncore("--keep-running", str(targets["busy"][0].pid), gdb=env["NCORE_GDB"])
    assert private_directories(interpreter) <= before, "private directories or locks were left behind"


EVERY_SIGNAL_ON = [HOST[3], IN_CHROOT[1]]
"""pyenv's 3.12 and sid's 3.14 (ptrace, and remote exec)."""


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("interpreter", EVERY_SIGNAL_ON, ids=lambda i: i.name)
def test_every_other_signal_to_ncore_never_harms_the_target(processes, workspace_for, interpreter):
    """Each of the other 58 signals sent to ncore at a random moment, with the target held
    by ptrace (sleep: a direct call, ncore attached throughout the dump) or not (busy: a
    pending call; and through remote exec on 3.14). Those that end ncore by default
    (SIGQUIT, SIGSEGV, SIGUSR1, SIGALRM, the real-time signals...) leave the target as
    SIGKILL does; those ignored (SIGCHLD, SIGWINCH, SIGPIPE...) and those that stop it
    (SIGSTOP, then SIGCONT after 0.3 s; SIGTSTP, SIGTTIN and SIGTTOU, which the kernel
    drops for ncore's orphaned process group) leave ncore's dump to finish: exit 0. Every
    target lives on, untraced, and works. Moments start at 40 ms: before that only the
    interpreter starts, which the main soak's four signals cover."""
    interpreter.require()
    draw = random.Random(f"{SEED}-every-{interpreter.name}")
    targets = {}
    for kind in ("busy", "sleep"):
        space = workspace_for(interpreter)
        targets[kind] = (start_target(interpreter, kind, space), space)
        processes.started.append(targets[kind][0])
    methods = [("ptrace", "busy"), ("ptrace", "sleep")]
    if interpreter.name == "sid-3.14":
        methods.append(("remote-exec", "busy"))
    plans = [Plan(interpreter, method, kind, name, draw.randrange(40, 400))
             for method, kind in methods for name in OTHER_SIGNALS]  # fmt: skip
    no_core = ("prlimit", "--core=0", "--", *NCORE)  # SIGQUIT, SIGSEGV... would write ncore's core
    harmed = []
    for plan in plans:
        problems = interrupt(plan, targets[plan.kind][0], dict(os.environ), no_core)
        harmed += [f"{plan}: {problem}" for problem in problems]
    harmed += still_working(interpreter, targets)
    assert not harmed, f"{len(harmed)} of {len(plans)} interrupts harmed the target:\n" + "\n".join(harmed)


SIGNAL_KINDS = ["busy", "sleep", "accept"]


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("interpreter", ALL, ids=lambda i: i.name)
def test_interrupting_ncore_by_signal_never_harms_the_target(processes, workspace_for, interpreter):
    """The signal method (nothing traced: the request and the answer pass through pypanic's
    mark) interrupted by every signal at random moments, then two at once: every target
    lives on and works, and a later request by signal is served. 108 interrupts and 45
    pairs over the matrix."""
    interpreter.require()
    draw = random.Random(f"{SEED}-signal-{interpreter.name}")
    targets = {}
    for kind in SIGNAL_KINDS:
        space = workspace_for(interpreter)
        targets[kind] = (start_target(interpreter, kind, space, listen=True), space)
        processes.started.append(targets[kind][0])
    moments = {(kind, name): draw.randrange(0, 250) for kind in SIGNAL_KINDS for name in SIGNALS}
    plans = [Plan(interpreter, "signal", kind, name, delay) for (kind, name), delay in moments.items()]
    harmed = []
    for plan in plans:
        harmed += [f"{plan}: {problem}" for problem in interrupt(plan, targets[plan.kind][0], dict(os.environ))]
    target, space = targets["busy"]
    argv = [sys.executable, "-m", "ncore", "--json", "--keep-running", "--method", "signal", str(target.pid)]
    for n in range(5):
        pair = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        for child in pair:
            out, err = child.communicate(timeout=120)
            if child.returncode != 0:
                harmed.append(f"pair {n}: exit {child.returncode}: {out} {err}")
    harmed += still_working(interpreter, targets, "--method", "signal")
    assert not harmed, f"{len(harmed)} of {len(plans)} interrupts or pairs harmed the target:\n" + "\n".join(harmed)


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("kind", ["busy", "sleep"])
@pytest.mark.parametrize("interpreter", ALL, ids=lambda i: i.name)
def test_two_snapshots_at_once_both_succeed(start_service, interpreter, kind):
    """Two ``ncore --keep-running`` started together, 50 times: the second waits for the
    first (one dump of a process at a time), both dumps are written, and the target works on."""
    service = start_service(interpreter, kind)
    env = {**os.environ, "NCORE_GDB": chroot_gdb()}
    argv = [sys.executable, "-m", "ncore", "--json", "--keep-running", "--timeout", "30", str(service.pid)]
    failures = []
    for n in range(PAIRS):
        pair = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)]
        pair.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
        for run in pair:
            out, err = run.communicate(timeout=120)
            if run.returncode != 0:
                failures.append(f"pair {n}: exit {run.returncode}: {out} {err}")
        if service.process.poll() is not None:
            pytest.fail(f"the target died after pair {n}: {failures}")
    assert not failures, "\n".join(failures)
    service.check_snapshots(2 * PAIRS)
    service.assert_left_running()
    if kind == "busy":
        service.wait_for_progress_after(service.progress())


BIG_STATE = """
import sys, time
import pypanic
pypanic.configure(max_items=10_000_000)
pypanic.panicDbg.set("big", {f"key-{i}": [i, str(i)] for i in range(int(sys.argv[1]))})
pypanic.panicDbg.set("after", "registered after the big one")
print("ready", flush=True)
time.sleep(1000)
"""


def test_a_dump_longer_than_the_timeout_is_waited_for_within_its_budget(processes, workspace_for):
    """A snapshot whose registered state takes longer than pypanic's max_seconds to write
    ends with the cut marked, and ncore, whose --timeout is shorter still, waits for it
    (the payload says the dump's budget) and reports it as written."""
    space = workspace_for(HOST[3])
    env = {"PYTHONPATH": str(space.pythonpath), "PYPANIC_MAX_SECONDS": "1"}
    process = processes.start([HOST[3].path, "-c", BIG_STATE, "3000000"], cwd=space.work, env=env)
    assert process.stdout is not None and process.stdout.readline() == "ready\n"
    run = run_ncore("--keep-running", "--timeout", "0.5", str(process.pid))
    assert run.returncode == 0, run.stdout + run.stderr
    dump = load_dump(run.record["path"])
    assert any(cut["reason"] == "time" for cut in dump["dbg.cuts"]["first"]), dump["dbg.cuts"]
    assert left_running(process.pid) is None


def test_ctrl_c_before_the_dump_starts_withdraws_it(processes, workspace_for):
    """Ctrl-C (SIGINT to ncore's process group) while the target cannot start the dump (its
    main thread waits for the GIL another thread holds): exit 130, the request withdrawn,
    the target running, untraced, and never dumped; the directory goes with the call."""
    space = workspace_for(HOST[3])
    before = private_directories(HOST[3])
    code = """
import ctypes, threading, time
print("ready", flush=True)
threading.Thread(target=lambda: ctypes.PyDLL(None).usleep(3_000_000)).start()  # a C call that keeps the GIL
time.sleep(1000)
"""
    process = processes.start([HOST[3].path, "-c", code], cwd=space.work)
    assert process.stdout is not None and process.stdout.readline() == "ready\n"
    argv = [sys.executable, "-m", "ncore", "--json", "--method", "ptrace", str(process.pid)]
    ncore = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, start_new_session=True)
    time.sleep(1.0)
    os.killpg(ncore.pid, 2)
    out, _ = ncore.communicate(timeout=30)
    assert ncore.returncode == 130, out
    record = json.loads(out)
    assert record["status"] == "interrupted" and "withdrew the request" in record["error"]
    time.sleep(3.5)
    assert process.poll() is None and left_running(process.pid) is None
    assert not space.dumps()
    assert private_directories(HOST[3]) <= before


def test_ctrl_z_while_ncore_holds_the_target_waits_for_the_dump(processes, start_service):
    """Ctrl-Z (SIGTSTP to ncore's process group, a job of this session, as a shell runs it)
    while ncore holds a sleeping target in the middle of its dump (a direct call: ncore is
    its tracer throughout): ncore finishes the dump and lets the target go before it
    suspends itself, so a suspended ncore never keeps the target stopped; continued, it
    exits 0 with the dump."""
    service = start_service(HOST[3], "sleep", env={"SERVICE_SLOW_DUMP": "0.5"})
    argv = [sys.executable, "-m", "ncore", "--json", "--keep-running", "--method", "ptrace", str(service.pid)]
    # A process group of its own in this session (Popen's process_group is 3.11's): not
    # orphaned, so SIGTSTP's default action would stop it. setpgrp is one system call.
    ncore = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, preexec_fn=os.setpgrp)  # noqa: PLW1509
    processes.started.append(ncore)
    deadline = time.monotonic() + 30
    while left_running(service.pid) is None:  # until ncore holds it: traced, and stopped for a moment
        assert ncore.poll() is None and time.monotonic() < deadline, "ncore never attached to the target"
        time.sleep(0.002)
    os.killpg(ncore.pid, signal.SIGTSTP)
    while left_running(ncore.pid) is None:  # until ncore is stopped
        assert ncore.poll() is None and time.monotonic() < deadline, "ncore did not suspend itself"
        time.sleep(0.002)
    assert left_running(service.pid) is None, "the target was kept stopped or traced by a suspended ncore"
    assert service.space.dumps(), "ncore suspended itself before the dump was written"
    os.kill(ncore.pid, signal.SIGCONT)
    out, _ = ncore.communicate(timeout=30)
    assert ncore.returncode == 0, out
    assert json.loads(out)["status"] == "dumped"


def test_directories_left_without_a_lock_are_swept(start_service):
    """Private directories an ncore killed at the wrong moment left without a lock file (one
    still empty, made just before the lock; one half removed, its lock already gone) are
    swept by the next ncore once they are older than making a directory takes; a young one
    is left to the ncore still making it."""
    service = start_service(HOST[3], "sleep")
    old = time.time() - HALF_MADE_SECONDS - 10
    made = []
    for name, names in (("empty", []), ("half-removed", ["code.py"]), ("young", [])):
        path = Path(f"/tmp/ncore.{os.urandom(6).hex()}")
        path.mkdir(mode=0o700)
        for file in names:
            (path / file).write_text("x")
        if name != "young":
            os.utime(path, (old, old))
        made.append(path)
    try:
        run = run_ncore("--keep-running", str(service.pid))
        assert run.returncode == 0, run.stdout + run.stderr
        assert [path.exists() for path in made] == [False, False, True]
    finally:
        for path in made:
            if path.exists():
                for entry in path.iterdir():
                    entry.unlink()
                path.rmdir()
