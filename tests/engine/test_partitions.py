"""Tests for engine.authoring.partitions: daily, hourly and static partitions, and safe_key."""

from __future__ import annotations

import json
import pickle
import re
from dataclasses import FrozenInstanceError
from datetime import UTC, date, datetime, timedelta
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.authoring.partitions import (
    DailyPartitions,
    HourlyPartitions,
    InvalidPartitionKey,
    PartitionsDefinition,
    StaticPartitions,
    safe_key,
)

NY = "America/New_York"
BERLIN = "Europe/Berlin"
FAR_FUTURE = datetime(2100, 1, 1, tzinfo=UTC)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


def local(
    tz: str, year: int, month: int, day: int, hour: int = 0, minute: int = 0, *, fold: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=ZoneInfo(tz), fold=fold)


def error_message(excinfo: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


# --- key formats and basic ranges -------------------------------------------------------------


def test_daily_keys_are_iso_dates() -> None:
    parts = DailyPartitions("2025-01-30")
    assert parts.kind == "daily"
    assert parts.keys(now=utc(2025, 2, 2, 12)) == ["2025-01-30", "2025-01-31", "2025-02-01"]


def test_hourly_keys_have_hour_and_minute() -> None:
    parts = HourlyPartitions("2025-01-31-22:00")
    assert parts.kind == "hourly"
    assert parts.keys(now=utc(2025, 2, 1, 1, 5)) == [
        "2025-01-31-22:00",
        "2025-01-31-23:00",
        "2025-02-01-00:00",
    ]


def test_daily_keys_cross_month_year_and_leap_day() -> None:
    keys = DailyPartitions("2023-12-30").keys(now=utc(2024, 3, 2))
    assert keys[:3] == ["2023-12-30", "2023-12-31", "2024-01-01"]
    assert keys[-3:] == ["2024-02-28", "2024-02-29", "2024-03-01"]
    assert len(keys) == 2 + 31 + 29 + 1


def test_no_keys_before_the_first_period_ends() -> None:
    assert DailyPartitions("2025-01-31").keys(now=utc(2025, 1, 31, 23, 59)) == []
    assert DailyPartitions("2025-01-31").keys(now=utc(2020, 1, 1)) == []
    assert HourlyPartitions("2025-01-31-13:00").keys(now=utc(2025, 1, 31, 13, 59)) == []


@pytest.mark.parametrize(
    ("start", "first_key"),
    [
        ("2025-01-31", "2025-01-31"),
        ("2025-01-31T00:00", "2025-01-31"),
        ("2025-01-31T06:00", "2025-02-01"),
        ("2025-01-31 13:30:00", "2025-02-01"),
        ("2025-01-31T00:00:00.000001", "2025-02-01"),
        ("2025-01-31-13:00", "2025-02-01"),
        (date(2025, 1, 31), "2025-01-31"),
        (datetime(2025, 1, 31), "2025-01-31"),
        (datetime(2025, 1, 31, 0, 0, 1), "2025-02-01"),
        ("2025-01-31T00:00Z", "2025-01-31"),
        ("  2025-01-31  ", "2025-01-31"),
    ],
)
def test_daily_start_forms(start: Any, first_key: str) -> None:
    parts = DailyPartitions(start)
    assert parts.start == first_key
    assert parts.keys(now=utc(2025, 2, 3))[0] == first_key


@pytest.mark.parametrize(
    ("start", "first_key"),
    [
        ("2025-01-31-13:00", "2025-01-31-13:00"),
        ("2025-01-31-13:30", "2025-01-31-14:00"),
        ("2025-01-31T13:30", "2025-01-31-14:00"),
        ("2025-01-31 13:30:00", "2025-01-31-14:00"),
        ("2025-01-31T13:00:00", "2025-01-31-13:00"),
        ("2025-01-31", "2025-01-31-00:00"),
        (date(2025, 1, 31), "2025-01-31-00:00"),
        (datetime(2025, 1, 31, 13, 30), "2025-01-31-14:00"),
        ("2025-01-31T13:30+01:00", "2025-01-31-13:00"),
    ],
)
def test_hourly_start_forms(start: Any, first_key: str) -> None:
    parts = HourlyPartitions(start)
    assert parts.start == first_key
    assert parts.keys(now=utc(2025, 2, 3))[0] == first_key


def test_naive_start_is_wall_clock_in_the_partition_timezone() -> None:
    parts = HourlyPartitions("2025-01-31T13:00", timezone=BERLIN)
    assert parts.period(parts.start)[0] == utc(2025, 1, 31, 12)
    assert DailyPartitions(datetime(2025, 1, 31), timezone=BERLIN).period("2025-01-31")[0] == utc(
        2025, 1, 30, 23
    )


def test_aware_start_is_converted_to_the_partition_timezone() -> None:
    # 23:30 UTC on Jan 30 is already 08:30 on Jan 31 in Tokyo, inside that day.
    daily = DailyPartitions(utc(2025, 1, 30, 23, 30), timezone="Asia/Tokyo")
    assert daily.start == "2025-02-01"
    hourly = HourlyPartitions(local(BERLIN, 2025, 1, 31, 14), timezone="UTC")
    assert hourly.start == "2025-01-31-13:00"


def test_end_is_exclusive() -> None:
    daily = DailyPartitions("2025-01-30", end="2025-02-01")
    assert daily.keys(now=FAR_FUTURE) == ["2025-01-30", "2025-01-31"]
    hourly = HourlyPartitions("2025-01-31-10:00", end="2025-01-31-12:00")
    assert hourly.keys(now=FAR_FUTURE) == ["2025-01-31-10:00", "2025-01-31-11:00"]


def test_end_inside_a_period_excludes_that_period() -> None:
    daily = DailyPartitions("2025-01-30", end="2025-02-01T06:00")
    assert daily.end == "2025-02-01"
    assert daily.keys(now=FAR_FUTURE) == ["2025-01-30", "2025-01-31"]
    hourly = HourlyPartitions("2025-01-31-10:00", end="2025-01-31T12:30")
    assert hourly.end == "2025-01-31-12:00"
    assert hourly.keys(now=FAR_FUTURE) == ["2025-01-31-10:00", "2025-01-31-11:00"]


def test_end_limits_keys_even_when_now_is_later_and_now_limits_before_end() -> None:
    parts = DailyPartitions("2025-01-01", end="2025-01-10")
    assert parts.keys(now=utc(2025, 1, 4, 9)) == ["2025-01-01", "2025-01-02", "2025-01-03"]
    assert len(parts.keys(now=FAR_FUTURE)) == 9


def test_todays_daily_partition_appears_only_tomorrow() -> None:
    parts = DailyPartitions("2025-01-01")
    assert parts.keys(now=utc(2025, 1, 31, 23, 59, 59))[-1] == "2025-01-30"
    assert parts.keys(now=utc(2025, 2, 1))[-1] == "2025-01-31"
    with pytest.raises(InvalidPartitionKey, match="has not ended yet"):
        parts.validate_key("2025-01-31", now=utc(2025, 1, 31, 23, 59, 59))
    parts.validate_key("2025-01-31", now=utc(2025, 2, 1))


def test_current_hour_appears_only_when_it_ends() -> None:
    parts = HourlyPartitions("2025-01-31-00:00")
    assert parts.keys(now=utc(2025, 1, 31, 13, 59, 59))[-1] == "2025-01-31-12:00"
    assert parts.keys(now=utc(2025, 1, 31, 14))[-1] == "2025-01-31-13:00"


def test_daily_days_follow_the_local_calendar() -> None:
    parts = DailyPartitions("2025-01-01", timezone="Asia/Tokyo")
    # 15:00 UTC is midnight in Tokyo, so Jan 1 local has just ended.
    assert parts.keys(now=utc(2025, 1, 1, 14, 59)) == []
    assert parts.keys(now=utc(2025, 1, 1, 15)) == ["2025-01-01"]
    assert parts.period("2025-01-01") == (utc(2024, 12, 31, 15), utc(2025, 1, 1, 15))


def test_default_now_is_the_current_time() -> None:
    parts = DailyPartitions("2020-01-01")
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    keys = parts.keys()
    # Tolerate the clock crossing midnight between the two calls.
    assert keys[-1] in {yesterday, (date.fromisoformat(yesterday) + timedelta(days=1)).isoformat()}
    assert StaticPartitions(["a"]).keys() == ["a"]


def test_naive_now_is_rejected() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        DailyPartitions("2025-01-01").keys(now=datetime(2025, 2, 1))


# --- daylight saving time ----------------------------------------------------------------------


def test_new_york_fall_back_repeats_one_hour_with_offset_suffix() -> None:
    parts = HourlyPartitions("2024-11-03", end="2024-11-03T03:00", timezone=NY)
    keys = parts.keys(now=FAR_FUTURE)
    assert keys == [
        "2024-11-03-00:00",
        "2024-11-03-01:00",
        "2024-11-03-01:00-0500",
        "2024-11-03-02:00",
    ]
    periods = [parts.period(k) for k in keys]
    assert periods[0][0] == utc(2024, 11, 3, 4)
    assert all(end - begin == timedelta(hours=1) for begin, end in periods)
    assert all(a[1] == b[0] for a, b in zip(periods, periods[1:], strict=False))
    assert parts.period("2024-11-03-01:00") == (utc(2024, 11, 3, 5), utc(2024, 11, 3, 6))
    assert parts.period("2024-11-03-01:00-0500") == (utc(2024, 11, 3, 6), utc(2024, 11, 3, 7))


def test_new_york_spring_forward_skips_the_missing_hour() -> None:
    parts = HourlyPartitions("2024-03-10", end="2024-03-10T04:00", timezone=NY)
    keys = parts.keys(now=FAR_FUTURE)
    assert keys == ["2024-03-10-00:00", "2024-03-10-01:00", "2024-03-10-03:00"]
    assert "2024-03-10-02:00" not in keys
    assert parts.period("2024-03-10-01:00") == (utc(2024, 3, 10, 6), utc(2024, 3, 10, 7))
    assert parts.period("2024-03-10-03:00") == (utc(2024, 3, 10, 7), utc(2024, 3, 10, 8))


def test_berlin_spring_forward_and_fall_back() -> None:
    spring = HourlyPartitions("2024-03-31", end="2024-03-31T04:00", timezone=BERLIN)
    assert spring.keys(now=FAR_FUTURE) == [
        "2024-03-31-00:00",
        "2024-03-31-01:00",
        "2024-03-31-03:00",
    ]
    fall = HourlyPartitions("2024-10-27", end="2024-10-27T04:00", timezone=BERLIN)
    assert fall.keys(now=FAR_FUTURE) == [
        "2024-10-27-00:00",
        "2024-10-27-01:00",
        "2024-10-27-02:00",
        "2024-10-27-02:00+0100",
        "2024-10-27-03:00",
    ]
    assert fall.period("2024-10-27-02:00") == (utc(2024, 10, 27, 0), utc(2024, 10, 27, 1))
    assert fall.period("2024-10-27-02:00+0100") == (utc(2024, 10, 27, 1), utc(2024, 10, 27, 2))


@pytest.mark.parametrize(
    ("tz", "day", "hours"),
    [
        (NY, "2024-03-10", 23),
        (NY, "2024-11-03", 25),
        (NY, "2024-11-04", 24),
        (BERLIN, "2024-03-31", 23),
        (BERLIN, "2024-10-27", 25),
        ("UTC", "2024-10-27", 24),
    ],
)
def test_daily_periods_run_midnight_to_midnight_local(tz: str, day: str, hours: int) -> None:
    begin, end = DailyPartitions("2024-01-01", timezone=tz).period(day)
    assert end - begin == timedelta(hours=hours)
    assert begin.tzinfo is UTC and end.tzinfo is UTC
    zone = ZoneInfo(tz)
    assert begin.astimezone(zone).replace(tzinfo=None) == datetime.fromisoformat(day)
    assert end.astimezone(zone).time().hour == 0


def test_hourly_keys_over_a_whole_dst_year_are_consecutive_real_hours() -> None:
    for tz in (NY, BERLIN):
        parts = HourlyPartitions("2024-01-01", end="2025-01-01", timezone=tz)
        keys = parts.keys(now=FAR_FUTURE)
        assert len(keys) == 366 * 24
        assert len(set(keys)) == len(keys)
        assert sum(k.count(":00") == 1 and len(k) > 16 for k in keys) == 1  # one repeated hour
        previous_end = None
        for key in keys:
            begin, end = parts.period(key)
            assert end - begin == timedelta(hours=1)
            assert previous_end is None or previous_end == begin
            previous_end = end
            parts.validate_key(key, now=FAR_FUTURE)


def test_hourly_start_in_skipped_hour_begins_when_clocks_resume() -> None:
    assert HourlyPartitions("2024-03-10T02:30", timezone=NY).start == "2024-03-10-03:00"
    assert HourlyPartitions("2024-03-10-02:00", timezone=NY).start == "2024-03-10-03:00"


def test_start_in_repeated_hour_uses_first_occurrence_unless_offset_given() -> None:
    assert HourlyPartitions("2024-11-03T01:00", timezone=NY).start == "2024-11-03-01:00"
    parts = HourlyPartitions("2024-11-03-01:00-0500", timezone=NY)
    assert parts.start == "2024-11-03-01:00-0500"
    assert parts.keys(now=utc(2024, 11, 3, 8)) == ["2024-11-03-01:00-0500", "2024-11-03-02:00"]


def test_daily_dst_keys_are_plain_dates() -> None:
    parts = DailyPartitions("2024-11-01", end="2024-11-06", timezone=NY)
    assert parts.keys(now=FAR_FUTURE) == [
        "2024-11-01",
        "2024-11-02",
        "2024-11-03",
        "2024-11-04",
        "2024-11-05",
    ]


def test_half_hour_offset_zone_uses_local_top_of_hour() -> None:
    parts = HourlyPartitions("2025-01-31", end="2025-01-31T03:00", timezone="Asia/Kolkata")
    assert parts.keys(now=FAR_FUTURE) == [
        "2025-01-31-00:00",
        "2025-01-31-01:00",
        "2025-01-31-02:00",
    ]
    assert parts.period("2025-01-31-00:00") == (utc(2025, 1, 30, 18, 30), utc(2025, 1, 30, 19, 30))


# --- validate_key -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key", ["2031-13-45", "2025-1-31", "2025-01-31-00:00", "20250131", "", " 2025-01-31", "x"]
)
def test_daily_malformed_key_message(key: str) -> None:
    with pytest.raises(InvalidPartitionKey) as excinfo:
        DailyPartitions("2025-01-01").validate_key(key, now=FAR_FUTURE)
    assert error_message(excinfo) == (f"{key!r} is not a daily partition key (expected YYYY-MM-DD)")


