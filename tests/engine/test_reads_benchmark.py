"""The reads benchmark's --quick path, so the script keeps working as the commands change. It
asserts that every command produced its row, never how fast anything was."""

from __future__ import annotations

import pytest

from tests.benchmarks import reads

pytestmark = pytest.mark.serial


def test_quick_mode_measures_every_read(capsys: pytest.CaptureFixture[str]) -> None:
    assert reads.main(["--quick", "--no-write"]) == 0
    out = capsys.readouterr().out
    for command in ("--version", "runs", "list", "logs RUN", "partitions sales", "asset raw"):
        assert f"`dagtop {command}`" in out, out
    assert out.count("over the daemon's socket") == 5
