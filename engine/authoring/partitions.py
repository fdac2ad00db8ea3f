"""Partition definitions: daily, hourly and static partition keys with Dagster's semantics."""

from __future__ import annotations

import difflib
import hashlib
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any, ClassVar, Generic, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from engine.units import control_character

__all__ = [
    "DailyPartitions",
    "HourlyPartitions",
    "InvalidPartitionKey",
    "PartitionsDefinition",
    "StaticPartitions",
    "safe_key",
]

_HOUR = timedelta(hours=1)
_ONE_DAY = timedelta(days=1)
_TINY = timedelta(microseconds=1)

# The minute is captured (rather than matching a literal ":00") so that start/end values such as
# "2025-01-31-13:30" can be accepted while keys still insist on the top of the hour.
_HOURLY_RE = re.compile(r"(\d{4})-(\d{2})-(\d{2})-(\d{2}):(\d{2})(?:([+-])(\d{2})(\d{2})(\d{2})?)?")
_DAILY_RE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
# datetime.fromisoformat also accepts week dates and compact forms; users only ever mean these.
_ISO_RE = re.compile(
    r"\d{4}-\d{2}-\d{2}"
    r"(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?(?:Z|[+-]\d{2}:\d{2}(?::\d{2})?)?)?"
)

_DESCRIBE_MAX_KEYS = 10


class InvalidPartitionKey(ValueError):
    """A partition key that is malformed or names no existing partition of a definition."""


def _check_text(key: str) -> None:
    """Refuse a key with a control character, wherever it comes from (the command line, the
    UI, a request): keys are printed one per line, and travel in file names and environment
    variables, where NUL cannot."""
    found = control_character(key)
    if found is not None:
        raise InvalidPartitionKey(f"partition key {key!r} contains a control character ({found})")


class PartitionsDefinition(ABC):
    """How an asset is split into partitions, each named by a string key.

    Subclasses are immutable and compare equal when built from equal parameters.
    """

    kind: ClassVar[str]

    @abstractmethod
    def keys(self, now: datetime | None = None) -> list[str]:
        """Return every existing partition key, in order.

        Args:
            now: Aware datetime deciding which time partitions have ended (default: the current
                time). Static partitions ignore it.
        """

    @abstractmethod
    def validate_key(self, key: str, now: datetime | None = None) -> None:
        """Check that ``key`` names an existing partition.

        Args:
            key: The partition key.
            now: Aware datetime deciding which time partitions have ended (default: now).

        Raises:
            InvalidPartitionKey: With a one-line message saying what is wrong with the key.
        """

    @abstractmethod
    def keys_between(self, first: str, last: str, now: datetime | None = None) -> list[str]:
        """Return the existing keys from ``first`` to ``last``, both included.

        Args:
            first: First key of the range; must exist.
            last: Last key of the range; must exist and not come before ``first``.
            now: Aware datetime deciding which time partitions have ended (default: now).

        Raises:
            InvalidPartitionKey: If either key does not exist or ``first`` comes after ``last``.
        """

    @abstractmethod
    def last_complete_key(self, at: datetime) -> str | None:
        """Return the key of the latest existing partition whose period ended at or before ``at``.

        Args:
            at: Aware datetime.

        Returns:
            The key, or None if no partition had ended by then (always None for static
            partitions, which have no periods).
        """

    @abstractmethod
    def period(self, key: str) -> tuple[datetime, datetime]:
        """Return the half-open period ``[start, end)`` of a time partition, as aware UTC datetimes.

        The key must be well formed but need not exist yet (future periods are well defined).

        Raises:
            InvalidPartitionKey: If the key is malformed.
            ValueError: For static partitions, which have no periods.
        """

    @abstractmethod
    def to_spec(self) -> dict[str, Any]:
        """Return a JSON-able dict that :meth:`from_spec` turns back into an equal object."""

    @abstractmethod
    def describe(self) -> str:
        """Return a one-line description, e.g. ``DailyPartitions from 2025-01-01 (UTC)``."""

    @staticmethod
    def from_spec(spec: dict[str, Any]) -> PartitionsDefinition:
        """Build a definition from a dict produced by :meth:`to_spec`.

        Raises:
            ValueError: If the spec is not a dict, has an unknown kind, or has unknown or invalid
                fields.
        """
        if not isinstance(spec, dict):
            raise ValueError(f"partitions spec must be a dict, got {type(spec).__name__}")
        kind = spec.get("kind")
        if kind == "multi":
            from engine.authoring.multi_partitions import MultiPartitions

            return MultiPartitions.from_dimensions_spec(spec)
        if kind == StaticPartitions.kind:
            _check_spec_fields(spec, required={"keys"}, optional=set())
            return StaticPartitions(spec["keys"])
        if kind == DynamicPartitions.kind:
            _check_spec_fields(spec, required={"name"}, optional={"keys"})
            return DynamicPartitions(spec["name"]).with_keys(spec.get("keys") or ())
        for cls in (DailyPartitions, HourlyPartitions):
            if kind == cls.kind:
                _check_spec_fields(spec, required={"start"}, optional={"end", "timezone"})
                return cls(spec["start"], end=spec.get("end"), timezone=spec.get("timezone", "UTC"))
        raise ValueError(
            f"unknown partitions kind {kind!r} (expected 'daily', 'hourly', 'static' or 'dynamic')"
        )


