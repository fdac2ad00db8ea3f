"""The one facade the CLI and the TUI use to reach the engine.

It returns frozen dataclasses (views), never storage rows, so callers cannot trigger lazy loads
or hold a session. Storage and the executor are imported lazily: `dagtop check` and `dagtop
list` never pay for SQLModel's import, and nothing here imports a UI.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine import loader
from engine.config import Config, Paths, load_config, resolve_paths
from engine.errors import EngineError, StorageError
from engine.manifest import Manifest
from engine.plan import RunRequest

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine as SAEngine

log = logging.getLogger(__name__)


def iso(ts: float | None) -> str | None:
    return (
        None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
    )


@dataclass(frozen=True, slots=True)
class StepView:
    key: str
    kind: str
    status: str
    attempts: int
    max_attempts: int
    exit_code: int | None
    error: str | None
    peak_rss_bytes: int | None
    cpu_seconds: float | None
    log_path: str | None
    started_at: float | None
    ended_at: float | None
    upstream: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["upstream"] = list(self.upstream)
        out["started_at"], out["ended_at"] = iso(self.started_at), iso(self.ended_at)
        return out


@dataclass(frozen=True, slots=True)
class CheckView:
    asset: str
    partition: str | None
    name: str
    passed: bool
    blocking: bool
    description: str | None
    metadata: dict[str, Any]
    error: str | None


@dataclass(frozen=True, slots=True)
class RunView:
    id: str
    kind: str
    status: str
    target: str
    partition: str | None
    params: dict[str, Any]
    trigger: str
    created_at: float
    started_at: float | None
    ended_at: float | None
    steps: tuple[StepView, ...]
    checks: tuple[CheckView, ...]

    @property
    def finished(self) -> bool:
        return self.status in ("success", "failed", "canceled")

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "target": self.target,
            "kind": self.kind,
            "partition": self.partition,
            "params": self.params,
            "trigger": self.trigger,
            "created_at": iso(self.created_at),
            "started_at": iso(self.started_at),
            "ended_at": iso(self.ended_at),
            "steps": [s.to_json() for s in self.steps],
            "checks": [asdict(c) for c in self.checks],
        }


@dataclass(frozen=True, slots=True)
class LogRef:
    key: str
    attempt: int
    status: str
    path: Path


class Client:
    """Everything a user can do, for one project (a home folder and a pipelines folder).

    Args:
        home: The home folder (default `./.dagtop` or DAGTOP_HOME).
        pipelines: The pipelines folder (default `./pipelines` or DAGTOP_PIPELINES).
    """

    def __init__(self, home: str | Path | None = None, pipelines: str | Path | None = None) -> None:
        self.paths: Paths = resolve_paths(home, pipelines)
        self._manifest: Manifest | None = None

    # --- configuration and definitions --------------------------------------------------------

    @cached_property
    def config(self) -> Config:
        return load_config(self.paths.project)

    def _ensure_home(self) -> None:
        try:
            self.paths.home.mkdir(parents=True, exist_ok=True)
            probe = self.paths.home / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise StorageError(f"cannot use home folder {self.paths.home}: {exc.strerror}") from exc

    def load(self, force: bool = False) -> Manifest:
        """The manifest of the pipelines folder (cached by file content in the home folder)."""
        if self._manifest is None or force:
            if not self.paths.pipelines.is_dir():
                raise EngineError(
                    f"no pipelines folder at {self.paths.pipelines} (use --pipelines DIR)",
                    title="No pipelines",
                )
            self._ensure_home()
            self._manifest = loader.load(
                self.paths.pipelines, cache_dir=self.paths.home, timeout=self.config.load_timeout
            )
        return self._manifest

    # --- storage ------------------------------------------------------------------------------

    @cached_property
    def db(self) -> SAEngine:
        from engine.storage.db import database_url, open_db

        self._ensure_home()
        return open_db(database_url(self.paths.home))

    def _read(self) -> Any:
        from engine.storage.db import read_scope

        return read_scope(self.db)

    def _write(self) -> Any:
        from engine.storage.db import session_scope

        return session_scope(self.db)

    # --- running ------------------------------------------------------------------------------

    def create_run(self, request: RunRequest) -> str:
        """Plan `request` and record its run and steps; returns the run id (nothing runs yet)."""
        from engine.plan import plan
        from engine.storage import repo

        manifest = self.load()
        run, steps = plan(manifest, request)
        with self._write() as s:
            repo.add_run(s, run, steps)
        return run.id

    def execute(
        self, run_ids: Sequence[str], on_change: Callable[[str], None] | None = None
    ) -> None:
        """Run (or resume) recorded runs in this process until they finish."""
        from engine.executor.coordinator import Coordinator
        from engine.executor.recovery import reconcile

        reconcile(self.db)
        coordinator = Coordinator(self.db, self.paths, self.config, self.load, on_change=on_change)
        for run_id in run_ids:
            coordinator.submit(run_id)
        try:
            coordinator.run_until_complete(set(run_ids))
        except KeyboardInterrupt:
            # Ctrl-C: stop the steps we started and record them canceled, never "running".
            for run_id in run_ids:
                self.request_cancel(run_id)
            coordinator.run_until_complete(set(run_ids))
            raise

    def materialize(
        self,
        selection: Sequence[str],
        partition: str | None = None,
        params: dict[str, Any] | None = None,
        on_change: Callable[[str], None] | None = None,
    ) -> RunView:
        """Materialize a selection now and wait for the run to finish.

        Raises:
            SelectionError: the selection names no asset.
            PartitionError: the partition key is invalid for the selection.
        """
        run_id = self.create_run(
            RunRequest(selection=tuple(selection), partition=partition, params=dict(params or {}))
        )
        self.execute([run_id], on_change)
        return self.run(run_id)

    def run_pipeline(
        self,
        name: str,
        params: dict[str, Any] | None = None,
        on_change: Callable[[str], None] | None = None,
    ) -> RunView:
        """Run a task pipeline now and wait for it to finish."""
        run_id = self.create_run(RunRequest(pipeline=name, params=dict(params or {})))
        self.execute([run_id], on_change)
        return self.run(run_id)

    def rerun_from_failure(
        self, run_id: str, on_change: Callable[[str], None] | None = None
    ) -> RunView:
        """Re-execute the failed, skipped and canceled steps of a run, reusing stored values.

        An interrupted run (its engine died) is resumed the same way.
        """
        from engine.executor.recovery import owner_alive, reconcile
        from engine.status import RunStatus, StepStatus, transition_run, transition_step
        from engine.storage import repo

        reconcile(self.db)
        with self._write() as s:
            run = repo.find_run(s, run_id)
            if run.status == RunStatus.SUCCESS:
                raise EngineError(
                    f"run {run.id} succeeded: nothing to re-run", title="Nothing to do"
                )
            if run.status == RunStatus.RUNNING and owner_alive(run.owner):
                raise EngineError(f"run {run.id} is still running", title="Run is running")
            for step in repo.steps_of(s, [run.id])[run.id]:
                if step.status in (StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.CANCELED):
                    transition_step(step, StepStatus.QUEUED)
                    step.error, step.ended_at, step.retry_at = None, None, None
                    step.max_attempts = step.attempts + max(1, step.max_attempts - step.attempts)
                    s.add(step)
            if RunStatus(run.status).finished:
                transition_run(run, RunStatus.QUEUED)
                run.ended_at = None
            run.cancel_requested = False
            run.updated_at = time.time()
            s.add(run)
            full_id = run.id
        self.execute([full_id], on_change)
        return self.run(full_id)

    def request_cancel(self, run_id: str) -> str:
        from engine.storage import repo

        with self._write() as s:
            run = repo.find_run(s, run_id)
            run.cancel_requested = True
            run.updated_at = time.time()
            s.add(run)
            return run.id

    def cancel(self, run_id: str, wait: float = 10.0) -> RunView:
        """Cancel a run: queued steps are canceled, running ones stopped (SIGTERM, then SIGKILL).

        If the process running it is gone, the run is settled here and now.
        """
        from engine.executor.recovery import owner_alive
        from engine.storage import repo

        full_id = self.request_cancel(run_id)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            view = self.run(full_id)
            if view.finished:
                return view
            with self._read() as s:
                owner = repo.find_run(s, full_id).owner
            if not owner_alive(owner):
                self.execute([full_id])  # settles it: every step becomes canceled
                return self.run(full_id)
            time.sleep(0.1)
        return self.run(full_id)

    # --- reading ------------------------------------------------------------------------------

    def run(self, run_id: str) -> RunView:
        """Raises: RunNotFound."""
        from engine.storage import repo

        with self._read() as s:
            run = repo.find_run(s, run_id)
            return self._views(s, [run])[0]

    def runs(self, limit: int = 50, offset: int = 0) -> list[RunView]:
        """The newest runs first."""
        from engine.storage import repo

        with self._read() as s:
            return self._views(s, repo.recent_runs(s, limit, offset))

    def _views(self, s: Any, runs: Sequence[Any]) -> list[RunView]:
        from engine.storage import repo

        steps = repo.steps_of(s, [r.id for r in runs])
        views = []
        for r in runs:
            checks = tuple(
                CheckView(
                    asset=c.asset,
                    partition=c.partition,
                    name=c.name,
                    passed=c.passed,
                    blocking=c.blocking,
                    description=c.description,
                    metadata=json.loads(c.metadata_json or "{}"),
                    error=c.error,
                )
                for c in repo.checks_of(s, r.id)
            )
            views.append(
                RunView(
                    id=r.id,
                    kind=r.kind,
                    status=r.status,
                    target=r.target,
                    partition=r.partition,
                    params=json.loads(r.params or "{}"),
                    trigger=r.trigger,
                    created_at=r.created_at,
                    started_at=r.started_at,
                    ended_at=r.ended_at,
                    steps=tuple(
                        StepView(
                            key=st.key,
                            kind=st.kind,
                            status=st.status,
                            attempts=st.attempts,
                            max_attempts=st.max_attempts,
                            exit_code=st.exit_code,
                            error=st.error,
                            peak_rss_bytes=st.peak_rss_bytes,
                            cpu_seconds=st.cpu_seconds,
                            log_path=st.log_path,
                            started_at=st.started_at,
                            ended_at=st.ended_at,
                            upstream=tuple(json.loads(st.upstream)),
                        )
                        for st in steps[r.id]
                    ),
                    checks=checks,
                )
            )
        return views

    def logs(self, run_id: str, step: str | None = None) -> list[LogRef]:
        """Every attempt's log file of a run (or of one step), in the order they started.

        Raises:
            RunNotFound: no such run.
            EngineError: the run has no step `step`.
        """
        from engine.storage import repo

        with self._read() as s:
            run = repo.find_run(s, run_id)
            attempts = repo.attempts_of(s, run.id)
            keys = [st.key for st in repo.steps_of(s, [run.id])[run.id]]
        if step is not None and step not in keys:
            from engine.validate import suggest

            raise EngineError(
                f"run {run.id} has no step {step!r}" + suggest(step, keys), title="Unknown step"
            )
        return [
            LogRef(key=a.key, attempt=a.attempt, status=a.status, path=Path(a.log_path))
            for a in attempts
            if step is None or a.key == step
        ]
