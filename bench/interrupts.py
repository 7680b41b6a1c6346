"""The fault-injection soak's plans against two builds of ncore: what becomes of the targets.

    make chroot && .venv/bin/python bench/interrupts.py --before REV [--after REV] [--interpreters NAMES]

Every plan of tests/integration/test_ncore_no_harm.py (every kind of target, every signal
through ptrace, one through gdb, every signal through remote exec on 3.14+) runs once
against each build, interleaved, each build from its wheel in a scratch virtual
environment (see bench/versions.py). Each build has targets of its own; a target harmed
(dead, or left stopped or traced) is counted and started again for the next plan. Then
the private directories each build left in /tmp are counted. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from versions import install

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.faults import interrupt, start_target  # noqa: E402
from tests.integration.test_ncore_no_harm import plans_for  # noqa: E402
from tests.interpreters import ALL, Workspace  # noqa: E402

GDB = ROOT / "tests" / "chroot" / "gdb"


def leftovers() -> set[str]:
    return {path.name for path in Path("/tmp").glob("ncore.*") if path.is_dir()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="a git revision")
    parser.add_argument("--after", help="a git revision (default: the work tree)")
    parser.add_argument("--interpreters", default="pyenv-3.11,debian-3.11,sid-3.14", help="comma-separated names")
    args = parser.parse_args()
    wanted = args.interpreters.split(",")
    interpreters = [i for i in ALL if i.name in wanted]
    env = {**os.environ, "NCORE_GDB": str(GDB)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    harm: dict[str, Counter[str]] = {"before": Counter(), "after": Counter()}
    runs = Counter[str]()
    misbehaved = Counter[str]()
    """Runs where ncore itself ended otherwise than with 0, 128+N or the signal (the target unharmed)."""
    with tempfile.TemporaryDirectory(prefix="bench-interrupts.") as scratch:
        revisions = {"before": args.before, "after": args.after}
        builds = {name: (str(install(revision, Path(scratch), name)),) for name, revision in revisions.items()}
        made = {name: set[str]() for name in builds}
        for interpreter in interpreters:
            plans = plans_for(interpreter)
            targets: dict[tuple[str, str], tuple[subprocess.Popen[str], Workspace]] = {}
            try:
                for plan in plans:
                    for name, command in builds.items():
                        key = (name, plan.kind)
                        if key not in targets or targets[key][0].poll() is not None:
                            space = Workspace(interpreter)
                            targets[key] = (start_target(interpreter, plan.kind, space), space)
                        target = targets[key][0]
                        before = leftovers()
                        problems = interrupt(plan, target, env, command)
                        made[name] |= leftovers() - before
                        runs[name] += 1
                        for problem in problems:
                            what = (
                                "died" if "died" in problem else "left stopped or traced" if "left" in problem else ""
                            )
                            if what:
                                harm[name][f"{plan.method} {plan.signal_name}: the target {what}"] += 1
                            else:
                                misbehaved[name] += 1
                            print(f"{name}: {plan}: {problem}", file=sys.stderr, flush=True)
            finally:
                for target, space in targets.values():
                    target.kill()
                    target.wait()
                    space.remove()
        time.sleep(2)
        left = {name: len(names & leftovers()) for name, names in made.items()}
    print(
        f"{', '.join(i.name for i in interpreters)}; {runs['after']} interrupts per build; {time.strftime('%Y-%m-%d')}"
    )
    print(f"before: {args.before}; after: {args.after or 'work tree'}\n")
    print("| harm | before | after |")
    print("|---|---|---|")
    for row in sorted(set(harm["before"]) | set(harm["after"])):
        print(f"| {row} | {harm['before'][row]} | {harm['after'][row]} |")
    print(f"| targets harmed, in all | {sum(harm['before'].values())} | {sum(harm['after'].values())} |")
    print(f"| ncore ended otherwise than 0, 128+N or by the signal | {misbehaved['before']} | {misbehaved['after']} |")
    print(f"| private directories left in /tmp | {left['before']} | {left['after']} |")


if __name__ == "__main__":
    main()
