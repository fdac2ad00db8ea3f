"""Partitions over two dimensions (a day per region), keyed as Dagster's MultiPartitionsDefinition.

The dimensions are ordered by name; a key is the dimensions' keys joined with ``|`` in that
order, and the keys are enumerated as the product of the dimensions' keys in that order (the
first dimension varies slowest). With ``{"date": daily, "region": ["us", "eu"]}`` the keys are
``2025-01-01|us, 2025-01-01|eu, 2025-01-02|us, ...``: code, stored values and run history can
move between dagtop and Dagster without renaming a partition.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from engine.authoring.partitions import (
    DailyPartitions,
    HourlyPartitions,
    InvalidPartitionKey,
    PartitionsDefinition,
    StaticPartitions,
    _check_text,
)

__all__ = ["DELIMITER", "DimensionLink", "MultiPartitions", "dimensions_of", "link"]

DELIMITER = "|"
"""What joins the dimensions' keys into one key."""

# A dimension key with one of these could not be told apart from the key's structure (Dagster
# refuses the same characters): "|" joins dimensions, "," separates keys on the command line.
_RESERVED = frozenset("|,[]")
_TIME_KINDS = (DailyPartitions, HourlyPartitions)


@dataclass(frozen=True, init=False)
class MultiPartitions(PartitionsDefinition):
    """The product of two partitions definitions, e.g. a day per region.

    ``context.partition`` is the key string (``"2025-01-01|us"``) and ``context.dimensions``
    the dimensions' keys (``{"date": "2025-01-01", "region": "us"}``).

    Args:
        dimensions: Exactly two dimension names, each mapped to a `DailyPartitions`,
            `HourlyPartitions` or `StaticPartitions`; at most one of them time-based.

    Raises:
        ValueError: Not two dimensions, a name that is not a non-empty string, a definition of
            another kind, two time-based dimensions, or a static key containing ``|``, ``,``,
            ``[`` or ``]``.
    """

    dimensions: tuple[tuple[str, PartitionsDefinition], ...]
    kind: ClassVar[str] = "multi"

    def __init__(self, dimensions: Mapping[str, PartitionsDefinition]) -> None:
        if not isinstance(dimensions, Mapping):
            raise ValueError(
                "MultiPartitions takes a dict of dimension name to partitions, e.g. "
                '{"date": DailyPartitions(...), "region": StaticPartitions([...])}'
            )
        if len(dimensions) != 2:
            raise ValueError(f"MultiPartitions needs exactly two dimensions, got {len(dimensions)}")
        for name, pdef in dimensions.items():
            if not isinstance(name, str) or not name or not name.isprintable():
                raise ValueError(
                    f"MultiPartitions dimension names must be non-empty strings, got {name!r}"
                )
            if isinstance(pdef, MultiPartitions) or not isinstance(pdef, PartitionsDefinition):
                raise ValueError(
                    f"MultiPartitions dimension {name!r} must be DailyPartitions, "
                    f"HourlyPartitions or StaticPartitions, got {type(pdef).__name__}"
                )
            if isinstance(pdef, StaticPartitions):
                bad = next((k for k in pdef.partition_keys if _RESERVED & set(k)), None)
                if bad is not None:
                    raise ValueError(
                        f"MultiPartitions dimension {name!r} has key {bad!r}: keys of a "
                        "dimension cannot contain |, ',', [ or ]"
                    )
        timed = [name for name, pdef in dimensions.items() if isinstance(pdef, _TIME_KINDS)]
        if len(timed) > 1:
            raise ValueError(
                f"MultiPartitions can have at most one time-based dimension, got "
                f"{' and '.join(sorted(timed))}"
            )
        object.__setattr__(self, "dimensions", tuple(sorted(dimensions.items())))

    def __repr__(self) -> str:
        inner = ", ".join(f"{name!r}: {pdef!r}" for name, pdef in self.dimensions)
        return f"MultiPartitions({{{inner}}})"

    # --- the dimensions ----------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        """The dimension names, sorted: the order of the parts of a key."""
        return [name for name, _ in self.dimensions]

    def dimension(self, name: str) -> PartitionsDefinition:
        """The partitions definition of dimension ``name``.

        Raises:
            KeyError: No dimension has that name.
        """
        for dim, pdef in self.dimensions:
            if dim == name:
                return pdef
        raise KeyError(name)

    @property
    def time_dimension(self) -> str | None:
        """The name of the time-based dimension, or None if neither is."""
        return next((n for n, p in self.dimensions if isinstance(p, _TIME_KINDS)), None)

    @property
    def other_dimension(self) -> str:
        """The dimension that is not time-based (the second one if neither is)."""
        timed = self.time_dimension
        return next(n for n in reversed(self.names) if n != timed)

    def split(self, key: str) -> dict[str, str]:
        """The keys of each dimension in a key (``{"date": "2025-01-01", "region": "us"}``).

        Raises:
            InvalidPartitionKey: The key does not have one part per dimension.
        """
        if not isinstance(key, str):
            raise InvalidPartitionKey(
                f"partition key must be a string, got {type(key).__name__} {key!r}"
            )
        parts = key.split(DELIMITER)
        if len(parts) != len(self.dimensions):
            raise InvalidPartitionKey(self._shape_problem(key))
        return dict(zip(self.names, parts, strict=True))

    def join(self, keys: Mapping[str, str]) -> str:
        """The key of the partition with these dimension keys (the inverse of :meth:`split`).

        Raises:
            KeyError: A dimension is missing from ``keys``.
        """
        return DELIMITER.join(keys[name] for name in self.names)

    def keys_where(self, dimension: str, value: str, keys: Iterable[str]) -> list[str]:
        """The keys among ``keys`` whose ``dimension`` part is ``value``, in their order."""
        at = self.names.index(dimension)
        return [k for k in keys if _part(k, at) == value]

    # --- PartitionsDefinition ----------------------------------------------------------------

    def keys(self, now: datetime | None = None) -> list[str]:
        """See :meth:`PartitionsDefinition.keys`: the product of the dimensions' keys, in the
        order of the dimension names."""
        return [
            DELIMITER.join(parts)
            for parts in itertools.product(*(pdef.keys(now) for _, pdef in self.dimensions))
        ]

    def validate_key(self, key: str, now: datetime | None = None) -> None:
        """See :meth:`PartitionsDefinition.validate_key`; the message names the dimension at
        fault and, where it can, the key that was meant."""
        if not isinstance(key, str):
            raise InvalidPartitionKey(
                f"partition key must be a string, got {type(key).__name__} {key!r}"
            )
        _check_text(key)
        parts = self.split(key)
        problems = []
        for name, pdef in self.dimensions:
            try:
                pdef.validate_key(parts[name], now)
            except InvalidPartitionKey as exc:
                problems.append(f"{name}: {exc}")
        if not problems:
            return
        swapped = DELIMITER.join(reversed(list(parts.values())))
        if len(problems) == len(self.dimensions) and self._valid(swapped, now):
            raise InvalidPartitionKey(
                f"{key!r} has its dimensions the other way round: did you mean {swapped!r}? "
                f"(keys are {self._shape()})"
            )
        raise InvalidPartitionKey(f"{key!r}: {'; '.join(problems)}")

    def validate_bound(self, key: str, now: datetime | None = None) -> None:
        """Check one end of a range as :meth:`keys_between` takes it: a key of this definition,
        or a key of its time dimension.

        Raises:
            InvalidPartitionKey: With a one-line message naming the dimension at fault.
        """
        timed = self.time_dimension
        if timed is not None and isinstance(key, str) and DELIMITER not in key:
            try:
                self.dimension(timed).validate_key(key, now)
            except InvalidPartitionKey as exc:
                other = self.other_dimension
                if self._valid_in(self.dimension(other), key):
                    raise InvalidPartitionKey(
                        f"{key!r} names only the {other}: give a {timed} or a whole key "
                        f"({self._shape()})"
                    ) from None
                raise InvalidPartitionKey(f"{timed}: {exc}") from None
            return
        self.validate_key(key, now)

    def keys_between(self, first: str, last: str, now: datetime | None = None) -> list[str]:
        """See :meth:`PartitionsDefinition.keys_between`.

        ``first`` and ``last`` are either two keys of this definition (the result is the
        product of each dimension's range, as Dagster ranges over a MultiPartitionsDefinition)
        or two keys of the time dimension (every key of the other dimension on each of those
        days or hours).
        """
        if DELIMITER not in first and DELIMITER not in last and self.time_dimension is not None:
            timed = self.time_dimension
            try:
                times = self.dimension(timed).keys_between(first, last, now)
            except InvalidPartitionKey as exc:
                raise InvalidPartitionKey(f"{timed}: {exc}") from None
            other = self.other_dimension
            return self._product({timed: times, other: self.dimension(other).keys(now)})
        self.validate_key(first, now)
        self.validate_key(last, now)
        lo, hi = self.split(first), self.split(last)
        ranges_by_name: dict[str, list[str]] = {}
        for name, pdef in self.dimensions:
            try:
                ranges_by_name[name] = pdef.keys_between(lo[name], hi[name], now)
            except InvalidPartitionKey as exc:
                raise InvalidPartitionKey(f"{name}: {exc}") from None
        return self._product(ranges_by_name)

    def last_complete_key(self, at: datetime) -> str | None:
        """The last key, in order, of the partitions whose time period ended by ``at``; None
        without a time dimension (static keys never complete on their own) or without keys."""
        timed = self.time_dimension
        if timed is None:
            return None
        latest = self.dimension(timed).last_complete_key(at)
        others = self.dimension(self.other_dimension).keys(at)
        if latest is None or not others:
            return None
        return self.join({timed: latest, self.other_dimension: others[-1]})

    def period(self, key: str) -> tuple[datetime, datetime]:
        """The period of the key's time dimension.

        Raises:
            InvalidPartitionKey: The key is malformed.
            ValueError: Neither dimension is time-based.
        """
        timed = self.time_dimension
        if timed is None:
            raise ValueError(f"partition {key!r} has no time period (no time-based dimension)")
        return self.dimension(timed).period(self.split(key)[timed])

    def to_spec(self) -> dict[str, Any]:
        """See :meth:`PartitionsDefinition.to_spec`."""
        return {
            "kind": self.kind,
            "dimensions": {name: pdef.to_spec() for name, pdef in self.dimensions},
        }

    @staticmethod
    def from_dimensions_spec(spec: dict[str, Any]) -> MultiPartitions:
        """Build the definition from the dict :meth:`to_spec` returned.

        Raises:
            ValueError: The spec is malformed.
        """
        dims = spec.get("dimensions")
        if set(spec) != {"kind", "dimensions"} or not isinstance(dims, dict):
            raise ValueError("multi partitions spec must have exactly kind and dimensions")
        return MultiPartitions({n: PartitionsDefinition.from_spec(s) for n, s in dims.items()})

    def describe(self) -> str:
        """See :meth:`PartitionsDefinition.describe`."""
        inner = " × ".join(f"{name}: {pdef.describe()}" for name, pdef in self.dimensions)
        return f"MultiPartitions ({inner})"

    # --- helpers -----------------------------------------------------------------------------

    def _product(self, ranges: Mapping[str, list[str]]) -> list[str]:
        return [
            DELIMITER.join(parts) for parts in itertools.product(*(ranges[n] for n in self.names))
        ]

    def _valid(self, key: str, now: datetime | None) -> bool:
        parts = key.split(DELIMITER)
        try:
            for (_, pdef), part in zip(self.dimensions, parts, strict=True):
                pdef.validate_key(part, now)
        except (InvalidPartitionKey, ValueError):
            return False
        return True

    def _shape(self) -> str:
        return DELIMITER.join(name.upper() for name in self.names)

    def _example(self) -> str | None:
        firsts = []
        for _, pdef in self.dimensions:
            keys = pdef.keys()
            if not keys:
                return None
            firsts.append(keys[-1] if isinstance(pdef, _TIME_KINDS) else keys[0])
        return DELIMITER.join(firsts)

    def _shape_problem(self, key: str) -> str:
        example = self._example()
        hint = f", e.g. {example!r}" if example else ""
        if DELIMITER not in key:
            for name, pdef in self.dimensions:
                if self._valid_in(pdef, key):
                    every = ""
                    if name == self.time_dimension:
                        every = (
                            f" (backfill --from {key} --to {key} covers every "
                            f"{self.other_dimension})"
                        )
                    return (
                        f"{key!r} names only the {name}: a key of this asset is "
                        f"{self._shape()}{hint}{every}"
                    )
        return f"{key!r} is not a key of {self._shape()}{hint}"

    @staticmethod
    def _valid_in(pdef: PartitionsDefinition, key: str) -> bool:
        try:
            pdef.validate_key(key)
        except (InvalidPartitionKey, ValueError):
            return False
        return True


