"""The UI's DataTable: Textual's, painted again once it has measured new rows."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from textual.widgets import DataTable
from textual.widgets.data_table import RowKey


class Table(DataTable[Any]):
    """Textual (8.2) measures new rows when the app is next idle and widens their columns, but
    keeps the lines it painted before under the same cache key: a paint between adding rows
    and that idle (a busy machine) stayed on screen with every column cut to its header until
    something else changed. A new key when a column widened paints them again."""

    def _update_dimensions(self, new_rows: Iterable[RowKey]) -> None:
        widths = [column.content_width for column in self.ordered_columns]
        super()._update_dimensions(new_rows)
        if widths != [column.content_width for column in self.ordered_columns]:
            self._update_count += 1
            self.refresh()


__all__ = ["Table"]
