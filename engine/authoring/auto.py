"""`Auto`: when an asset materializes itself, declared on `@asset(auto=...)`.

Three conditions, as Dagster's automation conditions define them (the engine's `auto` sensor
evaluates them, engine.automation.auto):

- `Auto.eager()`: whenever an upstream has a newer value than the asset's own (or the asset is
  missing), once no upstream is missing or being materialized.
- `Auto.on_cron(cron)`: once per cron tick, as soon as every upstream has updated since it.
- `Auto.on_missing()`: once, when the asset (or a partition of it) is missing and its upstreams
  exist.

Plain data only: a step's worker imports this module with every pipeline file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from engine.errors import DefinitionError

AutoKind = Literal["eager", "on_cron", "on_missing"]


@dataclass(frozen=True, slots=True)
class Auto:
    """An automation condition for `@asset(auto=...)`; build one with its class methods."""

    kind: AutoKind
    cron: str | None = None

    @classmethod
    def eager(cls) -> Auto:
        """Materialize whenever an upstream updates, or when missing (Dagster's `eager()`).

        A time-partitioned asset is materialized at its latest partition; any other partitioned
        asset at each key whose upstream updated.
        """
        return cls("eager")

    @classmethod
    def on_cron(cls, cron: str) -> Auto:
        """Materialize once per tick of `cron`, after every upstream has updated since it.

        Raises:
            DefinitionError: `cron` is not a string (its fields are checked when loaded).
        """
        if not isinstance(cron, str) or not cron.strip():
            raise DefinitionError(f"Auto.on_cron needs a cron string, got {cron!r}")
        return cls("on_cron", cron.strip())

    @classmethod
    def on_missing(cls) -> Auto:
        """Materialize once each missing key (or the missing asset) whose upstreams exist."""
        return cls("on_missing")

    def to_spec(self) -> dict[str, Any]:
        """The plain-data form the manifest carries."""
        return {"kind": self.kind} if self.cron is None else {"kind": self.kind, "cron": self.cron}


def describe_auto(spec: dict[str, Any] | None) -> str:
    """How a condition reads in `dagtop list`: `eager`, `on_cron(0 9 * * *)`, `on_missing`."""
    if spec is None:
        return ""
    return f"on_cron({spec['cron']})" if spec["kind"] == "on_cron" else str(spec["kind"])
