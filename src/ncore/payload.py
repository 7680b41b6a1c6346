"""The code ncore runs inside the target process: take the dump, then tell ncore.

It is not imported by ncore: ncore copies this file into a private directory the target
can see and makes the target execute it with ``__ncore_dir__`` set to that directory.
Its parameters arrive as data, in ``params`` beside it, which it claims by renaming it
``taken`` (ncore withdraws a request by renaming it too: only one of them succeeds). It
says how long its dump may take in ``started``, answers in ``result`` (written
atomically), the handshake ncore waits for, and returns once ncore acknowledges (``ack``).
These files hold fields in the format of ``encode_fields``, which ncore imports from here
(parsing them needs no json, whose import costs ncore more time than the rest of its
start; for the same reason the importlib machinery the payload needs is imported where
it is used, and ``importlib.util``, which imports ``typing`` and ``re`` before 3.10, is not).

The payload holds the directory's lock while it runs, and removes the directory itself
when it finds that ncore is gone (ncore.private). Its waits sleep in select, not
nanosleep: a nanosleep would replace the kernel's record of how to restart the system
call a direct call interrupted.

It uses the target's own pypanic when loaded (its registered state is in the registry
every copy shares anyway), else one importable from the target's path, else the copy
ncore carries in the same directory, loaded under a private name and kept loaded for
later dumps while ncore carries the same copy. It never lets an
exception escape (a pending call whose code raises kills the target) and binds nothing
in the target's ``__main__``. Standard library only; runs on every supported Python.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType

PROTOCOL = 3
"""The version of the payload-to-pypanic interface (``pypanic._panic.NCORE_PROTOCOL``)."""
_LOCK_TRIES = 20
"""How many times (a millisecond apart) the payload tries to share the directory's lock,
which the next ncore's sweep holds for a moment while it judges the directory."""

CARRIED_NAME = "_ncore_pypanic"


def encode_fields(fields: dict[str, str | None]) -> bytes:
    """``key=value`` pairs separated by NUL bytes; a None value is left out, a NUL in a value
    becomes ``\\0`` (no path or command-line argument holds one)."""
    pairs = (f"{key}={value.replace(chr(0), chr(92) + '0')}" for key, value in fields.items() if value is not None)
    return "\0".join(pairs).encode("utf-8", "surrogateescape")


def decode_fields(data: bytes) -> dict[str, str]:
    """The fields ``encode_fields`` wrote."""
    text = data.decode("utf-8", "surrogateescape")
    return dict(pair.split("=", 1) for pair in text.split("\0") if "=" in pair)


def _answer(directory: str, result: dict[str, str | None], name: str = "result") -> None:
    """Write file ``name`` whole or not at all (the rename); no fsync, it need not outlive a crash."""
    temporary = os.path.join(directory, f"{name}.tmp")
    with open(temporary, "wb") as f:
        f.write(encode_fields(result))
    os.rename(temporary, os.path.join(directory, name))


def _pause(seconds: float) -> None:
    """Sleep in select (see above). Imported here: ncore, which imports this module for
    the fields' format, need not load select."""
    import select

    select.select([], [], [], seconds)


def _wait_for_ack(directory: str, seconds: float, lock: int) -> None:
    """Wait for ncore's ``ack``, at most ``seconds``, and no longer than ncore lives (it
    holds the lock shared: only once it is gone can the payload take it alone)."""
    deadline = time.monotonic() + seconds
    ack = os.path.join(directory, "ack")
    pause = 0.0001
    while time.monotonic() < deadline and not os.path.exists(ack):
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            _pause(pause)
            pause = min(pause * 2, 0.002)


