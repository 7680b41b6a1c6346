"""pypanic: postmortem debugging for Python, a port of Joyent's node-panic.

Register the state you want to see after a crash with ``panicDbg.set`` and
``panicDbg.add``; ``panic()`` writes it, with facts about the process and every
thread's stack, to one JSON file ``ncore.<pid>`` and exits; ``enable_panic_on_crash()``
makes uncaught exceptions panic. Importing this package loads only what the registry
needs; the rest is loaded on the first dump or by ``enable_panic_on_crash()``.
"""

from __future__ import annotations

from os import environ as _environ

from ._beacon import light
from ._registry import Registry, shared

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn

    from ._panic import Panic

__version__ = "0.1.0"

panicDbg: Registry = shared()
"""The process's debug-state registry, also installed as the builtin ``panicDbg``."""
if __name__ == "pypanic" and getattr(panicDbg, "beacon", None) is None:  # not ncore's carried copy
    panicDbg.beacon = light(__version__)
    if "PYPANIC_SIGNAL" in _environ:
        from ._listener import from_environment

        from_environment(__version__)


def panic(msg: str, err: object = None, *, directory: str | None = None) -> NoReturn:
    """Write every registered value and the process's state to ``ncore.<pid>``, then exit.

    ``err`` is the exception that caused the panic; without one the dump records a
    ``pypanic.Panic`` carrying ``msg`` and the caller's stack. The process exits with
    status 1 (setting ``exit_status``) from whichever thread calls, or aborts when the
    setting ``abort`` is on. Another thread calling ``panic`` meanwhile waits for the exit.
    """
    from ._panic import panic as _panic

    _panic(msg, err, directory=directory)


def dump(msg: str, err: object = None, *, directory: str | None = None) -> str:
    """Write the same dump as ``panic`` but keep running; return the dump's path.

    Raises ``OSError`` when no directory (the one asked for, ``$PYPANIC_DIR``, the
    temporary directory, ``/tmp``) takes the file.
    """
    from ._panic import dump as _dump

    return _dump(msg, err, directory=directory)


def enable_panic_on_crash() -> None:
    """Panic on any uncaught exception: in the main thread, in a ``threading.Thread``,
    or in asyncio (a task whose exception nobody retrieved, a failing callback). A crash
    in C code, where no dump can be written, has faulthandler print every thread's stack
    on stderr (unless the application enabled faulthandler itself).

    KeyboardInterrupt is passed on unless the setting ``panic_on_keyboard_interrupt`` is on.
    """
    from ._hooks import enable

    enable()


enablePanicOnCrash = enable_panic_on_crash


def disable_panic_on_crash() -> None:
    """Undo ``enable_panic_on_crash``: uncaught exceptions go where they went before."""
    from ._hooks import disable

    disable()


def configure(**settings: Any) -> None:
    """Change settings for the whole process; see the README for each setting.

    Raises TypeError for an unknown setting and TypeError or ValueError for a bad value.
    """
    from ._config import configure as _configure

    _configure(panicDbg, **settings)
    if settings.get("signal") is not None:
        from ._listener import listen

        listen(panicDbg.settings["signal"], __version__)


def reset_configuration() -> None:
    """Forget every setting made with ``configure``."""
    panicDbg.settings.clear()


def __getattr__(name: str) -> Any:
    if name == "Panic":
        from ._panic import Panic

        return Panic
    raise AttributeError(f"module 'pypanic' has no attribute {name!r}")


__all__ = [
    "Panic",
    "__version__",
    "configure",
    "disable_panic_on_crash",
    "dump",
    "enablePanicOnCrash",
    "enable_panic_on_crash",
    "panic",
    "panicDbg",
    "reset_configuration",
]
