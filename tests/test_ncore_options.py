"""The dump command line: the quick reading, the click command made from the same table,
and which modules the usual path imports."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest

from ncore.cli import cli
from ncore.errors import BadUsage
from ncore.options import DUMP_OPTIONS, parse, request


def test_a_plain_dump_line_is_read_without_click():
    """PID, options with and without '=', flags, the optional 'dump' word, NCORE_GDB."""
    values = parse(["dump", "--keep-running", "--timeout=2.5", "--method", "ptrace", "-v", "1369"])
    assert values is not None
    wanted = request(values)
    assert (wanted.pid, wanted.keep_running, wanted.timeout, wanted.method) == (1369, True, 2.5, "ptrace")
    assert values["verbose"] is True and values["as_json"] is False
    assert request(parse(["--inject", "7"]) or {}).pid == 7


def test_the_environment_gives_the_gdb_default(monkeypatch):
    monkeypatch.setenv("NCORE_GDB", "/opt/gdb/bin/gdb -q")
    assert request(parse(["1"]) or {}).gdb == "/opt/gdb/bin/gdb -q"
    assert request(parse(["--gdb", "gdb-16", "1"]) or {}).gdb == "gdb-16"


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["-h"],
        ["--version"],
        ["show", "ncore.1"],
        ["--timeout", "0", "1"],
        ["--timeout", "soon", "1"],
        ["--method", "lldb", "1"],
        ["--json=yes", "1"],
        ["--no-such-option", "1"],
        ["1", "2"],
        ["--message"],
        ["-1"],
    ],
)
def test_anything_else_is_left_to_click(argv):
    assert parse(argv) is None


def test_the_process_must_be_given_once():
    with pytest.raises(BadUsage, match="which process"):
        request(parse([]) or {})
    with pytest.raises(BadUsage, match="two different pids"):
        request(parse(["--inject", "2", "1"]) or {})


def test_the_click_command_offers_every_option_of_the_table():
    command = cli.commands["dump"]
    assert isinstance(command, click.Command)
    offered = {name for parameter in command.params for name in parameter.opts}
    beyond_the_table = {"pids", "--name", "--jobs"}  # several targets: click's path only
    assert {name for option in DUMP_OPTIONS for name in option.names} | beyond_the_table == offered


def test_click_and_the_quick_reading_agree_on_values():
    """The same line read both ways gives the same values."""
    argv = ["--keep-running", "--timeout", "3", "--mode", "pending", "--output-dir", "/tmp", "--message", "m", "5"]
    quick = parse(argv)
    context = cli.commands["dump"].make_context("dump", list(argv))
    assert quick is not None
    clicked = dict(context.params)
    assert clicked.pop("pids") == (quick.pop("pid"),)
    assert clicked.pop("pattern") is None and clicked.pop("jobs") == 8
    assert quick == clicked


def test_the_usual_path_imports_no_heavy_module(processes, tmp_path):
    """`ncore --keep-running PID` on a live target imports neither click nor the modules
    whose import would cost more than a dump: the start-up goal in BENCHMARKS.md needs that."""
    code = "import time; print('ready', flush=True); time.sleep(60)"
    target = processes.start([sys.executable, "-c", code], cwd=tmp_path)
    assert target.stdout is not None and target.stdout.readline() == "ready\n"
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "ncore", "--keep-running", str(target.pid)],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    imported = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if line.startswith("import time")}
    assert {"ncore.session", "ncore.methods.ptrace", "_ctypes"} <= imported
    heavy = {"click", "dataclasses", "json", "typing", "re", "subprocess", "pathlib", "tempfile", "shutil", "threading",
             "pystack", "pypanic", "ncore.readonly", "ctypes"}  # fmt: skip
    assert not heavy & imported
    assert "ncore.methods.remote_exec" not in imported, "a target before 3.14 needs no remote exec"
    assert target.poll() is None
    assert len(list(tmp_path.glob("ncore.*"))) == 1
