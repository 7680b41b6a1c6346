"""`import pypanic` stays light: nothing heavy is loaded until a dump needs it."""

from __future__ import annotations

import pypanic
from ncore.target import PYPANIC_MARK
from pypanic._beacon import NAME

from .interpreters import run_with_pypanic

HEAVY = ["click", "rich", "ctypes", "psutil", "json", "asyncio", "traceback", "linecache", "typing"]


def loaded_after(code: str) -> set[str]:
    program = f"import sys\n{code}\nprint(' '.join(sorted(sys.modules)))"
    out = run_with_pypanic(program, "-S")
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split())


def test_import_loads_nothing_heavy():
    """The registry needs only _thread; click, rich, ctypes, psutil, json stay out."""
    before = loaded_after("")
    after = loaded_after("import pypanic")
    assert not (after - before) & set(HEAVY)


def test_enabling_panics_preloads_the_dump_machinery_but_not_asyncio():
    """enable_panic_on_crash loads what a crash needs, so a crash need not import."""
    after = loaded_after("import pypanic; pypanic.enable_panic_on_crash()")
    assert {"pypanic._dump", "pypanic._facts", "pypanic._stacks", "pypanic._source"} <= after
    assert "asyncio" not in after


def test_asyncio_imported_later_is_patched():
    """asyncio imported after enable_panic_on_crash still panics on lost task exceptions."""
    program = (
        "import pypanic; pypanic.enable_panic_on_crash(); import asyncio.base_events as b; "
        "print(hasattr(b.BaseEventLoop.default_exception_handler, '__pypanic_original__'))"
    )
    out = run_with_pypanic(program)
    assert out.stdout.strip() == "True", out.stderr


def test_the_mark_is_mapped_once_whatever_the_copies():
    """The first import maps pypanic's mark, holding its version; a reload adds none."""
    program = (
        "import importlib, pypanic\n"
        "importlib.reload(pypanic)\n"
        "maps = [line for line in open('/proc/self/maps') if 'memfd:pypanic' in line]\n"
        "start = int(maps[0].split('-')[0], 16)\n"
        "with open('/proc/self/mem', 'rb') as mem:\n"
        "    mem.seek(start)\n"
        "    print(len(maps), mem.read(64).split(b'\\n')[0].decode())\n"
    )
    out = run_with_pypanic(program)
    assert out.stdout.split() == ["1", "pypanic", pypanic.__version__], out.stderr


def test_ncore_looks_for_the_mark_pypanic_makes():
    """ncore's name for the mark is the one pypanic maps."""
    assert f"/memfd:{NAME} (deleted)" == PYPANIC_MARK


def test_enabling_panics_enables_faulthandler_and_disabling_undoes_only_that():
    """enable_panic_on_crash turns faulthandler on (a crash in C prints every thread);
    disable_panic_on_crash turns it off again, but never one the application turned on."""
    program = (
        "import faulthandler, pypanic\n"
        "pypanic.enable_panic_on_crash(); on = faulthandler.is_enabled()\n"
        "pypanic.disable_panic_on_crash(); off = faulthandler.is_enabled()\n"
        "faulthandler.enable()\n"
        "pypanic.enable_panic_on_crash(); pypanic.disable_panic_on_crash()\n"
        "print(on, off, faulthandler.is_enabled())\n"
    )
    out = run_with_pypanic(program)
    assert out.stdout.split() == ["True", "False", "True"], out.stderr
