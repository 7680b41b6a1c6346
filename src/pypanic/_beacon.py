"""A mark that tells tools outside the process that pypanic is loaded in it, and, when
pypanic listens for a dump signal, the place where ncore leaves its request.

The mark is a one-page shared mapping of an anonymous memory file named ``pypanic``: it
shows in ``/proc/PID/maps`` as ``/memfd:pypanic (deleted)``, so ``ncore ps`` and ``ncore
doctor`` can tell without running code in the process. The page starts with
``pypanic <version>`` and the package's directory, one per line, and ``signal <number> <name>``
when a dump signal is listened for (pypanic._listener). A fork inherits the mark (the
child has pypanic too); an exec drops it. The copy of pypanic ncore carries into a
process makes no mark: the process has not loaded pypanic itself.

No file descriptor stays open, unless pypanic listens for a dump signal: then the memory
file stays open (close-on-exec), so that a process of the same user may open it through
``/proc/PID/fd`` without any right to trace (Yama's ptrace_scope 1, a container without
CAP_SYS_PTRACE) and write a request into the page's second quarter (``REQUEST_AT``: a
state byte, then a JSON object); the answer comes at ``ANSWER_AT``, ncore's
acknowledgement at ``ACK_AT``, and at ``WRITER_AT`` the pid of the forked writer of a
snapshot, while it writes (pypanic._background), in decimal. Both sides take an flock on the memory file to change the
request's state.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    import mmap

NAME = "pypanic"
PAGE = 4096
REQUEST_AT, ANSWER_AT, ACK_AT, WRITER_AT = 1024, 2048, 3072, 3136
"""Where the request, the answer, the acknowledgement and the writer's pid lie in the page."""
WRITER_BYTES = 16
EMPTY, ASKED, TAKEN, WITHDRAWN = 0, 1, 2, 3
"""The request's state byte: none, waiting for the signal's handler, claimed by it, withdrawn by ncore."""


class Beacon:
    """The mapped page, and the memory file's descriptor while a dump signal is listened for."""

    def __init__(self, page: mmap.mmap, fd: int | None) -> None:
        self.page = page
        self.fd = fd


def light(version: str, signal: tuple[int, str] | None = None) -> Beacon | None:
    """Map the mark and fill it in (keeping the file open when ``signal``, its number and
    name, is listened for); None where the system has no anonymous memory files or refuses one."""
    if not hasattr(os, "memfd_create"):
        return None
    lines = f"{NAME} {version}\n{os.path.dirname(os.path.abspath(__file__))}\n"
    if signal is not None:
        lines += f"signal {signal[0]} {signal[1]}\n"
    try:
        fd = os.memfd_create(NAME, os.MFD_CLOEXEC)
    except OSError:
        return None
    try:
        os.ftruncate(fd, PAGE)
        import mmap

        page = mmap.mmap(fd, PAGE)
    except OSError:
        os.close(fd)
        return None
    page.write(lines.encode()[:REQUEST_AT])
    if signal is None:
        os.close(fd)
        return Beacon(page, None)
    return Beacon(page, fd)
