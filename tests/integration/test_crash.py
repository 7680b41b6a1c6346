"""Every way a real process panics or dumps, on every supported interpreter."""

from __future__ import annotations

import json
import os
import re
import signal
import stat

import pytest

from ..interpreters import ALL, Interpreter

ORIGINAL_HEAD = [
    "dbg.format-version",
    "init.process.argv",
    "init.process.pid",
    "init.process.cwd",
    "init.process.env",
    "init.process.version",
    "init.process.platform",
    "init.time",
    "init.time-ms",
]
ORIGINAL_TAIL = ["panic.error", "panic.time", "panic.time-ms", "panic.memusage"]
STAMP = r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} UTC\]"
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def crash(processes, workspace_for, interpreter: Interpreter, mode: str, env=None):
    space = workspace_for(interpreter)
    result = processes.run(space.command("crash.py", mode, env=env), timeout=60)
    return space, result


def only_dump(space) -> tuple[str, dict]:
    dumps = space.dumps()
    assert len(dumps) == 1, f"expected one dump, found {[p.name for p in dumps]}"
    path = dumps[0]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    return path.name, json.loads(path.read_text(), parse_constant=pytest.fail)


def check_panic_log(stderr: str, reason: str, exception: str, dump_path: str) -> None:
    lines = [line for line in stderr.splitlines() if re.match(STAMP, line)]
    assert len(lines) == 3, stderr
    assert re.match(rf"{STAMP} CRIT   PANIC: {re.escape(reason)}: EXCEPTION: {re.escape(exception)}", lines[0])
    assert re.fullmatch(rf"{STAMP} CRIT   writing core dump to {re.escape(dump_path)}", lines[1])
    assert re.fullmatch(rf"{STAMP} CRIT   finished writing core dump", lines[2])


def check_original_keys(data: dict, pid: int, registered: list[str]) -> None:
    keys = list(data)
    assert keys[: len(ORIGINAL_HEAD)] == ORIGINAL_HEAD
    after_head = keys[len(ORIGINAL_HEAD) : len(ORIGINAL_HEAD) + len(registered)]
    assert after_head == registered
    tail_start = len(ORIGINAL_HEAD) + len(registered)
    assert keys[tail_start : tail_start + len(ORIGINAL_TAIL)] == ORIGINAL_TAIL
    assert data["dbg.format-version"] == "0.2"
    assert data["init.process.pid"] == pid
    assert data["init.process.platform"] == "linux"
    assert ISO.match(data["init.time"]) and ISO.match(data["panic.time"])
    assert data["init.time-ms"] <= data["panic.time-ms"]
    assert set(data["panic.memusage"]) == {"rss", "vsize", "heapTotal", "heapUsed"}
    assert all(isinstance(v, int) and v > 0 for v in data["panic.memusage"].values())


