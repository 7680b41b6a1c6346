"""A program that crashes, panics or dumps in the way its first argument names.

Run as ``python crash.py MODE``; it prints ``ready`` before the interesting part, so a
test can tell start-up problems from the behaviour under test.
"""

import asyncio
import os
import sys
import threading
import time

import pypanic


class Hostile:
    """Everything about it raises or never ends."""

    def __repr__(self):
        raise ValueError("hostile repr")

    @property
    def boom(self):
        raise RuntimeError("hostile property")


class Panicky:
    """Its repr tries to panic while the dump is being written."""

    def __repr__(self):
        pypanic.panic("nested panic from __repr__")


def func1(arg1):
    panicDbg.set("func1.arg", arg1)  # type: ignore[name-defined]  # noqa: F821 - pypanic's builtin
    func2(arg1 + 10)


def func2(arg2):
    panicDbg.set("func2.arg", arg2)  # type: ignore[name-defined]  # noqa: F821
    raise TypeError("'NoneType' object has no attribute 'nonexistentMethod'")


async def failing_task():
    raise LookupError("task failed and nobody awaited it")


def main(mode):
    pypanic.enable_panic_on_crash()
    if os.environ.get("PYPANIC_TEST_DIRECTORY"):
        pypanic.configure(directory=os.environ["PYPANIC_TEST_DIRECTORY"])
    pypanic.panicDbg.set("mode", mode)
    print("ready", flush=True)
    if mode == "main":
        func1(10)
    elif mode == "thread":
        worker = threading.Thread(target=func1, args=(10,), name="worker-1")
        worker.start()
        worker.join()
        time.sleep(30)
    elif mode == "nondaemon":
        threading.Thread(target=time.sleep, args=(1000,), name="sleeper").start()
        pypanic.panic("stop despite a non-daemon thread")
    elif mode == "asyncio-task":

        async def run():
            asyncio.ensure_future(failing_task())  # noqa: RUF006 - unreferenced on purpose
            await asyncio.sleep(30)

        asyncio.run(run())
    elif mode == "asyncio-callback":

        async def run():
            asyncio.get_running_loop().call_soon(func1, 10)
            await asyncio.sleep(30)

        asyncio.run(run())
    elif mode == "big":
        panicDbg.set("big", "x" * (1 << 20))  # type: ignore[name-defined]  # noqa: F821
        pypanic.panic("a megabyte of state")
    elif mode == "explicit":
        pypanic.panic("explicit request")
    elif mode == "explicit-err":
        try:
            func1(10)
        except TypeError as e:
            pypanic.panic("caught and panicked", e)
    elif mode == "dump":
        path = pypanic.dump("snapshot please")
        print(f"dumped {path}", flush=True)
        path = pypanic.dump("second snapshot")
        print(f"dumped {path}", flush=True)
        print("still running", flush=True)
    elif mode == "dump-many":
        for _ in range(200):
            pypanic.dump("nobody reads my stderr")
        print("all dumped", flush=True)
    elif mode == "keyboard":
        raise KeyboardInterrupt
    elif mode == "keyboard-panic":
        pypanic.configure(panic_on_keyboard_interrupt=True)
        raise KeyboardInterrupt
    elif mode == "concurrent":
        barrier = threading.Barrier(4)

        def crash(n):
            barrier.wait()
            pypanic.panic(f"thread {n} panics")

        for n in range(4):
            threading.Thread(target=crash, args=(n,), name=f"crasher-{n}").start()
        time.sleep(30)
    elif mode == "hostile":
        panicDbg.set("hostile", [Hostile(), Panicky(), float("nan"), {1, 2}])  # type: ignore[name-defined]  # noqa: F821
        cycle: dict[str, object] = {"name": "cycle"}
        cycle["self"] = cycle
        panicDbg.set("cycle", cycle)  # type: ignore[name-defined]  # noqa: F821
        pypanic.panic("hostile objects registered")
    elif mode == "fork":
        pid = os.fork()
        if pid == 0:
            pypanic.panic("child panics")
        _, status = os.waitpid(pid, 0)
        print(f"child {pid} exited {os.waitstatus_to_exitcode(status)}", flush=True)
    elif mode == "chain":
        try:
            try:
                {"present": 1}["missing"]
            except KeyError as inner:
                raise ValueError("outer") from inner
        except ValueError as outer:
            if hasattr(outer, "add_note"):
                outer.add_note("a note about the failure")
            else:
                outer.__notes__ = ["a note about the failure"]  # type: ignore[attr-defined]
            raise
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1])
