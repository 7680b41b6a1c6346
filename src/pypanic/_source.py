"""Source lines for frames and tracebacks, read the way the interpreter reads a source file.

``linecache`` is used when the process has loaded it (it also knows sources registered by
IPython, doctest and ``exec`` with a name); otherwise files are read here: importing
``linecache`` imports ``tokenize`` and ``re``, tens of milliseconds with the GIL held in a
process that never used them, before a first dump has written anything.
"""

from __future__ import annotations

import sys

MAX_FILE_BYTES = 32 * 1024 * 1024
"""A larger file's lines are not shown (generated code, or not source at all)."""

_CACHE_FILES = 64
_cache: dict[str, list[str] | None] = {}


def line(filename: str, lineno: int) -> str | None:
    """Line ``lineno`` of ``filename``, stripped; None when there is none to show."""
    linecache = sys.modules.get("linecache")
    if linecache is not None:
        return linecache.getline(filename, lineno).strip() or None
    if filename not in _cache:
        if len(_cache) >= _CACHE_FILES:
            _cache.clear()
        _cache[filename] = _read(filename)
    lines = _cache[filename]
    if lines is None or not 0 < lineno <= len(lines):
        return None
    return lines[lineno - 1].strip() or None


def _read(filename: str) -> list[str] | None:
    if filename.startswith("<") and filename.endswith(">"):
        return None
    try:
        with open(filename, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except (OSError, ValueError):
        return None
    if len(data) > MAX_FILE_BYTES:
        return None
    try:
        text = data.decode(encoding(data), "replace")
    except LookupError:
        text = data.decode("utf-8", "replace")
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def encoding(data: bytes) -> str:
    """The encoding PEP 263 gives a source file beginning with ``data``: a UTF-8 byte order
    mark, else a ``coding[:=]name`` comment on one of the first two lines, else UTF-8."""
    if data.startswith(b"\xef\xbb\xbf"):
        return "utf-8-sig"
    for first_lines in data.split(b"\n", 2)[:2]:
        text = first_lines.lstrip(b" \t\f")
        if not text.startswith(b"#"):
            if text.strip():
                break  # code on the first line: the second may not declare one
            continue
        at = text.find(b"coding")
        while at != -1:
            if text[at + 6 : at + 7] in (b":", b"="):
                name = text[at + 7 :].lstrip(b" \t")
                end = 0
                while end < len(name) and (name[end : end + 1].isalnum() or name[end] in b"-_."):
                    end += 1
                if end:
                    return name[:end].decode("ascii", "replace")
            at = text.find(b"coding", at + 1)
    return "utf-8"
