"""The ncore command line, through click: help, usage errors and every command.

``ncore PID`` is short for ``ncore dump PID``. The common dump command line does not get
here: ncore.main reads it with ncore.options and skips importing click; everything else
(``--help``, a mistake, other commands) does, and click answers it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from . import report
from .errors import BadUsage, NcoreError
from .options import DUMP_OPTIONS, Option, request


class DefaultToDump(click.Group):
    """``ncore PID`` means ``ncore dump PID``: anything that is not a subcommand goes to ``dump``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            args = ["dump", *args]
        return super().parse_args(ctx, args)


@click.group(cls=DefaultToDump, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pypanic", prog_name="ncore")
def cli() -> None:
    """Make a running Python process write a pypanic dump (ncore.<pid>), from outside.

    \b
    Example:
      ncore 1369                  dump process 1369; it exits, as after a panic
      ncore --keep-running 1369   take a snapshot and leave it running
    """


_TYPES: dict[str, Callable[[Option], Any]] = {
    "int": lambda option: int,
    "float": lambda option: click.FloatRange(min=option.minimum),
    "choice": lambda option: click.Choice(option.choices),
    "path": lambda option: click.Path(),
    "text": lambda option: str,
}


def _click_option(option: Option) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    if option.kind == "flag":
        return click.option(*option.names, option.dest, is_flag=True, help=option.help)
    return click.option(
        *option.names,
        option.dest,
        type=_TYPES[option.kind](option),
        default=option.default,
        show_default=option.default is not None,
        metavar=option.metavar,
        envvar=option.env,
        help=option.help + (f" [env: {option.env}]" if option.env else ""),
    )


def _with_dump_options(command: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(DUMP_OPTIONS):
        command = _click_option(option)(command)
    return click.argument("pid", type=int, required=False)(command)


@cli.command("dump")
@_with_dump_options
def dump_command(**values: Any) -> None:
    """Dump process PID: it writes ncore.<pid> and exits (or keeps running with --keep-running).

    \b
    Example:
      $ ncore 1369
      attempting to attach to process 1369 ... . . ok.
      /srv/app/ncore.1369
    """
    try:
        wanted = request(values)
    except BadUsage as e:
        raise click.UsageError(e.message) from None
    sys.exit(report.dump(wanted, bool(values["as_json"]), bool(values["verbose"])))


@cli.command("show")
@click.argument("file", type=click.Path(allow_dash=True, dir_okay=False))
@click.argument("keys", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print values as JSON, strings quoted too (for jq).")
@click.option("--pager", is_flag=True, help="Page the view through $PAGER (less by default).")
def show_command(file: str, keys: tuple[str, ...], as_json: bool, pager: bool) -> None:
    """Read dump FILE (- for standard input): the whole of it, or the values of KEYS.

    A KEY is looked up whole first (dump keys contain dots), then as a dotted path into
    nested values. Scalars print bare, objects and lists as JSON, one value per key.

    \b
    Examples:
      ncore show ncore.1369                     the dump, as a person reads it
      ncore show ncore.1369 func1.arg           10
      ncore show ncore.1369 panic.memusage.rss  12161024
      ncore show --json ncore.1369 | jq '."panic.threads"[0].frames'
    """
    from . import dumpfile, show

    try:
        dump = dumpfile.load(file)
        if keys or as_json:
            values = [dumpfile.lookup(dump, key) for key in keys] if keys else [dump]
            click.echo(show.format_values(values, as_json), nl=False)
            return
        console = show.make_console()
        if pager:
            with console.pager(styles=True):
                show.render(dump, console)
        else:
            show.render(dump, console)
    except NcoreError as e:
        sys.exit(report.failure(e))


def main() -> None:
    cli(prog_name="ncore")
