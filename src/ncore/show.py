"""A dump as a person reads it, printed on a rich Console; looked-up values as ``json`` prints them.

The view is lines of text, no boxes, so that it reads the same without colour and greps
well: a header, the error with its traceback, every thread's stack, the registered keys,
then what was cut. Any field can be missing or of the wrong type in a file that loaded:
the view shows what is there and never raises.
"""

from __future__ import annotations

import json
import os
import re
import shlex

from rich.console import Console
from rich.text import Text

_LABEL = 9
"""Width of the header's labels."""

_KEY_COLUMN = 24
"""Registered keys longer than this push their value right instead of widening the column."""

_CHAIN_SHOWN = 16
"""How deep causes, contexts and group members are followed; deeper ones are left out, with a line saying so."""

_SHORTEST = 24
"""A shortened value keeps at least this many characters, however narrow the console."""

_FORMAT_NAMESPACES = ("dbg.", "init.", "panic.")
"""The prefixes of the keys pypanic and node-panic write themselves."""

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
"""Control characters but tab and newline."""


def make_console() -> Console:
    """A Console on standard output: colour on a terminal; plain text, no escapes and no
    wrapping, when standard output is not a terminal or NO_COLOR is set."""
    console = Console()
    if console.is_terminal and not console.no_color:
        return console
    return Console(color_system=None, soft_wrap=True)


def render(dump: dict[str, object], console: Console) -> None:
    """Print the whole of ``dump`` on ``console``: header, error, threads, asyncio's task
    tree, registered keys, cuts."""
    _header(dump, console)
    _error(dump, console)
    _threads(dump.get("panic.threads"), console)
    _asyncio(dump.get("panic.asyncio"), console)
    _registered(dump, console)
    _cuts_and_warnings(dump, console)


def _header(dump: dict[str, object], console: Console) -> None:
    version = dump.get("dbg.format-version")
    node = version == "0.1"
    writer = "node-panic" if node else f"pypanic {_text(dump.get('dbg.pypanic-version', '?'))}"
    _print(console, (f"dump format {_text(version)}, written by {writer}", "bold"))
    process = _mapping(dump.get("panic.process"))
    facts = [
        ("pid", _joined(dump.get("init.process.pid", process.get("pid")), _labelled("parent", process.get("ppid")))),
        ("command", _command(dump.get("init.process.argv"))),
        ("node" if node else "python", _runtime(dump)),
        ("host", _host(dump, process)),
        ("cwd", dump.get("init.process.cwd")),
        ("when", dump.get("panic.time")),
        ("why", _why(dump)),
        ("memory", _memory(dump.get("panic.memusage"))),
    ]
    for label, value in facts:
        if value is not None and "$unavailable" not in _mapping(value):
            _print(console, (f"  {label:<{_LABEL}}", "bold"), (_text(value), "bold red" if label == "why" else ""))


def _labelled(label: str, value: object) -> str | None:
    return None if value is None else f"{label} {_text(value)}"


def _joined(*parts: object, separator: str = ", ") -> str | None:
    present = [_text(part) for part in parts if part is not None]
    return separator.join(present) or None


def _command(argv: object) -> object:
    if isinstance(argv, list) and all(isinstance(arg, str) for arg in argv):
        return shlex.join(argv)
    return argv


def _runtime(dump: dict[str, object]) -> str | None:
    implementation = _mapping(dump.get("panic.python")).get("implementation")
    return _joined(
        dump.get("init.process.version"),
        None if implementation is None else f"({_text(implementation)})",
        _labelled("on", dump.get("init.process.platform")),
        separator=" ",
    )


def _host(dump: dict[str, object], process: dict[str, object]) -> object:
    if "hostname" in process:
        return process["hostname"]
    environment = _mapping(dump.get("init.process.env"))
    return environment.get("HOSTNAME", environment.get("HOST"))


def _why(dump: dict[str, object]) -> str | None:
    error = dump.get("panic.error")
    first_line = None if error is None or "dbg.outside" in dump else _text(error).split("\n", 1)[0]
    return _joined(dump.get("panic.reason"), first_line, separator=": ")


