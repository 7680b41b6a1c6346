"""ncore's entry point: the common dump command line straight to work, the rest to click.

Ctrl-C, SIGTERM and SIGHUP are held (ncore.interrupts) from the first line, before the
dump's modules are imported, and let go of again for the commands that are not a dump.
"""

from __future__ import annotations

import sys

from . import interrupts


def main() -> None:
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
                sys.exit(report.dump(wanted, bool(values["as_json"]), bool(values["verbose"])))
    stopped = interrupts.requested()
    if stopped is not None:
        sys.exit(128 + stopped)
    from .cli import main as click_main

    click_main()
