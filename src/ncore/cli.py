"""The ncore command line, through click: help, usage errors and every command.

``ncore PID`` is short for ``ncore dump PID``. The common dump command line does not get
here: ncore.main reads it with ncore.options and skips importing click; everything else
(``--help``, a mistake, other commands) does, and click answers it.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

import click
from click.shell_completion import CompletionItem

from . import report
from .errors import BadUsage, MethodUnavailable, NcoreError, NoSuchProcess
from .methods import NAMES
from .options import DUMP_OPTIONS, Option, request
from .session import Request


class DefaultToDump(click.Group):
    """``ncore PID`` means ``ncore dump PID``: anything that is not a subcommand goes to ``dump``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            args = ["dump", *args]
        return super().parse_args(ctx, args)


@click.group(cls=DefaultToDump, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pypanic", prog_name="ncore")
def cli() -> None:
    """Make a running Python process write a pypanic dump (ncore.<pid>), from outside,
    and read dumps.

    \b
    Examples:
      ncore 1369                  dump process 1369; it exits, as after a panic
      ncore --keep-running 1369   take a snapshot and leave it running
      ncore ps                    the Python processes here, and what they do
      ncore doctor 1369           what would stop a dump of 1369, and the fixes
      ncore show ncore.1369       read the dump

    \b
    Shell completion (bash; zsh and fish alike, see the README):
      eval "$(_NCORE_COMPLETE=bash_source ncore)"
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
    return click.argument("pids", metavar="PID...", type=int, nargs=-1, shell_complete=_complete_pid)(command)


def _complete_pid(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    from . import ps

    return [
        CompletionItem(str(p.pid), help=f"{p.python} {p.command}"[:80])
        for p in ps.python_processes()
        if str(p.pid).startswith(incomplete)
    ]


@cli.command("dump", short_help="Dump processes (the default command: `ncore PID`).")
@_with_dump_options
@click.option(
    "--name",
    "pattern",
    metavar="PATTERN",
    help="Also dump every Python process whose name or command line PATTERN (a regular expression) matches.",
)
@click.option("--jobs", type=click.IntRange(min=1), default=8, show_default=True, help="Dumps taken at once.")
def dump_command(pids: tuple[int, ...], pattern: str | None, jobs: int, **values: Any) -> None:
    """Dump process PID: it writes ncore.<pid> and exits (or keeps running with --keep-running).

    Several PIDs, or --name, dump every one of them in parallel, with one result line
    each ("PID: path" or "PID: failed: why"); the exit code is then that of the first
    target that failed, in order.

    \b
    Examples:
      $ ncore 1369
      attempting to attach to process 1369 ... . . ok.
      /srv/app/ncore.1369
      $ ncore --keep-running --name 'gunicorn: worker'
      1402: /srv/app/ncore.1402
      1403: /srv/app/ncore.1403
    """
    as_json, verbose = bool(values["as_json"]), bool(values["verbose"])
    try:
        targets = _targets(pids, values.pop("inject_pid"), pattern)
        wanted = [request({**values, "pid": pid, "inject_pid": None}) for pid in targets]
    except BadUsage as e:
        raise click.UsageError(e.message) from None
    except NcoreError as e:
        if as_json:
            click.echo(json.dumps(e.record(None)))
            sys.exit(e.exit_code)
        sys.exit(report.failure(e))
    if pattern is None and len(wanted) == 1:
        sys.exit(report.dump(wanted[0], as_json, verbose))
    from . import batch, show

    console = show.make_console()
    sys.exit(batch.dump_all(wanted, jobs, as_json, console if console.is_terminal else None, verbose))


def _targets(pids: tuple[int, ...], inject_pid: int | None, pattern: str | None) -> list[int]:
    """The pids to dump, each once, in the order given; those --name matches come last."""
    targets = [*pids, *([inject_pid] if inject_pid is not None else [])]
    if pattern is not None:
        from . import ps

        matched = [p.pid for p in ps.matching(pattern)]
        if not matched:
            raise NoSuchProcess(
                f"no Python process matches --name {pattern!r}", "`ncore ps` lists the Python processes"
            )
        targets += matched
    if not targets:
        raise BadUsage("which process? give its PID, e.g. `ncore 1369`, or --name PATTERN")
    return list(dict.fromkeys(targets))


@cli.command("show", short_help="Read a dump, or values from it.")
@click.argument("file", type=click.Path(allow_dash=True))
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
            values: list[object] = [dumpfile.lookup(dump, key) for key in keys] if keys else [dump]
            click.echo(dumpfile.format_values(values, as_json), nl=False)
            return
        console = show.make_console()
        if pager:
            os.environ.setdefault("LESS", "-R")  # less shows the colours instead of their escape codes
            with console.pager(styles=True):
                show.render(dump, console)
        else:
            show.render(dump, console)
    except NcoreError as e:
        sys.exit(report.failure(e))


@cli.command("core", short_help="Turn a core file of a Python process into a dump.")
@click.argument("corefile", type=click.Path(dir_okay=False))
@click.argument("executable", type=click.Path(dir_okay=False), required=False)
@click.option(
    "--output-dir", metavar="DIR", type=click.Path(file_okay=False), help="Where the dump goes [default: here]."
)
@click.option("--native", is_flag=True, help="Add the C frames.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON record on stdout instead of the story.")
def core_command(corefile: str, executable: str | None, output_dir: str | None, native: bool, as_json: bool) -> None:
    """Turn COREFILE, a core file of a CPython process, into a dump (ncore.<pid> of the dead
    process): the fatal signal, the thread that took it first, every thread's stack and
    locals. EXECUTABLE is the Python the process ran, when the core's own path to it is
    not right here (a core from a container or another machine).

    \b
    Examples:
      $ ncore core core.1369
      core file core.1369: process 1369 ended by SIGSEGV: Segmentation fault at address 0x0
      /srv/app/ncore.1369
      $ coredumpctl dump 1369 --output=core && ncore core core
    """
    from . import corefile as cores

    try:
        converted = cores.convert(corefile, executable, output_dir, native)
    except NcoreError as e:
        if as_json:
            click.echo(json.dumps(e.record(None)))
            sys.exit(e.exit_code)
        sys.exit(report.failure(e))
    if as_json:
        click.echo(json.dumps(converted.record()))
        return
    click.echo(f"core file {corefile}: process {converted.pid}: {converted.description}")
    click.echo(converted.path)


@cli.command("ps", short_help="List the Python processes here.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array, one object per process.")
def ps_command(as_json: bool) -> None:
    """List the Python processes on this machine: pid, user, Python version, whether pypanic
    is loaded (and which version), what the main thread does, and the command line.

    Nothing is stopped or run in the processes: it is all read from /proc. Processes of
    other users need root to be seen in full.

    \b
    Example:
      $ ncore ps
      PID    USER  PYTHON  PYPANIC  MAIN THREAD      COMMAND
      1369   app   3.12    0.1.0    running          python service.py
      1402   app   3.11    no       blocked in poll  gunicorn: worker [app]
    """
    from . import ps

    rows = ps.python_processes()
    if not rows and not as_json:
        uid = os.geteuid()
        others = "" if uid == 0 else f" of uid {uid}; other users' processes show only to root (sudo ncore ps)"
        click.echo(f"ncore: no Python process found{others}", err=True)
        return
    if as_json:
        click.echo(json.dumps([row.record() for row in rows], indent=2))
    else:
        from .show import make_console

        ps.render(rows, make_console())


@cli.command("doctor", short_help="Say what would stop a dump, and how to fix it.")
@click.argument("pid", type=int, required=False, shell_complete=_complete_pid)
@click.option("--method", type=click.Choice(("auto", *NAMES)), default="auto", show_default=True,
              help="Check only this method.")  # fmt: skip
@click.option("--output-dir", metavar="DIR", help="Check this dump directory instead of the process's own.")
@click.option("--gdb", "gdb_command", metavar="COMMAND", envvar="NCORE_GDB", help="The gdb to check [env: NCORE_GDB].")
@click.option(
    "--probe",
    is_flag=True,
    help="Also ask the process itself, through the method a dump would use (it runs a few lines, takes no dump).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    help="How long asking gdb its version, and --probe, may take.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object: works, and every finding.")
def doctor_command(
    pid: int | None,
    method: str,
    output_dir: str | None,
    gdb_command: str | None,
    probe: bool,
    timeout: float,
    as_json: bool,
) -> None:
    """Say what would stop a dump of PID (or any dump, without PID) and how to fix each thing.

    Checks ncore's rights (root, CAP_SYS_PTRACE, yama, container, seccomp), which methods
    work here, and for PID: the process and its Python, ncore's access to it, the method a
    dump would use, what its main thread does, whether pypanic is loaded, and where its
    dump would go. Nothing is stopped or run in the process unless --probe is given.
    Exits 0 when a dump would work, 6 when it would not.

    \b
    Example:
      $ ncore doctor 1369
      ok   ncore's rights: ncore runs as root, with CAP_SYS_PTRACE
      ok   process: process 1369 (python3) runs CPython 3.12; ...
      ok   method: a dump would use ptrace
    """
    from . import doctor, show

    wanted = Request(pid or 0, method=method, output_dir=output_dir, gdb=gdb_command, timeout=timeout)
    findings = doctor.examine(pid, wanted, probe=probe)
    works = doctor.dump_would_work(findings)
    if as_json:
        record = {"works": works, "pid": pid, "findings": [f.record() for f in findings]}
        click.echo(json.dumps(record, indent=2))
    else:
        doctor.render(findings, show.make_console())
    sys.exit(0 if works else MethodUnavailable.exit_code)


def main() -> None:
    if "--json" not in sys.argv[1:]:
        cli(prog_name="ncore")
        return
    try:
        cli.main(prog_name="ncore", standalone_mode=False)
    except click.UsageError as e:  # --json asked for a record, so a mistake is one too
        mistake = BadUsage(e.format_message(), "see ncore --help")
        click.echo(json.dumps(mistake.record(None)))
        sys.exit(mistake.exit_code)