def _memory(usage: object) -> object:
    if not isinstance(usage, dict):
        return usage
    sizes = [f"{name} {_size(usage[name])}" for name in ("rss", "vsize", "heapUsed", "heapTotal") if name in usage]
    return ", ".join(sizes) or None


def _size(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value / 2**20:.1f} MiB"
    return _text(value)


def _error(dump: dict[str, object], console: Console) -> None:
    exception = dump.get("panic.exception")
    error = dump.get("panic.error")
    if exception is None and error is None:
        return
    _heading("Error", console)
    if exception is None or "$unavailable" in _mapping(exception):  # read from outside: no exception to show
        _print(console, (_indent(_text(error), "  "), "red"))
    else:
        _exception(exception, console, "  ", 0)


def _exception(exception: object, console: Console, indent: str, depth: int) -> None:
    """Like Python's traceback: causes and contexts first, then the frames, the exception,
    its notes and the members of a group."""
    if not isinstance(exception, dict):
        _print(console, (indent + _json(exception), "red"))
        return
    if "$seen" in exception:
        _print(console, (f"{indent}{_text(exception['$seen'])} (shown above)", "red"))
        return
    if depth >= _CHAIN_SHOWN:
        _print(console, (f"{indent}... more exceptions, nested too deeply to show", "dim"))
        return
    cause, context = exception.get("cause"), exception.get("context")
    if cause is not None:
        _exception(cause, console, indent, depth + 1)
        _print(console, f"\n{indent}The above exception was the direct cause of the following exception:\n")
    elif context is not None and exception.get("suppress_context") is not True:
        _exception(context, console, indent, depth + 1)
        _print(console, f"\n{indent}During handling of the above exception, another exception occurred:\n")
    if "frames" in exception:
        _print(console, f"{indent}Traceback (most recent call last):")
        _frames(exception["frames"], console, indent + "  ")
    summary = _joined(exception.get("type"), exception.get("message"), separator=": ")
    _print(console, (indent + (summary or _json(exception)), "bold red"))
    for note in _items(exception.get("notes")):
        _print(console, _indent(_text(note), indent))
    for number, member in enumerate(_items(exception.get("exceptions")), 1):
        _print(console, (f"{indent}+-- exception {number} of the group", "dim"))
        _exception(member, console, indent + "  | ", depth + 1)


def _threads(threads: object, console: Console) -> None:
    if threads is None:
        return
    _heading(f"Threads ({len(threads)})" if isinstance(threads, list) else "Threads", console)
    for thread in _items(threads):
        if not isinstance(thread, dict):
            _print(console, "  " + _json(thread))
            continue
        facts = [f"{name} {_text(thread[name])}" for name in ("ident", "native_id") if name in thread]
        facts += [name for name in ("main", "current", "daemon") if thread.get(name) is True]
        facts += [_text(thread["status"])] if thread.get("status") else []
        name = _text(thread["name"]) if thread.get("name") is not None else "?"
        _print(console, "  ", (name, "bold cyan"), ": " + ", ".join(facts) if facts else "")
        _frames(thread.get("frames"), console, "    ")


