"""The code ncore runs inside the target process: take the dump, then tell ncore.

It is not imported by ncore: ncore copies this file into a private directory the target
can see and makes the target execute it with ``__ncore_dir__`` set to that directory.
Its parameters arrive as data, in ``params.json`` beside it; its answer goes back as
``result.json`` (written atomically), the handshake ncore waits for.

It uses the target's own pypanic when loaded (its registered state is in the registry
every copy shares anyway), else one importable from the target's path, else the copy
ncore carries in the same directory, loaded under a private name. It never lets an
exception escape (a pending call whose code raises kills the target) and binds nothing
in the target's ``__main__``. Standard library only; runs on every supported Python.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
import time
from types import ModuleType

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

PROTOCOL = 1
"""The version of the payload-to-pypanic interface (``pypanic._panic.NCORE_PROTOCOL``)."""

CARRIED_NAME = "_ncore_pypanic"


def _answer(directory: str, result: dict[str, Any]) -> None:
    temporary = os.path.join(directory, "result.json.tmp")
    with open(temporary, "w") as f:
        json.dump(result, f)
        f.flush()
        os.fsync(f.fileno())
    os.rename(temporary, os.path.join(directory, "result.json"))


def _wait_for_ack(directory: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    ack = os.path.join(directory, "ack")
    while time.monotonic() < deadline and not os.path.exists(ack):
        time.sleep(0.002)


def _panic_module(name: str) -> ModuleType | None:
    """``<name>._panic`` if that pypanic speaks this payload's protocol, else None."""
    try:
        module = importlib.import_module(f"{name}._panic")
    except Exception:
        return None
    return module if getattr(module, "NCORE_PROTOCOL", 0) == PROTOCOL else None


def _choose_pypanic(directory: str) -> tuple[ModuleType | None, str]:
    if "pypanic" in sys.modules:
        found = _panic_module("pypanic")
        if found is not None:
            return found, "target"
    elif importlib.util.find_spec("pypanic") is not None:
        found = _panic_module("pypanic")
        if found is not None:
            return found, "importable"
    if CARRIED_NAME not in sys.modules:
        package = os.path.join(directory, "pypanic")
        spec = importlib.util.spec_from_file_location(
            CARRIED_NAME, os.path.join(package, "__init__.py"), submodule_search_locations=[package]
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[CARRIED_NAME] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[CARRIED_NAME]
            raise
    return _panic_module(CARRIED_NAME), "carried"


def run(directory: str) -> None:
    """Take the dump ``params.json`` asks for and write ``result.json``; never raises."""
    try:
        with open(os.path.join(directory, "params.json")) as f:
            params = json.load(f)
        panic_module, source = _choose_pypanic(directory)
        if panic_module is None:
            raise RuntimeError("the pypanic ncore carries does not speak this payload's protocol")

        def report(path: str | None, error: str | None) -> None:
            _answer(
                directory,
                {
                    "path": path,
                    "error": error,
                    "pid": os.getpid(),
                    "pypanic": source,
                    "exiting": not params["keep_running"],
                },
            )
            if params["hold_seconds"]:
                _wait_for_ack(directory, params["hold_seconds"])

        take = panic_module.dump if params["keep_running"] else panic_module.panic
        take(params["message"], None, directory=params["directory"], report=report)
    except BaseException as e:
        try:
            _answer(
                directory,
                {
                    "path": None,
                    "error": f"{type(e).__name__}: {e}",
                    "pid": os.getpid(),
                    "pypanic": None,
                    "exiting": False,
                },
            )
        except BaseException:
            pass


if __name__ == "__ncore_payload__":
    run(__ncore_dir__)  # type: ignore[name-defined]  # noqa: F821 - given by the injected code
