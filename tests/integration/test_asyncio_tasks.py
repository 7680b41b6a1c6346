"""panic.asyncio on real programs, dumped from outside by ncore on every interpreter: each
task with its await chain and what it waits on, the tree of who awaits whom, a loop in
another thread, a loop hogged by a blocking call (the running callback), hostile tasks,
100,000 tasks, a crash in a callback, a read from outside, and a real uvicorn (with and
without uvloop)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ..interpreters import ALL, HOST
from .conftest import load_dump, run_ncore, wait_for_ready

TARGETS = Path(__file__).resolve().parent.parent / "targets"


def start_tasks(processes, workspace_for, interpreter, kind, env=None):
    interpreter.require()
    space = workspace_for(interpreter)
    with open(space.host / "stderr", "w") as stderr:
        process = processes.start(space.command("tasks.py", kind, env=env), stderr=stderr)
    wait_for_ready(process)
    return process, space


def snapshot(pid: int, *args: str) -> dict[str, Any]:
    run = run_ncore("--keep-running", *args, str(pid))
    assert run.returncode == 0, run.stdout + run.stderr
    return load_dump(run.record["path"])


def tasks_by_name(loop: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in loop["tasks"] if "name" in t}


def functions(task: dict[str, Any]) -> list[str]:
    return [f["function"].rsplit(".", 1)[-1] for f in task["frames"]]


def version(interpreter) -> tuple[int, ...]:
    return tuple(int(part) for part in interpreter.name.rsplit("-", 1)[1].split("."))


def check_waiting_tasks(loop: dict[str, Any], interpreter) -> dict[str, dict[str, Any]]:
    """The tasks of tasks.py, each with its chain, what it waits on, and who awaits whom."""
    tasks = tasks_by_name(loop)
    sleeper = tasks["sleeper"]
    assert sleeper["state"] == "pending" and sleeper["coroutine"] == "sleeper"
    assert functions(sleeper) == ["sleeper", "sleep"]
    assert sleeper["frames"][0]["locals"]["order_id"] == 7
    assert sleeper["awaits"]["kind"] == "sleep" and sleeper["awaits"]["delay"] == 3600
    assert 3000 < sleeper["awaits"]["due_in_seconds"] <= 3600
    assert functions(tasks["consumer"])[-1] == "get"
    assert tasks["consumer"]["awaits"] == {"kind": "queue", "call": tasks["consumer"]["awaits"]["call"],
                                           "queue": "asyncio.queues.Queue", "size": 0, "maxsize": 0}  # fmt: skip
    assert tasks["locker"]["awaits"]["kind"] == "lock" and tasks["locker"]["awaits"]["locked"] is True
    gathered = tasks["gatherer"]["awaits"]
    assert gathered["kind"] == "gather" and gathered["count"] == 2
    children = [t for t in loop["tasks"] if t.get("id") in gathered["tasks"]]
    assert [functions(c) for c in children] == [["child", "sleep"]] * 2
    assert all(c["awaited_by"] == [tasks["gatherer"]["id"]] for c in children)
    partly = tasks["partly-failed"]["awaits"]
    failed = [t for t in loop["tasks"] if t.get("id") in partly["tasks"] and t["state"] == "failed"]
    assert len(failed) == 1 and failed[0]["exception"] == {"type": "ValueError", "message": "bad order 42"}
    assert failed[0]["awaited_by"] == [tasks["partly-failed"]["id"]]
    if version(interpreter) >= (3, 11):
        group = tasks["grouped"]["awaits"]
        assert group["kind"] == "taskgroup" and group["tasks"] == [tasks["tg-child"]["id"]]
        assert tasks["tg-child"]["awaited_by"] == [tasks["grouped"]["id"]]
    return tasks


@pytest.mark.parametrize("interpreter", ALL, ids=lambda i: i.name)
def test_every_task_with_where_it_awaits(processes, workspace_for, interpreter):
    process, _ = start_tasks(processes, workspace_for, interpreter, "idle")
    dump = snapshot(process.pid)
    keys = list(dump)
    assert keys.index("panic.asyncio") == keys.index("panic.threads") + 1
    (loop,) = dump["panic.asyncio"]["loops"]
    assert loop["thread"]["name"] == "MainThread" and loop["thread"]["native_id"] == process.pid
    assert loop["running"] is True and loop["closed"] is False
    assert loop["type"] == "asyncio.unix_events._UnixSelectorEventLoop"
    check_waiting_tasks(loop, interpreter)
    main = next(t for t in loop["tasks"] if t["coroutine"] == "main")
    assert main["awaits"]["kind"] == "sleep"
    assert loop["task_count"] == len([t for t in loop["tasks"] if t["state"] == "pending"])
    assert process.poll() is None
    shown = subprocess.run([sys.executable, "-m", "ncore", "show", *dump_path(process)], capture_output=True,
                           text=True, check=True).stdout  # fmt: skip
    assert "asyncio (1 event loop)" in shown
    assert "waits on gather of " in shown and "|" in shown
    assert re.search(r"sleeper pending  sleeper \(tasks\.py:\d+\) > sleep \(tasks\.py:\d+\)", shown), shown


def dump_path(process) -> list[str]:
    found = sorted(Path(f"/proc/{process.pid}/cwd").resolve().glob("ncore.*"))
    return [str(found[-1])]


@pytest.mark.parametrize("interpreter", [HOST[0], HOST[3], *ALL[-2:]], ids=lambda i: i.name)
def test_a_loop_in_another_thread_and_a_hog(processes, workspace_for, interpreter):
    """A loop in a thread of its own is found and named; a loop blocked by a task's
    time.sleep shows that task running and the callback it is in, with where it is now."""
    process, _ = start_tasks(processes, workspace_for, interpreter, "thread")
    (loop,) = snapshot(process.pid)["panic.asyncio"]["loops"]
    assert loop["thread"]["name"] == "loop-thread"
    check_waiting_tasks(loop, interpreter)

    process, _ = start_tasks(processes, workspace_for, interpreter, "hog")
    (loop,) = snapshot(process.pid)["panic.asyncio"]["loops"]
    hog = tasks_by_name(loop)["hog"]
    assert hog["running"] is True and loop["current_task"] == hog["id"]
    assert loop["tasks"][0]["name"] == "hog"
    assert hog["frames"][-1]["locals"]["hog_marker"] == "hogging"
    callback = loop["running_callback"]
    assert callback["task"] == hog["id"]
    assert callback["now_in"]["function"] == "hog" and callback["now_in"]["file"].endswith("tasks.py")
    main = tasks_by_name(loop)["Task-1"]
    assert main["awaits"] == {"kind": "task", "task": hog["id"], "name": "hog"}
    assert hog["awaited_by"] == [main["id"]]


def test_hostile_tasks_are_bounded(processes, workspace_for):
    """Tasks whose get_name and state never return and whose repr raises, of a class that
    claims asyncio's module: the dump is written, with every task's chain; the names and
    states it could not get are null."""
    process, _ = start_tasks(processes, workspace_for, HOST[3], "hostile")
    started = time.monotonic()
    (loop,) = snapshot(process.pid)["panic.asyncio"]["loops"]
    assert time.monotonic() - started < 30
    coroutines = sorted(t.get("coroutine") or "" for t in loop["tasks"])
    assert {"sleeper", "consumer", "locker", "gatherer", "awaits_awkward"} <= set(coroutines)
    awkward = next(t for t in loop["tasks"] if t.get("coroutine") == "awaits_awkward")
    assert awkward["name"] is None and awkward["state"] is None
    assert functions(awkward)[0] == "awaits_awkward"


@pytest.mark.parametrize("interpreter", [HOST[0], HOST[3], ALL[-2]], ids=lambda i: i.name)
def test_a_hundred_thousand_tasks_are_counted_and_cut(processes, workspace_for, interpreter):
    process, _ = start_tasks(processes, workspace_for, interpreter, "many")
    dump = snapshot(process.pid)
    (loop,) = dump["panic.asyncio"]["loops"]
    assert loop["task_count"] > 100_000
    cut = loop["tasks"][-1]
    assert cut["$cut"] == "tasks"
    assert cut["detail"].startswith(f"{loop['task_count'] - len(loop['tasks']) + 1} of {loop['task_count']} tasks")
    assert len(loop["tasks"]) <= 1001
    assert os.path.getsize(dump_path(process)[0]) < 16 << 20
    assert {"sleeper", "consumer", "gatherer"} <= set(tasks_by_name(loop))


def test_a_crash_in_a_callback_has_the_tasks(processes, workspace_for):
    process, space = start_tasks(processes, workspace_for, HOST[3], "crash")
    assert process.wait(timeout=60) == 1
    (path,) = space.dumps()
    dump = load_dump(str(path))
    assert dump["panic.exception"]["type"] == "ZeroDivisionError"
    (loop,) = dump["panic.asyncio"]["loops"]
    assert loop["running_callback"]["callback"].endswith("<lambda>")
    check_waiting_tasks(loop, HOST[3])


def test_a_read_from_outside_names_the_loop_and_its_callback(processes, workspace_for):
    process, _ = start_tasks(processes, workspace_for, HOST[3], "hog")
    dump = snapshot(process.pid, "--read-only")
    (loop,) = dump["panic.asyncio"]["loops"]
    assert loop["thread"]["native_id"] == process.pid
    assert "a read from outside cannot see it" in loop["tasks"]["$unavailable"]
    assert loop["running_callback"]["now_in"]["function"] == "hog"
    assert loop["running_callback"]["handle"]["$repr"].startswith("<Handle at 0x")  # pystack's repr of an object


def get(sock: Path, path: str, timeout: float = 60) -> None:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(str(sock))
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
        try:
            s.recv(65536)
        except (TimeoutError, OSError):
            pass


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_a_uvicorn_app_with_a_sleeping_request_and_a_hogging_one(processes, tmp_path, loop_kind):
    """A real uvicorn from PyPI: one request awaits asyncio.sleep, then another blocks the
    loop in time.sleep; the dump shows the first waiting in the app and the second as the
    running task (with asyncio's loop, also as the running callback)."""
    sock = tmp_path / "u.sock"
    argv = [sys.executable, "-m", "uvicorn", "--uds", str(sock), "--loop", loop_kind, "--app-dir", str(TARGETS),
            "web_apps:asgi"]  # fmt: skip
    log = (tmp_path / "uvicorn.log").open("w")
    server = processes.start(argv, stdout=log, stderr=log, cwd=tmp_path)
    deadline = time.monotonic() + 60
    while not sock.exists():
        assert server.poll() is None and time.monotonic() < deadline, (tmp_path / "uvicorn.log").read_text()
        time.sleep(0.1)
    threading.Thread(target=get, args=(sock, "/sleep"), daemon=True).start()
    time.sleep(0.5)
    threading.Thread(target=get, args=(sock, "/stuck"), daemon=True).start()
    time.sleep(1)  # the hog blocks the loop at once
    dump = snapshot(server.pid)
    (loop,) = dump["panic.asyncio"]["loops"]
    assert loop["type"].startswith("uvloop" if loop_kind == "uvloop" else "asyncio")
    running = [t for t in loop["tasks"] if t.get("running")]
    assert len(running) == 1 and functions(running[0])[-1] == "asgi"
    assert running[0]["frames"][-1]["locals"]["hog_id"] == 77
    sleeping = [t for t in loop["tasks"] if "asgi" in functions(t) and not t.get("running")]
    assert len(sleeping) == 1 and sleeping[0]["awaits"]["kind"] == "sleep"
    assert sleeping[0]["frames"][functions(sleeping[0]).index("asgi")]["locals"]["sleep_id"] == 5
    if loop_kind == "asyncio":
        assert loop["running_callback"]["now_in"]["function"] == "asgi"
    else:
        assert "uvloop" in loop["running_callback"]
    assert server.poll() is None
