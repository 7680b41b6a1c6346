"""The ptrace method: make a CPython process run code with ptrace alone, no debugger installed.

It borrows the target's main thread and nothing else. It seizes and interrupts the thread,
saves its general registers, its extended (floating-point and vector) state and its signal
mask, and writes a signal frame below the thread's stack (ncore.methods.frame). Every call
the thread is then made to run returns into ``rt_sigreturn`` from that frame, so the
thread always has its own way back: if ncore dies, at any moment and by any signal, the
call finishes and the thread resumes where it was stopped, as after a signal handler.
While ncore lives it catches the thread on that way back and restores it exactly itself:
an interrupted system call is made again, and select and poll, which restart with the time
they had left, lose the time the thread was borrowed.

Nothing of the program is overwritten. The first call (mmap) runs through code the C
library already has (``syscall; ret``, and ``__restore_rt`` as its return); the page it
maps holds the code to run and the return of every later call. It follows inject.gdb's
safety rule to choose a pending or a direct call. A pending call is queued and the thread
given back at once. A direct call runs as one piece of code (take the GIL, run, give the
GIL back, unmap the page, return), with every signal held off the thread until it is
back, as a handler's mask holds them; ncore stays attached, to take a crashed call back
and to restore the thread exactly when the dump has answered, and lets go of a call it no
longer waits for, which then finishes and returns on its own.

ncore is never needed for the thread to get back, so there is no window to protect. Its
death costs at most the exact restart: the frame's way back restarts what the kernel
restarts after a handler with SA_RESTART, and sleeps, select and poll return EINTR, which
CPython retries with the time left. A relative nanosleep made in C (libc's sleep) returns
early then, as it does when the borrowed code itself sleeps (the kernel keeps one restart
record per thread; pypanic's dump never sleeps). A thread with a shadow stack (CET) is
refused: a return into a frame it did not call would fault.

Everything that differs between processor architectures is data (a Machine) or lives in
the frame module; x86_64 is filled in.
"""

from __future__ import annotations

import errno
import mmap
import os
import struct
import time

from .. import arch
from ..errors import Busy, MethodUnavailable, NcoreError, NoSuchProcess, TargetExited, TimedOut
from ..memory import Memory
from ..private import held
from ..target import Mapping, Target, attach_refused, mappings, permission_hint
from . import Injection, Outcome, explain
from .frame import RETURNED_CODE, RETURNED_SYSCALL_END, SIGRETURN_CODE, SYSCALL_RET_CODE, DirectCall, Frame, restarted

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType
    from typing import Any

_PTRACE_PEEKTEXT = 1
_PTRACE_POKETEXT = 4
PTRACE_CONT = 7
PTRACE_DETACH = 17
_PTRACE_SYSCALL = 24
_PTRACE_GETSIGINFO = 0x4202
_PTRACE_GETREGSET = 0x4204
_PTRACE_SETREGSET = 0x4205
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
_PTRACE_GETSIGMASK = 0x420A
_PTRACE_SETSIGMASK = 0x420B
_PTRACE_GET_SYSCALL_INFO = 0x420E
_PTRACE_O_TRACESYSGOOD = 1
PTRACE_EVENT_STOP = 128
_SYSCALL_STOP = 0x85
"""SIGTRAP | 0x80: how a syscall stop shows in a wait status (PTRACE_O_TRACESYSGOOD)."""
_SYSCALL_ENTRY, _SYSCALL_EXIT = 1, 2
_NT_PRSTATUS = 1
WALL = 0x40000000
_MAX_REGSET_BYTES = 1 << 16
"""The buffer offered for a register set; the kernel says how much of it the set takes."""
_RESCUE_SECONDS = 2.0
"""After the deadline: how long the thread gets to stop, or a rescued call to come back."""
_WORD = 8
_EVERY_SIGNAL = (1 << 64) - 1
"""The mask a borrowed call runs under (the kernel leaves SIGKILL and SIGSTOP out)."""
_RESTARTS = frozenset({-512, -513, -514})
"""The kernel's ERESTARTSYS, ERESTARTNOINTR and ERESTARTNOHAND: the interrupted call will be made again."""
_LIBC_NAMES = ("libc.so", "libc-", "ld-musl-")


