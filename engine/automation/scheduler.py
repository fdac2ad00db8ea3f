"""Cron schedules: one APScheduler job per schedule, every tick recorded exactly once.

A job firing does not run its own fire time: it calls `Scheduler.run_due(name)`, which looks at
the schedule's last recorded tick in storage and the clock, and creates the runs of every tick
that is due (all missed ticks with catchup, only the latest without). A late firing, a firing the
process slept through and the catch-up after a restart are therefore the same code path.

Each tick is claimed by inserting a `ScheduleTick` row in the same transaction as its run; the
UNIQUE(schedule, tick_time) constraint makes a second claim (another process, a restart, a
concurrent call) fail, so a tick never gets two runs. The run is handed to the executor only
after that transaction committed.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from sqlalchemy.engine import Engine as SAEngine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlmodel import Session

from engine.authoring.cron import CronError, parse_cron
from engine.authoring.partitions import PartitionsDefinition
from engine.automation.targets import request_for
from engine.errors import ConfigError, EngineError, SelectionError, suggest
from engine.history.plan import RunRequest
from engine.loading.manifest import Manifest, ScheduleSpec, target_label
from engine.loading.selection import resolve
from engine.status import TickStatus
from engine.storage import repo
from engine.storage.db import read_scope, session_scope
from engine.storage.models import ScheduleTick

log = logging.getLogger(__name__)

_TIME_PARTITIONS = ("daily", "hourly")
_MICRO = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class ScheduleStatus:
    """What the UI and the CLI show for one schedule."""

    name: str
    cron: str
    target: str
    enabled: bool
    catchup: bool
    next_tick: datetime | None
    last_tick: datetime | None
    last_run_id: str | None
    last_status: TickStatus | None
    last_reason: str | None


@dataclass
class _Entry:
    """A schedule the scheduler knows, with its trigger and the moment it was first seen."""

    spec: ScheduleSpec
    trigger: CronTrigger
    since: datetime
    start: datetime | None
    lock: threading.Lock = field(default_factory=threading.Lock)


class _TickTaken(Exception):
    """The (schedule, tick_time) row exists already: the tick was evaluated elsewhere."""


@dataclass(frozen=True, slots=True)
class _Partitioning:
    """The daily/hourly partitioned assets of a target; the first one picks the partition key."""

    assets: tuple[str, ...]
    definition: PartitionsDefinition


def resolve_timezone(value: str | tzinfo | None) -> tzinfo:
    """A tzinfo for an IANA name, a tzinfo, or None (the machine's local zone).

    Raises:
        ConfigError: the name is not a known IANA timezone.
    """
    if value is None:
        from tzlocal import get_localzone  # APScheduler's own dependency for the same purpose

        return get_localzone()
    if isinstance(value, tzinfo):
        return value
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ConfigError(
            f"unknown timezone {value!r} (expected an IANA name such as 'UTC' or 'Europe/Berlin')"
        ) from None


# --- stepping through cron fire times ---------------------------------------------------------
# Always with APScheduler's trigger, so these are exactly the instants its jobs fire at. Asked
# for "the next fire time at or after X" with no previous fire time, CronTrigger 3.x can answer
# an instant before X inside a repeated (DST fall-back) hour; stepping from a previous fire time
# is correct there, so every lower bound is checked and stepping always passes the previous time.
# Fire times are returned in UTC: PEP 495 makes `==` between a local time inside a repeated hour
# and any other zone's time False, even for the same instant.


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


def _next_after(trigger: CronTrigger, previous: datetime) -> datetime | None:
    found = _utc(trigger.get_next_fire_time(previous, previous + timedelta(seconds=1)))
    if found is not None and found <= previous:
        log.error("cron trigger %s did not advance past %s", trigger, previous.isoformat())
        return None
    return found


def _first_from(trigger: CronTrigger, low: datetime, inclusive: bool = True) -> datetime | None:
    """The first fire time at (if `inclusive`) or after `low`, in UTC."""
    low = low.astimezone(UTC)
    found = _utc(trigger.get_next_fire_time(None, low if inclusive else low + _MICRO))
    while found is not None and (found < low or (found == low and not inclusive)):
        found = _next_after(trigger, found)
    return found


def _fire_times(
    trigger: CronTrigger, low: datetime, inclusive: bool, high: datetime
) -> Iterator[datetime]:
    """Fire times from `low` (excluded unless `inclusive`) up to `high` included, in order."""
    tick = _first_from(trigger, low, inclusive)
    while tick is not None and tick <= high:
        yield tick
        tick = _next_after(trigger, tick)


def _latest_fire_time(
    trigger: CronTrigger, low: datetime, inclusive: bool, high: datetime
) -> datetime | None:
    """The last fire time in the range, found by widening a window back from `high`.

    Walking forward from `low` would cost one step per tick of a long downtime.
    """
    low, high = low.astimezone(UTC), high.astimezone(UTC)
    span = timedelta(minutes=2)
    while True:
        begin, begin_inclusive = high - span, True
        if begin <= low:
            begin, begin_inclusive = low, inclusive
        found = deque(_fire_times(trigger, begin, begin_inclusive, high), maxlen=1)
        latest = found[0] if found else None
        if latest is not None or begin == low:
            return latest
        span *= 4


def latest_fire_time(
    trigger: CronTrigger, low: datetime, inclusive: bool, high: datetime
) -> datetime | None:
    """The last fire time of `trigger` from `low` (excluded unless `inclusive`) up to `high`
    included, in UTC; None if there is none."""
    return _latest_fire_time(trigger, low, inclusive, high)


# --- the scheduler ----------------------------------------------------------------------------


class Scheduler:
    """Runs the manifest's cron schedules.

    Args:
        db: The storage engine (`engine.storage.db.open_db`).
        record_run: Plans a run request and adds it to the given session (which the scheduler
            commits together with the tick); returns the run id.
        start_run: Hands a committed run to the executor.
        clock: Returns the current time as an aware datetime (default: the system clock).
        timezone: The zone cron expressions and `start` values are read in: an IANA name or a
            tzinfo (default: the machine's local zone).
        max_catchup: At most this many missed ticks get runs in one catch-up (the latest ones).
    """

    def __init__(
        self,
        db: SAEngine,
        record_run: Callable[[Session, RunRequest], str],
        start_run: Callable[[str], None],
        clock: Callable[[], datetime] | None = None,
        timezone: str | tzinfo | None = None,
        max_catchup: int = 1000,
    ) -> None:
        if max_catchup < 1:
            raise ConfigError(f"max_catchup must be at least 1, got {max_catchup!r}")
        self._db = db
        self._record_run = record_run
        self._start_run = start_run
        self._clock = clock or (lambda: datetime.now(UTC))
        self.timezone = resolve_timezone(timezone)
        self.max_catchup = max_catchup
        self._manifest: Manifest | None = None
        self._entries: dict[str, _Entry] = {}
        self._mutex = threading.RLock()  # guards _entries, _manifest and the job store
        self._aps = BackgroundScheduler(timezone=self.timezone, daemon=True)

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start firing jobs (a daemon thread); `sync` may come before or after."""
        with self._mutex:
            if not self._aps.running:
                self._aps.start()

    def shutdown(self) -> None:
        """Stop firing jobs; a tick being evaluated right now still finishes."""
        with self._mutex:
            if self._aps.running:
                self._aps.shutdown(wait=False)

    def sync(self, manifest: Manifest) -> None:
        """Adopt the manifest's schedules: add new ones, replace changed ones, drop deleted ones.

        Newly seen schedules are evaluated right away, which is where catch-up after a restart
        or after a reload that added a schedule happens.
        """
        now = self._now()
        with read_scope(self._db) as session:
            toggles = repo.toggles(session, "schedule")
        fresh: list[str] = []
        first_seen: list[str] = []
        with self._mutex:
            self._manifest = manifest
            for name in [n for n in self._entries if n not in manifest.schedules]:
                self._drop(name)
                log.info("schedule %s removed", name)
            for name, spec in manifest.schedules.items():
                old = self._entries.get(name)
                if old is not None and _same_schedule(old.spec, spec):
                    old.spec = spec  # file/line may have moved
                    continue
                try:
                    trigger = parse_cron(spec.cron, self.timezone)
                except CronError as exc:
                    log.error("schedule %s is not scheduled: %s", name, exc)
                    if old is not None:
                        self._drop(name)
                    continue
                entry = _Entry(
                    spec=spec,
                    trigger=trigger,
                    since=old.since if old is not None else now,
                    start=self._parse_start(spec),
                    lock=old.lock if old is not None else threading.Lock(),
                )
                self._entries[name] = entry
                toggle = toggles.get(name)
                self._add_job(name, trigger, enabled=toggle is None or toggle.enabled)
                if old is None:
                    fresh.append(name)
                    # Without catchup a schedule begins when first seen, `start` or not: a
                    # first start runs nothing unasked (Dagster's way, not Airflow's).
                    begins_when_seen = not spec.catchup or (
                        entry.start is None and self._partitioning(spec) is None
                    )
                    if toggle is None and begins_when_seen:
                        first_seen.append(name)
                    log.info("schedule %s added (%s, catchup=%s)", name, spec.cron, spec.catchup)
                else:
                    log.info("schedule %s changed (%s, catchup=%s)", name, spec.cron, spec.catchup)
        if first_seen:
            with session_scope(self._db) as session:
                for name in first_seen:
                    if repo.toggles(session, "schedule").get(name) is None:
                        repo.set_toggle(session, "schedule", name, True, now.timestamp())
        for name in fresh:
            self._fire(name)

    def _drop(self, name: str) -> None:
        self._entries.pop(name, None)
        if self._aps.get_job(name) is not None:
            self._aps.remove_job(name)

    def _add_job(self, name: str, trigger: CronTrigger, enabled: bool) -> None:
        options: dict[str, Any] = {}
        if not enabled:
            options["next_run_time"] = None  # APScheduler adds the job paused
        if not self._aps.running and self._aps.get_job(name) is not None:
            # Before start() APScheduler queues jobs and replace_existing only applies at start.
            self._aps.remove_job(name)
        self._aps.add_job(
            self._fire,
            trigger=trigger,
            args=(name,),
            id=name,
            name=f"schedule {name}",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
            replace_existing=True,
            **options,
        )

    def _fire(self, name: str) -> list[str]:
        """The job body: evaluate the schedule, never raising into APScheduler's thread pool."""
        try:
            return self.run_due(name)
        except EngineError as exc:
            log.warning("schedule %s not evaluated: %s", name, exc.msg)
        except Exception:
            log.exception("schedule %s: evaluating its ticks failed", name)
        return []

    # --- on/off -------------------------------------------------------------------------------

    def set_enabled(self, name: str, enabled: bool) -> None:
        """Turn a schedule on or off, persistently. Ticks while off are never caught up.

        Raises:
            EngineError: no schedule has that name.
        """
        entry = self._entry(name)
        with entry.lock:
            with session_scope(self._db) as session:
                current = repo.toggles(session, "schedule").get(name)
                if (current is None or current.enabled) == enabled:
                    return
                repo.set_toggle(session, "schedule", name, enabled, self._now().timestamp())
            with self._mutex:
                if self._aps.get_job(name) is not None:
                    if enabled:
                        self._aps.resume_job(name)
                    else:
                        self._aps.pause_job(name)
        log.info("schedule %s turned %s", name, "on" if enabled else "off")

    # --- evaluation ---------------------------------------------------------------------------

    def run_due(self, name: str) -> list[str]:
        """Create the runs of every tick of `name` that is due now; returns the new run ids.

        Raises:
            EngineError: no schedule has that name.
        """
        entry = self._entry(name)
        with entry.lock:
            now = self._now()
            with read_scope(self._db) as session:
                toggle = repo.toggles(session, "schedule").get(name)
                last = repo.last_schedule_tick(session, name)
            if toggle is not None and not toggle.enabled:
                return []
            turned_on = None
            if toggle is not None:
                turned_on = datetime.fromtimestamp(toggle.updated_at, UTC)
            last_time = None if last is None else datetime.fromtimestamp(last.tick_time, UTC)
            ticks, from_partitions = self._due_ticks(entry, now, last_time, turned_on)
            if not ticks:
                return []
            return self._take_ticks(entry, ticks, from_partitions)

    def _due_ticks(
        self,
        entry: _Entry,
        now: datetime,
        last: datetime | None,
        turned_on: datetime | None,
    ) -> tuple[list[datetime], bool]:
        """The ticks to evaluate, oldest first, and whether they backfill missing partitions."""
        spec, trigger = entry.spec, entry.trigger
        from_partitions = False
        if last is not None:
            low, inclusive = last, False
        elif not spec.catchup:
            # No history: the next tick after it was first seen (or after `start`, if later).
            low, inclusive = turned_on or entry.since, True
            if entry.start is not None and entry.start > low:
                low = entry.start
        elif entry.start is not None:
            low, inclusive = entry.start, True
        elif (parts := self._partitioning(spec)) is not None:
            keys = parts.definition.keys(now)
            if not keys:
                return [], False
            # The first tick that can name a complete partition is at the end of the first one.
            low, inclusive = parts.definition.period(keys[0])[1], True
            from_partitions = True
        else:
            # No history, no start: it begins when first seen, a moment kept in storage (its
            # toggle row) so that a restart does not forget the ticks missed since.
            low, inclusive = turned_on or entry.since, True
        if turned_on is not None and (turned_on > low or (turned_on == low and not inclusive)):
            low, inclusive = turned_on, True
            from_partitions = False
        if low > now:
            return [], False
        if not spec.catchup:
            latest = _latest_fire_time(trigger, low, inclusive, now)
            return ([] if latest is None else [latest]), False
        kept: deque[datetime] = deque(maxlen=self.max_catchup)
        total = 0
        for tick in _fire_times(trigger, low, inclusive, now):
            kept.append(tick)
            total += 1
        if total > len(kept):
            log.warning(
                "schedule %s: %d ticks missed; catching up only the latest %d from %s, "
                "%d older ticks dropped (max_catchup=%d)",
                spec.name,
                total,
                len(kept),
                kept[0].isoformat(),
                total - len(kept),
                self.max_catchup,
            )
        return list(kept), from_partitions

    def _take_ticks(self, entry: _Entry, ticks: list[datetime], from_partitions: bool) -> list[str]:
        spec = entry.spec
        parts = self._partitioning(spec)
        materialized: dict[str, set[str | None]] = {}
        requested: set[str] = set()
        run_ids: list[str] = []
        for tick in ticks:
            status, reason, request = TickStatus.STARTED, None, None
            try:
                request = self._request(spec, tick, parts)
            except EngineError as exc:
                status, reason = TickStatus.FAILED, exc.msg
                log.warning("schedule %s: tick %s failed: %s", spec.name, tick, exc.msg)
            except Exception as exc:
                status, reason = TickStatus.FAILED, f"{type(exc).__name__}: {exc}"
                log.exception("schedule %s: tick %s failed", spec.name, tick)
            if request is not None and parts is not None:
                key = request.partition
                if key is None:
                    reason = f"no complete partition yet ({parts.definition.describe()})"
                elif len(ticks) > 1 and key in requested:
                    reason = f"partition {key} already requested by this catch-up"
                elif from_partitions and self._all_materialized(parts, key, materialized):
                    reason = "already materialized"
                else:
                    requested.add(key)
                if reason is not None:
                    status, request = TickStatus.SKIPPED, None
            try:
                run_id = self._record_tick(spec.name, tick, status, reason, request)
            except _TickTaken:
                log.debug("schedule %s: tick %s was already taken", spec.name, tick)
                continue
            except SQLAlchemyError:
                log.exception("schedule %s: cannot record tick %s; will retry", spec.name, tick)
                break
            if run_id is None:
                continue
            run_ids.append(run_id)
            try:
                self._start_run(run_id)
            except Exception:
                log.exception("schedule %s: run %s recorded but not started", spec.name, run_id)
        return run_ids

    def _request(
        self, spec: ScheduleSpec, tick: datetime, parts: _Partitioning | None
    ) -> RunRequest:
        """The run request of one tick (partition None if the target's partitions have not begun).

        Raises:
            EngineError: the target names nothing in the current manifest.
        """
        params = {"scheduled_for": tick.astimezone(self.timezone).isoformat()}
        target = spec.target
        partition = None
        if target["kind"] == "assets":
            # Raises SelectionError with close names.
            resolve(self._require_manifest(), target["selection"])
            partition = None if parts is None else parts.definition.last_complete_key(tick)
        return request_for(target, "schedule", spec.name, params, partition)

    def _record_tick(
        self,
        name: str,
        tick: datetime,
        status: TickStatus,
        reason: str | None,
        request: RunRequest | None,
    ) -> str | None:
        """Claim the tick and create its run in one transaction; the run id, if one was made.

        Raises:
            _TickTaken: another process or an earlier call already recorded this tick.
        """
        run_id = None
        with session_scope(self._db) as session:
            row = ScheduleTick(
                schedule=name,
                tick_time=tick.timestamp(),
                status=status,
                reason=reason,
                created_at=self._now().timestamp(),
            )
            try:
                repo.add_schedule_tick(session, row)  # claim it first: a taken tick plans nothing
            except IntegrityError:
                raise _TickTaken from None
            if request is not None:
                try:
                    with session.begin_nested():
                        run_id = self._record_run(session, request)
                except SQLAlchemyError:
                    raise
                except EngineError as exc:
                    row.status, row.reason = TickStatus.FAILED, exc.msg
                    log.warning("schedule %s: tick %s failed: %s", name, tick, exc.msg)
                except Exception as exc:
                    row.status, row.reason = TickStatus.FAILED, f"{type(exc).__name__}: {exc}"
                    log.exception("schedule %s: planning the run of tick %s failed", name, tick)
                else:
                    row.run_id = run_id
                session.add(row)
        if run_id is not None:
            log.info("schedule %s: tick %s started run %s", name, tick.isoformat(), run_id)
        elif status != TickStatus.FAILED:
            log.info("schedule %s: tick %s %s (%s)", name, tick.isoformat(), status, reason)
        return run_id

    def _all_materialized(
        self, parts: _Partitioning, key: str, cache: dict[str, set[str | None]]
    ) -> bool:
        """Whether every time-partitioned asset of the target has a stored value for `key`."""
        missing = [a for a in parts.assets if a not in cache]
        if missing:
            with read_scope(self._db) as session:
                for asset in missing:
                    cache[asset] = set(repo.latest_per_partition(session, asset))
        return all(key in cache[a] for a in parts.assets)

    def _partitioning(self, spec: ScheduleSpec) -> _Partitioning | None:
        """The time-partitioned assets of an asset target, or None (also for a broken target)."""
        if spec.target["kind"] != "assets":
            return None
        manifest = self._require_manifest()
        try:
            names = resolve(manifest, spec.target["selection"])
        except SelectionError:
            return None
        timed = [
            n
            for n in names
            if (manifest.assets[n].partitions or {}).get("kind") in _TIME_PARTITIONS
        ]
        if not timed:
            return None
        definition = manifest.assets[timed[0]].partitions_def
        assert definition is not None
        return _Partitioning(assets=tuple(timed), definition=definition)

    # --- reading ------------------------------------------------------------------------------

    def status(self) -> list[ScheduleStatus]:
        """Every schedule, by name: its next tick (None when off) and its last recorded tick."""
        now = self._now()
        with self._mutex:
            entries = sorted(self._entries.items())
        with read_scope(self._db) as session:
            toggles = repo.toggles(session, "schedule")
            lasts = repo.last_schedule_ticks(session)
        out = []
        for name, entry in entries:
            toggle = toggles.get(name)
            enabled = toggle is None or toggle.enabled
            last = lasts.get(name)
            out.append(
                ScheduleStatus(
                    name=name,
                    cron=entry.spec.cron,
                    target=target_label(entry.spec.target),
                    enabled=enabled,
                    catchup=entry.spec.catchup,
                    next_tick=self._local(_first_from(entry.trigger, now, False))
                    if enabled
                    else None,
                    last_tick=None
                    if last is None
                    else datetime.fromtimestamp(last.tick_time, self.timezone),
                    last_run_id=None if last is None else last.run_id,
                    last_status=None if last is None else TickStatus(last.status),
                    last_reason=None if last is None else last.reason,
                )
            )
        return out

    # --- helpers ------------------------------------------------------------------------------

    def _now(self) -> datetime:
        """The clock's time, in UTC (every instant the scheduler compares is UTC)."""
        now = self._clock()
        if now.utcoffset() is None:
            raise ValueError(f"the scheduler's clock must return an aware datetime, got {now!r}")
        return now.astimezone(UTC)

    def _entry(self, name: str) -> _Entry:
        with self._mutex:
            entry = self._entries.get(name)
            if entry is None:
                raise EngineError(
                    f"unknown schedule {name!r}{suggest(name, self._entries)}",
                    title="Unknown schedule",
                )
            return entry

    def _local(self, value: datetime | None) -> datetime | None:
        return None if value is None else value.astimezone(self.timezone)

    def _require_manifest(self) -> Manifest:
        if self._manifest is None:
            raise EngineError("the scheduler has no manifest yet: call sync first")
        return self._manifest

    def _parse_start(self, spec: ScheduleSpec) -> datetime | None:
        """`start` as an instant: ISO date or datetime, wall clock in the scheduler's zone."""
        if spec.start is None:
            return None
        try:
            value = datetime.fromisoformat(str(spec.start).strip())
        except ValueError:
            log.error(
                "schedule %s: start %r is not an ISO date or datetime; ignoring it",
                spec.name,
                spec.start,
            )
            return None
        if value.utcoffset() is None:
            value = value.replace(tzinfo=self.timezone)
        return value.astimezone(UTC)


def _same_schedule(a: ScheduleSpec, b: ScheduleSpec) -> bool:
    return (a.cron, a.target, a.catchup, a.start) == (b.cron, b.target, b.catchup, b.start)


def statuses(
    db: SAEngine, manifest: Manifest, timezone: str | tzinfo | None
) -> list[ScheduleStatus]:
    """Every schedule's status as stored, for a process that does not run the scheduler
    (a CLI, or a UI attached to a daemon): nothing fires and nothing is written."""
    scheduler = Scheduler(db, lambda _s, _r: "", lambda _r: None, timezone=timezone)
    for name, spec in manifest.schedules.items():
        try:
            trigger = parse_cron(spec.cron, scheduler.timezone)
        except CronError:
            continue
        scheduler._entries[name] = _Entry(
            spec=spec,
            trigger=trigger,
            since=scheduler._now(),
            start=scheduler._parse_start(spec),
            lock=threading.Lock(),
        )
    return scheduler.status()
