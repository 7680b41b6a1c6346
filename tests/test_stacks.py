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
