"""The facts about a live process that /proc gives, in the shape of pypanic's dump keys.

Read without stopping the process, for a dump read from outside (ncore.outside): its
command line, working directory, environment (as it was at exec: later changes live in
the process's memory only), start time, memory, identity, limits and CPU use. A file
that cannot be read leaves its fact unknown, never an error.
"""

from __future__ import annotations

import os
from typing import Any

from .outside import Process
from .target import Target, pypanic_mark, status

_LIMIT_NAMES = {
    "Max cpu time": "cpu",
    "Max file size": "fsize",
    "Max data size": "data",
    "Max stack size": "stack",
    "Max core file size": "core",
    "Max resident set": "rss",
    "Max processes": "nproc",
    "Max open files": "nofile",
    "Max locked memory": "memlock",
    "Max address space": "as",
}
"""/proc/PID/limits' rows, by the names pypanic's ``panic.resources.rlimits`` uses."""


def read(target: Target) -> Process:
    pid = target.pid
    process = Process(pid)
    process.pids = list(target.pids)
    fields = status(pid)
    process.argv = _split(_read(f"/proc/{pid}/cmdline"))
    process.cwd = _link(f"/proc/{pid}/cwd")
    environ = _read(f"/proc/{pid}/environ")
    if environ is not None:
        process.env = dict(item.split("=", 1) for item in _split(environ) or [] if "=" in item)
    process.started = _start_time(pid)
    process.memusage = {
        "rss": _kilobytes(fields, "VmRSS"),
        "vsize": _kilobytes(fields, "VmSize"),
        "heapTotal": _kilobytes(fields, "VmData"),
        "heapUsed": _kilobytes(fields, "RssAnon"),
    }
    uids = fields.get("Uid", "").split()
    gids = fields.get("Gid", "").split()
    if len(uids) > 1 and len(gids) > 1:
        process.uid_gid = int(uids[1]), int(gids[1])
    process.python = {
        "version": target.version_text,
        "version_info": list(target.version) if target.version else None,
        "implementation": "cpython",
        "executable": target.python_binary,
        "pypanic_loaded": target_pypanic(target),
    }
    process.process = {
        "pid": pid,
        "ppid": _int(fields.get("PPid")),
        "uid": _int(uids[0]) if uids else None,
        "euid": _int(uids[1]) if len(uids) > 1 else None,
        "gid": _int(gids[0]) if gids else None,
        "egid": _int(gids[1]) if len(gids) > 1 else None,
        "hostname": None if not _same_uts(pid) else os.uname().nodename,
        "cwd": process.cwd,
        "umask": fields.get("Umask", "").strip() or None,
        "threads": _int(fields.get("Threads")),
        "open_fds": _count(f"/proc/{pid}/fd"),
        "root": target.root,
        "state": fields.get("State", "").strip() or None,
    }
    process.resources = {"rusage": _rusage(pid, fields), "rlimits": _limits(pid)}
    process.version = target.version_text if target.version else None
    return process


def target_pypanic(target: Target) -> str | None:
    """The version pypanic's mark in the process names (``pypanic 0.1.0``); None if it has not loaded pypanic."""
    mark = pypanic_mark(target.pid, target.maps)
    return None if mark is None else mark.split("\n", 1)[0]


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "surrogateescape")
    except OSError:
        return None


def _split(text: str | None) -> list[str] | None:
    return None if text is None else [part for part in text.split("\0") if part]


def _link(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def _int(text: str | None) -> int | None:
    return int(text.strip()) if text and text.strip().lstrip("-").isdigit() else None


def _kilobytes(fields: dict[str, str], name: str) -> int | None:
    value = fields.get(name, "").split()
    return int(value[0]) * 1024 if value and value[0].isdigit() else None


def _count(path: str) -> int | None:
    try:
        return len(os.listdir(path))
    except OSError:
        return None


def _same_uts(pid: int) -> bool:
    try:
        return os.stat(f"/proc/{pid}/ns/uts").st_ino == os.stat("/proc/self/ns/uts").st_ino
    except OSError:
        return False


def _stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat's fields after the command name (field 3, the state, first)."""
    text = _read(f"/proc/{pid}/stat") or ""
    return text[text.rfind(")") + 2 :].split()


def _start_time(pid: int) -> float | None:
    fields = _stat_fields(pid)
    lines = (_read("/proc/stat") or "").splitlines()
    boot = next((line.split()[1] for line in lines if line.startswith("btime")), None)
    if len(fields) < 20 or boot is None:
        return None
    return int(boot) + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def _rusage(pid: int, fields: dict[str, str]) -> dict[str, Any]:
    """What getrusage would say, as far as /proc tells it."""
    stat = _stat_fields(pid)
    tick = os.sysconf("SC_CLK_TCK")
    if len(stat) < 13:
        return {}
    return {
        "ru_utime": int(stat[11]) / tick,
        "ru_stime": int(stat[12]) / tick,
        "ru_minflt": int(stat[7]),
        "ru_majflt": int(stat[9]),
        "ru_maxrss": (_kilobytes(fields, "VmHWM") or 0) // 1024,
        "ru_nvcsw": _int(fields.get("voluntary_ctxt_switches")),
        "ru_nivcsw": _int(fields.get("nonvoluntary_ctxt_switches")),
    }


def _limits(pid: int) -> dict[str, list[int | None]]:
    """Soft and hard limits, None for unlimited, as pypanic writes them."""
    limits: dict[str, list[int | None]] = {}
    for line in (_read(f"/proc/{pid}/limits") or "").splitlines()[1:]:
        for title, name in _LIMIT_NAMES.items():
            if line.startswith(title):
                soft, hard = line[len(title) :].split()[:2]
                limits[name] = [None if v == "unlimited" else int(v) for v in (soft, hard)]
    return dict(sorted(limits.items()))
