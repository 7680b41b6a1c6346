"""The real ``ncore show`` command on dumps that real processes wrote: values for scripts,
the view through a pipe, and the view a person sees on a terminal (a pseudo-terminal)."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys

import pexpect
import pytest

from ..dumps import run_show
from ..interpreters import missing

COLOUR = re.compile(r"\x1b\[[0-9;]*m")


def test_a_key_prints_its_value(auto_dump):
    """``ncore show ncore.PID func1.arg`` prints 10, as the original's ``json`` did."""
    result = run_show(str(auto_dump), "func1.arg")
    assert (result.returncode, result.stdout, result.stderr) == (0, "10\n", "")


def test_keys_and_paths_print_one_value_each(auto_dump):
    """Whole keys and dotted paths, strings bare and objects as indented JSON, in order."""
    result = run_show(str(auto_dump), "func2.arg", "panic.reason", "panic.threads.0.name", "panic.memusage")
    assert result.returncode == 0, result.stderr
    head, memory = result.stdout.split("{", 1)
    assert head == "20\npanic due to uncaught exception\nMainThread\n"
    assert json.loads("{" + memory) == json.loads(auto_dump.read_text())["panic.memusage"]


def test_json_output_parses(auto_dump):
    """``--json`` alone prints the whole dump as JSON; with a key, strings come quoted."""
    whole = run_show("--json", str(auto_dump))
    assert whole.returncode == 0, whole.stderr
    assert json.loads(whole.stdout) == json.loads(auto_dump.read_text())
    reason = run_show("--json", str(auto_dump), "panic.reason")
    assert json.loads(reason.stdout) == "panic due to uncaught exception"


def test_standard_input(auto_dump):
    """``-`` reads the dump from standard input, for the view and for keys."""
    text = auto_dump.read_text()
    assert run_show("-", "func1.arg", stdin=text).stdout == "10\n"
    view = run_show("-", stdin=text)
    assert view.returncode == 0, view.stderr
    assert view.stdout == run_show(str(auto_dump)).stdout


def test_not_a_dump_exits_11(auto_dump, tmp_path):
    """A cut file, and JSON that is not a dump on standard input: exit 11, the reason and the
    fix on standard error, nothing on standard output."""
    cut = tmp_path / "ncore.1"
    cut.write_bytes(auto_dump.read_bytes()[:2000])
    result = run_show(str(cut))
    assert (result.returncode, result.stdout) == (11, "")
    assert result.stderr.startswith(f"ncore: {cut} ends early, in the middle of its JSON (line ")
    assert "\n  fix: it may be a dump still being written" in result.stderr
    piped = run_show("-", "func1.arg", stdin='{"func1.arg": 10}')
    assert (piped.returncode, piped.stdout) == (11, "")
    assert piped.stderr.startswith('ncore: standard input is a JSON object without "dbg.format-version"')


