"""What the terminal UI asks of the engine facade, as a protocol.

`tui/` is typed against `ClientAPI`, never against `engine.client.Client` itself: the real
client implements it, and so does the one fake the UI's tests drive (mypy checks both, see
tests/engine/test_client_api.py and tests/tui/fakes.py). A method the UI starts to use is
added here first; one the client drops or changes fails the type check at once.

Every answer is a frozen view or a plain value, never a storage row. The types are imported
for type checking only: importing this module costs nothing, and the UI names engine types
(a schedule's status, a partition's) through it without importing the modules that define
them, which load storage and the scheduler.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from engine.automation.scheduler import ScheduleStatus as ScheduleStatus
    from engine.automation.sensors import SensorStatus as SensorStatus
    from engine.automation.sensors import SensorTickView as SensorTickView
    from engine.history.asset_page import AssetPage as AssetPage
    from engine.history.lineage import LineageNode as LineageNode
    from engine.history.partition_status import PartitionChanges as PartitionChanges
    from engine.history.partition_status import PartitionCursor as PartitionCursor
    from engine.history.partition_status import PartitionState as PartitionState
    from engine.history.plan import RunRequest
    from engine.history.views import (
        AttemptView,
        MachineView,
        NodeStatus,
        RunView,
        SampleView,
    )
    from engine.loading.config import Paths
    from engine.loading.manifest import Manifest
    from engine.service.events import EngineEvent as EngineEvent


class EngineEvents(Protocol):
    """An engine running in this process, as the UI sees it: something to listen to."""

    def subscribe(self, callback: Callable[[EngineEvent], None]) -> Callable[[], None]:
        """Call `callback` (on an engine thread) for every change; returns the unsubscribe."""
        ...


@runtime_checkable
class ClientAPI(Protocol):
    """Everything the UI reads from and asks of one project's engine (see `engine.client`)."""

    @property
    def paths(self) -> Paths:
        """The project's home and pipelines folders."""
        ...

    @property
    def engine(self) -> EngineEvents | None:
        """The engine embedded in this process, if any (else the UI polls for changes)."""
        ...

    # --- definitions --------------------------------------------------------------------------

    def load(self, force: bool = False) -> Manifest: ...

    # --- runs ---------------------------------------------------------------------------------

    def runs(self, limit: int = 50, offset: int = 0) -> list[RunView]: ...

    def runs_since(self, updated_after: float, limit: int = 500) -> list[RunView]: ...

    def run(self, run_id: str) -> RunView: ...

    def attempts(self, run_id: str) -> list[AttemptView]: ...

    def samples(self, attempt_id: int, since: float | None = None) -> list[SampleView]: ...

    def node_statuses(self, pipeline: str | None = None) -> dict[str, NodeStatus]: ...

    def machine(self) -> MachineView: ...

    def warnings(self) -> list[str]: ...

    def begin_engine(self) -> None:
        """Start the embedded engine promised by `start_engine_soon` now (once)."""
        ...

    def submit(self, request: RunRequest) -> str: ...

    def rerun(self, run_id: str) -> str: ...

    def request_cancel(self, run_id: str) -> str: ...

    def asset(self, name: str, partition: str | None = None, limit: int = 50) -> AssetPage:
        """One asset's page (engine.history.asset_page): definition, history, checks, series."""
        ...

    # --- partitions and lineage ---------------------------------------------------------------

    def partitions(self, asset: str) -> list[PartitionState]: ...

    def partition_changes(
        self, assets: Sequence[str], cursor: PartitionCursor | None = None
    ) -> PartitionChanges: ...

    def lineage(
        self,
        asset: str,
        partition: str | None = None,
        downstream: bool = False,
        materialization: int | None = None,
    ) -> LineageNode: ...

    # --- backfills ----------------------------------------------------------------------------

    def backfill(
        self,
        selection: Sequence[str],
        keys: Sequence[str] | None = None,
        first: str | None = None,
        last: str | None = None,
        max_parallel: int = 4,
    ) -> str: ...

    def backfills(self, limit: int = 20, with_keys: bool = True) -> list[dict[str, Any]]:
        """The newest backfills' progress (`engine.automation.backfill.progress`); without
        `with_keys`, each says its first and last key instead of listing every one."""
        ...

    def backfill_action(self, action: str, backfill_id: str) -> str: ...

    # --- schedules and sensors ----------------------------------------------------------------

    def schedules(self) -> list[ScheduleStatus]: ...

    def sensors(self) -> list[SensorStatus]: ...

    def sensor_ticks(self, name: str, limit: int = 50) -> list[SensorTickView]:
        """A custom or built-in sensor's ticks, newest first."""
        ...

    def set_enabled(self, kind: str, name: str, enabled: bool) -> None: ...


__all__ = ["ClientAPI", "EngineEvents"]
