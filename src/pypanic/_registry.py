"""The one debug-state registry of the process (``panicDbg``), shared by every copy of pypanic.

Only ``_thread`` is used for locks: importing ``threading`` would triple the cost of
``import pypanic``. The registry lives in ``builtins`` so that a second copy of the package (a vendored
one, the copy ncore injects, an ``importlib.reload``) finds the first one's state:
registered values, settings made in code, the time of the first import and the
guard that lets only one thread panic.
"""

from __future__ import annotations

import builtins
import os
import sys
import time
from _thread import allocate_lock

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

_SLOT = "__pypanic_registry__"


class InitFacts:
    """What the process looked like when pypanic was first imported (the ``init.*`` keys)."""

    __slots__ = ("argv", "cwd", "env", "platform", "time", "version")

    def __init__(self) -> None:
        self.time = time.time()
        self.argv = [sys.executable, *sys.argv]
        try:
            self.cwd: str | None = os.getcwd()
        except OSError:
            self.cwd = None
        self.env = dict(os.environ)
        self.version = sys.version.split()[0]
        self.platform = sys.platform


class PanicGuard:
    """Lets one thread panic while any other waits; tells a panic nested in a panic apart."""

    __slots__ = ("dumping", "lock", "owner")

    def __init__(self) -> None:
        self.lock = allocate_lock()
        self.owner: int | None = None
        self.dumping: set[int] = set()

    def reset_after_fork(self) -> None:
        self.lock = allocate_lock()
        self.owner = None
        self.dumping = set()


class Registry:
    """The state to write into a dump, by key: what ``panicDbg`` is.

    ``set`` is the bound ``__setitem__`` of the underlying dict, so registering a value
    costs what a dict store costs; everything else takes the registry's lock.
    """

    _pypanic_abi = 1

    set: Callable[[str, Any], None]
    """Register ``value`` under ``key``, replacing what was there."""

    def __init__(self) -> None:
        self._entries: dict[str, Any] = {}
        self._counters: dict[str, int] = {}
        self._lock = allocate_lock()
        self.set = self._entries.__setitem__
        self.init = InitFacts()
        self.settings: dict[str, Any] = {}
        self.saved_hooks: dict[str, Any] = {}
        self.guard = PanicGuard()
        self.beacon: object = None
        """The mark that shows pypanic is loaded (pypanic._beacon), once made."""
        self.notes: list[str] = []
        """What went wrong outside any dump (a signal not listened on), for ``dbg.warnings``."""

    def add(self, keybase: str, value: Any) -> str:
        """Register ``value`` under a new key ``<keybase><n>`` and return that key.

        Numbers count from 1 per key base, skip keys that are taken, and are never reused.
        """
        with self._lock:
            n = self._counters.get(keybase, 0)
            while True:
                n += 1
                key = f"{keybase}{n}"
                if key not in self._entries:
                    break
            self._counters[keybase] = n
            self._entries[key] = value
        return key

    def remove(self, key: str) -> None:
        """Forget ``key``; a key that is not registered is ignored."""
        self._entries.pop(key, None)

    def get(self, key: str, default: Any = None) -> Any:
        """The value registered under ``key``, or ``default``."""
        return self._entries.get(key, default)

    def keys(self) -> list[str]:
        """The registered keys, in the order they were first set."""
        return list(self._entries)

    def snapshot(self) -> dict[str, Any]:
        """A shallow copy of everything registered, in registration order."""
        return dict(self._entries)

    def clear(self) -> None:
        """Forget every registered key (the counters of ``add`` keep counting)."""
        self._entries.clear()

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"<pypanic registry: {len(self._entries)} keys>"

    def _after_fork_in_child(self) -> None:
        self._lock = allocate_lock()
        writer = sys.modules.get(f"{__package__}._background")
        if writer is None or not writer.forking:  # a snapshot's writer keeps the dump's guard
            self.guard.reset_after_fork()


def shared() -> Registry:
    """The process's registry: the one any copy of pypanic made first, or a new one."""
    found = builtins.__dict__.get(_SLOT)
    if found is None:
        candidate = Registry()
        # dict.setdefault is atomic: two threads importing at once agree on one winner.
        found = builtins.__dict__.setdefault(_SLOT, candidate)
        if found is candidate:
            os.register_at_fork(after_in_child=candidate._after_fork_in_child)
    if not isinstance(builtins.__dict__.get("panicDbg"), type(found)):
        builtins.panicDbg = found  # type: ignore[attr-defined]
    return found
