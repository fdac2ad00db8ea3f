"""`dagtop schedule on|off`, `sensor on|off`, `sensors` and `keys`: schedules, sensors and
dynamic partitions' keys."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click

from engine.cli.output import JSON_OPTION, emit_json
from engine.client import Client
from engine.errors import EngineError
from engine.status import StepStatus, TickStatus
from engine.units import format_duration, glyph, one_line, plural


def _toggle(client: Client, kind: str, state: str, name: str) -> None:
    if state not in ("on", "off"):
        raise EngineError(f"say `dagtop {kind} on NAME` or `dagtop {kind} off NAME`")
    client.set_enabled(kind, name, state == "on")
    print(f"{kind} {name} is {state}")


@click.command("schedule")
@click.argument("state", metavar="on|off")
@click.argument("name")
@click.pass_obj
def schedule_(client: Client, state: str, name: str) -> None:
    """Turn a schedule on or off (kept across restarts)."""
    _toggle(client, "schedule", state, name)


@click.command("sensor")
@click.argument("state", metavar="on|off")
@click.argument("name")
@click.pass_obj
def sensor_(client: Client, state: str, name: str) -> None:
    """Turn a sensor on or off: a file sensor, a custom one, or `auto` (kept across restarts)."""
    _toggle(client, "sensor", state, name)


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def _tick_line(tick: Any) -> str:
    """A tick in one line: when, how long, and what it did."""
    return f"{_when(tick.started_at)} ({format_duration(tick.duration)}) {tick.summary()}"


@click.command("sensors")
@click.argument("name", required=False)
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True,
              help="Ticks shown for NAME")  # fmt: skip
@JSON_OPTION
@click.pass_obj
def sensors_(client: Client, name: str | None, limit: int, as_json: bool) -> None:
    """Every sensor: on/off, interval, last tick, next tick. With NAME, that sensor's ticks."""
    from engine.automation.sensor_registry import to_json

    if name is not None:
        ticks = client.sensor_ticks(name, limit)
        if as_json:
            emit_json([t.to_json() for t in ticks])
        elif not ticks:
            print(f"sensor {name} has no ticks yet")
        for t in [] if as_json else ticks:
            print(f"{glyph(_TICK_GLYPH[t.status])} {_tick_line(t)}")
        return
    found = client.sensors()
    if as_json:
        emit_json([to_json(s) for s in found])
        return
    if not found:
        print("no sensors")
    for s in found:
        state = "on " if s.enabled else "off"
        if s.kind == "file":
            every = f"settle, files in {s.path}/{s.pattern}"
            last = f"{plural(s.files_seen, 'file')} seen"
            if s.last_seen_at:
                last += f", last {_when(s.last_seen_at)}"
            nxt = ""
        else:
            every = f"every {s.interval:g} s" if s.interval else ""
            last = _tick_line(s.last_tick) if s.last_tick else "no tick yet"
            nxt = f"  next {_when(s.next_tick_at)}" if s.next_tick_at else ""
        runs = f" → {s.target}" if s.target else ""  # a built-in names what it runs per request
        print(f"{state} {s.name:<20} {s.kind:<7} {every}{runs}")
        print(f"    last: {last}{nxt}")


_TICK_GLYPH = {
    TickStatus.STARTED: StepStatus.SUCCESS,
    TickStatus.SKIPPED: StepStatus.SKIPPED,
    TickStatus.FAILED: StepStatus.FAILED,
}


@click.command("keys")
@click.argument("op", type=click.Choice(["add", "remove", "list"]))
@click.argument("name")
@click.argument("keys", nargs=-1)
@JSON_OPTION
@click.pass_obj
def keys_(client: Client, op: str, name: str, keys: tuple[str, ...], as_json: bool) -> None:
    """Keys of dynamic partitions: `keys add NAME KEY...`, `keys remove NAME KEY...`,
    `keys list NAME`. Adding a key that exists changes nothing; a removed key keeps its history.
    """
    if op == "list":
        if keys:
            raise EngineError("`dagtop keys list NAME` takes no keys")
        found = client.dynamic_keys(name)
        if as_json:
            emit_json(found)
        else:
            for key in found:
                print(one_line(key))
        return
    if not keys:
        raise EngineError(f"name the keys: `dagtop keys {op} {name} KEY...`")
    answer = client.change_keys(op, name, keys)
    if as_json:
        emit_json(answer)
        return
    done = "added" if op == "add" else "removed"
    print(f"{name}: {len(answer['changed'])} key(s) {done}, {len(answer['keys'])} in all")


COMMANDS = (schedule_, sensor_, sensors_, keys_)
