"""A mark that tells tools outside the process that pypanic is loaded in it.

The mark is a one-page shared mapping of an anonymous memory file named ``pypanic``: it
shows in ``/proc/PID/maps`` as ``/memfd:pypanic (deleted)``, so ``ncore ps`` and ``ncore
doctor`` can tell without running code in the process. The page holds
``pypanic <version>`` and the package's directory, one per line. A fork inherits the
mark (the child has pypanic too); an exec drops it. No file descriptor stays open.
"""

from __future__ import annotations

import os

NAME = "pypanic"
MAPS_PATH = f"/memfd:{NAME} (deleted)"
"""How the mark's mapping is named in /proc/PID/maps."""
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
        import mmap  # only here: the rest of pypanic never needs it

        page = mmap.mmap(fd, _PAGE)
    except OSError:
        return None
    finally:
        os.close(fd)
    page.write(text)
    return page
