"""Dumping several processes at once (``ncore PID PID ...``, ``ncore --name PATTERN``).

Each target gets its own session, run in parallel in a thread of its own (``--jobs`` at
a time): a method that traces a process does all its tracing from one thread, so the
sessions do not meet. On a terminal a live display shows where each target is; then, and
always without a terminal, one line per target as it finishes (``--json``: one JSON
record per line, the record a single dump prints).

The exit code is 0 when every target was dumped, else the code of the first target, in
the order given, that was not.
"""

from __future__ import annotations

import json
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from .errors import NcoreError
from .session import Request, Result, take_dump

if TYPE_CHECKING:
    from collections.abc import Callable

    from rich.console import Console
    from rich.progress import Progress, TaskID

    _Step = Callable[[Request, str], None]
    """Told of each step of a target's dump: a name from _STEPS, then ``done`` or ``failed``."""

_STEPS = {"inspected": "getting in", "injected": "waiting for the dump", "answered": "finishing"}


class Outcome:
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
            return f"{self.request.pid}: {self.result.path}"
        assert self.error is not None
        hint = f" (fix: {self.error.hint})" if self.error.hint else ""
        return f"{self.request.pid}: failed: {self.error.message}{hint}"


def dump_all(requests: list[Request], jobs: int, as_json: bool, console: Console | None) -> int:
    """Dump every target, ``jobs`` at a time; report each; the exit code.

    ``console`` is a terminal to show live progress on, or None for none.
    """
    lock = threading.Lock()

    def report(outcome: Outcome) -> None:
        with lock:
            if as_json:
                sys.stdout.write(json.dumps(outcome.record()) + "\n")
                sys.stdout.flush()
            elif console is not None:
                console.print(outcome.line(), style=None if outcome.error is None else "red", highlight=False)
            else:
                sys.stdout.write(outcome.line() + "\n")
                sys.stdout.flush()

    if console is None or as_json:
        outcomes = _run_all(requests, jobs, report, lambda request, step: None)
    else:
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        with Progress(
            SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console, transient=True
        ) as progress:
            tasks = {r.pid: progress.add_task(f"{r.pid}: waiting for a turn", total=None) for r in requests}
            outcomes = _run_all(requests, jobs, report, _show_step(progress, tasks))
    return next((o.exit_code for o in outcomes if o.exit_code), 0)


def _show_step(progress: Progress, tasks: dict[int, TaskID]) -> _Step:
    def step(request: Request, name: str) -> None:
        progress.update(tasks[request.pid], description=f"{request.pid}: {_STEPS.get(name, name)}")
        if name in ("done", "failed"):
            progress.remove_task(tasks[request.pid])

    return step


def _run_all(requests: list[Request], jobs: int, report: Callable[[Outcome], None], step: _Step) -> list[Outcome]:
    def one(request: Request) -> Outcome:
        step(request, "attaching")
        try:
            outcome = Outcome(request, take_dump(request, lambda name: step(request, name)), None)
        except NcoreError as e:
            outcome = Outcome(request, None, e)
        except Exception as e:  # one target's surprise must not cost the others their report
            outcome = Outcome(request, None, NcoreError(f"unexpected failure: {e!r}", "report this as a bug of ncore"))
        step(request, "failed" if outcome.error else "done")
        report(outcome)
        return outcome

    with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="ncore-dump") as pool:
        return list(pool.map(one, requests))
