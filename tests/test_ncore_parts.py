"""ncore's parts that need no target: ELF reading, the gdb rules and gdb's recorded output,
paths, who may write a directory, the injected code."""

from __future__ import annotations

import fcntl
import os
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import pypanic._panic
from ncore import payload
from ncore.elf import ET_DYN, ET_EXEC, NotElf, read_elf
from ncore.errors import MethodUnavailable, NcoreError, PermissionDenied
from ncore.methods import Injection, choose
from ncore.methods.gdb import Gdb, call_problem, scripts_dir
from ncore.session import Request, injected_code, make_method
from ncore.target import PY_API, Target

from .interpreters import HOST, missing

if TYPE_CHECKING:
    from ncore.methods import Method


def make_target(
    root: str = "/", same_namespace: bool = True, uid: int = 0, groups: frozenset[int] = frozenset(), caps: int = 0
) -> Target:
    return Target(
        1234, "python3", uid, uid, root, same_namespace, "/usr/bin/python3", (3, 11), (4096, 8192),
        groups=groups, capabilities=caps,
    )  # fmt: skip


def test_dynsym_of_a_shared_libpython_and_a_static_python():
    """Both symbol situations: pyenv's shared libpython, Debian's static non-PIE binary."""
    libpython = next(Path(HOST[3].path).parent.parent.glob("lib/libpython3.*.so.1.0"))
    shared = read_elf(str(libpython), PY_API | {"_PyRuntime"})
    assert shared.type == ET_DYN
    assert shared.symbols.keys() >= PY_API
    assert shared.symbols["_PyRuntime"].size > 1000
    HOST[-1].require()
    static = read_elf("/usr/bin/python3.11", PY_API)
    assert static.type == ET_EXEC and static.symbols.keys() >= PY_API


def test_undefined_symbols_are_skipped():
    """A PIE python that imports the API from libpython does not count as exporting it."""
    executable = read_elf(HOST[3].path, PY_API)
    assert not executable.symbols.keys() >= PY_API


def test_not_elf(tmp_path):
    """A text file, and an ELF file cut short, are refused with NotElf."""
    (tmp_path / "script").write_text("#!/bin/sh\n")
    with pytest.raises(NotElf):
        read_elf(str(tmp_path / "script"), PY_API)
    (tmp_path / "cut").write_bytes(Path("/usr/bin/python3.11").read_bytes()[:4096])
    with pytest.raises(NotElf):
        read_elf(str(tmp_path / "cut"), PY_API)


@pytest.mark.parametrize(
    ("version", "xsave", "refused"),
    [
        ((13, 1), 11008, True),
        ((13, 1), 872, False),
        ((13, 1), None, False),
        ((14, 0), 11008, False),
        ((18, 1), 11008, False),
    ],
)
def test_gdb_before_14_is_refused_only_on_large_xsave_areas(version, xsave, refused):
    """gdb 13 with an AMX-sized XSAVE area: refused, naming both sizes and the fix."""
    problem = call_problem(version, xsave)
    assert (problem is not None) == refused
    if problem:
        assert "11008 bytes" in problem and "2696" in problem and "gdb 14 or later" in problem


def test_gdb_command_line():
    """Batch mode, no init files, no debuginfod, the target's root as sysroot, inputs as variables."""
    argv = Gdb("gdb").argv(make_target(), Injection(b"pass", "/tmp/code.py", "auto", 0.0), '/tmp/a "b"')
    text = " ".join(argv)
    assert argv[:3] == ["gdb", "-nx", "-batch"]
    assert "set debuginfod enabled off" in argv and "set sysroot /proc/1234/root" in argv
    assert 'set $ncore_code_file = "/tmp/a \\"b\\""' in argv
    assert "set $ncore_runtime_lo = 4096" in argv and "attach 1234" in text
    scripts = scripts_dir()
    assert argv[-6:] == ["-x", str(scripts / "inject.gdb"), "-x", str(scripts / "finish.gdb"), "-ex", "detach"]


def gdb_said(*lines: str) -> list[tuple[float, str]]:
    """gdb's output as Gdb reads it: lines with the time each came (one per second)."""
    return [(float(n), line) for n, line in enumerate(lines)]


ATTACHED = (
    "[Switching to thread 1 (LWP 22308)]",
    "ncore: attached",
    "ncore: state syscall=230 gil_held=0 gil_waiter=0",
    "Restoring binary file /tmp/ncore.c01c6f9b3f71/code.py into memory (0x7f3b972a3000 to 0x7f3b972a30fb)",
    "ncore: path direct",
)


