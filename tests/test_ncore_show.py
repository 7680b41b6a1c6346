"""ncore show's parts on real dumps: reading a file (and every way it can fail), looking
keys up, printing values, and the terminal view."""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from ncore import dumpfile, show
from ncore.errors import NoSuchKey, NotADump
from pypanic._dump import PYPANIC_KEYS

from .dumps import ROOT, run_show

NODE_PANIC_DUMP = {
    "dbg.format-version": "0.1",
    "init.process.argv": ["node", "/home/dap/node-panic/examples/example-auto.js"],
    "init.process.pid": 22984,
    "init.process.cwd": "/home/dap/node-panic",
    "init.process.env": {"HOST": "devel", "TERM": "xterm-color", "USER": "dap", "_": "/usr/bin/node"},
    "init.process.version": "v0.4.9",
    "init.process.platform": "sunos",
    "init.time": "2011-09-12T22:37:36.408Z",
    "init.time-ms": 1315867056408,
    "func1.arg": 10,
    "func2.arg": 20,
    "panic.error": "EXCEPTION: TypeError: TypeError: Cannot call method 'nonexistentMethod' of undefined\n"
    "    at func2 (/home/dap/node-postmortem/examples/example-auto.js:19:14)\n"
    "    at func1 (/home/dap/node-postmortem/examples/example-auto.js:11:2)",
    "panic.time": "2011-09-12T22:37:36.408Z",
    "panic.time-ms": 1315867056408,
    "panic.memusage": {"rss": 13000704, "vsize": 73252864, "heapTotal": 3196160, "heapUsed": 1926592},
}
"""node-panic's own example dump (format 0.1), from its README."""


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory for the files hypothesis makes (it cannot use function-scoped fixtures)."""
    return tmp_path_factory.mktemp("scratch")


def rendered(dump: dict[str, object]) -> str:
    out = io.StringIO()
    show.render(dump, Console(file=out, width=100, color_system=None))
    return out.getvalue()


def not_a_dump(path: Path | str) -> NotADump:
    with pytest.raises(NotADump) as caught:
        dumpfile.load(str(path))
    assert caught.value.exit_code == 11
    assert caught.value.hint
    return caught.value


# Reading a file


def test_load_reads_a_real_dump_in_its_order(auto_dump):
    """The example's crash dump loads whole, its registered keys where the file has them."""
    dump = dumpfile.load(str(auto_dump))
    assert dump["dbg.format-version"] == "0.2"
    keys = list(dump)
    assert keys[keys.index("init.time-ms") + 1 : keys.index("panic.error")] == ["func1.arg", "func2.arg"]
    assert dump == json.loads(auto_dump.read_text())


def test_load_reads_a_node_panic_dump(tmp_path):
    """node-panic's own dumps (format 0.1) are dumps too."""
    path = tmp_path / "ncore.22984"
    path.write_text(json.dumps(NODE_PANIC_DUMP, indent=2))
    assert dumpfile.load(str(path)) == NODE_PANIC_DUMP


def test_load_takes_a_byte_order_mark(tmp_path, auto_dump):
    """A dump saved by an editor that puts a UTF-8 byte order mark first still loads."""
    path = tmp_path / "with-bom"
    path.write_bytes(b"\xef\xbb\xbf" + auto_dump.read_bytes())
    assert dumpfile.load(str(path))["func1.arg"] == 10


@pytest.mark.parametrize(
    ("content", "cause"),
    [
        (b"", "is empty"),
        (b" \n\t\n", "is empty"),
        (b'{"dbg.format-version": "0.2", "k": "\xff"}', "is not UTF-8 text (byte 0xff at offset 36)"),
        (b'{"dbg.format-version": "0.2",\n "k": 1,, "j": 2}', "is not JSON: Expecting property name"),
        (b'{"dbg.format-version": "0.2",\n "k": 1,, "j": 2}', "at line 2, column 9"),
        (b'{"dbg.format-version": "0.2"}\n{"second": 1}\n', "is not JSON: Extra data at line 2, column 1"),
        (b'{"dbg.format-version": "0.2", "k": [1, 2', "ends early"),
        (b'{"dbg.format-version": "0.2", "k": tr', "ends early"),
        (b'{"dbg.format-version": "0.2", "k": "\\u00', "ends early"),
        (b'{"dbg.format-version": "0.2", "k": "\xe2\x98', "ends early, in the middle of a character"),
        (b'{"dbg.format-version": "0.2", "k": 12' + bytes(4096), "ends early"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b"[1, 2]", "holds a JSON list, not an object"),
        (b'"ncore.1369"', "holds a JSON string, not an object"),
        (b"null", "holds a JSON null, not an object"),
        (b'{"func1.arg": 10}', 'without "dbg.format-version": not a pypanic or node-panic dump'),
    ],
)
def test_load_refuses_what_is_not_a_dump(tmp_path, content, cause):
    """Each way a file is not a dump: exit 11 and a message naming the cause, with a fix."""
    path = tmp_path / "ncore.1"
    path.write_bytes(content)
    error = not_a_dump(path)
    assert cause in error.message
    assert str(path) in error.message


