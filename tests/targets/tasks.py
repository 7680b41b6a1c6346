"""An asyncio program whose tasks wait on the things services wait on, for panic.asyncio.

    python tasks.py KIND

KIND is one of:

- idle: the loop runs in the main thread and waits, with tasks awaiting a sleep
  (``sleeper``, local ``order_id``), a queue (``consumer``), a lock (``locker``), a gather of
  two tasks running ``child`` (``gatherer``), a gather of one that failed with a
  ValueError and one asleep (``partly-failed``) and, from 3.11, a TaskGroup (``grouped``,
  child ``tg-child``);
- thread: the same, in a thread named ``loop-thread``, the main thread sleeping;
- hog: the same, and a task ``hog`` that blocks the loop in ``time.sleep``;
- many: 100,000 tasks asleep;
- hostile: a task factory whose tasks, of a class claiming to be asyncio's, have a
  ``get_name``, ``_state`` and ``_fut_waiter`` that never return and a ``__repr__`` that
  raises, and a coroutine awaiting an object whose ``__getattr__`` raises;
- crash: with ``enable_panic_on_crash()``, a callback that raises, once ``ready`` is printed.

``ready`` is printed once every task waits.
"""

import asyncio
import sys
import threading
import time

try:
    import pypanic  # listens for PYPANIC_SIGNAL when it is set
except ImportError:
    pypanic = None  # type: ignore[assignment]

KIND = sys.argv[1]


async def sleeper(order_id):
    await asyncio.sleep(3600)


async def consumer(queue):
    return await queue.get()


async def locker(lock):
    async with lock:
        pass


async def child(n):
    await asyncio.sleep(3000 + n)


async def gatherer():
    await asyncio.gather(child(1), child(2))


async def boom():
    raise ValueError("bad order 42")


async def partly_failed():
    await asyncio.gather(boom(), child(4), return_exceptions=True)


async def grouped():
    async with asyncio.TaskGroup() as group:  # type: ignore[attr-defined]  # 3.11+
        group.create_task(child(3), name="tg-child")


async def hog():
    hog_marker = "hogging"
    time.sleep(3600)
    return hog_marker


class Hostile(asyncio.Task):
    __module__ = "asyncio.tasks"  # claims to be asyncio's own, but asyncio.tasks does not hold it

    def get_name(self):
        while True:
            pass

    def __repr__(self):
        raise RuntimeError("no repr")

    @property
    def _state(self):  # type: ignore[override]  # asyncio's C code reads its own fields, never these
        while True:
            pass

    _fut_waiter = _state


class Awkward:
    def __getattr__(self, name):
        raise RuntimeError(f"no {name}")

    def __await__(self):
        yield from asyncio.sleep(3600).__await__()


async def awaits_awkward():
    await Awkward()


async def main():
    loop = asyncio.get_running_loop()
    if KIND == "hostile":
        loop.set_task_factory(lambda loop, coro, **kwargs: Hostile(coro, loop=loop))
    queue = asyncio.Queue()  # type: asyncio.Queue[object]
    lock = asyncio.Lock()
    await lock.acquire()
    tasks = [
        asyncio.create_task(sleeper(7), name="sleeper"),
        asyncio.create_task(consumer(queue), name="consumer"),
        asyncio.create_task(locker(lock), name="locker"),
        asyncio.create_task(gatherer(), name="gatherer"),
        asyncio.create_task(partly_failed(), name="partly-failed"),
    ]
    if sys.version_info >= (3, 11):
        tasks.append(asyncio.create_task(grouped(), name="grouped"))
    if KIND == "hostile":
        tasks.append(asyncio.create_task(awaits_awkward(), name="awkward"))
    if KIND == "many":
        tasks += [asyncio.create_task(asyncio.sleep(3600)) for _ in range(100_000)]
    await asyncio.sleep(0.2)
    print("ready", flush=True)
    if KIND == "hog":
        await asyncio.create_task(hog(), name="hog")
    if KIND == "crash":
        pypanic.enable_panic_on_crash()
        loop.call_soon(lambda: 1 / 0)
    await asyncio.sleep(3600)


if KIND == "thread":
    threading.Thread(target=asyncio.run, args=(main(),), name="loop-thread", daemon=True).start()
    time.sleep(3600)
else:
    asyncio.run(main())
