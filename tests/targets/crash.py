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


class RaisingItems(dict):
    """A dict whose own ways of being read all raise."""

    def items(self):
        raise RuntimeError("hostile items()")

    keys = values = __iter__ = __len__ = items


class EndlessItems(dict):
    """A dict whose own ways of being read never return."""

    def items(self):
        while True:
            pass

    keys = values = __iter__ = __len__ = items


class EndlessClass:
    """Asking for its class (what isinstance does) never returns."""

    @property  # type: ignore[misc]
    def __class__(self):
        while True:
            pass


class RaisingClass:
    """Asking for its class (what isinstance does) raises."""

    @property  # type: ignore[misc]
    def __class__(self):
        raise RuntimeError("hostile __class__")


def func1(arg1):
    panicDbg.set("func1.arg", arg1)  # type: ignore[name-defined]  # noqa: F821 - pypanic's builtin
    func2(arg1 + 10)


def func2(arg2):
    panicDbg.set("func2.arg", arg2)  # type: ignore[name-defined]  # noqa: F821
    raise TypeError("'NoneType' object has no attribute 'nonexistentMethod'")


async def failing_task():
    raise LookupError("task failed and nobody awaited it")


KEPT: list[object] = []
"""Tasks referenced until the program ends."""


def shared_halves(levels):
    """A list of two references to one list of two references ..., ``levels`` deep: small
    in memory, 2**levels leaves when written out as a tree."""
    value: list[object] = [1]
    for _ in range(levels):
        value = [value, value]
    return value


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
    elif mode == "hostile-containers":
        pypanic.panicDbg.set("items-raise", RaisingItems(a=1))
        pypanic.panicDbg.set("items-endless", EndlessItems(b=2))
        pypanic.panicDbg.set("class-endless", EndlessClass())
        pypanic.panicDbg.set("class-raise", RaisingClass())
        pypanic.panicDbg.set("plain", "still written")
        local_hostile = [EndlessClass(), EndlessItems(c=3)]  # noqa: F841 - read from the frame's locals
        pypanic.panic("hostile containers registered")
    elif mode == "shared":
        pypanic.panicDbg.set("shared", shared_halves(40))
        pypanic.panicDbg.set("after", "still written")
        pypanic.panic("a structure of shared parts registered")
    elif mode == "blob":
        pypanic.panicDbg.set("blob", "x" * int(os.environ["PYPANIC_TEST_BLOB"]))
        pypanic.panic("a big string registered")
    elif mode in ("thread-keyboard", "thread-keyboard-panic"):
        if mode == "thread-keyboard-panic":
            pypanic.configure(panic_on_keyboard_interrupt=True)

        def interrupted():
            raise KeyboardInterrupt

        worker = threading.Thread(target=interrupted, name="interrupted")
        worker.start()
        worker.join()
        print("survived", flush=True)
    elif mode == "gone-cwd":
        os.mkdir("vanishing")
        os.chdir("vanishing")
        os.rmdir("../vanishing")
        pypanic.panic("the working directory is gone")
    elif mode == "asyncio-kept":

        async def run():
            KEPT.append(asyncio.ensure_future(failing_task()))
            await asyncio.sleep(0.1)

        asyncio.run(run())
        print("finished", flush=True)
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
