"""ncore's entry point: the common dump command line straight to work, the rest to click.

Ctrl-C, SIGTERM and SIGHUP are held (ncore.interrupts) from the first line, before the
dump's modules are imported, and let go of again for the commands that are not a dump.
"""

from __future__ import annotations

import os
import sys

from . import interrupts


def main() -> None:
    code = None
    with interrupts.Held():
        from . import options, report
        from .errors import BadUsage

        values = options.parse(sys.argv[1:])
        if values is not None:
            try:
                wanted = options.request(values)
            except BadUsage:
                pass  # click reads the line again and says what is wrong with it, with the usage
            else:
                code = report.dump(wanted, bool(values["as_json"]), bool(values["verbose"]))
    if code is not None:
        _leave(code)  # after a Ctrl-Z held meanwhile has suspended ncore
    stopped = interrupts.requested()
    if stopped is not None:
        sys.exit(128 + stopped)
    from .cli import main as click_main

    click_main()


def _leave(code: int) -> None:
    """Exit with ``code`` once stdout and stderr are flushed, without finalizing the
    interpreter: tearing down the modules a dump loaded took 4 ms, a fifth of ncore's own
    work in a warm snapshot. Nothing on this path leaves work for exit handlers: by now its
    locks and directories are released, its files closed and its threads done."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass  # a closed pipe: what was written to it is lost either way
    os._exit(code)
