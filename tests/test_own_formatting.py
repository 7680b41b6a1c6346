"""What pypanic writes by hand so that a first dump imports nothing heavy: the traceback in
``panic.error``, source lines, and passwords cut out of URLs; each checked against the
standard library module it stands in for."""

from __future__ import annotations

import re
import sys
import traceback

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pypanic import _source
from pypanic._facts import _without_url_passwords
from pypanic._stacks import REDACTED, error_text

from .interpreters import run_with_pypanic


def _recurse(n: int) -> None:
    if n:
        _recurse(n - 1)
    raise ValueError("deep")


def _chained() -> None:
    try:
        {"present": 1}["missing"]
    except KeyError as e:
        raise RuntimeError("wrapped") from e


def _in_handler() -> None:
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        raise LookupError() from None


def _during_handling() -> None:
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        int("not a number")


def _noted() -> None:
    e = TypeError("with notes")
    e.__notes__ = ["first note", "second note"]  # type: ignore[attr-defined]  # add_note is 3.11+
    raise e


def _caught(fn) -> BaseException:
    try:
        fn()
    except BaseException as e:
        return e
    raise AssertionError("did not raise")


CASES = {
    "recursion": lambda: _recurse(30),
    "cause": _chained,
    "suppressed context": _in_handler,
    "context": _during_handling,
    "notes": _noted,
}
_MARKS = re.compile(r"^\s*[\^~]+\s*$")


@pytest.mark.parametrize("case", list(CASES))
def test_the_traceback_is_tracebacks_own_without_its_marks(case):
    """panic.error's traceback is the text traceback.format_exception gives, line for line,
    less the lines of ^^^ and ~~~ marks (3.11+)."""
    exc = _caught(CASES[case])
    expected = [
        line
        for line in "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).splitlines()
        if not _MARKS.match(line)
    ]
    if sys.version_info < (3, 11) and getattr(exc, "__notes__", None):
        expected += getattr(exc, "__notes__", [])
    head, *body = error_text(exc).splitlines()
    assert head == f"EXCEPTION: {type(exc).__name__}: {exc}"
    assert body == expected


def test_a_cycle_of_contexts_ends():
    """Exceptions that are each other's context are each written once."""
    a, b = ValueError("a"), ValueError("b")
    a.__context__, b.__context__ = b, a
    text = error_text(a)
    assert text.count("ValueError: a") == 2 and text.count("ValueError: b") == 1  # the head names it too


def test_a_str_that_raises_is_named_not_raised():
    class Hostile(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    text = error_text(_caught(lambda: (_ for _ in ()).throw(Hostile())))
    assert "Hostile: <exception str() failed: RuntimeError: no>" in text


@pytest.mark.parametrize(
    ("first_lines", "encoding"),
    [
        (b"x = 1\n", "utf-8"),
        (b"\xef\xbb\xbfx = 1\n", "utf-8-sig"),
        (b"# -*- coding: latin-1 -*-\n", "latin-1"),
        (b"#!/usr/bin/python\n# vim: set fileencoding=cp1252 :\n", "cp1252"),
        (b"x = 1\n# coding: latin-1\n", "utf-8"),
        (b"\n  # coding=koi8-r\n", "koi8-r"),
        (b"# coding is fun\n# coding: ascii\n", "ascii"),
    ],
)
def test_source_encoding_follows_pep_263(first_lines, encoding):
    assert _source.encoding(first_lines) == encoding


def test_source_lines_are_read_in_their_encoding_without_linecache(tmp_path):
    """In a process that never loaded linecache, lines come from the file, decoded as
    declared, with CR, LF and CRLF ends alike; linecache stays unloaded."""
    path = tmp_path / "latin.py"
    path.write_bytes(b"# coding: latin-1\r\nname = '\xe9t\xe9'\rsecond = 2\nthird = 3\n")
    program = (
        "import sys\nfrom pypanic import _source\n"
        f"print([_source.line({str(path)!r}, n) for n in (2, 3, 4, 5, 0)], 'linecache' in sys.modules)"
    )
    out = run_with_pypanic(program, "-S")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[\"name = 'été'\", 'second = 2', 'third = 3', None, None] False"


_OLD_PATTERN = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^@\s]*(?P<tail>@)")
_PIECES = st.sampled_from([*"ab9+.-:/@ \tKé", "://", "http://", "u:p@", "\u212a", "\n"])


@settings(max_examples=3000, deadline=None)
@given(st.lists(_PIECES, max_size=20).map("".join))
def test_url_passwords_are_cut_as_the_regular_expression_cut_them(value):
    """The hand-written scan replaces exactly what the regular expression it replaced did."""
    assert _without_url_passwords(value) == _OLD_PATTERN.sub(rf"\g<head>{REDACTED}\g<tail>", value)


def test_a_url_password_in_the_environment_is_cut():
    text = "postgres://app:s3cret@db:5432/x and redis://:pw@cache http://plain/path"
    assert _without_url_passwords(text) == (
        f"postgres://app:{REDACTED}@db:5432/x and redis://:{REDACTED}@cache http://plain/path"
    )