def test_standard_input_that_cannot_be_read():
    """``-`` with standard input closed, or open for writing only: exit 11 and why."""
    closed = subprocess.run(
        [sys.executable, "-m", "ncore", "show", "-"],
        preexec_fn=lambda: os.close(0),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (closed.returncode, closed.stdout) == (11, "")
    assert closed.stderr.startswith("ncore: standard input is closed\n  fix: ")
    with open(os.devnull, "w") as write_only:
        result = subprocess.run(
            [sys.executable, "-m", "ncore", "show", "-"],
            stdin=write_only,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert (result.returncode, result.stdout) == (11, "")
    assert result.stderr.startswith("ncore: cannot read standard input: Bad file descriptor\n  fix: ")


def test_a_missing_key_exits_12(auto_dump):
    """A key that is not there: exit 12 with close matches, and no value printed, not even
    those of the keys before it."""
    result = run_show(str(auto_dump), "func1.arg", "func3.arg")
    assert (result.returncode, result.stdout) == (12, "")
    assert result.stderr == 'ncore: no key "func3.arg" in the dump\n  fix: did you mean func2.arg, func1.arg?\n'


@pytest.mark.parametrize("no_color", ["", "1"])
def test_plain_view_through_a_pipe(threaded_dump, no_color):
    """Through a pipe (with or without NO_COLOR) the view is plain text, one line per fact,
    nothing wrapped, ready for grep."""
    result = run_show(str(threaded_dump), **({"NO_COLOR": no_color} if no_color else {}))
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout
    lines = result.stdout.splitlines()
    assert lines[0] == "dump format 0.2, written by pypanic 0.1.0"
    assert "  why      config check failed: EXCEPTION: ValueError: bad config" in lines
    assert "Threads (2)" in lines
    assert any(re.fullmatch(r"  worker-1: ident \d+, native_id \d+, daemon", line) for line in lines)
    assert '  config  {"workers": 2, "mode": "fast"}' in lines
    cuts = r"cuts made when the dump was written \(dbg\.cuts\): \d+; the first: \S+ \(depth\)"
    assert re.fullmatch(cuts, lines[-1])


def spawn_show(*args: str, **env: str) -> str:
    """Run ``ncore show ARGS`` on a 40x120 pseudo-terminal; everything it showed. A pager
    run with ``less`` gets a ``q`` once its first page shows the first exception."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if name not in ("FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE", "PAGER", "MANPAGER", "LESS", "COLUMNS", "LINES")
    }
    environment.update(TERM="xterm-256color", **env)
    child = pexpect.spawn(
        sys.executable,
        ["-m", "ncore", "show", *args],
        dimensions=(40, 120),
        env=environment,
        encoding="utf-8",
        timeout=60,
    )
    seen = io.StringIO()
    child.logfile_read = seen
    try:
        if env.get("PAGER", "").startswith("less"):
            child.expect("KeyError")
            child.send("q")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    output = seen.getvalue()
    assert child.exitstatus == 0, output
    return output


def test_the_view_on_a_terminal_has_colour(threaded_dump):
    """On a terminal a person sees the header, the error and each thread, in colour."""
    output = spawn_show(str(threaded_dump))
    assert COLOUR.search(output)
    plain = COLOUR.sub("", output)
    assert plain.startswith("dump format 0.2, written by pypanic 0.1.0\r\n")
    assert "  why      config check failed: EXCEPTION: ValueError: bad config" in plain
    assert re.search(r"\x1b\[[0-9;]*mMainThread\x1b\[0m: ident \d+", output)
    assert re.search(r"\x1b\[[0-9;]*mworker-1\x1b\[0m: ident \d+", output)
    assert "\r\n  config  {" in plain


def test_no_color_on_a_terminal_is_plain(threaded_dump):
    """NO_COLOR=1 on a terminal: the same view without a single escape sequence."""
    output = spawn_show(str(threaded_dump), NO_COLOR="1")
    assert "\x1b" not in output
    assert output.startswith("dump format 0.2, written by pypanic 0.1.0\r\n")
    assert "\r\n  worker-1: ident " in output


def test_pager_cat_shows_the_view(threaded_dump):
    """``--pager`` pipes the view through $PAGER (cat here), colours and all."""
    output = spawn_show("--pager", str(threaded_dump), PAGER="cat")
    assert COLOUR.search(output)
    plain = COLOUR.sub("", output)
    assert "dump format 0.2, written by pypanic 0.1.0" in plain
    assert "  worker-1: ident " in plain
    assert "Registered keys (2)" in plain


def test_pager_less_shows_the_first_page(threaded_dump):
    """``--pager`` with ``less -R``: the first page shows, in colour, and ``q`` ends it."""
    if shutil.which("less") is None:
        missing("less is not installed")
    output = spawn_show("--pager", str(threaded_dump), PAGER="less -R")
    plain = COLOUR.sub("", output)
    assert "dump format 0.2, written by pypanic 0.1.0" in plain
    assert "Traceback (most recent call last):" in plain
    assert re.search(r"\x1b\[[0-9;]*m  KeyError", output)