def test_daily_malformed_key_message_matches_the_documented_wording() -> None:
    with pytest.raises(InvalidPartitionKey) as excinfo:
        DailyPartitions("2025-01-01").validate_key("2031-13-45")
    assert str(excinfo.value) == "'2031-13-45' is not a daily partition key (expected YYYY-MM-DD)"


@pytest.mark.parametrize(
    "key",
    [
        "2025-01-31",
        "2025-01-31-13:30",
        "2025-01-31-24:00",
        "2025-02-30-01:00",
        "2025-01-31T13:00",
        "2025-01-31-13:00-05",
        "2025-01-31-13:00+2400",
    ],
)
def test_hourly_malformed_key_message(key: str) -> None:
    with pytest.raises(InvalidPartitionKey) as excinfo:
        HourlyPartitions("2025-01-01").validate_key(key, now=FAR_FUTURE)
    assert error_message(excinfo) == (
        f"{key!r} is not an hourly partition key (expected YYYY-MM-DD-HH:00)"
    )


def test_validate_key_before_start() -> None:
    with pytest.raises(InvalidPartitionKey) as excinfo:
        DailyPartitions("2025-01-10").validate_key("2025-01-09", now=FAR_FUTURE)
    assert error_message(excinfo) == "'2025-01-09' is before the first partition '2025-01-10'"
    with pytest.raises(InvalidPartitionKey, match="before the first partition '2025-01-31-14:00'"):
        HourlyPartitions("2025-01-31T13:30").validate_key("2025-01-31-13:00", now=FAR_FUTURE)


