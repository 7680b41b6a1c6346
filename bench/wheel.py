"""pypanic as users get it: the checkout built into a wheel and installed, bytecode
compiled, into a scratch virtual environment for a given interpreter.

    from wheel import ENV, scratch_venv

    venv = scratch_venv("/usr/bin/python3.11")
    subprocess.run([str(venv / "bin" / "python"), "-c", "import pypanic"], env=ENV, check=True)

The venv is ``ncore-bench-wheel-<interpreter path>-<wheel hash>`` in the temporary
directory, kept and reused for as long as the checkout builds the same wheel (hatchling's
wheels are reproducible). pip is first upgraded to the index's newest, as a user's
installer is: the ``ncore`` script that pip before 25.2 writes imports ``re``, 12 ms of
every run. The wheel goes in with ``--no-deps``; the dependencies it
declares for the ncore command (click, rich, psutil, pystack) are installed from pip's
configured index. Run the venv's Python with ``ENV``: this machine sets
PYTHONDONTWRITEBYTECODE, which would leave the compiled bytecode unused.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
_READY = "ncore-bench-wheel-ready"
"""Written into the venv last: a venv without it was left half made, and is made again."""


def _requirements(wheel: Path) -> list[str]:
    """The wheel's unconditional ``Requires-Dist`` (the test extra left out)."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = archive.read(name).decode()
    return [
        line.split(":", 1)[1].strip()
        for line in metadata.splitlines()
        if line.startswith("Requires-Dist:") and ";" not in line
    ]


_IN_USE: list[int] = []
"""The locks of the venvs this process uses, held shared until it exits: another bench
removes only venvs nobody holds."""


def scratch_venv(interpreter: str) -> Path:
    """The directory of a venv of ``interpreter`` with the checkout's wheel installed and
    compiled. The venvs of other wheels (older checkouts) of the same interpreter that no
    bench is using are removed."""
    with tempfile.TemporaryDirectory(prefix="ncore-bench-wheel-build.") as build:
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", build, str(ROOT)],
                       check=True, env=ENV)  # fmt: skip
        wheel = next(Path(build).glob("pypanic-*.whl"))
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()[:12]
        label = str(Path(interpreter).absolute()).strip("/").replace("/", "-")
        venv = Path(tempfile.gettempdir()) / f"ncore-bench-wheel-{label}-{digest}"
        # Two benches started together would otherwise make the same venv at once.
        lock = os.open(f"{venv}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (venv / _READY).exists():
            _make(venv, interpreter, wheel, digest)
        fcntl.flock(lock, fcntl.LOCK_SH)
        _IN_USE.append(lock)
        _remove_unused(venv.parent, f"ncore-bench-wheel-{label}-", keep=venv)
    return venv


def _make(venv: Path, interpreter: str, wheel: Path, digest: str) -> None:
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([interpreter, "-m", "venv", str(venv)], check=True, env=ENV)
    python = str(venv / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True, env=ENV)
    subprocess.run([python, "-m", "pip", "install", "-q", *_requirements(wheel)], check=True, env=ENV)
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True, env=ENV)
    for site in (venv / "lib").glob("python*/site-packages"):
        subprocess.run([python, "-m", "compileall", "-q", str(site)], check=True, env=ENV)
    (venv / _READY).write_text(f"{wheel.name} sha256 {digest}\n")


def _remove_unused(directory: Path, prefix: str, keep: Path) -> None:
    """Remove the venvs named ``prefix<digest>`` but ``keep`` whose lock nobody holds."""
    for lock_path in directory.glob(f"{prefix}*.lock"):
        venv = lock_path.with_suffix("")
        if venv == keep:
            continue
        lock = os.open(lock_path, os.O_RDWR | os.O_CLOEXEC)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            shutil.rmtree(venv, ignore_errors=True)
            lock_path.unlink()
        except BlockingIOError:
            pass  # in use by another bench
        finally:
            os.close(lock)
