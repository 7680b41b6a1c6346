"""The demo behind `make demo`: a crash that panics by itself, then a stuck loop dumped
from outside with ncore."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent


def show(path: Path, keys: tuple[str, ...], stack: str) -> None:
    """Print some keys of a dump, and the innermost frame of the exception or of the main thread."""
    data = json.loads(path.read_text())
    print(f"$ the dump {path.name}: {len(data)} keys, among them")
    for key in keys:
        print(f"  {json.dumps(key)}: {json.dumps(data[key], indent=2)}")
    if stack == "exception":
        frames = data["panic.exception"]["frames"]
    else:
        frames = next(t for t in data["panic.threads"] if t["main"])["frames"]
    frame = frames[-1]
    print(f"  {stack}, innermost frame: {frame['function']} at line {frame['line']}: {frame['source']}")
    print(f"    locals: {json.dumps(frame['locals'])}\n")


def crash(work: str) -> bool:
    print(f"$ python examples/example-auto.py   (in {work})", flush=True)
    run = subprocess.run([sys.executable, str(EXAMPLES / "example-auto.py")], cwd=work, timeout=60, check=False)
    print(f"exit status {run.returncode}\n")
    dumps = sorted(Path(work).glob("ncore.*"))
    if run.returncode != 1 or len(dumps) != 1:
        return False
    show(dumps[0], ("init.process.argv", "func1.arg", "func2.arg", "panic.error", "panic.memusage"), "exception")
    return True


def loop(work: str) -> bool:
    print(f"$ python examples/example-loop.py &   (in {work})", flush=True)
    target = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "example-loop.py")], cwd=work, stdout=subprocess.PIPE, text=True
    )
    try:
        assert target.stdout is not None
        print(target.stdout.readline(), end="", flush=True)
        time.sleep(0.5)
        print(f"$ ncore {target.pid}", flush=True)
        done = subprocess.run([sys.executable, "-m", "ncore", str(target.pid)], timeout=60, check=False)
        status = target.wait(timeout=30)
        print(f"the loop exited with status {status}\n")
    finally:
        if target.poll() is None:
            target.kill()
            target.wait()
    dumps = sorted(Path(work).glob("ncore.*"))
    if done.returncode != 0 or len(dumps) != 1:
        return False
    show(dumps[0], ("func-iter", "panic.error"), "main thread")
    return True


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="pypanic-demo.") as work:
        if not crash(work):
            print("the demo expected example-auto.py to write one dump and exit 1", file=sys.stderr)
            return 1
    with tempfile.TemporaryDirectory(prefix="pypanic-demo.") as work:
        if not loop(work):
            print("the demo expected ncore to dump example-loop.py", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