def test_validate_key_at_or_after_end() -> None:
    parts = DailyPartitions("2025-01-01", end="2025-02-01")
    parts.validate_key("2025-01-31", now=FAR_FUTURE)
    for key in ("2025-02-01", "2026-01-01"):
        with pytest.raises(InvalidPartitionKey) as excinfo:
            parts.validate_key(key, now=FAR_FUTURE)
        assert error_message(excinfo) == (
            f"'{key}' is at or after the end '2025-02-01' (the end is exclusive)"
        )
    hourly = HourlyPartitions("2025-01-01", end="2025-01-01T05:00")
    with pytest.raises(InvalidPartitionKey, match="at or after the end '2025-01-01-05:00'"):
        hourly.validate_key("2025-01-01-05:00", now=FAR_FUTURE)


def test_validate_key_not_ended_yet() -> None:
    with pytest.raises(InvalidPartitionKey) as excinfo:
        DailyPartitions("2025-01-01").validate_key("2025-01-31", now=utc(2025, 1, 31, 12))
    assert error_message(excinfo) == (
        "'2025-01-31' has not ended yet (it ends at 2025-02-01T00:00:00+00:00)"
    )
    with pytest.raises(InvalidPartitionKey) as excinfo:
        HourlyPartitions("2025-01-01", timezone=BERLIN).validate_key(
            "2025-01-31-13:00", now=utc(2025, 1, 31, 12, 30)
        )
    assert error_message(excinfo) == (
        "'2025-01-31-13:00' has not ended yet (it ends at 2025-01-31T14:00:00+01:00)"
    )
    with pytest.raises(InvalidPartitionKey, match="has not ended yet"):
        DailyPartitions("2025-01-01").validate_key("2099-01-01", now=utc(2025, 2, 1))


