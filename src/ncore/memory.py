"""A live process's memory, read and written through /proc/PID/mem."""

from __future__ import annotations

import os


class ShortAccess(OSError):
    """Fewer bytes than asked for could be read or written (the address is not mapped)."""


class Memory:
    """/proc/PID/mem, open for reading and writing; a context that closes it."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.fd = os.open(f"/proc/{pid}/mem", os.O_RDWR | os.O_CLOEXEC)

    def read(self, address: int, size: int) -> bytes:
        data = os.pread(self.fd, size, address)
        if len(data) != size:
            raise ShortAccess(f"could read {len(data)} of {size} bytes at {address:#x}")
        return data

    def word(self, address: int) -> int:
        return int.from_bytes(self.read(address, 8), "little")

    def write(self, address: int, data: bytes) -> None:
        written = os.pwrite(self.fd, data, address)
        if written != len(data):
            raise ShortAccess(f"could write {written} of {len(data)} bytes at {address:#x}")

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> Memory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
