"""What ncore knows about a process before touching it, and how it finds that out.

Everything comes from /proc, read without stopping the process. ``inspect`` refuses a
process that cannot be dumped (gone, not a process, ncore itself, a zombie, traced by
another debugger, stopped, not CPython, not ours to trace) with a typed error saying why
and what to do.
"""

from __future__ import annotations

import os

from . import arch
from .elf import ET_DYN, ElfFile, NotElf, read_elf
from .errors import AlreadyTraced, BadUsage, NcoreError, NoSuchProcess, NotPython, PermissionDenied, Stopped

PY_API = frozenset(
    {"Py_AddPendingCall", "PyRun_SimpleString", "PyGILState_Ensure", "PyGILState_Release", "PyGILState_Check"}
)
"""The functions every injection method calls; a process whose executable or libpython
does not export them is not treated as CPython."""

_WANTED = PY_API | {"_PyRuntime", "Py_Version"}
PYPANIC_MARK = "/memfd:pypanic (deleted)"
"""How pypanic's mark (pypanic/_beacon.py) shows in /proc/PID/maps: pypanic is loaded."""
_CAP_DAC_OVERRIDE = 1
_CAP_DAC_READ_SEARCH = 2
_CAP_SYS_PTRACE = 19
_WRITE_AND_SEARCH = 0o3
_SEARCH = 0o1


class ThreadState:
    """Where a thread is: running, or blocked in a system call (with its arguments)."""

    __slots__ = ("args", "running", "syscall", "wchan")

    def __init__(self, running: bool, syscall: int | None, args: tuple[int, ...], wchan: str) -> None:
        self.running = running
        self.syscall = syscall
        self.args = args
        self.wchan = wchan

    def describe(self, runtime: tuple[int, int] = (0, 0)) -> str:
        """``running``, ``waiting for the GIL`` (a futex inside ``runtime``, the address range
        of ``_PyRuntime``), ``blocked in select``..."""
        if self.running:
            return "running"
        if self.syscall is None:
            return f"blocked ({self.wchan or 'not in a system call'})"
        if self.waits_for_gil(runtime):
            return "waiting for the GIL"
        return f"blocked in {arch.syscall_name(self.syscall)}"

    def waits_for_gil(self, runtime: tuple[int, int]) -> bool:
        """Whether the thread sleeps on a futex inside ``_PyRuntime``: the GIL's, in practice."""
        return (
            self.syscall is not None
            and arch.is_futex(self.syscall)
            and bool(self.args)
            and runtime[0] <= self.args[0] < runtime[1]
        )