def test_validate_key_nonexistent_dst_hour() -> None:
    parts = HourlyPartitions("2024-01-01", timezone=NY)
    with pytest.raises(InvalidPartitionKey) as excinfo:
        parts.validate_key("2024-03-10-02:00", now=FAR_FUTURE)
    assert error_message(excinfo) == (
        "'2024-03-10-02:00' does not exist in America/New_York: the local clock skips that hour"
    )
    with pytest.raises(InvalidPartitionKey, match="does not exist"):
        parts.period("2024-03-10-02:00")


def test_validate_key_offset_suffix_rules() -> None:
    parts = HourlyPartitions("2024-01-01", timezone=NY)
    parts.validate_key("2024-11-03-01:00", now=FAR_FUTURE)
    parts.validate_key("2024-11-03-01:00-0500", now=FAR_FUTURE)
    # The first occurrence and unambiguous hours have exactly one name: the plain one.
    with pytest.raises(InvalidPartitionKey) as excinfo:
        parts.validate_key("2024-11-03-01:00-0400", now=FAR_FUTURE)
    assert error_message(excinfo) == (
        "'2024-11-03-01:00-0400' is not how America/New_York names that hour; "
        "use '2024-11-03-01:00'"
    )
    with pytest.raises(InvalidPartitionKey, match="use '2024-07-01-12:00'"):
        parts.validate_key("2024-07-01-12:00-0400", now=FAR_FUTURE)
    with pytest.raises(InvalidPartitionKey, match="UTC offset is never -0300"):
        parts.validate_key("2024-11-03-01:00-0300", now=FAR_FUTURE)
    with pytest.raises(InvalidPartitionKey, match="use '2024-07-01-12:00'"):
        HourlyPartitions("2024-01-01").validate_key("2024-07-01-12:00+0000", now=FAR_FUTURE)


def test_validate_key_rejects_non_strings() -> None:
    number: Any = 20250101  # wrong types, as the command line or an untyped caller may pass
    nothing: Any = None
    for parts in (DailyPartitions("2025-01-01"), HourlyPartitions("2025-01-01")):
        with pytest.raises(InvalidPartitionKey, match="must be a string"):
            parts.validate_key(number, now=FAR_FUTURE)
    with pytest.raises(InvalidPartitionKey, match="must be a string"):
        StaticPartitions(["a"]).validate_key(nothing)


def test_invalid_partition_key_is_a_value_error() -> None:
    assert issubclass(InvalidPartitionKey, ValueError)


def test_static_unknown_key_suggests_close_keys() -> None:
    parts = StaticPartitions(["eu-west", "eu-east", "us", "apac"])
    with pytest.raises(InvalidPartitionKey) as excinfo:
        parts.validate_key("eu-wset")
    message = error_message(excinfo)
    assert message.startswith("'eu-wset' is not a static partition key (did you mean 'eu-west'")
    with pytest.raises(InvalidPartitionKey, match="did you mean 'us'"):
        parts.validate_key("US")
    with pytest.raises(InvalidPartitionKey) as excinfo:
        parts.validate_key("zzzz")
    assert error_message(excinfo) == (
        "'zzzz' is not a static partition key (expected one of eu-west, eu-east, us, apac)"
    )


def test_static_unknown_key_message_stays_short_and_one_line() -> None:
    parts = StaticPartitions([f"k{i}" for i in range(100)] + ["right\u202eleft"])
    with pytest.raises(InvalidPartitionKey) as excinfo:
        parts.validate_key("zzzzzzzzzz")
    assert "and 91 more" in error_message(excinfo)
    with pytest.raises(InvalidPartitionKey) as excinfo:
        parts.validate_key("zzzzzzzz\nzz")
    assert "control character (\\n)" in error_message(excinfo)


@pytest.mark.parametrize(
    "parts",
    [StaticPartitions(["eu", "us"]), DailyPartitions("2025-01-01"), HourlyPartitions("2025-01-01")],
    ids=["static", "daily", "hourly"],
)
def test_a_key_with_a_control_character_is_refused_by_every_kind(
    parts: PartitionsDefinition,
) -> None:
    for key in ("eu\n", "2025-01-02\n", "2025-01-02-00:00\r", "\x1b[2J"):
        with pytest.raises(InvalidPartitionKey, match="control character"):
            parts.validate_key(key, now=FAR_FUTURE)
        with pytest.raises(InvalidPartitionKey, match="control character"):
            parts.keys_between(parts.keys(now=FAR_FUTURE)[0], key, now=FAR_FUTURE)


# --- keys_between -------------------------------------------------------------------------------


