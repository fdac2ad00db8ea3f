"""Asset automation: the built-in sensor `auto` evaluates every `@asset(auto=...)` condition.

A pass reads the current state (each automated asset's current values and its upstreams', the
steps of the runs still queued or running), finds what each condition asks for, and requests it
as runs with trigger `auto` and a reason. The engine runs a pass right after each
materialization is recorded (and after a run ends: an upstream no longer in progress may free a
downstream), every `INTERVAL` seconds, and after a reload.

Conditions, as Dagster's automation conditions define them:

- eager: the asset partition is missing, or an upstream has a value newer than the one it was
  built from; no upstream is missing or in progress; it is not in progress itself. A
  time-partitioned asset is looked at in its latest partition, any other partitioned asset in
  each key.
- on_cron: the latest tick of its cron since the sensor first saw it has passed, and every
  upstream has a value from after that tick.
- on_missing: the asset partition is missing (time-partitioned: its latest partition) and
  every upstream has a value.

Exactly once per cause. Each request names its cause: the newest upstream materialization it
answers (`mat:ID`), a cron tick (`cron:EPOCH`), being missing (`missing`; for an eager asset
`missing:ID`, with the newest upstream value, so that it is asked again if it stays missing
after an upstream update), or, for an asset
requested together with an upstream in the same run, that upstream's cause (`via:ASSET:CAUSE`).
The cause rows (`AutoRequest`, unique per asset, partition and cause) are written in the
transaction of the runs they requested, so that a cause consumed has its run, a cause not
consumed is seen again by the next pass (after a `kill -9` too), and none is acted on twice. A
run that fails does not consume a cause twice either: the asset is requested again at the next
upstream update, as Dagster's `since_last_handled` does.

Eager chains run in dependency order in one run: an eager asset whose upstream is requested by
the same pass (with the same partition key) joins that run, so one upstream update is one run of
the whole chain.

Cost: a pass reads the current values of the automated assets and of their upstreams (one row
per partition, through `ix_mat_current`), the steps of the runs in flight and the causes it
is about to act on; never every run or every materialization.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any

from sqlalchemy.engine import Engine as SAEngine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlmodel import Session

from engine.authoring.cron import CronError, parse_cron
from engine.automation.sensor_registry import BuiltinSensor, prune_now_and_then, register_builtin
from engine.automation.sensor_registry import enabled as sensor_enabled
from engine.errors import EngineError, StorageError
from engine.history.lineage import toposort
from engine.history.plan import RunRequest
from engine.loading.manifest import AssetSpec, Manifest
from engine.status import TickStatus
from engine.storage import repo
from engine.storage.db import read_scope, session_scope
from engine.storage.models import AutoRequest, SensorTick

log = logging.getLogger(__name__)

AUTO_SENSOR = "auto"
"""The built-in sensor that evaluates automation: `dagtop sensor off auto` stops it."""
INTERVAL = 30.0
"""Seconds between passes when nothing was materialized."""
MIN_GAP = 0.25
"""Seconds at least between two passes: a burst of materializations (a backfill's) is one
pass, not one per step."""
_TIME_PARTITIONS = ("daily", "hourly")


# A fault point for the crash tests: with DAGTOP_FAULT=auto-before-commit (or
# auto-after-commit) the engine kills itself with SIGKILL at that instant of a pass that
# requests runs, so a test can stop a real engine exactly between an upstream's end and the
# downstream's request. Read once; unset, it costs nothing.
_FAULT = os.environ.get("DAGTOP_FAULT", "")


def _fault(point: str) -> None:
    if point == _FAULT:
        log.warning("fault point %s: killing this engine", point)
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass(frozen=True, slots=True)
class Want:
    """One asset partition a condition asks for, and why."""

    asset: str
    partition: str | None
    cause: str
    reason: str


def _at(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%H:%M")


def _consumed_ids(mat: Any) -> set[int]:
    import json

    return {int(i) for i in json.loads(mat.inputs_json or "[]") if i}


class _Values:
    """The current values a pass reads, each asset's read once (by the keys asked, or whole)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._whole: dict[str, dict[str | None, Any]] = {}
        self._some: dict[str, dict[str | None, Any]] = {}

    def load(self, asset: str, keys: Iterable[str | None]) -> None:
        if asset in self._whole:
            return
        some = self._some.setdefault(asset, {})
        unread = [k for k in dict.fromkeys(keys) if k not in some]
        if unread:
            found = repo.current_materializations(self.session, asset, unread)
            some.update({k: found.get(k) for k in unread})

    def one(self, asset: str, key: str | None) -> Any:
        whole = self._whole.get(asset)
        if whole is not None:
            return whole.get(key)
        self.load(asset, [key])
        return self._some[asset][key]

    def every(self, asset: str) -> list[Any]:
        whole = self._whole.get(asset)
        if whole is None:
            whole = self._whole[asset] = repo.latest_per_partition(self.session, asset)
        return list(whole.values())


def _keys(spec: AssetSpec, now: datetime) -> list[str | None]:
    """The partitions of `spec` a condition looks at: its latest time partition, every static
    key, or None for an unpartitioned asset."""
    pdef = spec.partitions_def
    if pdef is None:
        return [None]
    if (spec.partitions or {}).get("kind") in _TIME_PARTITIONS:
        latest = pdef.last_complete_key(now)
        return [] if latest is None else [latest]
    return list(pdef.keys(now))


def _same_key(spec: AssetSpec, up: AssetSpec, key: str | None) -> bool:
    """Whether the upstream's value for `spec`[key] is its partition `key` (or its one value
    when both are unpartitioned); otherwise it is every partition of it, or its one value."""
    if up.partitions is None:
        return key is None
    return up.partitions == spec.partitions and key is not None


def evaluate(
    session: Session,
    manifest: Manifest,
    now: float,
    first_seen: dict[str, float],
    timezone: tzinfo | None = None,
) -> list[Want]:
    """What every automation condition asks for now, upstreams first, causes already acted on
    left out. Reads only (see the module's docstring for what).

    Args:
        first_seen: When the sensor first saw each automated asset (cron ticks before are not
            its own).
        timezone: The zone cron expressions are read in (default: the machine's).
    """
    automated = [n for n, spec in manifest.assets.items() if spec.auto is not None]
    if not automated:
        return []
    clock = datetime.fromtimestamp(now, UTC)
    order = toposort(manifest, automated)
    watched = {up for n in order for up in manifest.assets[n].upstream} | set(order)
    active = repo.active_asset_steps(session, watched)
    active_assets = {asset for asset, _ in active}
    values = _Values(session)
    planned: dict[tuple[str, str | None], str] = {}  # (asset, key) -> the root cause
    wants: list[Want] = []
    for name in order:
        spec = manifest.assets[name]
        assert spec.auto is not None
        kind = spec.auto["kind"]
        keys = _keys(spec, clock)
        values.load(name, keys)
        for up_name in spec.upstream:
            up = manifest.assets.get(up_name)
            if up is not None and up.partitions is not None and up.partitions == spec.partitions:
                values.load(up_name, keys)
        tick = None
        if kind == "on_cron":
            tick = _cron_tick(spec, first_seen.get(name, now), now, timezone)
            if tick is None:
                continue
        found: list[Want] = []
        for key in keys:
            if (name, key) in active:
                continue
            want = _condition(spec, kind, key, tick, manifest, values, active, active_assets,
                              planned)  # fmt: skip
            if want is not None:
                found.append(want)
        if not found:
            continue
        taken = repo.consumed_causes(session, name, [(w.partition or "", w.cause) for w in found])
        for want in found:
            if (want.partition or "", want.cause) in taken:
                continue
            wants.append(want)
            planned[(name, want.partition)] = (
                want.cause if want.cause.startswith("via:") else f"via:{name}:{want.cause}"
            )
    return wants


def _condition(
    spec: AssetSpec,
    kind: str,
    key: str | None,
    tick: float | None,
    manifest: Manifest,
    values: _Values,
    active: set[tuple[str, str | None]],
    active_assets: set[str],
    planned: dict[tuple[str, str | None], str],
) -> Want | None:
    """What `spec`'s condition asks for at `key`, if anything (causes not yet checked)."""
    mine = values.one(spec.name, key)
    via: tuple[str, str] | None = None  # an upstream requested in this pass, and its cause
    updated: list[tuple[str, Any]] = []
    newest_up = 0  # the newest upstream value's id
    newest_since_tick = True
    for up_name in spec.upstream:
        up = manifest.assets.get(up_name)
        if up is None:
            continue
        same = _same_key(spec, up, key)
        up_key = key if same and up.partitions is not None else None
        if same or up.partitions is None:
            requested = (up_name, up_key) in planned
            if requested and up_key == key:  # in the same run: this asset joins it
                via = via or (up_name, planned[(up_name, up_key)])
                continue
            # Requested for another partition key, so in another run: wait for its value.
            busy = requested or (up_name, up_key) in active
            one = values.one(up_name, up_key)
            reads = [] if one is None else [one]
        else:
            # Read whole: in flight if any partition of it is, or is requested by this pass.
            busy = up_name in active_assets or any(a == up_name for a, _ in planned)
            reads = values.every(up_name)
        if not reads:
            return None  # an upstream is missing: no condition asks for anything
        if busy and kind != "on_cron":
            return None
        newest_up = max(newest_up, *(int(m.id) for m in reads))
        if tick is not None and max(m.created_at for m in reads) < tick:
            newest_since_tick = False
        if mine is not None:
            updated += [(up_name, m) for m in reads if _newer(spec, up_name, m, mine)]
    if kind == "on_cron":
        assert tick is not None
        if via is not None or not newest_since_tick:
            return None
        when = f"cron tick {_at(tick)}"
        why = f"{when} passed, every upstream updated since" if spec.upstream else f"{when}"
        return Want(spec.name, key, f"cron:{tick:.0f}", why)
    if via is not None and (kind == "eager" or mine is None):
        return Want(spec.name, key, via[1], f"upstream {via[0]} requested in the same run")
    if mine is None:
        # on_missing asks once. eager asks again at each upstream update while it stays
        # missing (a run that failed), so its cause names the newest upstream value.
        cause = f"missing:{newest_up}" if kind == "eager" and newest_up else "missing"
        return Want(spec.name, key, cause, "missing")
    if kind != "eager" or not updated:
        return None
    up_name, mat = max(updated, key=lambda pair: pair[1].id)
    why = f"upstream {up_name} updated at {_at(mat.created_at)}"
    return Want(spec.name, key, f"mat:{mat.id}", why)


def _newer(spec: AssetSpec, up_name: str, mat: Any, mine: Any) -> bool:
    """Whether an upstream's current value `mat` is newer than what `mine` was built from.

    For an input the asset's value records the upstream values it read, so an upstream
    materialized while it ran counts as newer; for a dep (not read), by time.
    """
    if up_name in spec.inputs or up_name in spec.optional_inputs:
        consumed = _consumed_ids(mine)
        if consumed:
            return int(mat.id) not in consumed
    return bool(mat.created_at > mine.created_at)


def _cron_tick(spec: AssetSpec, since: float, now: float, timezone: tzinfo | None) -> float | None:
    """The latest tick of the asset's cron at or before `now` and after `since`, as epoch."""
    from engine.automation.scheduler import latest_fire_time, resolve_timezone

    assert spec.auto is not None
    try:
        trigger = parse_cron(spec.auto["cron"], resolve_timezone(timezone))
    except CronError:
        return None  # refused when loaded: never here
    tick = latest_fire_time(
        trigger, datetime.fromtimestamp(since, UTC), False, datetime.fromtimestamp(now, UTC)
    )
    return None if tick is None else tick.timestamp()


def group_runs(manifest: Manifest, wants: list[Want]) -> list[tuple[RunRequest, list[Want]]]:
    """The runs of a pass: one per partition key, its assets in dependency order."""
    groups: dict[str | None, list[Want]] = {}
    for want in wants:
        groups.setdefault(want.partition, []).append(want)
    out = []
    for key, members in groups.items():
        names = toposort(manifest, [w.asset for w in members])
        by_name = {w.asset: w for w in members}
        members = [by_name[n] for n in names]
        # The run says why its first assets were asked for, then which follow them in it:
        # "cleaned: upstream raw updated at 09:01; then report" (each asset's own reason is
        # kept with its cause).
        roots = [w for w in members if not w.cause.startswith("via:")]
        followers = [w.asset for w in members if w.cause.startswith("via:")]
        if len(roots) == 1 and not followers:
            reason = roots[0].reason
        else:
            reason = "; ".join(f"{w.asset}: {w.reason}" for w in roots)
            if followers:
                reason += f"; then {', '.join(followers)}"
        request = RunRequest(
            selection=tuple(names),
            partition=key,
            trigger="auto",
            trigger_ref=AUTO_SENSOR,
            reason=reason,
        )
        out.append((request, members))
    return out


class Automation:
    """The `auto` sensor: evaluates the manifest's automation conditions on its own thread.

    Args:
        db: The storage engine.
        manifest: Returns the engine's current definitions.
        record_run: Plans a run request into the given session (committed with the causes).
        start_run: Hands a committed run to the executor.
        clock: The time, as epoch seconds.
        timezone: The zone cron expressions are read in (default: the machine's).
        interval: Seconds between passes when nothing pokes it.
    """

    def __init__(
        self,
        db: SAEngine,
        manifest: Callable[[], Manifest],
        record_run: Callable[[Session, RunRequest], str],
        start_run: Callable[[str], None],
        clock: Callable[[], float] = time.time,
        timezone: str | tzinfo | None = None,
        interval: float = INTERVAL,
    ) -> None:
        from engine.automation.scheduler import resolve_timezone

        self._db = db
        self._manifest = manifest
        self._record_run = record_run
        self._start_run = start_run
        self._clock = clock
        self.timezone = resolve_timezone(timezone)
        self.interval = interval
        self._poked = threading.Event()
        self._full = False  # a pass must run whatever was materialized (a run ended, a reload)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one pass at a time
        self._last_mat = -1
        self._passes = 0

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Evaluate on a daemon thread: now, at each poke and every `interval` seconds."""
        self._full = True
        self._poked.set()
        self._thread = threading.Thread(target=self._loop, name="dagtop-auto", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._poked.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def poke(self, full: bool = False) -> None:
        """Evaluate soon: something was recorded (`full`: a run ended or the definitions
        changed, so evaluate even when no materialization is new)."""
        if full:
            self._full = True
        self._poked.set()

    def _loop(self) -> None:
        last = 0.0
        while not self._stop.is_set():
            poked = self._poked.wait(self.interval)
            if self._stop.wait(max(0.0, MIN_GAP - (time.monotonic() - last))):
                return
            self._poked.clear()
            last = time.monotonic()
            full, self._full = self._full or not poked, False
            try:
                self.run_pass(only_if_new=not full)
            except EngineError as exc:
                log.warning("automation not evaluated: %s", exc.msg)
            except Exception:  # noqa: BLE001 - the sensor lives on; the next pass retries
                log.exception("automation: a pass failed; the next one retries")

    # --- on/off -------------------------------------------------------------------------------

    def enabled(self) -> bool:
        with read_scope(self._db) as session:
            return is_enabled(session)

    def owns(self, name: str) -> bool:
        """Whether `name` is the sensor this part evaluates (`auto`)."""
        return name == AUTO_SENSOR

    def set_enabled(self, name: str, enabled: bool) -> None:
        """Turn the `auto` sensor on or off, persistently; on evaluates at once.

        Raises:
            EngineError: `name` is not `auto`.
        """
        if not self.owns(name):
            raise EngineError(f"{name!r} is not the automation sensor {AUTO_SENSOR!r}")
        with session_scope(self._db) as session:
            repo.set_toggle(session, "sensor", AUTO_SENSOR, enabled, self._clock())
        log.info("sensor %s turned %s", AUTO_SENSOR, "on" if enabled else "off")
        if enabled:
            self.poke(full=True)

    # --- a pass -------------------------------------------------------------------------------

    def run_pass(self, only_if_new: bool = False) -> list[str]:
        """Evaluate every condition once and request what they ask for; returns the run ids.

        Args:
            only_if_new: Skip the pass when no materialization was recorded since the last.
        """
        with self._lock:
            manifest = self._manifest()
            automated = [n for n, spec in manifest.assets.items() if spec.auto is not None]
            if not automated:
                return []
            now = self._clock()
            with read_scope(self._db) as session:
                if not is_enabled(session):
                    return []
                newest = repo.newest_materialization_id(session)
                if only_if_new and newest == self._last_mat:
                    return []
                seen = repo.auto_first_seen(session, automated)
            unseen = [n for n in automated if n not in seen]
            if unseen:
                self._mark_seen(unseen, now)
                seen.update(dict.fromkeys(unseen, now))
            began = time.monotonic()
            with read_scope(self._db) as session:
                wants = evaluate(session, manifest, now, seen, self.timezone)
            self._last_mat = newest
            if not wants:
                tick = self._tick(now, began, [], "no condition asks for a run")
                with session_scope(self._db) as session:
                    repo.add_sensor_tick(session, tick)
                self._ticked()
                return []
            return self._request(manifest, wants, now, began)

    def _tick(self, now: float, began: float, run_ids: list[str], reason: str) -> SensorTick:
        """The pass as one tick of the `auto` sensor, as a custom sensor's are recorded."""
        return SensorTick(
            sensor=AUTO_SENSOR,
            started_at=now,
            duration=time.monotonic() - began,
            status=TickStatus.STARTED if run_ids else TickStatus.SKIPPED,
            run_ids=json.dumps(run_ids),
            reason=None if run_ids else reason,
        )

    def _ticked(self) -> None:
        """One more tick recorded: its older ones are pruned now and then, as a custom
        sensor's are."""
        self._passes += 1
        prune_now_and_then(self._db, AUTO_SENSOR, self._passes)

    def _mark_seen(self, names: list[str], now: float) -> None:
        rows = [AutoRequest(asset=n, cause="seen", created_at=now) for n in names]
        try:
            with session_scope(self._db) as session:
                repo.add_auto_requests(session, rows)
        except IntegrityError:
            log.debug("automation: assets already seen")

    def _request(
        self, manifest: Manifest, wants: list[Want], now: float, began: float
    ) -> list[str]:
        """Record the runs and the causes they consume in one transaction, then start them."""
        run_ids: list[str] = []
        _fault("auto-before-commit")
        try:
            with session_scope(self._db) as session:
                rows = []
                for request, members in group_runs(manifest, wants):
                    run_id, reason = None, request.reason
                    try:
                        with session.begin_nested():
                            run_id = self._record_run(session, request)
                    except (SQLAlchemyError, StorageError):
                        raise  # the database failed, not this request: the pass fails
                    except EngineError as exc:
                        reason = f"not requested: {exc.msg}"
                        log.warning("automation: %s: %s", request.selection, exc.msg)
                    if run_id is not None:
                        run_ids.append(run_id)
                    rows += [
                        AutoRequest(
                            asset=w.asset,
                            partition=w.partition or "",
                            cause=w.cause,
                            run_id=run_id,
                            reason=w.reason if run_id is not None else reason,
                            created_at=now,
                        )
                        for w in members
                    ]
                repo.add_auto_requests(session, rows)
                refused = {r.reason for r in rows if r.run_id is None and r.reason}
                why = "; ".join(sorted(refused)) or "no condition asks for a run"
                repo.add_sensor_tick(session, self._tick(now, began, run_ids, why))
        except IntegrityError:
            # Only the lease holder evaluates, so this is a pass racing an older one's commit:
            # nothing was written, and the next pass sees what that one consumed.
            log.warning("automation: a cause was taken meanwhile; evaluating again")
            self.poke(full=True)
            return []
        _fault("auto-after-commit")
        for run_id in run_ids:
            log.info("automation requested run %s", run_id)
            try:
                self._start_run(run_id)
            except Exception:  # noqa: BLE001 - recorded; the engine's admission starts it
                log.exception("automation: run %s recorded but not started", run_id)
        self._ticked()
        return run_ids


def is_enabled(session: Session) -> bool:
    """Whether the `auto` sensor is on (it is unless turned off)."""
    return sensor_enabled(session, AUTO_SENSOR)


# `auto` is listed with the other sensors (`dagtop sensors`, `dagtop sensor on|off`).
register_builtin(
    BuiltinSensor(
        AUTO_SENSOR,
        "asset automation: evaluates every @asset(auto=...) condition",
        interval=INTERVAL,
    )
)