class Target:
    """A live CPython process, as found in /proc."""

    def __init__(
        self,
        pid: int,
        comm: str,
        uid: int,
        gid: int,
        root: str,
        same_mount_namespace: bool,
        python_binary: str,
        version: tuple[int, int] | None,
        runtime: tuple[int, int],
        functions: dict[str, int] | None = None,
        elf_machine: int = 0,
        maps: list[Mapping] | None = None,
        groups: frozenset[int] = frozenset(),
        capabilities: int = 0,
        start_time: str = "",
        cwd: str | None = None,
        pids: tuple[int, ...] = (),
    ) -> None:
        self.pid = pid
        self.pids = pids or (pid,)
        """The process's pid in each PID namespace from ncore's down to its own (the kernel's
        NSpid): ``(4242, 1)`` for the first process of a container."""
        self.comm = comm
        self.uid = uid
        self.gid = gid
        """The effective ids, which file access goes by (with ``groups`` and ``capabilities``)."""
        self.groups = groups | {gid}
        self.capabilities = capabilities
        """The effective capability set, as a bit mask."""
        self.root = root
        self.same_mount_namespace = same_mount_namespace
        self.python_binary = python_binary
        self.version = version
        self.runtime = runtime
        """Address range of ``_PyRuntime`` in the process (a GIL waiter's futex lies in it)."""
        self.functions = functions or {}
        """Where each function of PY_API is in the process."""
        self.elf_machine = elf_machine
        """The processor the Python binary is built for (ELF e_machine)."""
        self.maps = maps or []
        """The process's mappings when it was inspected."""
        self.start_time = start_time
        self.cwd = cwd
        """The working directory when the process was inspected, as ncore sees it (None: unknown)."""
        """When the process started (/proc/PID/stat), which tells it from a later one with its pid."""

    @property
    def nspid(self) -> list[int] | None:
        """``pids`` when the process is in a PID namespace below ncore's (a container), else None."""
        return list(self.pids) if len(self.pids) > 1 else None

    @property
    def version_text(self) -> str:
        return "unknown" if self.version is None else f"{self.version[0]}.{self.version[1]}"

    def host_path(self, inside: str) -> str:
        """A path as the target sees it, as the operator can open it.

        In another mount namespace that is ``/proc/PID/root/...``, valid while the target lives.
        """
        if self.same_mount_namespace:
            return os.path.join(self.root, inside.lstrip("/"))
        return f"/proc/{self.pid}/root{inside}"

    def inside_path(self, host: str) -> str | None:
        """A path as the operator sees it, as the target sees it; None if the target cannot."""
        host = os.path.abspath(host)
        if not self.same_mount_namespace:
            return None
        if self.root == "/":
            return host
        if host == self.root or host.startswith(self.root + "/"):
            return "/" + os.path.relpath(host, self.root).lstrip(".")
        return None

    def alive(self) -> bool:
        """Whether the process still runs (not gone, not a zombie); one short read of /proc."""
        return scheduler_state(self.pid, self.pid) not in ("Z", "X", "?")

    def main_thread(self) -> ThreadState:
        return thread_state(self.pid, self.pid)

    def cannot_write(self, directory: str) -> str | None:
        """Why this process could not create a file in ``directory`` (a path as ncore sees
        it, inside the process's root), or None.

        Judged as the kernel would from the process's ids, groups and capabilities, the
        modes of the directory and of every directory above it up to the process's root,
        and read-only mounts. ACLs, file attributes (chattr +i) and security modules are
        not read: what they forbid shows only when the dump is written.
        """
        path, need = os.path.abspath(directory), _WRITE_AND_SEARCH
        try:
            if os.statvfs(path).f_flag & os.ST_RDONLY:
                return f"{directory} is on a read-only mount"
            while True:
                info = os.stat(path)
                if not self._may(info, need):
                    import stat  # here: only a refusal needs the mode spelled out

                    doing = "create files in" if need == _WRITE_AND_SEARCH else "pass through"
                    return (
                        f"uid {self.uid} may not {doing} {path} ({stat.filemode(info.st_mode)}, owner uid "
                        f"{info.st_uid}, group {info.st_gid})"
                    )
                if path in (self.root, "/"):
                    return None
                path, need = os.path.dirname(path), _SEARCH
        except OSError as e:
            return f"{path}: {e.strerror}"

    def _may(self, info: os.stat_result, need: int) -> bool:
        """Whether the process may do ``need`` (mode bits: 2 write, 1 search) in a directory."""
        if self.capabilities >> _CAP_DAC_OVERRIDE & 1:
            return True
        if need == _SEARCH and self.capabilities >> _CAP_DAC_READ_SEARCH & 1:
            return True
        if info.st_uid == self.uid:
            bits = info.st_mode >> 6
        elif info.st_gid in self.groups:
            bits = info.st_mode >> 3
        else:
            bits = info.st_mode
        return bits & need == need


def pypanic_mark(pid: int, maps: list[Mapping]) -> str | None:
    """What pypanic's mark says (``pypanic 0.1.0``, the package's directory, and ``signal N``
    when it listens for a dump signal, one per line); None without a mark, ``""`` when it
    cannot be read. Read through the mark's open file when pypanic keeps it open (no right
    to trace needed), else through /proc/PID/mem."""
    for mapping in maps:
        if mapping.path == PYPANIC_MARK:
            opened = mark_file(pid)
            try:
                with open(opened or f"/proc/{pid}/mem", "rb", buffering=0) as f:
                    f.seek(0 if opened else mapping.start)
                    return f.read(512).split(b"\0", 1)[0].decode(errors="replace").strip()
            except OSError:
                return ""
    return None


def mark_file(pid: int) -> str | None:
    """``/proc/PID/fd/N`` when process ``pid`` keeps pypanic's mark open (it listens for a
    dump signal), else None."""
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    for name in names:
        path = f"/proc/{pid}/fd/{name}"
        try:
            if os.readlink(path) == PYPANIC_MARK:
                return path
        except OSError:
            continue
    return None