def test_a_call_gdb_abandoned_is_an_error_saying_why():
    """Recorded: a direct call that faulted, unwound by gdb, the GIL given back by finish.gdb."""
    said = gdb_said(
        *ATTACHED,
        "/work/main/gdb_scripts/inject.gdb:68: Error in sourced command file:",
        "The program being debugged received signal SIGSEGV, Segmentation fault",
        "while in a function called from GDB.  GDB has restored the context",
        "ncore: released the GIL after the abandoned call",
        "[Inferior 1 (process 1234) detached]",
    )
    with pytest.raises(NcoreError) as caught:
        Gdb("gdb")._outcome(make_target(), [], said, "auto")
    assert caught.value.message.startswith(
        "gdb's call into process 1234 was abandoned: The program being debugged received signal SIGSEGV, "
        "Segmentation fault; the GIL the call had taken was given back."
    )


def test_a_panic_ending_the_process_within_the_call_is_no_error():
    """Recorded: the payload's panic ended the process inside the direct call; the session
    learns the rest from the handshake."""
    said = gdb_said(
        *ATTACHED,
        "[Inferior 1 (process 1234) exited with code 01]",
        "/work/main/gdb_scripts/inject.gdb:68: Error in sourced command file:",
        "The program being debugged exited while in a function called from GDB.",
    )
    outcome = Gdb("gdb")._outcome(make_target(), [], said, "auto")
    assert (outcome.path, outcome.stopped_seconds) == ("direct", None)


def test_an_attach_the_kernel_refused_is_a_permission_error():
    """Recorded (a seccomp filter forbidding ptrace): no attached marker, since `thread 1`
    failed before it; the refusal is PermissionDenied with a fix, not 'could not run'."""
    said = gdb_said(
        "ptrace: Operation not permitted.",
        "/work/main/gdb_scripts/inject.gdb:36: Error in sourced command file:",
        "Unknown thread 1.",
    )
    target = Target(os.getpid(), "python3", 0, 0, "/", True, "/usr/bin/python3", (3, 11), (0, 0))
    with pytest.raises(PermissionDenied, match=f"gdb was not allowed to attach to process {os.getpid()}") as caught:
        Gdb("gdb")._outcome(target, [], said, "auto")
    assert caught.value.hint


def test_who_may_write_a_directory():
    """Judged from the process's ids, groups and capabilities and the modes on the way."""
    if os.geteuid() != 0:
        missing("giving directories to other users needs root")
    nobody, group = 65534, 4242
    with tempfile.TemporaryDirectory(dir="/tmp") as name:  # /tmp and / let anyone through
        base = Path(name)
        base.chmod(0o755)
        shared = base / "shared"
        shared.mkdir()
        os.chown(shared, 0, group)
        shared.chmod(0o775)
        assert make_target(uid=nobody).cannot_write(str(shared)) == (
            f"uid {nobody} may not create files in {shared} (drwxrwxr-x, owner uid 0, group {group})"
        )
        assert make_target(uid=nobody, groups=frozenset({group})).cannot_write(str(shared)) is None
        assert make_target(uid=nobody, caps=1 << 1).cannot_write(str(shared)) is None, "CAP_DAC_OVERRIDE"
        os.chown(shared, nobody, nobody)
        assert make_target(uid=nobody).cannot_write(str(shared)) is None, "its owner"
        base.chmod(0o700)
        why = make_target(uid=nobody).cannot_write(str(shared))
        assert why is not None and why.startswith(f"uid {nobody} may not pass through {base} ")
        root = base / "jail"
        (root / "dumps").mkdir(parents=True)
        os.chown(root / "dumps", nobody, nobody)
        root.chmod(0o755)
        assert make_target(uid=nobody, root=str(root)).cannot_write(str(root / "dumps")) is None, "above its root"
        missing_directory = base / "missing"
        assert make_target().cannot_write(str(missing_directory)) == f"{missing_directory}: No such file or directory"


def test_no_method_can_serve_names_every_reason():
    """choose() says why the method failed and what to do, and names the methods there are."""

    def make(name: str) -> Method:
        return make_method(name, Request(0, gdb="/nonexistent/gdb"))

    with pytest.raises(MethodUnavailable) as caught:
        choose("gdb", make_target(), make)
    assert "gdb: /nonexistent/gdb was not found" in caught.value.message
    with pytest.raises(MethodUnavailable, match="there is no method 'lldb'") as caught:
        choose("lldb", make_target(), make)
    assert "ptrace, gdb" in caught.value.hint


