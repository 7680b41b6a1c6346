"""Facts about the process and the interpreter at the moment of a dump: memory, identity,
resources, garbage collector, and the environment with its secrets redacted.

Everything here is read from the standard library and /proc; psutil is used only where
/proc is missing and psutil happens to be importable. No function raises.
"""

from __future__ import annotations

import gc
import os
import sys
import time

from ._stacks import REDACTED

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-")


def iso_time(t: float) -> str:
    """``2011-09-12T22:37:36.408Z``, as the original's dump keys write times."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def epoch_ms(t: float) -> int:
    return int(t * 1000)


def secret_matcher(words: tuple[str, ...]) -> Callable[[str], bool]:
    """A test of whether a variable name looks like it holds a secret."""
    lowered = tuple(w.lower() for w in words)

    def is_secret(name: str) -> bool:
        name = name.lower()
        return any(w in name for w in lowered)

    return is_secret


def _without_url_passwords(value: str) -> str:
    """``value`` with the password of every ``scheme://user:password@`` replaced.

    By hand rather than with a regular expression: a first dump would import ``re``."""
    out, start, at = [], 0, value.find("://")
    while at != -1:
        begin = at
        while begin > start and value[begin - 1] in _SCHEME_CHARS:
            begin -= 1
        while begin < at and not ("a" <= value[begin].lower() <= "z"):
            begin += 1  # a scheme starts with a letter
        user_end = at + 3
        while user_end < len(value) and value[user_end] not in ":/@" and not value[user_end].isspace():
            user_end += 1
        password_end = user_end + 1
        while password_end < len(value) and value[password_end] != "@" and not value[password_end].isspace():
            password_end += 1
        if begin < at and value[user_end : user_end + 1] == ":" and value[password_end : password_end + 1] == "@":
            out.append(value[start : user_end + 1] + REDACTED)
            start = password_end
            at = value.find("://", password_end)
        else:
            at = value.find("://", at + 1)
    return "".join(out) + value[start:] if out else value


def redacted_environment(env: dict[str, str], is_secret: Callable[[str], bool] | None) -> dict[str, str]:
    """``env`` with secret-looking values replaced, and passwords cut out of URLs."""
    if is_secret is None:
        return dict(env)
    return {name: REDACTED if is_secret(name) else _without_url_passwords(value) for name, value in env.items()}


def _proc_status() -> dict[str, str]:
    try:
        with open("/proc/self/status") as f:
            return dict(line.split(":", 1) for line in f if ":" in line)
    except OSError:
        return {}


def _kilobytes(status: dict[str, str], name: str) -> int | None:
    value = status.get(name, "").split()
    return int(value[0]) * 1024 if value and value[0].isdigit() else None


def memory_usage() -> dict[str, Any]:
    """``panic.memusage``: the original's four figures, with Python meanings (see README)."""
    status = _proc_status()
    if status:
        return {
            "rss": _kilobytes(status, "VmRSS"),
            "vsize": _kilobytes(status, "VmSize"),
            "heapTotal": _kilobytes(status, "VmData"),
            "heapUsed": _kilobytes(status, "RssAnon"),
        }
    try:
        import psutil

        info = psutil.Process().memory_info()
        return {"rss": info.rss, "vsize": info.vms, "heapTotal": getattr(info, "data", None), "heapUsed": None}
    except Exception:
        return {"rss": None, "vsize": None, "heapTotal": None, "heapUsed": None}


def python_memory() -> dict[str, Any]:
    """What the interpreter itself knows about its allocations."""
    facts: dict[str, Any] = {"allocated_blocks": sys.getallocatedblocks()}
    tracemalloc = sys.modules.get("tracemalloc")
    if tracemalloc is not None and tracemalloc.is_tracing():
        current, peak = tracemalloc.get_traced_memory()
        facts["tracemalloc"] = {"current": current, "peak": peak}
    return facts


def interpreter() -> dict[str, Any]:
    """``panic.python``: which interpreter this is and how it runs."""
    gil = getattr(sys, "_is_gil_enabled", None)
    return {
        "version": sys.version,
        "version_info": list(sys.version_info),
        "implementation": sys.implementation.name,
        "cache_tag": sys.implementation.cache_tag,
        "executable": sys.executable,
        "orig_argv": list(getattr(sys, "orig_argv", sys.argv)),
        "prefix": sys.prefix,
        "gil_enabled": gil() if gil is not None else True,
        "free_threaded_build": "t" in getattr(sys, "abiflags", ""),
        "recursion_limit": sys.getrecursionlimit(),
        "memory": python_memory(),
        "modules": len(sys.modules),
    }


def process(init_cwd: str | None) -> dict[str, Any]:
    """``panic.process``: who and where the process is now."""
    facts: dict[str, Any] = {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "uid": os.getuid(),
        "euid": os.geteuid(),
        "gid": os.getgid(),
        "egid": os.getegid(),
        "hostname": os.uname().nodename,
        "cwd": _cwd(init_cwd),
        "umask": _umask(),
        "threads": _int_or_none(_proc_status().get("Threads")),
        "open_fds": _open_fds(),
    }
    return facts


def _cwd(fallback: str | None) -> str | None:
    try:
        return os.getcwd()
    except OSError:
        return fallback


def _umask() -> str:
    # os.umask can only be read by setting it; the two calls are back to back.
    mask = os.umask(0o022)
    os.umask(mask)
    return f"{mask:04o}"


def _int_or_none(text: str | None) -> int | None:
    return int(text.strip()) if text and text.strip().isdigit() else None


def _open_fds() -> int | None:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


_RLIMITS = ("AS", "CORE", "CPU", "DATA", "FSIZE", "MEMLOCK", "NOFILE", "NPROC", "RSS", "STACK")


def resources() -> dict[str, Any]:
    """``panic.resources``: getrusage of the process, and its resource limits."""
    try:
        import resource
    except ImportError:
        return {}
    usage = resource.getrusage(resource.RUSAGE_SELF)
    rusage = {name: getattr(usage, name) for name in dir(usage) if name.startswith("ru_")}
    limits = {}
    for name in _RLIMITS:
        number = getattr(resource, f"RLIMIT_{name}", None)
        if number is None:
            continue
        soft, hard = resource.getrlimit(number)
        limits[name.lower()] = [None if v == resource.RLIM_INFINITY else v for v in (soft, hard)]
    return {"rusage": rusage, "rlimits": limits}


def garbage_collector() -> dict[str, Any]:
    """``panic.gc``: the collector's state and what it has collected."""
    return {
        "enabled": gc.isenabled(),
        "counts": list(gc.get_count()),
        "thresholds": list(gc.get_threshold()),
        "stats": gc.get_stats(),
        "frozen": gc.get_freeze_count(),
        "garbage": len(gc.garbage),
    }
