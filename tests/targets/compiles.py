"""A program that reports what the dumps taken of it made it compile.

    python compiles.py

It prints ``ready``; then each time the file ``report`` appears in its working directory it
writes to ``compiled`` the file name of every compilation since it started, one per line
in order (``<ncore payload>`` for ncore's payload, a path for each module imported from
source), and removes ``report``.
"""

import os
import sys
import time

compiled: list[str] = []


def hook(event, args):
    if event == "compile":
        compiled.append(os.fsdecode(args[1]) if args[1] is not None else "None")


sys.addaudithook(hook)
print("ready", flush=True)
while True:
    if os.path.exists("report"):
        with open("compiled.tmp", "w") as f:
            f.write("".join(f"{name}\n" for name in compiled))
        os.rename("compiled.tmp", "compiled")
        os.unlink("report")
    time.sleep(0.01)
