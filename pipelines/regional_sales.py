"""Partitions over two dimensions: one value per day and region.

What this example shows:
  - `MultiPartitions`: `regional_orders` and `regional_revenue` hold one value per day of
    January 2025 and per region. Keys are the dimensions' keys joined with "|" in the order of
    the dimension names ("date" before "region"): "2025-01-05|eu", as Dagster names them;
  - `context.partition` is that key and `context.dimensions` its parts
    (`{"date": "2025-01-05", "region": "eu"}`);
  - a downstream with the same partitions gets the same key (`regional_revenue`);
  - a downstream partitioned by one dimension gets `{key: value}` of the keys that match it:
    `daily_revenue` (by day) sums the day's regions, `region_trend` (by region) reads every
    materialized day of its region.

Try it (quote the keys: "|" is a pipe to the shell):
    dagtop materialize regional_orders regional_revenue --partition '2025-01-05|eu'
    dagtop backfill regional_orders regional_revenue --from 2025-01-01 --to 2025-01-07
    dagtop materialize daily_revenue --partition 2025-01-05
    dagtop partitions regional_revenue

Standard library only: the orders are synthetic, generated from the key.
"""

from __future__ import annotations

import random
from typing import Any

from engine import DailyPartitions, MultiPartitions, StaticPartitions, asset

GROUP = "regions"
days = DailyPartitions(start="2025-01-01", end="2025-02-01")
REGIONS = ["us", "eu", "apac"]
regions = StaticPartitions(REGIONS)
day_by_region = MultiPartitions({"date": days, "region": regions})

# Orders per day and the average basket differ by region, so the sums below mean something.
SIZE = {"us": (30, 60), "eu": (20, 45), "apac": (10, 35)}
BASKET = {"us": 31.0, "eu": 27.5, "apac": 22.0}


@asset(group=GROUP, partitions=day_by_region)
def regional_orders(context) -> list[dict[str, Any]]:
    """The orders of one day in one region (synthetic, the same every time for a key)."""
    day, region = context.dimensions["date"], context.dimensions["region"]
    rng = random.Random(f"regional-orders-{context.partition}")
    low, high = SIZE[region]
    rows = [
        {
            "order_id": f"{region}-{day}-{i:04d}",
            "amount": round(rng.expovariate(1 / BASKET[region]), 2),
        }
        for i in range(rng.randint(low, high))
    ]
    context.log.info("%s in %s: %d orders", day, region, len(rows))
    context.add_metadata({"orders": len(rows)})
    return rows


@asset(group=GROUP, partitions=day_by_region)
def regional_revenue(context, regional_orders: list[dict[str, Any]]) -> float:
    """Revenue of the same day and region (the same key's orders)."""
    total = round(sum(o["amount"] for o in regional_orders), 2)
    context.add_metadata({"revenue": total})
    return total


@asset(group=GROUP, partitions=days)
def daily_revenue(context, regional_revenue: dict[str, float]) -> dict[str, Any]:
    """Revenue of one day over its regions: `regional_revenue` arrives as
    `{"2025-01-05|us": ..., "2025-01-05|eu": ...}`, the day's materialized regions."""
    # `split` turns a key back into its dimensions' keys.
    by_region = {day_by_region.split(k)["region"]: v for k, v in regional_revenue.items()}
    missing = [r for r in REGIONS if r not in by_region]
    if missing:
        context.log.warning("%s: no revenue yet for %s", context.partition, ", ".join(missing))
    total = round(sum(by_region.values()), 2)
    context.add_metadata({"revenue": total, "regions": len(by_region)})
    return {"total": total, "by_region": by_region}


@asset(group=GROUP, partitions=regions)
def region_trend(context, regional_revenue: dict[str, float]) -> dict[str, Any]:
    """One region over every day materialized so far (`{"2025-01-05|eu": ..., ...}`)."""
    daily = dict(sorted((day_by_region.split(k)["date"], v) for k, v in regional_revenue.items()))
    if not daily:
        raise ValueError(f"no day of {context.partition} is materialized yet: backfill some days")
    mean = round(sum(daily.values()) / len(daily), 2)
    context.add_metadata({"days": len(daily), "mean_per_day": mean})
    return {"days": len(daily), "mean_per_day": mean, "best_day": max(daily, key=daily.__getitem__)}
