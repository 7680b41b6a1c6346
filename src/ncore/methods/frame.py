"""How a borrowed thread goes back on its own: a signal frame on its stack, and code that returns into it.

The kernel runs a signal handler by pushing the thread's registers, extended state, signal
mask and alternate stack onto the thread's stack (a ``struct rt_sigframe``) and making the
handler return into ``rt_sigreturn``, which restores all of it from the frame. ncore builds
the same frame by hand below the stopped thread's red zone, and every call it makes the
thread run returns into an ``rt_sigreturn``. So at every moment the thread has its own way
back, needing no tracer: if ncore dies (SIGKILL), the call finishes and the thread resumes
where it was stopped, as if a signal handler installed with SA_RESTART had run. While ncore
lives, it catches the thread at that ``rt_sigreturn`` and restores it exactly itself.

Why a frame rather than a trampoline that reloads registers: ``rt_sigreturn`` is the one
way user code can set every register, the flags, the whole extended state and the signal
mask at once, and it is the kernel's own, tested on every signal delivered. A trampoline
could not restore the extended state's supervisor-managed parts (PKRU) nor the mask in one
step. The price, measured in BENCHMARKS.md: about 12 KB written into the target's stack
while it is stopped, well under a millisecond.

What the frame cannot do is restart an interrupted system call the way the kernel does when
no handler runs: ``rt_sigreturn`` always forgets the thread's restart record. So the frame
says what a handler with SA_RESTART would leave behind (``restarted(..., handler=True)``):
calls the kernel restarts after such a handler (reads, writes, waits without a timeout) are
made again; sleeps, select and poll return EINTR, which CPython retries with the time left
(PEP 475). ncore's own return path, taken whenever it is alive, restarts exactly.

Only x86_64 is filled in: the frame layout and the machine code below are its.
"""

from __future__ import annotations

import struct

ERESTARTSYS, ERESTARTNOINTR, ERESTARTNOHAND, ERESTART_RESTARTBLOCK = -512, -513, -514, -516
EINTR = 4
RESTART_SYSCALL = 219
"""x86_64's restart_syscall, which resumes a call the kernel keeps a restart record of."""
RT_SIGRETURN = 15
SIGRETURN_CODE = bytes.fromhex("48c7c00f0000000f05")
"""``mov $15, %rax; syscall``: glibc's and musl's ``__restore_rt``, the return of every signal handler."""
SYSCALL_RET_CODE = bytes.fromhex("0f05c3")
"""``syscall; ret``: how glibc ends getpid and other calls that cannot fail."""

RED_ZONE = 128
FRAME_BYTES = 8 + 304 + 128
"""struct rt_sigframe: the return address, a ucontext, a siginfo."""
UCONTEXT = 8
"""Where the ucontext starts in the frame; the stack pointer ``rt_sigreturn`` expects."""
SCRATCH = UCONTEXT + 304
"""The frame's siginfo, which ``rt_sigreturn`` never reads: room for the direct call's own values."""
_MCONTEXT = 40
"""The sigcontext inside the ucontext, after uc_flags, uc_link and uc_stack."""
_UC_FLAGS = 0x1 | 0x2 | 0x4
"""UC_FP_XSTATE, UC_SIGCONTEXT_SS, UC_STRICT_RESTORE_SS: the extended state is whole, and
the stack segment is restored as given."""
_KEEP_ALTSTACK = 3
"""An ss_flags value ``sigaltstack`` refuses: ``rt_sigreturn`` then leaves the thread's
alternate signal stack as it is (it ignores that error), whatever the thread set up."""
_XSAVE_ALIGN = 64
_SW_BYTES = 464
"""Where the XSAVE layout keeps the software-defined bytes: the kernel reads the frame's
extended-state header there (magic1, extended size, features, size)."""
_FP_XSTATE_MAGIC1, _FP_XSTATE_MAGIC2 = 0x46505853, 0x46505845
_SIGCONTEXT_ORDER = (
    "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rdi", "rsi", "rbp", "rbx", "rdx", "rax", "rcx", "rsp",
    "rip", "eflags",
)  # fmt: skip


