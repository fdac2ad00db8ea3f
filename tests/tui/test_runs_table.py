"""The runs table widget on its own, in a minimal app."""

from __future__ import annotations

from textual.app import App, ComposeResult

from engine.status import RunStatus, StepStatus
from tests.tui.fakes import NOW, run, step
from tui.widgets.runs_table import RunsTable


class TableApp(App[None]):
    CSS = "RunsTable { height: 8; }"  # a pane's fixed height, as on the home screen

    def compose(self) -> ComposeResult:
        yield RunsTable(clock=lambda: NOW)


async def test_lines_painted_before_the_columns_are_measured_are_painted_again() -> None:
    """DataTable measures new rows when the app is next idle and widens their columns; a paint
    in between (a busy machine) used to stay on screen with every column cut to its header:
    ids of two cells, until the next change."""
    app = TableApp()
    async with app.run_test(size=(120, 10)) as pilot:
        table = app.query_one(RunsTable)
        await pilot.pause()  # laid out: nothing but the rows will change from here
        table.update_runs(
            [
                run(
                    f"{n:02d}c0ffee{n:04d}",
                    RunStatus.SUCCESS,
                    "a_long_target",
                    (step("s", StepStatus.SUCCESS),),
                    NOW - n,
                )
                for n in range(5)
            ]  # fmt: skip
        )
        stale = table.render_line(1).text  # painted before the idle measures the rows
        assert "00c0ff" not in stale
        await pilot.pause()
        assert "00c0ff" in table.render_line(1).text
        assert "a_long_target" in table.render_line(1).text