def _check_spec_fields(spec: dict[str, Any], required: set[str], optional: set[str]) -> None:
    fields = set(spec) - {"kind"}
    missing = required - fields
    if missing:
        raise ValueError(f"{spec['kind']} partitions spec is missing {', '.join(sorted(missing))}")
    unknown = fields - required - optional
    if unknown:
        names = ", ".join(sorted(map(str, unknown)))
        raise ValueError(f"{spec['kind']} partitions spec has unknown field(s): {names}")


def _aware(value: datetime | None, name: str) -> datetime:
    if value is None:
        return datetime.now(UTC)
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {value!r}")
    return value


def _load_timezone(name: object) -> ZoneInfo:
    if not isinstance(name, str) or not name:
        raise ValueError(f"timezone must be a non-empty IANA name such as 'UTC', got {name!r}")
    try:
        return ZoneInfo(name)
    # ZoneInfo raises ValueError for path-like names and OSError for directories such as
    # "America"; all of them mean the same thing to the user.
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(
            f"unknown timezone {name!r} (expected an IANA name such as 'UTC' or 'Europe/Berlin')"
        ) from None


def _is_aligned(local: datetime) -> bool:
    return not (local.minute or local.second or local.microsecond)


def _since_hour(local: datetime) -> timedelta:
    return timedelta(minutes=local.minute, seconds=local.second, microseconds=local.microsecond)