def test_load_says_a_cut_dump_may_be_unfinished(auto_dump, tmp_path):
    """The message for a cut file says why a file ends early and what to do about it."""
    path = tmp_path / "cut"
    path.write_bytes(auto_dump.read_bytes()[:1000])
    error = not_a_dump(path)
    assert "ends early" in error.message
    assert all(why in error.hint for why in ("still being written", "full disk", "copy cut short"))


def test_every_cut_of_a_real_dump_ends_early(auto_dump, tmp_path):
    """Cut anywhere (in a key, a string, an escape, a number, a literal, between values), a
    real dump is reported as ending early, never as malformed."""
    data = auto_dump.read_bytes()
    path = tmp_path / "cut"
    for end in range(1, len(data.rstrip())):
        path.write_bytes(data[:end])
        with pytest.raises(NotADump, match="ends early"):
            dumpfile.load(str(path))


def test_load_refuses_a_missing_file_and_a_directory(tmp_path):
    """No such file, and a directory: exit 11, each named."""
    assert "no file" in not_a_dump(tmp_path / "ncore.404").message
    assert "is a directory" in not_a_dump(tmp_path).message


def test_load_refuses_a_file_that_fails_to_read():
    """A read that fails (here /proc/self/mem at address 0): exit 11 with the system's reason."""
    assert not_a_dump("/proc/self/mem").message == "cannot read /proc/self/mem: Input/output error"


def test_load_refuses_a_file_it_may_not_read(tmp_path):
    """A dump the user may not read: exit 11, permission denied, and who can read it.
    The load runs in a child that gives up root, as an operator without rights would."""
    path = tmp_path / "ncore.1"
    path.write_text('{"dbg.format-version": "0.2"}')
    path.chmod(0)
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
            try:
                dumpfile.load(str(path))
                report = "loaded"
            except NotADump as e:
                report = f"{e.exit_code}\n{e.message}\n{e.hint}"
            os.write(writer, report.encode())
        finally:
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader) as pipe:
        report = pipe.read()
    os.waitpid(pid, 0)
    code, message, hint = report.split("\n")
    assert code == "11"
    assert message == f"permission denied reading {path}"
    assert "0600" in hint


# Looking keys up


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("func1.arg", 10),
        ("func2.arg", 20),
        ("panic.reason", "panic due to uncaught exception"),
        ("panic.threads.0.name", "MainThread"),
        ("panic.exception.frames.1.locals.arg1", 10),
        ("init.process.argv.1", str(ROOT / "examples" / "example-auto.py")),
    ],
)
def test_lookup_on_a_real_dump(auto_dump, key, value):
    """Whole keys with dots, and dotted paths into objects and lists, on the example's dump."""
    assert dumpfile.lookup(dumpfile.load(str(auto_dump)), key) == value


def test_lookup_returns_nested_values_whole(auto_dump):
    """A path that ends at an object gives the object; rss is a number of bytes."""
    dump = dumpfile.load(str(auto_dump))
    memory = dumpfile.lookup(dump, "panic.memusage")
    assert isinstance(memory, dict)
    assert set(memory) == {"rss", "vsize", "heapTotal", "heapUsed"}
    assert dumpfile.lookup(dump, "panic.memusage.rss") == memory["rss"] > 0


def test_lookup_prefers_the_longest_key_at_each_level():
    """Keys with dots at any depth: the whole key first, then the longest run of parts."""
    dump: dict[str, object] = {
        "a.b": 1,
        "a": {"b": 2, "c.d": {"e.f": [{"g": 3}]}, "c": {"d": 4}},
    }
    assert dumpfile.lookup(dump, "a.b") == 1
    assert dumpfile.lookup(dump, "a.c.d.e.f.0.g") == 3
    assert dumpfile.lookup(dump, "a.c.d") == {"e.f": [{"g": 3}]}


