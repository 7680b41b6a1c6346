"""The demo behind `make demo`: a crash that panics by itself, then a stuck loop dumped
from outside with ncore."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent


def ncore(*args: str) -> int:
    """Run the real ncore command, showing its command line first."""
    print(f"$ ncore {' '.join(args)}", flush=True)
    return subprocess.run([sys.executable, "-m", "ncore", *args], timeout=60, check=False).returncode


def show(path: Path, keys: tuple[str, ...]) -> bool:
    """Read the dump as a person does, then pick values out of it as a script does."""
    whole = ncore("show", str(path))
    print(flush=True)
    values = ncore("show", str(path), *keys)
    print(flush=True)
    return whole == values == 0


def crash(work: str) -> bool:
    print(f"$ python examples/example-auto.py   (in {work})", flush=True)
    run = subprocess.run([sys.executable, str(EXAMPLES / "example-auto.py")], cwd=work, timeout=60, check=False)
    print(f"exit status {run.returncode}\n")
    dumps = sorted(Path(work).glob("ncore.*"))
    if run.returncode != 1 or len(dumps) != 1:
        return False
    return show(dumps[0], ("func1.arg", "func2.arg", "panic.memusage.rss"))


def loop(work: str) -> bool:
    print(f"$ python examples/example-loop.py &   (in {work})", flush=True)
    target = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "example-loop.py")], cwd=work, stdout=subprocess.PIPE, text=True
    )
    try:
        assert target.stdout is not None
        print(target.stdout.readline(), end="", flush=True)
        time.sleep(0.5)
        ncore("doctor", str(target.pid))
        print(flush=True)
        dumped = ncore(str(target.pid))
        status = target.wait(timeout=30)
        print(f"the loop exited with status {status}\n")
    finally:
        if target.poll() is None:
            target.kill()
            target.wait()
    dumps = sorted(Path(work).glob("ncore.*"))
    if dumped != 0 or len(dumps) != 1:
        return False
    return show(dumps[0], ("func-iter", "panic.reason"))


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
