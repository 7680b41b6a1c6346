"""The real interpreters the tests run targets on, and how to start a program on each.

Host interpreters: every pyenv CPython 3.9 to 3.13 and Debian's own python3.11 (stripped,
non-PIE, libpython linked in statically). Chroot interpreters: CPython 3.13, 3.14 and
3.15 from the Debian sid chroot that ``make chroot`` provisions in ``.cache/``. A chroot
target sees only the chroot, so its programs and the pypanic sources are copied into it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
TARGETS = Path(__file__).resolve().parent / "targets"
CHROOT = ROOT / ".cache" / "sid-chroot"
RUN_IN = Path(__file__).resolve().parent / "chroot" / "run-in.sh"
PYENV = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(reason: str) -> None:
    """Skip for a capability this machine lacks; under CI, where everything must be
    there, fail instead."""
    if IN_CI:
        pytest.fail(f"CI must run this, but: {reason}")
    pytest.skip(reason)


@dataclass(frozen=True)
class Interpreter:
    """One interpreter: its name in test ids, its path, and the root it runs in."""

    name: str
    path: str
    chroot: Path | None = None

    def available(self) -> str | None:
        """Why it cannot run here, or None."""
        if self.chroot is not None:
            if not (self.chroot / ".provisioned").exists():
                return f"the sid chroot is not provisioned at {self.chroot} (run `make chroot` as root)"
            if os.geteuid() != 0:
                return "running a program in the chroot needs root"
            return None if (self.chroot / self.path.lstrip("/")).exists() else f"{self.path} is not in the chroot"
        return None if os.access(self.path, os.X_OK) else f"{self.path} is not installed"

    def require(self) -> None:
        why = self.available()
        if why is not None:
            missing(f"interpreter {self.name}: {why}")


def _pyenv(minor: int) -> Interpreter:
    found = sorted(PYENV.glob(f"3.{minor}.*/bin/python3.{minor}"))
    path = str(found[-1]) if found else str(PYENV / f"3.{minor}.x/bin/python3.{minor}")
    return Interpreter(f"pyenv-3.{minor}", path)


HOST = [*(_pyenv(minor) for minor in range(9, 14)), Interpreter("debian-3.11", "/usr/bin/python3.11")]
IN_CHROOT = [Interpreter(f"sid-3.{m}", f"/usr/bin/python3.{m}", CHROOT) for m in (13, 14, 15)]
ALL = HOST + IN_CHROOT


class Workspace:
    """A fresh directory the target can see, with pypanic and the target programs in it.

    ``host`` is the directory as the tests see it, ``inside`` as the target sees it.
    """

    def __init__(self, interpreter: Interpreter) -> None:
        self.interpreter = interpreter
        base = interpreter.chroot / "tmp" if interpreter.chroot else None
        self.host = Path(tempfile.mkdtemp(prefix="pypanic-test.", dir=base))
        self.inside = "/" + str(self.host.relative_to(interpreter.chroot)) if interpreter.chroot else str(self.host)
        if interpreter.chroot is not None:
            shutil.copytree(SRC / "pypanic", self.host / "lib" / "pypanic")
            shutil.copytree(TARGETS, self.host / "targets")
            self.pythonpath = f"{self.inside}/lib"
            self.targets = f"{self.inside}/targets"
        else:
            self.pythonpath = str(SRC)
            self.targets = str(TARGETS)
        self.work = self.host / "work"
        self.work.mkdir()
        self.work_inside = f"{self.inside}/work"

    def command(
        self, program: str, *args: str, env: dict[str, str] | None = None, with_pypanic: bool = True
    ) -> list[str]:
        """The argv that starts ``targets/<program>`` under this interpreter in ``work/``."""
        settings = {"PYTHONPATH": self.pythonpath} if with_pypanic else {}
        settings.update(env or {})
        assignments = [f"{k}={v}" for k, v in settings.items()]
        script = f"{self.targets}/{program}"
        inner = ["/usr/bin/env", "-C", self.work_inside, *assignments, self.interpreter.path, script, *args]
        if self.interpreter.chroot is not None:
            return [str(RUN_IN), str(self.interpreter.chroot), *inner]
        return inner

    def dumps(self) -> list[Path]:
        return sorted(p for p in self.work.iterdir() if p.name.startswith("ncore."))

    def remove(self) -> None:
        shutil.rmtree(self.host, ignore_errors=True)


def run_with_pypanic(code: str, *flags: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (this one) that can import pypanic from src/."""
    return subprocess.run(
        [sys.executable, *flags, "-c", code],
        env={"PYTHONPATH": str(SRC)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
