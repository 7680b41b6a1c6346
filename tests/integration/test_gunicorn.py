"""pypanic.gunicorn against a real gunicorn (and uvicorn's worker) from PyPI: a worker stuck
in a request past ``--timeout`` leaves a dump of that request, and the rest keep serving."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

import pypanic
from tests.conftest import Processes
from tests.integration.conftest import assert_left_running, load_dump

TARGETS = Path(__file__).resolve().parent.parent / "targets"
TIMEOUT = 3
CONFIG = f"""
from pypanic.gunicorn import post_fork, post_worker_init, worker_abort

workers = 2
timeout = {TIMEOUT}
graceful_timeout = 1
"""


def get(sock_path: Path, path: str, timeout: float = 10) -> str:
    """An HTTP/1.0 GET over gunicorn's unix socket: the response's body, or '' when the
    connection was dropped."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(str(sock_path))
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: test\r\n\r\n".encode())
        data = b""
        try:
            while chunk := s.recv(65536):
                data += chunk
        except (ConnectionResetError, socket.timeout):
            pass
    return data.partition(b"\r\n\r\n")[2].decode()


def workers_of(master: int) -> set[int]:
    return {child.pid for child in psutil.Process(master).children()}


class Server:
    def __init__(
        self, processes: Processes, tmp_path: Path, app: str, worker_class: str, env: dict[str, str] | None = None
    ) -> None:
        self.sock = tmp_path / "g.sock"
        self.dumps = tmp_path / "dumps"
        self.dumps.mkdir()
        (tmp_path / "gunicorn_conf.py").write_text(CONFIG)
        self.log = (tmp_path / "gunicorn.log").open("w")
        argv = [sys.executable, "-m", "gunicorn", "-c", str(tmp_path / "gunicorn_conf.py")]
        argv += ["--bind", f"unix:{self.sock}", "--worker-class", worker_class, "--chdir", str(TARGETS), app]
        env = {**os.environ, "PYPANIC_DIR": str(self.dumps), "XDG_RUNTIME_DIR": str(tmp_path), **(env or {})}
        self.process = processes.start(argv, stdout=self.log, stderr=self.log, env=env, cwd=tmp_path)
        self.master = self.process.pid
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.output()
            if self.sock.exists() and len(workers_of(self.master)) == 2 and get(self.sock, "/").startswith("ok"):
                return
            time.sleep(0.1)
        pytest.fail(f"gunicorn did not start: {self.output()}")

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()

    def wait_for_dump(self, timeout: float = 30) -> Path:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [p for p in self.dumps.iterdir() if p.name.startswith("ncore.") and p.name[6:].isdigit()]
            if found:
                return found[0]
            time.sleep(0.05)
        pytest.fail(f"no dump within {timeout} s: {self.output()}")


def frame_named(dump: dict[str, Any], function: str) -> dict[str, Any]:
    main = next(t for t in dump["panic.threads"] if t["main"])
    found = [f for f in main["frames"] if f.get("function") == function]
    assert found, [f.get("function") for f in main["frames"]]
    return found[0]


