"""Reading a dump file (pypanic's or node-panic's), looking values up in it, and
printing values as the ``json`` tool does.

Every way a file can fail to be a dump becomes ``NotADump`` with what is wrong and how to
fix it; a key that is not there becomes ``NoSuchKey`` with the keys that come close.
"""

from __future__ import annotations

import difflib
import json
import re
import sys

from .errors import NoSuchKey, NotADump

_CUT_TOKEN = re.compile(r"-?\d*(?:\.\d*)?(?:[eE][-+]?\d*)?|u[0-9a-fA-F]{0,3}")
"""What is left at the end of a file cut inside a number or a ``\\u`` escape."""

_LITERALS = ("true", "false", "null", "NaN", "Infinity", "-Infinity")

_PASS_A_DUMP = "pass an ncore.<pid> file that pypanic or node-panic wrote"

_CUT_SHORT_HINT = (
    "it may be a dump still being written, one written to a full disk, or a copy cut short: "
    "wait for the writer to finish, free space, or copy the file again"
)


def load(source: str) -> dict[str, object]:
    """The dump in file ``source`` (``-``: standard input) as a dict, in the file's key order."""
    name = "standard input" if source == "-" else source
    text = _decode(_read(source), name)
    if not text.strip():
        raise NotADump(f"{name} is empty: there is no JSON in it", _PASS_A_DUMP)
    try:
        dump = json.loads(text)
    except json.JSONDecodeError as e:
        if _cut_short(text, e):
            raise NotADump(
                f"{name} ends early, in the middle of its JSON (line {e.lineno}, column {e.colno})",
                _CUT_SHORT_HINT,
            ) from None
        raise NotADump(
            f"{name} is not JSON: {e.msg} at line {e.lineno}, column {e.colno}",
            "a dump is one JSON object, as pypanic and node-panic write it: is this the right file?",
        ) from None
    except RecursionError:
        raise NotADump(
            f"{name} is JSON nested too deeply to read (about a thousand levels)",
            "pypanic never nests this deep: this is not one of its dumps",
        ) from None
    if not isinstance(dump, dict):
        raise NotADump(
            f"{name} holds a JSON {_kind(dump)}, not an object: a dump is one JSON object",
            _PASS_A_DUMP,
        )
    if "dbg.format-version" not in dump:
        raise NotADump(
            f'{name} is a JSON object without "dbg.format-version": not a pypanic or node-panic dump',
            _PASS_A_DUMP,
        )
    return dump


def _read(source: str) -> bytes:
    if source == "-":
        hint = "pipe a dump in: ncore show - < ncore.1369"
        if sys.stdin is None:
            raise NotADump("standard input is closed", hint)
        try:
            return sys.stdin.buffer.read()
        except OSError as e:
            raise NotADump(f"cannot read standard input: {e.strerror or e}", hint) from None
    try:
        with open(source, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise NotADump(f"no file {source}", "check the path; dumps are named ncore.<pid>") from None
    except IsADirectoryError:
        raise NotADump(f"{source} is a directory, not a dump", "name a file in it, such as ncore.<pid>") from None
    except PermissionError:
        raise NotADump(
            f"permission denied reading {source}",
            "dumps are written with mode 0600: read it as the user that owns it, or as root",
        ) from None
    except OSError as e:
        raise NotADump(f"cannot read {source}: {e.strerror or e}", "check the file and the disk it is on") from None


def _decode(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        if e.end == len(data) and e.reason == "unexpected end of data":
            raise NotADump(f"{name} ends early, in the middle of a character", _CUT_SHORT_HINT) from None
        raise NotADump(
            f"{name} is not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}): not a dump",
            "dumps are UTF-8 JSON files named ncore.<pid>: is this the right file?",
        ) from None


def _cut_short(text: str, error: json.JSONDecodeError) -> bool:
    """Whether parsing failed only because the text stops: nothing but an unfinished
    string, literal or number follows the place the parser gave up (zero bytes count as
    nothing: a disk that filled up can leave them)."""
    if error.msg == "Extra data":
        return False
    if error.msg.startswith("Unterminated string"):
        return True
    rest = text[error.pos :].rstrip(" \t\r\n\0")
    return bool(_CUT_TOKEN.fullmatch(rest)) or any(word.startswith(rest) for word in _LITERALS)


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return "null"


_INDEX = re.compile(r"[0-9]+")


def lookup(dump: dict[str, object], key: str) -> object:
    """The value of ``key`` in ``dump``: the key whole, else a dotted path into nested values
    (``panic.memusage.rss``, ``panic.threads.0.name``) where at each level the longest run
    of parts that is a key wins."""
    value: object = dump
    path: list[str] = []
    parts = key.split(".")
    while parts:
        taken, item = _step(value, parts)
        if not taken:
            raise _no_such_key(dump, key, path, value, parts)
        path.append(".".join(parts[:taken]))
        value, parts = item, parts[taken:]
    return value


def _step(value: object, parts: list[str]) -> tuple[int, object]:
    """The item of ``value`` that the most leading ``parts`` name, and how many parts that
    is; ``(0, None)`` when none do."""
    if isinstance(value, dict):
        for end in range(len(parts), 0, -1):
            name = ".".join(parts[:end])
            if name in value:
                return end, value[name]
    elif isinstance(value, list) and _INDEX.fullmatch(parts[0]) and int(parts[0]) < len(value):
        return 1, value[int(parts[0])]
    return 0, None


def _no_such_key(dump: dict[str, object], key: str, path: list[str], value: object, rest: list[str]) -> NoSuchKey:
    message = f'no key "{key}" in the dump'
    if not path:
        return NoSuchKey(message, _suggest(key, list(dump), "", "its keys"))
    where = ".".join(path)
    if isinstance(value, dict):
        wanted = ".".join(rest)
        return NoSuchKey(f'{message}: {where} has no "{wanted}"', _suggest(wanted, list(value), f"{where}.", "keys"))
    if isinstance(value, list):
        span = f"0 to {len(value) - 1}" if value else "none: it is empty"
        return NoSuchKey(
            f'{message}: {where} is a list of {len(value)}, and "{rest[0]}" is not an index in it',
            f"indices are whole numbers, {span}",
        )
    return NoSuchKey(f"{message}: {where} is a {_kind(value)}, with nothing inside", f"ask for {where} itself")


def _suggest(wanted: str, keys: list[str], prefix: str, what: str, shown: int = 30) -> str:
    """The keys close to ``wanted``, else all of them (the first ``shown``), as full paths."""
    close = difflib.get_close_matches(wanted, keys, n=5, cutoff=0.6)
    if close:
        return "did you mean " + ", ".join(prefix + key for key in close) + "?"
    if not keys:
        return f"{prefix.rstrip('.')} is empty"
    more = f", and {len(keys) - shown} more" if len(keys) > shown else ""
    return f"{what}: " + ", ".join(prefix + key for key in keys[:shown]) + more


def format_values(values: list[object], as_json: bool) -> str:
    """``values`` as ``json KEY ...`` prints them: one after another, strings bare (quoted
    with ``as_json``), everything else as JSON indented by 2; ends with a newline."""
    return "".join(f"{_as_text(value, as_json)}\n" for value in values)


def _as_text(value: object, as_json: bool) -> str:
    if isinstance(value, str) and not as_json:
        return value
    try:
        return json.dumps(value, indent=2, ensure_ascii=False)
    except RecursionError:
        raise NotADump(
            "a value asked for is nested too deeply to print (about a thousand levels)",
            "pypanic never nests values this deep: is this one of its dumps?",
        ) from None
