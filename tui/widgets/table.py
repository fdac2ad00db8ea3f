"""The UI's DataTable: Textual's, painted again once it has measured new rows; and keeping a
table's rows in step with fresh data by key."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from rich.console import RenderableType
from textual.binding import Binding, BindingType
from textual.widgets import DataTable
from textual.widgets.data_table import RowKey


class Table(DataTable[Any]):
    """Textual (8.2) measures new rows when the app is next idle and widens their columns, but
    keeps the lines it painted before under the same cache key: a paint between adding rows
    and that idle (a busy machine) stayed on screen with every column cut to its header until
    something else changed. A new key when a column widened paints them again.

    j and k move the cursor as they do in every list of the app (the tree, the graph)."""

    HELP_TITLE = "Tables"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
    ]

    def _update_dimensions(self, new_rows: Iterable[RowKey]) -> None:
        widths = [column.content_width for column in self.ordered_columns]
        super()._update_dimensions(new_rows)
        if widths != [column.content_width for column in self.ordered_columns]:
            self._update_count += 1
            self.refresh()


def sync_table(
    table: DataTable[Any],
    columns: list[str],
    rows: dict[str, tuple[str, ...]],
    previous: dict[str, tuple[str, ...]],
    render: Callable[[str, str], RenderableType],
) -> None:
    """Make `table` show `rows` (by key), touching only the cells that changed since `previous`.

    When rows appear, vanish or change order the table is rebuilt, keeping the cursor's row.
    """
    if list(rows) != list(previous):
        current = None
        if table.row_count:
            current = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        table.clear()
        for row_key, cells in rows.items():
            table.add_row(*(render(c, v) for c, v in zip(columns, cells, strict=True)), key=row_key)
        if current in rows:
            table.move_cursor(row=table.get_row_index(str(current)))
        return
    for row_key, cells in rows.items():
        for column, before, after in zip(columns, previous[row_key], cells, strict=True):
            if before != after:
                table.update_cell(row_key, column, render(column, after))


__all__ = ["Table", "sync_table"]
