"""The UI benchmark's --quick path on tiny sizes, so the script keeps working as the UI
changes. It asserts that every case produced its row, never how fast anything was."""

from __future__ import annotations

import pytest

from tests.benchmarks import ui

pytestmark = pytest.mark.serial

CASES = (
    "`dagtop` process start to its first full frame",
    "home, first full frame",
    "engine start",
    "`import tui.app`",
    "`dagtop` to a full home frame",
    "DAG of 45 nodes: select",
    "DAG of 45 nodes, layout cached",
    "DAG of 45 nodes: `layout_dag` alone",
    "log (",
    "full newline index",
    "RSS",
    "no log streaming",
    "writer's real rate",
    "lines painted per second",
    "bottom line behind the writer",
    "live tail: key press",
)


def test_quick_mode_measures_every_case(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(ui, "QUICK", ui.TINY)
    written: list[str] = []
    monkeypatch.setattr(ui, "write_docs", written.append)
    assert ui.main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "--quick sizes." in out, out
    table = out.split("--quick sizes.", 1)[1]
    rows = [line for line in table.splitlines()[3:] if line.strip()]
    assert len(rows) == len(CASES), out  # the whole output, to see what came in between
    for row, case in zip(rows, CASES, strict=True):
        assert case in row, out
    assert written == []  # a quick run never rewrites docs/benchmarks.md
