"""Every kind of sensor in one list: file sensors, custom sensors (`@sensor`) and the engine's
built-in sensors, listed by `dagtop sensors` and turned on and off by `dagtop sensor on|off`.

A built-in sensor (one the engine evaluates itself, such as `auto`, which evaluates asset
automation) takes part by:

- `register_builtin(BuiltinSensor(name, description, interval))` when its module is imported,
  and its module named in `BUILTIN_MODULES`, so a process that lists sensors finds it;
- reading its on/off state with `enabled(session, name)` before each evaluation (a toggle made
  with no engine up is a row in storage, read by the next engine);
- optionally, recording each evaluation as a `SensorTick` row (`repo.add_sensor_tick`), in the
  transaction of what it requested, so `dagtop sensors` and the UI show its last tick;
- optionally, attaching an object with `owns(name)` and `set_enabled(name, enabled)` to
  `Engine.sensor_parts`, to hear of a toggle at once rather than at its next evaluation.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.engine import Engine as SAEngine
from sqlmodel import Session

from engine.automation.sensors import SensorStatus, SensorTickView
from engine.loading.manifest import Manifest, target_label
from engine.status import TickStatus
from engine.storage import repo
from engine.storage.db import read_scope, session_scope
from engine.storage.models import SensorTick

# Modules that register a built-in sensor when imported (a missing one is skipped).
BUILTIN_MODULES: tuple[str, ...] = ("engine.automation.auto",)


@dataclass(frozen=True, slots=True)
class BuiltinSensor:
    """A sensor the engine evaluates itself, listed and toggled like the others."""

    name: str
    description: str
    interval: float | None = None
    target: str = ""
    default_on: bool = True


_BUILTIN: dict[str, BuiltinSensor] = {}


KEEP_TICKS = 1000
"""The newest ticks kept of each sensor (custom or built-in); older ones are pruned."""
PRUNE_EVERY = 100
"""Ticks of a sensor between two prunings of its older ones."""

log = logging.getLogger(__name__)


def prune_now_and_then(db: SAEngine, sensor: str, count: int, keep: int = KEEP_TICKS) -> None:
    """After the sensor's `count`-th tick of this process: every PRUNE_EVERY-th prunes its
    ticks to the newest `keep` (history only: a failed prune is tried again later)."""
    if count % PRUNE_EVERY:
        return
    try:
        with session_scope(db) as session:
            repo.prune_sensor_ticks(session, sensor, keep)
    except Exception:  # noqa: BLE001 - logged; the next prune tries again
        log.exception("sensor %s: could not prune old ticks", sensor)


def register_builtin(sensor: BuiltinSensor) -> None:
    """Make a built-in sensor known to `dagtop sensors` and `dagtop sensor on|off`."""
    _BUILTIN[sensor.name] = sensor


def builtin_sensors() -> dict[str, BuiltinSensor]:
    """Every built-in sensor, by name."""
    for module in BUILTIN_MODULES:
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
    return dict(_BUILTIN)


class SensorPart(Protocol):
    """A part of a running engine that evaluates some sensors and hears of their toggles."""

    def owns(self, name: str) -> bool: ...

    def set_enabled(self, name: str, enabled: bool) -> None: ...


def enabled(session: Session, name: str) -> bool:
    """Whether the sensor `name` is on (as stored; a sensor never toggled is on, unless it is
    a built-in sensor off by default)."""
    row = repo.toggles(session, "sensor").get(name)
    if row is not None:
        return row.enabled
    builtin = _BUILTIN.get(name)
    return builtin.default_on if builtin is not None else True


def sensor_names(manifest: Manifest) -> list[str]:
    """Every sensor a user can turn on and off, sorted."""
    return sorted({*manifest.sensors, *manifest.custom_sensors, *builtin_sensors()})


def tick_view(row: SensorTick) -> SensorTickView:
    return SensorTickView(
        sensor=row.sensor,
        started_at=row.started_at,
        duration=row.duration,
        status=TickStatus(row.status),
        run_ids=tuple(json.loads(row.run_ids or "[]")),
        run_keys_skipped=row.run_keys_skipped,
        reason=row.reason,
        error=row.error,
        cursor=row.cursor,
        keys_added=row.keys_added,
        log_tail=row.log_tail,
    )


def ticks(db: Any, name: str, limit: int = 50) -> list[SensorTickView]:
    """A sensor's ticks, newest first."""
    with read_scope(db) as session:
        return [tick_view(row) for row in repo.sensor_ticks(session, name, limit)]


def statuses(
    db: Any, manifest: Manifest, files: Sequence[SensorStatus] | None = None, now: float = 0.0
) -> list[SensorStatus]:
    """Every sensor's status, sorted by name.

    Args:
        files: The file sensors' statuses from a runner that watches them (read from storage
            when None).
        now: The time a sensor never evaluated is due at.
    """
    from engine.automation.sensors import statuses as file_statuses

    found = list(files) if files is not None else file_statuses(db, manifest)
    builtins = builtin_sensors()
    with read_scope(db) as session:
        toggles = {n: t.enabled for n, t in repo.toggles(session, "sensor").items()}
        last = repo.last_sensor_ticks(session)

    def ticking(
        name: str,
        target: str,
        kind: str,
        interval: float | None,
        description: str | None,
        on: bool,
    ) -> SensorStatus:
        """The status of a sensor evaluated every `interval` seconds (custom or built-in; a
        built-in with no interval is evaluated when something happens, and has no next tick)."""
        tick = last.get(name)
        due = None
        if on and interval is not None:
            due = now if tick is None else max(now, tick.started_at + interval)
        return SensorStatus(
            name=name,
            path="",
            pattern="",
            target=target,
            enabled=on,
            files_seen=0,
            last_file=None,
            last_seen_at=None,
            last_run_id=None,
            kind=kind,
            interval=interval,
            description=description,
            last_tick=tick_view(tick) if tick is not None else None,
            next_tick_at=due,
        )

    for name, spec in manifest.custom_sensors.items():
        target = target_label(spec.target) if spec.target else "(per request)"
        on = toggles.get(name, True)
        found.append(ticking(name, target, "custom", spec.interval, spec.description, on))
    for name, builtin in builtins.items():
        if name in manifest.custom_sensors or name in manifest.sensors:
            continue
        on = toggles.get(name, builtin.default_on)
        found.append(
            ticking(name, builtin.target, "builtin", builtin.interval, builtin.description, on)
        )
    return sorted(found, key=lambda s: s.name)


def to_json(status: SensorStatus) -> dict[str, Any]:
    """A sensor's status as `dagtop sensors --json` prints it."""
    data: dict[str, Any] = {
        "name": status.name,
        "kind": status.kind,
        "enabled": status.enabled,
        "target": status.target,
        "interval": status.interval,
        "description": status.description,
        "next_tick_at": status.next_tick_at,
        "last_tick": status.last_tick.to_json() if status.last_tick else None,
    }
    if status.kind == "file":
        data.update(
            path=status.path,
            pattern=status.pattern,
            files_seen=status.files_seen,
            last_file=status.last_file,
            last_seen_at=status.last_seen_at,
            last_run_id=status.last_run_id,
        )
    return data