def restarted(registers: dict[str, int], handler: bool) -> dict[str, int]:
    """The registers as the thread resumes with after the kernel's restart rules: as if no
    handler had run (``handler=False``: the exact resumption), or a handler with SA_RESTART.

    Outside a system call (``orig_rax`` negative), or after one that finished, nothing changes.
    """
    out = dict(registers)
    if _signed(registers["orig_rax"]) < 0:
        return out
    error = _signed(registers["rax"])
    if error in (ERESTARTSYS, ERESTARTNOINTR) or (error == ERESTARTNOHAND and not handler):
        out["rax"], out["rip"] = registers["orig_rax"], registers["rip"] - 2
    elif error == ERESTART_RESTARTBLOCK and not handler:
        out["rax"], out["rip"] = RESTART_SYSCALL, registers["rip"] - 2
    elif error in (ERESTARTNOHAND, ERESTART_RESTARTBLOCK):
        out["rax"] = -EINTR & (1 << 64) - 1
    out["orig_rax"] = (1 << 64) - 1
    return out


class Frame:
    """Where the frame goes below a stack pointer, for extended state of a given size.

    From the top: the red zone, the extended state (64-byte aligned, followed by its end
    marker), then the frame at ``address``, whose first word is the return address of a
    call made with the stack pointer there (``address`` is 8 past a multiple of 16, as a
    function expects the stack on entry).
    """

    def __init__(self, stack_pointer: int, xstate_size: int) -> None:
        self.xstate = (stack_pointer - RED_ZONE - xstate_size - 4) & -_XSAVE_ALIGN
        self.address = ((self.xstate - FRAME_BYTES) & -16) - 8
        self.xstate_size = xstate_size

    @property
    def ucontext(self) -> int:
        """The stack pointer of the thread when a call returns, and ``rt_sigreturn``'s."""
        return self.address + UCONTEXT

    @property
    def end(self) -> int:
        return self.xstate + self.xstate_size + 4

    def build(self, registers: dict[str, int], xstate: bytes, sigmask: int, return_address: int) -> bytes:
        """The bytes from ``address`` to ``end``: the frame that resumes the thread with
        ``registers`` (as the kernel gave them at the stop), ``xstate`` (NT_X86_XSTATE's
        layout) and ``sigmask``; its first word is ``return_address``."""
        resumed = restarted(registers, handler=True)
        general = [resumed[name] & (1 << 64) - 1 for name in _SIGCONTEXT_ORDER]
        segments = (registers["cs"], 0, 0, registers["ss"])
        sigcontext = struct.pack("<18Q4H4QQ8Q", *general, *segments, 0, 0, 0, 0, self.xstate, *([0] * 8))
        ucontext = struct.pack("<QQQiiQ", _UC_FLAGS, 0, 0, _KEEP_ALTSTACK, 0, 0) + sigcontext
        ucontext += struct.pack("<Q", sigmask)
        frame = struct.pack("<Q", return_address) + ucontext + bytes(FRAME_BYTES - 8 - len(ucontext))
        # The ptrace layout puts XCR0 where a signal frame puts its software bytes.
        features = struct.unpack_from("<Q", xstate, _SW_BYTES)[0]
        software = struct.pack("<IIQI", _FP_XSTATE_MAGIC1, len(xstate) + 4, features, len(xstate))
        area = xstate[:_SW_BYTES] + software + bytes(48 - len(software)) + xstate[_SW_BYTES + 48 :]
        gap = bytes(self.xstate - self.address - len(frame))
        return frame + gap + area + struct.pack("<I", _FP_XSTATE_MAGIC2)


def _signed(value: int) -> int:
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >> 63 else value


def _movabs(register: int, value: int) -> bytes:
    """``movabs $value, %reg`` (rax 0, rcx 1, rsi 6, rdi 7)."""
    return bytes([0x48, 0xB8 + register]) + struct.pack("<Q", value & (1 << 64) - 1)


_RAX, _RCX, _RSI, _RDI = 0, 1, 6, 7
_CALL_RAX = bytes.fromhex("ffd0")
_JMP_RCX = bytes.fromhex("ffe1")
_PUSH_RCX = bytes.fromhex("51")

