"""The run a schedule's tick or a sensor's file asks for: one request for either trigger."""

from __future__ import annotations

from typing import Any

from engine.history.plan import RunRequest
from engine.loading.manifest import Target


def request_for(
    target: Target,
    trigger: str,
    trigger_ref: str,
    params: dict[str, Any],
    partition: str | None = None,
) -> RunRequest:
    """The request to run `target`, started by `trigger` ("schedule", "sensor") named
    `trigger_ref`. `partition` applies to an asset selection only."""
    if target["kind"] == "pipeline":
        return RunRequest(
            pipeline=target["name"], params=params, trigger=trigger, trigger_ref=trigger_ref
        )
    return RunRequest(
        selection=tuple(target["selection"]),
        partition=partition,
        params=params,
        trigger=trigger,
        trigger_ref=trigger_ref,
    )