@pytest.mark.parametrize("interpreter", ALL, ids=lambda i: i.name)
class TestPanics:
    def test_uncaught_exception_in_main_thread(self, processes, workspace_for, interpreter):
        space, result = crash(processes, workspace_for, interpreter, "main")
        assert result.returncode == 1
        name, data = only_dump(space)
        pid = int(name.split(".")[1])
        check_panic_log(result.stderr, "panic due to uncaught exception", "TypeError", f"{space.work_inside}/{name}")
        check_original_keys(data, pid, ["mode", "func1.arg", "func2.arg"])
        assert (data["func1.arg"], data["func2.arg"]) == (10, 20)
        assert data["init.process.argv"][1:] == [f"{space.targets}/crash.py", "main"]
        assert data["panic.error"].startswith("EXCEPTION: TypeError: 'NoneType' object has no attribute")
        assert "Traceback (most recent call last):" in data["panic.error"]
        frames = data["panic.exception"]["frames"]
        assert [f["function"].split(".")[-1] for f in frames[-2:]] == ["func1", "func2"]
        assert frames[-1]["locals"] == {"arg2": 20}
        assert frames[-1]["source"] == "raise TypeError(\"'NoneType' object has no attribute 'nonexistentMethod'\")"
        main = [t for t in data["panic.threads"] if t["main"]]
        assert len(main) == 1 and main[0]["name"] == "MainThread" and main[0]["native_id"] == pid

    def test_uncaught_exception_in_a_thread(self, processes, workspace_for, interpreter):
        space, result = crash(processes, workspace_for, interpreter, "thread")
        assert result.returncode == 1
        name, data = only_dump(space)
        check_panic_log(
            result.stderr,
            "panic due to uncaught exception in thread 'worker-1'",
            "TypeError",
            f"{space.work_inside}/{name}",
        )
        current = [t for t in data["panic.threads"] if t["current"]]
        assert current[0]["name"] == "worker-1" and not current[0]["main"]
        main = next(t for t in data["panic.threads"] if t["main"])
        assert any(f["function"] == "main" for f in main["frames"])

    def test_panic_exits_despite_non_daemon_thread(self, processes, workspace_for, interpreter):
        space, result = crash(processes, workspace_for, interpreter, "nondaemon")
        assert result.returncode == 1
        _, data = only_dump(space)
        assert "sleeper" in [t["name"] for t in data["panic.threads"]]

    @pytest.mark.parametrize(
        ("mode", "exception"), [("asyncio-task", "LookupError"), ("asyncio-callback", "TypeError")]
    )
    def test_uncaught_exception_in_asyncio(self, processes, workspace_for, interpreter, mode, exception):
        space, result = crash(processes, workspace_for, interpreter, mode)
        assert result.returncode == 1, result.stderr
        _, data = only_dump(space)
        assert data["panic.reason"].startswith("panic due to uncaught exception in asyncio")
        assert data["panic.exception"]["type"] == exception

    def test_explicit_panic(self, processes, workspace_for, interpreter):
        space, result = crash(processes, workspace_for, interpreter, "explicit")
        assert result.returncode == 1
        name, data = only_dump(space)
        check_panic_log(
            result.stderr, "explicit panic", "pypanic.Panic: explicit request", f"{space.work_inside}/{name}"
        )
        assert data["panic.error"].startswith("EXCEPTION: pypanic.Panic: explicit request\n")
        assert data["panic.exception"]["frames"][-1]["function"] == "main"
        current = next(t for t in data["panic.threads"] if t["current"])
        assert current["frames"][-1]["function"] == "main", "pypanic's own frames are left out"

    def test_explicit_panic_with_an_exception(self, processes, workspace_for, interpreter):
        space, result = crash(processes, workspace_for, interpreter, "explicit-err")
        assert result.returncode == 1
        _, data = only_dump(space)
        assert data["panic.reason"] == "caught and panicked"
        assert data["panic.exception"]["type"] == "TypeError"

    def test_dump_keeps_running_and_never_overwrites(self, processes, workspace_for, interpreter):
        space, result = crash(processes, workspace_for, interpreter, "dump")
        assert result.returncode == 0
        assert result.stdout.splitlines()[-1] == "still running"
        names = [p.name for p in space.dumps()]
        pid = names[0].split(".")[1]
        assert names == [f"ncore.{pid}", f"ncore.{pid}.1"]
        reported = [line.split(" ", 1)[1] for line in result.stdout.splitlines() if line.startswith("dumped ")]
        assert reported == [f"{space.work_inside}/{n}" for n in names]
        assert re.search(rf"{STAMP} INFO   DUMP: snapshot: EXCEPTION: pypanic.Panic: snapshot please", result.stderr)
        assert not any(space.host.glob("work/.ncore.*")), "no temporary file is left behind"

    def test_keyboard_interrupt_does_not_panic(self, processes, workspace_for, interpreter):
        space, result = crash(processes, workspace_for, interpreter, "keyboard")
        assert result.returncode in (-signal.SIGINT, 128 + signal.SIGINT)
        assert "KeyboardInterrupt" in result.stderr
        assert space.dumps() == []

    def test_keyboard_interrupt_panics_when_asked(self, processes, workspace_for, interpreter):
        space, result = crash(processes, workspace_for, interpreter, "keyboard-panic")
        assert result.returncode == 1
        _, data = only_dump(space)
        assert data["panic.exception"]["type"] == "KeyboardInterrupt"

    def test_concurrent_panics_give_one_dump(self, processes, workspace_for, interpreter):
        space, result = crash(processes, workspace_for, interpreter, "concurrent")
        assert result.returncode == 1
        _, data = only_dump(space)
        assert result.stderr.count("CRIT   PANIC:") == 1
        assert result.stderr.count("finished writing core dump") == 1
        assert re.fullmatch(r"explicit panic", data["panic.reason"])
        assert data["panic.exception"]["message"].startswith("thread ")

    def test_hostile_objects_and_nested_panic(self, processes, workspace_for, interpreter):
        space, result = crash(processes, workspace_for, interpreter, "hostile")
        assert result.returncode == 1
        _, data = only_dump(space)
        hostile, panicky, nan, a_set = data["hostile"]
        assert hostile["repr"] == {"$error": "ValueError: hostile repr"}
        assert panicky["repr"]["$error"].startswith("pypanic.NestedPanic")
        assert nan == "NaN"
        assert a_set == {"$type": "set", "items": [1, 2]}
        assert data["cycle"] == {"name": "cycle", "self": {"$cycle": "dict"}}
        assert result.stderr.count("CRIT   PANIC:") == 1

    def test_fork_child_dumps_its_own_pid(self, processes, workspace_for, interpreter):
        space, result = crash(processes, workspace_for, interpreter, "fork")
        assert result.returncode == 0
        found = re.search(r"child (\d+) exited 1", result.stdout)
        assert found, result.stdout
        child = int(found.group(1))
        name, data = only_dump(space)
        assert name == f"ncore.{child}"
        assert data["init.process.pid"] == child == data["panic.process"]["pid"]

    def test_exception_chain_and_notes(self, processes, workspace_for, interpreter):
        space, result = crash(processes, workspace_for, interpreter, "chain")
        assert result.returncode == 1
        _, data = only_dump(space)
        exc = data["panic.exception"]
        assert exc["type"] == "ValueError" and exc["notes"] == ["a note about the failure"]
        assert exc["cause"]["type"] == "KeyError"
        assert exc["context"] == {"$seen": "KeyError", "detail": "described above"}
        assert exc["suppress_context"] is True
        assert "The above exception was the direct cause" in data["panic.error"]
        assert "a note about the failure" in data["panic.error"]