def ended(pid: int, timeout: float = 30) -> bool:
    """Whether the process ends (gone, or a zombie its master has yet to reap) within
    ``timeout``: a worker closes its client's connection before its interpreter shuts down,
    so the client sees the end a few milliseconds before the process makes it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.01)
    return False


def stuck_request(server: Server) -> threading.Thread:
    request = threading.Thread(target=get, args=(server.sock, "/stuck", 60), daemon=True)
    request.start()
    return request


def test_a_sync_worker_past_its_timeout_leaves_a_dump_of_the_request(processes: Processes, tmp_path: Path) -> None:
    server = Server(processes, tmp_path, "web_apps:wsgi", "sync")
    before = workers_of(server.master)
    request = stuck_request(server)
    served_meanwhile = []
    deadline = time.monotonic() + 30
    while not list(server.dumps.glob("ncore.*")) and time.monotonic() < deadline:
        served_meanwhile.append(get(server.sock, "/"))
        time.sleep(0.2)
    path = server.wait_for_dump()
    stuck = int(path.name[6:])
    assert stuck in before
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    dump = load_dump(str(path))
    assert dump["panic.reason"] == f"gunicorn worker {stuck} timed out (--timeout {TIMEOUT} s)"
    assert dump["panic.exception"]["type"] == "pypanic.gunicorn.WorkerTimeout"
    facts = dump["gunicorn"]
    assert facts["worker_pid"] == stuck
    assert facts["master_pid"] == server.master
    assert facts["timeout"] == TIMEOUT
    assert facts["worker_class"] == "gunicorn.workers.sync.SyncWorker"
    handler = frame_named(dump, "wsgi")
    assert handler["locals"]["order_id"] == 4242
    assert handler["locals"]["customer"] == "acme"
    main = next(t for t in dump["panic.threads"] if t["main"])
    assert [f["function"] for f in main["frames"][-2:]] == ["wsgi", "Worker.handle_abort"]
    assert main["native_id"] == stuck

    request.join(30)
    assert ended(stuck), f"the timed-out worker {stuck} is still there: {server.output()}"
    (other,) = before - {stuck}
    assert server.process.poll() is None
    assert all(reply.startswith("ok") for reply in served_meanwhile), served_meanwhile
    assert served_meanwhile, "nothing was asked of the other worker while one was stuck"
    answers = {get(server.sock, "/") for _ in range(20)}
    assert all(a.startswith("ok") for a in answers), answers
    assert other in workers_of(server.master)
    assert f"WORKER TIMEOUT (pid:{stuck})" in server.output()
    assert f"Worker (pid:{stuck}) was sent SIGKILL" not in server.output()
    assert len(list(server.dumps.iterdir())) == 1


def test_a_uvicorn_worker_hogging_its_loop_past_the_timeout_leaves_a_dump(processes: Processes, tmp_path: Path) -> None:
    server = Server(processes, tmp_path, "web_apps:asgi", "uvicorn.workers.UvicornWorker")
    before = workers_of(server.master)
    stuck_request(server)
    path = server.wait_for_dump()
    stuck = int(path.name[6:])
    assert stuck in before
    dump = load_dump(str(path))
    assert dump["panic.reason"] == f"gunicorn worker {stuck} timed out (--timeout {TIMEOUT} s)"
    assert frame_named(dump, "asgi")["locals"]["hog_id"] == 77
    deadline = time.monotonic() + 20
    while stuck in workers_of(server.master) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert f"Worker (pid:{stuck}) was sent SIGABRT" in server.output()
    assert server.process.poll() is None
    assert get(server.sock, "/").startswith("ok")


def test_workers_listen_each_on_a_mark_of_their_own(processes: Processes, tmp_path: Path, no_ptrace: Any) -> None:
    """A master listening on PYPANIC_SIGNAL forks workers that listen too, each with its own
    mark: ncore dumps both at once where nothing may trace, and every one keeps serving."""
    server = Server(processes, tmp_path, "web_apps:wsgi", "sync", env={"PYPANIC_SIGNAL": "SIGRTMIN+3"})
    workers = sorted(workers_of(server.master))
    marks = {pid: os.readlink(f"/proc/{pid}/fd/{fd}") for pid in workers for fd in os.listdir(f"/proc/{pid}/fd")
             if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("/memfd:pypanic")}  # fmt: skip
    assert sorted(marks) == workers, marks
    inodes = {os.stat(f"/proc/{pid}/fd/{fd}").st_ino for pid in workers for fd in os.listdir(f"/proc/{pid}/fd")
              if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("/memfd:pypanic")}  # fmt: skip
    assert len(inodes) == len(workers), "the workers share one mark"

    run = no_ptrace("--keep-running", "--output-dir", str(server.dumps), *map(str, workers))
    assert run.returncode == 0, run.stdout + run.stderr
    records = [json.loads(line) for line in run.stdout.splitlines()]
    assert sorted(r["pid"] for r in records) == workers
    for record in records:
        assert record["method"] == "signal", record
        assert Path(record["path"]).name == f"ncore.{record['pid']}"
        assert load_dump(record["path"])["gunicorn"]["worker_pid"] == record["pid"]
    for pid in [server.master, *workers]:
        assert_left_running(pid)
    assert {get(server.sock, "/")[:2] for _ in range(10)} == {"ok"}


def test_a_signal_gunicorn_takes_is_no_longer_listened_on(processes: Processes, tmp_path: Path) -> None:
    """gunicorn's workers handle SIGUSR1 themselves: each says so and its mark stops naming it."""
    server = Server(processes, tmp_path, "web_apps:wsgi", "sync", env={"PYPANIC_SIGNAL": "SIGUSR1"})
    assert "stopped listening on SIGUSR1: the application installed its own handler for it" in server.output()
    listed = subprocess.run([sys.executable, "-m", "ncore", "ps", "--json"], capture_output=True, text=True, check=True)
    rows = {row["pid"]: row for row in json.loads(listed.stdout)}
    for pid in workers_of(server.master):
        assert rows[pid]["pypanic"] == pypanic.__version__, rows[pid]
