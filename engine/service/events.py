"""What an engine tells its subscribers (the UI, socket followers) when something changes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class EngineEvent:
    """Something changed: `kind` is run | backfill | reload | schedule | sensor."""

    kind: str
    ref: str | None = None
    ended: bool = False  # for a run: this change ended it


class EngineHandle(Protocol):
    """What the socket's request handlers need of an engine."""

    db: Any

    @property
    def running(self) -> bool: ...

    def subscribe(self, callback: Callable[[EngineEvent], None]) -> Callable[[], None]: ...

    def _command(self, kind: str, payload: dict[str, Any]) -> Any: ...

    def follow_backfill(self, backfill_id: str) -> Iterator[dict[str, Any]]: ...
