"""example-loop.py: a program stuck in an endless loop, for ncore to dump from outside.

It records its loop counter as "func-iter"; `ncore <pid>` stops it and writes the
counter, with the stack of the loop, to ncore.<pid>.
"""

import pypanic


def func() -> None:
    ii = 0
    while True:
        pypanic.panicDbg.set("func-iter", ii)
        ii += 1


print('starting infinite loop; use "ncore" tool to generate core', flush=True)
func()
