"""Thread records in a dump taken in a forked child."""

from __future__ import annotations

import json

from .interpreters import run_with_pypanic

FORKED = """
import os, sys, threading, pypanic
child = os.fork()
if child == 0:
    path = pypanic.dump("in the child", directory=sys.argv[1])
    print(os.getpid(), path, flush=True)
    os._exit(0)
os.waitpid(child, 0)
"""


def test_a_forked_childs_main_thread_has_its_own_native_id(tmp_path):
    """After a fork (a gunicorn worker), the thread that dumps is written with its own
    native id, not the parent's that threading kept."""
    out = run_with_pypanic(FORKED.replace("sys.argv[1]", repr(str(tmp_path))))
    assert out.returncode == 0, out.stderr
    pid, path = out.stdout.split()
    with open(path) as f:
        threads = json.load(f)["panic.threads"]
    assert threads[0]["current"] is True
    assert threads[0]["native_id"] == int(pid)


LOCALS = """
import json, sys, pypanic

class Namespace(dict):
    def items(self):
        raise RuntimeError("the namespace refuses")

class Meta(type):
    @classmethod
    def __prepare__(mcs, name, bases):
        return Namespace()

calls = []

def guarded_calls(frame, event, arg):
    if event == "c_call" and arg is sys.settrace:  # call_guarded sets and restores the tracer
        calls.append(frame.f_back.f_code.co_name)

def dump_here(limit):
    sys.setprofile(guarded_calls)
    path = pypanic.dump("here", directory=sys.argv[1])
    sys.setprofile(None)
    print(path, ",".join(sorted(set(calls))))

def work(count):
    total = count * 2
    dump_here(total)

class Body(metaclass=Meta):
    work(21)
"""


def test_function_locals_are_read_directly_and_a_class_namespace_under_the_guard(tmp_path):
    """A function's locals are read in C, with no guarded call (its sys.settrace is slow
    on 3.12 and later); a class body's namespace from a metaclass's __prepare__ is user
    code, read only under the guard, and its failure becomes that frame's $error."""
    out = run_with_pypanic(LOCALS.replace("sys.argv[1]", repr(str(tmp_path))))
    assert out.returncode == 0, out.stderr
    path, guarded_by = out.stdout.split()
    with open(path) as f:
        frames = json.load(f)["panic.threads"][0]["frames"]
    by_name = {frame["function"]: frame for frame in frames}
    assert by_name["work"]["locals"] == {"count": 21, "total": 42}
    assert by_name["dump_here"]["locals"]["limit"] == 42
    assert "RuntimeError: the namespace refuses" in json.dumps(by_name["Body"]["locals"])
    assert guarded_by == "_frame_locals", "only the class body's namespace needs a guarded call"


HOSTILE_METACLASS = """
import asyncio, json, sys, pypanic

ran = []

class Meta(type):
    def __hash__(cls):
        ran.append("__hash__")
        raise RuntimeError("hashed")

    def __eq__(cls, other):
        ran.append("__eq__")
        raise RuntimeError("compared")

class Odd(metaclass=Meta):
    pass

class TaskMeta(Meta):
    @property
    def __module__(cls):  # a class body's own __module__ would hide one inherited
        ran.append("__module__")
        return "asyncio.pretended"

class OddTask(asyncio.Task, metaclass=TaskMeta):
    pass

async def holder():
    odd = Odd()
    path = pypanic.dump("here", directory=sys.argv[1])
    print(path, ",".join(sorted(set(ran))) or "-")

async def main():
    loop = asyncio.get_running_loop()
    await OddTask(holder(), loop=loop, name="odd")

asyncio.run(main())
"""


def test_a_metaclass_is_never_asked_to_hash_or_compare_while_tasks_are_read(tmp_path):
    """In a process with asyncio, every local is checked for a loop, task or future, and
    every task's type for asyncio's own: by identity, so that a metaclass's ``__hash__``
    and ``__eq__`` never run (they did, unguarded, for every such local), and by the
    module the class records, read in C, so that a metaclass's ``__module__`` property
    does not run either."""
    out = run_with_pypanic(HOSTILE_METACLASS.replace("sys.argv[1]", repr(str(tmp_path))))
    assert out.returncode == 0, out.stderr
    path, ran = out.stdout.split()
    assert ran == "-"
    with open(path) as f:
        dump = json.load(f)
    frames = {frame["function"]: frame for frame in dump["panic.threads"][0]["frames"]}
    assert frames["holder"]["locals"]["odd"]["$type"] == "__main__.Odd"
    tasks = [task for loop in dump["panic.asyncio"]["loops"] for task in loop["tasks"]]
    assert [task["name"] for task in tasks if task.get("name") == "odd"] == ["odd"]


READ_ONCE = """
import json, sys, threading, pypanic

class Counted:
    reprs = 0
    def __repr__(self):
        Counted.reprs += 1
        return "counted"

def other(started, stop):
    mine = Counted()
    started.set()
    stop.wait()

def snapshot():
    here = Counted()
    path = pypanic.dump("here", directory=sys.argv[1])
    print(path, Counted.reprs)

started, stop = threading.Event(), threading.Event()
thread = threading.Thread(target=other, args=(started, stop))
thread.start()
started.wait()
snapshot()
stop.set()
thread.join()
"""


def test_a_snapshot_reads_each_frame_of_its_own_stack_once(tmp_path):
    """A snapshot's exception is raised where the dump began, so its traceback is the
    dumping thread's own stack: each of those frames is read once and written in both
    places (a local's repr runs once), and another thread's frames are read as before."""
    out = run_with_pypanic(READ_ONCE.replace("sys.argv[1]", repr(str(tmp_path))))
    assert out.returncode == 0, out.stderr
    path, reprs = out.stdout.split()
    with open(path) as f:
        dump = json.load(f)
    current, waiting = sorted(dump["panic.threads"], key=lambda thread: not thread["current"])
    in_thread = {frame["function"]: frame for frame in current["frames"]}
    in_exception = {frame["function"]: frame for frame in dump["panic.exception"]["frames"]}
    assert in_exception["snapshot"] == in_thread["snapshot"]
    assert in_thread["snapshot"]["locals"]["here"] == {"$type": "__main__.Counted", "repr": "counted"}
    assert {frame["function"]: frame for frame in waiting["frames"]}["other"]["locals"]["mine"]["repr"] == "counted"
    assert reprs == "2", "one repr for the dumping thread's local, one for the other thread's"
