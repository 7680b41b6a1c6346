"""A program that starts asyncio only when asked.

    python later_asyncio.py

It prints ``ready`` and sleeps (asyncio not imported) until the file ``start`` appears in
its working directory; then it imports asyncio and runs, in the main thread, a loop whose
task ``waiter`` sleeps for an hour, once it has written the file ``started``.
"""

import os
import time

print("ready", flush=True)
while not os.path.exists("start"):
    time.sleep(0.01)

import asyncio  # noqa: E402  # only now: the point of the program


async def waiter() -> None:
    with open("started", "w"):
        pass
    await asyncio.sleep(3600)


async def main() -> None:
    await asyncio.create_task(waiter(), name="waiter")


asyncio.run(main())