def _asyncio(state: object, console: Console) -> None:
    """Each event loop, the callback it runs, and its tasks as the tree of who awaits whom."""
    if state is None:
        return
    loops = _items(_mapping(state).get("loops"))
    _heading(f"asyncio ({len(loops)} event loop{'s' if len(loops) != 1 else ''})" if loops else "asyncio", console)
    if not loops:
        _print(console, "  " + _json(state))
    for loop in map(_mapping, loops):
        thread = _mapping(loop.get("thread"))
        where = f"in thread {_text(thread.get('name', '?'))} (native_id {_text(thread.get('native_id'))})"
        facts = [where if thread else "in no thread's stack", "running" if loop.get("running") else "not running"]
        count = loop.get("task_count")
        facts.append(f"{count} tasks" if isinstance(count, int) else "its tasks unknown")
        kind = loop.get("type", "loop")
        _print(
            console,
            "  ",
            (_text(kind) if isinstance(kind, str) else _brief(kind, 80), "bold cyan"),
            " " + ", ".join(facts),
        )
        callback = loop.get("running_callback")
        if isinstance(callback, dict):
            now = _mapping(callback.get("now_in"))
            at = f", now at {_text(now.get('file'))}:{_text(now.get('line'))} in {_text(now.get('function'))}"
            handle = callback.get("handle")
            handle = _text(handle) if isinstance(handle, str) else _brief(handle, console.width)
            _print(console, "    running callback ", (handle, "yellow"), at if now else "")
        elif callback is not None:
            _print(console, (f"    running callback: {_text(callback)}", "dim"))
        tasks = [t for t in map(_mapping, _items(loop.get("tasks"))) if "id" in t]
        by_id = {t["id"]: t for t in tasks}
        children = {t["id"]: _awaited_tasks(t) for t in tasks}
        below = {child for listed in children.values() for child in listed}
        shown: set[object] = set()
        for task in tasks:
            if task["id"] not in below:
                _task_tree(task, by_id, children, shown, console, "    ")
        for task in tasks:  # in a cycle of awaits, or below a task that was not described
            if task["id"] not in shown:
                _task_tree(task, by_id, children, shown, console, "    ")
        unavailable = _mapping(loop.get("tasks")).get("$unavailable")
        if unavailable is not None:
            _print(console, (f"    tasks: {_text(unavailable)}", "dim"))
        for cut in _items(loop.get("tasks")):
            if isinstance(cut, dict) and "$cut" in cut:
                _print(console, (f"    {_text(cut.get('detail'))}", "yellow"))


def _awaited_tasks(task: dict[str, object]) -> list[object]:
    awaits = _mapping(task.get("awaits"))
    return _items(awaits.get("tasks")) if "tasks" in awaits else _items(awaits.get("task"))


def _task_tree(
    task: dict[str, object],
    by_id: dict[object, dict[str, object]],
    children: dict[object, list[object]],
    shown: set[object],
    console: Console,
    indent: str,
) -> None:
    shown.add(task["id"])
    chain = " > ".join(
        f"{_text(f.get('function'))} ({os.path.basename(_text(f.get('file')))}:{_text(f.get('line'))})"
        for f in map(_mapping, _items(task.get("frames")))
    )
    state = "running" if task.get("running") else _text(task.get("state"))
    _print(console, indent, (_text(task.get("name")), "bold"), f" {state}", (f"  {chain}", "cyan"))
    awaits = _mapping(task.get("awaits"))
    if awaits:
        _print(console, (f"{indent}  waits on {_awaits_text(awaits, by_id)}", "dim"))
    exception = _mapping(task.get("exception"))
    if exception:
        _print(console, (f"{indent}  failed: {_text(exception.get('type'))}: {_text(exception.get('message'))}", "red"))
    for child in children.get(task["id"], []):
        if child in by_id and child not in shown:
            _task_tree(by_id[child], by_id, children, shown, console, indent + "  | ")


def _awaits_text(awaits: dict[str, object], by_id: dict[object, dict[str, object]]) -> str:
    kind = _text(awaits.get("kind"))
    if kind == "sleep":
        due = awaits.get("due_in_seconds")
        return f"sleep({_text(awaits.get('delay'))})" + (f", due in {due:.3f} s" if isinstance(due, float) else "")
    if kind in ("task", "gather", "taskgroup"):
        named = [_text(by_id.get(t, {}).get("name", t)) for t in _awaited_tasks({"awaits": awaits})]
        return f"{kind} of {', '.join(named)}" if kind != "task" else f"task {', '.join(named)}"
    details = [f"{key} {_text(value)}" for key, value in awaits.items() if key != "kind" and value is not None]
    return f"{kind}: {', '.join(details)}" if details else kind


def _frames(frames: object, console: Console, indent: str) -> None:
    if not isinstance(frames, list):
        _print(console, indent + _json(frames))
        return
    if not frames:
        _print(console, (f"{indent}no Python frames", "dim"))
    for frame in frames:
        if not isinstance(frame, dict):
            _print(console, indent + _json(frame))
            continue
        _print(
            console,
            indent,
            (f"{_text(frame.get('file', '?'))}:{_text(frame.get('line', '?'))}", "cyan"),
            " in ",
            (_text(frame.get("function", "?")), "green"),
        )
        if frame.get("source") is not None:
            _print(console, (f"{indent}  {_text(frame['source'])}", "bold"))
        local_variables = frame.get("locals")
        if isinstance(local_variables, dict):
            for name, value in local_variables.items():
                prefix = f"{indent}    {name} = "
                _print(console, (prefix + _brief(value, console.width - len(prefix)), "dim"))
        elif local_variables is not None:
            _print(console, (f"{indent}    locals: {_brief(local_variables, console.width)}", "dim"))