class Machine:
    """What borrowing a thread needs to know about one processor architecture.

    Each architecture is a subclass that sets every attribute below.
    """

    elf_machine: int
    registers: tuple[str, ...]
    """The general registers in the kernel's order (register set NT_PRSTATUS), 64 bits each."""
    extended_regset: int
    """The register set holding the floating-point and vector state, saved and restored whole."""
    pc: str
    sp: str
    result: str
    """Where a function's result is, once it has returned into the page's return code."""
    interrupted_syscall: str
    """Holds the system call the thread is in (negative outside one); -1 while the thread
    is borrowed, so that the kernel restarts no system call under a borrowed call."""
    call_args: tuple[str, ...]
    syscall_args: tuple[str, ...]
    syscall_number: str
    flags: str
    clear_flags: int
    """Bits of the ``flags`` register a called function must find clear."""
    mmap: int
    munmap: int
    futex: int
    sigreturn: int
    rewritten_timeouts: tuple[tuple[int, int, int], ...]
    """System calls that, interrupted, write the time left into the caller's timeout and
    restart with it: (number, argument index, units per second of the struct's second
    field: 10**6 for a timeval, 10**9 for a timespec; both are two 64-bit integers)."""
    fault_signals: frozenset[int]
    """The signals a crashing call raises (SIGILL, SIGBUS, SIGFPE, SIGSEGV)."""


class X86_64Machine(Machine):
    elf_machine = 62
    registers = (
        "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx", "rdx", "rsi", "rdi",
        "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base", "gs_base", "ds", "es", "fs", "gs",
    )  # fmt: skip
    extended_regset = 0x202  # NT_X86_XSTATE
    pc = "rip"
    sp = "rsp"
    result = "rdi"
    interrupted_syscall = "orig_rax"
    call_args = ("rdi", "rsi", "rdx", "rcx", "r8", "r9")
    syscall_args = ("rdi", "rsi", "rdx", "r10", "r8", "r9")
    syscall_number = "rax"
    flags = "eflags"
    clear_flags = 0x400  # the direction flag
    mmap = 9
    munmap = 11
    futex = arch.FUTEX["x86_64"]
    sigreturn = 15
    rewritten_timeouts = ((23, 4, 10**6), (270, 4, 10**9), (271, 2, 10**9))  # select, pselect6, ppoll
    fault_signals = frozenset({4, 7, 8, 11})


X86_64 = X86_64Machine()
MACHINES = {"x86_64": X86_64}


class _Late(Exception):
    """The deadline passed while the thread ran a borrowed call."""


class _Exited(Exception):
    """The target exited (or was killed) while seized."""


class _Fault(Exception):
    """A borrowed call crashed: the kernel sent the thread the fault signal numbered in
    ``args[0]`` during the call named in ``args[1]``; the thread was taken back."""


class _Kernel:
    """libc's ptrace, with errno turned into OSError, called through ``_ctypes``: the C
    half of ctypes, whose Python half (the ctypes package) costs 2.5 ms to import, a tenth
    of a snapshot, for the four C types and the one function needed here."""

    def __init__(self) -> None:
        import _ctypes

        def simple(code: str) -> Any:
            return type(f"c_{code}", (_ctypes._SimpleCData,), {"_type_": code})

        self._c = _ctypes
        self._char, self._u64 = simple("c"), simple("Q")
        number, pointer = simple("i"), simple("P")
        function = type("ptrace", (_ctypes.CFuncPtr,), {
            "_flags_": _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO,
            "_argtypes_": (number, number, pointer, pointer),
            "_restype_": simple("l"),
        })  # fmt: skip
        program = _ctypes.dlopen(None, os.RTLD_NOW)  # type: ignore[arg-type]  # None: ncore's Python and its libraries
        self._ptrace = function(_ctypes.dlsym(program, "ptrace"))

    def ptrace(self, request: int, pid: int, address: int = 0, data: int = 0) -> int:
        self._c.set_errno(0)
        result = int(self._ptrace(request, pid, address, data))
        if result == -1:
            code = self._c.get_errno()
            if code:
                raise OSError(code, os.strerror(code))
        return result

    def get_regset(self, pid: int, kind: int, size: int) -> bytes:
        buffer = self._buffer(size)
        vector = self._iovec(buffer, size)
        self.ptrace(_PTRACE_GETREGSET, pid, kind, self._c.addressof(vector))
        return buffer.raw[: vector[1]]  # type: ignore[no-any-return]

    def set_regset(self, pid: int, kind: int, data: bytes) -> None:
        buffer = self._buffer(len(data))
        buffer.raw = data
        vector = self._iovec(buffer, len(data))
        self.ptrace(_PTRACE_SETREGSET, pid, kind, self._c.addressof(vector))

    def sigmask(self, pid: int) -> int:
        mask = self._u64()
        self.ptrace(_PTRACE_GETSIGMASK, pid, 8, self._c.addressof(mask))
        return int(mask.value)

    def set_sigmask(self, pid: int, value: int) -> None:
        mask = self._u64(value)
        self.ptrace(_PTRACE_SETSIGMASK, pid, 8, self._c.addressof(mask))

    def syscall_stop(self, pid: int) -> tuple[int, int, int]:
        """(entry or exit, the call's number at entry or its result at exit, the
        instruction pointer) of a thread in a syscall stop."""
        buffer = self._buffer(88)
        self.ptrace(_PTRACE_GET_SYSCALL_INFO, pid, 88, self._c.addressof(buffer))
        op, ip, value = struct.unpack_from("<B7xQ8xq", buffer.raw)
        return op, value, ip

    def signal_code(self, pid: int) -> int:
        """si_code of the signal the thread is stopped for (positive: sent by the kernel)."""
        buffer = self._buffer(128)
        self.ptrace(_PTRACE_GETSIGINFO, pid, 0, self._c.addressof(buffer))
        return int(struct.unpack_from("<i", buffer.raw, 8)[0])

    def _buffer(self, size: int) -> Any:
        """``size`` zeroed bytes of C memory, as ctypes' create_string_buffer makes them."""
        return (self._char * size)()

    def _iovec(self, buffer: Any, size: int) -> Any:
        return (self._u64 * 2)(self._c.addressof(buffer), size)


