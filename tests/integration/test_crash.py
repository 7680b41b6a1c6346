"""Every way a real process panics or dumps, on every supported interpreter."""

from __future__ import annotations

import json
import os
import re
import resource
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


def limit_address_space() -> None:
    """At most 4 GiB of address space: a runaway serializer fails instead of taking the machine."""
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))


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
        check_panic_log(result.stderr, "panic due to uncaught exception", "TypeError", f"{space.work_inside}/{name}")
        assert data["panic.reason"] == "panic due to uncaught exception in thread 'worker-1'"
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
        name, data = only_dump(space)
        check_panic_log(result.stderr, "panic due to uncaught exception", exception, f"{space.work_inside}/{name}")
        assert data["panic.reason"].startswith("panic due to uncaught exception in asyncio")
        assert data["panic.exception"]["type"] == exception

    def test_task_failed_and_kept_until_exit_is_left_to_asyncio(self, processes, workspace_for, interpreter):
        """A failed task still referenced when the program ends is only found while the
        interpreter shuts down, too late to dump (CPython itself logs it and exits 0): the
        hook then stands aside instead of failing in a half torn-down interpreter."""
        space, result = crash(processes, workspace_for, interpreter, "asyncio-kept")
        assert result.stdout.splitlines()[-1] == "finished"
        assert "Exception in default exception handler" not in result.stderr, result.stderr
        assert not re.search(STAMP, result.stderr), "no panic, no dump"
        assert space.dumps() == []

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

    def test_keyboard_interrupt_in_a_thread_does_not_panic(self, processes, workspace_for, interpreter):
        """A thread that ends with KeyboardInterrupt is reported as threading reports it,
        and the program goes on, unless panic_on_keyboard_interrupt is set."""
        space, result = crash(processes, workspace_for, interpreter, "thread-keyboard")
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[-1] == "survived"
        assert "KeyboardInterrupt" in result.stderr
        assert space.dumps() == []

    def test_keyboard_interrupt_in_a_thread_panics_when_asked(self, processes, workspace_for, interpreter):
        space, result = crash(processes, workspace_for, interpreter, "thread-keyboard-panic")
        assert result.returncode == 1
        _, data = only_dump(space)
        assert data["panic.exception"]["type"] == "KeyboardInterrupt"
        assert data["panic.reason"] == "panic due to uncaught exception in thread 'interrupted'"

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

    def test_hostile_containers_and_classes_are_read_without_their_code(self, processes, workspace_for, interpreter):
        """A dict subclass whose items() raises or never returns and objects whose
        __class__ raises or never returns: the serializer runs none of that code, and the
        dump is written with every key (the run's timeout is the hang guard)."""
        space, result = crash(processes, workspace_for, interpreter, "hostile-containers")
        assert result.returncode == 1, result.stderr
        assert "error during panic" not in result.stderr
        _, data = only_dump(space)
        assert data["items-raise"] == {"a": 1}
        assert data["items-endless"] == {"b": 2}
        assert data["class-endless"]["$type"] == "__main__.EndlessClass"
        assert data["class-raise"]["$type"] == "__main__.RaisingClass"
        assert data["plain"] == "still written"
        frame = next(f for f in data["panic.exception"]["frames"] if f["function"] == "main")
        endless, items = frame["locals"]["local_hostile"]
        assert endless["$type"] == "__main__.EndlessClass" and items == {"c": 3}

    def test_shared_parts_are_bounded(self, processes, workspace_for, interpreter):
        """A list of 40 levels of shared halves (2**40 leaves written out) is written up to
        the size budget within the time budget; the keys after it are written too (the
        run's timeout is the hang guard, the address-space limit a guard for the machine)."""
        space = workspace_for(interpreter)
        command = space.command("crash.py", "shared", env={"PYPANIC_MAX_SECONDS": "2", "PYPANIC_MAX_BYTES": "3000000"})
        result = processes.run(command, timeout=60, preexec_fn=limit_address_space)
        assert result.returncode == 1, result.stderr
        _, data = only_dump(space)
        assert data["after"] == "still written"
        assert "$cut" in json.dumps(data["shared"])
        assert any(cut["path"].startswith("shared") for cut in data["dbg.cuts"]["first"])
        check_original_keys(data, data["init.process.pid"], ["mode", "shared", "after"])

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


@pytest.mark.parametrize(
    ("max_bytes", "blob", "reason"),
    [(1_950_000, 1_948_500, "string"), (200_000, 199_000, "size")],
    ids=["max_string", "max_bytes"],
)
def test_a_big_registered_value_never_crowds_out_the_fixed_keys(processes, workspace_for, max_bytes, blob, reason):
    """node-panic's keys and pypanic's own are written whole; the registered string gets
    what is left of the budget and max_string, with a marker and a dbg.cuts entry."""
    env = {"PYPANIC_MAX_BYTES": str(max_bytes), "PYPANIC_TEST_BLOB": str(blob)}
    space, result = crash(processes, workspace_for, ALL[0], "blob", env=env)
    assert result.returncode == 1, result.stderr
    _, data = only_dump(space)
    check_original_keys(data, data["init.process.pid"], ["mode", "blob"])
    fixed = {k: v for k, v in data.items() if k not in ("mode", "blob", "dbg.cuts")}
    assert "$cut" not in json.dumps(fixed)
    assert data["panic.error"].startswith("EXCEPTION: pypanic.Panic: a big string registered")
    assert data["blob"].startswith("x" * 1000) and data["blob"].endswith(" characters cut]")
    [cut] = data["dbg.cuts"]["first"]
    assert (cut["path"], cut["reason"]) == ("blob", reason)
    assert data["dbg.cuts"]["count"] == 1
    assert space.dumps()[0].stat().st_size <= max_bytes


def test_pid_of_dump_matches_process(processes, workspace_for):
    space = workspace_for(ALL[0])
    process = processes.start(space.command("crash.py", "explicit"))
    process.communicate(timeout=60)
    assert [p.name for p in space.dumps()] == [f"ncore.{process.pid}"]
    assert os.path.exists(space.dumps()[0])
