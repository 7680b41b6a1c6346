# finish.gdb: sourced after inject.gdb, whether that ran to its end or stopped at a
# failed command (gdb then goes on with the next command-line command).
#
# A direct call abandoned after PyGILState_Ensure (gdb unwinds a call that faults, or
# that fails for any other reason) would leave the GIL taken by the main thread, and
# every other thread of the target waiting for it forever: give it back (unless the call
# ended the process: a panic).

if $ncore_gil_taken && $_thread
  call (void) PyGILState_Release($ncore_gil)
  set $ncore_gil_taken = 0
  printf "ncore: released the GIL after the abandoned call\n"
end
