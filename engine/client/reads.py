"""Reading a project's history: runs, attempts, samples, partitions, lineage, backfills,
schedules and sensors, as frozen views (never storage rows), straight from storage.

An embedded engine's memory answers where it knows better than storage (its definitions, its
scheduler's next ticks, a running backfill's counts). Reads are not commands yet; one that
should be answered over the engine's socket becomes a command of engine.service.commands
whose in-process handler reads storage as these do.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from engine.client.project import Project
from engine.errors import EngineError
from engine.history.views import (
    AttemptView,
    LogRef,
    MachineView,
    NodeStatus,
    RunView,
    SampleView,
    attempt_view,
    mapped_node_statuses,
    node_statuses,
    run_views,
)
from engine.loading.config import database_setting
from engine.protocol import commands as protocol
from engine.protocol.commands import Command
from engine.service.reads import known_asset
from engine.status import PartitionStatus, StepStatus

Req = TypeVar("Req")
Ans = TypeVar("Ans")

if TYPE_CHECKING:
    from engine.automation.backfill import ProgressReader
    from engine.automation.scheduler import ScheduleStatus
    from engine.automation.sensors import SensorStatus, SensorTickView
    from engine.history.asset_page import AssetPage
    from engine.history.lineage import LineageNode, StaleState
    from engine.history.partition_status import PartitionChanges, PartitionCursor, PartitionState
    from engine.loading.manifest import Manifest


class Reads(Project):
    """What a client reads."""

    _backfill_reader: ProgressReader | None = None  # the UI's list of backfills, every second
    reads_over_socket = False
    """Ask the engine running on this machine, if one answers on its socket, for runs, logs,
    partitions and definitions, rather than import storage (~0.35 s) to read them here: what
    a short command wants (the CLI turns it on), not the UI, which reads all the time."""

    def _ask_engine(self, command: Command[Req, Ans], request: Req) -> Ans | None:
        """The answer of this machine's engine to a read, or None when none answers (no
        socket, or a dead engine's): then the caller reads storage itself."""
        if not self.reads_over_socket or self.engine is not None:
            return None
        from engine.service import ipc

        if not ipc.available(self.paths.home):
            return None
        from engine.client.links import EngineGone
        from engine.client.links.local_socket import LocalSocket

        try:
            return LocalSocket(self.paths.home, database_setting(self.config)).call(
                command, request
            )
        except EngineGone:
            return None
        except EngineError:
            # Refused (an engine on another database, a run it does not know): read storage
            # here, which answers for this command's database or says in one line what is wrong.
            return None

    # --- runs ---------------------------------------------------------------------------------

    def run(self, run_id: str) -> RunView:
        """Raises: RunNotFound."""
        query: protocol.RunQuery = {"run_id": run_id}
        found = self._ask_engine(protocol.READ_RUN, query)
        if found is not None:
            return RunView.from_wire(found["run"])
        from engine.storage import repo

        with self._read() as s:
            return run_views(s, [repo.find_run(s, run_id)])[0]

    def runs(self, limit: int = 50, offset: int = 0) -> list[RunView]:
        """The newest runs first."""
        query: protocol.RunsQuery = {"limit": limit, "offset": offset}
        found = self._ask_engine(protocol.READ_RUNS, query)
        if found is not None:
            return [RunView.from_wire(wire) for wire in found["runs"]]
        from engine.service.reads import recent_runs

        return recent_runs(self.db, limit, offset)

    def runs_since(self, updated_after: float, limit: int = 500) -> list[RunView]:
        """Runs changed after a time (by `updated_at`), for incremental refreshes."""
        from engine.storage import repo

        with self._read() as s:
            return run_views(s, repo.runs_changed_since(s, updated_after, limit))

    def attempts(self, run_id: str) -> list[AttemptView]:
        """Every attempt of every step of a run, in the order they started."""
        from engine.storage import repo

        with self._read() as s:
            run = repo.find_run(s, run_id)
            return [attempt_view(a) for a in repo.attempts_of(s, run.id)]

    def samples(self, attempt_id: int, since: float | None = None) -> list[SampleView]:
        """The resource samples of a step attempt (live while it runs, downsampled after);
        with `since`, only those taken after it (for polling a long attempt cheaply)."""
        from engine.storage import repo

        with self._read() as s:
            return [
                SampleView(t=x.t, cpu_percent=x.cpu_percent, rss_bytes=x.rss_bytes)
                for x in repo.samples_of(s, attempt_id, since)
            ]

    def logs(self, run_id: str, step: str | None = None) -> list[LogRef]:
        """Every attempt's log file of a run (or of one step), in the order they started.

        Raises:
            RunNotFound: no such run.
            EngineError: the run has no step `step`.
        """
        from engine.service import reads

        query: protocol.RunQuery = {"run_id": run_id, "step": step}
        found = self._ask_engine(protocol.READ_RUN, query)
        if found is not None:
            return [reads.log_from_wire(ref) for ref in found["logs"]]
        return reads.run_logs(self.db, run_id, step)[1]

    # --- assets and tasks ---------------------------------------------------------------------

    def node_statuses(self, pipeline: str | None = None) -> dict[str, NodeStatus]:
        """The latest step status of every asset, or of one task pipeline's tasks. An asset
        whose latest step succeeded but whose value is out of date (or gone) reads "stale",
        with why."""
        manifest = self.load()
        if pipeline is not None:
            found = manifest.pipelines.get(pipeline)
            keys = list(found.tasks) if found is not None else []
        else:
            keys = list(manifest.assets)
        with self._read() as s:
            statuses = node_statuses(s, keys, pipeline)
            if pipeline is not None:
                maps = {
                    t.id: t.expand[1]
                    for t in (found.tasks.values() if found is not None else ())
                    if t.expand is not None
                }
                if maps:
                    # A mapped task's steps are its instances (`process[0]`, ...): summed up.
                    statuses.update(mapped_node_statuses(s, maps, statuses))
                return statuses
            from engine.history.lineage import VALUE_MISSING, Staleness

            manifest = bind(s, manifest)
            staleness = Staleness(s, manifest)
            done = {k: n for k, n in statuses.items() if n.status == StepStatus.SUCCESS}
            staleness.preload_pairs(
                (key, [node.partition if manifest.assets[key].partitions else None])
                for key, node in done.items()
            )
            for key, node in done.items():
                part = node.partition if manifest.assets[key].partitions else None
                mat = staleness.current(key, part)
                why = staleness.reasons(key, part)
                if mat is not None and not staleness.present(mat):
                    why = (VALUE_MISSING,)
                if why:
                    statuses[key] = dataclasses.replace(
                        node, status=PartitionStatus.STALE, reason=", ".join(why)
                    )
            return statuses

    def asset(self, name: str, partition: str | None = None, limit: int = 50) -> AssetPage:
        """One asset's page: its definition, partition counts and staleness, its newest
        `limit` materializations (of `partition` only, if given) with their metadata and
        checks, each check's history and pass rate, and its numeric metadata as series (see
        engine.history.asset_page).

        Raises:
            SelectionError: no such asset (with the nearest name).
            PartitionError: `partition` given for an unpartitioned asset, or not one of its keys.
        """
        from engine.history.asset_page import AssetPage

        # The engine checks the name too: a refusal (or no engine) is read, and said, here.
        query: protocol.AssetQuery = {"asset": name, "partition": partition, "limit": limit}
        found = self._ask_engine(protocol.READ_ASSET, query)
        if found is not None:
            return AssetPage.from_wire(found["page"])
        from engine.service.reads import asset_page

        manifest = self.load()
        known_asset(manifest, name, otherwise=" (`dagtop list` shows every asset)")
        return asset_page(self.db, manifest, name, partition, limit)

    def describe(self) -> dict[str, Any]:
        """Every definition as plain data (what `dagtop list --json` prints)."""
        nothing: protocol.NoArguments = {}
        found = self._ask_engine(protocol.READ_DEFINITIONS, nothing)
        if found is not None:
            definitions_found: dict[str, Any] = found["definitions"]
            return definitions_found
        from engine.service.reads import definitions

        manifest = self.load()
        return definitions(self.db if self._has_history() else None, manifest, self.config.timezone)

    def _has_history(self) -> bool:
        """Whether there is a database to read: without one, `dagtop list` needs no storage
        (SQLModel costs ~0.35 s to import) and nothing can be stale."""
        if os.environ.get("DAGTOP_DATABASE_URL") or self.config.database_url:
            return True
        return (self.paths.home / "dagtop.db").exists()

    def warnings(self) -> list[str]:
        """Standing problems of the project's setup, one short line each (the UI's status
        bar shows them): today, a Dask scheduler reached over plain tcp:// off this machine."""
        from engine.loading.config import open_scheduler

        address = open_scheduler(self.config)
        return [f"Dask scheduler {address} is not TLS"] if address else []

    def machine(self) -> MachineView:
        """This machine's CPU and memory use (for the UI's header)."""
        import psutil

        mem = psutil.virtual_memory()
        return MachineView(
            cpu_percent=psutil.cpu_percent(interval=None),
            memory_used=mem.total - mem.available,
            memory_total=mem.total,
        )

    # --- partitions, lineage and staleness ----------------------------------------------------

    def partitions(self, asset: str) -> list[PartitionState]:
        """The status of every partition of `asset` (see engine.history.partition_status)."""
        query: protocol.PartitionsQuery = {"asset": asset}
        found = self._ask_engine(protocol.READ_PARTITIONS, query)
        if found is not None:
            from engine.history.views import PartitionState

            return [
                PartitionState(
                    **{
                        **state,
                        "status": PartitionStatus(state["status"]),
                        "failed_checks": tuple(state["failed_checks"]),
                    }
                )
                for state in found["partitions"]
            ]
        from engine.service.reads import partitions

        return partitions(self.db, self.load(), asset)

    def partition_changes(
        self, assets: Sequence[str], cursor: PartitionCursor | None = None
    ) -> PartitionChanges:
        """The partition states of `assets` that may have changed since `cursor`, or all of
        them without one (see engine.history.partition_status): what the partition matrix
        polls. Hand its `cursor` back at the next call.

        Raises:
            SelectionError: an unknown asset.
        """
        from engine.history.partition_status import partition_changes

        manifest = self.load()
        for asset in assets:
            known_asset(manifest, asset)
        with self._read() as s:
            return partition_changes(s, bind(s, manifest), list(assets), cursor)

    def lineage(
        self,
        asset: str,
        partition: str | None = None,
        downstream: bool = False,
        materialization: int | None = None,
    ) -> LineageNode:
        """How the current value of `asset` [partition] (or its materialization whose id is
        `materialization`) was produced: the materializations it consumed, back to the roots;
        or, with `downstream`, the assets that depend on it and their newest materializations
        (see engine.history.lineage).

        Raises:
            SelectionError: no such asset.
            PartitionError: the key is missing, not needed, or invalid.
            EngineError: (upstream) the asset partition was never materialized, or has no such
                materialization.
        """
        from engine.history.lineage import downstream_lineage, upstream_lineage

        manifest = self.load()
        known_asset(manifest, asset)
        with self._read() as s:
            bound = bind(s, manifest)
            if downstream:
                return downstream_lineage(s, bound, asset, partition)
            return upstream_lineage(s, bound, asset, partition, materialization)

    def stale(self, selection: Sequence[str], partition: str | None = None) -> list[StaleState]:
        """Each asset of a selection, in dependency order: missing, stale (with the reasons)
        or current; partitioned assets at `partition`.

        Raises:
            SelectionError, PartitionError: as for `materialize`.
        """
        from engine.history.lineage import stale_states
        from engine.history.plan import validate_partition
        from engine.loading.selection import resolve

        manifest = self.load()
        names = resolve(manifest, selection)
        with self._read() as s:
            manifest = bind(s, manifest)
            validate_partition(manifest, names, partition)
            return stale_states(s, manifest, names, partition)

    # --- backfills, schedules, sensors --------------------------------------------------------

    def backfill_progress(self, backfill_id: str, with_keys: bool = True) -> dict[str, Any]:
        """A backfill's row and how many of its keys each status covers (one aggregate query);
        with `with_keys`, also its key list (`partitions`)."""
        from engine.automation.backfill import progress

        with self._read() as s:
            return progress(s, backfill_id, with_keys)

    def backfills(self, limit: int = 20, with_keys: bool = True) -> list[dict[str, Any]]:
        """The newest backfills and their progress. Without `with_keys` (the UI's list, read
        every second) each dict says only how many keys there are and the first and last,
        and only running backfills are counted again at each call."""
        from engine.automation.backfill import ProgressReader, progress
        from engine.storage import repo

        with self._read() as s:
            if with_keys:
                return [progress(s, b.id) for b in repo.recent_backfills(s, limit)]
            if self._backfill_reader is None:
                self._backfill_reader = ProgressReader()
            live = self.engine.backfill_progress if self.engine is not None else None
            return self._backfill_reader.recent(s, limit, live)

    def schedules(self) -> list[ScheduleStatus]:
        """Every schedule's status: next and last tick, last run, on/off."""
        if self.engine is not None and self.engine.scheduler is not None:
            found: list[ScheduleStatus] = self.engine.scheduler.status()
            return found
        from engine.automation.scheduler import statuses

        return statuses(self.db, self.load(), self.config.timezone)

    def sensors(self) -> list[SensorStatus]:
        """Every sensor's status (file, custom and built-in), sorted by name: on/off, and the
        files seen or the last tick and the next."""
        import time

        from engine.automation.sensor_registry import statuses

        files = None
        if self.engine is not None and self.engine.sensors is not None:
            files = self.engine.sensors.status()
        return statuses(self.db, self.load(), files, now=time.time())

    def sensor_ticks(self, name: str, limit: int = 50) -> list[SensorTickView]:
        """A sensor's ticks, newest first (custom and built-in sensors; none for file sensors).

        Raises:
            EngineError: no sensor has that name.
        """
        from engine.automation.sensor_registry import sensor_names, ticks

        names = sensor_names(self.load())
        if name not in names:
            from engine.errors import EngineError, suggest

            raise EngineError(f"unknown sensor {name!r}" + suggest(name, names))
        return ticks(self.db, name, limit)

    def dynamic_keys(self, name: str) -> list[str]:
        """The keys of DynamicPartitions `name`, in the order they were added.

        Raises:
            PartitionError: no asset is partitioned by it, and no key was ever stored under it.
        """
        from engine.history.dynamic import known_definition
        from engine.storage import repo

        with self._read() as s:
            keys = repo.dynamic_keys(s, [name])[name]
            stored = [name] if keys or repo.dynamic_key_count(s, name) else []
        known_definition(self.load(), name, stored)
        return keys


def bind(session: Any, manifest: Manifest) -> Manifest:
    """The manifest with its dynamic partitions' keys as stored (engine.history.dynamic)."""
    from engine.history.dynamic import bind as bind_keys

    return bind_keys(session, manifest)
