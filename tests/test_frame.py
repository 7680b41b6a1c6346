"""The way back of a borrowed thread, as data: the kernel's restart rules, where the frame
goes, what it holds, and the direct call's code (the real thing runs in test_ptrace_parts)."""

from __future__ import annotations

import struct

import pytest

from ncore.methods.frame import (
    EINTR,
    ERESTART_RESTARTBLOCK,
    ERESTARTNOHAND,
    ERESTARTNOINTR,
    ERESTARTSYS,
    FRAME_BYTES,
    RED_ZONE,
    RESTART_SYSCALL,
    SCRATCH,
    UCONTEXT,
    DirectCall,
    Frame,
    restarted,
)

MINUS_ONE = (1 << 64) - 1


def stopped_in(syscall: int, error: int) -> dict[str, int]:
    """Registers of a thread stopped in ``syscall`` that returned ``error``, two bytes past the instruction."""
    return {"orig_rax": syscall, "rax": error & MINUS_ONE, "rip": 0x1002, "rsp": 0x7FFF0000, "cs": 0x33, "ss": 0x2B}


@pytest.mark.parametrize(
    ("error", "no_handler", "sa_restart_handler"),
    [
        (ERESTARTSYS, ("again", None), ("again", None)),
        (ERESTARTNOINTR, ("again", None), ("again", None)),
        (ERESTARTNOHAND, ("again", None), ("eintr", None)),
        (ERESTART_RESTARTBLOCK, ("restart_syscall", None), ("eintr", None)),
        (-11, ("as is", None), ("as is", None)),  # EAGAIN: the call finished
    ],
)
def test_restart_follows_the_kernel(error, no_handler, sa_restart_handler):
    """No handler: every restartable call is made again (restart_syscall for a kept
    record). A handler with SA_RESTART: sleeps, select and poll return EINTR instead."""
    for handler, (expected, _) in ((False, no_handler), (True, sa_restart_handler)):
        out = restarted(stopped_in(230, error), handler=handler)
        seen = {
            (230, 0x1000): "again",
            (RESTART_SYSCALL, 0x1000): "restart_syscall",
            (-EINTR & MINUS_ONE, 0x1002): "eintr",
            (error & MINUS_ONE, 0x1002): "as is",
        }[(out["rax"], out["rip"])]
        assert seen == expected, (error, handler)
        assert out["orig_rax"] == MINUS_ONE


def test_outside_a_system_call_nothing_changes():
    registers = {"orig_rax": MINUS_ONE, "rax": 5, "rip": 0x1002}
    assert restarted(registers, handler=True) == registers


@pytest.mark.parametrize("xstate_size", [2432, 2696, 11008])
@pytest.mark.parametrize("stack_pointer", [0x7FFF1000, 0x7FFF1008, 0x7FFF0FF3])
def test_the_frame_sits_below_the_red_zone_aligned(stack_pointer, xstate_size):
    """The extended state 64-byte aligned, its end marker below the red zone; the frame
    below it, 8 past a multiple of 16 (a function's stack on entry), its ucontext 16-aligned."""
    frame = Frame(stack_pointer, xstate_size)
    assert frame.xstate % 64 == 0
    assert frame.end <= stack_pointer - RED_ZONE
    assert frame.address % 16 == 8 and frame.ucontext % 16 == 0
    assert frame.address + FRAME_BYTES <= frame.xstate


def test_the_frame_holds_the_thread():
    """The sigcontext holds the registers as resumed after a SA_RESTART handler, the
    extended state's pointer, the mask; the state carries the signal frame's markers."""
    others = ("r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rdi", "rsi", "rbp", "rbx", "rdx", "rcx", "eflags")
    registers = stopped_in(230, ERESTARTNOHAND) | {name: n for n, name in enumerate(others)}
    xstate = bytearray(2432)
    struct.pack_into("<Q", xstate, 464, 0x2E7)  # XCR0, where the ptrace layout reports it
    frame = Frame(registers["rsp"], len(xstate))
    data = frame.build(registers, bytes(xstate), 0x4001, 0xDEAD)
    assert len(data) == frame.end - frame.address
    assert struct.unpack_from("<Q", data)[0] == 0xDEAD
    flags, _, _, ss_flags = struct.unpack_from("<QQQi", data, UCONTEXT)
    assert flags == 0x7 and ss_flags == 3
    context = struct.unpack_from("<18Q4H4QQ", data, UCONTEXT + 40)
    assert context[13] == -EINTR & MINUS_ONE and context[16] == 0x1002  # rax, rip
    assert context[15] == registers["rsp"] and context[8] == registers["rdi"]
    assert context[18] == 0x33 and context[21] == 0x2B and context[-1] == frame.xstate
    assert struct.unpack_from("<Q", data, UCONTEXT + 296)[0] == 0x4001
    area = data[frame.xstate - frame.address :]
    assert struct.unpack_from("<IIQI", area, 464) == (0x46505853, 2436, 0x2E7, 2432)
    assert struct.unpack_from("<I", area, 2432)[0] == 0x46505845


def test_the_direct_call_keeps_its_values_in_the_frames_siginfo():
    """The GIL state goes where rt_sigreturn never reads, above the ucontext."""
    assert UCONTEXT + DirectCall.STATE == SCRATCH and DirectCall.STATE + UCONTEXT + 4 <= FRAME_BYTES
    api = {"PyGILState_Ensure": 0x1111, "PyRun_SimpleString": 0x2222, "PyGILState_Release": 0x3333}
    call = DirectCall(api, 0x4444, 0x5000, 4096, 0x6666, 0x7777, 11)
    for address in (0x1111, 0x2222, 0x3333, 0x4444, 0x5000, 0x6666, 0x7777):
        assert struct.pack("<Q", address) in call.code
    assert call.code[call.tail :].startswith(bytes.fromhex("8bbc24"))  # the tail loads the GIL state first
