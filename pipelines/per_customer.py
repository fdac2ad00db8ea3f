"""A model per customer, over dynamic partitions fed by a custom sensor.

What this example shows:
  - `DynamicPartitions("customers")`: partition keys that appear at run time, one per customer;
  - `@sensor`: a function evaluated every 10 s in a child process that adds a key for each new
    customer file in `pipelines/signups/` and requests one run per new version of a file; its
    `run_key` (the file's name and modification time) makes each version run exactly once,
    also across restarts;
  - per-partition assets: each customer's orders, and a small trend model fitted on them.

Try it (with `dagtop daemon` or the UI running, so the sensor is evaluated):
    cp pipelines/samples/customers/*.csv pipelines/signups/
    dagtop sensors                      # the sensor's last tick: what it requested
    dagtop keys list customers          # acme, globex
    dagtop partitions customer_model
or by hand, without the sensor:
    dagtop keys add customers acme
    dagtop materialize customer_orders customer_model --partition acme
"""

from __future__ import annotations

import csv
from pathlib import Path

from engine import DynamicPartitions, RunRequest, SkipReason, asset, sensor

customers = DynamicPartitions("customers")
SIGNUPS = Path(__file__).parent / "signups"
SAMPLES = Path(__file__).parent / "samples" / "customers"


@sensor(target=["customer_orders", "customer_model"], interval=10, timeout=30)
def new_customers(context):
    """A run per new or changed customer file in pipelines/signups/."""
    files = sorted(SIGNUPS.glob("*.csv"))
    if not files:
        return SkipReason("no customer files in pipelines/signups/")
    names = [f.stem for f in files]
    context.add_partitions(customers, names)  # recorded with this tick's runs
    context.log.info("%d customer file(s)", len(files))
    return [RunRequest(run_key=f"{f.stem}@{f.stat().st_mtime_ns}", partition=f.stem) for f in files]


def _orders_file(customer: str) -> Path:
    for folder in (SIGNUPS, SAMPLES):
        path = folder / f"{customer}.csv"
        if path.is_file():
            return path
    raise FileNotFoundError(f"no orders for customer {customer!r}: put {customer}.csv in {SIGNUPS}")


@asset(partitions=customers, group="customers")
def customer_orders(context) -> list[float]:
    """One customer's order amounts, oldest first."""
    with _orders_file(context.partition).open(newline="") as fh:
        amounts = [float(row["amount"]) for row in csv.DictReader(fh)]
    if len(amounts) < 2:
        raise ValueError(f"customer {context.partition!r} needs at least two orders for a trend")
    context.add_metadata({"orders": len(amounts), "total": round(sum(amounts), 2)})
    return amounts


@asset(partitions=customers, group="customers")
def customer_model(context, customer_orders: list[float]) -> dict[str, float]:
    """A least-squares trend of the customer's order amounts, and its next order forecast."""
    n = len(customer_orders)
    mean_x, mean_y = (n - 1) / 2, sum(customer_orders) / n
    slope = sum((x - mean_x) * (y - mean_y) for x, y in enumerate(customer_orders)) / sum(
        (x - mean_x) ** 2 for x in range(n)
    )
    model = {
        "slope": round(slope, 4),
        "intercept": round(mean_y - slope * mean_x, 4),
        "next_order": round(mean_y + slope * (n - mean_x), 2),
    }
    context.add_metadata(model)
    return model
