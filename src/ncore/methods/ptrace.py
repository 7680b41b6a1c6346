"""The ptrace method: make a CPython process run code with ptrace alone, no debugger installed.

It borrows the target's main thread and nothing else: seize and interrupt it, save its
general registers and its whole extended (floating-point and vector) state, write a stub
over the program's entry point (code that runs once, at startup) and drive calls through
it: ``syscall; int3`` for a system call, ``call *%rax; int3`` for a function. It follows
inject.gdb's safety rule to choose a pending or a direct call, then puts back the stub
bytes, the registers (so the kernel restarts an interrupted system call) and the extended
state, and detaches. Everything that differs between processor architectures is data (a
Machine); x86_64 is filled in.

Waits keep their length: a timed wait interrupted by a direct call restarts towards its
first deadline, and select and poll, which restart with the time they had left, lose the
time the thread was borrowed. One case escapes: a relative nanosleep made in C (libc's
sleep) returns early with EINTR, as if a signal had come, when the borrowed code itself
calls a nanosleep, because the kernel keeps one restart record per thread.
"""

from __future__ import annotations

import errno
import mmap
import os
import struct
import time

from .. import arch
from ..errors import MethodUnavailable, NcoreError, NoSuchProcess, PermissionDenied, TargetExited, TimedOut
from ..target import Mapping, Target, attach_refused, permission_hint
from . import Injection, Outcome, explain

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ctypes
    from types import TracebackType

_PTRACE_PEEKTEXT = 1
_PTRACE_POKETEXT = 4
_PTRACE_CONT = 7
_PTRACE_DETACH = 17
_PTRACE_GETSIGINFO = 0x4202
_PTRACE_GETREGSET = 0x4204
_PTRACE_SETREGSET = 0x4205
_PTRACE_SEIZE = 0x4206
_PTRACE_INTERRUPT = 0x4207
_PTRACE_EVENT_STOP = 128
_NT_PRSTATUS = 1
_WALL = 0x40000000
_AT_ENTRY = 9
_MAX_REGSET_BYTES = 1 << 16
"""The buffer offered for a register set; the kernel says how much of it the set takes."""
_RESCUE_SECONDS = 2.0
"""After the deadline: how long the thread gets to stop again, and a cleanup call to finish."""
_WORD = 8
_RESTARTS = frozenset({-512, -513, -514})
"""The kernel's ERESTARTSYS, ERESTARTNOINTR and ERESTARTNOHAND: the interrupted call will be made again."""


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
    interrupted_syscall: str
    """Holds the system call the thread is in (negative outside one); -1 while the thread
    is borrowed, so that the kernel restarts no system call under the stub."""
    call_args: tuple[str, ...]
    syscall_args: tuple[str, ...]
    syscall_number: str
    syscall_stub: bytes
    callee: str
    call_stub: bytes
    """Calls the function whose address is in ``callee``. Both stubs end in a breakpoint."""
    red_zone: int
    stack_alignment: int
    """Of the stack pointer before the stub's call instruction."""
    flags: str
    clear_flags: int
    """Bits of the ``flags`` register a called function must find clear."""
    mmap: int
    munmap: int
    futex: int
    rewritten_timeouts: tuple[tuple[int, int, int], ...]
    """System calls that, interrupted, write the time left into the caller's timeout and
    restart with it: (number, argument index, units per second of the struct's second
    field: 10**6 for a timeval, 10**9 for a timespec; both are two 64-bit integers)."""
    trap_signal: int
    """The signal a breakpoint raises (SIGTRAP)."""
    fault_signals: frozenset[int]
    """The signals a crashing call raises (SIGILL, SIGBUS, SIGFPE, SIGSEGV)."""

    @property
    def stub(self) -> bytes:
        return self.syscall_stub + self.call_stub


