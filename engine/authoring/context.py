"""The `context` a step function receives."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class StepContext:
    """What a running asset or task knows about its run.

    Attributes:
        log: A logger whose lines land in the step's log file with time and level.
        partition: The partition key being materialized, or None (also for a range of more
            than one key).
        dimensions: For a `MultiPartitions` asset, the key of each dimension of `partition`
            (`{"date": "2025-01-01", "region": "us"}`); else empty.
        partition_keys: Every partition key this step materializes, in order: the range of
            an asset with a `BackfillPolicy`, else `[partition]` (empty if unpartitioned).
        run_id: The run's id.
        attempt: 1 for the first attempt, 2 for the first retry, ...
        params: Run parameters (`--param K=V`; a sensor run has `path`).
        key: The asset name or task id.
        home: The dagtop home folder of the engine that coordinates the run (on a Dask
            worker of another machine, a path that machine may not have).
        shared_dir: A folder every worker reaches, for artifacts other steps read (a deployed
            model): `@shared` under the project's `values_dir` (the home's values folder by
            default). A `Path`, or a `str` URL when `values_dir` is an fsspec URL (open it
            with fsspec). Not created in advance. In a unit test, the test's home folder.
        resources: The resources built for this step (those its parameters name), by name; in
            a test, what `engine.testing.materialize(resources=...)` was given.
    """

    log: logging.Logger
    partition: str | None
    run_id: str
    attempt: int
    params: dict[str, Any]
    key: str
    home: Path
    dimensions: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    resources: dict[str, Any] = field(default_factory=dict)
    partition_keys: list[str] = field(default_factory=list)
    shared_dir: Path | str = ""
    _on_metadata: Callable[[dict[str, Any]], None] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.shared_dir:
            self.shared_dir = self.home

    def add_metadata(self, data: dict[str, Any]) -> None:
        """Attach metadata (numbers, strings, small lists) to this step's materialization."""
        if not isinstance(data, dict):
            raise TypeError("add_metadata takes a dict")
        self.metadata.update(data)
        if self._on_metadata is not None:
            self._on_metadata(data)


@dataclass
class ResourceContext:
    """What a `@resource` function receives as `context`.

    Attributes:
        name: The resource's name.
        config: Its `[resources.NAME]` table of dagtop.toml (empty if there is none).
        log: The step's logger: lines land in the step's log file.
        home: The dagtop home folder (the coordinating engine's).
        shared_dir: The step's `context.shared_dir`: a folder every worker reaches.
    """

    name: str
    config: dict[str, Any]
    log: logging.Logger
    home: Path
    shared_dir: Path | str = ""

    def __post_init__(self) -> None:
        if not self.shared_dir:
            self.shared_dir = self.home


def build_context(
    partition: str | None = None,
    params: dict[str, Any] | None = None,
    run_id: str = "test",
    attempt: int = 1,
    key: str = "test",
    home: Path | None = None,
    resources: dict[str, Any] | None = None,
    partition_keys: list[str] | None = None,
    shared_dir: Path | str | None = None,
    dimensions: dict[str, str] | None = None,
) -> StepContext:
    """A context for calling one asset or task function directly in a unit test.

    `context.metadata` collects what the function passed to `add_metadata`.
    """
    import tempfile

    return StepContext(
        log=logging.getLogger(f"dagtop.step.{key}"),
        partition=partition,
        run_id=run_id,
        attempt=attempt,
        params=dict(params or {}),
        key=key,
        home=Path(home) if home is not None else Path(tempfile.mkdtemp(prefix="dagtop-test-")),
        resources=dict(resources or {}),
        partition_keys=list(partition_keys or ([partition] if partition is not None else [])),
        shared_dir=shared_dir or "",
        dimensions=dict(dimensions or {}),
    )
