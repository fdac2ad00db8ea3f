"""What `dagtop list` shows: the definitions as plain data, and as text."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from engine.manifest import Manifest


def _next_tick(cron: str, timezone: str | None) -> str | None:
    from engine.cron import CronError, next_tick

    try:
        now = datetime.now().astimezone()
        tick = next_tick(cron, now, timezone or now.tzinfo)
    except CronError:
        return None
    return tick.isoformat() if tick else None


def describe_definitions(
    m: Manifest, timezone: str | None = None, staleness: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Every definition as plain data; with `staleness` (engine.lineage.asset_staleness), each
    asset's status ("missing", "materialized" or "stale") and why it is stale."""
    downstream = m.downstream()
    staleness = staleness or {}
    return {
        "assets": [
            {
                "name": a.name,
                "group": a.group,
                "file": a.file,
                "partitions": a.partitions_def.describe() if a.partitions else None,
                "upstream": list(a.upstream),
                "downstream": downstream.get(a.name, []),
                "checks": [
                    {"name": c.name, "blocking": c.blocking} for c in m.checks.get(a.name, [])
                ],
                "retries": a.retries,
                "timeout": a.timeout,
                "memory_limit": a.memory_limit,
                "pool": a.pool,
                "description": a.description,
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
                    {"id": t.id, "kind": t.kind, "upstream": list(t.upstream)}
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
            {"name": s.name, "path": s.path, "pattern": s.pattern, "target": s.target}
            for s in m.sensors.values()
        ],
        "errors": [
            {"file": e.file, "kind": e.kind, "message": e.message} for e in m.errors.values()
        ],
    }


def _target(t: dict[str, Any]) -> str:
    return t["name"] if t["kind"] == "pipeline" else ", ".join(t["selection"])


def print_definitions(data: dict[str, Any]) -> None:
    groups: dict[str, list[dict[str, Any]]] = {}
    for a in data["assets"]:
        groups.setdefault(a["group"], []).append(a)
    for group, assets in groups.items():
        print(f"assets · {group}")
        for a in assets:
            extra = []
            if a["partitions"]:
                extra.append(a["partitions"])
            if a["upstream"]:
                extra.append("← " + ", ".join(a["upstream"]))
            if a["checks"]:
                extra.append("checks: " + ", ".join(c["name"] for c in a["checks"]))
            if a.get("status") == "stale":
                extra.append(f"◧ stale ({a['stale_reason']})")
            if a["description"]:
                extra.append("— " + a["description"].splitlines()[0])
            print(f"  {a['name']:<24} {'  '.join(extra)}".rstrip())
    for p in data["pipelines"]:
        sched = f"  schedule {p['schedule']}" if p["schedule"] else ""
        print(f"pipeline · {p['name']}{sched}")
        for t in p["tasks"]:
            up = "← " + ", ".join(t["upstream"]) if t["upstream"] else ""
            print(f"  {t['id']:<24} {t['kind']:<7} {up}".rstrip())
    if data["schedules"]:
        print("schedules")
        for s in data["schedules"]:
            print(
                f"  {s['name']:<24} {s['cron']:<12} → {_target(s['target'])}  next {s['next_tick']}"
            )
    if data["sensors"]:
        print("sensors")
        for s in data["sensors"]:
            print(f"  {s['name']:<24} {s['path']}/{s['pattern']} → {_target(s['target'])}")
    for e in data["errors"]:
        print(f"✗ {e['file']}: {e['kind']}: {e['message']}")
