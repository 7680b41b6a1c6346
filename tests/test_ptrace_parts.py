"""The ptrace method's parts: the architecture table, the wording, and, on small real
processes, symbol addresses, the C library's code a call runs through, word-wise writes,
extended state, mask and alternate stack that come back (by ncore's hand, and by the
frame alone, as when ncore dies), and a crashing call that is taken back."""

from __future__ import annotations

import errno
import mmap
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ncore import arch
from ncore.elf import read_elf
from ncore.memory import Memory
from ncore.methods import explain, ptrace
from ncore.methods.frame import RETURNED_CODE, SIGRETURN_CODE, SYSCALL_RET_CODE
from ncore.methods.ptrace import X86_64, Ptrace, Tracee, find_gadgets, functions
from ncore.target import Target, inspect

from .interpreters import ALL, HOST, RUN_IN, SRC, Interpreter

XMM0 = 160
"""Where xmm0 lies in the extended state (the legacy FXSAVE layout at its start)."""
SLEEPER = """
import ctypes, faulthandler, signal, time
faulthandler.enable()  # gives the main thread an alternate signal stack
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1, signal.SIGWINCH})
stack = (ctypes.c_uint64 * 3)()

def state():
    ctypes.CDLL(None).sigaltstack(None, stack)
    mask = sorted(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, []))
    return f"mask={mask} altstack={stack[0]:x},{stack[1]},{stack[2]}"

before = state()
print("ready", flush=True)
started = time.monotonic()
time.sleep(3)
print("slept", "same" if state() == before else f"changed from {before} to {state()}", flush=True)
print("for at least 3 s" if time.monotonic() - started >= 3 else "cut short", flush=True)
"""


