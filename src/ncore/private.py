"""ncore's private directories in a target's /tmp: made, locked while in use, and swept when left.

Each dump gets a fresh directory the target can see (mode 0700, owned by the target's
user), for the payload, its parameters and its answer. Beside it, one lock file per target
process lets only one ncore at a time dump that process (two at once can make CPython 3.11
re-enter its pending-call machinery forever).

A directory is in use while its ``lock`` file is locked: shared by the ncore that made it,
for as long as it lives, and by the payload while it runs. The lock file is owned by
ncore's user and is made under another name and renamed into place once locked, so that a
directory is never seen unlocked half made. A directory nobody locks any more, or left
without its lock file by an ncore that died making or removing it, is swept by the next
ncore that uses the same /tmp: removed, unless its request may still run (it
was queued and not yet taken, and its process lives), in which case the payload removes
it itself when it runs. Only directories whose lock file belongs to ncore's own user are
touched, and everything is opened without following links. A request for the process
about to be dumped, left by an ncore that is gone, is withdrawn first (see ``_judge``).

Nothing here imports more than ``os``: it is on every dump's path.
"""

from __future__ import annotations

import fcntl
import os
import time

from .errors import AlreadyTraced, NcoreError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from .target import Target

PARENTS = ("/tmp", "/var/tmp", "/dev/shm")
"""Where, in the target's root, the private directories go: the first that takes them."""
PREFIX = "ncore."
LOCK_PREFIX = ".ncore-lock."
RUNNING_PREFIX = ".ncore-run."
"""The per-process files beside the directories: ``<prefix><pid>.<start time>``."""
LOCK = "lock"
REQUEST = "target"
"""``<pid> <start time> <method>``: the process the request is for, and how it was sent."""
QUEUED = "queued"
"""Written once the method has queued the request (the target will run it later)."""
_POLL_SECONDS = 0.01
HALF_MADE_SECONDS = 5.0
"""A directory still without its lock this long after its lock file was made was abandoned."""
_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def alone(fd: int) -> bool:
    """Whether the lock on ``fd``'s file can be had exclusively, nobody else holding it; if
    so, ``fd`` holds it so now."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def held(path: str | None) -> bool:
    """Whether anyone holds a lock on the file at ``path`` (None, or no such file: nobody)."""
    if path is None:
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return not alone(fd)
    finally:
        os.close(fd)


class Place:
    """The directory (one of PARENTS in the target's root) where ncore works for a target."""

    def __init__(self, target: Target) -> None:
        failures = []
        for parent in PARENTS:
            try:
                fd = os.open(target.host_path(parent), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError as e:
                failures.append(f"{parent}: {e.strerror}")
                continue
            if os.access(f"/proc/self/fd/{fd}", os.W_OK):
                self.fd, self.inside = fd, parent
                return
            failures.append(f"{parent}: not writable")
            os.close(fd)
        raise NcoreError(
            f"found no directory the target can read to put the payload in ({'; '.join(failures)})",
            "make /tmp writable in the target's root",
        )

    def running_lock(self, target: Target) -> tuple[str, str]:
        """The process's running lock (mode 0644: the target's pending calls lock it, see
        ncore.methods.page_image), made if missing; its path as ncore and as the target see it."""
        name = f"{RUNNING_PREFIX}{target.pid}.{target.start_time}"
        _open_shared_file(self.fd, name)
        inside = f"{self.inside}/{name}"
        return target.host_path(inside), inside

    def close(self) -> None:
        os.close(self.fd)


def _open_shared_file(directory: int, name: str) -> int:
    """An open (read-only) file ``name`` in ``directory``, made (mode 0644) if missing.

    Without O_CREAT first: a sticky /tmp refuses O_CREAT on another user's file
    (fs.protected_regular), and the file another ncore's user made must still serve.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    while True:
        try:
            fd = os.open(name, flags, dir_fd=directory)
        except FileNotFoundError:
            pass
        else:
            return fd
        try:
            fd = os.open(name, flags | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=directory)
        except FileExistsError:
            continue
        if os.geteuid() == 0:
            os.fchmod(fd, 0o644)  # whatever root's umask
        return fd


class TargetLock:
    """The lock that lets one ncore at a time dump a process: a file per process (pid and
    start time), locked exclusively, removed by its holder."""

    def __init__(self, place: Place, target: Target) -> None:
        self.place = place
        self.name = f"{LOCK_PREFIX}{target.pid}.{target.start_time}"
        self.fd: int | None = None

    def acquire(self, deadline: float, check: Callable[[], None]) -> None:
        """Wait for the lock until ``deadline``; AlreadyTraced if another ncore keeps it.
        ``check()`` is called while waiting (it raises to stop the wait)."""
        while True:
            fd = self._open()
            if alone(fd):
                if self._still_linked(fd):
                    self.fd = fd
                    return
                os.close(fd)  # its holder removed it meanwhile: take the new one
                continue
            os.close(fd)
            check()
            if time.monotonic() > deadline:
                raise AlreadyTraced(
                    "another ncore is dumping this process now (two dumps of one process at once are refused)",
                    "wait for it to finish and run ncore again, or give a longer --timeout to wait for it",
                )
            time.sleep(_POLL_SECONDS)

    def _open(self) -> int:
        return _open_shared_file(self.place.fd, self.name)

    def _still_linked(self, fd: int) -> bool:
        try:
            return os.stat(self.name, dir_fd=self.place.fd, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.unlink(self.name, dir_fd=self.place.fd)
        except OSError:
            pass  # another user's file in a sticky /tmp: it stays, and serves the next ncore
        os.close(self.fd)
        self.fd = None


class PrivateDirectory:
    """A directory only the target's user can read, in use (locked) until released.

    It is worked on through file descriptors, so that it can still be removed when the
    path that reached it (``/proc/PID/root/...``) went away with the target.
    """

    def __init__(self, place: Place, target: Target, method: str) -> None:
        self.target = target
        self.parent_fd = place.fd
        self.name = _fresh_directory(place.fd)
        self.host = target.host_path(f"{place.inside}/{self.name}")
        self.inside = f"{place.inside}/{self.name}"
        self.fd = os.open(self.name, _DIRECTORY, dir_fd=place.fd)
        self._own(self.fd)
        self.lock_fd = _make_lock(self.fd)
        self.package_fd: int | None = None
        self.write(REQUEST, f"{target.pid} {target.start_time} {method}".encode())

    def _own(self, fd: int) -> None:
        if os.geteuid() == 0:
            os.fchown(fd, self.target.uid, self.target.gid)

    def write(self, name: str, data: bytes, directory: int | None = None) -> str:
        """Create file ``name`` (it must not exist) holding ``data``; its path for the operator."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(name, flags, 0o600, dir_fd=self.fd if directory is None else directory)
        try:
            os.write(fd, data)
            self._own(fd)
        finally:
            os.close(fd)
        return os.path.join(self.host, name)

    def exists(self, name: str) -> bool:
        try:
            os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except OSError:
            return False
        return True

    def read(self, name: str) -> bytes | None:
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.fd)
        except OSError:
            return None
        with open(fd, "rb") as f:
            return f.read()

    def rename(self, old: str, new: str) -> bool:
        """Rename an entry; False when ``old`` is not there (someone else took it)."""
        try:
            os.rename(old, new, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except FileNotFoundError:
            return False
        return True

    def copy_package(self, source: str, name: str) -> None:
        """Copy the modules of package directory ``source`` into subdirectory ``name``."""
        os.mkdir(name, 0o700, dir_fd=self.fd)
        self.package_fd = os.open(name, _DIRECTORY, dir_fd=self.fd)
        self._own(self.package_fd)
        for module in sorted(os.listdir(source)):
            if module.endswith(".py"):
                with open(os.path.join(source, module), "rb") as f:
                    self.write(module, f.read(), self.package_fd)

    def release(self, remove: bool) -> None:
        """Stop using the directory: remove it (``remove``), or leave it to the payload that
        still needs it, which removes it when it finds ncore gone. Never raises."""
        if remove:
            _remove_contents(self.fd)
            try:
                os.rmdir(self.name, dir_fd=self.parent_fd)
            except OSError:
                pass
        if self.package_fd is not None:
            os.close(self.package_fd)
        os.close(self.lock_fd)
        os.close(self.fd)


def _fresh_directory(parent_fd: int) -> str:
    """Create a directory no one else can have made (mode 0700) in ``parent_fd``; its name."""
    while True:
        name = f"{PREFIX}{os.urandom(6).hex()}"
        try:
            os.mkdir(name, 0o700, dir_fd=parent_fd)
            return name
        except FileExistsError:
            continue


def _make_lock(directory: int) -> int:
    """The directory's lock file, locked shared (for readers: mode 0644, owned by ncore's user)."""
    flags = os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(f"{LOCK}.new", flags, 0o644, dir_fd=directory)
    fcntl.flock(fd, fcntl.LOCK_SH)
    os.rename(f"{LOCK}.new", LOCK, src_dir_fd=directory, dst_dir_fd=directory)
    return fd


def _remove_contents(directory: int, depth: int = 2) -> None:
    """Remove every entry of ``directory`` and, ``depth`` levels down, of its subdirectories
    (the carried pypanic, and the bytecode a target compiled for it in ``__pycache__``);
    links are removed, never followed; never raises (what cannot go, stays)."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for entry in names:
        try:
            os.unlink(entry, dir_fd=directory)
            continue
        except IsADirectoryError:
            pass
        except OSError:
            continue
        if depth == 0:
            continue
        try:
            inner = os.open(entry, _DIRECTORY, dir_fd=directory)
        except OSError:
            continue
        try:
            _remove_contents(inner, depth - 1)
        finally:
            os.close(inner)
        try:
            os.rmdir(entry, dir_fd=directory)
        except OSError:
            pass


def sweep(place: Place, target: Target, still_queued: Callable[[int, str, str], bool]) -> list[str]:
    """Remove the directories in ``place`` that no ncore and no payload use any more and
    whose request can no longer run; the names of those in use for ``target`` (a dump of
    it still under way).

    ``still_queued(pid, method, path)`` says whether a request sent by ``method`` whose
    code is at ``path`` (as the target sees it) may still be run by process ``pid``.
    """
    busy: list[str] = []
    try:
        entries = os.listdir(place.fd)
    except OSError:
        return busy
    for name in entries:
        if name.startswith((LOCK_PREFIX, RUNNING_PREFIX)):
            _remove_if_process_gone(place.fd, name)
    for name in (name for name in entries if name.startswith(PREFIX)):
        try:
            fd = os.open(name, _DIRECTORY, dir_fd=place.fd)
        except OSError:
            continue
        try:
            verdict = _judge(fd, target, f"{place.inside}/{name}", still_queued)
            if verdict == "busy":
                busy.append(name)
            elif verdict == "stale":
                _remove_contents(fd)
                try:
                    os.rmdir(name, dir_fd=place.fd)
                except OSError:
                    pass
        finally:
            os.close(fd)
    return busy


def _judge(directory: int, target: Target, inside: str, still_queued: Callable[[int, str, str], bool]) -> str:
    """``busy`` (in use, for ``target``), ``used`` (in use, or kept for a queued request, or
    not ncore's), or ``stale`` (to remove); locked exclusively while judged and removed.

    A request for ``target`` itself that nobody uses is withdrawn: the dump about to be
    queued replaces it, and two requests in a process's queue at once can stall it (CPython
    3.11 checks its pending calls at every instruction while one of them runs)."""
    try:
        lock = os.open(LOCK, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=directory)
    except OSError:
        return "stale" if _abandoned_without_lock(directory) else "used"
    try:
        if os.fstat(lock).st_uid != os.geteuid():
            return "used"
        request = _read(directory, REQUEST).split()
        mine = request[:2] == [str(target.pid), str(target.start_time)]
        if not alone(lock):
            return "busy" if mine else "used"
        if len(request) != 3 or not _alive(int(request[0]), request[1]):
            return "stale"
        if mine:
            _withdraw(directory)
        elif _exists(directory, "params") and _exists(directory, QUEUED):
            return "used"  # another process's request, still to run: its payload removes the directory
        return "used" if still_queued(int(request[0]), request[2], f"{inside}/code.py") else "stale"
    finally:
        os.close(lock)


def _abandoned_without_lock(directory: int) -> bool:
    """Whether a directory without its lock was left by an ncore that died making it (its
    lock file still under its first name, or not made yet) or removing it (the lock file
    already gone): nothing in it has changed for longer than making a directory takes, and
    the directory (or its lock file) is this user's; with a lock file, nobody holds it."""
    try:
        fd = os.open(f"{LOCK}.new", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=directory)
    except FileNotFoundError:
        info = os.fstat(directory)
        mine = info.st_uid == os.geteuid() or os.geteuid() == 0
        return mine and time.time() - info.st_mtime >= HALF_MADE_SECONDS
    except OSError:
        return False
    try:
        info = os.fstat(fd)
        young = time.time() - info.st_mtime < HALF_MADE_SECONDS
        return info.st_uid == os.geteuid() and not young and alone(fd)
    finally:
        os.close(fd)


def _withdraw(directory: int) -> None:
    try:
        os.rename("params", "withdrawn", src_dir_fd=directory, dst_dir_fd=directory)
    except OSError:
        pass


def _remove_if_process_gone(directory: int, name: str) -> None:
    """Remove a per-process file of ncore's user once its process has exited."""
    pid, _, start = name.split(".", 2)[-1].partition(".")
    if not pid.isdigit() or _alive(int(pid), start):
        return
    try:
        if os.stat(name, dir_fd=directory, follow_symlinks=False).st_uid == os.geteuid():
            os.unlink(name, dir_fd=directory)
    except OSError:
        pass


def _read(directory: int, name: str) -> str:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=directory)
    except OSError:
        return ""
    with open(fd, "rb") as f:
        return f.read(200).decode(errors="replace")


def _exists(directory: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=directory, follow_symlinks=False)
    except OSError:
        return False
    return True


def _alive(pid: int, start_time: str) -> bool:
    """Whether process ``pid`` is the one that started at ``start_time`` and still runs."""
    from .target import start_time_of

    return start_time_of(pid) == start_time
