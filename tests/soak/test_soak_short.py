"""A one-minute soak (see tests/soak/soak.py) as a test.

Skipped unless DAGTOP_SOAK=1: it drives a real daemon for a minute, with kill -9, a CLI process
a second and bursts of file drops, so it stays out of the regular run. CI runs the same minute
as a step of its own after the tests (.ci/run), so it never competes with them for the cores.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.serial,
    pytest.mark.soak,
    pytest.mark.skipif(
        os.environ.get("DAGTOP_SOAK") != "1",
        reason="the soak runs with DAGTOP_SOAK=1 (CI runs it as a step of its own)",
    ),
    pytest.mark.timeout(900),
]


def test_a_one_minute_soak_passes_every_check(tmp_path: Path) -> None:
    work = tmp_path / "soak"
    seed = int(os.environ.get("DAGTOP_SOAK_SEED", "0")) or None
    argv = [sys.executable, "-m", "tests.soak.soak", "--seconds", "60", "--workdir", str(work)]
    if seed is not None:
        argv += ["--seed", str(seed)]
    done = subprocess.run(
        argv, cwd=REPO, capture_output=True, text=True, timeout=840, stdin=subprocess.DEVNULL
    )
    report = done.stdout[-12_000:] + done.stderr[-4_000:]
    assert done.returncode == 0, f"the soak failed (work folder {work}):\n{report}"
    assert "all checks passed" in done.stdout, report