def _part(key: str, at: int) -> str | None:
    parts = key.split(DELIMITER)
    return parts[at] if len(parts) > at else None


def dimensions_of(pdef: PartitionsDefinition | None, key: str | None) -> dict[str, str]:
    """What ``context.dimensions`` holds for ``key``: its dimensions' keys for a
    `MultiPartitions` asset, else an empty dict."""
    if not isinstance(pdef, MultiPartitions) or key is None:
        return {}
    return pdef.split(key)


@dataclass(frozen=True, slots=True)
class DimensionLink:
    """How the partitions of an asset depend on those of an upstream partitioned by one
    dimension of the other (see :func:`link`).

    Attributes:
        fan_in: True when the upstream is the `MultiPartitions` one: a downstream key reads
            every upstream key whose dimension part is that key (``{key: value}``). False when
            the downstream is: a downstream key reads the one upstream key that is its part.
        position: Where that dimension's part sits in a `MultiPartitions` key.
    """

    fan_in: bool
    position: int

    def upstream_key(self, key: str) -> str | None:
        """The one upstream key a downstream ``key`` reads (None for a fan-in link, or a key
        that does not have the part)."""
        return None if self.fan_in else _part(key, self.position)

    def downstream_key(self, upstream_key: str) -> str | None:
        """The one downstream key that reads ``upstream_key`` in a fan-in link (None for the
        other kind, where many downstream keys read it)."""
        return _part(upstream_key, self.position) if self.fan_in else None

    def reads(self, upstream_key: str | None, key: str | None) -> bool:
        """Whether the downstream ``key`` reads ``upstream_key``."""
        if upstream_key is None or key is None:
            return False
        if self.fan_in:
            return _part(upstream_key, self.position) == key
        return _part(key, self.position) == upstream_key


def link(
    upstream: Mapping[str, Any] | None, downstream: Mapping[str, Any] | None
) -> DimensionLink | None:
    """The link between two assets' partitions specs (as `to_spec` gives them) when one is a
    `MultiPartitions` with a dimension partitioned exactly as the other is; else None.

    Read from the specs (plain dicts), not definitions: the engine asks this for every input
    of every step it plans, and comparing dicts costs nothing.
    """
    if upstream is None or downstream is None:
        return None
    for multi, single, fan_in in ((upstream, downstream, True), (downstream, upstream, False)):
        if multi.get("kind") == MultiPartitions.kind and single.get("kind") != multi.get("kind"):
            dims = multi.get("dimensions") or {}
            for position, name in enumerate(sorted(dims)):
                if dims[name] == single:
                    return DimensionLink(fan_in=fan_in, position=position)
    return None