_KERNEL: list[_Kernel] = []


def kernel() -> _Kernel:
    """The one _Kernel (loading libc's ptrace once)."""
    if not _KERNEL:
        _KERNEL.append(_Kernel())
    return _KERNEL[0]


class TracedMemory(Memory):
    """The memory of a traced process: /proc/PID/mem, or PTRACE_POKETEXT where the kernel
    forbids writing read-only memory through it (proc_mem.force_override=never)."""

    def __init__(self, pid: int, kernel: _Kernel) -> None:
        super().__init__(pid)
        self.kernel = kernel
        self.poking = False

    def write(self, address: int, data: bytes) -> None:
        if not self.poking:
            try:
                if os.pwrite(self.fd, data, address) == len(data):
                    return
            except OSError as e:
                if e.errno not in (errno.EIO, errno.EPERM, errno.EACCES):
                    raise
            self.poking = True
        self.poke(address, data)

    def poke(self, address: int, data: bytes) -> None:
        """Write word by word with PTRACE_POKETEXT (the thread must be stopped)."""
        start = address & ~(_WORD - 1)
        end = (address + len(data) + _WORD - 1) & ~(_WORD - 1)
        for word in range(start, end, _WORD):
            low, high = max(word, address), min(word + _WORD, address + len(data))
            if high - low == _WORD:
                value = data[low - address : high - address]
            else:
                current = self.kernel.ptrace(_PTRACE_PEEKTEXT, self.pid, word) & (1 << 64) - 1
                old = current.to_bytes(_WORD, "little")
                value = old[: low - word] + data[low - address : high - address] + old[high - word :]
            self.kernel.ptrace(_PTRACE_POKETEXT, self.pid, word, int.from_bytes(value, "little"))


def functions(target: Target, machine: Machine) -> dict[str, int]:
    """Where the Py* functions are in the target, once its binary is known to suit this processor."""
    if target.elf_machine != machine.elf_machine:
        raise MethodUnavailable(
            f"{target.python_binary} in process {target.pid} is not a program for this processor "
            f"(ELF machine {target.elf_machine})",
            "use --method gdb",
        )
    return target.functions


class Gadgets:
    """Code the target's C library already has, that borrowed calls run through."""

    def __init__(self, syscall_ret: int, sigreturn: int) -> None:
        self.syscall_ret = syscall_ret
        """``syscall; ret``."""
        self.sigreturn = sigreturn
        """``__restore_rt``: ``rt_sigreturn`` with the stack pointer where a returning call leaves it."""


def find_gadgets(pid: int, maps: list[Mapping]) -> Gadgets | str:
    """The code a borrowed call needs, found in the C library's executable mappings (then
    in the others'); or why it is not there. The mapped files are searched (the same bytes
    as the process's code, which nothing writes: only a debugger would, and ncore refuses
    a traced target), through /proc, wherever the target's root is."""
    executable = [m for m in maps if "x" in m.perms and m.path.startswith("/")]
    executable.sort(key=lambda m: not any(name in os.path.basename(m.path) for name in _LIBC_NAMES))
    found: dict[bytes, int] = {}
    for mapping in executable:
        for code, at in _find_in(pid, mapping, (SYSCALL_RET_CODE, SIGRETURN_CODE)).items():
            found.setdefault(code, mapping.start + at)
        if len(found) == 2:
            return Gadgets(found[SYSCALL_RET_CODE], found[SIGRETURN_CODE])
    return f"process {pid}'s C library has no rt_sigreturn return code (not glibc or musl?); use --method gdb"


