"""What the coordinator holds in memory about the runs it executes, and every rule it decides by.

A `RunState` is the coordinator's copy of one run and its steps as it last wrote them to storage
(storage stays the record; this is what the loop decides from): whether this engine may claim
it, which step is ready, which steps end without running and why (skipped, canceled), how an
attempt's end settles its step (retry or not, and the backoff), which failed check blocks what
is downstream, how the run ends, which alert hooks a step's new status fires. A `LiveAttempt`
is one attempt whose process (or Dask task) is running: its handles, the events it has sent so
far, and, once it exits, how it ended.

The coordinator asks these rules, has `recording` write the outcome, and then applies it here
(`apply`, `started`, `ended`), so memory follows storage. Nothing here writes to storage, starts
or stops a process, or touches the selector.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from engine.executor.alerts import Alert
from engine.executor.monitor import TreeStats, describe_exit
from engine.loading.manifest import mapped_key, split_key
from engine.protocol.worker import (
    EventKind,
    FailureKind,
    decode_event,
    reported_children,
    task_result,
)
from engine.status import RunStatus, SkipKind, StepStatus

if TYPE_CHECKING:
    from engine.executor.dask_executor import RemoteAttempt
    from engine.executor.leftovers import Leftovers
    from engine.executor.spawn import Launch
    from engine.loading.manifest import Manifest
    from engine.protocol.worker import CheckEvent, ErrorEvent, Event
    from engine.storage.models import Run, Step

# A value of the wrong type will be of the wrong type again, and params that do not make the
# typed config will not make it again: retrying only wastes time.
NOT_RETRIED = frozenset({FailureKind.TYPE, FailureKind.CONFIG})
MAX_RETRY_DELAY = 300.0
"""Seconds: the exponential backoff between attempts stops growing here."""


class Settle(NamedTuple):
    """How a step ends without running: its new status, why in words, and for a skip its kind
    (which trigger rules downstream and the run's end read)."""

    status: StepStatus
    reason: str | None
    skip: SkipKind | None = None


# Steps settled in one pass without running: key -> how.
Updates = dict[str, Settle]

DEFAULT_RULE = "all_success"


class Counts(NamedTuple):
    """A step's direct upstream, counted as Airflow's trigger rules count them: a step skipped
    because of a failure upstream (Airflow's `upstream_failed`), a canceled one and one whose
    blocking check failed count as failed; one skipped by a branch, a short-circuit or a
    trigger rule as skipped."""

    total: int
    success: int
    failed: int
    skipped: int

    @property
    def done(self) -> int:
        return self.success + self.failed + self.skipped


def trigger(rule: str, c: Counts) -> SkipKind | bool | None:
    """What a trigger rule says of a step whose upstream is `c`, as Airflow decides it (its
    `TriggerRuleDep`, with upstream failures flagged): True when the step may run now, a
    `SkipKind` when it never will (`UPSTREAM_FAILED` is Airflow's `upstream_failed` state,
    `SKIPPED` its `skipped`), None while it must wait. A step without upstream runs.

    - all_success: every upstream succeeded; any failure makes it upstream_failed at once,
      else any skip skips it.
    - all_done: every upstream finished, however.
    - one_success: one upstream succeeded (without waiting for the rest); when all finished
      without a success: skipped if all were skipped, else upstream_failed.
    - one_failed: one upstream failed (without waiting); all finished without: skipped.
    - none_failed: every upstream succeeded or was skipped; any failure: upstream_failed.
    - none_failed_min_one_success: as none_failed, and skipped when every upstream was.
    """
    if c.total == 0:
        return True
    complete = c.done == c.total
    if rule == "all_done":
        return True if complete else None
    if rule == "one_success":
        if c.success:
            return True
        if complete:
            return SkipKind.SKIPPED if c.skipped == c.total else SkipKind.UPSTREAM_FAILED
        return None
    if rule == "one_failed":
        if c.failed:
            return True
        return SkipKind.SKIPPED if complete else None
    if rule in ("none_failed", "none_failed_min_one_success"):
        if c.failed:
            return SkipKind.UPSTREAM_FAILED
        if not complete:
            return None
        if rule == "none_failed_min_one_success" and c.skipped == c.total:
            return SkipKind.SKIPPED
        return True
    # all_success, and any rule this engine does not know (the loader refuses those)
    if c.failed:
        return SkipKind.UPSTREAM_FAILED
    if c.skipped:
        return SkipKind.SKIPPED
    return True if c.success == c.total else None


def may_claim(
    status: RunStatus, owner: str | None, me: str, owner_alive: Callable[[str], bool]
) -> bool:
    """Whether engine `me` may execute a run: it has not finished, and no other live engine
    executes it."""
    if status.finished:
        return False
    return not (owner and owner != me and owner_alive(owner))


def may_retry(attempts: int, max_attempts: int, canceling: bool) -> bool:
    """Whether a step whose attempt `attempts` failed runs again (its failure aside)."""
    return attempts < max_attempts and not canceling


def retry_delay(base: float | None, attempts: int) -> float:
    """Seconds before the attempt after attempt `attempts`: `base` (1 s when the step's
    definition is gone), doubled at each attempt, capped at `MAX_RETRY_DELAY`."""
    delay: float = (1.0 if base is None else base) * 2 ** (attempts - 1)
    return min(delay, MAX_RETRY_DELAY)


MAP = "map"
"""The kind of a mapped task's step before its upstream returned the list: it never runs, and
becomes one step per element (`process[0]`, ...) when the list is known."""


@dataclass
class StepState:
    id: int
    key: str
    upstream: list[str]
    status: StepStatus
    attempts: int
    max_attempts: int
    retry_at: float | None
    kind: str = "asset"
    skip: SkipKind | None = None


@dataclass
class Ending:
    """How an attempt ended, before the retry policy has its say."""

    status: StepStatus
    error: str | None
    traceback: str | None
    retry: bool  # False when a retry cannot change the outcome


@dataclass(frozen=True)
class Outcome:
    """What an attempt's end does to its step: `Ending` with the retry policy applied."""

    end: Ending
    step_status: StepStatus  # the end's status, or RETRYING when the step runs again
    retry_in: float | None  # seconds until the next attempt, when there is one
    retry_at: float | None
    blocks: str | None  # why what is downstream may not run: a blocking check failed
    skips: Updates = field(default_factory=dict)  # what a branch or a short-circuit skips


@dataclass
class RunState:
    id: str
    steps: dict[str, StepState]
    partition: str | None
    schedule: str | None  # the schedule that started it, for its alert hooks
    pipeline: str | None  # the task pipeline's name, or None for an asset run
    canceling: bool = False
    blocked: dict[str, str] = field(default_factory=dict)  # asset -> failed blocking check
    rules: dict[str, str] = field(default_factory=dict)  # task id -> its trigger rule
    maps: dict[str, str] = field(default_factory=dict)  # mapped task id -> the task it maps over

    @classmethod
    def from_rows(cls, run: Run, steps: list[Step]) -> RunState:
        return cls(
            id=run.id,
            pipeline=json.loads(run.selection) if run.kind == "pipeline" else None,
            partition=run.partition,
            schedule=run.trigger_ref if run.trigger == "schedule" else None,
            canceling=run.cancel_requested,
            steps={
                st.key: StepState(
                    id=st.id or 0,
                    key=st.key,
                    upstream=json.loads(st.upstream),
                    status=StepStatus(st.status),
                    attempts=st.attempts,
                    max_attempts=st.max_attempts,
                    retry_at=st.retry_at,
                    kind=st.kind,
                    skip=SkipKind(st.skip) if st.skip else None,
                )
                for st in steps
            },
        )

    def bind(self, manifest: Manifest) -> None:
        """Learn from the definitions what the rules need of a task pipeline: each task's
        trigger rule, and which tasks are mapped over which (read once, when the run is
        claimed: a reload in the middle of a run does not change how it goes on)."""
        pipeline = manifest.pipelines.get(self.pipeline) if self.pipeline else None
        if pipeline is None:
            return
        for task in pipeline.tasks.values():
            self.rules[task.id] = task.trigger_rule
            if task.expand is not None:
                self.maps[task.id] = task.expand[1]

    def definition(self, manifest: Manifest, key: str, attr: str) -> Any:
        """An attribute of the step's current definition (None when it is gone); a mapped
        instance's is its task's."""
        if self.pipeline is None:
            spec: Any = manifest.assets.get(key)
        else:
            pipeline = manifest.pipelines.get(self.pipeline)
            spec = pipeline.tasks.get(split_key(key)[0]) if pipeline else None
        return getattr(spec, attr, None)

    # --- which steps run, and which never will ------------------------------------------------

    def ready(self, st: StepState, now: float) -> bool:
        """Whether the step may start now: queued and its trigger rule met (or due for a
        retry). A mapped task's step never starts: it is expanded (`expansions`)."""
        if st.status == StepStatus.RETRYING:
            return st.retry_at is None or st.retry_at <= now
        if st.status != StepStatus.QUEUED or st.kind == MAP:
            return False
        return self._decide(st, {})[0] is True

    def _decide(self, st: StepState, pending: Updates) -> tuple[SkipKind | bool | None, str]:
        """What the step's trigger rule says now (counting the updates not yet applied), and
        when it skips, why in words."""
        success = failed = skipped = 0
        first_failed = first_skipped = ""
        for up in st.upstream:
            upstream = self.steps[up]
            status, skip = upstream.status, upstream.skip
            if up in pending:
                status, skip = pending[up].status, pending[up].skip
            if status == StepStatus.SUCCESS and up not in self.blocked:
                success += 1
            elif status == StepStatus.SUCCESS:
                failed += 1
                first_failed = first_failed or self.blocked[up]
            elif status == StepStatus.FAILED or status == StepStatus.CANCELED:
                failed += 1
                first_failed = first_failed or f"upstream {up} {status.value}"
            elif status == StepStatus.SKIPPED and (skip is None or skip.failed):
                failed += 1
                first_failed = first_failed or f"upstream {up} skipped"
            elif status == StepStatus.SKIPPED:
                skipped += 1
                first_skipped = first_skipped or f"upstream {up} skipped"
        rule = self.rules.get(split_key(st.key)[0], DEFAULT_RULE) if self.rules else DEFAULT_RULE
        verdict = trigger(rule, Counts(len(st.upstream), success, failed, skipped))
        if verdict is SkipKind.UPSTREAM_FAILED:
            why = first_failed if rule != "one_success" else ""
            return verdict, why or f"no upstream succeeded (trigger rule {rule})"
        if verdict is SkipKind.SKIPPED:
            if rule == "one_failed":
                return verdict, "no upstream failed (trigger rule one_failed)"
            if rule == "all_success":
                return verdict, first_skipped
            return verdict, f"every upstream was skipped (trigger rule {rule})"
        return verdict, ""

    def unrunnable(self) -> Updates:
        """The steps that end now without running, each with its reason: with a cancel
        requested, every step still waiting; then every step that its trigger rule skips,
        through the whole graph at once (by default, a step whose upstream failed, was
        skipped or canceled, or is blocked by a check). A mapped task whose rule lets it run
        but whose list never came (its upstream did not succeed) is skipped too."""
        updates: Updates = {}
        if self.canceling:
            for st in self.steps.values():
                if st.status in (StepStatus.QUEUED, StepStatus.RETRYING):
                    updates[st.key] = Settle(StepStatus.CANCELED, "canceled by user")
        changed = True
        while changed:
            changed = False
            for st in self.steps.values():
                if st.status != StepStatus.QUEUED or st.key in updates:
                    continue
                verdict, why = self._decide(st, updates)
                if isinstance(verdict, SkipKind):
                    updates[st.key] = Settle(StepStatus.SKIPPED, why, verdict)
                    changed = True
                elif verdict is True and st.kind == MAP:
                    settle = self._nothing_to_map(st, updates)
                    if settle is not None:
                        updates[st.key] = settle
                        changed = True
        return updates

    def _nothing_to_map(self, st: StepState, pending: Updates) -> Settle | None:
        """A mapped task whose trigger rule lets it run, but whose list never came: the task it
        maps over did not succeed (and is done). It is skipped as that task was, or as
        upstream_failed when that one failed."""
        name = self.maps.get(st.key, "")
        source = self.steps.get(name)
        if source is None:
            return Settle(StepStatus.SKIPPED, f"nothing to map over: no step {name!r}",
                          SkipKind.UPSTREAM_FAILED)  # fmt: skip
        status, skip = source.status, source.skip
        if name in pending:
            status, skip = pending[name].status, pending[name].skip
        if status == StepStatus.SUCCESS or not status.finished:
            return None
        kind = SkipKind.SKIPPED
        if status != StepStatus.SKIPPED or skip is None or skip.failed:
            kind = SkipKind.UPSTREAM_FAILED
        why = f"nothing to map over: upstream {name} {status.value}"
        return Settle(StepStatus.SKIPPED, why, kind)

    def expansions(self) -> list[tuple[str, str]]:
        """The mapped tasks to expand now, each with the task whose list it maps over: queued,
        their trigger rule met, that task succeeded."""
        found = []
        for st in self.steps.values():
            if st.kind != MAP or st.status != StepStatus.QUEUED:
                continue
            source = self.steps.get(self.maps.get(st.key, ""))
            ok = source is not None and source.status == StepStatus.SUCCESS
            if ok and source is not None and self._decide(st, {})[0] is True:
                found.append((st.key, source.key))
        return found

    def expanded(self, key: str, instances: Sequence[tuple[int, int]], kind: str) -> None:
        """The mapped task `key` became `instances` (each (its step id, its index)) in storage:
        each takes the mapped step's place upstream of its downstream steps."""
        mapped = self.steps.pop(key)
        keys = []
        for step_id, index in instances:
            new_key = mapped_key(key, index)
            keys.append(new_key)
            self.steps[new_key] = StepState(
                id=step_id, key=new_key, upstream=list(mapped.upstream),
                status=StepStatus.QUEUED, attempts=0, max_attempts=mapped.max_attempts,
                retry_at=None, kind=kind,
            )  # fmt: skip
        for st in self.steps.values():
            if key in st.upstream:
                i = st.upstream.index(key)
                st.upstream[i : i + 1] = keys

    def descendants(self, key: str) -> list[str]:
        """Every step downstream of `key`, directly or not, in the run's order."""
        below, found = {key}, True
        while found:
            found = False
            for st in self.steps.values():
                if st.key not in below and below.intersection(st.upstream):
                    below.add(st.key)
                    found = True
        return [k for k in self.steps if k in below and k != key]

    def apply(self, updates: Updates) -> None:
        """The steps in `updates` were settled in storage."""
        for key, settle in updates.items():
            self.steps[key].status = settle.status
            self.steps[key].skip = settle.skip

    def finished(self) -> bool:
        """Whether every step has finished (attempts may still be ending)."""
        return all(st.status.finished for st in self.steps.values())

    def next_retry(self) -> float | None:
        """When the first step waiting for a retry is due, if any."""
        due = [
            st.retry_at
            for st in self.steps.values()
            if st.status == StepStatus.RETRYING and st.retry_at is not None
        ]
        return min(due, default=None)

    def final_status(self) -> RunStatus:
        """How the run ends, once every step has finished."""
        statuses = [st.status for st in self.steps.values()]
        if self.canceling or StepStatus.CANCELED in statuses:
            return RunStatus.CANCELED
        # Skips chosen by a branch, a short-circuit or a trigger rule are how the run was meant
        # to go; one caused by a failure (or a skip recorded before skips had kinds) is not.
        if self.blocked or any(
            st.status == StepStatus.FAILED
            or (st.status == StepStatus.SKIPPED and (st.skip is None or st.skip.failed))
            for st in self.steps.values()
        ):
            return RunStatus.FAILED
        return RunStatus.SUCCESS

    # --- an attempt, from its start to its end ------------------------------------------------

    def started(self, st: StepState, attempt: int) -> None:
        """Attempt `attempt` of the step was recorded as running."""
        st.status, st.attempts, st.retry_at = StepStatus.RUNNING, attempt, None

    def outcome(
        self,
        st: StepState,
        end: Ending,
        manifest: Callable[[], Manifest],
        now: float,
        events: Sequence[Event] = (),
    ) -> Outcome:
        """What the end of the step's current attempt does: whether it runs again and when
        (a failure a retry can change, attempts left, no cancel), and which blocking check
        failed on a success (its `events`)."""
        retry_in = retry_at = None
        failed = end.status == StepStatus.FAILED and end.retry
        if failed and may_retry(st.attempts, st.max_attempts, self.canceling):
            base = self.definition(manifest(), st.key, "retry_delay")
            retry_in = retry_delay(base, st.attempts)
            retry_at = now + retry_in
        blocks = None
        skips: Updates = {}
        if end.status == StepStatus.SUCCESS:
            for check in failed_blocking_checks(events):
                blocks = f"blocking check {check['name']} on {st.key} failed"
            skips = self.chosen_skips(st.key, task_result(events))
        status = StepStatus.RETRYING if retry_in is not None else end.status
        return Outcome(end, status, retry_in, retry_at, blocks, skips)

    def chosen_skips(self, key: str, result: list[str] | bool | int | None) -> Updates:
        """What a task's result skips, as Airflow does: a branch (a list of the ids it chose)
        skips the direct downstream tasks it did not choose, and a short-circuit that returned
        False skips everything downstream whatever its trigger rule (Airflow's default,
        `ignore_downstream_trigger_rules=True`). What is skipped so is settled at once, in the
        same write as the task's end; trigger rules take it from there."""
        waiting = (StepStatus.QUEUED, StepStatus.RETRYING)
        if isinstance(result, bool):  # before int: a bool is an int
            if result:
                return {}
            return {
                k: Settle(StepStatus.SKIPPED, f"short-circuited by {key}", SkipKind.SHORT_CIRCUIT)
                for k in self.descendants(key)
                if self.steps[k].status in waiting
            }
        if isinstance(result, list):
            chosen = set(result)
            return {
                st.key: Settle(StepStatus.SKIPPED, f"not chosen by {key}", SkipKind.BRANCH)
                for st in self.steps.values()
                if key in st.upstream
                and st.status in waiting
                and split_key(st.key)[0] not in chosen
            }
        return {}

    def ended(self, st: StepState, outcome: Outcome) -> None:
        """The attempt's outcome was recorded."""
        st.status = outcome.step_status
        if outcome.retry_at is not None:
            st.retry_at = outcome.retry_at
        if outcome.blocks is not None:
            self.blocked[st.key] = outcome.blocks
        self.apply(outcome.skips)

    def alert_for(
        self,
        manifest: Callable[[], Manifest],
        defaults: Mapping[str, Any],
        st: StepState,
        status: StepStatus,
        error: str | None,
        log_path: Path | None,
    ) -> tuple[list[dict[str, Any]], Alert] | None:
        """The hooks a step's new status fires and the alert to send them, or None.

        The step's own hook wins, then its pipeline's, then its schedule's (each once); the
        project-wide `defaults` only when none of them has one.
        """
        event = {
            StepStatus.FAILED: "on_failure",
            StepStatus.RETRYING: "on_retry",
            StepStatus.SUCCESS: "on_success",
        }.get(status)
        if event is None:
            return None
        current = manifest()
        hooks: list[dict[str, Any]] = []
        for source in (
            self.definition(current, st.key, "hooks"),
            current.pipelines[self.pipeline].hooks if self.pipeline in current.pipelines else None,
            current.schedules[self.schedule].hooks if self.schedule in current.schedules else None,
        ):
            if source and event in source and source[event] not in hooks:
                hooks.append(source[event])
        if not hooks and event in defaults:
            hooks.append(defaults[event])  # the project-wide default
        if not hooks:
            return None
        return hooks, Alert(
            event=event, run_id=self.id, step=st.key, status=status.value,
            attempt=st.attempts, error=error, log_path=str(log_path) if log_path else None,
            partition=self.partition, pipeline=self.pipeline,
        )  # fmt: skip


def failed_blocking_checks(events: Sequence[Event]) -> list[CheckEvent]:
    """The blocking checks that failed, in the order the worker reported them."""
    return [e for e in events if e["e"] == EventKind.CHECK and e["blocking"] and not e["passed"]]


@dataclass
class LiveAttempt:
    """A running attempt."""

    run_id: str
    key: str
    attempt: int
    attempt_id: int
    pid: int
    popen: subprocess.Popen[bytes] | None  # None when the fork server is its parent
    events_fd: int | None
    pidfd: int | None
    launch: Launch
    started: float
    buf: bytes = b""
    events: list[Event] = field(default_factory=list)
    canceled: bool = False
    remote: RemoteAttempt | None = None  # when it runs on a Dask worker
    created: float | None = None
    """The process's create time: with the pid, it names the process (pids are reused)."""
    orphaned: bool = False
    """Its fork server died: nobody reports its exit, the coordinator must look for it."""
    exited: tuple[Ending, int | None, TreeStats] | None = None
    """Once its own process is gone: how it ended, its exit status and resource totals."""
    leftovers: Leftovers | None = None
    """What its process left running, being ended once it exited; the attempt is over (and
    recorded) only when they are gone."""

    def reported_children(self) -> tuple[list[int] | None, float | None]:
        """The children the worker named in its last event, and when it sent it; None when
        it did not say (it died first, or could not tell)."""
        return reported_children(self.events)

    def reported_peak_rss(self) -> int:
        """The peak RSS the worker measured itself (VmHWM), which sampling can miss; 0 when
        it did not say."""
        return max(
            (
                e["peak_rss"] or 0
                for e in self.events
                if e["e"] == EventKind.FINISHED or e["e"] == EventKind.ERROR
            ),
            default=0,
        )

    def feed(self, chunk: bytes) -> int:
        """Take more of the event stream; returns how many complete lines were not events."""
        self.buf += chunk
        *lines, self.buf = self.buf.split(b"\n")
        malformed = 0
        for line in lines:
            if not line.strip():
                continue
            event = decode_event(line)
            if event is None:
                malformed += 1
            else:
                self.events.append(event)
        return malformed

    def ending(self, returncode: int | None, stats: TreeStats) -> Ending:
        """How the attempt ended, from its events, its exit status (None when it was lost) and
        its resource totals. The first that applies wins: a cancel, a limit the monitor
        enforced, a lost Dask worker, the error the worker reported, the exit status."""
        error_event: ErrorEvent | None = None
        finished = False
        for e in self.events:
            if e["e"] == EventKind.ERROR:
                error_event = e
            elif e["e"] == EventKind.FINISHED:
                finished = True
        status, error, tb = StepStatus.FAILED, None, None
        if self.canceled:
            status, error = StepStatus.CANCELED, "canceled by user"
        elif stats.violation:
            error = stats.violation
        elif self.remote is not None and self.remote.error:
            error = self.remote.error  # e.g. its Dask worker was lost
        elif error_event is not None:
            error, tb = error_event["message"], error_event["traceback"]
        elif returncode is None and not finished:
            error = "the worker's exit status was lost (its fork server died)"
        elif returncode is not None and returncode != 0:
            error = describe_exit(returncode)
            if self.launch.spec is None:
                error = f"command {error}"
        elif self.launch.spec is not None and not finished:
            error = "the worker exited without reporting a result"
        else:
            status = StepStatus.SUCCESS
        retry = error_event is None or error_event["kind"] not in NOT_RETRIED
        return Ending(status, error, tb, retry)
