"""The definitions of a project as plain data: what `dagtop list --json` prints."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from engine.authoring.auto import describe_auto
from engine.authoring.typed_config import fields_of
from engine.loading.manifest import Manifest


def _next_tick(cron: str, timezone: str | None) -> str | None:
    from engine.authoring.cron import CronError, next_tick

    try:
        now = datetime.now().astimezone()
        tick = next_tick(cron, now, timezone or now.tzinfo)
    except CronError:
        return None
    return tick.isoformat() if tick else None


def describe_definitions(
    m: Manifest, timezone: str | None = None, staleness: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Every definition as plain data; with `staleness` (from
    `engine.history.lineage.asset_staleness`), each asset's status ("missing", "materialized"
    or "stale") and why it is stale."""
    downstream = m.downstream()
    staleness = staleness or {}
    return {
        "assets": [
            {
                "name": a.name,
                "group": a.group,
                "file": a.file,
                "partitions": None if (pd := a.partitions_def) is None else pd.describe(),
                "upstream": list(a.upstream),
                "downstream": downstream.get(a.name, []),
                "checks": [
                    {"name": c.name, "blocking": c.blocking} for c in m.checks.get(a.name, [])
                ],
                "retries": a.retries,
                "timeout": a.timeout,
                "memory_limit": a.memory_limit,
                "pool": a.pool,
                "auto": describe_auto(a.auto) or None,
                "description": a.description,
                "resources": list(a.resources),
                "config": None
                if a.config is None
                else {
                    "param": a.config["param"],
                    "class": a.config["class"],
                    "fields": fields_of(a.config),
                },  # fmt: skip
                "status": getattr(staleness.get(a.name), "status", None),
                "stale_reason": getattr(staleness.get(a.name), "reason", None),
            }
            for a in m.assets.values()
        ],
        "pipelines": [
            {
                "name": p.name,
                "file": p.file,
                "schedule": p.schedule,
                "tasks": [
                    {
                        "id": t.id,
                        "kind": t.kind,
                        "upstream": list(t.upstream),
                        "trigger_rule": t.trigger_rule,
                        "branch": t.branch,
                        "short_circuit": t.short_circuit,
                        "expand": {"parameter": t.expand[0], "over": t.expand[1]}
                        if t.expand
                        else None,
                    }  # fmt: skip
                    for t in p.tasks.values()
                ],
            }
            for p in m.pipelines.values()
        ],
        "schedules": [
            {
                "name": s.name,
                "cron": s.cron,
                "target": s.target,
                "catchup": s.catchup,
                "next_tick": _next_tick(s.cron, timezone),
            }
            for s in m.schedules.values()
        ],
        "sensors": [
            {
                "name": s.name,
                "path": s.path,
                "pattern": s.pattern,
                "target": s.target,
                "settle": s.settle,
            }
            for s in m.sensors.values()
        ],
        "resources": [
            {
                "name": r.name,
                "file": r.file,
                "line": r.line,
                "description": r.description,
                # The names of its settings only: their values may be secrets.
                "settings": sorted(r.config),
                "used_by": [a.name for a in m.assets.values() if r.name in a.resources],
            }
            for r in m.resources.values()
        ],
        "errors": [
            {"file": e.file, "kind": e.kind, "message": e.message} for e in m.errors.values()
        ],
    }
