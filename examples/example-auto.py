"""example-auto.py: a program that panics by itself when it crashes.

Each function records its argument in the debug state; the crash in func2 then writes
both arguments, with every thread's stack, to ncore.<pid> and ends the program.
"""

import pypanic


def func1(arg1: int) -> None:
    panicDbg.set("func1.arg", arg1)  # type: ignore[name-defined]  # noqa: F821
    func2(arg1 + 10)


def func2(arg2: int) -> None:
    panicDbg.set("func2.arg", arg2)  # type: ignore[name-defined]  # noqa: F821
    None.nonexistent_method()  # type: ignore[attr-defined]


pypanic.enable_panic_on_crash()
func1(10)
print("cannot get here")