@pytest.mark.parametrize(
    ("key", "message", "hint"),
    [
        ("func3.arg", 'no key "func3.arg" in the dump', "did you mean func2.arg, func1.arg?"),
        ("zzzzzz", 'no key "zzzzzz"', "its keys: dbg.format-version, init.process.argv"),
        ("panic.memusage.rs", 'panic.memusage has no "rs"', "did you mean panic.memusage.rss?"),
        ("panic.threads.1.name", 'panic.threads is a list of 1, and "1" is not an index', "0 to 0"),
        ("panic.threads.first", '"first" is not an index', "whole numbers"),
        ("func1.arg.value", "func1.arg is a number, with nothing inside", "ask for func1.arg itself"),
        ("", 'no key ""', "its keys:"),
    ],
)
def test_lookup_of_a_missing_key(auto_dump, key, message, hint):
    """A key that is not there: exit 12, where the lookup stopped, and the keys that come close."""
    with pytest.raises(NoSuchKey) as caught:
        dumpfile.lookup(dumpfile.load(str(auto_dump)), key)
    assert caught.value.exit_code == 12
    assert message in caught.value.message
    assert hint in caught.value.hint


# Printing values


def test_format_values_prints_like_the_json_tool(auto_dump):
    """Strings bare, numbers and null as JSON text, objects indented by 2, one after another."""
    dump = dumpfile.load(str(auto_dump))
    keys = ["func1.arg", "panic.reason", "panic.threads.0.daemon", "panic.gc.frozen", "panic.memusage"]
    text = dumpfile.format_values([dumpfile.lookup(dump, key) for key in keys], as_json=False)
    head, memory = text.split("{", 1)
    assert head == "10\npanic due to uncaught exception\nfalse\n0\n"
    assert memory.startswith('\n  "rss": ') and memory.endswith("\n}\n")
    assert json.loads("{" + memory) == dump["panic.memusage"]


def test_format_values_as_json_quotes_strings():
    """With --json every value is JSON: strings quoted, lists indented, unicode kept."""
    text = dumpfile.format_values(["naïve\nline", None, [1, {"a": True}]], as_json=True)
    assert text == '"naïve\\nline"\nnull\n[\n  1,\n  {\n    "a": true\n  }\n]\n'
    assert dumpfile.format_values([], as_json=True) == ""


def test_format_values_refuses_a_value_nested_too_deeply():
    """A value deeper than the JSON encoder can go is an error (exit 11), not a traceback."""
    value: list[object] = []
    for _ in range(1000):
        value = [value]
    with pytest.raises(NotADump, match="nested too deeply"):
        dumpfile.format_values([value], as_json=False)


# The terminal view


def test_render_shows_a_crash(auto_dump):
    """The example's crash as a person reads it: who, why, where, and the registered keys."""
    dump = dumpfile.load(str(auto_dump))
    text = rendered(dump)
    lines = text.splitlines()
    assert lines[0] == "dump format 0.2, written by pypanic 0.1.0"
    assert f"  pid      {dump['init.process.pid']}, parent " in text
    assert f"  command  {sys.executable} {ROOT / 'examples' / 'example-auto.py'}\n" in text
    assert f"  python   {'.'.join(map(str, sys.version_info[:3]))} (cpython) on linux\n" in text
    assert f"  when     {dump['panic.time']}\n" in text
    assert "  why      panic due to uncaught exception: EXCEPTION: AttributeError: 'NoneType' object" in text
    assert "  memory   rss " in text and " MiB" in text
    assert "  AttributeError: 'NoneType' object has no attribute 'nonexistent_method'\n" in lines_after(lines, "Error")
    assert "      func2(arg1 + 10)\n        arg1 = 10\n" in text
    assert f"    {ROOT / 'examples' / 'example-auto.py'}:17 in func2\n" in text
    assert "  MainThread: ident " in text and ", main, current\n" in text
    assert lines_after(lines, "Registered keys (2)") == "  func1.arg  10\n  func2.arg  20\n"
    assert "\x1b" not in text


def lines_after(lines: list[str], heading: str) -> str:
    """The lines of the section under ``heading``, up to the next blank line."""
    start = lines.index(heading) + 1
    end = lines.index("", start) if "" in lines[start:] else len(lines)
    return "".join(f"{line}\n" for line in lines[start:end])


