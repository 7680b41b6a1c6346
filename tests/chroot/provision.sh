#!/bin/bash
# Provision a Debian sid chroot with a modern gdb and CPython 3.13/3.14/3.15.
#
# Usage: tests/chroot/provision.sh DIR
#
# The host (Debian 12) gdb 13.1 cannot call functions in inferiors on CPUs
# with AMX (11008-byte xsave area), so the tests run sid's gdb from this
# chroot, and also use sid's interpreters as targets.
#
# Idempotent: if DIR/.provisioned exists and holds the same package list,
# exit 0 immediately and silently.  Otherwise build into DIR.tmp and rename
# it to DIR only when complete.  Nothing stays mounted (see run-in.sh for
# mounting /proc when running things in the chroot).  Needs root.
set -euo pipefail

# The Debian mirror apt already uses (NCORE_DEBIAN_MIRROR overrides it).
apt_mirror() {
    local uri
    uri=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | head -n1 || true)
    if [ -z "$uri" ]; then
        uri=$(grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
            | sed -E 's/^deb (\[[^]]*\] )?//' | awk '{print $1}' | grep -v security | head -n1 || true)
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}
MIRROR=${NCORE_DEBIAN_MIRROR:-$(apt_mirror)}
SUITE=sid
# python3.13 still exists in sid (3.13.x) as of writing; the tests strictly
# need only 3.14, 3.15 and gdb >= 14.  If python3.13 is dropped from sid,
# remove it here (changing this list forces a rebuild via the stamp).
PACKAGES=python3.13,python3.14,python3.15,gdb
STAMP_CONTENT="suite=$SUITE packages=$PACKAGES"

die() { echo "provision.sh: $*" >&2; exit 1; }

