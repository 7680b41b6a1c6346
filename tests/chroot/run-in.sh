#!/bin/bash
# Run a command inside the chroot made by provision.sh.
#
# Usage: tests/chroot/run-in.sh DIR CMD [ARGS...]
#        tests/chroot/run-in.sh --umount DIR     (undo the /proc mount)
#
# Mounts a proc filesystem at DIR/proc if nothing is mounted there yet
# (idempotent; it stays mounted for later calls), then execs `chroot DIR CMD`.
# /proc is needed inside the chroot for gdb -p, /proc/PID/root sysroots, etc.
# The chroot shares the host's PID namespace, so PIDs are the same on both sides.
set -euo pipefail

die() { echo "run-in.sh: $*" >&2; exit 1; }

if [ "${1:-}" = --umount ]; then
    [ $# -eq 2 ] || die "usage: $0 --umount DIR"
    DIR=$(realpath -- "$2")
    if mountpoint -q "$DIR/proc"; then umount "$DIR/proc" || umount -l "$DIR/proc"; fi
    exit 0
fi

[ $# -ge 2 ] || die "usage: $0 DIR CMD [ARGS...]"
DIR=$(realpath -- "$1"); shift
[ -f "$DIR/.provisioned" ] || die "$DIR is not a provisioned chroot (run provision.sh)"

if ! mountpoint -q "$DIR/proc"; then
    # flock: concurrent callers must not stack several proc mounts.
    exec 9>"$DIR.lock"
    flock 9
    mountpoint -q "$DIR/proc" || mount -t proc proc "$DIR/proc"
    exec 9>&-
fi

exec chroot "$DIR" "$@"
