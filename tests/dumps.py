"""Real dumps for tests to read: written by real processes, as a crash and as a snapshot
taken while a second thread waits; and the real ``ncore show`` command to read them with."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

THREADED = """
import threading

import pypanic


class Job:
    def __repr__(self):
        return "<Job 7 for worker-1>"


def work(job, started, stop):
    payload = "x" * 500
    started.set()
    stop.wait()


started, stop = threading.Event(), threading.Event()
threading.Thread(target=work, args=(Job(), started, stop), name="worker-1", daemon=True).start()
started.wait()
panicDbg.set("config", {"workers": 2, "mode": "fast"})
panicDbg.set("lines", ["line %d" % i for i in range(200)])
try:
    try:
        {}["missing"]
    except KeyError as e:
        raise ValueError("bad config") from e
except ValueError as err:
    print(pypanic.dump("config check failed", err))
stop.set()
"""
"""A program that dumps while a second thread waits, with a chained exception and locals."""


def crash_example(directory: Path) -> Path:
    """Run examples/example-auto.py in ``directory``; the dump its crash wrote."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "example-auto.py")],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    (dump,) = directory.glob("ncore.*")
    return dump


def dump_threaded(directory: Path) -> Path:
    """Run THREADED in ``directory``; the dump it wrote while its worker thread waited."""
    (directory / "threaded.py").write_text(THREADED)
    result = subprocess.run(
        [sys.executable, "threaded.py"], cwd=directory, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return Path(result.stdout.strip())


def run_show(*args: str, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    """The real ``ncore show ARGS``, its output piped, in an environment that forces no colour
    either way, plus ``env``."""
    clean = {
        name: value for name, value in os.environ.items() if name not in ("FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE")
    }
    return subprocess.run(
        [sys.executable, "-m", "ncore", "show", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**clean, **env},
        timeout=60,
        check=False,
    )