RETURNED_CODE = bytes.fromhex("4889c7") + bytes.fromhex("b80f000000") + bytes.fromhex("0f05")
"""Where a call returns: ``mov %rax, %rdi`` (the result, for ncore to read at the stop),
``mov $15, %eax; syscall`` (rt_sigreturn, with the stack pointer at the frame's ucontext)."""
RETURNED_SYSCALL_END = len(RETURNED_CODE)


def _store(slot: int, register: str) -> bytes:
    """``mov %eax, slot(%rsp)``, or ``mov slot(%rsp), %edi`` for a load."""
    modrm = {"store-eax": (0x89, 0x84), "load-edi": (0x8B, 0xBC)}[register]
    return bytes([modrm[0], modrm[1], 0x24]) + struct.pack("<i", slot)


class DirectCall:
    """The direct call as one piece of code the thread runs alone, started with its stack
    pointer at the frame's ucontext: take the GIL, run the code, give the GIL back, unmap
    the page this code is in, return into ``rt_sigreturn``.

    errno is not kept, as a signal handler keeps it: a direct call borrows a thread that
    is inside a blocking system call, and the C library sets errno only once that call
    returns. ``tail`` is where a crashed run is taken to: it gives the GIL back and returns.
    """

    STATE = SCRATCH - UCONTEXT
    """Where, from the stack pointer, the GIL state is kept (the frame's siginfo)."""

    def __init__(
        self, api: dict[str, int], code: int, page: int, page_size: int, syscall_ret: int, sigreturn: int, munmap: int
    ) -> None:
        head = (
            _movabs(_RAX, api["PyGILState_Ensure"]) + _CALL_RAX + _store(self.STATE, "store-eax")
            + _movabs(_RDI, code) + _movabs(_RAX, api["PyRun_SimpleString"]) + _CALL_RAX
        )  # fmt: skip
        tail = (
            _store(self.STATE, "load-edi") + _movabs(_RAX, api["PyGILState_Release"]) + _CALL_RAX
            # munmap(page) through `syscall; ret`, which then returns into rt_sigreturn.
            + _movabs(_RDI, page) + _movabs(_RSI, page_size) + bytes([0xB8]) + struct.pack("<I", munmap)
            + _movabs(_RCX, sigreturn) + _PUSH_RCX + _movabs(_RCX, syscall_ret) + _JMP_RCX
        )  # fmt: skip
        self.tail = len(head)
        self.code = head + tail


def pending_call(running_lock: bytes, run: int) -> bytes:
    """The function a pending call runs, ``int f(const char *code)``: it holds the process's
    running lock (``running_lock``, a path as the target sees it, shared) around
    ``PyRun_SimpleString(code)`` at ``run``, and returns 0. The lock is taken and dropped in
    C, so that a dump may be queued only while no pending call of ncore's runs: CPython 3.11
    hangs a pending call queued while another runs in the same pass (see the README).
    Position-independent: the path follows the code. System calls only, so errno is kept.
    """
    code = (
        bytes.fromhex("53 55 4883ec08 4889fb")  # push rbx; push rbp; sub $8, %rsp; mov %rdi, %rbx
        + bytes.fromhex("488d3d") + b"@@@@"  # lea path(%rip), %rdi
        + bytes.fromhex("be00000800 b802000000 0f05 89c5 85c0")  # open(path, O_RDONLY|O_CLOEXEC); fd in %ebp
        + bytes.fromhex("780e 89ef be01000000 b849000000 0f05")  # if fd >= 0: flock(fd, LOCK_SH)
        + bytes.fromhex("4889df") + _movabs(_RAX, run) + _CALL_RAX  # PyRun_SimpleString(code)
        + bytes.fromhex("85ed 7809 89ef b803000000 0f05")  # if fd >= 0: close(fd)
        + bytes.fromhex("31c0 4883c408 5d 5b c3")  # return 0
    )  # fmt: skip
    at = code.index(b"@@@@")
    return code.replace(b"@@@@", struct.pack("<i", len(code) - (at + 4))) + running_lock + b"\0"