def test_keys_between_daily() -> None:
    parts = DailyPartitions("2025-01-01")
    now = utc(2025, 3, 1)
    assert parts.keys_between("2025-01-30", "2025-02-02", now=now) == [
        "2025-01-30",
        "2025-01-31",
        "2025-02-01",
        "2025-02-02",
    ]
    assert parts.keys_between("2025-01-05", "2025-01-05", now=now) == ["2025-01-05"]
    assert parts.keys_between("2025-01-01", "2025-02-28", now=now) == parts.keys(now=now)


def test_keys_between_hourly_across_fall_back() -> None:
    parts = HourlyPartitions("2024-11-01", timezone=NY)
    assert parts.keys_between("2024-11-03-00:00", "2024-11-03-02:00", now=FAR_FUTURE) == [
        "2024-11-03-00:00",
        "2024-11-03-01:00",
        "2024-11-03-01:00-0500",
        "2024-11-03-02:00",
    ]
    assert parts.keys_between("2024-11-03-01:00-0500", "2024-11-03-02:00", now=FAR_FUTURE) == [
        "2024-11-03-01:00-0500",
        "2024-11-03-02:00",
    ]


def test_keys_between_static_follows_definition_order() -> None:
    parts = StaticPartitions(["eu", "us", "apac", "latam"])
    assert parts.keys_between("us", "latam") == ["us", "apac", "latam"]
    assert parts.keys_between("apac", "apac") == ["apac"]
    with pytest.raises(InvalidPartitionKey, match="first key 'latam' is after last key 'us'"):
        parts.keys_between("latam", "us")
    with pytest.raises(InvalidPartitionKey, match="not a static partition key"):
        parts.keys_between("eu", "mars")


def test_keys_between_rejects_reversed_and_invalid_endpoints() -> None:
    parts = DailyPartitions("2025-01-01", end="2025-02-01")
    with pytest.raises(InvalidPartitionKey) as excinfo:
        parts.keys_between("2025-01-10", "2025-01-09", now=FAR_FUTURE)
    assert error_message(excinfo) == "first key '2025-01-10' is after last key '2025-01-09'"
    with pytest.raises(InvalidPartitionKey, match="before the first partition"):
        parts.keys_between("2024-12-31", "2025-01-09", now=FAR_FUTURE)
    with pytest.raises(InvalidPartitionKey, match="at or after the end"):
        parts.keys_between("2025-01-01", "2025-02-01", now=FAR_FUTURE)
    with pytest.raises(InvalidPartitionKey, match="has not ended yet"):
        parts.keys_between("2025-01-01", "2025-01-20", now=utc(2025, 1, 20, 12))
    with pytest.raises(InvalidPartitionKey, match="not a daily partition key"):
        parts.keys_between("2025-01-01", "soon", now=FAR_FUTURE)


# --- last_complete_key -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        (utc(2024, 12, 31, 12), None),  # before start
        (utc(2025, 1, 1), None),  # start boundary: nothing has ended yet
        (utc(2025, 1, 1, 23, 59, 59), None),
        (utc(2025, 1, 2), "2025-01-01"),  # exactly on a boundary: the day ending there counts
        (utc(2025, 1, 2, 0, 0, 0, 1), "2025-01-01"),
        (utc(2025, 1, 15, 9, 30), "2025-01-14"),
        (local(BERLIN, 2025, 1, 16, 0, 30), "2025-01-14"),  # still Jan 15 in UTC
        (utc(2025, 2, 1), "2025-01-31"),  # end boundary
        (utc(2030, 1, 1), "2025-01-31"),  # long after end
    ],
)
def test_last_complete_key_daily(at: datetime, expected: str | None) -> None:
    parts = DailyPartitions("2025-01-01", end="2025-02-01")
    assert parts.last_complete_key(at) == expected


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        (utc(2024, 11, 3, 3, 59), None),
        (utc(2024, 11, 3, 4), None),  # = 00:00 EDT, the start
        (utc(2024, 11, 3, 5), "2024-11-03-00:00"),  # boundary
        (utc(2024, 11, 3, 5, 59, 59), "2024-11-03-00:00"),
        (utc(2024, 11, 3, 6), "2024-11-03-01:00"),
        (utc(2024, 11, 3, 6, 30), "2024-11-03-01:00"),
        (utc(2024, 11, 3, 7), "2024-11-03-01:00-0500"),
        (utc(2024, 11, 3, 7, 0, 0, 1), "2024-11-03-01:00-0500"),
        (utc(2024, 11, 3, 8), "2024-11-03-02:00"),
        (utc(2024, 11, 3, 20), "2024-11-03-10:00"),  # end is 2024-11-03T11:00 local
        (utc(2025, 1, 1), "2024-11-03-10:00"),
    ],
)
def test_last_complete_key_hourly_through_fall_back(at: datetime, expected: str | None) -> None:
    parts = HourlyPartitions("2024-11-03", end="2024-11-03T11:00", timezone=NY)
    assert parts.last_complete_key(at) == expected


def test_last_complete_key_hourly_spring_forward() -> None:
    parts = HourlyPartitions("2024-03-10", timezone=NY)
    assert parts.last_complete_key(utc(2024, 3, 10, 7)) == "2024-03-10-01:00"
    assert parts.last_complete_key(utc(2024, 3, 10, 7, 59)) == "2024-03-10-01:00"
    assert parts.last_complete_key(utc(2024, 3, 10, 8)) == "2024-03-10-03:00"


def test_last_complete_key_agrees_with_keys() -> None:
    parts = HourlyPartitions("2024-10-26", end="2024-10-28", timezone=BERLIN)
    at = utc(2024, 10, 26, 0, 15)
    while at < utc(2024, 10, 29):
        keys = parts.keys(now=at)
        assert parts.last_complete_key(at) == (keys[-1] if keys else None)
        at += timedelta(minutes=20)


