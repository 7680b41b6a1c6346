# inject.gdb: make the attached CPython process run the code in $ncore_code_file.
#
# ncore sources this after `attach`, with its inputs set as convenience variables:
#   $ncore_mode        0 auto, 1 pending call, 2 direct call
#   $ncore_code_file   path (as gdb sees it) of the page to copy into the target: the
#                      code to run, NUL-ended, then the function a pending call runs
#   $ncore_code_size   its size in bytes
#   $ncore_pending_at  where that function starts in the page (0: none; PyRun_SimpleString)
#   $ncore_runtime_lo, $ncore_runtime_hi   address range of _PyRuntime
#   $ncore_futex       the futex system call's number
# Lines starting with "ncore:" are markers ncore reads. Every call is cast: stripped
# interpreters have no debug information for gdb to learn return types from. A command
# that fails ends this file; finish.gdb, sourced next, undoes what must not stay half-done.
#
# The safety rule. The main thread is where Python runs pending calls, so:
#  - running bytecode, or waiting for the GIL: queue Py_AddPendingCall(PyRun_SimpleString)
#    and let the interpreter run it at its next safe point;
#  - blocked in a system call with the GIL released, and not in a futex wait on the GIL
#    (a GIL waiter also reports PyGILState_Check() == 0, and a direct call there nests a
#    condition-variable wait and deadlocks): a pending call would never run, so call
#    PyGILState_Ensure + PyRun_SimpleString directly; other threads run meanwhile
#    (scheduler-locking stays off) and give the GIL up.
# The code goes into a fresh anonymous page, never into memory from the target's
# allocator: malloc may be the very function the thread was stopped in.

# Signals that reach the target while gdb holds it go on to it without stopping gdb: a
# stop during a call makes gdb abandon the call midway (a signal to another thread even
# leaves the call to return onto a breakpoint nobody serves once gdb has detached).
# Faults still stop, so that gdb unwinds a call that crashed (unwindonsignal);
# SIGTRAP stays gdb's own. `confirm off` answers the question changing SIGINT asks.
set confirm off
handle all nostop noprint pass
handle SIGINT nostop noprint pass
handle SIGSEGV SIGBUS SIGILL SIGFPE stop print
set $ncore_gil_taken = 0

# `thread 1` fails, ending this file, unless `attach` worked: the marker means attached.
thread 1
printf "ncore: attached\n"
set $ncore_in_syscall = $orig_rax >= 0
set $ncore_gil_waiter = $ncore_in_syscall && $orig_rax == $ncore_futex && $rdi >= $ncore_runtime_lo && $rdi < $ncore_runtime_hi
# Each call costs the target stopped time; the GIL question matters only in a system call.
if $ncore_in_syscall
  set $ncore_gil_held = (int) PyGILState_Check()
else
  set $ncore_gil_held = -1
end
printf "ncore: state syscall=%ld gil_held=%d gil_waiter=%d\n", $orig_rax, $ncore_gil_held, $ncore_gil_waiter

set $ncore_direct = $ncore_mode == 2 || ($ncore_mode == 0 && $ncore_in_syscall && !$ncore_gil_held && !$ncore_gil_waiter)
set $ncore_page_size = ($ncore_code_size + 4096) & ~4095
set $ncore_page = (char *) mmap(0, $ncore_page_size, 5, 0x22, -1, 0)
if $ncore_page == (char *) -1
  printf "ncore: error mmap failed in the target\n"
else
  eval "restore %s binary %lu", $ncore_code_file, $ncore_page
  if $ncore_direct
    printf "ncore: path direct\n"
    set $ncore_gil = (int) PyGILState_Ensure()
    set $ncore_gil_taken = 1
    set $ncore_result = (int) PyRun_SimpleString($ncore_page)
    call (void) PyGILState_Release($ncore_gil)
    set $ncore_gil_taken = 0
    call (int) munmap($ncore_page, $ncore_page_size)
  else
    printf "ncore: path pending\n"
    if $ncore_pending_at
      set $ncore_result = (int) Py_AddPendingCall($ncore_page + $ncore_pending_at, $ncore_page)
    else
      set $ncore_result = (int) Py_AddPendingCall(PyRun_SimpleString, $ncore_page)
    end
  end
  printf "ncore: result %d\n", $ncore_result
end
detach
printf "ncore: detached\n"
