"""What an engine tells its subscribers (the UI, socket followers) when something changes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EngineEvent:
    """Something changed: `kind` is run | backfill | reload | schedule | sensor (a toggle, or
    a custom sensor's tick) | keys (dynamic partitions' keys) | stopped (the engine stopped
    itself on a failure; `ref` says why, in one line)."""

    kind: str
    ref: str | None = None
    ended: bool = False  # for a run: this change ended it
