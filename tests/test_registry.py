"""The registry: set, add, remove, reading back, and one registry per process."""

from __future__ import annotations

import builtins
import importlib
import importlib.util
import sys
import threading

import pypanic
from pypanic import panicDbg

from .interpreters import SRC, run_with_pypanic


def test_set_replaces_and_get_reads():
    """set replaces an earlier value under the same key."""
    panicDbg.set("key", 1)
    panicDbg.set("key", 2)
    assert panicDbg.get("key") == 2
    assert panicDbg.get("absent", "default") == "default"
    assert panicDbg.keys() == ["key"]
    assert panicDbg.snapshot() == {"key": 2}


def test_add_numbers_from_one_without_separator():
    """add makes conn1, conn2, ... and returns the key it chose."""
    assert [panicDbg.add("conn", n) for n in range(3)] == ["conn1", "conn2", "conn3"]
    assert panicDbg.get("conn2") == 1


def test_add_skips_taken_keys_and_never_reuses_numbers():
    """A key set by hand is skipped; a removed key's number is not given out again."""
    panicDbg.set("req2", "by hand")
    assert panicDbg.add("req", "a") == "req1"
    assert panicDbg.add("req", "b") == "req3"
    panicDbg.remove("req3")
    assert panicDbg.add("req", "c") == "req4"
    assert panicDbg.get("req2") == "by hand"


def test_add_is_safe_across_threads():
    """Concurrent adds never hand out the same key twice."""
    keys: list[str] = []

    def worker():
        for _ in range(500):
            keys.append(panicDbg.add("t", None))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(keys)) == 2000
    assert set(panicDbg.keys()) == set(keys)


def test_remove_of_missing_key_is_quiet():
    """remove ignores keys that were never set."""
    panicDbg.remove("never-set")
    assert "never-set" not in panicDbg
    assert len(panicDbg) == 0


def test_registry_is_a_builtin():
    """Like the original, the registry is the global panicDbg."""
    assert builtins.panicDbg is pypanic.panicDbg  # type: ignore[attr-defined]


def test_reload_keeps_the_registry():
    """importlib.reload finds the registry the first import made."""
    panicDbg.set("survives", True)
    reloaded = importlib.reload(pypanic)
    assert reloaded.panicDbg is panicDbg
    assert reloaded.panicDbg.get("survives") is True


def test_second_copy_of_the_package_shares_the_registry(tmp_path):
    """A second copy of pypanic, loaded under another name, finds the same state."""
    spec = importlib.util.spec_from_file_location(
        "pypanic_copy", SRC / "pypanic" / "__init__.py", submodule_search_locations=[str(SRC / "pypanic")]
    )
    assert spec is not None and spec.loader is not None
    copy = importlib.util.module_from_spec(spec)
    sys.modules["pypanic_copy"] = copy
    try:
        spec.loader.exec_module(copy)
        panicDbg.set("shared", "yes")
        assert copy.panicDbg is panicDbg
        copy.configure(max_depth=5)
        assert panicDbg.settings["max_depth"] == 5
    finally:
        for name in [n for n in sys.modules if n == "pypanic_copy" or n.startswith("pypanic_copy.")]:
            del sys.modules[name]


def test_imports_from_many_threads_make_one_registry():
    """Threads importing pypanic at once (in a fresh process) agree on one registry."""
    code = """
import sys, threading
found = []
def load():
    import pypanic
    found.append(id(pypanic.panicDbg))
threads = [threading.Thread(target=load) for _ in range(8)]
[t.start() for t in threads]
[t.join() for t in threads]
print(len(set(found)), len(found))
"""
    out = run_with_pypanic(code)
    assert out.stdout.split() == ["1", "8"], out.stderr