class X86_64Machine(Machine):
    elf_machine = 62
    registers = (
        "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx", "rdx", "rsi", "rdi",
        "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base", "gs_base", "ds", "es", "fs", "gs",
    )  # fmt: skip
    extended_regset = 0x202  # NT_X86_XSTATE
    pc = "rip"
    sp = "rsp"
    result = "rax"
    interrupted_syscall = "orig_rax"
    call_args = ("rdi", "rsi", "rdx", "rcx", "r8", "r9")
    syscall_args = ("rdi", "rsi", "rdx", "r10", "r8", "r9")
    syscall_number = "rax"
    syscall_stub = b"\x0f\x05\xcc"  # syscall; int3
    callee = "rax"
    call_stub = b"\xff\xd0\xcc"  # call *%rax; int3
    red_zone = 128
    stack_alignment = 16
    flags = "eflags"
    clear_flags = 0x400  # the direction flag
    mmap = 9
    munmap = 11
    futex = arch.FUTEX["x86_64"]
    rewritten_timeouts = ((23, 4, 10**6), (270, 4, 10**9), (271, 2, 10**9))  # select, pselect6, ppoll
    trap_signal = 5
    fault_signals = frozenset({4, 7, 8, 11})


X86_64 = X86_64Machine()
MACHINES = {"x86_64": X86_64}


class _Late(Exception):
    """The deadline passed while the thread ran a borrowed call."""


class _Exited(Exception):
    """The target exited (or was killed) while seized."""


class _Fault(Exception):
    """A borrowed call crashed: the kernel sent the thread the fault signal numbered in
    ``args[0]`` during the call named in ``args[1]``."""


class _Kernel:
    """libc's ptrace through ctypes, with errno turned into OSError."""

    def __init__(self) -> None:
        import ctypes

        self.ctypes = ctypes
        self._ptrace = ctypes.CDLL(None, use_errno=True).ptrace
        self._ptrace.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
        self._ptrace.restype = ctypes.c_long

    def ptrace(self, request: int, pid: int, address: int = 0, data: int = 0) -> int:
        self.ctypes.set_errno(0)
        result = int(self._ptrace(request, pid, address, data))
        if result == -1:
            code = self.ctypes.get_errno()
            if code:
                raise OSError(code, os.strerror(code))
        return result

    def get_regset(self, pid: int, kind: int, size: int) -> bytes:
        buffer = self.ctypes.create_string_buffer(size)
        vector = self._iovec(buffer, size)
        self.ptrace(_PTRACE_GETREGSET, pid, kind, self.ctypes.addressof(vector))
        return buffer.raw[: vector[1]]

    def set_regset(self, pid: int, kind: int, data: bytes) -> None:
        buffer = self.ctypes.create_string_buffer(data, len(data))
        vector = self._iovec(buffer, len(data))
        self.ptrace(_PTRACE_SETREGSET, pid, kind, self.ctypes.addressof(vector))

    def signal_code(self, pid: int) -> int:
        """si_code of the signal the thread is stopped for (positive: sent by the kernel)."""
        buffer = self.ctypes.create_string_buffer(128)
        self.ptrace(_PTRACE_GETSIGINFO, pid, 0, self.ctypes.addressof(buffer))
        return int(struct.unpack_from("<i", buffer.raw, 8)[0])

    def _iovec(self, buffer: ctypes.Array[ctypes.c_char], size: int) -> ctypes.Array[ctypes.c_uint64]:
        return (self.ctypes.c_uint64 * 2)(self.ctypes.addressof(buffer), size)


_KERNEL: list[_Kernel] = []


def _kernel() -> _Kernel:
    """The one _Kernel (loading libc's ptrace once)."""
    if not _KERNEL:
        _KERNEL.append(_Kernel())
    return _KERNEL[0]


class Memory:
    """The target's memory: /proc/PID/mem, or PTRACE_POKETEXT where the kernel forbids
    writing read-only text through it (proc_mem.force_override=never)."""

    def __init__(self, pid: int, kernel: _Kernel) -> None:
        self.pid = pid
        self.kernel = kernel
        self.fd = os.open(f"/proc/{pid}/mem", os.O_RDWR | os.O_CLOEXEC)
        self.poking = False

    def read(self, address: int, size: int) -> bytes:
        return os.pread(self.fd, size, address)

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

    def close(self) -> None:
        os.close(self.fd)