def _format_offset(offset: timedelta) -> str:
    sign = "-" if offset < timedelta(0) else "+"
    seconds = abs(int(offset.total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    text = f"{sign}{hours:02d}{minutes:02d}"
    # Only pre-1900 local mean times have second-level offsets; keep keys exact for them too.
    return text + f"{seconds:02d}" if seconds else text


def _resolve_wall(wall: datetime, tz: tzinfo) -> datetime:
    """Map a naive wall-clock time in ``tz`` to a UTC instant.

    Repeated wall times resolve to their first occurrence; times skipped by a forward clock change
    resolve to the instant of the change, i.e. where the skipped interval would have begun.
    """
    early = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    late = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    if early <= late:
        return early
    # In a gap PEP 495 maps fold=0 with the offset before the change and fold=1 with the one after,
    # so the change lies in (late, early]. Transitions fall on whole UTC seconds.
    base = late.replace(microsecond=0)
    before = base.astimezone(tz).utcoffset()
    lo, hi = 0, int((early - base).total_seconds()) + 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if (base + timedelta(seconds=mid)).astimezone(tz).utcoffset() == before:
            lo = mid
        else:
            hi = mid
    return base + timedelta(seconds=hi)


def _parse_point(value: object, tz: tzinfo, what: str, owner: str) -> datetime:
    """Parse a start/end value into a UTC instant (not yet snapped to a partition boundary)."""
    if isinstance(value, datetime):
        if value.utcoffset() is not None:
            return value.astimezone(UTC)
        return _resolve_wall(value, tz)
    if isinstance(value, date):
        return _resolve_wall(datetime(value.year, value.month, value.day), tz)
    problem = (
        f"invalid {what} {value!r} for {owner}: expected a partition key such as '2025-01-31' or "
        "'2025-01-31-13:00', an ISO date or datetime, or a datetime.date/datetime"
    )
    if not isinstance(value, str):
        raise ValueError(problem)
    text = value.strip()
    try:
        match = _HOURLY_RE.fullmatch(text)
        if match:
            year, month, day, hour, minute = (int(g) for g in match.group(1, 2, 3, 4, 5))
            wall = datetime(year, month, day, hour, minute)
            if match.group(6) is None:
                return _resolve_wall(wall, tz)
            # An explicit offset pins the instant, exactly like an ISO string with an offset.
            offset = _parse_offset(match.group(6, 7, 8, 9))
            return (wall - offset).replace(tzinfo=UTC)
        if _ISO_RE.fullmatch(text):
            return _parse_point(datetime.fromisoformat(text), tz, what, owner)
    except (ValueError, OverflowError):
        pass
    raise ValueError(problem)


def _parse_offset(groups: tuple[str | None, ...]) -> timedelta:
    sign, hours, minutes, seconds = groups
    offset = timedelta(hours=int(hours or 0), minutes=int(minutes or 0), seconds=int(seconds or 0))
    if int(minutes or 0) >= 60 or int(seconds or 0) >= 60 or offset >= timedelta(hours=24):
        raise ValueError("offset out of range")
    return -offset if sign == "-" else offset


_P = TypeVar("_P", date, datetime)


class _TimePartitions(PartitionsDefinition, Generic[_P]):
    """Shared logic for calendar partitions.

    Subclasses identify a period by a value of type ``_P`` that sorts in time order (a local date
    for daily partitions, the UTC start instant for hourly ones). ``_first`` is the first period and
    ``_stop`` the first period excluded by ``end``.
    """

    start: str
    end: str | None
    timezone: str
    _noun: ClassVar[str]
    _tz: ZoneInfo
    _first: _P
    _stop: _P | None

    def __init__(
        self,
        start: str | date | datetime,
        end: str | date | datetime | None = None,
        timezone: str = "UTC",
    ) -> None:
        owner = type(self).__name__
        tz = _load_timezone(timezone)
        object.__setattr__(self, "_tz", tz)
        if start is None:
            raise ValueError(f"{owner} needs a start")
        try:
            start_at = _parse_point(start, tz, "start", owner)
            first = self._ceil(start_at)
            stop = None
            if end is not None:
                end_at = _parse_point(end, tz, "end", owner)
                if end_at <= start_at:
                    raise ValueError(f"{owner} end {end!r} is not after its start {start!r}")
                # Only whole periods count, so an end inside a period drops that period.
                stop = self._floor(end_at)
                if stop <= first:
                    raise ValueError(
                        f"{owner} from {start!r} to {end!r} contains no complete {self._noun} "
                        "(end is exclusive)"
                    )
        except OverflowError:
            raise ValueError(f"{owner} start/end is out of the supported date range") from None
        # Storing normalized keys makes equivalent spellings of the same range compare equal.
        object.__setattr__(self, "start", self._key(first))
        object.__setattr__(self, "end", None if stop is None else self._key(stop))
        object.__setattr__(self, "timezone", timezone)
        object.__setattr__(self, "_first", first)
        object.__setattr__(self, "_stop", stop)

    # Period arithmetic, implemented by subclasses.

    @abstractmethod
    def _floor(self, instant: datetime) -> _P:
        """The period containing ``instant``."""

    @abstractmethod
    def _next(self, period: _P) -> _P: ...

    @abstractmethod
    def _prev(self, period: _P) -> _P: ...

    @abstractmethod
    def _begin(self, period: _P) -> datetime:
        """The UTC instant at which ``period`` begins."""

    @abstractmethod
    def _key(self, period: _P) -> str: ...

    @abstractmethod
    def _parse_key(self, key: str) -> _P:
        """Parse a key into its period, raising InvalidPartitionKey if malformed or impossible."""

    @abstractmethod
    def _keys_from_to(self, first: _P, last: _P) -> list[str]:
        """Keys of the periods ``first`` to ``last`` inclusive."""

    def _ceil(self, instant: datetime) -> _P:
        period = self._floor(instant)
        return period if self._begin(period) == instant else self._next(period)

    def _last_ended(self, at: datetime) -> _P | None:
        last = self._prev(self._floor(at))
        if self._stop is not None and last >= self._stop:
            last = self._prev(self._stop)
        return last if last >= self._first else None

    def _existing(self, key: str, now: datetime | None) -> _P:
        if not isinstance(key, str):
            raise InvalidPartitionKey(
                f"partition key must be a string, got {type(key).__name__} {key!r}"
            )
        _check_text(key)
        period = self._parse_key(key)
        if period < self._first:
            raise InvalidPartitionKey(f"{key!r} is before the first partition {self.start!r}")
        if self._stop is not None and period >= self._stop:
            raise InvalidPartitionKey(
                f"{key!r} is at or after the end {self.end!r} (the end is exclusive)"
            )
        moment = _aware(now, "now")
        if period >= self._floor(moment):
            ends = self._begin(self._next(period)).astimezone(self._tz).isoformat()
            raise InvalidPartitionKey(f"{key!r} has not ended yet (it ends at {ends})")
        return period

    def keys(self, now: datetime | None = None) -> list[str]:
        """See :meth:`PartitionsDefinition.keys`."""
        last = self._last_ended(_aware(now, "now"))
        return [] if last is None else self._keys_from_to(self._first, last)

    def validate_key(self, key: str, now: datetime | None = None) -> None:
        """See :meth:`PartitionsDefinition.validate_key`."""
        self._existing(key, now)

    def keys_between(self, first: str, last: str, now: datetime | None = None) -> list[str]:
        """See :meth:`PartitionsDefinition.keys_between`."""
        moment = _aware(now, "now")
        lo = self._existing(first, moment)
        hi = self._existing(last, moment)
        if lo > hi:
            raise InvalidPartitionKey(f"first key {first!r} is after last key {last!r}")
        return self._keys_from_to(lo, hi)

    def last_complete_key(self, at: datetime) -> str | None:
        """See :meth:`PartitionsDefinition.last_complete_key`."""
        if at is None:
            raise ValueError("at must be a timezone-aware datetime, got None")
        last = self._last_ended(_aware(at, "at"))
        return None if last is None else self._key(last)

    def period(self, key: str) -> tuple[datetime, datetime]:
        """See :meth:`PartitionsDefinition.period`."""
        if not isinstance(key, str):
            raise InvalidPartitionKey(
                f"partition key must be a string, got {type(key).__name__} {key!r}"
            )
        begins = self._parse_key(key)
        return self._begin(begins), self._begin(self._next(begins))

    def to_spec(self) -> dict[str, Any]:
        """See :meth:`PartitionsDefinition.to_spec`."""
        return {"kind": self.kind, "start": self.start, "end": self.end, "timezone": self.timezone}

    def describe(self) -> str:
        """See :meth:`PartitionsDefinition.describe`."""
        until = "" if self.end is None else f" until {self.end}"
        return f"{type(self).__name__} from {self.start}{until} ({self.timezone})"


@dataclass(frozen=True, init=False)
class DailyPartitions(_TimePartitions[date]):
    """One partition per local calendar day, keyed ``YYYY-MM-DD``.

    Days run from local midnight to local midnight, so a daylight-saving day lasts 23 or 25 hours.

    Args:
        start: First day: a key, an ISO date/datetime string (wall-clock time in ``timezone``
            unless it carries an offset), or a ``date``/``datetime``. A start inside a day begins
            at the next midnight.
        end: Exclusive end, parsed like ``start``. A day only exists if it ends at or before
            ``end``. None means open-ended.
        timezone: IANA timezone name whose calendar defines the days.

    Raises:
        ValueError: If ``start``, ``end`` or ``timezone`` is invalid.
    """

    start: str
    end: str | None
    timezone: str
    kind: ClassVar[str] = "daily"
    _noun: ClassVar[str] = "day"

    def _floor(self, instant: datetime) -> date:
        return instant.astimezone(self._tz).date()

    def _next(self, period: date) -> date:
        return period + _ONE_DAY

    def _prev(self, period: date) -> date:
        return period - _ONE_DAY

    def _begin(self, period: date) -> datetime:
        return _resolve_wall(datetime(period.year, period.month, period.day), self._tz)

    def _key(self, period: date) -> str:
        return period.isoformat()

    def _parse_key(self, key: str) -> date:
        match = _DAILY_RE.fullmatch(key)
        try:
            if match:
                return date(*(int(g) for g in match.groups()))
        except ValueError:
            pass
        raise InvalidPartitionKey(f"{key!r} is not a daily partition key (expected YYYY-MM-DD)")

    def _keys_from_to(self, first: date, last: date) -> list[str]:
        return [
            date.fromordinal(n).isoformat() for n in range(first.toordinal(), last.toordinal() + 1)
        ]


@dataclass(frozen=True, init=False)
class HourlyPartitions(_TimePartitions[datetime]):
    """One partition per hour of elapsed time, keyed by local wall-clock time ``YYYY-MM-DD-HH:MM``.

    Keys follow the wall clock of ``timezone``: the hour skipped when clocks go forward has no key,
    and when clocks go back the repeated hour's second occurrence gets its UTC offset appended
    (``2024-11-03-01:00-0500`` in America/New_York).

    Args:
        start: First hour, accepted in the same forms as :class:`DailyPartitions`; a start inside
            an hour begins at the next full hour.
        end: Exclusive end, parsed like ``start``; an hour only exists if it ends at or before it.
        timezone: IANA timezone name whose wall clock names the hours.

    Raises:
        ValueError: If ``start``, ``end`` or ``timezone`` is invalid.
    """

    start: str
    end: str | None
    timezone: str
    kind: ClassVar[str] = "hourly"
    _noun: ClassVar[str] = "hour"

    # Boundaries are the instants at which the local clock reads HH:00. With whole-hour offsets
    # (every zone in current use except Lord Howe's half-hour DST) they are exactly one hour apart;
    # the loops below only matter for the odd zones, where a period absorbs the shifted minutes.

    def _floor(self, instant: datetime) -> datetime:
        instant = instant.astimezone(UTC)
        local = instant.astimezone(self._tz)
        while not _is_aligned(local):
            instant -= _since_hour(local)
            local = instant.astimezone(self._tz)
        return instant

    def _step(self, period: datetime) -> tuple[datetime, datetime]:
        following = period + _HOUR
        local = following.astimezone(self._tz)
        while not _is_aligned(local):
            following += _HOUR - _since_hour(local)
            local = following.astimezone(self._tz)
        return following, local

    def _next(self, period: datetime) -> datetime:
        return self._step(period)[0]

    def _prev(self, period: datetime) -> datetime:
        return self._floor(period - _TINY)

    def _begin(self, period: datetime) -> datetime:
        return period

    def _key(self, period: datetime) -> str:
        return self._local_key(period.astimezone(self._tz))

    @staticmethod
    def _local_key(local: datetime) -> str:
        day = f"{local.year:04d}-{local.month:02d}-{local.day:02d}"
        key = f"{day}-{local.hour:02d}:{local.minute:02d}"
        # zoneinfo sets fold=1 exactly on the second pass through a repeated wall time.
        if local.fold:
            offset = local.utcoffset()
            assert offset is not None
            key += _format_offset(offset)
        return key

    def _parse_key(self, key: str) -> datetime:
        match = _HOURLY_RE.fullmatch(key)
        try:
            if not match or match.group(5) != "00":
                raise ValueError
            year, month, day, hour = (int(g) for g in match.group(1, 2, 3, 4))
            wall = datetime(year, month, day, hour)
            offset = None if match.group(6) is None else _parse_offset(match.group(6, 7, 8, 9))
            instant = (
                wall.replace(tzinfo=self._tz).astimezone(UTC)
                if offset is None
                else (wall - offset).replace(tzinfo=UTC)
            )
            local = instant.astimezone(self._tz)
        except (ValueError, OverflowError):
            raise InvalidPartitionKey(
                f"{key!r} is not an hourly partition key (expected YYYY-MM-DD-HH:00)"
            ) from None
        if local.replace(tzinfo=None, fold=0) != wall:
            if offset is None:
                raise InvalidPartitionKey(
                    f"{key!r} does not exist in {self.timezone}: the local clock skips that hour"
                )
            raise InvalidPartitionKey(
                f"{key!r} does not exist in {self.timezone}: its UTC offset is never "
                f"{_format_offset(offset)} at that time"
            )
        canonical = self._local_key(local)
        if canonical != key:
            # Aliases would let the same hour be stored under two names.
            raise InvalidPartitionKey(
                f"{key!r} is not how {self.timezone} names that hour; use {canonical!r}"
            )
        return instant

    def _keys_from_to(self, first: datetime, last: datetime) -> list[str]:
        keys: list[str] = []
        period, local = first, first.astimezone(self._tz)
        while period <= last:
            keys.append(self._local_key(local))
            period, local = self._step(period)
        return keys


class _ListedKeys(PartitionsDefinition):
    """Keys given as a list, in its order (static keys as defined, dynamic ones as added):
    no periods, nothing completes on its own."""

    partition_keys: tuple[str, ...]

    def _position(self, key: str) -> int:
        """The key's place in the list.

        Raises:
            InvalidPartitionKey: not one of the keys, with the closest suggested.
        """
        raise NotImplementedError

    def keys(self, now: datetime | None = None) -> list[str]:
        """See :meth:`PartitionsDefinition.keys`; ``now`` is ignored."""
        return list(self.partition_keys)

    def validate_key(self, key: str, now: datetime | None = None) -> None:
        """See :meth:`PartitionsDefinition.validate_key`; ``now`` is ignored."""
        self._position(key)

    def keys_between(self, first: str, last: str, now: datetime | None = None) -> list[str]:
        """See :meth:`PartitionsDefinition.keys_between`, in the list's order."""
        lo, hi = self._position(first), self._position(last)
        if lo > hi:
            raise InvalidPartitionKey(f"first key {first!r} is after last key {last!r}")
        return list(self.partition_keys[lo : hi + 1])

    def last_complete_key(self, at: datetime) -> str | None:
        """Return None: listed keys never complete on their own."""
        return None

    def period(self, key: str) -> tuple[datetime, datetime]:
        """Raise ValueError: listed keys have no time period."""
        raise ValueError(f"{self.kind} partition {key!r} has no time period")


@dataclass(frozen=True, init=False)
class StaticPartitions(_ListedKeys):
    """A fixed, ordered list of partition keys such as regions or customers.

    Args:
        keys: Unique non-empty strings, kept in the given order.

    Raises:
        ValueError: If ``keys`` is not a sequence of non-empty strings, has a duplicate, or a
            key contains a control character (a newline, NUL, ...).
    """

    partition_keys: tuple[str, ...]
    kind: ClassVar[str] = "static"
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __init__(self, keys: Sequence[str]) -> None:
        # A bare string is a sequence of characters, which is never what the caller meant.
        if isinstance(keys, str | bytes) or not isinstance(keys, Sequence):
            raise ValueError(
                f"StaticPartitions keys must be a list of strings, got {type(keys).__name__}"
            )
        index: dict[str, int] = {}
        for key in keys:
            if not isinstance(key, str) or not key:
                raise ValueError(f"StaticPartitions keys must be non-empty strings, got {key!r}")
            found = control_character(key)
            if found is not None:
                # A key is printed one per line (`dagtop partitions`, `runs`), where a newline
                # would forge a line, and travels in environment variables, where NUL cannot.
                raise ValueError(
                    f"StaticPartitions key {key!r} contains a control character ({found})"
                )
            if key in index:
                raise ValueError(f"StaticPartitions has a duplicate key {key!r}")
            index[key] = len(index)
        object.__setattr__(self, "partition_keys", tuple(keys))
        object.__setattr__(self, "_index", index)

    def __repr__(self) -> str:
        return f"StaticPartitions({list(self.partition_keys)!r})"

    def _position(self, key: str) -> int:
        if not isinstance(key, str):
            raise InvalidPartitionKey(
                f"partition key must be a string, got {type(key).__name__} {key!r}"
            )
        position = self._index.get(key)
        if position is not None:
            return position
        _check_text(key)
        # Case-folded so that "EU" still suggests "eu" (plain difflib scores that pair as 0).
        folded = difflib.get_close_matches(
            key.casefold(), [k.casefold() for k in self.partition_keys], n=3
        )
        close = [k for f in dict.fromkeys(folded) for k in self.partition_keys if k.casefold() == f]
        close = close[:3]
        if close:
            hint = f"did you mean {' or '.join(repr(k) for k in close)}?"
        else:
            hint = f"expected one of {_preview(self.partition_keys)}"
        raise InvalidPartitionKey(f"{key!r} is not a static partition key ({hint})")

    def to_spec(self) -> dict[str, Any]:
        """See :meth:`PartitionsDefinition.to_spec`."""
        return {"kind": self.kind, "keys": list(self.partition_keys)}

    def describe(self) -> str:
        """See :meth:`PartitionsDefinition.describe`."""
        return f"StaticPartitions: {_preview(self.partition_keys)}"


@dataclass(frozen=True, init=False)
class DynamicPartitions(_ListedKeys):
    """Partitions whose keys are added and removed at run time, such as customers.

    The keys live in the engine's database: `dagtop keys add NAME KEY...`, or
    `context.add_partitions(defn, keys)` from a sensor or an asset. Two definitions with the
    same name are the same set of keys.

    Args:
        name: The name the keys are stored under (letters, digits, `_`, `-`, `.`).

    Raises:
        ValueError: the name is empty or not made of those characters.
    """

    name: str
    # The keys known when this object was made (`with_keys`), in the order they were added:
    # definitions are read from pipeline files, keys from the database, bound where both are.
    partition_keys: tuple[str, ...] = field(compare=False)
    kind: ClassVar[str] = "dynamic"

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not _DYNAMIC_NAME_RE.fullmatch(name):
            raise ValueError(
                f"DynamicPartitions name must be letters, digits, '_', '-' or '.', got {name!r}"
            )
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "partition_keys", ())

    def __repr__(self) -> str:
        return f"DynamicPartitions({self.name!r})"

    def with_keys(self, keys: Sequence[str]) -> DynamicPartitions:
        """The same definition, knowing `keys` (as stored)."""
        bound = DynamicPartitions(self.name)
        object.__setattr__(bound, "partition_keys", tuple(keys))
        return bound

    def _position(self, key: str) -> int:
        if not isinstance(key, str):
            raise InvalidPartitionKey(
                f"partition key must be a string, got {type(key).__name__} {key!r}"
            )
        try:
            return self.partition_keys.index(key)
        except ValueError:
            pass
        _check_text(key)
        close = difflib.get_close_matches(key, self.partition_keys, n=1)
        if close:
            hint = f"did you mean {close[0]!r}?"
        elif self.partition_keys:
            hint = f"known: {_preview(self.partition_keys)}"
        else:
            hint = f"it has no keys yet: `dagtop keys add {self.name} KEY`"
        raise InvalidPartitionKey(f"{key!r} is not a key of {self.name!r} ({hint})")

    def to_spec(self) -> dict[str, Any]:
        """See :meth:`PartitionsDefinition.to_spec` (the name only: keys are not definitions)."""
        return {"kind": self.kind, "name": self.name}

    def describe(self) -> str:
        """See :meth:`PartitionsDefinition.describe`."""
        return f"DynamicPartitions {self.name!r}"


def check_dynamic_key(key: object) -> str:
    """A key about to be added to dynamic partitions, checked as every key is.

    Raises:
        InvalidPartitionKey: not a non-empty string, or it holds a control character.
    """
    if not isinstance(key, str) or not key:
        raise InvalidPartitionKey(f"a partition key is a non-empty string, not {key!r}")
    _check_text(key)
    if key.strip() != key:
        raise InvalidPartitionKey(f"partition key {key!r} starts or ends with a space")
    return key


_DYNAMIC_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")


def _preview(keys: Sequence[str]) -> str:
    if not keys:
        return "(no keys)"
    # repr() keeps control characters from breaking one-line messages.
    shown = [k if k.isprintable() else repr(k) for k in keys[:_DESCRIBE_MAX_KEYS]]
    more = len(keys) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more else "")