@pytest.fixture
def sleeper(request: pytest.FixtureRequest) -> Iterator[tuple[subprocess.Popen[str], Target]]:
    """A Python process (HOST[3], or the interpreter given as the test's param) blocked in a
    3 s sleep, with signals blocked and an alternate stack, which it checks afterwards."""
    interpreter = getattr(request, "param", HOST[3])
    interpreter.require()
    process = subprocess.Popen([interpreter.path, "-c", SLEEPER], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdout.readline() == "ready\n"
        time.sleep(0.1)
        yield process, inspect(process.pid)
    finally:
        process.kill()
        process.wait()


def opened(target: Target) -> str:
    """The target's Python binary as a file to read (it is the executable, or mapped)."""
    if target.python_binary == os.readlink(f"/proc/{target.pid}/exe"):
        return f"/proc/{target.pid}/exe"
    return f"/proc/{target.pid}/root{target.python_binary}"


def borrow(target: Target) -> Tracee:
    gadgets = find_gadgets(target.pid, target.maps)
    assert not isinstance(gadgets, str), gadgets
    return Tracee(target, X86_64, gadgets, time.monotonic() + 10, [])


def map_page(tracee: Tracee) -> int:
    """Map a page in the target for calls to return into, as the method does."""
    prot, flags = mmap.PROT_READ | mmap.PROT_EXEC, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
    page = tracee.syscall("mmap", X86_64.mmap, 0, mmap.PAGESIZE, prot, flags, -1, 0)
    assert page > 0
    tracee.memory.write(page, RETURNED_CODE)
    tracee.use_page(page, 0)
    return page


def get_max_address(target: Target) -> int:
    """Where PyFloat_GetMax (which returns a double: it sets xmm0) is in the target."""
    binary = read_elf(opened(target), frozenset({"PyFloat_GetMax", "PyGILState_Check"}))
    check = binary.symbols["PyGILState_Check"].value
    return binary.symbols["PyFloat_GetMax"].value + functions(target, X86_64)["PyGILState_Check"] - check


def blocked_signals(pid: int) -> str:
    with open(f"/proc/{pid}/status") as f:
        return next(line for line in f if line.startswith("SigBlk:"))


KERNEL_PROBE = """
import os, signal, sys, time
sys.path.insert(0, sys.argv[1])
from ncore.methods.ptrace import PTRACE_DETACH, PTRACE_INTERRUPT, PTRACE_SEIZE, WALL, kernel
parent = os.getpid()
child = os.fork()
if child == 0:
    while os.getppid() == parent:
        time.sleep(0.05)
    os._exit(0)
k = kernel()
k.ptrace(PTRACE_SEIZE, child, 0, 0)
k.ptrace(PTRACE_INTERRUPT, child, 0, 0)
os.waitpid(child, WALL)
registers = k.get_regset(child, 1, 1 << 16)
k.set_regset(child, 1, registers)
same = int(k.get_regset(child, 1, 1 << 16) == registers)
mask = k.sigmask(child)
k.set_sigmask(child, mask | 1 << (signal.SIGUSR1 - 1))
added = k.sigmask(child) ^ mask
k.set_sigmask(child, mask)
try:
    k.ptrace(PTRACE_SEIZE, child, 0, 0)
except OSError as e:
    refused = e.errno
k.ptrace(PTRACE_DETACH, child, 0, 0)
os.kill(child, signal.SIGKILL)
os.waitpid(child, 0)
print(len(registers), same, added, refused)
"""


@pytest.mark.parametrize("interpreter", ALL, ids=lambda i: i.name)
def test_libc_ptrace_is_called_the_same_from_every_python(interpreter: Interpreter, tmp_path):
    """ncore reaches libc's ptrace through _ctypes, ctypes' C half, which is not a public
    API: every Python ncore may run on seizes, reads and writes registers and signal mask,
    sees errno, and detaches."""
    interpreter.require()
    command = [interpreter.path, "-c", KERNEL_PROBE]
    if interpreter.chroot is not None:
        inside = Path(tempfile.mkdtemp(dir=interpreter.chroot / "tmp"))
        shutil.copytree(SRC / "ncore", inside / "ncore")
        command = [str(RUN_IN), str(interpreter.chroot), *command, "/" + str(inside.relative_to(interpreter.chroot))]
    else:
        inside = tmp_path
        command.append(str(SRC))
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    finally:
        if interpreter.chroot is not None:
            shutil.rmtree(inside)
    assert done.returncode == 0, done.stderr
    size, same, added, refused = map(int, done.stdout.split())
    assert (size, same, added, refused) == (27 * 8, 1, 1 << (signal.SIGUSR1 - 1), errno.EPERM)


def test_the_x86_64_table_matches_the_kernel_layout():
    """27 general registers (struct user_regs_struct, 216 bytes), every register the
    injector names among them."""
    names = X86_64.registers
    assert len(names) == len(set(names)) == 27
    named = [X86_64.pc, X86_64.sp, X86_64.result, X86_64.interrupted_syscall, X86_64.syscall_number]
    assert {*named, *X86_64.call_args, *X86_64.syscall_args, X86_64.flags} <= set(names)
    assert X86_64.futex == arch.FUTEX["x86_64"]


@pytest.mark.parametrize(
    ("direct", "mode", "syscall", "waiter", "words"),
    [
        (False, "auto", -1, False, "was running (Python code, or a C call holding the GIL)"),
        (True, "auto", 230, False, "blocked in clock_nanosleep with the GIL released"),
        (False, "auto", 202, True, "waiting for the GIL"),
        (False, "auto", 0, False, "blocked in read holding the GIL"),
        (True, "direct", -1, False, "--mode direct asked for a direct call"),
    ],
)
def test_the_choice_is_explained(direct, mode, syscall, waiter, words):
    """Both methods explain their choice in the same words, from the same facts."""
    assert words in explain(direct, mode, syscall, waiter)


def test_unavailable_elsewhere_names_the_other_method(monkeypatch):
    """On a processor without a table it says so and points at gdb."""
    target = Target(1, "python3", 0, 0, "/", True, "/usr/bin/python3", (3, 11), (0, 0))
    if arch.machine() != "x86_64":
        pytest.skip("the table is filled in for x86_64 only")
    assert Ptrace().unavailable_here() is None
    monkeypatch.setattr(arch, "machine", lambda: "riscv64")
    reason = Ptrace().unavailable(target)
    assert reason is not None and "riscv64" in reason and "--method gdb" in reason


@pytest.mark.parametrize("sleeper", [HOST[3], HOST[-1]], ids=["shared-libpython", "static-non-pie"], indirect=True)
def test_addresses_point_at_the_functions(sleeper):
    """The address of each Py* function holds that function's first bytes, as in the file."""
    _, target = sleeper
    found = functions(target, X86_64)
    binary = read_elf(opened(target), frozenset(found))
    with open(f"/proc/{target.pid}/mem", "rb") as memory:
        for name, address in found.items():
            memory.seek(address)
            assert memory.read(16) == binary.read(binary.symbols[name].value, 16), name


@pytest.mark.parametrize("sleeper", [HOST[3], HOST[-1]], ids=["shared-libpython", "static-non-pie"], indirect=True)
def test_the_c_library_has_the_code_a_call_runs_through(sleeper):
    """``syscall; ret`` and ``__restore_rt`` are found in executable memory of the C library."""
    _, target = sleeper
    gadgets = find_gadgets(target.pid, target.maps)
    assert not isinstance(gadgets, str), gadgets
    with Memory(target.pid) as memory:
        assert memory.read(gadgets.syscall_ret, len(SYSCALL_RET_CODE)) == SYSCALL_RET_CODE
        assert memory.read(gadgets.sigreturn, len(SIGRETURN_CODE)) == SIGRETURN_CODE
    libc = [m for m in target.maps if "libc" in os.path.basename(m.path) and "x" in m.perms]
    assert any(m.start <= gadgets.sigreturn < m.end for m in libc)


def test_poking_writes_unaligned_bytes(sleeper):
    """PTRACE_POKETEXT, the fallback for kernels that forbid writing read-only memory
    through /proc/PID/mem, writes bytes that straddle words and leaves their neighbours alone."""
    _, target = sleeper
    with borrow(target) as tracee:
        assert tracee.frame is not None
        place = tracee.frame.address - 64 + 5  # below the frame: the stack no one uses
        before = tracee.memory.read(place - 8, 32)
        tracee.memory.poke(place, b"\x90" * 11)
        after = tracee.memory.read(place - 8, 32)
        tracee.memory.poke(place, before[8:19])
        assert after == before[:8] + b"\x90" * 11 + before[19:]
        assert tracee.memory.read(place - 8, 32) == before


def test_extended_state_comes_back(sleeper):
    """A call that returns a double changes xmm0; after the thread is given back, xmm0
    holds what it held before, and the interrupted sleep is finished, not cut short, with
    its mask and alternate stack as they were."""
    process, target = sleeper
    get_max = get_max_address(target)
    mask = blocked_signals(target.pid)
    with borrow(target) as tracee:
        assert tracee.extended is not None
        saved = tracee.extended[XMM0 : XMM0 + 8]
        assert struct.unpack("<d", saved)[0] != sys.float_info.max
        map_page(tracee)
        tracee.call("PyFloat_GetMax", get_max)
        during = tracee.kernel.get_regset(target.pid, X86_64.extended_regset, len(tracee.extended))
        assert struct.unpack_from("<d", during, XMM0)[0] == sys.float_info.max
        assert blocked_signals(target.pid) != mask, "a call runs with every signal held off"
    with borrow(target) as tracee:
        assert tracee.extended is not None and tracee.extended[XMM0 : XMM0 + 8] == saved
    assert blocked_signals(target.pid) == mask
    assert process.communicate(timeout=10)[0] == "slept same\nfor at least 3 s\n"


def test_the_frame_alone_brings_the_thread_back(sleeper):
    """As if ncore died just after a call: ncore lets go of the thread on its way back
    without restoring anything, and rt_sigreturn from the frame puts back xmm0, the signal
    mask and the alternate stack; the sleep (EINTR, retried by CPython) lasts as asked."""
    process, target = sleeper
    get_max = get_max_address(target)
    mask = blocked_signals(target.pid)
    with borrow(target) as tracee:
        assert tracee.extended is not None
        saved = tracee.extended[XMM0 : XMM0 + 8]
        map_page(tracee)
        tracee.call("PyFloat_GetMax", get_max)
        assert tracee.state == "returned"
        tracee.kernel.ptrace(ptrace.PTRACE_DETACH, target.pid)
        tracee.state = "free"  # what ncore's death leaves: nobody restores it
    time.sleep(0.05)
    assert blocked_signals(target.pid) == mask
    with borrow(target) as tracee:
        assert tracee.extended is not None and tracee.extended[XMM0 : XMM0 + 8] == saved
    assert process.communicate(timeout=10)[0] == "slept same\nfor at least 3 s\n"


def test_a_crashing_call_is_taken_back(sleeper):
    """A call to address 0 faults (SIGSEGV): the thread is put back and its sleep goes on."""
    process, target = sleeper
    with borrow(target) as tracee:
        map_page(tracee)
        with pytest.raises(ptrace._Fault):
            tracee.call("nothing", 0)
    assert process.communicate(timeout=10)[0] == "slept same\nfor at least 3 s\n"
    assert process.returncode == 0


def test_memory_is_poked_where_proc_mem_refuses_to_write_it(sleeper, monkeypatch):
    """Where the kernel refuses writes through /proc/PID/mem (EIO under
    proc_mem.force_override=never), the frame and the page go in with PTRACE_POKETEXT and calls work."""
    process, target = sleeper

    def refuse(fd: int, data: bytes, offset: int) -> int:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    api = functions(target, X86_64)
    tracee = borrow(target)
    monkeypatch.setattr(os, "pwrite", refuse)
    with tracee:
        assert tracee.memory.poking
        map_page(tracee)
        assert tracee.call("PyGILState_Check", api["PyGILState_Check"]) == 0
    assert "through PTRACE_POKETEXT" in tracee.transcript[0]
    assert process.communicate(timeout=10)[0] == "slept same\nfor at least 3 s\n"
