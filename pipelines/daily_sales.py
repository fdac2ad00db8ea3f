"""Daily-partitioned assets: one value per day, materialized and backfilled day by day.

What this example shows:
  - `DailyPartitions`: `orders` and `revenue` hold one value per day of January 2025;
  - `context.partition`: the day ("2025-01-05") a step is computing;
  - a partitioned asset depending on another with the same partitions (`revenue(orders)`
    receives the orders of the same day);
  - an unpartitioned asset depending on a partitioned one (`revenue_report(revenue)` receives
    `{day: revenue}` for every day materialized so far);
  - a daily schedule for the whole group, and a JSON-stored value you can `cat`.

Try it:
    dagtop materialize orders revenue --partition 2025-01-05
    dagtop materialize revenue_report

Standard library only: the orders are synthetic, generated from the day's key.
"""

from __future__ import annotations

import random
from datetime import date
from typing import Any

from engine import CheckResult, DailyPartitions, asset, check, schedule

GROUP = "sales"
# 31 daily partitions, 2025-01-01 to 2025-01-31: `end` is exclusive.
days = DailyPartitions(start="2025-01-01", end="2025-02-01")

PRODUCTS = {"notebook": 4.5, "pen": 1.2, "backpack": 39.0, "lamp": 24.9, "mug": 8.0}
CUSTOMERS = [f"c{n:03d}" for n in range(1, 41)]


@asset(group=GROUP, partitions=days)
def orders(context) -> list[dict[str, Any]]:
    """The day's orders (synthetic, but the same every time for a given day)."""
    day = context.partition
    # Seeding with the key string is stable across processes and runs (unlike `hash(day)`,
    # which Python randomizes per process), so re-materializing a day gives the same orders.
    rng = random.Random(f"orders-{day}")
    weekend = date.fromisoformat(day).weekday() >= 5
    n = rng.randint(40, 80) if weekend else rng.randint(20, 50)
    rows = []
    for i in range(n):
        product = rng.choice(list(PRODUCTS))
        rows.append(
            {
                "order_id": f"{day}-{i:04d}",
                "customer": rng.choice(CUSTOMERS),
                "product": product,
                "quantity": rng.randint(1, 5),
                "unit_price": PRODUCTS[product],
            }
        )
    context.log.info("%s: %d orders", day, n)
    context.add_metadata({"orders": n})
    return rows


@asset(group=GROUP, partitions=days)
def revenue(context, orders: list[dict[str, Any]]) -> float:
    """Total revenue of the day (the same day's `orders`)."""
    total = round(sum(o["quantity"] * o["unit_price"] for o in orders), 2)
    context.add_metadata({"revenue": total, "orders": len(orders)})
    return total


@check(asset="revenue", blocking=True)
def revenue_is_positive(revenue: float) -> CheckResult:
    """A day without revenue means broken input, not a quiet day."""
    return CheckResult(passed=revenue > 0, metadata={"revenue": revenue})


@asset(group=GROUP, io="json")
def revenue_report(context, revenue: dict[str, float]) -> dict[str, Any]:
    """A summary of every day materialized so far.

    An unpartitioned asset sees its partitioned upstream as `{partition_key: value}`, holding
    only the days that have been materialized: backfill more days and rerun to see them here.
    `io="json"` stores the value as readable JSON in the home folder.
    """
    if not revenue:
        raise ValueError("no day of `revenue` is materialized yet: backfill some days first")
    daily = dict(sorted(revenue.items()))
    total = round(sum(daily.values()), 2)
    all_days = days.keys()  # every day of the partitions definition, in order
    missing = [day for day in all_days if day not in daily]
    report = {
        "days": len(daily),
        "first_day": next(iter(daily)),
        "last_day": next(reversed(daily)),
        "total": total,
        "mean_per_day": round(total / len(daily), 2),
        "best_day": max(daily, key=daily.__getitem__),
        "worst_day": min(daily, key=daily.__getitem__),
        "missing_days": len(missing),
        "daily": daily,
    }
    context.log.info(
        "%d days, total %.2f, %d of %d days missing", len(daily), total, len(missing), len(all_days)
    )
    context.add_metadata({k: v for k, v in report.items() if k != "daily"})
    return report


# Every night, materialize the whole group.
schedule("@daily", target="group:sales", name="nightly_sales")