def test_paths_between_operator_and_target():
    """Same namespace: root-joined both ways; another namespace: /proc/PID/root."""
    chrooted = make_target(root="/srv/jail")
    assert chrooted.host_path("/tmp/ncore.1") == "/srv/jail/tmp/ncore.1"
    assert chrooted.inside_path("/srv/jail/data") == "/data"
    assert chrooted.inside_path("/elsewhere") is None
    assert make_target().inside_path("/data") == "/data"
    assert make_target(same_namespace=False).host_path("/tmp/x") == "/proc/1234/root/tmp/x"


def test_injected_code_binds_nothing_and_swallows_everything():
    """The code PyRun_SimpleString runs leaves __main__'s namespace as it was, even when
    the payload is missing."""
    namespace: dict[str, object] = {"__name__": "__main__"}
    exec(injected_code("/nonexistent/ncore.dir"), namespace)
    assert set(namespace) == {"__name__", "__builtins__"}


RUN_IN_MAIN = """
import __main__, sys
with open(sys.argv[1], "rb") as f:
    code = f.read()
names = set(vars(__main__)) | {"names"}
exec(code, vars(__main__))  # what PyRun_SimpleString does
print(" ".join(sorted(set(vars(__main__)) - names)))
"""


@pytest.mark.parametrize("dev", [False, True], ids=["", "dev"])
@pytest.mark.parametrize("interpreter", [HOST[0], HOST[3], HOST[4]], ids=lambda i: i.name)
def test_injected_code_leaves_main_untouched_on_real_interpreters(tmp_path, interpreter, dev):
    """The injected code and the real payload (asked for a probe), run in a real
    interpreter's ``__main__``: not one name added, ``__warningregistry__`` included (a
    warning raised in the injected code's frame would add it), and nothing printed even
    under -X dev, which shows every warning."""
    interpreter.require()
    (tmp_path / "payload.py").write_bytes(Path(payload.__file__).read_bytes())
    (tmp_path / "params").write_bytes(payload.encode_fields({"probe": "1"}))
    (tmp_path / "code.py").write_bytes(injected_code(str(tmp_path)))
    flags = ["-X", "dev"] if dev else []
    argv = [interpreter.path, *flags, "-c", RUN_IN_MAIN, str(tmp_path / "code.py")]
    with open(tmp_path / "lock", "w") as lock:  # held as ncore holds it, so the payload leaves the directory
        fcntl.flock(lock, fcntl.LOCK_SH)
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert (done.returncode, done.stdout, done.stderr) == (0, "\n", "")
    assert "writable" in payload.decode_fields((tmp_path / "result").read_bytes()), "the payload ran"


def test_payload_and_library_agree_on_the_protocol():
    """The payload only uses a pypanic that speaks its protocol."""
    assert payload.PROTOCOL == pypanic._panic.NCORE_PROTOCOL


def test_payload_compiles_on_the_oldest_supported_python():
    """The payload is plain enough for Python 3.9 (the targets' oldest)."""
    HOST[0].require()
    check = f"compile(open({payload.__file__!r}).read(), 'payload.py', 'exec')"
    done = subprocess.run([HOST[0].path, "-c", check], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr


def test_the_carried_pypanic_is_the_installed_one():
    """ncore finds the pypanic it copies into targets without importing it: the same package."""
    from ncore import session

    assert Path(session._PYPANIC).samefile(Path(pypanic._panic.__file__).parent)


def test_the_installed_pypanic_is_used_in_place_only_when_safe(tmp_path):
    """The payload loads ncore's own pypanic where it lies when the target's user can read it
    and nobody but root (or ncore's user) can change it; otherwise ncore brings a copy."""
    from ncore.session import _PYPANIC, _safe_for

    assert _safe_for(os.geteuid(), _PYPANIC)
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for directory in (tmp_path, package):
        directory.chmod(0o755)
    nobody = 65534
    readable_to_all = all(Path(p).stat().st_mode & 0o005 == 0o005 for p in [*package.parents, package])
    assert _safe_for(nobody, str(package)) == readable_to_all
    package.chmod(0o700)
    assert not _safe_for(nobody, str(package)), "a directory the target's user cannot enter"
    package.chmod(0o777)
    assert not _safe_for(os.geteuid(), str(package)), "a directory anybody can change"
