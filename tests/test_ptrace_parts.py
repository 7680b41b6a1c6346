"""The ptrace method's parts: the architecture table, the wording, and, on small real
processes, symbol addresses, the stub's place, word-wise writes, extended state that
comes back, and a crashing call that is undone."""

from __future__ import annotations

import errno
import os
import struct
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from ncore import arch
from ncore.elf import read_elf
from ncore.methods import explain, ptrace
from ncore.methods.ptrace import X86_64, Ptrace, Tracee, functions, stub_address
from ncore.target import Target, inspect, mappings

from .interpreters import HOST

XMM0 = 160
"""Where xmm0 lies in the extended state (the legacy FXSAVE layout at its start)."""
SLEEPER = "import time; print('ready', flush=True); time.sleep(3); print('slept', flush=True)"


@pytest.fixture
def sleeper(request: pytest.FixtureRequest) -> Iterator[tuple[subprocess.Popen[str], Target]]:
    """A Python process (HOST[3], or the interpreter given as the test's param) blocked in a 3 s sleep."""
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
    maps = mappings(target.pid)
    return Tracee(target, X86_64, stub_address(target.pid, X86_64, maps), time.monotonic() + 10, [])


def test_the_x86_64_table_matches_the_kernel_layout():
    """27 general registers (struct user_regs_struct, 216 bytes), every register the
    injector names among them, and both stubs ending in a breakpoint."""
    names = X86_64.registers
    assert len(names) == len(set(names)) == 27
    named = [X86_64.pc, X86_64.sp, X86_64.result, X86_64.interrupted_syscall, X86_64.syscall_number, X86_64.callee]
    assert {*named, *X86_64.call_args, *X86_64.syscall_args, X86_64.flags} <= set(names)
    assert X86_64.syscall_stub.endswith(b"\xcc") and X86_64.call_stub.endswith(b"\xcc")
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
    """Here it serves; on a processor without a table it says so and points at gdb."""
    target = Target(1, "python3", 0, 0, "/", True, "/usr/bin/python3", (3, 11), (0, 0))
    if arch.machine() != "x86_64":
        pytest.skip("the table is filled in for x86_64 only")
    assert Ptrace().unavailable(target) is None
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


def test_the_stub_goes_at_the_entry_point(sleeper):
    """AT_ENTRY is the executable's e_entry plus its load bias, in executable memory."""
    _, target = sleeper
    maps = mappings(target.pid)
    entry = stub_address(target.pid, X86_64, maps)
    with open(f"/proc/{target.pid}/exe", "rb") as f:
        e_entry = struct.unpack_from("<Q", f.read(64), 24)[0]
    exe = os.readlink(f"/proc/{target.pid}/exe")
    base = min(m.start for m in maps if m.path == exe and m.offset == 0)
    assert entry == base + e_entry


def test_poking_writes_unaligned_bytes(sleeper):
    """PTRACE_POKETEXT, the fallback for kernels that forbid writing text through
    /proc/PID/mem, writes bytes that straddle words and leaves their neighbours alone."""
    _, target = sleeper
    with borrow(target) as tracee:
        place = tracee.stub + 13
        before = tracee.memory.read(place - 8, 32)
        tracee.memory.poke(place, b"\x90" * 11)
        after = tracee.memory.read(place - 8, 32)
        tracee.memory.poke(place, before[8:19])
        assert after == before[:8] + b"\x90" * 11 + before[19:]
        assert tracee.memory.read(place - 8, 32) == before


def test_extended_state_comes_back(sleeper):
    """A call that returns a double changes xmm0; after the thread is given back, xmm0
    holds what it held before, and the interrupted sleep is finished, not cut short."""
    process, target = sleeper
    binary = read_elf(opened(target), frozenset({"PyFloat_GetMax", "PyGILState_Check"}))
    api = functions(target, X86_64)
    get_max = (
        binary.symbols["PyFloat_GetMax"].value + api["PyGILState_Check"] - binary.symbols["PyGILState_Check"].value
    )
    with borrow(target) as tracee:
        assert tracee.extended is not None
        saved = tracee.extended[XMM0 : XMM0 + 8]
        assert struct.unpack("<d", saved)[0] != sys.float_info.max
        tracee.call("PyFloat_GetMax", get_max)
        during = tracee.kernel.get_regset(target.pid, X86_64.extended_regset, len(tracee.extended))
        assert struct.unpack_from("<d", during, XMM0)[0] == sys.float_info.max
    with borrow(target) as tracee:
        assert tracee.extended is not None and tracee.extended[XMM0 : XMM0 + 8] == saved
    assert process.communicate(timeout=10)[0] == "slept\n"


def test_a_crashing_call_is_undone(sleeper):
    """A call to address 0 faults (SIGSEGV): the thread is put back and its sleep goes on."""
    process, target = sleeper
    with pytest.raises(ptrace._Fault), borrow(target) as tracee:
        tracee.call("nothing", 0)
    assert process.communicate(timeout=10)[0] == "slept\n"
    assert process.returncode == 0


def test_text_is_poked_where_proc_mem_refuses_to_write_it(sleeper, monkeypatch):
    """Where the kernel refuses writes through /proc/PID/mem (EIO under
    proc_mem.force_override=never), the stub goes in with PTRACE_POKETEXT and calls work."""
    process, target = sleeper

    def refuse(fd: int, data: bytes, offset: int) -> int:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "pwrite", refuse)
    api = functions(target, X86_64)
    with borrow(target) as tracee:
        assert tracee.memory.poking
        assert tracee.call("PyGILState_Check", api["PyGILState_Check"]) == 0
    assert "through PTRACE_POKETEXT" in tracee.transcript[0]
    assert process.communicate(timeout=10)[0] == "slept\n"
