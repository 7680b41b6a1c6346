"""ncore ps, ncore doctor, several targets at once, shell completion and help, on real
processes: what an operator sees, and that the targets are left as they were."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pexpect
import pytest

from ..interpreters import HOST, IN_CHROOT, ROOT, missing
from .conftest import assert_left_running, load_dump, wait_for_ready

PYTHON = HOST[0]
"""pyenv 3.9: the oldest interpreter, with and without pypanic."""
NEWEST_HOST = HOST[-2]
STATIC = HOST[-1]
"""Debian's python3.11: stripped, non-PIE, libpython linked in statically."""
REMOTE_EXEC = IN_CHROOT[1]
"""sid's 3.14: remote exec's first version."""


def ncore(*args: str, env: dict[str, str] | None = None, user: str | None = None) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "ncore", *args]
    if user is not None:
        argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *argv]
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})}, check=False
    )


def ps_rows() -> dict[int, dict[str, Any]]:
    done = ncore("ps", "--json")
    assert done.returncode == 0, done.stderr
    return {row["pid"]: row for row in json.loads(done.stdout)}


def doctor(*args: str, user: str | None = None) -> tuple[int, dict[str, dict[str, Any]]]:
    """Exit code and the findings by topic (the last of a topic wins) of ``ncore doctor --json``."""
    done = ncore("doctor", "--json", *args, user=user)
    record = json.loads(done.stdout)
    assert record["works"] is (done.returncode == 0), done.stdout
    return done.returncode, {f["topic"]: f for f in record["findings"]}


def test_ps_lists_python_processes_with_version_pypanic_and_main_thread(start_service):
    """Each target is listed with its version, whether pypanic is loaded and what its main
    thread does; nothing is stopped."""
    busy = start_service(NEWEST_HOST, "busy")
    blocked = start_service(PYTHON, "select", with_pypanic=False)
    static = start_service(STATIC, "event", with_pypanic=False)
    rows = ps_rows()
    assert rows[busy.pid]["python"] == "3.13" and rows[busy.pid]["pypanic"] == "0.1.0"
    assert rows[busy.pid]["main_thread"] in ("running", "waiting for the GIL")
    assert rows[blocked.pid]["python"] == "3.9" and rows[blocked.pid]["pypanic"] == "no"
    assert rows[blocked.pid]["main_thread"] in ("blocked in select", "blocked in pselect6")
    assert rows[static.pid]["python"] == "3.11" and rows[static.pid]["main_thread"] == "blocked in futex"
    assert "service.py event" in rows[static.pid]["command"]
    for service in (busy, blocked, static):
        service.assert_left_running()


def test_ps_plain_output_keeps_each_command_line_whole(start_service):
    """Without a terminal: a header, then one line per process with the whole command line."""
    service = start_service(PYTHON, "sleep")
    done = ncore("ps")
    lines = done.stdout.splitlines()
    assert lines[0].split()[:3] == ["PID", "USER", "PYTHON"]
    mine = [line for line in lines if line.split()[0] == str(service.pid)]
    assert len(mine) == 1 and mine[0].endswith("service.py sleep")
    assert "\x1b[" not in done.stdout


def test_ps_names_the_tracer_of_a_traced_process(start_service, seized):
    """A process held by another tracer shows who holds it."""
    service = start_service(PYTHON, "busy")
    tracer = seized(service.pid)
    assert ps_rows()[service.pid]["main_thread"].startswith(f"traced by {tracer}")


def test_pypanic_mark_follows_the_process(start_service):
    """The mark appears with pypanic's import (one, whatever the copies) and is what ps reads."""
    service = start_service(NEWEST_HOST, "busy")
    maps = Path(f"/proc/{service.pid}/maps").read_text()
    assert maps.count("/memfd:pypanic (deleted)") == 1


def test_doctor_without_a_pid_checks_this_machine():
    """Rights and every method, exit 0 here."""
    code, findings = doctor()
    assert code == 0
    assert findings["ncore's rights"]["ok"] is True
    assert {"method remote-exec", "method ptrace", "method gdb"} <= findings.keys()


def test_doctor_reads_a_running_target_without_touching_it(start_service):
    """A busy 3.13 target with pypanic: ptrace would be used, pypanic loaded, exit 0."""
    service = start_service(NEWEST_HOST, "busy")
    code, findings = doctor(str(service.pid))
    assert code == 0
    assert findings["method"]["detail"] == "a dump would use ptrace"
    assert "needs CPython 3.14" in findings["method remote-exec"]["detail"]
    assert findings["pypanic"]["detail"].startswith("pypanic 0.1.0 from ")
    assert findings["dump directory"]["ok"] is True
    assert findings["main thread"]["detail"].startswith(("running", "waiting for the GIL"))
    service.assert_left_running()
    assert not service.space.dumps()