def test_last_complete_key_static_is_none_and_naive_at_rejected() -> None:
    assert StaticPartitions(["a", "b"]).last_complete_key(utc(2025, 1, 1)) is None
    with pytest.raises(ValueError, match="timezone-aware"):
        DailyPartitions("2025-01-01").last_complete_key(datetime(2025, 2, 1))


# --- period ---------------------------------------------------------------------------------------


def test_period_daily_and_hourly_utc() -> None:
    assert DailyPartitions("2025-01-01").period("2025-01-31") == (
        utc(2025, 1, 31),
        utc(2025, 2, 1),
    )
    begin, end = HourlyPartitions("2025-01-01").period("2025-01-31-13:00")
    assert (begin, end) == (utc(2025, 1, 31, 13), utc(2025, 1, 31, 14))
    assert begin.utcoffset() == timedelta(0)


def test_period_does_not_require_the_partition_to_exist_yet() -> None:
    parts = DailyPartitions("2025-01-01", end="2025-02-01")
    assert parts.period("2030-06-01") == (utc(2030, 6, 1), utc(2030, 6, 2))


def test_period_errors() -> None:
    with pytest.raises(ValueError, match="no time period"):
        StaticPartitions(["eu"]).period("eu")
    with pytest.raises(InvalidPartitionKey, match="not a daily partition key"):
        DailyPartitions("2025-01-01").period("nope")


# --- construction errors ------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [DailyPartitions, HourlyPartitions])
@pytest.mark.parametrize(
    "start",
    ["", "yesterday", "2025-13-01", "2025-02-30", "2025-W05-1", "20250131", "2025-01-31-25:00", 7],
)
def test_invalid_start(cls: Any, start: Any) -> None:
    with pytest.raises(ValueError) as excinfo:
        cls(start)
    message = error_message(excinfo)
    assert message.startswith(f"invalid start {start!r} for {cls.__name__}: expected")


def test_invalid_end() -> None:
    with pytest.raises(ValueError, match="invalid end 'never' for DailyPartitions"):
        DailyPartitions("2025-01-01", end="never")
    with pytest.raises(ValueError, match="is not after its start"):
        DailyPartitions("2025-01-10", end="2025-01-01")
    with pytest.raises(ValueError, match="is not after its start"):
        HourlyPartitions("2025-01-10-05:00", end="2025-01-10-05:00")
    with pytest.raises(ValueError, match="contains no complete day"):
        DailyPartitions("2025-01-31T06:00", end="2025-02-01T12:00")
    with pytest.raises(ValueError, match="contains no complete hour"):
        HourlyPartitions("2025-01-31T13:10", end="2025-01-31T13:50")


def test_missing_start() -> None:
    nothing: Any = None
    with pytest.raises(ValueError, match="needs a start"):
        DailyPartitions(nothing)