def _registered(dump: dict[str, object], console: Console) -> None:
    """The registered keys: those between ``init.time-ms`` and ``panic.error``, where both
    pypanic and node-panic put them, and any other key outside the format's own namespaces
    (so that keys a later pypanic adds are not taken for registered ones)."""
    keys = list(dump)
    start = keys.index("init.time-ms") + 1 if "init.time-ms" in keys else len(keys)
    end = keys.index("panic.error") if "panic.error" in keys else len(keys)
    between = set(keys[start:end])
    registered = [key for key in keys if key in between or not key.startswith(_FORMAT_NAMESPACES)]
    if not registered:
        return
    _heading(f"Registered keys ({len(registered)})", console)
    column = min(max(len(key) for key in registered), _KEY_COLUMN)
    for key in registered:
        width = console.width - max(len(key), column) - 4
        _print(console, "  ", (f"{key:<{column}}", "bold"), "  " + _brief(dump[key], width))


def _cuts_and_warnings(dump: dict[str, object], console: Console) -> None:
    cuts = _mapping(dump.get("dbg.cuts"))
    count = cuts.get("count", dump.get("dbg.cuts"))
    if count not in (None, 0):
        first = _items(cuts.get("first"))
        example = _mapping(first[0] if first else None)
        line = f"cuts made when the dump was written (dbg.cuts): {_text(count)}"
        if example:
            line += f"; the first: {_text(example.get('path', '?'))} ({_text(example.get('reason', '?'))})"
        console.print()
        _print(console, (line, "yellow"))
    for warning in _items(dump.get("dbg.warnings")):
        _print(console, (f"warning: {_text(warning)}", "yellow"))


def _heading(title: str, console: Console) -> None:
    console.print()
    _print(console, (title, "bold magenta"))


def _print(console: Console, *pieces: str | tuple[str, str]) -> None:
    """One line made of pieces, plain or ``(text, style)``, with control characters shown
    as escapes: a dump's strings must not drive the terminal."""
    line = Text()
    for piece in pieces:
        text, style = (piece, "") if isinstance(piece, str) else piece
        line.append(printable(text), style=style)
    console.print(line)


def printable(text: str) -> str:
    """``text`` with control characters shown as escapes (``\\n``, ``\\x1b``): text from a
    process must not drive the terminal or break a line apart."""
    return _CONTROL.sub(lambda match: repr(match.group())[1:-1], text)


def _items(value: object) -> list[object]:
    """A list as itself, a missing value as no items, anything else as one item."""
    if isinstance(value, list):
        return value
    return [] if value is None else [value]


def _mapping(value: object) -> dict[str, object]:
    return value if isinstance(value, dict) else {}


def _text(value: object) -> str:
    """A string as itself, anything else as JSON."""
    return value if isinstance(value, str) else _json(value)


def _json(value: object) -> str:
    try:
        return json.dumps(value, ensure_ascii=False)
    except RecursionError:
        return "<nested too deeply to show>"


def _brief(value: object, width: int) -> str:
    """``value`` on one line of at most ``width`` characters (never fewer than _SHORTEST): an
    object's repr when pypanic recorded one, else JSON, shortened with a marker."""
    record = _mapping(value)
    repr_text = record.get("repr") if "$type" in record else record.get("$repr")
    shown = repr_text if isinstance(repr_text, str) else _json(value)
    shown = shown.replace("\n", " ")
    width = max(width, _SHORTEST)
    if len(shown) <= width:
        return shown
    marker = f" ...[{len(shown)} characters in all]"
    return shown[: max(width - len(marker), 1)] + marker


def _indent(text: str, prefix: str) -> str:
    return "\n".join(prefix + line for line in text.split("\n"))
