"""The partition matrix of MultiPartitions assets: one dimension's keys as columns (the time
dimension, when there is one), the other's as rows under each asset.

Each asset has a row of its own, which shows the worst status of its keys in each column (so a
failed region still shows when the rows are scrolled away), then one row per key of the row
dimension. Rows are named `asset` and `asset␟key`: the unit separator is a control character,
which neither an asset name nor a partition key can contain. Everything here is linear in the
number of keys: a year of days by 24 regions is 8,760 keys per asset.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from engine.authoring.multi_partitions import DELIMITER, MultiPartitions
from tui.widgets.partition_matrix import SEVERITY, cell_status

if TYPE_CHECKING:
    from engine.client_api import PartitionState

SEP = "\x1f"
"""Between an asset and a key of the row dimension in a row's name."""


@dataclass(frozen=True)
class Grid:
    """How the keys of MultiPartitions assets are laid out as columns and rows."""

    assets: tuple[str, ...]
    column_dimension: str
    row_dimension: str
    columns: tuple[str, ...]
    """The column dimension's keys, in order."""
    row_keys: tuple[str, ...]
    """The row dimension's keys, in order."""
    column_first: bool
    """Whether the column dimension's part comes first in a key."""
    kind: str
    """The column dimension's partitions kind (daily, hourly, static), for grouping columns."""

    @classmethod
    def of(cls, pdef: MultiPartitions, assets: Sequence[str]) -> Grid:
        column = pdef.time_dimension or pdef.names[0]
        row = next(name for name in pdef.names if name != column)
        column_def = pdef.dimension(column)
        return cls(
            assets=tuple(assets),
            column_dimension=column,
            row_dimension=row,
            columns=tuple(column_def.keys()),
            row_keys=tuple(pdef.dimension(row).keys()),
            column_first=pdef.names[0] == column,
            kind=column_def.kind,
        )

    # --- names ---------------------------------------------------------------------------

    @property
    def rows(self) -> list[str]:
        """Every row of the matrix, top to bottom: each asset, then its keys."""
        return [row for asset in self.assets for row in (asset, *self.sub_rows(asset))]

    def sub_rows(self, asset: str) -> list[str]:
        return [f"{asset}{SEP}{key}" for key in self.row_keys]

    @property
    def labels(self) -> dict[str, str]:
        """What the gutter shows: the asset, and each key indented under it."""
        return {f"{a}{SEP}{k}": f"  {k}" for a in self.assets for k in self.row_keys}

    @staticmethod
    def split_row(row: str) -> tuple[str, str | None]:
        """The asset of a row and its row key (None on the asset's own row)."""
        asset, _, key = row.partition(SEP)
        return asset, key or None

    def key(self, column: str, row_key: str) -> str:
        """The partition key at a column of a row key."""
        parts = (column, row_key) if self.column_first else (row_key, column)
        return DELIMITER.join(parts)

    def parts(self, key: str) -> tuple[str, str] | None:
        """The column and the row key of a partition key (None if it is not of this shape)."""
        parts = key.split(DELIMITER)
        if len(parts) != 2:
            return None
        return (parts[0], parts[1]) if self.column_first else (parts[1], parts[0])

    def keys_of(self, rows: Iterable[str], columns: Sequence[str]) -> tuple[list[str], list[str]]:
        """The assets and the partition keys (in their definition's order) that a selection of
        rows and columns means: an asset's own row means every row key."""
        assets: dict[str, None] = {}
        chosen: set[str] = set()
        for row in rows:
            asset, key = self.split_row(row)
            assets[asset] = None
            chosen.update(self.row_keys if key is None else (key,))
        row_keys = [k for k in self.row_keys if k in chosen]
        if self.column_first:
            keys = [self.key(c, r) for c in columns for r in row_keys]
        else:
            keys = [self.key(c, r) for r in row_keys for c in columns]
        return list(assets), keys

    # --- states ------------------------------------------------------------------------------

    def full_rows(
        self, asset: str, states: Sequence[PartitionState]
    ) -> dict[str, list[PartitionState | None]]:
        """Every row of an asset, each with one state per column (None where none is known),
        from the asset's states of every key."""
        index = {c: i for i, c in enumerate(self.columns)}
        by_key: dict[str, list[PartitionState | None]] = {
            k: [None] * len(self.columns) for k in self.row_keys
        }
        for state in states:
            found = None if state.key is None else self.parts(state.key)
            if found is None or found[1] not in by_key or found[0] not in index:
                continue
            by_key[found[1]][index[found[0]]] = replace(state, key=found[0])
        rows: dict[str, list[PartitionState | None]] = {
            f"{asset}{SEP}{k}": v for k, v in by_key.items()
        }
        rows[asset] = [worst(column) for column in zip(*by_key.values(), strict=True)]
        if not by_key:
            rows[asset] = [None] * len(self.columns)
        return rows

    def changed_rows(
        self, asset: str, states: Sequence[PartitionState]
    ) -> dict[str, list[PartitionState]]:
        """The states that changed, by row, each keyed by its column (the asset's own row is
        left to the caller: it needs every row's state at those columns)."""
        rows: dict[str, list[PartitionState]] = {}
        for state in states:
            found = None if state.key is None else self.parts(state.key)
            if found is None:
                continue
            rows.setdefault(f"{asset}{SEP}{found[1]}", []).append(replace(state, key=found[0]))
        return rows


def worst(states: Iterable[PartitionState | None]) -> PartitionState | None:
    """The state that matters most among several (what a grouped cell shows)."""
    chosen, rank = None, -2
    for state in states:
        if state is None:
            continue
        severity = SEVERITY.get(cell_status(state), -1)
        if severity > rank:
            chosen, rank = state, severity
    return chosen


__all__ = ["SEP", "Grid", "worst"]
