"""Installs and removes the hooks that turn an uncaught exception into a panic.

Three places see an exception nobody caught: ``sys.excepthook`` (the main thread),
``threading.excepthook`` (any ``threading.Thread``) and asyncio's default exception
handler (a task whose exception nobody retrieved, a failing callback). asyncio is
patched when it is imported, not before: enabling panics does not import it.
"""

from __future__ import annotations

import sys
import threading

from . import _config, _panic
from ._registry import shared

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from importlib.machinery import ModuleSpec
    from types import ModuleType, TracebackType
    from typing import Any

_ASYNCIO_MODULE = "asyncio.base_events"


UNCAUGHT = "panic due to uncaught exception"
"""The log line's words for every uncaught exception, as node-panic's; ``panic.reason``
adds where it was caught."""


def _passed_on(kind: type[BaseException]) -> bool:
    """Whether an uncaught ``kind`` goes to the hook that was there before instead of
    panicking: KeyboardInterrupt, unless ``panic_on_keyboard_interrupt`` is set."""
    return issubclass(kind, KeyboardInterrupt) and not _config.resolve(shared()).panic_on_keyboard_interrupt


def _excepthook(kind: type[BaseException], exc: BaseException | None, tb: TracebackType | None) -> None:
    if _passed_on(kind):
        shared().saved_hooks["sys.excepthook"](kind, exc, tb)
        return
    if exc is None:
        exc = kind()
    if exc.__traceback__ is None:
        exc.__traceback__ = tb
    _panic.panic(UNCAUGHT, exc)


def _threading_excepthook(args: Any) -> None:
    if issubclass(args.exc_type, SystemExit):
        return
    if _passed_on(args.exc_type):
        shared().saved_hooks["threading.excepthook"](args)
        return
    exc = args.exc_value if args.exc_value is not None else args.exc_type()
    name = args.thread.name if args.thread is not None else "?"
    _panic.panic(UNCAUGHT, exc, reason=f"{UNCAUGHT} in thread {name!r}")


def _is_uncaught(context: dict[str, Any]) -> bool:
    message = str(context.get("message", ""))
    if "future" in context and message.endswith("exception was never retrieved"):
        return True
    return "handle" in context and message.startswith("Exception in callback")


def _patch_asyncio(module: ModuleType) -> None:
    loop_class = module.BaseEventLoop
    original = loop_class.default_exception_handler
    if getattr(original, "__pypanic_original__", None) is not None:
        return
    # Held here: while the interpreter shuts down, this module's globals may be gone.
    finalizing = sys.is_finalizing

    def default_exception_handler(self: Any, context: dict[str, Any]) -> None:
        # A task dropped only at shutdown is reported when nothing works well enough for
        # a dump any more: asyncio's own handler logs it, as it would without pypanic.
        if not finalizing():
            exc = context.get("exception")
            if (
                isinstance(exc, BaseException)
                and _is_uncaught(context)
                and shared().saved_hooks
                and not _passed_on(type(exc))
            ):
                _panic.panic(UNCAUGHT, exc, reason=f"{UNCAUGHT} in asyncio ({context.get('message')})")
        original(self, context)

    default_exception_handler.__pypanic_original__ = original  # type: ignore[attr-defined]
    loop_class.default_exception_handler = default_exception_handler


class _PatchAsyncioOnImport:
    """A meta path finder that patches asyncio right after it is first imported."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> ModuleSpec | None:
        if name != _ASYNCIO_MODULE:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
                spec.loader = _PatchingLoader(spec.loader, _patch_asyncio)  # type: ignore[assignment]  # a duck-typed Loader
                return spec
        return None


class _PatchingLoader:
    """Runs a module through its own loader, then calls ``after(module)``."""

    def __init__(self, loader: Any, after: Callable[[ModuleType], None]) -> None:
        self._loader = loader
        self._after = after

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)  # type: ignore[no-any-return]

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        self._after(module)


def enable() -> None:
    """Install the hooks (again: a second call changes nothing)."""
    registry = shared()
    if registry.saved_hooks:
        return
    # Load everything a panic needs now, so that a crash does not have to import.
    from . import _dump, _facts, _tasks  # noqa: F401

    registry.saved_hooks = {
        "sys.excepthook": sys.excepthook,
        "threading.excepthook": threading.excepthook,
    }
    sys.excepthook = _excepthook
    threading.excepthook = _threading_excepthook
    _enable_faulthandler(registry.saved_hooks)
    module = sys.modules.get(_ASYNCIO_MODULE)
    if module is not None:
        _patch_asyncio(module)
    elif not any(isinstance(f, _PatchAsyncioOnImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _PatchAsyncioOnImport())


def _enable_faulthandler(saved: dict[str, Any]) -> None:
    """A crash in C (SIGSEGV, SIGFPE, SIGABRT, SIGBUS, SIGILL) runs no Python code, so no
    dump: faulthandler at least writes every thread's stack to stderr, before the core
    file the signal leaves (which ``ncore core`` reads). Left alone if the application
    enabled it itself; not enabled where there is no stderr to write to."""
    import faulthandler

    if faulthandler.is_enabled():
        return
    try:
        faulthandler.enable(all_threads=True)
    except (RuntimeError, ValueError, OSError):
        return
    saved["faulthandler"] = faulthandler.disable


def disable() -> None:
    """Put back the hooks that were there before ``enable``."""
    registry = shared()
    saved = registry.saved_hooks
    if not saved:
        return
    if sys.excepthook is _excepthook:
        sys.excepthook = saved["sys.excepthook"]
    if threading.excepthook is _threading_excepthook:
        threading.excepthook = saved["threading.excepthook"]
    if "faulthandler" in saved:
        saved["faulthandler"]()
    registry.saved_hooks = {}
