"""A mark that tells tools outside the process that pypanic is loaded in it.

The mark is a one-page shared mapping of an anonymous memory file named ``pypanic``: it
shows in ``/proc/PID/maps`` as ``/memfd:pypanic (deleted)``, so ``ncore ps`` and ``ncore
doctor`` can tell without running code in the process. The page holds
``pypanic <version>`` and the package's directory, one per line. A fork inherits the
mark (the child has pypanic too); an exec drops it. No file descriptor stays open. The
copy of pypanic ncore carries into a process makes no mark: the process has not loaded
pypanic itself.
"""

from __future__ import annotations

import os

NAME = "pypanic"
_PAGE = 4096


def light(version: str) -> object:
    """Map the mark and fill it in; the mapping (keep it referenced), or None where the
    system has no anonymous memory files or refuses one."""
    if not hasattr(os, "memfd_create"):
        return None
    text = f"{NAME} {version}\n{os.path.dirname(os.path.abspath(__file__))}\n".encode()[:_PAGE]
    try:
        fd = os.memfd_create(NAME, os.MFD_CLOEXEC)
    except OSError:
        return None
    try:
        os.ftruncate(fd, _PAGE)
        import mmap

        page = mmap.mmap(fd, _PAGE)
    except OSError:
        return None
    finally:
        os.close(fd)
    page.write(text)
    return page
