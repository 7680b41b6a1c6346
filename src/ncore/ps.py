"""The Python processes on this machine, as ``ncore ps`` lists them and ``--name`` picks them.

Everything is read from /proc (through psutil for users and command lines) without
stopping anything. A process counts as Python when its executable or a mapped libpython
exports the Py* functions ncore calls, the same test a dump makes; only processes whose
executable is named like ``python*`` or that map a libpython are looked at that closely.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

import psutil

from .elf import NotElf
from .errors import BadUsage, NotPython
from .target import (
    listening_signal,
    mappings,
    name_of,
    pypanic_mark,
    python_binary,
    runtime_span,
    scheduler_state,
    thread_state,
    tracer,
    version_of,
)

if TYPE_CHECKING:
    from rich.console import Console

    from .target import Mapping

_STOPPED = {"T": "stopped", "t": "stopped by a debugger", "Z": "zombie", "D": "waiting for the disk"}


class PythonProcess:
    """One row of ``ncore ps``."""

    def __init__(
        self, pid: int, user: str, python: str, pypanic: str, main_thread: str, name: str, command: str
    ) -> None:
        self.pid = pid
        self.user = user
        self.python = python
        """``3.12``; ``?`` when the interpreter hides its version."""
        self.pypanic = pypanic
        """``loaded`` (with its version when readable: ``0.1.0``), or ``no``."""
        self.main_thread = main_thread
        """``running``, ``waiting for the GIL``, ``blocked in select``, ``traced by 812 (gdb)``..."""
        self.name = name
        self.command = command

    def record(self) -> dict[str, object]:
        """The row as ``ncore ps --json`` prints it."""
        return dict(vars(self))


def python_processes() -> list[PythonProcess]:
    """Every Python process ncore can see, by pid (not ncore itself)."""
    found = []
    for process in psutil.process_iter(["pid", "username", "cmdline", "name"]):
        info = process.info
        if info["pid"] == os.getpid():
            continue
        row = _examine(info["pid"], info["username"] or "?", info["name"] or "?", info["cmdline"] or [])
        if row is not None:
            found.append(row)
    return found


def matching(pattern: str) -> list[PythonProcess]:
    """The Python processes whose name or command line ``pattern`` (a regular expression)
    matches anywhere, like ``pgrep -f``."""
    try:
        wanted = re.compile(pattern)
    except re.error as e:
        raise BadUsage(f"--name {pattern!r} is not a regular expression: {e}") from None
    return [p for p in python_processes() if wanted.search(p.name) or wanted.search(p.command)]


def _examine(pid: int, user: str, name: str, argv: list[str]) -> PythonProcess | None:
    try:
        maps = mappings(pid)
        exe = os.path.basename(os.readlink(f"/proc/{pid}/exe"))
    except OSError:
        return None
    if not exe.startswith("python") and not any("libpython3" in m.path for m in maps):
        return None
    try:
        elf, inside, bias = python_binary(pid, maps)
    except (NotPython, NotElf, OSError):
        return None
    version = version_of(elf, inside)
    return PythonProcess(
        pid=pid,
        user=user,
        python="?" if version is None else f"{version[0]}.{version[1]}",
        pypanic=_pypanic_column(pid, maps),
        main_thread=_main_thread(pid, runtime_span(elf, bias)),
        name=name,
        command=" ".join(argv) or f"[{name}]",
    )


def _pypanic_column(pid: int, maps: list[Mapping]) -> str:
    mark = pypanic_mark(pid, maps)
    if mark is None:
        return "no"
    words = mark.split("\n", 1)[0].split()
    version = words[1] if len(words) == 2 else "loaded"
    signal = listening_signal(mark)
    return version if signal is None else f"{version} on {signal[1]}"


def _main_thread(pid: int, runtime: tuple[int, int]) -> str:
    traced = tracer(pid)
    if traced is not None:
        tid, _, tracer_pid = traced
        where = "" if tid == pid else f" (thread {tid})"
        return f"traced by {tracer_pid} ({name_of(tracer_pid)}){where}"
    state = scheduler_state(pid, pid)
    if state in _STOPPED:
        return _STOPPED[state]
    return thread_state(pid, pid).describe(runtime)


COLUMNS = (("pid", "PID"), ("user", "USER"), ("python", "PYTHON"), ("pypanic", "PYPANIC"),
           ("main_thread", "MAIN THREAD"), ("command", "COMMAND"))  # fmt: skip


def render(rows: list[PythonProcess], console: Console) -> None:
    """The rows as a table on a terminal, one line per process, the command line cut to
    fit; without a terminal, plain columns with the command line whole, for grep and awk."""
    from .show import printable

    cells = [[printable(str(getattr(row, a))).replace("\n", "\\n") for a, _ in COLUMNS] for row in rows]
    titles = [title for _, title in COLUMNS]
    widths = [max(len(line[i]) for line in [titles, *cells]) for i in range(len(COLUMNS) - 1)]
    if not console.is_terminal:
        for line in [titles, *cells]:
            console.out("  ".join(cell.ljust(width) for cell, width in zip(line, widths)) + "  " + line[-1])
        return
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, expand=True)
    for title, width in zip(titles, widths):
        table.add_column(title, no_wrap=True, width=width)
    table.add_column(titles[-1], no_wrap=True, overflow="ellipsis", ratio=1)
    for row, line in zip(rows, cells):
        table.add_row(*map(Text, line), style="bold" if row.pypanic != "no" else None)
    console.print(table)