[ $# -eq 1 ] || die "usage: $0 DIR"
DIR=$(realpath -m -- "$1")
[ "$DIR" != / ] || die "refusing to use / as DIR"

# Fast path: complete chroot with the same package list.
if [ -f "$DIR/.provisioned" ] && [ "$(cat "$DIR/.provisioned")" = "$STAMP_CONTENT" ]; then
    exit 0
fi

[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap/chroot)"
# Never clobber a directory that is not one of our (possibly stale) chroots.
if [ -e "$DIR" ] && [ ! -f "$DIR/.provisioned" ] && [ -n "$(ls -A "$DIR" 2>/dev/null)" ]; then
    die "$DIR exists, is not empty and has no .provisioned stamp; remove it yourself"
fi

mkdir -p "$(dirname "$DIR")"
exec 9>"$DIR.lock"
flock 9
# Another process may have finished the job while we waited for the lock.
if [ -f "$DIR/.provisioned" ] && [ "$(cat "$DIR/.provisioned")" = "$STAMP_CONTENT" ]; then
    exit 0
fi

# --- host packages (only when missing) -------------------------------------
# Those that build the chroot, and less (ncore show --pager's test pages through it).
missing=()
for pkg in debootstrap debian-archive-keyring gpgv wget xz-utils less; do
    dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null | grep -q '^install ok installed$' \
        || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    aptlog=$(mktemp /tmp/provision-apt.XXXXXX)
    apt_install() {
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            --no-install-recommends "${missing[@]}" >>"$aptlog" 2>&1
    }
    apt_install || { apt-get update -qq >>"$aptlog" 2>&1 && apt_install; } \
        || { cat "$aptlog" >&2; die "apt-get install ${missing[*]} failed"; }
    rm -f "$aptlog"
fi

# --- helpers ----------------------------------------------------------------
WORK="$DIR.work"                 # scratch (keyring, logs); beside DIR so a
LOG="$WORK/debootstrap.log"      # killed run's leftovers get cleaned next time

umount_below() {  # unmount everything mounted at or below $1, deepest first
    local mnt
    [ -e "$1" ] || return 0
    findmnt -rn -o TARGET | awk -v d="$1" 'index($0, d"/") == 1 || $0 == d' \
        | sort -r | while read -r mnt; do
        umount "$mnt" 2>/dev/null || umount -l "$mnt"
    done
}
remove_tree() {
    [ -e "$1" ] || return 0
    umount_below "$1"
    rm -rf --one-file-system -- "$1"
}
cleanup() {
    local rc=$?
    if [ $rc -ne 0 ]; then
        if [ -s "$LOG" ] && [ -d "$WORK" ]; then
            echo "provision.sh: failed; last lines of $LOG:" >&2
            tail -n 30 "$LOG" >&2
        fi
        remove_tree "$DIR.tmp"
        # keep the log for inspection, drop everything else
        find "$WORK" -mindepth 1 ! -name debootstrap.log -exec rm -rf {} + 2>/dev/null || true
    else
        rm -rf -- "$WORK"
    fi
}
trap cleanup EXIT

# Print "yes" if InRelease file $2 carries a valid signature by a key in $1.
# (debootstrap itself accepts a Release file when ANY signature is valid.)
valid_sig() {
    gpgv --status-fd 1 --keyring "$1" "$2" 2>/dev/null | grep -q '^\[GNUPG:\] VALIDSIG '
}

# Pick a keyring that can verify sid's InRelease.  Preferred: the host's
# debian-archive-keyring (bookworm's 2023.3+deb12u2 has the trixie key,
# which signs sid today).  When sid moves to keys bookworm's keyring lacks,
# fetch the current debian-archive-keyring .deb from the `stable` suite via a
# verified chain (host key -> stable InRelease -> Packages hash -> .deb
# hash) and use that.  We never fall back to --no-check-gpg.
pick_keyring() {
    local host_kr=/usr/share/keyrings/debian-archive-keyring.gpg suite rel pk line
    local fn sha got
    wget -q -O "$WORK/sid.InRelease" "$MIRROR/dists/$SUITE/InRelease" \
        || die "cannot download $MIRROR/dists/$SUITE/InRelease"
    if [ "${PROVISION_FORCE_KEYRING_FETCH:-0}" != 1 ] && valid_sig "$host_kr" "$WORK/sid.InRelease"; then
        KEYRING=$host_kr; return
    fi
    for suite in stable testing; do
        rel="$WORK/$suite.InRelease"
        wget -q -O "$rel" "$MIRROR/dists/$suite/InRelease" || continue
        valid_sig "$host_kr" "$rel" || continue
        pk="$WORK/$suite.Packages"
        wget -q -O "$pk.xz" "$MIRROR/dists/$suite/main/binary-all/Packages.xz" || continue
        # sha256 of main/binary-all/Packages.xz as listed (and signed) in InRelease
        line=$(awk '/^SHA256:/{s=1;next} /^[^ ]/{s=0} s && $3=="main/binary-all/Packages.xz"{print $1}' "$rel")
        [ -n "$line" ] && [ "$(sha256sum < "$pk.xz" | cut -d' ' -f1)" = "$line" ] || continue
        xz -dc "$pk.xz" > "$pk"
        fn=$(awk '/^Package: /{p=$2} p=="debian-archive-keyring" && /^Filename: /{print $2; exit}' "$pk")
        sha=$(awk '/^Package: /{p=$2} p=="debian-archive-keyring" && /^SHA256: /{print $2; exit}' "$pk")
        [ -n "$fn" ] && [ -n "$sha" ] || continue
        wget -q -O "$WORK/keyring.deb" "$MIRROR/$fn" || continue
        got=$(sha256sum < "$WORK/keyring.deb" | cut -d' ' -f1)
        [ "$got" = "$sha" ] || continue
        rm -rf "$WORK/keyring"; dpkg-deb -x "$WORK/keyring.deb" "$WORK/keyring"
        if valid_sig "$WORK/keyring/usr/share/keyrings/debian-archive-keyring.gpg" "$WORK/sid.InRelease"; then
            KEYRING=$WORK/keyring/usr/share/keyrings/debian-archive-keyring.gpg; return
        fi
    done
    die "no keyring can verify $SUITE's InRelease (host keyring too old and $MIRROR stable/testing keyring did not help)"
}

# --- build --------------------------------------------------------------------
echo "provision.sh: building $SUITE chroot in $DIR (takes a few minutes)..." >&2
remove_tree "$DIR.tmp"          # leftovers of an interrupted run
rm -rf -- "$WORK"; mkdir -p "$WORK"
pick_keyring

debootstrap --variant=minbase --include="$PACKAGES" --keyring="$KEYRING" \
    "$SUITE" "$DIR.tmp" "$MIRROR" >"$LOG" 2>&1 \
    || die "debootstrap failed (log: $LOG)"

# debootstrap unmounts what it mounted, but make sure before renaming.
umount_below "$DIR.tmp"
chroot "$DIR.tmp" apt-get clean >>"$LOG" 2>&1 || true
rm -rf "$DIR.tmp"/var/lib/apt/lists/* 2>/dev/null || true

# Sanity checks: the binaries the tests rely on must run in the chroot.
for bin in gdb python3.14 python3.15; do
    chroot "$DIR.tmp" "$bin" --version >>"$LOG" 2>&1 || die "$bin does not run in chroot (log: $LOG)"
done

printf '%s\n' "$STAMP_CONTENT" > "$DIR.tmp/.provisioned"   # written last

# Swap into place: a previous (stale) chroot is removed first.
remove_tree "$DIR"
mv -T -- "$DIR.tmp" "$DIR"
echo "provision.sh: done: $DIR" >&2
