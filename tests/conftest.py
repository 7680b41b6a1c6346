"""Fixtures shared by every test: a clean pypanic configuration, and real target processes
that are always reaped, whatever the test does."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import pypanic

from .dumps import crash_example, dump_threaded
from .interpreters import CHROOT, RUN_IN, Interpreter, Workspace


@pytest.fixture(scope="session", autouse=True)
def _unmount_chroot_proc() -> Iterator[None]:
    """Targets in the chroot need /proc mounted there; leave nothing mounted afterwards."""
    yield
    if os.path.ismount(CHROOT / "proc"):
        subprocess.run([str(RUN_IN), "--umount", str(CHROOT)], check=False, timeout=60)


@pytest.fixture(autouse=True)
def _clean_pypanic() -> Iterator[None]:
    """Tests in this process start with no registered state and default settings."""
    pypanic.panicDbg.clear()
    pypanic.reset_configuration()
    yield
    pypanic.panicDbg.clear()
    pypanic.reset_configuration()


class Processes:
    """Starts target processes and kills and reaps all of them at teardown."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[str]] = []

    def start(self, argv: list[str], **kwargs: object) -> subprocess.Popen[str]:
        options: dict[str, Any] = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **kwargs}
        process: subprocess.Popen[str] = subprocess.Popen(argv, text=True, start_new_session=True, **options)
        self.started.append(process)
        return process

    def run(self, argv: list[str], timeout: float = 60, **kwargs: object) -> subprocess.CompletedProcess[str]:
        """Run to the end; a target still running after ``timeout`` fails the test."""
        process = self.start(argv, **kwargs)
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{argv} still ran after {timeout} s")
        return subprocess.CompletedProcess(argv, process.returncode, out, err)

    def reap(self) -> None:
        # Every one killed before any is waited for: a traced target is reported to its
        # parent only once its tracer (maybe another of these) is gone.
        for process in self.started:
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for process in self.started:
            try:
                process.communicate()
            except ValueError:  # its pipes already read to the end and closed by the test
                process.wait()
        self.started.clear()


@pytest.fixture
def processes() -> Iterator[Processes]:
    tracker = Processes()
    try:
        yield tracker
    finally:
        tracker.reap()


@pytest.fixture
def workspace_for(processes: Processes) -> Iterator[object]:
    """``workspace_for(interpreter)``: a Workspace removed at teardown, once every process
    the test started is reaped (a target still writing in it would keep it from going)."""
    made: list[Workspace] = []

    def make(interpreter: Interpreter) -> Workspace:
        interpreter.require()
        space = Workspace(interpreter)
        made.append(space)
        return space

    yield make
    processes.reap()
    for space in made:
        space.remove()


@pytest.fixture(scope="module")
def auto_dump(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return crash_example(tmp_path_factory.mktemp("auto"))


@pytest.fixture(scope="module")
def threaded_dump(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return dump_threaded(tmp_path_factory.mktemp("threaded"))