def test_doctor_sees_remote_exec_and_its_refusal(start_service):
    """3.14 uses remote exec; with remote debugging disabled it says so and ptrace takes over."""
    REMOTE_EXEC.require()
    open_target = start_service(REMOTE_EXEC, "busy")
    closed = start_service(REMOTE_EXEC, "busy", prefix=("env", "PYTHON_DISABLE_REMOTE_DEBUG=1"))
    assert doctor(str(open_target.pid))[1]["method"]["detail"] == "a dump would use remote-exec"
    code, findings = doctor(str(closed.pid))
    assert code == 0
    assert "disabled" in findings["method remote-exec"]["detail"]
    assert findings["method"]["detail"] == "a dump would use ptrace"
    assert "in root " in findings["process"]["detail"]


def test_doctor_failures_exit_6_with_the_fix(start_service, seized):
    """No such process, a method that cannot serve, a traced target: FAIL lines, exit 6."""
    code, findings = doctor("999999999")
    assert code == 6 and "there is no process" in findings["process"]["detail"]
    service = start_service(PYTHON, "busy")
    code, findings = doctor("--method", "remote-exec", str(service.pid))
    assert code == 6 and findings["method"]["ok"] is False
    tracer = seized(service.pid)
    code, findings = doctor(str(service.pid))
    assert code == 6 and f"already traced by process {tracer}" in findings["process"]["detail"]


def test_doctor_as_another_user_names_the_fix(start_service):
    """Run as nobody against root's process: not allowed, and the fix says to be root."""
    if os.geteuid() != 0:
        missing("running ncore as another user needs root")
    service = start_service(PYTHON, "busy")
    code, findings = doctor(str(service.pid), user="65534")
    assert code == 6
    assert findings["ncore's rights"]["ok"] is None
    assert "or as root" in findings["process"]["fix"]
    service.assert_left_running()


def test_doctor_probe_asks_the_process_and_takes_no_dump(start_service):
    """--probe runs through the dump's method, learns pypanic is imported, writes nothing."""
    service = start_service(PYTHON, "sleep")
    code, findings = doctor("--probe", str(service.pid))
    assert code == 0, findings
    assert "pypanic is imported there" in findings["probe"]["detail"]
    assert findings["dump directory (asked)"]["ok"] is True
    service.assert_left_running()
    assert not service.space.dumps()
    bare = start_service(PYTHON, "sleep", with_pypanic=False)
    assert "neither imported nor importable" in doctor("--probe", str(bare.pid))[1]["probe"]["detail"]


def test_several_targets_each_get_a_result_line(start_service):
    """Three targets and a missing pid: a line each, the dumps written, exit 3 (the missing one)."""
    services = [start_service(PYTHON, "busy"), start_service(STATIC, "select"), start_service(NEWEST_HOST, "event")]
    pids = [str(s.pid) for s in services]
    done = ncore("--keep-running", *pids, "999999999")
    assert done.returncode == 3, done.stdout + done.stderr
    lines = dict(line.split(": ", 1) for line in done.stdout.splitlines())
    assert lines.keys() == {*pids, "999999999"}
    assert lines["999999999"].startswith("failed: there is no process")
    for service in services:
        assert load_dump(lines[str(service.pid)])["panic.reason"] == "snapshot"
        service.assert_left_running()


def test_several_targets_as_json_lines(start_service):
    """--json: one record per line, as a single dump prints it."""
    services = [start_service(PYTHON, "busy"), start_service(PYTHON, "sleep")]
    done = ncore("--json", "--keep-running", *(str(s.pid) for s in services))
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert sorted(r["pid"] for r in records) == sorted(s.pid for s in services)
    assert {r["status"] for r in records} == {"dumped"}


def test_name_picks_the_matching_python_processes(start_service):
    """--name matches the command line; a pattern nothing matches is exit 3."""
    wanted = start_service(PYTHON, "accept")
    other = start_service(PYTHON, "sleep")
    done = ncore("--keep-running", "--json", "--name", r"service\.py accept$")
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["pid"] for r in records if r["pid"] in (wanted.pid, other.pid)] == [wanted.pid]
    assert not other.space.dumps()
    missing_one = ncore("--name", "no-such-service-anywhere")
    assert missing_one.returncode == 3
    assert "no Python process matches" in missing_one.stderr


