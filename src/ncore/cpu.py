"""Facts about this machine's processor that decide which debugger can work here."""

from __future__ import annotations

import functools
import mmap

from . import arch

GDB13_XSAVE_BYTES = 2696
"""The largest extended-state (XSAVE) area gdb before 14 can save and restore."""

# push rbx; mov eax, 0xd; xor ecx, ecx; cpuid; mov eax, ebx; pop rbx; ret
_CPUID_0D_EBX = bytes.fromhex("53b80d00000031c90fa289d85bc3")


@functools.cache
def xsave_bytes() -> int | None:
    """The size of the XSAVE area for the features the kernel enabled (CPUID leaf 0xD,
    sub-leaf 0, EBX): what a debugger must save and restore around a call. None when it
    cannot be asked (not x86_64, or executable memory refused)."""
    if arch.machine() != "x86_64":
        return None
    import ctypes

    try:
        page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    except (OSError, ValueError):
        return _xsave_from_cpuinfo()
    try:
        page.write(_CPUID_0D_EBX)
        address = ctypes.addressof(ctypes.c_char.from_buffer(page))
        size = int(ctypes.CFUNCTYPE(ctypes.c_uint32)(address)())
        return size
    finally:
        del address
        page.close()


def _xsave_from_cpuinfo() -> int | None:
    """AMX alone takes the area past what gdb 13 knows; without CPUID, its flag tells."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return None
    return GDB13_XSAVE_BYTES + 8192 if " amx_tile" in flags else None