def _share_lock(directory: str) -> int | None:
    """The directory's lock, held shared; None when it is gone or being swept."""
    try:
        fd = os.open(os.path.join(directory, "lock"), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    for _ in range(_LOCK_TRIES):
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            _pause(0.001)
    os.close(fd)
    return None


def _remove_if_alone(directory: str, lock: int) -> None:
    """Remove the directory when no ncore holds its lock any more (it died, or gave up)."""
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return
    for parent, names, files in os.walk(directory, topdown=False):
        for name in files:
            try:
                os.unlink(os.path.join(parent, name))
            except OSError:
                pass
        for name in names:
            try:
                os.rmdir(os.path.join(parent, name))
            except OSError:
                pass
    try:
        os.rmdir(directory)
    except OSError:
        pass


def _panic_module(name: str) -> ModuleType | None:
    """``<name>._panic`` if that pypanic speaks this payload's protocol, else None."""
    import importlib

    try:
        module = importlib.import_module(f"{name}._panic")
    except Exception:
        return None
    return module if getattr(module, "NCORE_PROTOCOL", 0) == PROTOCOL else None


def _importable(name: str) -> bool:
    """Whether ``import name`` would find a module, asking the finders as importlib.util.find_spec does."""
    for finder in sys.meta_path:
        find = getattr(finder, "find_spec", None)
        try:
            if find is not None and find(name, None) is not None:
                return True
        except Exception:
            continue
    return False


def _choose_pypanic(carried: str, key: str | None) -> tuple[ModuleType, str]:
    import importlib
    import importlib._bootstrap  # what importlib.util's module_from_spec and spec_from_file_location are
    import importlib._bootstrap_external

    if "pypanic" in sys.modules:
        found = _panic_module("pypanic")
        if found is not None:
            return found, "target"
    elif _importable("pypanic"):
        found = _panic_module("pypanic")
        if found is not None:
            return found, "importable"
    loaded = sys.modules.get(CARRIED_NAME)
    if loaded is not None and getattr(loaded, "__ncore_key__", None) == key:
        # The same files as the copy an earlier dump loaded, whose directory may be gone:
        # that copy is kept (loading it again meant compiling it again, tens of ms with the
        # GIL held), and imports it makes later find its modules here.
        loaded.__path__[:] = [carried]
    elif loaded is not None:
        # Another copy (another ncore's), or one an earlier dump did not finish loading.
        for name in [name for name in sys.modules if name.split(".")[0] == CARRIED_NAME]:
            del sys.modules[name]
    if CARRIED_NAME not in sys.modules:
        package = carried
        spec = importlib._bootstrap_external.spec_from_file_location(
            CARRIED_NAME, os.path.join(package, "__init__.py"), submodule_search_locations=[package]
        )
        assert spec is not None and spec.loader is not None
        module = importlib._bootstrap.module_from_spec(spec)
        sys.modules[CARRIED_NAME] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[CARRIED_NAME]
            raise
    module = importlib.import_module(f"{CARRIED_NAME}._panic")
    if getattr(module, "NCORE_PROTOCOL", 0) != PROTOCOL:
        raise RuntimeError(f"the pypanic ncore carries ({carried}) does not speak payload protocol {PROTOCOL}")
    sys.modules[CARRIED_NAME].__ncore_key__ = key  # type: ignore[attr-defined]
    return module, "carried"


def _probe(dump_directory: str | None) -> dict[str, str | None]:
    """What ``ncore doctor --probe`` asks: which pypanic a dump would use and whether the
    dump's directory is writable; loads nothing."""
    pypanic = "target" if "pypanic" in sys.modules else "importable" if _importable("pypanic") else "carried"
    where = dump_directory or os.getcwd()
    return {"pypanic": pypanic, "directory": where, "writable": "1" if os.access(where, os.W_OK) else "0"}


def run(directory: str) -> None:
    """Take the dump ``params`` asks for and write ``result``; never raises.

    params: ``message``, ``keep_running`` (``1`` or ``0``), ``directory`` (absent: the
    working directory), ``hold_seconds`` (how long to wait for ``ack``), ``pypanic`` (the
    directory of the pypanic ncore carries; absent: ``pypanic`` beside this file),
    ``pypanic_key`` (which copy that is: ncore.session.package_key), ``probe``
    (``1``: answer ``_probe``'s facts, take no dump), ``background`` (``1``: a snapshot is
    written by a forked writer, which answers; ``writer`` then holds its ``pid``), ``pids``
    (the target's pids from ncore's PID namespace down to its own, comma-separated, when
    they differ). started: ``seconds``, the dump's time
    budget. result: ``path`` or ``error``, and ``pypanic`` (which copy took the dump:
    target, importable or carried).
    """
    lock = _share_lock(directory)
    if lock is None:
        return
    try:
        taken = os.path.join(directory, "taken")
        try:
            os.rename(os.path.join(directory, "params"), taken)
        except OSError:
            return  # withdrawn: ncore no longer wants this dump
        with open(taken, "rb") as f:
            params = decode_fields(f.read())
        if params.get("probe") == "1":
            _answer(directory, _probe(params.get("directory")))
            return
        keep_running = params["keep_running"] == "1"
        hold_seconds = float(params["hold_seconds"])
        carried = params.get("pypanic") or os.path.join(directory, "pypanic")
        panic_module, source = _choose_pypanic(carried, params.get("pypanic_key"))
        _answer(directory, {"seconds": str(panic_module.time_budget())}, "started")

        def report(path: str | None, error: str | None) -> None:
            _answer(directory, {"path": path, "error": error, "pypanic": source})
            _wait_for_ack(directory, hold_seconds, lock)

        pids = [int(p) for p in params["pids"].split(",")] if params.get("pids") else None
        in_background = getattr(panic_module, "dump_in_background", None)
        if keep_running and params.get("background") == "1" and in_background is not None:
            writer = in_background(params["message"], directory=params.get("directory"), report=report, pids=pids,
                                   keep=(lock,))  # fmt: skip
            if writer is not None:
                _answer(directory, {"pid": str(writer)}, "writer")
            return
        take = panic_module.dump if keep_running else panic_module.panic
        take(params["message"], None, directory=params.get("directory"), report=report, pids=pids)
    except BaseException as e:
        try:
            _answer(directory, {"error": f"{type(e).__name__}: {e}"})
        except BaseException:
            pass
    finally:
        try:
            _remove_if_alone(directory, lock)
        finally:
            os.close(lock)


if __name__ == "__ncore_payload__":
    run(__ncore_dir__)  # type: ignore[name-defined]  # noqa: F821 - given by the injected code