_SAFE_MAX = 120
_SAFE_PLAIN_RE = re.compile(r"[a-z0-9_][a-z0-9._-]*")
_SAFE_UNSAFE_CHARS_RE = re.compile(r"[^A-Za-z0-9_-]")
_SAFE_READABLE_MAX = 80
_SAFE_HASH_CHARS = 16
_WINDOWS_DEVICES = frozenset(
    ["con", "prn", "aux", "nul", "conin$", "conout$", "clock$"]
    + [f"{name}{n}" for name in ("com", "lpt") for n in range(10)]
)


def safe_key(key: str) -> str:
    """Turn a partition key into a name usable as one path component on any common OS.

    Keys made only of lowercase ASCII letters, digits, ``.``, ``_`` and ``-`` (not starting with
    ``.`` or ``-``, not ending with ``.``, not a Windows device name, at most 120 characters) map
    to themselves, so ``2025-01-31`` stays readable. Every other key maps to a sanitised prefix plus
    ``~`` and 16 hex digits of its SHA-256. Since plain names never contain ``~`` and never
    contain uppercase letters, distinct keys get distinct names even on case-insensitive
    filesystems.

    Args:
        key: Any partition key.

    Returns:
        A non-empty ASCII name of at most 120 characters without separators or reserved
        characters, never ``.`` or ``..``.
    """
    if not isinstance(key, str):
        raise TypeError(f"partition key must be a string, got {type(key).__name__}")
    if (
        len(key) <= _SAFE_MAX
        and _SAFE_PLAIN_RE.fullmatch(key)
        and not key.endswith(".")
        and key.split(".", 1)[0] not in _WINDOWS_DEVICES
    ):
        return key
    # surrogatepass: str keys may carry lone surrogates (e.g. from os.fsdecode); hash them anyway.
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:_SAFE_HASH_CHARS]
    # Dots are replaced too: Windows treats "con.anything" as a device, whatever follows the dot.
    readable = _SAFE_UNSAFE_CHARS_RE.sub("_", key[:_SAFE_READABLE_MAX]) or "_"
    return f"{readable}~{digest}"
