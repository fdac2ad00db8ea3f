"""File-drop ingest: a CSV dropped into `pipelines/inbox/` starts a run that parses it.

What this example shows:
  - `file_sensor`: every new file matching `*.csv` in the inbox starts one run of
    `parsed_orders`, with the file's absolute path in `context.params["path"]`;
  - the same asset run by hand with `--param`;
  - validating input and failing with an error message that says what to do.

Try it (with `dagtop daemon` or the UI running, so the sensor is watching):
    cp pipelines/samples/orders-sample.csv pipelines/inbox/orders-1.csv
or by hand, without the sensor:
    dagtop materialize parsed_orders --param path=$PWD/pipelines/samples/orders-sample.csv
"""

from __future__ import annotations

import csv
from datetime import date
from pathlib import Path
from typing import Any

from engine import asset, file_sensor

COLUMNS = ("order_id", "day", "customer", "product", "quantity", "unit_price")


@asset(group="ingest")
def parsed_orders(context) -> list[dict[str, Any]]:
    """The rows of one dropped orders CSV, with typed values."""
    if "path" not in context.params:
        raise ValueError(
            "parsed_orders needs the CSV to read in the `path` run parameter: drop a .csv file "
            "into pipelines/inbox/ or run `dagtop materialize parsed_orders --param path=FILE`"
        )
    path = Path(str(context.params["path"]))
    context.log.info("reading %s", path)
    # utf-8-sig also reads files saved by spreadsheets, which start with a byte-order mark.
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(
                f"{path.name}: missing column(s) {', '.join(missing)}; "
                f"the header must have {', '.join(COLUMNS)}"
            )
        rows = []
        for row in reader:
            line = reader.line_num
            try:
                rows.append(
                    {
                        "order_id": row["order_id"],
                        "day": date.fromisoformat(row["day"]).isoformat(),
                        "customer": row["customer"],
                        "product": row["product"],
                        "quantity": int(row["quantity"]),
                        "unit_price": float(row["unit_price"]),
                    }
                )
            except (TypeError, ValueError) as exc:
                # A short row gives None values (TypeError); a bad number or date a ValueError.
                raise ValueError(f"{path.name}, line {line}: {exc}") from None
    if not rows:
        raise ValueError(f"{path.name} has a header but no rows")
    total = round(sum(r["quantity"] * r["unit_price"] for r in rows), 2)
    context.log.info("parsed %d rows (total %.2f)", len(rows), total)
    context.add_metadata({"file": path.name, "rows": len(rows), "total": total})
    return rows


# A relative path is resolved against this file's folder: this watches pipelines/inbox/.
# The pattern leaves out anything else put there (e.g. the .gitkeep that keeps it in git).
file_sensor("inbox", path="inbox", target="parsed_orders", pattern="*.csv")
