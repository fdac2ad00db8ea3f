"""How many partitions of an asset one run materializes, and partition ranges.

By default a run materializes one partition, and a backfill of 30 days is 30 runs: each day
isolated, retried and shown on its own. Some assets do a range far better at once (one SQL
query over a month, one model fit over a window): `BackfillPolicy.single_run()` runs a whole
backfill as one run, and `BackfillPolicy.multi_run(n)` as runs of at most n partitions each.

Such an asset is always called with a range, even of one key: `context.partition_keys` lists
the keys and the function returns `{key: value}` for each of them. Every key is stored and
recorded as its own materialization, so partition status, staleness and lineage stay per key.

A run's `partition` names its range as `FIRST...LAST` (Dagster's notation); a single key is
written as itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.authoring.partitions import PartitionsDefinition

RANGE_SEP = "..."


@dataclass(frozen=True, slots=True)
class BackfillPolicy:
    """How a backfill splits an asset's partitions into runs.

    Attributes:
        max_partitions_per_run: The most partitions one run covers; None for no limit.
    """

    max_partitions_per_run: int | None = 1

    def __post_init__(self) -> None:
        n = self.max_partitions_per_run
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise ValueError(f"max_partitions_per_run must be a whole number >= 1, got {n!r}")

    @classmethod
    def single_run(cls) -> BackfillPolicy:
        """Every backfill of the asset is one run over the whole range."""
        return cls(None)

    @classmethod
    def multi_run(cls, max_partitions_per_run: int = 1) -> BackfillPolicy:
        """Runs of at most `max_partitions_per_run` consecutive partitions each."""
        return cls(max_partitions_per_run)

    @property
    def ranged(self) -> bool:
        """Whether the asset is called with ranges (any policy but one partition per run)."""
        return self.max_partitions_per_run != 1


class RangeOutputError(ValueError):
    """A ranged asset returned something other than {key: value} over its range."""


def range_values(value: object, keys: list[str], what: str) -> dict[str, object]:
    """A ranged asset's {key: value} in the range's order, checked against the range.

    Raises:
        RangeOutputError: not a mapping, or its keys are not exactly the range.
    """
    if not isinstance(value, Mapping):
        raise RangeOutputError(
            f"{what} is called with a range of partitions (context.partition_keys): it must "
            f"return {{key: value}} for each key, got {type(value).__name__}"
        )
    wanted = set(keys)
    missing = [k for k in keys if k not in value]
    extra = [repr(k) for k in value if k not in wanted]
    problems = []
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        problems.append(f"no value for {', '.join(missing[:3])}{more}")
    if extra:
        problems.append(f"keys outside its range: {', '.join(extra[:3])}")
    if problems:
        raise RangeOutputError(f"{what} returned {'; '.join(problems)}")
    return {k: value[k] for k in keys}


def range_text(first: str, last: str) -> str:
    """How a run names the partitions from `first` to `last`."""
    return first if first == last else f"{first}{RANGE_SEP}{last}"


def keys_of(pdef: PartitionsDefinition, text: str) -> list[str]:
    """The keys a run's `partition` names: one key, or every key of `FIRST...LAST`.

    Raises:
        InvalidPartitionKey: a key does not exist, or the range is backwards.
    """
    if RANGE_SEP in text:
        try:
            pdef.validate_key(text)
            return [text]  # a static key that happens to contain "..."
        except ValueError:
            first, last = text.split(RANGE_SEP, 1)
            return pdef.keys_between(first, last)
    pdef.validate_key(text)
    return [text]


def is_range(text: str | None) -> bool:
    return text is not None and RANGE_SEP in text


def covers(text: str | None, key: str, position: Mapping[str, int]) -> bool:
    """Whether a run's partition (one key, or FIRST...LAST) includes `key`.

    Args:
        position: Every key of the partitions definition and its place in order.
    """
    if text == key:
        return True
    if text is None or not is_range(text) or key not in position:
        return False
    first, last = text.split(RANGE_SEP, 1)
    if first not in position or last not in position:
        return False
    return position[first] <= position[key] <= position[last]


def chunks(keys: Sequence[str], order: Sequence[str], limit: int | None) -> list[list[str]]:
    """`keys` in `order`, cut into runs of consecutive keys (no gap in `order` between them)
    of at most `limit` keys each (None: no limit).

    Args:
        keys: The keys to cover (each must be in `order`).
        order: Every key of the partitions definition, in order.
    """
    position = {key: i for i, key in enumerate(order)}
    out: list[list[str]] = []
    last = -2
    for key in sorted(set(keys), key=position.__getitem__):
        at = position[key]
        if out and at == last + 1 and (limit is None or len(out[-1]) < limit):
            out[-1].append(key)
        else:
            out.append([key])
        last = at
    return out
