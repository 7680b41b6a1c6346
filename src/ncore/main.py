"""ncore's entry point: the common dump command line straight to work, the rest to click."""

from __future__ import annotations

import sys

from . import options, report
from .errors import BadUsage


def main() -> None:
    values = options.parse(sys.argv[1:])
    if values is not None:
        try:
            wanted = options.request(values)
        except BadUsage:
            pass  # click reads the line again and says what is wrong with it, with the usage
        else:
            sys.exit(report.dump(wanted, bool(values["as_json"]), bool(values["verbose"])))
    from .cli import main as click_main

    click_main()
