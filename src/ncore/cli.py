"""The ncore command line: arguments in, a plain Request to the session, the story out.

This is the only module that prints. Errors arrive as NcoreError types and leave as a
message, a hint and the error's exit code (see ncore.errors for the table).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from .errors import NcoreError
from .methods import MODES
from .session import DEFAULT_MESSAGE, Request, Result, methods, take_dump


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


def _method_names() -> list[str]:
    return ["auto", *(m.name for m in methods(Request(pid=0)))]


@cli.command("dump")
@click.argument("pid", type=int, required=False)
@click.option("--inject", "inject_pid", type=int, metavar="PID", help="The process to dump (another way to give PID).")
@click.option("--keep-running", is_flag=True, help="Take a snapshot with pypanic.dump and leave the process running.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True, metavar="SECONDS",
              help="Never wait longer; on timeout the process is left running and unstopped.")  # fmt: skip
@click.option("--method", type=click.Choice(_method_names()), default="auto", show_default=True,
              help="How to get into the process.")  # fmt: skip
@click.option("--mode", type=click.Choice(MODES), default="auto", show_default=True,
              help="Queue a pending call or call directly; auto follows the safety rule (see README).")  # fmt: skip
@click.option("--output-dir", type=click.Path(), metavar="DIR",
              help="Where the dump goes (default: the process's working directory).")  # fmt: skip
@click.option("--message", default=DEFAULT_MESSAGE, show_default=True, help="The panic message recorded in the dump.")
@click.option("--gdb", "gdb_command", envvar="NCORE_GDB", metavar="COMMAND",
              help="The gdb to run, with any leading arguments [env: NCORE_GDB; default: gdb].")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print one JSON record on stdout instead of the story.")
@click.option("-v", "--verbose", is_flag=True, help="Say how the dump was taken, with the debugger's output.")
def dump_command(
    pid: int | None, inject_pid: int | None, keep_running: bool, timeout: float, method: str, mode: str,
    output_dir: str | None, message: str, gdb_command: str | None, as_json: bool, verbose: bool,
) -> None:  # fmt: skip
    """Dump process PID: it writes ncore.<pid> and exits (or keeps running with --keep-running).

    \b
    Example:
      $ ncore 1369
      attempting to attach to process 1369 ... . . ok.
      /srv/app/ncore.1369
    """
    if pid is not None and inject_pid is not None and pid != inject_pid:
        raise click.UsageError(f"two different pids given: {pid} and --inject {inject_pid}")
    target = pid if pid is not None else inject_pid
    if target is None:
        raise click.UsageError("which process? give its PID, e.g. `ncore 1369`")
    request = Request(target, keep_running, message, output_dir, timeout, method, mode, gdb_command)
    if not as_json:
        click.echo(f"attempting to attach to process {target} ...", nl=False)

    def progress(step: str) -> None:
        if not as_json:
            click.echo(" .", nl=False)

    try:
        result = take_dump(request, progress)
    except NcoreError as e:
        _fail(e, target, as_json)
    if as_json:
        click.echo(json.dumps(result.record()))
        return
    click.echo(" ok.")
    click.echo(result.path)
    if verbose:
        _details(result)


def _details(result: Result) -> None:
    stopped = "" if result.stopped_seconds is None else f", target stopped {result.stopped_seconds * 1000:.0f} ms"
    click.echo(f"method {result.method}, {result.injection} call: {result.why}", err=True)
    click.echo(
        f"pypanic: {result.pypanic}; Python {result.python}; took {result.elapsed_seconds * 1000:.0f} ms{stopped}",
        err=True,
    )
    click.echo("the process exited" if result.target_exited else "the process is still running", err=True)
    for line in result.transcript:
        click.echo(f"  | {line}", err=True)


def _fail(error: NcoreError, pid: int, as_json: bool) -> Any:
    if as_json:
        record = {
            "status": error.kind,
            "pid": pid,
            "error": error.message,
            "hint": error.hint,
            "exit_code": error.exit_code,
        }
        click.echo(json.dumps(record))
    else:
        click.echo(" failed.")
        click.echo(f"ncore: {error.message}", err=True)
        if error.hint:
            click.echo(f"  fix: {error.hint}", err=True)
    sys.exit(error.exit_code)


def main() -> None:
    cli(prog_name="ncore")