def _find_in(pid: int, mapping: Mapping, codes: tuple[bytes, ...]) -> dict[bytes, int]:
    """Where in ``mapping`` each of ``codes`` first is (offsets), for those it holds."""
    for opened in (f"/proc/{pid}/map_files/{mapping.name}", f"/proc/{pid}/root{mapping.path}"):
        try:
            fd = os.open(opened, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            # Not past the file's end: a page mapped beyond it faults when read.
            size = min(mapping.end - mapping.start, os.fstat(fd).st_size - mapping.offset)
            with mmap.mmap(fd, size, prot=mmap.PROT_READ, offset=mapping.offset) as text:
                return {code: at for code in codes if (at := text.find(code)) >= 0}
        except (OSError, ValueError):
            continue
        finally:
            os.close(fd)
    return {}


def shadow_stack(pid: int) -> bool:
    """Whether the main thread runs with a shadow stack (x86 CET), as Linux 6.6+ reports."""
    try:
        with open(f"/proc/{pid}/status") as f:
            line = next((line for line in f if line.startswith("x86_Thread_features:")), "")
    except OSError:
        return False
    return "shstk" in line.split()


def _signed(value: int, bits: int = 64) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


class Tracee:
    """The target's main thread, seized; a context that always gives it back.

    ``state`` says where the thread is: ``home`` (stopped, its registers its own),
    ``returned`` (stopped on the way back from a call, where resuming it as it is restores
    it from the frame), ``running`` (in a call, or stopped in one), ``gone`` (exited).
    On leaving, a thread at home or on its way back is restored exactly and detached; one
    in a call is let go, and finishes it and returns on its own.
    """

    def __init__(
        self, target: Target, machine: Machine, gadgets: Gadgets, deadline: float, transcript: list[str]
    ) -> None:
        self.pid = target.pid
        self.uid = target.uid
        self.maps = target.maps
        self.machine = machine
        self.gadgets = gadgets
        self.deadline = deadline
        self.transcript = transcript
        self.kernel = kernel()
        self.general_size = _WORD * len(machine.registers)
        self.state = "free"
        self.stopped = False
        self.signals: list[int] = []
        """Signals that could not be held off and were kept from the thread, to send again."""
        self.calling = ""
        self.registers: bytes | None = None
        self.extended: bytes | None = None
        self.sigmask = 0
        self.blocked = False
        """Whether every signal is held off the thread (for a call; the frame restores its mask)."""
        self.frame: Frame | None = None
        self.page: int | None = None
        """The page's return code, once the page is mapped."""
        self.returns: set[int] = set()
        """Where a returning call stops: right after the ``syscall`` of an rt_sigreturn code."""
        self.stopped_at = 0.0
        self.released_at: float | None = None

    def __enter__(self) -> Tracee:
        try:
            self.memory = TracedMemory(self.pid, self.kernel)
        except OSError as e:
            raise self._attach_error(e) from None
        try:
            self.kernel.ptrace(PTRACE_SEIZE, self.pid, 0, _PTRACE_O_TRACESYSGOOD)
        except OSError as e:
            self.memory.close()
            raise self._attach_error(e) from None
        self.stopped_at = time.monotonic()
        try:
            self.kernel.ptrace(PTRACE_INTERRUPT, self.pid)
            self.state = "running"  # not stopped yet: let go if it never stops
            self._wait_for_interrupt(self.deadline)
            self.state = "home"
            self.registers = self.kernel.get_regset(self.pid, _NT_PRSTATUS, self.general_size)
            self.extended = self.kernel.get_regset(self.pid, self.machine.extended_regset, _MAX_REGSET_BYTES)
            self.sigmask = self.kernel.sigmask(self.pid)
            self._place_frame()
        except BaseException as e:
            self.__exit__(type(e), e, e.__traceback__)
            raise
        how = "PTRACE_POKETEXT" if self.memory.poking else f"/proc/{self.pid}/mem"
        assert self.frame is not None
        self.transcript.append(
            f"seized and interrupted thread {self.pid}; saved its registers, {len(self.extended)} bytes of extended "
            f"state and its signal mask; its way back at {self.frame.address:#x} (its stack) through {how}"
        )
        return self

    def _place_frame(self) -> None:
        """Write the frame below the thread's red zone; refuse when its stack has no room mapped."""
        assert self.extended is not None
        saved = self.saved_registers()
        frame = Frame(saved[self.machine.sp], len(self.extended))
        stack = _mapping_at(self.pid, self.maps, saved[self.machine.sp])
        if stack is None or frame.address < stack.start:
            raise NcoreError(
                f"the main thread of process {self.pid} has no room mapped below its stack pointer for ncore's way "
                "back; nothing was changed in it",
                "use --method gdb",
            )
        self.memory.write(frame.address, frame.build(saved, self.extended, self.sigmask, self.gadgets.sigreturn))
        self.frame = frame
        self.returns = {self.gadgets.sigreturn + len(SIGRETURN_CODE)}

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        try:
            if self.state in ("home", "returned"):
                self._restore()
            elif self.state == "running":
                self._let_go()
        except _Exited:
            pass
        finally:
            self.memory.close()
        if isinstance(error, _Late) and self.calling == "":
            raise TimedOut(
                f"process {self.pid}'s main thread did not stop for ncore within the time limit (an "
                "uninterruptible wait?); nothing was changed in it",
                "look at its state in /proc/PID/stat and /proc/PID/stack; try again later",
            )
        if isinstance(error, _Late):
            raise TimedOut(
                f"process {self.pid} did not return from {self.calling} within the time limit; ncore let go of it, "
                "and its main thread finishes the call and goes back to where it was on its own",
                "watch the target; try again later or with a longer --timeout",
            )

    def borrowed_ms(self) -> float:
        return ((self.released_at or time.monotonic()) - self.stopped_at) * 1000

    def saved_registers(self) -> dict[str, int]:
        assert self.registers is not None
        return self._unpack(self.registers)

    # -- calls ------------------------------------------------------------------------

    def syscall(self, name: str, number: int, *args: int) -> int:
        """Make system call ``number`` through the C library's ``syscall; ret``; its result (-errno)."""
        values = dict(zip(self.machine.syscall_args, args))
        values[self.machine.syscall_number] = number
        result = self._call(name, self.gadgets.syscall_ret, values, self.gadgets.sigreturn, number)
        self.transcript.append(f"{name}({', '.join(_show(a) for a in args)}) = {_show(result)}")
        return result

    def call(self, name: str, address: int, *args: int, void: bool = False) -> int:
        """Call the function at ``address`` with integer arguments; its int result. The page must be mapped."""
        assert self.page is not None
        values = dict(zip(self.machine.call_args, args))
        result = _signed(self._call(name, address, values, self.page, None), 32)
        self.transcript.append(f"{name}({', '.join(_show(a) for a in args)})" + ("" if void else f" = {result}"))
        return result

    def use_page(self, page: int, returned: int) -> None:
        """Calls now return into the code at ``returned`` (RETURNED_CODE) in the mapped ``page``."""
        self.page = page + returned
        self.returns.add(self.page + RETURNED_SYSCALL_END)

    def _call(self, name: str, address: int, values: dict[str, int], return_to: int, syscall: int | None) -> int:
        """Run the code at ``address`` with these registers, returning into ``return_to``; the
        result of system call ``syscall`` made on the way, or the result register's value."""
        assert self.frame is not None
        if self.state not in ("home", "returned"):
            raise NcoreError(f"cannot call {name}: the thread is {self.state}")
        self.calling = name
        self.memory.write(self.frame.address, struct.pack("<Q", return_to))
        self._start(address, self.frame.address, values, _PTRACE_SYSCALL)
        return self._until_returned(self.deadline, syscall)

    def launch(self, name: str, address: int) -> None:
        """Start the code at ``address`` (a DirectCall) with the stack at the frame's
        ucontext, and let it run without stopping at its system calls."""
        assert self.frame is not None
        self.calling = name
        self._start(address, self.frame.ucontext, {}, PTRACE_CONT)
        self.transcript.append(f"started {name}: the thread runs it and returns on its own")

    def _start(self, address: int, stack: int, values: dict[str, int], resume: int) -> None:
        machine = self.machine
        registers = self.saved_registers()
        registers.update(values)
        registers[machine.pc] = address
        registers[machine.sp] = stack
        registers[machine.interrupted_syscall] = -1
        registers[machine.flags] &= ~machine.clear_flags
        self.kernel.set_regset(self.pid, _NT_PRSTATUS, self._pack(registers))
        # Only now that the thread would go into the call: were ncore to die before this, it
        # would resume at home, where a changed mask would stay.
        if not self.blocked:
            self.kernel.set_sigmask(self.pid, _EVERY_SIGNAL)
            self.blocked = True
        self.state = "running"
        self._resume(resume)

    def _until_returned(self, deadline: float, syscall: int | None) -> int:
        """Follow the thread's system calls until it is on its way back from the call."""
        result = entered = 0
        while True:
            status = self._next_stop(deadline)
            if status >> 8 == _SYSCALL_STOP:
                op, value, ip = self.kernel.syscall_stop(self.pid)
                if op == _SYSCALL_ENTRY and value == self.machine.sigreturn and ip in self.returns:
                    self.state = "returned"
                    if syscall is not None:
                        return result
                    registers = self._unpack(self.kernel.get_regset(self.pid, _NT_PRSTATUS, self.general_size))
                    return registers[self.machine.result]
                if op == _SYSCALL_ENTRY:
                    entered = value
                elif entered == syscall:
                    result = value
            else:
                self._other_stop(status)
            self._resume(_PTRACE_SYSCALL)

    def watch(self, answered: Callable[[], bool], wanted: Callable[[], bool]) -> bool:
        """While a launched call runs: wait until ``answered()`` (True) or until it is no
        longer ``wanted()`` (False). A call that crashes is taken back (_Fault)."""
        while True:
            status = self._poll_stop(float("inf"), lambda: answered() or not wanted())
            if status is None:
                return answered()
            if status >> 16 == PTRACE_EVENT_STOP:
                self._resume(PTRACE_CONT)
                continue
            self._take_back_if_crashed(status)
            self._resume(PTRACE_CONT)

    def finish(self, acknowledge: Callable[[], None]) -> None:
        """The launched call has answered: catch it on its way back (the payload waits for
        ``acknowledge`` before it returns), so that it is restored exactly."""
        self._interrupt(time.monotonic() + _RESCUE_SECONDS)
        assert self.frame is not None
        stack = self._unpack(self.kernel.get_regset(self.pid, _NT_PRSTATUS, self.general_size))[self.machine.sp]
        acknowledge()
        if stack > self.frame.ucontext:
            self.state = "home"  # it came back on its own before ncore caught it
            return
        self._resume(_PTRACE_SYSCALL)
        self._until_returned(time.monotonic() + _RESCUE_SECONDS, None)

    def _take_back_if_crashed(self, status: int) -> None:
        """A fault in the launched call: the thread skips to the call's end (GIL given back,
        page unmapped), comes back, and _Fault is raised; any other signal is kept."""
        number = os.WSTOPSIG(status)
        if number not in self.machine.fault_signals or self.kernel.signal_code(self.pid) <= 0:
            self.signals.append(number)
            return
        assert self.frame is not None and self.tail is not None
        registers = self._unpack(self.kernel.get_regset(self.pid, _NT_PRSTATUS, self.general_size))
        registers[self.machine.pc] = self.tail
        registers[self.machine.sp] = self.frame.ucontext
        self.kernel.set_regset(self.pid, _NT_PRSTATUS, self._pack(registers))
        self._resume(_PTRACE_SYSCALL)
        self._until_returned(time.monotonic() + _RESCUE_SECONDS, None)
        raise _Fault(number, self.calling)

    tail: int | None = None
    """Where a crashed launched call is taken to (its DirectCall's tail)."""

    # -- stops ------------------------------------------------------------------------

    def _resume(self, how: int, signal: int = 0) -> None:
        self.stopped = False
        self.kernel.ptrace(how, self.pid, 0, signal)

    def _interrupt(self, deadline: float) -> None:
        """Stop the thread wherever it is (PTRACE_INTERRUPT)."""
        if not self.stopped:
            self.kernel.ptrace(PTRACE_INTERRUPT, self.pid)
            self._wait_for_interrupt(deadline, during_call=True)

    def _wait_for_interrupt(self, deadline: float, during_call: bool = False) -> None:
        """Wait for the stop PTRACE_INTERRUPT asked for. Signals met on the way are passed
        on before a call (the thread takes them as it would have) and kept during one."""
        while True:
            status = self._next_stop(deadline)
            if status >> 16 == PTRACE_EVENT_STOP:
                return
            if status >> 8 == _SYSCALL_STOP:
                self._resume(_PTRACE_SYSCALL)
            elif during_call:
                self._take_back_if_crashed(status)
                self._resume(PTRACE_CONT)
            else:
                self._resume(PTRACE_CONT, os.WSTOPSIG(status))

    def _other_stop(self, status: int) -> None:
        """A stop in a call that is not a syscall stop: a fault raises _Fault after taking the
        thread back; a group stop or another signal is kept from the thread."""
        if status >> 16 == PTRACE_EVENT_STOP:
            return
        number = os.WSTOPSIG(status)
        if number in self.machine.fault_signals and self.kernel.signal_code(self.pid) > 0:
            self._abandon()
            raise _Fault(number, self.calling)
        self.signals.append(number)

    def _abandon(self) -> None:
        """Take a crashed short call back: the thread goes straight to its way back."""
        assert self.frame is not None
        registers = self._unpack(self.kernel.get_regset(self.pid, _NT_PRSTATUS, self.general_size))
        registers[self.machine.pc] = self.gadgets.sigreturn
        registers[self.machine.sp] = self.frame.ucontext
        self.kernel.set_regset(self.pid, _NT_PRSTATUS, self._pack(registers))
        self._resume(_PTRACE_SYSCALL)
        self._until_returned(time.monotonic() + _RESCUE_SECONDS, None)

    def _next_stop(self, deadline: float) -> int:
        """The next wait status of a stop; polled, so that the deadline holds (_Late)."""
        status = self._poll_stop(deadline, None)
        assert status is not None
        return status

    def _poll_stop(self, deadline: float, until: Callable[[], bool] | None) -> int | None:
        """The next wait status of a stop, or None once ``until()`` is true; _Late after ``deadline``."""
        pause = 0.00002
        while True:
            try:
                found, status = os.waitpid(self.pid, os.WNOHANG | WALL)
            except ChildProcessError:
                self.state = "gone"
                raise _Exited from None
            if found:
                if not os.WIFSTOPPED(status):
                    self.state = "gone"
                    self.released_at = time.monotonic()
                    raise _Exited(status)
                self.stopped = True
                return status
            if until is not None and until():
                return None
            if time.monotonic() > deadline:
                raise _Late
            time.sleep(pause)
            pause = min(pause * 2, 0.001)

    # -- giving the thread back --------------------------------------------------------

    def _restore(self) -> None:
        """Put a thread stopped at home or on its way back exactly as it was, and detach.

        The order keeps every step safe should ncore die between two of them: the mask
        first and the registers last, so that until then the thread still goes back
        through the frame, which restores the same mask and extended state.
        """
        assert self.registers is not None and self.extended is not None
        if self.state == "returned":
            self.kernel.set_sigmask(self.pid, self.sigmask)
            self.kernel.set_regset(self.pid, self.machine.extended_regset, self.extended)
            self._take_back_borrowed_time()
            resumed = restarted(self.saved_registers(), handler=False)
            self.kernel.set_regset(self.pid, _NT_PRSTATUS, self._pack(resumed))
        self._detach("restored and detached")

    def _let_go(self) -> None:
        """Detach from a thread in a call, which it finishes and returns from on its own."""
        try:
            self._interrupt(time.monotonic() + _RESCUE_SECONDS)
        except _Late:
            self.transcript.append("the thread did not stop to be let go; ncore's exit lets go of it")
            return
        self._detach(f"let go of the thread in {self.calling}, which returns on its own")

    def _detach(self, how: str) -> None:
        """Detach, say ``how`` and for how long the thread was borrowed, and send again the
        signals that were kept from it."""
        self.kernel.ptrace(PTRACE_DETACH, self.pid)
        self.state = "free"
        self.released_at = time.monotonic()
        self.transcript.append(f"{how}; the thread was borrowed for {self.borrowed_ms():.1f} ms")
        for number in self.signals:
            os.kill(self.pid, number)
        if self.signals:
            counts = {number: self.signals.count(number) for number in self.signals}
            numbers = ", ".join(f"{n}" if c == 1 else f"{n} ({c} times)" for n, c in counts.items())
            self.transcript.append(f"sent again the signals that arrived meanwhile: {numbers}")

    def _take_back_borrowed_time(self) -> None:
        """Shorten an interrupted select or poll that will restart by the time the thread was borrowed.

        These calls left the time remaining in the caller's timeout, so without this the wait
        would last that much longer. (Other timed waits restart towards their first deadline.)
        """
        registers = self.saved_registers()
        syscall = _signed(registers[self.machine.interrupted_syscall])
        found = [(index, units) for number, index, units in self.machine.rewritten_timeouts if number == syscall]
        if not found or _signed(registers["rax"]) not in _RESTARTS:
            return
        index, units = found[0]
        address = registers[self.machine.syscall_args[index]]
        if not address:
            return
        seconds, fraction = struct.unpack("<2q", self.memory.read(address, 16))
        borrowed = round((time.monotonic() - self.stopped_at) * units)
        left = max(seconds * units + fraction - borrowed, 0)
        self.memory.write(address, struct.pack("<2q", *divmod(left, units)))
        self.transcript.append(
            f"took the {borrowed / units * 1000:.1f} ms borrowed off the timeout of system call {syscall}"
        )

    def _unpack(self, data: bytes) -> dict[str, int]:
        return dict(zip(self.machine.registers, struct.unpack(f"<{len(self.machine.registers)}Q", data)))

    def _pack(self, registers: dict[str, int]) -> bytes:
        return struct.pack(
            f"<{len(self.machine.registers)}Q", *(registers[name] & (1 << 64) - 1 for name in self.machine.registers)
        )

    def _attach_error(self, error: OSError) -> NcoreError:
        if error.errno == errno.ESRCH or isinstance(error, FileNotFoundError):
            return NoSuchProcess(f"process {self.pid} exited before ncore could attach")
        if error.errno in (errno.EPERM, errno.EACCES):
            return attach_refused(self.pid, self.uid, "ptrace")
        return NcoreError(f"could not attach to process {self.pid}: {error.strerror}")


def _mapping_at(pid: int, maps: list[Mapping], address: int) -> Mapping | None:
    """The mapping holding ``address``, from ``maps`` or, if they are out of date, read anew."""
    for candidates in (maps, None):
        for mapping in candidates if candidates is not None else mappings(pid):
            if mapping.start <= address < mapping.end:
                return mapping
    return None


def _show(value: int) -> str:
    return f"{value:#x}" if abs(value) > 0xFFFF else str(value)


def page_layout(image: bytes) -> tuple[int, int]:
    """Where, in the page, the return code and the direct call go after ``image`` (the
    session's part: the code and the pending call's function)."""
    returned = (len(image) + 15) & -16
    return returned, (returned + len(RETURNED_CODE) + 15) & -16


class Ptrace:
    name = "ptrace"

    def __init__(self) -> None:
        self._gadgets: dict[int, Gadgets] = {}

    def unavailable(self, target: Target) -> str | None:
        why = self.unavailable_here()
        if why is not None:
            return why
        if shadow_stack(target.pid):
            return (
                f"process {target.pid}'s main thread runs with a shadow stack (CET), which the way back of a "
                "borrowed call would break; use --method gdb"
            )
        try:
            found = find_gadgets(target.pid, target.maps)
        except PermissionError:
            return f"not allowed to read process {target.pid}'s memory: {permission_hint(target.uid)}"
        except FileNotFoundError:
            return f"process {target.pid} exited"
        if isinstance(found, str):
            return found
        self._gadgets[target.pid] = found
        return None

    def unavailable_here(self) -> str | None:
        system, machine = os.uname().sysname, arch.machine()
        if system != "Linux" or machine not in MACHINES:
            return (
                f"the built-in ptrace injector works on Linux {', '.join(MACHINES)} only, not {system} {machine} "
                "(use --method gdb)"
            )
        release = tuple(int(part) for part in os.uname().release.split(".")[:2] if part.isdigit())
        if release < (5, 3):
            return f"the built-in ptrace injector needs Linux 5.3 or later, not {os.uname().release} (use --method gdb)"
        try:
            kernel()
        except (ImportError, OSError, AttributeError) as e:
            return f"_ctypes or libc's ptrace is not available in the Python running ncore ({e}); use --method gdb"
        return None

    def inject(self, target: Target, injection: Injection) -> Outcome:
        machine = MACHINES[arch.machine()]
        api = functions(target, machine)
        gadgets = self._gadgets.get(target.pid)
        if gadgets is None:
            why = self.unavailable(target)
            if why is not None:
                raise MethodUnavailable(why)
            gadgets = self._gadgets[target.pid]
        size = (len(injection.page) + 512 + mmap.PAGESIZE - 1) & -mmap.PAGESIZE
        returned, direct_at = page_layout(injection.page)
        transcript: list[str] = []
        tracee = Tracee(target, machine, gadgets, injection.deadline, transcript)
        decided: tuple[str, str] | None = None
        try:
            with tracee:
                if held(injection.running_lock):
                    raise Busy(
                        f"process {target.pid} is running another ncore's pending call; nothing was done to it",
                        "wait for that dump to finish and run ncore again",
                    )
                registers = tracee.saved_registers()
                syscall = _signed(registers[machine.interrupted_syscall])
                low, high = target.runtime
                gil_waiter = syscall == machine.futex and low <= registers[machine.syscall_args[0]] < high
                page = tracee.syscall("mmap", machine.mmap, 0, size, mmap.PROT_READ | mmap.PROT_EXEC,
                                      mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)  # fmt: skip
                if page < 0:
                    raise NcoreError(f"mmap failed in process {target.pid}: {os.strerror(-page)}")
                direct_call = DirectCall(api, page, page, size, gadgets.syscall_ret, gadgets.sigreturn, machine.munmap)
                contents = injection.page + bytes(returned - len(injection.page)) + RETURNED_CODE
                contents += bytes(direct_at - len(contents)) + direct_call.code
                tracee.memory.write(page, contents)
                tracee.use_page(page, returned)
                pending = page + injection.pending_at if injection.pending_at else api["PyRun_SimpleString"]
                # Each call costs stopped time; the GIL question matters only in a system call.
                gil_held = -1 if syscall < 0 else int(tracee.call("PyGILState_Check", api["PyGILState_Check"]) != 0)
                transcript.append(f"state syscall={syscall} gil_held={gil_held} gil_waiter={int(gil_waiter)}")
                direct = injection.mode == "direct" or (
                    injection.mode == "auto" and syscall >= 0 and not gil_held and not gil_waiter
                )
                decided = ("direct" if direct else "pending", explain(direct, injection.mode, syscall, gil_waiter))
                transcript.append(f"path {decided[0]}")
                if not injection.wanted():
                    transcript.append("the request was withdrawn meanwhile: nothing is queued")
                elif direct:
                    tracee.tail = page + direct_at + direct_call.tail
                    injection.acknowledged_by_method = True
                    tracee.launch("the direct call", page + direct_at)
                    if tracee.watch(injection.answered, injection.wanted):
                        tracee.finish(injection.acknowledge)
                elif tracee.call("Py_AddPendingCall", api["Py_AddPendingCall"], pending, page) < 0:
                    raise NcoreError(
                        f"process {target.pid} refused the pending call: its queue of pending calls is full",
                        "try again in a moment",
                    )
        except _Exited:
            transcript.append(f"the target exited during {tracee.calling}")
            if decided is None:
                raise TargetExited(f"process {target.pid} exited while ncore was attached to it") from None
        except _Fault as e:
            import signal

            number, call = e.args
            crashed = NcoreError(
                f"{call} crashed in process {target.pid} ({signal.Signals(number).name}); ncore took the main "
                "thread back" + (" and gave the GIL back" if call == "the direct call" else ""),
                "run with -v to see the steps; try --method gdb",
            )
            crashed.transcript = transcript
            raise crashed from None
        except NcoreError as e:
            e.transcript = transcript
            raise
        return Outcome("ptrace", decided[0], decided[1], tracee.borrowed_ms() / 1000, transcript)