def functions(target: Target, machine: Machine) -> dict[str, int]:
    """Where the Py* functions are in the target, once its binary is known to suit this processor."""
    if target.elf_machine != machine.elf_machine:
        raise MethodUnavailable(
            f"{target.python_binary} in process {target.pid} is not a program for this processor "
            f"(ELF machine {target.elf_machine})",
            "use --method gdb",
        )
    return target.functions


def stub_address(pid: int, machine: Machine, maps: list[Mapping]) -> int:
    """The program's entry point (AT_ENTRY): executable, and run only once, at startup."""
    with open(f"/proc/{pid}/auxv", "rb") as f:
        auxv = f.read()
    entry = int(dict(struct.iter_unpack("<QQ", auxv[: len(auxv) // 16 * 16])).get(_AT_ENTRY, 0))
    if not any(m.start <= entry and entry + len(machine.stub) <= m.end and "x" in m.perms for m in maps):
        raise NcoreError(
            f"process {pid}'s entry point ({entry:#x}) is not in executable memory: nowhere to put the call stub",
            "use --method gdb",
        )
    return entry


def _signed(value: int, bits: int = 64) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


class Tracee:
    """The target's main thread, seized and stopped; a context that always gives it back.

    On leaving, the stub bytes, registers and extended state are restored and the thread
    detached; signals that arrived meanwhile are sent again. A call still running at the
    deadline is stopped: one that can be abandoned is, and the thread put back where it
    was; one running interpreter code (``holds``) cannot be undone, and is let go.
    """

    def __init__(self, target: Target, machine: Machine, stub: int, deadline: float, transcript: list[str]) -> None:
        self.pid = target.pid
        self.uid = target.uid
        self.machine = machine
        self.stub = stub
        self.deadline = deadline
        self.transcript = transcript
        self.kernel = _kernel()
        self.general_size = _WORD * len(machine.registers)
        self.signals: list[int] = []
        self.calling = ""
        self.holds = False
        self.overdue = ""
        """The call during which the deadline passed."""
        self.stuck = False
        """The deadline passed with the thread stopped in the middle of a call."""
        self.late = False
        """The deadline passed, but the thread is back at a breakpoint: only cleanup calls run."""
        self.registers: bytes | None = None
        self.extended: bytes | None = None
        self.original_stub: bytes | None = None
        self.stopped_at = 0.0
        self.released_at: float | None = None

    def __enter__(self) -> Tracee:
        try:
            self.memory = Memory(self.pid, self.kernel)
        except OSError as e:
            raise self._attach_error(e) from None
        try:
            self.kernel.ptrace(_PTRACE_SEIZE, self.pid)
        except OSError as e:
            self.memory.close()
            raise self._attach_error(e) from None
        self.stopped_at = time.monotonic()
        try:
            self.kernel.ptrace(_PTRACE_INTERRUPT, self.pid)
            self._wait_for_stop(self.deadline, None, interrupted=True)
            self.registers = self.kernel.get_regset(self.pid, _NT_PRSTATUS, self.general_size)
            self.extended = self.kernel.get_regset(self.pid, self.machine.extended_regset, _MAX_REGSET_BYTES)
            self.original_stub = self.memory.read(self.stub, len(self.machine.stub))
            self.memory.write(self.stub, self.machine.stub)
        except BaseException as e:
            self.__exit__(type(e), e, e.__traceback__)
            raise
        how = "PTRACE_POKETEXT" if self.memory.poking else f"/proc/{self.pid}/mem"
        self.transcript.append(
            f"seized and interrupted thread {self.pid}; saved its registers and {len(self.extended)} bytes of "
            f"extended state; stub at {self.stub:#x} (entry point) through {how}"
        )
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        try:
            if isinstance(error, _Exited):
                return
            if isinstance(error, _Late) and not self.calling:
                raise TimedOut(
                    f"process {self.pid}'s main thread did not stop for ncore within the time limit (an "
                    "uninterruptible wait?); nothing was changed in it",
                    "look at its state in /proc/PID/stat and /proc/PID/stack; try again later",
                )
            if isinstance(error, _Late) and self.stuck and self.holds:
                self.kernel.ptrace(_PTRACE_DETACH, self.pid)
                raise TimedOut(
                    f"process {self.pid} did not return from {self.overdue} within the time limit. It runs "
                    "interpreter code there, which cannot be undone midway, so ncore let go of it mid-call: when "
                    "the call returns, the process stops with SIGTRAP",
                    "a longer --timeout lets a slow dump finish; look at the target's standard error",
                )
            self._restore()
            self.kernel.ptrace(_PTRACE_DETACH, self.pid)
            self.released_at = time.monotonic()
            self.transcript.append(f"restored and detached; the thread was borrowed for {self.borrowed_ms():.1f} ms")
            for number in self.signals:
                os.kill(self.pid, number)
            if self.signals:
                counts = {number: self.signals.count(number) for number in self.signals}
                numbers = ", ".join(f"{n}" if c == 1 else f"{n} ({c} times)" for n, c in counts.items())
                self.transcript.append(f"sent again the signals that arrived meanwhile: {numbers}")
            if isinstance(error, _Late) and self.stuck:
                raise TimedOut(
                    f"process {self.pid} did not return from {self.overdue} within the time limit; ncore abandoned "
                    "the call, put the main thread back where it was and detached",
                    "the abandoned call may have left the interpreter inconsistent (a lock half-taken); "
                    "watch the target, and try again later or with a longer --timeout",
                )
            if isinstance(error, _Late):
                raise TimedOut(
                    f"the time limit passed while process {self.pid} ran {self.overdue}; ncore undid what it had "
                    "started, put the main thread back where it was and detached",
                    "try again, with a longer --timeout",
                )
        finally:
            self.memory.close()

    def borrowed_ms(self) -> float:
        return ((self.released_at or time.monotonic()) - self.stopped_at) * 1000

    def call(
        self, name: str, address: int, *args: int, void: bool = False, holds: bool = False, cleanup: bool = False
    ) -> int:
        """Call the function at ``address`` with integer arguments; its int result.

        ``holds=True``: the function runs interpreter code and cannot be abandoned midway;
        ``cleanup=True``: it runs even after the deadline (given a short grace of its own).
        """
        machine = self.machine
        values = dict(zip(machine.call_args, args))
        values[machine.callee] = address
        result = _signed(self._run(name, len(machine.syscall_stub), values, holds, cleanup), 32)
        self.transcript.append(f"{name}({', '.join(_show(a) for a in args)})" + ("" if void else f" = {result}"))
        return result

    def syscall(self, name: str, number: int, *args: int, cleanup: bool = False) -> int:
        """Make system call ``number``; its result (negative: -errno)."""
        values = dict(zip(self.machine.syscall_args, args))
        values[self.machine.syscall_number] = number
        result = _signed(self._run(name, 0, values, False, cleanup))
        self.transcript.append(f"{name}({', '.join(_show(a) for a in args)}) = {_show(result)}")
        return result

    def _run(self, name: str, offset: int, values: dict[str, int], holds: bool, cleanup: bool) -> int:
        """Run the stub at ``offset`` with these registers set; the result register at its breakpoint."""
        assert self.registers is not None
        machine = self.machine
        if self.late and not cleanup:
            raise _Late
        self.calling, self.holds = name, holds
        registers = self._unpack(self.registers)
        registers.update(values)
        registers[machine.pc] = self.stub + offset
        registers[machine.sp] = (registers[machine.sp] - machine.red_zone) & -machine.stack_alignment
        registers[machine.interrupted_syscall] = -1
        registers[machine.flags] &= ~machine.clear_flags
        self.kernel.set_regset(self.pid, _NT_PRSTATUS, self._pack(registers))
        trap = self.stub + {0: len(machine.syscall_stub), len(machine.syscall_stub): len(machine.stub)}[offset]
        deadline = max(self.deadline, time.monotonic() + _RESCUE_SECONDS) if cleanup else self.deadline
        self.kernel.ptrace(_PTRACE_CONT, self.pid)
        try:
            self._wait_for_stop(deadline, trap, interrupted=False)
        except _Late:
            self.overdue = name
            self.kernel.ptrace(_PTRACE_INTERRUPT, self.pid)
            try:
                returned = self._wait_for_stop(time.monotonic() + _RESCUE_SECONDS, trap, interrupted=True)
            except _Late:
                raise TimedOut(
                    f"process {self.pid} did not return from {name} within the time limit and could not be "
                    "stopped again; ncore let go of it mid-call",
                    "the target may be hung; look at /proc/PID/stack, and at its standard error",
                ) from None
            if not returned:
                self.stuck = True
                raise
            self.late = True
        return self._unpack(self.kernel.get_regset(self.pid, _NT_PRSTATUS, self.general_size))[machine.result]

    def _wait_for_stop(self, deadline: float, trap: int | None, interrupted: bool) -> bool:
        """Wait until the thread stops at ``trap`` (True), or, when ``interrupted``, for the
        stop PTRACE_INTERRUPT asked for (False). Other signals are noted, to be sent again;
        a fault in a call raises _Fault."""
        while True:
            status = self._next_stop(deadline)
            if status >> 16 == _PTRACE_EVENT_STOP:
                if interrupted:
                    return False
            else:
                number = os.WSTOPSIG(status)
                if number == self.machine.trap_signal and trap is not None:
                    registers = self._unpack(self.kernel.get_regset(self.pid, _NT_PRSTATUS, self.general_size))
                    if registers[self.machine.pc] == trap:
                        return True
                if number in self.machine.fault_signals and trap is not None and self.kernel.signal_code(self.pid) > 0:
                    raise _Fault(number, self.calling)
                self.signals.append(number)
            self.kernel.ptrace(_PTRACE_CONT, self.pid)

    def _next_stop(self, deadline: float) -> int:
        """The next wait status of a stop; polled, so that the deadline holds."""
        pause = 0.00002
        while True:
            try:
                found, status = os.waitpid(self.pid, os.WNOHANG | _WALL)
            except ChildProcessError:
                raise _Exited from None
            if found:
                if not os.WIFSTOPPED(status):
                    self.released_at = time.monotonic()
                    raise _Exited(status)
                return status
            if time.monotonic() > deadline:
                raise _Late
            time.sleep(pause)
            pause = min(pause * 2, 0.001)

    def _restore(self) -> None:
        if self.original_stub is not None:
            self.memory.write(self.stub, self.original_stub)
        if self.registers is not None:
            self._take_back_borrowed_time()
            self.kernel.set_regset(self.pid, _NT_PRSTATUS, self.registers)
        if self.extended is not None:
            self.kernel.set_regset(self.pid, self.machine.extended_regset, self.extended)

    def _take_back_borrowed_time(self) -> None:
        """Shorten an interrupted select or poll that will restart by the time the thread was borrowed.

        These calls left the time remaining in the caller's timeout, so without this the wait
        would last that much longer. (Other timed waits restart towards their first deadline.)
        """
        registers = self.saved_registers()
        syscall = _signed(registers[self.machine.interrupted_syscall])
        found = [(index, units) for number, index, units in self.machine.rewritten_timeouts if number == syscall]
        if not found or _signed(registers[self.machine.result]) not in _RESTARTS:
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

    def saved_registers(self) -> dict[str, int]:
        assert self.registers is not None
        return self._unpack(self.registers)

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


def _show(value: int) -> str:
    return f"{value:#x}" if abs(value) > 0xFFFF else str(value)


class Ptrace:
    name = "ptrace"

    def unavailable(self, target: Target) -> str | None:
        return self.unavailable_here()

    def unavailable_here(self) -> str | None:
        system, machine = os.uname().sysname, arch.machine()
        if system != "Linux" or machine not in MACHINES:
            return (
                f"the built-in ptrace injector works on Linux {', '.join(MACHINES)} only, not {system} {machine} "
                "(use --method gdb)"
            )
        try:
            _kernel()
        except (ImportError, OSError, AttributeError) as e:
            return f"ctypes or libc's ptrace is not available in the Python running ncore ({e}); use --method gdb"
        return None

    def inject(self, target: Target, injection: Injection) -> Outcome:
        machine = MACHINES[arch.machine()]
        try:
            api = functions(target, machine)
            stub = stub_address(target.pid, machine, target.maps)
        except PermissionError:
            raise PermissionDenied(
                f"not allowed to read process {target.pid}'s memory map", permission_hint(target.uid)
            ) from None
        except FileNotFoundError:
            raise NoSuchProcess(f"process {target.pid} exited while ncore was looking at it") from None
        size = (len(injection.code) + mmap.PAGESIZE) & -mmap.PAGESIZE
        transcript: list[str] = []
        tracee = Tracee(target, machine, stub, injection.deadline, transcript)
        decided: tuple[str, str] | None = None
        try:
            with tracee:
                registers = tracee.saved_registers()
                syscall = _signed(registers[machine.interrupted_syscall])
                low, high = target.runtime
                gil_waiter = syscall == machine.futex and low <= registers[machine.syscall_args[0]] < high
                # Each call costs stopped time; the GIL question matters only in a system call.
                gil_held = -1 if syscall < 0 else int(tracee.call("PyGILState_Check", api["PyGILState_Check"]) != 0)
                transcript.append(f"state syscall={syscall} gil_held={gil_held} gil_waiter={int(gil_waiter)}")
                direct = injection.mode == "direct" or (
                    injection.mode == "auto" and syscall >= 0 and not gil_held and not gil_waiter
                )
                page = tracee.syscall("mmap", machine.mmap, 0, size, mmap.PROT_READ | mmap.PROT_WRITE,
                                      mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)  # fmt: skip
                if page < 0:
                    raise NcoreError(f"mmap failed in process {target.pid}: {os.strerror(-page)}")
                tracee.memory.write(page, injection.code)
                decided = (
                    "direct" if direct else "pending",
                    explain(direct, injection.mode, syscall, gil_waiter),
                )
                transcript.append(f"path {decided[0]}")
                if direct:
                    release = api["PyGILState_Release"]
                    state = tracee.call("PyGILState_Ensure", api["PyGILState_Ensure"])
                    try:
                        tracee.call("PyRun_SimpleString", api["PyRun_SimpleString"], page, holds=True)
                    except (_Late, _Fault):
                        # The call was abandoned, or never started, and the thread is back in ncore's hands
                        # with the GIL taken: give it back, or every other thread waits for it forever.
                        if not tracee.stuck:
                            tracee.call("PyGILState_Release", release, state, void=True, holds=True, cleanup=True)
                        raise
                    tracee.call("PyGILState_Release", release, state, void=True, holds=True, cleanup=True)
                    tracee.syscall("munmap", machine.munmap, page, size, cleanup=True)
                elif tracee.call("Py_AddPendingCall", api["Py_AddPendingCall"], api["PyRun_SimpleString"], page) < 0:
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
                f"{call} crashed in process {target.pid} ({signal.Signals(number).name}); ncore put the main "
                "thread back" + (" and gave the GIL back" if call == "PyRun_SimpleString" else ""),
                "run with -v to see the steps; try --method gdb",
            )
            crashed.transcript = transcript
            raise crashed from None
        except NcoreError as e:
            e.transcript = transcript
            raise
        return Outcome("ptrace", decided[0], decided[1], tracee.borrowed_ms() / 1000, transcript)