def test_secrets_in_the_environment_are_redacted(processes, workspace_for):
    interpreter = ALL[0]
    env = {"API_TOKEN": "t0k3n", "DATABASE_URL": "postgres://app:s3cret@db/app", "PLAIN": "visible"}
    space, _ = crash(processes, workspace_for, interpreter, "main", env=env)
    _, data = only_dump(space)
    environment = data["init.process.env"]
    assert environment["API_TOKEN"] == "<redacted by pypanic>"
    assert environment["DATABASE_URL"] == "postgres://app:<redacted by pypanic>@db/app"
    assert environment["PLAIN"] == "visible"
    assert "t0k3n" not in space.dumps()[0].read_text() and "s3cret" not in space.dumps()[0].read_text()


def test_redaction_can_be_turned_off(processes, workspace_for):
    space, _ = crash(processes, workspace_for, ALL[0], "main", env={"API_TOKEN": "t0k3n", "PYPANIC_REDACT": "0"})
    _, data = only_dump(space)
    assert data["init.process.env"]["API_TOKEN"] == "t0k3n"


def test_exit_status_and_directory_from_the_environment(processes, workspace_for):
    interpreter = ALL[0]
    space = workspace_for(interpreter)
    elsewhere = space.host / "dumps"
    elsewhere.mkdir()
    command = space.command("crash.py", "main", env={"PYPANIC_EXIT_STATUS": "42", "PYPANIC_DIR": str(elsewhere)})
    result = processes.run(command)
    assert result.returncode == 42
    assert [p.name.split(".")[0] for p in elsewhere.iterdir()] == ["ncore"]
    assert space.dumps() == []


def test_abort_leaves_an_os_core_too(processes, workspace_for):
    interpreter = ALL[0]
    space = workspace_for(interpreter)
    result = processes.run(space.command("crash.py", "main", env={"PYPANIC_ABORT": "1"}))
    assert result.returncode == -signal.SIGABRT
    assert len(space.dumps()) == 1


def test_bad_environment_values_are_reported_not_fatal(processes, workspace_for):
    space, result = crash(processes, workspace_for, ALL[0], "main", env={"PYPANIC_MAX_BYTES": "lots"})
    assert result.returncode == 1
    _, data = only_dump(space)
    assert data["dbg.warnings"] == ["ignored PYPANIC_MAX_BYTES='lots': invalid literal for int() with base 10: 'lots'"]


def test_pid_of_dump_matches_process(processes, workspace_for):
    space = workspace_for(ALL[0])
    process = processes.start(space.command("crash.py", "explicit"))
    process.communicate(timeout=60)
    assert [p.name for p in space.dumps()] == [f"ncore.{process.pid}"]
    assert os.path.exists(space.dumps()[0])