def listening_signal(mark: str | None) -> tuple[int, str] | None:
    """The signal (number, name) pypanic's mark says the process listens on for a dump, if any."""
    for line in (mark or "").splitlines()[2:]:
        word, number, name = [*line.split(" "), "", ""][:3]
        if word == "signal" and number.isdigit():
            return int(number), name or f"signal {number}"
    return None


def start_time_of(pid: int) -> str:
    """Process ``pid``'s start time in clock ticks since boot, ``""`` when there is no such
    process (or it is a zombie: it runs no more)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return ""
    return "" if fields[0] in (b"Z", b"X") else fields[19].decode()


def scheduler_state(pid: int, tid: int) -> str:
    """Thread ``tid``'s state letter in /proc (R running, S sleeping, D waiting for the disk,
    Z zombie...); ``?`` when it is gone."""
    try:
        with open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0].decode()
    except (OSError, IndexError):
        return "?"


def thread_state(pid: int, tid: int) -> ThreadState:
    """What thread ``tid`` of ``pid`` is doing, from /proc/PID/task/TID/syscall and wchan."""
    base = f"/proc/{pid}/task/{tid}"
    try:
        with open(f"{base}/syscall") as f:
            fields = f.read().split()
    except OSError:
        fields = []
    try:
        with open(f"{base}/wchan") as f:
            wchan = f.read().strip()
    except OSError:
        wchan = ""
    if not fields or fields[0] == "running":
        return ThreadState(True, None, (), wchan)
    number = int(fields[0])
    if number < 0:
        return ThreadState(False, None, (), wchan)
    return ThreadState(False, number, tuple(int(a, 16) for a in fields[1:7]), wchan)


def status(pid: int) -> dict[str, str]:
    """/proc/PID/status as a dict; NoSuchProcess when there is no such process."""
    fields = _status_file(f"/proc/{pid}/status")
    if fields is None:
        raise NoSuchProcess(
            f"there is no process {pid}", "check the pid with `ps` or `ncore ps`; the process may have exited"
        )
    return fields


def _status_file(path: str) -> dict[str, str] | None:
    """A status file of /proc as a dict; None when it is gone."""
    try:
        with open(path) as f:
            return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    except FileNotFoundError:
        return None


def tracer(pid: int) -> tuple[int, str, int] | None:
    """The first thread of ``pid`` another process traces: (thread id, its name, the
    tracer's pid); None when no thread is traced."""
    try:
        threads = sorted(os.listdir(f"/proc/{pid}/task"), key=int)
    except OSError:
        return None
    for tid in threads:
        fields = _status_file(f"/proc/{pid}/task/{tid}/status") or {}  # {}: the thread has just ended
        found = int(fields.get("TracerPid", "0"))
        if found:
            return int(tid), fields.get("Name", "?"), found
    return None


def already_traced(pid: int) -> AlreadyTraced | None:
    """The refusal for a process one of whose threads another tracer holds, or None."""
    traced = tracer(pid)
    if traced is None:
        return None
    tid, thread_name, tracer_pid = traced
    which = "process" if tid == pid else f"thread {tid} ({thread_name}) of process"
    return AlreadyTraced(
        f"{which} {pid} ({name_of(pid)}) is already traced by process {tracer_pid} ({name_of(tracer_pid)}): "
        "another debugger is attached",
        f"detach that debugger (or end process {tracer_pid}) and run ncore again",
    )


def attach_refused(pid: int, uid: int, who: str) -> NcoreError:
    """Why ``who`` (gdb, ptrace) could not attach to ``pid`` when the kernel said no:
    another tracer got there first, or ncore lacks the right (``uid``: the target's)."""
    return already_traced(pid) or PermissionDenied(
        f"{who} was not allowed to attach to process {pid}", permission_hint(uid)
    )


def name_of(pid: int) -> str:
    """The process's name (its comm), ``?`` when it is gone."""
    try:
        return status(pid).get("Name", "?")
    except NoSuchProcess:
        return "?"


def yama_scope() -> int | None:
    """kernel.yama.ptrace_scope (0 to 3), or None where there is no Yama."""
    try:
        with open("/proc/sys/kernel/yama/ptrace_scope") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def may_trace_anyone() -> bool:
    """Whether ncore has CAP_SYS_PTRACE (root, or the capability given)."""
    return bool(int(status(os.getpid()).get("CapEff", "0"), 16) >> _CAP_SYS_PTRACE & 1)


def permission_hint(target_uid: int) -> str:
    """How to get the right to trace a process owned by ``target_uid``."""
    if os.geteuid() != 0 and os.geteuid() != target_uid:
        return f"run ncore as the target's user (uid {target_uid}) or as root (sudo ncore ...)"
    scope = yama_scope() or 0
    if scope >= 3:
        return "kernel.yama.ptrace_scope is 3: no process may be traced until the next reboot"
    if not may_trace_anyone() and scope:
        return (
            f"kernel.yama.ptrace_scope is {scope}: only root, or a process with CAP_SYS_PTRACE, may trace "
            "a process that is not its child: run ncore as root; in a container add the capability (docker run "
            "--cap-add=SYS_PTRACE, or capabilities.add: [SYS_PTRACE] in a Kubernetes securityContext); or "
            "let processes trace non-children: sysctl kernel.yama.ptrace_scope=0"
        )
    if not may_trace_anyone() and os.geteuid() != target_uid:
        return (
            "give ncore CAP_SYS_PTRACE: run it as root; in a container add the capability (docker run "
            "--cap-add=SYS_PTRACE, or capabilities.add: [SYS_PTRACE] in a Kubernetes securityContext)"
        )
    return (
        "a seccomp filter or a security module (SELinux, AppArmor) forbids ptrace here, or the process made "
        "itself undumpable (prctl PR_SET_DUMPABLE 0): in a container, docker run --cap-add=SYS_PTRACE "
        "--security-opt seccomp=unconfined, or kubectl debug --profile=general"
    )


class Mapping:
    """One line of /proc/PID/maps."""

    __slots__ = ("end", "offset", "path", "perms", "start")

    def __init__(self, start: int, end: int, perms: str, offset: int, path: str) -> None:
        self.start = start
        self.end = end
        self.perms = perms
        self.offset = offset
        self.path = path

    @property
    def name(self) -> str:
        """The mapping's entry in /proc/PID/map_files."""
        return f"{self.start:x}-{self.end:x}"


def mappings(pid: int) -> list[Mapping]:
    """Every mapping of ``pid``, in address order."""
    found = []
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            parts = line.rstrip("\n").split(None, 5)
            start, end = (int(x, 16) for x in parts[0].split("-"))
            found.append(Mapping(start, end, parts[1], int(parts[2], 16), parts[5] if len(parts) == 6 else ""))
    return found


def python_binary(pid: int, maps: list[Mapping]) -> tuple[ElfFile, str, int]:
    """The ELF file that exports the Py* API, its path as /proc shows it, and its load bias.

    A mapped file is opened through /proc/PID/map_files, which works whatever root or
    mount namespace the target is in and even when the file was deleted (an upgrade).
    """
    first_mapping = {}
    for mapping in maps:
        if mapping.offset == 0 and mapping.path.startswith("/") and mapping.path not in first_mapping:
            first_mapping[mapping.path] = mapping
    libraries = sorted(path for path in first_mapping if _is_libpython(path))
    exe = os.readlink(f"/proc/{pid}/exe")
    for path in [*libraries, exe]:
        mapped = first_mapping.get(path)
        elf = _read_mapped(pid, path, mapped)
        if elf is None:
            continue
        if elf.symbols.keys() >= PY_API:
            bias = 0
            if elf.type == ET_DYN and mapped:
                bias = mapped.start - (elf.first_load_vaddr & ~0xFFF)
            return elf, path, bias
    raise NotPython(
        f"process {pid} ({os.path.basename(exe)}) does not look like CPython: neither its executable nor a "
        "mapped libpython exports the Py* API ncore calls",
        "ncore dumps CPython processes only; check the pid (`ncore ps` lists the Python processes)",
    )


def _read_mapped(pid: int, path: str, mapped: Mapping | None) -> ElfFile | None:
    """The ELF file mapped at ``mapped`` (or the executable), or None if it is not one.

    /proc/PID/map_files needs CAP_SYS_ADMIN; without it the file is opened through the
    target's root, which works for the target's own user.
    """
    openings = [f"/proc/{pid}/map_files/{mapped.name}", f"/proc/{pid}/root{path}"] if mapped else [f"/proc/{pid}/exe"]
    for opened in openings:
        try:
            return read_elf(opened, _WANTED)
        except PermissionError:
            continue
        except (OSError, NotElf):
            return None
    return None


def runtime_span(elf: ElfFile, bias: int) -> tuple[int, int]:
    """Where ``_PyRuntime`` lies in the process ((0, 0) if ``elf`` does not say)."""
    runtime = elf.symbols.get("_PyRuntime")
    if runtime is None:
        return 0, 0
    return bias + runtime.value, bias + runtime.value + runtime.size


def version_of(elf: ElfFile, name: str) -> tuple[int, int] | None:
    """The (major, minor) version of the CPython in ``elf`` (named ``name``), if known."""
    symbol = elf.symbols.get("Py_Version")
    data = elf.read(symbol.value, 4) if symbol is not None else None
    if data is not None and len(data) == 4:
        hexversion = int.from_bytes(data, "little")
        return hexversion >> 24, hexversion >> 16 & 0xFF
    return _version_in_name(name)


def _is_libpython(path: str) -> bool:
    """``.../libpython3.12.so.1.0``, ``libpython3.14t.so``, ``libpython3.9d.so``."""
    name = os.path.basename(path)
    return name.startswith("libpython3.") and _version_in_name(name) is not None and ".so" in name


def _version_in_name(name: str) -> tuple[int, int] | None:
    """(3, 12) from a name holding ``python3.12``; None if there is none."""
    start = name.rfind("python3.")
    if start < 0:
        return None
    digits = name[start + len("python3.") :]
    minor = digits[: len(digits) - len(digits.lstrip("0123456789"))]
    return (3, int(minor)) if minor else None


def inspect(pid: int, refuse_traced: bool = True) -> Target:
    """Everything ncore needs to know about ``pid`` before attaching; refuses what it must
    (a traced process too, unless ``refuse_traced`` is False: the caller checks that later,
    with ``already_traced``)."""
    if pid <= 0:
        raise BadUsage(f"{pid} is not a process id", "give the pid of the Python process to dump, e.g. `ncore 1369`")
    if pid == os.getpid():
        raise NotPython("that pid is ncore itself", "give the pid of the Python process to dump")
    fields = status(pid)
    comm = fields.get("Name", "?")
    state = fields.get("State", "?")
    uid = int(fields.get("Uid", "0").split()[1])
    gid = int(fields.get("Gid", "0").split()[1])
    process = int(fields.get("Tgid", pid))
    if process != pid:
        raise BadUsage(
            f"{pid} is a thread ({comm}) of process {process}, not a process",
            f"give the process's pid: ncore {process}",
        )
    if state[0] in "ZX":
        raise NotPython(
            f"process {pid} ({comm}) is a zombie: it has exited and only waits for its parent to collect it",
            "there is nothing left to dump; look for the dump it may have written, or at its parent",
        )
    traced = already_traced(pid) if refuse_traced else None
    if traced is not None:
        raise traced
    if state[0] == "T":
        raise Stopped(
            f"process {pid} ({comm}) is stopped (by SIGSTOP, SIGTSTP or Ctrl-Z): it cannot run the dump "
            "until it is continued; nothing was done to it",
            f"continue it with `kill -CONT {pid}` and run ncore again",
        )
    try:
        maps = mappings(pid)
        elf, inside, bias = python_binary(pid, maps)
        root = os.readlink(f"/proc/{pid}/root")
        same_ns = os.stat(f"/proc/{pid}/ns/mnt").st_ino == os.stat("/proc/self/ns/mnt").st_ino
    except PermissionError:
        raise PermissionDenied(
            f"not allowed to inspect process {pid} ({comm}, uid {uid})", permission_hint(uid)
        ) from None
    except FileNotFoundError:
        raise NoSuchProcess(f"process {pid} exited while ncore was looking at it") from None
    functions = {name: bias + elf.symbols[name].value for name in PY_API}
    return Target(
        pid=pid,
        comm=comm,
        uid=uid,
        gid=gid,
        root=root,
        same_mount_namespace=same_ns,
        python_binary=inside,
        version=version_of(elf, inside),
        runtime=runtime_span(elf, bias),
        functions=functions,
        elf_machine=elf.machine,
        maps=maps,
        groups=frozenset(int(g) for g in fields.get("Groups", "").split()),
        capabilities=int(fields.get("CapEff", "0"), 16),
        start_time=start_time_of(pid),
        pids=tuple(int(p) for p in fields.get("NSpid", str(pid)).split()),
        cwd=_working_directory(pid),
    )


def _working_directory(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return None
