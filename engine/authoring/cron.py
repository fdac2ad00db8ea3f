"""Cron expressions, parsed and stepped by APScheduler's own CronTrigger.

The scheduler fires jobs with the same trigger objects, so `dagtop list`'s "next tick" and the
ticks that really fire can never disagree.
"""

from __future__ import annotations

from datetime import datetime, tzinfo
from typing import Any

from engine.authoring.definitions import CRON_ALIASES


class CronError(ValueError):
    pass


def parse_cron(expr: str, timezone: tzinfo | str | None = None) -> Any:
    """A CronTrigger for a five-field cron string or an alias like `@daily`.

    Raises:
        CronError: the expression is not valid cron.
    """
    from apscheduler.triggers.cron import CronTrigger

    if not isinstance(expr, str):
        raise CronError(f"a cron schedule must be a string, got {expr!r}")
    text = CRON_ALIASES.get(expr.strip().lower(), expr.strip())
    if len(text.split()) != 5:
        raise CronError(
            f"invalid cron {expr!r}: expected five fields (minute hour day month weekday) "
            f"or one of {', '.join(sorted(CRON_ALIASES))}"
        )
    try:
        return CronTrigger.from_crontab(text, timezone=timezone)
    except (ValueError, TypeError, LookupError) as exc:
        raise CronError(f"invalid cron {expr!r}: {exc}") from exc


def next_tick(expr: str, after: datetime, timezone: tzinfo | str | None = None) -> datetime | None:
    trigger = parse_cron(expr, timezone)
    tick: datetime | None = trigger.get_next_fire_time(None, after)  # APScheduler is untyped
    return tick