@pytest.mark.parametrize("tz", ["Mars/Olympus", "America", "../etc/passwd", "/etc/localtime"])
def test_unknown_timezone_is_named(tz: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        DailyPartitions("2025-01-01", timezone=tz)
    assert error_message(excinfo).startswith(f"unknown timezone {tz!r}")


@pytest.mark.parametrize("tz", ["", None, 5])
def test_timezone_must_be_a_name(tz: Any) -> None:
    with pytest.raises(ValueError, match="timezone must be a non-empty IANA name"):
        HourlyPartitions("2025-01-01", timezone=tz)


def test_static_duplicate_key_is_named() -> None:
    with pytest.raises(ValueError) as excinfo:
        StaticPartitions(["eu", "us", "eu"])
    assert error_message(excinfo) == "StaticPartitions has a duplicate key 'eu'"


@pytest.mark.parametrize("keys", [["eu", ""], ["eu", 3], ["eu", None]])
def test_static_keys_must_be_non_empty_strings(keys: Any) -> None:
    with pytest.raises(ValueError, match="non-empty strings"):
        StaticPartitions(keys)


@pytest.mark.parametrize("keys", ["eu", b"eu", {"eu", "us"}, 5])
def test_static_keys_must_be_a_sequence(keys: Any) -> None:
    with pytest.raises(ValueError, match="must be a list of strings"):
        StaticPartitions(keys)


def test_static_keeps_order_and_accepts_tuples() -> None:
    parts = StaticPartitions(("us", "eu", "apac"))
    assert parts.kind == "static"
    assert parts.keys() == ["us", "eu", "apac"]
    assert parts.keys(now=utc(1999, 1, 1)) == ["us", "eu", "apac"]
    parts.validate_key("eu", now=utc(1999, 1, 1))
    assert StaticPartitions([]).keys() == []


# --- equality, immutability, spec round trip --------------------------------------------------


def test_equal_parameters_compare_equal_and_hash_equal() -> None:
    a = DailyPartitions("2025-01-01", end="2025-03-01", timezone=NY)
    b = DailyPartitions(date(2025, 1, 1), end=datetime(2025, 3, 1), timezone=NY)
    assert a == b
    assert hash(a) == hash(b)
    assert DailyPartitions("2025-01-31T06:00") == DailyPartitions("2025-02-01")
    assert HourlyPartitions("2025-01-01") == HourlyPartitions("2025-01-01-00:00")
    assert StaticPartitions(["a", "b"]) == StaticPartitions(("a", "b"))
    assert hash(StaticPartitions(["a", "b"])) == hash(StaticPartitions(("a", "b")))


def test_different_parameters_compare_unequal() -> None:
    assert DailyPartitions("2025-01-01") != DailyPartitions("2025-01-02")
    assert DailyPartitions("2025-01-01") != DailyPartitions("2025-01-01", timezone=NY)
    assert DailyPartitions("2025-01-01") != DailyPartitions("2025-01-01", end="2025-02-01")
    hourly: PartitionsDefinition = HourlyPartitions("2025-01-01")
    assert DailyPartitions("2025-01-01") != hourly
    assert StaticPartitions(["a", "b"]) != StaticPartitions(["b", "a"])
    daily: PartitionsDefinition = DailyPartitions("2025-01-01")
    assert StaticPartitions(["a"]) != daily


def test_definitions_are_immutable() -> None:
    # Typed Any: what the type checker would refuse is what is tried at run time.
    parts: Any = DailyPartitions("2025-01-01")
    with pytest.raises(FrozenInstanceError):
        parts.start = "2024-01-01"
    static: Any = StaticPartitions(["a"])
    with pytest.raises(FrozenInstanceError):
        static.partition_keys = ("b",)
    static.keys().append("b")
    assert static.keys() == ["a"]


def test_definitions_are_subclasses_of_the_base() -> None:
    for parts in (
        DailyPartitions("2025-01-01"),
        HourlyPartitions("2025-01-01"),
        StaticPartitions(["a"]),
    ):
        assert isinstance(parts, PartitionsDefinition)


@pytest.mark.parametrize(
    "parts",
    [
        DailyPartitions("2025-01-01"),
        DailyPartitions("2025-01-31T06:00", end="2025-03-01T12:00", timezone=NY),
        HourlyPartitions("2025-01-31T13:30", timezone=BERLIN),
        HourlyPartitions("2024-11-03-01:00-0500", end="2024-11-04", timezone=NY),
        HourlyPartitions("2024-11-02", end="2024-11-03T01:30-05:00", timezone=NY),
        StaticPartitions(["eu", "us", "apac"]),
        StaticPartitions([]),
    ],
)
def test_spec_round_trip(parts: PartitionsDefinition) -> None:
    spec = parts.to_spec()
    restored = PartitionsDefinition.from_spec(json.loads(json.dumps(spec)))
    assert restored == parts
    assert type(restored) is type(parts)
    assert restored.to_spec() == spec
    now = utc(2025, 3, 1)
    assert restored.keys(now=now) == parts.keys(now=now)
    assert pickle.loads(pickle.dumps(parts)) == parts


def test_to_spec_shapes() -> None:
    assert DailyPartitions("2025-01-01").to_spec() == {
        "kind": "daily",
        "start": "2025-01-01",
        "end": None,
        "timezone": "UTC",
    }
    assert HourlyPartitions("2024-11-02", end="2024-11-03T01:30-05:00", timezone=NY).to_spec() == {
        "kind": "hourly",
        "start": "2024-11-02-00:00",
        "end": "2024-11-03-01:00-0500",
        "timezone": NY,
    }
    assert StaticPartitions(["eu", "us"]).to_spec() == {"kind": "static", "keys": ["eu", "us"]}


def test_from_spec_defaults_and_errors() -> None:
    assert PartitionsDefinition.from_spec({"kind": "daily", "start": "2025-01-01"}) == (
        DailyPartitions("2025-01-01")
    )
    with pytest.raises(ValueError, match="unknown partitions kind 'weekly'"):
        PartitionsDefinition.from_spec({"kind": "weekly", "start": "2025-01-01"})
    with pytest.raises(ValueError, match="unknown field"):
        PartitionsDefinition.from_spec({"kind": "daily", "start": "2025-01-01", "tz": "UTC"})
    with pytest.raises(ValueError, match="missing start"):
        PartitionsDefinition.from_spec({"kind": "hourly"})
    with pytest.raises(ValueError, match="missing keys"):
        PartitionsDefinition.from_spec({"kind": "static"})
    wrong: Any = ["daily"]
    with pytest.raises(ValueError, match="must be a dict"):
        PartitionsDefinition.from_spec(wrong)
    with pytest.raises(ValueError, match="unknown timezone"):
        PartitionsDefinition.from_spec({"kind": "daily", "start": "2025-01-01", "timezone": "X/Y"})


# --- describe and repr --------------------------------------------------------------------------


def test_describe() -> None:
    assert DailyPartitions("2025-01-01").describe() == "DailyPartitions from 2025-01-01 (UTC)"
    assert (
        DailyPartitions("2025-01-01", end="2025-03-01", timezone=NY).describe()
        == "DailyPartitions from 2025-01-01 until 2025-03-01 (America/New_York)"
    )
    assert (
        HourlyPartitions("2025-01-31T13:30", timezone=BERLIN).describe()
        == "HourlyPartitions from 2025-01-31-14:00 (Europe/Berlin)"
    )
    assert StaticPartitions(["eu", "us", "apac"]).describe() == "StaticPartitions: eu, us, apac"
    many = StaticPartitions([f"k{i}" for i in range(25)])
    assert many.describe().endswith("k9 and 15 more")
    # A key cannot hold a control character; one that does not print as itself is escaped.
    assert StaticPartitions(["a\u202eb"]).describe() == "StaticPartitions: 'a\\u202eb'"


def test_repr_round_trips_through_the_constructor() -> None:
    parts = DailyPartitions("2025-01-01", timezone=NY)
    assert (
        repr(parts) == "DailyPartitions(start='2025-01-01', end=None, timezone='America/New_York')"
    )
    assert repr(StaticPartitions(["eu"])) == "StaticPartitions(['eu'])"


# --- performance --------------------------------------------------------------------------------


def test_keys_of_long_ranges() -> None:
    daily = DailyPartitions("2015-01-01", timezone=NY).keys(now=utc(2025, 1, 1, 12))
    hourly = HourlyPartitions("2023-01-01", timezone=NY).keys(now=utc(2025, 1, 1, 12))
    assert len(daily) == 3653
    assert len(hourly) == 731 * 24 + 7  # 2023 and 2024 plus Jan 1 until 07:00 local


# --- safe_key -------------------------------------------------------------------------------------

_RESERVED = re.compile(r'[<>:"/\\|?*\x00-\x1f\x7f]')
_WINDOWS_DEVICES = {"con", "prn", "aux", "nul"} | {
    f"{p}{n}" for p in ("com", "lpt") for n in range(10)
}


def assert_single_safe_component(name: str) -> None:
    assert isinstance(name, str)
    assert 1 <= len(name) <= 120
    assert len(name.encode("utf-8")) <= 255
    assert name not in {".", ".."}
    assert not _RESERVED.search(name)
    assert not name.endswith((".", " "))
    assert name.split(".", 1)[0].lower() not in _WINDOWS_DEVICES
    assert PurePosixPath(name).parts == (name,)
    assert PureWindowsPath(name).parts == (name,)
    assert PurePosixPath("root", name).parent == PurePosixPath("root")
    assert PureWindowsPath("root", name).parent == PureWindowsPath("root")


@pytest.mark.parametrize("key", ["2025-01-31", "eu", "us_east-1", "a.b", "v1.2.3", "0"])
def test_safe_key_keeps_plain_keys_readable(key: str) -> None:
    assert safe_key(key) == key


@pytest.mark.parametrize(
    "key",
    [
        "",
        ".",
        "..",
        "...",
        "a/b",
        "../../etc/passwd",
        "a\\b",
        "C:",
        "a\x00b",
        "2025-01-31-13:00",
        "2024-11-03-01:00-0500",
        "CON",
        "con",
        "con.txt",
        "lpt1",
        "Nul.tar.gz",
        "trailing.",
        "trailing ",
        ".hidden",
        "-rf",
        "EU",
        "x" * 121,
        "é" * 300,
        "😀",
        "a" * 10_000,
        "~",
        "a~0123456789abcdef",
    ],
)
def test_safe_key_escapes_dangerous_keys(key: str) -> None:
    name = safe_key(key)
    assert_single_safe_component(name)
    assert name != key
    assert re.fullmatch(r".+~[0-9a-f]{16}", name)


def test_safe_key_keeps_changed_keys_recognisable() -> None:
    assert safe_key("2025-01-31-13:00").startswith("2025-01-31-13_00~")
    assert safe_key("x" * 500).startswith("x" * 80 + "~")


def test_safe_key_distinguishes_keys_that_sanitise_alike() -> None:
    keys = ["a/b", "a\\b", "a:b", "a_b", "a b", "A_B", "a.b", "a?b"]
    names = [safe_key(k) for k in keys]
    assert len({n.casefold() for n in names}) == len(keys)


def test_safe_key_rejects_non_strings() -> None:
    raw: Any = b"eu"
    with pytest.raises(TypeError):
        safe_key(raw)


def test_safe_key_is_deterministic() -> None:
    assert safe_key("2025-01-31-13:00") == safe_key("2025-01-31-13:00")


@settings(max_examples=300, deadline=None, database=None)
@given(st.text())
def test_safe_key_always_gives_one_safe_component(key: str) -> None:
    assert_single_safe_component(safe_key(key))


@settings(max_examples=200, deadline=None, database=None)
@given(st.lists(st.text(max_size=130), unique=True, max_size=30))
def test_safe_key_distinct_inputs_give_distinct_outputs(keys: list[str]) -> None:
    names = [safe_key(k) for k in keys]
    # Case-folded: macOS and Windows filesystems are case-insensitive by default.
    assert len({n.casefold() for n in names}) == len(keys)


@settings(max_examples=100, deadline=None, database=None)
@given(st.text(alphabet="abc.-_/:ABC~ ", max_size=8), st.text(alphabet="abc.-_/:ABC~ ", max_size=8))
def test_safe_key_no_collisions_among_lookalikes(a: str, b: str) -> None:
    if a != b:
        assert safe_key(a).casefold() != safe_key(b).casefold()


# --- property tests for time partitions --------------------------------------------------------

_INSTANTS = st.datetimes(
    min_value=datetime(2023, 1, 1), max_value=datetime(2026, 12, 31), timezones=st.just(UTC)
)
_ZONES = st.sampled_from(["UTC", NY, BERLIN, "Asia/Kolkata", "Australia/Sydney", "Pacific/Apia"])


@settings(max_examples=150, deadline=None, database=None)
@given(_INSTANTS, _ZONES, st.sampled_from([DailyPartitions, HourlyPartitions]))
def test_last_complete_key_period_brackets_the_instant(
    at: datetime, tz: str, cls: type[DailyPartitions] | type[HourlyPartitions]
) -> None:
    parts = cls("2022-12-25", timezone=tz)
    key = parts.last_complete_key(at)
    assert key is not None
    begin, end = parts.period(key)
    assert begin < end <= at
    parts.validate_key(key, now=at)
    # The partition right after it starts at `end` and has not ended yet at `at`.
    following = cls(end, timezone=tz).start
    assert parts.period(following)[0] == end
    assert parts.period(following)[1] > at
    with pytest.raises(InvalidPartitionKey, match="has not ended yet"):
        parts.validate_key(following, now=at)


@settings(max_examples=100, deadline=None, database=None)
@given(_INSTANTS, _ZONES)
def test_hourly_start_rounds_up_to_the_next_boundary(at: datetime, tz: str) -> None:
    parts = HourlyPartitions(at, timezone=tz)
    begin, _ = parts.period(parts.start)
    assert at <= begin < at + timedelta(hours=1)
    assert begin.astimezone(ZoneInfo(tz)).minute == 0
