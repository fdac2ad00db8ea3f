"""`dagtop partitions` and `dagtop asset`: an asset's partitions, and its page (details, the
last materializations with their metadata, the checks' history)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import click

from engine.cli.output import JSON_OPTION, emit_json
from engine.client import Client, iso
from engine.units import format_duration, glyph, one_line

if TYPE_CHECKING:
    from engine.client import AssetPage


@click.command("partitions")
@click.argument("asset")
@JSON_OPTION
@click.pass_obj
def partitions_(client: Client, asset: str, as_json: bool) -> None:
    """The status of every partition of an asset (ASSET: a partitioned asset)."""
    states = client.partitions(asset)
    if as_json:
        emit_json(
            [
                {"key": p.key, "status": p.status, "materialized_at": iso(p.materialized_at),
                 "run_id": p.run_id, "reason": p.reason, "failed_checks": list(p.failed_checks)}
                for p in states
            ]
        )  # fmt: skip
        return
    for p in states:
        why = f"  ({p.reason})" if p.reason else ""
        why += "".join(f"  {glyph('failed')} check {name}" for name in p.failed_checks)
        print(f"{glyph(p.status)} {p.key or '(unpartitioned)':<24} {p.status}{why}")
    counts: dict[str, int] = {}
    for p in states:
        counts[p.status] = counts.get(p.status, 0) + 1
    print("  ".join(f"{k} {v}" for k, v in sorted(counts.items())))


@click.command("asset")
@click.argument("name")
@click.option("--partition", help="Only this partition's history")
@click.option(
    "--limit", type=click.IntRange(min=1), default=10, show_default=True,
    help="How many materializations",
)  # fmt: skip
@JSON_OPTION
@click.pass_obj
def asset_(client: Client, name: str, partition: str | None, limit: int, as_json: bool) -> None:
    """One asset: what it is, its last materializations with their metadata, its checks."""
    page = client.asset(name, partition, limit)
    if as_json:
        emit_json(page.to_json())
        return
    for line in asset_lines(page):
        print(line)


def asset_lines(page: AssetPage) -> list[str]:
    """`dagtop asset`'s text: the details, the materializations table, the checks."""
    from engine.units import format_value

    out = [f"{page.name}  group {page.group}  {page.file}:{page.line}"]
    if page.description:
        out.append(f"  {one_line(page.description.strip().splitlines()[0])}")
    counts = "  ".join(
        f"{glyph(status)} {n} {status}" for status, n in sorted(page.partition_counts.items())
    )
    if page.partitions:
        out.append(f"  partitions   {page.partitions}  {counts}")
    out.append(f"  code version {page.code_version}")
    if page.resources:
        out.append(f"  resources    {', '.join(page.resources)}")
    out.append(f"  upstream     {', '.join(page.upstream) or '–'}")
    out.append(f"  downstream   {', '.join(page.downstream) or '–'}")
    if page.stale:
        out.append(f"  status       {glyph('stale')} stale: {'; '.join(page.stale_reasons)}")
    elif not page.partitions:
        status = next(iter(page.partition_counts), None)
        out.append(f"  status       {glyph(status)} {status or 'never materialized'}")
    where = f" of partition {page.partition}" if page.partition else ""
    shown = len(page.materializations)
    older = f" (the newest {shown}; --limit N for more)" if page.more else ""
    out += ["", f"materializations{where}{older}"]
    if not page.materializations:
        out.append("  none yet")
    for m in page.materializations:
        when = datetime.fromtimestamp(m.created_at).strftime("%Y-%m-%d %H:%M:%S")
        part = f"  {m.partition}" if page.partitions and not page.partition else ""
        checks = "".join(glyph("success" if ok else "failed") for ok in m.checks.values())
        meta = "  ".join(f"{k}={format_value(v, 24)}" for k, v in m.metadata.items())
        out.append(
            f"  {when}  {m.run_id[:8]}{part}  {format_duration(m.duration):>7}  "
            f"{m.trigger or '–':<8} {checks + '  ' if checks else ''}{meta}".rstrip()
        )
    if page.checks:
        out += ["", "checks"]
    for c in page.checks:
        kind = " (blocking)" if c.blocking else ""
        if c.pass_rate is None:
            out.append(f"  {glyph(None)} {c.name}{kind}  never ran")
            continue
        newest = c.results[0]
        history = "".join(glyph("success" if r.passed else "failed") for r in c.results)
        out.append(
            f"  {glyph('success' if newest.passed else 'failed')} {c.name}{kind}  "
            f"{c.passed}/{len(c.results)} passed ({c.pass_rate:.0%})  {history}"
        )
        detail = "  ".join(f"{k}={format_value(v, 24)}" for k, v in newest.metadata.items())
        if newest.error:
            detail = f"{one_line(newest.error)[:80]}  {detail}"
        if detail.strip():
            out.append(f"      newest: {detail.strip()}")
    return out


COMMANDS = (partitions_, asset_)
