"""The dump command's options as data, and the quick reading of a command line made of them.

The table is the one description of ``ncore [dump] PID [OPTIONS]``: the click command in
ncore.cli is built from it, and ``parse`` reads the common case without importing click
(whose import alone takes longer than a whole dump). ``parse`` gives up, returning None,
on anything it is not sure of (help, another command, an unknown option, a bad value),
and click then reads the same command line and answers as it always does.
"""

from __future__ import annotations

import os

from .errors import BadUsage
from .methods import MODES, NAMES
from .session import DEFAULT_MESSAGE, SIGNAL, Request


class Option:
    """One option: its spellings, the name of its value, its kind, default and help."""

    def __init__(
        self,
        names: tuple[str, ...],
        dest: str,
        kind: str,
        help: str,
        default: object = None,
        metavar: str | None = None,
        choices: tuple[str, ...] = (),
        minimum: float | None = None,
        env: str | None = None,
    ) -> None:
        self.names = names
        self.dest = dest
        self.kind = kind
        """flag, int, float, choice, path or text."""
        self.help = help
        self.default = default
        self.metavar = metavar
        self.choices = choices
        self.minimum = minimum
        self.env = env

    def convert(self, text: str) -> object:
        """The value of ``text``; ValueError if it is not one."""
        if self.kind == "int":
            return int(text)
        if self.kind == "float":
            value = float(text)
            if self.minimum is not None and not value >= self.minimum:
                raise ValueError(text)
            return value
        if self.kind == "choice" and text not in self.choices:
            raise ValueError(text)
        return text


DUMP_OPTIONS = (
    Option(("--inject",), "inject_pid", "int", "The process to dump (another way to give PID).", metavar="PID"),
    Option(
        ("--keep-running",),
        "keep_running",
        "flag",
        "Take a snapshot with pypanic.dump and leave the process running.",
        default=False,
    ),
    Option(
        ("--in-place",),
        "in_place",
        "flag",
        "With --keep-running: write the snapshot from the process itself, not from a forked copy of it (see README).",
        default=False,
    ),
    Option(
        ("--timeout",),
        "timeout",
        "float",
        "Never wait longer; on timeout the process is left running and unstopped.",
        default=10.0,
        metavar="SECONDS",
        minimum=0.1,
    ),
    Option(
        ("--method",),
        "method",
        "choice",
        "How to get into the process (signal: ask one that listens, see PYPANIC_SIGNAL).",
        default="auto",
        choices=("auto", *NAMES, SIGNAL),
    ),
    Option(
        ("--mode",),
        "mode",
        "choice",
        "Queue a pending call or call directly; auto follows the safety rule (see README).",
        default="auto",
        choices=MODES,
    ),
    Option(
        ("--output-dir",),
        "output_dir",
        "path",
        "Where the dump goes (default: the process's working directory).",
        metavar="DIR",
    ),
    Option(("--message",), "message", "text", "The panic message recorded in the dump.", default=DEFAULT_MESSAGE),
    Option(
        ("--read-only",),
        "read_only",
        "flag",
        "Read the process from outside, running no code in it (it is stopped only for the read, and keeps running).",
        default=False,
    ),
    Option(
        ("--no-fallback",),
        "no_fallback",
        "flag",
        "When the injected dump has not started by --timeout, fail (exit 7) instead of reading the process from "
        "outside.",
        default=False,
    ),
    Option(("--native",), "native", "flag", "Add the C frames to a dump read from outside.", default=False),
    Option(
        ("--gdb",),
        "gdb_command",
        "text",
        "The gdb to run, with any leading arguments [default: gdb].",
        metavar="COMMAND",
        env="NCORE_GDB",
    ),
    Option(("--json",), "as_json", "flag", "Print one JSON record on stdout instead of the story.", default=False),
    Option(
        ("-v", "--verbose"), "verbose", "flag", "Say how the dump was taken, with the debugger's output.", default=False
    ),
)

_BY_NAME = {name: option for option in DUMP_OPTIONS for name in option.names}


def parse(argv: list[str]) -> dict[str, object] | None:
    """The values of a plain dump command line (``dest`` -> value, ``pid`` for the
    argument), or None when click must read it."""
    if argv[:1] == ["dump"]:
        argv = argv[1:]
    values: dict[str, object] = {o.dest: os.environ.get(o.env) if o.env else o.default for o in DUMP_OPTIONS}
    values["pid"] = None
    words = iter(argv)
    try:
        for word in words:
            name, equals, text = word.partition("=")
            option = _BY_NAME.get(name) if word.startswith("-") else None
            if option is None:
                if word.startswith("-") or values["pid"] is not None:
                    return None
                values["pid"] = int(word)
            elif option.kind == "flag":
                if equals:
                    return None
                values[option.dest] = True
            else:
                values[option.dest] = option.convert(text if equals else next(words))
    except (ValueError, StopIteration):
        return None
    return values


def request(values: dict[str, object]) -> Request:
    """The Request the values describe; BadUsage when the process is not given once."""
    pid, inject_pid = values["pid"], values["inject_pid"]
    if pid is not None and inject_pid is not None and pid != inject_pid:
        raise BadUsage(f"two different pids given: {pid} and --inject {inject_pid}")
    target = pid if pid is not None else inject_pid
    if not isinstance(target, int):
        raise BadUsage("which process? give its PID, e.g. `ncore 1369`")
    if target <= 0:
        raise BadUsage(f"{target} is not a process id")
    if values["read_only"] and (values["method"] != "auto" or values["mode"] != "auto"):
        raise BadUsage("--read-only runs no code in the process: leave out --method and --mode")
    if values["in_place"] and not values["keep_running"]:
        raise BadUsage("--in-place is for snapshots: add --keep-running (a panic is always written in place)")
    return Request(
        target,
        keep_running=bool(values["keep_running"]),
        in_place=bool(values["in_place"]),
        message=str(values["message"]),
        output_dir=values["output_dir"] if isinstance(values["output_dir"], str) else None,
        timeout=float(values["timeout"]),  # type: ignore[arg-type]
        method=str(values["method"]),
        mode=str(values["mode"]),
        gdb=values["gdb_command"] if isinstance(values["gdb_command"], str) else None,
        read_only=bool(values["read_only"]),
        native=bool(values["native"]),
        fallback=not values["no_fallback"],
    )
