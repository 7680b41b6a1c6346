"""What differs between processor architectures, as data: system call numbers and names.

Only x86_64 is filled in; an aarch64 entry is a second table of the same shape.
"""

from __future__ import annotations

import os

SYSCALL_NAMES = {
    "x86_64": {
        0: "read",
        1: "write",
        7: "poll",
        23: "select",
        34: "pause",
        35: "nanosleep",
        42: "connect",
        43: "accept",
        44: "sendto",
        45: "recvfrom",
        46: "sendmsg",
        47: "recvmsg",
        61: "wait4",
        72: "fcntl",
        73: "flock",
        128: "rt_sigtimedwait",
        130: "rt_sigsuspend",
        202: "futex",
        219: "restart_syscall",
        230: "clock_nanosleep",
        232: "epoll_wait",
        247: "waitid",
        270: "pselect6",
        271: "ppoll",
        281: "epoll_pwait",
        288: "accept4",
        441: "epoll_pwait2",
    },
}
"""Names of the system calls a blocked Python thread is usually found in."""

FUTEX = {"x86_64": 202}


def machine() -> str:
    """The processor architecture ncore runs on, as the kernel names it (``x86_64``)."""
    return os.uname().machine


def syscall_name(number: int) -> str:
    """``futex`` for 202 on x86_64; ``syscall 999`` for a number not in the table."""
    return SYSCALL_NAMES.get(machine(), {}).get(number, f"syscall {number}")


def is_futex(number: int) -> bool:
    return FUTEX.get(machine()) == number
