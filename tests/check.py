"""Run the checks CI runs, before pushing: lint, format, types, import contracts, the tests.

    python -m tests.check            # all of them: a few minutes, most of it the tests
    python -m tests.check --quick    # all but the tests: under a minute
    python -m tests.check --soak     # and the one-minute soak, as CI runs it

Run it from the repository's virtual environment (`pip install -e '.[test]'`): each tool is the
one installed beside this interpreter. Every check runs even when an earlier one failed, so one
run lists every problem; the exit status is 1 when any failed. CI (`.ci/run`) also runs the
CLI contract smoke, which lives outside this repository.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the virtual environment's tools


@dataclass(frozen=True)
class Check:
    name: str
    argv: tuple[str, ...]


LINT = (
    Check("ruff check", ("ruff", "check", ".")),
    Check("ruff format --check", ("ruff", "format", "--check", ".")),
    Check("mypy", ("mypy",)),  # strict, over engine/, tui/ and tests/ (pyproject.toml)
    Check("lint-imports", ("lint-imports",)),
)
# Two workers at most: the subprocess-heavy tests are timed against a loaded machine.
TESTS = Check("pytest -n 2", ("pytest", "-n", "2", "-q"))
SOAK = Check("soak (60 s)", ("python", "-m", "tests.soak.soak", "--seconds", "60"))


def checks(quick: bool, soak: bool) -> list[Check]:
    return [*LINT, *(() if quick else (TESTS,)), *((SOAK,) if soak else ())]


def run(check: Check) -> tuple[bool, float]:
    """Run one check in the repository's root, its output straight to this terminal."""
    tool = BIN / check.argv[0]
    if not tool.exists():
        print(f"{check.name}: {tool} is missing: pip install -e '.[test]'", file=sys.stderr)
        return False, 0.0
    started = time.perf_counter()
    done = subprocess.run([str(tool), *check.argv[1:]], cwd=ROOT, check=False)
    return done.returncode == 0, time.perf_counter() - started


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="skip the tests")
    parser.add_argument("--soak", action="store_true", help="also run the one-minute soak")
    args = parser.parse_args(argv)
    results = []
    for check in checks(args.quick, args.soak):
        print(f"--- {check.name}", flush=True)
        results.append((check, *run(check)))
    print()
    for check, ok, seconds in results:
        print(f"{'ok  ' if ok else 'FAIL'}  {check.name:<22} {seconds:6.1f} s")
    return 0 if all(ok for _, ok, _ in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