def test_render_shows_threads_locals_and_a_chain(threaded_dump):
    """A dump with a waiting worker thread: both stacks with locals, shortened to a line,
    the exception with its cause, and long registered values cut with a marker."""
    text = rendered(dumpfile.load(str(threaded_dump)))
    assert "  why      config check failed: EXCEPTION: ValueError: bad config\n" in text
    assert "  KeyError: 'missing'\n\n  The above exception was the direct cause of the following exception:\n" in text
    assert "  ValueError: bad config\n" in text
    assert "Threads (2)\n  MainThread: " in text
    assert "\n  worker-1: ident " in text and ", daemon\n" in text
    assert "      stop.wait()\n" in text
    assert "        job = <Job 7 for worker-1>\n" in text
    payload = next(line for line in text.splitlines() if line.startswith("        payload = "))
    assert payload.endswith(" ...[502 characters in all]") and len(payload) <= 100
    assert '  config  {"workers": 2, "mode": "fast"}\n' in text
    lines = next(line for line in text.splitlines() if line.startswith("  lines   "))
    assert lines.startswith('  lines   ["line 0", "line 1", ') and lines.endswith("characters in all]")
    assert len(lines) <= 100


def test_render_shows_a_node_panic_dump():
    """node-panic's dump: its header, its error text as written, and its registered keys."""
    text = rendered(NODE_PANIC_DUMP)
    assert text.startswith("dump format 0.1, written by node-panic\n  pid      22984\n")
    assert "  node     v0.4.9 on sunos\n  host     devel\n" in text
    assert "  memory   rss 12.4 MiB, vsize 69.9 MiB" in text
    assert "      at func2 (/home/dap/node-postmortem/examples/example-auto.js:19:14)\n" in text
    assert "Registered keys (2)\n  func1.arg  10\n  func2.arg  20\n" in text
    assert "Threads" not in text


def test_render_tells_of_cuts_and_warnings(auto_dump):
    """Cuts and ignored settings get a line each at the end."""
    dump = dumpfile.load(str(auto_dump))
    dump["dbg.cuts"] = {"count": 3, "first": [{"path": "config.items", "reason": "items", "detail": "10000 of 12000"}]}
    dump["dbg.warnings"] = ["PYPANIC_MAX_BYTES='lots' is not a size; using 256 MiB"]
    text = rendered(dump)
    assert text.endswith(
        "\ncuts made when the dump was written (dbg.cuts): 3; the first: config.items (items)\n"
        "warning: PYPANIC_MAX_BYTES='lots' is not a size; using 256 MiB\n"
    )


def test_render_finds_the_registered_keys(auto_dump):
    """Registered keys are those between init.time-ms and panic.error, whatever their names,
    and keys outside the format's namespaces anywhere; a key a later pypanic might add is not
    one of them."""
    dump = dumpfile.load(str(auto_dump))
    keys = list(dump)
    at = keys.index("panic.error")
    dump = {
        **{key: dump[key] for key in keys[:at]},
        "panic.custom": "registered too",
        **{key: dump[key] for key in keys[at:]},
        "panic.signals": {"SIGTERM": "default"},
        "registered:panic.error": "a collision",
    }
    text = rendered(dump)
    assert lines_after(text.splitlines(), "Registered keys (4)") == (
        '  func1.arg               10\n  func2.arg               20\n  panic.custom            "registered too"\n'
        '  registered:panic.error  "a collision"\n'
    )


def test_render_shows_control_characters_as_escapes():
    """A dump's strings cannot drive the terminal: escape and other control characters are
    shown as text."""
    text = rendered(
        {
            "dbg.format-version": "0.2",
            "panic.threads": [{"name": "\x1b[2Jevil\x9b1m", "frames": []}],
            "note\x07": "\x1b]0;title\x07",
        }
    )
    assert "\x1b" not in text and "\x9b" not in text and "\x07" not in text
    assert "  \\x1b[2Jevil\\x9b1m\n" in text
    assert "note\\x07" in text


def test_render_survives_values_nested_too_deeply():
    """Values and exception chains as deep as a file can nest are shown cut, not a crash."""
    value: list[object] = []
    exception: dict[str, object] = {"type": "E"}
    for _ in range(990):
        value = [value]
        exception = {"type": "E", "cause": exception}
    text = rendered({"dbg.format-version": "0.2", "deep": value, "panic.exception": exception})
    assert "  deep  <nested too deeply to show>\n" in text
    assert "... more exceptions, nested too deeply to show" in text


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=8,
)
"""Any value a JSON file can hold (json reads Infinity, so that too)."""