def test_live_progress_on_a_terminal(processes, workspace_for):
    """On a terminal, where each target is shows while its slow dump runs; then its result line."""
    space = workspace_for(PYTHON)
    targets = [processes.start(space.command("timed_wait.py", "sleep", "60", "slow-dump")) for _ in range(2)]
    for target in targets:
        wait_for_ready(target)
    child = pexpect.spawn(
        sys.executable,
        ["-m", "ncore", "--keep-running", *(str(t.pid) for t in targets)],
        dimensions=(30, 120),
        env={**os.environ, "TERM": "xterm-256color"},
        encoding="utf-8",
        timeout=60,
    )
    try:
        child.expect("getting in")
        for _ in targets:
            child.expect(r"(\d+): (\S+ncore\.\d+)")
            assert isinstance(child.match, re.Match) and Path(child.match.group(2)).exists()
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    for target in targets:
        assert_left_running(target.pid)


def test_bash_completes_commands_and_pids(start_service):
    """bash, with ncore's completion script loaded, completes a command and a pid."""
    service = start_service(PYTHON, "sleep")
    bin_dir = Path(sys.executable).parent

    def complete(*words: str) -> list[str]:
        script = (
            'eval "$(_NCORE_COMPLETE=bash_source ncore)"\n'
            f"COMP_WORDS=({' '.join(words)}); COMP_CWORD={len(words) - 1}\n"
            '_ncore_completion ncore 2>/dev/null; printf "%s\\n" "${COMPREPLY[@]}"\n'
        )
        env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
        done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=60, check=False)
        return done.stdout.split()

    assert complete("ncore", "d") == ["doctor", "dump"]
    assert str(service.pid) in complete("ncore", "doctor", str(service.pid)[:-1])


@pytest.mark.parametrize("command", [[], ["dump"], ["show"], ["ps"], ["doctor"]])
def test_every_help_has_an_example(command):
    """`--help` of the group and of every command shows an example."""
    done = ncore(*command, "--help")
    assert done.returncode == 0
    assert "Example" in done.stdout


def test_completion_script_for_each_shell():
    """click's completion scripts come out for bash, zsh and fish."""
    for shell, marker in (("bash", "complete -o"), ("zsh", "compdef"), ("fish", "complete --no-files")):
        done = subprocess.run(
            [str(ROOT / ".venv" / "bin" / "ncore")],
            env={**os.environ, "_NCORE_COMPLETE": f"{shell}_source"},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert marker in done.stdout, (shell, done.stdout, done.stderr)


def test_the_copy_ncore_carries_leaves_no_mark(start_service):
    """A snapshot of a process without pypanic does not make ps count pypanic as loaded."""
    service = start_service(PYTHON, "sleep", with_pypanic=False)
    done = ncore("--json", "--keep-running", str(service.pid))
    assert json.loads(done.stdout)["pypanic"] == "carried", done.stdout + done.stderr
    assert ps_rows()[service.pid]["pypanic"] == "no"


def test_ps_on_a_terminal_keeps_brackets_in_command_lines(processes, workspace_for):
    """rich markup in a command line ([app], [/x]) is shown as text, not read as markup."""
    space = workspace_for(PYTHON)
    target = processes.start([*space.command("service.py", "sleep"), "[app]", "[/x]"])
    wait_for_ready(target)
    env = {name: value for name, value in os.environ.items() if name not in ("COLUMNS", "LINES")}  # the pty's size
    child = pexpect.spawn(
        sys.executable, ["-m", "ncore", "ps"], dimensions=(30, 250), env=env, encoding="utf-8", timeout=60
    )
    try:
        child.expect(pexpect.EOF)
        assert isinstance(child.before, str)
        screen = child.before
    finally:
        child.close(force=True)
    assert child.exitstatus == 0, screen
    assert "[app] [/x]" in re.sub(r"\x1b\[[0-9;]*m", "", screen)


def test_ps_that_finds_nothing_says_why(tmp_path):
    """A user who can see no Python process of its own: a line on stderr naming the uid and
    the way to see the others, not an empty table."""
    done = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m", "ncore", "ps"],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert done.stderr == (
        "ncore: no Python process found of uid 65534; other users' processes show only to root (sudo ncore ps)\n"
    )
