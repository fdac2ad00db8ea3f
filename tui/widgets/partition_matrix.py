"""The partition matrix: assets as rows, partition keys as columns, one glyph per cell.

It renders line by line (`render_line`) and only the columns that fit the window, so an asset
with 50,000 hourly keys costs no more to draw than one with 31 days. Daily and hourly keys can be
grouped (by week, month, day): a grouped cell shows the worst status of its keys.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.geometry import Region, Size
from textual.message import Message
from textual.strip import Strip
from textual.widget import Widget

from engine.status import PartitionStatus
from engine.units import glyph
from tui.widgets import CHECK_FAILED, NEVER

if TYPE_CHECKING:
    from engine.client_api import PartitionState

GLYPHS: dict[str, str] = {
    status: glyph(status)
    for status in (
        PartitionStatus.MATERIALIZED,
        PartitionStatus.STALE,
        CHECK_FAILED,
        PartitionStatus.FAILED,
        PartitionStatus.RUNNING,
        PartitionStatus.MISSING,
    )
}
"""What a cell may show and its glyph (the product's own, as in `dagtop partitions`): each has
a glyph of its own, so the matrix reads without colour."""

UNKNOWN_GLYPH = glyph(NEVER)
"""A cell whose status has not been loaded yet."""

# A grouped cell shows its worst key. A failure anywhere must stay visible in a month cell, and
# running beats missing so that a backfill is seen moving through coarse groups.
SEVERITY: dict[str, int] = {
    PartitionStatus.MATERIALIZED: 0,
    PartitionStatus.STALE: 1,
    PartitionStatus.MISSING: 2,
    CHECK_FAILED: 3,
    PartitionStatus.RUNNING: 4,
    PartitionStatus.FAILED: 5,
}
_BY_SEVERITY = {v: k for k, v in SEVERITY.items()}
_UNKNOWN = -1

GROUPINGS: dict[str, tuple[str, ...]] = {
    "daily": ("day", "week", "month"),
    "hourly": ("hour", "day", "week"),
    "static": ("key",),
}
"""The groupings `g` cycles through, per kind of partitions definition."""

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MAX_GUTTER = 28


def status_glyph(status: str | None) -> str:
    return GLYPHS.get(status or "", UNKNOWN_GLYPH)


def cell_status(state: PartitionState) -> str:
    """What a cell shows for a partition state: its status, or `CHECK_FAILED` for a value that
    failed a check."""
    materialized = state.status in (PartitionStatus.MATERIALIZED, PartitionStatus.STALE)
    if state.failed_checks and materialized:
        return CHECK_FAILED
    return state.status


def _month_label(key: str) -> str:
    return f"{_MONTHS[int(key[5:7]) - 1]} {key[:4]}"


def _iso_week(key: str) -> tuple[int, int]:
    year, week, _ = date.fromisoformat(key[:10]).isocalendar()
    return year, week


@dataclass(frozen=True, slots=True)
class Column:
    """One column of the matrix: the keys `lo` to `hi - 1`, and its two header labels."""

    lo: int
    hi: int
    top: str
    label: str


def _group_columns(
    keys: Sequence[str],
    group_of: Callable[[str], Hashable],
    top_of: Callable[[str], str],
    label_of: Callable[[str], str],
) -> list[Column]:
    columns: list[Column] = []
    start = 0
    current = group_of(keys[0]) if keys else None
    for i in range(1, len(keys) + 1):
        group = group_of(keys[i]) if i < len(keys) else None
        if i == len(keys) or group != current:
            columns.append(Column(start, i, top_of(keys[start]), label_of(keys[start])))
            start, current = i, group
    return columns


def build_columns(keys: Sequence[str], kind: str, grouping: str) -> list[Column]:
    """The columns of `keys` (in order) for a partitions kind and a grouping."""
    if kind not in ("daily", "hourly") or grouping == "key":
        return [Column(i, i + 1, "", key) for i, key in enumerate(keys)]
    if grouping == "hour":
        columns = _group_columns(keys, lambda k: k, lambda k: k[:10], lambda k: k[11:13])
    elif grouping == "day":
        columns = _group_columns(keys, lambda k: k[:10], _month_label, lambda k: k[8:10])
    elif grouping == "week":
        columns = _group_columns(keys, _iso_week, _month_label, lambda k: k[8:10])
    else:  # month
        columns = _group_columns(
            keys, lambda k: k[:7], lambda k: k[:4], lambda k: _MONTHS[int(k[5:7]) - 1]
        )
    # The upper header line names a month (or a day, or a year) only where it starts.
    out: list[Column] = []
    previous = None
    for col in columns:
        out.append(Column(col.lo, col.hi, "" if col.top == previous else col.top, col.label))
        previous = col.top
    return out


class PartitionMatrix(Widget, can_focus=True):
    """Assets (rows) × partition keys (columns), with a cursor, a range and marked keys.

    The owner calls `set_layout` once it knows the rows and keys, then `set_states` per row
    whenever it has fresh statuses; only the cells that changed are repainted.
    """

    DEFAULT_CSS = """
    PartitionMatrix { height: auto; }
    PartitionMatrix > .partition-matrix--header { color: $text-muted; }
    PartitionMatrix > .partition-matrix--month { color: $text; text-style: bold; }
    PartitionMatrix > .partition-matrix--materialized { color: $success; }
    PartitionMatrix > .partition-matrix--stale { color: $warning; }
    PartitionMatrix > .partition-matrix--check-failed { color: $error; }
    PartitionMatrix > .partition-matrix--failed { color: $error; text-style: bold; }
    PartitionMatrix > .partition-matrix--running { color: $accent; }
    PartitionMatrix > .partition-matrix--missing { color: $text-muted; }
    PartitionMatrix > .partition-matrix--selected { background: $primary 35%; }
    PartitionMatrix > .partition-matrix--cursor { text-style: reverse bold; }
    PartitionMatrix > .partition-matrix--row-selected { text-style: bold; }
    """

    COMPONENT_CLASSES = {
        "partition-matrix--header",
        "partition-matrix--month",
        "partition-matrix--materialized",
        "partition-matrix--stale",
        "partition-matrix--check-failed",
        "partition-matrix--failed",
        "partition-matrix--running",
        "partition-matrix--missing",
        "partition-matrix--selected",
        "partition-matrix--cursor",
        "partition-matrix--row-selected",
    }

    BINDINGS = [
        Binding("left,h", "move(-1, 0)", "Left", show=False),
        Binding("right,l", "move(1, 0)", "Right", show=False),
        Binding("up,k", "move(0, -1)", "Up", show=False),
        Binding("down,j", "move(0, 1)", "Down", show=False),
        Binding("shift+left", "move(-1, 0, True)", "Extend", key_display="⇧←/→"),
        Binding("shift+right", "move(1, 0, True)", "Extend", show=False),
        Binding("shift+up", "move(0, -1, True)", "Extend rows", show=False),
        Binding("shift+down", "move(0, 1, True)", "Extend rows", show=False),
        Binding("home", "edge(-1)", "First", show=False),
        Binding("end", "edge(1)", "Last", show=False),
        Binding("shift+home", "edge(-1, True)", "Extend to first", show=False),
        Binding("shift+end", "edge(1, True)", "Extend to last", show=False),
        Binding("pageup", "page(-1)", "Page left", show=False),
        Binding("pagedown", "page(1)", "Page right", show=False),
        Binding("space", "toggle_mark", "Mark"),
        Binding("g", "cycle_grouping", "Group"),
    ]

    class SelectionChanged(Message):
        """The cursor, the range, the marks, the grouping or the visible window changed."""

        def __init__(self, matrix: PartitionMatrix) -> None:
            super().__init__()
            self.matrix = matrix

        @property
        def control(self) -> PartitionMatrix:
            return self.matrix

    def __init__(
        self,
        *,
        name: str | None = None,
        id: str | None = None,  # noqa: A002 - Textual's own parameter name
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.rows: list[str] = []
        """The assets, top to bottom."""
        self.labels: dict[str, str] = {}
        """The gutter's text for rows that are not named by themselves."""
        self.keys: list[str] = []
        """Every partition key, in order."""
        self.kind = "static"
        """The partitions kind: daily, hourly or static."""
        self.grouping = "key"
        """How keys are grouped into columns (one of GROUPINGS[kind])."""
        self.columns: list[Column] = []
        self.cursor_row = 0
        self.cursor_col = 0
        # Where a shift-selection began: a column range (shift+←/→) and a row span (shift+↑/↓)
        # are independent, so adding rows never adds the cursor's key to marked keys.
        self._anchor_col: int | None = None
        self._anchor_row: int | None = None
        self._marks: set[int] = set()  # marked key indexes
        self._focus_key = 0  # the key the cursor means inside a grouped column (kept on regroup)
        self._states: dict[str, list[PartitionState | None]] = {}
        self._severity: dict[str, list[int]] = {}
        self._col_of_key: list[int] = []
        self._key_index: dict[str, int] = {}
        self._offset = 0  # first visible column
        self._row_offset = 0
        self._laid_out = False

    # --- data --------------------------------------------------------------------------------

    def set_layout(
        self,
        rows: Sequence[str],
        keys: Sequence[str],
        kind: str,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        """Show `rows` × `keys`; keeps the cursor on the same key and asset when it can.

        Args:
            labels: What the gutter shows for a row, when not the row itself (the rows of one
                dimension of a MultiPartitions asset, under the asset's own row).
        """
        self.labels = dict(labels or {})
        old_key = self.keys[self._focus_key] if 0 <= self._focus_key < len(self.keys) else None
        old_asset = self.cursor_asset
        first_time = not self._laid_out
        self._laid_out = True
        self.rows = list(rows)
        self.keys = list(keys)
        self._key_index = {key: i for i, key in enumerate(self.keys)}
        self.kind = kind
        if self.grouping not in GROUPINGS.get(kind, ("key",)):
            self.grouping = GROUPINGS.get(kind, ("key",))[0]
        self._states = {
            row: [*self._states.get(row, ()), *([None] * len(self.keys))][: len(self.keys)]
            for row in self.rows
        }
        self._severity = {
            row: [_UNKNOWN if s is None else SEVERITY.get(cell_status(s), _UNKNOWN) for s in states]
            for row, states in self._states.items()
        }
        self._marks = {i for i in self._marks if i < len(self.keys)}
        self._anchor_col = self._anchor_row = None
        self._regroup()
        self.cursor_row = self.rows.index(old_asset) if old_asset in self.rows else 0
        if old_key in self._key_index and not first_time:
            self._focus_key = self._key_index[old_key]
        else:
            # Time partitions open on the latest key: that is the one people look at first.
            self._focus_key = len(self.keys) - 1 if kind != "static" else 0
        self.cursor_col = self._col_of_key[self._focus_key] if self.keys else 0
        self._ensure_visible()
        self.refresh(layout=True)
        self._changed()

    def set_states(self, row: str, states: Sequence[PartitionState | None]) -> int:
        """Apply one row's partition states (in key order); repaints only changed cells.

        Returns:
            How many keys changed.
        """
        if row not in self._states:
            return 0
        old = self._states[row]
        severity = self._severity[row]
        changed_cols: set[int] = set()
        changed = 0
        for i, state in enumerate(states[: len(old)]):
            if old[i] != state:
                old[i] = state
                severity[i] = (
                    _UNKNOWN if state is None else SEVERITY.get(cell_status(state), _UNKNOWN)
                )
                changed_cols.add(self._col_of_key[i])
                changed += 1
        if changed_cols:
            self._repaint_cells(self.rows.index(row), changed_cols)
        return changed

    def update_states(self, row: str, states: Sequence[PartitionState]) -> int:
        """Apply the states of some keys of one row (each says its key); repaints only the
        cells that changed. Returns how many keys changed."""
        if row not in self._states:
            return 0
        full = list(self._states[row])
        for state in states:
            index = None if state.key is None else self._key_index.get(state.key)
            if index is not None:
                full[index] = state
        return self.set_states(row, full)

    def state_at(self, row: str, key: str) -> PartitionState | None:
        """The state object last given for (row, key), or None."""
        index = self._key_index.get(key)
        if row not in self._states or index is None:
            return None
        return self._states[row][index]

    def status_of(self, row: str, key: str) -> str:
        """The status of one cell ("" until loaded)."""
        state = self.state_at(row, key)
        return "" if state is None else cell_status(state)

    def column_status(self, row: str, col: int) -> str:
        """The worst status of a column's keys ("" until loaded)."""
        column = self.columns[col]
        worst = max(self._severity[row][column.lo : column.hi])
        return _BY_SEVERITY.get(worst, "")

    # --- selection ---------------------------------------------------------------------------

    @property
    def cursor_asset(self) -> str | None:
        return self.rows[self.cursor_row] if 0 <= self.cursor_row < len(self.rows) else None

    @property
    def cursor_keys(self) -> list[str]:
        """The keys under the cursor (one, or a whole group)."""
        if not self.columns:
            return []
        column = self.columns[self.cursor_col]
        return self.keys[column.lo : column.hi]

    @property
    def cursor_key(self) -> str | None:
        keys = self.cursor_keys
        return keys[0] if len(keys) == 1 else None

    def _row_span(self) -> tuple[int, int]:
        anchor = self.cursor_row if self._anchor_row is None else self._anchor_row
        return min(anchor, self.cursor_row), max(anchor, self.cursor_row)

    def _col_span(self) -> tuple[int, int] | None:
        if self._anchor_col is None:
            return None
        return min(self._anchor_col, self.cursor_col), max(self._anchor_col, self.cursor_col)

    @property
    def selected_rows(self) -> list[str]:
        """The assets the selection applies to (the cursor's row, or a shift+up/down span)."""
        lo, hi = self._row_span()
        return self.rows[lo : hi + 1]

    @property
    def range_keys(self) -> list[str]:
        """The keys of the shift-selected range (empty if none)."""
        span = self._col_span()
        if span is None:
            return []
        return self.keys[self.columns[span[0]].lo : self.columns[span[1]].hi]

    @property
    def marked_keys(self) -> list[str]:
        return [self.keys[i] for i in sorted(self._marks)]

    @property
    def selected_keys(self) -> list[str]:
        """Range ∪ marks in key order, or the cursor's keys when nothing is selected."""
        chosen = set(self._marks)
        span = self._col_span()
        if span is not None:
            chosen.update(range(self.columns[span[0]].lo, self.columns[span[1]].hi))
        if not chosen:
            return self.cursor_keys
        return [self.keys[i] for i in sorted(chosen)]

    @property
    def has_selection(self) -> bool:
        return self._anchor_col is not None or self._anchor_row is not None or bool(self._marks)

    def select_range(self, first: str, last: str) -> None:
        """Select keys `first`..`last` (inclusive) on the cursor's row."""
        lo, hi = self._col_of_key[self._key_index[first]], self._col_of_key[self._key_index[last]]
        self._anchor_col = lo
        self.cursor_col = hi
        self._follow_cursor()
        self._ensure_visible()
        self.refresh()
        self._changed()

    def move_to_row(self, row: str) -> None:
        """Put the cursor on `row`'s line (if it is one of the rows)."""
        if row in self.rows and self.columns:
            self._move_to(self.rows.index(row), self.cursor_col, False)

    def clear_selection(self) -> None:
        self._anchor_col = self._anchor_row = None
        self._marks.clear()
        self.refresh()
        self._changed()

    # --- window ------------------------------------------------------------------------------

    @property
    def label_width(self) -> int:
        longest = max((len(self.labels.get(r, r)) for r in self.rows), default=4)
        return max(min(longest, _MAX_GUTTER), 8) + 2

    @property
    def cell_width(self) -> int:
        if self.grouping == "month":
            return 4
        if self.kind in ("daily", "hourly"):
            return 3
        longest = max((len(k) for k in self.keys), default=2)
        return max(3, min(longest + 1, 12))

    @property
    def visible_columns(self) -> int:
        """How many columns fit (one cell at the right edge is kept for the ▸ marker)."""
        width = self.size.width or (self.app.size.width if self.is_attached else 80)
        return max(1, (width - self.label_width - 1) // self.cell_width)

    @property
    def window(self) -> tuple[int, int]:
        """The first and last visible column (inclusive)."""
        last = min(len(self.columns), self._offset + self.visible_columns) - 1
        return self._offset, max(self._offset, last)

    @property
    def key_window(self) -> tuple[int, int]:
        """The first and last key index on screen (inclusive)."""
        if not self.columns:
            return 0, -1
        first, last = self.window
        return self.columns[first].lo, self.columns[last].hi - 1

    @property
    def row_window(self) -> tuple[int, int]:
        """The first and last row on screen (inclusive)."""
        last = min(len(self.rows), self._row_offset + self._body_height()) - 1
        return self._row_offset, max(self._row_offset, last)

    def _body_height(self) -> int:
        height = self.size.height or len(self.rows) + 2
        return max(1, height - 2)

    def _ensure_visible(self) -> None:
        visible = self.visible_columns
        if self.cursor_col < self._offset:
            self._offset = self.cursor_col
        elif self.cursor_col >= self._offset + visible:
            self._offset = self.cursor_col - visible + 1
        self._offset = max(0, min(self._offset, max(0, len(self.columns) - visible)))
        body = self._body_height()
        if self.cursor_row < self._row_offset:
            self._row_offset = self.cursor_row
        elif self.cursor_row >= self._row_offset + body:
            self._row_offset = self.cursor_row - body + 1
        # When the widget grows (its first layout, a taller terminal), scroll rows back in.
        self._row_offset = max(0, min(self._row_offset, len(self.rows) - body))

    def _regroup(self) -> None:
        self.columns = build_columns(self.keys, self.kind, self.grouping)
        self._col_of_key = [0] * len(self.keys)
        for c, column in enumerate(self.columns):
            for i in range(column.lo, column.hi):
                self._col_of_key[i] = c

    def _changed(self) -> None:
        self.post_message(self.SelectionChanged(self))

    # --- actions -----------------------------------------------------------------------------

    def _move_to(self, row: int, col: int, extend: bool) -> None:
        """Put the cursor on (row, col); `extend` grows the selection instead of dropping it.

        A plain move across keys drops the key range; a plain move across rows carries the
        key range (and the marks) over to the new row.
        """
        row = max(0, min(row, len(self.rows) - 1))
        col = max(0, min(col, len(self.columns) - 1))
        if extend:
            if col != self.cursor_col and self._anchor_col is None:
                self._anchor_col = self.cursor_col
            if row != self.cursor_row and self._anchor_row is None:
                self._anchor_row = self.cursor_row
        else:
            if col != self.cursor_col:
                self._anchor_col = None
            if row != self.cursor_row:
                self._anchor_row = None
        self.cursor_row, self.cursor_col = row, col
        self._follow_cursor()
        self._ensure_visible()
        self.refresh()
        self._changed()

    def _follow_cursor(self) -> None:
        column = self.columns[self.cursor_col]
        if not column.lo <= self._focus_key < column.hi:
            # Entering a group from the right means its latest key, from the left its first.
            self._focus_key = column.hi - 1 if self._focus_key >= column.hi else column.lo

    def action_move(self, dx: int, dy: int, extend: bool = False) -> None:
        if self.columns:
            self._move_to(self.cursor_row + dy, self.cursor_col + dx, extend)

    def action_edge(self, direction: int, extend: bool = False) -> None:
        if self.columns:
            self._move_to(self.cursor_row, 0 if direction < 0 else len(self.columns) - 1, extend)

    def action_page(self, direction: int) -> None:
        """Move the cursor and the window by one screen of columns."""
        if not self.columns:
            return
        step = self.visible_columns * direction
        self._offset = max(0, min(self._offset + step, len(self.columns) - self.visible_columns))
        self._move_to(self.cursor_row, self.cursor_col + step, False)

    def action_toggle_mark(self) -> None:
        if not self.columns:
            return
        column = self.columns[self.cursor_col]
        keys = set(range(column.lo, column.hi))
        if keys <= self._marks:
            self._marks -= keys
        else:
            self._marks |= keys
        self.refresh()
        self._changed()

    def action_cycle_grouping(self) -> None:
        options = GROUPINGS.get(self.kind, ("key",))
        if len(options) < 2 or not self.columns:
            return
        cursor_key = self._focus_key
        anchor_key = None if self._anchor_col is None else self.columns[self._anchor_col].lo
        self.grouping = options[(options.index(self.grouping) + 1) % len(options)]
        self._regroup()
        self.cursor_col = self._col_of_key[cursor_key]
        if anchor_key is not None:
            self._anchor_col = self._col_of_key[anchor_key]
        self._ensure_visible()
        self.refresh(layout=True)
        self._changed()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "cycle_grouping":
            return len(GROUPINGS.get(self.kind, ())) > 1
        return True

    # --- events ------------------------------------------------------------------------------

    def on_resize(self, _event: events.Resize) -> None:
        self._ensure_visible()
        self.refresh()
        self._changed()

    def on_click(self, event: events.Click) -> None:
        if not self.columns or event.y < 2:
            return
        row = event.y - 2 + self._row_offset
        col = self._offset + (event.x - self.label_width) // self.cell_width
        if event.x < self.label_width or row >= len(self.rows) or col > self.window[1]:
            return
        self._move_to(row, col, event.shift)

    # --- rendering ---------------------------------------------------------------------------

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return len(self.rows) + 2

    def _repaint_cells(self, row: int, columns: set[int]) -> None:
        y = row - self._row_offset + 2
        first, last = self.window
        if y < 2 or y >= self.size.height:
            return
        width = self.cell_width
        for col in columns:
            if first <= col <= last:
                self.refresh(Region(self.label_width + (col - first) * width, y, width, 1))

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        base = self.rich_style
        if not self.columns:
            empty = " no partition key exists yet" if self._laid_out else " loading partitions…"
            text = empty if y == 0 else ""
            return Strip([Segment(text, base)]).adjust_cell_length(width, base)
        if y == 0:
            return self._render_top(width, base)
        if y == 1:
            return self._render_labels(width, base)
        row = y - 2 + self._row_offset
        if row >= len(self.rows):
            return Strip.blank(width, base)
        return self._render_row(row, width, base)

    def _style(self, name: str) -> Style:
        return self.get_component_rich_style(f"partition-matrix--{name}", partial=True)

    def _render_top(self, width: int, base: Style) -> Strip:
        gutter, cw = self.label_width, self.cell_width
        first, last = self.window
        chars = [" "] * max(0, width - gutter)
        month = base + self._style("month")
        labels: list[tuple[int, str]] = []
        for col in range(first, last + 1):
            top = self.columns[col].top
            if col == first and not top:
                # The first visible column always says which month (day, year) it is in.
                top = next((c.top for c in reversed(self.columns[: col + 1]) if c.top), "")
            if top:
                labels.append(((col - first) * cw, top))
        for n, (x, text) in enumerate(labels):
            stop = labels[n + 1][0] - 1 if n + 1 < len(labels) else len(chars)
            for i, ch in enumerate(text[: max(0, stop - x)]):
                if x + i < len(chars):
                    chars[x + i] = ch
        head = f" by {self.grouping}" if len(GROUPINGS.get(self.kind, ())) > 1 else ""
        segments = [
            Segment(head[:gutter].ljust(gutter), base + self._style("header")),
            Segment("".join(chars), month),
        ]
        return Strip(segments).adjust_cell_length(width, base)

    def _render_labels(self, width: int, base: Style) -> Strip:
        gutter, cw = self.label_width, self.cell_width
        first, last = self.window
        header = base + self._style("header")
        marked_cols = {self._col_of_key[i] for i in self._marks}
        left = "◂" if first > 0 else " "
        segments = [Segment(" " * (gutter - 1) + left, header)]
        selected = base + self._style("selected")
        for col in range(first, last + 1):
            label = self.columns[col].label
            if len(label) > cw - 1:
                label = label[: cw - 2] + "…"
            style = selected if col in marked_cols else header
            if col == self.cursor_col:
                style = style + Style(bold=True, color=None)
            segments.append(Segment(label.ljust(cw), style))
        if last < len(self.columns) - 1:
            segments.append(Segment("▸", header))
        return Strip(segments).adjust_cell_length(width, base)

    def _render_row(self, row: int, width: int, base: Style) -> Strip:
        gutter, cw = self.label_width, self.cell_width
        first, last = self.window
        name = self.rows[row]
        row_lo, row_hi = self._row_span()
        in_rows = row_lo <= row <= row_hi
        label = self.labels.get(name, name)
        label = label if len(label) <= gutter - 2 else label[: gutter - 3] + "…"
        label_style = base + self._style("row-selected") if in_rows else base
        segments = [Segment(" " + label.ljust(gutter - 1), label_style)]
        span = self._col_span() if in_rows else None
        marked_cols = {self._col_of_key[i] for i in self._marks} if in_rows else set()
        selected = self._style("selected")
        cursor = self._style("cursor")
        status_styles = {status: self._style(status) for status in GLYPHS}
        severity = self._severity[name]
        pad = " " * (cw - 3)
        for col in range(first, last + 1):
            column = self.columns[col]
            if column.hi - column.lo == 1:
                worst = severity[column.lo]
            else:
                worst = max(severity[column.lo : column.hi])
            status = _BY_SEVERITY.get(worst, "")
            in_range = span is not None and span[0] <= col <= span[1]
            lead = "[" if in_range and span is not None and col == span[0] else " "
            trail = "]" if in_range and span is not None and col == span[1] else " "
            if lead == " " and col in marked_cols:
                lead = "*"
            cell = base
            if in_range or col in marked_cols:
                cell = cell + selected
            if row == self.cursor_row and col == self.cursor_col:
                cell = cell + cursor
            glyph_style = cell + status_styles[status] if status else cell
            segments.append(Segment(lead, cell))
            segments.append(Segment(status_glyph(status), glyph_style))
            segments.append(Segment(trail + pad, cell))
        return Strip(segments).adjust_cell_length(width, base)


__all__ = [
    "GLYPHS",
    "cell_status",
    "GROUPINGS",
    "SEVERITY",
    "Column",
    "PartitionMatrix",
    "build_columns",
    "status_glyph",
]
