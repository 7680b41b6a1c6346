"""The demo behind `make demo`: run example-auto.py, let it crash, and show its dump."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent
SHOWN_KEYS = ("init.process.argv", "func1.arg", "func2.arg", "panic.error", "panic.memusage")


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="pypanic-demo.") as work:
        print(f"$ python examples/example-auto.py   (in {work})", flush=True)
        run = subprocess.run([sys.executable, str(EXAMPLES / "example-auto.py")], cwd=work, timeout=60, check=False)
        print(f"exit status {run.returncode}\n")
        dumps = sorted(Path(work).glob("ncore.*"))
        if run.returncode != 1 or len(dumps) != 1:
            print("the demo expected one dump and exit status 1", file=sys.stderr)
            return 1
        data = json.loads(dumps[0].read_text())
        print(f"$ the dump {dumps[0].name}: {len(data)} keys, among them")
        for key in SHOWN_KEYS:
            print(f"  {json.dumps(key)}: {json.dumps(data[key], indent=2)}")
        frames = data["panic.exception"]["frames"]
        print("  the crashing frame's locals:", json.dumps(frames[-1]["locals"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
