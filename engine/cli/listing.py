"""What `dagtop list` prints: the definitions (`engine.loading.describe`) as text."""

from __future__ import annotations

from typing import Any

from engine.status import Freshness
from engine.units import GLYPHS


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
            if a.get("auto"):
                extra.append(f"auto: {a['auto']}")
            if a["checks"]:
                extra.append("checks: " + ", ".join(c["name"] for c in a["checks"]))
            if a.get("resources"):
                extra.append("resources: " + ", ".join(a["resources"]))
            if a.get("config"):
                extra.append(f"config: {a['config']['class']}")
            if a.get("status") == Freshness.STALE:
                extra.append(f"{GLYPHS[Freshness.STALE]} stale ({a['stale_reason']})")
            elif a.get("status") == Freshness.MISSING and a.get("stale_reason"):
                extra.append(f"{GLYPHS[Freshness.MISSING]} missing ({a['stale_reason']})")
            if a["description"]:
                extra.append("— " + a["description"].splitlines()[0])
            print(f"  {a['name']:<24} {'  '.join(extra)}".rstrip())
    for p in data["pipelines"]:
        sched = f"  schedule {p['schedule']}" if p["schedule"] else ""
        print(f"pipeline · {p['name']}{sched}")
        for t in p["tasks"]:
            extra = ["← " + ", ".join(t["upstream"])] if t["upstream"] else []
            if t.get("expand"):
                extra.append(f"mapped over {t['expand']['over']}")
            if t.get("branch"):
                extra.append("branch")
            if t.get("short_circuit"):
                extra.append("short-circuit")
            if t.get("trigger_rule", "all_success") != "all_success":
                extra.append(f"trigger rule {t['trigger_rule']}")
            print(f"  {t['id']:<24} {t['kind']:<7} {'  '.join(extra)}".rstrip())
    if data.get("resources"):
        print("resources")
        for r in data["resources"]:
            used = "used by " + ", ".join(r["used_by"]) if r["used_by"] else "used by no asset"
            about = "  — " + r["description"].splitlines()[0] if r["description"] else ""
            print(f"  {r['name']:<24} {r['file']}:{r['line']}  {used}{about}")
    if data["schedules"]:
        print("schedules")
        for s in data["schedules"]:
            print(
                f"  {s['name']:<24} {s['cron']:<12} → {_target(s['target'])}  next {s['next_tick']}"
            )
    if data["sensors"]:
        print("sensors")
        for s in data["sensors"]:
            print(
                f"  {s['name']:<24} {s['path']}/{s['pattern']} → {_target(s['target'])}"
                f"  settle {s['settle']:g} s"
            )
    for e in data["errors"]:
        print(f"{GLYPHS['failed']} {e['file']}: {e['kind']}: {e['message']}")
