"""A program that reports which modules a dump made it import.

    python modules.py [pypanic]

With ``pypanic`` it imports pypanic first (a service that did, but was never dumped). It
prints ``ready``, then sleeps until the file ``report`` appears in its working directory and
writes to ``modules`` the names of the modules loaded since it printed ``ready``.
"""

import os
import sys
import time

if sys.argv[1:] == ["pypanic"]:
    import pypanic  # noqa: F401

before = set(sys.modules)
print("ready", flush=True)
while not os.path.exists("report"):
    time.sleep(0.01)
with open("modules.tmp", "w") as f:
    f.write("\n".join(sorted(set(sys.modules) - before)))
os.rename("modules.tmp", "modules")
time.sleep(60)
