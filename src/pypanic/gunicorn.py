"""gunicorn's server hooks: a dump from every worker that times out.

In the config file (``gunicorn -c gunicorn.conf.py app:app``)::

    from pypanic.gunicorn import post_fork, post_worker_init, worker_abort

gunicorn's master sends SIGABRT to a worker that has not reported for ``--timeout``
seconds (a sync worker stuck in a request), the worker calls ``worker_abort`` and exits,
and the master sends SIGKILL at its next check if it is still there. ``worker_abort`` first
reports to the master, which gives the dump one more ``--timeout`` before the SIGKILL, then
writes ``ncore.<worker pid>`` while the request's frames are still on the stack, with the
time limit cut to fit, and returns: gunicorn goes on as without the hook.

``post_fork`` registers the worker under the key ``gunicorn`` (its pid, the master's, its
age and class, the timeout). ``post_worker_init`` runs once the worker has set up its own
signals: a worker class that left SIGABRT to the system (uvicorn's ``UvicornWorker``, which
gunicorn's SIGABRT would otherwise kill without a word) gets a handler that writes the same
dump and then lets SIGABRT end the process as before; and when the worker took the signal
pypanic listened on (``PYPANIC_SIGNAL``), that is logged and the mark stops naming it.

An application with its own hooks calls these from them. gunicorn is not imported: the
hooks use only the attributes gunicorn passes (``worker.pid``, ``worker.ppid``,
``worker.age``, ``worker.cfg.timeout``, ``worker.notify()``).
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from . import _listener, configure, panicDbg
from ._log import StderrLog

KEY = "gunicorn"
"""The registry key of the worker's facts."""


class WorkerTimeout(Exception):
    """What a timed-out worker's dump records as its exception: no request finished within
    gunicorn's timeout; the stack of the request is in ``panic.threads``."""


WorkerTimeout.__module__ = "pypanic.gunicorn"


def post_fork(server: Any, worker: Any) -> None:
    """gunicorn's ``post_fork(server, worker)``: in the new worker, register its facts."""
    panicDbg.set(
        KEY,
        {
            "worker_pid": os.getpid(),
            "master_pid": getattr(worker, "ppid", os.getppid()),
            "age": getattr(worker, "age", None),
            "worker_class": f"{type(worker).__module__}.{type(worker).__qualname__}",
            "timeout": _timeout(worker),
            "booted_at": time.time(),
        },
    )


def post_worker_init(worker: Any) -> None:
    """gunicorn's ``post_worker_init(worker)``: dump on SIGABRT where the worker class does
    not handle it, and check that pypanic's dump signal is still pypanic's."""
    _listener.verify()
    if signal.getsignal(signal.SIGABRT) is signal.SIG_DFL:

        def on_abort(number: int, frame: Any) -> None:
            worker_abort(worker)
            signal.signal(signal.SIGABRT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGABRT)

        signal.signal(signal.SIGABRT, on_abort)


def worker_abort(worker: Any) -> None:
    """gunicorn's ``worker_abort(worker)``: write the timed-out worker's dump; never raises."""
    from ._panic import dump

    timeout = _timeout(worker)
    message = f"gunicorn worker {os.getpid()} timed out (--timeout {timeout:g} s)"
    try:
        worker.notify()
        # Reading gets half of the time the master now gives; encoding and writing the rest.
        configure(max_seconds=max(0.5, min(_max_seconds(), timeout / 2)))
        facts = panicDbg.get(KEY)
        if isinstance(facts, dict):
            panicDbg.set(KEY, {**facts, "aborted_at": time.time(), "requests_handled": getattr(worker, "nr", None)})
        dump(message, WorkerTimeout(message))
    except Exception as e:
        StderrLog()("CRIT", f"pypanic: no dump of the timed-out worker: {type(e).__name__}: {e}")


def _timeout(worker: Any) -> float:
    """gunicorn's ``--timeout`` (``worker.timeout`` is half of it: the interval to report at)."""
    return float(getattr(getattr(worker, "cfg", None), "timeout", None) or 2 * getattr(worker, "timeout", 15))


def _max_seconds() -> float:
    from ._config import resolve

    return resolve(panicDbg).max_seconds
