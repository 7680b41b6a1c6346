"""Dumping several processes at once (``ncore PID PID ...``, ``ncore --name PATTERN``).

Each target gets its own session, run in parallel in a thread of its own (``--jobs`` at
a time): a method that traces a process does all its tracing from one thread, so the
sessions do not meet. On a terminal a live display shows where each target is; then, and
always without a terminal, one line per target as it finishes (``--json``: one JSON
record per line, the record a single dump prints; ``-v``: how each was taken).

The exit code is 0 when every target was dumped, else the code of the first target, in
the order given, that was not. Ctrl-C (SIGTERM, SIGHUP) stops every session at its next
safe point (ncore.interrupts): targets not yet reached are left alone and requests not yet
taken withdrawn, each reported with exit code 130 (143, 129); dumps under way finish.
"""

from __future__ import annotations

import json
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from . import interrupts, report
from .errors import NcoreError
from .session import Request, Result, take_dump
from .show import printable

if TYPE_CHECKING:
    from collections.abc import Callable

    from rich.console import Console
    from rich.progress import Progress, TaskID

    _Step = Callable[[Request, str], None]
    """Told of each step of a target's dump: a name from _STEPS, then ``done`` or ``failed``."""

_STEPS = {"inspected": "getting in", "injected": "waiting for the dump", "answered": "finishing"}


class Finished:
    """How one target's dump went: its Result or the error that stopped it."""

    def __init__(self, request: Request, result: Result | None, error: NcoreError | None) -> None:
        self.request = request
        self.result = result
        self.error = error

    @property
    def exit_code(self) -> int:
        return 0 if self.error is None else self.error.exit_code

    def record(self) -> dict[str, object]:
        if self.result is not None:
            return self.result.record()
        assert self.error is not None
        return self.error.record(self.request.pid)

    def line(self) -> str:
        if self.result is not None:
            outside = "" if self.result.read_only is None else f" (read from outside: {self.result.read_only})"
            return printable(f"{self.request.pid}: {self.result.path}{outside}")
        assert self.error is not None
        hint = f" (fix: {self.error.hint})" if self.error.hint else ""
        return printable(f"{self.request.pid}: failed: {self.error.message}{hint}")


def dump_all(requests: list[Request], jobs: int, as_json: bool, console: Console | None, verbose: bool = False) -> int:
    """Dump every target, ``jobs`` at a time; report each; the exit code.

    ``console`` is a terminal to show live progress on, or None for none.
    """
    lock = threading.Lock()

    def tell(finished: Finished) -> None:
        with lock:
            if as_json:
                sys.stdout.write(json.dumps(finished.record()) + "\n")
                sys.stdout.flush()
            elif console is not None:
                from rich.text import Text

                console.print(Text(finished.line(), style="" if finished.error is None else "red"))
            else:
                sys.stdout.write(finished.line() + "\n")
                sys.stdout.flush()
            if verbose and finished.result is not None and not as_json:
                report.details(finished.result)

    with interrupts.Held():
        return _dump_all(requests, jobs, tell, console, as_json)


def _dump_all(
    requests: list[Request], jobs: int, tell: Callable[[Finished], None], console: Console | None, as_json: bool
) -> int:
    if console is None or as_json:
        outcomes = _run_all(requests, jobs, tell, lambda request, step: None)
    else:
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        with Progress(
            SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console, transient=True
        ) as progress:
            tasks = {r.pid: progress.add_task(f"{r.pid}: waiting for a turn", total=None) for r in requests}
            outcomes = _run_all(requests, jobs, tell, _show_step(progress, tasks))
    return next((o.exit_code for o in outcomes if o.exit_code), 0)


def _show_step(progress: Progress, tasks: dict[int, TaskID]) -> _Step:
    def step(request: Request, name: str) -> None:
        progress.update(tasks[request.pid], description=f"{request.pid}: {_STEPS.get(name, name)}")
        if name in ("done", "failed"):
            progress.remove_task(tasks[request.pid])

    return step


def _run_all(requests: list[Request], jobs: int, tell: Callable[[Finished], None], step: _Step) -> list[Finished]:
    def one(request: Request) -> Finished:
        step(request, "attaching")
        try:
            finished = Finished(request, take_dump(request, lambda name: step(request, name)), None)
        except NcoreError as e:
            finished = Finished(request, None, e)
        except Exception as e:  # one target's surprise must not cost the others their report
            finished = Finished(
                request, None, NcoreError(f"unexpected failure: {e!r}", "report this as a bug of ncore")
            )
        step(request, "failed" if finished.error else "done")
        tell(finished)
        return finished

    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="ncore-dump") as pool:
        return list(pool.map(one, requests))