def _shaped(fields: dict[str, st.SearchStrategy[object]]) -> st.SearchStrategy[object]:
    """An object with any of ``fields``, or any JSON value in its place."""
    return st.fixed_dictionaries({}, optional=fields) | JSON


FRAME = _shaped({name: JSON for name in ("file", "line", "function", "source")} | {"locals": _shaped({"x": JSON})})
FRAMES = st.lists(FRAME, max_size=3) | JSON
EXCEPTION = st.recursive(
    _shaped({"type": JSON, "message": JSON, "frames": FRAMES, "notes": JSON, "$seen": JSON}),
    lambda inner: _shaped(
        {"type": JSON, "cause": inner, "context": inner, "suppress_context": JSON, "exceptions": st.lists(inner)}
    ),
    max_leaves=5,
)
THREAD = _shaped(
    {name: JSON for name in ("name", "ident", "native_id", "daemon", "main", "current")} | {"frames": FRAMES}
)
KNOWN: dict[str, st.SearchStrategy[object]] = {key: JSON for key in PYPANIC_KEYS if key != "dbg.format-version"} | {
    "panic.exception": EXCEPTION,
    "panic.threads": st.lists(THREAD, max_size=3) | JSON,
    "panic.memusage": _shaped({"rss": JSON, "vsize": JSON}),
    "panic.process": _shaped({"pid": JSON, "ppid": JSON, "hostname": JSON}),
    "panic.python": _shaped({"implementation": JSON}),
    "init.process.env": _shaped({"HOST": JSON, "HOSTNAME": JSON}),
    "dbg.cuts": _shaped({"count": JSON, "first": st.lists(_shaped({"path": JSON, "reason": JSON})) | JSON}),
}
DUMPS = st.builds(
    lambda known, extra: {**known, **extra},
    st.fixed_dictionaries({"dbg.format-version": JSON}, optional=KNOWN),
    st.dictionaries(st.text(), JSON, max_size=3),
)


@settings(max_examples=200, deadline=None)
@given(DUMPS)
def test_render_never_raises(dump):
    """Any object with a format version, whatever sits under the keys the view reads, renders."""
    assert rendered(dump).startswith("dump format ")


def _damaged(data: bytes) -> st.SearchStrategy[bytes]:
    """``data`` cut short, or with bytes changed, inserted or deleted."""
    cut = st.integers(0, len(data)).map(lambda end: data[:end])
    edits = st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(0, 255), st.sampled_from("cid")), max_size=8)

    def edit(changes: list[tuple[int, int, str]]) -> bytes:
        damaged = bytearray(data)
        for offset, byte, how in changes:
            where = min(offset, len(damaged) - 1)
            if how == "c":
                damaged[where] = byte
            elif how == "i":
                damaged.insert(where, byte)
            else:
                del damaged[where]
        return bytes(damaged)

    return cut | edits.map(edit)


@pytest.fixture(scope="module")
def damaged_dumps(threaded_dump: Path) -> st.SearchStrategy[bytes]:
    return _damaged(threaded_dump.read_bytes())


@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_a_damaged_dump_renders_or_is_refused(data, damaged_dumps, scratch):
    """A real dump cut or with bytes changed either renders or is refused with exit 11 and
    a message; nothing else escapes."""
    path = scratch / "damaged"
    path.write_bytes(data.draw(damaged_dumps))
    try:
        text = rendered(dumpfile.load(str(path)))
    except NotADump as e:
        text = f"{e.exit_code} {e.message}\n  fix: {e.hint}"
    assert text.startswith(("dump format ", f"11 {path} ")), text
    assert not text.endswith("fix: ")


@settings(max_examples=6, deadline=None)
@given(data=st.data())
def test_the_command_on_a_damaged_dump(data, damaged_dumps, scratch):
    """The real command on a damaged dump: the view and exit 0, or exit 11 with the reason on
    standard error; never a traceback."""
    path = scratch / "damaged-for-the-command"
    path.write_bytes(data.draw(damaged_dumps))
    result = run_show(str(path))
    assert "Traceback" not in result.stderr
    if result.returncode == 0:
        assert result.stdout.startswith("dump format ")
    else:
        assert result.returncode == 11, result.stderr
        assert result.stderr.startswith(f"ncore: {path}") and "\n  fix: " in result.stderr
        assert result.stdout == ""
